"""Shared pytest configuration.

Real-data tests (``@pytest.mark.realdata``) read the archives under the data root given by
``$REPRLAB_DATA``. Without them they skip with a reason; with ``REPRLAB_REQUIRE_REALDATA=1``
(set by ``.ci/run``) a missing dataset, or any skipped realdata test, is a failure.

Tests of real services (``@pytest.mark.slurm``: a SLURM cluster; ``@pytest.mark.services``: a
PostgreSQL, :mod:`helpers_postgres`; ``.ci/run`` starts both) skip
with the reason when the service is absent; with ``REPRLAB_REQUIRE_SERVICES=1`` (set by
``.ci/run``) such a skip is a failure (:mod:`helpers_services`).
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

REQUIRE = os.environ.get("REPRLAB_REQUIRE_REALDATA") == "1"
REQUIRE_SERVICES = os.environ.get("REPRLAB_REQUIRE_SERVICES") == "1"
SERVICE_MARKERS = ("slurm", "services")  # services: PostgreSQL (tests/helpers_postgres.py)


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "realdata: reads the real archives under $REPRLAB_DATA (skips when absent)")
    config.addinivalue_line("markers", "services: needs a real server, e.g. PostgreSQL (skips when absent)")
    torch.set_num_threads(min(2, torch.get_num_threads()))


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    if REQUIRE and report.skipped and item.get_closest_marker("realdata"):
        report.outcome = "failed"
        report.longrepr = f"realdata test skipped while REPRLAB_REQUIRE_REALDATA=1: {report.longrepr}"
    if REQUIRE_SERVICES and report.skipped and any(item.get_closest_marker(m) for m in SERVICE_MARKERS):
        report.outcome = "failed"
        report.longrepr = f"service test skipped while REPRLAB_REQUIRE_SERVICES=1: {report.longrepr}"


def _need(archive: str) -> Path:
    root = os.environ.get("REPRLAB_DATA")
    if not root or not (Path(root) / archive).exists():
        msg = f"real data not available: set REPRLAB_DATA to a folder holding {archive}"
        if REQUIRE:
            pytest.fail(msg)
        pytest.skip(msg)
    return Path(root)


@pytest.fixture(scope="session")
def data_root() -> Path:
    """The data root holding the real CIFAR-100 archive."""
    return _need("cifar-100-python.tar.gz")


@pytest.fixture(scope="session")
def cache_root(tmp_path_factory) -> Path:
    """A session-wide cache dir, so each archive is decoded once per test session."""
    return Path(os.environ.get("REPRLAB_CACHE") or tmp_path_factory.mktemp("reprlab-cache"))


@pytest.fixture(scope="session")
def cifar(data_root, cache_root):
    """The real CIFAR-100 splits (train minus 5k val, val, test) through the registry."""
    from reprlab.config import DataConfig
    from reprlab.data.registry import load_splits

    return load_splits(DataConfig(root=str(data_root), cache_dir=str(cache_root)))
