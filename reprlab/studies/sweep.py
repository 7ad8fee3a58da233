"""Hyperparameter sweeps: Optuna chooses parameters, every trial is an ordinary reprlab run.

This module holds the Optuna side (storage, progress, trials); the definition is
:mod:`reprlab.studies.sweep_spec`, the run directories are read by :mod:`reprlab.studies.results`.

A sweep file (or a ``[[sweep]]`` table of a study)::

    [sweep]
    name = "vit-search"
    command = "train"                      # train | pretrain | probe | finetune
    config = "configs/cnn_vs_vit/vit.toml"
    overrides = ["train.epochs=50"]
    sampler = "tpe"                        # tpe | grid | random
    trials = 40                            # default for --trials (grid: at most the grid size)
    metric = "val/acc1"                    # maximised: per-epoch lines of metrics.jsonl for pruning,
                                           # result.json val.acc1 for the trial's value (a pretraining
                                           # sweep's "knn/acc1": result.json val.knn_acc1)
    pruner = "median"                      # median | none | { name = "median", startup_trials = 5, warmup_epochs = 0 }
    seed = 0
    [sweep.space]
    "optim.lr" = { low = 1e-4, high = 3e-3, log = true }
    "optim.weight_decay" = { low = 0.01, high = 0.1, log = true, steps = 3 }   # steps: grid points
    "model.kwargs.drop_path_rate" = { choices = [0.0, 0.1, 0.2] }
    "schedule.warmup_epochs" = [0.0, 5.0]  # a plain list is short for choices

Trials
    A trial is the run ``<out_dir>/<sweep>/trial-<hash8>``, the hash being that of its parameters
    (not Optuna's trial number: numbers change when an interrupted trial is re-queued, while the
    same parameters must find the same directory to resume it). It runs as a child process with
    the sampled overrides plus ``run.sweep``, ``run.sweep_keys``, ``run.group`` and
    ``train.eval_test=false`` (the test split is touched only by the final runs of a study). The
    parent polls its ``metrics.jsonl`` for the metric, reports each epoch to Optuna and stops a
    pruned trial (SIGTERM), leaving ``pruned.json`` in its directory. A failed trial is recorded
    as FAIL with the last line of its log; the sweep goes on, and fails only when no trial of it
    completes.

Storage, resume and sharing
    One place decides the storage (:func:`storage_url`): ``--storage URL`` (of ``reprlab sweep``
    or of ``reprlab study run``, which passes it to every sweep of the study), else the sweep's
    own ``storage``, else the study's ``[study] storage``, else
    ``sqlite:///<out_dir>/<sweep>/optuna.db`` -- the database ``study run`` uses by default, so
    ``reprlab sweep STUDY_FILE --name S`` without ``--storage`` continues the study's search.
    A shared URL -- ``postgresql://user@host:5432/db`` or ``journal:///shared/path/sweep.log``
    (:mod:`reprlab.studies.storage`) -- lets any number of workers on several machines work on
    one search: each is ``reprlab sweep ... --storage URL`` (or ``study run --storage URL``).
    ``--trials N`` is the total for the sweep, over all workers, so re-running a finished sweep
    starts nothing. A RUNNING trial whose process is gone is *interrupted*: it is marked FAIL and
    its parameters are enqueued again (the new trial carries ``retry_of``; interrupted trials do
    not count towards N), so the re-run resumes the same directory from its last checkpoint.
    Gone means: on this host, nobody holds ``<trial dir>/.trial.lock`` (immediate); elsewhere,
    no heartbeat (a trial user attribute refreshed every minute) for 10 minutes.

Several workers (:mod:`reprlab.studies.sweep_workers`)
    Workers started at once on an empty database race to create Optuna's tables: the losers
    retry. The sampler is seeded afresh for every trial from ``seed`` and the trial's number
    (unique in the storage), so a sweep run by one process is reproducible and simultaneous
    workers draw different points. An asked trial runs only if no other trial holds its
    parameters (a space of few choices makes TPE propose a point twice) and fewer than N counted
    trials come before it; otherwise it is discarded (FAIL with ``duplicate_of`` or
    ``over_budget``, not counted) and the worker asks again. A worker with nothing left to start
    waits for the other workers' trials (re-queuing those whose worker died), so every worker
    returns when the whole sweep is finished, and a study's ``best_of`` run starts after it.
"""

