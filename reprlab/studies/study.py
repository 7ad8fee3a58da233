"""Study files and the study runner: a whole experiment as one TOML file, executed as a DAG of
ordinary ``reprlab`` runs.

A study file names runs (``[[run]]``) and sweeps (``[[sweep]]``, see :mod:`reprlab.studies.sweep`)::

    [study]
    name = "quick"
    description = "both research questions at toy scale"
    gpu_hours = 0.05                       # estimate, shown by `study list` and --dry-run
    out_dir = "runs/quick"                 # default: runs/<name>
    overrides = ["train.progress=false"]   # applied to every run and sweep trial

    [[run]]
    name = "simclr"
    command = "pretrain"                   # train | pretrain | probe | finetune
    config = "configs/pretrain/simclr_cifar100.toml"
    overrides = ["train.epochs=2"]
    seeds = [0, 1]                         # one run per seed: simclr-s0, simclr-s1 (sets train.seed)
    grid = { "data.fraction" = [0.1, 0.25] }   # cartesian: simclr-f0.1-s0, ... (applied as overrides)

    [[run]]
    name = "probe-simclr"
    command = "probe"
    backbone = "{simclr}"                  # the matching instance's checkpoints/last.pt; a dependency
    seeds = [0, 1]
    match = { "data.fraction" = [0.1, 0.25] }  # expands and picks the dependency, never applied

Expansion and references
    An expanded instance has *axes*: its ``grid`` and ``match`` values and its seed. The name gets
    one short suffix per axis (``-f0.1``, ``-wd0.05``, seed last: ``-s0``, so the default report
    group is the name without the seed); the values themselves go into the run's config (and
    ``run.sweep_keys``, so result.json lists them) -- the folder name is never parsed back.
    ``{simclr}`` from an instance resolves to the instance of ``simclr`` whose axes agree on every
    axis ``simclr`` has. An axis of ``simclr`` with several values that the referencing run lacks
    is ambiguous and an error naming both runs; an axis with a single value is not.

    ``best_of = "<sweep>"`` applies the best complete trial's parameters (highest ``val.acc1`` of
    result.json, or the sweep's metric) and makes the run wait for the sweep.

Execution (``reprlab study run``)
    Each run is a child process ``python -m reprlab <command> --config ... <overrides>
    run.out_dir=... run.name=...``, so the run's own skip / resume / lock logic applies and a
    crash of one run never takes the runner down. Its output is appended to ``<run dir>/log.txt``.
    Complete runs are skipped without starting a process; interrupted ones resume from
    ``checkpoints/last.pt``. A run whose directory holds results or a checkpoint of another config
    than the study would run now (an edited override, a different best_of parameter) is *stale*:
    ``--dry-run`` and ``study status`` show it with the differing keys, and ``study run`` refuses to
    start until ``--rerun`` (which starts each stale run with ``--rerun``, replacing it). The
    comparison is the run's own (``reprlab.train.rundir.config_differences``) on the config its
    command line resolves to (:func:`node_config`). A failed last attempt (result.json with
    ``status = "failed"``) is shown with its error line. The runner holds ``<out_dir>/.study.lock`` so two runners of one
    study never interleave, and children die with the runner (Linux ``PR_SET_PDEATHSIG``), so
    killing the runner at any moment leaves only resumable run directories behind.

``--only PATTERN`` (fnmatch on expanded names) *refuses* to start when a selected run depends on
an incomplete run that is not selected: silently launching a 1000-epoch pretraining because a
probe was asked for would be a bad surprise; ``--dry-run`` shows such runs as blocked.
"""

from __future__ import annotations

import ctypes
import difflib
import fnmatch
import functools
import itertools
import json
import math
import os
import re
import shlex
import signal
import subprocess
import sys
import time
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, Callable, Iterable

import reprlab
from reprlab.errors import ReprlabError
from reprlab.io import FileLock, is_locked, make_dirs, os_error  # noqa: F401 - is_locked: also used by reprlab.studies.sweep

COMMANDS = ("train", "pretrain", "probe", "finetune")
STUDY_KEYS = ("name", "description", "gpu_hours", "out_dir", "overrides", "storage", "methods")
RUN_KEYS = ("name", "command", "config", "overrides", "seeds", "grid", "match", "group", "backbone", "weights", "best_of", "args")
TOP_KEYS = ("study", "run", "sweep")
BUILTIN_DIR = Path(__file__).resolve().parent / "builtin"
#: configs named in built-in studies are relative to the repository root
# "configs/..." in a study file resolves against the cwd, else against the package, which ships
# the recipes in reprlab/configs (the repository's configs/ links there).
PACKAGE_ROOT = Path(reprlab.__file__).resolve().parent
NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
REF_RE = re.compile(r"^\{([^{}]+)\}$")
POLL_S = 0.2  # how often the runner looks at its children


# ============================================================================================
# Small shared helpers (also used by reprlab.studies.sweep)
# ============================================================================================


