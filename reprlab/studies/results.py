"""What studies and sweeps read from run directories: a complete or failed result.json, its
accuracy in words, a trial's metric curve and the best trial of a sweep. Nothing here starts a
run or opens an Optuna storage."""

from __future__ import annotations

import hashlib
import json
import math
from pathlib import Path
from typing import Any

from reprlab.errors import ReprlabError
from reprlab.result import RESULT_FILE, read_result, result_key


def read_complete(run_dir: Path) -> dict | None:
    """result.json of a complete run, else None."""
    if not (run_dir / RESULT_FILE).is_file():
        return None
    result = read_result(run_dir)
    return result if result.get("status") == "complete" else None


def read_failure(run_dir: Path) -> str | None:
    """The error line of a failed last attempt (result.json with ``status = "failed"``), else None."""
    if not (run_dir / RESULT_FILE).is_file():
        return None
    try:
        result = read_result(run_dir)
    except ReprlabError:
        return None
    return str(result.get("error") or "no error recorded") if result.get("status") == "failed" else None


def accuracy_text(result: dict) -> str:
    parts = []
    for split in ("val", "test"):
        block = result.get(split) or {}
        if isinstance(block.get("acc1"), (int, float)):
            parts.append(f"{split} {block['acc1']:.2f}")
        elif isinstance(block.get("knn_acc1"), (int, float)):  # self-supervised pretraining: kNN on val
            parts.append(f"{split} kNN {block['knn_acc1']:.2f}")
    return "  ".join(parts) or "no accuracy in result.json"


def trial_dir_name(params: dict[str, Any]) -> str:
    return "trial-" + hashlib.sha256(json.dumps(params, sort_keys=True).encode()).hexdigest()[:8]


def read_curve(metrics_file: Path, metric: str) -> list[tuple[int, float]]:
    """(epoch, value) of every line holding ``metric``; a half-written last line is left for later."""
    if not metrics_file.is_file():
        return []
    text = metrics_file.read_text()
    lines = text.split("\n")[:-1]  # the part after the last newline may still be being written
    out: dict[int, float] = {}
    for ln in lines:
        if not ln.strip():
            continue
        row = json.loads(ln)
        if metric in row:
            out.setdefault(int(round(row["epoch"])), float(row[metric]))
    return sorted(out.items())


def best_trial(out_dir: str | Path, sweep_name: str, metric: str = "val/acc1") -> dict[str, Any]:
    """Parameters (``sweep_params`` of result.json) of the complete trial with the highest value.

    Read from the run directories, not from Optuna's storage, so it works with any storage and
    on a copied study folder. Ties go to the first directory name (deterministic).
    """
    sweep_dir = Path(out_dir) / sweep_name
    key = result_key(metric)
    best: tuple[float, str, dict] | None = None
    for run_dir in sorted(sweep_dir.glob("trial-*")):
        result = read_complete(run_dir)
        if result is None:
            continue
        value = (result.get("val") or {}).get(key)
        if not isinstance(value, (int, float)) or math.isnan(value):
            continue
        if best is None or value > best[0]:
            best = (float(value), run_dir.name, result.get("sweep_params") or {})
    if best is None:
        raise ReprlabError(f"sweep {sweep_name!r}: no complete trial under {sweep_dir} (run the sweep first)")
    return dict(best[2])
