"""Servers for the tests of sweeps on several workers: a PostgreSQL (``postgres_url``: a fresh,
empty database per test) and the worker processes themselves (``start_workers``).

Where the server comes from: ``$REPRLAB_TEST_POSTGRES`` (a URL; ``.ci/run`` starts a throwaway
server with ``scripts/ci/postgres.sh`` and exports it), else this module starts its own with the
same script when PostgreSQL's binaries are installed, and stops it at the end of the session.
Without either the tests skip with the reason -- unless ``REPRLAB_REQUIRE_SERVICES=1`` (set by
``.ci/run``), where a missing server fails them (:func:`helpers_services.need`; the ``services``
marker of conftest.py).
"""

from __future__ import annotations

import glob
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import pytest

from helpers_services import need

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "scripts" / "ci" / "postgres.sh"
WORKER = Path(__file__).with_name("sweep_worker.py")


@pytest.fixture(scope="session")
def postgres_server():
    """The URL of a PostgreSQL server (its ``postgres`` database)."""
    try:
        import psycopg  # noqa: F401
    except ImportError:
        need("psycopg is not installed (pip install 'reprlab[postgres]')")
    url = os.environ.get("REPRLAB_TEST_POSTGRES")
    if url:
        yield url
        return
    if not (shutil.which("pg_ctl") or glob.glob("/usr/lib/postgresql/*/bin/pg_ctl")):
        need("no PostgreSQL: set REPRLAB_TEST_POSTGRES to a server's URL, or install postgresql for a throwaway one")
    folder = tempfile.mkdtemp(prefix="reprlab-pg-")
    p = subprocess.run(["bash", str(SCRIPT), "start", folder], capture_output=True, text=True, timeout=60)
    if p.returncode != 0:
        subprocess.run(["bash", str(SCRIPT), "stop", folder], capture_output=True, timeout=60)
        need(f"could not start a throwaway PostgreSQL: {p.stderr.strip()[-500:]}")
    try:
        yield p.stdout.strip()
    finally:
        subprocess.run(["bash", str(SCRIPT), "stop", folder], capture_output=True, timeout=60)


@pytest.fixture
def postgres_url(postgres_server):
    """A new, empty database on the server, dropped afterwards."""
    import psycopg

    name = "t_" + uuid.uuid4().hex[:12]
    admin = postgres_server.replace("postgresql+psycopg://", "postgresql://")
    with psycopg.connect(admin, autocommit=True, connect_timeout=10) as conn:
        conn.execute(f"CREATE DATABASE {name}")
    try:
        yield admin.rsplit("/", 1)[0] + "/" + name
    finally:
        with psycopg.connect(admin, autocommit=True, connect_timeout=10) as conn:
            conn.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


def start_workers(n: int, job: dict, tmp_path: Path, **per_worker) -> list[subprocess.Popen]:
    """Start ``n`` sweep workers (tests/sweep_worker.py) on ``job`` at once; ``per_worker`` maps a
    job key to a list of n values (e.g. poll_s). Each writes its output to tmp_path/worker-i.txt."""
    procs = []
    job = dict(job, ready=str(tmp_path / "ready-"), go=str(tmp_path / "go"))
    for i in range(n):
        spec = dict(job, **{k: v[i] for k, v in per_worker.items()})
        path = tmp_path / f"worker-{i}.json"
        path.write_text(json.dumps(spec))
        log = open(tmp_path / f"worker-{i}.txt", "w")
        env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT), str(WORKER.parent), os.environ.get("PYTHONPATH", "")]))
        procs.append(subprocess.Popen([sys.executable, str(WORKER), str(path)], stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True))
        log.close()
    return procs


def release(procs: list[subprocess.Popen], tmp_path: Path, timeout_s: float = 60) -> None:
    """Let the workers go at once, when every one of them is ready (imports done)."""
    deadline = time.monotonic() + timeout_s
    while len(list(tmp_path.glob("ready-*"))) < len(procs):
        if time.monotonic() > deadline or any(p.poll() is not None for p in procs):
            pytest.fail("a sweep worker did not get ready: " + "; ".join(f.read_text()[-500:] for f in sorted(tmp_path.glob("worker-*.txt"))))
        time.sleep(0.02)
    (tmp_path / "go").touch()


def wait_all(procs: list[subprocess.Popen], timeout_s: float) -> list[int]:
    """Exit codes of every worker; past the deadline the test fails."""
    deadline = time.monotonic() + timeout_s
    codes = []
    for p in procs:
        codes.append(p.wait(timeout=max(0.1, deadline - time.monotonic())))
    return codes


def kill_all(procs: list[subprocess.Popen]) -> None:
    """SIGKILL every worker still running (by its own session's PID), then reap it."""
    for p in procs:
        if p.poll() is None:
            try:
                os.killpg(p.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            p.wait(timeout=30)
