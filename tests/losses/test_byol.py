"""Tests for BYOL's loss (Grill et al. 2020) against a slow float64 reference.

The reference walks over the samples and writes each one's loss as ``2 - 2 cos``, the paper's
second form, while the vectorised loss uses the squared distance of unit vectors; agreement
of values and autograd gradients checks one against the other.
"""

from __future__ import annotations

import pytest
import torch
from torch import Tensor

from reprlab.errors import ReprlabError
from reprlab.losses import byol_loss


def slow_byol(p: Tensor, z: Tensor) -> Tensor:
    """Per sample: 2 - 2 <p, z> / (|p| |z|); then the mean over samples."""
    per_sample = []
    for p_i, z_i in zip(p.unbind(0), z.unbind(0)):
        cosine = torch.dot(p_i, z_i) / (
            torch.sqrt(torch.dot(p_i, p_i)) * torch.sqrt(torch.dot(z_i, z_i))
        )
        per_sample.append(2.0 - 2.0 * cosine)
    return torch.stack(per_sample).sum() / len(per_sample)


def _assert_rel_close(actual: Tensor, expected: Tensor, rel: float) -> None:
    scale = expected.abs().max().clamp_min(1e-12)
    err = (actual.double() - expected.double()).abs().max()
    assert err <= rel * scale, f"max err {err.item():.3e} > {rel:.0e} * scale {scale.item():.3e}"


@pytest.mark.parametrize("batch", [2, 3, 8, 17])
@pytest.mark.parametrize(("dim", "noise"), [(4, 0.1), (16, 1.0), (32, 3.0)])
def test_byol_matches_slow_reference_values_and_gradients(
    batch: int, dim: int, noise: float
) -> None:
    gen = torch.Generator().manual_seed(100 * batch + dim)
    base_p = torch.randn(batch, dim, generator=gen, dtype=torch.float64)
    base_z = 2.0 * base_p + noise * torch.randn(batch, dim, generator=gen, dtype=torch.float64)

    rp, rz = base_p.clone().requires_grad_(), base_z.clone().requires_grad_()
    ref = slow_byol(rp, rz)
    ref_gp, ref_gz = torch.autograd.grad(ref, (rp, rz))

    p, z = base_p.clone().requires_grad_(), base_z.clone().requires_grad_()
    got = byol_loss(p, z)
    assert got.dtype == torch.float64
    gp, gz = torch.autograd.grad(got, (p, z))
    assert abs(got.item() - ref.item()) <= 1e-10 * abs(ref.item())
    _assert_rel_close(gp, ref_gp, 1e-10)
    # The loss does not detach the target: its gradient in z is the reference's, not zero.
    _assert_rel_close(gz, ref_gz, 1e-10)
    assert gz.abs().max() > 0

    # float32 path: same loss to float32 precision.
    p32 = base_p.float().requires_grad_()
    got32 = byol_loss(p32, base_z.float())
    assert got32.dtype == torch.float32
    assert abs(got32.item() - ref.item()) <= 1e-5 * abs(ref.item())
    (g32,) = torch.autograd.grad(got32, p32)
    _assert_rel_close(g32, ref_gp, 1e-4)


def test_byol_closed_forms_aligned_opposite_orthogonal_and_scale_invariance() -> None:
    gen = torch.Generator().manual_seed(0)
    p = torch.randn(6, 10, generator=gen, dtype=torch.float64)
    positive = torch.rand(6, 1, generator=gen, dtype=torch.float64) + 0.1
    assert byol_loss(p, p * positive).item() == pytest.approx(0.0, abs=1e-14)
    assert byol_loss(p, -p * positive).item() == pytest.approx(4.0, rel=1e-14)
    e = torch.eye(4, dtype=torch.float64)
    assert byol_loss(e, e.roll(1, dims=1)).item() == pytest.approx(2.0, rel=1e-14)
    z = torch.randn(6, 10, generator=gen, dtype=torch.float64)
    assert byol_loss(3.0 * p, 0.25 * z).item() == pytest.approx(byol_loss(p, z).item(), rel=1e-13)


def test_byol_near_convergence_float32_keeps_relative_precision() -> None:
    # cos ~ 1 - 1e-6: 2 - 2cos in float32 would keep at most a digit of a ~2e-6 loss.
    gen = torch.Generator().manual_seed(1)
    p = torch.randn(8, 64, generator=gen, dtype=torch.float64)
    z = p + 1e-3 * torch.randn(8, 64, generator=gen, dtype=torch.float64) / 8
    ref = slow_byol(p, z).item()
    assert ref < 1e-5
    assert byol_loss(p.float(), z.float()).item() == pytest.approx(ref, rel=1e-3)


def test_byol_bf16_computes_in_float32_and_rejects_bad_input() -> None:
    p, z = torch.randn(4, 8).bfloat16(), torch.randn(4, 8).bfloat16()
    assert byol_loss(p, z).dtype == torch.float32
    with pytest.raises(ReprlabError, match=r"\(4, 8\) and \(4, 9\)"):
        byol_loss(torch.randn(4, 8), torch.randn(4, 9))
    with pytest.raises(ReprlabError, match="expected a floating"):
        byol_loss(torch.randn(8), torch.randn(8))
    with pytest.raises(ReprlabError, match="int64"):
        byol_loss(torch.ones(2, 3, dtype=torch.long), torch.ones(2, 3, dtype=torch.long))
