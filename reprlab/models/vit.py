"""Vision Transformers (Dosovitskiy et al. 2021) for 32x32 inputs, built on timm's ``VisionTransformer``.

The CIFAR ViTs cut a 32x32 image into 4x4 patches (64 tokens, plus a class token when
``pool="token"``) instead of ViT's 16x16 patches, which would leave only 4 tokens. The blocks are
timm's pre-norm blocks: LayerNorm, multi-head self-attention (qkv with bias by default), LayerNorm,
GELU MLP of width ``int(dim * mlp_ratio)``; stochastic depth (``drop_path_rate``) grows linearly
with depth as in DeiT (Touvron et al. 2021).

Pooling: ``pool="token"`` reads the class token after the final LayerNorm (ViT/DeiT);
``pool="avg"`` has no class token, averages the patch tokens and applies the LayerNorm after
pooling (timm's convention for average pooling). The two differ by ``2*dim`` parameters
(class token + one position-embedding row).

Parameter count (checked against ``sum(p.numel())`` by the tests; see :func:`vit_param_count`)::

    patch embed  3*p*p*D + D          class token  D (token pooling only)
    positions    (T + prefix)*D       per block    4*D^2 + 2*D*H + 9*D + H
    final norm   2*D                  classifier   D*C + C

with T = (img_size / p)^2 patches, H = int(D * mlp_ratio), 6*D instead of 9*D without qkv bias.

Registered presets (parameter counts with the 100-class head, token pooling):

==================  =====  ====  =====  ===  =====  ===========  ===============================
name                depth  dim   heads  mlp  patch  params       shape
==================  =====  ====  =====  ===  =====  ===========  ===============================
vit (defaults)      6      256   4      4    4      4,794,212    small default for quick runs
vit_c100_tiny       12     192   3      4    4      5,380,132    DeiT-Ti blocks
vit_c100_small      12     384   6      4    4      21,376,996   DeiT-S blocks (ResNet-34 +0.2 %)
vit_c100_r18        9      320   5      4    4      11,166,180   ResNet-18 -0.5 % (match_vit #1)
vit_b16_plus6_224   18     768   12     4    16     128,402,788  ViT-B/16 + copies of blocks 6..11
==================  =====  ====  =====  ===  =====  ===========  ===============================
"""

from __future__ import annotations

import copy
from collections.abc import Sequence

import torch
import torch.nn as nn
from timm.layers import DropPath
from timm.models.vision_transformer import VisionTransformer

from reprlab.errors import ReprlabError
from reprlab.models.registry import register_model
from reprlab.models.transfer import read_weights_file

POOLS = ("token", "avg")
HEAD_DIMS = (64, 32)  # preferred per-head widths, in order: ViT/DeiT use 64; 32 for narrow models


def default_heads(dim: int) -> int:
    """Heads for width ``dim``: head width 64 where it divides ``dim``, else 32."""
    for hd in HEAD_DIMS:
        if dim % hd == 0:
            return dim // hd
    raise ReprlabError(f"ViT dim {dim} has no default head count; expected a multiple of 32, or pass heads=")


def _check_config(
    img_size: int, patch_size: int, depth: int, dim: int, heads: int, mlp_ratio: float, pool: str, drop_path_rate: float
) -> None:
    # Checked here rather than left to timm's asserts so a bad override names the value.
    for label, value in (("img_size", img_size), ("patch_size", patch_size), ("depth", depth), ("dim", dim), ("heads", heads)):
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise ReprlabError(f"ViT {label}={value!r} is not usable; expected a positive int")
    if img_size % patch_size:
        raise ReprlabError(f"ViT patch_size={patch_size} does not divide img_size={img_size}; expected a divisor such as 2, 4 or 8")
    if dim % heads:
        raise ReprlabError(f"ViT heads={heads} does not divide dim={dim}; expected a divisor (head width 32 or 64 is usual)")
    if not isinstance(mlp_ratio, (int, float)) or mlp_ratio <= 0 or int(dim * mlp_ratio) < 1:
        raise ReprlabError(f"ViT mlp_ratio={mlp_ratio!r} is not usable; expected a positive number")
    if pool not in POOLS:
        raise ReprlabError(f"ViT pool={pool!r} is unknown; expected one of {', '.join(POOLS)}")
    if not isinstance(drop_path_rate, (int, float)) or not 0.0 <= drop_path_rate < 1.0:
        raise ReprlabError(f"ViT drop_path_rate={drop_path_rate!r} is not usable; expected a number in [0, 1)")


