"""Tiny ImageNet loader: the real reduced archive (``realdata``) and small synthetic copies.

The real archive is found through ``$REPRLAB_DATA`` and decoded once per session at 64 px and
once at 32 px into a session cache dir. The expected values (labels, class names, pixels,
grayscale files) are derived here independently, with tarfile and PIL, from the same archive.
"""

from __future__ import annotations

import io
import os
import re
import tarfile
import time
import zipfile
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from reprlab.config import DataConfig
from reprlab.data import paths, tinyimagenet
from reprlab.data.registry import load_splits
from reprlab.errors import ReprlabError

MINI = "tiny-imagenet-200-mini.tar.gz"


def _natural(name: str) -> tuple:
    return tuple(int(t) if t.isdigit() else t for t in re.split(r"(\d+)", name))


def _pil_rgb(raw: bytes) -> tuple[torch.Tensor, str]:
    with Image.open(io.BytesIO(raw)) as im:
        mode = im.mode
        arr = np.array(im.convert("RGB"))
    return torch.from_numpy(arr).permute(2, 0, 1), mode


@pytest.fixture(autouse=True)
def _no_cli_root(monkeypatch: pytest.MonkeyPatch) -> None:
    # A CLI test elsewhere may have set --data-root process-wide; these tests choose their own root.
    monkeypatch.setattr(paths, "_cli_data_root", None)


# --------------------------------------------------------------------------------------------
# Real data (session fixtures: the archive is decoded once per resolution)


@pytest.fixture(scope="session")
def real_root() -> Path:
    raw = os.environ.get(paths.ENV_DATA, "")
    if not raw:
        pytest.skip(f"${paths.ENV_DATA} is not set; it must name the folder holding {MINI}")
    root = Path(raw).expanduser()
    if not (root / MINI).is_file():
        pytest.skip(f"{root / MINI} not found (${paths.ENV_DATA}={raw})")
    return root


@pytest.fixture(scope="session")
def session_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("tiny-cache")


@pytest.fixture(scope="session")
def real_cfg(real_root: Path, session_cache: Path) -> DataConfig:
    return DataConfig(dataset="tiny-imagenet", root=str(real_root), cache_dir=str(session_cache), resolution=64)


def _load_without_cli_root(cfg: DataConfig):
    # Session fixtures run before the function-scoped monkeypatch above, so clear and restore
    # the process-wide --data-root by hand.
    saved = paths._cli_data_root
    paths.set_cli_data_root(None)
    try:
        return load_splits(cfg)
    finally:
        paths.set_cli_data_root(saved)


@pytest.fixture(scope="session")
def tiny64(real_cfg: DataConfig):
    t0 = time.perf_counter()
    splits = _load_without_cli_root(real_cfg)
    splits.info["test_load_seconds"] = time.perf_counter() - t0
    return splits


@pytest.fixture(scope="session")
def tiny32(real_cfg: DataConfig, tiny64):
    return _load_without_cli_root(replace(real_cfg, resolution=32))


@pytest.fixture(scope="session")
def archive(real_root: Path) -> dict:
    """Everything the tests compare against, read from the archive with plain Python."""
    out: dict = {"train": {}, "val": {}}
    with tarfile.open(real_root / MINI, "r:gz") as tar:
        for m in tar:
            if not m.isfile():
                continue
            parts = m.name.split("/")[1:]
            data = tar.extractfile(m).read()
            if parts == ["wnids.txt"]:
                out["wnids"] = sorted(data.decode().split())
            elif parts == ["words.txt"]:
                out["words"] = dict(line.split("\t", 1) for line in data.decode().splitlines() if "\t" in line)
            elif parts == ["val", "val_annotations.txt"]:
                out["ann"] = {f[0]: f[1] for f in (line.split("\t") for line in data.decode().splitlines() if line)}
            elif len(parts) == 4 and parts[0] == "train" and parts[2] == "images":
                out["train"][(parts[1], parts[3])] = data
            elif len(parts) == 3 and parts[:2] == ["val", "images"]:
                out["val"][parts[2]] = data
    index = {w: i for i, w in enumerate(out["wnids"])}
    # The documented order: train by label then natural file name, val by natural file name.
    out["train_order"] = sorted(out["train"], key=lambda k: (index[k[0]], _natural(k[1])))
    out["val_order"] = sorted(out["val"], key=_natural)
    out["index"] = index
    return out


