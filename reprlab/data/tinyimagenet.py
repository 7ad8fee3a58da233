"""Tiny ImageNet (200 classes of 64x64 images) in its official ``tiny-imagenet-200/`` layout.

Accepted under the data root, first match wins: the extracted folder ``tiny-imagenet-200/``, or one
of the archives ``tiny-imagenet-200.zip`` (the official distribution), ``tiny-imagenet-200.tar.gz``
or ``tiny-imagenet-200-mini.tar.gz`` (a reduced copy, same layout). Archives are read as a stream:
nothing is extracted to disk, and the data root may be read-only. Nothing is downloaded.

Read from the layout:

* ``wnids.txt``: the class ids; labels index the *sorted* wnids (the file's own order is not
  sorted, and sorting makes labels independent of how the file was produced).
* ``words.txt``: class names, the first synonym of each wnid (the wnid itself when absent).
* ``train/<wnid>/images/*.JPEG``: the train split, ordered by label, then by file name in natural
  order (``<wnid>_2`` before ``<wnid>_10``).
* ``val/images/*.JPEG`` with ``val/val_annotations.txt`` (``file<TAB>wnid<TAB>bbox...``): the val
  split, ordered by file name in natural order, so ``val.images[i]`` is ``val_<i>.JPEG``.
* ``test/`` (unlabelled in the official release) and the bounding-box files are ignored.

``data.val_size`` is ignored: the official val split (50 images per class) is the validation set
and the whole official train split is trained on, so results compare with published numbers.
There is no test split (``test=None``).

Every JPEG is decoded once (grayscale ones, about 2 % of the files, expanded to three equal
channels), resized to ``data.resolution`` with antialiasing when that is not 64, and cached with
the labels and the train mean/std as uint8 tensors in the cache dir. The cache key is the source's
path, size and modification time and the resolution (for the folder: those of ``wnids.txt``,
``val/val_annotations.txt`` and the ``train`` and ``val/images`` directories, which change when
files are added or removed; after editing images in place, delete the cache file). A resolution
other than 64 is computed from the 64 px cache when that exists (a resize, no decode): the result is
the same as a fresh decode, which also decodes at 64 and then resizes. Mean/std are per channel over
the decoded train images at the requested resolution, in [0, 1] units.
"""

from __future__ import annotations

import hashlib
import re
import tarfile
import time
import zipfile
import zlib
from pathlib import Path
from typing import Iterator

import torch

from reprlab.data.imagefolder import channel_stats, check_resolution, decode_rgb, load_cache, quiet_decoder, resize_batch, save_cache
from reprlab.data.paths import ENV_DATA, cache_dir, data_root
from reprlab.data.registry import register_dataset
from reprlab.data.types import ImageSet, Splits
from reprlab.errors import ReprlabError

FOLDER = "tiny-imagenet-200"
ARCHIVES = ("tiny-imagenet-200.zip", "tiny-imagenet-200.tar.gz", "tiny-imagenet-200-mini.tar.gz")
NATIVE = 64
URL = "http://cs231n.stanford.edu/tiny-imagenet-200.zip"
_TOP_LEVEL = {"wnids.txt", "words.txt", "train", "val", "test"}
_TEXT = {"wnids.txt", "words.txt", "val/val_annotations.txt"}


def locate(root_setting: str = "") -> Path:
    """The folder or archive to read; a one-line error naming every path tried when none exists."""
    root, how = data_root(root_setting)
    candidates = [root / FOLDER, *(root / a for a in ARCHIVES)]
    if candidates[0].is_dir():
        return candidates[0]
    for c in candidates[1:]:
        if c.is_file():
            return c
    raise ReprlabError(
        f"Tiny ImageNet not found: tried {', '.join(map(str, candidates))} (data root {root}, from {how}); "
        f"pass --data-root or set ${ENV_DATA} to the folder holding {FOLDER}/ or {ARCHIVES[0]} (from {URL})"
    )


