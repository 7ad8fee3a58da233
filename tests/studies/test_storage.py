"""Storage URLs of sweeps: checked before anything is created, one line per bad one (no server
needed: a refused port on 127.0.0.1), and the warning for SQLite on a network file system."""

from __future__ import annotations

import io
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from reprlab.errors import ReprlabError
from reprlab.studies import storage
from reprlab.studies.storage import filesystem_type, open_storage, parse_storage, warn_network_sqlite
from reprlab.studies.sweep import run_sweep
from reprlab.studies.sweep_spec import parse_sweep

CONFIG = "configs/supervised/resnet18_scratch.toml"
MOUNTS = """/dev/sda1 / ext4 rw 0 0
server:/export/home /home nfs4 rw,vers=4.2 0 0
mds@tcp:/scratch /scratch lustre rw 0 0
user@host:/data /mnt/my\\040data fuse.sshfs rw 0 0
tmpfs /home/me/tmp tmpfs rw 0 0
"""


def _refused_port() -> int:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()  # nothing listens there now: a connection is refused at once
    return port


def test_postgresql_urls_name_psycopg_3_whatever_sqlalchemy_defaults_to():
    for url in ("postgresql://u@h:5432/db", "postgres://u@h/db"):
        s = parse_storage(url)
        assert s.kind == "postgresql" and s.target.startswith("postgresql+psycopg://") and s.target.endswith(url.split("://", 1)[1])
    assert parse_storage("postgresql+psycopg2://u@h/db").target == "postgresql+psycopg2://u@h/db"  # a driver named is kept
    j = parse_storage("journal:///shared/sweeps/vit.log")
    assert j.kind == "journal" and j.path == Path("/shared/sweeps/vit.log") and j.shared
    assert parse_storage("sqlite:///runs/x/optuna.db").path == Path("runs/x/optuna.db")
    assert parse_storage("postgresql://me:secret@h/db").shown == "postgresql://me:***@h/db"


@pytest.mark.parametrize("url, words", [
    ("notaurl", "is not a storage URL; expected sqlite:///"),
    ("redis://x", "unknown storage scheme 'redis'"),
    ("postgresql://h:abc/db", "is not a storage URL"),
    ("postgresql://h:5432", "name the database"),
    ("sqlite://", "in-memory"),
    ("journal://sweep.log", "journal:///shared/path/sweep.log"),
])
def test_unparsable_urls_are_one_line(url, words):
    with pytest.raises(ReprlabError) as e:
        parse_storage(url)
    assert words in str(e.value) and "\n" not in str(e.value)


def test_a_missing_driver_names_the_extra_to_install(monkeypatch):
    real = storage.importlib.util.find_spec
    monkeypatch.setattr(storage.importlib.util, "find_spec", lambda name, *a: None if name == "psycopg" else real(name, *a))
    with pytest.raises(ReprlabError, match=r"driver 'psycopg' is not installed; pip install 'reprlab\[postgres\]'"):
        open_storage(parse_storage("postgresql://u@127.0.0.1:5432/db"))


def test_a_refused_server_is_one_line_and_the_sweep_leaves_nothing_behind(tmp_path):
    pytest.importorskip("psycopg")
    spec = parse_sweep({"name": "s", "command": "train", "config": CONFIG, "space": {"optim.lr": [0.1, 0.2]}}, "test")
    for url, words in ((f"postgresql://me:secret@127.0.0.1:{_refused_port()}/db", "cannot connect: connection failed"),
                       (f"journal:///{tmp_path}/missing/sweep.log", "does not exist"),
                       ("notaurl", "not a storage URL")):
        with pytest.raises(ReprlabError) as e:
            run_sweep(spec, tmp_path / "out" / "deeper", storage=url, executor=lambda *a: pytest.fail("no trial may start"), out=io.StringIO())
        assert words in str(e.value) and "\n" not in str(e.value) and "secret" not in str(e.value)
        assert not (tmp_path / "out").exists()  # no empty sweep folder, no storage file


def test_the_command_line_prints_one_line_and_creates_nothing(tmp_path):
    f = tmp_path / "s.toml"
    f.write_text(f'[sweep]\nname = "s"\ncommand = "train"\nconfig = "{CONFIG}"\ntrials = 2\n[sweep.space]\n"optim.lr" = [0.1, 0.2]\n')
    p = subprocess.run([sys.executable, "-m", "reprlab", "sweep", str(f), "--storage", "notaurl", "--out", str(tmp_path / "out")],
                       capture_output=True, text=True, timeout=120)
    assert p.returncode != 0 and p.stderr.strip().count("\n") == 0, p.stderr
    assert "--storage 'notaurl' is not a storage URL" in p.stderr and not (tmp_path / "out").exists()


def test_sqlite_on_a_network_file_system_is_warned_about_naming_the_alternatives():
    assert filesystem_type(Path("/home/me/runs/optuna.db"), MOUNTS) == "nfs4"
    assert filesystem_type(Path("/home/me/tmp/optuna.db"), MOUNTS) == "tmpfs"  # the deepest mount point wins
    assert filesystem_type(Path("/mnt/my data/x.db"), MOUNTS) == "fuse.sshfs"
    assert filesystem_type(Path("/homework/x.db"), MOUNTS) == "ext4"  # /home is not a prefix of /homework
    for path, fs in (("/home/me/optuna.db", "nfs4"), ("/scratch/s/optuna.db", "lustre"), ("/mnt/my data/optuna.db", "fuse.sshfs")):
        out = io.StringIO()
        assert warn_network_sqlite(parse_storage(f"sqlite:///{path}"), out, MOUNTS)
        line = out.getvalue()
        assert line.count("\n") == 1 and f"({fs})" in line and "postgresql://" in line and "journal:///" in line
    out = io.StringIO()
    assert not warn_network_sqlite(parse_storage("sqlite:////tmp/optuna.db"), out, MOUNTS) and out.getvalue() == ""
    assert not warn_network_sqlite(parse_storage("journal:///home/me/sweep.log"), out, MOUNTS)  # the journal is made for it
