"""Tests for ``reprlab.report.build`` and ``reprlab report``: the written report.md / report.html,
its numbers, figures, left-out runs, the CLI plug-in and the HTML in a real browser.

Expected values are computed here from the hand-made run directories (``json`` + ``statistics``),
never through the report package, so an aggregation or formatting slip shows up as a mismatch.
"""

from __future__ import annotations

import argparse
import base64
import importlib.util
import json
import os
import re
import statistics
from pathlib import Path

import numpy as np
import pytest
from matplotlib.figure import Figure

from helpers_rundirs import expected_stat as _expected
from helpers_rundirs import html_row as _html_row
from helpers_rundirs import make_run, make_ssl_runs, make_study, md_section, write_result
from helpers_rundirs import md_row as _md_row
from helpers_rundirs import read_results as _results
from reprlab.errors import ReprlabError
from reprlab.report.build import build_report
from reprlab.report.load import load_study
from reprlab.report.plots import plot_sweep
from reprlab.report.tables import gains_over_scratch, group_runs, sweep_trials

REPO = Path(__file__).resolve().parents[2]


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
    html_path = build_report(root)
    return {
        "root": root,
        "runs": runs,
        "html_path": html_path,
        "md": (root / "report.md").read_text(encoding="utf-8"),
        "html": html_path.read_text(encoding="utf-8"),
    }


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

    groups = group_runs(load_study(study["root"]).main_runs)
    baseline, gains, _ = gains_over_scratch(groups)
    # The pretraining group also has backbone_source "scratch" but is not an evaluation.
    assert baseline is not None and baseline.name == "Scratch / resnet18"
    simclr = next(g for g in gains if g.group.name == "SimCLR (TIN 100%) / linear")
    assert simclr.points == pytest.approx(5.0)
    assert simclr.relative == pytest.approx(100 * 5.0 / 30.0)
    assert "Scratch / resnet18" not in [g.group.name for g in gains]


# ------------------------------------------------------------------------------------------
# Sweeps, files, incomplete runs
# ------------------------------------------------------------------------------------------


def test_sweep_heatmap_values(study: dict) -> None:
    trials = sweep_trials(load_study(study["root"]).sweep_runs)["vit-search"]
    fig = plot_sweep("vit-search", trials)
    (im,) = fig.axes[0].get_images()
    # rows: optim.lr (1e-3, 3e-3), cols: optim.weight_decay (0.05, 0.1); mean over seeds 0/1.
    expected = [[statistics.mean(round(30 + 1000 * lr + 10 * wd + s * 0.5, 3) for s in (0, 1)) for wd in (0.05, 0.1)] for lr in (1e-3, 3e-3)]
    np.testing.assert_allclose(np.asarray(im.get_array()), expected)
    assert fig.axes[0].get_xlabel() == "optim.weight_decay" and fig.axes[0].get_ylabel() == "optim.lr"
    assert "| 1 | 0.003 | 0.1 | 2 | 34.25 ± 0.35 |" in study["md"]


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
    (fig_dir / "ssl-methods.svg").write_bytes(b"stale")
    (fig_dir / "mine.png").write_bytes(b"user file")
    build_report(tmp_path)
    md = (tmp_path / "report.md").read_text()
    assert "No figure: no evaluated run has a pretraining fraction." in md
    assert "No figure: no group with a model family (cnn/vit) and a test accuracy." in md
    assert "## Self-supervised methods" not in md  # fewer than two SSL methods: no section at all
    assert sorted(p.name for p in fig_dir.iterdir()) == ["mine.png", "test-acc1-bars.png", "test-acc1-bars.svg"]


def test_incomplete_and_missing_runs_listed(study: dict) -> None:
    section = study["md"].split("## Incomplete and missing runs\n", 1)[1].split("\n## ", 1)[0]
    assert "| [vit/s2-crashed](vit/s2-crashed/) | failed | train | ViT-S/4 scratch | 2 |" in section
    assert "| [vit/s3-running](vit/s3-running/) | no result.json |" in section
    assert "| ViT-S/4 scratch | train | 0, 1 | 2 |" in section
    # The failed run is not averaged into its group.
    assert "| 2 |" in _md_row(study["md"], "Summary per group", "ViT-S/4 scratch")
    # ... and it is listed under "Failed runs", here without a recorded error.
    assert "### Failed runs" in section
    assert "| [vit/s2-crashed](vit/s2-crashed/) | train | ViT-S/4 scratch | 2 | (no error recorded) |" in section


