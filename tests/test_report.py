"""Tests for ``reprlab report``: numbers, curves, gains, errors and the HTML in a real browser.

Expected values are computed here from the hand-made run directories (``json`` + ``statistics``),
never through the report module, so an aggregation or formatting slip shows up as a mismatch.
"""

from __future__ import annotations

import argparse
import base64
import html
import importlib.util
import json
import os
import re
import statistics
from pathlib import Path

import numpy as np
import pytest
from matplotlib.figure import Figure

from helpers_rundirs import TRAIN_LOGS_PER_EPOCH, make_run, make_study, write_result
from reprlab.errors import ReprlabError
from reprlab.studies import report as R

REPO = Path(__file__).resolve().parents[1]


def _load_screenshot_module():
    """scripts/ is not a package: import the script from its path."""
    spec = importlib.util.spec_from_file_location("screenshot_report", REPO / "scripts" / "screenshot_report.py")
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


shot = _load_screenshot_module()


def _require_chromium() -> None:
    """Skip without chromium, unless CI demands the browser check (then it is a failure)."""
    if shot.CHROMIUM.is_file():
        return
    if os.environ.get("REPRLAB_REQUIRE_BROWSER", "") not in ("", "0"):
        pytest.fail(f"REPRLAB_REQUIRE_BROWSER is set but {shot.CHROMIUM} is missing (apt-get install chromium)")
    pytest.skip(f"{shot.CHROMIUM} not installed; set REPRLAB_REQUIRE_BROWSER=1 to make this a failure")