def toml_value(value: Any) -> str:
    """``value`` as a TOML literal, the form ``key=value`` overrides expect (strings quoted)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if math.isnan(value):
            return "nan"
        if math.isinf(value):
            return "inf" if value > 0 else "-inf"
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value)  # JSON string escapes are valid TOML basic-string escapes
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{json.dumps(str(k))} = {toml_value(v)}" for k, v in value.items()) + "}"
    raise ReprlabError(f"value {value!r} cannot be written as a config override (expected a number, string, boolean or list)")


def override(key: str, value: Any) -> str:
    return f"{key}={toml_value(value)}"


def did_you_mean(word: str, options: Iterable[str]) -> str:
    close = difflib.get_close_matches(word, list(options), n=1, cutoff=0.5)
    return f"; did you mean {close[0]!r}?" if close else ""


def check_keys(table: dict, allowed: Iterable[str], where: str) -> None:
    """Reject unknown keys, naming the closest valid one (a typo must not be silently ignored)."""
    allowed = list(allowed)
    for key in table:
        if key not in allowed:
            raise ReprlabError(f"{where}: unknown key {key!r}{did_you_mean(key, allowed)} (valid: {', '.join(allowed)})")


def expect(value: Any, kind: type | tuple[type, ...], where: str, key: str, what: str) -> Any:
    # bool is an int in Python; a study file saying seeds = [true] is still wrong
    ok = isinstance(value, kind) and not (isinstance(value, bool) and bool not in (kind if isinstance(kind, tuple) else (kind,)))
    if not ok:
        raise ReprlabError(f"{where}: key {key!r} must be {what}, got {value!r}")
    return value


def check_node(t: dict, allowed: Iterable[str], required: Iterable[str], where: str) -> tuple[str, str]:
    """The checks shared by ``[[run]]`` and ``[[sweep]]`` tables; returns (name, command)."""
    check_keys(t, allowed, where)
    for req in required:
        if req not in t:
            raise ReprlabError(f"{where}: missing required key {req!r}")
    name = expect(t["name"], str, where, "name", "a string")
    if not NAME_RE.match(name):
        raise ReprlabError(f"{where}: name {name!r} must be letters, digits, '.', '_' or '-' (it names a folder)")
    command = expect(t["command"], str, where, "command", "a string")
    if command not in COMMANDS:
        raise ReprlabError(f"{where}: command {command!r} is not one of {', '.join(COMMANDS)}{did_you_mean(command, COMMANDS)}")
    return name, command


def string_list(value: Any, where: str, key: str) -> list[str]:
    expect(value, list, where, key, "a list of strings")
    for v in value:
        expect(v, str, where, key, "a list of strings")
    return list(value)


def check_overrides(items: list[str], where: str, key: str) -> list[str]:
    for item in items:
        k, sep, _ = item.partition("=")
        if not sep or not k.strip():
            raise ReprlabError(f"{where}: {key} entry {item!r} is not key=value (e.g. \"optim.lr=0.1\"; strings TOML-quoted: 'run.group=\"x\"')")
    return items


def resolve_config_path(path: str, where: str) -> str:
    """A config path as written, resolved against the cwd first and then the installed package."""
    p = Path(path)
    if p.is_file():
        return path
    if not p.is_absolute() and (PACKAGE_ROOT / p).is_file():
        return str(PACKAGE_ROOT / p)
    looked = str(Path.cwd()) if Path.cwd().resolve() == PACKAGE_ROOT else f"{Path.cwd()} and {PACKAGE_ROOT}"
    raise ReprlabError(f"{where}: config file {path!r} not found (looked in {looked})")


def validate_overrides(config: str | None, overrides: list[str], where: str) -> None:
    """Build the run's config now, so a typo in a study fails before hours of earlier runs."""
    from reprlab.config import load_config

    try:
        load_config(config, overrides)
    except ReprlabError as e:
        raise ReprlabError(f"{where}: {e}") from None


def reprlab_argv(data_root: str | None, command: str) -> list[str]:
    return [sys.executable, "-m", "reprlab", *(["--data-root", data_root] if data_root else []), command]


def display(argv: list[str]) -> str:
    """A command line to show: ``reprlab ...`` instead of ``/path/python -m reprlab ...``."""
    if argv[1:3] == ["-m", "reprlab"]:
        argv = ["reprlab", *argv[3:]]
    return shlex.join(argv)


def _die_with_parent() -> Callable[[], None] | None:
    """A ``preexec_fn`` making the child get SIGKILL when its parent dies (Linux).

    Why: killing the runner (``kill -9``, a preempted job) must not leave a training process
    running on behalf of nobody, holding its run's lock and racing the next runner.
    """
    if not sys.platform.startswith("linux"):
        return None
    libc = ctypes.CDLL(None, use_errno=True)  # resolved before fork: dlopen in the child is unsafe
    parent = os.getpid()

    def preexec() -> None:
        libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG = 1
        if os.getppid() != parent:  # the parent died between fork and prctl
            os._exit(1)

    return preexec


def spawn(argv: list[str], log_path: Path, env: dict[str, str] | None = None) -> subprocess.Popen:
    """Start ``argv`` with stdout and stderr appended to ``log_path``."""
    make_dirs(log_path.parent)
    try:
        log = open(log_path, "ab")
    except OSError as e:
        raise os_error(e, log_path) from None
    with log:
        try:
            log.write(f"\n=== {time.strftime('%Y-%m-%d %H:%M:%S')} {display(argv)}\n".encode())
            log.flush()
        except OSError as e:
            raise os_error(e, log_path) from None
        # the child holds its own descriptor; ours can close when this block ends
        return subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env, preexec_fn=_die_with_parent())


def terminate(proc: Any, grace_s: float = 10.0) -> None:
    """SIGTERM, then SIGKILL after ``grace_s``; returns when the process is gone."""
    if proc.poll() is not None:
        return
    proc.terminate()
    try:
        proc.wait(timeout=grace_s)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def last_line(log_path: Path) -> str:
    """The last non-empty line of a log (a progress bar's carriage returns split lines too)."""
    if not log_path.is_file():
        return "(no output)"
    with open(log_path, "rb") as f:
        f.seek(max(0, log_path.stat().st_size - 8192))
        tail = f.read().decode(errors="replace")
    lines = [ln.strip() for ln in re.split(r"[\r\n]+", tail) if ln.strip()]
    return lines[-1] if lines else "(no output)"


def exit_text(code: int) -> str:
    if code < 0:
        try:
            return f"killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"killed by signal {-code}"
    return f"exit {code}"


#: the one file lock (reprlab.io.FileLock): ``DirLock(path, what)``, exclusive, non-blocking,
#: released when the holder dies; ``is_locked(path)`` tells whether a live process holds it
DirLock = FileLock


# ============================================================================================
# The study file
# ============================================================================================


@dataclass(frozen=True)
class RunSpec:
    """One ``[[run]]`` table, before expansion."""

    name: str
    command: str
    config: str | None
    overrides: list[str] = field(default_factory=list)
    seeds: list[int] | None = None
    grid: dict[str, list] = field(default_factory=dict)
    match: dict[str, list] = field(default_factory=dict)
    group: str | None = None
    backbone: str | None = None
    weights: str | None = None
    best_of: str | None = None
    args: list[str] = field(default_factory=list)
    index: int = 0  # position in the file: ties in the execution order follow the file


@dataclass
class Node:
    """An expanded run (or a sweep): one unit the runner schedules."""

    name: str
    kind: str  # "run" | "sweep"
    spec: Any  # RunSpec | reprlab.studies.sweep.SweepSpec
    axes: dict[str, Any] = field(default_factory=dict)
    deps: list[str] = field(default_factory=list)
    backbone: str | None = None  # resolved --backbone value


