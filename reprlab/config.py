"""Typed configuration: dataclasses with a comment on every default, TOML files, dotted overrides.

A run is described by one :class:`Config`. It is built from the dataclass defaults, then a TOML
file (``--config``), then ``key=value`` overrides from the command line (``optim.lr=0.1``), in
that order. Every key is checked against the dataclasses: an unknown key or a value of the wrong
type is rejected with a one-line message that names the key and suggests the closest valid one.
The fully resolved config is written into every run directory (``config.toml``).

The one-line comment after each default is the documentation: ``reprlab config`` prints it.
"""

from __future__ import annotations

import dataclasses
import difflib
import inspect
import json
import math
import re
import tomllib
import types
import typing
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

from reprlab.augment.configs import MixConfig, ViewConfig, ViewRules  # dataclasses only: the config loads without torch
from reprlab.errors import ReprlabError
from reprlab.io import folder_name_problem
from reprlab.registry import METHOD_CONFIGS, METHODS
from reprlab.schedules import SHAPES, ScalarSchedule, Scheduled, all_values


@dataclass
class RunConfig:
    name: str = ""  # run directory name under out_dir; empty = derived from the config file and a hash
    out_dir: str = "runs"  # parent folder of run directories
    group: str = ""  # label used by reports to aggregate seeds; empty = the run name without the seed
    family: str = ""  # "cnn" | "vit" for the CNN-vs-ViT comparison; empty = taken from the model registry
    sweep: str = ""  # name of the sweep this run is a trial of (set by `reprlab sweep`)
    sweep_keys: list[str] = field(default_factory=list)  # config keys the sweep varies; reported with their values


@dataclass
class DataConfig:
    dataset: str = "cifar100"  # training dataset (registry key: cifar100, tiny-imagenet, image-folder)
    root: str = ""  # data root; empty = --data-root, else $REPRLAB_DATA, else ./data
    folder: str = ""  # image-folder dataset only: path of the folder (class sub-folders or flat)
    cache_dir: str = ""  # writable cache for extracted/decoded data; empty = $REPRLAB_CACHE or ~/.cache/reprlab
    download: bool = True  # download CIFAR-100 when it is not found under the data root
    val_size: int = 5000  # images carved from train (class-stratified) for model selection
    split_seed: int = 0  # seed of the train/val split (fixed across runs so all runs select on the same images)
    fraction: float = 1.0  # class-stratified nested subset of the training split (0 < f <= 1)
    resolution: int = 32  # side length images are decoded/held at (Tiny ImageNet native: 64)
    labels: str = "fine"  # CIFAR-100 label set: "fine" (100 classes) or "coarse" (20 superclasses)


@dataclass
class ModelConfig:
    name: str = "resnet18"  # registry key (see `reprlab params --list`)
    kwargs: dict[str, Any] = field(default_factory=dict)  # architecture keyword arguments, e.g. width=32
    channels_last: bool = True  # NHWC memory format: faster convolutions on GPU and CPU
    compile: bool = False  # wrap the model in torch.compile


@dataclass
class OptimConfig:
    name: str = "sgd"  # sgd | adamw | lars
    lr: float = 0.1  # peak learning rate at batch_size (not rescaled)
    momentum: float = 0.9  # SGD/LARS momentum
    lars_eta: float = 0.001  # LARS trust coefficient (SimCLR: 0.001; solo-learn's CIFAR recipes: 0.02)
    lars_clip_lr: bool = False  # LARS caps each tensor's step at min(local rate, lr) instead of scaling (solo-learn's CIFAR recipes: true)
    nesterov: bool = True  # Nesterov momentum for SGD
    betas: tuple[float, float] = (0.9, 0.999)  # AdamW betas
    weight_decay: Scheduled = 5e-4  # L2 / decoupled weight decay; a number or a schedule table (DINO: {start = 0.04, end = 0.4})
    no_decay_norm_bias: bool = True  # exclude norm weights and biases from weight decay
    grad_clip: float = 0.0  # clip the global gradient norm to this value; 0 = off
    backbone_lr_mult: float = 0.1  # full fine-tuning: learning-rate multiplier of the pretrained backbone (head: 1x)


