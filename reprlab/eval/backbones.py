"""Where a backbone comes from: a reprlab checkpoint, the ImageNet-supervised torchvision
ResNet-18, or a random initialisation of an architecture.

Every source yields the same thing, a :class:`Backbone`: a registry model with its classifier
removed (``num_classes=0``), the normalisation it was trained with and its native input size,
so the probe and the fine-tuning code treat all of them alike.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn as nn

from reprlab.errors import ReprlabError
from reprlab.models import create_model
from reprlab.models.resnet import IMAGENET_MEAN, IMAGENET_STD


@dataclass
class Backbone:
    model: nn.Module  # headless: model(x) returns features
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    input_size: int
    source: str  # "checkpoint" | "imagenet-supervised" | "random-init"
    info: dict  # what result.json records: method, dataset, fraction, epochs of the pretraining


def backbone_source(bb: Backbone) -> str:
    """The label reports group by: simclr | supervised-pretrain | imagenet-supervised | random-init."""
    if bb.source != "checkpoint":
        return bb.source
    method = bb.info.get("method") or "checkpoint"
    return "supervised-pretrain" if method == "supervised" else method


def load_backbone(spec: str, cfg, data_mean, data_std) -> Backbone:
    """``spec``: a checkpoint path, ``imagenet-supervised`` or ``random-init`` (uses cfg.model)."""
    if not spec:
        raise ReprlabError("no backbone given: pass --backbone PATH|imagenet-supervised|random-init (or eval.backbone=...)")
    if spec == "imagenet-supervised":
        weights = cfg.eval.weights or "imagenet"
        model = create_model("resnet18_imagenet", num_classes=0, weights=weights)
        # fraction None: ImageNet is a reference line on data-size curves, not a point on them
        info = {"method": "supervised", "dataset": "imagenet-1k", "fraction": None, "weights": weights}
        return Backbone(model, IMAGENET_MEAN, IMAGENET_STD, 224, "imagenet-supervised", info)
    if spec == "random-init":
        torch.manual_seed(cfg.train.seed)
        model = create_model(cfg.model.name, num_classes=0, **cfg.model.kwargs)
        return Backbone(model, tuple(data_mean), tuple(data_std), model.input_size, "random-init", {"method": "none", "dataset": None, "fraction": None})
    return load_checkpoint_backbone(Path(spec))


def load_checkpoint_backbone(path: Path) -> Backbone:
    if path.is_dir():
        path = path / "checkpoints" / "last.pt"
    if not path.is_file():
        raise ReprlabError(f"backbone checkpoint {path} not found; expected runs/<name>/checkpoints/last.pt, 'imagenet-supervised' or 'random-init'")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as e:  # noqa: BLE001
        raise ReprlabError(f"backbone checkpoint {path} cannot be read ({type(e).__name__}: {e})") from None
    for key in ("method", "model_name", "backbone_prefix"):
        if key not in ckpt:
            raise ReprlabError(f"backbone checkpoint {path}: key {key!r} missing; not a reprlab checkpoint")
    model = create_model(ckpt["model_name"], num_classes=0, **ckpt.get("model_kwargs", {}))
    prefix = ckpt["backbone_prefix"]
    sd = {k[len(prefix) :]: v for k, v in ckpt["method"].items() if k.startswith(prefix)}
    # The pretraining classifier (supervised pretraining on another label set) is not part of a backbone.
    head_keys = {f"{n}" for n, _ in model.named_parameters()} | {n for n, _ in model.named_buffers()}
    sd = {k: v for k, v in sd.items() if k in head_keys}
    missing, unexpected = model.load_state_dict(sd, strict=False)
    if missing:
        raise ReprlabError(f"backbone checkpoint {path}: tensors missing for {', '.join(missing[:3])}{'...' if len(missing) > 3 else ''}")
    cfg = ckpt.get("config", {})
    info = {
        "method": ckpt["method_name"] if "method_name" in ckpt else cfg.get("method", {}).get("name"),
        "dataset": cfg.get("data", {}).get("dataset"),
        "fraction": cfg.get("data", {}).get("fraction"),
        "pretrain_epochs": cfg.get("train", {}).get("epochs"),
        "pretrain_step": ckpt.get("step"),
        "checkpoint": str(path),
    }
    return Backbone(model, tuple(ckpt["data_mean"]), tuple(ckpt["data_std"]), model.input_size, "checkpoint", info)
