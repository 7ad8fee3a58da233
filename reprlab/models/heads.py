"""Heads placed on top of a backbone's pooled features.

:class:`ProjectionHead` is the non-linear projection g(.) of SimCLR (Chen et al. 2020): the
contrastive loss is applied to its output, while downstream evaluation uses the features
before it, which the paper found to retain more information. :class:`LinearHead` is the
classifier used for supervised training and linear probing. :class:`DINOHead` is DINO's
projection head with its L2-normalised bottleneck and weight-normalised prototype layer.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from reprlab.errors import ReprlabError

__all__ = ["DINOHead", "LinearHead", "ProjectionHead"]


def _check_positive_int(name: str, value: object) -> int:
    """Return ``value`` if it is an int >= 1, else raise naming ``name``."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ReprlabError(f"{name}={value!r} is invalid; expected an integer >= 1")
    return value


class ProjectionHead(nn.Module):
    """MLP projection head ``Linear -> BN -> ReLU -> ... -> Linear`` (SimCLR, Chen et al. 2020).

    ``num_layers`` counts the Linear layers; every Linear except the last is followed by
    (optional) BatchNorm and a ReLU. The last layer has no activation so the loss sees an
    unconstrained embedding (it is L2-normalised inside the loss).

    Args:
        in_dim: feature size of the backbone.
        hidden_dim: width of the hidden layers.
        out_dim: size of the embedding the contrastive loss is applied to.
        num_layers: number of Linear layers (2 for the SimCLR v1 head).
        batch_norm: put BatchNorm1d after each hidden Linear.
        last_batch_norm: also normalise the output with a BatchNorm1d without affine parameters
            (SimSiam's and MoCo v3's projectors); the last Linear then has no bias.
    """

    def __init__(
        self,
        in_dim: int,
        hidden_dim: int = 2048,
        out_dim: int = 128,
        num_layers: int = 2,
        batch_norm: bool = True,
        last_batch_norm: bool = False,
    ) -> None:
        super().__init__()
        _check_positive_int("in_dim", in_dim)
        _check_positive_int("hidden_dim", hidden_dim)
        _check_positive_int("out_dim", out_dim)
        _check_positive_int("num_layers", num_layers)
        if not isinstance(batch_norm, bool):
            raise ReprlabError(f"batch_norm={batch_norm!r} is invalid; expected true or false")
        if not isinstance(last_batch_norm, bool):
            raise ReprlabError(f"last_batch_norm={last_batch_norm!r} is invalid; expected true or false")
        self.in_dim, self.hidden_dim, self.out_dim = in_dim, hidden_dim, out_dim
        self.num_layers, self.batch_norm = num_layers, batch_norm

        layers: list[nn.Module] = []
        width = in_dim
        for _ in range(num_layers - 1):
            # A bias right before BatchNorm is cancelled by its mean subtraction: drop it.
            layers.append(nn.Linear(width, hidden_dim, bias=not batch_norm))
            if batch_norm:
                layers.append(nn.BatchNorm1d(hidden_dim))
            layers.append(nn.ReLU(inplace=True))
            width = hidden_dim
        layers.append(nn.Linear(width, out_dim, bias=not last_batch_norm))
        if last_batch_norm:
            layers.append(nn.BatchNorm1d(out_dim, affine=False))
        self.net = nn.Sequential(*layers)

    def forward(self, x: Tensor) -> Tensor:
        """Map (B, in_dim) features to (B, out_dim) embeddings."""
        return self.net(x)


class LinearHead(nn.Linear):
    """A linear classifier ``(B, in_dim) -> (B, num_classes)`` with a zero-initialised bias.

    A zero bias starts training from uniform class priors instead of the random offsets of the
    default initialisation, which would otherwise favour some classes in the first steps.
    """

    def __init__(self, in_dim: int, num_classes: int) -> None:
        super().__init__(
            _check_positive_int("in_dim", in_dim), _check_positive_int("num_classes", num_classes)
        )
        nn.init.zeros_(self.bias)


class DINOHead(nn.Module):
    """DINO's head (Caron et al. 2021, Sec. 3.1): an MLP to an L2-normalised bottleneck, then a
    weight-normalised Linear without bias to ``out_dim`` logits.

    The MLP has ``num_layers`` Linear layers with GELU between them (BatchNorm optional, off in
    the paper). The last layer's weight norm ``g`` is fixed to 1 (the paper's
    ``norm_last_layer``), so each logit is the cosine between the bottleneck and one row of
    ``last_layer.weight``, whatever that row's length. MLP weights start from a normal of std
    0.02 (truncated at +-2) and biases at zero, as in the paper's code.

    Args:
        in_dim: feature size of the backbone.
        hidden_dim: width of the hidden layers (paper: 2048).
        bottleneck_dim: width of the normalised bottleneck (paper: 256).
        out_dim: number of output logits K (paper: 65536).
        num_layers: Linear layers of the MLP, >= 1 (paper: 3).
        batch_norm: put BatchNorm1d after each hidden Linear.
    """

    def __init__(
        self,
        in_dim: int,
        hidden_dim: int = 2048,
        bottleneck_dim: int = 256,
        out_dim: int = 65536,
        num_layers: int = 3,
        batch_norm: bool = False,
    ) -> None:
        super().__init__()
        for name, value in (("in_dim", in_dim), ("hidden_dim", hidden_dim), ("bottleneck_dim", bottleneck_dim), ("out_dim", out_dim), ("num_layers", num_layers)):
            _check_positive_int(name, value)
        if not isinstance(batch_norm, bool):
            raise ReprlabError(f"batch_norm={batch_norm!r} is invalid; expected true or false")
        layers: list[nn.Module] = []
        width = in_dim
        for _ in range(num_layers - 1):
            layers.append(nn.Linear(width, hidden_dim, bias=not batch_norm))
            if batch_norm:
                layers.append(nn.BatchNorm1d(hidden_dim))
            layers.append(nn.GELU())
            width = hidden_dim
        layers.append(nn.Linear(width, bottleneck_dim))
        self.mlp = nn.Sequential(*layers)
        for m in self.mlp.modules():
            if isinstance(m, nn.Linear):
                nn.init.trunc_normal_(m.weight, std=0.02)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
        self.last_layer = nn.Linear(bottleneck_dim, out_dim, bias=False)

    def forward(self, x: Tensor) -> Tensor:
        """Map (B, in_dim) features to (B, out_dim) logits, each in [-1, 1]."""
        h = F.normalize(self.mlp(x).float(), dim=-1)
        # The cosines are sharpened by temperatures down to 0.04: computed in float32 even under
        # bf16 autocast, whose 8-bit mantissa resolves a cosine near 1 only to ~0.004.
        with torch.autocast(h.device.type, enabled=False):
            return F.linear(h, F.normalize(self.last_layer.weight.float(), dim=1))
