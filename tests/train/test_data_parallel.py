"""Data-parallel training under torchrun on the CPU: 2 processes, gloo, the code path NCCL
takes on GPUs (DistributedDataParallel, global-batch BatchNorm, gathered losses, sharded
evaluation, rank-0 writes, resume after a restart).

Every test launches ``python -m torch.distributed.run`` in its own process group, bounds it with
a timeout and kills the whole group by PID on the way out, so a hang can never stall CI.
Channels-last is off in these runs: on this CPU oneDNN's float32 NHWC convolutions are far less
exact (conv1's gradient off by ~2e-3 against float64, vs ~2e-6 for NCHW) and the comparison
would measure that instead of the data parallelism. The learning rate is lowered too: a
narrow net after a large first step is chaotic (measured: parameters 3e-7 apart, float32
rounding, gave gradients 2.6 % apart in float64), and a 2-rank sum and a 1-process sum round
differently.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from reprlab.config import load_config
from reprlab.train.task import execute
from helpers_kill import descendant
from helpers_methods import tiny_overrides

pytestmark = [pytest.mark.realdata, pytest.mark.skipif(sys.platform != "linux", reason="torchrun with gloo (Linux)")]
ROOT = Path(__file__).resolve().parents[2]
STEPS = 4
# The same images every step in 1 and 2 processes, and views without randomness: the only
# difference left between the runs is where the arithmetic happens.
COMMON = [f"train.max_steps={STEPS}", "train.epochs=1", "train.batch_size=16", "train.log_every_steps=1", "train.precision=fp32", "train.progress=false",
          "train.num_threads=1", "model.channels_last=false", "data.fraction=0.02", "train.eval_test=false", "train.sync_bn=on",
          "optim.lr=0.01"]
DETERMINISTIC_VIEWS = ["views.crop_scale=[1.0, 1.0]", "views.crop_ratio=[1.0, 1.0]", "views.flip_prob=0.0", "views.jitter_prob=0.0", "views.grayscale_prob=0.0",
                       "views.blur_prob=0.0", "views.solarize_prob=0.0"]
SUPERVISED = ["model.kwargs.width=8", "aug.crop_padding=0", "aug.flip=false"]


def job(name: str, out: Path, data_root: Path, cache: Path) -> dict:
    where = [f'run.out_dir="{out}"', f'run.name="{name}"', f'data.root="{data_root}"', f'data.cache_dir="{cache}"']
    if name == "supervised":
        return {"kind": "train", "config": None, "overrides": SUPERVISED + COMMON + where}
    return {"kind": "pretrain", "config": f"configs/pretrain/{name}_cifar100.toml", "overrides": tiny_overrides(name) + DETERMINISTIC_VIEWS + COMMON + where}


def torchrun(args: list[str], tmp_path: Path, timeout: float = 240.0, on_start=None, restarts: int = 0) -> subprocess.CompletedProcess:
    """``torchrun --nproc-per-node 2 ARGS`` in its own session; killed as a group on timeout."""
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2", "--max-restarts", str(restarts), "--rdzv-backend", "c10d", "--rdzv-endpoint", "localhost:0", *args]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": f"{ROOT}{os.pathsep}{ROOT / 'tests'}"}
    log = open(tmp_path / f"torchrun-{time.monotonic_ns()}.log", "w+")
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        if on_start is not None:
            on_start(proc)
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        raise AssertionError(f"torchrun still running after {timeout:.0f} s: {cmd}") from None
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    log.seek(0)
    return subprocess.CompletedProcess(cmd, proc.returncode, log.read(), "")


def losses(run: Path) -> list[float]:
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines() if line.strip()]
    return [r["train/loss"] for r in rows if "train/loss" in r]


def weights(run: Path) -> dict[str, torch.Tensor]:
    return torch.load(run / "checkpoints" / "last.pt", map_location="cpu", weights_only=False)["method"]


def tree(run: Path) -> list[str]:
    return sorted(str(p.relative_to(run)) for p in run.rglob("*") if "tb" not in p.parts and not p.name.endswith(".lock"))


NAMES = ["supervised", "simclr", "byol", "barlow_twins"]


@pytest.fixture(scope="module")
def equivalence(tmp_path_factory, data_root, cache_root):
    """The same jobs once in this process and once over 2 ranks under torchrun."""
    tmp = tmp_path_factory.mktemp("ddp")
    one, two = tmp / "one", tmp / "two"
    for name in NAMES:
        j = job(name, one, data_root, cache_root)
        execute(load_config(j["config"], j["overrides"]), j["kind"])
    spec = tmp / "jobs.json"
    spec.write_text(json.dumps([job(n, two, data_root, cache_root) for n in NAMES]))
    res = torchrun([str(ROOT / "tests" / "ddp_worker.py"), str(spec)], tmp, timeout=420)
    assert res.returncode == 0, res.stdout[-3000:]
    return one, two, res


@pytest.mark.parametrize("name", NAMES)
def test_two_ranks_at_global_batch_2b_train_like_one_process_at_2b(equivalence, name):
    one, two, _ = equivalence
    a, b = losses(one / name), losses(two / name)
    assert len(a) == len(b) == STEPS
    torch.testing.assert_close(torch.tensor(b), torch.tensor(a), rtol=2e-5, atol=2e-5)
    wa, wb = weights(one / name), weights(two / name)
    assert set(wa) == set(wb)
    floats = [k for k in wa if wa[k].is_floating_point()]
    for k in floats:
        torch.testing.assert_close(wb[k], wa[k], rtol=1e-3, atol=1e-3, msg=lambda m, k=k: f"{name}: {k}: {m}")
    assert all(torch.equal(wb[k], wa[k]) for k in wa if k not in floats)
    # Measured: the 2-rank weights are 5e-8 (SimCLR, Barlow Twins) to 7e-5 (supervised, whose
    # narrow net is the most chaotic) of the weights' norm away from the 1-process ones.
    flat = lambda w: torch.cat([w[k].flatten() for k in floats])  # noqa: E731
    assert (flat(wb) - flat(wa)).norm() <= 2e-4 * flat(wa).norm()
    # evaluation is sharded over the ranks and gathered: the same validation numbers
    ra, rb = (json.loads((d / name / "result.json").read_text()) for d in (one, two))
    for key, value in ra["val"].items():
        assert rb["val"][key] == pytest.approx(value, abs=0.05), key


def test_rank_zero_alone_writes_the_same_run_directory_layout(equivalence):
    one, two, res = equivalence
    for name in NAMES:
        assert tree(two / name) == tree(one / name), name
    ck = torch.load(two / "supervised" / "checkpoints" / "last.pt", map_location="cpu", weights_only=False)
    assert ck["world_size"] == 2 and len(ck["ranks"]) == 2
    # each rank's augmentation stream is its own, and each is saved for the resume
    assert not torch.equal(ck["ranks"][0]["aug_generator"], ck["ranks"][1]["aug_generator"])
    assert res.stdout.count('"run": "supervised"') == 0  # the worker prints nothing; the CLI prints on rank 0 only


def cli_train(out: Path, data_root: Path, cache: Path, *extra: str) -> list[str]:
    return ["-m", "reprlab", "train", *SUPERVISED, *COMMON, f'run.out_dir="{out}"', 'run.name="r"', f'data.root="{data_root}"', f'data.cache_dir="{cache}"', *extra]


def test_a_bad_config_under_torchrun_stops_every_rank_with_one_line(tmp_path, data_root, cache_root):
    t0 = time.monotonic()
    res = torchrun(cli_train(tmp_path, data_root, cache_root, "train.batch_sise=16"), tmp_path, timeout=120)
    assert res.returncode != 0
    assert res.stdout.count("reprlab: error: unknown config key 'train.batch_sise'") == 2, res.stdout[-2000:]  # both ranks
    assert time.monotonic() - t0 < 90
    # a batch that does not divide over the ranks, found inside the run
    res = torchrun(cli_train(tmp_path, data_root, cache_root, "train.batch_size=15"), tmp_path, timeout=120)
    assert res.returncode != 0 and res.stdout.count("train.batch_size=15 does not divide over 2 ranks") == 2, res.stdout[-2000:]
    # rank 0's decision about the run directory reaches rank 1: a changed config is refused on both
    res = torchrun(cli_train(tmp_path, data_root, cache_root, "train.max_steps=2"), tmp_path, timeout=180)
    assert res.returncode == 0, res.stdout[-2000:]
    res = torchrun(cli_train(tmp_path, data_root, cache_root, "train.max_steps=3"), tmp_path, timeout=120)
    assert res.returncode != 0 and res.stdout.count("reprlab: error: run directory") == 2, res.stdout[-2000:]


def _rank_pid(parent: int, rank: int) -> int | None:
    """The PID of the first-attempt worker of ``rank`` among ``parent``'s descendants (/proc)."""
    return descendant(parent, environ=(f"RANK={rank}".encode(), b"TORCHELASTIC_RESTART_COUNT=0"))


