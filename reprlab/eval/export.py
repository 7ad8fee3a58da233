"""Take a backbone out of reprlab: a checkpoint as a torchvision or timm state dict, an ONNX
graph, or reprlab's own state dict, each with a JSON sidecar saying what it is and where it came
from. The code behind ``reprlab export``.

* ``torchvision`` / ``timm``: a state dict that loads with ``strict=True`` into the library's own
  model class, built by the lines :func:`reprlab.models.export.library_target` gives (the CIFAR
  stem as the library expresses it); those lines are printed and recorded in the sidecar.
* ``onnx``: the features (and with ``--with-head`` the logits) of float32 RGB images in [0, 1],
  NCHW, any batch size; the normalisation is inside the graph. Exported with torch's dynamo
  exporter (``torch.onnx.export(..., dynamo=True)``, which needs onnxscript), opset 18.
* ``state_dict``: the tensors of reprlab's model, for ``create_model(name, num_classes=0, **kwargs)``.

A run directory means its ``checkpoints/last.pt``, as for ``reprlab probe --backbone RUN``
(pass ``checkpoints/best.pt`` for the best-on-val one); the backbone is the one the probe
scores (``backbone_prefix``: DINO's teacher). Before anything is written the export is checked
in this process: the library's model (or ONNX Runtime's session) must give reprlab's outputs on
a random batch. The file and its sidecar are written atomically; a failure leaves neither.
"""

from __future__ import annotations

import difflib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch
import torch.nn as nn

from reprlab import __version__
from reprlab.errors import ReprlabError
from reprlab.eval.backbones import load_checkpoint_backbone, read_checkpoint
from reprlab.inputs import file_sha256
from reprlab.io import atomic_torch_save, atomic_write_bytes, atomic_write_json
from reprlab.models import create_model
from reprlab.models.export import Unmappable, library_target

FORMATS = ("torchvision", "timm", "onnx", "state_dict")
#: the largest difference from reprlab's own outputs the pre-write check accepts (float32)
TOLERANCE = {"torchvision": 1e-5, "timm": 1e-5, "onnx": 1e-4, "state_dict": 0.0}
ONNX_OPSET = 18


@dataclass
class Exported:
    path: Path  # the exported file
    sidecar: Path  # its JSON description (``<file>.json``)
    info: dict  # the sidecar's content
    max_abs_diff: float  # the pre-write check: largest |library - reprlab| on a random batch


# ============================================================================================
# The checkpoint's model
# ============================================================================================


def checkpoint_model(spec: str | Path, with_head: bool) -> tuple[Path, dict, nn.Module]:
    """(checkpoint file, its content, reprlab's model in eval mode): the backbone the probe
    scores, or with ``with_head`` the supervised run's whole classifier."""
    path, ckpt = read_checkpoint(spec)
    if not with_head:
        return path, ckpt, load_checkpoint_backbone(path).model.eval()
    method = ckpt.get("method_name") or ckpt.get("config", {}).get("method", {}).get("name")
    if method != "supervised":
        raise ReprlabError(f"checkpoint {path} is a {method} run: it has no classifier (only supervised runs train one); drop --with-head")
    prefix = ckpt["backbone_prefix"]
    sd = {k[len(prefix):]: v for k, v in ckpt["method"].items() if k.startswith(prefix)}
    kwargs = dict(ckpt.get("model_kwargs", {}))
    headless = set(create_model(ckpt["model_name"], num_classes=0, **kwargs).state_dict())
    head = [k for k in sd if k not in headless and k.endswith("weight") and sd[k].ndim == 2]
    if len(head) != 1:
        raise ReprlabError(f"checkpoint {path}: expected one classifier weight beside the backbone, found {head or 'none'}")
    model = create_model(ckpt["model_name"], num_classes=int(sd[head[0]].shape[0]), **kwargs)
    try:
        model.load_state_dict(sd, strict=True)
    except RuntimeError as e:
        raise ReprlabError(f"checkpoint {path}: its classifier does not load into {ckpt['model_name']} ({str(e).strip().splitlines()[-1].strip()})") from None
    return path, ckpt, model.eval()


