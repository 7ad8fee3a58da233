"""Turn a study's finished run directories into ``report.md`` and a self-contained ``report.html``.

The report reads *only* the run-directory contract (``result.json``, ``metrics.jsonl``,
``config.toml``); it never imports models or retrains, so it can be rebuilt at any time from a
copied study folder. Every number shown is traceable: each table row names (and links) the run
directories and ``config.toml`` files it was computed from.

Public API
----------
- :func:`build_report` -- write ``report.md``, ``report.html`` and ``figures/*.{png,svg}``.
- :func:`load_study`, :func:`load_result`, :func:`read_metrics`, :func:`curve_series` -- input.
- :func:`group_runs`, :func:`gains_over_scratch`, :func:`sweep_trials` -- aggregation.
- ``plot_*`` functions -- return :class:`matplotlib.figure.Figure` objects (or ``None`` when
  there is nothing to plot) so tests can inspect the plotted data before anything is saved.
"""

from __future__ import annotations

import base64
import hashlib
import html
import json
import math
import os
import re
import statistics
import urllib.parse
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Sequence, Union

import matplotlib
import matplotlib.patches
import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import FixedLocator, FuncFormatter, NullFormatter, NullLocator

from reprlab.errors import ReprlabError

__all__ = [
    "Run",
    "MetricsLog",
    "Stat",
    "Group",
    "Gain",
    "Trial",
    "Study",
    "build_report",
    "load_study",
    "load_result",
    "read_metrics",
    "curve_series",
    "group_runs",
    "gains_over_scratch",
    "sweep_trials",
    "varying_keys",
    "plot_group_curves",
    "plot_test_acc1_bars",
    "plot_fraction_curve",
    "plot_cnn_vs_vit",
    "plot_sweep",
]

RESULT_FILE = "result.json"
METRICS_FILE = "metrics.jsonl"
CONFIG_FILE = "config.toml"
FIGURES_DIR = "figures"
PNG_DPI = 110

# Required keys and their types; everything else in result.json is optional.
_REQUIRED: dict[str, type] = {"run": str, "status": str, "task": str, "group": str, "seed": int}
_OPTIONAL_NUMBERS = (
    "params",
    "flops_per_image",
    "throughput_img_s",
    "fraction",
    "resolution",
    "epochs",
    "wall_time_s",
)
_OPTIONAL_STRINGS = (
    "model",
    "protocol",
    "backbone_source",
    "method",
    "dataset",
    "family",
    "sweep",
)
# Tasks whose test accuracy is a downstream result that can be compared against scratch.
EVAL_TASKS = ("train", "probe", "finetune")
# Row order of the tables: pretraining first, then the downstream evaluations.
_TASK_ORDER = {"pretrain": 0, "train": 1, "probe": 2, "finetune": 3}
# Figure stems this module owns; stale ones from an earlier build are removed (others are not).
_OWNED_STEMS = re.compile(r"^(curves-.*|test-acc1-bars|pretrain-fraction|cnn-vs-vit|sweep-.*)$")

_BACKBONE_COLORS = {
    "scratch": "#7f7f7f",
    "random-init": "#bcbd22",
    "simclr": "#1f77b4",
    "imagenet-supervised": "#ff7f0e",
    "supervised-pretrain": "#2ca02c",
}
_FAMILY_COLORS = {"cnn": "#1f77b4", "vit": "#d62728"}
_FAMILY_LABELS = {"cnn": "CNN", "vit": "ViT"}
_CYCLE = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#17becf"]


# --------------------------------------------------------------------------------------------
# Input: result.json, metrics.jsonl
# --------------------------------------------------------------------------------------------


def _is_number(value: Any) -> bool:
    """True for int/float but not bool (JSON ``true`` must not pass as an accuracy of 1)."""
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _short(value: Any) -> str:
    """A repr short enough to keep error messages on one line."""
    text = repr(value).replace("\n", " ")
    return text if len(text) <= 60 else text[:57] + "..."


def _check_metric_block(path: Path, key: str, block: Any) -> None:
    """Validate a ``{"acc1": .., "acc5": .., "loss": ..}`` block (numbers or null)."""
    if block is None:
        return
    if not isinstance(block, dict):
        raise ReprlabError(f"{path}: key '{key}' must be an object like {{\"acc1\": 41.2}}, got {_short(block)}")
    for name, value in block.items():
        if value is not None and not _is_number(value):
            raise ReprlabError(f"{path}: key '{key}.{name}' must be a number or null, got {_short(value)}")


def load_result(run_dir: Path) -> dict[str, Any]:
    """Read and validate ``run_dir/result.json``.

    Raises :class:`ReprlabError` naming the file for invalid JSON, a non-object document, a
    missing required key (run, status, task, group, seed) or a wrongly typed value. Optional
    keys may be absent or null.
    """
    path = Path(run_dir) / RESULT_FILE
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ReprlabError(f"{path}: cannot read ({exc.strerror})") from exc
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ReprlabError(f"{path}: not valid JSON ({exc.msg} at line {exc.lineno} column {exc.colno})") from exc
    if not isinstance(data, dict):
        raise ReprlabError(f"{path}: expected a JSON object, got {type(data).__name__}")
    for key, typ in _REQUIRED.items():
        if key not in data:
            raise ReprlabError(f"{path}: missing required key '{key}'")
        value = data[key]
        ok = _is_number(value) and float(value).is_integer() if typ is int else isinstance(value, typ)
        if not ok:
            raise ReprlabError(f"{path}: key '{key}' must be {'an integer' if typ is int else 'a string'}, got {_short(value)}")
    data["seed"] = int(data["seed"])
    for key in _OPTIONAL_NUMBERS:
        value = data.get(key)
        if value is not None and not _is_number(value):
            raise ReprlabError(f"{path}: key '{key}' must be a number or null, got {_short(value)}")
    for key in _OPTIONAL_STRINGS:
        value = data.get(key)
        if value is not None and not isinstance(value, str):
            raise ReprlabError(f"{path}: key '{key}' must be a string or null, got {_short(value)}")
    for key in ("val", "test"):
        _check_metric_block(path, key, data.get(key))
    for key in ("final_checkpoint", "best_checkpoint"):
        ckpt = data.get(key)
        if ckpt is None:
            continue
        if not isinstance(ckpt, dict):
            raise ReprlabError(f"{path}: key '{key}' must be an object, got {_short(ckpt)}")
        for split in ("val", "test"):
            _check_metric_block(path, f"{key}.{split}", ckpt.get(split))
    sweep_params = data.get("sweep_params")
    if sweep_params is not None and not isinstance(sweep_params, dict):
        raise ReprlabError(f"{path}: key 'sweep_params' must be an object or null, got {_short(sweep_params)}")
    return data


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
    except OSError as exc:
        raise ReprlabError(f"{path}: cannot read ({exc.strerror})") from exc
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


def _series(log: MetricsLog, key: str, x: str = "epoch") -> tuple[list[float], list[float], int]:
    """Points of ``key`` against ``x`` in file order, plus how many had ``key`` but no ``x``.

    A null value counts as "not measured" (same as an absent key); a non-number is an error,
    because silently dropping it would make a curve look shorter than the log.
    """
    xs: list[float] = []
    ys: list[float] = []
    without_x = 0
    for lineno, rec in log.records:
        value = rec.get(key)
        if value is None:
            continue
        if not _is_number(value):
            raise ReprlabError(f"{log.path}:{lineno}: key '{key}' must be a number, got {_short(value)}")
        xv = rec.get(x)
        if xv is None:
            without_x += 1
            continue
        if not _is_number(xv):
            raise ReprlabError(f"{log.path}:{lineno}: key '{x}' must be a number, got {_short(xv)}")
        xs.append(float(xv))
        ys.append(float(value))
    return xs, ys, without_x