from __future__ import annotations

import json
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, Callable

from reprlab.errors import ReprlabError
from reprlab.io import FileLock, atomic_write_text, make_dirs
from reprlab.studies.checks import check_keys, did_you_mean, override, read_toml
from reprlab.studies.process import exit_text, last_line, reprlab_argv, spawn, terminate
from reprlab.studies.results import read_complete, read_curve, trial_dir_name
from reprlab.studies.spec import load_study
from reprlab.studies.storage import StorageURL, open_storage, parse_storage, warn_network_sqlite
from reprlab.studies.sweep_spec import SweepSpec, parse_sweep
from reprlab.studies.sweep_workers import HEARTBEAT_S, HOST, MAX_DUPLICATES, SweepProgress, admit, progress_of, quiet_optuna, recover_interrupted, requeue



def load_sweep(path: str | Path, name: str | None = None) -> tuple[SweepSpec, Path, list[str]]:
    """(spec, default out_dir, overrides applied to every trial) from a sweep or study file."""
    path = Path(path)
    data = read_toml(path)
    if isinstance(data.get("sweep"), dict) and "study" not in data:
        check_keys(data, ("sweep",), str(path))
        spec = parse_sweep(data["sweep"], f"{path} [sweep]")
        if name is not None and name != spec.name:
            raise ReprlabError(f"{path}: holds sweep {spec.name!r}, not {name!r}")
        spec.validate([], f"{path} [sweep]")
        return spec, Path("runs"), []
    study = load_study(path, validate=False)
    sweeps = [n.spec for n in study.nodes.values() if n.kind == "sweep"]
    if not sweeps:
        raise ReprlabError(f"{path}: no [sweep] table (a sweep file) and no [[sweep]] tables (a study)")
    if name is None:
        if len(sweeps) > 1:
            raise ReprlabError(f"{path}: holds {len(sweeps)} sweeps ({', '.join(s.name for s in sweeps)}); choose one with --name")
        spec = sweeps[0]
    else:
        found = [s for s in sweeps if s.name == name]
        if not found:
            raise ReprlabError(f"{path}: no sweep named {name!r}{did_you_mean(name, [s.name for s in sweeps])}")
        spec = found[0]
    spec.validate(study.overrides, f"{path} sweep {spec.name!r}")
    return spec, study.out_dir, study.overrides


# ============================================================================================
# Storage and progress
# ============================================================================================


def storage_url(spec: SweepSpec, out_dir: Path, storage: str | None = None) -> str:
    """The Optuna storage of a sweep: ``storage`` (--storage), else the sweep's (or its study's)
    ``storage``, else ``sqlite:///<out_dir>/<sweep>/optuna.db``."""
    if storage or spec.storage:
        return storage or spec.storage  # type: ignore[return-value]
    return f"sqlite:///{(Path(out_dir) / spec.name / 'optuna.db').resolve()}"


def sweep_storage(spec: SweepSpec, out_dir: Path, storage: str | None = None) -> StorageURL:
    """The checked storage URL of a sweep (a bad one is a one-line error; nothing is created)."""
    where = "--storage" if storage else f"sweep {spec.name!r} storage"
    return parse_storage(storage_url(spec, out_dir, storage), where)