def num_classes(model: nn.Module) -> int:
    """The classifier's outputs; 0 for a headless model."""
    head = model.get_classifier()
    return head.out_features if isinstance(head, nn.Linear) else 0


# ============================================================================================
# The formats
# ============================================================================================


class _Normalized(nn.Module):
    """The ONNX graph: images in [0, 1] -> normalised -> features (and logits)."""

    def __init__(self, model: nn.Module, mean, std, head: bool) -> None:
        super().__init__()
        self.model, self.head = model, head
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1))
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1))

    def forward(self, images: torch.Tensor):
        features = self.model.embed((images - self.mean) / self.std)
        return (features, self.model.get_classifier()(features)) if self.head else features


def _onnx_bytes(model: nn.Module, mean, std, resolution: int, head: bool) -> tuple[bytes, Callable]:
    """The serialised ONNX model and a function running it in ONNX Runtime."""
    try:
        import onnxruntime
        import onnxscript  # noqa: F401 - the dynamo exporter needs it; checked here for a clear message
    except ImportError as e:
        raise ReprlabError(f"--format onnx needs the packages onnx, onnxscript and onnxruntime ({e.name} is missing): pip install 'reprlab[export]'") from None
    graph = _Normalized(model, mean, std, head).eval()
    example = torch.rand(2, 3, resolution, resolution)
    outputs = ["features", "logits"] if head else ["features"]
    batch = torch.export.Dim("batch")
    program = torch.onnx.export(graph, (example,), dynamo=True, verbose=False, opset_version=ONNX_OPSET, input_names=["images"],
                                output_names=outputs, dynamic_shapes=({0: batch},))
    data = program.model_proto.SerializeToString()
    session = onnxruntime.InferenceSession(data, providers=["CPUExecutionProvider"])
    return data, lambda x: [torch.from_numpy(y) for y in session.run(None, {"images": x.numpy()})]


def _outputs(model: nn.Module, x: torch.Tensor, head: bool) -> list[torch.Tensor]:
    with torch.no_grad():
        features = model.embed(x)
        return [features, model.get_classifier()(features)] if head else [features]


def _max_diff(a: list[torch.Tensor], b: list[torch.Tensor]) -> float:
    if [t.shape for t in a] != [t.shape for t in b]:
        return float("inf")
    return max(float((x.float() - y.float()).abs().max()) for x, y in zip(a, b))


def _check_and_serialise(fmt: str, model: nn.Module, ckpt: dict, head: bool) -> tuple[bytes | dict, dict, float]:
    """(what to write: ONNX bytes or a state dict, the format's part of the sidecar, the largest
    difference from reprlab's outputs on a random batch of 3). Nothing is written here."""
    res = int(ckpt["resolution"])
    torch.manual_seed(0)
    x = torch.rand(3, 3, res, res)
    mean = torch.tensor(ckpt["data_mean"]).view(1, -1, 1, 1)
    std = torch.tensor(ckpt["data_std"]).view(1, -1, 1, 1)
    ours = _outputs(model, (x - mean) / std, head)
    sd = {k: v.detach().clone().contiguous() for k, v in model.state_dict().items()}
    if fmt == "onnx":
        data, run = _onnx_bytes(model, ckpt["data_mean"], ckpt["data_std"], res, head)
        part = {"input": f"images: float32 (N, 3, {res}, {res}) RGB in [0, 1]; the normalisation with mean and std is inside the graph",
                "outputs": ["features", "logits"] if head else ["features"], "opset": ONNX_OPSET, "normalisation": "inside the graph",
                "architecture_call": {"call": "onnxruntime.InferenceSession", "exporter": f"torch.onnx.export(dynamo=True), torch {torch.__version__}"}}
        return data, part, _max_diff(run(x), ours)
    part = {"input": f"float32 (N, 3, {res}, {res}) RGB in [0, 1], then normalised: (x - mean) / std", "normalisation": "outside the model"}
    if fmt == "state_dict":
        kwargs = {"num_classes": num_classes(model), **model.model_kwargs}
        part["code"] = ["import torch", "from reprlab.models import create_model", f"model = create_model({model.model_name!r}, {', '.join(f'{k}={v!r}' for k, v in kwargs.items())})"]
        part["architecture_call"] = {"call": "reprlab.models.create_model", "kwargs": {"name": model.model_name, **kwargs}}
        twin = create_model(model.model_name, **kwargs).eval()
        twin.load_state_dict(sd, strict=True)
        return sd, part, _max_diff(_outputs(twin, (x - mean) / std, head), ours)
    target = library_target(model, fmt, num_classes(model))
    theirs = target.build()
    theirs.load_state_dict(sd, strict=True)
    with torch.no_grad():
        out = theirs((x - mean) / std)
    part["code"] = list(target.lines)
    part["architecture_call"] = {"call": target.call, "kwargs": target.kwargs, "replaced": target.replaced}
    # the library's model returns logits with a head, features without
    return sd, part, _max_diff([out], ours[-1:])


