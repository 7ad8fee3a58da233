import os
import pickle
import warnings

import numpy as np
import pytest
import torch

from reprlab.config import DataConfig
from reprlab.data import cifar
from reprlab.data.registry import load_splits
from reprlab.errors import ReprlabError

pytestmark = []


@pytest.mark.realdata
def test_real_cifar100_splits(cifar):
    assert (len(cifar.train), len(cifar.val), len(cifar.test)) == (45_000, 5_000, 10_000)
    for part in (cifar.train, cifar.val, cifar.test):
        assert part.images.dtype == torch.uint8 and part.images.shape[1:] == (3, 32, 32)
        assert part.num_classes == 100 and len(part.coarse_classes) == 20
    assert (torch.bincount(cifar.val.labels, minlength=100) == 50).all()
    assert (torch.bincount(cifar.test.labels, minlength=100) == 100).all()
    # every fine class lies in exactly one superclass
    pairs = torch.unique(torch.stack([cifar.train.labels, cifar.train.coarse_labels]), dim=1)
    assert pairs.shape[1] == 100
    # pixel statistics are CIFAR-100's published ones (so the NCHW decode is right)
    x = torch.cat([cifar.train.images, cifar.val.images]).float() / 255
    assert torch.allclose(x.mean((0, 2, 3)), torch.tensor(cifar.mean), atol=2e-4)
    assert cifar.train.classes[0] == "apple" and cifar.train.coarse_classes[0] == "aquatic_mammals"


@pytest.mark.realdata
def test_val_split_is_fixed_by_split_seed(data_root, cache_root, cifar):
    again = load_splits(DataConfig(root=str(data_root), cache_dir=str(cache_root)))
    assert torch.equal(again.val.images, cifar.val.images)
    other = load_splits(DataConfig(root=str(data_root), cache_dir=str(cache_root), split_seed=1))
    assert not torch.equal(other.val.labels, cifar.val.labels) or not torch.equal(other.val.images, cifar.val.images)
    coarse = load_splits(DataConfig(root=str(data_root), cache_dir=str(cache_root), labels="coarse"))
    assert coarse.train.num_classes == 20


@pytest.mark.realdata
def test_md5_mismatch_is_noted_once_and_nothing_is_written_to_the_data_root(data_root, tmp_path, capsys):
    before = sorted(p.name for p in data_root.iterdir())
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter("always")
        cifar.load(str(data_root), download=False, cache=str(tmp_path))
        cifar.load(str(data_root), download=False, cache=str(tmp_path))  # cached: nothing again
    err = capsys.readouterr().err
    if cifar._md5(data_root / cifar.ARCHIVE) != cifar.MD5:
        assert err.count("md5 differs") == 1 and "reprlab: note:" in err
    assert not [x for x in w if "md5" in str(x.message)]  # information, not a warning
    assert sorted(p.name for p in data_root.iterdir()) == before
    assert list((tmp_path / "cifar100").glob("*.pt"))


def _tiny_members():
    rng = np.random.default_rng(0)
    out = {"meta": {"fine_label_names": [f"c{i}" for i in range(100)], "coarse_label_names": [f"s{i}" for i in range(20)]}}
    for name, n in (("train", 200), ("test", 100)):
        out[name] = {"data": rng.integers(0, 255, (n, 3072), dtype=np.uint8), "fine_labels": list(np.arange(n) % 100), "coarse_labels": list(np.arange(n) % 20)}
    return out


def test_the_md5_note_of_a_validated_archive_is_shown_once_per_archive(tmp_path, monkeypatch, capsys):
    """A repacked archive (md5 differs, content valid) is noted once, not at every cache build."""
    monkeypatch.setattr(cifar, "EXPECTED", {"train": 200, "test": 100})
    monkeypatch.setattr(cifar, "_read_members", lambda src: _tiny_members())
    root = tmp_path / "root"
    root.mkdir()
    archive = root / cifar.ARCHIVE
    archive.write_bytes(b"a repacked archive")
    cache = tmp_path / "cache"
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter("always")
        cifar.load(str(root), download=False, cache=str(cache))
        first = capsys.readouterr().err
        for f in (cache / "cifar100").glob("v*.pt"):
            f.unlink()  # a rebuilt cache ...
        cifar.load(str(root), download=False, cache=str(cache))
        os.utime(archive, (1_000_000, 1_000_000))  # ... and a copied archive (new mtime) are the same archive
        cifar.load(str(root), download=False, cache=str(cache))
    assert first.count("md5 differs") == 1 and first.startswith("reprlab: note:") and "content validated" in first
    assert "md5" not in capsys.readouterr().err
    assert not [x for x in w if "md5" in str(x.message)]


