"""The run directory's contract, without training: a changed config is refused (complete or
partial run), --rerun replaces a run, failures are recorded in result.json, operating-system
errors are one line, and the run directory is printed at the start and the end."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import torch

from helpers_fs import read_only
from reprlab.cli import main
from reprlab.config import load_config
from reprlab.errors import ReprlabError
from reprlab.train.task import run_once


def _cfg(tmp_path: Path, *extra: str):
    return load_config(None, [f'run.out_dir="{tmp_path}"', 'run.name="x"', "train.device=\"cpu\"", "train.progress=false", *extra])


def _body(calls: list, value: float = 1.0, fail: Exception | None = None, checkpoint: bool = True):
    def body(run, device, name):
        calls.append(name)
        if checkpoint:
            torch.save({"step": 3}, run.last)
        if fail is not None:
            raise fail
        return {"run": name, "status": "complete", "task": "train", "group": "x", "seed": 0, "val": {"acc1": value}}

    return body


def test_a_finished_run_refuses_a_changed_config_naming_keys_and_values(tmp_path, capsys):
    calls: list = []
    first = run_once(_cfg(tmp_path, "optim.lr=0.1", "train.max_steps=10"), "train", None, _body(calls, 1.0))
    assert first["val"]["acc1"] == 1.0 and calls == ["x"]
    with pytest.raises(ReprlabError) as e:
        run_once(_cfg(tmp_path, "optim.lr=0.5", "train.max_steps=12"), "train", None, _body(calls, 2.0))
    msg = str(e.value)
    assert "\n" not in msg and calls == ["x"]
    assert f"run directory {tmp_path / 'x'} holds a complete run with another config" in msg
    assert "optim.lr: recorded 0.1, now 0.5" in msg and "train.max_steps: recorded 10, now 12" in msg
    assert "run.name" in msg and "--rerun" in msg
    assert json.loads((tmp_path / "x" / "result.json").read_text())["val"]["acc1"] == 1.0  # nothing was touched


def test_a_partial_run_refuses_a_changed_config_too(tmp_path):
    calls: list = []
    with pytest.raises(ReprlabError):
        run_once(_cfg(tmp_path, "optim.lr=0.1"), "train", None, _body(calls, fail=ReprlabError("stopped")))
    with pytest.raises(ReprlabError, match=r"holds a partial run \(checkpoint at step 3\) with another config \(optim\.lr: recorded 0\.1, now 0\.2\)"):
        run_once(_cfg(tmp_path, "optim.lr=0.2"), "train", None, _body(calls))
    assert calls == ["x"]


def test_keys_that_change_neither_what_nor_where_do_not_count(tmp_path, capsys):
    calls: list = []
    run_once(_cfg(tmp_path), "train", None, _body(calls))
    again = run_once(_cfg(tmp_path, "train.progress=true", 'run.group="other"'), "train", None, _body(calls, 9.0))
    assert again["val"]["acc1"] == 1.0 and calls == ["x"]
    assert "already complete" in capsys.readouterr().err


def test_rerun_replaces_the_old_run_and_keeps_the_study_log(tmp_path, capsys):
    calls: list = []
    run_once(_cfg(tmp_path, "optim.lr=0.1"), "train", None, _body(calls, 1.0))
    run = tmp_path / "x"
    (run / "log.txt").write_text("the study runner's log\n")
    (run / "features.pt").write_bytes(b"old features")
    out = run_once(_cfg(tmp_path, "optim.lr=0.5"), "train", None, _body(calls, 2.0, checkpoint=False), rerun=True)
    assert out["val"]["acc1"] == 2.0 and calls == ["x", "x"]
    assert not (run / "checkpoints" / "last.pt").exists() and not (run / "features.pt").exists()
    assert (run / "log.txt").read_text() == "the study runner's log\n"
    assert 'lr = 0.5' in (run / "config.toml").read_text()
    assert "--rerun: removed the previous run" in capsys.readouterr().err
    # --rerun of a complete run with the same config runs it again as well
    run_once(_cfg(tmp_path, "optim.lr=0.5"), "train", None, _body(calls, 3.0), rerun=True)
    assert calls == ["x", "x", "x"] and json.loads((run / "result.json").read_text())["val"]["acc1"] == 3.0


def test_a_failed_run_records_its_error_and_a_successful_rerun_replaces_it(tmp_path):
    calls: list = []
    with pytest.raises(ReprlabError):
        run_once(_cfg(tmp_path, 'eval.backbone="random-init"'), "probe", None, _body(calls, fail=ReprlabError("imagenet weights: download failed (offline)"), checkpoint=False))
    failed = json.loads((tmp_path / "x" / "result.json").read_text())
    assert failed["status"] == "failed" and failed["error"] == "imagenet weights: download failed (offline)"
    assert {"run": "x", "task": "probe", "seed": 0}.items() <= failed.items() and failed["group"] == "x"
    ok = run_once(_cfg(tmp_path, 'eval.backbone="random-init"'), "probe", None, _body(calls, 5.0, checkpoint=False))
    assert ok["status"] == "complete" and json.loads((tmp_path / "x" / "result.json").read_text())["status"] == "complete"


def test_a_bug_is_recorded_too_and_keeps_its_traceback(tmp_path):
    with pytest.raises(ZeroDivisionError):
        run_once(_cfg(tmp_path), "train", None, _body([], fail=ZeroDivisionError("division by zero")))
    failed = json.loads((tmp_path / "x" / "result.json").read_text())
    assert failed["status"] == "failed" and failed["error"] == "ZeroDivisionError: division by zero"


def test_a_read_only_out_dir_is_one_line(tmp_path, monkeypatch, capsys, record_property):
    ro = tmp_path / "ro"
    with read_only(ro, monkeypatch) as how:
        record_property("fs", how)
        code = main(["--data-root", str(tmp_path / "none"), "train", "data.download=false", f'run.out_dir="{ro}"', 'run.name="r"',
                     f'data.cache_dir="{tmp_path}/cache"', "train.progress=false"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and "Traceback" not in "\n".join(err)
    assert err[-1] == f"reprlab: error: cannot create folder {ro / 'r'}: read-only file system"
    print(f"read-only out_dir: {how}")  # after capsys.readouterr(), so that the test log shows it


def test_the_run_directory_is_printed_at_the_start_and_in_the_final_line(tmp_path, capsys, monkeypatch):
    calls: list = []
    run_once(_cfg(tmp_path), "train", None, _body(calls))
    err = capsys.readouterr().err.splitlines()
    assert err[0] == f"reprlab: run directory {tmp_path / 'x'} (new run)"


    monkeypatch.setattr("reprlab.train.task.execute", lambda cfg, kind, config_path=None, rerun=False, recipe=None: {"run": "x", "val": {"acc1": 1.0}})
    assert main(["train", f'run.out_dir="{tmp_path}"', 'run.name="x"']) == 0
    cap = capsys.readouterr()
    assert json.loads(cap.out)["val"] == {"acc1": 1.0}
    assert cap.err.splitlines()[-1] == f"reprlab: done: {tmp_path / 'x'} (result.json)"


def test_a_metrics_write_on_a_full_disk_is_one_line(tmp_path, monkeypatch):
    """Simulated: the metrics file's write raises ENOSPC (a real full disk is in test_train_e2e)."""
    import errno

    from reprlab.train.rundir import MetricsLogger, RunDir

    run = RunDir(tmp_path / "r")
    run.ckpt_dir.mkdir(parents=True)
    logger = MetricsLogger(run, None, tensorboard=False)

    class Full:
        def write(self, s):
            raise OSError(errno.ENOSPC, "No space left on device")

        def flush(self):
            pass

        def close(self):
            pass

    logger._fh = Full()
    with pytest.raises(ReprlabError, match=re.escape(f"cannot write {run.metrics_file}: no space left on device")):
        logger.log(1, 0.1, {"train/loss": 1.0})