@dataclass
class ScheduleConfig:
    name: str = "multistep"  # multistep | cosine | constant (all functions of the global step)
    warmup_epochs: float = 0.0  # linear warm-up from 0 over this many epochs
    milestones: list[float] = field(default_factory=lambda: [60.0, 120.0, 160.0])  # multistep: epochs at which lr *= gamma
    gamma: float = 0.2  # multistep decay factor
    min_lr_ratio: float = 0.0  # cosine: final lr as a fraction of the peak


@dataclass
class AugConfig:
    crop_padding: int = 4  # random crop after zero padding by this many pixels; 0 = no crop
    flip: bool = True  # random horizontal flip
    rand_augment: bool = False  # per-sample RandAugment on the uint8 batch
    rand_augment_ops: int = 2  # RandAugment: ops per image
    rand_augment_magnitude: int = 9  # RandAugment: magnitude (0-30 scale)
    random_erasing: float = 0.0  # probability of random erasing per sample
    mix: MixConfig = field(default_factory=MixConfig)  # CutMix / Mixup / label smoothing on the batch


@dataclass
class MethodConfig:
    """The ``[method]`` section. Each method declares its own subclass, registered under its name
    (``reprlab/methods/configs.py``); ``[method]`` is checked against the chosen one."""

    name: str = "supervised"  # registry key: supervised | simclr | byol | ... (`reprlab config method --method NAME`)

    def validate(self) -> None:
        """Range checks beyond types; raise ReprlabError naming the key."""

    @classmethod
    def default_views(cls) -> dict[str, ViewConfig]:
        """The method's view pipelines by name (``[views.NAME]``); none for supervised methods."""
        return {}

    @classmethod
    def view_rules(cls) -> ViewRules:
        """The crop count it can use from each view (checked on load; `reprlab config views`)."""
        return ViewRules(counts={})


@dataclass
class TrainConfig:
    epochs: int = 200  # passes over the training split
    batch_size: int = 128  # images per optimiser step
    eval_batch_size: int = 1000  # images per evaluation batch
    seed: int = 0  # seed of initialisation, data order and augmentation
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    precision: str = "auto"  # auto (bf16 on GPU and on CPUs with native bf16, else fp32) | fp32 | bf16 | fp16
    deterministic: bool = False  # deterministic kernels (exact resume on CPU; slower on GPU)
    log_every_steps: int = 50  # write train/loss, train/acc1 and lr every this many steps
    checkpoint_every_steps: int = 0  # also checkpoint mid-epoch (rounded up to a logging step); 0 = per epoch only
    max_steps: int = 0  # stop after this many steps (short budgets, tests); 0 = run all epochs
    progress: bool = True  # show a progress bar with throughput and ETA
    eval_test: bool = True  # evaluate the test split once at the end (final and best-on-val checkpoints)
    num_threads: int = 0  # CPU threads for torch; 0 = torch's default
    sync_bn: str = "auto"  # data-parallel runs: BatchNorm statistics over the global batch: auto (on for self-supervised methods) | on | off


@dataclass
class EvalConfig:
    backbone: str = ""  # probe/finetune: checkpoint path | imagenet-supervised | random-init
    weights: str = ""  # imagenet-supervised: local state dict instead of the torchvision download
    resolution: int = 0  # input side length fed to the backbone (images are resized on the device); 0 = the backbone's own
    protocol: str = "cached"  # probe: cached (features once + logistic regression) | augment (SGD on crops, frozen backbone)
    l2_grid: list[float] = field(default_factory=lambda: [0.0, 1e-6, 1e-5, 1e-4, 1e-3, 1e-2])  # cached probe: L2 strengths tried, chosen on val
    max_iter: int = 300  # cached probe: L-BFGS iterations per L2 strength
    finetune_mode: str = "full"  # finetune: full (all layers) | head (only the new linear head)


