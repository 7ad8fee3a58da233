"""Real services for the tests (a SLURM cluster): present, or skip with the reason; with
``REPRLAB_REQUIRE_SERVICES=1`` (``.ci/run``, which starts them) absent is a failure."""

from __future__ import annotations

import os
import shutil
import subprocess

import pytest

REQUIRE_SERVICES = os.environ.get("REPRLAB_REQUIRE_SERVICES") == "1"


def need(reason: str) -> None:
    """The service is missing: fail under REPRLAB_REQUIRE_SERVICES=1, else skip with ``reason``."""
    if REQUIRE_SERVICES:
        pytest.fail(f"{reason} (REPRLAB_REQUIRE_SERVICES=1)")
    pytest.skip(reason)


def slurm_partition() -> str:
    """The default partition of a reachable SLURM cluster with a node that takes jobs (scripts/ci/slurm.sh)."""
    if shutil.which("sbatch") is None or shutil.which("sinfo") is None:
        need("no SLURM: sbatch/sinfo not on the PATH (start one with scripts/ci/slurm.sh start)")
    p = subprocess.run(["sinfo", "-h", "-o", "%P|%t"], capture_output=True, text=True, timeout=30)
    rows = [r.split("|") for r in p.stdout.split()]
    # a node that takes jobs: idle, or busy with the last test's jobs (allocated, mixed, completing,
    # or planned for a pending job by the backfill scheduler: sinfo's "plnd"); not down/drained
    usable = ("idle", "mix", "alloc", "comp", "plnd")
    default = [part.rstrip("*") for part, state in rows if part.endswith("*") and state.rstrip("*~#!%$@^-") in usable]
    if p.returncode != 0 or not default:
        need(f"no usable SLURM cluster: sinfo says {(p.stderr or p.stdout).strip()[:200]!r}")
    return default[0]