@pytest.mark.realdata
def test_real_counts_shapes_and_stats(tiny64) -> None:
    s = tiny64
    assert s.name == "tiny-imagenet" and s.test is None
    assert s.info["source"].endswith(MINI), f"expected the mini archive, got {s.info['source']}"
    assert s.train.num_classes == 200 and s.info["num_classes"] == 200
    assert s.train.images.dtype == torch.uint8 and s.train.images.shape == (20_000, 3, 64, 64)
    assert s.train.labels.dtype == torch.int64
    assert torch.equal(torch.bincount(s.train.labels, minlength=200), torch.full((200,), 100))
    assert s.val.images.shape == (10_000, 3, 64, 64)
    assert torch.equal(torch.bincount(s.val.labels, minlength=200), torch.full((200,), 50))
    # Mean/std recomputed independently from exact integer sums over the train images (val excluded).
    arr = s.train.images.numpy()
    n = arr.shape[0] * arr.shape[2] * arr.shape[3]
    total = arr.sum(axis=(0, 2, 3), dtype=np.int64)
    squares = sum((arr[i : i + 2000].astype(np.int64) ** 2).sum(axis=(0, 2, 3)) for i in range(0, len(arr), 2000))
    mean = total / n / 255
    std = np.sqrt(squares / n / 255**2 - mean**2)
    assert np.allclose(s.mean, mean, atol=1e-9) and np.allclose(s.std, std, atol=1e-9)
    assert s.info["mean"] == s.mean and s.info["std"] == s.std


@pytest.mark.realdata
def test_real_labels_and_names_match_archive(tiny64, archive) -> None:
    s = tiny64
    assert s.info["wnids"] == archive["wnids"]
    assert s.train.classes == [archive["words"][w].split(",")[0].strip() for w in archive["wnids"]]
    expected_val = torch.tensor([archive["index"][archive["ann"][n]] for n in archive["val_order"]])
    assert len(archive["ann"]) == 10_000
    assert torch.equal(s.val.labels, expected_val)  # every val image, against val_annotations.txt
    expected_train = torch.tensor([archive["index"][w] for w, _ in archive["train_order"]])
    assert torch.equal(s.train.labels, expected_train)


@pytest.mark.realdata
def test_real_pixels_match_pil(tiny64, archive) -> None:
    s = tiny64
    for pos in (0, 1, 99, 100, 12_345, 19_999):
        expected, _ = _pil_rgb(archive["train"][archive["train_order"][pos]])
        assert torch.equal(s.train.images[pos], expected), f"train image {archive['train_order'][pos]}"
    for pos in (0, 1, 10, 5_000, 9_999):
        expected, _ = _pil_rgb(archive["val"][archive["val_order"][pos]])
        assert torch.equal(s.val.images[pos], expected), f"val image {archive['val_order'][pos]}"


@pytest.mark.realdata
def test_real_grayscale_became_rgb(tiny64, archive) -> None:
    s = tiny64
    gray = {"train": [], "val": []}
    for split, order, blobs in (("train", archive["train_order"], archive["train"]), ("val", archive["val_order"], archive["val"])):
        for pos, key in enumerate(order):
            with Image.open(io.BytesIO(blobs[key])) as im:  # header only: cheap
                if im.mode == "L":
                    gray[split].append(pos)
    assert gray["train"] and gray["val"], "the archive is known to hold grayscale JPEGs"
    assert s.info["grayscale_converted"] == len(gray["train"]) + len(gray["val"])
    for split, positions in gray.items():
        images = getattr(s, split).images[positions]
        assert images.shape[1] == 3
        assert torch.equal(images[:, 0], images[:, 1]) and torch.equal(images[:, 1], images[:, 2])
    pos = gray["val"][0]
    expected, mode = _pil_rgb(archive["val"][archive["val_order"][pos]])
    assert mode == "L" and torch.equal(s.val.images[pos], expected)


