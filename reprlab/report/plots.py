"""The report's figures: matplotlib only, drawn from the data of :mod:`reprlab.report.tables`.

Every ``plot_*`` function returns a :class:`matplotlib.figure.Figure` (or ``None`` when there
is nothing to plot) so tests can inspect the plotted data before anything is saved; artists
that carry data have a ``gid`` naming what they show.
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Any, Collection, Sequence

import matplotlib
import matplotlib.patches
import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import FixedLocator, FuncFormatter, NullFormatter, NullLocator

from reprlab.report.budget import TOY_WORDS, group_budget_text, published_for, toy_mark, toy_percent
from reprlab.report.load import MetricsLog, Run, is_number, read_metrics, series
from reprlab.report.tables import (
    Group,
    MethodRow,
    Trial,
    axis_scale,
    cnn_vit_groups,
    fmt_value,
    fraction_lines,
    sweep_kind,
    value_key,
    varying_keys,
)

__all__ = [
    "CURVE_PANELS",
    "plot_group_curves",
    "plot_test_acc1_bars",
    "plot_fraction_curve",
    "plot_cnn_vs_vit",
    "plot_ssl_methods",
    "plot_sweep",
]

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


def _tick_label(value: Any) -> str:
    """Axis label of a swept value; a key absent from a trial reads "(unset)", not a dash."""
    return "(unset)" if value is None else _mpl(fmt_value(value))


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
_ONLINE = {"linestyle": "-", "linewidth": 1.4, "marker": "s", "markersize": 3}
CURVE_PANELS: tuple[tuple[str, str, tuple[tuple[str, str, dict[str, Any]], ...]], ...] = (
    ("Learning rate", "learning rate", (("lr", "lr", _TRAIN),)),
    (
        "Top-1 accuracy",
        "acc1 (%)",
        (("train/acc1", "train", _TRAIN), ("val/acc1", "val", _VAL), ("test/acc1", "test", _TEST)),
    ),
    ("Loss", "loss", (("train/loss", "train", _TRAIN), ("val/loss", "val", _VAL))),
    # the self-supervised monitors on the validation split: kNN and the online linear probe
    ("kNN / online probe top-1", "val acc1 (%)", (("knn/acc1", "kNN", _VAL), ("online/val_acc1", "online probe", _ONLINE))),
)
#: how a figure marks what a toy budget produced (hatched bars, a warning in the labels)
_TOY_HATCH = "///"
_REF_STYLES = (":", "--", "-.", (0, (5, 1)))
_TOY_NOTE = f"⚠ hatched / marked: under {toy_percent()} of its recipe's training budget: {TOY_WORDS}"


def _toy_footnote(fig: Figure) -> None:
    fig.supxlabel(_TOY_NOTE, fontsize=8, color="#b35900", x=0.01, ha="left")


def _group_toy(g: Group) -> str | None:
    """A toy group's mark, else None."""
    toy = group_budget_text(g.runs)[1]
    return toy_mark(toy) if toy else None


