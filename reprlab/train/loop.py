"""The one training loop, shared by supervised training, self-supervised pretraining, the
augmented linear probe and fine-tuning.

Per step: take the next indices of the epoch's permutation, gather the uint8 batch on the
device, let the method turn it into a loss, step the optimiser at the schedule's learning rate.
Per ``log_every_steps``: write train/loss, train/acc1 and lr (and stop on a non-finite loss).
Per epoch: evaluate on the validation split, keep the best-on-val checkpoint, write ``last.pt``.
At the end: evaluate the test split once for the final and the best checkpoint.

Everything that decides the future of a run lives in ``last.pt``: weights, optimiser state,
step (which fixes the schedule and the position in the epoch's data order), augmentation
generator and global RNG states. Re-running the same command resumes from it.
"""

from __future__ import annotations

import contextlib
import math
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

import torch

from reprlab import distributed
from reprlab.config import Config, to_dict
from reprlab.data.types import ImageSet
from reprlab.data.device import epoch_order
from reprlab.errors import NonFiniteLossError, ReprlabError
from reprlab.methods.base import Method, StepContext
from reprlab.runtime import channels_last_hazard, get_rng_state, resolve_precision, set_rng_state
from reprlab.schedules import all_values, lr_factor, value_at
from reprlab.train.optim import build_optimizer, param_groups
from reprlab.train.rundir import MetricsLogger, RunDir, atomic_copy, atomic_torch_save, checkpoint_step, config_hash, load_checkpoint


def batch_split_error(batch: int, world: int) -> str | None:
    """Why a global batch cannot be split over ``world`` ranks, or None when it can."""
    if batch % world:
        return f"train.batch_size={batch} does not divide over {world} ranks; use a multiple of {world}"
    return None


@dataclass
class FitResult:
    step: int
    epochs_done: int
    best: dict = field(default_factory=dict)
    final_val: dict = field(default_factory=dict)
    final_test: dict = field(default_factory=dict)
    best_test: dict = field(default_factory=dict)
    throughput_img_s: float = 0.0  # images per second of training (evaluation and checkpoints excluded), all segments
    wall_time_s: float = 0.0  # wall time of the whole run, all segments (a resumed run adds its earlier ones)
    resumed_from: int | None = None
    segments: list = field(default_factory=list)  # one {from_step, to_step, wall_s, train_s, images} per process that ran it


def fit(cfg: Config, method: Method, train: ImageSet, run: RunDir, device: torch.device) -> FitResult:
    """Train ``method`` on ``train`` under ``cfg``; resumes from ``run.last``."""
    return _Fit(cfg, method, train, run, device).run()


