"""Training losses: one module per self-supervised method, plus a soft-target cross-entropy.

Every loss is a pure function of tensors (no state, no communication); multi-rank variants
take an explicit hook (``gather`` for NT-Xent, ``all_reduce`` elsewhere) that defaults to a
single process.

- :mod:`~reprlab.losses.ntxent`: SimCLR's NT-Xent (Chen et al. 2020)
- :mod:`~reprlab.losses.byol`: BYOL (Grill et al. 2020)
- :mod:`~reprlab.losses.simsiam`: SimSiam (Chen & He 2021)
- :mod:`~reprlab.losses.mocov2`: MoCo v1/v2 InfoNCE with a queue (He et al. 2020; Chen et al.
  2020)
- :mod:`~reprlab.losses.mocov3`: MoCo v3 (Chen, Xie & He 2021)
- :mod:`~reprlab.losses.barlow_twins`: Barlow Twins (Zbontar et al. 2021)
- :mod:`~reprlab.losses.vicreg`: VICReg (Bardes et al. 2022)
- :mod:`~reprlab.losses.dino`: DINO (Caron et al. 2021)
- :mod:`~reprlab.losses.swav`: SwAV (Caron et al. 2020)
- :mod:`~reprlab.losses.soft_ce`: cross-entropy with soft (Mixup/CutMix) targets
"""

from reprlab.losses._common import AllReduceFn
from reprlab.losses.barlow_twins import barlow_twins_from_cc, barlow_twins_loss, cross_correlation
from reprlab.losses.byol import byol_loss
from reprlab.losses.dino import dino_center_update, dino_loss
from reprlab.losses.mocov2 import moco_infonce, moco_logits
from reprlab.losses.mocov3 import mocov3_loss
from reprlab.losses.ntxent import GatherFn, NTXentLoss, nt_xent
from reprlab.losses.simsiam import negative_cosine_similarity, simsiam_loss
from reprlab.losses.soft_ce import soft_cross_entropy
from reprlab.losses.swav import sinkhorn_knopp, swav_loss
from reprlab.losses.vicreg import VICRegTerms, vicreg_loss

__all__ = [
    "AllReduceFn",
    "GatherFn",
    "NTXentLoss",
    "VICRegTerms",
    "barlow_twins_from_cc",
    "barlow_twins_loss",
    "byol_loss",
    "cross_correlation",
    "dino_center_update",
    "dino_loss",
    "moco_infonce",
    "moco_logits",
    "mocov3_loss",
    "negative_cosine_similarity",
    "nt_xent",
    "simsiam_loss",
    "sinkhorn_knopp",
    "soft_cross_entropy",
    "swav_loss",
    "vicreg_loss",
]