def _relative(name: str) -> str | None:
    """A member's path inside ``tiny-imagenet-200/``, whatever single folder wraps it; None for others."""
    parts = [p for p in name.replace("\\", "/").split("/") if p not in ("", ".")]
    if parts and parts[0] not in _TOP_LEVEL:
        parts = parts[1:]  # the wrapping folder, normally tiny-imagenet-200/
    if not parts or parts[-1].startswith("."):
        return None  # hidden files, e.g. macOS resource forks (._name.JPEG), are not images
    rel = "/".join(parts)
    if rel in _TEXT or _image_kind(rel) is not None:
        return rel
    return None


def _image_kind(rel: str) -> str | None:
    parts = rel.split("/")
    if not parts[-1].lower().endswith((".jpeg", ".jpg")):
        return None
    if len(parts) == 4 and parts[0] == "train" and parts[2] == "images":
        return "train"
    if len(parts) == 3 and parts[:2] == ["val", "images"]:
        return "val"
    return None


def _members(src: Path) -> Iterator[tuple[str, bytes]]:
    """(path inside tiny-imagenet-200/, bytes) of every needed file, streamed from folder or archive."""
    if src.is_dir():
        for rel in sorted(_TEXT):
            if (src / rel).is_file():
                yield rel, (src / rel).read_bytes()
        for pattern in ("train/*/images/*", "val/images/*"):
            for f in sorted(src.glob(pattern)):
                rel = f.relative_to(src).as_posix()
                if f.is_file() and _relative(rel) == rel:
                    yield rel, f.read_bytes()
        return
    try:
        if src.name.endswith(".zip"):
            with zipfile.ZipFile(src) as zf:
                for zi in zf.infolist():
                    if not zi.is_dir() and (rel := _relative(zi.filename)) is not None:
                        yield rel, zf.read(zi)
        else:
            with tarfile.open(src, "r:*") as tar:
                for m in tar:
                    if m.isfile() and (rel := _relative(m.name)) is not None:
                        yield rel, tar.extractfile(m).read()
    except (tarfile.TarError, zipfile.BadZipFile, EOFError, zlib.error, OSError) as e:
        msg = str(e).splitlines()[0] if str(e) else ""
        raise ReprlabError(f"Tiny ImageNet archive {src} is truncated or corrupt ({type(e).__name__}: {msg}); replace it with a complete copy") from None


def _natural(name: str) -> tuple:
    """Sort key that orders embedded numbers by value: val_2 before val_10."""
    return tuple(int(t) if t.isdigit() else t for t in re.split(r"(\d+)", name))


def _text(raw: bytes, where: str) -> list[str]:
    try:
        return raw.decode("utf-8").splitlines()
    except UnicodeDecodeError:
        raise ReprlabError(f"{where} is not UTF-8 text; the file is corrupt") from None


def _class_names(wnids: list[str], words: bytes | None, src: Path) -> list[str]:
    names = dict.fromkeys(wnids, "")
    if words is not None:
        for line in _text(words, f"{src}:words.txt"):
            wnid, _, syn = line.partition("\t")
            if wnid in names and not names[wnid]:
                names[wnid] = syn.split(",")[0].strip()
    # A class without an entry keeps its wnid as its name: names are for display only.
    return [names[w] or w for w in wnids]


