"""The identity of every input a run consumes besides its config; free of torch.

A probe or fine-tune reads a backbone named by ``eval.backbone``: a checkpoint file, the
ImageNet-supervised ResNet-18 (torchvision's published weights, or a local weights file), or a
random initialisation. The path in the config names the file, not what it holds: a ``pretrain
--rerun`` rewrites the same path with other weights at the same step. So a run records the
*identity* of each input when it starts (``inputs.json`` in its directory, and ``inputs`` in
its result.json and its checkpoints), and a run whose input's identity changed since is stale,
like a run whose config changed (:func:`input_differences`; ``train/rundir.py`` refuses it,
the study runner shows it as stale).

Identities:

* a checkpoint: ``{"kind": "checkpoint", "path", "sha256", "size"}`` -- the sha256 of the
  file's bytes, streamed (a ResNet-18 checkpoint hashes in well under a second), remembered
  per version of the file (path, inode, size, mtime) so a study's dry run hashes each once;
* ``imagenet-supervised``: the weights it loads -- ``"imagenet"`` (torchvision's
  ``IMAGENET1K_V1``, a published file whose name carries its own hash) or a local file's sha256;
* ``random-init``: the architecture and the seed (both in the config too).
"""

from __future__ import annotations

import hashlib
import json
import pickle
import zipfile
from pathlib import Path
from typing import Any

from reprlab.errors import ReprlabError
from reprlab.io import os_error

INPUTS_FILE = "inputs.json"
_CHUNK = 1 << 20
_hashes: dict[tuple, str] = {}  # (resolved path, inode, size, mtime_ns) -> sha256


def file_sha256(path: str | Path) -> str:
    """The sha256 (hex) of a file's bytes, streamed; cached per version of the file."""
    path = Path(path)
    try:
        st = path.stat()
        key = (str(path.resolve()), st.st_ino, st.st_size, st.st_mtime_ns)
        if key not in _hashes:
            h = hashlib.sha256()
            with open(path, "rb") as f:
                while chunk := f.read(_CHUNK):
                    h.update(chunk)
            _hashes[key] = h.hexdigest()
        return _hashes[key]
    except OSError as e:
        raise os_error(e, path, "read") from None


def checkpoint_file(spec: str | Path) -> Path:
    """The file a backbone path names: a run directory means its ``checkpoints/last.pt``."""
    path = Path(spec)
    return path / "checkpoints" / "last.pt" if path.is_dir() else path


# ============================================================================================
# A checkpoint's header, without torch
# ============================================================================================