class _Fit:
    """One call of :func:`fit`, in the order it happens: the run's shape (steps, each rank's
    slice of the global batch), the data on the device, the model and its optimiser, the resume
    from ``last.pt``, the wrappers (compile, DDP); then the steps (:meth:`run`: one step on one
    screen), with a logging interval (:meth:`log_interval`) every ``train.log_every_steps`` and
    the end of an epoch (:meth:`end_of_epoch`: validation, ``last.pt``, ``best.pt``).

    Under data parallelism every rank runs all of it on its own slice; rank 0 alone writes
    (metrics, checkpoints), and each checkpoint holds every rank's generator states.
    """

    # ---- setup: the run's shape, data, model, optimiser ------------------------------------

    def __init__(self, cfg: Config, method: Method, train: ImageSet, run: RunDir, device: torch.device) -> None:
        self.cfg, self.method, self.run_dir, self.device = cfg, method, run, device
        tc = cfg.train
        self.n = len(train)
        self.batch = tc.batch_size  # the global batch: each of the world's ranks takes batch / world of it
        self.world, self.rank = distributed.world_size(), distributed.rank()
        if (error := batch_split_error(self.batch, self.world)) is not None:
            raise ReprlabError(error)
        self.local = self.batch // self.world
        self.steps_per_epoch = self.n // self.batch  # drop_last: every step sees a full batch (BN and contrastive losses want that)
        if self.steps_per_epoch == 0:
            raise ReprlabError(f"train.batch_size={self.batch} is larger than the training split ({self.n} images)")
        self.total_steps = tc.epochs * self.steps_per_epoch
        if tc.max_steps:
            self.total_steps = min(self.total_steps, tc.max_steps)
        self.log_every = tc.log_every_steps
        self.ckpt_every = math.ceil(tc.checkpoint_every_steps / self.log_every) * self.log_every if tc.checkpoint_every_steps else 0
        self.amp_dtype = resolve_precision(tc.precision, device)

        # Data lives on the device as uint8 for the whole run.
        self.images = train.images.to(device, non_blocking=True)
        self.labels = train.labels.to(device, non_blocking=True)

        method.to(device)
        if cfg.model.channels_last and (hazard := channels_last_hazard(method, device)) is not None:
            # The methods read model.channels_last for their batches: this run's is off. Its
            # config.toml (written before) keeps the requested value, so the run's identity holds.
            if self.rank == 0:
                print(f"channels_last: off for this run ({hazard})", file=sys.stderr)
            cfg.model.channels_last = False
        if cfg.model.channels_last:
            method.to(memory_format=torch.channels_last)
        if self.world > 1 and _sync_bn(tc.sync_bn, method):
            from reprlab.models.sync_bn import convert_sync_batchnorm

            convert_sync_batchnorm(method, device)
        self.wd = cfg.optim.weight_decay  # a number or a ScalarSchedule (DINO: 0.04 -> 0.4)
        groups = param_groups(method.named_trainable(), all_values(self.wd)[0], cfg.optim.no_decay_norm_bias)
        self.optimizer = build_optimizer(groups, cfg.optim)
        self.wd_scheduled = not isinstance(self.wd, (int, float))
        self.scaler = torch.amp.GradScaler(device.type, enabled=self.amp_dtype == torch.float16)
        self.aug_gen = torch.Generator(device=device).manual_seed(tc.seed + 12345 + 7919 * self.rank)  # each rank its own stream

        self.step, self.best = 0, {"metric": method.selection_metric, "value": -math.inf, "step": None}
        self.resumed_from, self.segments = None, []
        if run.last.is_file():
            self.resume()
        if cfg.model.compile:
            method.compile()
        self.ddp = None  # under data parallelism, the method wrapped in DDP: the step calls it instead
        if self.world > 1:
            # Gradients averaged over ranks by PyTorch's DDP (bucketed, overlapped with backward).
            # Buffers are not broadcast per step: they are equal on every rank by construction
            # (same seed; queues and centres are updated from gathered values).
            from torch.nn.parallel import DistributedDataParallel

            self.ddp = DistributedDataParallel(method, forward_sync_buffers=False)
        self.logger = MetricsLogger(run, self.resumed_from) if self.rank == 0 else _NoLogger()

    # ---- resume ------------------------------------------------------------------------------

    def resume(self) -> None:
        """Continue from ``last.pt``: weights, optimiser, scaler, this rank's generator and RNG
        states, the step and the best-on-val record."""
        run, world, rank = self.run_dir, self.world, self.rank
        ckpt = load_checkpoint(run.last)  # unreadable: a one-line error naming the file
        if ckpt.get("world_size", 1) != world:
            raise ReprlabError(f"{run.last} was written by a run on {ckpt.get('world_size', 1)} process(es); resume it on the same number (this is {world}), or --rerun")
        own = ckpt["ranks"][rank] if world > 1 else ckpt
        self.method.load_state_dict(ckpt["method"])
        self.method.load_rank_state(own.get("rank_state", {}))
        self.optimizer.load_state_dict(ckpt["optimizer"])
        self.scaler.load_state_dict(ckpt["scaler"])
        self.aug_gen.set_state(own["aug_generator"].to(self.aug_gen.get_state().device))
        set_rng_state(own["rng"])
        self.step, self.best = ckpt["step"], ckpt["best"]
        self.segments = ckpt.get("segments", [])
        self.resumed_from = self.step
        if rank == 0 and self.best["step"] == self.step and checkpoint_step(run.best) != self.step:
            atomic_copy(run.last, run.best)  # killed between writing last.pt and best.pt
        if rank == 0:
            print(f"resuming {run.path} from step {self.step}", file=sys.stderr)

    # ---- checkpoints -------------------------------------------------------------------------

    def checkpoint(self, path: Path, **extra) -> None:
        # Every rank calls this (its generator states are gathered); rank 0 writes the file.
        method = self.method
        own = {"aug_generator": self.aug_gen.get_state(), "rng": get_rng_state(), "rank_state": {k: v.detach().cpu() for k, v in method.rank_state().items()}}
        ranks = distributed.all_gather_object(own) if self.world > 1 else None
        if self.rank != 0:
            return
        atomic_torch_save(
            {
                "method": method.state_dict(),
                "optimizer": self.optimizer.state_dict(),
                "scaler": self.scaler.state_dict(),
                **own,
                "step": self.step,
                "best": self.best,
                "segments": self.segments + [self.segment()],
                "config": to_dict(self.cfg),
                "world_size": self.world,
                **({"ranks": ranks} if ranks else {}),
                **method_meta(method, self.cfg),
                **extra,
            },
            path,
        )

    def segment(self) -> dict:
        """This process's share of the run so far (checkpoints carry every earlier one)."""
        now = time.perf_counter()
        return {"from_step": self.resumed_from or 0, "to_step": self.step, "wall_s": round(now - self.t_start, 3), "train_s": round(now - self.t_start - self.t_paused, 3), "images": self.t_imgs}

    @contextlib.contextmanager
    def paused(self) -> Iterator[None]:
        """Evaluation and checkpoint time: not training time (throughput excludes it)."""
        t_pause = time.perf_counter()
        yield
        self.t_paused += time.perf_counter() - t_pause

    # ---- the steps ---------------------------------------------------------------------------

    def run(self) -> FitResult:
        """The steps. One step: this rank's indices of the epoch's permutation, the schedules'
        values at this step into the optimiser, one update (:func:`train_step`); the loss and
        the method's scalars wait on the device until the logging interval ends."""
        cfg, method, optimizer, steps_per_epoch = self.cfg, self.method, self.optimizer, self.steps_per_epoch
        autocast = (lambda: torch.autocast(self.device.type, dtype=self.amp_dtype)) if self.amp_dtype else contextlib.nullcontext
        bar = _progress(cfg.train.progress and self.rank == 0, self.total_steps, self.step, self.batch)
        losses: list[torch.Tensor] = []
        extras: dict[str, list] = {}  # the method's extra scalars of the interval, by key
        self.t_start, self.t_imgs, self.t_paused = time.perf_counter(), 0, 0.0  # paused: evaluation and checkpoint time
        method.set_train_mode()
        order = None
        try:
            while self.step < self.total_steps:
                step = self.step
                epoch, pos = divmod(step, steps_per_epoch)
                if order is None or pos == 0:
                    order = epoch_order(self.n, cfg.train.seed, epoch).to(self.device)
                start = pos * self.batch + self.rank * self.local  # this rank's slice of the global batch
                idx = order[start : start + self.local]
                factor = lr_factor(step, self.total_steps, steps_per_epoch, cfg.schedule)
                wd = value_at(self.wd, step, self.total_steps, steps_per_epoch) if self.wd_scheduled else None
                for g in optimizer.param_groups:
                    g["lr"] = cfg.optim.lr * g["lr_mult"] * factor
                    if wd is not None and not g["lars_exclude"]:
                        g["weight_decay"] = wd
                ctx = StepContext(step, self.total_steps, steps_per_epoch)
                loss, extra = train_step(method, optimizer, self.scaler, self.images[idx], self.labels[idx], self.aug_gen, ctx, cfg.optim.grad_clip, autocast, self.ddp)
                losses.append(loss.detach())
                for k, v in extra.items():
                    extras.setdefault(k, []).append(v.detach().float() if isinstance(v, torch.Tensor) else float(v))
                self.step = step = step + 1
                self.t_imgs += self.batch
                if bar is not None:
                    bar.update(1)
                end_of_epoch = step % steps_per_epoch == 0 or step == self.total_steps
                if step % self.log_every == 0 or end_of_epoch:
                    row = self.log_interval(losses, extras, cfg.optim.lr * factor, wd)
                    losses, extras = [], {}
                    if bar is not None:
                        bar.set_postfix(loss=f"{row['train/loss']:.3f}", refresh=False)
                    if end_of_epoch:
                        with self.paused():
                            self.end_of_epoch()
                    elif self.ckpt_every and step % self.ckpt_every == 0:
                        with self.paused():
                            self.checkpoint(self.run_dir.last)
        finally:
            if bar is not None:
                bar.close()
            self.logger.close()
        distributed.barrier()  # rank 0's last.pt and best.pt are on disk before any rank reads them
        return self.result()

    def log_interval(self, losses: list[torch.Tensor], extras: dict[str, list], lr: float, wd: float | None) -> dict:
        """Bring the interval's losses to the host, stop on a non-finite one, log the means
        (``lr`` and the scheduled weight decay ``wd``: their values at the interval's last step).

        One host sync per logging interval: the losses of the interval (and the method's extra
        scalars) come to the host together, so a NaN is reported with its exact step and no
        checkpoint is written after it."""
        step, steps_per_epoch = self.step, self.steps_per_epoch
        tensor_keys = [k for k, vs in extras.items() if isinstance(vs[0], torch.Tensor)]
        # Under data parallelism the logged values are means over ranks, so every rank
        # sees the same numbers (a non-finite loss stops all of them at the same step).
        host = distributed.mean_over_ranks(torch.stack([torch.stack(losses).float()] + [torch.stack(extras[k]) for k in tensor_keys])).tolist()
        interval = host[0]
        bad = next((i for i, v in enumerate(interval) if not math.isfinite(v)), None)
        if bad is not None:
            bad = step - len(losses) + bad + 1
            last = self.run_dir.last
            raise NonFiniteLossError(
                f"non-finite loss at step {bad} (epoch {(bad - 1) // steps_per_epoch + 1}); "
                f"stopped; last good checkpoint kept at {last if last.is_file() else 'none (no checkpoint yet)'}"
            )
        row = {"train/loss": sum(interval) / len(interval), "lr": lr}
        for k, vs in zip(tensor_keys, host[1:]):
            row[f"train/{k}"] = sum(vs) / len(vs)
        for k, vs in extras.items():
            if k not in tensor_keys:
                row[f"train/{k}"] = sum(vs) / len(vs)
        if wd is not None:
            row["train/weight_decay"] = wd
        elapsed = time.perf_counter() - self.t_start - self.t_paused
        self.logger.log(step, step / steps_per_epoch, row, {"perf/img_per_s": self.t_imgs / max(elapsed, 1e-9)})
        return row

    def end_of_epoch(self) -> None:
        """Validation (when due), then ``last.pt``, then ``best.pt`` when the selection metric improved."""
        method, step = self.method, self.step
        ep = math.ceil(step / self.steps_per_epoch)
        improved = False
        if method.eval_due(ep, step == self.total_steps):
            metrics = method.evaluate("val", ep)
            method.set_train_mode()
            self.logger.log(step, step / self.steps_per_epoch, metrics)
            value = metrics.get(method.selection_metric)
            improved = value is not None and value > self.best["value"]
            if improved:
                self.best = {"metric": method.selection_metric, "value": value, "step": step, "val": metrics}
        # last.pt first, then best.pt as its copy: a kill in between leaves a last.pt whose
        # best record points at its own step, and resuming restores best.pt from it.
        self.checkpoint(self.run_dir.last)
        if improved and self.rank == 0:
            atomic_copy(self.run_dir.last, self.run_dir.best)  # written whole or not at all

    def result(self) -> FitResult:
        segments = self.segments + [self.segment()]
        # A resumed run reports the whole run: the segments of processes that were killed count up
        # to their last checkpoint (what they did after it was redone, and is counted again).
        train_time = max(sum(s["train_s"] for s in segments), 1e-9)
        return FitResult(
            step=self.step,
            epochs_done=math.ceil(self.step / self.steps_per_epoch),
            best=self.best,
            resumed_from=self.resumed_from,
            wall_time_s=sum(s["wall_s"] for s in segments),
            throughput_img_s=sum(s["images"] for s in segments) / train_time,
            segments=segments,
        )


