"""``reprlab train``: supervised training (from scratch) through the one loop."""

from __future__ import annotations

from reprlab.commands._common import add_run_arguments, execute_task, task_config

NAME = "train"
HELP = "supervised training from scratch (resumes when re-run)"
DATA_PARALLEL = True  # under torchrun the command joins the process group (reprlab.distributed)


def add_arguments(p) -> None:
    add_run_arguments(p)


def run_config(args):
    """(resolved config, task kind) of the command line ``args``."""
    return task_config(args, "train")


def run(args) -> int:
    return execute_task(args, *run_config(args))