def plot_group_curves(group: Group, logs: dict[Path, MetricsLog] | None = None) -> Figure | None:
    """Learning rate, accuracy, loss and kNN accuracy vs epoch, one line per run of ``group``.

    Each line's gid is ``"<run name>::<metric key>"`` and its data are exactly
    :func:`~reprlab.report.load.curve_series` of that run and key. Panels without data are left out; returns
    ``None`` when no run of the group has any curve.
    """
    logs = logs if logs is not None else {}
    found: dict[str, list[tuple[Run, str, str, dict[str, Any], list[float], list[float]]]] = {}
    for run in group.runs:
        if run.metrics_path not in logs:
            if not run.metrics_path.is_file():
                continue
            logs[run.metrics_path] = read_metrics(run.metrics_path)
        log = logs[run.metrics_path]
        for title, _, keys in CURVE_PANELS:
            for key, label, style in keys:
                xs, ys, _ = series(log, key)
                if xs:
                    found.setdefault(title, []).append((run, key, label, style, xs, ys))
    panels = [p for p in CURVE_PANELS if p[0] in found]
    if not panels:
        return None
    fig = _new_figure(4.1 * len(panels), 3.4)
    axes = fig.subplots(1, len(panels), squeeze=False)[0]
    colors = {run.rel: _CYCLE[i % len(_CYCLE)] for i, run in enumerate(group.runs)}
    for ax, (title, ylabel, _) in zip(axes, panels):
        for run, key, label, style, xs, ys in found[title]:
            (line,) = ax.plot(xs, ys, color=colors[run.rel], label=_mpl(f"seed {run.seed} {label}"), **style)
            line.set_gid(f"{run.name}::{key}")
        ax.set_title(title, fontsize=10)
        ax.set_xlabel("epoch")
        ax.set_ylabel(ylabel)
        if title == "Learning rate":
            ax.ticklabel_format(axis="y", style="sci", scilimits=(-3, 3))
        _style_axes(ax)
        ax.legend(fontsize=7, loc="best", framealpha=0.8)
    toy = _group_toy(group)
    fig.suptitle(_mpl(group.name + (f"  ({toy})" if toy else "")), fontsize=11, fontweight="bold", color="#b35900" if toy else "black")
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
    toys = [_group_toy(g) for g in groups]
    bars = ax.barh(ys, means, xerr=errs, color=colors, alpha=0.85, capsize=4, error_kw={"elinewidth": 1.2})
    for patch, g, toy in zip(bars.patches, groups, toys):
        patch.set_gid(f"bar::{g.name}" + ("::toy" if toy else ""))
        if toy:
            patch.set_hatch(_TOY_HATCH)
    for y, g, toy in zip(ys, groups, toys):
        vals = g.stat("test").values
        ax.plot(vals, [y] * len(vals), linestyle="none", marker="o", markersize=3.5, color="black", gid=f"seeds::{g.name}")
        st = g.stat("test")
        # Label right of whichever reaches further: the whisker or the best seed.
        ax.text(max(max(vals), st.mean + (st.std or 0.0)) + 0.8, y, st.fmt() + (f"  {_mpl(toy)}" if toy else ""), va="center", fontsize=8,
                color="#b35900" if toy else "black")
    ax.set_yticks(ys, [_mpl(g.name) for g in groups], fontsize=8)
    ax.invert_yaxis()  # same top-to-bottom order as the summary table
    ax.set_xlabel("test acc1 (%)  —  bar: mean over seeds, whisker: ±1 std, dots: seeds")
    ax.set_title("Test top-1 accuracy per group", fontsize=11, fontweight="bold")
    ax.set_xlim(0, max(max(g.stat("test").values) for g in groups) * (2.7 if any(toys) else 1.18) + 1)  # room for the marks (about 60 characters)
    _style_axes(ax)
    ax.grid(False, axis="y")
    if any(toys):
        _toy_footnote(fig)
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
    any_toy = False
    for i, line in enumerate(lines):
        fr = sorted(line.points)
        all_fr.extend(fr)
        stats = [line.stat(f) for f in fr]
        toy = any(_group_toy(g) for gs in line.points.values() for g in gs)
        any_toy = any_toy or toy
        ax.errorbar(
            fr,
            [s.mean for s in stats],
            yerr=[s.std or 0.0 for s in stats],
            marker="o",
            capsize=4,
            color=_CYCLE[i % len(_CYCLE)],
            label=_mpl(line.label + ("  ⚠ toy budget" if toy else "")),
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
    if any_toy:
        _toy_footnote(fig)
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
                toy = group_budget_text(g.runs)[1]
                label = str(g.common("model") or g.name) + (f"  ⚠ {toy.short()}" if toy else "")
                ax.annotate(_mpl(label), (x, g.stat("test").mean), textcoords="offset points", xytext=(5, 5), fontsize=8, color="#b35900" if toy else "black")
        for i, (g, ref) in enumerate((g, ref) for g in groups for ref in published_for(g.runs)):
            ax.axhline(ref.top1, color=_FAMILY_COLORS.get(str(g.common("family")), "#9467bd"), linestyle=_REF_STYLES[i % len(_REF_STYLES)], linewidth=1.0,
                       alpha=0.8, label=_mpl(f"published {ref.backbone}{' ' + ref.note.split(',')[0] if ref.note else ''}, {ref.epochs} ep: {ref.top1:g}"),
                       gid=f"cnn-vit-published::{g.name}::{ref.source}::{ref.top1}")
        xs = [x for _, x in pts]
        if xs and min(xs) > 0 and max(xs) / min(xs) >= 10:
            ax.set_xscale("log")
            ax.xaxis.set_minor_formatter(NullFormatter())
        ax.xaxis.set_major_formatter(FuncFormatter(tick_fmt))
        ax.margins(x=0.15, y=0.12)  # room for the model labels next to the points
        ax.set_xlabel(xlabel)
        _style_axes(ax)
        if pts and not legend_done:  # one legend: the family colours are the same in all panels
            ax.legend(fontsize=7, loc="center left", framealpha=0.85)
            legend_done = True
    axes[0].set_ylabel("test acc1 (%)")
    if any(_group_toy(g) for g in groups):
        _toy_footnote(fig)
    fig.suptitle("CNN vs ViT: test accuracy against cost (mean ± std over seeds)", fontsize=11, fontweight="bold")
    return fig




def plot_ssl_methods(rows: Sequence[MethodRow], refs: Sequence[Group] = ()) -> Figure | None:
    """Cached linear-probe test acc1 per pretraining method: one bar per row of
    :func:`~reprlab.report.tables.ssl_method_rows` (mean, ±1 std whiskers, seeds as dots);
    reference backbones (random init, ImageNet-supervised, supervised pretraining) drawn as
    horizontal lines. ``None`` unless at least two distinct methods have a probe result.
    """
    rows = [r for r in rows if r.stat().n]
    if len({r.method for r in rows}) < 2:
        return None
    stats = [r.stat() for r in rows]
    toys = [group_budget_text(r.runs("linear-cached"))[1] for r in rows]
    fig = _new_figure(max(6.5, 2.5 + (1.6 if any(toys) else 0.85) * len(rows)), 5.6)
    ax = fig.add_subplot()
    xs = np.arange(len(rows))
    methods = sorted({r.method for r in rows})
    colors = [_CYCLE[methods.index(r.method) % len(_CYCLE)] for r in rows]
    bars = ax.bar(xs, [s.mean for s in stats], yerr=[s.std or 0.0 for s in stats], color=colors, alpha=0.85, capsize=4, error_kw={"elinewidth": 1.2})
    for patch, row, toy in zip(bars.patches, rows, toys):
        patch.set_gid(f"ssl::{row.label}" + ("::toy" if toy else ""))
        if toy:
            patch.set_hatch(_TOY_HATCH)
    top = max(max(s.values) for s in stats)
    published_label = None
    for x, row, st, toy in zip(xs, rows, stats, toys):
        ax.plot([x] * st.n, st.values, linestyle="none", marker="o", markersize=3.5, color="black", gid=f"ssl-seeds::{row.label}")
        mark = f"\n⚠ {toy.short()}" if toy else ""
        ax.text(x, max(max(st.values), st.mean + (st.std or 0.0)) + 0.6, st.fmt() + mark, ha="center", va="bottom", fontsize=8,
                color="#b35900" if toy else "black")
        for ref in published_for(row.runs("linear-cached"))[:1]:
            first = published_label is None  # one legend entry for all the diamonds
            published_label = published_label or f"published ({ref.source.split(',')[0]}, {ref.epochs} ep, {ref.protocol})"
            ax.plot([x + 0.3], [ref.top1], linestyle="none", marker="D", markersize=6, markerfacecolor="white", markeredgecolor="black",
                    gid=f"ssl-published::{row.label}", label=_mpl(published_label) if first else None)
            ax.text(x + 0.3, ref.top1 + 1.2, f"{ref.top1:g}\n({ref.epochs} ep)", ha="center", va="bottom", fontsize=7.5)
            top = max(top, ref.top1)
    used: Counter[str] = Counter()
    for g in refs:
        src = str(g.common("backbone_source"))
        st = g.stat("test")
        style = _REF_STYLES[used[src] % len(_REF_STYLES)]
        used[src] += 1
        ax.axhline(st.mean, color=_BACKBONE_COLORS.get(src, "black"), linestyle=style, linewidth=1.4, label=_mpl(f"{g.name}: {st.fmt()}"), gid=f"ssl-ref::{g.name}")
        top = max(top, st.mean)
    long_labels = len(rows) > 5 or max(len(r.label) for r in rows) > 12
    ax.set_xticks(xs, [_mpl(r.label) for r in rows], rotation=25 if long_labels else 0, ha="right" if long_labels else "center", fontsize=8.5)
    ax.set_ylim(0, top * 1.18 + 1)
    ax.set_ylabel("test acc1 (%), linear probe on cached features")
    ax.set_title("Linear probe per method\n(mean ± std over seeds; ◇ published)", fontsize=11, fontweight="bold")
    _style_axes(ax)
    ax.grid(False, axis="x")
    if refs or published_label:
        # in the band between our bars and the published numbers, which a toy budget leaves empty
        ax.legend(title="references", fontsize=7.5, title_fontsize=8, loc="center" if published_label else "upper left", framealpha=0.9)
    if any(toys):
        _toy_footnote(fig)
    return fig


def _metric_label(trials: Sequence[Trial]) -> str:
    return "val kNN acc1" if any(t.is_knn for t in trials) else "val acc1"


def plot_sweep(name: str, trials: Sequence[Trial], log_keys: Collection[str] = ()) -> Figure | None:
    """Val acc1 of a sweep (see :func:`~reprlab.report.tables.sweep_kind`): a line over one
    varying key, a heat map or a scatter over two, else ``None``.

    A numeric axis is logarithmic when its key is in ``log_keys`` (sampled log-uniformly, as
    the sweep recorded it) or its positive values span at least 10× (learning rate, weight decay).
    """
    kind = sweep_kind(trials)
    if kind is None:
        return None
    keys = varying_keys(trials)
    metric = _metric_label(trials)
    if kind == "line":
        (key,) = keys
        pts = sorted(((t.params.get(key), t.val) for t in trials if t.val.n), key=lambda p: value_key(p[0]))
        fig = _new_figure(6.5, 4.2)
        ax = fig.add_subplot()
        numeric = all(is_number(v) for v, _ in pts)
        xs: list[Any] = [float(v) for v, _ in pts] if numeric else list(range(len(pts)))
        ax.errorbar(xs, [s.mean for _, s in pts], yerr=[s.std or 0.0 for _, s in pts], marker="o", capsize=4)[0].set_gid(f"sweep::{name}")
        if numeric:
            ax.set_xscale(axis_scale(xs, key in log_keys))
        else:
            ax.set_xticks(xs, [_tick_label(v) for v, _ in pts])
        ax.set_xlabel(_mpl(key))
        ax.set_ylabel(f"{metric} (%)")
        ax.set_title(_mpl(f"Sweep '{name}': {metric} (mean ± std over seeds)"), fontsize=11, fontweight="bold")
        _style_axes(ax)
        return fig
    row_key, col_key = keys
    if kind == "scatter":
        return _sweep_scatter(name, trials, row_key, col_key, log_keys, metric)
    rows = sorted({json.dumps(t.params.get(row_key), default=str): t.params.get(row_key) for t in trials}.values(), key=value_key)
    cols = sorted({json.dumps(t.params.get(col_key), default=str): t.params.get(col_key) for t in trials}.values(), key=value_key)
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
    ax.set_title(_mpl(f"Sweep '{name}': {metric} (mean over seeds; red = best)"), fontsize=10, fontweight="bold")
    fig.colorbar(im, ax=ax, label=f"{metric} (%)")
    return fig


def _sweep_scatter(name: str, trials: Sequence[Trial], row_key: str, col_key: str, log_keys: Collection[str], metric: str) -> Figure:
    """Trials scattered over two continuous ranges: one point per trial, colour = its mean."""
    pts = [(float(t.params[col_key]), float(t.params[row_key]), t.val.mean) for t in trials if t.val.n]
    fig = _new_figure(7.0, 5.0)
    ax = fig.add_subplot()
    xs, ys, cs = (np.array(v, dtype=float) for v in zip(*pts))
    sc = ax.scatter(xs, ys, c=cs, cmap="viridis", s=48, edgecolors="black", linewidths=0.4, gid=f"sweep::{name}")
    best = int(np.argmax(cs))  # trials are never ranked by test
    ax.scatter([xs[best]], [ys[best]], s=170, facecolors="none", edgecolors="red", linewidths=2, gid=f"sweep-best::{name}")
    ax.set_xscale(axis_scale(list(xs), col_key in log_keys))
    ax.set_yscale(axis_scale(list(ys), row_key in log_keys))
    ax.set_xlabel(_mpl(col_key))
    ax.set_ylabel(_mpl(row_key))
    ax.set_title(_mpl(f"Sweep '{name}': {metric} per trial (mean over seeds; red = best)"), fontsize=10, fontweight="bold")
    _style_axes(ax)
    fig.colorbar(sc, ax=ax, label=f"{metric} (%)")
    return fig

