"""The one schema of ``result.json`` and the one table of task kinds; free of torch.

A run directory's ``result.json`` is written last by the run (``reprlab.train.task``: the loop's
tasks and the cached linear probe) and read by everything after it (``reprlab.report``,
``reprlab.studies``). Both sides use this module: the writers build their record with
:func:`record` (it checks the record is whole and stamps :data:`SCHEMA_VERSION`), the readers read
it with :func:`read_result` and check it with :func:`validate`.

Versions of the schema:

* no ``schema`` key: records written before the field existed; read as version 1.
* ``1``: the same fields, with ``"schema": 1`` as the last key.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from reprlab.errors import ReprlabError

SCHEMA_VERSION = 1
RESULT_FILE = "result.json"
#: ``complete``: written last by a finished run; ``failed``: the record of a failed attempt
STATUSES = ("complete", "failed")


# ============================================================================================
# Task kinds: what a run command asks the training code to do
# ============================================================================================


@dataclass(frozen=True)
class TaskKind:
    """One kind of run: the result.json fields it sets and what the training code builds for it."""

    name: str  # the kind the commands pass on: "train", "finetune-head", "probe", ...
    task: str  # result.json's ``task``: train | pretrain | finetune | probe
    protocol: str  # result.json's ``protocol``
    loop: bool  # trains through the one loop (train/loop.py); else the cached linear protocol
    backbone: bool = False  # builds on ``eval.backbone`` (its architecture from the checkpoint)
    finetune_mode: str | None = None  # over a backbone: "full" (all layers) | "head" (a new linear head)
    frozen: bool = False  # the backbone is verified bit-identical afterwards
    scratch: bool = False  # trains a supervised classifier from random init (backbone_source "scratch", run.family)
    pretrains: bool = False  # trains a backbone for later runs (result.json's fraction is its data fraction)


TASK_KINDS: dict[str, TaskKind] = {
    k.name: k
    for k in (
        TaskKind("train", "train", "scratch", loop=True, scratch=True),
        TaskKind("pretrain", "pretrain", "pretrain", loop=True, pretrains=True),
        TaskKind("finetune-full", "finetune", "finetune-full", loop=True, backbone=True, finetune_mode="full"),
        TaskKind("finetune-head", "finetune", "finetune-head", loop=True, backbone=True, finetune_mode="head"),
        TaskKind("probe-augment", "probe", "linear-augment", loop=True, backbone=True, finetune_mode="head", frozen=True),
        TaskKind("probe", "probe", "linear-cached", loop=False, backbone=True, frozen=True),
    )
}


def task_kind(name: str) -> TaskKind:
    if name not in TASK_KINDS:
        raise ValueError(f"unknown task kind {name!r} (known: {', '.join(TASK_KINDS)})")
    return TASK_KINDS[name]


# ============================================================================================
# The fields
# ============================================================================================

#: what every record a reader accepts has, with its type; a failed-run record needs only its
#: status (old ones were written before the run knew its group or seed), and may hold nulls
REQUIRED: dict[str, type] = {"run": str, "status": str, "task": str, "group": str, "seed": int}
#: optional top-level keys: absent, null, or of this kind
OPTIONAL_NUMBERS = ("params", "flops_per_image", "throughput_img_s", "fraction", "resolution", "epochs", "wall_time_s")
OPTIONAL_STRINGS = ("model", "protocol", "backbone_source", "method", "dataset", "family", "sweep", "error")  # error: a failed run's line

#: the fields a writer writes, per status and kind (absent from old records, so readers never require them)
WRITTEN_COMPLETE = (
    "run", "status", "task", "group", "seed", "model", "params", "protocol", "backbone_source", "method", "dataset",
    "fraction", "epochs", "family", "sweep", "sweep_params", "val", "backbone", "config",
)
WRITTEN_LOOP = (  # a run through the loop, besides WRITTEN_COMPLETE ("test" too, when the test split was used)
    "flops_per_image", "throughput_img_s", "train_fraction", "resolution", "steps", "final_checkpoint", "best_checkpoint",
    "wall_time_s", "segments", "train_dataset",
)
WRITTEN_CACHED_PROBE = ("l2_sweep", "l2", "feature_dim", "feature_seconds", "fit_seconds", "resolution", "frozen_verified")
#: the training budget against the recipe's (:data:`BUDGET_KEYS`), written by every complete run
WRITTEN_BUDGET = ("budget",)
WRITTEN_FAILED = ("run", "status", "task", "protocol", "group", "seed", "error", "error_type", "failed_at", "last_checkpoint_step", "config")


#: result.json's ``budget``: what the run trained against the recipe it was started from (the
#: config file of ``--config`` or the command's default recipe, before command-line overrides),
#: so that a report can say "4 of 1000 epochs". ``epochs``/``steps``: done (null for the cached
#: probe, which trains no epochs); ``recipe``: the file (null: no config file);
#: ``recipe_epochs``/``recipe_steps``: its ``train.epochs`` and ``train.max_steps`` (null: not
#: set); ``backbone``: the budget block of the run that made the backbone (a probe of a
#: 4-epoch backbone is a toy too), null for a run without a backbone or with an unknown one.
BUDGET_KEYS = ("epochs", "steps", "recipe", "recipe_epochs", "recipe_steps", "backbone")


def is_number(value: Any) -> bool:
    """True for int/float but not bool (JSON ``true`` must not pass as an accuracy of 1)."""
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def short(value: Any) -> str:
    """A repr short enough to keep error messages on one line."""
    text = repr(value).replace("\n", " ")
    return text if len(text) <= 60 else text[:57] + "..."


def _metric_block(key: str, block: Any) -> list[str]:
    """Problems of a ``{"acc1": .., "acc5": .., "loss": ..}`` block (numbers or null)."""
    if block is None:
        return []
    if not isinstance(block, dict):
        return [f"key '{key}' must be an object like {{\"acc1\": 41.2}}, got {short(block)}"]
    return [f"key '{key}.{name}' must be a number or null, got {short(value)}" for name, value in block.items() if value is not None and not is_number(value)]


def _budget_block(key: str, block: Any) -> list[str]:
    """Problems of a ``budget`` block (see :data:`BUDGET_KEYS`) and of its backbone's, nested."""
    if block is None:
        return []
    if not isinstance(block, dict):
        return [f"key '{key}' must be an object like {{\"epochs\": 4, \"recipe_epochs\": 1000}}, got {short(block)}"]
    problems = [f"key '{key}.{k}' must be a number or null, got {short(block[k])}"
                for k in ("epochs", "steps", "recipe_epochs", "recipe_steps") if block.get(k) is not None and not is_number(block[k])]
    if block.get("recipe") is not None and not isinstance(block["recipe"], str):
        problems.append(f"key '{key}.recipe' must be a string or null, got {short(block['recipe'])}")
    return problems + _budget_block(f"{key}.backbone", block.get("backbone"))