class ViT(VisionTransformer):
    """timm ``VisionTransformer`` with the registry contract (``embed``/``get_classifier``/...)."""

    def __init__(
        self,
        num_classes: int = 100,
        img_size: int = 32,
        patch_size: int = 4,
        depth: int = 6,
        dim: int = 256,
        heads: int | None = None,
        mlp_ratio: float = 4.0,
        pool: str = "token",
        drop_path_rate: float = 0.0,
        qkv_bias: bool = True,
        drop_rate: float = 0.0,
    ) -> None:
        if not isinstance(num_classes, int) or num_classes < 0:
            raise ReprlabError(f"num_classes {num_classes!r} is not usable; expected an int >= 0")
        if isinstance(dim, int) and heads is None:
            heads = default_heads(dim)
        _check_config(img_size, patch_size, depth, dim, heads, mlp_ratio, pool, drop_path_rate)  # type: ignore[arg-type]
        super().__init__(
            img_size=img_size,
            patch_size=patch_size,
            num_classes=num_classes,
            global_pool=pool,
            # Average pooling leaves a class token unused (it would get no gradient), so it only
            # exists for token pooling.
            class_token=pool == "token",
            embed_dim=dim,
            depth=depth,
            num_heads=heads,
            mlp_ratio=mlp_ratio,
            qkv_bias=qkv_bias,
            drop_rate=drop_rate,
            drop_path_rate=drop_path_rate,
        )
        self.input_size = img_size
        self.config = {
            "img_size": img_size, "patch_size": patch_size, "depth": depth, "dim": dim, "heads": heads,
            "mlp_ratio": mlp_ratio, "pool": pool, "qkv_bias": qkv_bias,
        }

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        # timm's pre_logits output: pooled token(s) after the final norm, before the classifier.
        return self.forward_head(self.forward_features(x), pre_logits=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        return self.head(self.embed(x))

    def get_classifier(self) -> nn.Module:
        return self.head

    def reset_classifier(self, num_classes: int, global_pool: str | None = None) -> None:
        if not isinstance(num_classes, int) or num_classes < 0:
            raise ReprlabError(f"num_classes {num_classes!r} is not usable; expected an int >= 0")
        if global_pool is not None and global_pool != self.global_pool:
            # Switching pooling would change which parameters exist (class token); rebuild instead.
            raise ReprlabError(f"global_pool={global_pool!r} differs from the built {self.global_pool!r}; rebuild the model")
        super().reset_classifier(num_classes)

    def set_drop_path(self, drop_path_rate: float) -> None:
        """Reset stochastic depth to grow linearly from 0 to ``drop_path_rate`` over the blocks."""
        if not isinstance(drop_path_rate, (int, float)) or not 0.0 <= drop_path_rate < 1.0:
            raise ReprlabError(f"ViT drop_path_rate={drop_path_rate!r} is not usable; expected a number in [0, 1)")
        n = len(self.blocks)
        for i, blk in enumerate(self.blocks):
            rate = drop_path_rate * i / (n - 1) if n > 1 else 0.0
            blk.drop_path1 = DropPath(rate) if rate > 0 else nn.Identity()
            blk.drop_path2 = DropPath(rate) if rate > 0 else nn.Identity()


def vit_param_count(
    depth: int,
    dim: int,
    mlp_ratio: float = 4.0,
    patch_size: int = 4,
    img_size: int = 32,
    num_classes: int = 100,
    pool: str = "token",
    qkv_bias: bool = True,
) -> int:
    """Closed-form parameter count of :class:`ViT` (equal to ``sum(p.numel())``; tests check it)."""
    hidden = int(dim * mlp_ratio)
    tokens = (img_size // patch_size) ** 2
    prefix = 1 if pool == "token" else 0
    # norm1 (2D) + qkv (3D^2 [+3D]) + proj (D^2 + D) + norm2 (2D) + fc1 (DH + H) + fc2 (HD + D)
    block = 4 * dim * dim + 2 * dim * hidden + (9 if qkv_bias else 6) * dim + hidden
    stem = 3 * patch_size * patch_size * dim + dim + prefix * dim + (tokens + prefix) * dim
    head = dim * num_classes + num_classes if num_classes else 0
    return stem + depth * block + 2 * dim + head


def vit_flop_count(
    depth: int,
    dim: int,
    mlp_ratio: float = 4.0,
    patch_size: int = 4,
    img_size: int = 32,
    num_classes: int = 100,
    pool: str = "token",
) -> int:
    """Closed-form forward FLOPs per image of :class:`ViT` under ``flops.FLOP_CONVENTION``.

    Multiply-add = 2 FLOPs; per block over N tokens: qkv ``6ND^2``, QK^T and AV ``2N^2D`` each,
    output projection ``2ND^2``, MLP ``4NDH``. Norms, softmax, GELU and biases are not counted.
    """
    hidden = int(dim * mlp_ratio)
    patches = (img_size // patch_size) ** 2
    n = patches + (1 if pool == "token" else 0)
    patch_embed = 2 * 3 * patch_size * patch_size * dim * patches
    block = 8 * n * dim * dim + 4 * n * n * dim + 4 * n * dim * hidden
    return patch_embed + depth * block + (2 * dim * num_classes if num_classes else 0)


@register_model("vit", family="vit", description="ViT for 32x32 inputs; kwargs depth, dim, heads, mlp_ratio, patch_size, pool, ...")
def vit(
    num_classes: int = 100,
    depth: int = 6,
    dim: int = 256,
    heads: int | None = None,
    mlp_ratio: float = 4.0,
    patch_size: int = 4,
    pool: str = "token",
    drop_path_rate: float = 0.0,
    qkv_bias: bool = True,
    drop_rate: float = 0.0,
    img_size: int = 32,
) -> ViT:
    """Any ViT shape; ``heads`` defaults to ``dim // 64`` (or ``dim // 32`` when 64 does not divide)."""
    return ViT(num_classes, img_size, patch_size, depth, dim, heads, mlp_ratio, pool, drop_path_rate, qkv_bias, drop_rate)


@register_model("vit_c100_tiny", family="vit", description="ViT, DeiT-Ti blocks (12 x 192, 3 heads), patch 4: 5.38 M params")
def vit_c100_tiny(num_classes: int = 100, pool: str = "token", drop_path_rate: float = 0.0, drop_rate: float = 0.0) -> ViT:
    """DeiT-Ti's block shape (Touvron et al. 2021) on 4x4 patches of a 32x32 image."""
    return ViT(num_classes, 32, 4, 12, 192, 3, 4.0, pool, drop_path_rate, True, drop_rate)


@register_model("vit_c100_small", family="vit", description="ViT, DeiT-S blocks (12 x 384, 6 heads), patch 4: 21.38 M params")
def vit_c100_small(num_classes: int = 100, pool: str = "token", drop_path_rate: float = 0.0, drop_rate: float = 0.0) -> ViT:
    """DeiT-S's block shape (Touvron et al. 2021) on 4x4 patches of a 32x32 image."""
    return ViT(num_classes, 32, 4, 12, 384, 6, 4.0, pool, drop_path_rate, True, drop_rate)


# match_vit(11_220_132) ranks this first: -0.48 % parameters, width/depth ratio 35.6 close to
# DeiT-S's 32, standard MLP ratio 4 and head width 64.
R18_SHAPE = {"depth": 9, "dim": 320, "heads": 5, "mlp_ratio": 4.0, "patch_size": 4}


@register_model("vit_c100_r18", family="vit", description="ViT 9 x 320, 5 heads, patch 4: 11.17 M params, matched to CIFAR ResNet-18 (11.22 M)")
def vit_c100_r18(num_classes: int = 100, pool: str = "token", drop_path_rate: float = 0.0, drop_rate: float = 0.0) -> ViT:
    """The top :func:`reprlab.models.match.match_vit` candidate for CIFAR ResNet-18 (11,220,132 params).

    Depth 9, dim 320, 5 heads of width 64, MLP ratio 4, patch 4: 11,166,180 params (-0.48 %).
    """
    s = R18_SHAPE
    return ViT(num_classes, 32, s["patch_size"], s["depth"], s["dim"], s["heads"], s["mlp_ratio"], pool, drop_path_rate, True, drop_rate)


def read_vit_weights(weights: str, reference: nn.Module) -> dict[str, torch.Tensor]:
    """Read a timm-layout ViT state dict and check it against ``reference``, except its classifier.

    The file may hold the state dict itself or wrap it under ``"model"``/``"state_dict"``;
    every non-classifier tensor of ``reference`` (which may live on the meta device) must be
    present with the same shape. Returns exactly those tensors: the file's classifier (any
    number of classes) is dropped, so a model keeps its freshly initialised head.
    """
    path, sd = read_weights_file(weights, "ViT", "a timm ViT state dict (.pth)", wrappers=("model", "state_dict"))
    if not isinstance(sd, dict):
        raise ReprlabError(f"weights file {path} holds a {type(sd).__name__}; expected a timm ViT state dict")
    own = {k: v for k, v in reference.state_dict().items() if not k.startswith("head.")}
    for key, ref in own.items():
        got = tuple(sd[key].shape) if isinstance(sd.get(key), torch.Tensor) else "missing"
        if got != tuple(ref.shape):
            raise ReprlabError(f"weights file {path}: key {key!r} is {got}, expected shape {tuple(ref.shape)}")
    return {k: sd[k] for k in own}


def build_extended_vit(
    num_classes: int,
    copy_blocks: Sequence[int],
    weights: str | None = None,
    drop_path_rate: float = 0.0,
    **shape: object,
) -> ViT:
    """Build ``ViT(**shape)``, optionally load ``weights``, then append copies of ``copy_blocks``.

    The copies are deep copies (independent parameters with the same starting values) appended
    after all original blocks, in the order given, so with ``copy_blocks=range(6, 12)`` on a
    12-block model the 18 blocks run 0..11 then copies of 6..11. Copies are made whether or not
    weights are loaded, so the architecture (and its initial function) is the same either way.
    """
    sd = None
    if weights:
        # Check the file against a meta-device twin first, so a wrong path or layout fails before
        # ~100 M parameters are initialised.
        with torch.device("meta"):
            reference = ViT(num_classes=num_classes, **shape)  # type: ignore[arg-type]
        sd = read_vit_weights(weights, reference)
    model = ViT(num_classes=num_classes, **shape)  # type: ignore[arg-type]
    if sd is not None:
        model.load_state_dict(sd, strict=False)
    n = len(model.blocks)
    idx = list(copy_blocks)
    bad = [i for i in idx if not isinstance(i, int) or not 0 <= i < n]
    if bad:
        raise ReprlabError(f"copy_blocks {bad} out of range; expected block indices in 0..{n - 1}")
    model.blocks = nn.Sequential(*model.blocks, *[copy.deepcopy(model.blocks[i]) for i in idx])
    model.config["depth"] = len(model.blocks)
    model.copied_blocks = tuple(idx)
    # Stochastic depth is laid out over the final depth, as if the model had been built that deep.
    model.set_drop_path(drop_path_rate)
    return model


@register_model(
    "vit_b16_plus6_224",
    family="vit",
    input_size=224,
    heavy=True,
    description="ViT-B/16 at 224 px extended to 18 blocks by copying blocks 6..11 (~128.4 M params at 100 classes)",
)
def vit_b16_plus6_224(num_classes: int = 100, weights: str | None = None, drop_path_rate: float = 0.0) -> ViT:
    """ViT-B/16 (depth 12, dim 768, 12 heads) grown to 18 blocks: blocks 0..11, then copies of 6..11.

    ``weights=PATH`` loads a timm-layout ViT-B/16 (224 px, class token) state dict into the 12-block
    model before the copies are made, so the copied blocks start from the pretrained values.
    """
    return build_extended_vit(
        num_classes,
        copy_blocks=range(6, 12),
        weights=weights,
        drop_path_rate=drop_path_rate,
        img_size=224,
        patch_size=16,
        depth=12,
        dim=768,
        heads=12,
        mlp_ratio=4.0,
        pool="token",
    )
