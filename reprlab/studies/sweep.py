"""Hyperparameter sweeps: Optuna chooses parameters, every trial is an ordinary reprlab run.

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
    A shared URL (e.g. ``postgresql://host/db``) lets several machines work on one search. ``--trials N`` is the total for the sweep, so re-running a finished sweep
    starts nothing. A RUNNING trial whose process is gone is *interrupted*: it is marked FAIL and
    its parameters are enqueued again (the new trial carries ``retry_of``; interrupted trials do
    not count towards N), so the re-run resumes the same directory from its last checkpoint.
    Gone means: on this host, nobody holds ``<trial dir>/.trial.lock`` (immediate); elsewhere,
    no heartbeat (a trial user attribute refreshed every minute) for 10 minutes.
    A fresh single-process sweep samples reproducibly from ``seed``; a resumed or shared one
    cannot be (sampling depends on what finished when), so its sampler seed also mixes in the
    trial count and the process id -- that keeps parallel workers from proposing the same points.
"""

from __future__ import annotations

import json
import math
import os
import socket
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import IO, Any, Callable

from reprlab.errors import ReprlabError
from reprlab.io import make_dirs
from reprlab.studies.study import (
    DirLock,
    check_keys,
    check_overrides,
    did_you_mean,
    exit_text,
    expect,
    is_locked,
    last_line,
    override,
    read_complete,
    read_toml,
    reprlab_argv,
    resolve_config_path,
    spawn,
    string_list,
    terminate,
    validate_overrides,
)

SWEEP_KEYS = ("name", "command", "config", "overrides", "args", "sampler", "trials", "metric", "pruner", "seed", "space", "storage", "parallel")
SAMPLERS = ("tpe", "grid", "random")
PRUNERS = ("median", "none")
PARAM_KEYS = ("low", "high", "log", "step", "steps", "choices")
PRUNER_KEYS = ("name", "startup_trials", "warmup_epochs")
HEARTBEAT_S = 60.0  # how often a running trial refreshes its heartbeat attribute
STALE_AFTER_S = 600.0  # a trial of another host without a heartbeat for this long is interrupted
HOST = socket.gethostname()


# ============================================================================================
# The sweep definition
# ============================================================================================


@dataclass(frozen=True)
class Param:
    """One dimension of the search space."""

    key: str
    choices: tuple | None = None
    low: float | int | None = None
    high: float | int | None = None
    log: bool = False
    step: float | int | None = None
    steps: int | None = None  # grid sampler: number of points between low and high

    @property
    def is_int(self) -> bool:
        return all(isinstance(v, int) for v in (self.low, self.high)) and (self.step is None or isinstance(self.step, int))

    def suggest(self, trial: Any) -> Any:
        if self.choices is not None:
            return trial.suggest_categorical(self.key, list(self.choices))
        if self.is_int:
            return trial.suggest_int(self.key, self.low, self.high, step=self.step or 1, log=self.log)
        return trial.suggest_float(self.key, float(self.low), float(self.high), step=self.step, log=self.log)

    def grid_values(self) -> list:
        if self.choices is not None:
            return list(self.choices)
        n = self.steps
        if self.log:
            vals = [self.low * (self.high / self.low) ** (i / (n - 1)) for i in range(n)]
        else:
            vals = [self.low + (self.high - self.low) * i / (n - 1) for i in range(n)]
        # readable values (6 significant digits), with the ends exact so they stay in range
        vals = [self.low, *[float(f"{v:.6g}") for v in vals[1:-1]], self.high]
        return [int(round(v)) for v in vals] if self.is_int else [float(v) for v in vals]

    def example(self) -> Any:
        return self.choices[0] if self.choices is not None else self.low


