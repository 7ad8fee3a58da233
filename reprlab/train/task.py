"""From a resolved config to a finished run directory: the code behind ``reprlab train``,
``pretrain``, ``finetune`` and ``probe`` (``--augment`` and cached).

It names the run, resumes or skips it, loads the data, builds the method, calls the one loop,
evaluates the test split once (for the final and the best-on-val checkpoint) and writes
``result.json`` last; the cached linear probe (:func:`run_cached`) shares all of it but the
loop. What each task kind builds and records is :data:`reprlab.result.TASK_KINDS`.
"""

from __future__ import annotations

import json
import re
import sys
import time
import tomllib
from pathlib import Path
from typing import Callable

import torch

from reprlab import distributed
from reprlab import result as schema
from reprlab.config import Config, get_key, to_dict
from reprlab.data.registry import load_splits
from reprlab.errors import ReprlabError
from reprlab.inputs import file_sha256, input_identities
from reprlab.result import TASK_KINDS, read_result, result_key, task_kind
from reprlab.runtime import resolve_device, resolve_precision, seed_everything
from reprlab.train.loop import batch_split_error, fit
from reprlab.train.rundir import RunDir, checkpoint_step, config_hash, load_checkpoint


def run_name(cfg: Config, kind: str, config_path: str | None) -> str:
    if cfg.run.name:
        return cfg.run.name
    stem = Path(config_path).stem if config_path else kind
    return f"{stem}-{config_hash(cfg)}"


def default_group(name: str) -> str:
    # runs that differ only by seed share a group: "foo-s0", "foo/seed1" -> "foo"
    return re.sub(r"([-_/]s(eed)?\d+)$", "", name)


def setup(cfg: Config) -> torch.device:
    if cfg.train.num_threads:
        torch.set_num_threads(cfg.train.num_threads)
    seed_everything(cfg.train.seed, cfg.train.deterministic)
    return resolve_device(cfg.train.device)


def run_path(cfg: Config, kind: str, config_path: str | None) -> Path:
    """The run directory of ``cfg``: ``<run.out_dir>/<run name>``."""
    return Path(cfg.run.out_dir) / run_name(cfg, kind, config_path)


def run_once(cfg: Config, kind: str, config_path: str | None, body: Callable[[RunDir, torch.device, str], dict], rerun: bool = False) -> dict:
    """Name the run and decide what to do with its directory, then run ``body`` under its lock
    and write the result it returns as ``result.json`` (last, atomically: its presence with
    ``status = "complete"`` marks completion).

    * The directory holds results or a checkpoint of another config (ignoring
      :data:`~reprlab.train.rundir.VOLATILE_KEYS`): refused with a one-line error naming the
      differing keys and both values -- unless ``rerun``.
    * ``rerun`` (``--rerun``): whatever the directory holds is removed (locks and the study
      runner's ``log*.txt`` stay) and the run starts from scratch.
    * Complete with the same config: skipped, its result.json returned.
    * A failure of ``body`` (anything but Ctrl-C) is recorded as result.json with
      ``status = "failed"`` and ``error`` = the one-line message (see :func:`failure_record`);
      the next attempt removes the record when it starts and a successful one replaces it.
    """
    device = setup(cfg)
    name = run_name(cfg, kind, config_path)
    run = RunDir(Path(cfg.run.out_dir) / name)
    # Rank 0 alone reads and writes the run directory's bookkeeping and tells the other ranks
    # what it decided (under data parallelism); every rank then trains, resuming from last.pt.
    # what the run consumes besides its config (its backbone's identity: a checkpoint's sha256):
    # a directory made from another input is refused like one made from another config
    inputs: dict = {}
    decision = None
    if distributed.is_main():
        # inputs refused before the run directory is made (a config error leaves none behind)
        decision = _world_error(cfg, kind) or _input_error(cfg, kind)
        if decision is None:
            try:
                inputs = input_identities(cfg) if task_kind(kind).backbone else {}
            except ReprlabError as e:
                decision = ("error", str(e))
        decision = decision or _decide(cfg, run, rerun, inputs)
        if decision[0] == "run":  # opened before the others hear of it: a refusal (in use, ...) is every rank's line
            print(f"reprlab: run directory {run.path} ({decision[1]})", file=sys.stderr, flush=True)
            try:
                run.open(cfg, device, rerun=rerun, inputs=inputs)
            except ReprlabError as e:
                decision = ("error", str(e))
    decision = distributed.broadcast_object(decision)
    if decision[0] == "error":
        raise ReprlabError(decision[1])  # the same one-line message on every rank
    if decision[0] == "complete":
        if distributed.is_main():
            print(f"reprlab: run directory {run.path}: already complete (--rerun runs it again)", file=sys.stderr)
        return decision[1]
    try:
        distributed.barrier()  # a --rerun has cleared the directory before any rank looks for last.pt
        result = body(run, device, name)
        if distributed.is_main():
            if inputs:  # result.json says what it was made from, as inputs.json does
                # (added to the body's record, which it has already checked; "schema" stays last)
                result = {**{k: v for k, v in result.items() if k != "schema"}, "inputs": inputs, **{k: v for k, v in result.items() if k == "schema"}}
            run.write_result(result)
    except BaseException as e:
        error = distributed.explain_failure(e)  # another rank died: say so, not the backend's "Connection closed by peer"
        if distributed.is_main() and not isinstance(e, (KeyboardInterrupt, SystemExit)):  # an interrupted run resumes; it did not fail
            run.write_failure(failure_record(cfg, kind, name, run, error))
        if error is not e:
            raise error from None
        raise
    finally:
        if distributed.is_main():
            run.unlock()
    return result


