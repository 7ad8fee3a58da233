"""CIFAR-100 from its official python-pickle archive (Krizhevsky 2009).

Accepted under the data root: ``cifar-100-python.tar.gz`` or its extracted ``cifar-100-python/``
folder. When neither is there, the archive is downloaded (torchvision's downloader, published
md5 checked) into the cache dir. A local archive whose md5 differs from the published one (a
rebuilt archive, a mirror that reordered samples) is not rejected: the content is validated
instead (shapes, dtype, label ranges, 100 fine and 20 coarse classes), and a note saying so is
printed once per archive (per md5, remembered in the cache dir; a rebuilt cache or a copy of the
archive with a new modification time is the same archive). Decoded arrays are cached as uint8
tensors in the cache dir, keyed by the archive's size and modification time, so later runs load
in well under a second.
"""

from __future__ import annotations

import hashlib
import io
import os
import pickle
import sys
import tarfile
import zlib
from pathlib import Path

import torch

from reprlab.data.paths import ENV_DATA, cache_dir, data_root
from reprlab.data.types import ImageSet
from reprlab.errors import ReprlabError
from reprlab.io import FileLock, atomic_torch_save, atomic_write_bytes, load_torch, make_dirs, move_into_place

URL = "https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz"
ARCHIVE = "cifar-100-python.tar.gz"
FOLDER = "cifar-100-python"
MD5 = "eb9058c3a382ffc7106e4002c42a8d85"
MEAN = (0.5071, 0.4865, 0.4409)
STD = (0.2673, 0.2564, 0.2762)
EXPECTED = {"train": 50_000, "test": 10_000}
CACHE_VERSION = 1


def locate(root_setting: str = "", download: bool = True, cache: str = "") -> Path:
    """Path of the archive or extracted folder; downloads into the cache when absent."""
    root, how = data_root(root_setting)
    tried = [root / ARCHIVE, root / FOLDER, root / FOLDER / "train"]
    if (root / ARCHIVE).is_file():
        return root / ARCHIVE
    if (root / FOLDER / "train").is_file():
        return root / FOLDER
    cached = cache_dir(cache) / "downloads" / ARCHIVE
    tried.append(cached)
    if cached.is_file():
        return cached
    if download:
        # Several workers of a study may start at once: one downloads (under the lock, into a
        # temporary name, renamed when its md5 is right), the others wait and reuse the file.
        lock = FileLock(make_dirs(cached.parent) / ".lock").acquire(wait=True)
        try:
            if not cached.is_file():
                _download(cached, tried, how)
        finally:
            lock.release()
        return cached
    raise ReprlabError(
        f"CIFAR-100 not found: tried {', '.join(map(str, tried))} (data root from {how}); "
        f"pass --data-root or set ${ENV_DATA} to the folder holding {ARCHIVE}, or download it from {URL}"
    )


def _download(dest: Path, tried: list[Path], how: str) -> None:
    from torchvision.datasets.utils import download_url

    tmp_name = f".{ARCHIVE}.tmp{os.getpid()}"
    tmp = dest.parent / tmp_name
    try:
        try:
            download_url(URL, str(dest.parent), tmp_name, MD5)
        except Exception as e:  # noqa: BLE001 - turned into the one-line message below
            raise ReprlabError(
                f"CIFAR-100 not found (tried {', '.join(map(str, tried))}; data root from {how}) and the download "
                f"from {URL} failed ({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}); "
                f"put {ARCHIVE} under the data root (--data-root or ${ENV_DATA})"
            ) from None
        if _md5(tmp) != MD5:
            raise ReprlabError(f"the CIFAR-100 download from {URL} has the wrong md5 (expected {MD5}); try again")
        move_into_place(tmp, dest)
    finally:
        tmp.unlink(missing_ok=True)  # whatever failed (a full disk, Ctrl-C), no partial download stays


def _load_cache(path: Path) -> dict | None:
    """The decoded arrays cached at ``path``; None when absent or unreadable (then rebuilt)."""
    if not path.is_file():
        return None
    try:
        blob = load_torch(path, "cache file", weights_only=True)
    except ReprlabError:
        return None
    return blob if isinstance(blob, dict) and all(k in blob for k in ("train", "test", "classes", "coarse_classes", "checksum")) else None


def _note_md5_once(src: Path, digest: str, cache: Path, blob: dict) -> None:
    """Say once per archive (per md5, remembered in the cache dir) that it differs from the
    published one and that its content was validated instead: information, not a warning."""
    marker = cache / f".md5-noted-{digest}"
    if marker.exists():
        return
    n_train, n_test = len(blob["train"][1]), len(blob["test"][1])
    print(
        f"reprlab: note: {src}: md5 differs from the published {MD5} (a repacked copy); content validated: "
        f"{n_train} train and {n_test} test images, {len(blob['classes'])} classes, {len(blob['coarse_classes'])} superclasses; "
        "it is used as is (shown once per archive)",
        file=sys.stderr,
    )
    try:
        atomic_write_bytes(marker, f"{src}\n".encode())
    except ReprlabError:  # a read-only cache: the cache write below reports it
        pass


def _md5(path: Path) -> str:
    h = hashlib.md5()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 22), b""):
            h.update(chunk)
    return h.hexdigest()


