"""Find ViT shapes whose parameter count matches a CNN's.

The research question compares a CNN and a Vision Transformer (Dosovitskiy et al. 2021) at
matched parameter count. :func:`match_vit` enumerates ViT shapes (depth x width x MLP ratio x
patch size) with the closed-form count of :func:`reprlab.models.vit.vit_param_count`, keeps
those within ``tolerance`` of the target, ranks them, and instantiates every returned candidate
on the meta device to check that the closed form equals ``sum(p.numel())`` of the real module
(a disagreement is a bug in this package and raises ``RuntimeError``).

Ranking (first key first):

1. the relative parameter gap, in bins of 0.5 % of the target: gaps below half a percent are
   treated as equal, because such a difference is far below anything that moves accuracy and a
   strict ordering by gap would otherwise let a 0.1 % gap beat a far more usual shape at 0.3 %;
2. with a FLOP target, the relative FLOP gap;
3. a shape penalty ``|log2((dim/depth) / 32)| + |log2(mlp_ratio / 4)|``: width/depth ratio 32 is
   the geometric middle of the ViT/DeiT family (DeiT-Ti 192/12 = 16, DeiT-S 384/12 = 32,
   ViT-B 768/12 = 64; Touvron et al. 2021), and an MLP ratio of 4 is what they all use;
4. the exact parameter gap.

Heads: each shape gets one head count, ``dim / head_dim`` for the first of ``head_dims`` that
divides ``dim`` (64 then 32 by default, the per-head widths of ViT/DeiT and of narrow CIFAR
ViTs). Heads change neither the parameter nor the FLOP count.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass, replace

import torch

from reprlab.errors import ReprlabError
from reprlab.models.flops import count_flops, count_params
from reprlab.models.vit import ViT, vit_flop_count, vit_param_count

GAP_BIN = 0.005
REFERENCE_ASPECT = 32.0
DEFAULT_DIMS = tuple(range(128, 1025, 32))


@dataclass(frozen=True)
class Candidate:
    """One ViT shape, its parameter and FLOP counts and its gaps to the targets."""

    depth: int
    dim: int
    heads: int
    mlp_ratio: float
    patch_size: int
    pool: str
    params: int
    flops: int
    param_gap: int  # params - target (signed)
    rel_gap: float  # param_gap / target
    flops_rel_gap: float | None = None
    shape_penalty: float = 0.0
    verified: bool = False

    @property
    def head_dim(self) -> int:
        return self.dim // self.heads

    def kwargs(self) -> dict[str, object]:
        """Keyword arguments for ``create_model("vit", **kwargs)``."""
        return {
            "depth": self.depth, "dim": self.dim, "heads": self.heads,
            "mlp_ratio": self.mlp_ratio, "patch_size": self.patch_size, "pool": self.pool,
        }

    def override(self) -> str:
        """``key=value`` pairs naming the registered ``vit`` factory's keyword arguments."""
        mlp = int(self.mlp_ratio) if float(self.mlp_ratio).is_integer() else self.mlp_ratio
        text = f"depth={self.depth} dim={self.dim} heads={self.heads} mlp_ratio={mlp} patch_size={self.patch_size}"
        return text if self.pool == "token" else f"{text} pool={self.pool}"


def _positive_ints(label: str, values: Iterable[int]) -> tuple[int, ...]:
    out = tuple(values)
    if not out or any(not isinstance(v, int) or isinstance(v, bool) or v < 1 for v in out):
        raise ReprlabError(f"{label}={out!r} is not usable; expected a non-empty list of positive ints")
    return out


def _shape_penalty(depth: int, dim: int, mlp_ratio: float) -> float:
    return abs(math.log2(dim / depth / REFERENCE_ASPECT)) + abs(math.log2(mlp_ratio / 4.0))


