"""``reprlab study``: run a whole experiment (a DAG of runs and sweeps) from one study file.

``reprlab study run NAME|FILE [--workers N] [--only PATTERN] [--dry-run] [--rerun] [--out DIR]
[--storage URL] [--executor local|slurm [--partition P] [--max-jobs N] ...]``, ``reprlab study status NAME|FILE`` (the state of every run: complete, stale,
to resume, new) and ``reprlab study list`` (the built-in studies with their description and
GPU-hour estimate).
The file format is documented in :mod:`reprlab.studies.spec`, the runner in :mod:`reprlab.studies.runner`.
"""

from __future__ import annotations

import argparse

from reprlab.commands._common import add_executor_arguments, local_only, slurm_executor

NAME = "study"
HELP = "run a study (runs and sweeps in dependency order; skips complete runs, resumes interrupted ones)"


def add_arguments(p: argparse.ArgumentParser) -> None:
    sub = p.add_subparsers(dest="study_command", metavar="ACTION", required=True)
    r = sub.add_parser("run", help="run (or --dry-run) a study", description="Run a study: each run is a `reprlab` child process; complete runs are skipped, interrupted ones resume.")
    r.add_argument("study", metavar="NAME|FILE", help="a built-in study name (see `reprlab study list`) or a study TOML file")
    r.add_argument("--workers", type=int, default=1, help="runs executed in parallel (one GPU each, round-robin; on CPU the cores are split)")
    r.add_argument("--gpus-per-run", type=int, default=1, metavar="K", help="each training run data-parallel on K devices under torchrun (GPU groups of K per worker via CUDA_VISIBLE_DEVICES; on CPU K gloo processes)")
    r.add_argument("--only", action="append", metavar="PATTERN", help="only runs whose expanded name matches this fnmatch pattern (repeatable); refuses when a selected run needs an incomplete unselected one")
    r.add_argument("--dry-run", action="store_true", help="list every run in order with its command line and what would happen, start nothing")
    r.add_argument("--rerun", action="store_true", help="replace stale runs (their directory holds results of another config than the study's now) instead of refusing to start")
    r.add_argument("--out", metavar="DIR", help="output folder (default: the study's out_dir, runs/<name>)")
    r.add_argument("--storage", metavar="URL", help="Optuna storage of every sweep, e.g. one database shared by several machines "
                   "(default: [study] storage, else sqlite:///<out>/<sweep>/optuna.db)")
    r.add_argument("--methods", metavar="M,M|all", help="the study's self-supervised methods (its \"{methods}\" axis), e.g. simclr,byol or all (default: [study] methods)")
    r.add_argument("--data-root", default=argparse.SUPPRESS, help="folder holding the datasets (passed to every run)")
    add_executor_arguments(r)
    st = sub.add_parser("status", help="the state of every run of a study (complete, stale, to resume, new)",
                        description="One line per expanded run: complete (with its accuracy), stale (recorded config differs), to resume, new. Starts nothing.")
    st.add_argument("study", metavar="NAME|FILE", help="a built-in study name or a study TOML file")
    st.add_argument("--only", action="append", metavar="PATTERN", help="only runs whose expanded name matches this fnmatch pattern (repeatable)")
    st.add_argument("--out", metavar="DIR", help="output folder (default: the study's out_dir, runs/<name>)")
    st.add_argument("--storage", metavar="URL", help="Optuna storage of the sweeps (as given to `study run`)")
    st.add_argument("--methods", metavar="M,M|all", help="the study's method axis, as given to `study run`")
    sub.add_parser("list", help="list the built-in studies", description="List the built-in studies with their description and estimated GPU-hours.")


def method_list(text: str | None) -> list[str] | None:
    """``--methods M,M|all`` as a list; None when not given. An empty list or name is refused,
    never read as "not given"."""
    if text is None:
        return None
    names = [m.strip() for m in text.split(",")]
    if not all(names):
        from reprlab.errors import ReprlabError

        raise ReprlabError(f"--methods {text!r}: expected method names separated by commas (e.g. simclr,byol) or all")
    return names


def run(args: argparse.Namespace) -> int:
    from reprlab.cli import resolve_argv
    from reprlab.errors import ReprlabError
    from reprlab.studies import runner, spec

    if args.study_command == "list":
        rows = [spec.read_header(p) for p in spec.builtin_studies()]
        width = max((len(r["name"]) for r in rows), default=4)
        for r in rows:
            hours = f"{r['gpu_hours']:g} GPU-h" if r["gpu_hours"] is not None else "? GPU-h"
            print(f"{r['name']:<{width}}  {hours:>12}  {r['description']}")
        return 0
    if args.study_command == "run":
        runner.check_parallelism(args.workers, args.gpus_per_run)  # the dry run refuses what the run would
    path = spec.find_study(args.study)
    study = spec.load_study(path, out_dir=args.out, storage=args.storage, methods=method_list(args.methods), resolve=resolve_argv)
    if args.study_command == "status":
        from reprlab.studies.slurm import job_notes

        return runner.status(study, args.only, notes=job_notes(study.out_dir))
    data_root = getattr(args, "data_root", None)
    if args.dry_run:
        return runner.dry_run(study, args.only, data_root, gpus_per_run=args.gpus_per_run)
    executor = None
    if args.executor == "slurm":
        if args.workers != 1:
            raise ReprlabError("--workers is for --executor local; with --executor slurm, --max-jobs N sets how many runs are in the queue at once")
        executor = slurm_executor(args, study.out_dir)
    else:
        local_only(args)
    return runner.run_study(study, workers=args.workers, gpus_per_run=args.gpus_per_run, only=args.only, data_root=data_root, rerun=args.rerun, executor=executor)