def sweep_progress(spec: SweepSpec, out_dir: Path, storage: str | None = None, trials: int | None = None) -> SweepProgress:
    """Where a sweep stands, without creating anything (for --dry-run and the study runner)."""
    target = spec.target(trials)
    s = sweep_storage(spec, out_dir, storage)
    if s.path is not None and not s.path.is_file():
        return SweepProgress(target=target)
    optuna = quiet_optuna()
    try:
        study = optuna.load_study(study_name=spec.name, storage=open_storage(s))
    except KeyError:  # the storage exists but holds no study of this name yet
        return SweepProgress(target=target)
    return progress_of(study.get_trials(deepcopy=False), target)


def best_in_storage(spec: SweepSpec, out_dir: Path, storage: str | None = None) -> dict[str, Any] | None:
    """Parameters of the best complete trial in a *shared* storage (None for SQLite, whose trials
    are all in ``out_dir``): workers on machines without a shared disk keep their trial
    directories to themselves, so only the storage knows every trial. Ties go to the lower number."""
    s = sweep_storage(spec, out_dir, storage)
    if not s.shared or (s.path is not None and not s.path.is_file()):
        return None
    try:
        study = quiet_optuna().load_study(study_name=spec.name, storage=open_storage(s))
    except KeyError:
        return None
    complete = [t for t in study.get_trials(deepcopy=False) if t.state.name == "COMPLETE"]
    if not complete:
        raise ReprlabError(f"sweep {spec.name!r}: no complete trial in the storage {s.shown} (run the sweep first)")
    return dict(max(complete, key=lambda t: (t.value, -t.number)).params)


# ============================================================================================
# Running
# ============================================================================================


#: ``executor(argv, log_path, env) -> process`` with ``poll()``, ``terminate()``, ``kill()``,
#: ``wait(timeout)``; the default starts a child process (tests inject a fake).
Executor = Callable[[list[str], Path, dict[str, str]], Any]


@dataclass
class TrialOutcome:
    number: int
    name: str
    params: dict[str, Any]
    state: str  # complete | pruned | failed
    value: float | None = None
    message: str = ""


@dataclass
class _Ctx:
    spec: SweepSpec
    sweep_dir: Path
    base_overrides: list[str]
    data_root: str | None
    executor: Executor
    poll_s: float
    out: IO[str]


def trial_argv(ctx: _Ctx, params: dict[str, Any], name: str) -> list[str]:
    spec = ctx.spec
    return [
        *reprlab_argv(ctx.data_root, spec.command),
        "--config",
        spec.config,
        *spec.args,
        "train.progress=false",
        *ctx.base_overrides,
        *spec.overrides,
        *(override(k, v) for k, v in params.items()),
        override("run.sweep", spec.name),
        override("run.sweep_keys", list(spec.space)),
        override("run.group", spec.name),
        "train.eval_test=false",
        override("run.out_dir", str(ctx.sweep_dir)),
        override("run.name", name),
    ]


def _params_text(params: dict[str, Any]) -> str:
    return ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in params.items())


def _run_trial(study: Any, trial: Any, ctx: _Ctx) -> TrialOutcome:
    return _Trial(study, trial, ctx).run()