def train_step(method: Method, optimizer, scaler, images, labels, generator, ctx: StepContext, grad_clip: float = 0.0, autocast=contextlib.nullcontext, ddp=None):
    """One update, with the method's hooks at their fixed points; returns (loss, extra scalars).

    Under data parallelism ``ddp`` is the method wrapped in ``DistributedDataParallel``: the
    step calls it (its ``forward`` is ``training_step``) so that backward averages the
    gradients over ranks."""
    with autocast():
        loss, extra = ddp(images, labels, generator, ctx) if ddp is not None else method.training_step(images, labels, generator, ctx)
    optimizer.zero_grad(set_to_none=True)
    scaler.scale(loss).backward()
    scaler.unscale_(optimizer)  # a no-op without fp16 loss scaling; hooks and clipping see true gradients
    method.before_optimizer_step(ctx)
    if grad_clip > 0:
        torch.nn.utils.clip_grad_norm_([p for g in optimizer.param_groups for p in g["params"]], grad_clip)
    scale = scaler.get_scale() if scaler.is_enabled() else None  # fp16 only (one host sync per step)
    scaler.step(optimizer)
    scaler.update()
    if scale is None or scaler.get_scale() >= scale:  # fp16 loss scaling skips a step with inf gradients:
        method.after_optimizer_step(ctx)  # then EMA targets and queues do not move either
    return loss, extra


