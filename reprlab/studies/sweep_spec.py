"""The definition of a sweep: a ``[sweep]`` table (a sweep file) or a ``[[sweep]]`` table (a
study), checked into a :class:`SweepSpec` with its search space. The format is documented in
:mod:`reprlab.studies.sweep`, which runs it; this module needs neither Optuna nor torch."""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from reprlab.errors import ReprlabError
from reprlab.studies.checks import check_keys, check_node, check_overrides, did_you_mean, expect, override, resolve_config_path, string_list, validate_overrides

SWEEP_KEYS = ("name", "command", "config", "overrides", "args", "sampler", "trials", "metric", "pruner", "seed", "space", "storage", "parallel")
SAMPLERS = ("tpe", "grid", "random")
PRUNERS = ("median", "none")
PARAM_KEYS = ("low", "high", "log", "step", "steps", "choices")
PRUNER_KEYS = ("name", "startup_trials", "warmup_epochs")


# ============================================================================================
# The sweep definition
# ============================================================================================


@dataclass(frozen=True)
class Param:
    """One dimension of the search space."""

    key: str
    choices: tuple | None = None
    low: float | int | None = None
    high: float | int | None = None
    log: bool = False
    step: float | int | None = None
    steps: int | None = None  # grid sampler: number of points between low and high

    @property
    def is_int(self) -> bool:
        return all(isinstance(v, int) for v in (self.low, self.high)) and (self.step is None or isinstance(self.step, int))

    def suggest(self, trial: Any) -> Any:
        if self.choices is not None:
            return trial.suggest_categorical(self.key, list(self.choices))
        if self.is_int:
            return trial.suggest_int(self.key, self.low, self.high, step=self.step or 1, log=self.log)
        return trial.suggest_float(self.key, float(self.low), float(self.high), step=self.step, log=self.log)

    def grid_values(self) -> list:
        if self.choices is not None:
            return list(self.choices)
        n = self.steps
        if self.log:
            vals = [self.low * (self.high / self.low) ** (i / (n - 1)) for i in range(n)]
        else:
            vals = [self.low + (self.high - self.low) * i / (n - 1) for i in range(n)]
        # readable values (6 significant digits), with the ends exact so they stay in range
        vals = [self.low, *[float(f"{v:.6g}") for v in vals[1:-1]], self.high]
        return [int(round(v)) for v in vals] if self.is_int else [float(v) for v in vals]

    def example(self) -> Any:
        return self.choices[0] if self.choices is not None else self.low


@dataclass(frozen=True)
class SweepSpec:
    name: str
    command: str
    config: str
    overrides: list[str] = field(default_factory=list)
    args: list[str] = field(default_factory=list)
    sampler: str = "tpe"
    trials: int = 20
    metric: str = "val/acc1"
    pruner: str = "median"
    pruner_startup_trials: int = 5
    pruner_warmup_epochs: int = 0
    seed: int = 0
    space: dict[str, Param] = field(default_factory=dict)
    storage: str | None = None
    parallel: int = 1  # in a study: how many `reprlab sweep` processes (workers) share this search
    index: int = 0

    @property
    def grid_size(self) -> int:
        return math.prod(len(p.grid_values()) for p in self.space.values())

    def target(self, trials: int | None = None) -> int:
        """Total number of trials the sweep runs: a grid, or a space of choices only, has no more
        points than its size (no point runs twice, so more trials could never finish)."""
        n = trials if trials is not None else self.trials
        finite = self.sampler == "grid" or all(p.choices is not None for p in self.space.values())
        return min(n, self.grid_size) if finite else n

    @property
    def metric_key(self) -> str:
        """The key of result.json's ``val`` block holding the metric (``val/acc1`` -> ``acc1``,
        ``knn/acc1`` -> ``knn_acc1``)."""
        from reprlab.result import result_key

        return result_key(self.metric)

    def validate(self, base_overrides: list[str], where: str) -> None:
        """Build one trial's config now, so a typo in a key fails before any trial starts."""
        validate_overrides(self.config, [*base_overrides, *self.overrides, *(override(k, p.example()) for k, p in self.space.items())], where)

    def definition(self, base_overrides: list[str]) -> dict:
        """What makes trials comparable; a storage holding another definition is refused."""
        # through JSON, so it compares equal to the copy read back from the storage (tuples -> lists)
        return json.loads(json.dumps({
            "command": self.command,
            "config": Path(self.config).name,
            "overrides": [*base_overrides, *self.overrides],
            "args": self.args,
            "metric": self.metric,
            "space": {k: {f: v for f, v in asdict(p).items() if v is not None and f != "key"} for k, p in self.space.items()},
        }))