def _read(src: Path, resolution: int) -> dict:
    """Decode everything at ``resolution``: the blob that is cached."""
    t0 = time.perf_counter()
    text: dict[str, bytes] = {}
    train_raw: list[tuple[str, str, bytes]] = []  # (wnid, file name, bytes)
    val_raw: dict[str, bytes] = {}
    # Bytes are collected first and decoded after the stream ends, because an archive may list
    # val images before val_annotations.txt; encoded JPEGs are ~4x smaller than decoded ones.
    for rel, raw in _members(src):
        kind = _image_kind(rel)
        if kind == "train":
            _, wnid, _, name = rel.split("/")
            train_raw.append((wnid, name, raw))
        elif kind == "val":
            val_raw[rel.rsplit("/", 1)[-1]] = raw
        else:
            text[rel] = raw
    t_read = time.perf_counter() - t0

    if "wnids.txt" not in text:
        raise ReprlabError(f"Tiny ImageNet source {src} has no {FOLDER}/wnids.txt; expected the official {FOLDER}/ layout")
    wnid_lines = [w.strip() for w in _text(text["wnids.txt"], f"{src}:wnids.txt") if w.strip()]
    if not wnid_lines or len(set(wnid_lines)) != len(wnid_lines):
        raise ReprlabError(f"{src}:wnids.txt lists {len(wnid_lines)} wnids ({len(set(wnid_lines))} distinct); expected one distinct wnid per line")
    wnids = sorted(wnid_lines)
    index = {w: i for i, w in enumerate(wnids)}
    classes = _class_names(wnids, text.get("words.txt"), src)

    # Train: labels come from the folder name.
    for wnid, name, _ in train_raw:
        if wnid not in index:
            raise ReprlabError(f"{src}: train folder train/{wnid}/ is not a wnid listed in wnids.txt")
    if not train_raw:
        raise ReprlabError(f"{src} holds no train images; expected {FOLDER}/train/<wnid>/images/*.JPEG")
    train_raw.sort(key=lambda t: (index[t[0]], _natural(t[1])))
    per_class = torch.bincount(torch.tensor([index[w] for w, _, _ in train_raw]), minlength=len(wnids))
    if (per_class == 0).any():
        missing = [wnids[i] for i in torch.nonzero(per_class == 0).flatten().tolist()]
        raise ReprlabError(f"{src}: {len(missing)} class(es) of wnids.txt have no train images (first: train/{missing[0]}/images/)")

    # Val: labels come from the annotation file; every annotated file must exist and vice versa.
    ann_key = "val/val_annotations.txt"
    if ann_key not in text:
        raise ReprlabError(f"Tiny ImageNet source {src} has no {FOLDER}/{ann_key}; expected the official {FOLDER}/ layout")
    val_label: dict[str, int] = {}
    for lineno, line in enumerate(_text(text[ann_key], f"{src}:{ann_key}"), 1):
        if not line.strip():
            continue
        fields = line.split("\t")
        if len(fields) < 2:
            raise ReprlabError(f"{src}:{ann_key} line {lineno}: {line[:60]!r} is not '<file>\\t<wnid>\\t...'")
        name, wnid = fields[0].strip(), fields[1].strip()
        if wnid not in index:
            raise ReprlabError(f"{src}:{ann_key} line {lineno}: wnid {wnid!r} of {name} is not listed in wnids.txt")
        if name not in val_raw:
            raise ReprlabError(f"{src}:{ann_key} line {lineno} names {name}, but val/images/{name} is absent")
        val_label[name] = index[wnid]
    unlabelled = sorted(set(val_raw) - set(val_label), key=_natural)
    if unlabelled:
        raise ReprlabError(f"{src}: {len(unlabelled)} val image(s) have no line in {ann_key} (first: val/images/{unlabelled[0]})")
    val_names = sorted(val_raw, key=_natural)

    t1 = time.perf_counter()
    train_images, gray_train = _decode_all([(f"train/{w}/images/{n}", b) for w, n, b in train_raw], src)
    val_images, gray_val = _decode_all([(f"val/images/{n}", val_raw[n]) for n in val_names], src)
    t_decode = time.perf_counter() - t1
    t2 = time.perf_counter()
    if resolution != NATIVE:
        train_images, val_images = resize_batch(train_images, resolution), resize_batch(val_images, resolution)
    t_resize = time.perf_counter() - t2
    mean, std = channel_stats(train_images)
    return {
        "train_images": train_images,
        "train_labels": torch.tensor([index[w] for w, _, _ in train_raw], dtype=torch.int64),
        "val_images": val_images,
        "val_labels": torch.tensor([val_label[n] for n in val_names], dtype=torch.int64),
        "wnids": wnids,
        "classes": classes,
        "mean": mean,
        "std": std,
        "grayscale": gray_train + gray_val,
        "seconds": {"read": t_read, "decode": t_decode, "resize": t_resize, "total": time.perf_counter() - t0},
    }