def formats_that_work(model: nn.Module) -> list[str]:
    """The formats this model exports to (onnx and state_dict always; each library if it maps)."""
    out = []
    for fmt in FORMATS:
        try:
            if fmt in ("torchvision", "timm"):
                library_target(model, fmt, num_classes(model))
        except Unmappable:
            continue
        out.append(fmt)
    return out


# ============================================================================================
# The sidecar and the export
# ============================================================================================


def provenance(path: Path, ckpt: dict, config_hash: Callable[[dict], str] | None) -> dict:
    """Where the weights come from: the run's method, data, budget and the checkpoint's hash."""
    cfg = ckpt.get("config", {})
    data, train = cfg.get("data", {}), cfg.get("train", {})
    run = path.parent.parent.name if path.parent.name == "checkpoints" else None
    return {
        "method": ckpt.get("method_name") or cfg.get("method", {}).get("name"),
        "dataset": data.get("dataset"),
        "fraction": data.get("fraction"),
        "labels": data.get("labels"),
        "epochs": train.get("epochs"),
        "max_steps": train.get("max_steps"),
        "steps": ckpt.get("step"),
        "seed": train.get("seed"),
        "pretrained_backbone": cfg.get("eval", {}).get("backbone") or None,  # a fine-tune's starting point
        "run": run,
        "config_hash": config_hash(cfg) if config_hash and cfg else None,
        "checkpoint": str(path.resolve()),
        "checkpoint_sha256": file_sha256(path),
        "reprlab_version": __version__,
    }


def default_out(path: Path, fmt: str, head: bool) -> Path:
    """``<run>[-best].<format>[-with-head].pt`` (``.onnx``) in the current folder."""
    stem = path.parent.parent.name if path.parent.name == "checkpoints" else path.stem
    if path.parent.name == "checkpoints" and path.stem != "last":
        stem += f"-{path.stem}"
    suffix = ".onnx" if fmt == "onnx" else f".{fmt}.pt"
    return Path(f"{stem}{'.with-head' if head else ''}{suffix}")


