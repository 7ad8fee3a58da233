"""Tests for ``reprlab.report.tables``: groups, baselines, fraction lines, SSL method rows, axis scales."""

from __future__ import annotations

import statistics
from pathlib import Path

import pytest

from helpers_rundirs import make_run, make_ssl_runs
from helpers_rundirs import read_results as _results
from reprlab.report.load import load_study
from reprlab.report.tables import (
    axis_scale,
    fraction_lines,
    gains_over_scratch,
    group_runs,
    ssl_method_rows,
    ssl_references,
    sweep_kind,
    sweep_trials,
)


def test_baseline_prefers_scratch_protocol(tmp_path: Path) -> None:
    make_run(tmp_path, "a", "A scratch probe", test_acc1=10.0, curves=False, backbone_source="scratch", protocol="linear-cached")
    make_run(tmp_path, "b", "B scratch", test_acc1=20.0, curves=False, backbone_source="scratch", protocol="scratch", task="train")
    baseline, gains, _ = gains_over_scratch(group_runs(load_study(tmp_path).main_runs))
    assert baseline is not None and baseline.name == "B scratch"
    assert [g.points for g in gains] == [pytest.approx(-10.0)]


def test_imagenet_probes_at_two_resolutions_are_references_not_one_pooled_point(tmp_path: Path) -> None:
    # ImageNet probes: fraction None as the writers fill it now, 1.0 as older result files had it
    # (the ImageNet set is not the pretraining set whose fraction varies)
    for seed, (res, acc) in enumerate([(224, 60.0), (224, 61.0), (32, 30.0), (32, 31.0)]):
        make_run(tmp_path, f"in{res}-s{seed}", f"ImageNet @{res}", seed % 2, 50.0, acc, task="probe", protocol="linear-cached",
                 backbone_source="imagenet-supervised", method="supervised", dataset="imagenet-1k", fraction=1.0 if res == 224 else None,
                 resolution=res, family=None)
    for seed in (0, 1):
        make_run(tmp_path, f"ssl-s{seed}", "SimCLR 25%", seed, 40.0, 35.0 + seed, task="probe", protocol="linear-cached",
                 backbone_source="simclr", method="simclr", dataset="tiny-imagenet", fraction=0.25, resolution=32, family=None)
    lines, refs = fraction_lines(group_runs(load_study(tmp_path).runs))
    assert sorted(g.name for g in refs) == ["ImageNet @224", "ImageNet @32"]
    assert [sorted(line.points) for line in lines] == [[0.25]]
    assert all(g.common("backbone_source") == "simclr" for line in lines for gs in line.points.values() for g in gs)


def test_gains_use_the_task1_scratch_baseline_not_the_cnn_vs_vit_runs(tmp_path: Path) -> None:
    make_run(tmp_path, "cnn", "CNN (CutMix recipe)", test_acc1=6.0, curves=False, backbone_source="scratch", protocol="scratch", task="train", family="cnn")
    make_run(tmp_path, "vit", "ViT (CutMix recipe)", test_acc1=4.0, curves=False, backbone_source="scratch", protocol="scratch", task="train", family="vit")
    make_run(tmp_path, "scratch", "scratch", test_acc1=10.0, curves=False, backbone_source="scratch", protocol="scratch", task="train", family=None)
    make_run(tmp_path, "probe", "SimCLR / linear", test_acc1=16.0, curves=False, backbone_source="simclr", protocol="linear-cached", family=None)
    baseline, gains, _ = gains_over_scratch(group_runs(load_study(tmp_path).main_runs))
    assert baseline is not None and baseline.name == "scratch"
    assert [(g.group.name, g.points) for g in gains] == [("SimCLR / linear", pytest.approx(6.0))]


def test_fraction_references_leave_out_the_cnn_vs_vit_runs(tmp_path: Path) -> None:
    make_run(tmp_path, "cnn", "CNN (CutMix recipe)", test_acc1=6.0, curves=False, backbone_source="scratch", protocol="scratch", task="train", family="cnn", fraction=None)
    make_run(tmp_path, "scratch", "scratch", test_acc1=10.0, curves=False, backbone_source="scratch", protocol="scratch", task="train", family=None, fraction=None)
    make_run(tmp_path, "probe", "SimCLR / linear", test_acc1=16.0, curves=False, backbone_source="simclr", protocol="linear-cached", family=None, fraction=0.2)
    lines, refs = fraction_lines(group_runs(load_study(tmp_path).runs))
    assert [g.name for g in refs] == ["scratch"] and len(lines) == 1


