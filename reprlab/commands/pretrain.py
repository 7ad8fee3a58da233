"""``reprlab pretrain``: self-supervised (or supervised) pretraining of a backbone."""

from __future__ import annotations

from reprlab.commands._common import add_run_arguments, run_task

NAME = "pretrain"
HELP = "pretrain a backbone with a registered method (simclr, supervised) on a chosen dataset"


def add_arguments(p) -> None:
    add_run_arguments(p)


def run(args) -> int:
    return run_task(args, "pretrain")