def curve_series(run_dir: Path, key: str, x: str = "epoch") -> tuple[list[float], list[float]]:
    """The ``(x, y)`` points of metric ``key`` in ``run_dir/metrics.jsonl``, exactly as logged.

    One point per line that holds both ``key`` and ``x`` (default: epoch), in file order. This
    is the same function the figures are drawn from, so a plotted line has exactly these points.
    """
    xs, ys, _ = _series(read_metrics(Path(run_dir) / METRICS_FILE), key, x)
    return xs, ys


# --------------------------------------------------------------------------------------------
# Runs, groups, statistics
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Run:
    """One run directory with its validated ``result.json``."""

    dir: Path
    result: dict[str, Any]
    rel: str  # path relative to the study root, for display

    @property
    def name(self) -> str:
        return self.result["run"]

    @property
    def status(self) -> str:
        return self.result["status"]

    @property
    def task(self) -> str:
        return self.result["task"]

    @property
    def group(self) -> str:
        return self.result["group"]

    @property
    def seed(self) -> int:
        return self.result["seed"]

    @property
    def config_path(self) -> Path:
        return self.dir / CONFIG_FILE

    @property
    def metrics_path(self) -> Path:
        return self.dir / METRICS_FILE

    def get(self, key: str) -> Any:
        """An optional top-level result key, ``None`` when absent."""
        return self.result.get(key)

    def metric(self, split: str, key: str = "acc1", source: str | None = None) -> float | None:
        """``result[split][key]`` (or ``result[source][split][key]`` for a checkpoint block)."""
        block: Any = self.result if source is None else self.result.get(source)
        if not isinstance(block, dict):
            return None
        block = block.get(split)
        if not isinstance(block, dict):
            return None
        value = block.get(key)
        # NaN/inf (a diverged evaluation) is treated as absent so one bad seed cannot turn a
        # group's mean into NaN; _warnings() lists such values so they are not hidden.
        return float(value) if _is_number(value) and math.isfinite(value) else None


@dataclass(frozen=True)
class Stat:
    """Values over seeds with mean and sample std (ddof=1, undefined for a single seed)."""

    values: tuple[float, ...]

    @property
    def n(self) -> int:
        return len(self.values)

    @property
    def mean(self) -> float | None:
        return statistics.mean(self.values) if self.values else None

    @property
    def std(self) -> float | None:
        return statistics.stdev(self.values) if len(self.values) >= 2 else None

    def fmt(self, digits: int = 2, of: int | None = None) -> str:
        """``"mean ± std"``; ``"—"`` for the std of one seed and for no data at all.

        ``of`` is the number of runs in the group; when fewer of them have this value the
        count is shown, so a mean over a subset of seeds is never mistaken for the full one.
        """
        if not self.values:
            return "—"
        std = "—" if self.std is None else f"{self.std:.{digits}f}"
        text = f"{self.mean:.{digits}f} ± {std}"
        if of is not None and self.n != of:
            text += f" (n={self.n})"
        return text


@dataclass
class Group:
    """Runs sharing a ``group`` label (normally the seeds of one configuration)."""

    name: str
    runs: list[Run]

    def stat(self, split: str, key: str = "acc1", source: str | None = None) -> Stat:
        values = [run.metric(split, key, source) for run in self.runs]
        return Stat(tuple(v for v in values if v is not None))

    def values(self, key: str) -> list[Any]:
        return [run.get(key) for run in self.runs]

    def common(self, key: str) -> Any:
        """The value of ``key`` if every run agrees on it, else ``None``."""
        vals = {json.dumps(v, sort_keys=True) for v in self.values(key)}
        return self.runs[0].get(key) if len(vals) == 1 else None

    def number(self, key: str) -> float | None:
        """Mean of a numeric per-run key over the runs that have it (params, FLOPs, ...)."""
        nums = [float(v) for v in self.values(key) if _is_number(v)]
        return statistics.mean(nums) if nums else None

    @property
    def task(self) -> str:
        return self.runs[0].task

    @property
    def seeds(self) -> list[int]:
        return sorted(run.seed for run in self.runs)


def _natural(text: str) -> list[Any]:
    """Sort key that orders "TIN 25%" before "TIN 100%" (numbers compared as numbers)."""
    return [(0, float(t), "") if re.fullmatch(r"\d+(?:\.\d+)?", t) else (1, 0.0, t.lower()) for t in re.findall(r"\d+(?:\.\d+)?|\D+", text)]


def _group_sort_key(name: str, runs: Sequence[Run]) -> tuple[int, list[Any]]:
    return (_TASK_ORDER.get(runs[0].task, len(_TASK_ORDER)), _natural(name))


def group_runs(runs: Iterable[Run]) -> list[Group]:
    """Group runs by their ``group`` label; pretraining first, then train/probe/finetune."""
    by_name: dict[str, list[Run]] = {}
    for run in runs:
        by_name.setdefault(run.group, []).append(run)
    groups = [Group(name, sorted(rs, key=lambda r: (r.seed, r.rel))) for name, rs in by_name.items()]
    return sorted(groups, key=lambda g: _group_sort_key(g.name, g.runs))


@dataclass
class Study:
    """Everything found under a study root."""

    root: Path
    runs: list[Run]
    orphans: list[Path]  # directories with metrics.jsonl but no result.json (crashed/running)

    @property
    def complete(self) -> list[Run]:
        return [r for r in self.runs if r.status == "complete"]

    @property
    def incomplete(self) -> list[Run]:
        return [r for r in self.runs if r.status != "complete"]

    @property
    def main_runs(self) -> list[Run]:
        """Complete runs that are not sweep trials: the ones the comparisons are made from."""
        return [r for r in self.complete if r.get("sweep") is None]

    @property
    def sweep_runs(self) -> list[Run]:
        return [r for r in self.complete if r.get("sweep") is not None]


def _rel(path: Path, root: Path) -> str:
    rel = os.path.relpath(path, root)
    return Path(rel).as_posix()


def load_study(root: Path) -> Study:
    """Find and validate every run directory (any directory holding ``result.json``) under ``root``."""
    root = Path(root)
    if not root.is_dir():
        raise ReprlabError(f"{root}: study directory does not exist or is not a directory")
    runs: list[Run] = []
    result_dirs = sorted({p.parent for p in root.rglob(RESULT_FILE) if p.is_file()})
    for run_dir in result_dirs:
        runs.append(Run(dir=run_dir, result=load_result(run_dir), rel=_rel(run_dir, root)))
    result_set = set(result_dirs)
    orphans = sorted(
        p.parent for p in root.rglob(METRICS_FILE) if p.is_file() and p.parent not in result_set
    )
    if not runs and not orphans:
        raise ReprlabError(f"{root}: no run directories found (expected directories holding {RESULT_FILE})")
    return Study(root=root, runs=runs, orphans=orphans)


# --------------------------------------------------------------------------------------------
# Derived tables: gains over scratch, pretraining fraction, CNN vs ViT, sweeps
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Gain:
    """Test acc1 of ``group`` minus that of the scratch baseline, in points and percent."""

    group: Group
    baseline: Group
    points: float
    relative: float | None  # None when the baseline mean is 0


def _eval_groups_with_test(groups: Iterable[Group]) -> list[Group]:
    return [g for g in groups if g.task in EVAL_TASKS and g.stat("test").n > 0]


