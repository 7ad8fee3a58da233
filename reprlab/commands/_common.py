"""Arguments shared by the commands that start runs."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Callable

from reprlab.config import Config, load_config
from reprlab.result import task_kind


def add_run_arguments(p: argparse.ArgumentParser, default_config: str | None = None) -> None:
    p.add_argument("--config", default=default_config, help="TOML config file (defaults <- file <- overrides)")
    p.add_argument("overrides", nargs="*", metavar="key=value", help="dotted config overrides, e.g. optim.lr=0.1 train.epochs=200")
    p.add_argument("--print-config", action="store_true", help="print the resolved config and exit")
    p.add_argument(
        "--rerun",
        action="store_true",
        help="replace the run: remove what its directory holds (results, checkpoints, metrics; locks and log*.txt stay) "
        "and run it from scratch; needed when the directory holds a run of another config",
    )


#: The recipes ship inside the package (``configs/`` at the repository root links here), so
#: a regular, non-editable install finds them too.
CONFIGS = Path(__file__).resolve().parents[1] / "configs"


def recipe(name: str) -> str:
    """Path of a recipe shipped with the package (``configs/<name>``)."""
    return str(CONFIGS / name)


def resolve(args: argparse.Namespace, extra: list[str] = (), default_config: str | None = None) -> Config:
    """Defaults <- --config (or the command's default recipe) <- command flags <- overrides."""
    cfg = load_config(args.config or default_config, [*extra, *args.overrides])
    return cfg


def print_result(result: dict) -> None:
    """The headline of a result.json (scalars only; per-class tables stay in the file)."""
    out = {k: result[k] for k in ("run", "protocol") if k in result}
    for part in ("val", "test"):
        if isinstance(result.get(part), dict):
            out[part] = {k: round(v, 3) for k, v in result[part].items() if isinstance(v, (int, float))}
    print(json.dumps(out, indent=2))


def task_config(args: argparse.Namespace, kind: str | Callable[[Config], str], extra: list[str] = (), default_config: str | None = None) -> tuple[Config, str]:
    """(resolved config, task kind) of a run command: what ``--print-config`` prints, what the
    run records in config.toml and what a study compares with a run directory's config.

    ``kind`` may be a function of the resolved config, so that the task and the recorded config
    can never disagree (a flag sets a key; a later override of that key wins for both). Runs over
    a backbone record the architecture that is built (:func:`reprlab.eval.backbones.record_architecture`)."""
    cfg = resolve(args, extra, default_config)
    kind = kind(cfg) if callable(kind) else kind
    if task_kind(kind).backbone:  # its architecture comes from the checkpoint
        from reprlab.eval.backbones import record_architecture

        record_architecture(cfg)
    return cfg, kind


def execute_task(args: argparse.Namespace, cfg: Config, kind: str) -> int:
    """``--print-config``: print ``cfg``; else run it (:func:`reprlab.train.task.execute`), print
    the result's headline and, last, the run directory."""
    from reprlab.config import dumps_toml
    from reprlab.config_keys import read_dict
    from reprlab.train import task

    if args.print_config:
        print(dumps_toml(read_dict(cfg)), end="")  # what the run's config.toml will hold
        return 0
    result = task.execute(cfg, kind, args.config, rerun=args.rerun)
    from reprlab import distributed

    if not distributed.is_main():
        return 0  # rank 0 reports for the whole group
    print_result(result)
    sys.stdout.flush()
    print(f"reprlab: done: {task.run_path(cfg, kind, args.config)} (result.json)", file=sys.stderr)
    return 0


def run_task(args: argparse.Namespace, kind: str | Callable[[Config], str], extra: list[str] = (), default_config: str | None = None) -> int:
    """Resolve the config and run one task through the loop (``--print-config`` only prints it)."""
    return execute_task(args, *task_config(args, kind, extra, default_config))
