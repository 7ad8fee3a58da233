"""Any folder of images as a dataset (``data.dataset = "image-folder"``), decoded once and cached.

``data.folder`` (absolute, or relative to the data root) is read in one of two layouts:

* class sub-folders: ``<folder>/<class>/**/*.{jpg,jpeg,png,bmp,webp}``. Every direct sub-folder
  that holds at least one image (searched recursively, so ``<class>/images/*.JPEG`` works too) is
  a class; classes are the sorted sub-folder names. Sub-folders without images are ignored.
* flat: images directly in ``<folder>``. Every label is 0 and ``classes == ["unlabelled"]``: the
  layout of an unlabelled pretraining set.

A folder holding images both at its top level and in sub-folders is rejected, because either
reading of it would silently drop some images. Hidden files and folders (``.name``) are skipped.

Every image is decoded once (EXIF orientation applied, grayscale/alpha/16-bit converted to 8-bit
RGB), its shorter side resized to ``data.resolution`` (antialiased) and centre-cropped to a square.
The uint8 arrays, labels and per-channel mean/std (over all images of the folder, so the cache does
not depend on the split seed) are cached in the cache dir, keyed by the folder's path, the
resolution and the name, size and modification time of every image file: adding, removing or
replacing an image invalidates the cache, renaming the folder does too.

Splits: ``val`` is a class-stratified, seeded carve-out (:func:`~reprlab.data.splits.stratified_split`)
of ``min(data.val_size, N // 10)`` images, so a small folder never loses more than a tenth of its
images to validation; ``train`` is every other image; there is no test split (``test=None``).

The helpers below (decoding, resizing, channel statistics, the atomic cache) are shared with the
Tiny ImageNet loader.
"""

from __future__ import annotations

import hashlib
import io
import os
import time
import warnings
from contextlib import contextmanager
from pathlib import Path
from typing import Iterable, Iterator

import torch

from reprlab.data.paths import ENV_DATA, cache_dir, data_root
from reprlab.data.registry import register_dataset
from reprlab.data.splits import stratified_split
from reprlab.data.types import ImageSet, Splits
from reprlab.errors import ReprlabError
from reprlab.io import atomic_torch_save, load_torch, make_dirs

EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".webp")
FLAT_CLASS = "unlabelled"
CACHE_VERSION = 1
# Formats torchvision decodes natively (libjpeg-turbo, libpng, libwebp), recognised by their magic
# bytes rather than the file extension, which is often wrong. Anything else goes through PIL.
_JPEG, _PNG, _RIFF = b"\xff\xd8\xff", b"\x89PNG\r\n\x1a\n", b"RIFF"


# --------------------------------------------------------------------------------------------
# Shared helpers


def check_resolution(resolution: object) -> int:
    """``data.resolution`` as a positive int, or a one-line error."""
    if isinstance(resolution, bool) or not isinstance(resolution, int) or resolution < 1:
        raise ReprlabError(f"data.resolution must be a positive integer (pixels per side), got {resolution!r}")
    return resolution


@contextmanager
def quiet_decoder() -> Iterator[None]:
    """Silence torchvision's per-call deprecation warning of its image decoders around a decode loop.

    torchvision 0.29 warns on every decode call; over tens of thousands of files that floods the
    log and costs more time than the decoding itself. The decoders still work, and they are 2-3x
    faster than PIL on small JPEGs; :func:`decode_rgb` falls back to PIL wherever they fail.
    """
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=DeprecationWarning, module=r"torchvision\.io")
        yield


