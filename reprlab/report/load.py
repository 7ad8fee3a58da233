"""Find, read and check the run directories of a study (``result.json``, ``metrics.jsonl``).

A run directory that cannot be read -- invalid ``result.json``, a corrupt ``metrics.jsonl`` of a
complete run -- does not stop the report: :func:`load_study` keeps it as a :class:`BadRun` with
its one-line reason, and the report lists it while reporting all the others.
"""

from __future__ import annotations

import json
import math
import os
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from reprlab.errors import ReprlabError
from reprlab.result import RESULT_FILE, is_number, load_result, short

__all__ = [
    "RESULT_FILE",
    "METRICS_FILE",
    "CONFIG_FILE",
    "STUDY_FILE",
    "CURVE_KEYS",
    "MetricsLog",
    "Run",
    "BadRun",
    "Study",
    "load_result",
    "read_metrics",
    "check_metrics",
    "series",
    "curve_series",
    "load_study",
    "is_number",
]

METRICS_FILE = "metrics.jsonl"
CONFIG_FILE = "config.toml"
STUDY_FILE = "study.toml"  # the study file `reprlab study run` copies into its output folder

# The metrics.jsonl keys the report reads (x axis first); checked up front for complete runs.
CURVE_KEYS = ("epoch", "lr", "train/acc1", "val/acc1", "test/acc1", "train/loss", "val/loss", "knn/acc1", "online/val_acc1")

# result.json's schema, its checks and its reader are reprlab.result's (the writers use the same
# module); load_result raises the first problem reprlab.result.validate finds, naming the file.


# --------------------------------------------------------------------------------------------
# metrics.jsonl
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class MetricsLog:
    """The parsed lines of one ``metrics.jsonl``; ``records`` keeps 1-based line numbers."""

    path: Path
    records: tuple[tuple[int, dict[str, Any]], ...]
    skipped_lines: int = 0


def read_metrics(path: Path, strict: bool = True) -> MetricsLog:
    """Parse a ``metrics.jsonl`` file (one JSON object per line; blank lines are ignored).

    With ``strict`` (used for complete runs) a malformed line raises :class:`ReprlabError`
    naming ``file:line``. Without it (unfinished runs, whose last line is often cut off by the
    crash or still being written) bad lines are counted in ``skipped_lines`` instead.
    """
    path = Path(path)
    records: list[tuple[int, dict[str, Any]]] = []
    skipped = 0
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        why = exc.strerror if isinstance(exc, OSError) else "not UTF-8 text"
        raise ReprlabError(f"{path}: cannot read ({why})") from exc
    for lineno, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as exc:
            if strict:
                raise ReprlabError(f"{path}:{lineno}: not valid JSON ({exc.msg})") from exc
            skipped += 1
            continue
        if not isinstance(obj, dict):
            if strict:
                raise ReprlabError(f"{path}:{lineno}: expected a JSON object, got {type(obj).__name__}")
            skipped += 1
            continue
        records.append((lineno, obj))
    return MetricsLog(path=path, records=tuple(records), skipped_lines=skipped)


def check_metrics(log: MetricsLog, keys: tuple[str, ...] = CURVE_KEYS) -> None:
    """Raise :class:`ReprlabError` (``file:line``) for a non-number value of one of ``keys``.

    A null value means "not measured" and passes; silently dropping a wrong value instead would
    make a curve look shorter than the log.
    """
    for lineno, rec in log.records:
        for key in keys:
            value = rec.get(key)
            if value is not None and not is_number(value):
                raise ReprlabError(f"{log.path}:{lineno}: key '{key}' must be a number, got {short(value)}")


def series(log: MetricsLog, key: str, x: str = "epoch") -> tuple[list[float], list[float], int]:
    """Points of ``key`` against ``x`` in file order, plus how many had ``key`` but no ``x``.

    A null value counts as "not measured" (same as an absent key); a non-number is an error.
    """
    xs: list[float] = []
    ys: list[float] = []
    without_x = 0
    for lineno, rec in log.records:
        value = rec.get(key)
        if value is None:
            continue
        if not is_number(value):
            raise ReprlabError(f"{log.path}:{lineno}: key '{key}' must be a number, got {short(value)}")
        xv = rec.get(x)
        if xv is None:
            without_x += 1
            continue
        if not is_number(xv):
            raise ReprlabError(f"{log.path}:{lineno}: key '{x}' must be a number, got {short(xv)}")
        xs.append(float(xv))
        ys.append(float(value))
    return xs, ys, without_x


