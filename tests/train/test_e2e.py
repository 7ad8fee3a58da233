"""End-to-end runs of the one training loop on the real CIFAR-100 (narrow ResNet, short budgets)."""

import json
import os
import signal
import subprocess
import sys
import tomllib

import pytest
import torch

from helpers_kill import kill_after_checkpoint
from reprlab.cli import main

pytestmark = pytest.mark.realdata

TINY = ["model.kwargs.width=8", "train.batch_size=64", "train.progress=false", "train.eval_batch_size=2000", "train.num_threads=2"]


def _run(argv, capsys=None):
    code = main(argv)
    return code


def _lines(path):
    return [json.loads(x) for x in path.read_text().splitlines()]


def test_short_training_run_writes_a_complete_run_directory(data_root, cache_root, tmp_path, capsys):
    argv = ["--data-root", str(data_root), "train", "--config", "configs/supervised/resnet18_scratch.toml", *TINY,
            f'run.out_dir="{tmp_path}"', 'run.name="e2e"', f'data.cache_dir="{cache_root}"', "data.fraction=0.04",
            "train.epochs=2", "train.log_every_steps=10", "schedule.warmup_epochs=0.0"]
    assert main(argv) == 0
    run = tmp_path / "e2e"
    result = json.loads((run / "result.json").read_text())
    assert result["status"] == "complete" and result["protocol"] == "scratch" and result["steps"] == 2 * (1800 // 64)
    for part in ("val", "test"):
        assert 0.0 <= result[part]["acc1"] <= 100.0 and result[part]["acc1"] <= result[part]["acc5"]
    assert result["best_checkpoint"]["step"] in (28, 56) and result["final_checkpoint"]["step"] == 56
    assert result["final_checkpoint"]["test"] and result["best_checkpoint"]["test"]
    rows = _lines(run / "metrics.jsonl")
    train_rows = [r for r in rows if "train/loss" in r]
    val_rows = [r for r in rows if "val/acc1" in r]
    assert [r["step"] for r in train_rows] == [10, 20, 28, 30, 40, 50, 56]
    assert [r["step"] for r in val_rows] == [28, 56] and all("lr" in r and "train/acc1" in r for r in train_rows)
    cfg = tomllib.loads((run / "config.toml").read_text())
    assert cfg["model"]["kwargs"]["width"] == 8 and cfg["data"]["fraction"] == 0.04
    env = json.loads((run / "env.json").read_text())
    assert env["torch"] == torch.__version__ and "git_sha" in env and env["device"] == "cpu"
    assert (run / "checkpoints" / "last.pt").is_file() and (run / "checkpoints" / "best.pt").is_file()
    assert list((run / "tb").glob("events.out.tfevents.*"))
    ckpt = torch.load(run / "checkpoints" / "last.pt", weights_only=False)
    assert ckpt["model_name"] == "resnet18" and ckpt["model_kwargs"] == {"width": 8} and ckpt["step"] == 56
    # the same command again: complete, skipped, nothing rewritten
    mtime = (run / "result.json").stat().st_mtime_ns
    capsys.readouterr()
    assert main(argv) == 0
    assert (run / "result.json").stat().st_mtime_ns == mtime
    assert f"reprlab: done: {run} (result.json)" in capsys.readouterr().err
    # ... and with another learning rate: refused, naming the key and both values; nothing rewritten
    assert main([*argv, "optim.lr=0.5"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"reprlab: error: run directory {run} holds a complete run with another config")
    assert "optim.lr: recorded 0.1, now 0.5" in err[0] and "--rerun" in err[0]
    assert (run / "result.json").stat().st_mtime_ns == mtime


def _cli(args, env_extra=None, check=True):
    env = {**os.environ, **(env_extra or {})}
    p = subprocess.run([sys.executable, "-m", "reprlab", *args], capture_output=True, text=True, env=env, timeout=600)
    if check and p.returncode != 0:
        raise AssertionError(p.stderr[-3000:])
    return p


def test_sigkill_mid_epoch_then_resume_gives_identical_metrics(data_root, cache_root, tmp_path):
    common = ["--data-root", str(data_root), "train", *TINY, f'data.cache_dir="{cache_root}"', "data.fraction=0.04",
              "train.epochs=2", "train.log_every_steps=4", "train.checkpoint_every_steps=8", "train.deterministic=true",
              'train.precision="fp32"',  # exact resume is pinned for fp32; auto would pick bf16 on some CPUs only
              "optim.lr=0.05", "schedule.name=\"cosine\"", "aug.mix.cutmix_prob=0.5", "train.eval_test=false"]
    _cli([*common, f'run.out_dir="{tmp_path}"', 'run.name="straight"'])
    # SIGKILL from outside once last.pt is past epoch 1 (28 steps/epoch): it lands at or after step 32
    code, s = kill_after_checkpoint([sys.executable, "-m", "reprlab", *common, f'run.out_dir="{tmp_path}"', 'run.name="killed"'], None,
                                    tmp_path / "killed" / "checkpoints" / "last.pt", min_step=29, timeout_s=600)
    assert code == -signal.SIGKILL
    assert not (tmp_path / "killed" / "result.json").exists()
    assert torch.load(tmp_path / "killed" / "checkpoints" / "last.pt", weights_only=False)["step"] == s
    assert 0 < s < 56 and s % 8 == 0 and s % 28 != 0  # a checkpoint mid-epoch 2: 32, 40 or 48
    print(f"killed after the checkpoint at step {s}")
    _cli([*common, f'run.out_dir="{tmp_path}"', 'run.name="killed"'])
    a, b = _lines(tmp_path / "straight" / "metrics.jsonl"), _lines(tmp_path / "killed" / "metrics.jsonl")
    assert a == b and len(a) > 10
    ra, rb = (json.loads((tmp_path / n / "result.json").read_text()) for n in ("straight", "killed"))
    assert ra["val"] == rb["val"] and ra["final_checkpoint"] == rb["final_checkpoint"]
    # the resumed run's time covers both processes: up to the killed one's last checkpoint, then the rest
    assert [(g["from_step"], g["to_step"]) for g in ra["segments"]] == [(0, 56)]
    assert [(g["from_step"], g["to_step"]) for g in rb["segments"]] == [(0, s), (s, 56)]
    assert rb["wall_time_s"] == pytest.approx(sum(g["wall_s"] for g in rb["segments"]), abs=0.1)
    assert rb["throughput_img_s"] == pytest.approx(sum(g["images"] for g in rb["segments"]) / sum(g["train_s"] for g in rb["segments"]), rel=0.01)
    assert rb["segments"][0]["images"] == s * 64 and rb["segments"][1]["images"] == (56 - s) * 64
    wa = torch.load(tmp_path / "straight" / "checkpoints" / "last.pt", weights_only=False)["method"]
    wb = torch.load(tmp_path / "killed" / "checkpoints" / "last.pt", weights_only=False)["method"]
    assert all(torch.equal(wa[k], wb[k]) for k in wa)


def test_non_finite_loss_stops_names_the_step_and_keeps_the_checkpoint(data_root, cache_root, tmp_path):
    # lr jumps to 1e30 after epoch 1 (milestone 1, gamma 1e31): the loss overflows in epoch 2
    p = _cli(["--data-root", str(data_root), "train", *TINY, f'data.cache_dir="{cache_root}"', "data.fraction=0.04",
              f'run.out_dir="{tmp_path}"', 'run.name="nan"', "train.epochs=3", "optim.lr=0.1", "schedule.milestones=[1.0]",
              "schedule.gamma=1e31", "train.log_every_steps=2", "train.eval_test=false"], check=False)
    assert p.returncode == 3, p.stderr[-2000:]
    last = p.stderr.strip().splitlines()[-1]
    assert last.startswith("reprlab: error: non-finite loss at step ") and "Traceback" not in p.stderr
    bad = int(last.split("step ")[1].split()[0])
    assert 28 < bad <= 56
    ckpt = torch.load(tmp_path / "nan" / "checkpoints" / "last.pt", weights_only=False)
    assert ckpt["step"] == 28 and all(torch.isfinite(v).all() for v in ckpt["method"].values() if v.is_floating_point())
    record = json.loads((tmp_path / "nan" / "result.json").read_text())  # a failure record, never a result
    assert record["status"] == "failed" and record["error"].startswith("non-finite loss at step ")


def test_a_full_disk_mid_run_is_one_line_and_keeps_the_last_good_checkpoint(data_root, cache_root, tmp_path, monkeypatch, capsys, record_property):
    """A real tmpfs filled up after the first checkpoint when this process may mount one, else
    the checkpoint writes after the first are simulated to fail with ENOSPC."""
    from helpers_fs import fill, small_tmpfs

    disk = tmp_path / "disk"
    run = disk / "full"
    argv = ["--data-root", str(data_root), "train", *TINY, f'data.cache_dir="{cache_root}"', "data.fraction=0.04", "train.epochs=1",
            "train.log_every_steps=4", "train.checkpoint_every_steps=4", "train.eval_test=false", f'run.out_dir="{disk}"', 'run.name="full"']
    with small_tmpfs(disk, "32m") as real:
        how = "tmpfs" if real else "simulated"
        record_property("fs", how)
        good = 4  # the step of the last checkpoint written before the disk is full
        if real:
            code, good = kill_after_checkpoint([sys.executable, "-m", "reprlab", *argv], None, run / "checkpoints" / "last.pt", min_step=4, timeout_s=600)
            assert code == -signal.SIGKILL
            assert 0 < good < 28 and good % 4 == 0  # mid-run (28 steps)
            assert torch.load(run / "checkpoints" / "last.pt", weights_only=False)["step"] == good
            fill(disk, leave_bytes=64 * 1024)  # room for metrics lines, not for a checkpoint
            p = _cli(argv, check=False)
            code, err = p.returncode, p.stderr
        else:
            from reprlab import io as rio
            from reprlab.train import loop

            state, real_save, real_write = {"saves": 0, "full": False}, loop.atomic_torch_save, rio._RecordingWriter.write

            def save(obj, path):  # the loop's checkpoint writes: every one after the first meets a full disk
                state["full"], state["saves"] = state["saves"] >= 1, state["saves"] + 1
                try:
                    return real_save(obj, path)
                finally:
                    state["full"] = False

            def write(self, data):
                if state["full"]:  # recorded as the real writer records an ENOSPC
                    self.error = OSError(28, "No space left on device")
                    raise self.error
                return real_write(self, data)

            monkeypatch.setattr(loop, "atomic_torch_save", save)
            monkeypatch.setattr(rio._RecordingWriter, "write", write)
            code, err = main(argv), capsys.readouterr().err
        assert code == 2 and "Traceback" not in err, err[-3000:]
        last = err.strip().splitlines()[-1]
        assert last == f"reprlab: error: cannot write {run / 'checkpoints' / 'last.pt'}: no space left on device (the previous last.pt is unchanged)"
        assert torch.load(run / "checkpoints" / "last.pt", weights_only=False)["step"] == good  # the last good checkpoint
        assert not [p.name for p in disk.rglob("*") if ".tmp" in p.name]
        failed = json.loads((run / "result.json").read_text())
        assert failed["status"] == "failed" and failed["error"] == last.removeprefix("reprlab: error: ")
        if real:
            (disk / "filler").unlink()
            _cli(argv)  # space freed: the same command resumes and completes
            assert json.loads((run / "result.json").read_text())["status"] == "complete"
    print(f"full disk: {how}, last good checkpoint at step {good}")  # after capsys.readouterr(), so that the test log shows it


@pytest.mark.parametrize(
    "args, words",
    [
        (["model.name=\"resnet19\""], ["unknown model 'resnet19'", "resnet18"]),
        (["optim.mommentum=0.9"], ["optim.mommentum", "optim.momentum"]),
        (["train.epochs=\"many\""], ["train.epochs", "expected int"]),
    ],
)
def test_bad_input_is_one_line_without_traceback(data_root, cache_root, tmp_path, capsys, args, words):
    code = main(["--data-root", str(data_root), "train", *TINY, f'run.out_dir="{tmp_path}"', f'data.cache_dir="{cache_root}"', *args])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and err[0].startswith("reprlab: error:")
    for w in words:
        assert w in err[0]


def test_missing_data_root_is_one_line(tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("REPRLAB_DATA", raising=False)
    code = main(["--data-root", str(tmp_path / "none"), "train", "data.download=false", f'run.out_dir="{tmp_path}"', f'data.cache_dir="{tmp_path}/c"'])
    err = capsys.readouterr().err.strip().splitlines()
    # the run directory is named first ("reprlab: run directory ... (new run)"), then the one-line error
    assert code == 2 and len(err) == 2 and err[0].startswith("reprlab: run directory ") and "Traceback" not in "\n".join(err)
    assert err[-1].startswith("reprlab: error:") and "cifar-100-python.tar.gz" in err[-1] and "--data-root" in err[-1]