def method_meta(method: Method, cfg: Config) -> dict:
    """What makes a checkpoint self-describing: enough to rebuild the backbone from the file.

    Everything is read off the method's modules, not the config: a fine-tuned backbone keeps the
    architecture, normalisation and input size it was loaded with, whatever cfg.model says.
    """
    bb = method.backbone
    return {
        "method_name": method.name,
        "model_name": getattr(bb, "model_name", cfg.model.name),
        "model_kwargs": dict(getattr(bb, "model_kwargs", cfg.model.kwargs)),
        "backbone_prefix": f"{getattr(method, 'probe_backbone', 'backbone')}.",  # DINO probes its teacher
        "num_features": getattr(bb, "num_features", None),
        "data_mean": method.mean.flatten().tolist(),
        "data_std": method.std.flatten().tolist(),
        "resolution": getattr(method, "input_size", None) or cfg.data.resolution,
        # the backbone this one was made from (eval/backbones.py: checkpoint_provenance reads it);
        # a run over a backbone sets method.provenance (task.build_method), any other is the origin
        "provenance": getattr(method, "provenance", None) or {
            "method": method.name, "dataset": cfg.data.dataset, "fraction": cfg.data.fraction, "epochs": cfg.train.epochs,
            "max_steps": cfg.train.max_steps or None, "config_hash": config_hash(cfg), "via": [],
        },
    }