def decode_rgb(raw: bytes, where: str, exif: bool = False) -> tuple[torch.Tensor, bool]:
    """Decode encoded image bytes to uint8 (3, H, W); also says whether the file was grayscale.

    Grayscale files are expanded to three equal channels (the models expect RGB), alpha is
    dropped, palettes are expanded and 16-bit PNGs are scaled down to 8 bits.
    """
    from torchvision.io import ImageReadMode, decode_image

    def native(mode: ImageReadMode) -> torch.Tensor | None:
        try:
            return decode_image(torch.frombuffer(bytearray(raw), dtype=torch.uint8), mode, apply_exif_orientation=exif)
        except (RuntimeError, ValueError):
            return None  # let PIL try (e.g. a variant libjpeg-turbo rejects); it names the failure

    img, gray = None, False
    if raw.startswith(_JPEG):
        # UNCHANGED only for JPEG, to count grayscale files: a 1-channel JPEG expanded to three
        # equal channels is exactly what libjpeg's own conversion gives. CMYK and other colour
        # spaces are re-decoded in RGB mode, which converts them properly.
        img = native(ImageReadMode.UNCHANGED)
        if img is not None and img.shape[0] == 1:
            img, gray = img.expand(3, -1, -1), True
        elif img is not None and img.shape[0] != 3:
            img = native(ImageReadMode.RGB)
    elif raw.startswith((_PNG, _RIFF)):
        # Never UNCHANGED for PNG: it returns raw palette indices for palette images.
        img = native(ImageReadMode.RGB)
        gray = raw.startswith(_PNG) and len(raw) > 25 and raw[25] in (0, 4)  # IHDR colour type: gray(+alpha)
    if img is None:
        img, gray = _decode_pil(raw, where, exif)
    if img.dtype != torch.uint8:
        from torchvision.transforms.v2.functional import to_dtype

        img = to_dtype(img, torch.uint8, scale=True)
    if img.ndim != 3 or img.shape[0] != 3:
        raise ReprlabError(f"image {where} decodes to shape {tuple(img.shape)}; expected 3 channels (RGB)")
    return img, gray


def _decode_pil(raw: bytes, where: str, exif: bool) -> tuple[torch.Tensor, bool]:
    from PIL import Image, ImageOps

    try:
        with Image.open(io.BytesIO(raw)) as im:
            if exif:
                im = ImageOps.exif_transpose(im)
            gray = im.mode in ("1", "L", "LA", "La", "I", "I;16", "I;16B", "I;16L", "F")
            im = im.convert("RGB")
            arr = torch.frombuffer(bytearray(im.tobytes()), dtype=torch.uint8)
            return arr.view(im.height, im.width, 3).permute(2, 0, 1).contiguous(), gray
    except Exception as e:  # noqa: BLE001 - any decoder failure means an unreadable file
        msg = str(e).splitlines()[0] if str(e) else ""
        raise ReprlabError(f"cannot decode image {where} ({type(e).__name__}: {msg}); the file is corrupt or not an image") from None


def resize_square(img: torch.Tensor, size: int) -> torch.Tensor:
    """Shorter side to ``size`` (antialiased bilinear), then a centre crop to ``size`` x ``size``."""
    from torchvision.transforms.v2.functional import center_crop, resize

    h, w = img.shape[-2:]
    if h == size and w == size:
        return img
    if min(h, w) != size:
        img = resize(img, [size], antialias=True)
    return center_crop(img, [size, size])


def resize_batch(images: torch.Tensor, size: int, chunk: int = 2048) -> torch.Tensor:
    """Antialiased resize of a uint8 (N, 3, H, W) array to square ``size``, chunked to bound memory."""
    from torchvision.transforms.v2.functional import resize

    if images.shape[-2:] == (size, size):
        return images
    out = torch.empty((len(images), images.shape[1], size, size), dtype=torch.uint8)
    for i in range(0, len(images), chunk):
        # torchvision has a dedicated uint8 antialiased kernel on CPU: no float copy of the batch.
        out[i : i + chunk] = resize(images[i : i + chunk], [size, size], antialias=True)
    return out


