"""The sections of the report, each a function that appends blocks (and figures) to a :class:`Page`.

Every table row names and links the run directories and ``config.toml`` files it was computed
from, so each number shown can be traced back to the runs behind it.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import re
import urllib.parse
from collections import Counter
from pathlib import Path
from typing import Iterable, Sequence

import matplotlib
from matplotlib.figure import Figure

from reprlab.report.budget import TOY_WORDS, group_budget_text, last_value, of_published, pretraining_runs, published_for, toy_percent
from reprlab.report.document import FIGURES_DIR, Block, Cell, Code, FigureBlock, Heading, Inline, Lines, Link, Para, Table
from reprlab.report.load import CONFIG_FILE, METRICS_FILE, Run, Study, is_number, read_metrics, rel_path, series
from reprlab.report.plots import (
    CURVE_PANELS,
    plot_cnn_vs_vit,
    plot_fraction_curve,
    plot_group_curves,
    plot_ssl_methods,
    plot_sweep,
    plot_test_acc1_bars,
)
from reprlab.report.tables import (
    SSL_PROTOCOLS,
    Group,
    Stat,
    cnn_vit_groups,
    fmt_value,
    fraction_lines,
    gains_over_scratch,
    natural,
    ssl_method_rows,
    ssl_references,
    sweep_kind,
    sweep_trials,
    varying_keys,
)

PNG_DPI = 110
# Figure stems this package owns; stale ones from an earlier build are removed (others are not).
OWNED_STEMS = re.compile(r"^(curves-.*|test-acc1-bars|pretrain-fraction|ssl-methods|cnn-vs-vit|sweep-.*)$")


class Page:
    """Collects blocks and saves figures while the report sections are assembled."""

    def __init__(self, study: Study, out_dir: Path) -> None:
        self.study = study
        self.out_dir = out_dir
        self.fig_dir = out_dir / FIGURES_DIR
        self.blocks: list[Block] = []
        self.written: set[str] = set()
        self.logs = dict(study.logs)  # checked by load_study; curves of other runs read lazily

    # -- links --------------------------------------------------------------------------------
    def href(self, path: Path, is_dir: bool = False) -> str:
        rel = Path(os.path.relpath(path, self.out_dir)).as_posix()
        return urllib.parse.quote(rel + ("/" if is_dir and rel != "." else ""))

    def dir_link(self, path: Path) -> Link:
        return Link(rel_path(path, self.study.root), self.href(path, is_dir=True))

    def run_link(self, run: Run) -> Link:
        return Link(run.rel, self.href(run.dir, is_dir=True))

    def config_link(self, run_dir: Path) -> Inline:
        cfg = run_dir / CONFIG_FILE
        return Link("config.toml", self.href(cfg)) if cfg.is_file() else "(no config.toml)"

    def runs_cell(self, runs: Iterable[Run]) -> Lines:
        """One line per run: seed, run directory and its config.toml (the traceability trail)."""
        return Lines([[f"s{r.seed} ", self.run_link(r), " · ", self.config_link(r.dir)] for r in runs])

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
            if p.suffix in (".png", ".svg") and OWNED_STEMS.match(p.stem) and p.stem not in self.written:
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


# --------------------------------------------------------------------------------------------
# Budgets: a toy budget is said next to every number it produced
# --------------------------------------------------------------------------------------------

#: the column a table shows each group's budget against its recipe's in
BUDGET_TITLE = "Budget (done of recipe)"


def _budget_cell(runs: Sequence[Run]) -> str:
    """``"⚠ 4 of 1000 epochs (0.4 %): shows the machinery, not the method"`` for a toy group."""
    text, toy = group_budget_text(runs)
    return f"⚠ {text}: {TOY_WORDS}" if toy else text


def _acc(stat: Stat, runs: Sequence[Run], of: int | None = None) -> str:
    """A number, with ⚠ next to it when a toy budget produced it (the budget column says why)."""
    text = stat.fmt(of=of)
    return f"{text} ⚠" if stat.n and group_budget_text(runs)[1] else text


def toy_summary(groups: Sequence[Group], short: bool = False) -> str | None:
    """What the report says first when groups ran a small fraction of their recipes (``short``:
    the one line the summary repeats it in)."""
    toys = [(g, t) for g in groups if (t := group_budget_text(g.runs)[1]) is not None]
    if not toys:
        return None
    g, t = min(toys, key=lambda gt: gt[1].fraction)
    head = f"⚠ Toy budget: {len(toys)} of {len(groups)} groups trained less than {toy_percent()} of their recipe's budget"
    if short:
        return f"{head}; a run at such a budget {TOY_WORDS}, and its numbers are marked ⚠ (see Warnings)."
    return (f"{head} (the smallest: '{g.name}', {t.text()}). A run at such a budget {TOY_WORDS}: which method is ahead, whether "
            "pretraining beats scratch or the CNN beats the ViT is not a finding here. The numbers it produced are marked ⚠ in the tables "
            "(the “Budget” column says how much of the recipe ran) and hatched in the figures; run the recipes' budgets for numbers that compare.")


def online_stat(b: Page, runs: Iterable[Run]) -> Stat:
    """The final online linear-probe accuracy (``online/val_acc1``, last logged) of pretraining runs."""
    return Stat(tuple(v for r in runs if (v := last_value(b.logs.get(r.metrics_path), "online/val_acc1")) is not None))


# --------------------------------------------------------------------------------------------
# Comparisons
# --------------------------------------------------------------------------------------------


def summary(b: Page, groups: list[Group]) -> None:
    b.heading(2, "Summary per group")
    b.para(
        "Headline numbers are those of the best-on-validation checkpoint of each run (model selection "
        "never uses test). Mean ± sample std (ddof=1) over seeds; “—” where a std is undefined (one seed) "
        "or the value is absent."
    )
    if not groups:
        b.note("No complete runs outside sweeps.")
        return
    toy = toy_summary(groups, short=True)
    if toy:
        b.note(toy)
    has_knn = any(g.knn().n for g in groups)
    has_online = any(online_stat(b, g.runs).n for g in groups)
    has_final = any(r.metric("test", source="final_checkpoint") is not None for g in groups for r in g.runs)
    header = (["Group", "Task / protocol", "Model", "n", "Val acc1"] + (["Val kNN acc1"] if has_knn else []) + (["Val online-probe acc1"] if has_online else [])
              + ["Test acc1", "Test acc5"])
    if has_final:
        header.append("Test acc1 (last ckpt)")
    header += [BUDGET_TITLE, "Runs (seed · dir · config)"]
    rows: list[list[Cell]] = []
    for g in groups:
        n = len(g.runs)
        row: list[Cell] = [g.name, f"{g.task} / {g.common('protocol') or '—'}", str(g.common("model") or "—"), str(n), _acc(g.stat("val"), g.runs, n)]
        if has_knn:
            row.append(_acc(g.knn(), g.runs, n))
        if has_online:
            row.append(_acc(online_stat(b, g.runs), g.runs, n))
        row += [_acc(g.stat("test"), g.runs, n), _acc(g.stat("test", "acc5"), g.runs, n)]
        if has_final:
            row.append(_acc(g.stat("test", source="final_checkpoint"), g.runs, n))
        row += [_budget_cell(g.runs), b.runs_cell(g.runs)]
        rows.append(row)
    b.blocks.append(Table(header, rows, frozenset(range(3, len(header) - 2))))
    if has_knn:
        b.para("Val kNN acc1: the kNN monitor of self-supervised pretraining runs (no classifier is trained there)."
               + (" Val online-probe acc1: the linear classifier trained on the detached features during pretraining, its last evaluation." if has_online else ""))
    b.para(f"{BUDGET_TITLE}: epochs (or steps) trained against the recipe the run was started from, before command-line overrides; "
           "a probe's or fine-tune's includes its backbone's pretraining." + (f" ⚠ marks numbers from under {toy_percent()} of a recipe." if toy else ""))


def gains(b: Page, groups: list[Group]) -> None:
    b.heading(2, "Gains over scratch")
    baseline, found, notes = gains_over_scratch(groups)
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
    for gain in found:
        rel = "—" if gain.relative is None else f"{gain.relative:+.1f} %"
        g = gain.group
        toy = " ⚠" if group_budget_text(g.runs)[1] or group_budget_text(baseline.runs)[1] else ""
        rows.append(
            [g.name, f"{g.task} / {g.common('protocol') or '—'}", str(g.common("backbone_source") or "—"), _acc(g.stat("test"), g.runs, len(g.runs)),
             f"{gain.points:+.1f}{toy}", f"{rel}{toy}", _budget_cell(g.runs), b.runs_cell(g.runs)]
        )
    if rows:
        b.blocks.append(Table(["Group", "Task / protocol", "Backbone", "Test acc1", "Gain (points)", "Gain (%)", BUDGET_TITLE, "Runs"], rows, frozenset({3, 4, 5})))
    else:
        b.note("The scratch baseline is the only evaluated group.")


def bars(b: Page, groups: list[Group]) -> None:
    b.heading(2, "Test accuracy per group")
    b.figure(
        plot_test_acc1_bars(groups),
        "test-acc1-bars",
        "Test acc1 per group: mean over seeds, ±1 std error bars, dots are individual seeds (numbers as in the summary table).",
        "no group has a test accuracy.",
    )


def fraction(b: Page, groups: list[Group]) -> None:
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
            runs = [r for g in gs for r in g.runs]
            rows.append([line.label, f"{fr * 100:g}%", ", ".join(g.name for g in gs), _acc(line.stat(fr), runs), b.runs_cell(runs)])
    for g in refs:
        rows.append([f"reference: {g.common('backbone_source')}", "—", g.name, _acc(g.stat("test"), g.runs), b.runs_cell(g.runs)])
    if lines:
        b.blocks.append(Table(["Line", "Fraction", "Group(s)", "Test acc1", "Runs"], rows, frozenset({1, 3})))


def ssl_methods(b: Page, groups: list[Group]) -> None:
    """One row per self-supervised method; the section exists only with two or more methods."""
    rows = ssl_method_rows(groups)
    if len({r.method for r in rows}) < 2:
        return
    refs = ssl_references(groups)
    b.heading(2, "Self-supervised methods")
    b.para(
        "One row per pretraining method (the backbone's ",
        Code("method"),
        " in result.json): test acc1 of its downstream evaluations, mean ± std over seeds. A method "
        "pretrained at several settings (dataset, fraction, model, resolution) has one row per setting.",
    )
    protocols = [(p, title) for p, title in SSL_PROTOCOLS if any(r.stat(p).n for r in rows)]
    pretrains = {r.label: pretraining_runs(r.runs(), b.study.complete) for r in rows}
    has_knn = any(p.knn() is not None for ps in pretrains.values() for p in ps)
    has_online = any(online_stat(b, ps).n for ps in pretrains.values())
    table: list[list[Cell]] = []
    for r in rows:
        seeds, ps = r.seeds, pretrains[r.label]
        monitors = ([_acc(Stat(tuple(v for p in ps if (v := p.knn()) is not None)), r.runs())] if has_knn else []) + ([_acc(online_stat(b, ps), r.runs())] if has_online else [])
        refs_pub = published_for(r.runs("linear-cached") or r.runs())
        pub = [Lines([[f"{ref.top1:g} ", Link(ref.source.split(",")[0], ref.url), f" ({ref.epochs} ep, {ref.protocol})"] for ref in refs_pub]) if refs_pub else "—",
               "; ".join(dict.fromkeys(of_published(r.runs(), ref) for ref in refs_pub)) or "—"]
        table.append([r.label, ", ".join(map(str, seeds)), *[_acc(r.stat(p), r.runs(p), len(seeds)) for p, _ in protocols], *monitors, *pub,
                      _budget_cell(r.runs()), b.runs_cell(r.runs())])
        pooled = [g.name for p, _ in protocols for g in r.groups.get(p, [])]
        if len(pooled) > len({p for p, _ in protocols if r.groups.get(p)}):
            b.note(f"Row '{r.label}' pools several groups of one protocol ({', '.join(pooled)}).")
    for g in refs:
        st = g.stat("test")
        cells = [st.fmt(of=len(g.runs)) if p == "linear-cached" else "—" for p, _ in protocols]
        table.append([f"reference: {g.name}", ", ".join(map(str, g.seeds)), *cells, *["—"] * (has_knn + has_online + 2), _budget_cell(g.runs), b.runs_cell(g.runs)])
    header = ["Method", "Seeds", *[title for _, title in protocols], *(["kNN monitor (val)"] if has_knn else []), *(["Online probe (val)"] if has_online else []),
              "Published top-1", "Our pretraining / theirs", "Pretraining budget (done of recipe)", "Runs"]
    b.blocks.append(Table(header, table, frozenset(range(2, 2 + len(protocols) + has_knn + has_online))))
    b.para(("kNN monitor and online probe: the pretraining runs' own validation monitors (the online probe is a linear classifier trained "
            "on detached features during pretraining, as solo-learn reports it); " if has_knn or has_online else "")
           + "the probe and fine-tune columns are our downstream test accuracies. Published: the source's number at its budget "
           "(see “Published references”).")
    b.figure(
        plot_ssl_methods(rows, refs),
        "ssl-methods",
        "Linear-probe (cached features) test acc1 per pretraining method: mean over seeds, ±1 std whiskers, "
        "dots are seeds; horizontal lines: reference backbones; ◇: the published number for the method (at its own budget, "
        "which the table sets against ours); hatched: a toy budget.",
        "fewer than two methods have a cached linear-probe result.",
    )


def published(b: Page, groups: list[Group]) -> None:
    """Our groups beside the published numbers of the same method, dataset and network
    (:mod:`reprlab.report.published`), with our training epochs as a fraction of theirs."""
    b.heading(2, "Published references")
    rows: list[list[Cell]] = []
    for g in groups:
        if g.task == "pretrain" or not g.stat("test").n:
            continue
        for ref in published_for(g.runs):
            rows.append([g.name, _acc(g.stat("test"), g.runs, len(g.runs)), f"{ref.top1:g}", ref.label, of_published(g.runs, ref),
                         Link(ref.source, ref.url)])
    b.para(
        "Published top-1 on the same dataset for the same method and network, at the source's budget; “Ours / theirs” is our "
        "training (for a probe: its backbone's pretraining) in epochs against theirs. A small fraction makes the gap expected, "
        "not a failed reproduction. Our networks can be narrower than theirs (the parameter counts in “CNN vs ViT”, the "
        "model.kwargs in each config.toml), and protocols differ where the row says so (solo-learn's online linear probe is trained "
        "during pretraining; ours is an offline probe of the final backbone). The full table: ", Code("reprlab config published"), ".",
    )
    if rows:
        b.blocks.append(Table(["Group", "Test acc1 (ours)", "Published top-1", "Their network, budget, protocol", "Ours / theirs", "Source"], rows, frozenset({1, 2})))
    else:
        b.note("No group matches a published row (method, dataset and model).")


def cnn_vit(b: Page, groups: list[Group]) -> None:
    b.heading(2, "CNN vs ViT")
    b.figure(
        plot_cnn_vs_vit(groups),
        "cnn-vs-vit",
        "Test acc1 (mean ± std over seeds) against parameters, FLOPs per image and throughput; colour: family, label: model; "
        "horizontal lines: published numbers for the family's network (at their budgets, see “Published references”).",
        "no group with a model family (cnn/vit) and a test accuracy.",
    )
    rows: list[list[Cell]] = []
    for g in cnn_vit_groups(groups):
        rows.append(
            [g.name, str(g.common("family")), str(g.common("model") or "—"), _fmt_num(g.number("params"), 1e6, 2, " M"),
             _fmt_num(g.number("flops_per_image"), 1e9, 3, " G"), _fmt_num(g.number("throughput_img_s"), 1.0, 0),
             _acc(g.stat("test"), g.runs, len(g.runs)), _budget_cell(g.runs), b.runs_cell(g.runs)]
        )
    if rows:
        b.blocks.append(Table(["Group", "Family", "Model", "Params", "FLOPs/img", "img/s", "Test acc1", BUDGET_TITLE, "Runs"], rows, frozenset({3, 4, 5, 6})))


_SWEEP_FIGURE = {"line": "line plot", "heatmap": "heat map", "scatter": "scatter plot"}


def sweeps(b: Page, sweep_runs: list[Run]) -> None:
    b.heading(2, "Sweeps")
    found = sweep_trials(sweep_runs)
    if not found:
        b.note("No sweep trials in this study.")
        return
    b.para("Trials are ranked by mean val acc1 over seeds (test is not used to select).")
    stems = _slugs(list(found), "sweep-")
    for name, trials in found.items():
        b.heading(3, f"Sweep “{name}”")
        keys = varying_keys(trials)
        kind = sweep_kind(trials)
        if len(keys) in (1, 2):
            b.figure(
                plot_sweep(name, trials, b.study.sweep_log_keys.get(name, frozenset())),
                stems[name],
                f"Sweep '{name}': val acc1 {_SWEEP_FIGURE.get(kind or '', 'plot')} over {', '.join(keys)}.",
                f"no trial of sweep '{name}' has a val accuracy.",
            )
        else:
            b.note(f"{len(keys)} sweep keys vary ({', '.join(keys) or 'none'}): shown as a table only.")
        all_keys = keys or sorted({k for t in trials for k in t.params})
        has_test = any(t.test.n for t in trials)
        header = ["Rank", *all_keys, "n", "Val acc1"] + (["Test acc1"] if has_test else []) + ["Runs"]
        rows: list[list[Cell]] = []
        for rank, t in enumerate(trials, start=1):
            row: list[Cell] = [str(rank), *[fmt_value(t.params.get(k)) for k in all_keys], str(len(t.runs)), t.val.fmt(of=len(t.runs))]
            if has_test:
                row.append(t.test.fmt(of=len(t.runs)))
            row.append(b.runs_cell(t.runs))
            rows.append(row)
        # Rank, the swept values, n, val acc1 (and test acc1) are right-aligned numbers.
        b.blocks.append(Table(header, rows, frozenset(range(len(header) - 1))))


def curves(b: Page, groups: list[Group]) -> None:
    b.heading(2, "Training curves")
    b.para(
        "One figure per group, one line per run (colour = seed): learning rate, train/val top-1 accuracy "
        "(test as a star where logged), train/val loss, and the pretraining monitors (kNN accuracy and the online linear probe, "
        "where logged) against epoch; a toy budget is named in the figure's title; "
        "each with exactly the points logged in the run's metrics.jsonl."
    )
    stems = _slugs([g.name for g in groups], "curves-")
    for g in groups:
        b.heading(3, g.name)
        for r in g.runs:
            if not r.metrics_path.is_file():
                b.note("No metrics.jsonl in ", b.run_link(r), ".")
        fig = plot_group_curves(g, b.logs)
        for r in g.runs:
            log = b.logs.get(r.metrics_path)
            if log is None:
                continue
            dropped = {k: series(log, k)[2] for _, _, keys in CURVE_PANELS for k, _, _ in keys}
            dropped = {k: n for k, n in dropped.items() if n}
            if dropped:
                what = ", ".join(f"{n} × {k}" for k, n in dropped.items())
                b.note(f"Not plotted (line has no epoch): {what} in ", Code(f"{r.rel}/{METRICS_FILE}"), ".")
        b.figure(fig, stems[g.name], f"Curves of '{g.name}' ({len(g.runs)} run(s)).", f"no curves logged for '{g.name}'.")


# --------------------------------------------------------------------------------------------
# What the comparisons leave out: incomplete, failed, stale and unreadable run directories
# --------------------------------------------------------------------------------------------


def _last_epoch(run_dir: Path) -> str:
    """The last logged epoch of an unfinished run (tolerating a cut-off final line)."""
    path = run_dir / METRICS_FILE
    if not path.is_file():
        return "—"
    log = read_metrics(path, strict=False)
    epochs = [rec["epoch"] for _, rec in log.records if is_number(rec.get("epoch"))]
    return f"{max(epochs):g}" if epochs else "—"


def incomplete(b: Page, study: Study, groups: list[Group]) -> None:
    b.heading(2, "Incomplete and missing runs")
    rows: list[list[Cell]] = []
    for r in study.incomplete:
        rows.append([b.run_link(r), r.status, r.task, r.group, fmt_value(r.seed), f"{_last_epoch(r.dir)} / {fmt_value(r.get('epochs'))}", b.config_link(r.dir)])
    for d in study.orphans:
        rows.append([b.dir_link(d), "no result.json", "—", "—", "—", f"{_last_epoch(d)} / —", b.config_link(d)])
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
    if study.failed:
        b.heading(3, "Failed runs")
        rows = [
            [b.run_link(r), r.task, r.group, fmt_value(r.seed), str(r.get("error") or "(no error recorded)"), b.config_link(r.dir)]
            for r in study.failed
        ]
        b.blocks.append(Table(["Run dir", "Task", "Group", "Seed", "Error", "Config"], rows, frozenset({3})))
    if study.stale:
        b.heading(3, "Stale runs")
        b.para("Complete runs the study marked stale (", Code('"stale": true'), " in result.json); left out of every table above.")
        rows = [[b.run_link(r), r.task, r.group, fmt_value(r.seed), _fmt_num(r.metric("test")), b.config_link(r.dir)] for r in study.stale]
        b.blocks.append(Table(["Run dir", "Task", "Group", "Seed", "Test acc1", "Config"], rows, frozenset({3, 4})))


def unreadable(b: Page, study: Study) -> None:
    """Run directories that could not be read, each with its one-line reason."""
    if not study.bad:
        return
    b.heading(2, "Unreadable run directories")
    b.para("Left out of the report; every other run directory is reported. Fix or delete them and rebuild.")
    prefix = str(study.root) + os.sep
    rows: list[list[Cell]] = [[b.dir_link(bad.dir), Code(bad.reason.replace(prefix, "")), b.config_link(bad.dir)] for bad in study.bad]
    b.blocks.append(Table(["Run dir", "Reason", "Config"], rows))


def all_runs(b: Page, study: Study) -> None:
    b.heading(2, "All complete runs")
    has_knn = any(r.knn() is not None for r in study.complete)
    rows: list[list[Cell]] = []
    for r in sorted(study.complete, key=lambda r: natural(r.rel)):
        best = r.get("best_checkpoint")
        best_step = best.get("step") if isinstance(best, dict) else None
        wall = r.get("wall_time_s")
        row: list[Cell] = [b.run_link(r), r.group, str(r.seed), _fmt_num(r.metric("val"))]
        if has_knn:
            row.append(_fmt_num(r.knn()))
        row += [
            _fmt_num(r.metric("test")),
            _fmt_num(r.metric("test", "acc5")),
            fmt_value(best_step),
            _fmt_num(wall / 60.0 if is_number(wall) else None, 1.0, 1),
            _budget_cell([r]),
            b.config_link(r.dir),
        ]
        rows.append(row)
    header = ["Run dir", "Group", "Seed", "Val acc1"] + (["Val kNN acc1"] if has_knn else []) + ["Test acc1", "Test acc5", "Best step", "Wall (min)", BUDGET_TITLE, "Config"]
    b.blocks.append(Table(header, rows, frozenset(range(2, len(header) - 2))))


def input_warnings(study: Study, groups: list[Group]) -> list[str]:
    """Inconsistencies that would make an aggregate misleading, stated instead of hidden."""
    out = list(study.notes)
    toy = toy_summary(groups)
    if toy:
        out.insert(0, toy)
    if study.bad:
        one = len(study.bad) == 1
        out.append(f"{len(study.bad)} run director{'y' if one else 'ies'} could not be read and {'is' if one else 'are'} left out: "
                   "see “Unreadable run directories”.")
    for r in study.complete:
        for split in ("val", "test"):
            block = r.get(split)
            if isinstance(block, dict):
                bad = [k for k, v in block.items() if is_number(v) and not math.isfinite(v)]
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