def _kill_rank_one_after_a_checkpoint(run: Path, min_step: int, killed: dict):
    """torchrun's ``on_start``: SIGKILL rank 1 (by PID) once ``run`` has a checkpoint at ``min_step`` or later."""
    from reprlab.train.rundir import checkpoint_step

    def kill(proc):
        last = run / "checkpoints" / "last.pt"
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline and proc.poll() is None:
            try:
                step = checkpoint_step(last) if last.is_file() else 0
            except Exception:
                step = 0  # being replaced
            if step >= min_step:
                pid = _rank_pid(proc.pid, 1)
                if pid:
                    os.kill(pid, signal.SIGKILL)
                    killed["at"] = step
                    return
            time.sleep(0.05)

    return kill


def test_a_rank_that_dies_without_restarts_is_named_by_the_survivor_and_in_result_json(tmp_path, data_root, cache_root):
    killed: dict = {}
    steps = ["train.max_steps=50", "train.checkpoint_every_steps=2", "train.log_every_steps=2"]
    res = torchrun(cli_train(tmp_path, data_root, cache_root, *steps), tmp_path, timeout=240, on_start=_kill_rank_one_after_a_checkpoint(tmp_path / "r", 2, killed))
    assert killed and res.returncode != 0, res.stdout[-3000:]
    record = json.loads((tmp_path / "r" / "result.json").read_text())
    assert record["status"] == "failed" and record["error"].startswith("rank 1 died (signal 9)"), (record, res.stdout[-3000:])
    assert "reprlab: error: rank 1 died (signal 9); the run stopped on every rank" in res.stdout, res.stdout[-3000:]
    assert "Connection closed by peer" not in res.stdout, res.stdout[-3000:]