@dataclass
class Study:
    name: str
    description: str
    gpu_hours: float | None
    out_dir: Path
    overrides: list[str]
    path: Path
    nodes: dict[str, Node]  # in execution (topological, then file) order
    storage: str | None = None  # Optuna storage URL for every sweep (--storage, else [study] storage)

    def run_dir(self, node: Node) -> Path:
        return self.out_dir / node.name

    def log_path(self, node: Node) -> Path:
        return self.run_dir(node) / "log.txt"


def builtin_studies() -> list[Path]:
    return sorted(BUILTIN_DIR.glob("*.toml"))


def find_study(name_or_file: str) -> Path:
    """A study file path, or the name of a built-in study."""
    p = Path(name_or_file)
    if p.is_file():
        return p
    # built-in names take '-' or '_' alike: `ssl-vs-supervised` is `ssl_vs_supervised`
    builtin = BUILTIN_DIR / f"{name_or_file.replace('-', '_')}.toml"
    if builtin.is_file() and "/" not in name_or_file:
        return builtin
    names = [b.stem for b in builtin_studies()]
    raise ReprlabError(f"study {name_or_file!r}: no such file and no built-in study of that name{did_you_mean(name_or_file, names)} (built-in: {', '.join(names)})")


def read_toml(path: Path) -> dict:
    try:
        return tomllib.loads(Path(path).read_text())
    except tomllib.TOMLDecodeError as e:
        raise ReprlabError(f"{path}: invalid TOML ({e})") from None
    except OSError as e:
        raise ReprlabError(f"{path}: cannot be read ({e.strerror})") from None


def read_header(path: Path) -> dict:
    """``[study]`` only (for ``study list``): cheap, and valid while configs are still missing."""
    data = read_toml(path)
    head = data.get("study", {})
    expect(head, dict, str(path), "study", "a table")
    check_keys(head, STUDY_KEYS, f"{path} [study]")
    return {"name": head.get("name", Path(path).stem), "description": head.get("description", ""), "gpu_hours": head.get("gpu_hours")}


def load_study(path: str | Path, out_dir: str | Path | None = None, validate: bool = True, storage: str | None = None, methods: list[str] | None = None) -> Study:
    """Parse, expand and check a study file; ``validate`` also builds every run's config.

    ``storage`` (``study run --storage URL``) is the Optuna storage of every sweep of the study,
    e.g. one database shared by several machines; without it a sweep uses its own ``storage``,
    else the study's ``[study] storage``, else ``sqlite:///<out_dir>/<sweep>/optuna.db``
    (:func:`reprlab.studies.sweep.storage_url`)."""
    from reprlab.studies.sweep import parse_sweep

    path = Path(path)
    data = read_toml(path)
    check_keys(data, TOP_KEYS, str(path))
    head = expect(data.get("study", {}), dict, str(path), "study", "a table ([study])")
    check_keys(head, STUDY_KEYS, f"{path} [study]")
    name = expect(head.get("name", path.stem), str, f"{path} [study]", "name", "a string")
    if not NAME_RE.match(name):
        raise ReprlabError(f"{path} [study]: name {name!r} must be letters, digits, '.', '_' or '-'")
    description = expect(head.get("description", ""), str, f"{path} [study]", "description", "a string")
    gpu_hours = head.get("gpu_hours")
    if gpu_hours is not None:
        expect(gpu_hours, (int, float), f"{path} [study]", "gpu_hours", "a number")
    study_overrides = check_overrides(string_list(head.get("overrides", []), f"{path} [study]", "overrides"), f"{path} [study]", "overrides")
    out = Path(out_dir) if out_dir is not None else Path(expect(head.get("out_dir", f"runs/{name}"), str, f"{path} [study]", "out_dir", "a string"))
    study_storage = head.get("storage")
    if study_storage is not None:
        expect(study_storage, str, f"{path} [study]", "storage", "an Optuna storage URL")

    run_tables = [_fill_methods(t, _study_methods(head, methods, path)) for t in _tables(data, "run", path)]
    runs = [_parse_run(t, i, path) for i, t in enumerate(run_tables)]
    sweep_tables = _tables(data, "sweep", path)
    # sweeps rank before runs among ready nodes: they are the long pole that final runs wait for
    sweeps = [parse_sweep(t, f"{path} [[sweep]] {t.get('name', f'#{i + 1}')!r}", index=i - len(sweep_tables)) for i, t in enumerate(sweep_tables)]
    if study_storage:  # the study's storage for the sweeps that name none themselves
        import dataclasses

        sweeps = [s if s.storage else dataclasses.replace(s, storage=study_storage) for s in sweeps]
    if not runs and not sweeps:
        raise ReprlabError(f"{path}: no [[run]] or [[sweep]] tables")
    specs: dict[str, Any] = {}
    for s in [*runs, *sweeps]:
        if s.name in specs:
            raise ReprlabError(f"{path}: two tables are named {s.name!r}")
        specs[s.name] = s

    nodes = _expand_all(runs, sweeps, specs, path)
    order = _toposort(nodes, path)
    study = Study(name=name, description=description, gpu_hours=gpu_hours, out_dir=out, overrides=study_overrides, path=path, nodes=order, storage=storage)
    if validate:
        for node in study.nodes.values():
            where = f"{path}: {'sweep' if node.kind == 'sweep' else 'run'} {node.name!r}"
            if node.kind == "run":
                validate_overrides(instance_config(node.spec, node.axes), [*study.overrides, *_config_overrides(node)], where)
            else:
                node.spec.validate([*study.overrides], where)
    return study


#: a grid or match value list written as this string is the study's method axis
METHODS_TOKEN = "{methods}"


def _study_methods(head: dict, methods: list[str] | None, path: Path) -> list[str] | None:
    """The study's self-supervised methods: ``study run --methods`` (``all``: every registered
    one), else ``[study] methods``; None when the study has no method axis."""
    from reprlab.registry import METHODS

    chosen = methods if methods is not None else head.get("methods")
    if chosen is None:
        return None
    if chosen == ["all"] or chosen == "all":
        from reprlab.methods.ssl import SSLMethod

        return [n for n in METHODS.names() if issubclass(METHODS.get(n), SSLMethod)]
    expect(chosen, list, f"{path} [study]", "methods", "a list of method names")
    for m in chosen:
        if m not in METHODS:
            raise ReprlabError(f"{path}: method {m!r} is not registered{METHODS.suggest(m)} (known: {', '.join(METHODS.names())})")
    if len(set(chosen)) != len(chosen) or not chosen:
        raise ReprlabError(f"{path}: methods must be a non-empty list of distinct names, got {chosen!r}")
    return list(chosen)


