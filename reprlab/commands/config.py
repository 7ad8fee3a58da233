"""``reprlab config``: every config key with its default and its one-line documentation."""

from __future__ import annotations

from reprlab.config import describe

NAME = "config"
HELP = "list every config key with its default and meaning"


def add_arguments(p) -> None:
    p.add_argument("prefix", nargs="?", default="", help="only keys starting with this (e.g. optim)")


def run(args) -> int:
    rows = [r for r in describe() if r[0].startswith(args.prefix)]
    width = max(len(r[0]) for r in rows) if rows else 0
    for key, default, comment in rows:
        print(f"{key:<{width}}  {default!r:<24}  # {comment}")
    return 0
