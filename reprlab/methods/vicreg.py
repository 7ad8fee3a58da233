"""VICReg (Bardes, Ponce & LeCun 2022, "VICReg: variance-invariance-covariance regularization
for self-supervised learning").

Two views of every image go through one network (backbone + a 3-layer expander); the loss
(eq. 6) pulls the two embeddings of an image together (invariance, an MSE), keeps the standard
deviation of every embedding dimension above 1 over the batch (variance hinge) and decorrelates
the dimensions (covariance). No negatives, no momentum target.

Data parallel, as in the paper's code: the invariance term is per sample, computed on the local
batch; the variance and covariance terms are batch statistics, computed on the embeddings
gathered from every rank (``reprlab.distributed.gather``, differentiable). On one process both
are the whole batch. The three unweighted terms are logged as ``train/invariance``,
``train/variance`` and ``train/covariance``.

Recipe (configs/pretrain/vicreg_cifar100.toml) follows solo-learn's CIFAR setting, which departs
from the paper's ImageNet one in: expander 2048-2048-2048 (paper: 8192 throughout), LARS lr 0.3,
eta 0.02, weight decay 1e-4 at batch 256, 1000 epochs (paper: base lr 0.2 x batch/256, batch
2048, wd 1e-6), and views without blur (crop scale 0.2-1, saturation jitter 0.2, solarisation
0.1). Coefficients 25 / 25 / 1 are the paper's. As in the other methods here, both views pass
through the network as one batch (BatchNorm statistics over both views).
"""

from __future__ import annotations


import torch

from reprlab import distributed
from reprlab.losses import vicreg_loss
from reprlab.methods.base import register_method
from reprlab.methods.configs import VICRegConfig
from reprlab.methods.ssl import SSLMethod
from reprlab.models.heads import ProjectionHead


@register_method("vicreg")
class VICReg(SSLMethod):
    Config = VICRegConfig


    def __init__(self, cfg, splits, device) -> None:
        super().__init__(cfg, splits, device)
        m = cfg.method
        self.projector = ProjectionHead(self.backbone.num_features, m.proj_hidden_dim, m.proj_out_dim, m.proj_layers)

    def training_step(self, images, labels, generator, ctx):
        m = self.cfg.method
        x = torch.cat(self.views(images, generator))
        h = self.encode(x)
        z1, z2 = self.projector(h).float().chunk(2)
        invariance = (z1 - z2).pow(2).mean()  # local: a per-sample term
        terms = vicreg_loss(distributed.gather(z1), distributed.gather(z2), m.sim_coeff, m.std_coeff, m.cov_coeff)
        loss = m.sim_coeff * invariance + m.std_coeff * terms.variance + m.cov_coeff * terms.covariance
        return loss, {"invariance": invariance.detach(), "variance": terms.variance.detach(), "covariance": terms.covariance.detach(), **self.online_probe_step(h, labels)}