def validate(data: Any) -> list[str]:
    """What is wrong with a parsed result.json (empty: nothing), in the order a reader meets it.

    Checked: a JSON object; the :data:`REQUIRED` keys and their types (only ``status`` for a
    failed run); ``status`` one of :data:`STATUSES`; ``schema`` (absent in old records) not newer
    than this reprlab's; the optional keys' types; the metric blocks ``val``, ``test`` and
    ``final_checkpoint``/``best_checkpoint``'s. Other keys are free.
    """
    if not isinstance(data, dict):
        return [f"expected a JSON object, got {type(data).__name__}"]
    problems: list[str] = []
    failed = data.get("status") == "failed"
    for key, typ in REQUIRED.items():
        if key not in data:
            if not (failed and key != "status"):
                problems.append(f"missing required key '{key}'")
            continue
        value = data[key]
        if failed and value is None:
            continue
        ok = is_number(value) and float(value).is_integer() if typ is int else isinstance(value, typ)
        if not ok:
            problems.append(f"key '{key}' must be {'an integer' if typ is int else 'a string'}, got {short(value)}")
    status = data.get("status")
    if isinstance(status, str) and status not in STATUSES:
        problems.append(f"key 'status' must be one of {', '.join(map(repr, STATUSES))}, got {short(status)}")
    schema = data.get("schema")
    if schema is not None and not (is_number(schema) and float(schema).is_integer()):
        problems.append(f"key 'schema' must be an integer, got {short(schema)}")
    elif schema is not None and schema > SCHEMA_VERSION:
        problems.append(f"schema {schema} is newer than this reprlab reads ({SCHEMA_VERSION}); update reprlab")
    for key in OPTIONAL_NUMBERS:
        value = data.get(key)
        if value is not None and not is_number(value):
            problems.append(f"key '{key}' must be a number or null, got {short(value)}")
    for key in OPTIONAL_STRINGS:
        value = data.get(key)
        if value is not None and not isinstance(value, str):
            problems.append(f"key '{key}' must be a string or null, got {short(value)}")
    stale = data.get("stale")
    if stale is not None and not isinstance(stale, bool):
        problems.append(f"key 'stale' must be true, false or null, got {short(stale)}")
    for key in ("val", "test"):
        problems += _metric_block(key, data.get(key))
    for key in ("final_checkpoint", "best_checkpoint"):
        ckpt = data.get(key)
        if ckpt is None:
            continue
        if not isinstance(ckpt, dict):
            problems.append(f"key '{key}' must be an object, got {short(ckpt)}")
            continue
        for split in ("val", "test"):
            problems += _metric_block(f"{key}.{split}", ckpt.get(split))
    problems += _budget_block("budget", data.get("budget"))
    sweep_params = data.get("sweep_params")
    if sweep_params is not None and not isinstance(sweep_params, dict):
        problems.append(f"key 'sweep_params' must be an object or null, got {short(sweep_params)}")
    return problems