@dataclass
class Config:
    run: RunConfig = field(default_factory=RunConfig)  # naming and output location
    data: DataConfig = field(default_factory=DataConfig)  # dataset, splits and caching
    model: ModelConfig = field(default_factory=ModelConfig)  # architecture
    method: MethodConfig = field(default_factory=MethodConfig)  # what turns a batch into a loss
    optim: OptimConfig = field(default_factory=OptimConfig)  # optimiser
    schedule: ScheduleConfig = field(default_factory=ScheduleConfig)  # learning-rate schedule
    aug: AugConfig = field(default_factory=AugConfig)  # supervised augmentation recipe
    views: dict[str, ViewConfig] = field(default_factory=dict)  # self-supervised view pipelines, by name; defaults from the method
    eval: EvalConfig = field(default_factory=EvalConfig)  # linear protocol and fine-tuning
    train: TrainConfig = field(default_factory=TrainConfig)  # loop, precision, logging


# --------------------------------------------------------------------------------------------
# Building and checking


def load_config(path: str | Path | None = None, overrides: list[str] | tuple[str, ...] = (), base: Config | None = None) -> Config:
    """Defaults <- TOML file <- ``key=value`` overrides, every key and type checked."""
    cfg = base if base is not None else Config()
    layers: list[tuple[dict, str]] = []
    if path:
        p = Path(path)
        if not p.is_file():
            raise ReprlabError(f"config file {p} not found")
        try:
            layers.append((tomllib.loads(p.read_text()), str(p)))
        except tomllib.TOMLDecodeError as e:
            raise ReprlabError(f"config file {p}: invalid TOML ({e})") from None
    for item in overrides:
        key, sep, raw = item.partition("=")
        if not sep or not key:
            raise ReprlabError(f"override {item!r}: expected key=value, e.g. optim.lr=0.1")
        layer: dict = {}
        _set_nested(layer, key.strip(), _parse_value(raw.strip()))
        layers.append((layer, "command line"))
    # The method decides what [method] and [views] may hold: find it first (the last layer that
    # names it wins), install its defaults, then merge every layer in order.
    name = cfg.method.name
    for data, source in layers:
        m = _canonical(data).get("method")
        if isinstance(m, dict) and "name" in m:
            name = m["name"]
            if not isinstance(name, str):
                raise ReprlabError(f"config key 'method.name' ({source}): expected a string, got {name!r}")
    use_method(cfg, name)
    for data, source in layers:
        _merge(cfg, data, prefix="", source=source)
    validate(cfg)
    return cfg


def method_config_class(name: str) -> type[MethodConfig]:
    """The ``[method]`` dataclass of method ``name``: from the torch-free
    :data:`reprlab.registry.METHOD_CONFIGS`; a method whose dataclass is not there is found
    through its class (which imports its module, and torch)."""
    if name in METHOD_CONFIGS:
        return METHOD_CONFIGS.get(name)
    return METHODS.get(name).Config


def use_method(cfg: "Config", name: str) -> None:
    """Install the defaults of method ``name`` ([method] and [views]) unless already in place."""
    cls = method_config_class(name)
    if type(cfg.method) is not cls or cfg.method.name != name:
        cfg.method = cls(name=name)
        cfg.views = cls.default_views()


def _parse_value(raw: str) -> Any:
    # TOML syntax for values (numbers, booleans, lists, quoted strings); anything else is a string.
    try:
        return tomllib.loads(f"v = {raw}")["v"]
    except tomllib.TOMLDecodeError:
        return raw


#: Short spellings accepted on the command line and in files, mapped to the canonical keys.
ALIASES = {
    "aug.cutmix.prob": "aug.mix.cutmix_prob",
    "aug.cutmix.alpha": "aug.mix.cutmix_alpha",
    "aug.mixup.prob": "aug.mix.mixup_prob",
    "aug.mixup.alpha": "aug.mix.mixup_alpha",
    "aug.label_smoothing": "aug.mix.label_smoothing",
}


def canonical_key(key: str) -> str:
    """The full spelling of a dotted key: aliases resolved, and ``model.X`` for an architecture
    argument X becomes ``model.kwargs.X`` (``model.depth=9`` is ``model.kwargs.depth=9``;
    validate() checks such arguments against the model's factory)."""
    key = ALIASES.get(key, key)
    parts = key.split(".")
    if parts[0] == "model" and len(parts) == 2 and parts[1] not in {f.name for f in dataclasses.fields(ModelConfig)}:
        return f"model.kwargs.{parts[1]}"
    return key


