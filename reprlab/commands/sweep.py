"""``reprlab sweep FILE --trials N [--storage URL] [--out DIR] [--name NAME]``: an Optuna search
whose trials are reprlab runs (``<out>/<sweep>/trial-<hash8>``).

FILE is a sweep file (one ``[sweep]`` table) or a study file (``--name`` picks one of its
``[[sweep]]`` tables; the study's overrides and out_dir apply). Re-running resumes: finished
trials stay, interrupted ones are re-queued into the same directory. Several processes, on
several machines, work on one search when they share ``--storage`` (``postgresql://...`` or
``journal:///shared/path/sweep.log``); ``--trials`` is the total over all of them.
``--executor slurm --workers N`` submits N of them as one SLURM job array
(:mod:`reprlab.studies.slurm`). Format and semantics: :mod:`reprlab.studies.sweep`.
"""

from __future__ import annotations

import argparse

from reprlab.commands._common import add_executor_arguments, local_only, slurm_executor

NAME = "sweep"
HELP = "hyperparameter search with Optuna over reprlab runs (resumable; shareable through --storage)"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("file", metavar="FILE", help="sweep TOML file ([sweep]) or study file with [[sweep]] tables")
    p.add_argument("--name", help="which [[sweep]] of a study file (needed when it holds several)")
    p.add_argument("--trials", type=int, help="total number of trials of the sweep (default: the file's trials)")
    p.add_argument("--storage", metavar="URL", help="Optuna storage shared by the workers of the sweep: postgresql://user@host:5432/db "
                   "(pip install 'reprlab[postgres]') or journal:///shared/path/sweep.log (default: sqlite:///<out>/<sweep>/optuna.db, one machine)")
    p.add_argument("--out", metavar="DIR", help="output folder holding <sweep>/ (default: runs, or the study's out_dir)")
    p.add_argument("--workers", type=int, default=1, metavar="N", help="with --executor slurm: N workers as one SLURM job array, each this sweep command on the same --storage")
    add_executor_arguments(p)


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from reprlab.errors import ReprlabError
    from reprlab.studies.sweep import load_sweep, run_sweep

    if not Path(args.file).is_file():
        raise ReprlabError(f"sweep file {args.file} not found")
    spec, default_out, base = load_sweep(args.file, args.name)
    if args.executor == "slurm":
        return _slurm_workers(args, spec, Path(args.out) if args.out else default_out)
    local_only(args)
    if args.workers != 1:
        raise ReprlabError("--workers is for --executor slurm (a job array); on this machine start `reprlab sweep ... --storage URL` once per worker")
    run_sweep(
        spec,
        Path(args.out) if args.out else default_out,
        trials=args.trials,
        storage=args.storage,
        data_root=getattr(args, "data_root", None),
        base_overrides=base,
    )
    return 0


def _slurm_workers(args: argparse.Namespace, spec, out_dir) -> int:
    """``--executor slurm --workers N``: N workers as one job array, each running this command
    without the SLURM options on the same storage; waits for them (Ctrl-C cancels them)."""
    import sys
    from pathlib import Path

    from reprlab.errors import ReprlabError
    from reprlab.studies import slurm
    from reprlab.studies.process import reprlab_argv
    from reprlab.studies.sweep import sweep_progress

    if args.workers < 1:
        raise ReprlabError(f"--workers must be >= 1, got {args.workers}")
    slurm.sweep_storage_check(args.storage, args.workers)
    out_dir = Path(out_dir).resolve()
    executor = slurm_executor(args, out_dir / spec.name)
    argv = [*reprlab_argv(getattr(args, "data_root", None), "sweep"), str(Path(args.file).resolve()), "--out", str(out_dir)]
    for flag, value in (("--name", args.name), ("--trials", args.trials), ("--storage", args.storage)):
        if value is not None:
            argv += [flag, str(value)]
    logs = [out_dir / spec.name / f"worker-{i + 1}.txt" for i in range(args.workers)]
    jobs = executor.start_array(argv, logs, spec.name)
    print(f"sweep {spec.name!r}: {args.workers} worker(s) as SLURM job array {jobs[0].job_id.split('_')[0]}; logs {logs[0].parent}/worker-N.txt", flush=True)
    failed = slurm.follow(executor, jobs, sys.stdout)
    prog = sweep_progress(spec, out_dir, args.storage, args.trials)
    print(f"sweep {spec.name!r}: {prog.describe()}", flush=True)
    if failed:
        raise ReprlabError(f"sweep {spec.name!r}: {len(failed)} worker job(s) did not complete: " + "; ".join(executor.failure(j, 1, j.log) for j in failed))
    return 0 if prog.done else 1
