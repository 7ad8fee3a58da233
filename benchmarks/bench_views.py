"""Throughput of batched view augmentation against a per-image PIL pipeline.

Compares, on synthetic uint8 data of CIFAR shape (32x32x3), images per second with two
SimCLR views each (Chen et al. 2020, "A Simple Framework for Contrastive Learning of Visual
Representations"):

1. ``reprlab.augment.views.ViewAugment`` on a uint8 tensor batch: CPU with 1 intra-op
   thread and with one thread per core, and CUDA when available;
2. the torchvision per-image PIL pipeline (RandomResizedCrop, flip, ColorJitter with p=0.8,
   RandomGrayscale, ToTensor, Normalize) run through a DataLoader with 2 worker processes;
3. kornia's batched augmentation, only if kornia is importable (it is not installed on
   purpose; the row then says it was skipped).

Usage::

    python benchmarks/bench_views.py --batch 512 --iters 20

The table is printed and written to ``benchmarks/results/views.txt`` (or ``--out``).
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset
from torchvision import transforms as T

# Runnable from a checkout without installing the package.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from reprlab.augment.views import MultiView, ViewConfig  # noqa: E402

# CIFAR-100 training-set channel statistics (any fixed values would do for timing).
MEAN = (0.5071, 0.4865, 0.4409)
STD = (0.2673, 0.2564, 0.2762)


class PilPairs(Dataset):
    """Two independently augmented views per image, built per item from a uint8 array the way
    torchvision's CIFAR dataset does (``Image.fromarray`` in ``__getitem__``)."""

    def __init__(self, data: np.ndarray, transform: T.Compose) -> None:
        self.data = data
        self.transform = transform

    def __len__(self) -> int:
        return len(self.data)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        image = Image.fromarray(self.data[index])
        return self.transform(image), self.transform(image)


def pil_transform() -> T.Compose:
    """The per-image pipeline equivalent to ``ViewConfig()`` defaults."""
    return T.Compose(
        [
            T.RandomResizedCrop(32),
            T.RandomHorizontalFlip(),
            T.RandomApply([T.ColorJitter(0.4, 0.4, 0.4, 0.1)], p=0.8),
            T.RandomGrayscale(0.2),
            T.ToTensor(),
            T.Normalize(MEAN, STD),
        ]
    )


def time_batched(step, batches: list[torch.Tensor], iters: int, budget_s: float, sync=lambda: None) -> float:
    """Images per second of ``step(batch)`` (which makes two views) after two warm-up calls.

    Runs ``iters`` batches, or fewer (at least 3) once ``budget_s`` seconds have passed, so a
    slow configuration cannot stretch the whole benchmark.
    """
    for i in range(2):
        step(batches[i % len(batches)])
    sync()
    done = 0
    start = time.perf_counter()
    while done < iters and (done < 3 or time.perf_counter() - start < budget_s):
        step(batches[done % len(batches)])
        done += 1
        sync()
    elapsed = time.perf_counter() - start
    return done * batches[0].shape[0] / elapsed


def bench_views(
    images: torch.Tensor, batch: int, iters: int, budget_s: float, threads: int, device: str
) -> float:
    """Throughput of two SimCLR views (``MultiView``) with ``threads`` intra-op threads on ``device``."""
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        views = MultiView({"view": ViewConfig(count=2)}, MEAN, STD)
        gen = torch.Generator(device=device).manual_seed(0)
        data = images.to(device)
        batches = [data[i : i + batch] for i in range(0, len(data) - batch + 1, batch)]
        sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
        return time_batched(lambda b: views(b, gen), batches, iters, budget_s, sync)
    finally:
        torch.set_num_threads(before)


def bench_pil(data: np.ndarray, batch: int, workers: int) -> float:
    """Throughput of one pass of the PIL pipeline through a DataLoader; the first two batches
    (worker start-up) are not timed."""
    loader = DataLoader(
        PilPairs(data, pil_transform()), batch_size=batch, shuffle=True, num_workers=workers, drop_last=True
    )
    it = iter(loader)
    for _ in range(2):
        next(it)
    count = 0
    start = time.perf_counter()
    for first, _second in it:
        count += first.shape[0]
    elapsed = time.perf_counter() - start
    return count / elapsed


