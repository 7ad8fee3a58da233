"""The GPU check: speed, host-device syncs and memory of reprlab's own training path, in one go.

Run by ``benchmarks/gpu_check.sh`` on one GPU (under 8 minutes on an H100/H200); ``--device cpu
--tiny`` runs the same code in seconds on a CPU (what the test suite does). Synthetic uint8 data
of CIFAR-100's shape (45k train, 5k val, 10k test, 32 px, 100 classes), held on the device.

Rows (all bf16 autocast, channels_last, ResNet-18 at full width):

* ``simclr_b512``, ``simclr_b512_compile`` — SimCLR pretraining step (two views of 512 images),
  eager and under ``model.compile=true``;
* ``scratch_b128``, ``scratch_b128_compile`` — the supervised scratch recipe's step (batch 128);
* ``probe_features`` — the cached probe's feature extraction over train + val + test.

Each training row calls ``reprlab.train.loop.fit`` itself (the product's loop, method, views and
logging), with evaluation switched off. Timing: the loop syncs the host once per logging
interval (``train.log_every_steps``); the time between the starts of the steps right after two
such syncs is device time, whatever the host ran ahead. The first interval (warm-up, cuDNN
autotuning, compilation) is left out of the steady state and reported as ``first_interval_s``;
``compile_s`` is what it cost beyond steady-state steps. Syncs are counted with
``torch.cuda.set_sync_debug_mode("warn")`` (every synchronising call warns once): per step in
total and inside the method's ``training_step``. On a CPU neither syncs nor device memory exist:
those fields are ``null`` and ``sync_counting`` says so.

    python benchmarks/gpu_check.py --device cuda --out benchmarks/results/gpu_check.json
    python benchmarks/gpu_check.py --device cpu --tiny --out /tmp/gpu_check.json
"""

from __future__ import annotations

import argparse
import functools
import json
import math
import platform
import sys
import tempfile
import time
import warnings
from pathlib import Path

import torch

from reprlab.config import load_config
from reprlab.data.device import stats_tensors
from reprlab.data.types import ImageSet, Splits
from reprlab.eval.features import extract_features
from reprlab.models import create_model
from reprlab.runtime import resolve_precision, seed_everything
from reprlab.train.loop import fit
from reprlab.train.rundir import RunDir

MEAN, STD = (0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762)
CONFIGS = Path(__file__).resolve().parents[1] / "configs"
SCHEMA = "reprlab.gpu_check/1"

#: name -> (task, config file, batch size, compile)
TRAIN_ROWS = {
    "simclr_b512": ("simclr", "pretrain/simclr_cifar100.toml", 512, False),
    "simclr_b512_compile": ("simclr", "pretrain/simclr_cifar100.toml", 512, True),
    "scratch_b128": ("scratch", "supervised/resnet18_scratch.toml", 128, False),
    "scratch_b128_compile": ("scratch", "supervised/resnet18_scratch.toml", 128, True),
}
ROWS = (*TRAIN_ROWS, "probe_features")


# ---------------------------------------------------------------------------------------------
# setup


def synthetic_splits(n_train: int, n_val: int, n_test: int, device: torch.device) -> Splits:
    """Random uint8 images and labels of CIFAR-100's shape (content does not change speed)."""
    g = torch.Generator().manual_seed(0)

    def part(n: int) -> ImageSet:
        x = torch.randint(0, 256, (n, 3, 32, 32), dtype=torch.uint8, generator=g).to(device)
        return ImageSet(x, torch.randint(0, 100, (n,), generator=g).to(device), [f"c{i}" for i in range(100)])

    return Splits(part(n_train), part(n_val), part(n_test), "cifar100", MEAN, STD)


class SyncCounter:
    """Counts synchronising CUDA calls (set_sync_debug_mode warns on each); inert on a CPU."""

    def __init__(self, device: torch.device) -> None:
        self.active = device.type == "cuda"
        self.n = 0

    def __enter__(self) -> "SyncCounter":
        if self.active:
            self._cm = warnings.catch_warnings()
            self._cm.__enter__()
            warnings.simplefilter("always")
            self._prev_show = warnings.showwarning
            warnings.showwarning = self._show
            torch.cuda.set_sync_debug_mode("warn")
        return self

    def _show(self, message, category, *a, **k) -> None:
        if "synchroniz" in str(message):
            self.n += 1
        else:
            self._prev_show(message, category, *a, **k)

    def __exit__(self, *exc) -> None:
        if self.active:
            torch.cuda.set_sync_debug_mode(0)
            warnings.showwarning = self._prev_show
            self._cm.__exit__(*exc)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _reset_memory(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)


