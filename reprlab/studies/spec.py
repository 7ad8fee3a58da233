"""Study files: a whole experiment as one TOML file, parsed and expanded into runs.

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

How the expanded runs are executed: :mod:`reprlab.studies.runner`.
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from reprlab.errors import ReprlabError
from reprlab.studies.checks import NAME_RE, check_keys, check_node, check_overrides, did_you_mean, expect, override, read_toml, resolve_config_path, string_list, validate_overrides
from reprlab.studies.process import reprlab_argv
from reprlab.studies.sweep_spec import SweepSpec, parse_sweep

STUDY_KEYS = ("name", "description", "gpu_hours", "out_dir", "overrides", "storage", "methods")
RUN_KEYS = ("name", "command", "config", "overrides", "seeds", "grid", "match", "group", "backbone", "weights", "best_of", "args")
TOP_KEYS = ("study", "run", "sweep")
BUILTIN_DIR = Path(__file__).resolve().parent / "builtin"
REF_RE = re.compile(r"^\{([^{}]+)\}$")


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
    spec: RunSpec | SweepSpec
    axes: dict[str, Any] = field(default_factory=dict)
    deps: list[str] = field(default_factory=list)
    backbone: str | None = None  # resolved --backbone value

    @property
    def best_of(self) -> str | None:
        """The sweep whose best parameters this run takes (and waits for), if any."""
        return self.spec.best_of if isinstance(self.spec, RunSpec) else None

    @property
    def replicas(self) -> int:
        """Processes the runner may start for this node at once (a sweep's ``parallel`` workers)."""
        return self.spec.parallel if isinstance(self.spec, SweepSpec) else 1


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
    #: the resolved config of a ``reprlab`` command line (argv without ``python -m reprlab``),
    #: as the child would record it: given by the command layer, which owns the parsers; the
    #: runner compares it with a run directory's config (stale runs)
    resolve: Callable[[list[str]], Any] | None = None

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


def read_header(path: Path) -> dict:
    """``[study]`` only (for ``study list``): cheap, and valid while configs are still missing."""
    data = read_toml(path)
    head = data.get("study", {})
    expect(head, dict, str(path), "study", "a table")
    check_keys(head, STUDY_KEYS, f"{path} [study]")
    return {"name": head.get("name", Path(path).stem), "description": head.get("description", ""), "gpu_hours": head.get("gpu_hours")}


def load_study(
    path: str | Path,
    out_dir: str | Path | None = None,
    validate: bool = True,
    storage: str | None = None,
    methods: list[str] | None = None,
    resolve: Callable[[list[str]], Any] | None = None,
) -> Study:
    """Parse, expand and check a study file; ``validate`` also builds every run's config.

    ``storage`` (``study run --storage URL``) is the Optuna storage of every sweep of the study,
    e.g. one database shared by several machines; without it a sweep uses its own ``storage``,
    else the study's ``[study] storage``, else ``sqlite:///<out_dir>/<sweep>/optuna.db``
    (:func:`reprlab.studies.sweep.storage_url`)."""
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

    raw_runs = _tables(data, "run", path)
    if methods is not None and not any(_uses_methods(t) for t in raw_runs):
        raise ReprlabError(f"{path}: --methods {','.join(methods)}: study {name!r} has no method axis (no [[run]] grid or match uses {METHODS_TOKEN!r}), so it would be ignored")
    run_tables = [_fill_methods(t, _study_methods(head, methods, path)) for t in raw_runs]
    runs = [_parse_run(t, i, path) for i, t in enumerate(run_tables)]
    sweep_tables = _tables(data, "sweep", path)
    # sweeps rank before runs among ready nodes: they are the long pole that final runs wait for
    sweeps = [parse_sweep(t, f"{path} [[sweep]] {t.get('name', f'#{i + 1}')!r}", index=i - len(sweep_tables)) for i, t in enumerate(sweep_tables)]
    if study_storage:  # the study's storage for the sweeps that name none themselves
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
    study = Study(name=name, description=description, gpu_hours=gpu_hours, out_dir=out, overrides=study_overrides, path=path, nodes=order, storage=storage, resolve=resolve)
    if validate:
        for node in study.nodes.values():
            where = f"{path}: {node.kind} {node.name!r}"
            if node.kind == "run":
                validate_overrides(instance_config(node.spec, node.axes), [*study.overrides, *_config_overrides(node)], where)
            else:
                node.spec.validate([*study.overrides], where)
    return study


#: a grid or match value list written as this string is the study's method axis
METHODS_TOKEN = "{methods}"


def _study_methods(head: dict, methods: list[str] | None, path: Path) -> list[str] | None:
    """The study's self-supervised methods: ``study run --methods`` (``all``: every method whose
    ``[method]`` dataclass is an ``SSLConfig``), else ``[study] methods``; None when the study has
    no method axis. Read from the torch-free config registry."""
    from reprlab.methods.configs import SSLConfig
    from reprlab.registry import METHOD_CONFIGS, METHODS

    chosen = methods if methods is not None else head.get("methods")
    if chosen is None:
        return None
    if chosen == ["all"] or chosen == "all":
        return [n for n in METHOD_CONFIGS.names() if issubclass(METHOD_CONFIGS.get(n), SSLConfig)]
    expect(chosen, list, f"{path} [study]", "methods", "a list of method names")
    for m in chosen:
        if m not in METHOD_CONFIGS and m not in METHODS:
            raise ReprlabError(f"{path}: method {m!r} is not registered{METHOD_CONFIGS.suggest(m)} (known: {', '.join(METHOD_CONFIGS.names())})")
    if len(set(chosen)) != len(chosen) or not chosen:
        raise ReprlabError(f"{path}: methods must be a non-empty list of distinct names, got {chosen!r}")
    return list(chosen)


def _uses_methods(t: dict) -> bool:
    """Whether a [[run]] table's grid or match is the study's method axis."""
    return any(isinstance(t.get(key), dict) and METHODS_TOKEN in t[key].values() for key in ("grid", "match"))


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
