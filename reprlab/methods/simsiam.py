"""SimSiam (Chen & He 2021, "Exploring simple Siamese representation learning").

One network, two views: a projector maps each view's features to ``z``, a bottleneck
predictor maps ``z`` to ``p``, and the loss is the symmetrised negative cosine between each
view's prediction and the other view's projection, with a stop-gradient on the projection
(eq. 2; inside :func:`reprlab.losses.simsiam_loss`). No negatives, no momentum encoder: the
stop-gradient alone keeps the representation from collapsing (the paper's Sec. 4.1), and the
logged ``z_std`` (per-dimension std of the unit-normalised projections; about 1/sqrt(D) when
healthy, 0 when collapsed) watches for it.

Architecture as in the paper (Sec. 3): projector of 3 Linear layers with BN on every layer,
the output one included (without affine parameters); predictor ``D -> 512 -> D`` with BN on
its hidden layer only.

Recipe (configs/pretrain/simsiam_cifar100.toml) follows solo-learn's CIFAR setting: projector
2048 -> 2048, predictor hidden 512, SGD lr 0.5 at batch 256, weight decay 1e-5, 10 warm-up
epochs then cosine, 1000 epochs, and its "symmetric_weak" views (jitter 0.4/0.4/0.4/0.1, blur
with probability 0.5). Departures from the paper: its ImageNet lr is 0.05 x batch/256 with
weight decay 1e-4, and its predictor's learning rate is held constant (not decayed), which
solo-learn copies; here the predictor follows the schedule like every other parameter,
because the loop has no per-parameter "unscheduled" option yet. The paper's own CIFAR-10
experiments (its appendix) use a smaller projector; we do not reproduce that variant.
"""

from __future__ import annotations


import torch
import torch.nn.functional as F

from reprlab.losses import simsiam_loss
from reprlab.methods.base import register_method
from reprlab.methods.configs import SimSiamConfig
from reprlab.methods.ssl import SSLMethod
from reprlab.models.heads import ProjectionHead


@register_method("simsiam")
class SimSiam(SSLMethod):
    Config = SimSiamConfig


    def __init__(self, cfg, splits, device) -> None:
        super().__init__(cfg, splits, device)
        m = cfg.method
        self.projector = ProjectionHead(self.backbone.num_features, m.proj_hidden_dim, m.proj_out_dim, m.proj_layers, last_batch_norm=True)
        self.predictor = ProjectionHead(m.proj_out_dim, m.pred_hidden_dim, m.proj_out_dim, 2)

    def training_step(self, images, labels, generator, ctx):
        # Both views in one forward (BatchNorm sees the 2B crops as one batch, the repository's
        # convention for equal-size crops); the paper forwards each view separately.
        h = self.encode(torch.cat(self.views(images, generator)))
        z = self.projector(h)
        p1, p2 = self.predictor(z).float().chunk(2)
        z1, z2 = z.float().chunk(2)
        loss = simsiam_loss(p1, p2, z1, z2)  # stop-gradient on z1, z2 inside
        with torch.no_grad():
            z_std = F.normalize(z1, dim=1).std(dim=0).mean()
        return loss, {"z_std": z_std, **self.online_probe_step(h, labels)}
