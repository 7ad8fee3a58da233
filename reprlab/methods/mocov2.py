"""MoCo v2 (Chen, Fan, Girshick & He 2020, "Improved baselines with momentum contrastive
learning"; He et al. 2020, "Momentum contrast for unsupervised visual representation
learning").

A query encoder (backbone + MLP projector) and a key encoder, its EMA, embed two views of every
image; each query is contrasted against its own image's key and a queue of keys of earlier
batches (InfoNCE over 1 + K logits, eq. 1). The queue is a registered buffer of unit rows with
a write pointer: the keys of each step are written at the pointer (wrapping around), so the
queue always holds the most recent ``queue_size`` keys. It starts as random unit vectors, as in
the paper's code.

Recipe (configs/pretrain/mocov2_cifar100.toml) follows solo-learn's CIFAR "MoCo v2+" setting:
the loss symmetrised over the two views (``symmetric = true``; the paper uses one direction),
projector 2048 -> 256 without BN (paper: 2048 -> 128), temperature 0.2, key-encoder momentum
0.99 -> 0.999 along a cosine (paper, on ImageNet: 0.999 constant), SGD lr 0.3 at batch 256,
weight decay 1e-4, 10 warm-up epochs then cosine, 1000 epochs, "symmetric_weak" views.
solo-learn keeps one queue of 32768 keys per view; here one queue of 65536 receives both views'
keys, which holds the same keys and lets each query see all of them. Neither uses the paper's
shuffled BN (a multi-GPU device against BN leaking the positive through batch statistics).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from reprlab import distributed
from reprlab.losses import moco_infonce
from reprlab.methods.base import register_method
from reprlab.methods.configs import MoCoV2Config
from reprlab.methods.ssl import SSLMethod
from reprlab.models.heads import ProjectionHead
from reprlab.models.momentum import ema_update_, momentum_copy


@register_method("mocov2")
class MoCoV2(SSLMethod):
    Config = MoCoV2Config

    def __init__(self, cfg, splits, device) -> None:
        super().__init__(cfg, splits, device)
        m = cfg.method
        self.projector = ProjectionHead(self.backbone.num_features, m.proj_hidden_dim, m.proj_out_dim, 2, batch_norm=False)
        # the key encoder: a frozen copy of the query encoder, its EMA (after_optimizer_step)
        self.target_backbone = momentum_copy(self.backbone)
        self.target_projector = momentum_copy(self.projector)
        self.register_buffer("queue", F.normalize(torch.randn(m.queue_size, m.proj_out_dim), dim=1))
        self.register_buffer("queue_ptr", torch.zeros((), dtype=torch.long))  # row the next key goes to
        self._keys: torch.Tensor | None = None  # this step's keys, enqueued after the optimiser step

    def training_step(self, images, labels, generator, ctx):
        m = self.cfg.method
        x = torch.cat(self.views(images, generator))
        h = self.encode(x)
        q1, q2 = self.projector(h).float().chunk(2)
        with torch.no_grad():
            k1, k2 = F.normalize(self.target_projector(self.encode(x, self.target_backbone)).float(), dim=1).chunk(2)
        if m.symmetric:
            loss = 0.5 * (moco_infonce(q1, k2, self.queue, m.temperature) + moco_infonce(q2, k1, self.queue, m.temperature))
            self._keys = torch.cat([k1, k2])
        else:
            loss = moco_infonce(q1, k2, self.queue, m.temperature)
            self._keys = k2
        return loss, {"momentum": ctx.value(m.momentum), **self.online_probe_step(h, labels)}

    def after_optimizer_step(self, ctx) -> None:
        # The key encoder moves after the query encoder's step, towards it, at the scheduled momentum.
        m = ctx.value(self.cfg.method.momentum)
        ema_update_(self.target_backbone, self.backbone, m)
        ema_update_(self.target_projector, self.projector, m)
        # The queue changes only now: this step's loss used it as it was (its keys are the
        # positives, not negatives), backward needed it unchanged, and an fp16-skipped step
        # (no call of this hook) leaves it as it was.
        if self._keys is not None:
            self.enqueue(distributed.gather_nograd(self._keys))
            self._keys = None

    @torch.no_grad()
    def enqueue(self, keys: torch.Tensor) -> None:
        """Write ``keys`` (N, D) at the pointer, oldest first, wrapping; without a host sync."""
        size, n = self.queue.shape[0], keys.shape[0]
        if n > size:  # only the newest `size` keys survive
            keys, skip = keys[n - size:], n - size
        else:
            skip = 0
        rows = (self.queue_ptr + skip + torch.arange(keys.shape[0], device=keys.device)) % size
        self.queue.index_copy_(0, rows, keys.to(self.queue.dtype))
        self.queue_ptr.copy_((self.queue_ptr + n) % size)