def _world_error(cfg: Config, kind: str) -> tuple | None:
    """("error", message) when the global batch of a loop run does not split over the ranks:
    decided by rank 0 with the rest, so that every rank stops on the same line at the same point
    (a rank raising alone is killed by torchrun before the others can say why)."""
    error = batch_split_error(cfg.train.batch_size, distributed.world_size()) if task_kind(kind).loop else None
    return ("error", error) if error is not None else None


def _input_error(cfg: Config, kind: str) -> tuple | None:
    """("error", message) for inputs refused before the run directory is made (a config error
    leaves none behind): a backbone or weights file that is missing or not a checkpoint, a
    validation split the training split cannot give."""
    from reprlab.data.registry import check_splits
    from reprlab.eval.backbones import check_backbone

    try:
        check_splits(cfg.data)
        if task_kind(kind).backbone:
            check_backbone(cfg.eval.backbone, cfg.eval.weights)
    except ReprlabError as e:
        return ("error", str(e))
    return None


def _decide(cfg: Config, run: RunDir, rerun: bool, inputs: dict | None = None) -> tuple:
    """("error", message) | ("complete", result) | ("run", what happens to the directory)."""
    try:
        if not rerun:
            run.check_config(cfg, inputs)
            if run.is_complete():
                return ("complete", read_result(run.path))
    except ReprlabError as e:
        return ("error", str(e))
    return ("run", "replacing the previous run" if rerun and run.path.is_dir() else ("resuming" if run.last.is_file() else "new run"))


def failure_record(cfg: Config, kind: str, name: str, run: RunDir, error: BaseException) -> dict:
    """result.json of a failed attempt, for studies and reports to show.

    ``status`` is ``"failed"``; ``error`` is the line the CLI printed (for a bug: its type and
    the first line of its message); ``last_checkpoint_step`` says where a re-run resumes (None:
    from the start). ``run``, ``task``, ``group`` and ``seed`` are those of a complete result.
    """
    if isinstance(error, ReprlabError):
        text = str(error)
    else:
        lines = str(error).strip().splitlines()
        text = f"{type(error).__name__}: {lines[0]}" if lines else type(error).__name__
    try:
        step = checkpoint_step(run.last)
    except ReprlabError:
        step = None
    known = TASK_KINDS.get(kind)  # always known: a failure record must not fail on a bug of its caller
    return schema.record({
        "run": name,
        "status": "failed",
        "task": known.task if known else kind,
        "protocol": known.protocol if known else None,
        "group": cfg.run.group or default_group(name),
        "seed": cfg.train.seed,
        "error": text,
        "error_type": type(error).__name__,
        "failed_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "last_checkpoint_step": step,
        "config": "config.toml",
    })