def _fill_methods(t: dict, methods: list[str] | None) -> dict:
    """A [[run]] table with ``"{methods}"`` in its grid/match replaced by the method list."""
    out = dict(t)
    for key in ("grid", "match"):
        table = t.get(key)
        if isinstance(table, dict) and METHODS_TOKEN in table.values():
            if methods is None:
                raise ReprlabError(f"[[run]] {t.get('name')!r}: {key} uses {METHODS_TOKEN!r} but the study names no methods ([study] methods = [...] or --methods)")
            out[key] = {k: (list(methods) if v == METHODS_TOKEN else v) for k, v in table.items()}
    return out


def instance_config(spec: "RunSpec", axes: dict[str, Any]) -> str | None:
    """The config file of one instance: ``{axis}`` placeholders in the path are filled from its
    axes (``configs/pretrain/{method.name}_cifar100.toml``: one recipe per method)."""
    if spec.config is None or "{" not in spec.config:
        return spec.config

    def fill(m: re.Match) -> str:
        if m.group(1) not in axes:
            raise ReprlabError(f"run {spec.name!r}: config placeholder {{{m.group(1)}}} is not an axis of the run (axes: {', '.join(axes) or 'none'})")
        return str(axes[m.group(1)])

    return resolve_config_path(re.sub(r"\{([^{}]+)\}", fill, spec.config), f"run {spec.name!r}")


def _tables(data: dict, key: str, path: Path) -> list[dict]:
    tables = data.get(key, [])
    if not isinstance(tables, list) or not all(isinstance(t, dict) for t in tables):
        raise ReprlabError(f"{path}: {key!r} must be an array of tables ([[{key}]])")
    return tables


def _parse_run(t: dict, index: int, path: Path) -> RunSpec:
    where = f"{path} [[run]] {t.get('name', f'#{index + 1}')!r}"
    name, command = check_node(t, RUN_KEYS, ("name", "command"), where)
    # no config: the command's defaults (a probe of a checkpoint needs little else)
    config = expect(t["config"], str, where, "config", "a string") if "config" in t else None
    if config is not None and "{" not in config:  # a path with {axis} placeholders is checked per instance
        config = resolve_config_path(config, where)
    seeds = t.get("seeds")
    if seeds is not None:
        expect(seeds, list, where, "seeds", "a list of integers")
        if not seeds or len(set(seeds)) != len(seeds):
            raise ReprlabError(f"{where}: seeds must be a non-empty list of distinct integers, got {seeds!r}")
        for s in seeds:
            expect(s, int, where, "seeds", "a list of integers")
    axes: dict[str, dict[str, list]] = {}
    for key in ("grid", "match"):
        table = expect(t.get(key, {}), dict, where, key, 'a table of lists, e.g. { "data.fraction" = [0.1, 0.5] }')
        for k, values in table.items():
            if not isinstance(values, list) or not values:
                raise ReprlabError(f"{where}: {key} key {k!r} must map to a non-empty list of values, got {values!r}")
            if k in ("seed", "train.seed"):
                raise ReprlabError(f"{where}: {key} key {k!r}: use seeds = [...] for seeds")
            if len({json.dumps(v, sort_keys=True) for v in values}) != len(values):
                raise ReprlabError(f"{where}: {key} key {k!r} repeats a value: {values!r}")
        axes[key] = dict(table)
    both = set(axes["grid"]) & set(axes["match"])
    if both:
        raise ReprlabError(f"{where}: {sorted(both)[0]!r} is in both grid and match; a key is either applied (grid) or only matched (match)")
    backbone = t.get("backbone")
    if backbone is not None:
        expect(backbone, str, where, "backbone", "a string (a path, imagenet-supervised, random-init or {run})")
        if command not in ("probe", "finetune"):
            raise ReprlabError(f"{where}: key 'backbone' is for probe and finetune runs, not {command!r}")
    weights = t.get("weights")
    if weights is not None:
        expect(weights, str, where, "weights", "a string")
    best_of = t.get("best_of")
    if best_of is not None:
        expect(best_of, str, where, "best_of", "a sweep name")
    group = t.get("group")
    if group is not None:
        expect(group, str, where, "group", "a string")
    return RunSpec(
        name=name,
        command=command,
        config=config,
        overrides=check_overrides(string_list(t.get("overrides", []), where, "overrides"), where, "overrides"),
        seeds=list(seeds) if seeds is not None else None,
        grid=axes["grid"],
        match=axes["match"],
        group=group,
        backbone=backbone,
        weights=weights,
        best_of=best_of,
        args=string_list(t.get("args", []), where, "args"),
        index=index,
    )


def abbreviate(key: str) -> str:
    """Short axis label for names: data.fraction -> f, optim.weight_decay -> wd, optim.lr -> lr."""
    if key == "method.name":
        return ""  # ssl-byol-f0.1-s0: the method's name is its own label
    last = key.split(".")[-1]
    if "_" in last:
        return "".join(p[0] for p in last.split("_") if p)
    return last if len(last) <= 3 else last[0]


def format_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return format(value, "g")
    return re.sub(r"[^A-Za-z0-9._]+", "_", str(value)).strip("_") or "x"


def _axis_labels(spec: RunSpec) -> dict[str, str]:
    keys = [*spec.grid, *spec.match]
    labels = {k: abbreviate(k) for k in keys}
    # two axes with one abbreviation (model.kwargs.width, aug.mix.weight?) fall back to longer labels
    for k in keys:
        if list(labels.values()).count(labels[k]) > 1 or labels[k] == "s":
            labels[k] = k.split(".")[-1]
    for k in keys:
        if list(labels.values()).count(labels[k]) > 1:
            labels[k] = k.replace(".", "_")
    return labels


def expand(spec: RunSpec) -> list[tuple[str, dict[str, Any]]]:
    """(name, axes) of every instance: grid and match values (cartesian), then the seed."""
    keys = [*spec.grid, *spec.match]
    labels = _axis_labels(spec)
    value_lists = [spec.grid.get(k, spec.match.get(k)) for k in keys]
    seeds = spec.seeds if spec.seeds is not None else [None]
    out = []
    for combo in itertools.product(*value_lists):
        for seed in seeds:
            axes = dict(zip(keys, combo))
            parts = [f"{labels[k]}{format_value(v)}" for k, v in axes.items()]
            if seed is not None:
                axes["seed"] = seed
                parts.append(f"s{seed}")
            out.append(("-".join([spec.name, *parts]), axes))
    return out