@dataclass(frozen=True)
class SweepSpec:
    name: str
    command: str
    config: str
    overrides: list[str] = field(default_factory=list)
    args: list[str] = field(default_factory=list)
    sampler: str = "tpe"
    trials: int = 20
    metric: str = "val/acc1"
    pruner: str = "median"
    pruner_startup_trials: int = 5
    pruner_warmup_epochs: int = 0
    seed: int = 0
    space: dict[str, Param] = field(default_factory=dict)
    storage: str | None = None
    parallel: int = 1  # in a study: how many `reprlab sweep` processes (workers) share this search
    index: int = 0

    @property
    def grid_size(self) -> int:
        return math.prod(len(p.grid_values()) for p in self.space.values())

    def target(self, trials: int | None = None) -> int:
        """Total number of trials the sweep runs (a grid has no more points than its size)."""
        n = trials if trials is not None else self.trials
        return min(n, self.grid_size) if self.sampler == "grid" else n

    @property
    def metric_key(self) -> str:
        """The key of result.json's ``val`` block holding the metric (``val/acc1`` -> ``acc1``,
        ``knn/acc1`` -> ``knn_acc1``)."""
        from reprlab.train.rundir import result_key

        return result_key(self.metric)

    def validate(self, base_overrides: list[str], where: str) -> None:
        """Build one trial's config now, so a typo in a key fails before any trial starts."""
        validate_overrides(self.config, [*base_overrides, *self.overrides, *(override(k, p.example()) for k, p in self.space.items())], where)

    def definition(self, base_overrides: list[str]) -> dict:
        """What makes trials comparable; a storage holding another definition is refused."""
        # through JSON, so it compares equal to the copy read back from the storage (tuples -> lists)
        return json.loads(json.dumps({
            "command": self.command,
            "config": Path(self.config).name,
            "overrides": [*base_overrides, *self.overrides],
            "args": self.args,
            "metric": self.metric,
            "space": {k: {f: v for f, v in asdict(p).items() if v is not None and f != "key"} for k, p in self.space.items()},
        }))


def _parse_param(key: str, raw: Any, where: str) -> Param:
    w = f"{where} space {key!r}"
    if isinstance(raw, list):
        raw = {"choices": raw}
    expect(raw, dict, where, f"space.{key}", "a table like { low = 1e-4, high = 1e-2, log = true } or { choices = [...] }")
    check_keys(raw, PARAM_KEYS, w)
    if "choices" in raw:
        extra = [k for k in raw if k != "choices"]
        if extra:
            raise ReprlabError(f"{w}: 'choices' cannot be combined with {extra[0]!r}")
        choices = raw["choices"]
        if not isinstance(choices, list) or not choices:
            raise ReprlabError(f"{w}: choices must be a non-empty list, got {choices!r}")
        for c in choices:
            if not isinstance(c, (str, int, float, bool)):
                raise ReprlabError(f"{w}: choice {c!r} must be a number, string or boolean")
        return Param(key=key, choices=tuple(choices))
    for req in ("low", "high"):
        if req not in raw:
            raise ReprlabError(f"{w}: missing {req!r} (or give choices = [...])")
        expect(raw[req], (int, float), w, req, "a number")
    low, high = raw["low"], raw["high"]
    if not low < high:
        raise ReprlabError(f"{w}: expected low < high, got low={low!r}, high={high!r}")
    log = expect(raw.get("log", False), bool, w, "log", "true or false")
    if log and low <= 0:
        raise ReprlabError(f"{w}: log = true needs low > 0, got {low!r}")
    step = raw.get("step")
    if step is not None:
        expect(step, (int, float), w, "step", "a positive number")
        if step <= 0 or log:
            raise ReprlabError(f"{w}: step must be > 0 and cannot be combined with log = true")
    steps = raw.get("steps")
    if steps is not None and (not isinstance(steps, int) or isinstance(steps, bool) or steps < 2):
        raise ReprlabError(f"{w}: steps must be an integer >= 2 (grid points from low to high), got {steps!r}")
    return Param(key=key, low=low, high=high, log=log, step=step, steps=steps)