def execute(cfg: Config, kind: str, config_path: str | None = None, rerun: bool = False, recipe: str | None = None) -> dict:
    """Run (or resume, or skip if complete; ``rerun``: replace) one run of ``kind``; returns its
    result.json. ``recipe``: the config file the run was started from (default ``config_path``),
    whose budget result.json's ``budget`` records beside the run's own."""
    recipe = recipe or config_path
    if not task_kind(kind).loop:
        return run_cached(cfg, config_path, rerun=rerun)

    def body(run: RunDir, device: torch.device, name: str) -> dict:
        splits = load_splits(cfg.data)
        method = build_method(cfg, kind, splits, device)
        fitres = fit(cfg, method, splits.train, run, device)
        final_val = method.evaluate("val", fitres.epochs_done) if _has_labels(method) else {}
        final_test = method.evaluate("test", fitres.epochs_done) if _wants_test(cfg, method) else {}
        best_test, best_val = {}, fitres.best.get("val", {})
        if fitres.best.get("step") == fitres.step:
            best_test = final_test  # the final checkpoint is the best one: test it once, not twice
        elif run.best.is_file() and _wants_test(cfg, method):
            ckpt = load_checkpoint(run.best)
            if ckpt["step"] != fitres.best.get("step"):
                raise ReprlabError(f"{run.best} holds step {ckpt['step']}, but the best-on-val step is {fitres.best.get('step')}; delete it and re-run")
            method.load_state_dict(ckpt["method"])
            best_test = method.evaluate("test", fitres.epochs_done)
        if task_kind(kind).frozen:
            method.verify_frozen()
        return assemble_result(cfg, kind, name, method, fitres, final_val, final_test, best_val, best_test, recipe)

    return run_once(cfg, kind, config_path, body, rerun=rerun)


def _has_labels(method) -> bool:
    return method.selection_metric.startswith("val/")


def _wants_test(cfg: Config, method) -> bool:
    return cfg.train.eval_test and method.splits.test is not None and _has_labels(method)


def build_method(cfg: Config, kind: str, splits, device):
    from reprlab.methods.base import get_method

    spec = task_kind(kind)
    if spec.backbone:  # a new head over eval.backbone: fine-tuned whole, or the head alone
        from reprlab.eval.backbones import backbone_source, derived_provenance, load_backbone
        from reprlab.methods.supervised import Supervised

        bb = load_backbone(cfg.eval.backbone, cfg, splits.mean, splits.std)
        method = Supervised(cfg, splits, device, backbone=bb, mode=spec.finetune_mode)
        method.backbone_info = {"source": backbone_source(bb), **bb.info}
        method.provenance = derived_provenance(bb, spec.name, spec.protocol, config_hash(cfg))  # what its checkpoints say they were made from
        if spec.frozen:
            method.snapshot_frozen()
        return method
    if spec.scratch and cfg.method.name != "supervised":
        raise ReprlabError(f"`reprlab train` is supervised training; method.name={cfg.method.name!r} belongs to `reprlab pretrain`")
    return get_method(cfg.method.name)(cfg, splits, device)


def _flops(method) -> int | None:
    """FLOPs of one forward pass at the run's input size (FlopCounterMode convention)."""
    from reprlab.models.flops import count_flops

    model = method.backbone
    return int(count_flops(model, getattr(method, "input_size", None) or model.input_size))


def _split(metrics: dict, prefix: str) -> dict:
    return {k.split("/", 1)[1]: v for k, v in metrics.items() if k.startswith(prefix + "/")}


def _selection_block(metrics: dict, selection_metric: str) -> dict:
    """The metrics of the selection metric's namespace under their result.json names: ``val/acc1``
    -> ``acc1``; a self-supervised run's ``knn/acc1`` -> ``knn_acc1`` (a kNN accuracy on the
    validation split is not a classifier's ``acc1``)."""
    prefix = selection_metric.split("/")[0]
    return {result_key(f"{prefix}/{k}"): v for k, v in _split(metrics, prefix).items()}


