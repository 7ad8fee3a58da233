"""``reprlab pretrain``: self-supervised (or supervised) pretraining of a backbone."""

from __future__ import annotations

from reprlab.commands._common import add_run_arguments, print_result, resolve
from reprlab.config import dumps_toml, to_dict

NAME = "pretrain"
HELP = "pretrain a backbone with a registered method (simclr, supervised) on a chosen dataset"


def add_arguments(p) -> None:
    add_run_arguments(p)


def run(args) -> int:
    from reprlab.train.task import execute

    cfg = resolve(args)
    if args.print_config:
        print(dumps_toml(to_dict(cfg)), end="")
        return 0
    print_result(execute(cfg, "pretrain", args.config))
    return 0