def parse_sweep(t: Any, where: str, index: int = 0) -> SweepSpec:
    """Check one sweep table (``[sweep]`` of a sweep file or ``[[sweep]]`` of a study)."""
    from reprlab.studies.study import check_node

    expect(t, dict, where, "sweep", "a table")
    name, command = check_node(t, SWEEP_KEYS, ("name", "command", "config", "space"), where)
    sampler = expect(t.get("sampler", "tpe"), str, where, "sampler", "a string")
    if sampler not in SAMPLERS:
        raise ReprlabError(f"{where}: sampler {sampler!r} is not one of {', '.join(SAMPLERS)}{did_you_mean(sampler, SAMPLERS)}")
    trials = expect(t.get("trials", 20), int, where, "trials", "a positive integer")
    if trials < 1:
        raise ReprlabError(f"{where}: trials must be >= 1, got {trials}")
    metric = expect(t.get("metric", "val/acc1"), str, where, "metric", "a string like 'val/acc1'")
    if metric.count("/") != 1 or not all(metric.split("/")):
        raise ReprlabError(f"{where}: metric {metric!r} must look like 'val/acc1' (a metrics.jsonl key)")
    pruner = t.get("pruner", "median")
    pruner_table = {"name": pruner} if isinstance(pruner, str) else expect(pruner, dict, where, "pruner", "'median', 'none' or a table")
    check_keys(pruner_table, PRUNER_KEYS, f"{where} pruner")
    pname = expect(pruner_table.get("name", "median"), str, where, "pruner.name", "a string")
    if pname not in PRUNERS:
        raise ReprlabError(f"{where}: pruner {pname!r} is not one of {', '.join(PRUNERS)}{did_you_mean(pname, PRUNERS)}")
    startup = expect(pruner_table.get("startup_trials", 5), int, where, "pruner.startup_trials", "an integer >= 0")
    warmup = expect(pruner_table.get("warmup_epochs", 0), int, where, "pruner.warmup_epochs", "an integer >= 0")
    space_raw = expect(t["space"], dict, where, "space", "a table of parameters")
    if not space_raw:
        raise ReprlabError(f"{where}: space is empty; name at least one parameter")
    space = {k: _parse_param(k, v, where) for k, v in space_raw.items()}
    if sampler == "grid":
        for p in space.values():
            if p.choices is None and p.steps is None:
                raise ReprlabError(f"{where}: the grid sampler needs choices or steps for {p.key!r}")
    storage = t.get("storage")
    if storage is not None:
        expect(storage, str, where, "storage", "an Optuna storage URL")
    parallel = expect(t.get("parallel", 1), int, where, "parallel", "a positive integer")
    if parallel < 1:
        raise ReprlabError(f"{where}: parallel must be >= 1, got {parallel}")
    return SweepSpec(
        name=name,
        command=command,
        config=resolve_config_path(expect(t["config"], str, where, "config", "a string"), where),
        overrides=check_overrides(string_list(t.get("overrides", []), where, "overrides"), where, "overrides"),
        args=string_list(t.get("args", []), where, "args"),
        sampler=sampler,
        trials=trials,
        metric=metric,
        pruner=pname,
        pruner_startup_trials=startup,
        pruner_warmup_epochs=warmup,
        seed=expect(t.get("seed", 0), int, where, "seed", "an integer"),
        space=space,
        storage=storage,
        parallel=parallel,
        index=index,
    )


def load_sweep(path: str | Path, name: str | None = None) -> tuple[SweepSpec, Path, list[str]]:
    """(spec, default out_dir, overrides applied to every trial) from a sweep or study file."""
    from reprlab.studies.study import load_study

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


def _optuna():
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)  # one status line per trial is ours
    return optuna


@dataclass
class SweepProgress:
    target: int
    started: bool = False
    complete: int = 0
    pruned: int = 0
    failed: int = 0
    interrupted: int = 0
    running: int = 0
    waiting: int = 0

    @property
    def finished(self) -> int:
        return self.complete + self.pruned + self.failed

    @property
    def done(self) -> bool:
        return self.finished >= self.target and self.running == 0 and self.complete >= 1

    def describe(self) -> str:
        text = f"{self.finished}/{self.target} trials finished ({self.complete} complete, {self.pruned} pruned, {self.failed} failed)"
        if self.running:
            text += f", {self.running} running or interrupted"
        return text


