"""The report package reads run directories only: no torch, no training, no study runner.

``reprlab report`` must work on a copied study folder without the training stack, and the
data modules must not pay for matplotlib. Checked two ways: the modules each file imports
(its source), and what importing a module really pulls into ``sys.modules`` (a fresh
interpreter, since this test process already holds torch).
"""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[2] / "reprlab" / "report"

# Besides the standard library: what each module of the package may import.
ALLOWED = {
    "load": {"reprlab.errors", "reprlab.result"},  # result.py: result.json's schema (torch-free, imports only errors)
    "tables": {"reprlab.report.load"},
    "published": set(),  # the published numbers: plain data (`reprlab config published` lists them without the report)
    "budget": {"reprlab.report.load", "reprlab.report.published"},
    "document": set(),
    "plots": {"matplotlib", "numpy", "reprlab.report.budget", "reprlab.report.load", "reprlab.report.tables"},
    "sections": {"matplotlib", "numpy", "reprlab.report.budget", "reprlab.report.document", "reprlab.report.load", "reprlab.report.plots", "reprlab.report.tables"},
    "build": {"reprlab.report.sections", "reprlab.report.document", "reprlab.report.load", "reprlab.report.tables"},
    "__init__": set(),
}


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module == "reprlab.report":
            names.update(f"reprlab.report.{a.name}" for a in node.names)  # `from reprlab.report import sections`
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module)
    return names


def _third_party(name: str) -> bool:
    return name.split(".")[0] not in sys.stdlib_module_names and name != "__future__"


def test_every_module_is_listed() -> None:
    assert {p.stem for p in PACKAGE.glob("*.py")} == set(ALLOWED)


@pytest.mark.parametrize("module", sorted(ALLOWED))
def test_module_imports_only_what_its_job_needs(module: str) -> None:
    used = {n for n in _imports(PACKAGE / f"{module}.py") if _third_party(n)}
    allowed = ALLOWED[module]
    bad = {n for n in used if not any(n == a or n.startswith(a + ".") for a in allowed)}
    assert not bad, f"reprlab/report/{module}.py imports {sorted(bad)}"


def _loaded_after_import(module: str) -> set[str]:
    code = f"import json, sys; import {module}; print(json.dumps(sorted(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True, timeout=120).stdout
    return set(json.loads(out))


def test_build_does_not_import_torch_or_the_training_stack() -> None:
    loaded = _loaded_after_import("reprlab.report.build")
    forbidden = ("torch", "torchvision", "optuna", "reprlab.train", "reprlab.methods", "reprlab.models", "reprlab.studies", "reprlab.data", "reprlab.eval")
    assert "reprlab.report.build" in loaded and "matplotlib" in loaded
    assert not [m for m in loaded if m.split(".")[0] in forbidden or any(m == f or m.startswith(f + ".") for f in forbidden)]


def test_tables_import_no_plotting() -> None:
    loaded = _loaded_after_import("reprlab.report.tables")
    assert "reprlab.report.tables" in loaded
    assert not [m for m in loaded if m.split(".")[0] in ("matplotlib", "numpy", "torch")]


@pytest.mark.parametrize("module", ["reprlab.report.budget", "reprlab.report.published"])
def test_budgets_and_published_numbers_import_no_plotting(module: str) -> None:
    loaded = _loaded_after_import(module)
    assert module in loaded and not [m for m in loaded if m.split(".")[0] in ("matplotlib", "numpy", "torch")]


def test_the_cli_command_imports_the_report_lazily() -> None:
    loaded = _loaded_after_import("reprlab.commands.report")
    assert not [m for m in loaded if m.startswith("reprlab.report") or m.split(".")[0] in ("matplotlib", "torch")]