def check_format(fmt: str) -> None:
    if fmt not in FORMATS:
        close = difflib.get_close_matches(fmt, FORMATS, n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise ReprlabError(f"unknown export format {fmt!r}{hint}; expected one of {', '.join(FORMATS)}")


def export(spec: str | Path, fmt: str, out: str | Path | None = None, with_head: bool = False,
           config_hash: Callable[[dict], str] | None = None) -> Exported:
    """Export the checkpoint ``spec`` (a file or a run directory) as ``fmt`` to ``out`` (a file,
    or a folder for the default name) with its sidecar ``<out>.json``. ``config_hash`` computes
    the run's config hash from the recorded config (the run name's suffix; handed down by the
    command layer, which owns it)."""
    check_format(fmt)
    path, ckpt, model = checkpoint_model(spec, with_head)
    out = Path(out) if out else default_out(path, fmt, with_head)
    if out.is_dir():
        out = out / default_out(path, fmt, with_head)
    if not out.parent.is_dir():
        raise ReprlabError(f"--out {out}: folder {out.parent} does not exist")
    if out.resolve() == path.resolve():
        raise ReprlabError(f"--out {out} is the checkpoint itself; name another file")
    if out.suffix == ".json":
        raise ReprlabError(f"--out {out}: .json is the sidecar's suffix; name the {fmt} file itself (e.g. model.pt)")
    try:
        payload, part, diff = _check_and_serialise(fmt, model, ckpt, with_head)
    except Unmappable as e:
        works = ", ".join(formats_that_work(model))
        raise ReprlabError(f"cannot export {ckpt['model_name']} {json.dumps(ckpt.get('model_kwargs', {}))} as {fmt}: {e}; formats that work: {works}") from None
    if not diff <= TOLERANCE[fmt]:  # a bug of the mapping, never a user error: say so loudly
        raise ReprlabError(f"export check failed: the {fmt} model differs from reprlab's by {diff:.3g} (> {TOLERANCE[fmt]:g}); nothing written")
    classes, res = num_classes(model), int(ckpt["resolution"])
    if fmt == "onnx":
        outputs = ", ".join(part["outputs"])
        code = ["import onnxruntime", f"session = onnxruntime.InferenceSession({str(out)!r}, providers=['CPUExecutionProvider'])",
                f"# images: a numpy.float32 array (N, 3, {res}, {res}), RGB in [0, 1]",
                f"[{outputs}] = session.run(None, {{'images': images}})"]
    else:
        code = [*part.pop("code"), f"model.load_state_dict(torch.load({str(out)!r}), strict=True)", "model.eval()"]
    info = {
        "format": fmt,
        "file": out.name,
        "architecture": {"model": ckpt["model_name"], "kwargs": dict(ckpt.get("model_kwargs", {})), "family": getattr(model, "family", None),
                         "built_by": part.pop("architecture_call")},
        "with_head": with_head,
        "num_classes": classes or None,
        "feature_dim": int(model.num_features),
        "resolution": res,
        "mean": [float(v) for v in ckpt["data_mean"]],
        "std": [float(v) for v in ckpt["data_std"]],
        **part,
        "code": code,
        "provenance": provenance(path, ckpt, config_hash),
        "export_check_max_abs_diff": diff,
    }
    sidecar = out.with_name(out.name + ".json")
    if fmt == "onnx":
        atomic_write_bytes(out, payload)
    else:
        atomic_torch_save(payload, out)
    try:
        atomic_write_json(sidecar, info)
    except BaseException:
        out.unlink(missing_ok=True)  # a file without its description is not an export
        raise
    return Exported(out, sidecar, info, diff)


def describe(exp: Exported) -> str:
    """What ``reprlab export`` prints: the file, and the lines that load it without reprlab."""
    i = exp.info
    what = f"{i['architecture']['model']}, {i['feature_dim']} features" + (f" and {i['num_classes']} logits" if i["with_head"] else "")
    alone = {"torchvision": "torch and torchvision", "timm": "torch and timm", "onnx": "onnxruntime", "state_dict": "reprlab"}[i["format"]]
    lines = [f"wrote {exp.path} ({i['format']}: {what}) and {exp.sidecar.name}", f"load it with {alone}:", ""]
    lines += [f"    {line}" for line in i["code"]]
    mean = ", ".join(f"{v:.4f}" for v in i["mean"])
    std = ", ".join(f"{v:.4f}" for v in i["std"])
    size = f"{i['resolution']}x{i['resolution']}"
    if i["format"] == "onnx":
        lines += ["", f"input: float32 RGB (N, 3, {size}) in [0, 1]; the graph normalises with mean ({mean}) and std ({std})"]
    else:
        lines += ["", f"input: float32 RGB (N, 3, {size}) in [0, 1], normalised: (x - mean) / std with mean ({mean}), std ({std})"]
    return "\n".join(lines)