@pytest.fixture(scope="module")
def study(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """One full study, report written into the study root (the default out_dir)."""
    root = tmp_path_factory.mktemp("study")
    runs = make_study(root)
    html_path = R.build_report(root)
    return {
        "root": root,
        "runs": runs,
        "html_path": html_path,
        "md": (root / "report.md").read_text(encoding="utf-8"),
        "html": html_path.read_text(encoding="utf-8"),
    }


def _results(run_dirs: list[Path]) -> list[dict]:
    return [json.loads((d / "result.json").read_text()) for d in run_dirs]


def _expected(values: list[float]) -> str:
    """The mean ± std string computed independently (ddof=1; "—" for a single value)."""
    std = f"{statistics.stdev(values):.2f}" if len(values) >= 2 else "—"
    return f"{statistics.mean(values):.2f} ± {std}"


def _md_row(md: str, section: str, first_cell: str) -> str:
    """The Markdown table line of ``section`` whose first cell is ``first_cell``."""
    body = md.split(f"## {section}\n", 1)[1].split("\n## ", 1)[0]
    rows = [l for l in body.splitlines() if l.startswith(f"| {first_cell} |")]
    assert len(rows) == 1, f"expected one row for {first_cell!r} in {section!r}, got {rows}"
    return rows[0]


def _html_row(page: str, section_anchor: str, first_cell: str) -> str:
    body = page.split(f'id="{section_anchor}"', 1)[1].split("<h2", 1)[0]
    rows = [r for r in re.findall(r"<tr>.*?</tr>", body) if r.startswith(f"<tr><td>{html.escape(first_cell)}</td>")]
    assert len(rows) == 1, f"expected one row for {first_cell!r}, got {len(rows)}"
    return rows[0]


# ------------------------------------------------------------------------------------------
# Numbers
# ------------------------------------------------------------------------------------------


def test_summary_shows_exact_mean_std_per_group(study: dict) -> None:
    evaluated = {g: d for g, d in study["runs"].items() if g not in ("vit-search",)}
    assert len(evaluated) >= 7
    for group, dirs in evaluated.items():
        results = [r for r in _results(dirs) if r["status"] == "complete"]
        md_row = _md_row(study["md"], "Summary per group", group)
        html_row = _html_row(study["html"], "summary-per-group", group)
        for split, key in (("val", "acc1"), ("test", "acc1"), ("test", "acc5")):
            values = [r[split][key] for r in results if split in r]
            text = _expected(values) if values else "—"
            assert f"| {text} |" in md_row, (group, split, key, text, md_row)
            assert f'<td class="num">{text}</td>' in html_row, (group, split, key, text)
        assert f"| {len(results)} |" in md_row
        for d in dirs:
            rel = d.relative_to(study["root"]).as_posix()
            if json.loads((d / "result.json").read_text())["status"] == "complete":
                # Traceability: the run directory and its config.toml are linked from the row.
                assert f"]({rel}/)" in md_row and f"]({rel}/config.toml)" in md_row
                assert f'href="{rel}/config.toml"' in html_row


def test_known_values_and_single_seed_dash(study: dict) -> None:
    # The hand-made numbers themselves, so the helper cannot drift from the stated scenario.
    assert "| 30.00 ± 1.00 |" in _md_row(study["md"], "Summary per group", "Scratch / resnet18")
    assert "| 35.00 ± 0.71 |" in _md_row(study["md"], "Summary per group", "SimCLR (TIN 100%) / linear")
    assert "| 52.30 ± — |" in _md_row(study["md"], "Summary per group", "ImageNet-supervised / finetune")


def test_gains_over_scratch_table(study: dict) -> None:
    row = _md_row(study["md"], "Gains over scratch", "SimCLR (TIN 100%) / linear")
    assert "| +5.0 |" in row and "| +16.7 % |" in row
    row = _md_row(study["md"], "Gains over scratch", "SimCLR (TIN 25%) / linear")
    assert "| -2.0 |" in row and "| -6.7 % |" in row
    html_row = _html_row(study["html"], "gains-over-scratch", "SimCLR (TIN 100%) / linear")
    assert '<td class="num">+5.0</td>' in html_row and '<td class="num">+16.7 %</td>' in html_row

    groups = R.group_runs(R.load_study(study["root"]).main_runs)
    baseline, gains, _ = R.gains_over_scratch(groups)
    # The pretraining group also has backbone_source "scratch" but is not an evaluation.
    assert baseline is not None and baseline.name == "Scratch / resnet18"
    simclr = next(g for g in gains if g.group.name == "SimCLR (TIN 100%) / linear")
    assert simclr.points == pytest.approx(5.0)
    assert simclr.relative == pytest.approx(100 * 5.0 / 30.0)
    assert "Scratch / resnet18" not in [g.group.name for g in gains]


def test_baseline_prefers_scratch_protocol(tmp_path: Path) -> None:
    make_run(tmp_path, "a", "A scratch probe", test_acc1=10.0, curves=False, backbone_source="scratch", protocol="linear-cached")
    make_run(tmp_path, "b", "B scratch", test_acc1=20.0, curves=False, backbone_source="scratch", protocol="scratch", task="train")
    baseline, gains, _ = R.gains_over_scratch(R.group_runs(R.load_study(tmp_path).main_runs))
    assert baseline is not None and baseline.name == "B scratch"
    assert [g.points for g in gains] == [pytest.approx(-10.0)]


# ------------------------------------------------------------------------------------------
# Curves
# ------------------------------------------------------------------------------------------


def _count_lines_with(path: Path, key: str) -> int:
    lines = [json.loads(l) for l in path.read_text().splitlines() if l.strip()]
    return sum(1 for l in lines if l.get(key) is not None and l.get("epoch") is not None)


def test_curve_series_has_every_logged_point(study: dict) -> None:
    run = study["runs"]["Scratch / resnet18"][0]
    epochs = 5
    assert R.curve_series(run, "val/acc1")[0] == [1.0, 2.0, 3.0, 4.0, 5.0]
    for key, n in (("train/acc1", epochs * TRAIN_LOGS_PER_EPOCH), ("lr", epochs * TRAIN_LOGS_PER_EPOCH), ("val/loss", epochs), ("test/acc1", 1)):
        xs, ys = R.curve_series(run, key)
        assert len(xs) == len(ys) == n == _count_lines_with(run / "metrics.jsonl", key), key
    pretrain = study["runs"]["SimCLR pretrain (TIN 100%)"][0]
    assert len(R.curve_series(pretrain, "knn/acc1")[0]) == 4  # epochs=4 for the pretraining run
    assert R.curve_series(pretrain, "val/acc1") == ([], [])


def test_plotted_lines_are_the_logged_series(study: dict) -> None:
    groups = {g.name: g for g in R.group_runs(R.load_study(study["root"]).main_runs)}
    for name, keys in (
        ("Scratch / resnet18", ("lr", "train/acc1", "val/acc1", "test/acc1", "train/loss", "val/loss")),
        ("SimCLR pretrain (TIN 100%)", ("lr", "train/loss", "knn/acc1")),
    ):
        group = groups[name]
        fig = R.plot_group_curves(group)
        assert fig is not None
        lines = {l.get_gid(): l for ax in fig.axes for l in ax.get_lines()}
        assert len(lines) == len(keys) * len(group.runs)  # nothing extra, nothing missing
        for run in group.runs:
            for key in keys:
                xs, ys = R.curve_series(run.dir, key)
                line = lines[f"{run.name}::{key}"]
                assert len(line.get_xdata()) == _count_lines_with(run.metrics_path, key)
                np.testing.assert_array_equal(line.get_xdata(), xs)
                np.testing.assert_array_equal(line.get_ydata(), ys)
        titles = {ax.get_title() for ax in fig.axes}
        assert ("kNN top-1 accuracy" in titles) == (name.startswith("SimCLR pretrain"))
        assert all(ax.get_xlabel() == "epoch" for ax in fig.axes)


def test_curve_series_absent_null_and_epochless_points(tmp_path: Path) -> None:
    lines = [
        {"step": 1, "epoch": 0.5, "train/loss": 2.0},
        {"step": 2, "epoch": 1.0, "val/acc1": 3.0},
        {"step": 3, "epoch": 1.5, "train/loss": None},  # null = not measured
        {"step": 4, "train/loss": 1.0},  # no epoch: cannot be placed on the epoch axis
        {"step": 5, "epoch": 2.0, "train/loss": 0.5},
    ]
    (tmp_path / "metrics.jsonl").write_text("\n".join(json.dumps(l) for l in lines) + "\n")
    assert R.curve_series(tmp_path, "train/loss") == ([0.5, 2.0], [2.0, 0.5])
    assert R.curve_series(tmp_path, "train/loss", x="step") == ([1.0, 4.0, 5.0], [2.0, 1.0, 0.5])


def test_bar_chart_and_fraction_data(study: dict) -> None:
    groups = R.group_runs(R.load_study(study["root"]).main_runs)
    fig = R.plot_test_acc1_bars(groups)
    ax = fig.axes[0]
    with_test = [g for g in groups if g.stat("test").n]
    heights = [p.get_width() for p in ax.patches if p.get_width() > 0]
    expected = [statistics.mean(r["test"]["acc1"] for r in _results(study["runs"][g.name]) if "test" in r) for g in with_test]
    assert heights == pytest.approx(expected)
    assert ax.get_xlabel().startswith("test acc1")

    fig = R.plot_fraction_curve(groups)
    (line,) = [l for l in fig.axes[0].get_lines() if l.get_gid() == "fraction::simclr / linear-cached"]
    assert list(line.get_xdata()) == [0.25, 0.5, 1.0]
    assert list(line.get_ydata()) == pytest.approx([28.0, 31.5, 35.0])
    refs = {t.get_text().split(":")[0] for t in fig.axes[0].get_legend().get_texts()}
    assert {"Scratch / resnet18", "ImageNet-supervised / linear"} <= refs


# ------------------------------------------------------------------------------------------
# Sweeps, files, incomplete runs
# ------------------------------------------------------------------------------------------


def test_sweep_heatmap_values(study: dict) -> None:
    trials = R.sweep_trials(R.load_study(study["root"]).sweep_runs)["vit-search"]
    fig = R.plot_sweep("vit-search", trials)
    (im,) = fig.axes[0].get_images()
    # rows: optim.lr (1e-3, 3e-3), cols: optim.weight_decay (0.05, 0.1); mean over seeds 0/1.
    expected = [[statistics.mean(round(30 + 1000 * lr + 10 * wd + s * 0.5, 3) for s in (0, 1)) for wd in (0.05, 0.1)] for lr in (1e-3, 3e-3)]
    np.testing.assert_allclose(np.asarray(im.get_array()), expected)
    assert fig.axes[0].get_xlabel() == "optim.weight_decay" and fig.axes[0].get_ylabel() == "optim.lr"
    assert "| 1 | 0.003 | 0.1 | 2 | 34.25 ± 0.35 |" in study["md"]


def test_sweep_one_and_three_keys(tmp_path: Path) -> None:
    for i, lr in enumerate((0.1, 0.01, 0.001)):
        make_run(tmp_path, f"one/{i}", "one", val_acc1=10.0 + i, test_acc1=None, curves=False, sweep="one", sweep_params={"lr": lr, "bs": 128})
        make_run(tmp_path, f"three/{i}", "three", val_acc1=20.0 + i, test_acc1=None, curves=False, sweep="three", sweep_params={"a": i, "b": -i, "c": str(i)})
    trials = R.sweep_trials(R.load_study(tmp_path).sweep_runs)
    assert R.varying_keys(trials["one"]) == ["lr"]  # bs is constant
    line = R.plot_sweep("one", trials["one"]).axes[0].get_lines()[0]
    assert list(line.get_xdata()) == [0.001, 0.01, 0.1] and list(line.get_ydata()) == [12.0, 11.0, 10.0]
    assert R.plot_sweep("three", trials["three"]) is None
    R.build_report(tmp_path)
    md = (tmp_path / "report.md").read_text()
    assert "3 sweep keys vary (a, b, c): shown as a table only." in md
    assert "| 1 | 2 | -2 | 2 | 1 | 22.00 ± — |" in md  # best trial first
    assert (tmp_path / "figures" / "sweep-one.png").is_file() and not (tmp_path / "figures" / "sweep-three.png").exists()


def test_figures_written_and_html_self_contained(study: dict) -> None:
    fig_dir = study["root"] / "figures"
    referenced = re.findall(r"\]\((figures/[^)]+\.png)\)", study["md"])
    stems = {Path(p).stem for p in referenced}
    assert {"test-acc1-bars", "pretrain-fraction", "cnn-vs-vit", "sweep-vit-search", "curves-scratch-resnet18"} <= stems
    for stem in stems:
        assert (fig_dir / f"{stem}.png").stat().st_size > 1000
        assert (fig_dir / f"{stem}.svg").read_text().lstrip().startswith("<?xml")
    srcs = re.findall(r'<img[^>]*\ssrc="([^"]*)"', study["html"])
    assert len(srcs) == len(stems)
    assert all(s.startswith("data:image/png;base64,") for s in srcs)
    assert "<link" not in study["html"] and "<script" not in study["html"]  # nothing external
    # Groups without any logged curve get a note instead of an empty figure.
    assert "No figure: no curves logged for 'ImageNet-supervised / linear'." in study["md"]


def test_missing_data_skips_figures_with_note(tmp_path: Path) -> None:
    make_run(tmp_path, "s0", "only scratch", test_acc1=30.0, curves=False, backbone_source="scratch", task="train")
    fig_dir = tmp_path / "figures"
    fig_dir.mkdir()
    (fig_dir / "cnn-vs-vit.png").write_bytes(b"stale")  # from an earlier build with more data
    (fig_dir / "mine.png").write_bytes(b"user file")
    R.build_report(tmp_path)
    md = (tmp_path / "report.md").read_text()
    assert "No figure: no evaluated run has a pretraining fraction." in md
    assert "No figure: no group with a model family (cnn/vit) and a test accuracy." in md
    assert sorted(p.name for p in fig_dir.iterdir()) == ["mine.png", "test-acc1-bars.png", "test-acc1-bars.svg"]


def test_incomplete_and_missing_runs_listed(study: dict) -> None:
    section = study["md"].split("## Incomplete and missing runs\n", 1)[1].split("\n## ", 1)[0]
    assert "| [vit/s2-crashed](vit/s2-crashed/) | failed | train | ViT-S/4 scratch | 2 |" in section
    assert "| [vit/s3-running](vit/s3-running/) | no result.json |" in section
    assert "| ViT-S/4 scratch | train | 0, 1 | 2 |" in section
    # The failed run is not averaged into its group.
    assert "| 2 |" in _md_row(study["md"], "Summary per group", "ViT-S/4 scratch")


# ------------------------------------------------------------------------------------------
# Bad input
# ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("content", "needle"),
    [
        ('{"run": "x", "status": "complete", ', "not valid JSON"),
        ("[1, 2]", "expected a JSON object"),
        ('{"run": "x", "status": "complete", "task": "train", "group": "g"}', "missing required key 'seed'"),
        ('{"run": "x", "status": "complete", "task": "train", "group": "g", "seed": "0"}', "key 'seed' must be an integer"),
        ('{"run": "x", "status": "complete", "task": "train", "group": "g", "seed": 0, "test": {"acc1": "high"}}', "'test.acc1' must be a number"),
    ],
)
def test_malformed_result_json_names_file(tmp_path: Path, content: str, needle: str) -> None:
    make_run(tmp_path, "good", "g", curves=False)
    bad = tmp_path / "bad" / "run"
    bad.mkdir(parents=True)
    (bad / "result.json").write_text(content)
    with pytest.raises(ReprlabError) as exc:
        R.build_report(tmp_path)
    msg = str(exc.value)
    assert str(bad / "result.json") in msg and needle in msg and "\n" not in msg


