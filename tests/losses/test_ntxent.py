"""Tests for NT-Xent (Chen et al. 2020).

The vectorised loss is checked against a slow float64 reference that walks over every anchor
and every candidate with Python loops, so a masking or indexing slip in the matrix version
shows up as a value or gradient mismatch.
"""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor

from reprlab.errors import ReprlabError
from reprlab.losses import NTXentLoss, nt_xent


def slow_nt_xent(z1: Tensor, z2: Tensor, temperature: float, extra: Tensor | None = None) -> Tensor:
    """NT-Xent written pair by pair: anchor i, positive its partner, negatives all k != i."""
    n = z1.shape[0]
    # unbind (rather than indexing row by row) keeps autograd's backward cheap for N = 33.
    unit = [v / v.norm() for v in list(z1.unbind(0)) + list(z2.unbind(0))]
    unit_extra = [] if extra is None else [v / v.norm() for v in extra.unbind(0)]

    total = []
    for i in range(2 * n):
        partner = i + n if i < n else i - n
        numerator = torch.exp(torch.dot(unit[i], unit[partner]) / temperature)
        terms = [
            torch.exp(torch.dot(unit[i], unit[k]) / temperature) for k in range(2 * n) if k != i
        ]
        terms += [torch.exp(torch.dot(unit[i], other) / temperature) for other in unit_extra]
        total.append(-torch.log(numerator / torch.stack(terms).sum()))
    return torch.stack(total).sum() / (2 * n)


def _grads(loss: Tensor, *inputs: Tensor) -> tuple[Tensor, ...]:
    return torch.autograd.grad(loss, inputs)


def _assert_rel_close(actual: Tensor, expected: Tensor, rel: float) -> None:
    """Elementwise match relative to the tensor's scale (tiny entries can't be relatively exact)."""
    actual, expected = actual.double(), expected.double()
    scale = expected.abs().max().clamp_min(1e-12)
    err = (actual - expected).abs().max()
    assert err <= rel * scale, f"max err {err.item():.3e} > {rel:.0e} * scale {scale.item():.3e}"


@pytest.mark.parametrize("batch", [2, 3, 8, 33])
@pytest.mark.parametrize("temperature", [0.07, 0.1, 0.5, 1.0])
def test_nt_xent_matches_slow_reference_values_and_gradients(
    batch: int, temperature: float
) -> None:
    gen = torch.Generator().manual_seed(1000 * batch + int(temperature * 100))
    base1 = torch.randn(batch, 16, generator=gen, dtype=torch.float64)
    # Correlated second view so the positives are not random pairs (a realistic regime).
    base2 = base1 + 0.7 * torch.randn(batch, 16, generator=gen, dtype=torch.float64)

    r1, r2 = base1.clone().requires_grad_(), base2.clone().requires_grad_()
    ref = slow_nt_xent(r1, r2, temperature)
    ref_g1, ref_g2 = _grads(ref, r1, r2)

    # float32: the production dtype; agreement to ~1e-5 shows the float32 path is stable.
    f1, f2 = base1.float().requires_grad_(), base2.float().requires_grad_()
    got = nt_xent(f1, f2, temperature)
    assert got.dtype == torch.float32
    g1, g2 = _grads(got, f1, f2)
    assert abs(got.item() - ref.item()) <= 1e-5 * abs(ref.item())
    _assert_rel_close(g1, ref_g1, 1e-5)
    _assert_rel_close(g2, ref_g2, 1e-5)

    # float64 stays float64, so the formula itself must agree to near machine precision.
    d1, d2 = base1.clone().requires_grad_(), base2.clone().requires_grad_()
    got64 = nt_xent(d1, d2, temperature)
    h1, h2 = _grads(got64, d1, d2)
    assert got64.dtype == torch.float64
    assert abs(got64.item() - ref.item()) <= 1e-10 * abs(ref.item())
    _assert_rel_close(h1, ref_g1, 1e-10)
    _assert_rel_close(h2, ref_g2, 1e-10)


