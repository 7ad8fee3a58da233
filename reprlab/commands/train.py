"""``reprlab train``: supervised training (from scratch) through the one loop."""

from __future__ import annotations

from reprlab.commands._common import add_run_arguments, print_result, resolve
from reprlab.config import dumps_toml, to_dict

NAME = "train"
HELP = "supervised training from scratch (resumes when re-run)"


def add_arguments(p) -> None:
    add_run_arguments(p)


def run(args) -> int:
    from reprlab.train.task import execute

    cfg = resolve(args)
    if args.print_config:
        print(dumps_toml(to_dict(cfg)), end="")
        return 0
    result = execute(cfg, "train", args.config)
    print_result(result)
    return 0