def _progress(trials: list, target: int) -> SweepProgress:
    """Count trials; a FAIL that a later trial retries was an interruption, not a result."""
    retried = {t.user_attrs.get("retry_of") for t in trials if "retry_of" in t.user_attrs}
    prog = SweepProgress(target=target, started=bool(trials))
    for t in trials:
        state = t.state.name
        if state == "FAIL" and t.number in retried:
            prog.interrupted += 1
        elif state in ("COMPLETE", "PRUNED", "FAIL", "RUNNING", "WAITING"):
            attr = {"COMPLETE": "complete", "PRUNED": "pruned", "FAIL": "failed", "RUNNING": "running", "WAITING": "waiting"}[state]
            setattr(prog, attr, getattr(prog, attr) + 1)
    return prog


def sweep_progress(spec: SweepSpec, out_dir: Path, storage: str | None = None, trials: int | None = None) -> SweepProgress:
    """Where a sweep stands, without creating anything (for --dry-run and the study runner)."""
    target = spec.target(trials)
    url = storage_url(spec, out_dir, storage)
    if url.startswith("sqlite:///") and not Path(url[len("sqlite:///"):]).is_file():
        return SweepProgress(target=target)
    optuna = _optuna()
    try:
        study = optuna.load_study(study_name=spec.name, storage=url)
    except KeyError:  # the storage exists but holds no study of this name yet
        return SweepProgress(target=target)
    return _progress(study.get_trials(deepcopy=False), target)


def trial_dir_name(params: dict[str, Any]) -> str:
    import hashlib

    return "trial-" + hashlib.sha256(json.dumps(params, sort_keys=True).encode()).hexdigest()[:8]


def read_curve(metrics_file: Path, metric: str) -> list[tuple[int, float]]:
    """(epoch, value) of every line holding ``metric``; a half-written last line is left for later."""
    if not metrics_file.is_file():
        return []
    text = metrics_file.read_text()
    lines = text.split("\n")[:-1]  # the part after the last newline may still be being written
    out: dict[int, float] = {}
    for ln in lines:
        if not ln.strip():
            continue
        row = json.loads(ln)
        if metric in row:
            out.setdefault(int(round(row["epoch"])), float(row[metric]))
    return sorted(out.items())


def best_trial(out_dir: str | Path, sweep_name: str, metric: str = "val/acc1") -> dict[str, Any]:
    """Parameters (``sweep_params`` of result.json) of the complete trial with the highest value.

    Read from the run directories, not from Optuna's storage, so it works with any storage and
    on a copied study folder. Ties go to the first directory name (deterministic).
    """
    from reprlab.train.rundir import result_key

    sweep_dir = Path(out_dir) / sweep_name
    key = result_key(metric)
    best: tuple[float, str, dict] | None = None
    for run_dir in sorted(sweep_dir.glob("trial-*")):
        result = read_complete(run_dir)
        if result is None:
            continue
        value = (result.get("val") or {}).get(key)
        if not isinstance(value, (int, float)) or math.isnan(value):
            continue
        if best is None or value > best[0]:
            best = (float(value), run_dir.name, result.get("sweep_params") or {})
    if best is None:
        raise ReprlabError(f"sweep {sweep_name!r}: no complete trial under {sweep_dir} (run the sweep first)")
    return dict(best[2])


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


def _requeue(study: Any, number: int, params: dict[str, Any] | None) -> None:
    """Mark an interrupted trial FAIL and queue its parameters again (same directory)."""
    optuna = _optuna()
    if params is not None:
        study.enqueue_trial(params, user_attrs={"retry_of": number})
    study.tell(number, state=optuna.trial.TrialState.FAIL, skip_if_finished=True)


