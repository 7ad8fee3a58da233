"""The command plug-ins print tables: force the plain-text one whether or not rich is installed,
so that their rows can be parsed."""

from __future__ import annotations

import sys

import pytest


@pytest.fixture(autouse=True)
def _plain_tables(monkeypatch) -> None:
    # Force the plain-text table whether or not rich is installed, so rows can be parsed.
    monkeypatch.setitem(sys.modules, "rich", None)
    monkeypatch.setitem(sys.modules, "rich.console", None)
    monkeypatch.setitem(sys.modules, "rich.table", None)