# ------------------------------------------------------------------------------------------
# Bad input: the report goes on and lists the bad run directory with its reason
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
def test_malformed_result_json_is_listed_and_the_rest_reported(tmp_path: Path, content: str, needle: str) -> None:
    make_run(tmp_path, "good", "g", test_acc1=39.0, curves=False)
    bad = tmp_path / "bad" / "run"
    bad.mkdir(parents=True)
    (bad / "result.json").write_text(content)
    build_report(tmp_path)
    md = (tmp_path / "report.md").read_text()
    assert "| 39.00 ± — |" in _md_row(md, "Summary per group", "g")  # the good run is reported
    (row,) = [l for l in md_section(md, "Unreadable run directories").splitlines() if l.startswith("| [bad/run](bad/run/) |")]
    # the one-line reason, with the study root left out of its path
    assert "| `bad/run/result.json: " in row and needle in row
    assert "1 run directory could not be read and is left out" in md_section(md, "Warnings")
    html = (tmp_path / "report.html").read_text()
    assert 'id="unreadable-run-directories"' in html and needle.replace("'", "&#x27;") in html


def test_malformed_metrics_line_is_listed_with_file_and_line(tmp_path: Path) -> None:
    make_run(tmp_path, "other", "h", test_acc1=20.0, curves=False)
    run = make_run(tmp_path, "r", "g", epochs=2)
    with open(run / "metrics.jsonl", "a") as f:
        f.write('{"step": 99, "epoch": 3.0, "val/acc1": oops}\n')
    n = len((run / "metrics.jsonl").read_text().splitlines())
    build_report(tmp_path)
    md = (tmp_path / "report.md").read_text()
    section = md_section(md, "Unreadable run directories")
    assert f"| [r](r/) | `r/metrics.jsonl:{n}: not valid JSON" in section
    assert "| g |" not in md_section(md, "Summary per group") and "| h |" in md_section(md, "Summary per group")
    write_result(run, {"run": "r", "status": "complete", "task": "probe", "group": "g", "seed": 0})
    (run / "metrics.jsonl").write_text('{"step": 1, "epoch": 1.0, "val/acc1": "41%"}\n')
    build_report(tmp_path)
    assert re.search(r"r/metrics\.jsonl:1: key 'val/acc1' must be a number", (tmp_path / "report.md").read_text())


def test_missing_root_and_empty_root(tmp_path: Path) -> None:
    with pytest.raises(ReprlabError, match="does not exist"):
        build_report(tmp_path / "nope")
    with pytest.raises(ReprlabError, match="no run directories found"):
        build_report(tmp_path)


def test_failed_record_with_error_and_stale_runs(tmp_path: Path) -> None:
    make_run(tmp_path, "a/s0", "A", seed=0, test_acc1=40.0, curves=False)
    make_run(tmp_path, "a/s1", "A", seed=1, test_acc1=42.0, curves=False)
    make_run(tmp_path, "a/s2", "A", seed=2, test_acc1=90.0, curves=False, stale=True)  # outdated: not averaged
    crashed = tmp_path / "a" / "s3"
    crashed.mkdir()
    # a failed-run record needs no group or seed; its error is one line
    write_result(crashed, {"run": "a-s3", "status": "failed", "error": "non-finite loss at step 120"})
    build_report(tmp_path)
    md = (tmp_path / "report.md").read_text()
    assert "| 41.00 ± 1.41 |" in _md_row(md, "Summary per group", "A")
    section = md_section(md, "Incomplete and missing runs")
    assert "| [a/s3](a/s3/) | — | — | — | non-finite loss at step 120 | (no config.toml) |" in section
    assert "### Stale runs" in section and "| [a/s2](a/s2/) | probe | A | 2 | 90.00 |" in section
    assert "[a/s2]" not in md_section(md, "All complete runs")
    assert "1 stale" in md.split("\n## ", 1)[0]  # counted in the opening paragraph