def _expand_all(runs: list[RunSpec], sweeps: list, specs: dict[str, Any], path: Path) -> dict[str, Node]:
    instances: dict[str, list[Node]] = {}
    nodes: dict[str, Node] = {}
    for s in sweeps:
        node = Node(name=s.name, kind="sweep", spec=s)
        instances[s.name] = [node]
    for spec in runs:
        instances[spec.name] = [Node(name=n, kind="run", spec=spec, axes=a) for n, a in expand(spec)]
    for group in instances.values():
        for node in group:
            if node.name in nodes:
                raise ReprlabError(f"{path}: the expanded name {node.name!r} occurs twice; rename one of the runs")
            nodes[node.name] = node
    for spec in runs:
        for node in instances[spec.name]:
            if spec.backbone is not None:
                m = REF_RE.match(spec.backbone)
                if m:
                    target = _resolve_ref(spec, node, m.group(1), specs, instances, path)
                    node.deps.append(target.name)
                    node.backbone = str(Path("{out}") / target.name / "checkpoints" / "last.pt")
                elif "{" in spec.backbone or "}" in spec.backbone:
                    raise ReprlabError(f"{path}: run {spec.name!r}: backbone {spec.backbone!r} is neither a path nor a reference like '{{simclr}}'")
                else:
                    node.backbone = spec.backbone
            if spec.best_of is not None:
                target = specs.get(spec.best_of)
                if target is None or target.name not in instances or instances[target.name][0].kind != "sweep":
                    sweeps_named = [s.name for s in sweeps]
                    raise ReprlabError(f"{path}: run {spec.name!r}: best_of {spec.best_of!r} is not a [[sweep]] of this study{did_you_mean(spec.best_of, sweeps_named)}")
                node.deps.append(spec.best_of)
    return nodes


def _resolve_ref(spec: RunSpec, node: Node, ref: str, specs: dict[str, Any], instances: dict[str, list[Node]], path: Path) -> Node:
    if ref not in specs:
        raise ReprlabError(f"{path}: run {spec.name!r}: backbone reference {{{ref}}} names no run{did_you_mean(ref, specs)}")
    targets = instances[ref]
    if targets[0].kind == "sweep":
        raise ReprlabError(f"{path}: run {spec.name!r}: backbone reference {{{ref}}} names a sweep; use best_of = {ref!r} to take its best parameters")
    if ref == spec.name:
        raise ReprlabError(f"{path}: run {spec.name!r} refers to itself")
    for key in targets[0].axes:
        values = {json.dumps(t.axes[key], sort_keys=True) for t in targets}
        if key not in node.axes and len(values) > 1:
            hint = "seeds = [...]" if key == "seed" else f'match = {{ "{key}" = [...] }} or grid'
            raise ReprlabError(
                f"{path}: run {spec.name!r} refers to {{{ref}}}, which varies over {key!r} ({len(values)} values), "
                f"but {spec.name!r} has no {key!r} axis: ambiguous; give {spec.name!r} {hint}"
            )
    found = [t for t in targets if all(t.axes[k] == node.axes[k] for k in t.axes if k in node.axes)]
    if len(found) != 1:
        want = ", ".join(f"{k}={node.axes[k]!r}" for k in targets[0].axes if k in node.axes)
        raise ReprlabError(f"{path}: run {node.name!r} refers to {{{ref}}}, but no instance of {ref!r} has {want}")
    return found[0]


def _toposort(nodes: dict[str, Node], path: Path) -> dict[str, Node]:
    """Dependency order; among runs that are ready together, the order of the file."""
    position = {name: i for i, name in enumerate(nodes)}

    def rank(n: Node) -> tuple[int, int]:
        return (n.spec.index, position[n.name])

    # cycles first, with the path spelled out (Kahn's algorithm only says "stuck")
    state: dict[str, int] = {}

    def visit(name: str, stack: list[str]) -> None:
        if state.get(name) == 2:
            return
        if state.get(name) == 1:
            cycle = stack[stack.index(name):] + [name]
            raise ReprlabError(f"{path}: dependency cycle: {' -> '.join(cycle)}")
        state[name] = 1
        for d in nodes[name].deps:
            visit(d, [*stack, name])
        state[name] = 2

    for name in nodes:
        visit(name, [])
    done: dict[str, Node] = {}
    pending = sorted(nodes.values(), key=rank)
    while pending:
        ready = next(n for n in pending if all(d in done for d in n.deps))
        done[ready.name] = ready
        pending.remove(ready)
    return done


# ============================================================================================
# State of a run on disk
# ============================================================================================


def read_complete(run_dir: Path) -> dict | None:
    """result.json of a complete run, else None."""
    from reprlab.train.rundir import read_result

    if not (run_dir / "result.json").is_file():
        return None
    result = read_result(run_dir)
    return result if result.get("status") == "complete" else None


def read_failure(run_dir: Path) -> str | None:
    """The error line of a failed last attempt (result.json with ``status = "failed"``), else None."""
    from reprlab.train.rundir import read_result

    if not (run_dir / "result.json").is_file():
        return None
    try:
        result = read_result(run_dir)
    except ReprlabError:
        return None
    return str(result.get("error") or "no error recorded") if result.get("status") == "failed" else None


@dataclass
class NodeState:
    status: str  # "complete" | "stale" | "resume" | "new"
    detail: str = ""
    holds: str = ""  # stale: what the directory holds ("a complete run", "a partial run (...)")


@functools.cache
def _cli() -> tuple[Any, dict]:
    from reprlab.cli import build_parser

    return build_parser()


def node_config(study: Study, node: Node, best: dict[str, Any] | None = None):
    """The resolved config a run's command line would record: the child's own resolution
    (``run_config`` of its command module, as for ``--print-config``), run in this process."""
    parser, mods = _cli()
    argv = run_argv(study, node, None, best)[3:]  # without `python -m reprlab`
    try:
        args = parser.parse_args(argv)
    except SystemExit:
        raise ReprlabError(f"run {node.name!r}: its command line does not parse: {display(argv)}") from None
    return mods[args.command].run_config(args)[0]