def written_fields(data: dict) -> tuple[str, ...]:
    """The fields a writer of reprlab writes into a record of ``data``'s status and protocol."""
    if data.get("status") == "failed":
        return WRITTEN_FAILED
    cached = data.get("protocol") == TASK_KINDS["probe"].protocol
    return WRITTEN_COMPLETE + WRITTEN_BUDGET + (WRITTEN_CACHED_PROBE if cached else WRITTEN_LOOP)


def result_key(metric: str) -> str:
    """The key of result.json's ``val`` block that holds ``metric``: ``val/acc1`` -> ``acc1``,
    ``knn/acc1`` (a self-supervised run's kNN monitor on the validation split) -> ``knn_acc1``."""
    prefix, _, name = metric.partition("/")
    return name if prefix == "val" else f"{prefix}_{name}"


def record(fields: dict) -> dict:
    """The result.json record a run writes: ``fields`` in their order, then ``schema``.

    Raises ``ValueError`` (a bug of the writer, not of the user) when the record would not pass
    :func:`validate` or lacks a field of :func:`written_fields`.
    """
    rec = {**fields, "schema": SCHEMA_VERSION}
    problems = validate(rec) + [f"missing field '{k}'" for k in written_fields(rec) if k not in rec]
    if problems:
        raise ValueError(f"result.json record of run {rec.get('run')!r}: {'; '.join(problems)}")
    return rec


# ============================================================================================
# Reading
# ============================================================================================


def read_result(run_dir: str | Path) -> dict:
    """``run_dir/result.json``, parsed but not checked (the run directory's own bookkeeping: is
    it complete, did it fail); invalid JSON is a one-line error naming the file."""
    f = Path(run_dir) / RESULT_FILE
    try:
        return json.loads(f.read_text())
    except json.JSONDecodeError as e:
        raise ReprlabError(f"{f}: invalid JSON ({e})") from None


def load_result(run_dir: str | Path) -> dict[str, Any]:
    """Read and check ``run_dir/result.json`` (what reports and studies compare).

    Raises :class:`ReprlabError` naming the file for an unreadable file, invalid JSON or the
    first problem :func:`validate` finds; ``seed`` comes back as an int.
    """
    path = Path(run_dir) / RESULT_FILE
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        why = exc.strerror if isinstance(exc, OSError) else "not UTF-8 text"
        raise ReprlabError(f"{path}: cannot read ({why})") from exc
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ReprlabError(f"{path}: not valid JSON ({exc.msg} at line {exc.lineno} column {exc.colno})") from exc
    problems = validate(data)
    if problems:
        raise ReprlabError(f"{path}: {problems[0]}")
    if data.get("seed") is not None:
        data["seed"] = int(data["seed"])
    return data