def _read_members(src: Path) -> dict[str, dict]:
    """Unpickle train/test/meta from the archive (streamed, nothing extracted) or the folder."""
    out = {}
    if src.is_dir():
        for name in ("train", "test", "meta"):
            f = src / name
            if not f.is_file():
                raise ReprlabError(f"CIFAR-100 folder {src}: file {name!r} missing; expected train, test and meta")
            out[name] = _unpickle(f.read_bytes(), f)
        return out
    try:
        with tarfile.open(src, "r:gz") as tar:
            for m in tar:
                base = m.name.rsplit("/", 1)[-1]
                if m.isfile() and base in ("train", "test", "meta"):
                    out[base] = _unpickle(tar.extractfile(m).read(), Path(f"{src}:{m.name}"))
    except (tarfile.TarError, EOFError, zlib.error, OSError) as e:
        raise ReprlabError(f"CIFAR-100 archive {src} is truncated or corrupt ({type(e).__name__}: {e}); delete it and download again") from None
    missing = {"train", "test", "meta"} - set(out)
    if missing:
        raise ReprlabError(f"CIFAR-100 archive {src} lacks member(s) {', '.join(sorted(missing))}; expected {FOLDER}/{{train,test,meta}}")
    return out


def _unpickle(raw: bytes, where: Path) -> dict:
    try:
        obj = pickle.load(io.BytesIO(raw), encoding="latin1")
    except Exception as e:  # noqa: BLE001 - any unpickling failure means a corrupt file
        raise ReprlabError(f"CIFAR-100 file {where} cannot be unpickled ({type(e).__name__}); the archive is corrupt") from None
    if not isinstance(obj, dict):
        raise ReprlabError(f"CIFAR-100 file {where}: expected a dict, got {type(obj).__name__}")
    return obj


def _to_split(d: dict, name: str, where: Path) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    for key in ("data", "fine_labels", "coarse_labels"):
        if key not in d:
            raise ReprlabError(f"CIFAR-100 {where} split {name!r}: key {key!r} missing")
    import numpy as np

    data = np.asarray(d["data"])
    n = EXPECTED[name]
    if data.dtype != np.uint8 or data.shape != (n, 3072):
        raise ReprlabError(f"CIFAR-100 {where} split {name!r}: 'data' is {data.dtype} {data.shape}, expected uint8 ({n}, 3072)")
    fine = torch.as_tensor(np.asarray(d["fine_labels"], dtype=np.int64))
    coarse = torch.as_tensor(np.asarray(d["coarse_labels"], dtype=np.int64))
    for key, lab, k in (("fine_labels", fine, 100), ("coarse_labels", coarse, 20)):
        if lab.shape != (n,):
            raise ReprlabError(f"CIFAR-100 {where} split {name!r}: {key!r} has shape {tuple(lab.shape)}, expected ({n},)")
        if lab.min() < 0 or lab.max() >= k:
            raise ReprlabError(f"CIFAR-100 {where} split {name!r}: {key!r} spans [{int(lab.min())}, {int(lab.max())}], expected [0, {k - 1}]")
        if len(torch.unique(lab)) != k:
            raise ReprlabError(f"CIFAR-100 {where} split {name!r}: {key!r} has {len(torch.unique(lab))} classes, expected {k}")
    images = torch.from_numpy(data.reshape(n, 3, 32, 32).copy())  # R,G,B planes -> NCHW without a transpose
    return images, fine, coarse


def load(root_setting: str = "", download: bool = True, cache: str = "") -> tuple[ImageSet, ImageSet, dict]:
    """(train, test, info) of CIFAR-100 with fine and coarse labels."""
    src = locate(root_setting, download, cache)
    stat = src.stat() if src.is_file() else (src / "train").stat()
    key = f"v{CACHE_VERSION}-{stat.st_size}-{int(stat.st_mtime)}-{hashlib.sha1(str(src.resolve()).encode()).hexdigest()[:8]}"
    cache_file = cache_dir(cache) / "cifar100" / f"{key}.pt"
    blob = _load_cache(cache_file)
    if blob is None:
        checksum, digest = "folder (no md5)", None
        if src.is_file():
            digest = _md5(src)
            checksum = "md5 ok" if digest == MD5 else "md5 differs: content validated"
        members = _read_members(src)
        meta = members["meta"]
        for k in ("fine_label_names", "coarse_label_names"):
            if k not in meta:
                raise ReprlabError(f"CIFAR-100 {src} meta: key {k!r} missing")
        blob = {"classes": list(meta["fine_label_names"]), "coarse_classes": list(meta["coarse_label_names"]), "checksum": checksum}
        for split in ("train", "test"):
            blob[split] = _to_split(members[split], split, src)
        make_dirs(cache_file.parent)
        if digest is not None and digest != MD5:
            _note_md5_once(src, digest, cache_file.parent, blob)
        atomic_torch_save(blob, cache_file)
    sets = {
        s: ImageSet(blob[s][0], blob[s][1], blob["classes"], blob[s][2], blob["coarse_classes"]) for s in ("train", "test")
    }
    info = {"source": str(src), "checksum": blob["checksum"], "cache": str(cache_file)}
    return sets["train"], sets["test"], info