def _stale(study: Study, node: Node, holds: str) -> NodeState | None:
    """NodeState("stale") when the run directory's config.toml differs from what the study would
    run now; None when it agrees (or cannot be known yet: a best_of run before its sweep ends)."""
    from reprlab.train.rundir import config_differences, describe_differences, read_config

    recorded = read_config(study.run_dir(node))
    if recorded is None:
        return None
    best = None
    if node.spec.best_of is not None:
        from reprlab.studies.sweep import sweep_progress

        sweep = study.nodes[node.spec.best_of].spec
        if not sweep_progress(sweep, study.out_dir, study.storage).done:
            return None
        best = best_params(study, node)
    diff = config_differences(recorded, node_config(study, node, best))
    return NodeState("stale", describe_differences(diff), holds) if diff else None


def node_state(study: Study, node: Node) -> NodeState:
    if node.kind == "sweep":
        from reprlab.studies.sweep import sweep_progress

        prog = sweep_progress(node.spec, study.out_dir, study.storage)
        if prog.done:
            return NodeState("complete", prog.describe())
        return NodeState("resume" if prog.started else "new", prog.describe())
    from reprlab.train.rundir import RunDir, checkpoint_step

    run_dir = study.run_dir(node)
    holds = RunDir(run_dir).holds()
    if holds:  # a complete or partial run: only if its config is the one the study runs now
        stale = _stale(study, node, holds)
        if stale is not None:
            return stale
    result = read_complete(run_dir)
    if result is not None:
        return NodeState("complete", accuracy_text(result))
    failed = read_failure(run_dir)
    note = f"last attempt failed: {failed}" if failed else ""
    last = run_dir / "checkpoints" / "last.pt"
    if last.is_file():
        try:
            return NodeState("resume", f"from step {checkpoint_step(last)}" + (f"; {note}" if note else ""))
        except ReprlabError as e:
            return NodeState("resume", f"but {e}")
    if (run_dir / "features.pt").is_file():
        return NodeState("resume", "from cached features" + (f"; {note}" if note else ""))
    return NodeState("new", note)


def accuracy_text(result: dict) -> str:
    parts = []
    for split in ("val", "test"):
        block = result.get(split) or {}
        if isinstance(block.get("acc1"), (int, float)):
            parts.append(f"{split} {block['acc1']:.2f}")
        elif isinstance(block.get("knn_acc1"), (int, float)):  # self-supervised pretraining: kNN on val
            parts.append(f"{split} kNN {block['knn_acc1']:.2f}")
    return "  ".join(parts) or "no accuracy in result.json"


# ============================================================================================
# Command lines
# ============================================================================================


def _config_overrides(node: Node, best: dict[str, Any] | None = None) -> list[str]:
    """The overrides that change the run's config (not its name or location)."""
    spec: RunSpec = node.spec
    out = [override(k, v) for k, v in (best or {}).items()]  # the run's own overrides may still win
    out += list(spec.overrides)
    out += [override(k, node.axes[k]) for k in spec.grid]
    if "seed" in node.axes:
        out.append(override("train.seed", node.axes["seed"]))
    varied = [*spec.grid, *(best or {})]
    if varied:
        out.append(override("run.sweep_keys", varied))
    if spec.group is not None:
        out.append(override("run.group", group_label(spec, node)))
    return out


def group_label(spec: RunSpec, node: Node) -> str:
    """``group`` with ``{axis}`` placeholders filled; axes it does not mention are appended,
    so two fractions never pool into one report group."""
    used: set[str] = set()

    def fill(m: re.Match) -> str:
        key = m.group(1)
        if key not in node.axes:
            raise ReprlabError(f"run {spec.name!r}: group placeholder {{{key}}} is not an axis of the run (axes: {', '.join(node.axes) or 'none'})")
        used.add(key)
        return format_value(node.axes[key])

    label = re.sub(r"\{([^{}]+)\}", fill, spec.group or "")
    rest = [f"{abbreviate(k)}={format_value(v)}" for k, v in node.axes.items() if k != "seed" and k not in used]
    return f"{label} ({', '.join(rest)})" if rest else label


def run_argv(study: Study, node: Node, data_root: str | None, best: dict[str, Any] | None = None) -> list[str]:
    if node.kind == "sweep":
        storage = ["--storage", study.storage] if study.storage else []
        return [*reprlab_argv(data_root, "sweep"), str(study.path), "--name", node.name, "--out", str(study.out_dir), *storage]
    spec: RunSpec = node.spec
    config = instance_config(spec, node.axes)
    argv = [*reprlab_argv(data_root, spec.command), *(["--config", config] if config else []), *spec.args]
    if node.backbone is not None:
        argv += ["--backbone", node.backbone.replace("{out}", str(study.out_dir))]
    if spec.weights is not None:
        argv += ["--weights", spec.weights]
    # progress bars would fill log.txt with carriage returns; the study file may turn them back on
    argv += ["train.progress=false", *study.overrides, *_config_overrides(node, best)]
    argv += [override("run.out_dir", str(study.out_dir)), override("run.name", node.name)]
    return argv


def best_params(study: Study, node: Node) -> dict[str, Any] | None:
    if node.kind != "run" or node.spec.best_of is None:
        return None
    from reprlab.studies.sweep import best_trial

    sweep = study.nodes[node.spec.best_of].spec
    return best_trial(study.out_dir, sweep.name, sweep.metric)


# ============================================================================================
# Selection (--only)
# ============================================================================================


def select(study: Study, patterns: list[str] | None) -> list[str]:
    if not patterns:
        return list(study.nodes)
    chosen = [n for n in study.nodes if any(fnmatch.fnmatchcase(n, p) for p in patterns)]
    for p in patterns:
        if not any(fnmatch.fnmatchcase(n, p) for n in study.nodes):
            raise ReprlabError(f"--only {p!r} matches no run of study {study.name!r}{did_you_mean(p, study.nodes)}")
    return chosen


def missing_deps(study: Study, chosen: list[str], states: dict[str, NodeState]) -> dict[str, list[str]]:
    """Selected runs -> their incomplete dependencies that are not selected."""
    out: dict[str, list[str]] = {}
    for name in chosen:
        for d in study.nodes[name].deps:
            if d not in chosen and states[d].status != "complete":
                out.setdefault(name, []).append(d)
    return out


# ============================================================================================
# Dry run
# ============================================================================================