def match_vit(
    target_params: int,
    tolerance: float = 0.02,
    num_classes: int = 100,
    patch_sizes: Iterable[int] = (4,),
    depths: Iterable[int] = range(4, 16),
    dims: Iterable[int] = DEFAULT_DIMS,
    mlp_ratios: Iterable[float] = (2, 3, 4),
    flops_target: int | None = None,
    flops_tolerance: float | None = None,
    head_dims: Iterable[int] = (64, 32),
    pool: str = "token",
    img_size: int = 32,
    top: int | None = 10,
) -> list[Candidate]:
    """ViT shapes within ``tolerance`` (relative) of ``target_params``, best first (see module doc).

    ``flops_target`` (FLOPs per image, ``flops.FLOP_CONVENTION``) adds the FLOP gap to the ranking;
    ``flops_tolerance`` additionally drops candidates whose FLOPs are further than that relative
    gap from it. At most ``top`` candidates are returned (all when ``None``); each returned one is
    instantiated on the meta device and its parameter count (and, with a FLOP target, its FLOP
    count) checked against the closed form.
    """
    if not isinstance(target_params, int) or isinstance(target_params, bool) or target_params < 1:
        raise ReprlabError(f"target_params={target_params!r} is not usable; expected a positive int")
    if not isinstance(tolerance, (int, float)) or not 0 < tolerance < 1:
        raise ReprlabError(f"tolerance={tolerance!r} is not usable; expected a fraction in (0, 1), e.g. 0.02")
    if not isinstance(num_classes, int) or num_classes < 0:
        raise ReprlabError(f"num_classes={num_classes!r} is not usable; expected an int >= 0")
    if flops_target is not None and (not isinstance(flops_target, int) or flops_target < 1):
        raise ReprlabError(f"flops_target={flops_target!r} is not usable; expected a positive int")
    if flops_tolerance is not None:
        if flops_target is None:
            raise ReprlabError("flops_tolerance given without flops_target; expected both or neither")
        if not isinstance(flops_tolerance, (int, float)) or flops_tolerance <= 0:
            raise ReprlabError(f"flops_tolerance={flops_tolerance!r} is not usable; expected a positive fraction")
    if top is not None and (not isinstance(top, int) or top < 1):
        raise ReprlabError(f"top={top!r} is not usable; expected a positive int or None")
    if pool not in ("token", "avg"):
        raise ReprlabError(f"pool={pool!r} is unknown; expected 'token' or 'avg'")
    patch_sizes = _positive_ints("patch_sizes", patch_sizes)
    depths = _positive_ints("depths", depths)
    dims = _positive_ints("dims", dims)
    head_dims = _positive_ints("head_dims", head_dims)
    mlp_ratios = tuple(mlp_ratios)
    if not mlp_ratios or any(not isinstance(r, (int, float)) or r <= 0 for r in mlp_ratios):
        raise ReprlabError(f"mlp_ratios={mlp_ratios!r} is not usable; expected a non-empty list of positive numbers")
    bad_patch = [p for p in patch_sizes if img_size % p]
    if bad_patch:
        raise ReprlabError(f"patch_sizes {bad_patch} do not divide img_size={img_size}; expected divisors such as 2, 4, 8")

    found: list[Candidate] = []
    for patch in patch_sizes:
        for depth in depths:
            for dim in dims:
                heads = next((dim // hd for hd in head_dims if dim % hd == 0), None)
                if heads is None:
                    continue
                for ratio in mlp_ratios:
                    params = vit_param_count(depth, dim, ratio, patch, img_size, num_classes, pool)
                    gap = params - target_params
                    if abs(gap) > tolerance * target_params:
                        continue
                    flops = vit_flop_count(depth, dim, ratio, patch, img_size, num_classes, pool)
                    fgap = None if flops_target is None else (flops - flops_target) / flops_target
                    if flops_tolerance is not None and abs(fgap) > flops_tolerance:  # type: ignore[arg-type]
                        continue
                    found.append(
                        Candidate(depth, dim, heads, ratio, patch, pool, params, flops, gap, gap / target_params,
                                  fgap, _shape_penalty(depth, dim, ratio))
                    )

    found.sort(
        key=lambda c: (
            math.floor(abs(c.rel_gap) / GAP_BIN),
            abs(c.flops_rel_gap) if c.flops_rel_gap is not None else 0.0,
            c.shape_penalty,
            abs(c.param_gap),
            c.depth,
        )
    )
    chosen = found if top is None else found[:top]
    return [_verify(c, num_classes, img_size, check_flops=flops_target is not None) for c in chosen]


def _verify(c: Candidate, num_classes: int, img_size: int, check_flops: bool) -> Candidate:
    # The meta device allocates no memory and skips the initialisers' arithmetic, so checking a
    # 100 M-parameter shape costs a fraction of a second.
    with torch.device("meta"):
        model = ViT(num_classes, img_size, c.patch_size, c.depth, c.dim, c.heads, c.mlp_ratio, c.pool)
    real = count_params(model)
    if real != c.params:
        raise RuntimeError(f"closed-form ViT count {c.params} != instantiated {real} for {c.override()}")
    if check_flops:
        measured = count_flops(model, img_size)
        if measured != c.flops:
            raise RuntimeError(f"closed-form ViT FLOPs {c.flops} != counted {measured} for {c.override()}")
    return replace(c, verified=True)