def assemble_result(cfg, kind, name, method, fitres, final_val, final_test, best_val, best_test, recipe: str | None = None) -> dict:
    from reprlab.models.flops import count_params

    bb = getattr(method, "backbone_info", None)
    best_val_d = _selection_block(best_val, method.selection_metric)
    spec = task_kind(kind)
    result = {
        "run": name,
        "status": "complete",
        "task": spec.task,
        "group": cfg.run.group or default_group(name),
        "seed": cfg.train.seed,
        "model": getattr(method.backbone, "model_name", cfg.model.name),
        "params": count_params(method.backbone),
        "flops_per_image": _flops(method),
        "throughput_img_s": round(fitres.throughput_img_s, 1),
        "protocol": spec.protocol,
        "backbone_source": (bb["source"] if bb else ("scratch" if spec.scratch else cfg.method.name)),
        "method": (bb.get("method") if bb else method.name),
        "dataset": (bb.get("dataset") if bb else cfg.data.dataset),
        # the pretraining-set fraction (what the data-size curves are about); the fraction of the
        # training split this run itself used is train_fraction
        "fraction": bb.get("fraction") if bb else (cfg.data.fraction if spec.pretrains else None),
        "train_fraction": cfg.data.fraction,
        "resolution": getattr(method, "input_size", cfg.data.resolution),
        "epochs": cfg.train.epochs,
        "steps": fitres.step,
        # set by the CNN-vs-ViT recipes (run.family): those runs form their own comparison
        "family": (cfg.run.family or None) if spec.scratch else None,
        "sweep": cfg.run.sweep or None,
        "sweep_params": {k: get_key(cfg, k) for k in cfg.run.sweep_keys},
        "val": best_val_d or _split(final_val, "val"),
        "test": _split(best_test, "test") or _split(final_test, "test"),
        "final_checkpoint": {"step": fitres.step, "val": _split(final_val, "val"), "test": _split(final_test, "test")},
        "best_checkpoint": {"step": fitres.best.get("step"), "metric": fitres.best.get("metric"), "val": best_val_d, "test": _split(best_test, "test")},
        "wall_time_s": round(fitres.wall_time_s, 1),
        "segments": fitres.segments,  # one per process that ran it (a resumed run has several)
        "train_dataset": cfg.data.dataset,
        "backbone": bb,
        "config": "config.toml",
        "budget": run_budget(fitres, recipe, bb),  # against the recipe's: reports mark a toy budget
    }
    if not result["test"]:
        result.pop("test")
    return schema.record(result)


# ============================================================================================
# The budget: what a run trained against its recipe (result.json's "budget", reprlab.result.BUDGET_KEYS)
# ============================================================================================

#: the recipes shipped with the package; a recipe there is recorded as ``configs/<path>``
_PACKAGE_CONFIGS = Path(__file__).resolve().parents[1] / "configs"


def recipe_budget(recipe: str | None) -> dict:
    """The budget the config file ``recipe`` sets (``train.epochs``, ``train.max_steps``), read
    from the file alone: command-line overrides (a study's ``train.epochs=4``) are what the run
    did, not what the recipe asks for. A key the file leaves out has the default's value."""
    if not recipe:
        return {"recipe": None, "recipe_epochs": None, "recipe_steps": None}
    path = Path(recipe)
    try:
        train = tomllib.loads(path.read_text()).get("train", {})
    except (OSError, tomllib.TOMLDecodeError) as e:  # it was read moments ago to build the run's config
        raise ReprlabError(f"recipe {path}: cannot read it again ({e})") from None
    defaults = Config().train
    steps = train.get("max_steps", defaults.max_steps)
    try:
        name = f"configs/{path.resolve().relative_to(_PACKAGE_CONFIGS).as_posix()}"
    except ValueError:
        name = str(recipe)
    return {"recipe": name, "recipe_epochs": train.get("epochs", defaults.epochs), "recipe_steps": steps or None}


