"""Tests for ``reprlab.report.load``: reading and checking run directories."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from helpers_rundirs import TRAIN_LOGS_PER_EPOCH, make_run, make_study, write_result
from helpers_rundirs import count_lines_with as _count_lines_with
from reprlab.errors import ReprlabError
from reprlab.report.load import check_metrics, curve_series, load_result, load_study, read_metrics


@pytest.fixture(scope="module")
def study(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """The hand-made study's run directories (no report built)."""
    root = tmp_path_factory.mktemp("study")
    return {"root": root, "runs": make_study(root)}


# ------------------------------------------------------------------------------------------
# Curves
# ------------------------------------------------------------------------------------------


def test_curve_series_has_every_logged_point(study: dict) -> None:
    run = study["runs"]["Scratch / resnet18"][0]
    epochs = 5
    assert curve_series(run, "val/acc1")[0] == [1.0, 2.0, 3.0, 4.0, 5.0]
    for key, n in (("train/acc1", epochs * TRAIN_LOGS_PER_EPOCH), ("lr", epochs * TRAIN_LOGS_PER_EPOCH), ("val/loss", epochs), ("test/acc1", 1)):
        xs, ys = curve_series(run, key)
        assert len(xs) == len(ys) == n == _count_lines_with(run / "metrics.jsonl", key), key
    pretrain = study["runs"]["SimCLR pretrain (TIN 100%)"][0]
    assert len(curve_series(pretrain, "knn/acc1")[0]) == 4  # epochs=4 for the pretraining run
    assert curve_series(pretrain, "val/acc1") == ([], [])


def test_curve_series_absent_null_and_epochless_points(tmp_path: Path) -> None:
    lines = [
        {"step": 1, "epoch": 0.5, "train/loss": 2.0},
        {"step": 2, "epoch": 1.0, "val/acc1": 3.0},
        {"step": 3, "epoch": 1.5, "train/loss": None},  # null = not measured
        {"step": 4, "train/loss": 1.0},  # no epoch: cannot be placed on the epoch axis
        {"step": 5, "epoch": 2.0, "train/loss": 0.5},
    ]
    (tmp_path / "metrics.jsonl").write_text("\n".join(json.dumps(l) for l in lines) + "\n")
    assert curve_series(tmp_path, "train/loss") == ([0.5, 2.0], [2.0, 0.5])
    assert curve_series(tmp_path, "train/loss", x="step") == ([1.0, 4.0, 5.0], [2.0, 1.0, 0.5])


# ------------------------------------------------------------------------------------------
# Bad input: one-line errors naming the file; the study keeps the bad directory aside
# ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("content", "needle"),
    [
        ('{"run": "x", "status": "complete", ', "not valid JSON"),
        ("[1, 2]", "expected a JSON object"),
        ('{"run": "x", "status": "complete", "task": "train", "group": "g"}', "missing required key 'seed'"),
        ('{"run": "x", "status": "complete", "task": "train", "group": "g", "seed": "0"}', "key 'seed' must be an integer"),
        ('{"run": "x", "status": "complete", "task": "train", "group": "g", "seed": 0, "test": {"acc1": "high"}}', "'test.acc1' must be a number"),
        ('{"run": "x", "status": "complete", "task": "train", "group": "g", "seed": 0, "stale": "yes"}', "key 'stale' must be true, false or null"),
        ('{"run": "x", "status": "failed", "error": 3}', "key 'error' must be a string"),
        ('{"run": "x", "task": "train", "group": "g", "seed": 0}', "missing required key 'status'"),
    ],
)
def test_malformed_result_json_names_file(tmp_path: Path, content: str, needle: str) -> None:
    make_run(tmp_path, "good", "g", curves=False)
    bad = tmp_path / "bad" / "run"
    bad.mkdir(parents=True)
    (bad / "result.json").write_text(content)
    with pytest.raises(ReprlabError) as exc:
        load_result(bad)
    msg = str(exc.value)
    assert str(bad / "result.json") in msg and needle in msg and "\n" not in msg
    # The study keeps going: the good run is loaded, the bad one kept aside with that reason.
    study = load_study(tmp_path)
    assert [r.rel for r in study.runs] == ["good"]
    assert [(b.rel, b.reason) for b in study.bad] == [("bad/run", msg)]


def test_unreadable_result_json_is_a_bad_run(tmp_path: Path) -> None:
    make_run(tmp_path, "good", "g", curves=False)
    (tmp_path / "latin").mkdir()
    (tmp_path / "latin" / "result.json").write_bytes(b'{"run": "\xe9"}')
    (reason,) = [b.reason for b in load_study(tmp_path).bad]
    assert reason == f"{tmp_path / 'latin' / 'result.json'}: cannot read (not UTF-8 text)"


