"""The numbers of the report: groups of runs, mean ± std over seeds and the derived comparisons.

Pure data (no matplotlib): the figures and the tables of the report are both built from
these functions, so a plotted point and a table cell can never disagree.
"""

from __future__ import annotations

import json
import math
import re
import statistics
from dataclasses import dataclass, field
from typing import Any, Collection, Iterable, Sequence

from reprlab.report.load import Run, is_number

__all__ = [
    "EVAL_TASKS",
    "SSL_PROTOCOLS",
    "Stat",
    "Group",
    "Gain",
    "FractionLine",
    "MethodRow",
    "Trial",
    "group_runs",
    "gains_over_scratch",
    "fraction_lines",
    "cnn_vit_groups",
    "ssl_method",
    "ssl_method_rows",
    "ssl_references",
    "sweep_trials",
    "varying_keys",
    "sweep_kind",
    "axis_scale",
    "natural",
    "fmt_value",
    "value_key",
]

# Tasks whose test accuracy is a downstream result that can be compared against scratch.
EVAL_TASKS = ("train", "probe", "finetune")
# Row order of the tables: pretraining first, then the downstream evaluations.
_TASK_ORDER = {"pretrain": 0, "train": 1, "probe": 2, "finetune": 3}


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


def _stat(values: Iterable[float | None]) -> Stat:
    return Stat(tuple(v for v in values if v is not None))


@dataclass
class Group:
    """Runs sharing a ``group`` label (normally the seeds of one configuration)."""

    name: str
    runs: list[Run]

    def stat(self, split: str, key: str = "acc1", source: str | None = None) -> Stat:
        return _stat(run.metric(split, key, source) for run in self.runs)

    def knn(self, source: str | None = None) -> Stat:
        """The kNN monitor accuracy on val of pretraining runs (either result.json spelling)."""
        return _stat(run.knn(source) for run in self.runs)

    def values(self, key: str) -> list[Any]:
        return [run.get(key) for run in self.runs]

    def common(self, key: str) -> Any:
        """The value of ``key`` if every run agrees on it, else ``None``."""
        vals = {json.dumps(v, sort_keys=True) for v in self.values(key)}
        return self.runs[0].get(key) if len(vals) == 1 else None

    def number(self, key: str) -> float | None:
        """Mean of a numeric per-run key over the runs that have it (params, FLOPs, ...)."""
        nums = [float(v) for v in self.values(key) if is_number(v)]
        return statistics.mean(nums) if nums else None

    @property
    def task(self) -> str:
        return self.runs[0].task

    @property
    def seeds(self) -> list[int]:
        return sorted(run.seed for run in self.runs)


def natural(text: str) -> list[Any]:
    """Sort key that orders "TIN 25%" before "TIN 100%" (numbers compared as numbers)."""
    return [(0, float(t), "") if re.fullmatch(r"\d+(?:\.\d+)?", t) else (1, 0.0, t.lower()) for t in re.findall(r"\d+(?:\.\d+)?|\D+", text)]


def group_runs(runs: Iterable[Run]) -> list[Group]:
    """Group runs by their ``group`` label; pretraining first, then train/probe/finetune."""
    by_name: dict[str, list[Run]] = {}
    for run in runs:
        by_name.setdefault(run.group, []).append(run)
    groups = [Group(name, sorted(rs, key=lambda r: (r.seed, r.rel))) for name, rs in by_name.items()]
    return sorted(groups, key=lambda g: (_TASK_ORDER.get(g.task, len(_TASK_ORDER)), natural(g.name)))


def _eval_groups_with_test(groups: Iterable[Group]) -> list[Group]:
    return [g for g in groups if g.task in EVAL_TASKS and g.stat("test").n > 0]


# --------------------------------------------------------------------------------------------
# Gains over scratch, pretraining fraction, CNN vs ViT
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Gain:
    """Test acc1 of ``group`` minus that of the scratch baseline, in points and percent."""

    group: Group
    baseline: Group
    points: float
    relative: float | None  # None when the baseline mean is 0


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
    with_fraction = [g for g in evaluated if is_number(g.common("fraction")) and g.common("backbone_source") != "imagenet-supervised"]
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


# --------------------------------------------------------------------------------------------
# Self-supervised methods compared
# --------------------------------------------------------------------------------------------

# (protocol, column title) of the downstream evaluations a method row shows, in order.
SSL_PROTOCOLS = (
    ("linear-cached", "Probe (cached) test acc1"),
    ("linear-augment", "Probe (augmented) test acc1"),
    ("finetune-head", "Head fine-tune test acc1"),
    ("finetune-full", "Full fine-tune test acc1"),
)
# Backbones that are references for the SSL methods, not methods themselves.
REFERENCE_SOURCES = ("random-init", "imagenet-supervised", "supervised-pretrain")
_NOT_SSL = ("scratch", "supervised", "none", "checkpoint", *REFERENCE_SOURCES)
# Settings that separate two rows of one method when they vary among the SSL runs.
_SETTINGS = ("dataset", "fraction", "model", "resolution")


def ssl_method(group: Group) -> str | None:
    """The self-supervised pretraining method behind a probe/finetune group, else ``None``.

    Probe and finetune runs record their backbone's pretraining method in ``method`` and the
    report label in ``backbone_source`` (the method for a checkpoint of an SSL run).
    """
    if group.task not in ("probe", "finetune") or group.common("backbone_source") in REFERENCE_SOURCES:
        return None
    name = group.common("method") or group.common("backbone_source")
    return name if isinstance(name, str) and name not in _NOT_SSL else None


