"""reprlab.io: atomic writes that leave no temporary file behind, fsync before the rename, the
one file lock (mode 0644), and torch.load with a one-line error.

The full-disk tests use a real tmpfs when this process may mount one, else they simulate the
failing write; each prints which it did (see tests/helpers_fs.py).
"""

from __future__ import annotations

import errno
import os
import re
from pathlib import Path

import pytest
import torch

from helpers_fs import fill, small_tmpfs
from reprlab import io as rio
from reprlab.errors import ReprlabError

REPO = Path(__file__).resolve().parents[1]


def _leftovers(folder: Path) -> list[str]:
    return [p.name for p in folder.rglob("*") if ".tmp" in p.name]


def test_a_checkpoint_write_on_a_full_disk_is_one_line_and_keeps_the_old_file(tmp_path, monkeypatch, record_property):
    disk = tmp_path / "disk"
    with small_tmpfs(disk, "512k") as real:
        how = "tmpfs" if real else "simulated"
        print(f"full disk: {how}")
        record_property("fs", how)
        target = disk / "last.pt"
        rio.atomic_torch_save({"step": 1, "w": torch.ones(10)}, target)
        if real:
            fill(disk, leave_bytes=64 * 1024)
        else:
            real_write = rio._RecordingWriter.write

            def write(self, data):
                if len(data) > 64 * 1024:  # what the real writer records on a full disk
                    self.error = OSError(errno.ENOSPC, "No space left on device")
                    raise self.error
                return real_write(self, data)

            monkeypatch.setattr(rio._RecordingWriter, "write", write)
        with pytest.raises(ReprlabError) as e:
            rio.atomic_torch_save({"step": 2, "w": torch.ones(1_000_000)}, target)  # 4 MB
        msg = str(e.value)
        assert msg == f"cannot write {target}: no space left on device (the previous last.pt is unchanged)"
        assert _leftovers(disk) == []  # the half-written temporary file does not keep the disk full
        assert torch.load(target, weights_only=False)["step"] == 1


@pytest.mark.parametrize("writer", ["bytes", "text", "json", "torch", "copy"])
def test_every_atomic_write_removes_its_temp_file_when_it_fails(tmp_path, monkeypatch, writer):
    src = tmp_path / "src.bin"
    src.write_bytes(b"new")
    target = tmp_path / "out" / "f"
    target.parent.mkdir()
    target.write_bytes(b"old")
    calls = {
        "bytes": lambda: rio.atomic_write_bytes(target, b"new"),
        "text": lambda: rio.atomic_write_text(target, "new"),
        "json": lambda: rio.atomic_write_json(target, {"a": 1}),
        "torch": lambda: rio.atomic_torch_save({"a": 1}, target),
        "copy": lambda: rio.atomic_copy(src, target),
    }

    def no_space(fd):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "fsync", no_space)
    with pytest.raises(ReprlabError, match=r"cannot write .*/out/f: no space left on device \(the previous f is unchanged\)"):
        calls[writer]()
    assert _leftovers(tmp_path) == [] and target.read_bytes() == b"old"

    # a failure that is not an OSError (a bug, Ctrl-C) also removes the temporary file
    monkeypatch.undo()

    def boom(*a, **k):
        raise KeyboardInterrupt

    monkeypatch.setattr(os, "replace", boom)
    with pytest.raises(KeyboardInterrupt):
        calls[writer]()
    assert _leftovers(tmp_path) == [] and target.read_bytes() == b"old"


def test_atomic_writes_fsync_the_data_before_the_rename(tmp_path, monkeypatch):
    events = []
    real_fsync, real_replace = os.fsync, os.replace
    monkeypatch.setattr(os, "fsync", lambda fd: (events.append("fsync"), real_fsync(fd))[1])
    monkeypatch.setattr(os, "replace", lambda a, b: (events.append("replace"), real_replace(a, b))[1])
    for call in (lambda p: rio.atomic_write_text(p, "x"), lambda p: rio.atomic_torch_save({"a": 1}, p), lambda p: rio.atomic_copy(tmp_path / "a", p)):
        events.clear()
        call(tmp_path / "a")
        assert events[:2] == ["fsync", "replace"]
    assert torch.load(tmp_path / "a", weights_only=True) == {"a": 1}


