"""``reprlab sweep FILE --trials N [--storage URL] [--out DIR] [--name NAME]``: an Optuna search
whose trials are reprlab runs (``<out>/<sweep>/trial-<hash8>``).

FILE is a sweep file (one ``[sweep]`` table) or a study file (``--name`` picks one of its
``[[sweep]]`` tables; the study's overrides and out_dir apply). Re-running resumes: finished
trials stay, interrupted ones are re-queued into the same directory. Several processes, on
several machines, work on one search when they share ``--storage`` (``postgresql://...`` or
``journal:///shared/path/sweep.log``); ``--trials`` is the total over all of them. Format and
semantics: :mod:`reprlab.studies.sweep`.
"""

from __future__ import annotations

import argparse

NAME = "sweep"
HELP = "hyperparameter search with Optuna over reprlab runs (resumable; shareable through --storage)"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("file", metavar="FILE", help="sweep TOML file ([sweep]) or study file with [[sweep]] tables")
    p.add_argument("--name", help="which [[sweep]] of a study file (needed when it holds several)")
    p.add_argument("--trials", type=int, help="total number of trials of the sweep (default: the file's trials)")
    p.add_argument("--storage", metavar="URL", help="Optuna storage shared by the workers of the sweep: postgresql://user@host:5432/db "
                   "(pip install 'reprlab[postgres]') or journal:///shared/path/sweep.log (default: sqlite:///<out>/<sweep>/optuna.db, one machine)")
    p.add_argument("--out", metavar="DIR", help="output folder holding <sweep>/ (default: runs, or the study's out_dir)")


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from reprlab.errors import ReprlabError
    from reprlab.studies.sweep import load_sweep, run_sweep

    if not Path(args.file).is_file():
        raise ReprlabError(f"sweep file {args.file} not found")
    spec, default_out, base = load_sweep(args.file, args.name)
    run_sweep(
        spec,
        Path(args.out) if args.out else default_out,
        trials=args.trials,
        storage=args.storage,
        data_root=getattr(args, "data_root", None),
        base_overrides=base,
    )
    return 0
