"""Failing file systems for tests: a read-only folder and a full disk.

Each helper first tries the real thing -- a read-only bind mount, a small tmpfs -- which needs
root with CAP_SYS_ADMIN; where mounting is not allowed it falls back to a simulation (the
failing call monkeypatched to raise the same OSError). Each yields how it did it ("read-only
bind mount", "tmpfs", "simulated"), and the tests print that, so a test log says which it was.
Root ignores permission bits, so ``chmod`` cannot make a folder read-only for these tests.
Every mount made here is unmounted on the way out, whatever happened in between.
``REPRLAB_TEST_NO_MOUNT=1`` makes every helper simulate (to test the simulations themselves).
"""

from __future__ import annotations

import builtins
import contextlib
import errno
import io
import os
import subprocess
from pathlib import Path
from typing import Iterator


def _mount(*args: str) -> bool:
    if os.environ.get("REPRLAB_TEST_NO_MOUNT") == "1":  # exercise the simulations where mounting works
        return False
    try:
        return subprocess.run(["mount", *args], capture_output=True, timeout=20).returncode == 0
    except (OSError, subprocess.SubprocessError):
        return False


def _umount(path: Path) -> None:
    """Unmount ``path``; a file still open on it (a failed writer not yet collected) makes a
    plain umount fail with EBUSY, so collect garbage and retry, then detach it lazily."""
    import gc

    for attempt in range(3):
        if subprocess.run(["umount", str(path)], capture_output=True, timeout=20).returncode == 0:
            return
        gc.collect()
    subprocess.run(["umount", "-l", str(path)], capture_output=True, timeout=20)


def _under(p, root: Path) -> bool:
    try:
        return Path(os.fsdecode(p)).absolute().is_relative_to(root)
    except (TypeError, ValueError):
        return False


def _simulate(root: Path, monkeypatch, err: int) -> None:
    """Make creating or writing anything below ``root`` raise OSError(err)."""
    root = root.absolute()
    real_open, real_os_open, real_mkdir = builtins.open, os.open, os.mkdir

    def fail(p):
        raise OSError(err, os.strerror(err), os.fsdecode(p))

    def fake_open(file, mode="r", *a, **k):
        if any(c in mode for c in "wax+") and _under(file, root):
            fail(file)
        return real_open(file, mode, *a, **k)

    def fake_os_open(path, flags, *a, **k):
        if flags & (os.O_WRONLY | os.O_RDWR | os.O_CREAT) and _under(path, root):
            fail(path)
        return real_os_open(path, flags, *a, **k)

    def fake_mkdir(path, *a, **k):
        if _under(path, root) and not Path(os.fsdecode(path)).exists():
            fail(path)
        return real_mkdir(path, *a, **k)

    monkeypatch.setattr(builtins, "open", fake_open)
    monkeypatch.setattr(io, "open", fake_open)
    monkeypatch.setattr(os, "open", fake_os_open)
    monkeypatch.setattr(os, "mkdir", fake_mkdir)


@contextlib.contextmanager
def read_only(path: Path, monkeypatch) -> Iterator[str]:
    """``path`` (created) becomes read-only for the duration: a read-only bind mount of itself,
    else simulated (EROFS from open/os.open/mkdir below it)."""
    path.mkdir(parents=True, exist_ok=True)
    if _mount("--bind", str(path), str(path)):
        try:
            if _mount("-o", "remount,ro,bind", str(path)):
                yield "read-only bind mount"
                return
        finally:
            _umount(path)
    with monkeypatch.context() as m:
        _simulate(path, m, errno.EROFS)
        yield "simulated"


@contextlib.contextmanager
def small_tmpfs(path: Path, size: str) -> Iterator[bool]:
    """A tmpfs of ``size`` (e.g. "64k") mounted at ``path``; yields False when mounting is not
    allowed here (the caller then simulates the full disk)."""
    path.mkdir(parents=True, exist_ok=True)
    if not _mount("-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)):
        yield False
        return
    try:
        yield True
    finally:
        _umount(path)


def fill(folder: Path, leave_bytes: int = 0) -> None:
    """Fill the file system of ``folder`` until at most ``leave_bytes`` are free."""
    st = os.statvfs(folder)
    free = st.f_bavail * st.f_frsize
    with open(folder / "filler", "wb") as f:
        try:
            f.write(b"\0" * max(0, free - leave_bytes))
            f.flush()
        except OSError:
            pass
