"""float32 against bf16 autocast on this CPU, through reprlab's own commands, in one run.

The question: does ``train.precision=auto`` picking bf16 on a CPU with native bf16 cost
accuracy? Every path is run twice per seed, once per precision, with everything else equal
(same seed: same initialisation, data order and augmentation stream):

* ``reprlab train``    — the scratch recipe, narrow ResNet-18, short budget on a subset; val top-1;
* ``reprlab pretrain`` — SimCLR on the CIFAR-100 train images; kNN val top-1 (the monitor);
* ``reprlab probe``    — the cached linear protocol over each SimCLR backbone, features
  extracted in the precision the backbone was trained in; test top-1;
* ``reprlab probe``    — over the *float32* backbone with features extracted in bf16: isolates
  the extraction (plus the mean cosine between the two feature sets).

Step time is the product's own figure (``result.json`` throughput: training time without
evaluation and checkpoints); the cached probe's is its feature-extraction time. The two
precisions alternate within each seed and the order flips between seeds, so drift in machine
load hits both alike: read the ratios, not the absolute times. A difference in accuracy counts as
harm when bf16 is lower for every seed and, on average, by more than twice the noise: the
seed-to-seed spread or the sampling error of the difference of two accuracies on the evaluated
images, whichever is larger.

    nice python benchmarks/bench_precision.py                    # ~15 min on 2 shared cores
    python benchmarks/bench_precision.py --seeds 0 --sup-epochs 1 --simclr-steps 20   # smoke
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
PRECISIONS = ("fp32", "bf16")


def cli(args: list[str], env: dict) -> None:
    p = subprocess.run([sys.executable, "-m", "reprlab", *args], capture_output=True, text=True, env=env, cwd=ROOT)
    if p.returncode != 0:
        raise SystemExit(f"failed: reprlab {' '.join(args)}\n{p.stderr[-3000:]}")


def result(run: Path) -> dict:
    return json.loads((run / "result.json").read_text())


def feature_cosine(a: Path, b: Path) -> float:
    """Mean cosine similarity between the test features of two probe runs."""
    fa = torch.load(a / "features.pt", weights_only=True)["features"]["test"].double()
    fb = torch.load(b / "features.pt", weights_only=True)["features"]["test"].double()
    return torch.nn.functional.cosine_similarity(fa, fb, dim=1).mean().item()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    ap.add_argument("--width", type=int, default=16)
    ap.add_argument("--threads", type=int, default=1, help="torch CPU threads per run (1: robust to other load on shared cores)")
    ap.add_argument("--fraction", type=float, default=0.2, help="training subset of supervised runs and of the probe's train features")
    ap.add_argument("--sup-epochs", type=int, default=2)
    ap.add_argument("--simclr-steps", type=int, default=100)
    ap.add_argument("--simclr-batch", type=int, default=128)
    ap.add_argument("--data-root", default=os.environ.get("REPRLAB_DATA", ""))
    ap.add_argument("--workdir", default="", help="keep the run directories here (default: a temporary folder)")
    ap.add_argument("--out", default="benchmarks/results/precision_cpu")
    args = ap.parse_args()
    env = {**os.environ, "REPRLAB_CPU_BF16": ""}  # precision is set explicitly in every run
    work_ctx = tempfile.TemporaryDirectory() if not args.workdir else None
    work = Path(args.workdir or work_ctx.name)
    root = ["--data-root", args.data_root] if args.data_root else []
    common = [f"model.kwargs.width={args.width}", f"train.num_threads={args.threads}", "train.progress=false", f'run.out_dir="{work}"']
    sup = ["train", "--config", "configs/supervised/resnet18_scratch.toml", *common, f"data.fraction={args.fraction}",
           f"train.epochs={args.sup_epochs}", 'schedule.name="cosine"', "schedule.warmup_epochs=0.2", "train.eval_test=false"]
    ssl = ["pretrain", "--config", "configs/pretrain/simclr_cifar100.toml", *common, "train.epochs=1", f"train.max_steps={args.simclr_steps}",
           f"train.batch_size={args.simclr_batch}", "optim.lr=1.0", "method.temperature=0.2", "schedule.warmup_epochs=0.05",
           "method.proj_hidden_dim=512", "method.knn_bank_size=10000", "train.log_every_steps=25"]
    probe = [*common, f"data.fraction={args.fraction}"]

    rows: dict[str, dict[str, dict[int, dict]]] = {k: {p: {} for p in PRECISIONS} for k in ("supervised", "simclr", "probe", "extraction")}
    t0 = time.perf_counter()
    for i, seed in enumerate(args.seeds):
        order = PRECISIONS if i % 2 == 0 else PRECISIONS[::-1]  # flip the order between seeds
        for p in order:
            name = f"sup-{p}-s{seed}"
            cli([*root, *sup, f'train.precision="{p}"', f"train.seed={seed}", f'run.name="{name}"'], env)
            r = result(work / name)
            rows["supervised"][p][seed] = {"acc1": r["val"]["acc1"], "s_per_step": 128 / r["throughput_img_s"]}
            print(f"[{time.perf_counter() - t0:6.0f}s] {name}: val {r['val']['acc1']:.2f}", file=sys.stderr, flush=True)
        for p in order:
            name = f"simclr-{p}-s{seed}"
            cli([*root, *ssl, f'train.precision="{p}"', f"train.seed={seed}", f'run.name="{name}"'], env)
            r = result(work / name)
            acc = r["val"].get("knn_acc1", r["val"].get("acc1"))
            rows["simclr"][p][seed] = {"acc1": acc, "s_per_step": args.simclr_batch / r["throughput_img_s"]}
            print(f"[{time.perf_counter() - t0:6.0f}s] {name}: kNN {acc:.2f}", file=sys.stderr, flush=True)
        # probes: each backbone in its own precision; the fp32 backbone also with bf16 features
        for bb, p in [("fp32", "fp32"), ("bf16", "bf16"), ("fp32", "bf16")][:: 1 if i % 2 == 0 else -1]:
            name = f"probe-{bb}bb-{p}feat-s{seed}"
            backbone = work / f"simclr-{bb}-s{seed}" / "checkpoints" / "last.pt"
            cli([*root, "probe", "--backbone", str(backbone), *probe, f'train.precision="{p}"', f'run.name="{name}"'], env)
            r = result(work / name)
            row = {"acc1": r["test"]["acc1"], "val_acc1": r["val"]["acc1"], "feature_seconds": r["feature_seconds"]}
            if bb == p:
                rows["probe"][p][seed] = row
            if bb == "fp32":
                rows["extraction"][p][seed] = row
            print(f"[{time.perf_counter() - t0:6.0f}s] {name}: test {row['acc1']:.2f}", file=sys.stderr, flush=True)
        cos = feature_cosine(work / f"probe-fp32bb-fp32feat-s{seed}", work / f"probe-fp32bb-bf16feat-s{seed}")
        rows["extraction"]["bf16"][seed]["cosine_to_fp32"] = cos
    wall = time.perf_counter() - t0

    summary = summarise(rows, args.seeds)
    from reprlab.runtime import cpu_bf16_support

    native, why = cpu_bf16_support()
    info = {
        "torch": torch.__version__, "threads": args.threads, "cpu_bf16": {"native": native, "reason": why},
        "settings": {k: v for k, v in vars(args).items() if k not in ("data_root", "workdir", "out")},
        "commands": {"supervised": sup, "simclr": ssl, "probe": probe}, "rows": rows, "summary": summary, "wall_s": round(wall, 1),
    }
    text = markdown(summary, info, args)
    print(text)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".md").write_text(text + "\n")
    out.with_suffix(".json").write_text(json.dumps(info, indent=2, default=str) + "\n")
    if work_ctx is not None:
        work_ctx.cleanup()


#: images each accuracy is measured on: val (5k) for training and kNN, test (10k) for probes
EVAL_IMAGES = {"supervised": 5000, "simclr": 5000, "probe": 10000, "extraction": 10000}


def summarise(rows: dict, seeds: list[int]) -> dict:
    out = {}
    for path, by_p in rows.items():
        acc = {p: [by_p[p][s]["acc1"] for s in seeds] for p in PRECISIONS}
        time_key = "feature_seconds" if path in ("probe", "extraction") else "s_per_step"
        t = {p: [by_p[p][s][time_key] for s in seeds] for p in PRECISIONS}
        diffs = [b - a for a, b in zip(acc["fp32"], acc["bf16"])]  # paired by seed
        spread = math.sqrt(statistics.mean([statistics.pvariance(acc[p]) for p in PRECISIONS])) if len(seeds) > 1 else float("nan")
        delta = statistics.mean(acc["bf16"]) - statistics.mean(acc["fp32"])
        # noise floor: the seed spread, or the sampling error of a difference of two accuracies on
        # EVAL_IMAGES images, whichever is larger (two seeds estimate a spread only roughly)
        q = statistics.mean(acc["fp32"] + acc["bf16"]) / 100
        sampling = 100 * math.sqrt(2 * q * (1 - q) / EVAL_IMAGES[path])
        noise = max(spread if math.isfinite(spread) else 0.0, sampling)
        hurts = all(d < 0 for d in diffs) and -delta > 2 * noise
        ratios = [a / b for a, b in zip(t["fp32"], t["bf16"])]
        out[path] = {"acc1": acc, "paired_diff": diffs, "delta_mean": delta, "seed_spread": spread, "sampling_se": sampling, "noise": noise, "bf16_hurts": hurts,
                     "time": t, "time_key": time_key, "speedup": statistics.median(ratios), "speedups": ratios}
        if path == "extraction":
            out[path]["cosine_to_fp32"] = [by_p["bf16"][s]["cosine_to_fp32"] for s in seeds]
    return out


LABELS = {
    "supervised": ("scratch ResNet-18 (`reprlab train`)", "val top-1"),
    "simclr": ("SimCLR pretraining (`reprlab pretrain`)", "kNN val top-1"),
    "probe": ("cached probe of each SimCLR backbone, same precision", "test top-1"),
    "extraction": ("cached probe of the fp32 backbone: feature extraction fp32 vs bf16", "test top-1"),
}


def markdown(summary: dict, info: dict, args) -> str:
    a = args
    lines = [
        f"# float32 vs bf16 autocast on this CPU ({'native bf16' if info['cpu_bf16']['native'] else 'no native bf16'}: {info['cpu_bf16']['reason']})",
        "",
        f"`benchmarks/bench_precision.py`, torch {info['torch']}, {a.threads} thread(s) per run, ResNet-18 width {a.width}, seeds {a.seeds}, "
        f"real CIFAR-100. Supervised: {a.sup_epochs} epochs on a {a.fraction:g} subset, batch 128, cosine. SimCLR: {a.simclr_steps} steps of "
        f"{a.simclr_batch} (LARS, T = 0.2), kNN bank 10k. Probe: train features of a {a.fraction:g} subset, full val/test. "
        f"Whole run {info['wall_s'] / 60:.1f} min. Accuracies per seed; step time s/step (probe: feature-extraction s); "
        "speed-up = fp32 time / bf16 time (median over seeds).",
        "",
        "| path | metric | fp32 | bf16 | bf16 − fp32 (paired) | noise (seed sd / sampling) | fp32 time | bf16 time | speed-up | verdict |",
        "|---|---|---|---|---|---:|---:|---:|---:|---|",
    ]
    for path, s in summary.items():
        label, metric = LABELS[path]
        acc = {p: ", ".join(f"{v:.2f}" for v in s["acc1"][p]) for p in PRECISIONS}
        diffs = ", ".join(f"{d:+.2f}" for d in s["paired_diff"])
        t = {p: statistics.median(s["time"][p]) for p in PRECISIONS}
        fmt = "{:.3f}" if s["time_key"] == "s_per_step" else "{:.1f} s"
        verdict = "**bf16 hurts**: keep fp32" if s["bf16_hurts"] else "no loss beyond noise"
        lines.append(f"| {label} | {metric} | {acc['fp32']} | {acc['bf16']} | {diffs} (mean {s['delta_mean']:+.2f}) | {s['seed_spread']:.2f} / {s['sampling_se']:.2f} | "
                     f"{fmt.format(t['fp32'])} | {fmt.format(t['bf16'])} | {s['speedup']:.2f}× | {verdict} |")
    cos = summary["extraction"]["cosine_to_fp32"]
    lines += ["", f"bf16 features of the fp32 backbone against its fp32 features: mean cosine {', '.join(f'{c:.5f}' for c in cos)} (per seed)."]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
