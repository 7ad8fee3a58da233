"""Losses compute in full precision under the loop's autocast: the same float32 inputs give
the same loss, bit for bit, with and without ``torch.autocast("cpu", dtype=torch.bfloat16)``."""

from __future__ import annotations

import pytest
import torch

from reprlab import losses as L


def _cases():
    g = torch.Generator().manual_seed(0)
    r = lambda *s: torch.randn(*s, generator=g)  # noqa: E731
    z1, z2, q = r(16, 8), r(16, 8), r(32, 8)
    crops = [r(16, 10) for _ in range(4)]
    return {
        "nt_xent": lambda: L.nt_xent(z1, z2, 0.2),
        "byol": lambda: L.byol_loss(z1, z2),
        "simsiam": lambda: L.simsiam_loss(z1, z2, z2, z1),
        "mocov2": lambda: L.moco_infonce(z1, z2, torch.nn.functional.normalize(q, dim=1), 0.2),
        "mocov3": lambda: L.mocov3_loss(z1, z2, 0.2),
        "barlow_twins": lambda: L.barlow_twins_loss(z1, z2, 0.0051),
        "vicreg": lambda: L.vicreg_loss(z1, z2).loss,
        "dino": lambda: L.dino_loss(crops, crops[:2], torch.zeros(10), 0.1, 0.04, 2),
        "swav": lambda: L.swav_loss(crops[:2], [L.sinkhorn_knopp(c) for c in crops[:2]], 0.1),
        "soft_ce": lambda: L.soft_cross_entropy(z1, torch.softmax(z2, 1)),
    }


@pytest.mark.parametrize("name", list(_cases()))
def test_loss_is_float32_and_identical_under_bf16_autocast(name):
    fn = _cases()[name]
    ref = fn()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = fn()
    assert out.dtype == torch.float32 and torch.equal(out, ref), (name, out, ref)