def _sync_bn(setting: str, method: Method) -> bool:
    """``train.sync_bn``: on, off, or auto = on for self-supervised methods (their losses compare
    samples across the batch, and per-rank statistics would leak which rank a sample is on)."""
    from reprlab.methods.ssl import SSLMethod

    return setting == "on" or (setting == "auto" and isinstance(method, SSLMethod))


class _NoLogger:
    """Ranks other than 0 write nothing."""

    def log(self, *args, **kwargs) -> None:
        pass

    def close(self) -> None:
        pass


def _progress(enabled: bool, total: int, initial: int, batch: int):
    if not enabled:
        return None
    return _StepBar(total, initial, batch)


class _StepBar:
    """tqdm counting images, so it shows img/s and the ETA of the whole run."""

    def __init__(self, total: int, initial: int, batch: int) -> None:
        from tqdm.auto import tqdm

        self.batch = batch
        self.bar = tqdm(total=total * batch, initial=initial * batch, unit="img", unit_scale=True, dynamic_ncols=True, smoothing=0.1, file=sys.stderr)

    def update(self, steps: int) -> None:
        self.bar.update(steps * self.batch)

    def set_postfix(self, **kw) -> None:
        self.bar.set_postfix(**kw)

    def close(self) -> None:
        self.bar.close()