def _canonical(data: dict) -> dict:
    out: dict = {}
    for key, value in flatten(data).items():
        _set_nested(out, canonical_key(key), value)
    return out


def _set_nested(d: dict, dotted: str, value: Any) -> None:
    parts = dotted.split(".")
    for p in parts[:-1]:
        d = d.setdefault(p, {})
    d[parts[-1]] = value


def _merge(obj: Any, data: dict, prefix: str, source: str) -> None:
    if not prefix:
        data = _canonical(data)
    hints = _hints(type(obj))
    names = [f.name for f in dataclasses.fields(obj)]
    for key, value in data.items():
        full = f"{prefix}{key}"
        if key not in names:
            close = suggest_field(key, type(obj))
            hint = f"; did you mean {prefix + close!r}?" if close else ""
            what = f" for method {obj.name!r}" if isinstance(obj, MethodConfig) else ""
            raise ReprlabError(f"unknown config key {full!r}{what} ({source}){hint}")
        if isinstance(obj, MethodConfig) and key == "name":
            continue  # resolved before merging (use_method): the last layer that names it wins
        current = getattr(obj, key)
        if isinstance(obj, Config) and key == "views":
            _merge_views(current, value, source, obj.method.name)
        elif dataclasses.is_dataclass(current) and not isinstance(current, ScalarSchedule):
            if not isinstance(value, dict):
                raise ReprlabError(f"config key {full!r} ({source}) is a section; set its fields, e.g. {full}.{dataclasses.fields(current)[0].name}=...")
            _merge(current, value, f"{full}.", source)
        else:
            if isinstance(value, bool) and full in SWITCHES:
                value = "on" if value else "off"  # train.sync_bn=true is train.sync_bn="on"
            setattr(obj, key, _coerce(value, hints[key], full, source, current))


def _merge_views(views: dict, data: Any, source: str, method: str) -> None:
    """``[views]``: a key of ViewConfig sets that field on every view of the method;
    ``[views.NAME]`` sets it on one view (the method names its views)."""
    if not isinstance(data, dict):
        raise ReprlabError(f"config key 'views' ({source}) is a section; set views.FIELD or views.NAME.FIELD")
    fields = [f.name for f in dataclasses.fields(ViewConfig)]
    for key, value in data.items():
        if key in views:
            if not isinstance(value, dict):
                raise ReprlabError(f"config key 'views.{key}' ({source}) is a view; set its fields, e.g. views.{key}.crop_scale=...")
            _merge(views[key], value, f"views.{key}.", source)
        elif key in fields:
            if not views:
                raise ReprlabError(f"config key 'views.{key}' ({source}): method {method!r} has no view pipelines")
            for v in views.values():
                _merge(v, {key: value}, "views.", source)
        else:
            close = difflib.get_close_matches(key, list(views) + fields, n=1, cutoff=0.5)
            hint = f"; did you mean 'views.{close[0]}'?" if close else ""
            known = f"views of {method!r}: {', '.join(views)}; " if views else ""
            raise ReprlabError(f"unknown config key 'views.{key}' ({source}){hint} ({known}fields: {', '.join(fields)})")


def _words(text: str) -> set[str]:
    return {w for w in re.split(r"[^a-z0-9]+", text.lower()) if len(w) > 1}


def suggest_field(key: str, cls: type) -> str | None:
    """The field of dataclass ``cls`` a mistyped ``key`` most likely meant.

    Spelling alone misleads (``learning_rate`` is closer to ``name`` than to ``lr``), so a field
    also scores by its initials (``lr``, ``wd``) and by the words of its documentation comment."""
    names = [f.name for f in dataclasses.fields(cls)]
    comments = field_comments(cls)
    words = _words(key.replace("_", " "))
    initials = "".join(w[0] for w in key.split("_") if w)
    best, best_score = None, 0.0
    for n in names:
        score = difflib.SequenceMatcher(None, key, n).ratio()
        if (len(initials) > 1 and n == initials) or (len(key) > 1 and key == "".join(w[0] for w in n.split("_"))):
            score = max(score, 0.95)  # lr for learning_rate, wd for weight_decay
        if words:
            doc = _words(n.replace("_", " ")) | _words(comments.get(n, ""))
            hit = sum(any(d.startswith(w[:5]) or w.startswith(d[:5]) for d in doc if len(d) > 2) for w in words) / len(words)
            score = max(score, 0.5 + 0.4 * hit if hit == 1.0 else 0.3 * hit + 0.4 * score)
        if score > best_score:
            best, best_score = n, score
    return best if best_score >= 0.5 else None


