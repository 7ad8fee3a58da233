"""The package's shape: no import circles, no overlong modules, light paths free of torch.

The analysis is ``scripts/import_graph.py`` (run it for the full report); these tests assert on it.
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def graph():
    spec = importlib.util.spec_from_file_location("import_graph", ROOT / "scripts" / "import_graph.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules["import_graph"] = mod  # dataclasses look their module up while being built
    spec.loader.exec_module(mod)
    return mod, mod.build()


def test_no_import_cycles(graph):
    mod, g = graph
    found = mod.cycles(g)
    assert not found, "import cycles (function-level imports count): " + "; ".join(
        " <-> ".join(c) + ": " + ", ".join(str(e) for e in g.edges if e.src in c and e.dst in c) for c in found
    )


def test_no_module_over_650_lines(graph):
    mod, g = graph
    assert not mod.long_modules(g, 650), mod.long_modules(g, 650)


def test_report_imports_nothing_that_imports_torch(graph):
    mod, g = graph
    report = [m for m in g.modules if m == "reprlab.report" or m.startswith("reprlab.report.")]
    assert len(report) >= 5
    paths = {m: mod.heavy_reach(g, m) for m in report}
    assert not any(paths.values()), {m: " -> ".join(p) for m, p in paths.items() if p}


def test_analysis_sees_function_level_imports(graph, tmp_path):
    """The checks above would pass vacuously if a hidden (function-level) circle went unseen."""
    mod, _ = graph
    pkg = tmp_path / "reprlab"
    (pkg / "sub").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "sub" / "__init__.py").write_text("")
    (pkg / "sub" / "a.py").write_text("from reprlab.sub import b\n")
    (pkg / "sub" / "b.py").write_text("def f():\n    from reprlab.sub.a import x\n    import torch\n")
    g = mod.build(pkg)
    assert mod.cycles(g) == [["reprlab.sub.a", "reprlab.sub.b"]]
    assert mod.heavy_reach(g, "reprlab.sub.a") == ["reprlab.sub.a", "reprlab.sub.b", "torch"]
    assert mod.heavy_reach(g, "reprlab.sub.a", lazy=False) == []


def _imports_torch(*argv: str) -> tuple[bool, str]:
    code = "import runpy, sys; sys.argv = ['reprlab', *sys.argv[1:]]\ntry:\n    runpy.run_module('reprlab', run_name='__main__')\nexcept SystemExit:\n    pass\nprint('TORCH' if 'torch' in sys.modules else 'NO-TORCH')"
    env = {**os.environ, "REPRLAB_DATA": os.environ.get("REPRLAB_DATA", str(ROOT / "data"))}
    p = subprocess.run([sys.executable, "-c", code, *argv], capture_output=True, text=True, cwd=ROOT, env=env, timeout=120)
    lines = p.stdout.strip().splitlines()
    assert lines and lines[-1] in ("TORCH", "NO-TORCH"), (p.stdout, p.stderr)
    return lines[-1] == "TORCH", p.stdout


def test_cli_help_does_not_import_torch():
    torch_loaded, out = _imports_torch("--help")
    assert "usage: reprlab" in out
    assert not torch_loaded, "`reprlab --help` imported torch"


def test_config_loads_without_torch(graph):
    """``reprlab.config`` is what every command imports first; its module-level imports stay light
    (a method's or model's module is imported only when a config names it)."""
    mod, g = graph
    assert mod.heavy_reach(g, "reprlab.config", lazy=False) == []


@pytest.mark.parametrize("study", ["quick", "ssl_vs_supervised", "cnn_vs_vit", "ssl_methods"])
def test_study_dry_run_does_not_import_torch(study, tmp_path):
    """Every run of a study is loaded and its config checked at ``--dry-run`` (methods, views,
    model arguments): through the torch-free config dataclasses, without importing torch."""
    extra = ["--methods", "all"] if study == "ssl_methods" else []
    torch_loaded, out = _imports_torch("study", "run", study, *extra, "--dry-run", "--out", str(tmp_path / study))
    assert f"study {study!r}" in out and " new" in out, out
    assert not torch_loaded, f"`reprlab study run {study} --dry-run` imported torch"
    if extra:  # `--methods all` found every self-supervised method without importing one
        for m in ("simclr", "byol", "mocov2", "mocov3", "simsiam", "barlow_twins", "vicreg", "dino", "swav"):
            assert f"ssl-{m}-s0" in out, m
        assert "ssl-supervised" not in out


def test_every_method_config_loads_without_torch():
    code = (
        "import sys\nfrom reprlab.config import load_config\nfrom reprlab.registry import METHOD_CONFIGS\n"
        "names = METHOD_CONFIGS.names()\n"
        "cfgs = [load_config(None, [f'method.name=\"{n}\"', 'model.kwargs.width=16']) for n in names]\n"
        "assert [c.method.name for c in cfgs] == names\n"
        "print(','.join(names)); print('TORCH' if 'torch' in sys.modules else 'NO-TORCH')"
    )
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert p.returncode == 0, p.stderr
    names, torch_state = p.stdout.split()
    assert torch_state == "NO-TORCH"
    # the torch-free registry knows every method the torch registry knows
    from reprlab.registry import METHODS

    assert names.split(",") == METHODS.names()
