"""Barlow Twins' mechanics inside the method, on real CIFAR-100 images: the loss is the paper's
eq. 1 with the recipe's coefficients on the method's own projections, and the cross-correlation
is taken over the global batch when the batch is split over (simulated) ranks."""

from __future__ import annotations

import pytest
import torch

from helpers_methods import MethodWorld, batch, capture_outputs, tiny_method
from reprlab.losses import barlow_twins_loss
from reprlab.methods.base import StepContext

pytestmark = pytest.mark.realdata
CTX = StepContext(0, 10, 10)


def reference_loss(z1: torch.Tensor, z2: torch.Tensor, lambd: float, scale: float) -> torch.Tensor:
    """Eq. 1 of the paper written out in float64: standardise each dimension over the batch
    (biased variance + 1e-5, as batch norm), C = zn1^T zn2 / N, then the two sums."""
    z1, z2 = z1.double(), z2.double()
    zn1 = (z1 - z1.mean(0)) / torch.sqrt(z1.var(0, unbiased=False) + 1e-5)
    zn2 = (z2 - z2.mean(0)) / torch.sqrt(z2.var(0, unbiased=False) + 1e-5)
    c = zn1.T @ zn2 / z1.shape[0]
    on = sum((1 - c[i, i]) ** 2 for i in range(c.shape[0]))
    off = sum(c[i, j] ** 2 for i in range(c.shape[0]) for j in range(c.shape[0]) if i != j)
    return scale * (on + lambd * off)


def test_loss_is_eq_1_with_the_recipe_coefficients(cifar):
    method = tiny_method("barlow_twins", cifar)
    m = method.cfg.method
    assert (m.lambd, m.scale_loss, m.proj_layers) == (0.0051, 0.1, 3)
    z = capture_outputs(method.projector)
    method.train()
    loss, extra = method.training_step(batch(cifar, 32), None, torch.Generator().manual_seed(0), CTX)
    z1, z2 = z[0].chunk(2)
    assert extra == {}
    torch.testing.assert_close(loss.double(), reference_loss(z1, z2, 0.0051, 0.1), rtol=1e-5, atol=1e-6)


def test_cross_correlation_is_over_the_global_batch(cifar, monkeypatch):
    world = MethodWorld(2, monkeypatch)
    ranks = [tiny_method("barlow_twins", cifar) for _ in range(2)]
    ranks[1].load_state_dict(ranks[0].state_dict())
    images = batch(cifar, 32).chunk(2)
    z = [capture_outputs(r.projector) for r in ranks]

    def step(rank):
        ranks[rank].train()
        return ranks[rank].training_step(images[rank], None, torch.Generator().manual_seed(rank), CTX)[0]

    losses = world.run(step)
    z1 = torch.cat([z[r][0].chunk(2)[0] for r in range(2)])
    z2 = torch.cat([z[r][0].chunk(2)[1] for r in range(2)])
    expected = barlow_twins_loss(z1, z2, 0.0051, 0.1)
    for r in range(2):
        torch.testing.assert_close(losses[r], expected, rtol=1e-5, atol=1e-6)
        local = barlow_twins_loss(*z[r][0].chunk(2), 0.0051, 0.1)
        assert not torch.allclose(losses[r], local, rtol=1e-3), "the loss is the rank's local one"
