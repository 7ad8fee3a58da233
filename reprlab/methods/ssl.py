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

import torch
from torch import nn

from reprlab.augment.views import MultiView
from reprlab.errors import ReprlabError
from reprlab.eval.knn import KNNMonitor
from reprlab.methods.base import Method, StepContext
from reprlab.methods.configs import SSLConfig
from reprlab.models import create_model
from reprlab.models.momentum import ema_update_, momentum_copy


class SSLMethod(Method):
    selection_metric = "knn/acc1"
    Config = SSLConfig
    #: the attribute holding the backbone that the kNN monitor scores and that the checkpoint
    #: hands to `reprlab probe` / `finetune` ("backbone", or e.g. DINO's EMA teacher)
    probe_backbone = "backbone"

    def __init__(self, cfg, splits, device) -> None:
        # the views and crop counts the method declares (load_config checks them too; a config
        # built in code is checked here, before anything is built)
        type(cfg.method).view_rules().check(cfg.method.name, cfg.views)
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