@pytest.mark.parametrize("batch", [8, 33])
@pytest.mark.parametrize("temperature", [0.05, 0.07])
def test_nt_xent_float64_exact_when_negatives_outscore_the_positive(
    batch: int, temperature: float
) -> None:
    # Anti-aligned views (z2 ~ -z1) at a small temperature put the negatives' log-sum-exp more
    # than 20 above the positive logit: past softplus's default threshold, which would drop a
    # term of exp(-20) ~ 2e-9 from the value and the gradient. float64 must stay exact there.
    gen = torch.Generator().manual_seed(batch)
    base1 = torch.randn(batch, 16, generator=gen, dtype=torch.float64)
    base2 = -base1 + 0.3 * torch.randn(batch, 16, generator=gen, dtype=torch.float64)

    r1, r2 = base1.clone().requires_grad_(), base2.clone().requires_grad_()
    ref = slow_nt_xent(r1, r2, temperature)
    ref_g1, ref_g2 = _grads(ref, r1, r2)
    d1, d2 = base1.clone().requires_grad_(), base2.clone().requires_grad_()
    got = nt_xent(d1, d2, temperature)
    g1, g2 = _grads(got, d1, d2)
    assert abs(got.item() - ref.item()) <= 1e-12 * abs(ref.item())
    _assert_rel_close(g1, ref_g1, 1e-10)
    _assert_rel_close(g2, ref_g2, 1e-10)

    # The regime is the one the test is about: some anchor is past the default threshold.
    with torch.no_grad():
        views = F.normalize(torch.cat([base1, base2]), dim=1)
        logits = views @ views.T / temperature
        idx = torch.arange(2 * batch)
        pos = logits[idx, (idx + batch) % (2 * batch)]
        logits[idx, idx] = float("-inf")
        logits[idx, (idx + batch) % (2 * batch)] = float("-inf")
        assert (torch.logsumexp(logits, dim=1) - pos).max() > 20.0


@pytest.mark.parametrize("batch", [2, 5])
@pytest.mark.parametrize("temperature", [0.1, 0.5, 2.0])
def test_nt_xent_closed_form_aligned_positives_orthogonal_negatives(
    batch: int, temperature: float
) -> None:
    # z1[i] = z2[i] = c_i * e_i: positives have similarity 1 and all 2N-2 negatives 0, so every
    # anchor's loss is -log(e^{1/t} / (e^{1/t} + 2N - 2)) = log(1 + (2N - 2) e^{-1/t}).
    scales = torch.arange(1, batch + 1, dtype=torch.float32)  # norms must not matter
    z = torch.diag(scales)
    z = torch.cat([z, torch.zeros(batch, 3)], dim=1)
    expected = math.log1p((2 * batch - 2) * math.exp(-1.0 / temperature))
    got = nt_xent(z, z.clone(), temperature)
    assert got.item() == pytest.approx(expected, rel=1e-6)


def test_nt_xent_gather_adds_remote_negatives() -> None:
    gen = torch.Generator().manual_seed(7)
    z1 = torch.randn(4, 8, generator=gen, dtype=torch.float64)
    z2 = z1 + 0.5 * torch.randn(4, 8, generator=gen, dtype=torch.float64)
    # Rows "held by other ranks": deliberately not unit-norm, plus a learnable parameter so
    # that gradients flowing back through the gathered rows are checked too.
    remote = (3.0 * torch.randn(6, 8, generator=gen, dtype=torch.float64)).requires_grad_()
    calls: list[tuple[int, ...]] = []

    def fake_gather(local: Tensor) -> Tensor:
        calls.append(tuple(local.shape))
        # Local rows arrive L2-normalised; the hook returns only the other ranks' rows.
        assert torch.allclose(local.norm(dim=1), torch.ones(8, dtype=local.dtype))
        return remote

    for temperature in (0.1, 0.5):
        a1, a2 = z1.clone().requires_grad_(), z2.clone().requires_grad_()
        ref = slow_nt_xent(a1, a2, temperature, extra=remote)
        ref_grads = _grads(ref, a1, a2, remote)

        b1, b2 = z1.float().requires_grad_(), z2.float().requires_grad_()
        got = nt_xent(b1, b2, temperature, gather=fake_gather)
        got_grads = _grads(got, b1, b2, remote)
        assert got.item() == pytest.approx(ref.item(), rel=1e-5)
        for g, r in zip(got_grads, ref_grads):
            _assert_rel_close(g, r, 1e-5)
        # The extra negatives must actually change the loss (positives stay local).
        assert got.item() > nt_xent(z1, z2, temperature).item() + 1e-3
    assert calls == [(8, 8), (8, 8)]

    # An empty gather (single rank) is the plain loss.
    empty = nt_xent(z1, z2, 0.5, gather=lambda local: local.new_zeros(0, 8))
    assert empty.item() == pytest.approx(nt_xent(z1, z2, 0.5).item(), rel=1e-12)