def backbone_budget(info: dict | None) -> dict | None:
    """The budget of the run that made a checkpoint backbone: its run directory's result.json
    ``budget`` (``<run>/checkpoints/<file>.pt``); without one (a checkpoint moved elsewhere, an
    old run) the epochs and step the checkpoint itself records, against an unknown recipe."""
    if not info or not info.get("checkpoint"):
        return None  # imagenet-supervised, random-init: no pretraining of ours
    ckpt = Path(info["checkpoint"])
    run_dir = ckpt.parent.parent if ckpt.parent.name == "checkpoints" else ckpt.parent
    try:
        rec = read_result(run_dir) if (run_dir / schema.RESULT_FILE).is_file() else {}
    except ReprlabError:
        rec = {}
    if rec.get("status") == "complete" and isinstance(rec.get("budget"), dict):
        return rec["budget"]
    return {"epochs": info.get("pretrain_epochs"), "steps": info.get("pretrain_step"), **recipe_budget(None), "backbone": None}


def run_budget(fitres, recipe: str | None, backbone_info: dict | None) -> dict:
    """result.json's ``budget`` of a run through the loop."""
    return {"epochs": fitres.epochs_done, "steps": fitres.step, **recipe_budget(recipe), "backbone": backbone_budget(backbone_info)}


def run_cached(cfg: Config, config_path: str | None = None, rerun: bool = False) -> dict:
    """The cached linear protocol as a run: run directory, metrics.jsonl (the L2 sweep), result.json."""
    from reprlab.eval.backbones import backbone_source, load_backbone
    from reprlab.eval.probe import FeatureCache, cached_probe
    from reprlab.models.flops import count_params

    def body(run: RunDir, device: torch.device, name: str) -> dict:
        splits = load_splits(cfg.data)
        bb = load_backbone(cfg.eval.backbone, cfg, splits.mean, splits.std)
        fingerprint = {"backbone": cfg.eval.backbone, "weights": cfg.eval.weights, "resolution": cfg.eval.resolution, "data": to_dict(cfg.data), "model": to_dict(cfg.model),
                       "precision": str(resolve_precision(cfg.train.precision, device))}  # what extraction ran in (auto differs between machines)
        if bb.source == "checkpoint":  # the file's content: a --rerun of the pretraining rewrites the same path at the same step
            fingerprint["checkpoint"] = file_sha256(bb.info["checkpoint"])
        if bb.source == "random-init":
            fingerprint["seed"] = cfg.train.seed
        # Under data parallelism each rank extracts a share of the features and all fit the same
        # small problem on the gathered ones (deterministic L-BFGS); rank 0 alone writes.
        out = cached_probe(bb, splits, cfg, device, FeatureCache(run.path / "features.pt", fingerprint))
        if not distributed.is_main():
            return out
        with open(run.metrics_file, "w") as f:
            for i, row in enumerate(out["l2_sweep"]):
                f.write(json.dumps({"step": i, "epoch": i, "probe/l2": row["l2"], "probe/val_acc1": row["val_acc1"], "probe/train_acc1": row["train_acc1"]}) + "\n")
        info, spec = bb.info, TASK_KINDS["probe"]
        return schema.record({
            "run": name,
            "status": "complete",
            "task": spec.task,
            "group": cfg.run.group or default_group(name),
            "seed": cfg.train.seed,
            "model": getattr(bb.model, "model_name", None),
            "params": count_params(bb.model),
            "protocol": spec.protocol,
            "backbone_source": backbone_source(bb),
            "method": info.get("method"),
            "dataset": info.get("dataset"),
            "fraction": info.get("fraction"),
            "epochs": None,  # no training epochs of its own; the backbone's are in backbone.pretrain_epochs
            "family": None,  # probes are not part of the CNN-vs-ViT comparison
            "sweep": cfg.run.sweep or None,
            "sweep_params": {},
            "backbone": info,
            "config": "config.toml",
            # no epochs of its own: its budget is its backbone's
            "budget": {"epochs": None, "steps": None, **recipe_budget(None), "backbone": backbone_budget(info)},
            **out,
        })

    return run_once(cfg, "probe", config_path, body, rerun=rerun)