# ------------------------------------------------------------------------------------------
# Self-supervised methods
# ------------------------------------------------------------------------------------------


def test_ssl_method_rows_give_exactly_their_numbers(tmp_path: Path) -> None:
    runs = {}
    runs.update(make_ssl_runs(tmp_path, "simclr", [30.0, 31.0, 32.5], finetune_head=[40.0, 41.0], finetune_full=[50.0, 52.0, 53.0]))
    runs.update(make_ssl_runs(tmp_path, "vicreg", [28.0, 29.5]))
    runs.update(make_ssl_runs(tmp_path, "barlow_twins", [27.25]))
    runs.update(make_ssl_runs(tmp_path, "supervised", [44.0, 45.0], source="imagenet-supervised"))
    runs.update(make_ssl_runs(tmp_path, "none", [14.0, 15.0], source="random-init"))
    runs.update(make_ssl_runs(tmp_path, "supervised", [33.0], source="supervised-pretrain"))
    make_run(tmp_path, "scratch", "scratch", test_acc1=20.0, curves=False, task="train", backbone_source="scratch", method="supervised", protocol="scratch")
    groups = group_runs(load_study(tmp_path).main_runs)
    rows = ssl_method_rows(groups)
    assert [r.label for r in rows] == ["barlow_twins", "simclr", "vicreg"]  # references are not methods
    for row in rows:
        for protocol in ("linear-cached", "finetune-head", "finetune-full"):
            values = [r["test"]["acc1"] for r in _results(runs.get(f"{row.method} / {protocol}", []))]
            st = row.stat(protocol)
            assert st.values == tuple(values)
            if values:
                assert st.mean == pytest.approx(statistics.mean(values))
            assert st.std == (pytest.approx(statistics.stdev(values)) if len(values) > 1 else None)
    assert rows[1].seeds == [0, 1, 2]
    assert sorted(g.name for g in ssl_references(groups)) == [
        "imagenet-supervised / linear-cached", "random-init / linear-cached", "supervised-pretrain / linear-cached"]


def test_ssl_rows_keep_settings_apart(tmp_path: Path) -> None:
    make_ssl_runs(tmp_path, "simclr", [20.0, 21.0], fraction=0.25)
    make_ssl_runs(tmp_path, "simclr", [30.0, 31.0], fraction=1.0)
    make_ssl_runs(tmp_path, "byol", [32.0, 33.0], fraction=1.0)
    rows = ssl_method_rows(group_runs(load_study(tmp_path).main_runs))
    assert [(r.label, r.stat().mean) for r in rows] == [("byol (100%)", 32.5), ("simclr (25%)", 20.5), ("simclr (100%)", 30.5)]


# ------------------------------------------------------------------------------------------
# Sweeps
# ------------------------------------------------------------------------------------------


def test_axis_scale_log_for_wide_or_log_sampled_ranges() -> None:
    assert axis_scale([1e-3, 3e-3, 1e-2, 1e-1]) == "log"  # learning rate over 100×
    assert axis_scale([0.1, 0.2, 0.5]) == "linear"  # 5×
    assert axis_scale([0.05, 0.5]) == "log"  # exactly 10×
    assert axis_scale([1e-4, 3e-4], log_sampled=True) == "log"  # recorded log-uniform sampling
    assert axis_scale([0.0, 0.1, 0.2], log_sampled=True) == "linear"  # zero has no log
    assert axis_scale([-1.0, 10.0]) == "linear" and axis_scale(["a", "b"]) == "linear" and axis_scale([]) == "linear"


def test_sweep_kind_grid_or_scattered(tmp_path: Path) -> None:
    for i, (lr, wd) in enumerate([(1e-3, 0.05), (1e-3, 0.1), (1e-2, 0.05), (1e-2, 0.1)]):
        make_run(tmp_path, f"grid/{i}", "grid", val_acc1=10.0 + i, test_acc1=None, curves=False, sweep="grid", sweep_params={"lr": lr, "wd": wd})
    for i, (lr, wd) in enumerate([(1.3e-3, 0.011), (4.1e-3, 0.07), (2.2e-2, 0.031), (8.0e-2, 0.16), (5.5e-3, 0.2)]):
        make_run(tmp_path, f"tpe/{i}", "tpe", val_acc1=10.0 + i, test_acc1=None, curves=False, sweep="tpe", sweep_params={"lr": lr, "wd": wd})
    trials = sweep_trials(load_study(tmp_path).sweep_runs)
    assert sweep_kind(trials["grid"]) == "heatmap" and sweep_kind(trials["tpe"]) == "scatter"