def bench_kornia(images: torch.Tensor, batch: int, iters: int, budget_s: float, threads: int) -> float | None:
    """Throughput of the equivalent kornia pipeline, or None when kornia is not importable."""
    try:
        import kornia.augmentation as K
    except ImportError:
        return None
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        pipe = torch.nn.Sequential(
            K.RandomResizedCrop((32, 32)),
            K.RandomHorizontalFlip(),
            K.ColorJitter(0.4, 0.4, 0.4, 0.1, p=0.8),
            K.RandomGrayscale(p=0.2),
            K.Normalize(torch.tensor(MEAN), torch.tensor(STD)),
        )
        batches = [images[i : i + batch] for i in range(0, len(images) - batch + 1, batch)]

        def step(b: torch.Tensor) -> None:
            x = b.float() / 255
            pipe(x)
            pipe(x)

        return time_batched(step, batches, iters, budget_s)
    finally:
        torch.set_num_threads(before)


def best(rates: list[float | None]) -> float | None:
    """The highest measured rate, or None when the method was skipped."""
    measured = [r for r in rates if r is not None]
    return max(measured) if measured else None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batch", type=int, default=512, help="images per batch")
    parser.add_argument("--iters", type=int, default=20, help="timed batches for the batched methods")
    parser.add_argument("--images", type=int, default=6144, help="synthetic images (the PIL pass covers all)")
    parser.add_argument("--workers", type=int, default=2, help="DataLoader workers for the PIL baseline")
    parser.add_argument("--rounds", type=int, default=2, help="interleaved rounds; each row keeps its best")
    parser.add_argument("--budget", type=float, default=6.0, help="seconds after which a batched run stops")
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "views.txt")
    args = parser.parse_args(argv)
    if args.batch < 1 or args.iters < 1 or args.rounds < 1 or args.images < 3 * args.batch:
        parser.error("need --batch, --iters, --rounds >= 1 and --images >= 3 * --batch")

    gen = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (args.images, 3, 32, 32), generator=gen, dtype=torch.uint8)
    hwc = images.permute(0, 2, 3, 1).contiguous().numpy()
    cores = os.cpu_count() or 1
    load_before = os.getloadavg()[0]

    # Other jobs may share these cores, so every method runs once per round, rounds
    # interleave the methods, and each row keeps its best round.
    runs: dict[tuple[str, str], list[float | None]] = {}

    def record(name: str, device: str, rate: float | None) -> None:
        runs.setdefault((name, device), []).append(rate)

    pil_name = f"torchvision PIL, DataLoader {args.workers} workers"
    for _ in range(args.rounds):
        record(pil_name, "cpu", bench_pil(hwc, args.batch, args.workers))
        timing = (images, args.batch, args.iters, args.budget)
        record("ViewAugment", "cpu, 1 thread", bench_views(*timing, 1, "cpu"))
        if cores > 1:
            record("ViewAugment", f"cpu, {cores} threads", bench_views(*timing, cores, "cpu"))
        record("ViewAugment", "cuda", bench_views(*timing, 1, "cuda") if torch.cuda.is_available() else None)
        record("kornia", "cpu, 1 thread", bench_kornia(*timing, 1))
    rows = [(name, device, best(rates)) for (name, device), rates in runs.items()]
    pil = rows[0][2]
    assert pil is not None
    load_after = os.getloadavg()[0]

    lines = [
        "View augmentation throughput (images/s, two SimCLR views per image, 32x32 uint8 input)",
        f"batch {args.batch}, up to {args.iters} timed batches ({args.budget:g} s cap), "
        f"{args.images} synthetic images, "
        f"best of {args.rounds} interleaved rounds; "
        f"{cores} CPU cores ({platform.processor() or platform.machine()}); torch {torch.__version__}",
        f"1-min load average before/after: {load_before:.2f}/{load_after:.2f} (other jobs share these cores)",
        "",
        f"{'method':<40} {'device':<16} {'images/s':>10} {'vs PIL':>8}",
    ]
    for name, device, rate in rows:
        if rate is None:
            why = "not importable, skipped" if name == "kornia" else "not available, skipped"
            lines.append(f"{name:<40} {device:<16} {why:>19}")
        else:
            lines.append(f"{name:<40} {device:<16} {rate:>10.0f} {rate / pil:>7.1f}x")
    if max(load_before, load_after) > cores:
        lines += [
            "",
            f"note: load above {cores} means other processes compete for the cores; intra-op threads",
            "then wait at every op's barrier for a descheduled peer, which the multi-thread row shows.",
        ]
    text = "\n".join(lines) + "\n"
    print(text, end="")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
