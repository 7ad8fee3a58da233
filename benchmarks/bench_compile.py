"""torch.compile on this CPU: compile time against steady-state step time, and the break-even run.

For the supervised scratch step and the SimCLR step, at two widths and in float32 and bf16, the
product's loop (``reprlab.train.loop.fit``, through ``benchmarks/gpu_check.time_fit``) runs the
same steps eagerly and with ``model.compile=true`` (inductor), in interleaved rounds (eager,
compiled; then compiled, eager; ...) so that drift in machine load hits both alike. The first
logging interval holds warm-up and compilation; the steady state (median step) is timed after it.
The first compiled fit of a configuration compiles cold (inductor's on-disk caches bypassed);
later ones show what a second run with the same shapes pays (warm cache).

    compile pays after  N* = compile_s / (eager s/step - compiled s/step)  steps,

reported also as the eager wall time of those N* steps. Synthetic uint8 data of CIFAR-100's
shape (speed does not depend on the pixels); one thread per run by default, so other load on
shared cores disturbs less.

    nice python benchmarks/bench_compile.py                  # ~15-25 min on 2 shared cores
    python benchmarks/bench_compile.py --widths 16 --tasks scratch --precisions bf16   # one pair
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from gpu_check import CONFIGS, synthetic_splits, time_fit  # noqa: E402

from reprlab.config import load_config  # noqa: E402

TASKS = {"scratch": "supervised/resnet18_scratch.toml", "simclr": "pretrain/simclr_cifar100.toml"}


def measure(task: str, width: int, precision: str, compiled: bool, batch: int, splits, log_every: int, intervals: int) -> dict:
    over = [f"train.batch_size={batch}", f'train.precision="{precision}"', 'train.device="cpu"', f"model.compile={str(compiled).lower()}",
            f"model.kwargs.width={width}"]
    if task == "simclr":
        over.append("method.proj_hidden_dim=512")
    cfg = load_config(CONFIGS / TASKS[task], over)
    r = time_fit(cfg, task, splits, torch.device("cpu"), log_every, intervals)
    return {"task": task, "width": width, "precision": precision, "compile": compiled, "batch_size": batch, **r}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--tasks", nargs="+", default=list(TASKS), choices=list(TASKS))
    ap.add_argument("--widths", type=int, nargs="+", default=[16, 64])
    ap.add_argument("--precisions", nargs="+", default=["bf16", "fp32"], choices=["bf16", "fp32"])
    ap.add_argument("--batch", type=int, default=128, help="images per step (SimCLR: two views each)")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--rounds", type=int, default=0, help="eager/compiled rounds per configuration (default 3; width > 32: 2)")
    ap.add_argument("--out", default="benchmarks/results/compile_cpu")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    splits = synthetic_splits(4096, 256, 256, torch.device("cpu"))
    rows, pairs = [], []
    t0 = time.perf_counter()
    for task in args.tasks:
        for width in args.widths:
            wide = width > 32
            log_every, intervals = (2, 2) if wide else (5, 3)  # wide steps are slow: fewer of them
            rounds = args.rounds or (2 if wide else 3)
            for precision in args.precisions:
                by: dict[bool, list[dict]] = {False: [], True: []}
                for rnd in range(rounds):
                    for compiled in ((False, True) if rnd % 2 == 0 else (True, False)):  # interleaved, order flipped
                        cold = compiled and not by[True]
                        # a fresh dynamo state for every fit (else the 8-recompile limit falls back to eager);
                        # the first compiled fit of a configuration also bypasses inductor's on-disk caches
                        torch._dynamo.reset()
                        torch._inductor.config.force_disable_caches = cold
                        r = measure(task, width, precision, compiled, args.batch, splits, log_every, intervals)
                        r["round"], r["cold_compile"] = rnd, cold
                        rows.append(r)
                        by[compiled].append(r)
                        print(f"[{time.perf_counter() - t0:6.0f}s] {task} w{width} {precision} compile={compiled} round {rnd}: "
                              f"{r['s_per_step_median']:.3f} s/step" + (f", compile {r['compile_s']:.0f} s ({'cold' if cold else 'warm cache'})" if compiled else ""),
                              file=sys.stderr, flush=True)
                torch._inductor.config.force_disable_caches = False
                e = statistics.median(r["s_per_step_median"] for r in by[False])
                c = statistics.median(r["s_per_step_median"] for r in by[True])
                ratios = [a["s_per_step_median"] / b["s_per_step_median"] for a, b in zip(by[False], by[True])]
                cold_s = by[True][0]["compile_s"]
                warm = [r["compile_s"] for r in by[True][1:]]
                gain = e - c
                n_star = cold_s / gain if gain > 0 else None
                pairs.append({"task": task, "width": width, "precision": precision, "eager_s_per_step": e, "compiled_s_per_step": c,
                              "speedup": e / c, "speedups_per_round": ratios, "compile_s": cold_s,
                              "compile_s_warm_cache": statistics.median(warm) if warm else None, "break_even_steps": n_star,
                              "break_even_eager_min": n_star * e / 60 if n_star is not None else None})
                write(pairs, rows, args, (time.perf_counter() - t0) / 60, False)
    print(write(pairs, rows, args, (time.perf_counter() - t0) / 60, True))


def write(pairs: list[dict], rows: list[dict], args, minutes: float, done: bool) -> str:
    lines = [
        f"# torch.compile on this CPU: ResNet-18, batch {args.batch}, {args.threads} thread(s), torch {torch.__version__}, "
        f"`benchmarks/bench_compile.py` ({minutes:.1f} min" + ("" if done else ", partial") + ")",
        "",
        "| step | width | precision | eager s/step | compiled s/step | speed-up (per round) | compile s cold / warm cache | break-even steps | break-even (eager min) |",
        "|---|---:|---|---:|---:|---:|---:|---:|---:|",
    ]
    for p in pairs:
        n = "never" if p["break_even_steps"] is None else f"{p['break_even_steps']:.0f}"
        m = "never" if p["break_even_eager_min"] is None else f"{p['break_even_eager_min']:.1f}"
        lines.append(f"| {p['task']} | {p['width']} | {p['precision']} | {p['eager_s_per_step']:.3f} | {p['compiled_s_per_step']:.3f} | "
                     f"{p['speedup']:.2f}× ({', '.join(f'{x:.2f}' for x in p['speedups_per_round'])}) | {p['compile_s']:.0f} / "
                     f"{'-' if p['compile_s_warm_cache'] is None else format(p['compile_s_warm_cache'], '.0f')} | {n} | {m} |")
    text = "\n".join(lines)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".md").write_text(text + "\n")
    out.with_suffix(".json").write_text(json.dumps({"torch": torch.__version__, "threads": args.threads, "pairs": pairs, "rows": rows}, indent=2) + "\n")
    return text


if __name__ == "__main__":
    main()