@pytest.mark.realdata
def test_real_resolution_32(tiny32, tiny64) -> None:
    assert tiny32.train.images.shape == (20_000, 3, 32, 32) and tiny32.train.images.dtype == torch.uint8
    assert tiny32.val.images.shape == (10_000, 3, 32, 32)
    assert torch.equal(tiny32.train.labels, tiny64.train.labels) and torch.equal(tiny32.val.labels, tiny64.val.labels)
    # Antialiased: agrees (up to rounding) with torch's float antialiased bilinear resize of the
    # 64 px images, and clearly differs from plain subsampling.
    ref = torch.nn.functional.interpolate(tiny64.val.images[:500].float(), size=(32, 32), mode="bilinear", antialias=True)
    got = tiny32.val.images[:500].float()
    assert (got - ref).abs().max() <= 1.5 and (got - ref).abs().mean() < 0.5
    assert (tiny64.val.images[:500, :, ::2, ::2].float() - ref).abs().mean() > 1.0
    assert tiny32.info["cache"] != tiny64.info["cache"] and Path(tiny32.info["cache"]).is_file()
    assert tiny32.info["derived_from_cache"] == tiny64.info["cache"]  # resized, not decoded again
    assert tiny32.mean == pytest.approx(tiny64.mean, abs=2e-3) and tiny32.std[0] < tiny64.std[0]


@pytest.mark.realdata
def test_real_second_load_hits_cache(real_cfg, tiny64, monkeypatch: pytest.MonkeyPatch) -> None:
    cache_file = Path(tiny64.info["cache"])
    assert cache_file.is_file() and not tiny64.info["cache_hit"]
    mtime = cache_file.stat().st_mtime_ns

    def no_decode(*args, **kwargs):
        raise AssertionError("the archive was decoded again despite a valid cache")

    monkeypatch.setattr(tinyimagenet, "_read", no_decode)
    t0 = time.perf_counter()
    again = load_splits(real_cfg)
    elapsed = time.perf_counter() - t0
    assert again.info["cache_hit"] and cache_file.stat().st_mtime_ns == mtime
    assert torch.equal(again.train.images, tiny64.train.images) and torch.equal(again.val.images, tiny64.val.images)
    assert torch.equal(again.train.labels, tiny64.train.labels) and torch.equal(again.val.labels, tiny64.val.labels)
    assert again.mean == tiny64.mean and again.std == tiny64.std and again.train.classes == tiny64.train.classes
    assert elapsed < tiny64.info["test_load_seconds"]


@pytest.mark.realdata
def test_real_fraction_and_val_size_through_registry(real_cfg, tiny64) -> None:
    quarter = load_splits(replace(real_cfg, fraction=0.25, val_size=123))
    assert len(quarter.train) == 5_000
    assert torch.equal(torch.bincount(quarter.train.labels, minlength=200), torch.full((200,), 25))
    assert torch.equal(quarter.val.labels, tiny64.val.labels)  # data.val_size is ignored


@pytest.mark.realdata
def test_real_truncated_archive_names_file(real_root: Path, tmp_path: Path) -> None:
    root = tmp_path / "root"
    root.mkdir()
    broken = root / MINI
    with open(real_root / MINI, "rb") as src, open(broken, "wb") as dst:
        dst.write(src.read(3_000_000))  # a download cut short, a few MB in
    with pytest.raises(ReprlabError) as e:
        tinyimagenet.load(str(root), 64, str(tmp_path / "cache"))
    msg = str(e.value)
    assert str(broken) in msg and "truncated or corrupt" in msg and "\n" not in msg
    assert not list((tmp_path / "cache").rglob("*.pt")), "nothing may be cached from a broken archive"


# --------------------------------------------------------------------------------------------
# Synthetic copies of the layout (no real data needed)

WNIDS = ["n03000000", "n01000000", "n02000000"]  # deliberately unsorted, as in the official file
WORDS = "n01000000\tgoldfish, Carassius auratus\nn02000000\ttabby, tabby cat\nn03000000\tlighthouse\nn09999999\tother\n"


def _jpeg(color: tuple[int, int, int] | int, mode: str = "RGB", size: int = 64) -> bytes:
    buf = io.BytesIO()
    Image.new(mode, (size, size), color).save(buf, format="JPEG", quality=95)
    return buf.getvalue()


