"""ViT shape matching (reprlab/models/match.py): within tolerance, ranked, filtered, with real counts."""

from __future__ import annotations

import pytest
import torch

from reprlab.errors import ReprlabError
from reprlab.models import create_model
from reprlab.models.flops import count_params
from reprlab.models.match import GAP_BIN, match_vit
from reprlab.models.vit import R18_SHAPE, vit_param_count


def _meta(name: str, **kw):
    with torch.device("meta"):
        return create_model(name, **kw)


@pytest.mark.parametrize("target", ["resnet18", "resnet34", "vgg16_bn"])
def test_match_within_tolerance_and_counts_are_real(target: str) -> None:
    params = count_params(_meta(target))
    found = match_vit(params, tolerance=0.02, top=3)
    assert len(found) == 3
    for c in found:
        assert c.verified
        assert abs(c.params - params) <= 0.02 * params
        assert c.param_gap == c.params - params
        assert c.dim % c.heads == 0 and c.head_dim in (32, 64)
        # Build through the registry exactly as the printed kwargs say.
        model = _meta("vit", num_classes=100, **c.kwargs())
        assert sum(p.numel() for p in model.parameters()) == c.params
        assert f"depth={c.depth} dim={c.dim} heads={c.heads}" in c.override()
    # Ranked: the 0.5 % bins never go down.
    bins = [int(abs(c.rel_gap) / GAP_BIN) for c in found]
    assert bins == sorted(bins)


def test_resnet18_best_match_is_the_preset_and_really_instantiates() -> None:
    best = match_vit(11_220_132, top=1)[0]
    assert {k: getattr(best, k) for k in R18_SHAPE} == R18_SHAPE
    model = create_model("vit", **best.kwargs())  # a real CPU model this time
    assert sum(p.numel() for p in model.parameters()) == best.params == 11_166_180


def test_match_ranking_and_filters() -> None:
    all_found = match_vit(11_220_132, tolerance=0.01, top=None)
    assert len(all_found) >= 4
    assert all(abs(c.rel_gap) <= 0.01 for c in all_found)
    keys = [(int(abs(c.rel_gap) / GAP_BIN), c.shape_penalty) for c in all_found]
    assert keys == sorted(keys)
    # A FLOP target and tolerance keep only shapes within it, ranked by FLOP gap inside a bin.
    target = 1_500_000_000
    with_flops = match_vit(11_220_132, tolerance=0.02, flops_target=target, flops_tolerance=0.01, top=4)
    assert len(with_flops) == 4 and all(abs(c.flops - target) <= 0.01 * target for c in with_flops)
    assert [int(abs(c.rel_gap) / GAP_BIN) for c in with_flops] == sorted(int(abs(c.rel_gap) / GAP_BIN) for c in with_flops)
    assert all(c.flops_rel_gap is not None for c in with_flops)
    # Head width 32 only when asked.
    narrow = match_vit(11_220_132, head_dims=(32,), top=2)
    assert all(c.head_dim == 32 for c in narrow)


def test_match_analytic_count_for_other_patch_and_pool() -> None:
    found = match_vit(5_000_000, patch_sizes=(2, 8), pool="avg", mlp_ratios=(4,), top=4)
    assert {c.patch_size for c in found} <= {2, 8}
    for c in found:
        assert vit_param_count(c.depth, c.dim, 4, c.patch_size, 32, 100, "avg") == c.params
        assert count_params(_meta("vit", **c.kwargs())) == c.params


@pytest.mark.parametrize(
    "kw, fragment",
    [
        ({"target_params": 0}, "target_params"),
        ({"tolerance": 0}, "tolerance"),
        ({"patch_sizes": (5,)}, "patch_sizes"),
        ({"flops_tolerance": 0.1}, "flops_target"),
        ({"dims": ()}, "dims"),
        ({"top": 0}, "top"),
    ],
)
def test_match_rejects_bad_input(kw: dict, fragment: str) -> None:
    args = {"target_params": 11_000_000, **kw}
    with pytest.raises(ReprlabError, match=fragment):
        match_vit(**args)