def gains_over_scratch(groups: Sequence[Group]) -> tuple[Group | None, list[Gain], list[str]]:
    """Gains of every train/probe/finetune group over the scratch baseline group.

    The baseline is the group whose ``backbone_source`` is ``"scratch"``; with several, the one
    with protocol ``"scratch"`` (ties broken by table order, reported in the returned notes).
    Groups of the CNN-vs-ViT comparison (a non-null ``family``) have their own section: when a
    scratch group outside it exists, that one is the baseline and they are left out here.
    """
    notes: list[str] = []
    evaluated = _eval_groups_with_test(groups)
    task1 = [g for g in evaluated if g.common("family") is None]
    if any(g.common("backbone_source") == "scratch" for g in task1):
        evaluated = task1
    candidates = [g for g in evaluated if g.common("backbone_source") == "scratch"]
    if not candidates:
        return None, [], notes
    preferred = [g for g in candidates if g.common("protocol") == "scratch"] or candidates
    baseline = preferred[0]
    if len(preferred) > 1:
        others = ", ".join(f"'{g.name}'" for g in preferred[1:])
        notes.append(f"Several scratch groups qualify as baseline; using '{baseline.name}' (also: {others}).")
    base = baseline.stat("test").mean
    assert base is not None  # guaranteed by _eval_groups_with_test
    gains = []
    for g in evaluated:
        if g is baseline:
            continue
        mean = g.stat("test").mean
        assert mean is not None
        rel = (mean - base) / base * 100.0 if base != 0 else None
        gains.append(Gain(group=g, baseline=baseline, points=mean - base, relative=rel))
    return baseline, gains, notes


@dataclass
class FractionLine:
    """Test acc1 against pretraining fraction for one (method, protocol, dataset)."""

    label: str
    points: dict[float, list[Group]] = field(default_factory=dict)

    def stat(self, fraction: float) -> Stat:
        vals: list[float] = []
        for g in self.points[fraction]:
            vals.extend(g.stat("test").values)
        return Stat(tuple(vals))


def fraction_lines(groups: Sequence[Group]) -> tuple[list[FractionLine], list[Group]]:
    """Lines for the pretraining-fraction figure and the reference (fraction-less) groups.

    A line is keyed by (method, protocol) -- and by source dataset too, so that two pretraining
    datasets are never pooled into one point; the dataset is shown only when there are several.
    """
    evaluated = _eval_groups_with_test(groups)
    # ImageNet-supervised is always a reference, never a point: its pretraining set is not the
    # one whose fraction varies (and 32 px and 224 px evaluations must not be pooled).
    with_fraction = [g for g in evaluated if _is_number(g.common("fraction")) and g.common("backbone_source") != "imagenet-supervised"]
    datasets = {g.common("dataset") for g in with_fraction}
    resolutions = {g.common("resolution") for g in with_fraction}
    lines: dict[tuple[str, str, str, str], FractionLine] = {}
    for g in with_fraction:
        method = str(g.common("method") or g.common("backbone_source") or "?")
        protocol = str(g.common("protocol") or "?")
        dataset = str(g.common("dataset") or "?")
        res = str(g.common("resolution") or "?")
        label = f"{method} / {protocol}" + (f" ({dataset})" if len(datasets) > 1 else "") + (f" @{res}px" if len(resolutions) > 1 else "")
        line = lines.setdefault((method, protocol, dataset, res), FractionLine(label=label))
        line.points.setdefault(float(g.common("fraction")), []).append(g)
    refs = [
        g
        for g in evaluated
        if g.common("backbone_source") == "imagenet-supervised" or (g.common("fraction") is None and g.common("backbone_source") == "scratch")
    ]
    # as for the gains: the CNN-vs-ViT runs (non-null family) are references only without a
    # scratch run of the pretraining comparison itself
    if any(g.common("family") is None and g.common("backbone_source") == "scratch" for g in refs):
        refs = [g for g in refs if g.common("family") is None]
    return sorted(lines.values(), key=lambda l: l.label), refs


def cnn_vit_groups(groups: Sequence[Group]) -> list[Group]:
    """Groups that take part in the CNN-vs-ViT comparison (a family and a test accuracy)."""
    return [g for g in groups if g.common("family") is not None and g.stat("test").n > 0]


@dataclass
class Trial:
    """One point of a sweep: the runs (seeds) sharing the same ``sweep_params``."""

    params: dict[str, Any]
    runs: list[Run]

    @property
    def val(self) -> Stat:
        return Stat(tuple(v for v in (r.metric("val") for r in self.runs) if v is not None))

    @property
    def test(self) -> Stat:
        return Stat(tuple(v for v in (r.metric("test") for r in self.runs) if v is not None))


def sweep_trials(runs: Iterable[Run]) -> dict[str, list[Trial]]:
    """Trials of each sweep (by sweep name), sorted by val acc1 mean, best first."""
    sweeps: dict[str, dict[str, Trial]] = {}
    for run in runs:
        sweep = run.get("sweep")
        if sweep is None:
            continue
        params = run.get("sweep_params") or {}
        key = json.dumps(params, sort_keys=True, default=str)
        trials = sweeps.setdefault(sweep, {})
        trials.setdefault(key, Trial(params=dict(params), runs=[])).runs.append(run)

    def order(t: Trial) -> tuple[float, str]:
        mean = t.val.mean
        return (-mean if mean is not None and not math.isnan(mean) else math.inf, json.dumps(t.params, sort_keys=True, default=str))

    return {name: sorted(trials.values(), key=order) for name, trials in sorted(sweeps.items())}


def varying_keys(trials: Sequence[Trial]) -> list[str]:
    """The sweep_params keys that take more than one value (absent counts as a value)."""
    keys = sorted({k for t in trials for k in t.params})
    return [
        k for k in keys if len({json.dumps(t.params.get(k), sort_keys=True, default=str) for t in trials}) > 1
    ]


def _value_key(value: Any) -> tuple[int, float, str]:
    """Sort numbers numerically, then strings, then missing values."""
    if _is_number(value):
        return (0, float(value), "")
    if value is None:
        return (2, 0.0, "")
    return (1, 0.0, str(value))


def _tick_label(value: Any) -> str:
    """Axis label of a swept value; a key absent from a trial reads "(unset)", not a dash."""
    return "(unset)" if value is None else _mpl(_fmt_value(value))


def _fmt_value(value: Any) -> str:
    if value is None:
        return "—"
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


# --------------------------------------------------------------------------------------------
# Figures (all built from the same data helpers the tables use)
# --------------------------------------------------------------------------------------------


