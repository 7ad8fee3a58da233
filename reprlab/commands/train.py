"""``reprlab train``: supervised training (from scratch) through the one loop."""

from __future__ import annotations

from reprlab.commands._common import add_run_arguments, run_task

NAME = "train"
HELP = "supervised training from scratch (resumes when re-run)"


def add_arguments(p) -> None:
    add_run_arguments(p)


def run(args) -> int:
    return run_task(args, "train")
