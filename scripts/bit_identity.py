"""Train every method a few steps in float32 on real CIFAR-100 and print a hash of the final
state and of the logged metrics: the evidence that a refactor of the step kept behaviour bit
for bit. Run it once against the code before the change and once after, and compare::

    PYTHONPATH=/path/to/old/checkout REPRLAB_DATA=... python scripts/bit_identity.py > before.txt
    PYTHONPATH=$PWD REPRLAB_DATA=... python scripts/bit_identity.py > after.txt
    diff before.txt after.txt

Each run: width-8 ResNet-18, batch 16, three steps per epoch, six steps (two epochs, so two
evaluations, two epoch permutations and a mid-epoch checkpoint), ``train.precision=fp32`` and
``train.deterministic=true``, through ``reprlab.train.task.execute`` (the same path as
``reprlab pretrain`` / ``reprlab train``). Printed per method: the SHA-256 (first 16 hex) of
the checkpoint's ``method`` state dict (every tensor's name, dtype, shape and bytes), of its
optimiser state, and of metrics.jsonl without wall-clock fields (``perf/``, ``time``).
Keys a newer version adds to the state or the metrics (``--ignore PREFIX``, e.g. the online
probe's ``online_probe.`` weights, ``--ignore-metric online/``) can be left out of the hashes,
and ``--set KEY=VALUE`` adds an override to every self-supervised run (``method.online_probe=false``).
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import os
import sys
import tempfile
from pathlib import Path

import torch

import reprlab
from reprlab.config import load_config
from reprlab.train.task import execute

SSL = ["barlow_twins", "byol", "dino", "mocov2", "mocov3", "simclr", "simsiam", "swav", "vicreg"]
# small enough for two CPU cores; the queues and frozen epochs set so that every branch runs
EXTRA = {
    "swav": ["method.queue_size=32", "method.queue_start_epochs=1", "method.freeze_prototypes_epochs=1", "method.num_prototypes=64"],
    "mocov2": ["method.queue_size=64"],
    "dino": ["method.freeze_last_layer_epochs=1", "method.out_dim=64"],
}
SHRINK = {"proj_hidden_dim": 64, "proj_out_dim": 32, "pred_hidden_dim": 32, "bottleneck_dim": 32}


def tensor_digest(h, name: str, t) -> None:
    if isinstance(t, torch.Tensor):
        t = t.detach().cpu().contiguous()
        h.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    elif isinstance(t, dict):
        for k in sorted(t, key=str):
            tensor_digest(h, f"{name}.{k}", t[k])
    elif isinstance(t, (list, tuple)):
        for i, v in enumerate(t):
            tensor_digest(h, f"{name}[{i}]", v)
    else:
        h.update(f"{name}={t!r}|".encode())


def digest(obj, ignore=()) -> str:
    h = hashlib.sha256()
    if isinstance(obj, dict):
        obj = {k: v for k, v in obj.items() if not any(str(k).startswith(p) for p in ignore)}
    tensor_digest(h, "", obj)
    return h.hexdigest()[:16]


def overrides(name: str, out: Path, data: str) -> list[str]:
    over = [
        f'run.out_dir="{out}"', f'data.root="{data}"', f'data.cache_dir="{out}/cache"', "data.fraction=0.00107",
        "model.kwargs.width=8", "train.precision=fp32", "train.deterministic=true", "train.device=cpu",
        "train.batch_size=16", "train.max_steps=6", "train.epochs=3", "train.log_every_steps=2",
        "train.checkpoint_every_steps=2", "train.progress=false", "train.eval_batch_size=500", "train.eval_test=false",
    ]
    if name == "supervised":
        return over + ["aug.mix.cutmix_prob=0.5", "aug.mix.mixup_prob=0.5"]
    over += [f'method.name="{name}"', "method.knn_bank_size=1000"]
    from reprlab.registry import METHODS

    fields = vars(METHODS.get(name).Config())
    over += [f"method.{k}={v}" for k, v in SHRINK.items() if k in fields]
    return over + EXTRA.get(name, [])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("methods", nargs="*", default=SSL + ["supervised"])
    ap.add_argument("--ignore", action="append", default=[], help="state-dict key prefix left out of the hash")
    ap.add_argument("--ignore-metric", action="append", default=[], help="metric name prefix left out of the hash")
    ap.add_argument("--set", action="append", default=[], help="an override for every self-supervised run")
    args = ap.parse_args()
    root = Path(reprlab.__file__).resolve().parent.parent
    data = os.environ["REPRLAB_DATA"]
    torch.set_num_threads(1)
    print(f"# reprlab from {root}", file=sys.stderr)
    for name in args.methods:
        with tempfile.TemporaryDirectory() as tmp:
            cfg_file = root / ("configs/supervised/resnet18_scratch.toml" if name == "supervised" else f"configs/pretrain/{name}_cifar100.toml")
            cfg = load_config(cfg_file, overrides(name, Path(tmp), data) + ([] if name == "supervised" else args.set))
            kind = "train" if name == "supervised" else "pretrain"
            execute(cfg, kind)
            run = next(Path(tmp).glob("**/checkpoints/last.pt")).parent.parent
            ckpt = torch.load(run / "checkpoints" / "last.pt", map_location="cpu", weights_only=False)
            rows = []
            for line in (run / "metrics.jsonl").read_text().splitlines():
                row = json.loads(line)
                rows.append({k: v for k, v in row.items() if not k.startswith(("perf/", *args.ignore_metric)) and k not in ("time", "wall_s")})
            logged = hashlib.sha256(json.dumps(rows, sort_keys=True).encode()).hexdigest()[:16]
            keys = sorted({k for r in rows for k in r})
            print(f"{name:13s} step={ckpt['step']} state={digest(ckpt['method'], args.ignore)} optim={digest(ckpt['optimizer'])} "
                  f"rng={digest([ckpt['aug_generator'], ckpt['rng']])} metrics={logged} keys={','.join(keys)}", flush=True)


if __name__ == "__main__":
    main()
