"""The image-folder dataset on small folders written with PIL: layouts, decoding, resizing, errors."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from reprlab.config import DataConfig
from reprlab.data import imagefolder, paths
from reprlab.data.registry import load_splits
from reprlab.errors import ReprlabError

RED, GREEN, BLUE = (220, 20, 20), (20, 220, 20), (20, 20, 220)


@pytest.fixture(autouse=True)
def _no_cli_root(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(paths, "_cli_data_root", None)


def _save(path: Path, img: Image.Image, fmt: str | None = None, **kw) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    img.save(path, format=fmt, **kw)
    return path


def _cfg(folder: Path | str, cache: Path, **kw) -> DataConfig:
    return DataConfig(dataset="image-folder", folder=str(folder), cache_dir=str(cache), resolution=kw.pop("resolution", 16), **kw)


def _classes_tree(root: Path) -> Path:
    """cat: 3 PNGs; dog: 2 JPEGs + 1 in a nested folder; also an image-less folder and hidden files."""
    folder = root / "pets"
    for i in range(3):
        _save(folder / "cat" / f"c{i}.png", Image.new("RGB", (20, 30), RED))
    for i in range(2):
        _save(folder / "dog" / f"d{i}.JPG", Image.new("RGB", (30, 20), BLUE), quality=95)
    _save(folder / "dog" / "more" / "d9.jpeg", Image.new("RGB", (24, 24), BLUE), quality=95)
    (folder / "notes").mkdir()
    (folder / "notes" / "readme.txt").write_text("not an image")
    _save(folder / "cat" / ".hidden.png", Image.new("RGB", (8, 8), GREEN))
    _save(folder / ".thumbs" / "x.png", Image.new("RGB", (8, 8), GREEN))
    return folder


def test_class_subfolders(tmp_path: Path) -> None:
    folder = _classes_tree(tmp_path)
    full, info = imagefolder.load(str(folder), "", 16, str(tmp_path / "cache"))
    assert full.classes == ["cat", "dog"] and info["layout"] == "class sub-folders"
    assert full.labels.tolist() == [0, 0, 0, 1, 1, 1] and full.labels.dtype == torch.int64
    assert full.images.shape == (6, 3, 16, 16) and full.images.dtype == torch.uint8
    # Solid colours survive decoding and resizing (JPEG within a few levels).
    assert (full.images[:3].int() - torch.tensor(RED).view(1, 3, 1, 1)).abs().max() <= 2
    assert (full.images[3:].int() - torch.tensor(BLUE).view(1, 3, 1, 1)).abs().max() <= 8


def test_flat_folder_is_unlabelled(tmp_path: Path) -> None:
    folder = tmp_path / "flat"
    _save(folder / "a.png", Image.new("RGB", (10, 10), RED))
    _save(folder / "b.webp", Image.new("RGB", (50, 40), GREEN), lossless=True)
    _save(folder / "c.bmp", Image.new("RGB", (16, 16), BLUE))
    (folder / "list.csv").write_text("ignored")
    full, info = imagefolder.load(str(folder), "", 16, str(tmp_path / "cache"))
    assert full.classes == ["unlabelled"] and full.labels.tolist() == [0, 0, 0] and info["layout"] == "flat"
    assert full.images.shape == (3, 3, 16, 16)
    for i, colour in enumerate((RED, GREEN, BLUE)):  # sorted names: a.png, b.webp, c.bmp (the PIL fallback)
        assert (full.images[i].int() - torch.tensor(colour).view(3, 1, 1)).abs().max() <= 1, i


def test_shorter_side_resize_then_centre_crop(tmp_path: Path) -> None:
    # 40 x 20 (W x H): blue | green | red in column bands 0-9, 10-29, 30-39. The shorter side goes to
    # 16 (width 32) and the centre 16 columns are the green band: the side bands must be cropped.
    img = np.zeros((20, 40, 3), np.uint8)
    img[:, :10], img[:, 10:30], img[:, 30:] = BLUE, GREEN, RED
    _save(tmp_path / "f" / "wide.png", Image.fromarray(img))
    full, _ = imagefolder.load(str(tmp_path / "f"), "", 16, str(tmp_path / "cache"))
    out = full.images[0].int()
    assert out.shape == (3, 16, 16)
    assert (out[:, :, 2:14] - torch.tensor(GREEN).view(3, 1, 1)).abs().max() <= 1
    assert out[1].min() > 100  # no blue or red column anywhere in the crop


def test_upscaling_and_antialiasing(tmp_path: Path) -> None:
    # A 1-pixel checkerboard shrunk 4x must average to grey (antialiased), not alias to black/white.
    board = ((np.indices((64, 64)).sum(axis=0) % 2) * 255).astype(np.uint8)
    _save(tmp_path / "f" / "board.png", Image.fromarray(board))
    _save(tmp_path / "f" / "small.png", Image.new("RGB", (4, 8), RED))
    full, info = imagefolder.load(str(tmp_path / "f"), "", 16, str(tmp_path / "cache"))
    assert full.images.shape == (2, 3, 16, 16)
    assert (full.images[0].int() - 127).abs().max() <= 12
    assert (full.images[1].int() - torch.tensor(RED).view(3, 1, 1)).abs().max() <= 1
    assert info["grayscale_converted"] == 1


def test_mode_conversions(tmp_path: Path) -> None:
    folder = tmp_path / "modes"
    _save(folder / "1-gray.png", Image.new("L", (16, 16), 77))
    _save(folder / "2-rgba.png", Image.new("RGBA", (16, 16), (*GREEN, 10)))
    _save(folder / "3-gray16.png", Image.fromarray(np.full((16, 16), 40000, np.uint16)))
    palette = Image.new("P", (16, 16), 1)
    palette.putpalette([0, 0, 0, *BLUE])
    _save(folder / "4-palette.png", palette)
    _save(folder / "5-cmyk.jpg", Image.new("RGB", (16, 16), RED).convert("CMYK"), quality=95)
    full, info = imagefolder.load(str(folder), "", 16, str(tmp_path / "cache"))
    im = full.images.int()
    assert (im[0] == 77).all()
    assert (im[1] - torch.tensor(GREEN).view(3, 1, 1)).abs().max() == 0  # alpha dropped, not blended
    assert (im[2] - round(40000 / 65535 * 255)).abs().max() <= 1 and torch.equal(im[2][0], im[2][1])
    assert (im[3] - torch.tensor(BLUE).view(3, 1, 1)).abs().max() <= 1
    assert (im[4] - torch.tensor(RED).view(3, 1, 1)).abs().max() <= 12
    assert info["grayscale_converted"] == 2


def test_exif_orientation_is_applied(tmp_path: Path) -> None:
    # Stored 20 x 10: top half red, bottom half blue. Orientation 6 = display rotated 90 degrees
    # clockwise: 10 x 20 with blue on the left, red on the right.
    img = Image.new("RGB", (20, 10), RED)
    img.paste(BLUE, (0, 5, 20, 10))
    exif = Image.Exif()
    exif[0x0112] = 6
    _save(tmp_path / "f" / "rotated.jpg", img, quality=95, exif=exif.tobytes())
    full, _ = imagefolder.load(str(tmp_path / "f"), "", 10, str(tmp_path / "cache"))
    out = full.images[0].int()
    assert out[2, 5, 1] > 150 and out[0, 5, 1] < 100  # left: blue
    assert out[0, 5, 8] > 150 and out[2, 5, 8] < 100  # right: red


def test_splits_mean_std_and_registry(tmp_path: Path) -> None:
    root = tmp_path / "data"
    rng = np.random.default_rng(0)
    for c in range(3):
        for i in range(10):
            _save(root / "sets" / "ten" / f"k{c}" / f"{i}.png", Image.fromarray(rng.integers(0, 256, (16, 16, 3), dtype=np.uint8)))
    cfg = DataConfig(dataset="image-folder", root=str(root), folder="sets/ten", cache_dir=str(tmp_path / "cache"), resolution=16, val_size=6)
    s = load_splits(cfg)  # data.folder relative to the data root
    assert s.name == "image-folder" and s.test is None
    assert s.info["val_carved"] == 3 and len(s.val) == 3 and len(s.train) == 27  # min(6, 30 // 10)
    assert sorted(s.val.labels.tolist()) == [0, 1, 2]
    full, _ = imagefolder.load(str(root / "sets" / "ten"), "", 16, str(tmp_path / "cache"))
    merged = torch.cat([s.train.images, s.val.images]).flatten(1)
    assert sorted(map(tuple, merged.tolist())) == sorted(map(tuple, full.images.flatten(1).tolist()))  # a partition
    x = full.images.double() / 255
    assert s.mean == pytest.approx(x.mean(dim=(0, 2, 3)).tolist(), abs=1e-9)
    assert s.std == pytest.approx(x.transpose(0, 1).reshape(3, -1).std(dim=1, unbiased=False).tolist(), abs=1e-9)
    none = load_splits(DataConfig(**{**vars(cfg), "val_size": 0}))
    assert len(none.val) == 0 and none.val.images.shape == (0, 3, 16, 16) and len(none.train) == 30
    reseeded = load_splits(DataConfig(**{**vars(cfg), "split_seed": 1}))
    assert sorted(reseeded.val.labels.tolist()) == [0, 1, 2] and not torch.equal(reseeded.val.images, s.val.images)


def test_cache_hit_and_invalidation(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    folder = _classes_tree(tmp_path)
    cache = str(tmp_path / "cache")
    first, info1 = imagefolder.load(str(folder), "", 16, cache)
    assert not info1["cache_hit"] and Path(info1["cache"]).is_file()

    def no_decode(*a, **k):
        raise AssertionError("decoded again despite a valid cache")

    with monkeypatch.context() as m:
        m.setattr(imagefolder, "decode_files", no_decode)
        again, info2 = imagefolder.load(str(folder), "", 16, cache)
    assert info2["cache_hit"] and torch.equal(again.images, first.images) and torch.equal(again.labels, first.labels)
    _save(folder / "cat" / "c3.png", Image.new("RGB", (20, 20), RED))
    grown, info3 = imagefolder.load(str(folder), "", 16, cache)
    assert not info3["cache_hit"] and len(grown) == len(first) + 1
    _, info4 = imagefolder.load(str(folder), "", 12, cache)
    assert not info4["cache_hit"] and info4["cache"] != info3["cache"]


@pytest.mark.parametrize(
    ("make", "expected"),
    [
        (lambda f: f.mkdir(), "contains no images"),
        (lambda f: (f.mkdir(), (f / "a.txt").write_text("x"), (f / "sub").mkdir()), "contains no images"),
        (lambda f: (_save(f / "x" / "ok.png", Image.new("RGB", (8, 8))), (f / "x" / "bad.jpg").write_bytes(b"\xff\xd8\xffgarbage")), "bad.jpg"),
        (lambda f: (_save(f / "ok.png", Image.new("RGB", (8, 8))), (f / "bad.png").write_bytes(b"not a png at all")), "bad.png"),
        (lambda f: (_save(f / "top.png", Image.new("RGB", (8, 8))), _save(f / "cls" / "in.png", Image.new("RGB", (8, 8)))), "either class sub-folders"),
        (lambda f: None, "image folder not found"),
    ],
    ids=["empty", "no-images", "corrupt-jpeg", "corrupt-png", "mixed-layout", "missing"],
)
def test_bad_folders_raise_one_line(tmp_path: Path, make, expected: str) -> None:
    folder = tmp_path / "imgs"
    make(folder)
    with pytest.raises(ReprlabError) as e:
        imagefolder.load(str(folder), "", 16, str(tmp_path / "cache"))
    msg = str(e.value)
    assert expected in msg and str(folder) in msg and "\n" not in msg


def test_bad_settings_raise(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _save(tmp_path / "f" / "a.png", Image.new("RGB", (8, 8)))
    with pytest.raises(ReprlabError, match="data.folder is empty"):
        load_splits(_cfg("", tmp_path / "cache"))
    with pytest.raises(ReprlabError, match="data.resolution"):
        load_splits(_cfg(tmp_path / "f", tmp_path / "cache", resolution=0))
    with pytest.raises(ReprlabError, match="data.val_size"):
        load_splits(_cfg(tmp_path / "f", tmp_path / "cache", val_size=-1))
    monkeypatch.setenv(paths.ENV_DATA, str(tmp_path / "root"))
    with pytest.raises(ReprlabError) as e:
        load_splits(_cfg("rel/missing", tmp_path / "cache"))
    assert str(tmp_path / "root" / "rel" / "missing") in str(e.value) and "$REPRLAB_DATA" in str(e.value)


def test_decode_rgb_reports_the_file() -> None:
    with pytest.raises(ReprlabError, match=r"cannot decode image some/where\.png"), imagefolder.quiet_decoder():
        imagefolder.decode_rgb(b"\x89PNG\r\n\x1a\nbroken", "some/where.png")
    buf = io.BytesIO()
    Image.new("RGB", (5, 7), RED).save(buf, format="PNG")
    with imagefolder.quiet_decoder():
        img, gray = imagefolder.decode_rgb(buf.getvalue(), "x.png")
    assert img.shape == (3, 7, 5) and not gray