def _reason(study: Study, node: Node, st: NodeState, states: dict[str, NodeState], blocked: dict[str, list[str]]) -> str:
    """What would happen to ``node``, in words (the status column of --dry-run and status)."""
    reason = {"complete": "complete: skip", "resume": f"resume {st.detail}", "new": "new", "stale": f"stale: {st.detail}"}[st.status]
    if st.status == "complete" and st.detail:
        reason += f" ({st.detail})"
    if st.status == "new" and st.detail:
        reason += f" ({st.detail})"
    if st.status == "stale":
        reason += f" (holds {st.holds} of another config; `study run --rerun` replaces it)"
    if node.kind == "sweep" and st.status != "complete":
        reason = f"{'resume' if st.status == 'resume' else 'new'} sweep: {st.detail}"
    waits = [d for d in node.deps if states[d].status != "complete"]
    if node.name in blocked:
        reason += f"; BLOCKED: needs {', '.join(blocked[node.name])} (incomplete, not selected by --only)"
    elif waits and st.status != "complete":
        reason += f"; waits for {', '.join(waits)}"
    return reason


def _summary(chosen: list[str], states: dict[str, NodeState], total: int) -> str:
    counts = {"complete": 0, "resume": 0, "new": 0, "stale": 0}
    for n in chosen:
        counts[states[n].status] += 1
    return f"{len(chosen)} of {total} runs selected: {counts['complete']} complete, {counts['resume']} to resume, {counts['new']} new, {counts['stale']} stale"


def dry_run(study: Study, only: list[str] | None = None, data_root: str | None = None, out: IO[str] = sys.stdout) -> int:
    """Print every expanded run in execution order, its command line and what would happen."""
    chosen = select(study, only)
    states = {name: node_state(study, node) for name, node in study.nodes.items()}
    blocked = missing_deps(study, chosen, states)
    est = f", est. {study.gpu_hours:g} GPU-hours in all" if study.gpu_hours is not None else ""
    print(f"study {study.name!r} ({study.path}) -> {study.out_dir}{est}", file=out)
    print(_summary(chosen, states, len(study.nodes)), file=out)
    width = max(len(n) for n in chosen) if chosen else 0
    for i, name in enumerate(chosen, 1):
        node, st = study.nodes[name], states[name]
        reason = _reason(study, node, st, states, blocked)
        best = None
        if node.kind == "run" and node.spec.best_of is not None and states[node.spec.best_of].status == "complete":
            best = best_params(study, node)
        argv = run_argv(study, node, data_root, best)
        if st.status == "stale":
            argv.insert(len(reprlab_argv(data_root, node.spec.command)), "--rerun")  # what `study run --rerun` starts
        line = display(argv)
        if node.kind == "run" and node.spec.best_of is not None and best is None:
            line += f"  <+ best parameters of {node.spec.best_of}>"
        print(f"{i:3d}. {name:<{width}}  {reason}", file=out)
        print(f"       {line}", file=out)
    return 0


def status(study: Study, only: list[str] | None = None, out: IO[str] | None = None) -> int:
    """One line per expanded run: complete (with its accuracy), stale, to resume, new; starts nothing."""
    out = out or sys.stdout
    chosen = select(study, only)
    states = {name: node_state(study, node) for name, node in study.nodes.items()}
    blocked = missing_deps(study, chosen, states)
    print(f"study {study.name!r} -> {study.out_dir}: {_summary(chosen, states, len(study.nodes))}", file=out)
    width = max(len(n) for n in chosen) if chosen else 0
    for name in chosen:
        print(f"{name:<{width}}  {_reason(study, study.nodes[name], states[name], states, blocked)}", file=out)
    return 0


# ============================================================================================
# The runner
# ============================================================================================


