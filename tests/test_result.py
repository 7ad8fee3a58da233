"""The one result.json schema (reprlab/result.py): what readers accept, what writers must write,
and the table of task kinds."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from reprlab import result as schema
from reprlab.errors import ReprlabError

OLD = {"run": "x", "status": "complete", "task": "train", "group": "g", "seed": 0, "val": {"acc1": 41.2}}  # no "schema": before the field


def test_an_old_record_without_schema_is_accepted():
    assert "schema" not in OLD and schema.validate(OLD) == []


def test_a_record_missing_a_required_field_names_it():
    rec = {k: v for k, v in OLD.items() if k != "group"}
    assert schema.validate(rec) == ["missing required key 'group'"]


def test_a_failed_record_needs_only_its_status():
    assert schema.validate({"status": "failed", "run": "x", "seed": None}) == []
    assert schema.validate({"run": "x", "task": "train"}) == [f"missing required key '{k}'" for k in ("status", "group", "seed")]


@pytest.mark.parametrize("status", ["done", "running", "Complete"])
def test_a_wrong_status_is_a_problem(status):
    assert schema.validate({**OLD, "status": status}) == [f"key 'status' must be one of 'complete', 'failed', got {status!r}"]


@pytest.mark.parametrize(
    "change, problem",
    [
        ({"seed": "0"}, "key 'seed' must be an integer, got '0'"),
        ({"seed": True}, "key 'seed' must be an integer, got True"),
        ({"test": {"acc1": "high"}}, "key 'test.acc1' must be a number or null, got 'high'"),
        ({"best_checkpoint": {"val": {"acc1": [1]}}}, "key 'best_checkpoint.val.acc1' must be a number or null, got [1]"),
        ({"schema": 2}, "schema 2 is newer than this reprlab reads (1); update reprlab"),
        ({"schema": "1"}, "key 'schema' must be an integer, got '1'"),
        ({"sweep_params": []}, "key 'sweep_params' must be an object or null, got []"),
    ],
)
def test_wrongly_typed_values_are_problems(change, problem):
    assert schema.validate({**OLD, **change}) == [problem]


def test_not_an_object_is_a_problem():
    assert schema.validate([OLD]) == ["expected a JSON object, got list"]


def test_record_stamps_the_schema_last_and_refuses_an_incomplete_record():
    failed = {k: None for k in schema.WRITTEN_FAILED} | {"run": "x", "status": "failed", "task": "train", "group": "g", "seed": 0, "error": "boom"}
    rec = schema.record(failed)
    assert list(rec)[-1] == "schema" and rec["schema"] == schema.SCHEMA_VERSION
    assert {k: v for k, v in rec.items() if k != "schema"} == failed  # every field name and value as given
    with pytest.raises(ValueError, match="missing field 'error_type'"):
        schema.record({k: v for k, v in failed.items() if k != "error_type"})
    with pytest.raises(ValueError, match="missing field 'steps'"):  # a complete run of the loop records its steps
        schema.record({**OLD, **{k: None for k in schema.WRITTEN_COMPLETE if k not in OLD}, "protocol": "scratch"})


def test_the_cached_probe_and_the_loop_write_different_fields():
    probe = schema.written_fields({"status": "complete", "protocol": "linear-cached"})
    loop = schema.written_fields({"status": "complete", "protocol": "linear-augment"})
    assert "l2_sweep" in probe and "steps" not in probe and "steps" in loop and "l2_sweep" not in loop


def test_read_result_and_load_result(tmp_path):
    (tmp_path / "result.json").write_text(json.dumps({**OLD, "seed": 3.0}))
    assert schema.read_result(tmp_path)["seed"] == 3.0  # the run directory's bookkeeping: unchecked
    assert schema.load_result(tmp_path)["seed"] == 3 and isinstance(schema.load_result(tmp_path)["seed"], int)
    (tmp_path / "result.json").write_text(json.dumps({**OLD, "status": "done"}))
    with pytest.raises(ReprlabError, match=r"result\.json: key 'status' must be one of"):
        schema.load_result(tmp_path)
    (tmp_path / "result.json").write_text("{")
    with pytest.raises(ReprlabError, match=r"result\.json: invalid JSON"):
        schema.read_result(tmp_path)


def test_the_task_kinds_table():
    assert {k: (v.task, v.protocol) for k, v in schema.TASK_KINDS.items()} == {
        "train": ("train", "scratch"),
        "pretrain": ("pretrain", "pretrain"),
        "finetune-full": ("finetune", "finetune-full"),
        "finetune-head": ("finetune", "finetune-head"),
        "probe-augment": ("probe", "linear-augment"),
        "probe": ("probe", "linear-cached"),
    }
    assert [k for k, v in schema.TASK_KINDS.items() if not v.loop] == ["probe"]
    assert {k for k, v in schema.TASK_KINDS.items() if v.backbone} == {"finetune-full", "finetune-head", "probe-augment", "probe"}
    with pytest.raises(ValueError, match="unknown task kind 'finetune'"):
        schema.task_kind("finetune")


def test_the_schema_and_the_run_directory_readers_import_without_torch():
    code = "import sys, reprlab.result, reprlab.train.rundir, reprlab.studies.results; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_the_budget_block_is_checked_down_its_backbone_chain():
    pre = {"epochs": 4, "steps": 140, "recipe": "configs/pretrain/byol_cifar100.toml", "recipe_epochs": 1000, "recipe_steps": None, "backbone": None}
    assert schema.validate({**OLD, "budget": {**pre, "epochs": None, "steps": None, "recipe": None, "backbone": pre}}) == []
    assert schema.validate({**OLD, "budget": 4}) == ["key 'budget' must be an object like {\"epochs\": 4, \"recipe_epochs\": 1000}, got 4"]
    assert schema.validate({**OLD, "budget": {**pre, "recipe_epochs": "1000"}}) == ["key 'budget.recipe_epochs' must be a number or null, got '1000'"]
    assert schema.validate({**OLD, "budget": {**pre, "backbone": {**pre, "recipe": 3}}}) == ["key 'budget.backbone.recipe' must be a string or null, got 3"]
    assert "budget" in schema.written_fields({"status": "complete", "protocol": "linear-cached"})
    assert "budget" in schema.written_fields({"status": "complete", "protocol": "scratch"})