def test_corrupt_metrics_of_a_complete_run_is_a_bad_run(tmp_path: Path) -> None:
    run = make_run(tmp_path, "r", "g", epochs=2)
    with open(run / "metrics.jsonl", "a") as f:
        f.write('{"step": 99, "epoch": 3.0, "val/acc1": oops}\n')
    n = len((run / "metrics.jsonl").read_text().splitlines())
    with pytest.raises(ReprlabError, match=re.escape(f"{run / 'metrics.jsonl'}:{n}: not valid JSON")):
        read_metrics(run / "metrics.jsonl")
    study = load_study(tmp_path)
    assert study.runs == [] and study.bad[0].reason.startswith(f"{run / 'metrics.jsonl'}:{n}: not valid JSON")
    # an unfinished run's log is read leniently (its last line is often cut off): not bad
    write_result(run, {"run": "r", "status": "failed", "task": "probe", "group": "g", "seed": 0})
    study = load_study(tmp_path)
    assert study.bad == [] and [r.status for r in study.failed] == ["failed"]
    # a wrongly typed value of a plotted key is as bad as a broken line
    write_result(run, {"run": "r", "status": "complete", "task": "probe", "group": "g", "seed": 0})
    (run / "metrics.jsonl").write_text('{"step": 1, "epoch": 1.0, "val/acc1": "41%"}\n')
    with pytest.raises(ReprlabError, match=r"metrics\.jsonl:1: key 'val/acc1' must be a number"):
        check_metrics(read_metrics(run / "metrics.jsonl"))
    (bad,) = load_study(tmp_path).bad
    assert bad.reason.endswith("metrics.jsonl:1: key 'val/acc1' must be a number, got '41%'")


def test_missing_root_and_empty_root(tmp_path: Path) -> None:
    with pytest.raises(ReprlabError, match="does not exist"):
        load_study(tmp_path / "nope")
    with pytest.raises(ReprlabError, match="no run directories found"):
        load_study(tmp_path)


# ------------------------------------------------------------------------------------------
# Failed, stale and kNN
# ------------------------------------------------------------------------------------------


def test_failed_record_and_stale_runs(tmp_path: Path) -> None:
    make_run(tmp_path, "ok", "g", curves=False)
    make_run(tmp_path, "old", "g", seed=1, curves=False, stale=True)
    (tmp_path / "crash").mkdir()
    write_result(tmp_path / "crash", {"status": "failed", "error": "CUDA out of memory"})  # nothing else known yet
    study = load_study(tmp_path)
    assert [r.rel for r in study.complete] == ["ok"] and [r.rel for r in study.main_runs] == ["ok"]
    assert [r.rel for r in study.stale] == ["old"]
    (failed,) = study.failed
    assert (failed.name, failed.task, failed.group, failed.seed, failed.get("error")) == ("crash", "—", "—", None, "CUDA out of memory")


@pytest.mark.parametrize(
    ("result", "knn", "val"),
    [
        ({"task": "pretrain", "method": "simclr", "val": {"knn_acc1": 13.6}}, 13.6, None),  # new spelling
        ({"task": "pretrain", "method": "simclr", "val": {"acc1": 13.6}, "best_checkpoint": {"metric": "knn/acc1"}}, 13.6, None),
        ({"task": "pretrain", "method": "byol", "val": {"acc1": 13.6}}, 13.6, None),  # old spelling, no selection metric
        ({"task": "pretrain", "method": "supervised", "val": {"acc1": 8.7}, "best_checkpoint": {"metric": "val/acc1"}}, None, 8.7),
        ({"task": "probe", "method": "simclr", "val": {"acc1": 30.0}}, None, 30.0),
    ],
)
def test_knn_accuracy_in_both_spellings(tmp_path: Path, result: dict, knn: float | None, val: float | None) -> None:
    write_result(tmp_path, {"run": "r", "status": "complete", "group": "g", "seed": 0, **result})
    (run,) = load_study(tmp_path).runs
    assert run.knn() == knn and run.metric("val") == val


def test_sweep_log_keys_from_the_study_file(tmp_path: Path) -> None:
    make_run(tmp_path, "t0", "s", curves=False, sweep="s", sweep_params={"optim.lr": 1e-3})
    (tmp_path / "study.toml").write_text(
        '[[sweep]]\nname = "s"\n[sweep.space]\n"optim.lr" = { low = 1e-4, high = 3e-4, log = true }\n'
        '"optim.weight_decay" = { low = 0.01, high = 0.1 }\n"model.depth" = [6, 9]\n'
    )
    study = load_study(tmp_path)
    assert study.sweep_log_keys == {"s": frozenset({"optim.lr"})} and study.notes == []
    (tmp_path / "study.toml").write_text("[[sweep]\n")
    study = load_study(tmp_path)
    assert study.sweep_log_keys == {} and "study.toml could not be read" in study.notes[0]
