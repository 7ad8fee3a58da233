"""Tests for the projection and linear heads (reprlab/models/heads.py)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from reprlab.errors import ReprlabError
from reprlab.models.heads import LinearHead, ProjectionHead

@pytest.mark.parametrize("num_layers", [1, 2, 3])
@pytest.mark.parametrize("batch_norm", [True, False])
def test_projection_head_structure_and_shape(num_layers: int, batch_norm: bool) -> None:
    head = ProjectionHead(
        12, hidden_dim=20, out_dim=6, num_layers=num_layers, batch_norm=batch_norm
    )
    modules = list(head.net)
    linears = [m for m in modules if isinstance(m, nn.Linear)]
    assert len(linears) == num_layers
    assert sum(isinstance(m, nn.BatchNorm1d) for m in modules) == (num_layers - 1) * batch_norm
    assert sum(isinstance(m, nn.ReLU) for m in modules) == num_layers - 1
    assert isinstance(modules[-1], nn.Linear)  # no activation on the embedding
    assert linears[0].in_features == 12 and linears[-1].out_features == 6
    assert head(torch.randn(4, 12)).shape == (4, 6)


def test_projection_head_default_is_simclr_v1() -> None:
    head = ProjectionHead(512)
    kinds = [type(m) for m in head.net]
    assert kinds == [nn.Linear, nn.BatchNorm1d, nn.ReLU, nn.Linear]
    assert head.net[0].out_features == 2048 and head.net[3].out_features == 128


def test_linear_head_zero_bias_and_errors() -> None:
    head = LinearHead(8, 100)
    assert head(torch.randn(3, 8)).shape == (3, 100)
    assert torch.count_nonzero(head.bias) == 0
    assert torch.count_nonzero(head.weight) > 0
    with pytest.raises(ReprlabError, match="num_classes=0"):
        LinearHead(8, 0)
    with pytest.raises(ReprlabError, match="num_layers=0"):
        ProjectionHead(8, num_layers=0)
    with pytest.raises(ReprlabError, match="hidden_dim=-3"):
        ProjectionHead(8, hidden_dim=-3)
