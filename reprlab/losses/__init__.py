"""Training losses: SimCLR's NT-Xent (Chen et al. 2020) and a soft-target cross-entropy."""

from reprlab.losses.ntxent import GatherFn, NTXentLoss, nt_xent
from reprlab.losses.soft_ce import soft_cross_entropy

__all__ = ["GatherFn", "NTXentLoss", "nt_xent", "soft_cross_entropy"]