class _Trial:
    """One Optuna trial as a child run: its directory (locked), its heartbeat, the epochs of
    its curve reported to the pruner, and its outcome told to the study."""

    def __init__(self, study: Any, trial: Any, ctx: _Ctx) -> None:
        self.study, self.trial, self.ctx, self.spec = study, trial, ctx, ctx.spec
        self.params: dict[str, Any] | None = None
        self.lock: FileLock | None = None
        self.proc: Any = None
        self.reported: set[int] = set()  # epochs of the curve reported to Optuna
        self.last_beat = 0.0

    def run(self) -> TrialOutcome:
        trial, ctx = self.trial, self.ctx
        try:
            self.params = {k: p.suggest(trial) for k, p in self.spec.space.items()}
            self.name = trial_dir_name(self.params)
            self.run_dir = ctx.sweep_dir / self.name
            self.lock = FileLock(self.run_dir / ".trial.lock", f"trial directory {self.run_dir}")
            # The same parameters may be running in another local process (a categorical space
            # lets TPE propose a point twice): wait for it and reuse its directory.
            while not self.lock.try_acquire():
                self.beat()
                time.sleep(ctx.poll_s)
            trial.set_user_attr("host", HOST)
            trial.set_user_attr("run_dir", str(self.run_dir.resolve()))
            self.beat()
            if read_complete(self.run_dir) is not None:  # finished before an interruption of the sweep
                return self.finish(0)
            if (self.run_dir / "pruned.json").is_file():  # pruned before: the same decision again
                self.report_new()
                return self.pruned("pruned before (pruned.json)")
            self.proc = ctx.executor(trial_argv(ctx, self.params, self.name), self.run_dir / "log.txt", dict(os.environ))
            while self.proc.poll() is None:
                time.sleep(ctx.poll_s)
                self.beat()
                if self.report_new():
                    terminate(self.proc)
                    self.proc = None
                    return self.pruned("")
            code = self.proc.poll()
            self.proc = None
            return self.finish(code)
        except BaseException:
            # Ctrl-C or a bug: stop the child and queue the parameters again, so the next run of
            # the sweep resumes this trial's directory instead of forgetting it.
            if self.proc is not None:
                terminate(self.proc)
            if trial.number is not None and self.study.get_trials(deepcopy=False)[trial.number].state.name == "RUNNING":
                requeue(self.study, trial.number, self.params)
            raise
        finally:
            if self.lock is not None:
                self.lock.release()

    def beat(self) -> None:
        if time.monotonic() - self.last_beat >= HEARTBEAT_S:
            self.trial.set_user_attr("heartbeat", time.time())
            self.last_beat = time.monotonic()

    def report_new(self) -> bool:
        """Report epochs not reported yet; True as soon as the pruner says stop."""
        for epoch, value in read_curve(self.run_dir / "metrics.jsonl", self.spec.metric):
            if epoch in self.reported:
                continue
            self.trial.report(value, epoch)
            self.reported.add(epoch)
            if self.trial.should_prune():
                return True
        return False

    def value_at(self, epoch: int | None) -> float | None:
        curve = dict(read_curve(self.run_dir / "metrics.jsonl", self.spec.metric))
        return curve.get(epoch) if epoch is not None else None

    def pruned(self, note: str) -> TrialOutcome:
        epoch = max(self.reported) if self.reported else None
        marker = {"trial": self.trial.number, "epoch": epoch, "metric": self.spec.metric, "value": self.value_at(epoch), "params": self.params}
        if not (self.run_dir / "pruned.json").is_file():
            atomic_write_text(self.run_dir / "pruned.json", json.dumps(marker, indent=2) + "\n")
        self.study.tell(self.trial, state=quiet_optuna().trial.TrialState.PRUNED)
        return TrialOutcome(self.trial.number, self.name, self.params, "pruned", marker["value"], note or f"pruned at epoch {epoch}")

    def failed(self, msg: str) -> TrialOutcome:
        self.trial.set_user_attr("error", msg)
        self.study.tell(self.trial, state=quiet_optuna().trial.TrialState.FAIL)
        return TrialOutcome(self.trial.number, self.name, self.params, "failed", None, msg)

    def finish(self, code: int) -> TrialOutcome:
        result = read_complete(self.run_dir)
        if result is None:
            return self.failed(f"{exit_text(code)}: {last_line(self.run_dir / 'log.txt')}" if code != 0 else "exited 0 without a complete result.json")
        for epoch, value in read_curve(self.run_dir / "metrics.jsonl", self.spec.metric):
            if epoch not in self.reported:  # the curve of a complete trial is complete in Optuna too
                self.trial.report(value, epoch)
                self.reported.add(epoch)
        value = (result.get("val") or {}).get(self.spec.metric_key)
        if not isinstance(value, (int, float)):
            return self.failed(f"result.json has no val.{self.spec.metric_key}")
        self.study.tell(self.trial, float(value))
        return TrialOutcome(self.trial.number, self.name, self.params, "complete", float(value))


