"""Optuna storages of sweeps: a URL checked before anything is created, then opened with the
races of several workers on one empty database handled.

URLs (``--storage`` of ``reprlab sweep`` and ``reprlab study run``, or a sweep's ``storage``)::

    sqlite:///abs/or/relative/path/optuna.db   one machine (the default, in the sweep's folder)
    postgresql://user:password@host:5432/db    several machines; psycopg 3 (pip install 'reprlab[postgres]')
    journal:///shared/path/sweep.log           several machines on a shared file system (NFS, Lustre, ...)

``postgresql://`` (and ``postgres://``) is opened through SQLAlchemy's psycopg (3) dialect
whatever SQLAlchemy defaults to, with a short connect timeout, so an unreachable server is a
one-line error after seconds, not a hang. Every bad URL -- unparsable, a driver that is not
installed, a server that refuses or does not answer -- is one :class:`ReprlabError` line raised
before any folder or study is created. SQLite on a network file system (whose ``fcntl`` locks
are unreliable: Optuna's and SQLite's FAQ) is warned about, naming the two shared storages.

This module imports neither torch nor, until a storage is opened, Optuna or SQLAlchemy.
"""

from __future__ import annotations

import atexit
import gc
import importlib.util
import os
import random
import sys
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any
from urllib.parse import urlsplit

from reprlab.errors import ReprlabError

CONNECT_TIMEOUT_S = 5  # PostgreSQL: an unreachable server fails after this, not after minutes
OPEN_ATTEMPTS = 8  # workers creating the tables of one empty database at once: retry, then load
#: file systems on which SQLite's locking is unreliable
NETWORK_FS = ("nfs", "nfs4", "cifs", "smb3", "smbfs", "lustre", "gpfs", "beegfs", "ceph", "glusterfs", "afs", "panfs", "wekafs",
              "fuse.sshfs", "fuse.glusterfs", "fuse.ceph-fuse", "fuse.gcsfuse", "fuse.s3fs", "fuse.rclone", "fuse.juicefs")
EXAMPLES = "sqlite:///path/optuna.db, postgresql://user@host:5432/db or journal:///shared/path/sweep.log"
DRIVERS = {"postgresql": ("psycopg", "reprlab[postgres]"), "postgresql+psycopg": ("psycopg", "reprlab[postgres]"),
           "postgresql+psycopg2": ("psycopg2", "psycopg2-binary"), "mysql": ("MySQLdb", "mysqlclient"), "mysql+pymysql": ("pymysql", "pymysql")}


@dataclass(frozen=True)
class StorageURL:
    url: str  # as given (shown in messages, password hidden)
    kind: str  # sqlite | postgresql | mysql | journal
    target: str  # what Optuna opens: the SQLAlchemy URL, or the journal file's path
    path: Path | None = None  # sqlite and journal: the file

    @property
    def shown(self) -> str:
        """The URL without its password."""
        parts = urlsplit(self.url)
        if parts.password:
            return self.url.replace(f":{parts.password}@", ":***@", 1)
        return self.url

    @property
    def shared(self) -> bool:
        return self.kind != "sqlite"


def parse_storage(url: str, where: str = "--storage") -> StorageURL:
    """Check a storage URL without touching anything; a bad one is a one-line ReprlabError."""
    if not isinstance(url, str) or "://" not in url:
        raise ReprlabError(f"{where} {url!r} is not a storage URL; expected {EXAMPLES}")
    scheme = url.split("://", 1)[0].lower()
    rest = url.split("://", 1)[1]
    if scheme in ("sqlite", "journal"):
        if not rest.startswith("/") or rest == "/":
            example = "sqlite:///path/to/optuna.db (an in-memory database is not kept)" if scheme == "sqlite" else "journal:///shared/path/sweep.log"
            raise ReprlabError(f"{where} {url!r}: a {scheme} URL names a file after three slashes, e.g. {example}")
        path = Path(rest[1:]) if scheme == "sqlite" else Path(rest)
        if scheme == "journal" and not path.is_absolute():
            raise ReprlabError(f"{where} {url!r}: a journal URL names an absolute path, e.g. journal:///shared/path/sweep.log")
        if path.is_dir():
            raise ReprlabError(f"{where} {url!r}: {path} is a folder; name a file in it")
        return StorageURL(url, scheme, str(path) if scheme == "journal" else url, path)
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 -- raises ValueError on a port that is not a number
    except ValueError as e:
        raise ReprlabError(f"{where} {url!r} is not a storage URL ({e}); expected {EXAMPLES}") from None
    base = scheme.split("+", 1)[0]
    if base == "postgres":
        base = "postgresql"
    if base not in ("postgresql", "mysql"):
        raise ReprlabError(f"{where} {url!r}: unknown storage scheme {scheme!r}; expected {EXAMPLES}")
    if not parts.path.strip("/"):
        raise ReprlabError(f"{where} {url!r}: name the database after the host, e.g. postgresql://user@host:5432/optuna")
    target = url
    if scheme in ("postgresql", "postgres"):  # SQLAlchemy's default PostgreSQL driver is psycopg2: name psycopg 3
        target = "postgresql+psycopg://" + rest
    return StorageURL(url, base, target)


