"""Data parallelism on a CPU: one process with 2 threads against 2 processes with 1 thread
each (torchrun, gloo), for a ResNet-18 training step at the same global batch.

    python benchmarks/bench_ddp.py                 # writes benchmarks/results/ddp_cpu.md
    python benchmarks/bench_ddp.py --width 16      # the narrow ResNet-18 of the CPU demos

Each configuration runs in fresh processes on synthetic uint8 data of CIFAR-100's shape, with
the loop's own pieces (registry model, DDP over the method as reprlab's loop does, CPU
global-batch BatchNorm for the self-supervised default). The communication share is measured
as the exposed part: the step time with DDP's gradient all-reduce minus the step time of the
same processes inside ``no_sync()`` (no all-reduce), over the former. Overlap with backward is
what DDP gives on GPUs too; on gloo/CPU the two ranks also compete for the same two cores.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def worker(args) -> None:
    import torch
    import torch.nn.functional as F

    from reprlab import distributed
    from reprlab.models import create_model
    from reprlab.runtime import resolve_precision

    distributed.init_from_env()
    world, rank = distributed.world_size(), distributed.rank()
    torch.manual_seed(0)
    model = create_model("resnet18", num_classes=100, width=args.width).to(memory_format=torch.channels_last)
    if args.sync_bn and world > 1:
        from reprlab.models.sync_bn import convert_sync_batchnorm

        convert_sync_batchnorm(model, torch.device("cpu"))
    net = model
    if world > 1:
        net = torch.nn.parallel.DistributedDataParallel(model, forward_sync_buffers=False)
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    amp = resolve_precision("auto", torch.device("cpu"))
    local = args.batch // world
    g = torch.Generator().manual_seed(rank)
    x = torch.randint(0, 256, (local, 3, 32, 32), dtype=torch.uint8, generator=g).float().div_(255).contiguous(memory_format=torch.channels_last)
    y = torch.randint(0, 100, (local,), generator=g)

    def step() -> None:
        with torch.autocast("cpu", dtype=amp or torch.bfloat16, enabled=amp is not None):
            loss = F.cross_entropy(net(x).float(), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    def timed(n: int, no_sync: bool) -> float:
        distributed.barrier()
        t0 = time.perf_counter()
        for _ in range(n):
            if no_sync and world > 1:
                with net.no_sync():
                    step()
            else:
                step()
        distributed.barrier()
        return (time.perf_counter() - t0) / n

    for _ in range(args.warmup):
        step()
    rounds = [(timed(args.steps, False), timed(args.steps, True)) for _ in range(args.rounds)]
    if rank == 0:
        sync = sorted(r[0] for r in rounds)[len(rounds) // 2]
        nosync = sorted(r[1] for r in rounds)[len(rounds) // 2]
        Path(args.out).write_text(json.dumps({"world": world, "threads": int(os.environ.get("OMP_NUM_THREADS", "0") or 0), "step_s": sync, "no_sync_step_s": nosync,
                                              "precision": str(amp), "sync_bn": bool(args.sync_bn and world > 1)}))
    distributed.shutdown()


def launch(nproc: int, threads: int, out: Path, args, sync_bn: bool) -> dict:
    common = ["--worker", "--out", str(out), "--width", str(args.width), "--batch", str(args.batch), "--steps", str(args.steps), "--rounds", str(args.rounds),
              "--warmup", str(args.warmup), *(["--sync-bn"] if sync_bn else [])]
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads), "PYTHONPATH": str(ROOT)}
    if nproc == 1:
        cmd = [sys.executable, __file__, *common]
    else:
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", str(nproc), __file__, *common]
    subprocess.run(cmd, env=env, check=True, timeout=1800)
    return json.loads(out.read_text())


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--out", default="")
    p.add_argument("--sync-bn", action="store_true")
    p.add_argument("--width", type=int, default=64, help="ResNet-18 width (64: the standard one)")
    p.add_argument("--batch", type=int, default=128, help="global batch")
    p.add_argument("--steps", type=int, default=5, help="steps per timed round")
    p.add_argument("--rounds", type=int, default=3, help="rounds (the median is kept)")
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--table", type=Path, default=ROOT / "benchmarks" / "results" / "ddp_cpu.md")
    args = p.parse_args()
    if args.worker:
        worker(args)
        return 0
    tmp = Path(os.environ.get("TMPDIR", "/tmp")) / f"bench_ddp_{os.getpid()}"
    tmp.mkdir(parents=True, exist_ok=True)
    rows = [
        ("1 process x 2 threads", launch(1, 2, tmp / "a.json", args, False)),
        ("2 processes x 1 thread (DDP)", launch(2, 1, tmp / "b.json", args, False)),
        ("2 processes x 1 thread (DDP + global BN)", launch(2, 1, tmp / "c.json", args, True)),
    ]
    base = rows[0][1]["step_s"]
    lines = [
        "# Data parallelism on this CPU: 1 process x 2 threads vs 2 processes x 1 thread",
        "",
        f"ResNet-18 (width {args.width}), global batch {args.batch} at 32 px, synthetic uint8 data of CIFAR-100's shape, "
        f"{rows[0][1]['precision']} autocast, SGD; median of {args.rounds} rounds of {args.steps} steps, all rows in one run of "
        "`python benchmarks/bench_ddp.py" + (f" --width {args.width}" if args.width != 64 else "") + "`.",
        "Communication share = (step with all-reduce - step inside `no_sync()`) / step: the part of the gradient",
        "all-reduce that backward does not hide.",
        "",
        "| configuration | step (s) | vs 1 process | step without all-reduce (s) | communication share |",
        "|---|---:|---:|---:|---:|",
    ]
    for name, r in rows:
        share = max(0.0, r["step_s"] - r["no_sync_step_s"]) / r["step_s"] if r["world"] > 1 else 0.0
        lines.append(f"| {name} | {r['step_s']:.3f} | {base / r['step_s']:.2f}x | {r['no_sync_step_s']:.3f} | {share:.0%} |")
    args.table.parent.mkdir(parents=True, exist_ok=True)
    args.table.write_text("\n".join(lines) + "\n")
    print(args.table.read_text())
    return 0


if __name__ == "__main__":
    sys.exit(main())
