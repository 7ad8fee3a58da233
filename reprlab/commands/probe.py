"""``reprlab probe``: the linear classification protocol on CIFAR-100 with a frozen backbone.

Default: cached features + logistic regression with L2 chosen on validation. ``--augment``:
SGD on a linear head over the frozen backbone (eval mode) with crop + flip every epoch, through
the training loop. Both verify afterwards that the backbone is bit-identical to before.
"""

from __future__ import annotations

import json
from pathlib import Path

from reprlab.commands._common import add_run_arguments, execute_task, recipe, resolve, task_config
from reprlab.config import to_dict

NAME = "probe"
HELP = "linear protocol on CIFAR-100 over a frozen backbone (cached features, or --augment)"
DATA_PARALLEL = True  # under torchrun the command joins the process group (reprlab.distributed)


def add_arguments(p) -> None:
    add_run_arguments(p)
    p.add_argument("--backbone", help="checkpoint path (or run dir) | imagenet-supervised | random-init")
    p.add_argument("--weights", help="imagenet-supervised: local state-dict file instead of the download")
    p.add_argument("--augment", action="store_true", help="SGD on the head with crop+flip augmentation instead of cached features")


def run_config(args):
    """(resolved config, task kind) of the command line ``args``: "probe" (cached) or "probe-augment"."""
    extra = [f'eval.backbone="{args.backbone}"'] if args.backbone else []
    extra += [f'eval.weights="{args.weights}"'] if args.weights else []
    extra = ['data.dataset="cifar100"', *extra] + (['eval.protocol="augment"'] if args.augment else [])
    if resolve(args, extra).eval.protocol == "augment":  # the flag, or the key itself; a later override wins for both
        return task_config(args, "probe-augment", extra, recipe("probe/linear_augment.toml"))
    return task_config(args, "probe", extra)


def run(args) -> int:
    cfg, kind = run_config(args)
    if kind == "probe-augment":
        return execute_task(args, cfg, kind)
    return execute_task(args, cfg, kind, runner=lambda: run_cached(cfg, args.config, rerun=args.rerun))


class FeatureCache:
    """Features of a probe run, kept in its run directory so a re-run skips the extraction.

    The file carries a fingerprint of everything the features depend on (backbone, its step,
    resolution, data and model settings); a file with another fingerprint is ignored.
    """

    def __init__(self, path, fingerprint: dict) -> None:
        self.path = path
        self.fingerprint = json.dumps(fingerprint, sort_keys=True, default=str)

    def load(self):
        if not self.path.is_file():
            return None
        from reprlab.errors import ReprlabError
        from reprlab.io import load_torch

        try:
            blob = load_torch(self.path, "feature cache", weights_only=True)
        except ReprlabError:  # damaged (a full disk, a copy cut short): extract again
            return None
        return blob["features"] if isinstance(blob, dict) and blob.get("fingerprint") == self.fingerprint else None

    def save(self, feats) -> None:
        from reprlab import distributed
        from reprlab.io import atomic_torch_save

        if not distributed.is_main():
            return

        atomic_torch_save({"fingerprint": self.fingerprint, "features": feats}, self.path)


def run_cached(cfg, config_path: str | None = None, rerun: bool = False) -> dict:
    """The cached linear protocol as a run: run directory, metrics.jsonl (the L2 sweep), result.json."""
    from reprlab import distributed
    from reprlab.data.registry import load_splits
    from reprlab.eval.backbones import backbone_source, load_backbone
    from reprlab.eval.probe import cached_probe
    from reprlab.models.flops import count_params
    from reprlab.train.task import default_group, run_once

    def body(run, device, name: str) -> dict:
        splits = load_splits(cfg.data)
        bb = load_backbone(cfg.eval.backbone, cfg, splits.mean, splits.std)
        fingerprint = {"backbone": cfg.eval.backbone, "weights": cfg.eval.weights, "resolution": cfg.eval.resolution, "data": to_dict(cfg.data), "model": to_dict(cfg.model), "precision": cfg.train.precision}
        if bb.source == "checkpoint":
            stat = Path(bb.info["checkpoint"]).stat()
            fingerprint["checkpoint"] = [bb.info.get("pretrain_step"), stat.st_size, stat.st_mtime_ns]
        if bb.source == "random-init":
            fingerprint["seed"] = cfg.train.seed
        # Under data parallelism each rank extracts a share of the features and all fit the same
        # small problem on the gathered ones (deterministic L-BFGS); rank 0 alone writes.
        out = cached_probe(bb, splits, cfg, device, FeatureCache(run.path / "features.pt", fingerprint))
        if not distributed.is_main():
            return out
        with open(run.metrics_file, "w") as f:
            for i, row in enumerate(out["l2_sweep"]):
                f.write(json.dumps({"step": i, "epoch": i, "probe/l2": row["l2"], "probe/val_acc1": row["val_acc1"], "probe/train_acc1": row["train_acc1"]}) + "\n")
        info = bb.info
        return {
            "run": name,
            "status": "complete",
            "task": "probe",
            "group": cfg.run.group or default_group(name),
            "seed": cfg.train.seed,
            "model": getattr(bb.model, "model_name", None),
            "params": count_params(bb.model),
            "protocol": "linear-cached",
            "backbone_source": backbone_source(bb),
            "method": info.get("method"),
            "dataset": info.get("dataset"),
            "fraction": info.get("fraction"),
            "epochs": None,  # no training epochs of its own; the backbone's are in backbone.pretrain_epochs
            "family": None,  # probes are not part of the CNN-vs-ViT comparison
            "sweep": cfg.run.sweep or None,
            "sweep_params": {},
            "backbone": info,
            "config": "config.toml",
            **out,
        }

    return run_once(cfg, "probe", config_path, body, rerun=rerun)