def recover_interrupted(study: Any, out: IO[str]) -> int:
    """Re-queue RUNNING trials whose process is gone (see the module docstring); returns how many."""
    optuna = _optuna()
    now = time.time()
    n = 0
    for t in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,)):
        attrs = t.user_attrs
        if attrs.get("host") == HOST and attrs.get("run_dir"):
            gone = not is_locked(Path(attrs["run_dir"]) / ".trial.lock")
        else:
            start = t.datetime_start.timestamp() if t.datetime_start else now
            gone = now - float(attrs.get("heartbeat", start)) > STALE_AFTER_S
        if gone:
            _requeue(study, t.number, dict(t.params) if t.params else None)
            n += 1
            where = Path(attrs["run_dir"]).name if attrs.get("run_dir") else "no directory yet"
            print(f"{time.strftime('%H:%M:%S')} trial {t.number} ({where}) was interrupted; re-queued", file=out, flush=True)
    return n


def _params_text(params: dict[str, Any]) -> str:
    return ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in params.items())


def _run_trial(study: Any, trial: Any, ctx: _Ctx) -> TrialOutcome:
    optuna = _optuna()
    spec = ctx.spec
    params = None
    lock = None
    proc = None
    try:
        params = {k: p.suggest(trial) for k, p in spec.space.items()}
        name = trial_dir_name(params)
        run_dir = ctx.sweep_dir / name
        lock = DirLock(run_dir / ".trial.lock", f"trial directory {run_dir}")
        last_beat = 0.0

        def beat() -> None:
            nonlocal last_beat
            if time.monotonic() - last_beat >= HEARTBEAT_S:
                trial.set_user_attr("heartbeat", time.time())
                last_beat = time.monotonic()

        # The same parameters may be running in another local process (a categorical space
        # lets TPE propose a point twice): wait for it and reuse its directory.
        while not lock.try_acquire():
            beat()
            time.sleep(ctx.poll_s)
        trial.set_user_attr("host", HOST)
        trial.set_user_attr("run_dir", str(run_dir.resolve()))
        beat()
        reported: set[int] = set()

        def report_new() -> bool:
            """Report epochs not reported yet; True as soon as the pruner says stop."""
            for epoch, value in read_curve(run_dir / "metrics.jsonl", spec.metric):
                if epoch in reported:
                    continue
                trial.report(value, epoch)
                reported.add(epoch)
                if trial.should_prune():
                    return True
            return False

        def pruned(note: str) -> TrialOutcome:
            from reprlab.io import atomic_write_text

            epoch = max(reported) if reported else None
            marker = {"trial": trial.number, "epoch": epoch, "metric": spec.metric, "value": trial_value_at(epoch), "params": params}
            if not (run_dir / "pruned.json").is_file():
                atomic_write_text(run_dir / "pruned.json", json.dumps(marker, indent=2) + "\n")
            study.tell(trial, state=optuna.trial.TrialState.PRUNED)
            return TrialOutcome(trial.number, name, params, "pruned", marker["value"], note or f"pruned at epoch {epoch}")

        def trial_value_at(epoch: int | None) -> float | None:
            curve = dict(read_curve(run_dir / "metrics.jsonl", spec.metric))
            return curve.get(epoch) if epoch is not None else None

        def finish(code: int) -> TrialOutcome:
            result = read_complete(run_dir)
            if result is None:
                msg = f"{exit_text(code)}: {last_line(run_dir / 'log.txt')}" if code != 0 else "exited 0 without a complete result.json"
                trial.set_user_attr("error", msg)
                study.tell(trial, state=optuna.trial.TrialState.FAIL)
                return TrialOutcome(trial.number, name, params, "failed", None, msg)
            for epoch, value in read_curve(run_dir / "metrics.jsonl", spec.metric):
                if epoch not in reported:  # the curve of a complete trial is complete in Optuna too
                    trial.report(value, epoch)
                    reported.add(epoch)
            value = (result.get("val") or {}).get(spec.metric_key)
            if not isinstance(value, (int, float)):
                msg = f"result.json has no val.{spec.metric_key}"
                trial.set_user_attr("error", msg)
                study.tell(trial, state=optuna.trial.TrialState.FAIL)
                return TrialOutcome(trial.number, name, params, "failed", None, msg)
            study.tell(trial, float(value))
            return TrialOutcome(trial.number, name, params, "complete", float(value))

        if read_complete(run_dir) is not None:  # finished before an interruption of the sweep
            return finish(0)
        if (run_dir / "pruned.json").is_file():  # pruned before: the same decision again
            report_new()
            return pruned("pruned before (pruned.json)")
        proc = ctx.executor(trial_argv(ctx, params, name), run_dir / "log.txt", dict(os.environ))
        while proc.poll() is None:
            time.sleep(ctx.poll_s)
            beat()
            if report_new():
                terminate(proc)
                proc = None
                return pruned("")
        code = proc.poll()
        proc = None
        return finish(code)
    except BaseException:
        # Ctrl-C or a bug: stop the child and queue the parameters again, so the next run of
        # the sweep resumes this trial's directory instead of forgetting it.
        if proc is not None:
            terminate(proc)
        if trial.number is not None and study.get_trials(deepcopy=False)[trial.number].state.name == "RUNNING":
            _requeue(study, trial.number, params)
        raise
    finally:
        if lock is not None:
            lock.release()