def check_driver(s: StorageURL) -> None:
    """A storage whose Python driver is missing: one line naming what to install."""
    scheme = s.target.split("://", 1)[0].lower()
    module, package = DRIVERS.get(scheme, (None, None))
    if module is not None and importlib.util.find_spec(module) is None:
        raise ReprlabError(f"storage {s.shown}: the {s.kind} driver {module!r} is not installed; pip install '{package}'")


def exists(s: StorageURL) -> bool | None:
    """For a file storage, whether its file exists (None: a server, which cannot be known without connecting)."""
    return s.path.is_file() if s.path is not None else None


# ============================================================================================
# Network file systems
# ============================================================================================


def filesystem_type(path: Path, mounts: str | None = None) -> str | None:
    """The type of the file system holding ``path`` (its deepest mount point in /proc/self/mounts)."""
    if mounts is None:
        try:
            mounts = Path("/proc/self/mounts").read_text()
        except OSError:
            return None
    path = Path(os.path.abspath(path))
    best, kind = -1, None
    for line in mounts.splitlines():
        fields = line.split()
        if len(fields) < 3:
            continue
        point = fields[1].replace("\\040", " ")
        if (str(path) == point or str(path).startswith(point.rstrip("/") + "/")) and len(point) > best:
            best, kind = len(point), fields[2]
    return kind


def is_network_fs(fstype: str | None) -> bool:
    return fstype in NETWORK_FS


def warn_network_sqlite(s: StorageURL, out: IO[str] = sys.stderr, mounts: str | None = None) -> bool:
    """Warn (one line) when a SQLite database lies on a network file system; True if it did."""
    if s.kind != "sqlite" or s.path is None:
        return False
    fstype = filesystem_type(s.path, mounts)
    if not is_network_fs(fstype):
        return False
    print(f"warning: the sweep's SQLite database {s.path} is on a network file system ({fstype}), where several workers lock or "
          "corrupt it; for workers on several machines use --storage postgresql://user@host:5432/db or journal:///shared/path/sweep.log",
          file=out, flush=True)
    return True


# ============================================================================================
# Opening
# ============================================================================================


_OPENED: dict[str, Any] = {}  # one storage (one connection pool) per URL and process


def open_storage(s: StorageURL) -> Any:
    """The Optuna storage object, opened once per process (the study runner asks for a sweep's
    progress every poll); a refused or unreachable server is one line. Several workers opening
    one empty database at once race on creating Optuna's tables (a DuplicateObject or a unique
    violation in the loser): the loser retries, and then finds the tables made."""
    if s.target not in _OPENED:
        _OPENED[s.target] = _open(s)
    return _OPENED[s.target]


def _open(s: StorageURL) -> Any:
    check_driver(s)
    import optuna

    if s.kind == "journal":
        if not s.path.parent.is_dir():
            raise ReprlabError(f"storage {s.url}: folder {s.path.parent} does not exist (create it on the shared file system first)")
        journal = optuna.storages.journal if hasattr(optuna.storages, "journal") else None
        if journal is not None and hasattr(journal, "JournalFileBackend"):  # Optuna >= 4
            return optuna.storages.JournalStorage(journal.JournalFileBackend(str(s.path)))
        return optuna.storages.JournalStorage(optuna.storages.JournalFileStorage(str(s.path)))  # Optuna 3
    import sqlalchemy.exc

    engine_kwargs: dict[str, Any] = {}
    if s.kind == "postgresql" and "connect_timeout" not in s.target:
        engine_kwargs["connect_args"] = {"connect_timeout": CONNECT_TIMEOUT_S}
    for attempt in range(OPEN_ATTEMPTS):
        try:
            opened = optuna.storages.RDBStorage(s.target, engine_kwargs=engine_kwargs)
            atexit.register(opened.engine.dispose)  # close the pool's connections, not leave them to the GC
            return opened
        except sqlalchemy.exc.OperationalError as e:
            if s.kind == "sqlite" or attempt == OPEN_ATTEMPTS - 1 or not _is_race(e):
                raise ReprlabError(f"storage {s.shown}: cannot connect: {_first_line(e)}") from None
        except (sqlalchemy.exc.IntegrityError, sqlalchemy.exc.ProgrammingError) as e:
            if attempt == OPEN_ATTEMPTS - 1:
                raise ReprlabError(f"storage {s.shown}: cannot create Optuna's tables: {_first_line(e)}") from None
        except sqlalchemy.exc.ArgumentError as e:
            raise ReprlabError(f"storage {s.shown}: {_first_line(e)}; expected {EXAMPLES}") from None
        except ModuleNotFoundError as e:
            raise ReprlabError(f"storage {s.shown}: the driver {e.name!r} is not installed") from None
        with warnings.catch_warnings():  # the failed attempt's connection, dropped here, is no news
            warnings.simplefilter("ignore", ResourceWarning)
            gc.collect()
        time.sleep(0.05 + random.random() * 0.2 * (attempt + 1))  # another worker is creating the tables
    raise AssertionError("unreachable")


def _is_race(e: Exception) -> bool:
    return "deadlock" in str(e).lower()


def _first_line(e: Exception) -> str:
    text = str(getattr(e, "orig", None) or e).strip()
    return text.splitlines()[0] if text else type(e).__name__
