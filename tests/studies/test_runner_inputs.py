"""A study's probe knows the backbone it was made from: after a pretraining's override is edited,
the pretraining *and its probe* are stale (in a dry run that imports no torch, and in ``study
status``), and ``study run --rerun`` retrains the backbone and then probes it again. End to end
on the real CIFAR-100 with real runs (in this process: the runner's executor calls the CLI)."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from reprlab.cli import main, resolve_argv
from reprlab.errors import ReprlabError
from reprlab.studies import spec
from reprlab.studies.runner import dry_run, run_study, status

pytestmark = pytest.mark.realdata

ROOT = Path(__file__).resolve().parents[2]
TINY = ["model.kwargs.width=8", "data.fraction=0.02", "data.val_size=500", "train.num_threads=1", "train.eval_batch_size=1000",
        "train.eval_test=false", "train.progress=false"]
STUDY = """
[study]
name = "inputs"
overrides = {overrides}

[[run]]
name = "simclr"
command = "pretrain"
seeds = [0]
config = "configs/pretrain/simclr_cifar100.toml"
overrides = ["train.batch_size=32", "train.max_steps=2", "method.knn_every_epochs=0", "optim.lr=LR"]

[[run]]
name = "probe"
command = "probe"
seeds = [0]
backbone = "{{simclr}}"
overrides = ["eval.l2_grid=[0.0]", "eval.max_iter=5"]
"""


class _Done:
    """A finished child process, as the runner polls it."""

    def __init__(self, code: int) -> None:
        self.code = code

    def poll(self) -> int:
        return self.code

    def wait(self, timeout=None) -> int:
        return self.code

    terminate = kill = lambda self: None


class InProcess:
    """The runner's executor: runs the child's command line through the CLI in this process."""

    def __init__(self) -> None:
        self.argvs: list[list[str]] = []

    def __call__(self, argv, log, env):
        self.argvs.append(argv)
        log.parent.mkdir(parents=True, exist_ok=True)
        return _Done(main(argv[3:]))  # without `python -m reprlab`


def _study(tmp_path: Path, cache_root: Path, lr: str) -> spec.Study:
    f = tmp_path / "study.toml"
    f.write_text(STUDY.format(overrides=json.dumps([*TINY, f'data.cache_dir="{cache_root}"'])).replace("LR", lr))
    return spec.load_study(f, out_dir=tmp_path / "out", resolve=resolve_argv)


def _dry_run_without_torch(study: spec.Study, data_root) -> str:
    code = ("import runpy, sys; sys.argv = ['reprlab', *sys.argv[1:]]\ntry:\n    runpy.run_module('reprlab', run_name='__main__')\n"
            "except SystemExit:\n    pass\nprint('TORCH' if 'torch' in sys.modules else 'NO-TORCH')")
    p = subprocess.run([sys.executable, "-c", code, "--data-root", str(data_root), "study", "run", str(study.path), "--out", str(study.out_dir), "--dry-run"],
                       capture_output=True, text=True, cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)}, timeout=120)
    assert p.stdout.strip().splitlines()[-1:] == ["NO-TORCH"], p.stdout + p.stderr
    return p.stdout


def test_an_edited_pretraining_makes_its_probe_stale_and_rerun_probes_the_new_backbone(data_root, cache_root, tmp_path):
    study = _study(tmp_path, cache_root, "0.3")
    names = list(study.nodes)
    assert names == ["simclr-s0", "probe-s0"]
    ckpt = study.run_dir(study.nodes["simclr-s0"]) / "checkpoints" / "last.pt"
    probe = study.run_dir(study.nodes["probe-s0"])
    assert run_study(study, data_root=str(data_root), out=io.StringIO(), executor=InProcess()) == 0
    first = json.loads((probe / "result.json").read_text())["inputs"]["eval.backbone"]["sha256"]
    text = _dry_run_without_torch(study, data_root)
    assert text.count("complete: skip") == 2 and "stale" not in text.split("\n", 2)[2]

    edited = _study(tmp_path, cache_root, "0.5")
    text = _dry_run_without_torch(edited, data_root)
    assert "0 complete" in text and "2 stale" in text
    assert "simclr-s0  stale: optim.lr: recorded 0.3, now 0.5" in text
    assert "probe-s0   stale: its input simclr-s0 will run again (stale)" in text
    buf = io.StringIO()
    status(edited, out=buf)
    assert "probe-s0   stale: its input simclr-s0 will run again (stale) (holds a complete run; `study run --rerun` replaces it)" in buf.getvalue()
    assert "complete: skip" not in buf.getvalue()
    with pytest.raises(ReprlabError, match=r"2 run\(s\) hold results of another config or input: simclr-s0 .*probe-s0"):
        run_study(edited, data_root=str(data_root), executor=InProcess())

    # --rerun: the backbone is retrained, then the probe runs again on it (not skipped as complete)
    launcher = InProcess()
    assert run_study(edited, data_root=str(data_root), out=io.StringIO(), executor=launcher, rerun=True) == 0
    assert [a[a.index("--rerun") - 1] for a in launcher.argvs] == ["pretrain", "probe"]
    result = json.loads((probe / "result.json").read_text())
    sha = __import__("hashlib").sha256(ckpt.read_bytes()).hexdigest()
    assert result["inputs"]["eval.backbone"]["sha256"] == sha != first
    assert result["backbone"]["provenance"]["config_hash"] == __import__("torch").load(ckpt, weights_only=False)["provenance"]["config_hash"]
    buf = io.StringIO()
    dry_run(edited, data_root=str(data_root), out=buf)
    assert buf.getvalue().count("complete: skip") == 2

    # the backbone rewritten behind the study's back (same config, same step, other bytes): the probe alone is stale
    import torch

    state = torch.load(ckpt, weights_only=False)
    state["method"] = {k: v + 1 if v.is_floating_point() else v for k, v in state["method"].items()}
    torch.save(state, ckpt)
    buf = io.StringIO()
    dry_run(edited, data_root=str(data_root), out=buf)
    lines = buf.getvalue()
    assert "simclr-s0  complete: skip" in lines and "1 stale" in lines
    assert f"probe-s0   stale: made from another input: eval.backbone {ckpt}: recorded sha256 {sha[:12]}, now sha256 " in lines