class _Opaque:
    """What a tensor, a storage or any other non-plain object of a checkpoint reads as here."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        pass

    def __setstate__(self, state: Any) -> None:
        pass


class _HeaderUnpickler(pickle.Unpickler):
    """Unpickles a ``torch.save`` record's ``data.pkl`` with every tensor left unread: plain
    Python values (str, int, float, list, dict) come back as they are, anything else as
    :class:`_Opaque` -- so nothing but the standard library is imported or executed."""

    SAFE = {("collections", "OrderedDict")}

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in self.SAFE:
            return super().find_class(module, name)
        return _Opaque

    def persistent_load(self, pid: Any) -> Any:
        return None  # a tensor's storage: not read


_headers: dict[tuple, dict | None] = {}


def checkpoint_header(path: str | Path) -> dict | None:
    """The plain entries of a reprlab checkpoint (``model_name``, ``model_kwargs``, ``step``,
    ``provenance``, ``config`` ...; tensors read as opaque placeholders), read from the file's
    ``data.pkl`` without torch and without reading a weight; None when the file is not a
    ``torch.save`` zip record holding a dict (the caller then loads it with torch, which says
    what is wrong). Cached per version of the file."""
    path = Path(path)
    try:
        st = path.stat()
        key = (str(path.resolve()), st.st_ino, st.st_size, st.st_mtime_ns)
        if key not in _headers:
            _headers[key] = None
            if zipfile.is_zipfile(path):
                with zipfile.ZipFile(path) as z:
                    member = next((n for n in z.namelist() if n.endswith("/data.pkl") or n == "data.pkl"), None)
                    if member is not None:
                        with z.open(member) as f:
                            data = _HeaderUnpickler(f).load()
                        _headers[key] = data if isinstance(data, dict) else None
        return _headers[key]
    except OSError as e:
        raise os_error(e, path, "read") from None
    except (pickle.UnpicklingError, zipfile.BadZipFile, EOFError, ValueError, TypeError, AttributeError, KeyError, IndexError):
        return None


# ============================================================================================
# The architecture a backbone builds (read by the resolved config; no torch)
# ============================================================================================


def built_architecture(spec: str) -> tuple[str, dict] | None:
    """(registry name, kwargs) of the model ``eval/backbones.load_backbone`` builds for ``spec``,
    read from the checkpoint's header (no torch, no weights); None for ``random-init``
    (``cfg.model`` is what is built) and for a checkpoint that does not exist yet (a study's
    dependency that has not run) or is not a reprlab checkpoint (loading it says why)."""
    if spec == "imagenet-supervised":
        return "resnet18_imagenet", {}
    if not spec or spec == "random-init":
        return None
    path = checkpoint_file(spec)
    if not path.is_file():
        return None
    ckpt = checkpoint_header(path)
    if ckpt is None or not isinstance(ckpt.get("model_name"), str):
        return None
    return ckpt["model_name"], dict(ckpt.get("model_kwargs") or {})


def record_architecture(cfg: Any, name_given: bool = False) -> None:
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
        raise ReprlabError(
            f"model.kwargs {json.dumps(cfg.model.kwargs)} contradicts the backbone: {cfg.eval.backbone} is a checkpoint of "
            f"{name} with {json.dumps(kwargs)}; a backbone's architecture comes from its checkpoint, so drop the model.kwargs overrides"
            if cfg.eval.backbone != "imagenet-supervised" else
            f"model.kwargs {json.dumps(cfg.model.kwargs)} does not apply to the imagenet-supervised backbone (torchvision's ResNet-18); drop it"
        )
    cfg.model.name = name
    cfg.model.kwargs = dict(kwargs)


# ============================================================================================
# Provenance: the backbone a checkpoint was made from, through any chain of probe and fine-tune
# ============================================================================================
#
# A checkpoint of the loop stores ``provenance`` (train/loop.py: method_meta): for a run that
# trains its own backbone (pretrain, train) the origin -- method, dataset, fraction, epochs,
# max_steps, config_hash -- and ``via: []``; for a run over a backbone (an augmented probe, a
# fine-tune) the origin of *its* backbone, with one more entry in ``via`` (task, protocol,
# config_hash and the sha256 of the checkpoint it read: eval/backbones.py derived_provenance).
# The steps and the origin's own sha256 cannot be written into the file they describe;
# :func:`checkpoint_provenance` fills them in.


def checkpoint_provenance(ckpt: dict, path: str | Path) -> dict:
    """The provenance of the backbone in ``ckpt`` (a checkpoint's entries, read from ``path``):
    ``method``, ``dataset``, ``fraction``, ``epochs``, ``max_steps``, ``steps``, ``config_hash``
    and ``checkpoint_sha256`` of the run that trained it, and ``via``, the probes and fine-tunes
    since (each ``{task, protocol, config_hash, source_sha256}``).

    A checkpoint written before provenance existed is described by its own config, as before
    (right for a pretraining's; a probe's or fine-tune's says ``supervised``), with ``legacy: True``.
    """
    prov = ckpt.get("provenance")
    if not isinstance(prov, dict):
        cfg = ckpt.get("config") or {}
        prov = {"method": ckpt["method_name"] if "method_name" in ckpt else cfg.get("method", {}).get("name"),
                "dataset": cfg.get("data", {}).get("dataset"), "fraction": cfg.get("data", {}).get("fraction"),
                "epochs": cfg.get("train", {}).get("epochs"), "max_steps": cfg.get("train", {}).get("max_steps") or None,
                "config_hash": None, "via": [], "legacy": True}
    prov = {**prov, "via": list(prov.get("via") or [])}
    if not prov["via"]:  # this file is the origin: its step and its bytes
        prov["steps"] = ckpt.get("step")
        prov["checkpoint_sha256"] = file_sha256(path)
    return prov


def read_provenance(spec: str | Path) -> dict:
    """The provenance of the backbone in a checkpoint (a path, or a run directory: its
    ``checkpoints/last.pt``), as :func:`checkpoint_provenance` describes it; without torch. A
    missing or foreign file is a one-line error naming it."""
    path = checkpoint_file(spec)
    if not path.is_file():
        raise ReprlabError(f"checkpoint {path} not found; expected runs/<name>/checkpoints/last.pt or a run directory")
    ckpt = checkpoint_header(path)
    if ckpt is None or "method" not in ckpt:
        raise ReprlabError(f"checkpoint {path}: not a reprlab checkpoint (expected a torch.save record of the training loop)")
    return checkpoint_provenance(ckpt, path)


# ============================================================================================
# Input identities
# ============================================================================================


def backbone_identity(spec: str, cfg: Any) -> dict | None:
    """The identity of the backbone ``spec`` (``eval.backbone``) under ``cfg``; None for none.
    A checkpoint that does not exist (yet) has ``sha256`` None."""
    if not spec:
        return None
    if spec == "imagenet-supervised":
        weights = cfg.eval.weights or "imagenet"
        ident: dict[str, Any] = {"kind": "imagenet-supervised", "weights": weights}
        if weights != "imagenet" and Path(weights).is_file():
            ident["sha256"] = file_sha256(weights)
        return ident
    if spec == "random-init":
        return {"kind": "random-init", "model": cfg.model.name, "kwargs": dict(cfg.model.kwargs), "seed": cfg.train.seed}
    path = checkpoint_file(spec)
    exists = path.is_file()
    return {"kind": "checkpoint", "path": str(path), "sha256": file_sha256(path) if exists else None, "size": path.stat().st_size if exists else None}


def input_identities(cfg: Any) -> dict[str, dict]:
    """What a run over ``cfg`` consumes besides its config, by the config key that names it
    (``{"eval.backbone": {...}}``); empty for a run that reads no backbone."""
    ident = backbone_identity(cfg.eval.backbone, cfg)
    return {"eval.backbone": ident} if ident is not None else {}


def read_inputs(run_dir: str | Path) -> dict | None:
    """A run directory's recorded input identities; None when it has none (a run of an older
    reprlab, or of a kind that reads no input)."""
    f = Path(run_dir) / INPUTS_FILE
    if not f.is_file():
        return None
    try:
        data = json.loads(f.read_text())
    except json.JSONDecodeError as e:
        raise ReprlabError(f"{f}: invalid JSON ({e}); the run directory is damaged: choose another run.name or --rerun") from None
    except OSError as e:
        raise os_error(e, f, "read") from None
    if not isinstance(data, dict):
        raise ReprlabError(f"{f}: expected a JSON object of input identities, got {type(data).__name__}; choose another run.name or --rerun")
    return data


def short_identity(ident: dict | None) -> str:
    """An identity in a few words: ``sha256 1a2b3c4d5e6f``, ``weights imagenet``, ``missing``."""
    if ident is None:
        return "none"
    if ident.get("kind") == "checkpoint":
        return f"sha256 {ident['sha256'][:12]}" if ident.get("sha256") else "missing"
    if ident.get("kind") == "random-init":
        return f"random-init {ident.get('model')} seed {ident.get('seed')}"
    sha = ident.get("sha256")
    return f"weights {ident.get('weights')}" + (f" sha256 {sha[:12]}" if sha else "")


def _content(ident: dict | None) -> dict | None:
    """An identity without the path it was read from (the path is the config's business)."""
    return None if ident is None else {k: v for k, v in ident.items() if k != "path"}


def input_differences(recorded: dict | None, now: dict[str, dict]) -> list[tuple[str, dict | None, dict | None]]:
    """(config key, recorded identity, identity now) of every input whose content changed. A run
    with no record (an older reprlab's) is not compared."""
    if recorded is None:
        return []
    return [(k, recorded.get(k), now.get(k)) for k in sorted(recorded.keys() | now.keys()) if _content(recorded.get(k)) != _content(now.get(k))]


def describe_input_differences(diff: list[tuple[str, dict | None, dict | None]]) -> str:
    """``eval.backbone runs/a/checkpoints/last.pt: recorded sha256 1a2b.., now sha256 9f8e..``."""
    parts = []
    for key, old, new in diff:
        where = (new or old or {}).get("path") or (new or old or {}).get("kind", "")
        parts.append(f"{key} {where}: recorded {short_identity(old)}, now {short_identity(new)}")
    return "; ".join(parts)
