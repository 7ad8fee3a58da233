"""``reprlab pretrain`` from the command line, as a user types it."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

TINY = ["model.kwargs.width=8", "train.max_steps=1", "data.fraction=0.02", "method.knn_every_epochs=0", "train.progress=false",
        "method.proj_hidden_dim=64", "method.pred_hidden_dim=64", "method.proj_out_dim=32"]


def _reprlab(*args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "reprlab", *args], capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})


@pytest.mark.realdata
def test_byol_with_one_view_turned_off_is_refused_in_one_line_and_leaves_no_run_directory(data_root, cache_root, tmp_path):
    """BYOL splits its concatenated crops in halves: with view2 off, the halves would be crops of
    different images, trained on as positive pairs with exit 0 (the defect this guards)."""
    out = tmp_path / "runs"
    p = _reprlab("--data-root", str(data_root), "pretrain", "--config", "configs/pretrain/byol_cifar100.toml", "views.view2.count=0",
                 *TINY, f'run.out_dir="{out}"', f'data.cache_dir="{cache_root}"')
    err = p.stderr.strip().splitlines()
    assert p.returncode == 2 and len(err) == 1, p.stderr[-2000:]
    assert err[0].startswith("reprlab: error: config key 'views.view2.count' = 0: method 'byol' needs exactly 1 crop from view 'view2'")
    assert not out.exists()