def test_nt_xent_bf16_inputs_compute_in_float32_and_small_temperature_is_finite() -> None:
    gen = torch.Generator().manual_seed(3)
    z1 = torch.randn(16, 32, generator=gen).bfloat16()
    z2 = (z1.float() + 0.1 * torch.randn(16, 32, generator=gen)).bfloat16()
    got = nt_xent(z1, z2, 0.1)
    assert got.dtype == torch.float32
    ref = slow_nt_xent(z1.double(), z2.double(), 0.1)
    assert got.item() == pytest.approx(ref.item(), rel=1e-5)

    # Huge logits (t = 1e-3 gives |logit| up to 1000) must not overflow to inf/nan.
    huge = nt_xent(z1.float() * 1e4, z2.float() * 1e4, 1e-3)
    assert torch.isfinite(huge)
    a = z1.float().requires_grad_()
    (g,) = _grads(nt_xent(a, z2.float(), 1e-3), a)
    assert torch.isfinite(g).all()


def test_nt_xent_module_wrapper() -> None:
    loss = NTXentLoss(temperature=0.2)
    assert loss.temperature == 0.2
    assert "temperature=0.2" in repr(loss)
    z1, z2 = torch.randn(5, 4), torch.randn(5, 4)
    assert loss(z1, z2).item() == pytest.approx(nt_xent(z1, z2, 0.2).item(), rel=1e-7)
    loss.temperature = 0.9  # the attribute is what forward uses
    assert loss(z1, z2).item() == pytest.approx(nt_xent(z1, z2, 0.9).item(), rel=1e-7)


@pytest.mark.parametrize(
    ("z1", "z2", "temperature", "match"),
    [
        (torch.randn(1, 4), torch.randn(1, 4), 0.5, "batch size 1"),
        (torch.randn(3, 4), torch.randn(4, 4), 0.5, r"\(3, 4\) and \(4, 4\)"),
        (torch.randn(3, 4), torch.randn(3, 5), 0.5, r"\(3, 4\) and \(3, 5\)"),
        (torch.randn(3), torch.randn(3), 0.5, "expected two equal"),
        (torch.randn(3, 4), torch.randn(3, 4), 0.0, "temperature 0.0"),
        (torch.randn(3, 4), torch.randn(3, 4), -1.0, "temperature -1.0"),
        (torch.randn(3, 4), torch.randn(3, 4), float("nan"), "temperature nan"),
        (torch.ones(3, 4, dtype=torch.long), torch.ones(3, 4, dtype=torch.long), 0.5, "int64"),
    ],
)
def test_nt_xent_rejects_bad_input(z1: Tensor, z2: Tensor, temperature: float, match: str) -> None:
    with pytest.raises(ReprlabError, match=match):
        nt_xent(z1, z2, temperature)


def test_nt_xent_rejects_bad_gather_and_module_temperature() -> None:
    z = torch.randn(3, 4)
    with pytest.raises(ReprlabError, match=r"gather returned \(2, 5\)"):
        nt_xent(z, z, gather=lambda local: torch.zeros(2, 5))
    with pytest.raises(ReprlabError, match="temperature 0"):
        NTXentLoss(temperature=0)