def test_lock_files_are_0644_and_exclusive(tmp_path):
    from reprlab.io import FileLock as DirLock
    from reprlab.train.rundir import RunDir

    old = os.umask(0o022)
    try:
        run = RunDir(tmp_path / "run")
        run.path.mkdir()
        run.lock()
        study_lock = DirLock(tmp_path / "study" / ".study.lock", "study directory x").acquire()
        lock = rio.FileLock(tmp_path / "x.lock", "thing x")
        assert lock.try_acquire()
        for p in (run.path / ".lock", study_lock.path, lock.path):
            assert oct(p.stat().st_mode & 0o777) == oct(0o644), p
        assert rio.is_locked(lock.path) and rio.is_locked(run.path / ".lock")
        with pytest.raises(ReprlabError, match=re.escape(f"thing x is in use by another process (lock {lock.path})")):
            rio.FileLock(lock.path, "thing x").acquire()
        lock.release()
        run.unlock()
        study_lock.release()
        assert not rio.is_locked(lock.path) and not rio.is_locked(run.path / ".lock")
    finally:
        os.umask(old)


def test_load_torch_names_an_unreadable_file(tmp_path):
    bad = tmp_path / "last.pt"
    bad.write_bytes(b"PK\x03\x04 a truncated zip archive")
    with pytest.raises(ReprlabError, match=r"^checkpoint .*last\.pt cannot be read \(.*\); delete it$"):
        rio.load_torch(bad, "checkpoint", "; delete it", weights_only=False)


@pytest.mark.parametrize("content, what", [(b"not a checkpoint", "text beginning 'not a checkpoint'"), (b"", "nothing: it is empty"),
                                           (b"\x89PNG\r\n\x1a\n", "a PNG image"), (bytes([0, 1, 2, 255]), "binary data beginning 00 01 02 ff")])
@pytest.mark.parametrize("mmap", [True, False])
def test_load_torch_says_what_a_file_not_written_by_torch_save_holds(tmp_path, content, what, mmap):
    """Not torch's "mmap can only be used with files saved with ..." or a pickle's `KeyError: 101`."""
    bad = tmp_path / "w.pth"
    bad.write_bytes(content)
    with pytest.raises(ReprlabError) as e:
        rio.load_torch(bad, "weights file", "; expected a state dict", weights_only=True, **({"mmap": True} if mmap else {}))
    assert str(e.value) == f"weights file {bad} is not a file written by torch.save (it holds {what}); expected a state dict"


def test_load_torch_reads_a_file_of_torch_s_old_format_even_when_asked_to_map_it(tmp_path):
    import torch

    torch.save({"a": 1}, tmp_path / "old.pt", _use_new_zipfile_serialization=False)
    assert rio.load_torch(tmp_path / "old.pt", weights_only=True, mmap=True) == {"a": 1}


def test_one_set_of_write_helpers_one_torch_load_wrapper_and_one_lock():
    """No module outside reprlab/io.py calls torch.save/torch.load/flock or renames into place
    itself."""
    pattern = re.compile(r"\btorch\.(save|load)\(|fcntl\.flock\(|os\.replace\(|shutil\.copyfile\(")
    checked = [*REPO.glob("reprlab/train/*.py"), *REPO.glob("reprlab/data/*.py"), *REPO.glob("reprlab/eval/*.py"),
               *REPO.glob("reprlab/commands/*.py"), *REPO.glob("reprlab/studies/*.py"),
               *REPO.glob("reprlab/models/*.py"), *REPO.glob("reprlab/methods/*.py"), *REPO.glob("reprlab/report/*.py"), *REPO.glob("reprlab/*.py")]
    checked = [p for p in checked if p.name != "io.py"]
    found = [f"{p.relative_to(REPO)}:{i}: {ln.strip()}" for p in checked for i, ln in enumerate(_code_lines(p), 1) if pattern.search(ln)]
    assert found == []


def _code_lines(path: Path) -> list[str]:
    """The file's lines with string literals blanked: code a command prints for the user (the
    export's `torch.load(...)` recipe) is not a call."""
    import io
    import tokenize

    lines = path.read_text().splitlines()
    strings = {getattr(tokenize, n) for n in ("STRING", "FSTRING_MIDDLE") if hasattr(tokenize, n)}
    for tok in reversed(list(tokenize.generate_tokens(io.StringIO(path.read_text()).readline))):
        if tok.type in strings:
            (r0, c0), (r1, c1) = tok.start, tok.end
            if r0 == r1:
                lines[r0 - 1] = lines[r0 - 1][:c0] + "''" + lines[r0 - 1][c1:]
            else:
                lines[r0 - 1] = lines[r0 - 1][:c0] + "''"
                for r in range(r0, r1 - 1):
                    lines[r] = ""
                lines[r1 - 1] = lines[r1 - 1][c1:]
    return lines
