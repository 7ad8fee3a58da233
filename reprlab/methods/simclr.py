"""SimCLR (Chen et al. 2020, "A Simple Framework for Contrastive Learning of Visual
Representations").

Two views of every image from one on-device pipeline (random resized crop, flip, colour jitter,
grayscale; blur and solarisation optional), a two-layer projection head, and the NT-Xent loss
over the 2N views of the batch. Recipe: configs/pretrain/simclr_cifar100.toml.
"""

from __future__ import annotations


import torch

from reprlab import distributed
from reprlab.losses import nt_xent
from reprlab.methods.base import register_method
from reprlab.methods.configs import SimCLRConfig
from reprlab.methods.ssl import SSLMethod
from reprlab.models.heads import ProjectionHead


@register_method("simclr")
class SimCLR(SSLMethod):
    Config = SimCLRConfig

    def __init__(self, cfg, splits, device) -> None:
        super().__init__(cfg, splits, device)
        m = cfg.method
        self.projector = ProjectionHead(self.backbone.num_features, m.proj_hidden_dim, m.proj_out_dim, m.proj_layers)

    def training_step(self, images, labels, generator, ctx):
        v1, v2 = self.views(images, generator)
        h = self.encode(torch.cat([v1, v2]))
        z1, z2 = self.projector(h).float().chunk(2)
        # under data parallelism every other rank's views are extra negatives (gradients flow back)
        gather = distributed.gather_others if distributed.is_distributed() else None
        return nt_xent(z1, z2, self.cfg.method.temperature, gather=gather), self.online_probe_step(h, labels)