def _reseed(sampler: Any, seed: int) -> None:
    """Seed a sampler's random state (and that of the random sampler TPE starts with); an Optuna
    whose samplers keep it elsewhere gets a fresh random state instead."""
    done = False
    for obj in (sampler, getattr(sampler, "_random_sampler", None)):
        rng = getattr(getattr(obj, "_rng", None), "rng", None)  # LazyRandomState -> numpy RandomState
        if hasattr(rng, "seed"):
            rng.seed(seed)
            done = True
    if not done:
        sampler.reseed_rng()


def _make_sampler(spec: SweepSpec):
    """The sweep's sampler, seeded afresh for every trial from ``seed`` and the trial's number.

    Why per trial: the number is unique in the storage, so workers that start together on an
    empty database (each seeing no finished trial) still draw different points, while a sweep
    run by one process stays reproducible from ``seed``.
    """
    optuna = quiet_optuna()
    base = {"grid": optuna.samplers.GridSampler, "random": optuna.samplers.RandomSampler}.get(spec.sampler, optuna.samplers.TPESampler)

    class _Sampler(base):  # type: ignore[misc, valid-type]
        def before_trial(self, study: Any, trial: Any) -> None:
            _reseed(self, (spec.seed * 1_000_003 + trial.number) % 2**32)
            super().before_trial(study, trial)

        # GridSampler calls study.stop() once the grid is used up, which only works inside
        # study.optimize(); our ask/tell loop stops by itself (the target is capped at the grid
        # size), so the stop request is dropped.
        if base is optuna.samplers.GridSampler:

            def after_trial(self, *args: Any, **kwargs: Any) -> None:
                return None

    if spec.sampler == "grid":
        return _Sampler({k: p.grid_values() for k, p in spec.space.items()}, seed=spec.seed)
    return _Sampler(seed=spec.seed)


def _make_pruner(spec: SweepSpec):
    optuna = quiet_optuna()
    if spec.pruner == "none":
        return optuna.pruners.NopPruner()
    return optuna.pruners.MedianPruner(n_startup_trials=spec.pruner_startup_trials, n_warmup_steps=spec.pruner_warmup_epochs)


def open_study(spec: SweepSpec, out_dir: Path, storage: str | None, base_overrides: list[str]) -> Any:
    """Create or load the Optuna study; refuse one created by a different sweep definition."""
    optuna = quiet_optuna()
    s = sweep_storage(spec, out_dir, storage)
    if s.kind == "sqlite":
        warn_network_sqlite(s)
        make_dirs(s.path.parent)
    opened = open_storage(s)
    url = s.shown
    for attempt in range(5):  # several workers creating one study: the losers load it
        try:
            study = optuna.create_study(
                study_name=spec.name, storage=opened, sampler=_make_sampler(spec), pruner=_make_pruner(spec), direction="maximize", load_if_exists=True
            )
            break
        except KeyError:  # created by another worker between our look-up and our insert
            if attempt == 4:
                raise
            time.sleep(0.1 * (attempt + 1))
    definition = spec.definition(base_overrides)
    saved = study.user_attrs.get("reprlab_definition")
    if saved is None:
        study.set_user_attr("reprlab_definition", definition)
    elif saved != definition:
        diff = [k for k in definition if saved.get(k) != definition[k]]
        raise ReprlabError(
            f"sweep {spec.name!r}: the storage {url} holds a search with a different {', '.join(diff)}; "
            "its trials are not comparable: choose another sweep name, --out or --storage"
        )
    return study


@dataclass
class SweepSummary:
    progress: SweepProgress
    outcomes: list[TrialOutcome]
    best: dict[str, Any] | None
    best_value: float | None


