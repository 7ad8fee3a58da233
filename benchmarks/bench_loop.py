"""Framework overhead of `reprlab train` against a bare PyTorch loop, on this machine, in one run.

Same model (CIFAR ResNet-18), batch, optimiser and in-memory data for every variant:

* ``bare``       — a hand-written loop: index a pre-normalised float tensor, forward, backward,
                   SGD step. No augmentation, logging, schedule or checks.
* ``reprlab-noaug`` — `reprlab`'s loop (``fit``) with augmentation off: the pure framework
                   overhead (sampling from uint8, normalising, schedule, logging, NaN checks).
* ``reprlab``    — the full default recipe (uint8 gather, per-sample crop + flip on the device).

Step time = median interval between consecutive steps after warm-up; variants are interleaved
in rounds so that drift in machine load hits all of them alike. Also reported: the share of a
full `reprlab` step spent in sampling + augmentation + normalisation, timed in isolation.

    python benchmarks/bench_loop.py --width 64 --batch 128 --steps 10 --rounds 4
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from reprlab.augment.basic import random_crop, random_flip
from reprlab.config import load_config
from reprlab.data.device import normalize, stats_tensors
from reprlab.data.types import ImageSet, Splits
from reprlab.methods.supervised import Supervised
from reprlab.models import create_model
from reprlab.train.loop import fit
from reprlab.train.rundir import RunDir

MEAN, STD = (0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762)


def make_splits(n: int) -> Splits:
    g = torch.Generator().manual_seed(0)
    x = torch.randint(0, 256, (n, 3, 32, 32), dtype=torch.uint8, generator=g)
    y = torch.randint(0, 100, (n,), generator=g)
    s = ImageSet(x, y, [str(i) for i in range(100)])
    small = ImageSet(x[:256], y[:256], s.classes)
    return Splits(s, small, None, "synthetic", MEAN, STD)


def bare_loop(splits: Splits, width: int, batch: int, steps: int) -> list[float]:
    torch.manual_seed(0)
    model = create_model("resnet18", num_classes=100, width=width).to(memory_format=torch.channels_last)
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, nesterov=True, weight_decay=5e-4)
    mean, std = stats_tensors(MEAN, STD, "cpu")
    data = normalize(splits.train.images, mean, std).contiguous(memory_format=torch.channels_last)
    labels = splits.train.labels
    stamps = []
    for i in range(steps):
        idx = torch.randint(0, len(data), (batch,))
        loss = F.cross_entropy(model(data[idx]), labels[idx])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        stamps.append(time.perf_counter())
    return stamps


class Timed(Supervised):
    def __init__(self, *a, **k):
        super().__init__(*a, **k)
        self.stamps: list[float] = []

    def training_step(self, images, labels, generator, ctx):
        self.stamps.append(time.perf_counter())
        return super().training_step(images, labels, generator, ctx)


def framework_loop(splits: Splits, width: int, batch: int, steps: int, augment: bool) -> list[float]:
    over = [f"model.kwargs.width={width}", f"train.batch_size={batch}", f"train.max_steps={steps + 1}", "train.progress=false",
            "train.epochs=1000", "train.eval_test=false", "optim.lr=0.01", "schedule.warmup_epochs=0.0"]
    if not augment:
        over += ["aug.crop_padding=0", "aug.flip=false"]
    cfg = load_config(None, over)
    with tempfile.TemporaryDirectory() as tmp:
        run = RunDir(Path(tmp) / "run")
        run.open(cfg, torch.device("cpu"))
        torch.manual_seed(0)
        method = Timed(cfg, splits, torch.device("cpu"))
        method.eval_due = lambda epoch, last: False  # time the steps, not the final validation
        fit(cfg, method, splits.train, run, torch.device("cpu"))
        run.unlock()
    return method.stamps


def step_time(stamps: list[float], warmup: int = 2) -> float:
    gaps = [b - a for a, b in zip(stamps[warmup:], stamps[warmup + 1 :])]
    return statistics.median(gaps)


def aug_time(splits: Splits, batch: int, reps: int = 30) -> float:
    g = torch.Generator().manual_seed(0)
    mean, std = stats_tensors(MEAN, STD, "cpu")
    times = []
    for _ in range(reps):
        t = time.perf_counter()
        idx = torch.randperm(len(splits.train), generator=g)[:batch]
        x = random_flip(random_crop(splits.train.images[idx], 4, g), g)
        normalize(x, mean, std).contiguous(memory_format=torch.channels_last)
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--width", type=int, default=64)
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--rounds", type=int, default=4)
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--out", default="benchmarks/results/loop.txt")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    splits = make_splits(10_000)
    res: dict[str, list[float]] = {"bare": [], "reprlab-noaug": [], "reprlab": []}
    for _ in range(args.rounds):
        res["bare"].append(step_time(bare_loop(splits, args.width, args.batch, args.steps)))
        res["reprlab-noaug"].append(step_time(framework_loop(splits, args.width, args.batch, args.steps, False)))
        res["reprlab"].append(step_time(framework_loop(splits, args.width, args.batch, args.steps, True)))
    t = {k: statistics.median(v) for k, v in res.items()}
    spread = {k: (min(v), max(v)) for k, v in res.items()}
    a = aug_time(splits, args.batch)
    lines = [
        f"# bench_loop: ResNet-18 (width {args.width}), batch {args.batch}, CPU threads {torch.get_num_threads()}, torch {torch.__version__}",
        f"# step time: median over {args.rounds} interleaved rounds of the median of {args.steps} steps (after 2 warm-up steps)",
        f"{'variant':<16}{'s/step':>10}{'img/s':>10}{'vs bare':>10}   per-round medians (min-max)",
    ]
    for k, v in t.items():
        lo, hi = spread[k]
        lines.append(f"{k:<16}{v:>10.4f}{args.batch / v:>10.1f}{(v / t['bare'] - 1) * 100:>+9.1f}%   {lo:.4f}-{hi:.4f}")
    lines.append(f"framework overhead (reprlab-noaug vs bare): {(t['reprlab-noaug'] / t['bare'] - 1) * 100:+.1f}%  (aim <= 5%)")
    lines.append(f"sampling + augmentation + normalisation: {a * 1000:.2f} ms/batch = {a / t['reprlab'] * 100:.1f}% of a reprlab step (aim <= 5%)")
    text = "\n".join(lines)
    print(text)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(text + "\n")


if __name__ == "__main__":
    main()
