"""Arguments shared by the commands that start runs."""

from __future__ import annotations

import argparse
import json

from reprlab.config import Config, load_config


def add_run_arguments(p: argparse.ArgumentParser, default_config: str | None = None) -> None:
    p.add_argument("--config", default=default_config, help="TOML config file (defaults <- file <- overrides)")
    p.add_argument("overrides", nargs="*", metavar="key=value", help="dotted config overrides, e.g. optim.lr=0.1 train.epochs=200")
    p.add_argument("--print-config", action="store_true", help="print the resolved config and exit")


def resolve(args: argparse.Namespace, extra: list[str] = ()) -> Config:
    cfg = load_config(args.config, [*extra, *args.overrides])
    return cfg


def print_result(result: dict) -> None:
    keys = ("run", "protocol", "val", "test")
    print(json.dumps({k: result[k] for k in keys if k in result}, indent=2))