def run_sweep(
    spec: SweepSpec,
    out_dir: str | Path,
    trials: int | None = None,
    storage: str | None = None,
    data_root: str | None = None,
    base_overrides: list[str] | tuple[str, ...] = (),
    executor: Executor | None = None,
    poll_s: float = 1.0,
    out: IO[str] = sys.stdout,
) -> SweepSummary:
    """Run trials until the sweep holds ``trials`` finished ones (complete, pruned or failed)."""
    if trials is not None and trials < 1:
        raise ReprlabError(f"--trials must be >= 1, got {trials}")
    out_dir = Path(out_dir)
    sweep_dir = out_dir / spec.name
    new_dirs = [d for d in (sweep_dir, *sweep_dir.parents) if not d.exists()]
    try:
        study = open_study(spec, out_dir, storage, list(base_overrides))
    except BaseException:  # a bad storage leaves no empty folder behind
        for d in new_dirs:
            if d.is_dir() and not any(d.iterdir()):
                d.rmdir()
        raise
    make_dirs(sweep_dir)
    ctx = _Ctx(spec, sweep_dir, list(base_overrides), data_root, executor or spawn, poll_s, out)
    target = spec.target(trials)
    outcomes: list[TrialOutcome] = []
    duplicates, waiting_said = 0, False
    while True:
        recover_interrupted(study, out)
        prog = progress_of(study.get_trials(deepcopy=False), target)
        if (prog.finished >= target or duplicates >= MAX_DUPLICATES) and prog.running == 0 and prog.waiting == 0:
            break
        if (prog.finished + prog.running >= target or duplicates >= MAX_DUPLICATES) and prog.waiting == 0:
            # the budget is taken: wait for the other workers' trials (one may be interrupted and
            # re-queued), so that the sweep is whole when this returns (best_of runs after it)
            if not waiting_said:
                print(f"{time.strftime('%H:%M:%S')} waiting for {prog.running} running trial(s) of other workers", file=out, flush=True)
                waiting_said = True
            time.sleep(poll_s)
            continue
        trial = study.ask()  # takes re-queued parameters first
        why = admit(study, trial, spec, target, poll_s)
        if why == "duplicate":
            duplicates += 1
            if duplicates == MAX_DUPLICATES:  # then only wait for the other workers' trials
                print(f"sweep {spec.name!r}: {MAX_DUPLICATES} proposals in a row were points already tried; the search space is used up", file=out, flush=True)
            continue
        if why is not None:
            continue
        duplicates, waiting_said = 0, False
        t0 = time.monotonic()
        o = _run_trial(study, trial, ctx)
        outcomes.append(o)
        what = {"complete": f"complete, {spec.metric} {o.value:.2f}" if o.value is not None else "complete",
                "pruned": o.message + (f" ({spec.metric} {o.value:.2f})" if o.value is not None else ""),
                "failed": f"FAILED: {o.message}"}[o.state]
        print(f"{time.strftime('%H:%M:%S')} trial {o.number} {o.name} ({_params_text(o.params)}): {what}  [{time.monotonic() - t0:.0f}s]", file=out, flush=True)
    prog = progress_of(study.get_trials(deepcopy=False), target)
    best, best_value = None, None
    complete = [t for t in study.get_trials(deepcopy=False) if t.state.name == "COMPLETE"]
    if complete:
        b = max(complete, key=lambda t: (t.value, -t.number))
        best, best_value = dict(b.params), b.value
    print(f"sweep {spec.name!r}: {prog.describe()}" + (f"; best {spec.metric} {best_value:.2f}: {_params_text(best)}" if best else ""), file=out, flush=True)
    if not complete and prog.running == 0:
        failed = [t for t in study.get_trials(deepcopy=False) if t.state.name == "FAIL"]
        last = failed[-1].user_attrs.get("error", "see the trial logs") if failed else "no trial finished"
        raise ReprlabError(f"sweep {spec.name!r}: no trial completed ({prog.describe()}); last error: {last}; logs under {sweep_dir}")
    return SweepSummary(prog, outcomes, best, best_value)