def _make_sampler(spec: SweepSpec, n_existing: int):
    optuna = _optuna()
    seed = spec.seed if n_existing == 0 else (spec.seed * 1_000_003 + n_existing * 7919 + os.getpid()) % 2**31
    if spec.sampler == "grid":

        class _Grid(optuna.samplers.GridSampler):
            # GridSampler calls study.stop() once the grid is used up, which only works inside
            # study.optimize(); our ask/tell loop stops by itself (the target is capped at the
            # grid size), so the stop request is dropped.
            def after_trial(self, *args: Any, **kwargs: Any) -> None:
                return None

        return _Grid({k: p.grid_values() for k, p in spec.space.items()}, seed=seed)
    if spec.sampler == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    return optuna.samplers.TPESampler(seed=seed)


def _make_pruner(spec: SweepSpec):
    optuna = _optuna()
    if spec.pruner == "none":
        return optuna.pruners.NopPruner()
    return optuna.pruners.MedianPruner(n_startup_trials=spec.pruner_startup_trials, n_warmup_steps=spec.pruner_warmup_epochs)


def open_study(spec: SweepSpec, out_dir: Path, storage: str | None, base_overrides: list[str]) -> Any:
    """Create or load the Optuna study; refuse one created by a different sweep definition."""
    optuna = _optuna()
    url = storage_url(spec, out_dir, storage)
    if url.startswith("sqlite:///"):
        make_dirs(Path(url[len("sqlite:///"):]).parent)
    try:
        existing = optuna.load_study(study_name=spec.name, storage=url)
        n_existing = len(existing.get_trials(deepcopy=False))
    except KeyError:
        n_existing = 0
    study = optuna.create_study(
        study_name=spec.name, storage=url, sampler=_make_sampler(spec, n_existing), pruner=_make_pruner(spec), direction="maximize", load_if_exists=True
    )
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
    make_dirs(sweep_dir)
    study = open_study(spec, out_dir, storage, list(base_overrides))
    ctx = _Ctx(spec, sweep_dir, list(base_overrides), data_root, executor or spawn, poll_s, out)
    target = spec.target(trials)
    outcomes: list[TrialOutcome] = []
    while True:
        recover_interrupted(study, out)
        prog = _progress(study.get_trials(deepcopy=False), target)
        if prog.finished + prog.running >= target:
            break
        trial = study.ask()  # takes re-queued parameters first
        t0 = time.monotonic()
        o = _run_trial(study, trial, ctx)
        outcomes.append(o)
        what = {"complete": f"complete, {spec.metric} {o.value:.2f}" if o.value is not None else "complete",
                "pruned": o.message + (f" ({spec.metric} {o.value:.2f})" if o.value is not None else ""),
                "failed": f"FAILED: {o.message}"}[o.state]
        print(f"{time.strftime('%H:%M:%S')} trial {o.number} {o.name} ({_params_text(o.params)}): {what}  [{time.monotonic() - t0:.0f}s]", file=out, flush=True)
    prog = _progress(study.get_trials(deepcopy=False), target)
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
