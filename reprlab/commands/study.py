"""``reprlab study``: run a whole experiment (a DAG of runs and sweeps) from one study file.

``reprlab study run NAME|FILE [--workers N] [--only PATTERN] [--dry-run] [--rerun] [--out DIR]
[--storage URL] [--executor local|slurm [--partition P] [--max-jobs N] ...]``, ``reprlab study status NAME|FILE`` (the state of every run: complete, stale,
to resume, new) and ``reprlab study list`` (the built-in studies with their description and
GPU-hour estimate).
The file format is documented in :mod:`reprlab.studies.spec`, the runner in :mod:`reprlab.studies.runner`.
"""

from __future__ import annotations

import argparse

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


def add_executor_arguments(p: argparse.ArgumentParser) -> None:
    """``--executor`` and the SLURM options (reprlab.studies.slurm); the sweep command has them too."""
    g = p.add_argument_group("executor", "where the runs execute: here (local) or as SLURM jobs (slurm: pip install 'reprlab[slurm]')")
    g.add_argument("--executor", choices=("local", "slurm"), default="local", help="local: child processes on this machine (default); slurm: one SLURM job per run, submitted through submitit")
    g.add_argument("--partition", help="slurm: the partition (default: the cluster's default partition); checked with sinfo before anything is submitted")
    g.add_argument("--nodes-per-run", type=int, default=1, metavar="M", help="slurm: nodes per training run (srun starts torchrun on each, c10d rendezvous on the first)")
    g.add_argument("--timeout-min", type=int, default=60, metavar="MIN", help="slurm: each job's time limit; a job reaching it is requeued and resumes from last.pt (default 60)")
    g.add_argument("--account", help="slurm: sbatch --account")
    g.add_argument("--qos", help="slurm: sbatch --qos")
    g.add_argument("--constraint", help="slurm: sbatch --constraint (node features)")
    g.add_argument("--slurm-param", action="append", metavar="KEY=VALUE", help="slurm: any other sbatch option, e.g. mem=32G or cpus-per-task=8 (repeatable)")
    g.add_argument("--max-jobs", type=int, default=8, metavar="N", help="slurm: runs in the queue at once (default 8)")


def slurm_executor(args: argparse.Namespace, out_dir):
    """The SlurmExecutor of ``args``; SLURM's tools, submitit and the partition are checked first
    (one-line errors, nothing written)."""
    from reprlab.studies import slurm

    params = slurm.parse_params(args.slurm_param)
    partition, gpus = slurm.check_slurm(args.partition)
    return slurm.SlurmExecutor(out_dir, partition, gpus, gpus_per_run=getattr(args, "gpus_per_run", 1), nodes_per_run=args.nodes_per_run,
                               timeout_min=args.timeout_min, account=args.account, qos=args.qos, constraint=args.constraint, params=params,
                               max_jobs=args.max_jobs)


def local_only(args: argparse.Namespace) -> None:
    """SLURM options given without --executor slurm would do nothing: refuse them."""
    from reprlab.errors import ReprlabError

    given = [f"--{k.replace('_', '-')}" for k in ("partition", "account", "qos", "constraint", "slurm_param") if getattr(args, k)]
    given += [f"--{k.replace('_', '-')}" for k, d in (("nodes_per_run", 1), ("timeout_min", 60), ("max_jobs", 8)) if getattr(args, k) != d]
    if given:
        raise ReprlabError(f"{', '.join(given)}: SLURM option(s) without --executor slurm")


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
    path = spec.find_study(args.study)
    methods = getattr(args, "methods", None)
    study = spec.load_study(path, out_dir=args.out, storage=args.storage, methods=methods.split(",") if methods else None, resolve=resolve_argv)
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
