"""MoCo v3 (Chen, Xie & He 2021, "An empirical study of training self-supervised vision
transformers"), ResNet variant.

The query branch is backbone + projector + predictor, the key branch the EMA of backbone +
projector; there is no queue: the negatives of a query are the keys of the other images of the
(global) batch. The loss is the paper's ``2t``-scaled InfoNCE, symmetrised as in its Algorithm 1:
``ctr(q1, k2) + ctr(q2, k1)``. Keys are gathered from every rank without gradient, and query i
of rank r finds its positive at row ``r * B + i`` of the gathered keys.

Recipe (configs/pretrain/mocov3_cifar100.toml) follows solo-learn's CIFAR setting: projector
4096 -> 256 and predictor 4096 -> 256, BN on every hidden layer and on the projector's output
(affine-free), none on the predictor's output; temperature 0.2; momentum 0.99 -> 1 along a
cosine; LARS lr 0.3 at batch 256 (eta 0.02, weight decay 1e-6), 10 warm-up epochs, 1000
epochs; BYOL's asymmetric views (solarisation 0 / 0.2, no blur). Departures from the paper:
its ResNet-50 ImageNet setting trains at batch 4096 with temperature 1.0 (weight decay 1e-6,
1.5e-6 at 1000 epochs, per its official code); its text gives the projector 3 layers, while
its official ResNet code and solo-learn use 2 (``proj_layers``: default 3, the recipe 2).
solo-learn's LARS clips the adapted lr at the global one; the recipe does too (optim.lars_clip_lr).
"""

from __future__ import annotations

import torch

from reprlab import distributed
from reprlab.losses import mocov3_loss
from reprlab.methods.base import register_method
from reprlab.methods.configs import MoCoV3Config
from reprlab.methods.ssl import SSLMethod
from reprlab.models.heads import ProjectionHead
from reprlab.models.momentum import ema_update_, momentum_copy


@register_method("mocov3")
class MoCoV3(SSLMethod):
    Config = MoCoV3Config

    def __init__(self, cfg, splits, device) -> None:
        super().__init__(cfg, splits, device)
        m = cfg.method
        self.projector = ProjectionHead(self.backbone.num_features, m.proj_hidden_dim, m.proj_out_dim, m.proj_layers, last_batch_norm=True)
        self.predictor = ProjectionHead(m.proj_out_dim, m.pred_hidden_dim, m.proj_out_dim, 2)
        # the key encoder: a frozen copy of backbone and projector, their EMA (after_optimizer_step)
        self.target_backbone = momentum_copy(self.backbone)
        self.target_projector = momentum_copy(self.projector)

    def training_step(self, images, labels, generator, ctx):
        m = self.cfg.method
        x = torch.cat(self.views(images, generator))
        h = self.encode(x)
        q1, q2 = self.predictor(self.projector(h)).float().chunk(2)
        with torch.no_grad():
            k1, k2 = self.target_projector(self.encode(x, self.target_backbone)).float().chunk(2)
            k1, k2 = distributed.gather_nograd(k1), distributed.gather_nograd(k2)
        offset = distributed.rank() * q1.shape[0]  # where this rank's keys start in the gathered ones
        loss = mocov3_loss(q1, k2, m.temperature, offset) + mocov3_loss(q2, k1, m.temperature, offset)
        return loss, {"momentum": ctx.value(m.momentum), **self.online_probe_step(h, labels)}

    def after_optimizer_step(self, ctx):
        # The key encoder moves after the query encoder's step, towards it, at the scheduled momentum.
        m = ctx.value(self.cfg.method.momentum)
        ema_update_(self.target_backbone, self.backbone, m)
        ema_update_(self.target_projector, self.projector, m)
