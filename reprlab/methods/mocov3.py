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

from dataclasses import dataclass, field

import torch

from reprlab import distributed
from reprlab.losses import mocov3_loss
from reprlab.methods.base import register_method
from reprlab.methods.ssl import SSLConfig, SSLMethod, asymmetric_views, check
from reprlab.models.heads import ProjectionHead
from reprlab.schedules import ScalarSchedule, Scheduled, all_values


@dataclass
class MoCoV3Config(SSLConfig):
    temperature: float = 0.2  # InfoNCE temperature (paper: 1.0 for ResNet-50, 0.2 for ViT; solo-learn CIFAR: 0.2)
    proj_hidden_dim: int = 4096  # projector hidden width
    proj_out_dim: int = 256  # projector (and predictor) output width
    proj_layers: int = 3  # projector depth in Linear layers (paper text: 3; official ResNet code and solo-learn: 2)
    pred_hidden_dim: int = 4096  # predictor hidden width (2 layers)
    momentum: Scheduled = field(default_factory=lambda: ScalarSchedule(start=0.99, end=1.0, shape="cosine"))  # key-encoder EMA momentum (paper: 0.99 -> 1 cosine for ResNet-50; solo-learn CIFAR the same)

    def validate(self) -> None:
        super().validate()
        check(self, "temperature", self.temperature > 0, "> 0")
        check(self, "proj_layers", self.proj_layers >= 1, ">= 1")
        check(self, "momentum", all(0.0 <= v <= 1.0 for v in all_values(self.momentum)), "values in [0, 1]")


@register_method("mocov3")
class MoCoV3(SSLMethod):
    Config = MoCoV3Config

    @classmethod
    def default_views(cls):
        return asymmetric_views()

    def __init__(self, cfg, splits, device) -> None:
        super().__init__(cfg, splits, device)
        m = cfg.method
        self.projector = ProjectionHead(self.backbone.num_features, m.proj_hidden_dim, m.proj_out_dim, m.proj_layers, last_batch_norm=True)
        self.predictor = ProjectionHead(m.proj_out_dim, m.pred_hidden_dim, m.proj_out_dim, 2)
        self.target_backbone = self.momentum_target(self.backbone)
        self.target_projector = self.momentum_target(self.projector)

    def training_step(self, images, labels, generator, ctx):
        m = self.cfg.method
        x = torch.cat(self.views(images, generator))
        q1, q2 = self.predictor(self.projector(self.encode(x))).float().chunk(2)
        with torch.no_grad():
            k1, k2 = self.target_projector(self.encode(x, self.target_backbone)).float().chunk(2)
            k1, k2 = distributed.gather_nograd(k1), distributed.gather_nograd(k2)
        offset = distributed.rank() * q1.shape[0]  # where this rank's keys start in the gathered ones
        loss = mocov3_loss(q1, k2, m.temperature, offset) + mocov3_loss(q2, k1, m.temperature, offset)
        return loss, {"momentum": ctx.value(m.momentum)}