def channel_stats(images: torch.Tensor, chunk: int = 2048) -> tuple[tuple[float, float, float], tuple[float, float, float]]:
    """Per-channel mean and std of a uint8 (N, 3, H, W) array, in [0, 1] units.

    A 256-bin histogram per channel gives exact sums (integer counts, no float accumulation error
    over ~10^8 pixels) and is several times faster than float reductions over a strided channel
    axis; chunking keeps the temporary copies small.
    """
    import numpy as np

    if len(images) == 0:
        raise ReprlabError("cannot compute mean/std of an empty image set")
    arr = images.numpy()
    counts = np.zeros((images.shape[1], 256), dtype=np.int64)
    for i in range(0, len(arr), chunk):
        for ch in range(arr.shape[1]):
            counts[ch] += np.bincount(arr[i : i + chunk, ch].ravel(), minlength=256)
    values = np.arange(256, dtype=np.float64)
    n = counts.sum(axis=1).astype(np.float64)
    mean = (counts @ values) / n
    var = np.maximum((counts @ (values * values)) / n - mean * mean, 0.0)
    return tuple(float(v) / 255 for v in mean), tuple(float(v) / 255 for v in np.sqrt(var))  # type: ignore[return-value]


def load_cache(path: Path, required: Iterable[str]) -> dict | None:
    """The cached blob at ``path``, or None when absent, unreadable or from another cache version."""
    if not path.is_file():
        return None
    try:
        blob = load_torch(path, "cache file", weights_only=True)
    except ReprlabError:  # a damaged cache is rebuilt, never fatal
        warnings.warn(f"ignoring unreadable cache file {path}; decoding again", stacklevel=3)
        return None
    if not isinstance(blob, dict) or blob.get("version") != CACHE_VERSION or any(k not in blob for k in required):
        return None
    return blob


def save_cache(path: Path, blob: dict) -> None:
    """Write ``blob`` atomically: readers (other runs sharing the cache) never see a partial file."""
    make_dirs(path.parent)
    atomic_torch_save({**blob, "version": CACHE_VERSION}, path)


# --------------------------------------------------------------------------------------------
# The image-folder dataset


def _is_image(p: os.DirEntry | Path) -> bool:
    return not p.name.startswith(".") and p.name.lower().endswith(EXTENSIONS)


def _images_under(folder: Path) -> list[Path]:
    """Image files anywhere below ``folder`` (hidden entries skipped), in sorted path order."""
    found: list[Path] = []
    for dirpath, dirnames, filenames in os.walk(folder, followlinks=True):
        dirnames[:] = [d for d in dirnames if not d.startswith(".")]
        found.extend(Path(dirpath) / f for f in filenames if not f.startswith(".") and f.lower().endswith(EXTENSIONS))
    return sorted(found)


def resolve_folder(folder_setting: str, root_setting: str = "") -> Path:
    """``data.folder`` as a path: absolute as given, relative ones under the data root."""
    if not folder_setting:
        raise ReprlabError('data.folder is empty; the image-folder dataset needs data.folder="<path of the image folder>"')
    path = Path(folder_setting).expanduser()
    tried = [path]
    if not path.is_absolute():
        root, how = data_root(root_setting)
        path = root / path
        tried = [path]
        if not path.is_dir():
            raise ReprlabError(
                f"image folder not found: tried {path} (data.folder={folder_setting!r} under the data root {root}, from {how}); "
                f"give an absolute data.folder or set the data root (--data-root, data.root or ${ENV_DATA})"
            )
    if not path.is_dir():
        raise ReprlabError(f"image folder not found: tried {', '.join(map(str, tried))}; data.folder must name an existing directory")
    return path


def scan(folder: Path) -> tuple[list[Path], list[int], list[str], str]:
    """(files, labels, classes, layout) of a folder in either layout; see the module docstring."""
    top = []
    subdirs = []
    with os.scandir(folder) as it:
        for e in it:
            if e.name.startswith("."):
                continue
            if e.is_dir():
                subdirs.append(Path(e.path))
            elif e.is_file() and _is_image(e):
                top.append(Path(e.path))
    per_class = {d.name: imgs for d in sorted(subdirs) if (imgs := _images_under(d))}
    if top and per_class:
        raise ReprlabError(
            f"image folder {folder} holds {len(top)} image(s) at its top level and images in sub-folder(s) "
            f"{', '.join(sorted(per_class)[:3])}{'...' if len(per_class) > 3 else ''}; expected either class sub-folders or a flat folder"
        )
    if top:
        return sorted(top), [0] * len(top), [FLAT_CLASS], "flat"
    if not per_class:
        raise ReprlabError(
            f"image folder {folder} contains no images (looked for {', '.join(EXTENSIONS)} at its top level and in its sub-folders)"
        )
    classes = sorted(per_class)
    files, labels = [], []
    for c, name in enumerate(classes):
        files.extend(per_class[name])
        labels.extend([c] * len(per_class[name]))
    return files, labels, classes, "class sub-folders"