def _fake_files() -> dict[str, bytes]:
    """rel path -> bytes of a 3-class copy; per class 2 train images (the second grayscale)."""
    files = {"wnids.txt": ("\n".join(WNIDS) + "\n").encode(), "words.txt": WORDS.encode()}
    for k, w in enumerate(WNIDS):
        files[f"train/{w}/images/{w}_0.JPEG"] = _jpeg((40 * k, 200, 30))
        files[f"train/{w}/images/{w}_1.JPEG"] = _jpeg(60 + 40 * k, "L")
        files[f"train/{w}/{w}_boxes.txt"] = b"ignored\n"
    ann = []
    for i in range(6):
        w = WNIDS[i % 3]
        files[f"val/images/val_{i}.JPEG"] = _jpeg((10 * i, 10, 250))
        ann.append(f"val_{i}.JPEG\t{w}\t0\t0\t63\t63")
    files["val/val_annotations.txt"] = ("\n".join(ann) + "\n").encode()
    return files


def _write(files: dict[str, bytes], root: Path, kind: str = "folder") -> Path:
    root.mkdir(parents=True, exist_ok=True)
    if kind == "folder":
        for rel, data in files.items():
            p = root / "tiny-imagenet-200" / rel
            p.parent.mkdir(parents=True, exist_ok=True)
            p.write_bytes(data)
        return root / "tiny-imagenet-200"
    if kind == "zip":
        path = root / "tiny-imagenet-200.zip"
        with zipfile.ZipFile(path, "w") as zf:
            for rel, data in reversed(list(files.items())):  # val images before the annotations
                zf.writestr(f"tiny-imagenet-200/{rel}", data)
        return path
    path = root / "tiny-imagenet-200.tar.gz"
    with tarfile.open(path, "w:gz") as tar:
        for rel, data in files.items():
            ti = tarfile.TarInfo(f"tiny-imagenet-200/{rel}")
            ti.size = len(data)
            tar.addfile(ti, io.BytesIO(data))
    return path


def _cfg(root: Path, cache: Path, **kw) -> DataConfig:
    return DataConfig(dataset="tiny-imagenet", root=str(root), cache_dir=str(cache), resolution=kw.pop("resolution", 64), **kw)


def test_synthetic_layouts_agree_and_follow_the_files(tmp_path: Path) -> None:
    files = _fake_files()
    results = {}
    for kind in ("folder", "zip", "targz"):
        src = _write(files, tmp_path / kind, kind)
        s = load_splits(_cfg(tmp_path / kind, tmp_path / "cache"))
        assert s.info["source"] == str(src) and not s.info["cache_hit"]
        results[kind] = s
    s = results["folder"]
    assert s.info["wnids"] == sorted(WNIDS)
    assert s.train.classes == ["goldfish", "tabby", "lighthouse"]
    assert s.train.labels.tolist() == [0, 0, 1, 1, 2, 2]
    assert s.val.labels.tolist() == [2, 0, 1, 2, 0, 1]  # val_i annotated with WNIDS[i % 3]
    assert s.info["grayscale_converted"] == 3
    gray = s.train.images[1]  # n01000000_1: gray level 60 + 40 * WNIDS.index("n01000000")
    assert torch.equal(gray[0], gray[1]) and torch.equal(gray[1], gray[2]) and abs(int(gray[0, 32, 32]) - 100) <= 2
    assert abs(int(s.train.images[0, 1, 10, 10]) - 200) <= 3  # the green channel of an RGB image
    for kind in ("zip", "targz"):
        other = results[kind]
        assert torch.equal(other.train.images, s.train.images) and torch.equal(other.val.images, s.val.images)
        assert torch.equal(other.val.labels, s.val.labels) and other.train.classes == s.train.classes


def test_synthetic_folder_wins_and_val_size_is_ignored(tmp_path: Path) -> None:
    files = _fake_files()
    folder = _write(files, tmp_path / "root", "folder")
    _write(files, tmp_path / "root", "zip")
    a = load_splits(_cfg(tmp_path / "root", tmp_path / "cache", val_size=1))
    b = load_splits(_cfg(tmp_path / "root", tmp_path / "cache", val_size=5000))
    assert a.info["source"] == str(folder)
    assert len(a.val) == len(b.val) == 6 and torch.equal(a.val.labels, b.val.labels)
    assert b.info["cache_hit"]


def test_synthetic_missing_words_falls_back_to_wnids(tmp_path: Path) -> None:
    files = _fake_files()
    del files["words.txt"]
    _write(files, tmp_path / "root")
    s = load_splits(_cfg(tmp_path / "root", tmp_path / "cache"))
    assert s.train.classes == sorted(WNIDS)