def curve_series(run_dir: Path, key: str, x: str = "epoch") -> tuple[list[float], list[float]]:
    """The ``(x, y)`` points of metric ``key`` in ``run_dir/metrics.jsonl``, exactly as logged.

    One point per line that holds both ``key`` and ``x`` (default: epoch), in file order. This
    is the same function the figures are drawn from, so a plotted line has exactly these points.
    """
    xs, ys, _ = series(read_metrics(Path(run_dir) / METRICS_FILE), key, x)
    return xs, ys


# --------------------------------------------------------------------------------------------
# Runs and the study
# --------------------------------------------------------------------------------------------


def _finite(value: Any) -> float | None:
    # NaN/inf (a diverged evaluation) is treated as absent so one bad seed cannot turn a
    # group's mean into NaN; the report's warnings list such values so they are not hidden.
    return float(value) if is_number(value) and math.isfinite(value) else None


@dataclass(frozen=True)
class Run:
    """One run directory with its validated ``result.json``."""

    dir: Path
    result: dict[str, Any]
    rel: str  # path relative to the study root, for display

    @property
    def name(self) -> str:
        return self.result.get("run") or self.dir.name

    @property
    def status(self) -> str:
        return self.result["status"]

    @property
    def task(self) -> str:
        return self.result.get("task") or "—"

    @property
    def group(self) -> str:
        return self.result.get("group") or "—"

    @property
    def seed(self) -> int | None:
        return self.result.get("seed")  # an int for every run but a failed-run record

    @property
    def stale(self) -> bool:
        """The study marked this run out of date (``"stale": true``): left out of comparisons."""
        return self.result.get("stale") is True

    @property
    def config_path(self) -> Path:
        return self.dir / CONFIG_FILE

    @property
    def metrics_path(self) -> Path:
        return self.dir / METRICS_FILE

    def get(self, key: str) -> Any:
        """An optional top-level result key, ``None`` when absent."""
        return self.result.get(key)

    def _block(self, split: str, source: str | None) -> dict[str, Any] | None:
        block: Any = self.result if source is None else self.result.get(source)
        block = block.get(split) if isinstance(block, dict) else None
        return block if isinstance(block, dict) else None

    @property
    def val_acc1_is_knn(self) -> bool:
        """Older pretraining runs wrote their kNN monitor as ``val.acc1``; newer ones as
        ``val.knn_acc1``. Such a run is recognised by its selection metric (``knn/...``), or,
        without one, by being an SSL pretraining run (supervised pretraining has a real val)."""
        if self.task != "pretrain":
            return False
        best = self.result.get("best_checkpoint")
        metric = best.get("metric") if isinstance(best, dict) else None
        if isinstance(metric, str):
            return metric.startswith("knn/")
        return self.result.get("method") not in (None, "supervised")

    def metric(self, split: str, key: str = "acc1", source: str | None = None) -> float | None:
        """``result[split][key]`` (or ``result[source][split][key]`` for a checkpoint block).

        The kNN accuracy of a pretraining run is never returned as ``val`` acc1: see :meth:`knn`.
        """
        block = self._block(split, source)
        if block is None:
            return None
        if split == "val" and key == "acc1" and "knn_acc1" not in block and self.val_acc1_is_knn:
            return None
        return _finite(block.get(key))

    def knn(self, source: str | None = None) -> float | None:
        """The kNN monitor accuracy on val: ``val.knn_acc1``, or the old spelling ``val.acc1``."""
        block = self._block("val", source)
        if block is None:
            return None
        if "knn_acc1" in block:
            return _finite(block["knn_acc1"])
        return _finite(block.get("acc1")) if self.val_acc1_is_knn else None


@dataclass(frozen=True)
class BadRun:
    """A run directory that could not be read, with the one-line reason."""

    dir: Path
    rel: str
    reason: str


