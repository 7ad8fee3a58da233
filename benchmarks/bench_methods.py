"""Step time of every self-supervised method relative to SimCLR's, same backbone, batch and
precision, measured in one run (rounds interleaved, so machine load hits every method alike).

    python benchmarks/bench_methods.py                        # width 16, batch 256, bf16 on CPU
    python benchmarks/bench_methods.py --width 64 --batch 512 --device cuda

Each method runs its own recipe (configs/pretrain/<m>_cifar100.toml: heads, views, multi-crop)
through the loop's own ``train_step`` (hooks included) on a uint8 batch of CIFAR-100's shape.
The images are random: step time does not depend on their content.
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import sys
import time
from pathlib import Path

import torch

from reprlab.config import load_config
from reprlab.data.types import ImageSet, Splits
from reprlab.methods.base import StepContext
from reprlab.methods.ssl import SSLMethod
from reprlab.registry import METHODS
from reprlab.train.loop import train_step
from reprlab.train.optim import build_optimizer, param_groups


def build(name: str, width: int, batch: int, precision: str, device: torch.device, overrides: tuple[str, ...] = ()):
    """A function timing ``n`` steps of method ``name`` (its ``.method``: the method built)."""
    cfg = load_config(f"configs/pretrain/{name}_cifar100.toml", [f"model.kwargs.width={width}", f"train.batch_size={batch}", f"train.precision={precision}", *overrides])
    g = torch.Generator().manual_seed(0)
    imgs = torch.randint(0, 256, (batch, 3, 32, 32), dtype=torch.uint8, generator=g)
    s = ImageSet(imgs, torch.randint(0, 100, (batch,), generator=g), [str(i) for i in range(100)])  # CIFAR-100's classes (the online probe's)
    splits = Splits(s, s, None, "cifar100", (0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762), {})
    torch.manual_seed(0)
    method = METHODS.get(name)(cfg, splits, device).to(device)
    if cfg.model.channels_last:
        method.to(memory_format=torch.channels_last)
    opt = build_optimizer(param_groups(method.named_trainable(), 1e-5, True), cfg.optim)
    scaler = torch.amp.GradScaler(device.type, enabled=False)
    amp = torch.bfloat16 if precision == "bf16" else None
    autocast = (lambda: torch.autocast(device.type, dtype=amp)) if amp else contextlib.nullcontext
    gen = torch.Generator(device=device).manual_seed(0)
    x, y = imgs.to(device), s.labels.to(device)
    method.set_train_mode()
    step = [0]

    def run(n: int) -> float:
        if device.type == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        for _ in range(n):
            train_step(method, opt, scaler, x, y, gen, StepContext(step[0], 10**6, 10**3), 0.0, autocast)
            step[0] += 1
        if device.type == "cuda":
            torch.cuda.synchronize()
        return (time.perf_counter() - t0) / n

    run.method = method
    return run, sum(p.numel() for _, p, _ in method.named_trainable()), len(method.views)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--width", type=int, default=16)
    p.add_argument("--batch", type=int, default=256)
    p.add_argument("--precision", default="bf16", choices=["bf16", "fp32"])
    p.add_argument("--device", default="cpu")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--steps", type=int, default=3, help="steps per method per round")
    p.add_argument("--methods", nargs="*", default=None)
    p.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "methods_step_time.md")
    args = p.parse_args()
    device = torch.device(args.device)
    names = args.methods or [n for n in METHODS.names() if issubclass(METHODS.get(n), SSLMethod)]
    names = ["simclr"] + [n for n in names if n != "simclr"]
    runners = {}
    for n in names:
        run, params, crops = build(n, args.width, args.batch, args.precision, device)
        run(1)  # warm-up (allocations, kernels)
        runners[n] = (run, params, crops)
    times: dict[str, list[float]] = {n: [] for n in names}
    for r in range(args.rounds):
        for n in names:
            times[n].append(runners[n][0](args.steps))
        print(f"round {r + 1}/{args.rounds}: " + ", ".join(f"{n} {times[n][-1]:.3f}s" for n in names), file=sys.stderr, flush=True)
    base = statistics.median(times["simclr"])
    lines = [
        f"# Method step time relative to SimCLR ({args.device}, ResNet-18 width {args.width}, batch {args.batch}, {args.precision})",
        "",
        f"`python benchmarks/bench_methods.py --width {args.width} --batch {args.batch} --precision {args.precision} --device {args.device}`;"
        f" median of {args.rounds} interleaved rounds of {args.steps} steps; each method's recipe (heads, views).",
        "",
        "| method | crops per image | trainable params | step time (s) | relative to SimCLR |",
        "|---|---:|---:|---:|---:|",
    ]
    for n in names:
        t = statistics.median(times[n])
        lines.append(f"| {n} | {runners[n][2]} | {runners[n][1] / 1e6:.2f} M | {t:.3f} | {t / base:.2f}x |")
    text = "\n".join(lines) + "\n"
    print(text)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