def _fingerprint(folder: Path, files: list[Path], resolution: int) -> str:
    """Cache key over the folder path, resolution and every file's name, size and mtime."""
    h = hashlib.sha1(f"{folder.resolve()}|{resolution}".encode())
    for f in files:
        st = f.stat()
        h.update(f"|{f.relative_to(folder)}|{st.st_size}|{st.st_mtime_ns}".encode())
    return h.hexdigest()[:16]


def decode_files(files: list[Path], resolution: int) -> tuple[torch.Tensor, int]:
    """Decode, resize and centre-crop every file into one uint8 (N, 3, r, r) array; also the gray count."""
    out = torch.empty((len(files), 3, resolution, resolution), dtype=torch.uint8)
    gray_count = 0
    with quiet_decoder():
        for i, f in enumerate(files):
            try:
                raw = f.read_bytes()
            except OSError as e:
                raise ReprlabError(f"cannot read image {f} ({type(e).__name__}: {e.strerror or e})") from None
            img, gray = decode_rgb(raw, str(f), exif=True)
            gray_count += gray
            out[i] = resize_square(img, resolution)
    return out, gray_count


def load(folder_setting: str, root_setting: str = "", resolution: int = 32, cache: str = "") -> tuple[ImageSet, dict]:
    """Every image of the folder as one :class:`ImageSet` (cached), and an info dict."""
    resolution = check_resolution(resolution)
    folder = resolve_folder(folder_setting, root_setting)
    files, labels, classes, layout = scan(folder)
    key = _fingerprint(folder, files, resolution)
    cache_file = cache_dir(cache) / "image-folder" / f"{folder.name}-r{resolution}-{key}.pt"
    blob = load_cache(cache_file, ("images", "labels", "classes", "mean", "std"))
    hit = blob is not None
    if blob is None:
        t0 = time.perf_counter()
        images, gray = decode_files(files, resolution)
        mean, std = channel_stats(images)
        blob = {
            "images": images,
            "labels": torch.tensor(labels, dtype=torch.int64),
            "classes": classes,
            "mean": mean,
            "std": std,
            "grayscale": gray,
            "decode_seconds": time.perf_counter() - t0,
        }
        save_cache(cache_file, blob)
    info = {
        "source": str(folder),
        "layout": layout,
        "num_classes": len(blob["classes"]),
        "num_images": len(blob["labels"]),
        "resolution": resolution,
        "mean": tuple(blob["mean"]),
        "std": tuple(blob["std"]),
        "grayscale_converted": int(blob.get("grayscale", 0)),
        "decode_seconds": float(blob.get("decode_seconds", 0.0)),
        "cache": str(cache_file),
        "cache_hit": hit,
    }
    return ImageSet(blob["images"], blob["labels"], list(blob["classes"])), info


@register_dataset("image-folder")
def load_image_folder(cfg) -> Splits:
    """Splits of ``cfg.folder``: a stratified val carve-out of ``min(cfg.val_size, N // 10)``, the rest train."""
    full, info = load(cfg.folder, cfg.root, cfg.resolution, cfg.cache_dir)
    if isinstance(cfg.val_size, bool) or not isinstance(cfg.val_size, int) or cfg.val_size < 0:
        raise ReprlabError(f"data.val_size must be a non-negative integer, got {cfg.val_size!r}")
    # A tenth at most: a small folder used for pretraining should keep nearly all of its images.
    val_size = min(cfg.val_size, len(full) // 10)
    tr, va = stratified_split(full.labels, val_size, cfg.split_seed)
    info["val_carved"] = val_size
    return Splits(full.subset(tr), full.subset(va), None, "image-folder", info["mean"], info["std"], info)
