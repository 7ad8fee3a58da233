"""Run one command plug-in of reprlab/commands/ in-process, as the CLI would, after checking the
attributes every plug-in must have (NAME, a one-line HELP, add_arguments, run)."""

from __future__ import annotations

import argparse
import importlib


def run_plugin(name: str, argv: list[str]) -> int:
    mod = importlib.import_module(f"reprlab.commands.{name}")
    assert mod.NAME == name and isinstance(mod.HELP, str) and "\n" not in mod.HELP
    parser = argparse.ArgumentParser()
    mod.add_arguments(parser)
    return mod.run(parser.parse_args(argv))