def _decode_all(items: list[tuple[str, bytes]], src: Path) -> tuple[torch.Tensor, int]:
    """Decode (name, JPEG bytes) pairs into one uint8 (N, 3, 64, 64) array; also the grayscale count."""
    out = torch.empty((len(items), 3, NATIVE, NATIVE), dtype=torch.uint8)
    gray = 0
    with quiet_decoder():
        for i, (rel, raw) in enumerate(items):
            img, was_gray = decode_rgb(raw, f"{src}:{rel}")
            if img.shape[-2:] != (NATIVE, NATIVE):
                raise ReprlabError(f"image {src}:{rel} is {img.shape[-1]}x{img.shape[-2]}; Tiny ImageNet images are {NATIVE}x{NATIVE}")
            out[i] = img
            gray += was_gray
    return out, gray


def _from_native(native: dict, resolution: int) -> dict:
    """The blob at ``resolution`` computed from the cached 64 px blob: the same arrays a fresh
    decode would give (decode at 64, then resize), without touching the JPEGs again."""
    t0 = time.perf_counter()
    train_images = resize_batch(native["train_images"], resolution)
    val_images = resize_batch(native["val_images"], resolution)
    mean, std = channel_stats(train_images)
    keep = ("train_labels", "val_labels", "wnids", "classes", "grayscale")
    return {
        **{k: native[k] for k in keep if k in native},
        "train_images": train_images,
        "val_images": val_images,
        "mean": mean,
        "std": std,
        "seconds": {"resize": time.perf_counter() - t0, "total": time.perf_counter() - t0},
    }


def _cache_key(src: Path, resolution: int) -> str:
    if src.is_dir():
        stamp = []
        for rel in ("wnids.txt", "val/val_annotations.txt", "train", "val/images"):
            p = src / rel
            st = p.stat() if p.exists() else None
            stamp.append(f"{st.st_size}-{st.st_mtime_ns}" if st else "none")
        stamp_s = hashlib.sha1("|".join(stamp).encode()).hexdigest()[:10]
    else:
        st = src.stat()
        stamp_s = f"{st.st_size}-{st.st_mtime_ns}"
    path_hash = hashlib.sha1(str(src.resolve()).encode()).hexdigest()[:8]
    return f"{src.name}-r{resolution}-{stamp_s}-{path_hash}"


def load(root_setting: str = "", resolution: int = NATIVE, cache: str = "") -> tuple[ImageSet, ImageSet, dict]:
    """(train, val, info) of Tiny ImageNet at ``resolution``, decoded once and then read from the cache."""
    resolution = check_resolution(resolution)
    src = locate(root_setting)
    cache_file = cache_dir(cache) / "tiny-imagenet" / f"{_cache_key(src, resolution)}.pt"
    required = ("train_images", "train_labels", "val_images", "val_labels", "wnids", "classes", "mean", "std")
    blob = load_cache(cache_file, required)
    hit = blob is not None
    derived_from = None
    if blob is None and resolution != NATIVE:
        # Another resolution from an existing 64 px cache costs a resize instead of a decode.
        native_file = cache_file.with_name(f"{_cache_key(src, NATIVE)}.pt")
        native = load_cache(native_file, required)
        if native is not None:
            blob, derived_from = _from_native(native, resolution), str(native_file)
    if blob is None:
        blob = _read(src, resolution)
    if not hit:
        save_cache(cache_file, blob)
    classes = list(blob["classes"])
    train = ImageSet(blob["train_images"], blob["train_labels"], classes)
    val = ImageSet(blob["val_images"], blob["val_labels"], classes)
    info = {
        "source": str(src),
        "num_classes": len(classes),
        "wnids": list(blob["wnids"]),
        "resolution": resolution,
        "mean": tuple(blob["mean"]),
        "std": tuple(blob["std"]),
        "val": "official val split (data.val_size ignored)",
        "grayscale_converted": int(blob.get("grayscale", 0)),
        "decode_seconds": dict(blob.get("seconds", {})),
        "cache": str(cache_file),
        "cache_hit": hit,
        "derived_from_cache": derived_from,
    }
    return train, val, info


@register_dataset("tiny-imagenet")
def load_tiny_imagenet(cfg) -> Splits:
    """Official train and val splits (``cfg.val_size`` is ignored), no test split."""
    train, val, info = load(cfg.root, cfg.resolution, cfg.cache_dir)
    return Splits(train, val, None, "tiny-imagenet", info["mean"], info["std"], info)
