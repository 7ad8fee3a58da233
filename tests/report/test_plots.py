"""Tests for ``reprlab.report.plots``: every plotted point is the logged or tabled number."""

from __future__ import annotations

import statistics
from pathlib import Path

import numpy as np
import pytest
from matplotlib.container import BarContainer

from helpers_rundirs import make_run, make_ssl_runs, make_study
from helpers_rundirs import count_lines_with as _count_lines_with
from helpers_rundirs import read_results as _results
from reprlab.report.build import build_report
from reprlab.report.load import curve_series, load_study
from reprlab.report.plots import plot_fraction_curve, plot_group_curves, plot_ssl_methods, plot_sweep, plot_test_acc1_bars
from reprlab.report.tables import group_runs, ssl_method_rows, ssl_references, sweep_trials, varying_keys


@pytest.fixture(scope="module")
def study(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """The hand-made study's run directories (no report built)."""
    root = tmp_path_factory.mktemp("study")
    return {"root": root, "runs": make_study(root)}


def test_plotted_lines_are_the_logged_series(study: dict) -> None:
    groups = {g.name: g for g in group_runs(load_study(study["root"]).main_runs)}
    for name, keys in (
        ("Scratch / resnet18", ("lr", "train/acc1", "val/acc1", "test/acc1", "train/loss", "val/loss")),
        ("SimCLR pretrain (TIN 100%)", ("lr", "train/loss", "knn/acc1")),
    ):
        group = groups[name]
        fig = plot_group_curves(group)
        assert fig is not None
        lines = {l.get_gid(): l for ax in fig.axes for l in ax.get_lines()}
        assert len(lines) == len(keys) * len(group.runs)  # nothing extra, nothing missing
        for run in group.runs:
            for key in keys:
                xs, ys = curve_series(run.dir, key)
                line = lines[f"{run.name}::{key}"]
                assert len(line.get_xdata()) == _count_lines_with(run.metrics_path, key)
                np.testing.assert_array_equal(line.get_xdata(), xs)
                np.testing.assert_array_equal(line.get_ydata(), ys)
        titles = {ax.get_title() for ax in fig.axes}
        assert ("kNN / online probe top-1" in titles) == (name.startswith("SimCLR pretrain"))
        assert all(ax.get_xlabel() == "epoch" for ax in fig.axes)


def test_curve_panels_read_only_checked_keys() -> None:
    # load_study checks the types of CURVE_KEYS up front; a panel key outside it could fail late
    from reprlab.report.load import CURVE_KEYS
    from reprlab.report.plots import CURVE_PANELS

    assert {k for _, _, keys in CURVE_PANELS for k, _, _ in keys} | {"epoch"} == set(CURVE_KEYS)


def test_bar_chart_and_fraction_data(study: dict) -> None:
    groups = group_runs(load_study(study["root"]).main_runs)
    fig = plot_test_acc1_bars(groups)
    ax = fig.axes[0]
    with_test = [g for g in groups if g.stat("test").n]
    heights = [p.get_width() for p in ax.patches if p.get_width() > 0]
    expected = [statistics.mean(r["test"]["acc1"] for r in _results(study["runs"][g.name]) if "test" in r) for g in with_test]
    assert heights == pytest.approx(expected)
    assert ax.get_xlabel().startswith("test acc1")

    fig = plot_fraction_curve(groups)
    (line,) = [l for l in fig.axes[0].get_lines() if l.get_gid() == "fraction::simclr / linear-cached"]
    assert list(line.get_xdata()) == [0.25, 0.5, 1.0]
    assert list(line.get_ydata()) == pytest.approx([28.0, 31.5, 35.0])
    refs = {t.get_text().split(":")[0] for t in fig.axes[0].get_legend().get_texts()}
    assert {"Scratch / resnet18", "ImageNet-supervised / linear"} <= refs


# ------------------------------------------------------------------------------------------
# Sweeps
# ------------------------------------------------------------------------------------------


def test_sweep_one_and_three_keys(tmp_path: Path) -> None:
    for i, lr in enumerate((0.1, 0.01, 0.001)):
        make_run(tmp_path, f"one/{i}", "one", val_acc1=10.0 + i, test_acc1=None, curves=False, sweep="one", sweep_params={"lr": lr, "bs": 128})
        make_run(tmp_path, f"three/{i}", "three", val_acc1=20.0 + i, test_acc1=None, curves=False, sweep="three", sweep_params={"a": i, "b": -i, "c": str(i)})
    trials = sweep_trials(load_study(tmp_path).sweep_runs)
    assert varying_keys(trials["one"]) == ["lr"]  # bs is constant
    line = plot_sweep("one", trials["one"]).axes[0].get_lines()[0]
    assert list(line.get_xdata()) == [0.001, 0.01, 0.1] and list(line.get_ydata()) == [12.0, 11.0, 10.0]
    assert plot_sweep("three", trials["three"]) is None
    build_report(tmp_path)
    md = (tmp_path / "report.md").read_text()
    assert "3 sweep keys vary (a, b, c): shown as a table only." in md
    assert "| 1 | 2 | -2 | 2 | 1 | 22.00 ± — |" in md  # best trial first
    assert (tmp_path / "figures" / "sweep-one.png").is_file() and not (tmp_path / "figures" / "sweep-three.png").exists()


@pytest.mark.parametrize(("values", "scale"), [((1e-3, 1e-2, 1e-1), "log"), ((0.1, 0.3, 0.5), "linear")])
def test_sweep_axis_scale_follows_the_value_span(tmp_path: Path, values: tuple, scale: str) -> None:
    for i, v in enumerate(values):
        make_run(tmp_path, f"t{i}", "s", val_acc1=10.0 + i, test_acc1=None, curves=False, sweep="s", sweep_params={"optim.lr": v})
    (trials,) = sweep_trials(load_study(tmp_path).sweep_runs).values()
    ax = plot_sweep("s", trials).axes[0]
    assert ax.get_xscale() == scale
    assert list(ax.get_lines()[0].get_xdata()) == list(values)


def test_sweep_axis_is_log_when_recorded_log_uniform(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for i, v in enumerate((1e-4, 2e-4, 3e-4)):  # 3×: linear by span, log as sampled
        make_run(tmp_path, f"s/t{i}", "s", val_acc1=10.0 + i, test_acc1=None, curves=False, sweep="s", sweep_params={"optim.lr": v})
    (tmp_path / "study.toml").write_text('[[sweep]]\nname = "s"\n[sweep.space]\n"optim.lr" = { low = 1e-4, high = 3e-4, log = true }\n')
    study = load_study(tmp_path)
    (trials,) = sweep_trials(study.sweep_runs).values()
    assert plot_sweep("s", trials).axes[0].get_xscale() == "linear"
    assert plot_sweep("s", trials, study.sweep_log_keys["s"]).axes[0].get_xscale() == "log"
    from reprlab.report import sections

    scales = []

    def spy(*args, **kwargs):
        fig = plot_sweep(*args, **kwargs)
        scales.append(fig.axes[0].get_xscale())
        return fig

    monkeypatch.setattr(sections, "plot_sweep", spy)
    build_report(tmp_path)  # the build passes the recorded spaces on
    assert scales == ["log"]


def test_scattered_two_key_sweep_has_log_axes_and_exact_points(tmp_path: Path) -> None:
    params = [(1.3e-3, 0.011), (4.1e-3, 0.07), (2.2e-2, 0.031), (8.0e-2, 0.16), (5.5e-3, 0.2)]
    for i, (lr, wd) in enumerate(params):
        make_run(tmp_path, f"t{i}", "tpe", val_acc1=10.0 + i, test_acc1=None, curves=False, sweep="tpe", sweep_params={"optim.lr": lr, "optim.weight_decay": wd})
    (trials,) = sweep_trials(load_study(tmp_path).sweep_runs).values()
    ax = plot_sweep("tpe", trials).axes[0]
    assert not ax.get_images()  # a 5 x 5 grid with 5 of 25 cells filled is not a heat map
    (points,) = [c for c in ax.collections if c.get_gid() == "sweep::tpe"]
    got = sorted(map(tuple, points.get_offsets().tolist()))
    assert got == sorted((wd, lr) for lr, wd in params)
    assert sorted(points.get_array().tolist()) == [10.0, 11.0, 12.0, 13.0, 14.0]
    # lr spans 62× (log), weight decay 18× (log); x = the second key, as in the heat map
    assert (ax.get_xlabel(), ax.get_xscale(), ax.get_ylabel(), ax.get_yscale()) == ("optim.weight_decay", "log", "optim.lr", "log")
    (best,) = [c for c in ax.collections if c.get_gid() == "sweep-best::tpe"]
    assert best.get_offsets().tolist() == [[0.2, 5.5e-3]]


# ------------------------------------------------------------------------------------------
# Self-supervised methods
# ------------------------------------------------------------------------------------------


def test_ssl_figure_one_bar_per_method_with_seed_spread(tmp_path: Path) -> None:
    runs = {}
    for method, accs in (("simclr", [30.0, 31.0, 32.5]), ("byol", [33.0, 34.0]), ("dino", [35.0, 35.5, 37.0]), ("swav", [29.0])):
        runs.update(make_ssl_runs(tmp_path, method, accs))
    runs.update(make_ssl_runs(tmp_path, "supervised", [44.0, 45.0], source="imagenet-supervised"))
    runs.update(make_ssl_runs(tmp_path, "none", [14.0], source="random-init"))
    groups = group_runs(load_study(tmp_path).main_runs)
    fig = plot_ssl_methods(ssl_method_rows(groups), ssl_references(groups))
    ax = fig.axes[0]
    bars = {p.get_gid(): p for p in ax.patches if (p.get_gid() or "").startswith("ssl::")}
    assert sorted(bars) == ["ssl::byol", "ssl::dino", "ssl::simclr", "ssl::swav"]
    assert [t.get_text() for t in ax.get_xticklabels()] == ["byol", "dino", "simclr", "swav"]
    (container,) = [c for c in ax.containers if isinstance(c, BarContainer)]
    whiskers = container.errorbar.lines[2][0].get_segments()
    for (gid, bar), seg in zip(sorted(bars.items(), key=lambda kv: kv[1].get_x()), whiskers):
        values = [r["test"]["acc1"] for r in _results(runs[f"{gid[5:]} / linear-cached"])]
        assert bar.get_height() == pytest.approx(statistics.mean(values))
        std = statistics.stdev(values) if len(values) > 1 else 0.0
        assert [y for _, y in seg] == pytest.approx([statistics.mean(values) - std, statistics.mean(values) + std])
        (dots,) = [l for l in ax.get_lines() if l.get_gid() == f"ssl-seeds::{gid[5:]}"]
        assert list(dots.get_ydata()) == values
    refs = {l.get_gid(): l.get_ydata()[0] for l in ax.get_lines() if (l.get_gid() or "").startswith("ssl-ref::")}
    assert refs == {"ssl-ref::imagenet-supervised / linear-cached": pytest.approx(44.5), "ssl-ref::random-init / linear-cached": pytest.approx(14.0)}


def test_ssl_figure_needs_two_methods(tmp_path: Path) -> None:
    make_ssl_runs(tmp_path, "simclr", [30.0, 31.0], fraction=0.25)
    make_ssl_runs(tmp_path, "simclr", [33.0, 34.0], fraction=1.0)  # two rows, one method
    groups = group_runs(load_study(tmp_path).main_runs)
    assert len(ssl_method_rows(groups)) == 2 and plot_ssl_methods(ssl_method_rows(groups)) is None