def _coerce(value: Any, tp: Any, key: str, source: str, current: Any) -> Any:
    origin = typing.get_origin(tp)
    if ScalarSchedule in typing.get_args(tp) or tp is ScalarSchedule:
        if isinstance(value, ScalarSchedule):
            return value
        if isinstance(value, dict):
            sched = dataclasses.replace(current) if isinstance(current, ScalarSchedule) else ScalarSchedule(start=float(current or 0.0))
            _merge(sched, value, f"{key}.", source)
            if sched.shape not in SHAPES:
                raise ReprlabError(f"config key '{key}.shape' ({source}): {sched.shape!r} is not one of {', '.join(SHAPES)}")
            if sched.warmup_epochs < 0:
                raise ReprlabError(f"config key '{key}.warmup_epochs' ({source}): expected >= 0, got {sched.warmup_epochs!r}")
            return sched
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ReprlabError(f"config key {key!r} ({source}): expected a number or a schedule table {{start, end, shape, warmup_epochs, warmup_from}}, got {value!r}")
        return _coerce(value, float, key, source, current)
    if origin is dict:
        if not isinstance(value, dict):
            raise ReprlabError(f"config key {key!r} ({source}): expected a table, got {value!r}")
        return {**(current or {}), **value}  # dict fields merge, so model.kwargs.width=32 adds one key
    if origin in (list, tuple):
        if not isinstance(value, (list, tuple)):
            raise ReprlabError(f"config key {key!r} ({source}): expected a list, got {value!r}")
        args = typing.get_args(tp)
        if origin is tuple and len(args) != len(value) and Ellipsis not in args:
            raise ReprlabError(f"config key {key!r} ({source}): expected {len(args)} values, got {list(value)!r}")
        elem = args[0]
        out = [_coerce(v, elem, key, source, None) for v in value]
        return tuple(out) if origin is tuple else out
    if origin in (typing.Union, types.UnionType):
        for arg in typing.get_args(tp):
            if arg is type(None) and value is None:
                return None
        return _coerce(value, [a for a in typing.get_args(tp) if a is not type(None)][0], key, source, current)
    if tp is Any:
        return value
    if tp is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if tp is float and isinstance(value, float) and not math.isfinite(value):
        raise ReprlabError(f"config key {key!r} ({source}): expected a finite number, got {value!r}")
    if tp is bool and not isinstance(value, bool):
        raise ReprlabError(f"config key {key!r} ({source}): expected true or false, got {value!r}")
    if tp in (int, float) and (isinstance(value, bool) or not isinstance(value, tp)):
        raise ReprlabError(f"config key {key!r} ({source}): expected {tp.__name__}, got {value!r}")
    if tp is str and not isinstance(value, str):
        expected = f"one of {', '.join(CHOICES[key])}" if key in CHOICES else "a string"
        raise ReprlabError(f"config key {key!r} ({source}): expected {expected}, got {value!r}")
    return value


@cache
def _hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


CHOICES = {
    "optim.name": ("sgd", "adamw", "lars"),
    "schedule.name": ("multistep", "cosine", "constant"),
    "train.precision": ("auto", "fp32", "bf16", "fp16"),
    "train.sync_bn": ("auto", "on", "off"),
    "eval.protocol": ("cached", "augment"),
    "eval.finetune_mode": ("full", "head"),
    "data.labels": ("fine", "coarse"),
}

#: keys of CHOICES with on/off values, which also take a boolean (true = "on")
SWITCHES = ("train.sync_bn",)

