"""The parts every self-supervised method shares, written once.

* the backbone: a registry model without classifier (``num_classes=0``); the CIFAR ResNet has a
  3x3 stem whatever the pretraining set, so the features are those a 32 px image will use;
* the view pipelines (``[views.NAME]``, on the device, batched) and the multi-crop forward;
* the kNN monitor on CIFAR-100 validation, which selects ``best.pt`` (``knn/acc1``);
* the online linear probe (``method.online_probe``, on by default): a linear classifier on the
  detached features of each step's first view, with its own optimiser, scored on the
  validation split at every evaluation (``online/val_acc1``; :mod:`reprlab.eval.online_probe`).
  A method hands it those features in its ``training_step`` (:meth:`SSLMethod.online_probe_step`);
* ``model.compile``.

A method built on :class:`SSLMethod` writes its heads, its ``training_step`` and, where it has
them, its hooks: its momentum (EMA) targets (:func:`reprlab.models.momentum.momentum_copy`)
and their update after the optimiser step, its queue; see ``byol.py`` for a short example.
"""

from __future__ import annotations

import torch
from torch import nn

from reprlab.augment.views import MultiView
from reprlab.errors import ReprlabError
from reprlab.eval.knn import KNNMonitor
from reprlab.eval.online_probe import OnlineProbe
from reprlab.methods.base import Method
from reprlab.methods.configs import SSLConfig
from reprlab.models import create_model


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
        # model.compile: the compiled forward of the backbone, a function and not a module, so the
        # module tree and the checkpoint hold the backbone once, under `backbone.`, and a compiled
        # run resumes from an eager one's checkpoint and back
        self.compiled_backbone = None
        m = cfg.method
        self.monitor = KNNMonitor(splits, cfg.data, m.knn_k, m.knn_temperature, m.knn_bank_size)
        self.online_probe = None
        if m.online_probe:
            self.online_probe = OnlineProbe(self.backbone.num_features, splits.train.num_classes, m.online_probe_lr, cfg.train.seed)
            # DDP leaves its parameters alone: their update is not part of the backbone's backward
            from torch.nn.parallel import DistributedDataParallel

            DistributedDataParallel._set_params_and_buffers_to_ignore_for_model(self, [f"online_probe.{n}" for n, _ in self.online_probe.named_parameters()])

    def named_trainable(self):
        """Every trainable parameter but the online probe's (it has its own optimiser)."""
        return ((n, p, mult) for n, p, mult in super().named_trainable() if not n.startswith("online_probe."))

    def load_state_dict(self, state_dict, strict: bool = True, assign: bool = False):
        # A checkpoint written with the online probe off, or before it existed, has no
        # `online_probe.` keys: the probe starts afresh. One with it on, loaded with it off: its keys are dropped.
        has_probe = any(k.startswith("online_probe.") for k in state_dict)
        if self.online_probe is None or not has_probe:
            state_dict = {k: v for k, v in state_dict.items() if not k.startswith("online_probe.")}
            if self.online_probe is not None:
                state_dict.update({f"online_probe.{k}": v for k, v in self.online_probe.state_dict().items()})
        return super().load_state_dict(state_dict, strict=strict, assign=assign)

    def online_probe_step(self, features: torch.Tensor, labels: torch.Tensor) -> dict[str, torch.Tensor]:
        """One update of the online probe on the first view's rows of ``features`` (the first
        ``len(labels)``; detached there); its loss to log as ``train/online_loss`` ({} when off,
        or when the caller has no labels: a test calling ``training_step`` alone)."""
        if self.online_probe is None or labels is None:
            return {}
        return {"online_loss": self.online_probe.step(features[: labels.shape[0]], labels)}

    # ---- forward helpers
    def encode(self, x: torch.Tensor, net: nn.Module | None = None) -> torch.Tensor:
        """Pooled features of a float batch (the online backbone unless ``net`` is given)."""
        if self.cfg.model.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        return (net or self.compiled_backbone or self.backbone)(x)

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

    def compile(self) -> None:
        self.compiled_backbone = torch.compile(self.backbone.forward)

    # ---- monitor
    def eval_due(self, epoch: int, last: bool) -> bool:
        every = self.cfg.method.knn_every_epochs
        return last or (every > 0 and epoch % every == 0)

    def evaluate(self, split: str, epoch: int) -> dict[str, float]:
        if split != "val":
            raise ReprlabError(f"{self.name} pretraining reports kNN accuracy on the validation split only; use `reprlab probe` for test numbers")
        tc = self.cfg.train
        acc = self.monitor(getattr(self, self.probe_backbone), self.mean, self.std, tc.eval_batch_size, self.device, self.cfg.model.channels_last, self.amp_dtype)
        out = {"knn/acc1": acc}
        if self.online_probe is not None:  # over the online backbone, whose features it is trained on
            val = self.splits.val
            out["online/val_acc1"] = self.online_probe.accuracy(self.backbone, val.images, val.labels, self.mean, self.std, tc.eval_batch_size, self.device, self.cfg.model.channels_last, self.amp_dtype)
        return out