def test_malformed_metrics_line_names_file_and_line(tmp_path: Path) -> None:
    run = make_run(tmp_path, "r", "g", epochs=2)
    with open(run / "metrics.jsonl", "a") as f:
        f.write('{"step": 99, "epoch": 3.0, "val/acc1": oops}\n')
    n = len((run / "metrics.jsonl").read_text().splitlines())
    with pytest.raises(ReprlabError, match=re.escape(f"{run / 'metrics.jsonl'}:{n}: not valid JSON")):
        R.build_report(tmp_path)
    write_result(run, {"run": "r", "status": "complete", "task": "probe", "group": "g", "seed": 0})
    (run / "metrics.jsonl").write_text('{"step": 1, "epoch": 1.0, "val/acc1": "41%"}\n')
    with pytest.raises(ReprlabError, match=r"metrics\.jsonl:1: key 'val/acc1' must be a number"):
        R.build_report(tmp_path)


def test_missing_root_and_empty_root(tmp_path: Path) -> None:
    with pytest.raises(ReprlabError, match="does not exist"):
        R.build_report(tmp_path / "nope")
    with pytest.raises(ReprlabError, match="no run directories found"):
        R.build_report(tmp_path)


# ------------------------------------------------------------------------------------------
# CLI plug-in
# ------------------------------------------------------------------------------------------