def validate(cfg: Config) -> None:
    """Value checks that types alone cannot express."""
    for key, allowed in CHOICES.items():
        value = get_key(cfg, key)
        if value not in allowed:
            close = difflib.get_close_matches(str(value), allowed, n=1)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            raise ReprlabError(f"config key {key!r}: {value!r} is not one of {', '.join(allowed)}{hint}")
    if cfg.run.name and (why := folder_name_problem(cfg.run.name)):  # one folder under run.out_dir, where studies and reports look
        raise ReprlabError(f"config key 'run.name': {cfg.run.name!r} is not a folder name ({why}); expected one like simclr-s0, or empty for one derived from the config")
    positive = ["train.epochs", "train.batch_size", "train.eval_batch_size", "train.log_every_steps", "data.resolution"]
    for key in positive:
        if get_key(cfg, key) <= 0:
            raise ReprlabError(f"config key {key!r}: expected a positive value, got {get_key(cfg, key)!r}")
    if not 0.0 < cfg.data.fraction <= 1.0:
        raise ReprlabError(f"config key 'data.fraction': expected 0 < fraction <= 1, got {cfg.data.fraction!r}")
    if cfg.optim.lr < 0 or min(all_values(cfg.optim.weight_decay)) < 0 or cfg.optim.lars_eta <= 0:
        raise ReprlabError(f"config keys 'optim.lr' and 'optim.weight_decay' must be >= 0 and 'optim.lars_eta' > 0 (got {cfg.optim.lr!r}, {cfg.optim.weight_decay!r}, {cfg.optim.lars_eta!r})")
    if cfg.data.val_size <= 0:
        raise ReprlabError(f"config key 'data.val_size': expected > 0 (model selection needs a validation split), got {cfg.data.val_size}")
    checks = [
        ("train.max_steps", cfg.train.max_steps >= 0, ">= 0"),
        ("train.checkpoint_every_steps", cfg.train.checkpoint_every_steps >= 0, ">= 0"),
        ("eval.max_iter", cfg.eval.max_iter >= 1, ">= 1"),
        ("eval.l2_grid", bool(cfg.eval.l2_grid) and min(cfg.eval.l2_grid) >= 0, "a non-empty list of values >= 0"),
        ("eval.resolution", cfg.eval.resolution >= 0, ">= 0"),
        ("optim.grad_clip", cfg.optim.grad_clip >= 0, ">= 0"),
    ]
    for key, ok, expected in checks:
        if not ok:
            raise ReprlabError(f"config key {key!r}: expected {expected}, got {get_key(cfg, key)!r}")
    for name, v in cfg.views.items():
        try:
            v.validate()
        except ReprlabError as e:
            raise ReprlabError(f"views.{name}: {e}") from None
    type(cfg.method).view_rules().check(cfg.method.name, cfg.views)  # a crop count the method cannot use would change its objective
    cfg.method.validate()
    cfg.aug.mix.validate()
    if cfg.model.kwargs:
        _check_model_kwargs(cfg.model.name, cfg.model.kwargs)


def _check_model_kwargs(name: str, kwargs: dict) -> None:
    """Architecture arguments must exist in the model's factory: a typo fails at load time, with
    a suggestion, not hours later when the model is built (or never, for a probe)."""
    from reprlab.models.registry import factory_arguments

    valid, any_keyword = factory_arguments(name)
    if any_keyword:
        return
    fields = [f.name for f in dataclasses.fields(ModelConfig)]
    for key in kwargs:
        if key not in valid:
            close = difflib.get_close_matches(key, valid + fields, n=1)
            hint = f"; did you mean '{'model.' if close[0] in fields else 'model.kwargs.'}{close[0]}'?" if close else ""
            raise ReprlabError(f"config key 'model.kwargs.{key}': model {name!r} takes no argument {key!r}{hint} (it takes: {', '.join(valid)})")


def get_key(cfg: Any, dotted: str) -> Any:
    obj = cfg
    for part in canonical_key(dotted).split("."):
        obj = obj[part] if isinstance(obj, dict) else getattr(obj, part)
    return obj


# --------------------------------------------------------------------------------------------
# Writing and documenting


