"""Files written whole or not at all, the one file lock, and ``torch.load`` with a one-line error.

Every file another process may read while it is being written (checkpoints, ``result.json``,
``config.toml``, decoded-data caches, study and sweep markers) goes through :func:`atomic_write`:
the bytes go to a hidden sibling ``.<name>.tmp<pid>``, are fsync'ed, and the temporary file is
renamed over the target, so a reader sees the old file or the new one, never half of one. On any
failure (a full disk, a read-only folder, Ctrl-C, a bug in the caller) the temporary file is
removed -- a half-written checkpoint must not keep a full disk full -- and the old file is left as
it was.

Failures of the operating system (read-only file system, no space left, permission denied) are
conditions of the machine, not bugs: they become a :class:`~reprlab.errors.ReprlabError` that
names the path and the cause, e.g. ``cannot write runs/x/checkpoints/last.pt: no space left on
device (the previous last.pt is unchanged)``.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import shutil
from pathlib import Path
from typing import IO, Any, Iterator

from reprlab.errors import ReprlabError

#: errno -> the cause as the one-line messages say it; these are the errors of the environment
#: (a full disk, a read-only mount, missing permissions) that the CLI reports without a traceback
CAUSES = {
    errno.ENOSPC: "no space left on device",
    errno.EDQUOT: "disk quota exceeded",
    errno.EROFS: "read-only file system",
    errno.EACCES: "permission denied",
    errno.EPERM: "operation not permitted",
}


def os_cause(e: OSError) -> str:
    """The cause of an OSError in a few words: 'read-only file system', 'no space left on device'."""
    return CAUSES.get(e.errno) or (e.strerror or str(e) or type(e).__name__)


def is_environment_error(e: BaseException) -> bool:
    """A full disk, a read-only file system or missing permissions (not a bug of reprlab)."""
    return isinstance(e, OSError) and e.errno in CAUSES


def os_error(e: OSError, path: str | Path | None = None, action: str = "write") -> ReprlabError:
    """``cannot <action> <path>: <cause>`` as a ReprlabError (``path`` defaults to the error's)."""
    where = path if path is not None else (e.filename or "?")
    return ReprlabError(f"cannot {action} {where}: {os_cause(e)}")


def make_dirs(path: str | Path) -> Path:
    """``mkdir -p`` whose failure is one line naming the folder and the cause."""
    path = Path(path)
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise os_error(e, e.filename or path, "create folder") from None
    return path


# ============================================================================================
# Atomic writes
# ============================================================================================


def _fsync_dir(folder: Path) -> None:
    """Make a rename durable (best effort: not every file system lets a folder be fsync'ed)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


@contextlib.contextmanager
def atomic_write(path: str | Path) -> Iterator[IO[bytes]]:
    """A binary file object whose content replaces ``path`` when the block ends without error.

    Order: write to ``.<name>.tmp<pid>``, flush, fsync, rename over ``path``, fsync the folder.
    Whatever fails, the temporary file is removed and ``path`` keeps its old content; an
    OSError (of this helper or of the caller's block) becomes a one-line ReprlabError naming
    ``path`` and the cause.
    """
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    existed = path.exists()
    try:
        with open(tmp, "wb") as f:
            yield f
            f.flush()
            os.fsync(f.fileno())  # the data is on disk before the name points at it
        os.replace(tmp, path)  # a reader sees the old file or the new one, never half of one
    except OSError as e:
        kept = f" (the previous {path.name} is unchanged)" if existed else ""
        raise ReprlabError(f"cannot write {path}: {os_cause(e)}{kept}") from None
    finally:
        with contextlib.suppress(OSError):
            tmp.unlink(missing_ok=True)  # gone already after a successful rename
    _fsync_dir(path.parent)


def _temporary_writer(name: str) -> int | None:
    """The pid in the name of :func:`atomic_write`'s temporary file ``.<name>.tmp<pid>``, else None."""
    stem, sep, pid = name.rpartition(".tmp")
    return int(pid) if sep and name.startswith(".") and len(stem) > 1 and pid.isdigit() else None


def pid_alive(pid: int) -> bool:
    """Whether a process ``pid`` exists (on this machine)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # someone else's live process
    return True


def remove_orphaned_temporaries(folder: str | Path) -> list[str]:
    """Remove :func:`atomic_write`'s temporary files in ``folder`` whose writer is gone.

    A SIGKILL (or a power cut) mid-write skips the ``finally`` that removes the temporary file,
    leaving e.g. ``checkpoints/.last.pt.tmp<pid>``, a whole checkpoint's size. A file whose pid
    is alive is kept (it may be being written); returns the names removed."""
    folder = Path(folder)
    removed = []
    try:
        entries = sorted(folder.iterdir()) if folder.is_dir() else []
    except OSError as e:
        raise os_error(e, folder, "list") from None
    for p in entries:
        pid = _temporary_writer(p.name)
        if pid is None or pid == os.getpid() or pid_alive(pid) or not p.is_file():
            continue
        try:
            p.unlink(missing_ok=True)
        except OSError as e:
            raise os_error(e, p, "remove") from None
        removed.append(p.name)
    return removed


def move_into_place(src: str | Path, dst: str | Path) -> None:
    """Rename a finished file (e.g. a download under a temporary name) over ``dst``, durably:
    fsync it, rename, fsync the folder. ``src`` is removed if the rename fails."""
    src, dst = Path(src), Path(dst)
    try:
        fd = os.open(src, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(src, dst)
    except OSError as e:
        with contextlib.suppress(OSError):
            src.unlink(missing_ok=True)
        raise ReprlabError(f"cannot write {dst}: {os_cause(e)}") from None
    _fsync_dir(dst.parent)


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    with atomic_write(path) as f:
        f.write(data)


def atomic_write_text(path: str | Path, text: str) -> None:
    atomic_write_bytes(path, text.encode())


def atomic_write_json(path: str | Path, obj: Any, indent: int | None = 2) -> None:
    """``obj`` as JSON (with a final newline), written atomically."""
    atomic_write_text(path, json.dumps(obj, indent=indent) + "\n")


class _RecordingWriter:
    """A file object for ``torch.save`` that remembers the OSError of a failed write.

    torch's zip writer turns a failed write into ``RuntimeError: [enforce fail at
    inline_container.cc] ... unexpected pos``, which names neither the file nor the cause; the
    recorded OSError (errno 28, 30, ...) says both.
    """

    def __init__(self, f: IO[bytes]) -> None:
        self.f = f
        self.error: OSError | None = None

    def write(self, data: bytes) -> int:
        try:
            return self.f.write(data)
        except OSError as e:
            self.error = e
            raise

    def flush(self) -> None:
        self.f.flush()


def atomic_torch_save(obj: Any, path: str | Path) -> None:
    """``torch.save(obj, path)``, atomically (see :func:`atomic_write`)."""
    import torch

    with atomic_write(path) as f:
        writer = _RecordingWriter(f)
        try:
            torch.save(obj, writer)
        except RuntimeError:
            if writer.error is not None:
                raise writer.error from None  # atomic_write turns it into the one-line error
            raise


def atomic_copy(src: str | Path, dst: str | Path) -> None:
    """Copy ``src`` to ``dst`` atomically (see :func:`atomic_write`)."""
    try:
        fsrc = open(src, "rb")
    except OSError as e:
        raise os_error(e, src, "read") from None
    with fsrc, atomic_write(dst) as f:
        shutil.copyfileobj(fsrc, f, 1 << 22)


# ============================================================================================
# Reading
# ============================================================================================


#: what a folder name may not hold, and why (a run name is one folder under run.out_dir)
_NOT_A_NAME = {"it holds a path separator": lambda n: "/" in n or "\\" in n, "'.' and '..' are other folders": lambda n: n in (".", ".."),
               "a leading '.' hides the folder": lambda n: n.startswith("."), "leading or trailing white space": lambda n: n.strip() != n,
               "it holds a control character": lambda n: any(ord(c) < 32 or ord(c) == 127 for c in n), "it is empty": lambda n: not n}


def folder_name_problem(name: str) -> str | None:
    """Why ``name`` cannot be the name of one folder inside another (None: it can)."""
    return next((why for why, bad in _NOT_A_NAME.items() if bad(name)), None)


_ZIP, _PICKLE = b"PK\x03\x04", b"\x80"  # how a torch.save file begins: zip archive | pickle protocol 2+


def _what_bytes(head: bytes) -> str:
    """What the first bytes of a file say it is, in a few words."""
    if not head:
        return "nothing: it is empty"
    for magic, kind in ((b"\x89PNG", "a PNG image"), (b"\xff\xd8\xff", "a JPEG image"), (b"\x1f\x8b", "gzip data"), (b"PK", "a zip archive of another kind")):
        if head.startswith(magic):
            return kind
    try:
        text = head.decode("utf-8")
    except UnicodeDecodeError:
        return f"binary data beginning {head[:8].hex(' ')}"
    return f"text beginning {text[:24]!r}"


def load_torch(path: str | Path, what: str = "file", hint: str = "", **kwargs: Any) -> Any:
    """``torch.load(path, **kwargs)``; an unreadable file is a one-line ReprlabError naming it.

    ``what`` names the file in the message ("checkpoint", "backbone checkpoint", "cache file");
    ``hint`` is appended (e.g. "; delete it to restart the run").
    """
    import torch

    try:
        with open(path, "rb") as f:
            head = f.read(64)
        if not head.startswith((_ZIP, _PICKLE)):  # torch.save writes a zip archive (a pickle before torch 1.6)
            raise ReprlabError(f"{what} {path} is not a file written by torch.save (it holds {_what_bytes(head)}){hint}")
        if not head.startswith(_ZIP):
            kwargs.pop("mmap", None)  # only the zip format maps; an old pickle file is read whole
        return torch.load(path, **kwargs)
    except ReprlabError:
        raise
    except Exception as e:  # noqa: BLE001 - any unreadable file becomes a message naming it
        if isinstance(e, OSError) and e.errno in CAUSES:
            raise os_error(e, path, "read") from None
        text = str(e).strip().splitlines()[0] if str(e).strip() else ""
        raise ReprlabError(f"{what} {path} cannot be read ({type(e).__name__}: {text}){hint}") from None


# ============================================================================================
# The lock
# ============================================================================================


class FileLock:
    """An exclusive ``flock`` on ``path`` (created with mode 0644), released by :meth:`release`
    or by the kernel when the holder dies, however it dies -- a SIGKILLed run never leaves a
    stale lock behind. ``what`` names the locked thing in the refusal message."""

    def __init__(self, path: str | Path, what: str | None = None) -> None:
        self.path = Path(path)
        self.what = what or str(self.path.parent)
        self.fd: int | None = None

    def _open(self) -> int:
        make_dirs(self.path.parent)
        try:
            return os.open(self.path, os.O_CREAT | os.O_RDWR | os.O_CLOEXEC, 0o644)
        except OSError as e:
            raise os_error(e, self.path, "create lock file") from None

    def try_acquire(self) -> bool:
        """Take the lock if nobody holds it; False when another process does."""
        if self.fd is not None:
            return True
        fd = self._open()
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return False
        self.fd = fd
        return True

    def acquire(self, wait: bool = False) -> "FileLock":
        """Take the lock; when another process holds it, wait (``wait``) or refuse with a ReprlabError."""
        if wait:
            if self.fd is None:
                fd = self._open()
                fcntl.flock(fd, fcntl.LOCK_EX)
                self.fd = fd
            return self
        if not self.try_acquire():
            raise ReprlabError(f"{self.what} is in use by another process (lock {self.path})")
        return self

    def release(self) -> None:
        if self.fd is not None:
            fcntl.flock(self.fd, fcntl.LOCK_UN)
            os.close(self.fd)
            self.fd = None

    def __enter__(self) -> "FileLock":
        return self.acquire()

    def __exit__(self, *exc: Any) -> None:
        self.release()


def is_locked(path: str | Path) -> bool:
    """Whether some live process holds the ``flock`` on ``path`` (False when it does not exist)."""
    path = Path(path)
    if not path.is_file():
        return False
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)  # closing drops a lock we may have taken
    return False
