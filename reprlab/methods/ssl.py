"""The parts every self-supervised method shares, written once.

* the backbone: a registry model without classifier (``num_classes=0``); the CIFAR ResNet has a
  3x3 stem whatever the pretraining set, so the features are those a 32 px image will use;
* the view pipelines (``[views.NAME]``, on the device, batched) and the multi-crop forward;
* momentum (EMA) targets registered once and updated after every optimiser step at
  ``method.momentum`` (a scheduled value);
* the kNN monitor on CIFAR-100 validation, which selects ``best.pt`` (``knn/acc1``);
* ``model.compile``.

A method built on :class:`SSLMethod` writes its heads, its ``training_step`` and, where it has
them, its hooks; see ``byol.py`` for a short example.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from reprlab.augment.views import MultiView, ViewConfig
from reprlab.config import MethodConfig
from reprlab.errors import ReprlabError
from reprlab.eval.knn import KNNMonitor
from reprlab.methods.base import Method, StepContext
from reprlab.models import create_model
from reprlab.models.momentum import ema_update_, momentum_copy


@dataclass
class SSLConfig(MethodConfig):
    knn_k: int = 200  # kNN monitor: neighbours
    knn_temperature: float = 0.1  # kNN monitor: similarity temperature
    knn_every_epochs: int = 5  # kNN monitor on the CIFAR-100 validation split every this many epochs
    knn_bank_size: int = 0  # kNN monitor: training images in the memory bank (evenly strided); 0 = all

    def validate(self) -> None:
        check(self, "knn_k", self.knn_k >= 1, ">= 1")
        check(self, "knn_temperature", self.knn_temperature > 0, "> 0")
        check(self, "knn_every_epochs", self.knn_every_epochs >= 0, ">= 0")
        check(self, "knn_bank_size", self.knn_bank_size >= 0, ">= 0")
        if hasattr(self, "momentum"):  # an EMA momentum (BYOL, MoCo, DINO): every value it takes in [0, 1]
            from reprlab.schedules import all_values

            check(self, "momentum", all(0.0 <= v <= 1.0 for v in all_values(self.momentum)), "values in [0, 1] (1 = the target never moves)")


def check(cfg, key: str, ok: bool, expected: str) -> None:
    """Raise the standard one-line error for ``method.<key>`` unless ``ok``."""
    if not ok:
        raise ReprlabError(f"config key 'method.{key}': expected {expected}, got {getattr(cfg, key)!r}")


def two_views(**overrides) -> dict[str, ViewConfig]:
    """Two crops from one pipeline (SimCLR, MoCo, SimSiam, Barlow Twins, VICReg)."""
    return {"view": ViewConfig(count=2, **overrides)}


def asymmetric_views() -> dict[str, ViewConfig]:
    """solo-learn's "asymmetric" CIFAR pair (BYOL, MoCo v3, Barlow Twins): the BYOL paper's two
    views without blur on 32 px images; solarisation 0 / 0.2 makes them differ."""
    jitter = dict(brightness=0.4, contrast=0.4, saturation=0.2, hue=0.1)
    return {"view1": ViewConfig(**jitter, solarize_prob=0.0), "view2": ViewConfig(**jitter, solarize_prob=0.2)}


def symmetric_weak_views() -> dict[str, ViewConfig]:
    """solo-learn's CIFAR "symmetric_weak" views (SimSiam, MoCo v2): both crops from one pipeline,
    default jitter (0.4, 0.4, 0.4, 0.1), Gaussian blur (sigma 0.1-2 px) half of the time. Its
    blur is PIL's untruncated filter; a 13 px kernel (0.4 x 32) spans +-3 sigma at the largest
    sigma, where the default 3 px kernel would clip it."""
    return {"view": ViewConfig(count=2, blur_prob=0.5, blur_kernel_frac=0.4)}


class SSLMethod(Method):
    selection_metric = "knn/acc1"
    Config = SSLConfig
    #: the attribute holding the backbone that the kNN monitor scores and that the checkpoint
    #: hands to `reprlab probe` / `finetune` ("backbone", or e.g. DINO's EMA teacher)
    probe_backbone = "backbone"

    @classmethod
    def default_views(cls) -> dict[str, ViewConfig]:
        return two_views()

    def __init__(self, cfg, splits, device) -> None:
        super().__init__(cfg, splits, device)
        self.backbone = create_model(cfg.model.name, num_classes=0, **cfg.model.kwargs)
        self.views = MultiView(cfg.views, splits.mean, splits.std)
        # the (compiled) forward of the backbone: kept out of the module tree, so checkpoints hold
        # the backbone once and a compiled run resumes from an eager one's checkpoint and back
        object.__setattr__(self, "_encode", self.backbone)
        self._ema: list[tuple[nn.Module, nn.Module]] = []  # (target, online) pairs
        m = cfg.method
        self.monitor = KNNMonitor(splits, cfg.data, m.knn_k, m.knn_temperature, m.knn_bank_size)

    # ---- forward helpers
    def encode(self, x: torch.Tensor, net: nn.Module | None = None) -> torch.Tensor:
        """Pooled features of a float batch (the online backbone unless ``net`` is given)."""
        if self.cfg.model.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        return (net or self._encode)(x)

    def encode_crops(self, crops: list[torch.Tensor], net: nn.Module | None = None) -> list[torch.Tensor]:
        """Features of every crop, one forward per run of equal-sized crops (the global crops
        together, the local ones together), so BatchNorm sees each resolution as one batch."""
        out: list[torch.Tensor] = []
        i = 0
        while i < len(crops):
            j = i
            while j < len(crops) and crops[j].shape[-1] == crops[i].shape[-1]:
                j += 1
            out.extend(self.encode(torch.cat(crops[i:j]), net).chunk(j - i))
            i = j
        return out

    # ---- momentum targets
    def momentum_target(self, online: nn.Module) -> nn.Module:
        """A frozen EMA copy of ``online``, updated after every optimiser step at ``method.momentum``."""
        target = momentum_copy(online)
        self._ema.append((target, online))
        return target

    def after_optimizer_step(self, ctx: StepContext) -> None:
        if self._ema:
            m = ctx.value(self.cfg.method.momentum)
            for target, online in self._ema:
                ema_update_(target, online, m)

    def named_trainable(self):
        targets = {id(p) for t, _ in self._ema for p in t.parameters()}
        return ((n, p, 1.0) for n, p in self.named_parameters() if p.requires_grad and id(p) not in targets)

    def compile(self) -> None:
        object.__setattr__(self, "_encode", torch.compile(self.backbone))

    # ---- monitor
    def eval_due(self, epoch: int, last: bool) -> bool:
        every = self.cfg.method.knn_every_epochs
        return last or (every > 0 and epoch % every == 0)

    def evaluate(self, split: str, epoch: int) -> dict[str, float]:
        if split != "val":
            raise ReprlabError(f"{self.name} pretraining reports kNN accuracy on the validation split only; use `reprlab probe` for test numbers")
        tc = self.cfg.train
        acc = self.monitor(getattr(self, self.probe_backbone), self.mean, self.std, tc.eval_batch_size, self.device, self.cfg.model.channels_last, self.amp_dtype)
        return {"knn/acc1": acc}