def _peak_gib(device: torch.device) -> float | None:
    return round(torch.cuda.max_memory_allocated(device) / 2**30, 3) if device.type == "cuda" else None


# ---------------------------------------------------------------------------------------------
# training rows: the product's loop, timed between its own logging syncs


def train_row(name: str, splits: Splits, device: torch.device, tiny: bool, log_every: int, intervals: int) -> dict:
    task, config, batch, compiled = TRAIN_ROWS[name]
    if tiny:
        batch = 32
    over = [f"train.batch_size={batch}", "train.precision=\"bf16\"", f"train.device=\"{device}\"", f"model.compile={str(compiled).lower()}"]
    if tiny:
        over += ["model.kwargs.width=8"]
    cfg = load_config(CONFIGS / config, over)
    return {"name": name, "task": task, "batch_size": batch, "precision": "bf16", "compile": compiled,
            **time_fit(cfg, task, splits, device, log_every, intervals)}


def time_fit(cfg, task: str, splits: Splits, device: torch.device, log_every: int, intervals: int) -> dict:
    """Run ``fit`` for ``intervals + 1`` logging intervals (plus one step) of ``cfg`` and time it.

    The first interval is warm-up (and compilation); the steady state is the time between the
    starts of the steps right after the first and the last logging sync.
    """
    from dataclasses import replace

    from reprlab.train.task import build_method

    steps = log_every * (intervals + 1) + 1  # stamps at every logging step up to the last one
    t = cfg.train
    cfg = replace(cfg, train=replace(t, max_steps=steps, epochs=max(t.epochs, 1000), progress=False, log_every_steps=log_every,
                                     checkpoint_every_steps=0, eval_test=False))
    batch = cfg.train.batch_size
    seed_everything(0, deterministic=False)  # cudnn.benchmark on, as in every real run
    torch._dynamo.reset()  # every row compiles afresh (and stays under dynamo's recompile limit)
    _reset_memory(device)
    counter = SyncCounter(device)
    stamps: list[float] = []
    syncs_at: list[int] = []
    inside: list[int] = []
    with tempfile.TemporaryDirectory() as tmp, counter:
        run = RunDir(Path(tmp) / "run")
        run.open(cfg, device)
        method = build_method(cfg, "pretrain" if task == "simclr" else "train", splits, device)
        method.eval_due = lambda epoch, last: False  # time the steps, not the monitor
        original = method.training_step

        def timed_step(*args, **kwargs):
            stamps.append(time.perf_counter())
            syncs_at.append(counter.n)
            out = original(*args, **kwargs)
            inside.append(counter.n - syncs_at[-1])
            return out

        method.training_step = timed_step
        t0 = time.perf_counter()
        fit(cfg, method, splits.train, run, device)
        _sync(device)
        wall = time.perf_counter() - t0
        run.unlock()
    a, b = log_every, log_every * (intervals + 1)  # first stamp after the 1st and the last sync
    n_steps = b - a
    s_per_step = (stamps[b] - stamps[a]) / n_steps
    first = stamps[a] - stamps[0]
    steps_per_epoch = len(splits.train) // batch
    counted = counter.active
    gaps = sorted(y - x for x, y in zip(stamps[a:b], stamps[a + 1 : b + 1]))
    return {
        "steps_timed": n_steps, "s_per_step": s_per_step,
        # on a CPU every step is synchronous: the median step is robust to bursts of other load
        "s_per_step_median": gaps[len(gaps) // 2] if device.type == "cpu" else None, "s_per_epoch": s_per_step * steps_per_epoch,
        "img_per_s": batch / s_per_step, "steps_per_epoch": steps_per_epoch,
        "first_interval_s": first, "compile_s": max(first - a * s_per_step, 0.0) if cfg.model.compile else None,
        "syncs_per_step": (syncs_at[b] - syncs_at[a]) / n_steps if counted else None,
        "method_syncs_per_step": sum(inside[a:b]) / n_steps if counted else None,
        "peak_mem_gib": _peak_gib(device), "wall_s": wall,
    }


# ---------------------------------------------------------------------------------------------
# the cached probe's feature extraction (the function cached_probe calls, split by split)


def features_row(splits: Splits, device: torch.device, tiny: bool, repeats: int = 2) -> dict:
    model = create_model("resnet18", num_classes=0, **({"width": 8} if tiny else {})).to(device)
    model = model.to(memory_format=torch.channels_last)
    mean, std = stats_tensors(MEAN, STD, device)
    amp = resolve_precision("bf16", device)
    parts = [splits.train.images, splits.val.images, splits.test.images]
    n = sum(len(p) for p in parts)
    seed_everything(0, deterministic=False)
    extract_features(model, parts[1], mean, std, 1000, device, 32, True, amp).cpu()  # warm-up, autotuning
    _reset_memory(device)
    counter = SyncCounter(device)
    times = []
    with counter:
        for _ in range(repeats):
            t = time.perf_counter()
            for p in parts:
                extract_features(model, p, mean, std, 1000, device, 32, True, amp).cpu()
            times.append(time.perf_counter() - t)
    s = min(times)
    batches = sum(math.ceil(len(p) / 1000) for p in parts)
    return {
        "name": "probe_features", "task": "features", "batch_size": 1000, "precision": "bf16", "compile": False,
        "images": n, "s_per_epoch": s, "img_per_s": n / s,
        "syncs_per_batch": counter.n / (repeats * batches) if counter.active else None,
        "peak_mem_gib": _peak_gib(device),
    }


# ---------------------------------------------------------------------------------------------
# report


def table(rows: list[dict]) -> str:
    head = f"{'row':<22}{'s/epoch':>9}{'s/step':>9}{'img/s':>10}{'compile s':>11}{'syncs/step':>12}{'in step':>9}{'peak GiB':>10}"
    def fmt(v, spec: str) -> str:
        return format("-", ">" + spec.split(".")[0]) if v is None else format(v, spec)

    lines = [head]
    for r in rows:
        syncs = r.get("syncs_per_step", r.get("syncs_per_batch"))
        lines.append(f"{r['name']:<22}{fmt(r['s_per_epoch'], '9.2f')}{fmt(r.get('s_per_step'), '9.4f')}{fmt(r['img_per_s'], '10.0f')}"
                     f"{fmt(r.get('compile_s'), '11.1f')}{fmt(syncs, '12.2f')}{fmt(r.get('method_syncs_per_step'), '9.2f')}{fmt(r['peak_mem_gib'], '10.2f')}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--tiny", action="store_true", help="narrow model, small data, few steps, aot_eager compile: checks the script in seconds")
    ap.add_argument("--rows", default=",".join(ROWS), help="comma-separated subset of: " + ", ".join(ROWS))
    ap.add_argument("--log-every", type=int, default=0, help="steps per timing interval (default 20; tiny 2)")
    ap.add_argument("--intervals", type=int, default=0, help="timed intervals per training row (default 5; tiny 2)")
    ap.add_argument("--compile-backend", default="", help="torch.compile backend (default inductor; tiny aot_eager)")
    ap.add_argument("--out", default="benchmarks/results/gpu_check.json")
    args = ap.parse_args(argv)
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        print("gpu_check: no CUDA device; use --device cpu --tiny to check the script", file=sys.stderr)
        return 2
    rows = [r.strip() for r in args.rows.split(",") if r.strip()]
    unknown = sorted(set(rows) - set(ROWS))
    if unknown:
        print(f"gpu_check: unknown rows {unknown}; known: {', '.join(ROWS)}", file=sys.stderr)
        return 2
    log_every = args.log_every or (2 if args.tiny else 20)
    intervals = args.intervals or (2 if args.tiny else 5)
    backend = args.compile_backend or ("aot_eager" if args.tiny else "inductor")
    if backend != "inductor":  # the methods call torch.compile(module); pick the backend for them
        torch.compile = functools.partial(torch.compile, backend=backend)
    splits = synthetic_splits(*((512, 64, 128) if args.tiny else (45_000, 5_000, 10_000)), device)
    t0 = time.perf_counter()
    results = []
    for name in rows:
        r = features_row(splits, device, args.tiny) if name == "probe_features" else train_row(name, splits, device, args.tiny, log_every, intervals)
        results.append(r)
        print(f"[{time.perf_counter() - t0:6.1f}s] {name} done", file=sys.stderr, flush=True)
    info = {
        "schema": SCHEMA,
        "device": str(device),
        "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or platform.machine(),
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "tiny": args.tiny,
        "compile_backend": backend,
        "data": {"train": len(splits.train), "val": len(splits.val), "test": len(splits.test), "shape": [3, 32, 32], "dtype": "uint8"},
        "log_every_steps": log_every,
        "sync_counting": "torch.cuda.set_sync_debug_mode('warn')" if device.type == "cuda" else f"n/a on {device.type} (no host-device syncs to count)",
        "peak_memory": "torch.cuda.max_memory_allocated" if device.type == "cuda" else f"n/a on {device.type}",
        "rows": results,
        "total_s": round(time.perf_counter() - t0, 1),
    }
    print(f"# gpu_check on {info['device_name']} ({device}), torch {torch.__version__}, bf16, synthetic CIFAR-100-shaped uint8 data"
          + (" [tiny]" if args.tiny else ""))
    print(table(results))
    print(f"# syncs: {info['sync_counting']}; total {info['total_s']} s")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(info, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