def test_cli_plugin_writes_into_out(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from reprlab.commands import report as cmd

    make_run(tmp_path / "study", "a/s0", "A", seed=0, test_acc1=40.0, curves=False)
    make_run(tmp_path / "study", "a/s1", "A", seed=1, test_acc1=42.0, curves=False)
    parser = argparse.ArgumentParser()
    cmd.add_arguments(parser)
    args = parser.parse_args([str(tmp_path / "study"), "--out", str(tmp_path / "out")])
    assert cmd.NAME == "report" and cmd.HELP
    assert cmd.run(args) == 0
    md = (tmp_path / "out" / "report.md").read_text()
    assert "| 41.00 ± 1.41 |" in md
    assert "](../study/a/s0/config.toml)" in md  # links stay valid from another out dir
    assert "report.html" in capsys.readouterr().out


# ------------------------------------------------------------------------------------------
# Real browser
# ------------------------------------------------------------------------------------------


def test_html_images_load_in_chromium(study: dict) -> None:
    _require_chromium()
    loaded, total = shot.check_images_loaded(study["html_path"])
    assert total == study["html"].count("<img ") and total >= 1
    assert loaded == total


def test_image_check_detects_a_broken_image(tmp_path: Path) -> None:
    _require_chromium()
    fig = Figure(figsize=(1, 1))
    fig.savefig(tmp_path / "ok.png", dpi=20)
    data = base64.b64encode((tmp_path / "ok.png").read_bytes()).decode()
    page = tmp_path / "page.html"
    page.write_text(
        f'<!doctype html><html><head></head><body><img src="data:image/png;base64,{data}">'
        '<img src="ok.png"><img src="missing.png"><img src="data:image/png;base64,AAAA"></body></html>'
    )
    # The relative file resolves against the page's folder; the missing and corrupt ones fail.
    assert shot.check_images_loaded(page) == (2, 4)


def test_screenshot_writes_png(study: dict, tmp_path: Path) -> None:
    _require_chromium()
    out = shot.screenshot(study["html_path"], tmp_path / "shot.png", height=1200)
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_imagenet_probes_at_two_resolutions_are_references_not_one_pooled_point(tmp_path: Path) -> None:
    # ImageNet probes: fraction None as the writers fill it now, 1.0 as older result files had it
    # (the ImageNet set is not the pretraining set whose fraction varies)
    from reprlab.studies.report import fraction_lines, group_runs, load_study

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
    baseline, gains, _ = R.gains_over_scratch(R.group_runs(R.load_study(tmp_path).main_runs))
    assert baseline is not None and baseline.name == "scratch"
    assert [(g.group.name, g.points) for g in gains] == [("SimCLR / linear", pytest.approx(6.0))]


def test_fraction_references_leave_out_the_cnn_vs_vit_runs(tmp_path: Path) -> None:
    from reprlab.studies.report import fraction_lines, group_runs, load_study

    make_run(tmp_path, "cnn", "CNN (CutMix recipe)", test_acc1=6.0, curves=False, backbone_source="scratch", protocol="scratch", task="train", family="cnn", fraction=None)
    make_run(tmp_path, "scratch", "scratch", test_acc1=10.0, curves=False, backbone_source="scratch", protocol="scratch", task="train", family=None, fraction=None)
    make_run(tmp_path, "probe", "SimCLR / linear", test_acc1=16.0, curves=False, backbone_source="simclr", protocol="linear-cached", family=None, fraction=0.2)
    lines, refs = fraction_lines(group_runs(load_study(tmp_path).runs))
    assert [g.name for g in refs] == ["scratch"] and len(lines) == 1