def test_a_run_directory_in_use_stops_every_rank_with_the_same_line(tmp_path, data_root, cache_root):
    from reprlab.io import FileLock

    with FileLock(tmp_path / "r" / ".lock"):  # another process holds the run directory
        res = torchrun(cli_train(tmp_path, data_root, cache_root, "train.max_steps=2"), tmp_path, timeout=120)
    assert res.returncode != 0
    line = f"reprlab: error: run directory {tmp_path / 'r'} is in use by another process"
    assert res.stdout.count(line) == 2, res.stdout[-3000:]  # both ranks, the same line
    assert "Connection closed by peer" not in res.stdout and "DistBackendError" not in res.stdout, res.stdout[-3000:]


def test_a_killed_rank_is_restarted_by_torchrun_and_the_run_finishes_as_if_uninterrupted(tmp_path, data_root, cache_root):
    steps = ["train.max_steps=12", "train.checkpoint_every_steps=4", "train.log_every_steps=2"]
    clean = torchrun(cli_train(tmp_path / "clean", data_root, cache_root, *steps), tmp_path, timeout=240)
    assert clean.returncode == 0, clean.stdout[-2000:]
    killed: dict = {}
    res = torchrun(cli_train(tmp_path / "killed", data_root, cache_root, *steps), tmp_path, timeout=300,
                   on_start=_kill_rank_one_after_a_checkpoint(tmp_path / "killed" / "r", 4, killed), restarts=1)
    assert killed, "no checkpoint to kill after"
    assert res.returncode == 0, res.stdout[-3000:]
    assert "resuming" in res.stdout
    a, b = (json.loads((tmp_path / d / "r" / "result.json").read_text()) for d in ("clean", "killed"))
    assert b["val"] == a["val"] and b["steps"] == a["steps"] == 12
    assert losses(tmp_path / "killed" / "r") == losses(tmp_path / "clean" / "r")
    wa, wb = weights(tmp_path / "clean" / "r"), weights(tmp_path / "killed" / "r")
    assert all(torch.equal(wa[k], wb[k]) for k in wa)
    assert len(b["segments"]) == 2


def test_study_gpus_per_run_launches_each_training_run_under_torchrun(tmp_path, data_root, cache_root):
    # On CPU a run of `study run --gpus-per-run 2` is 2 gloo processes: the same path as 2 GPUs.
    study = tmp_path / "s.toml"
    over = ", ".join(json.dumps(o) for o in [*SUPERVISED, *COMMON, f'data.cache_dir="{cache_root}"'])
    study.write_text(f'[study]\nname = "dp"\nout_dir = "{tmp_path / "out"}"\n[[run]]\nname = "a"\ncommand = "train"\noverrides = [{over}]\n')
    dry = subprocess.run([sys.executable, "-m", "reprlab", "study", "run", str(study), "--dry-run", "--gpus-per-run", "2"], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert dry.returncode == 0, dry.stderr
    assert "torchrun --standalone --nproc-per-node 2 -m reprlab train" in dry.stdout, dry.stdout
    proc = subprocess.Popen([sys.executable, "-m", "reprlab", "--data-root", str(data_root), "study", "run", str(study), "--gpus-per-run", "2"], cwd=ROOT,
                            env={**os.environ, "OMP_NUM_THREADS": "1"}, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)
    try:
        out, _ = proc.communicate(timeout=300)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    assert proc.returncode == 0, out[-2000:]
    ck = torch.load(tmp_path / "out" / "a" / "checkpoints" / "last.pt", map_location="cpu", weights_only=False)
    assert ck["world_size"] == 2  # trained by two ranks
    assert json.loads((tmp_path / "out" / "a" / "result.json").read_text())["steps"] == STEPS
