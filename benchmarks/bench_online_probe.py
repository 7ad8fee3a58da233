"""Cost of the online linear probe per pretraining step: the step time with
``method.online_probe=true`` relative to the same method with it off, measured in one run
(rounds interleaved, so machine load hits both alike).

    python benchmarks/bench_online_probe.py                       # simclr + byol, width 16, batch 256, CPU
    python benchmarks/bench_online_probe.py --width 64 --batch 512 --device cuda --precision bf16

Each method runs its recipe (configs/pretrain/<m>_cifar100.toml) through the loop's own
``train_step`` (hooks included; ``bench_methods.build``) on a uint8 batch of CIFAR-100's shape
with 100 classes of labels (the probe is 512 x 100 at width 64). Random images: step time does
not depend on content.
Evaluation (the probe scored on the validation split) is not a step and is not timed here.

Two measures: the whole step with the probe on against off (interleaved rounds; on a loaded
machine its noise can exceed the probe's cost), and the probe's own update timed alone on
features of the step's shape, as a fraction of the step with the probe off (the cost itself,
precise whatever the load).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

import bench_methods  # benchmarks/ is this script's folder: the same step timer as bench_methods.py


def build(name: str, probe: bool, width: int, batch: int, precision: str, device: torch.device):
    """(time n steps, time n updates of the probe alone on features of the step's shape)."""
    run, _, _ = bench_methods.build(name, width, batch, precision, device, (f"method.online_probe={str(probe).lower()}",))
    method = run.method
    y = torch.randint(0, 100, (batch,), generator=torch.Generator().manual_seed(0)).to(device)

    def probe_alone(n: int) -> float:
        if method.online_probe is None:
            return 0.0
        h = torch.randn(batch, method.backbone.num_features, device=device)
        if device.type == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        for _ in range(n):
            method.online_probe.step(h, y)
        if device.type == "cuda":
            torch.cuda.synchronize()
        return (time.perf_counter() - t0) / n

    return run, probe_alone


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--methods", nargs="*", default=["simclr", "byol"])
    p.add_argument("--width", type=int, default=16)
    p.add_argument("--batch", type=int, default=256)
    p.add_argument("--precision", default="fp32", choices=["bf16", "fp32"])
    p.add_argument("--device", default="cpu")
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--steps", type=int, default=3, help="steps per configuration per round")
    p.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "online_probe.md")
    args = p.parse_args()
    device = torch.device(args.device)
    lines = [
        "# Online linear probe: cost per pretraining step",
        "",
        f"`python benchmarks/bench_online_probe.py --width {args.width} --batch {args.batch} --precision {args.precision} --device {args.device} "
        f"--rounds {args.rounds} --steps {args.steps}` ({torch.get_num_threads()} threads, torch {torch.__version__}). Median step time over "
        "the rounds, probe on and off interleaved within each round; ratio = on / off.",
        "",
        "| method | off (ms/step) | on (ms/step) | on / off | probe update alone (ms) | alone / off step |",
        "|---|---|---|---|---|---|",
    ]
    for name in args.methods:
        built = {probe: build(name, probe, args.width, args.batch, args.precision, device) for probe in (False, True)}
        runners = {probe: b[0] for probe, b in built.items()}
        for r in runners.values():
            r(1)  # warm-up
        alone = []
        times: dict[bool, list[float]] = {False: [], True: []}
        for i in range(args.rounds):
            for probe in ((False, True) if i % 2 == 0 else (True, False)):
                times[probe].append(runners[probe](args.steps))
            alone.append(built[True][1](20))
        off, on, a = statistics.median(times[False]), statistics.median(times[True]), statistics.median(alone)
        lines.append(f"| {name} | {off * 1e3:.1f} | {on * 1e3:.1f} | {on / off:.3f} | {a * 1e3:.2f} | {a / off:.4f} |")
        print(lines[-1], file=sys.stderr)
    args.out.write_text("\n".join(lines) + "\n")
    print(args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
