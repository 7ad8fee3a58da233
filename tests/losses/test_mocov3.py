"""Tests for MoCo v3's in-batch InfoNCE (Chen, Xie & He 2021) against a slow float64
reference, including keys gathered from several ranks (the positive's row offset)."""

from __future__ import annotations

import math

import pytest
import torch
from torch import Tensor

from reprlab.errors import ReprlabError
from reprlab.losses import mocov3_loss


def slow_mocov3(q: Tensor, k: Tensor, temperature: float, offset: int) -> Tensor:
    """2t * mean_i -log( e^{q_i.k_{offset+i}/t} / sum_j e^{q_i.k_j/t} ), unit rows."""
    keys = [k_j / torch.sqrt(torch.dot(k_j, k_j)) for k_j in k.unbind(0)]
    losses = []
    for i, q_i in enumerate(q.unbind(0)):
        q_unit = q_i / torch.sqrt(torch.dot(q_i, q_i))
        numerator = torch.exp(torch.dot(q_unit, keys[offset + i]) / temperature)
        denominator = sum(torch.exp(torch.dot(q_unit, k_j) / temperature) for k_j in keys)
        losses.append(-torch.log(numerator / denominator))
    return 2.0 * temperature * torch.stack(losses).sum() / len(losses)


def _assert_rel_close(actual: Tensor, expected: Tensor, rel: float) -> None:
    scale = expected.abs().max().clamp_min(1e-12)
    err = (actual.double() - expected.double()).abs().max()
    assert err <= rel * scale, f"max err {err.item():.3e} > {rel:.0e} * scale {scale.item():.3e}"


@pytest.mark.parametrize("batch", [2, 3, 8, 17])
@pytest.mark.parametrize("temperature", [0.1, 0.2, 1.0])
@pytest.mark.parametrize(("world", "rank"), [(1, 0), (3, 0), (3, 2)])
def test_mocov3_matches_slow_reference(
    batch: int, temperature: float, world: int, rank: int
) -> None:
    gen = torch.Generator().manual_seed(batch * 10 + world + rank)
    q0 = torch.randn(batch, 12, generator=gen, dtype=torch.float64)
    keys0 = torch.randn(world * batch, 12, generator=gen, dtype=torch.float64)
    keys0[rank * batch : (rank + 1) * batch] = q0 + 0.7 * torch.randn(
        batch, 12, generator=gen, dtype=torch.float64
    )
    offset = rank * batch

    qr, kr = q0.clone().requires_grad_(), keys0.clone().requires_grad_()
    ref = slow_mocov3(qr, kr, temperature, offset)
    ref_g = torch.autograd.grad(ref, (qr, kr))

    q, k = q0.clone().requires_grad_(), keys0.clone().requires_grad_()
    got = mocov3_loss(q, k, temperature, rank_offset=offset)
    assert got.dtype == torch.float64
    got_g = torch.autograd.grad(got, (q, k))
    assert abs(got.item() - ref.item()) <= 1e-10 * abs(ref.item())
    for g, r in zip(got_g, ref_g):
        _assert_rel_close(g, r, 1e-10)

    got32 = mocov3_loss(q0.float(), keys0.float(), temperature, rank_offset=offset)
    assert abs(got32.item() - ref.item()) <= 1e-5 * abs(ref.item())

    if world > 1:  # the offset matters: pointing it at another rank's keys changes the loss
        wrong = mocov3_loss(q0, keys0, temperature, rank_offset=((rank + 1) % world) * batch)
        assert abs(wrong.item() - ref.item()) > 1e-3 * abs(ref.item())


@pytest.mark.parametrize("temperature", [0.1, 0.2, 1.0])
@pytest.mark.parametrize("world", [1, 2])
def test_mocov3_closed_form_with_2t_factor(temperature: float, world: int) -> None:
    # Orthonormal q_i = k_i among M = world * B orthonormal keys: each positive logit is 1/t,
    # every other logit 0, so the loss is 2t log(1 + (M - 1) e^{-1/t}).
    batch = 3
    eye = torch.eye(world * batch, dtype=torch.float64)
    q = 2.0 * eye[(world - 1) * batch :]
    expected = 2.0 * temperature * math.log1p((world * batch - 1) * math.exp(-1.0 / temperature))
    got = mocov3_loss(q, 5.0 * eye, temperature, rank_offset=(world - 1) * batch)
    assert got.item() == pytest.approx(expected, rel=1e-12)


def test_mocov3_rejects_bad_input() -> None:
    q = torch.randn(4, 8)
    with pytest.raises(ReprlabError, match="M >= 4"):
        mocov3_loss(q, torch.randn(3, 8))
    with pytest.raises(ReprlabError, match=r"\(8, 7\)"):
        mocov3_loss(q, torch.randn(8, 7))
    with pytest.raises(ReprlabError, match="rank_offset 5 is out of range"):
        mocov3_loss(q, torch.randn(8, 8), rank_offset=5)
    with pytest.raises(ReprlabError, match="rank_offset -1 is out of range"):
        mocov3_loss(q, torch.randn(8, 8), rank_offset=-1)
    with pytest.raises(ReprlabError, match="rank_offset True is not an int"):
        mocov3_loss(q, torch.randn(8, 8), rank_offset=True)
    with pytest.raises(ReprlabError, match="temperature -0.2"):
        mocov3_loss(q, q, temperature=-0.2)