@dataclass
class Study:
    """Everything found under a study root."""

    root: Path
    runs: list[Run]
    orphans: list[Path]  # directories with metrics.jsonl but no result.json (crashed/running)
    bad: list[BadRun] = field(default_factory=list)
    logs: dict[Path, MetricsLog] = field(default_factory=dict)  # checked metrics of complete runs
    sweep_log_keys: dict[str, frozenset[str]] = field(default_factory=dict)  # sampled log-uniformly
    notes: list[str] = field(default_factory=list)  # things the reader should know about the input

    @property
    def complete(self) -> list[Run]:
        """Complete runs that are not stale: everything the tables are made of."""
        return [r for r in self.runs if r.status == "complete" and not r.stale]

    @property
    def stale(self) -> list[Run]:
        return [r for r in self.runs if r.status == "complete" and r.stale]

    @property
    def incomplete(self) -> list[Run]:
        return [r for r in self.runs if r.status != "complete"]

    @property
    def failed(self) -> list[Run]:
        return [r for r in self.runs if r.status == "failed"]

    @property
    def main_runs(self) -> list[Run]:
        """Complete runs that are not sweep trials: the ones the comparisons are made from."""
        return [r for r in self.complete if r.get("sweep") is None]

    @property
    def sweep_runs(self) -> list[Run]:
        return [r for r in self.complete if r.get("sweep") is not None]


def rel_path(path: Path, root: Path) -> str:
    return Path(os.path.relpath(path, root)).as_posix()


def _sweep_log_keys(root: Path) -> tuple[dict[str, frozenset[str]], str | None]:
    """Per sweep name, the keys its ``[[sweep]] space`` samples with ``log = true``.

    Read from the ``study.toml`` a study run copies into its folder; a standalone sweep has
    none, and the figures then fall back to the value span. Only a hint for axis scales, so an
    unreadable file gives a note, not an error.
    """
    path = root / STUDY_FILE
    if not path.is_file():
        return {}, None
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        return {}, f"{STUDY_FILE} could not be read ({str(exc).splitlines()[0]}); sweep axis scales follow the value span only."
    sweeps = data.get("sweep")
    tables = sweeps if isinstance(sweeps, list) else [sweeps] if isinstance(sweeps, dict) else []
    out: dict[str, frozenset[str]] = {}
    for table in tables:
        space = table.get("space") if isinstance(table, dict) else None
        if isinstance(space, dict) and isinstance(table.get("name"), str):
            out[table["name"]] = frozenset(k for k, v in space.items() if isinstance(v, dict) and v.get("log") is True)
    return out, None


def load_study(root: Path) -> Study:
    """Find every run directory (any directory holding ``result.json``) under ``root``.

    A directory whose ``result.json`` is invalid, or whose complete run has a corrupt
    ``metrics.jsonl``, becomes a :class:`BadRun` and is left out of everything else. Raises
    :class:`ReprlabError` only when ``root`` is missing or holds no run directory at all.
    """
    root = Path(root)
    if not root.is_dir():
        raise ReprlabError(f"{root}: study directory does not exist or is not a directory")
    runs: list[Run] = []
    bad: list[BadRun] = []
    logs: dict[Path, MetricsLog] = {}
    result_dirs = sorted({p.parent for p in root.rglob(RESULT_FILE) if p.is_file()})
    for run_dir in result_dirs:
        rel = rel_path(run_dir, root)
        try:
            run = Run(dir=run_dir, result=load_result(run_dir), rel=rel)
            # A complete run's log is whole (result.json is written last), so a bad line in
            # it is corruption: check it now, not halfway through drawing figures.
            if run.status == "complete" and run.metrics_path.is_file():
                log = read_metrics(run.metrics_path)
                check_metrics(log)
                logs[run.metrics_path] = log
        except ReprlabError as exc:
            bad.append(BadRun(dir=run_dir, rel=rel, reason=str(exc)))
            continue
        runs.append(run)
    result_set = set(result_dirs)
    orphans = sorted(p.parent for p in root.rglob(METRICS_FILE) if p.is_file() and p.parent not in result_set)
    if not runs and not orphans and not bad:
        raise ReprlabError(f"{root}: no run directories found (expected directories holding {RESULT_FILE})")
    log_keys, note = _sweep_log_keys(root)
    return Study(root=root, runs=runs, orphans=orphans, bad=bad, logs=logs, sweep_log_keys=log_keys, notes=[note] if note else [])
