"""benchmarks/gpu_check.py, the Python part of the GPU check, on a CPU with --tiny: it runs the
product's loop for every row and writes every field, with syncs and device memory reported as
not applicable (not faked) where there is no GPU."""

import json
import math
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TRAIN_ROWS = ["simclr_b512", "simclr_b512_compile", "scratch_b128", "scratch_b128_compile"]


def test_gpu_check_runs_on_cpu_tiny_and_writes_every_row(tmp_path):
    out = tmp_path / "gpu_check.json"
    p = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "gpu_check.py"), "--device", "cpu", "--tiny", "--out", str(out)],
                       capture_output=True, text=True, timeout=400, cwd=ROOT)
    assert p.returncode == 0, p.stderr[-3000:]
    info = json.loads(out.read_text())
    assert info["schema"] == "reprlab.gpu_check/1" and info["tiny"] is True and info["device"] == "cpu"
    assert [r["name"] for r in info["rows"]] == [*TRAIN_ROWS, "probe_features"]
    assert info["sync_counting"].startswith("n/a") and info["peak_memory"].startswith("n/a")

    def positive(v):
        return isinstance(v, (int, float)) and math.isfinite(v) and v > 0

    for r in info["rows"]:
        assert all(positive(r[k]) for k in ("s_per_epoch", "img_per_s")), r
        assert r["peak_mem_gib"] is None and r["precision"] == "bf16"
    for r in info["rows"][:4]:
        assert all(positive(r[k]) for k in ("s_per_step", "steps_timed", "first_interval_s", "steps_per_epoch")), r
        assert r["syncs_per_step"] is None and r["method_syncs_per_step"] is None
        assert (r["compile_s"] is not None) == r["compile"] and r["compile"] == r["name"].endswith("_compile")
    assert info["rows"][-1]["syncs_per_batch"] is None and info["rows"][-1]["images"] == 512 + 64 + 128
    # the table on stdout has one line per row
    assert all(any(line.startswith(name + " ") for line in p.stdout.splitlines()) for name in [*TRAIN_ROWS, "probe_features"])
