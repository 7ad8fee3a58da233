"""``reprlab pretrain``: self-supervised (or supervised) pretraining of a backbone."""

from __future__ import annotations

from reprlab.commands._common import add_run_arguments, execute_task, task_config
from reprlab.registry import METHOD_CONFIGS

NAME = "pretrain"
HELP = f"pretrain a backbone with a registered method ({', '.join(METHOD_CONFIGS.names())}) on a chosen dataset"
DATA_PARALLEL = True  # under torchrun the command joins the process group (reprlab.distributed)


def add_arguments(p) -> None:
    add_run_arguments(p)


def run_config(args):
    """(resolved config, task kind) of the command line ``args``."""
    return task_config(args, "pretrain")


def run(args) -> int:
    return execute_task(args, *run_config(args))