def _parse_param(key: str, raw: Any, where: str) -> Param:
    w = f"{where} space {key!r}"
    if isinstance(raw, list):
        raw = {"choices": raw}
    expect(raw, dict, where, f"space.{key}", "a table like { low = 1e-4, high = 1e-2, log = true } or { choices = [...] }")
    check_keys(raw, PARAM_KEYS, w)
    if "choices" in raw:
        extra = [k for k in raw if k != "choices"]
        if extra:
            raise ReprlabError(f"{w}: 'choices' cannot be combined with {extra[0]!r}")
        choices = raw["choices"]
        if not isinstance(choices, list) or not choices:
            raise ReprlabError(f"{w}: choices must be a non-empty list, got {choices!r}")
        for c in choices:
            if not isinstance(c, (str, int, float, bool)):
                raise ReprlabError(f"{w}: choice {c!r} must be a number, string or boolean")
        return Param(key=key, choices=tuple(choices))
    for req in ("low", "high"):
        if req not in raw:
            raise ReprlabError(f"{w}: missing {req!r} (or give choices = [...])")
        expect(raw[req], (int, float), w, req, "a number")
    low, high = raw["low"], raw["high"]
    if not low < high:
        raise ReprlabError(f"{w}: expected low < high, got low={low!r}, high={high!r}")
    log = expect(raw.get("log", False), bool, w, "log", "true or false")
    if log and low <= 0:
        raise ReprlabError(f"{w}: log = true needs low > 0, got {low!r}")
    step = raw.get("step")
    if step is not None:
        expect(step, (int, float), w, "step", "a positive number")
        if step <= 0 or log:
            raise ReprlabError(f"{w}: step must be > 0 and cannot be combined with log = true")
    steps = raw.get("steps")
    if steps is not None and (not isinstance(steps, int) or isinstance(steps, bool) or steps < 2):
        raise ReprlabError(f"{w}: steps must be an integer >= 2 (grid points from low to high), got {steps!r}")
    return Param(key=key, low=low, high=high, log=log, step=step, steps=steps)


def parse_sweep(t: Any, where: str, index: int = 0) -> SweepSpec:
    """Check one sweep table (``[sweep]`` of a sweep file or ``[[sweep]]`` of a study)."""
    expect(t, dict, where, "sweep", "a table")
    name, command = check_node(t, SWEEP_KEYS, ("name", "command", "config", "space"), where)
    sampler = expect(t.get("sampler", "tpe"), str, where, "sampler", "a string")
    if sampler not in SAMPLERS:
        raise ReprlabError(f"{where}: sampler {sampler!r} is not one of {', '.join(SAMPLERS)}{did_you_mean(sampler, SAMPLERS)}")
    trials = expect(t.get("trials", 20), int, where, "trials", "a positive integer")
    if trials < 1:
        raise ReprlabError(f"{where}: trials must be >= 1, got {trials}")
    metric = expect(t.get("metric", "val/acc1"), str, where, "metric", "a string like 'val/acc1'")
    if metric.count("/") != 1 or not all(metric.split("/")):
        raise ReprlabError(f"{where}: metric {metric!r} must look like 'val/acc1' (a metrics.jsonl key)")
    pruner = t.get("pruner", "median")
    pruner_table = {"name": pruner} if isinstance(pruner, str) else expect(pruner, dict, where, "pruner", "'median', 'none' or a table")
    check_keys(pruner_table, PRUNER_KEYS, f"{where} pruner")
    pname = expect(pruner_table.get("name", "median"), str, where, "pruner.name", "a string")
    if pname not in PRUNERS:
        raise ReprlabError(f"{where}: pruner {pname!r} is not one of {', '.join(PRUNERS)}{did_you_mean(pname, PRUNERS)}")
    startup = expect(pruner_table.get("startup_trials", 5), int, where, "pruner.startup_trials", "an integer >= 0")
    warmup = expect(pruner_table.get("warmup_epochs", 0), int, where, "pruner.warmup_epochs", "an integer >= 0")
    space_raw = expect(t["space"], dict, where, "space", "a table of parameters")
    if not space_raw:
        raise ReprlabError(f"{where}: space is empty; name at least one parameter")
    space = {k: _parse_param(k, v, where) for k, v in space_raw.items()}
    if sampler == "grid":
        for p in space.values():
            if p.choices is None and p.steps is None:
                raise ReprlabError(f"{where}: the grid sampler needs choices or steps for {p.key!r}")
    storage = t.get("storage")
    if storage is not None:
        expect(storage, str, where, "storage", "an Optuna storage URL")
    parallel = expect(t.get("parallel", 1), int, where, "parallel", "a positive integer")
    if parallel < 1:
        raise ReprlabError(f"{where}: parallel must be >= 1, got {parallel}")
    return SweepSpec(
        name=name,
        command=command,
        config=resolve_config_path(expect(t["config"], str, where, "config", "a string"), where),
        overrides=check_overrides(string_list(t.get("overrides", []), where, "overrides"), where, "overrides"),
        args=string_list(t.get("args", []), where, "args"),
        sampler=sampler,
        trials=trials,
        metric=metric,
        pruner=pname,
        pruner_startup_trials=startup,
        pruner_warmup_epochs=warmup,
        seed=expect(t.get("seed", 0), int, where, "seed", "an integer"),
        space=space,
        storage=storage,
        parallel=parallel,
        index=index,
    )