def to_dict(cfg: Any) -> dict:
    """Plain nested dict (tuples become lists) suitable for TOML/JSON."""

    def conv(v: Any) -> Any:
        if dataclasses.is_dataclass(v):  # None (an unset optional) is left out: TOML has no null
            return {f.name: conv(getattr(v, f.name)) for f in dataclasses.fields(v) if getattr(v, f.name) is not None}
        if isinstance(v, (list, tuple)):
            return [conv(x) for x in v]
        if isinstance(v, dict):
            return {k: conv(x) for k, x in v.items()}
        return v

    return conv(cfg)


def from_dict(data: dict) -> Config:
    cfg = Config()
    use_method(cfg, (data.get("method") or {}).get("name", cfg.method.name))
    _merge(cfg, data, prefix="", source="saved config")
    return cfg


def flatten(d: dict, prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in d.items():
        if isinstance(v, dict) and v:
            out.update(flatten(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def toml_value(v: Any) -> str:
    """``v`` as a TOML literal: the one writer of values, for config.toml files and for the
    ``key=value`` overrides a study passes to its runs (strings quoted)."""
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        if math.isnan(v):
            return "nan"
        if math.isinf(v):
            return "inf" if v > 0 else "-inf"
        return repr(v)
    if isinstance(v, str):
        # JSON string escapes are valid TOML basic-string escapes; DEL is a control character
        # in TOML but not in JSON
        return json.dumps(v, ensure_ascii=False).replace("\x7f", "\\u007f")
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(toml_value(x) for x in v) + "]"
    if isinstance(v, dict):
        return "{" + ", ".join(f"{toml_value(str(k))} = {toml_value(x)}" for k, x in v.items()) + "}"
    raise ReprlabError(f"value {v!r} cannot be written as TOML (expected a number, string, boolean, list or table; TOML has no null)")


def dumps_toml(data: dict) -> str:
    """A small TOML writer for the config's value types (str, int, float, bool, lists, tables)."""
    lines: list[str] = []

    def table(d: dict, name: str) -> None:
        # Nested dicts become [sub.tables]; scalars and lists are written first so that each
        # key lands in the table it belongs to.
        if name:
            lines.append(f"\n[{name}]")
        for k, v in d.items():
            if not isinstance(v, dict):
                lines.append(f"{_tkey(k)} = {toml_value(v)}")
        for k, v in d.items():
            if isinstance(v, dict):
                table(v, f"{name}.{_tkey(k)}" if name else _tkey(k))

    table(data, "")
    return "\n".join(lines).lstrip("\n") + "\n"


def _tkey(k: str) -> str:
    return k if re.fullmatch(r"[A-Za-z0-9_-]+", k) else toml_value(k)


@cache
def field_comments(cls: type) -> dict[str, str]:
    """The ``# comment`` after each field of a dataclass (and of its dataclass bases: a method's
    config inherits the shared fields), read from their source; a subclass's comment wins."""
    out: dict[str, str] = {}
    for klass in reversed([k for k in cls.__mro__ if dataclasses.is_dataclass(k)]):
        for line in inspect.getsource(klass).splitlines():
            m = re.match(r"\s+(\w+)\s*:\s*[^=]+=.*?#\s*(.+)$", line)
            if m:
                out[m.group(1)] = m.group(2).strip()
    return out


def default_config(method: str = "supervised") -> Config:
    """The defaults of a run of ``method`` (its [method] fields and views installed)."""
    cfg = Config()
    use_method(cfg, method)
    return cfg


def describe(obj: Any = None, prefix: str = "") -> list[tuple[str, Any, str]]:
    """(dotted key, default, comment) for every leaf field: the config's documentation."""
    obj = obj if obj is not None else default_config()
    rows = []
    comments = field_comments(type(obj))
    for f in dataclasses.fields(obj):
        v = getattr(obj, f.name)
        if dataclasses.is_dataclass(v) and not isinstance(v, ScalarSchedule):
            rows.extend(describe(v, f"{prefix}{f.name}."))
        elif isinstance(v, dict) and v and all(dataclasses.is_dataclass(x) for x in v.values()):
            for name, x in v.items():
                rows.extend(describe(x, f"{prefix}{f.name}.{name}."))
        else:
            rows.append((f"{prefix}{f.name}", v, comments.get(f.name, "")))
    return rows
