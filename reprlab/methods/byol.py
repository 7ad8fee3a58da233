"""BYOL (Grill et al. 2020, "Bootstrap your own latent: A new approach to self-supervised
learning").

An online network (backbone, projector, predictor) predicts the projection that a target
network, the EMA of the online backbone and projector, gives the other view; the loss is the
normalised MSE of eq. 2, symmetrised over the two views. No negatives: the predictor and the
slowly moving target are what keep the representation from collapsing.

Recipe (configs/pretrain/byol_cifar100.toml) follows solo-learn's CIFAR setting, which departs
from the paper's ImageNet one in the views only: on 32 px images there is no blur, and the
asymmetry between the two views is solarisation (0 / 0.2) alone; saturation jitter 0.2.
The EMA momentum rises from 0.99 to 1 along a cosine over training, as in the paper.
"""

from __future__ import annotations

import torch

from reprlab.losses import byol_loss
from reprlab.methods.base import register_method
from reprlab.methods.configs import BYOLConfig
from reprlab.methods.ssl import SSLMethod
from reprlab.models.heads import ProjectionHead
from reprlab.models.momentum import ema_update_, momentum_copy


@register_method("byol")
class BYOL(SSLMethod):
    Config = BYOLConfig

    def __init__(self, cfg, splits, device) -> None:
        super().__init__(cfg, splits, device)
        m = cfg.method
        self.projector = ProjectionHead(self.backbone.num_features, m.proj_hidden_dim, m.proj_out_dim, 2)
        self.predictor = ProjectionHead(m.proj_out_dim, m.pred_hidden_dim, m.proj_out_dim, 2)
        # the target network: a frozen copy of the online backbone and projector (no predictor)
        self.target_backbone = momentum_copy(self.backbone)
        self.target_projector = momentum_copy(self.projector)

    def training_step(self, images, labels, generator, ctx):
        x = torch.cat(self.views(images, generator))
        h = self.encode(x)
        p1, p2 = self.predictor(self.projector(h)).float().chunk(2)
        with torch.no_grad():
            z1, z2 = self.target_projector(self.encode(x, self.target_backbone)).float().chunk(2)
        loss = byol_loss(p1, z2) + byol_loss(p2, z1)
        return loss, {"momentum": ctx.value(self.cfg.method.momentum), **self.online_probe_step(h, labels)}

    def after_optimizer_step(self, ctx):
        # The target moves after the online network's step, towards it, at the scheduled momentum
        # (a pure function of the step: the value logged by training_step).
        m = ctx.value(self.cfg.method.momentum)
        ema_update_(self.target_backbone, self.backbone, m)
        ema_update_(self.target_projector, self.projector, m)
