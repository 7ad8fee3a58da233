"""Arguments shared by the commands that start runs."""

from __future__ import annotations

import argparse
import json
import sys
import tomllib
from pathlib import Path
from typing import Callable

from reprlab.config import Config, canonical_key, flatten, load_config
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


def keys_set(path: str | None, overrides: list[str] | tuple[str, ...] = ()) -> set[str]:
    """The canonical dotted keys a config file and ``key=value`` overrides set (what
    :func:`load_config` reads from them besides the defaults); the file is read as it is."""
    keys: set[str] = set()
    if path and Path(path).is_file():
        try:
            keys |= {canonical_key(k) for k in flatten(tomllib.loads(Path(path).read_text()))}
        except tomllib.TOMLDecodeError:
            pass  # load_config has refused it already
    return keys | {canonical_key(o.partition("=")[0].strip()) for o in overrides}


def task_config(args: argparse.Namespace, kind: str | Callable[[Config], str], extra: list[str] = (), default_config: str | None = None) -> tuple[Config, str]:
    """(resolved config, task kind) of a run command: what ``--print-config`` prints, what the
    run records in config.toml and what a study compares with a run directory's config.

    ``kind`` may be a function of the resolved config, so that the task and the recorded config
    can never disagree (a flag sets a key; a later override of that key wins for both). Runs over
    a backbone record the architecture that is built (:func:`reprlab.inputs.record_architecture`, read without torch)."""
    cfg = resolve(args, extra, default_config)
    kind = kind(cfg) if callable(kind) else kind
    args.recipe = args.config or default_config  # the file whose budget result.json records beside the run's
    if task_kind(kind).backbone:  # its architecture comes from the checkpoint
        from reprlab.inputs import record_architecture

        record_architecture(cfg, name_given="model.name" in keys_set(args.config or default_config, [*extra, *args.overrides]))
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
    result = task.execute(cfg, kind, args.config, rerun=args.rerun, recipe=getattr(args, "recipe", None))
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