# ------------------------------------------------------------------------------------------
# Features: kNN accuracy of pretraining runs, self-supervised methods compared
# ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("spelling", ["knn_acc1", "acc1"])
def test_pretraining_knn_is_shown_as_knn_in_both_spellings(tmp_path: Path, spelling: str) -> None:
    for seed, knn in enumerate((13.5, 14.5)):
        make_run(tmp_path, f"pre/s{seed}", "SimCLR pretrain", seed, None, None, task="pretrain", curves=False, method="simclr",
                 backbone_source="simclr", protocol="pretrain", val={spelling: knn}, best_checkpoint={"step": 10, "metric": "knn/acc1"})
    make_run(tmp_path, "sup", "supervised pretrain", 0, 8.7, None, task="pretrain", curves=False, method="supervised", protocol="pretrain",
             best_checkpoint={"step": 10, "metric": "val/acc1"})
    build_report(tmp_path)
    md = (tmp_path / "report.md").read_text()
    header = next(l for l in md_section(md, "Summary per group").splitlines() if l.startswith("| Group |"))
    cells = [c.strip() for c in header.strip("|").split("|")]
    row = [c.strip() for c in _md_row(md, "Summary per group", "SimCLR pretrain").strip("|").split("|")]
    assert row[cells.index("Val kNN acc1")] == "14.00 ± 0.71" and row[cells.index("Val acc1")] == "—"
    sup = [c.strip() for c in _md_row(md, "Summary per group", "supervised pretrain").strip("|").split("|")]
    assert sup[cells.index("Val acc1")] == "8.70 ± —" and sup[cells.index("Val kNN acc1")] == "—"


def test_ssl_method_section_rows_and_figure(tmp_path: Path) -> None:
    simclr = make_ssl_runs(tmp_path, "simclr", [30.0, 31.0, 32.5], finetune_full=[50.0, 52.0])
    byol = make_ssl_runs(tmp_path, "byol", [33.0, 34.0, 35.5])
    make_ssl_runs(tmp_path, "none", [14.0, 15.0], source="random-init")
    build_report(tmp_path)
    md = (tmp_path / "report.md").read_text()
    section = md_section(md, "Self-supervised methods")
    header = next(l for l in section.splitlines() if l.startswith("| Method |"))
    assert header.startswith("| Method | Seeds | Probe (cached) test acc1 | Full fine-tune test acc1 | Published top-1 | Our pretraining / theirs | "
                             "Pretraining budget (done of recipe) | Runs |")  # no kNN / online columns: no pretraining run here
    for method, runs in (("simclr", simclr), ("byol", byol)):
        probe = [r["test"]["acc1"] for r in _results(runs[f"{method} / linear-cached"])]
        row = _md_row(md, "Self-supervised methods", method)
        assert f"| 0, 1, 2 | {_expected(probe)} |" in row
    full = [r["test"]["acc1"] for r in _results(simclr["simclr / finetune-full"])]
    assert f"| {_expected(full)} (n=2) |" in _md_row(md, "Self-supervised methods", "simclr")
    assert "| — |" in _md_row(md, "Self-supervised methods", "byol")
    assert "| 14.50 ± 0.71 | — |" in _md_row(md, "Self-supervised methods", "reference: random-init / linear-cached")
    assert (tmp_path / "figures" / "ssl-methods.png").is_file() and "![Linear-probe" in section


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


def test_cli_warns_about_unreadable_run_directories(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from reprlab.commands import report as cmd

    make_run(tmp_path, "a/s0", "A", seed=0, test_acc1=40.0, curves=False)
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "result.json").write_text("{")
    parser = argparse.ArgumentParser()
    cmd.add_arguments(parser)
    assert cmd.run(parser.parse_args([str(tmp_path)])) == 0
    err = capsys.readouterr().err
    assert "1 unreadable run directory left out" in err and "broken/result.json: not valid JSON" in err


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
