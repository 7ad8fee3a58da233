"""``reprlab data info NAME``: where a dataset was found, split sizes, classes, checksum status."""

from __future__ import annotations

from reprlab.config import load_config

NAME = "data"
HELP = "inspect datasets: `reprlab data info cifar100`"


def add_arguments(p) -> None:
    p.add_argument("action", choices=("info",))
    p.add_argument("dataset", help="cifar100 | tiny-imagenet | image-folder")
    p.add_argument("overrides", nargs="*", metavar="key=value", help="data.* overrides, e.g. data.resolution=64")


def run(args) -> int:
    import torch

    from reprlab.data.paths import cache_dir, data_root
    from reprlab.data.registry import load_splits

    cfg = load_config(None, [f'data.dataset="{args.dataset}"', *args.overrides])
    root, how = data_root(cfg.data.root)
    s = load_splits(cfg.data)
    print(f"dataset      {s.name}")
    print(f"data root    {root} (from {how})")
    for k, v in s.info.items():
        print(f"{k:<12} {v}")
    print(f"cache dir    {cache_dir(cfg.data.cache_dir)}")
    for split in ("train", "val", "test"):
        part = getattr(s, split)
        if part is None:
            print(f"{split:<12} —")
            continue
        counts = torch.bincount(part.labels, minlength=part.num_classes)
        print(f"{split:<12} {len(part):>6} images {tuple(part.images.shape[1:])} uint8, {part.num_classes} classes, {int(counts.min())}-{int(counts.max())} per class")
    print(f"classes      {', '.join(s.train.classes[:8])}, ... ({s.train.num_classes})")
    if s.train.coarse_classes:
        print(f"superclasses {len(s.train.coarse_classes)}: {', '.join(s.train.coarse_classes[:5])}, ...")
    print(f"mean/std     {tuple(round(x, 4) for x in s.mean)} / {tuple(round(x, 4) for x in s.std)}")
    return 0
