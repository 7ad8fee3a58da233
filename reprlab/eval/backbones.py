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
# re-exported: the readers of a checkpoint's header live below torch, so a study's dry run can use them
from reprlab.inputs import built_architecture, checkpoint_file, checkpoint_provenance, file_sha256, read_provenance, record_architecture  # noqa: F401
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
        info["provenance"] = {**_origin(info), "weights": weights, "checkpoint_sha256": file_sha256(weights) if weights != "imagenet" else None}
        return Backbone(model, IMAGENET_MEAN, IMAGENET_STD, 224, "imagenet-supervised", info)
    if spec == "random-init":
        torch.manual_seed(cfg.train.seed)
        model = create_model(cfg.model.name, num_classes=0, **cfg.model.kwargs)
        info = {"method": "none", "dataset": None, "fraction": None}
        info["provenance"] = {**_origin(info), "model": cfg.model.name, "seed": cfg.train.seed}
        return Backbone(model, tuple(data_mean), tuple(data_std), model.input_size, "random-init", info)
    return load_checkpoint_backbone(Path(spec))


_checkpoint_path = checkpoint_file  # a run directory means its checkpoints/last.pt


#: the last checkpoint read, keyed by the file's identity (path, inode, size, mtime), so a
#: backbone's weights are read once per process (its architecture, when the run resolves its
#: config, comes from reprlab/inputs.py's torch-free header read)
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
    prov = checkpoint_provenance(ckpt, path)
    info = {
        "method": prov["method"],
        "dataset": prov["dataset"],
        "fraction": prov["fraction"],
        "pretrain_epochs": prov["epochs"],
        "pretrain_step": prov["steps"],
        "checkpoint": str(path),
        "via": [v["protocol"] for v in prov["via"]],  # the probes and fine-tunes between the pretraining and this file
        "provenance": prov,
    }
    return Backbone(model, tuple(ckpt["data_mean"]), tuple(ckpt["data_std"]), model.input_size, "checkpoint", info)


# ============================================================================================
# Provenance (reprlab/inputs.py reads it from a checkpoint, without torch)
# ============================================================================================


def _origin(info: dict) -> dict:
    """The provenance of a backbone that is no reprlab checkpoint (ImageNet weights, random init)."""
    return {"method": info["method"], "dataset": info["dataset"], "fraction": info["fraction"], "epochs": None, "max_steps": None, "steps": None,
            "config_hash": None, "checkpoint_sha256": None, "via": []}


def derived_provenance(bb: Backbone, kind: str, protocol: str, config_hash: str) -> dict:
    """The provenance a run of ``kind`` over ``bb`` writes into its checkpoints: its backbone's,
    with this run appended to ``via``."""
    prov = bb.info["provenance"]
    step = {"task": kind, "protocol": protocol, "config_hash": config_hash,
            "source_sha256": file_sha256(bb.info["checkpoint"]) if bb.source == "checkpoint" else prov.get("checkpoint_sha256")}
    return {**prov, "via": [*prov["via"], step]}
