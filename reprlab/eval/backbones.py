"""Where a backbone comes from: a reprlab checkpoint, the ImageNet-supervised torchvision
ResNet-18, or a random initialisation of an architecture.

Every source yields the same thing, a :class:`Backbone`: a registry model with its classifier
removed (``num_classes=0``), the normalisation it was trained with and its native input size,
so the probe and the fine-tuning code treat all of them alike.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn

from reprlab.errors import ReprlabError
from reprlab.io import load_torch
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
    check_backbone(spec, cfg.eval.weights)
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


def _checkpoint_path(spec: str | Path) -> Path:
    path = Path(spec)
    return path / "checkpoints" / "last.pt" if path.is_dir() else path


#: the last checkpoint read, keyed by the file's identity (path, inode, size, mtime): a run reads
#: its backbone's architecture when it resolves its config and the weights when it builds the
#: model; both come from this one read
_last_read: tuple[tuple, Any] | None = None


def _read_checkpoint(path: Path) -> Any:
    """The checkpoint at ``path``, memory-mapped (a tensor is read from the file when it is used),
    read once per version of the file; unreadable: a one-line error naming it."""
    global _last_read
    st = path.stat()
    key = (str(path.resolve()), st.st_ino, st.st_size, st.st_mtime_ns)
    if _last_read is None or _last_read[0] != key:
        _last_read = (key, load_torch(path, "backbone checkpoint", "; expected a reprlab checkpoint (runs/<name>/checkpoints/last.pt)",
                                      map_location="cpu", weights_only=False, mmap=True))
    return _last_read[1]


def built_architecture(spec: str) -> tuple[str, dict] | None:
    """(registry name, kwargs) of the model :func:`load_backbone` builds for ``spec``, read
    without loading weights; None for ``random-init`` (``cfg.model`` is what is built) and for
    a checkpoint that does not exist yet (a study's dependency that has not run)."""
    if spec == "imagenet-supervised":
        return "resnet18_imagenet", {}
    if not spec or spec == "random-init":
        return None
    path = _checkpoint_path(spec)
    if not path.is_file():
        return None
    ckpt = _read_checkpoint(path)
    if not isinstance(ckpt, dict) or "model_name" not in ckpt:
        return None  # not a reprlab checkpoint: load_backbone says so
    return ckpt["model_name"], dict(ckpt.get("model_kwargs", {}))


def record_architecture(cfg, name_given: bool = False) -> None:
    """Make ``cfg.model`` say what a run over the backbone ``cfg.eval.backbone`` builds.

    A checkpoint carries its architecture (``model_name``, ``model_kwargs``), which wins over
    the config; the resolved config (``config.toml``, ``--print-config``) records the built one,
    so that a fine-tune of a width-8 backbone does not read ``model.kwargs = {}``. Architecture
    arguments that contradict the checkpoint would silently do nothing: they are refused, and so
    is a ``model.name`` the command line or config file gave (``name_given``) that is not the
    checkpoint's.
    """
    built = built_architecture(cfg.eval.backbone)
    if built is None:
        return
    name, kwargs = built
    if name_given and cfg.model.name != name:
        raise ReprlabError(
            f"model.name {cfg.model.name!r} contradicts the backbone: {cfg.eval.backbone} is a checkpoint of {name}; "
            "a backbone's architecture comes from its checkpoint, so drop the model.name override"
            if cfg.eval.backbone != "imagenet-supervised" else
            f"model.name {cfg.model.name!r} does not apply to the imagenet-supervised backbone (torchvision's ResNet-18); drop it"
        )
    if cfg.model.kwargs and dict(cfg.model.kwargs) != kwargs:
        import json

        raise ReprlabError(
            f"model.kwargs {json.dumps(cfg.model.kwargs)} contradicts the backbone: {cfg.eval.backbone} is a checkpoint of "
            f"{name} with {json.dumps(kwargs)}; a backbone's architecture comes from its checkpoint, so drop the model.kwargs overrides"
            if cfg.eval.backbone != "imagenet-supervised" else
            f"model.kwargs {json.dumps(cfg.model.kwargs)} does not apply to the imagenet-supervised backbone (torchvision's ResNet-18); drop it"
        )
    cfg.model.name = name
    cfg.model.kwargs = dict(kwargs)


def check_backbone(spec: str, weights: str = "") -> None:
    """What :func:`load_backbone` would refuse about its files, checked without building a model,
    so that a run refuses them before it makes its run directory: a checkpoint that is not
    there or not a reprlab checkpoint, a ``--weights`` file that is not there."""
    if not spec:
        raise ReprlabError("no backbone given: pass --backbone PATH|imagenet-supervised|random-init (or eval.backbone=...)")
    if spec == "imagenet-supervised":
        if weights and weights != "imagenet" and not Path(weights).expanduser().is_file():
            raise ReprlabError(f"ImageNet weights file {Path(weights).expanduser()} not found; expected a torchvision ResNet-18 state dict (.pth)")
    elif spec and spec != "random-init":
        read_checkpoint(Path(spec))


def read_checkpoint(spec: str | Path) -> tuple[Path, dict]:
    """(file, content) of the reprlab checkpoint ``spec``: a file, or a run directory, whose
    ``checkpoints/last.pt`` it means (what ``reprlab probe --backbone RUN`` reads); anything
    else is a one-line error naming the file."""
    path = _checkpoint_path(spec)
    if not path.is_file():
        raise ReprlabError(f"backbone checkpoint {path} not found; expected runs/<name>/checkpoints/last.pt, 'imagenet-supervised' or 'random-init'")
    ckpt = _read_checkpoint(path)
    if not isinstance(ckpt, dict):
        raise ReprlabError(f"backbone checkpoint {path}: holds a {type(ckpt).__name__}, not a reprlab checkpoint")
    for key in ("method", "model_name", "backbone_prefix"):
        if key not in ckpt:
            raise ReprlabError(f"backbone checkpoint {path}: key {key!r} missing; not a reprlab checkpoint")
    return path, ckpt


def load_checkpoint_backbone(path: Path) -> Backbone:
    path, ckpt = read_checkpoint(path)
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