@pytest.mark.realdata
def test_truncated_archive_is_reported(data_root, tmp_path):
    raw = (data_root / cifar.ARCHIVE).read_bytes()
    (tmp_path / cifar.ARCHIVE).write_bytes(raw[: len(raw) // 3])
    with pytest.raises(ReprlabError, match=r"cifar-100-python\.tar\.gz.*(truncated|corrupt)"):
        cifar.load(str(tmp_path), download=False, cache=str(tmp_path / "cache"))


def test_missing_data_names_tried_paths_env_and_download(tmp_path):
    with pytest.raises(ReprlabError) as e:
        cifar.load(str(tmp_path / "nowhere"), download=False, cache=str(tmp_path / "cache"))
    msg = str(e.value)
    assert str(tmp_path / "nowhere" / cifar.ARCHIVE) in msg and "REPRLAB_DATA" in msg and cifar.URL in msg and "\n" not in msg


def _write_folder(root, train_labels=None, data_shape=(50_000, 3072), coarse_max=19):
    folder = root / cifar.FOLDER
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for name, n in (("train", 50_000), ("test", 10_000)):
        fine = np.arange(n) % 100 if train_labels is None or name == "test" else train_labels
        shape = data_shape if name == "train" else (n, 3072)
        d = {"data": rng.integers(0, 255, shape, dtype=np.uint8), "fine_labels": list(fine), "coarse_labels": list(np.arange(n) % (coarse_max + 1))}
        (folder / name).write_bytes(pickle.dumps(d))
    (folder / "meta").write_bytes(pickle.dumps({"fine_label_names": [f"c{i}" for i in range(100)], "coarse_label_names": [f"s{i}" for i in range(20)]}))


def test_extracted_folder_is_accepted(tmp_path):
    _write_folder(tmp_path)
    train, test, info = cifar.load(str(tmp_path), download=False, cache=str(tmp_path / "cache"))
    assert len(train) == 50_000 and len(test) == 10_000 and info["checksum"].startswith("folder")


def test_wrong_label_range_is_named(tmp_path):
    labels = np.arange(50_000) % 100
    labels[7] = 100
    _write_folder(tmp_path, train_labels=labels)
    with pytest.raises(ReprlabError, match=r"'train'.*fine_labels.*\[0, 100\].*expected \[0, 99\]"):
        cifar.load(str(tmp_path), download=False, cache=str(tmp_path / "cache"))


def test_wrong_shape_is_named(tmp_path):
    _write_folder(tmp_path, data_shape=(50_000, 1024))
    with pytest.raises(ReprlabError, match=r"'data' is uint8 \(50000, 1024\), expected uint8 \(50000, 3072\)"):
        cifar.load(str(tmp_path), download=False, cache=str(tmp_path / "cache"))


def test_a_read_only_cache_dir_is_one_line(tmp_path, monkeypatch, capsys, record_property):
    from helpers_fs import read_only
    from reprlab.cli import main

    monkeypatch.setattr(cifar, "EXPECTED", {"train": 200, "test": 100})
    monkeypatch.setattr(cifar, "_read_members", lambda src: _tiny_members())
    root = tmp_path / "root"
    root.mkdir()
    (root / cifar.ARCHIVE).write_bytes(b"an archive")
    ro = tmp_path / "cache"
    with read_only(ro, monkeypatch) as how:
        record_property("fs", how)
        code = main(["--data-root", str(root), "data", "info", "cifar100", f'data.cache_dir="{ro}"', "data.val_size=100"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and "Traceback" not in "\n".join(err)
    assert err[-1] == f"reprlab: error: cannot create folder {ro / 'cifar100'}: read-only file system"
    print(f"read-only cache dir: {how}")