def test_a_checkpoint_on_a_full_disk_leaves_no_temp_file_and_keeps_the_last_one(tmp_path, record_property):
    """The run directory's checkpoint writers on a real full tmpfs (skipped where this process
    may not mount one; tests/test_io.py simulates the same failure)."""
    from helpers_fs import fill, small_tmpfs
    from reprlab.train.rundir import atomic_copy as copy_atomic
    from reprlab.train.rundir import atomic_torch_save

    disk = tmp_path / "disk"
    with small_tmpfs(disk, "1m") as real:
        if not real:
            pytest.skip("mounting a tmpfs is not allowed here")
        record_property("fs", "tmpfs")
        print("full disk: tmpfs")
        atomic_torch_save({"step": 1}, disk / "last.pt")
        atomic_torch_save({"step": 1}, disk / "best.pt")
        big = disk / "big.pt"
        atomic_torch_save({"w": torch.ones(100_000)}, big)  # 400 kB
        fill(disk, leave_bytes=16 * 1024)
        for call in (lambda: atomic_torch_save({"step": 2, "w": torch.ones(200_000)}, disk / "last.pt"), lambda: copy_atomic(big, disk / "best.pt")):
            with pytest.raises(ReprlabError, match="no space left on device"):
                call()
            assert not [p.name for p in disk.iterdir() if ".tmp" in p.name]
        assert torch.load(disk / "last.pt", weights_only=False)["step"] == 1 and torch.load(disk / "best.pt", weights_only=False)["step"] == 1


def test_a_resume_removes_the_temporary_file_of_a_writer_killed_mid_checkpoint(tmp_path, capsys):
    import os
    import signal
    import subprocess
    import sys

    calls: list = []
    with pytest.raises(ReprlabError):  # a partial run: last.pt at step 3
        run_once(_cfg(tmp_path), "train", None, _body(calls, fail=ReprlabError("stopped")))
    ckpt_dir = tmp_path / "x" / "checkpoints"
    # a writer SIGKILLed inside atomic_write (its cleanup never runs): its temporary file stays
    code = ("import sys, time\nfrom reprlab.io import atomic_write\nwith atomic_write(sys.argv[1]) as f:\n"
            "    f.write(b'0' * 1000000); f.flush(); print('writing', flush=True); time.sleep(60)")
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    writer = subprocess.Popen([sys.executable, "-c", code, str(ckpt_dir / "last.pt")], stdout=subprocess.PIPE, env=env)
    live = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])  # a writer that is still alive
    try:
        assert writer.stdout.readline() == b"writing\n"
        os.kill(writer.pid, signal.SIGKILL)
        writer.wait(timeout=30)
        orphan, busy = ckpt_dir / f".last.pt.tmp{writer.pid}", ckpt_dir / f".best.pt.tmp{live.pid}"
        assert orphan.stat().st_size == 1000000
        busy.write_bytes(b"x")
        capsys.readouterr()
        run_once(_cfg(tmp_path), "train", None, _body(calls))  # the same command: resumes, and cleans up
        assert calls == ["x", "x"] and not orphan.exists() and busy.exists()
        assert f"removed temporary files of a killed writer (checkpoints/.last.pt.tmp{writer.pid})" in capsys.readouterr().err
    finally:
        for p in (writer, live):
            if p.poll() is None:
                p.kill()
                p.wait(timeout=30)
        if writer.stdout:
            writer.stdout.close()