def worker_envs(workers: int) -> list[dict[str, str]]:
    """One environment per worker: its own GPU, or its share of the CPU threads.

    CPU threads go through ``OMP_NUM_THREADS`` rather than ``train.num_threads``: the config of
    a run directory must not depend on how many workers the runner happened to have, or a
    resume with another ``--workers`` would be refused as a different config.
    """
    base = dict(os.environ)
    if workers <= 1:
        return [base]
    import torch

    n_gpu = torch.cuda.device_count()
    if n_gpu:
        visible = base.get("CUDA_VISIBLE_DEVICES")
        ids = [v.strip() for v in visible.split(",") if v.strip()] if visible else [str(i) for i in range(n_gpu)]
        return [{**base, "CUDA_VISIBLE_DEVICES": ids[i % len(ids)]} for i in range(workers)]
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    threads = str(max(1, cores // workers))
    return [{**base, "OMP_NUM_THREADS": threads, "MKL_NUM_THREADS": threads} for _ in range(workers)]


def _fmt_time(seconds: float) -> str:
    m, s = divmod(int(seconds), 60)
    h, m = divmod(m, 60)
    return f"{h}h{m:02d}m" if h else f"{m}m{s:02d}s"


@dataclass
class _Job:
    node: Node
    proc: Any
    slot: int
    started: float
    replica: int = 0


def run_study(
    study: Study,
    workers: int = 1,
    only: list[str] | None = None,
    data_root: str | None = None,
    out: IO[str] = sys.stdout,
    executor: Callable[[list[str], Path, dict[str, str]], Any] | None = None,
    rerun: bool = False,
) -> int:
    """Run every selected run in dependency order; 0 when all are complete, 1 otherwise.

    A failed run does not stop the others: runs that do not depend on it go on; its dependents
    are reported as blocked, and the exit status lists both. ``executor(argv, log, env)``
    starts one run (default: :func:`spawn`; tests inject a fake).

    A *stale* run (its directory holds results or a checkpoint of another config than the study
    would run now) is never skipped as complete: without ``rerun`` the study refuses to start,
    naming them; with ``rerun`` each stale run is started with ``--rerun``, which replaces it.
    """
    if workers < 1:
        raise ReprlabError(f"--workers must be >= 1, got {workers}")
    chosen = select(study, only)
    states = {name: node_state(study, study.nodes[name]) for name in study.nodes}
    stale = [n for n in chosen if states[n].status == "stale"]
    if stale and not rerun:
        more = f", {', '.join(stale[1:4])}{', ...' if len(stale) > 4 else ''}" if len(stale) > 1 else ""
        raise ReprlabError(
            f"study {study.name!r}: {len(stale)} run(s) hold results of another config: {stale[0]} ({states[stale[0]].detail}){more}; "
            "pass --rerun to replace them (or leave them out with --only); `reprlab study status` lists them"
        )
    blocked_by_only = missing_deps(study, chosen, states)
    if blocked_by_only:
        first, deps = next(iter(blocked_by_only.items()))
        raise ReprlabError(
            f"--only: {first!r} needs {', '.join(repr(d) for d in deps)}, which is incomplete and not selected "
            f"({len(blocked_by_only)} run(s) affected); select it too or drop --only (see --dry-run)"
        )
    make_dirs(study.out_dir)
    with DirLock(study.out_dir / ".study.lock", f"study directory {study.out_dir}"):
        from reprlab.io import atomic_write_text

        atomic_write_text(study.out_dir / "study.toml", study.path.read_text())  # what produced this folder
        return _schedule(study, chosen, workers, data_root, out, executor or spawn)


def _schedule(study: Study, chosen: list[str], workers: int, data_root: str | None, out: IO[str], executor: Callable) -> int:
    envs = worker_envs(workers)
    status: dict[str, str] = {n: "pending" for n in chosen}  # pending | running | done | failed | blocked
    reasons: dict[str, str] = {}
    # a sweep may run as several processes sharing one Optuna storage (``parallel``)
    replicas = {n: (study.nodes[n].spec.parallel if study.nodes[n].kind == "sweep" else 1) for n in chosen}
    launched: dict[str, int] = {n: 0 for n in chosen}
    active: dict[str, int] = {n: 0 for n in chosen}
    running: dict[int, _Job] = {}
    total = len(chosen)
    t0 = time.monotonic()

    def say(word: str, name: str, text: str = "") -> None:
        finished = sum(1 for v in status.values() if v in ("done", "failed", "blocked"))
        print(f"{time.strftime('%H:%M:%S')} [{finished}/{total}] {word:<8} {name}{('  ' + text) if text else ''}", file=out, flush=True)

    def dep_status(d: str) -> str:
        return status.get(d, "done")  # not selected: missing_deps() made sure it is complete

    def log_of(node: Node, replica: int) -> Path:
        return study.log_path(node) if replica == 0 else study.run_dir(node) / f"log-{replica + 1}.txt"

    def launch(node: Node, st: NodeState) -> None:
        slot = next(s for s in range(workers) if s not in running)
        replica = launched[node.name]
        argv = run_argv(study, node, data_root, best_params(study, node))
        if st.status == "stale":  # run_study refused stale runs unless --rerun was given
            argv.insert(len(reprlab_argv(data_root, node.spec.command)), "--rerun")
        log = log_of(node, replica)
        running[slot] = _Job(node, executor(argv, log, envs[slot]), slot, time.monotonic(), replica)
        launched[node.name] += 1
        active[node.name] += 1
        status[node.name] = "running"
        gpu = envs[slot].get("CUDA_VISIBLE_DEVICES") if workers > 1 else None
        where = f"worker {slot + 1}" + (f", CUDA_VISIBLE_DEVICES={gpu}" if gpu is not None else "")
        word = {"resume": "resume", "stale": "rerun"}.get(st.status, "start")
        detail = f"{st.detail}; " if st.detail else ""
        say(word, node.name + (f" (process {replica + 1}/{replicas[node.name]})" if replicas[node.name] > 1 else ""), f"{detail}{where}; log {log}")

    def settle(name: str) -> None:
        """All processes of ``name`` have exited: decide done or failed."""
        node = study.nodes[name]
        if name in reasons:
            status[name] = "failed"
            say("FAILED", name, reasons[name])
            return
        st = node_state(study, node)
        if st.status == "complete":
            status[name] = "done"
            say("done", name, f"{st.detail}  ({_fmt_time(time.monotonic() - starts[name])})")
        else:
            status[name] = "failed"
            reasons[name] = f"exited 0 but is not complete ({st.detail or st.status})"
            say("FAILED", name, reasons[name])

    starts: dict[str, float] = {}
    try:
        while True:
            for name in chosen:
                node = study.nodes[name]
                if status[name] == "running":
                    if launched[name] < replicas[name] and len(running) < workers:
                        from reprlab.studies.sweep import sweep_progress

                        prog = sweep_progress(node.spec, study.out_dir, study.storage)
                        if prog.finished + prog.running >= prog.target:
                            launched[name] = replicas[name]  # the processes running now cover what is left
                        elif prog.started:  # only once the first process has created the storage
                            launch(node, NodeState("resume", prog.describe()))
                    if active[name] == 0 and launched[name] == replicas[name]:
                        settle(name)
                    continue
                if status[name] != "pending":
                    continue
                dstates = [dep_status(d) for d in node.deps]
                bad = [d for d, s in zip(node.deps, dstates) if s in ("failed", "blocked")]
                if bad:
                    status[name] = "blocked"
                    reasons[name] = f"needs {', '.join(bad)}"
                    say("blocked", name, reasons[name])
                    continue
                if any(s != "done" for s in dstates) or len(running) == workers:
                    continue
                st = node_state(study, node)
                if st.status == "complete":
                    status[name] = "done"
                    say("skip", name, f"complete ({st.detail})" if st.detail else "complete")
                    continue
                starts[name] = time.monotonic()
                launch(node, st)
            if not running:
                break
            time.sleep(POLL_S)
            for slot, job in list(running.items()):
                code = job.proc.poll()
                if code is None:
                    continue
                del running[slot]
                name = job.node.name
                active[name] -= 1
                if code != 0:
                    log = log_of(job.node, job.replica)
                    reasons.setdefault(name, f"{exit_text(code)}: {last_line(log)}  (log {log})")
                    launched[name] = replicas[name]  # no more processes for a failing node
                elif active[name] == 0 and launched[name] < replicas[name] and node_state(study, job.node).status == "complete":
                    launched[name] = replicas[name]
                if active[name] == 0 and launched[name] == replicas[name]:
                    settle(name)
    except KeyboardInterrupt:
        # children in our process group got the SIGINT too; give them a moment to stop cleanly
        for job in running.values():
            terminate(job.proc, grace_s=30.0)
        raise
    failed = [n for n in chosen if status[n] == "failed"]
    blocked = [n for n in chosen if status[n] == "blocked"]
    done = sum(1 for n in chosen if status[n] == "done")
    print(f"study {study.name!r}: {done} of {total} complete in {_fmt_time(time.monotonic() - t0)}; results under {study.out_dir}", file=out, flush=True)
    if failed or blocked:
        parts = []
        if failed:
            parts.append(f"{len(failed)} failed: " + "; ".join(f"{n} ({reasons[n]})" for n in failed))
        if blocked:
            parts.append(f"{len(blocked)} blocked: {', '.join(blocked)}")
        print(f"reprlab: error: study {study.name!r}: " + " | ".join(parts) + "; fix and re-run the same command to continue", file=sys.stderr, flush=True)
        return 1
    return 0