def _setting_text(key: str, value: Any) -> str:
    if key == "fraction" and is_number(value):
        return f"{value * 100:g}%"
    if key == "resolution" and is_number(value):
        return f"{value:g}px"
    return fmt_value(value)


@dataclass
class MethodRow:
    """One pretraining method (at one setting): its groups per downstream protocol."""

    method: str
    label: str
    groups: dict[str, list[Group]] = field(default_factory=dict)  # protocol -> groups

    def runs(self, protocol: str | None = None) -> list[Run]:
        protocols = [protocol] if protocol else [p for p, _ in SSL_PROTOCOLS]
        return [r for p in protocols for g in self.groups.get(p, []) for r in g.runs]

    def stat(self, protocol: str = "linear-cached") -> Stat:
        """Test acc1 over every seed of this method under ``protocol``."""
        return _stat(r.metric("test") for r in self.runs(protocol))

    @property
    def seeds(self) -> list[int]:
        return sorted({r.seed for r in self.runs()})


def ssl_method_rows(groups: Sequence[Group]) -> list[MethodRow]:
    """One row per SSL pretraining method, with its probe/finetune test accuracy over seeds.

    Groups of one method are kept apart by dataset, fraction, model and resolution when those
    vary among the SSL groups (the row label then says which), never pooled across them.
    """
    protocols = {p for p, _ in SSL_PROTOCOLS}
    found = [(g, ssl_method(g)) for g in _eval_groups_with_test(groups) if g.common("protocol") in protocols]
    found = [(g, m) for g, m in found if m is not None]
    varying = [k for k in _SETTINGS if len({json.dumps(g.common(k)) for g, _ in found}) > 1]
    rows: dict[tuple[str, ...], MethodRow] = {}
    for g, method in found:
        parts = [_setting_text(k, g.common(k)) for k in varying if g.common(k) is not None]
        label = method + (f" ({', '.join(parts)})" if parts else "")
        key = (method, *[json.dumps(g.common(k)) for k in varying])
        row = rows.setdefault(key, MethodRow(method=method, label=label))
        row.groups.setdefault(g.common("protocol"), []).append(g)

    def order(row: MethodRow) -> tuple[Any, ...]:
        g = next(iter(row.groups.values()))[0]
        return (row.method, *[value_key(g.common(k)) for k in varying])

    return sorted(rows.values(), key=order)


def ssl_references(groups: Sequence[Group]) -> list[Group]:
    """Cached-probe groups of the reference backbones (random init, ImageNet, supervised)."""
    return [
        g
        for g in _eval_groups_with_test(groups)
        if g.task == "probe" and g.common("protocol") == "linear-cached" and g.common("backbone_source") in REFERENCE_SOURCES
    ]


# --------------------------------------------------------------------------------------------
# Sweeps
# --------------------------------------------------------------------------------------------


@dataclass
class Trial:
    """One point of a sweep: the runs (seeds) sharing the same ``sweep_params``."""

    params: dict[str, Any]
    runs: list[Run]

    @property
    def val(self) -> Stat:
        """Val acc1 over seeds; the kNN accuracy for pretraining trials, which have no val acc1."""
        return _stat(r.metric("val") if r.metric("val") is not None else r.knn() for r in self.runs)

    @property
    def test(self) -> Stat:
        return _stat(r.metric("test") for r in self.runs)

    @property
    def is_knn(self) -> bool:
        return any(r.metric("val") is None and r.knn() is not None for r in self.runs)


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
    return [k for k in keys if len({json.dumps(t.params.get(k), sort_keys=True, default=str) for t in trials}) > 1]


def sweep_kind(trials: Sequence[Trial]) -> str | None:
    """How a sweep is drawn: ``"line"`` over one varying key; over two, ``"heatmap"`` when the
    trials fill a grid (or a key is categorical) and ``"scatter"`` when they are scattered over
    continuous ranges (random or TPE sampling); ``None`` for a table only."""
    keys = varying_keys(trials)
    if len(keys) not in (1, 2) or not any(t.val.n for t in trials):
        return None
    if len(keys) == 1:
        return "line"
    values = [[t.params.get(k) for t in trials] for k in keys]
    if not all(is_number(v) for vs in values for v in vs):
        return "heatmap"
    cells = {(t.params.get(keys[0]), t.params.get(keys[1])) for t in trials if t.val.n}
    size = len(set(values[0])) * len(set(values[1]))
    return "heatmap" if len(cells) >= 0.5 * size else "scatter"


def axis_scale(values: Collection[Any], log_sampled: bool = False) -> str:
    """``"log"`` for positive numbers sampled log-uniformly or spanning at least 10×, else ``"linear"``.

    ``log_sampled`` is what the sweep recorded (``log = true`` in its space); without such a
    record the span decides, so a learning rate searched over 1e-3..1e-1 still gets a log axis.
    """
    nums = [float(v) for v in values if is_number(v)]
    if not nums or len(nums) != len(values) or min(nums) <= 0:
        return "linear"
    return "log" if log_sampled or max(nums) / min(nums) >= 10 else "linear"


def value_key(value: Any) -> tuple[int, float, str]:
    """Sort numbers numerically, then strings, then missing values."""
    if is_number(value):
        return (0, float(value), "")
    if value is None:
        return (2, 0.0, "")
    return (1, 0.0, str(value))


def fmt_value(value: Any) -> str:
    if value is None:
        return "—"
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)
