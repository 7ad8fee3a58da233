"""Budgets against recipes, the published numbers and the online probe in the report.

Run directories are hand-made (helpers_rundirs.make_quick_like_study: the quick study's shape at
its toy budget); the expected values are written here from those records, not through the
report package."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from helpers_rundirs import budget, make_quick_like_study, make_run, md_row, md_section
from reprlab.report import budget as rb
from reprlab.report.build import build_report
from reprlab.report.load import Run, load_study
from reprlab.report.plots import plot_group_curves, plot_ssl_methods, plot_test_acc1_bars
from reprlab.report.published import PUBLISHED, matching
from reprlab.report.tables import group_runs, ssl_method_rows, ssl_references

WORDS = "shows the machinery, not the method"


def _run(result: dict) -> Run:
    return Run(dir=Path("/nowhere"), result={"run": "r", "status": "complete", "task": "train", "group": "g", "seed": 0, **result}, rel="r")


# ------------------------------------------------------------------------------------------
# The budget of one run (pure data)
# ------------------------------------------------------------------------------------------


def test_the_toy_threshold_is_a_tenth_of_the_recipe():
    at = _run({"budget": budget(100, "configs/x.toml", 1000)})
    below = _run({"budget": budget(99, "configs/x.toml", 1000)})
    assert rb.TOY_FRACTION == 0.10 and not rb.is_toy(at) and rb.is_toy(below)
    assert rb.budget_text(below) == "99 of 1000 epochs (9.9 %)"
    assert rb.toy_mark(rb.limiting(below)) == f"⚠ 99 of 1000 epochs: {WORDS}"


def test_a_probe_is_as_much_a_toy_as_its_backbone_and_steps_count_when_the_recipe_stops_at_them():
    pre = budget(4, "configs/pretrain/byol_cifar100.toml", 1000, steps=140)
    probe = _run({"task": "probe", "budget": budget(None, None, None, backbone=pre)})
    (b,) = rb.budgets(probe)
    assert (b.done, b.of, b.unit, b.backbone) == (4.0, 1000.0, "epochs", True) and rb.is_toy(probe)
    assert rb.budget_text(probe) == "backbone: 4 of 1000 epochs (0.4 %)"
    # a fine-tune at its full recipe over a toy backbone is a toy, and says both
    ft = _run({"task": "finetune", "budget": budget(30, "configs/finetune/resnet18.toml", 30, backbone=pre)})
    assert rb.is_toy(ft) and rb.limiting(ft).backbone
    assert rb.budget_text(ft) == "fine-tune: 30 of 30 epochs (100 %); backbone: 4 of 1000 epochs (0.4 %)"
    steps = _run({"budget": {**budget(1, "r.toml", 100, steps=50), "recipe_steps": 1000}})
    assert rb.budget_text(steps) == "50 of 1000 steps (5 %)"


def test_a_record_without_a_recipe_is_never_called_a_toy():
    old = _run({"epochs": 4})  # written before result.json had a budget
    nofile = _run({"budget": budget(4, None, None)})  # started without a config file
    probe = _run({"task": "probe", "backbone": {"pretrain_epochs": 4}})
    assert not any(rb.is_toy(r) for r in (old, nofile, probe))
    assert rb.budget_text(old) == "4 epochs (recipe unknown)" and rb.budget_text(probe) == "backbone: 4 epochs (recipe unknown)"


def test_published_rows_match_method_dataset_and_model_and_carry_a_source():
    assert [r.top1 for r in matching("byol", "cifar100", "resnet18")] == [70.46]
    assert [r.top1 for r in matching("supervised", "cifar100", "resnet18")] == [75.6, 76.4, 79.5]
    assert matching("byol", "tiny-imagenet", "resnet18") == [] and matching(None, "cifar100", "resnet18") == []
    solo = {r.method: r.top1 for r in PUBLISHED if "solo-learn" in r.url}
    assert solo == {"barlow_twins": 70.90, "byol": 70.46, "mocov2": 69.89, "mocov3": 68.83, "vicreg": 68.54, "dino": 66.76,
                    "simsiam": 66.04, "simclr": 65.78, "swav": 64.88}
    assert all(r.url.startswith("https://github.com/") and r.epochs > 0 for r in PUBLISHED)


def test_config_published_lists_the_table(capsys):
    from reprlab.cli import main

    assert main(["config", "published"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 1 + len(PUBLISHED) and lines[0].split() == ["method", "dataset", "backbone", "epochs", "protocol", "top-1", "source"]
    byol = next(l for l in lines if l.startswith("byol "))
    assert "1000" in byol and "70.46" in byol and "https://github.com/vturrisi/solo-learn" in byol


# ------------------------------------------------------------------------------------------
# The report of a toy-budget study
# ------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def toy(tmp_path_factory: pytest.TempPathFactory) -> dict:
    root = tmp_path_factory.mktemp("toy")
    runs = make_quick_like_study(root)
    build_report(root)
    return {"root": root, "runs": runs, "md": (root / "report.md").read_text(encoding="utf-8")}


def test_the_report_marks_toy_numbers_next_to_them_and_says_so_first(toy: dict):
    md = toy["md"]
    warnings = md_section(md, "Warnings")
    # 8 of the 9 groups: all but the random-init probe, which has no pretraining to be short of
    assert "Toy budget: 8 of 9 groups trained less than 10 % of their recipe's budget" in warnings
    assert "'BYOL pretraining (w16)', 4 of 1000 epochs (0.4 %)" in warnings and WORDS in warnings
    assert "Toy budget: 8 of 9 groups" in md_section(md, "Summary per group")
    byol = md_row(md, "Summary per group", "BYOL / linear")
    assert "| 12.90 ± — ⚠ |" in byol and f"| ⚠ backbone: 4 of 1000 epochs (0.4 %): {WORDS} |" in byol
    assert "⚠" not in md_row(md, "Summary per group", "random init / linear")
    assert f"| ⚠ 2 of 200 epochs (1 %): {WORDS} |" in md_row(md, "CNN vs ViT", "ViT 9x80 (ViT)")
    assert "| -3.2 ⚠ |" in md_row(md, "Gains over scratch", "BYOL / linear")  # BYOL "below scratch" is marked where it is said


def test_a_study_at_its_recipes_budget_has_no_toy_marks(tmp_path: Path):
    make_run(tmp_path, "a-s0", "A", 0, 60.0, 59.0, task="train", curves=False, budget=budget(200, "configs/supervised/resnet18_scratch.toml", 200))
    make_run(tmp_path, "b-s0", "B", 0, 50.0, 49.0, task="train", curves=False, budget=budget(30, "c.toml", 300))  # exactly 10 %
    build_report(tmp_path)
    md = (tmp_path / "report.md").read_text(encoding="utf-8")
    assert "⚠" not in md and "Toy budget" not in md
    assert "| 200 of 200 epochs (100 %) |" in md_row(md, "Summary per group", "A")


def test_toy_bars_are_hatched_and_labelled_in_the_figures(toy: dict):
    study = load_study(toy["root"])
    groups = group_runs(study.main_runs)
    fig = plot_test_acc1_bars(groups)
    hatched = {p.get_gid().split("::")[1] for p in fig.axes[0].patches if p.get_gid() and p.get_hatch()}
    assert hatched == {g.name for g in groups if g.stat("test").n} - {"random init / linear"}
    texts = [t.get_text() for t in fig.axes[0].texts]
    assert f"12.90 ± —  ⚠ backbone pretrained 4 of 1000 epochs: {WORDS}" in texts
    assert any(WORDS in t.get_text() for t in fig.texts)  # the footnote that says what hatching means


def test_the_method_table_and_figure_show_the_published_number_and_our_share_of_its_budget(toy: dict):
    md = toy["md"]
    byol = md_row(md, "Self-supervised methods", "byol")
    assert "| 70.46 [solo-learn](https://github.com/vturrisi/solo-learn) (1000 ep, online linear probe) | 4 of 1000 epochs (0.4 %) |" in byol
    pub = md_row(md, "Published references", "BYOL / linear")
    assert "| 12.90 ± — ⚠ | 70.46 | ResNet-18, 1000 epochs, online linear probe | 4 of 1000 epochs (0.4 %) |" in pub
    vit = [l for l in md_section(md, "Published references").splitlines() if l.startswith("| ViT 9x80 (ViT) |")]
    assert ["80.92" in l and "2 of 300 epochs (0.67 %)" in l for l in vit] == [False, True]
    groups = group_runs(load_study(toy["root"]).main_runs)
    fig = plot_ssl_methods(ssl_method_rows(groups), ssl_references(groups))
    marks = {l.get_gid(): l.get_ydata()[0] for l in fig.axes[0].lines if (l.get_gid() or "").startswith("ssl-published::")}
    assert marks == {"ssl-published::byol": 70.46, "ssl-published::simclr": 65.78}


def test_the_online_probe_shows_beside_the_knn_monitor(toy: dict):
    md, runs = toy["md"], toy["runs"]
    lines = [json.loads(l) for l in (runs["byol"] / "metrics.jsonl").read_text().splitlines()]
    online = [(l["epoch"], l["online/val_acc1"]) for l in lines if "online/val_acc1" in l]
    assert len(online) == 4
    row = md_row(md, "Summary per group", "BYOL pretraining (w16)")
    assert f"| 12.00 ± — ⚠ | {online[-1][1]:.2f} ± — ⚠ |" in row  # kNN, then the online probe's last value
    assert "Online probe (val)" in md_section(md, "Self-supervised methods")
    assert f"| 12.00 ± — ⚠ | {online[-1][1]:.2f} ± — ⚠ |" in md_row(md, "Self-supervised methods", "byol")
    group = next(g for g in group_runs(load_study(toy["root"]).main_runs) if g.name == "BYOL pretraining (w16)")
    fig = plot_group_curves(group)
    curves = {l.get_gid(): list(zip(l.get_xdata(), l.get_ydata())) for ax in fig.axes for l in ax.lines if l.get_gid()}
    assert curves["byol-s0::online/val_acc1"] == online and "byol-s0::knn/acc1" in curves
    panel = next(ax for ax in fig.axes if any(l.get_gid() == "byol-s0::online/val_acc1" for l in ax.lines))
    assert any(l.get_gid() == "byol-s0::knn/acc1" for l in panel.lines)  # the same panel as the kNN curve


def test_without_an_online_probe_its_column_and_curve_are_absent(tmp_path: Path):
    make_quick_like_study(tmp_path, online=False)
    build_report(tmp_path)
    md = (tmp_path / "report.md").read_text(encoding="utf-8")
    assert "online-probe acc1" not in md_section(md, "Summary per group") and "Online probe (val)" not in md
    group = next(g for g in group_runs(load_study(tmp_path).main_runs) if g.name == "BYOL pretraining (w16)")
    gids = {l.get_gid() for ax in plot_group_curves(group).axes for l in ax.lines}
    assert "byol-s0::knn/acc1" in gids and "byol-s0::online/val_acc1" not in gids