def _new_figure(width: float, height: float) -> Figure:
    """A pyplot-free figure on the Agg canvas: no global state, safe to build many."""
    fig = Figure(figsize=(width, height), layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def _mpl(text: str) -> str:
    """Escape ``$`` so that a group label is never parsed as mathtext."""
    return text.replace("$", r"\$")


def _style_axes(ax: Any) -> None:
    ax.grid(True, alpha=0.3, linewidth=0.6)
    ax.spines["top"].set_visible(False)
    ax.spines["right"].set_visible(False)


# (key, label, style) per curve panel; style kwargs keep train/val/test visually distinct.
_TRAIN = {"linestyle": "-", "linewidth": 1.2, "alpha": 0.85}
_VAL = {"linestyle": "--", "linewidth": 1.4, "marker": "o", "markersize": 3}
_TEST = {"linestyle": "none", "marker": "*", "markersize": 10}
CURVE_PANELS: tuple[tuple[str, str, tuple[tuple[str, str, dict[str, Any]], ...]], ...] = (
    ("Learning rate", "learning rate", (("lr", "lr", _TRAIN),)),
    (
        "Top-1 accuracy",
        "acc1 (%)",
        (("train/acc1", "train", _TRAIN), ("val/acc1", "val", _VAL), ("test/acc1", "test", _TEST)),
    ),
    ("Loss", "loss", (("train/loss", "train", _TRAIN), ("val/loss", "val", _VAL))),
    ("kNN top-1 accuracy", "kNN acc1 (%)", (("knn/acc1", "kNN", _VAL),)),
)


def plot_group_curves(group: Group, logs: dict[Path, MetricsLog] | None = None) -> Figure | None:
    """Learning rate, accuracy, loss and kNN accuracy vs epoch, one line per run of ``group``.

    Each line's gid is ``"<run name>::<metric key>"`` and its data are exactly
    :func:`curve_series` of that run and key. Panels without data are left out; returns
    ``None`` when no run of the group has any curve.
    """
    logs = logs if logs is not None else {}
    series: dict[str, list[tuple[Run, str, str, dict[str, Any], list[float], list[float]]]] = {}
    for run in group.runs:
        if run.metrics_path not in logs:
            if not run.metrics_path.is_file():
                continue
            logs[run.metrics_path] = read_metrics(run.metrics_path)
        log = logs[run.metrics_path]
        for title, _, keys in CURVE_PANELS:
            for key, label, style in keys:
                xs, ys, _ = _series(log, key)
                if xs:
                    series.setdefault(title, []).append((run, key, label, style, xs, ys))
    panels = [p for p in CURVE_PANELS if p[0] in series]
    if not panels:
        return None
    fig = _new_figure(4.1 * len(panels), 3.4)
    axes = fig.subplots(1, len(panels), squeeze=False)[0]
    colors = {run.rel: _CYCLE[i % len(_CYCLE)] for i, run in enumerate(group.runs)}
    for ax, (title, ylabel, _) in zip(axes, panels):
        for run, key, label, style, xs, ys in series[title]:
            (line,) = ax.plot(xs, ys, color=colors[run.rel], label=_mpl(f"seed {run.seed} {label}"), **style)
            line.set_gid(f"{run.name}::{key}")
        ax.set_title(title, fontsize=10)
        ax.set_xlabel("epoch")
        ax.set_ylabel(ylabel)
        if title == "Learning rate":
            ax.ticklabel_format(axis="y", style="sci", scilimits=(-3, 3))
        _style_axes(ax)
        ax.legend(fontsize=7, loc="best", framealpha=0.8)
    fig.suptitle(_mpl(group.name), fontsize=11, fontweight="bold")
    return fig


def plot_test_acc1_bars(groups: Sequence[Group]) -> Figure | None:
    """Horizontal bars of test acc1 mean per group, ±std error bars, individual seeds as dots."""
    groups = [g for g in groups if g.stat("test").n > 0]
    if not groups:
        return None
    fig = _new_figure(9.5, 1.2 + 0.45 * len(groups))
    ax = fig.add_subplot()
    ys = np.arange(len(groups))
    means = [g.stat("test").mean for g in groups]
    errs = [g.stat("test").std or 0.0 for g in groups]
    colors = [_BACKBONE_COLORS.get(str(g.common("backbone_source")), "#9467bd") for g in groups]
    ax.barh(ys, means, xerr=errs, color=colors, alpha=0.85, capsize=4, error_kw={"elinewidth": 1.2})
    for y, g in zip(ys, groups):
        vals = g.stat("test").values
        ax.plot(vals, [y] * len(vals), linestyle="none", marker="o", markersize=3.5, color="black", gid=f"seeds::{g.name}")
        st = g.stat("test")
        # Label right of whichever reaches further: the whisker or the best seed.
        ax.text(max(max(vals), st.mean + (st.std or 0.0)) + 0.8, y, st.fmt(), va="center", fontsize=8)
    ax.set_yticks(ys, [_mpl(g.name) for g in groups], fontsize=8)
    ax.invert_yaxis()  # same top-to-bottom order as the summary table
    ax.set_xlabel("test acc1 (%)  —  bar: mean over seeds, whisker: ±1 std, dots: seeds")
    ax.set_title("Test top-1 accuracy per group", fontsize=11, fontweight="bold")
    ax.set_xlim(0, max(max(g.stat("test").values) for g in groups) * 1.18 + 1)
    _style_axes(ax)
    ax.grid(False, axis="y")
    # Legend of bar colours (backbone source) for the sources actually shown.
    seen = {}
    for g, c in zip(groups, colors):
        seen.setdefault(str(g.common("backbone_source") or "mixed/unknown"), c)
    handles = [matplotlib.patches.Patch(color=c, label=_mpl(s)) for s, c in seen.items()]
    # Outside the axes so it can never cover a bar or its value label.
    ax.legend(handles=handles, title="backbone source", fontsize=7, title_fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    return fig


def _fraction_axis(ax: Any, fractions: Sequence[float]) -> None:
    """Percent ticks at the fractions actually run; log2 spacing when they span a wide range."""
    fr = sorted(set(fractions))
    if fr and min(fr) > 0 and max(fr) / min(fr) >= 4:
        ax.set_xscale("log", base=2)
    ax.xaxis.set_major_locator(FixedLocator(fr))
    ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v * 100:g}%"))
    ax.xaxis.set_minor_locator(NullLocator())
    ax.xaxis.set_minor_formatter(NullFormatter())


def plot_fraction_curve(groups: Sequence[Group]) -> Figure | None:
    """Test acc1 (mean ± std) against pretraining-set fraction, one line per (method, protocol).

    Fraction-less ImageNet-supervised and scratch groups are drawn as horizontal references.
    """
    lines, refs = fraction_lines(groups)
    if not lines:
        return None
    fig = _new_figure(8.0, 4.8)
    ax = fig.add_subplot()
    all_fr: list[float] = []
    for i, line in enumerate(lines):
        fr = sorted(line.points)
        all_fr.extend(fr)
        stats = [line.stat(f) for f in fr]
        ax.errorbar(
            fr,
            [s.mean for s in stats],
            yerr=[s.std or 0.0 for s in stats],
            marker="o",
            capsize=4,
            color=_CYCLE[i % len(_CYCLE)],
            label=_mpl(line.label),
        )[0].set_gid(f"fraction::{line.label}")  # on the data line only, not the error caps
    ref_styles = {"imagenet-supervised": ("black", [":", "-.", (0, (5, 1))]), "scratch": ("#7f7f7f", ["--", (0, (3, 1, 1, 1)), ":"])}
    used: Counter[str] = Counter()
    for g in refs:
        src = str(g.common("backbone_source"))
        color, styles = ref_styles[src]
        st = g.stat("test")
        ax.axhline(st.mean, color=color, linestyle=styles[used[src] % len(styles)], linewidth=1.3, label=_mpl(f"{g.name}: {st.fmt()}"))
        if st.std:
            ax.axhspan(st.mean - st.std, st.mean + st.std, color=color, alpha=0.07, linewidth=0)
        used[src] += 1
    _fraction_axis(ax, all_fr)
    ax.set_xlabel("pretraining-set fraction")
    ax.set_ylabel("test acc1 (%)")
    ax.set_title("Test accuracy vs pretraining-set size (mean ± std over seeds)", fontsize=11, fontweight="bold")
    _style_axes(ax)
    ax.legend(fontsize=7.5, loc="best", framealpha=0.85)
    return fig


# (result key, axis label, tick formatter); units in the ticks avoid matplotlib's "1e7" offset.
_CNN_VIT_PANELS = (
    ("params", "parameters", lambda v, _: f"{v / 1e6:.3g}M"),
    ("flops_per_image", "FLOPs per image", lambda v, _: f"{v / 1e9:.3g}G"),
    ("throughput_img_s", "throughput (img/s)", lambda v, _: f"{v:.4g}"),
)


def plot_cnn_vs_vit(groups: Sequence[Group]) -> Figure | None:
    """Test acc1 against params, FLOPs and throughput; colour = family, label = model."""
    groups = cnn_vit_groups(groups)
    if not groups:
        return None
    fig = _new_figure(13.5, 4.4)
    axes = fig.subplots(1, 3, sharey=True)
    legend_done = False
    for ax, (key, xlabel, tick_fmt) in zip(axes, _CNN_VIT_PANELS):
        pts = [(g, g.number(key)) for g in groups if g.number(key) is not None]
        if not pts:
            ax.text(0.5, 0.5, f"no '{key}' in result.json", ha="center", va="center", transform=ax.transAxes, color="#777")
            ax.set_xticks([])
        families = sorted({str(g.common("family")) for g, _ in pts})
        for fam in families:
            fam_pts = [(g, x) for g, x in pts if str(g.common("family")) == fam]
            ax.errorbar(
                [x for _, x in fam_pts],
                [g.stat("test").mean for g, _ in fam_pts],
                yerr=[g.stat("test").std or 0.0 for g, _ in fam_pts],
                linestyle="none",
                marker="o",
                markersize=6,
                capsize=3,
                color=_FAMILY_COLORS.get(fam, "#9467bd"),
                label=_FAMILY_LABELS.get(fam, _mpl(fam)),
            )[0].set_gid(f"cnn-vit::{key}::{fam}")
            for g, x in fam_pts:
                ax.annotate(_mpl(str(g.common("model") or g.name)), (x, g.stat("test").mean), textcoords="offset points", xytext=(5, 5), fontsize=8)
        xs = [x for _, x in pts]
        if xs and min(xs) > 0 and max(xs) / min(xs) >= 10:
            ax.set_xscale("log")
            ax.xaxis.set_minor_formatter(NullFormatter())
        ax.xaxis.set_major_formatter(FuncFormatter(tick_fmt))
        ax.margins(x=0.15, y=0.12)  # room for the model labels next to the points
        ax.set_xlabel(xlabel)
        _style_axes(ax)
        if pts and not legend_done:  # one legend: the family colours are the same in all panels
            ax.legend(fontsize=8, loc="best")
            legend_done = True
    axes[0].set_ylabel("test acc1 (%)")
    fig.suptitle("CNN vs ViT: test accuracy against cost (mean ± std over seeds)", fontsize=11, fontweight="bold")
    return fig


def plot_sweep(name: str, trials: Sequence[Trial]) -> Figure | None:
    """Val acc1 of a sweep: heat map over two varying keys, line plot over one, else ``None``."""
    keys = varying_keys(trials)
    if len(keys) not in (1, 2) or not any(t.val.n for t in trials):
        return None
    if len(keys) == 1:
        (key,) = keys
        pts = sorted(((t.params.get(key), t.val) for t in trials if t.val.n), key=lambda p: _value_key(p[0]))
        fig = _new_figure(6.5, 4.2)
        ax = fig.add_subplot()
        numeric = all(_is_number(v) for v, _ in pts)
        xs: list[Any] = [float(v) for v, _ in pts] if numeric else list(range(len(pts)))
        ax.errorbar(xs, [s.mean for _, s in pts], yerr=[s.std or 0.0 for _, s in pts], marker="o", capsize=4)[0].set_gid(f"sweep::{name}")
        if numeric and min(xs) > 0 and max(xs) / min(xs) >= 20:
            ax.set_xscale("log")
        if not numeric:
            ax.set_xticks(xs, [_tick_label(v) for v, _ in pts])
        ax.set_xlabel(_mpl(key))
        ax.set_ylabel("val acc1 (%)")
        ax.set_title(_mpl(f"Sweep '{name}': val acc1 (mean ± std over seeds)"), fontsize=11, fontweight="bold")
        _style_axes(ax)
        return fig
    row_key, col_key = keys
    rows = sorted({json.dumps(t.params.get(row_key), default=str): t.params.get(row_key) for t in trials}.values(), key=_value_key)
    cols = sorted({json.dumps(t.params.get(col_key), default=str): t.params.get(col_key) for t in trials}.values(), key=_value_key)
    grid = np.full((len(rows), len(cols)), np.nan)
    for t in trials:
        if t.val.n:
            i = next(i for i, v in enumerate(rows) if v == t.params.get(row_key))
            j = next(j for j, v in enumerate(cols) if v == t.params.get(col_key))
            grid[i, j] = t.val.mean
    fig = _new_figure(min(3.2 + 1.1 * len(cols), 14), min(2.2 + 0.6 * len(rows), 12))
    ax = fig.add_subplot()
    cmap = matplotlib.colormaps["viridis"].with_extremes(bad="#dddddd")  # grey = trial not run
    im = ax.imshow(np.ma.masked_invalid(grid), cmap=cmap, aspect="auto", origin="lower", gid=f"sweep::{name}")
    finite = grid[np.isfinite(grid)]
    lo, hi = (float(finite.min()), float(finite.max())) if finite.size else (0.0, 1.0)
    for i in range(len(rows)):
        for j in range(len(cols)):
            v = grid[i, j]
            if np.isfinite(v):
                # White text on the dark end of viridis, black on the light end.
                dark = hi == lo or (v - lo) / (hi - lo) < 0.6
                ax.text(j, i, f"{v:.2f}", ha="center", va="center", fontsize=9, color="white" if dark else "black")
            else:
                ax.text(j, i, "n/a", ha="center", va="center", fontsize=7, color="#666")
    if finite.size:
        bi, bj = np.unravel_index(np.nanargmax(grid), grid.shape)
        ax.add_patch(matplotlib.patches.Rectangle((bj - 0.5, bi - 0.5), 1, 1, fill=False, edgecolor="red", linewidth=2))
    ax.set_xticks(range(len(cols)), [_tick_label(v) for v in cols])
    ax.set_yticks(range(len(rows)), [_tick_label(v) for v in rows])
    ax.set_xlabel(_mpl(col_key))
    ax.set_ylabel(_mpl(row_key))
    ax.set_title(_mpl(f"Sweep '{name}': val acc1 (mean over seeds; red = best)"), fontsize=10, fontweight="bold")
    fig.colorbar(im, ax=ax, label="val acc1 (%)")
    return fig


# --------------------------------------------------------------------------------------------
# Document model rendered to both Markdown and HTML
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Link:
    text: str
    href: str


@dataclass(frozen=True)
class Code:
    text: str


Inline = Union[str, Link, Code]


class Lines(list):
    """A table cell with several lines (one per run); joined by <br> in HTML, '; ' in Markdown."""


Cell = Union[Inline, list, Lines]


@dataclass
class Heading:
    level: int
    text: str
    anchor: str


@dataclass
class Para:
    parts: list[Inline]
    kind: str = "p"  # "p" or "note"


@dataclass
class Table:
    header: list[str]
    rows: list[list[Cell]]
    numeric: frozenset[int] = frozenset()  # right-aligned columns


@dataclass
class FigureBlock:
    stem: str
    caption: str
    png: bytes


Block = Union[Heading, Para, Table, FigureBlock]


def _cell_lines(cell: Cell) -> list[list[Inline]]:
    if isinstance(cell, Lines):
        return [list(line) if isinstance(line, list) else [line] for line in cell]
    if isinstance(cell, list):
        return [cell]
    return [[cell]]


def _md_inline(part: Inline, in_table: bool = False) -> str:
    if isinstance(part, Link):
        return f"[{_md_text(part.text, in_table)}]({part.href})"
    if isinstance(part, Code):
        return f"`{part.text.replace('`', '')}`"
    return _md_text(part, in_table)


def _md_text(text: str, in_table: bool) -> str:
    # "<" would start raw HTML in Markdown; group names are plain text.
    text = text.replace("\n", " ").replace("<", "&lt;")
    return text.replace("|", r"\|") if in_table else text


def _html_inline(part: Inline) -> str:
    if isinstance(part, Link):
        return f'<a href="{html.escape(part.href)}">{html.escape(part.text)}</a>'
    if isinstance(part, Code):
        return f"<code>{html.escape(part.text)}</code>"
    return html.escape(part)


def render_markdown(title: str, blocks: Sequence[Block]) -> str:
    """Markdown with relative figure links (``figures/<stem>.png``)."""
    out = [f"# {title}", ""]
    for b in blocks:
        if isinstance(b, Heading):
            out += [f"{'#' * b.level} {b.text}", ""]
        elif isinstance(b, Para):
            text = "".join(_md_inline(p) for p in b.parts)
            out += [f"> {text}" if b.kind == "note" else text, ""]
        elif isinstance(b, Table):
            out.append("| " + " | ".join(_md_text(h, True) for h in b.header) + " |")
            out.append("|" + "|".join("---:" if i in b.numeric else "---" for i in range(len(b.header))) + "|")
            for row in b.rows:
                cells = ["; ".join("".join(_md_inline(p, True) for p in line) for line in _cell_lines(c)) for c in row]
                out.append("| " + " | ".join(cells) + " |")
            out.append("")
        elif isinstance(b, FigureBlock):
            out += [f"![{b.caption}]({FIGURES_DIR}/{b.stem}.png)", "", f"*{b.caption}* ([SVG]({FIGURES_DIR}/{b.stem}.svg))", ""]
    return "\n".join(out).rstrip() + "\n"


_CSS = """
body{font-family:"Liberation Sans",Arial,Helvetica,sans-serif;color:#1d1d1f;margin:0;background:#f6f7f9;line-height:1.45}
main{max-width:1220px;margin:0 auto;padding:24px 32px 64px;background:#fff;box-shadow:0 0 12px rgba(0,0,0,.06)}
h1{font-size:1.7em;margin:.2em 0 .4em}
h2{font-size:1.3em;margin-top:1.8em;padding-bottom:.2em;border-bottom:2px solid #e3e6ea}
h3{font-size:1.08em;margin-top:1.4em}
table{border-collapse:collapse;margin:.6em 0 1.2em;font-size:13px;width:auto;max-width:100%}
th,td{border:1px solid #d9dde3;padding:4px 8px;vertical-align:top;text-align:left}
th{background:#eef1f5;font-weight:600}
tr:nth-child(even) td{background:#fafbfc}
td.num{text-align:right;font-variant-numeric:tabular-nums;white-space:nowrap}
code{font-family:"Liberation Mono",Menlo,monospace;font-size:.92em;background:#f1f3f5;padding:0 3px;border-radius:3px}
a{color:#0b5cad;text-decoration:none}a:hover{text-decoration:underline}
figure{margin:1em 0 1.6em}figure img{max-width:100%;height:auto;border:1px solid #e3e6ea}
figcaption{font-size:13px;color:#555;margin-top:4px}
.note{background:#fff8e1;border-left:4px solid #f0b400;padding:6px 10px;font-size:14px}
nav ul{columns:2;font-size:14px}
""".strip()


def render_html(title: str, blocks: Sequence[Block]) -> str:
    """A single self-contained page: inline CSS, PNGs as base64 data URIs."""
    body: list[str] = [f"<h1>{html.escape(title)}</h1>"]
    toc = [b for b in blocks if isinstance(b, Heading) and b.level == 2]
    if toc:
        items = "".join(f'<li><a href="#{b.anchor}">{html.escape(b.text)}</a></li>' for b in toc)
        body.append(f"<nav><ul>{items}</ul></nav>")
    for b in blocks:
        if isinstance(b, Heading):
            body.append(f'<h{b.level} id="{b.anchor}">{html.escape(b.text)}</h{b.level}>')
        elif isinstance(b, Para):
            text = "".join(_html_inline(p) for p in b.parts)
            body.append(f'<p class="note">{text}</p>' if b.kind == "note" else f"<p>{text}</p>")
        elif isinstance(b, Table):
            head = "".join(f"<th>{html.escape(h)}</th>" for h in b.header)
            rows = []
            for row in b.rows:
                tds = []
                for i, c in enumerate(row):
                    inner = "<br>".join("".join(_html_inline(p) for p in line) for line in _cell_lines(c))
                    tds.append(f'<td class="num">{inner}</td>' if i in b.numeric else f"<td>{inner}</td>")
                rows.append("<tr>" + "".join(tds) + "</tr>")
            body.append(f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(rows)}</tbody></table>")
        elif isinstance(b, FigureBlock):
            data = base64.b64encode(b.png).decode("ascii")
            cap = html.escape(b.caption)
            svg = html.escape(f"{FIGURES_DIR}/{b.stem}.svg")
            body.append(
                f'<figure id="fig-{html.escape(b.stem)}"><img src="data:image/png;base64,{data}" alt="{cap}">'
                f'<figcaption>{cap} (<a href="{svg}">SVG</a>)</figcaption></figure>'
            )
    return (
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n"
        '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
        f"<title>{html.escape(title)}</title>\n<style>\n{_CSS}\n</style>\n</head>\n<body>\n<main>\n"
        + "\n".join(body)
        + "\n</main>\n</body>\n</html>\n"
    )


# --------------------------------------------------------------------------------------------
# Report assembly
# --------------------------------------------------------------------------------------------


class _Builder:
    """Collects blocks and saves figures while the report sections are assembled."""

    def __init__(self, study: Study, out_dir: Path) -> None:
        self.study = study
        self.out_dir = out_dir
        self.fig_dir = out_dir / FIGURES_DIR
        self.blocks: list[Block] = []
        self.written: set[str] = set()
        self.logs: dict[Path, MetricsLog] = {}

    # -- links --------------------------------------------------------------------------------
    def href(self, path: Path, is_dir: bool = False) -> str:
        rel = Path(os.path.relpath(path, self.out_dir)).as_posix()
        return urllib.parse.quote(rel + ("/" if is_dir and rel != "." else ""))

    def run_link(self, run: Run) -> Link:
        return Link(run.rel, self.href(run.dir, is_dir=True))

    def config_link(self, run: Run) -> Inline:
        if run.config_path.is_file():
            return Link("config.toml", self.href(run.config_path))
        return "(no config.toml)"

    def runs_cell(self, runs: Iterable[Run]) -> Lines:
        """One line per run: seed, run directory and its config.toml (the traceability trail)."""
        return Lines([[f"s{r.seed} ", self.run_link(r), " · ", self.config_link(r)] for r in runs])

    # -- blocks -------------------------------------------------------------------------------
    def heading(self, level: int, text: str) -> None:
        anchor = re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")
        self.blocks.append(Heading(level, text, anchor))

    def para(self, *parts: Inline) -> None:
        self.blocks.append(Para(list(parts)))

    def note(self, *parts: Inline) -> None:
        self.blocks.append(Para(list(parts), kind="note"))

    def figure(self, fig: Figure | None, stem: str, caption: str, missing: str) -> None:
        """Save ``fig`` as PNG and SVG and add it, or add a note saying why it was skipped."""
        if fig is None:
            self.note(f"No figure: {missing}")
            return
        self.fig_dir.mkdir(parents=True, exist_ok=True)
        png = self.fig_dir / f"{stem}.png"
        # A fixed hash salt and no date keep the SVG byte-identical across rebuilds.
        with matplotlib.rc_context({"svg.hashsalt": "reprlab-report"}):
            fig.savefig(png, format="png", dpi=PNG_DPI)
            # The constrained layout is already solved by the PNG draw; freezing it halves the
            # cost of the SVG draw (layout solving dominates report build time).
            fig.set_layout_engine("none")
            fig.savefig(self.fig_dir / f"{stem}.svg", format="svg", metadata={"Date": None})
        self.written.add(stem)
        self.blocks.append(FigureBlock(stem, caption, png.read_bytes()))

    def remove_stale_figures(self) -> None:
        """Delete figures from an earlier build that this build no longer produces."""
        if not self.fig_dir.is_dir():
            return
        for p in self.fig_dir.iterdir():
            if p.suffix in (".png", ".svg") and _OWNED_STEMS.match(p.stem) and p.stem not in self.written:
                p.unlink()


def _slugs(names: Sequence[str], prefix: str) -> dict[str, str]:
    """Stable, unique, file-system-safe figure stems for group/sweep names."""
    out: dict[str, str] = {}
    used: set[str] = set()
    for name in names:
        slug = re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")[:60] or "unnamed"
        stem = f"{prefix}{slug}"
        if stem in used:
            stem += "-" + hashlib.sha1(name.encode()).hexdigest()[:8]
        used.add(stem)
        out[name] = stem
    return out


def _fmt_num(value: float | None, scale: float = 1.0, digits: int = 2, unit: str = "") -> str:
    if value is None:
        return "—"
    return f"{value / scale:.{digits}f}{unit}"


def _section_summary(b: _Builder, groups: list[Group]) -> None:
    b.heading(2, "Summary per group")
    b.para(
        "Headline numbers are those of the best-on-validation checkpoint of each run (model selection "
        "never uses test). Mean ± sample std (ddof=1) over seeds; “—” where a std is undefined (one seed) "
        "or the value is absent."
    )
    if not groups:
        b.note("No complete runs outside sweeps.")
        return
    has_final = any(r.metric("test", source="final_checkpoint") is not None for g in groups for r in g.runs)
    header = ["Group", "Task / protocol", "Model", "n", "Val acc1", "Test acc1", "Test acc5"]
    if has_final:
        header.append("Test acc1 (last ckpt)")
    header.append("Runs (seed · dir · config)")
    rows: list[list[Cell]] = []
    for g in groups:
        n = len(g.runs)
        row: list[Cell] = [
            g.name,
            f"{g.task} / {g.common('protocol') or '—'}",
            str(g.common("model") or "—"),
            str(n),
            g.stat("val").fmt(of=n),
            g.stat("test").fmt(of=n),
            g.stat("test", "acc5").fmt(of=n),
        ]
        if has_final:
            row.append(g.stat("test", source="final_checkpoint").fmt(of=n))
        row.append(b.runs_cell(g.runs))
        rows.append(row)
    numeric = frozenset(range(3, 7 + int(has_final)))
    b.blocks.append(Table(header, rows, numeric))


def _section_gains(b: _Builder, groups: list[Group]) -> None:
    b.heading(2, "Gains over scratch")
    baseline, gains, notes = gains_over_scratch(groups)
    if baseline is None:
        b.note("No table: no train/probe/finetune group with backbone_source “scratch” and a test accuracy.")
        return
    base = baseline.stat("test")
    b.para(
        "Difference of mean test acc1 to the baseline ",
        Code(baseline.name),
        f" ({base.fmt()}, runs: ",
        *[p for i, r in enumerate(baseline.runs) for p in ((", " if i else ""), b.run_link(r))],
        "). Relative gain = points / baseline mean.",
    )
    for n in notes:
        b.note(n)
    rows: list[list[Cell]] = []
    for gain in gains:
        rel = "—" if gain.relative is None else f"{gain.relative:+.1f} %"
        rows.append(
            [
                gain.group.name,
                f"{gain.group.task} / {gain.group.common('protocol') or '—'}",
                str(gain.group.common("backbone_source") or "—"),
                gain.group.stat("test").fmt(of=len(gain.group.runs)),
                f"{gain.points:+.1f}",
                rel,
                b.runs_cell(gain.group.runs),
            ]
        )
    if rows:
        b.blocks.append(
            Table(["Group", "Task / protocol", "Backbone", "Test acc1", "Gain (points)", "Gain (%)", "Runs"], rows, frozenset({3, 4, 5}))
        )
    else:
        b.note("The scratch baseline is the only evaluated group.")


def _section_bars(b: _Builder, groups: list[Group]) -> None:
    b.heading(2, "Test accuracy per group")
    b.figure(
        plot_test_acc1_bars(groups),
        "test-acc1-bars",
        "Test acc1 per group: mean over seeds, ±1 std error bars, dots are individual seeds (numbers as in the summary table).",
        "no group has a test accuracy.",
    )


def _section_fraction(b: _Builder, groups: list[Group]) -> None:
    b.heading(2, "Pretraining-set fraction")
    lines, refs = fraction_lines(groups)
    b.figure(
        plot_fraction_curve(groups),
        "pretrain-fraction",
        "Test acc1 vs fraction of the pretraining set, one line per (method, protocol); horizontal lines: "
        "ImageNet-supervised and scratch references (band: ±1 std).",
        "no evaluated run has a pretraining fraction.",
    )
    rows: list[list[Cell]] = []
    for line in lines:
        for fr in sorted(line.points):
            gs = line.points[fr]
            rows.append([line.label, f"{fr * 100:g}%", ", ".join(g.name for g in gs), line.stat(fr).fmt(), b.runs_cell([r for g in gs for r in g.runs])])
    for g in refs:
        rows.append([f"reference: {g.common('backbone_source')}", "—", g.name, g.stat("test").fmt(), b.runs_cell(g.runs)])
    if lines:
        b.blocks.append(Table(["Line", "Fraction", "Group(s)", "Test acc1", "Runs"], rows, frozenset({1, 3})))


def _section_cnn_vit(b: _Builder, groups: list[Group]) -> None:
    b.heading(2, "CNN vs ViT")
    b.figure(
        plot_cnn_vs_vit(groups),
        "cnn-vs-vit",
        "Test acc1 (mean ± std over seeds) against parameters, FLOPs per image and throughput; colour: family, label: model.",
        "no group with a model family (cnn/vit) and a test accuracy.",
    )
    rows: list[list[Cell]] = []
    for g in cnn_vit_groups(groups):
        rows.append(
            [
                g.name,
                str(g.common("family")),
                str(g.common("model") or "—"),
                _fmt_num(g.number("params"), 1e6, 2, " M"),
                _fmt_num(g.number("flops_per_image"), 1e9, 3, " G"),
                _fmt_num(g.number("throughput_img_s"), 1.0, 0),
                g.stat("test").fmt(of=len(g.runs)),
                b.runs_cell(g.runs),
            ]
        )
    if rows:
        b.blocks.append(Table(["Group", "Family", "Model", "Params", "FLOPs/img", "img/s", "Test acc1", "Runs"], rows, frozenset({3, 4, 5, 6})))


def _section_sweeps(b: _Builder, sweep_runs: list[Run]) -> None:
    b.heading(2, "Sweeps")
    sweeps = sweep_trials(sweep_runs)
    if not sweeps:
        b.note("No sweep trials in this study.")
        return
    b.para("Trials are ranked by mean val acc1 over seeds (test is not used to select).")
    stems = _slugs(list(sweeps), "sweep-")
    for name, trials in sweeps.items():
        b.heading(3, f"Sweep “{name}”")
        keys = varying_keys(trials)
        if len(keys) in (1, 2):
            kind = "heat map" if len(keys) == 2 else "line plot"
            b.figure(
                plot_sweep(name, trials),
                stems[name],
                f"Sweep '{name}': val acc1 {kind} over {', '.join(keys)}.",
                f"no trial of sweep '{name}' has a val accuracy.",
            )
        else:
            b.note(f"{len(keys)} sweep keys vary ({', '.join(keys) or 'none'}): shown as a table only.")
        all_keys = keys or sorted({k for t in trials for k in t.params})
        has_test = any(t.test.n for t in trials)
        header = ["Rank", *all_keys, "n", "Val acc1"] + (["Test acc1"] if has_test else []) + ["Runs"]
        rows: list[list[Cell]] = []
        for rank, t in enumerate(trials, start=1):
            row: list[Cell] = [str(rank), *[_fmt_value(t.params.get(k)) for k in all_keys], str(len(t.runs)), t.val.fmt(of=len(t.runs))]
            if has_test:
                row.append(t.test.fmt(of=len(t.runs)))
            row.append(b.runs_cell(t.runs))
            rows.append(row)
        # Rank, the swept values, n, val acc1 (and test acc1) are right-aligned numbers.
        b.blocks.append(Table(header, rows, frozenset(range(len(header) - 1))))


def _section_curves(b: _Builder, groups: list[Group]) -> None:
    b.heading(2, "Training curves")
    b.para(
        "One figure per group, one line per run (colour = seed): learning rate, train/val top-1 accuracy "
        "(test as a star where logged), train/val loss and kNN accuracy (pretraining) against epoch, "
        "each with exactly the points logged in the run's metrics.jsonl."
    )
    stems = _slugs([g.name for g in groups], "curves-")
    for g in groups:
        b.heading(3, g.name)
        missing = [r for r in g.runs if not r.metrics_path.is_file()]
        for r in missing:
            b.note("No metrics.jsonl in ", b.run_link(r), ".")
        fig = plot_group_curves(g, b.logs)
        for r in g.runs:
            log = b.logs.get(r.metrics_path)
            if log is None:
                continue
            dropped = {k: _series(log, k)[2] for _, _, keys in CURVE_PANELS for k, _, _ in keys}
            dropped = {k: n for k, n in dropped.items() if n}
            if dropped:
                what = ", ".join(f"{n} × {k}" for k, n in dropped.items())
                b.note(f"Not plotted (line has no epoch): {what} in ", Code(f"{r.rel}/{METRICS_FILE}"), ".")
        b.figure(fig, stems[g.name], f"Curves of '{g.name}' ({len(g.runs)} run(s)).", f"no curves logged for '{g.name}'.")


def _last_epoch(run_dir: Path) -> str:
    """The last logged epoch of an unfinished run (tolerating a cut-off final line)."""
    path = run_dir / METRICS_FILE
    if not path.is_file():
        return "—"
    log = read_metrics(path, strict=False)
    epochs = [rec["epoch"] for _, rec in log.records if _is_number(rec.get("epoch"))]
    return f"{max(epochs):g}" if epochs else "—"


def _section_incomplete(b: _Builder, study: Study, groups: list[Group]) -> None:
    b.heading(2, "Incomplete and missing runs")
    rows: list[list[Cell]] = []
    for r in study.incomplete:
        epochs = r.get("epochs")
        rows.append([b.run_link(r), r.status, r.task, r.group, str(r.seed), f"{_last_epoch(r.dir)} / {_fmt_value(epochs)}", b.config_link(r)])
    for d in study.orphans:
        cfg = d / CONFIG_FILE
        rows.append(
            [Link(_rel(d, study.root), b.href(d, is_dir=True)), "no result.json", "—", "—", "—", f"{_last_epoch(d)} / —",
             Link("config.toml", b.href(cfg)) if cfg.is_file() else "(no config.toml)"]
        )
    if rows:
        b.blocks.append(Table(["Run dir", "Status", "Task", "Group", "Seed", "Last epoch / planned", "Config"], rows, frozenset({4, 5})))
    else:
        b.para("Every run directory found is complete.")
    # Seeds present in other groups of the same task but not in this one: probably not run yet.
    gaps: list[list[Cell]] = []
    by_task: dict[str, list[Group]] = {}
    for g in groups:
        by_task.setdefault(g.task, []).append(g)
    for task, gs in by_task.items():
        union = set().union(*(set(g.seeds) for g in gs))
        for g in gs:
            lacking = sorted(union - set(g.seeds))
            if lacking:
                gaps.append([g.name, task, ", ".join(map(str, g.seeds)), ", ".join(map(str, lacking))])
    if gaps:
        b.para("Groups lacking seeds that other groups of the same task have (possibly missing runs):")
        b.blocks.append(Table(["Group", "Task", "Seeds present", "Seeds missing"], gaps))


def _section_all_runs(b: _Builder, study: Study) -> None:
    b.heading(2, "All complete runs")
    rows: list[list[Cell]] = []
    for r in sorted(study.complete, key=lambda r: _natural(r.rel)):
        best = r.get("best_checkpoint")
        best_step = best.get("step") if isinstance(best, dict) else None
        wall = r.get("wall_time_s")
        rows.append(
            [
                b.run_link(r),
                r.group,
                str(r.seed),
                _fmt_num(r.metric("val")),
                _fmt_num(r.metric("test")),
                _fmt_num(r.metric("test", "acc5")),
                _fmt_value(best_step),
                _fmt_num(wall / 60.0 if _is_number(wall) else None, 1.0, 1),
                b.config_link(r),
            ]
        )
    b.blocks.append(
        Table(["Run dir", "Group", "Seed", "Val acc1", "Test acc1", "Test acc5", "Best step", "Wall (min)", "Config"], rows, frozenset({2, 3, 4, 5, 6, 7}))
    )


def _warnings(study: Study, groups: list[Group]) -> list[str]:
    """Inconsistencies that would make an aggregate misleading, stated instead of hidden."""
    out = []
    for r in study.complete:
        for split in ("val", "test"):
            block = r.get(split)
            if isinstance(block, dict):
                bad = [k for k, v in block.items() if _is_number(v) and not math.isfinite(v)]
                if bad:
                    out.append(f"Run '{r.rel}' has non-finite {split} {', '.join(bad)}; treated as absent.")
    for g in groups:
        dup = sorted(s for s, c in Counter(g.seeds).items() if c > 1)
        if dup:
            out.append(f"Group '{g.name}' has several runs with seed(s) {', '.join(map(str, dup))}: they are averaged as if independent.")
        for key in ("task", "protocol", "backbone_source", "model", "fraction", "family"):
            if len({json.dumps(v) for v in g.values(key)}) > 1:
                out.append(f"Group '{g.name}' mixes runs with different '{key}' values; that attribute is treated as unknown.")
    return out


def build_report(root: Path, out_dir: Path | None = None) -> Path:
    """Build ``report.md``, ``report.html`` and ``figures/*.{png,svg}`` for the study at ``root``.

    ``out_dir`` defaults to ``root``. Returns the path of ``report.html``. Raises
    :class:`ReprlabError` for a missing study, a malformed ``result.json`` or ``metrics.jsonl``.
    """
    root = Path(root)
    study = load_study(root)
    out_dir = Path(out_dir) if out_dir is not None else root
    out_dir.mkdir(parents=True, exist_ok=True)
    b = _Builder(study, out_dir)
    groups = group_runs(study.main_runs)
    # Validate every complete run's metrics up front so a corrupt log fails the build with
    # its file and line, not halfway through writing figures.
    for r in study.complete:
        if r.metrics_path.is_file():
            b.logs[r.metrics_path] = read_metrics(r.metrics_path)

    n_sweeps = len({r.get("sweep") for r in study.sweep_runs})
    b.para(
        "Study ",
        Code(str(root)),
        f": {len(study.complete)} complete run(s) in {len(groups)} group(s), "
        f"{len(study.sweep_runs)} sweep trial run(s) in {n_sweeps} sweep(s), "
        f"{len(study.incomplete) + len(study.orphans)} incomplete/missing. Sweep trials appear only in the Sweeps section.",
    )
    warns = _warnings(study, groups)
    if warns:
        b.heading(2, "Warnings")
        for w in warns:
            b.note(w)
    _section_summary(b, groups)
    _section_gains(b, groups)
    _section_bars(b, groups)
    _section_fraction(b, groups)
    _section_cnn_vit(b, groups)
    _section_sweeps(b, study.sweep_runs)
    _section_curves(b, groups)
    _section_incomplete(b, study, groups)
    _section_all_runs(b, study)
    b.remove_stale_figures()

    title = f"reprlab report: {root.resolve().name}"
    (out_dir / "report.md").write_text(render_markdown(title, b.blocks), encoding="utf-8")
    html_path = out_dir / "report.html"
    html_path.write_text(render_html(title, b.blocks), encoding="utf-8")
    return html_path