@pytest.mark.parametrize(
    ("edit", "expected"),
    [
        (lambda f: f.pop("wnids.txt"), "wnids.txt"),
        (lambda f: f.pop("val/images/val_4.JPEG"), "val_4.JPEG"),
        (lambda f: f.update({"val/val_annotations.txt": f["val/val_annotations.txt"].replace(b"n02000000", b"n07777777")}), "n07777777"),
        (lambda f: f.update({"train/n02000000/images/n02000000_1.JPEG": b"\xff\xd8\xff\xe0 not really a jpeg"}), "n02000000_1.JPEG"),
        (lambda f: f.update({"val/images/val_99.JPEG": _jpeg(5)}), "val_99.JPEG"),
        (lambda f: f.update({"train/n05555555/images/n05555555_0.JPEG": _jpeg(5)}), "n05555555"),
        (lambda f: f.update({"train/n02000000/images/n02000000_0.JPEG": _jpeg(5, size=32)}), "n02000000_0.JPEG"),
    ],
    ids=["no-wnids", "val-image-absent", "unknown-wnid", "corrupt-jpeg", "val-not-annotated", "train-wnid-unknown", "wrong-size"],
)
@pytest.mark.parametrize("kind", ["folder", "targz"])
def test_synthetic_bad_layouts_raise_one_line(tmp_path: Path, edit, expected: str, kind: str) -> None:
    files = _fake_files()
    edit(files)
    src = _write(files, tmp_path / "root", kind)
    with pytest.raises(ReprlabError) as e:
        load_splits(_cfg(tmp_path / "root", tmp_path / "cache"))
    msg = str(e.value)
    assert expected in msg and str(src) in msg and "\n" not in msg


def test_missing_data_names_tried_paths_and_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    monkeypatch.setenv(paths.ENV_DATA, str(empty))
    with pytest.raises(ReprlabError) as e:
        load_splits(DataConfig(dataset="tiny-imagenet", root="", cache_dir=str(tmp_path / "cache")))  # root from the env
    msg = str(e.value)
    for name in ("tiny-imagenet-200", *tinyimagenet.ARCHIVES):
        assert str(empty / name) in msg
    assert "$REPRLAB_DATA" in msg and "\n" not in msg


def test_bad_resolution_is_rejected(tmp_path: Path) -> None:
    _write(_fake_files(), tmp_path / "root")
    with pytest.raises(ReprlabError, match="data.resolution"):
        load_splits(_cfg(tmp_path / "root", tmp_path / "cache", resolution=0))


def test_corrupt_cache_file_is_rebuilt(tmp_path: Path) -> None:
    _write(_fake_files(), tmp_path / "root")
    first = load_splits(_cfg(tmp_path / "root", tmp_path / "cache"))
    Path(first.info["cache"]).write_bytes(b"garbage")
    with pytest.warns(UserWarning, match="unreadable cache"):
        second = load_splits(_cfg(tmp_path / "root", tmp_path / "cache"))
    assert not second.info["cache_hit"] and torch.equal(second.train.images, first.train.images)


def test_synthetic_resolution_from_native_cache_equals_fresh_decode(tmp_path: Path) -> None:
    files = _fake_files()
    # Non-flat images, so that resizing does real work.
    for k, w in enumerate(WNIDS):
        img = Image.effect_noise((64, 64), 40 + 10 * k).convert("RGB")
        buf = io.BytesIO()
        img.save(buf, format="JPEG")
        files[f"train/{w}/images/{w}_0.JPEG"] = buf.getvalue()
    _write(files, tmp_path / "root")
    fresh = load_splits(_cfg(tmp_path / "root", tmp_path / "cache-a", resolution=24))
    assert fresh.info["derived_from_cache"] is None and fresh.train.images.shape == (6, 3, 24, 24)
    native = load_splits(_cfg(tmp_path / "root", tmp_path / "cache-b", resolution=64))
    derived = load_splits(_cfg(tmp_path / "root", tmp_path / "cache-b", resolution=24))
    assert derived.info["derived_from_cache"] == native.info["cache"]
    assert torch.equal(derived.train.images, fresh.train.images) and torch.equal(derived.val.images, fresh.val.images)
    assert derived.mean == fresh.mean and derived.std == fresh.std and derived.info["grayscale_converted"] == 3
    assert load_splits(_cfg(tmp_path / "root", tmp_path / "cache-b", resolution=24)).info["cache_hit"]
