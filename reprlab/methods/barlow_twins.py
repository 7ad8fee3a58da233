"""Barlow Twins (Zbontar et al. 2021, "Barlow Twins: self-supervised learning via redundancy
reduction").

Two views of every image go through one network (backbone + a 3-layer projector); the
cross-correlation matrix of the two views' batch-standardised embeddings is pushed towards the
identity: its diagonal to 1 (invariance), its off-diagonal to 0 (redundancy reduction, weight
``lambd``). No negatives, no momentum target, no predictor.

The cross-correlation is over the global batch: the loss sums its batch statistics with
``reprlab.distributed.all_reduce_sum`` (the paper's code uses synchronised BatchNorm for the
same effect), so data-parallel training computes exactly the single-process loss.

Recipe (configs/pretrain/barlow_twins_cifar100.toml) follows solo-learn's CIFAR setting, which
departs from the paper's ImageNet one in: projector 2048-2048-2048 (paper: 8192 throughout),
the loss multiplied by ``scale_loss = 0.1`` (paper: 1; see the loss's docstring), LARS lr 0.3,
eta 0.02, weight decay 1e-4 at batch 256 (paper: lr 0.2 for weights, batch 2048, wd 1.5e-6),
and the asymmetric CIFAR views (no blur; solarisation 0 / 0.2). As in the other methods here,
both views pass through the network as one batch, so BatchNorm statistics cover both views
(the paper forwards each view separately).
"""

from __future__ import annotations


import torch

from reprlab import distributed
from reprlab.losses import barlow_twins_loss
from reprlab.methods.base import register_method
from reprlab.methods.configs import BarlowTwinsConfig
from reprlab.methods.ssl import SSLMethod
from reprlab.models.heads import ProjectionHead


@register_method("barlow_twins")
class BarlowTwins(SSLMethod):
    Config = BarlowTwinsConfig


    def __init__(self, cfg, splits, device) -> None:
        super().__init__(cfg, splits, device)
        m = cfg.method
        self.projector = ProjectionHead(self.backbone.num_features, m.proj_hidden_dim, m.proj_out_dim, m.proj_layers)

    def training_step(self, images, labels, generator, ctx):
        m = self.cfg.method
        x = torch.cat(self.views(images, generator))
        h = self.encode(x)
        z1, z2 = self.projector(h).float().chunk(2)
        loss = barlow_twins_loss(z1, z2, m.lambd, m.scale_loss, all_reduce=distributed.all_reduce_sum)
        return loss, self.online_probe_step(h, labels)
