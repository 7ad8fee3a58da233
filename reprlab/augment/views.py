"""Batched, per-sample, on-device augmentation for self-supervised views.

The pipeline follows the CIFAR recipe of SimCLR (Chen et al. 2020, "A Simple Framework for
Contrastive Learning of Visual Representations"): random resized crop, horizontal flip, colour
jitter applied with some probability, random grayscale, and optionally Gaussian blur and
solarisation (the latter two are used by later methods on ImageNet-sized images; SimCLR omits
blur on CIFAR).

Unlike a per-image PIL pipeline in data-loader workers, every step here works on a whole
``uint8`` batch at once with tensor ops, on whichever device holds the batch. Each sample still
gets its own random parameters (crop box, flip, jitter factors *and* jitter order, grayscale,
blur sigma, solarisation), and all randomness is drawn from an explicit
:class:`torch.Generator`, so a run is reproducible and can be resumed by restoring the
generator state.

Semantics match ``torchvision.transforms.v2.functional`` on float images in ``[0, 1]`` (see the
module-level op functions), with one documented difference: the crop is resampled with plain
bilinear interpolation (``align_corners=False``, taps clamped to the crop box), which equals
torchvision's tensor ``resized_crop(..., antialias=False)``. PIL's resize is antialiased when it
shrinks an image, so crops larger than the output size come out slightly sharper (more aliased)
here than with PIL, and PIL's 8-bit fixed-point arithmetic rounds differently. For CIFAR (32x32
input, 32x32 output) every crop is enlarged or kept at size, where antialiasing has no effect.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from reprlab.errors import ReprlabError

__all__ = [
    "ViewConfig",
    "ViewAugment",
    "MultiView",
    "identity_params",
    "blur_kernel_size",
    "sample_crop_boxes",
    "resized_crop",
    "rgb_to_grayscale",
    "adjust_brightness",
    "adjust_contrast",
    "adjust_saturation",
    "adjust_hue",
    "gaussian_blur",
    "solarize",
]

# ITU-R 601 luma weights, the ones torchvision and PIL use for "L" conversion.
_LUMA = (0.2989, 0.587, 0.114)

# Indices of the colour ops inside a per-sample jitter order (same order as torchvision's
# ColorJitter lists them), and a marker for "no op" in a jitter schedule.
_BRIGHTNESS, _CONTRAST, _SATURATION, _HUE, _NO_OP = 0, 1, 2, 3, 4

# Number of crop boxes tried before falling back to a centre crop (torchvision uses 10).
_CROP_TRIES = 10

# Keys that ``ViewAugment.apply`` reads from a parameter dict.
PARAM_KEYS = (
    "crop",
    "flip",
    "jitter",
    "brightness",
    "contrast",
    "saturation",
    "hue",
    "order",
    "grayscale",
    "blur",
    "blur_sigma",
    "solarize",
)


@dataclass
class ViewConfig:
    """Random view parameters; the defaults are SimCLR's CIFAR settings (colour strength 0.5)."""

    count: int = 1  # crops drawn from this pipeline per image (DINO's local crops: several; 0 = view off)
    size: int = 32  # output side length in pixels
    crop_scale: tuple[float, float] = (0.08, 1.0)  # area fraction range of the random resized crop
    crop_ratio: tuple[float, float] = (3 / 4, 4 / 3)  # aspect-ratio range (w/h), sampled log-uniformly
    flip_prob: float = 0.5  # probability of a horizontal flip
    jitter_prob: float = 0.8  # probability of applying colour jitter to a sample
    brightness: float = 0.4  # brightness jitter strength: factor ~ U[max(0, 1-b), 1+b] (SimCLR 0.8s)
    contrast: float = 0.4  # contrast jitter strength: factor ~ U[max(0, 1-c), 1+c] (SimCLR 0.8s)
    saturation: float = 0.4  # saturation jitter strength: factor ~ U[max(0, 1-s), 1+s] (SimCLR 0.8s)
    hue: float = 0.1  # hue jitter strength in [0, 0.5]: shift ~ U[-h, h] of a full turn (SimCLR 0.2s)
    grayscale_prob: float = 0.2  # probability of converting a sample to grayscale (3 channels kept)
    blur_prob: float = 0.0  # probability of Gaussian blur; SimCLR omits blur on CIFAR
    blur_sigma: tuple[float, float] = (0.1, 2.0)  # blur sigma range in pixels, sampled uniformly
    blur_kernel_frac: float = 0.1  # blur kernel side as a fraction of the output side, made odd
    solarize_prob: float = 0.0  # probability of solarising a sample
    solarize_threshold: float = 0.5  # pixels >= this value (in [0, 1]) are inverted when solarising

    def __post_init__(self) -> None:
        # A TOML array arrives as a list; store ranges as tuples so configs compare and hash
        # the same whichever way they were written.
        for name in ("crop_scale", "crop_ratio", "blur_sigma"):
            value = getattr(self, name)
            if isinstance(value, list):
                setattr(self, name, tuple(value))

    def validate(self) -> None:
        """Raise :class:`ReprlabError` naming the first field whose value is out of range."""
        if isinstance(self.size, bool) or not isinstance(self.size, int) or self.size < 1:
            raise ReprlabError(f"view config: size must be a positive integer, got {self.size!r}")
        if isinstance(self.count, bool) or not isinstance(self.count, int) or self.count < 0:
            raise ReprlabError(f"view config: count must be an integer >= 0 (0 turns the view off), got {self.count!r}")
        lo, hi = _range(self, "crop_scale")
        if not (0.0 < lo <= hi <= 1.0):
            raise ReprlabError(
                f"view config: crop_scale must be (min, max) with 0 < min <= max <= 1, "
                f"got {self.crop_scale!r}"
            )
        lo, hi = _range(self, "crop_ratio")
        if not (0.0 < lo <= hi < math.inf):
            raise ReprlabError(
                f"view config: crop_ratio must be (min, max) with 0 < min <= max, "
                f"got {self.crop_ratio!r}"
            )
        for name in ("flip_prob", "jitter_prob", "grayscale_prob", "blur_prob", "solarize_prob"):
            p = _number(self, name)
            if not (0.0 <= p <= 1.0):
                raise ReprlabError(f"view config: {name} must be a probability in [0, 1], got {p!r}")
        for name in ("brightness", "contrast", "saturation"):
            s = _number(self, name)
            if not (0.0 <= s < math.inf):
                raise ReprlabError(f"view config: {name} must be a finite number >= 0, got {s!r}")
        hue = _number(self, "hue")
        if not (0.0 <= hue <= 0.5):
            raise ReprlabError(f"view config: hue must be in [0, 0.5], got {hue!r}")
        lo, hi = _range(self, "blur_sigma")
        if not (0.0 < lo <= hi < math.inf):
            raise ReprlabError(
                f"view config: blur_sigma must be (min, max) with 0 < min <= max, "
                f"got {self.blur_sigma!r}"
            )
        frac = _number(self, "blur_kernel_frac")
        if not (0.0 < frac <= 1.0):
            raise ReprlabError(f"view config: blur_kernel_frac must be in (0, 1], got {frac!r}")
        if self.blur_prob > 0 and blur_kernel_size(self.size, frac) // 2 >= self.size:
            # Reflect padding needs the half-kernel to be smaller than the image side.
            raise ReprlabError(f"view config: size must be >= 2 when blur_prob > 0, got size={self.size!r}")
        thr = _number(self, "solarize_threshold")
        if not (0.0 <= thr <= 1.0):
            raise ReprlabError(f"view config: solarize_threshold must be in [0, 1], got {thr!r}")


def _number(cfg: ViewConfig, name: str) -> float:
    """Return field ``name`` as a float, rejecting non-numbers (and bools, which are ints)."""
    value = getattr(cfg, name)
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ReprlabError(f"view config: {name} must be a number, got {value!r}")
    return float(value)


def _range(cfg: ViewConfig, name: str) -> tuple[float, float]:
    """Return field ``name`` as a ``(min, max)`` float pair; lists are accepted like tuples."""
    value = getattr(cfg, name)
    if (
        not isinstance(value, (tuple, list))
        or len(value) != 2
        or any(isinstance(v, bool) or not isinstance(v, (int, float)) for v in value)
    ):
        raise ReprlabError(f"view config: {name} must be a pair of numbers (min, max), got {value!r}")
    return float(value[0]), float(value[1])


def blur_kernel_size(size: int, frac: float) -> int:
    """Odd blur kernel side of about ``frac * size`` pixels, at least 3.

    SimCLR uses a kernel of 10% of the image side (23 px at 224 px); at 32 px that rounds to 3.
    """
    k = max(3, int(round(frac * size)))
    return k if k % 2 == 1 else k + 1


# ---------------------------------------------------------------------------------------------
# Batched ops. Images are float (B, 3, H, W) in [0, 1]; factors are (B,) tensors, one per sample.
#
# Why the code avoids some obvious spellings: on the CPU this was tuned on, ``torch.where`` and
# comparison ops on image-sized tensors ran 10-30x slower than plain arithmetic (they take a
# slow path for bool tensors), and a fresh image-sized buffer cost more in page faults than
# the arithmetic that fills it. So selections are written as arithmetic with exact 0/1
# weights (``lerp`` with weight 0 or 1 returns one of its inputs bit for bit), and the
# pipeline keeps its temporaries in a reusable :class:`_Scratch` pool instead of allocating
# them per call.
# ---------------------------------------------------------------------------------------------


class _Scratch:
    """Named scratch buffers, kept between calls and grown on demand.

    ``get`` returns a view of the first ``prod(shape)`` elements, so smaller requests (a
    sub-batch, a smaller last batch) reuse the storage of larger ones. The contents are garbage until
    written; callers never hand these buffers to the user.
    """

    def __init__(self) -> None:
        self._buffers: dict[str, Tensor] = {}

    def get(self, name: str, shape: Sequence[int], like: Tensor) -> Tensor:
        """A buffer called ``name`` with ``shape`` and the dtype/device of ``like``."""
        numel = math.prod(shape)
        buf = self._buffers.get(name)
        if buf is None or buf.numel() < numel or buf.dtype != like.dtype or buf.device != like.device:
            buf = torch.empty(numel, dtype=like.dtype, device=like.device)
            self._buffers[name] = buf
        return buf[:numel].view(*shape)


def _per_sample(values: Tensor, x: Tensor) -> Tensor:
    """View a (B,) tensor as (B, 1, 1, 1) so it broadcasts over a (B, C, H, W) batch."""
    return values.to(dtype=x.dtype).view(-1, 1, 1, 1)


def _luma_into(x: Tensor, out: Tensor) -> Tensor:
    """Write the grayscale plane of ``x`` into ``out`` (B, 1, H, W), like torchvision.

    Same weights and operation order as torchvision's ``rgb_to_grayscale``.
    """
    r, g, b = x.unbind(dim=1)
    plane = out[:, 0]
    torch.mul(r, _LUMA[0], out=plane)
    return out.add_(g.unsqueeze(1), alpha=_LUMA[1]).add_(b.unsqueeze(1), alpha=_LUMA[2])


def _luma(x: Tensor) -> Tensor:
    """Grayscale plane (B, 1, H, W) in a new tensor."""
    n, _, h, w = x.shape
    return _luma_into(x, x.new_empty(n, 1, h, w))


def _step(x: Tensor, threshold: float) -> Tensor:
    """Exact float indicator of ``x >= threshold`` without a bool tensor (see section note)."""
    # threshold - x <= 0 exactly when x >= threshold; ceil maps that to <= 0 and anything
    # positive to >= 1, and the clamp squeezes both to 0 or 1.
    return x.neg().add_(threshold).ceil_().clamp_(0.0, 1.0).neg_().add_(1.0)


def rgb_to_grayscale(x: Tensor) -> Tensor:
    """Grayscale with three identical channels, as ``rgb_to_grayscale(x, num_output_channels=3)``."""
    return _luma(x).expand_as(x).contiguous()


def adjust_brightness(x: Tensor, factor: Tensor) -> Tensor:
    """Multiply each sample by its factor and clamp to [0, 1]."""
    return x.mul(_per_sample(factor, x)).clamp_(0.0, 1.0)


def adjust_contrast(x: Tensor, factor: Tensor) -> Tensor:
    """Blend each sample with the mean of its own grayscale image (a per-sample constant)."""
    f = _per_sample(factor, x)
    mean = _luma(x).mean(dim=(1, 2, 3), keepdim=True)
    return x.mul(f).add_(mean * (1.0 - f)).clamp_(0.0, 1.0)


def adjust_saturation(x: Tensor, factor: Tensor) -> Tensor:
    """Blend each sample with its grayscale image; factor 0 gives gray, 1 the input."""
    f = _per_sample(factor, x)
    return x.mul(f).add_(_luma(x) * (1.0 - f)).clamp_(0.0, 1.0)


def adjust_hue(x: Tensor, factor: Tensor) -> Tensor:
    """Rotate each sample's hue by ``factor`` (in turns, [-0.5, 0.5]) in HSV space.

    Equivalent to torchvision's RGB -> HSV -> shift -> RGB round trip, with the same
    tie-breaking when two channels share the maximum (red, then green); see
    :func:`_rotate_hue_` for how it avoids building the HSV image.
    """
    return _rotate_hue_(x.clone(), factor, _Scratch())


def _rotate_hue_(x: Tensor, factor: Tensor, scratch: _Scratch) -> Tensor:
    """In-place hue rotation of ``x`` (N, 3, H, W); temporaries come from ``scratch``.

    Value (max) and chroma (max - min) do not change under a hue shift, so each output channel
    is ``max - chroma * clamp(min(k, 4 - k), 0, 1)``, where ``k`` is the channel's position on
    the hue hexagon relative to the shifted hue. That needs neither the saturation division
    nor a per-sector gather, and once the hue is known the input can be overwritten.
    """
    n, _, h, w = x.shape

    def plane(name: str) -> Tensor:
        return scratch.get("hue_" + name, (n, h, w), x)

    r, g, b = x.unbind(dim=1)
    maxc, chroma, h6, is_r, is_g, is_b, tmp = (
        plane(k) for k in ("max", "chroma", "h6", "is_r", "is_g", "is_b", "tmp")
    )
    torch.maximum(r, g, out=maxc)
    torch.maximum(maxc, b, out=maxc)
    torch.minimum(r, g, out=chroma)
    torch.minimum(chroma, b, out=chroma)
    torch.sub(maxc, chroma, out=chroma)
    # 0/1 weights of the sector owning the maximum: sign(c - max) is 0 for the max channel(s)
    # and -1 otherwise. Ties go to red, then green, as in torchvision.
    torch.sub(r, maxc, out=is_r).sign_().add_(1.0)
    torch.sub(g, maxc, out=is_g).sign_().add_(1.0)
    is_g.sub_(torch.mul(is_g, is_r, out=tmp))
    torch.add(is_r, is_g, out=is_b).neg_().add_(1.0)
    # Hue in sixths of a turn: sector start (red 0, green 2, blue 4) plus a signed offset, the
    # difference of the other two channels over chroma. For gray pixels both are 0; clamping
    # the divisor keeps that 0 instead of NaN, and chroma multiplies the hue away below anyway.
    torch.sub(g, b, out=h6).mul_(is_r)
    h6.addcmul_(torch.sub(b, r, out=tmp), is_g)
    h6.addcmul_(torch.sub(r, g, out=tmp), is_b)
    h6.div_(torch.clamp(chroma, min=1e-12, out=tmp))
    h6.add_(is_g, alpha=2.0).add_(is_b, alpha=4.0)
    h6.add_(factor.to(x.dtype).view(-1, 1, 1), alpha=6.0)

    k = is_r  # the sector weights are spent; reuse their storage
    # Hexagon offsets 5, 3, 1 give red, green, blue.
    for channel, offset in enumerate((5.0, 3.0, 1.0)):
        torch.add(h6, offset, out=k)
        # k mod 6 via floor (torch.remainder is slow on CPU). Rounding can leave k a hair
        # outside [0, 6), where the ramp is 0 on both sides, so the result is unaffected.
        torch.mul(k, 1.0 / 6.0, out=tmp).floor_()
        k.sub_(tmp, alpha=6.0)
        torch.mul(k, -1.0, out=tmp).add_(4.0)
        torch.minimum(k, tmp, out=tmp).clamp_(0.0, 1.0)
        torch.addcmul(maxc, tmp, chroma, value=-1.0, out=x[:, channel])
    return x


def _gaussian_kernels(size: int, sigma: Tensor) -> Tensor:
    """One normalised 1-D Gaussian of odd length ``size`` per sigma: (N, size)."""
    half = size // 2
    offsets = torch.arange(-half, half + 1, dtype=sigma.dtype, device=sigma.device)
    # softmax of -x^2 / (2 sigma^2) is the normalised Gaussian, computed stably.
    return torch.softmax(-(offsets**2) / (2.0 * sigma.view(-1, 1) ** 2), dim=1)


def gaussian_blur(x: Tensor, kernel_size: int, sigma: Tensor) -> Tensor:
    """Blur each sample with its own isotropic Gaussian (reflect padding, like torchvision).

    The 2-D kernel is separable, so two 1-D grouped convolutions (one group per channel of
    each sample) replace a k x k convolution.
    """
    n, c, h, w = x.shape
    k1 = _gaussian_kernels(kernel_size, sigma.to(x.dtype)).repeat_interleave(c, dim=0)
    pad = kernel_size // 2
    flat = F.pad(x.reshape(1, n * c, h, w), (pad, pad, pad, pad), mode="reflect")
    flat = F.conv2d(flat, k1.view(n * c, 1, kernel_size, 1), groups=n * c)
    flat = F.conv2d(flat, k1.view(n * c, 1, 1, kernel_size), groups=n * c)
    return flat.view(n, c, h, w)


def solarize(x: Tensor, threshold: float) -> Tensor:
    """Invert pixels at or above ``threshold`` (1 - x for images in [0, 1])."""
    return x.lerp(1.0 - x, _step(x, threshold))


def _crop_coords(start: Tensor, length: Tensor, size: int) -> Tensor:
    """Source pixel coordinate of each output pixel along one axis, per sample: (B, size).

    Mirrors torchvision's crop-then-resize (``align_corners=False``): output pixel k reads the
    crop at ``(k + 0.5) * length / size - 0.5``, clamped into the crop so that pixels outside
    the box never leak in through the bilinear taps.
    """
    k = torch.arange(size, dtype=torch.float32, device=start.device).add_(0.5)
    src = (k * (length / size).view(-1, 1)).sub_(0.5).clamp_(min=0.0)
    return torch.minimum(src, (length - 1.0).view(-1, 1)).add_(start.view(-1, 1))


def resized_crop(images: Tensor, crop: Tensor, size: int, flip: Tensor | None = None) -> Tensor:
    """Crop a box per sample and resize it to ``size`` x ``size`` with bilinear interpolation.

    ``images`` is (B, C, H, W), uint8 or float; ``crop`` is (B, 4) as (top, left, height,
    width) in input pixels; ``flip`` (B,) bool mirrors the result horizontally. Returns a new
    float32 tensor in the input's value range, equal to torchvision's tensor
    ``resized_crop(..., antialias=False)`` followed by ``hflip`` (PIL, unlike this,
    antialiases when shrinking).

    Bilinear resampling is separable, so the sampling grid is the outer product of one row
    and one column coordinate vector per sample, fed to ``grid_sample``. A flip reverses the
    column coordinates, so it costs no extra pass over the pixels.
    """
    return _resized_crop(images, crop, size, flip, _Scratch())


def _resized_crop(
    images: Tensor, crop: Tensor, size: int, flip: Tensor | None, scratch: _Scratch, scale: float = 1.0
) -> Tensor:
    """:func:`resized_crop` of ``images * scale``, with the grid and float input in ``scratch``."""
    n, _, h, w = images.shape
    ref = torch.empty(0, dtype=torch.float32, device=images.device)
    top, left, ch, cw = crop.to(ref).unbind(dim=1)
    ys = _crop_coords(top, ch, size)
    xs = _crop_coords(left, cw, size)
    if flip is not None:
        # lerp with an exact 0/1 weight picks one side bit for bit (cheaper than where).
        xs = xs.lerp(xs.flip(1), flip.view(-1, 1).to(xs.dtype))
    grid = scratch.get("grid", (n, size, size, 2), ref)
    # Pixel coordinate p maps to (2p + 1) / side - 1 in grid_sample's [-1, 1] convention.
    grid[..., 0] = xs.mul_(2.0 / w).add_(1.0 / w - 1.0).view(n, 1, size)
    grid[..., 1] = ys.mul_(2.0 / h).add_(1.0 / h - 1.0).view(n, size, 1)
    if images.dtype != torch.float32 or scale != 1.0:
        # A copy then an in-place scale: ``torch.mul(uint8, float, out=...)`` measured far
        # slower, as it casts through a fresh temporary.
        images = scratch.get("input", images.shape, ref).copy_(images).mul_(scale)
    return F.grid_sample(images, grid, mode="bilinear", padding_mode="border", align_corners=False)


def sample_crop_boxes(
    uniforms: Tensor,
    height: int,
    width: int,
    scale: tuple[float, float],
    ratio: tuple[float, float],
) -> Tensor:
    """RandomResizedCrop boxes from pre-drawn uniforms, all tries vectorised.

    ``uniforms`` is (B, 2 * tries + 2): per try an area and a log-ratio draw, then the top and
    left position draws. As in torchvision, the first try whose box fits is taken; a sample
    with no fitting box falls back to the largest centred box with a ratio in range. Returns
    (B, 4) float (top, left, height, width) with integer values.
    """
    tries = (uniforms.shape[1] - 2) // 2
    u_area, u_ratio = uniforms[:, :tries], uniforms[:, tries : 2 * tries]
    area = float(height * width)
    target = area * (scale[0] + (scale[1] - scale[0]) * u_area)
    log_lo, log_hi = math.log(ratio[0]), math.log(ratio[1])
    aspect = torch.exp(log_lo + (log_hi - log_lo) * u_ratio)
    # torch.round rounds half to even, like Python's round() used by torchvision.
    cw = torch.sqrt(target * aspect).round_()
    ch = torch.sqrt(target / aspect).round_()
    valid = (cw > 0) & (cw <= width) & (ch > 0) & (ch <= height)
    # argmax returns the first maximal index, i.e. the first try that fits.
    first = valid.to(torch.uint8).argmax(dim=1, keepdim=True)
    cw = cw.gather(1, first).squeeze(1)
    ch = ch.gather(1, first).squeeze(1)

    in_ratio = width / height
    if in_ratio < ratio[0]:
        fw, fh = width, int(round(width / ratio[0]))
    elif in_ratio > ratio[1]:
        fw, fh = int(round(height * ratio[1])), height
    else:
        fw, fh = width, height
    found = valid.any(dim=1)
    cw = torch.where(found, cw, torch.full_like(cw, float(fw)))
    ch = torch.where(found, ch, torch.full_like(ch, float(fh)))

    # Uniform integer offsets in [0, side - box]; the clamp guards against u * n rounding up
    # to n in float32.
    top = torch.minimum((uniforms[:, -2] * (height - ch + 1)).floor_(), height - ch)
    left = torch.minimum((uniforms[:, -1] * (width - cw + 1)).floor_(), width - cw)
    top = torch.where(found, top, torch.full_like(top, float((height - fh) // 2)))
    left = torch.where(found, left, torch.full_like(left, float((width - fw) // 2)))
    return torch.stack((top, left, ch, cw), dim=1)


def identity_params(
    batch: int, height: int, width: int, device: torch.device | str = "cpu"
) -> dict[str, Tensor]:
    """Parameters under which :meth:`ViewAugment.apply` only resizes the full image.

    Meant as a starting point for hand-built parameters (tests set individual entries).
    """
    dev = torch.device(device)
    off = torch.zeros(batch, dtype=torch.bool, device=dev)
    ones = torch.ones(batch, dtype=torch.float32, device=dev)
    crop = torch.tensor([0.0, 0.0, float(height), float(width)], device=dev).repeat(batch, 1)
    return {
        "crop": crop,
        "flip": off.clone(),
        "jitter": off.clone(),
        "brightness": ones.clone(),
        "contrast": ones.clone(),
        "saturation": ones.clone(),
        "hue": torch.zeros(batch, dtype=torch.float32, device=dev),
        "order": torch.arange(4, device=dev).repeat(batch, 1),
        "grayscale": off.clone(),
        "blur": off.clone(),
        "blur_sigma": ones.clone(),
        "solarize": off.clone(),
    }


class ViewAugment:
    """SimCLR-style random views of a uint8 batch, computed batched on the batch's device."""

    def __init__(self, cfg: ViewConfig, mean: Sequence[float], std: Sequence[float]) -> None:
        """Validate ``cfg``; ``mean``/``std`` are per-channel statistics of images in [0, 1]."""
        cfg.validate()
        if len(mean) != 3 or len(std) != 3:
            raise ReprlabError(
                f"view augment: mean and std need 3 values each, got mean={mean!r} std={std!r}"
            )
        if not all(float(s) > 0 for s in std):
            raise ReprlabError(f"view augment: std values must be > 0, got std={std!r}")
        self.cfg = cfg
        self.mean = tuple(float(m) for m in mean)
        self.std = tuple(float(s) for s in std)
        self.crop_scale = _range(cfg, "crop_scale")
        self.crop_ratio = _range(cfg, "crop_ratio")
        self.blur_sigma = _range(cfg, "blur_sigma")
        self.kernel_size = blur_kernel_size(cfg.size, cfg.blur_kernel_frac)
        # Normalisation constants per device, made once instead of on every call.
        self._stats: dict[torch.device, tuple[Tensor, Tensor]] = {}
        # Temporaries reused across calls (see the note above the ops). This makes an instance
        # unsafe to call from several threads at once; data-loader workers are processes, and
        # each gets its own copy.
        self._scratch = _Scratch()

    def __call__(self, images: Tensor, generator: torch.Generator) -> Tensor:
        """images: uint8 (B,3,H,W) on any device. Returns float32 (B,3,size,size), normalised
        with mean/std, on the same device."""
        _check_images(images)
        gdev, idev = generator.device, images.device
        same_index = gdev.index is None or idev.index is None or gdev.index == idev.index
        if gdev.type != idev.type or not same_index:
            raise ReprlabError(f"view augment: generator is on {gdev}, expected the images' device {idev}")
        b, _, h, w = images.shape
        # Views are computed in float32 whatever the caller's autocast: the blur's convolution
        # would otherwise come back in bf16 and the ops mix dtypes (and lose colour precision).
        with torch.autocast(images.device.type, enabled=False):
            return self.apply(images, self.sample_params(b, h, w, generator))

    def sample_params(
        self, batch: int, height: int, width: int, generator: torch.Generator
    ) -> dict[str, Tensor]:
        """Draw every sample's parameters at once, on the generator's device.

        A single ``torch.rand`` call supplies all uniforms, so the number of generator draws per
        batch is fixed and a restored generator state replays exactly the same views.
        """
        if batch < 1 or height < 1 or width < 1:
            raise ReprlabError(
                f"view augment: batch, height and width must be >= 1, got {batch}, {height}, {width}"
            )
        cfg = self.cfg
        crop_cols = 2 * _CROP_TRIES + 2
        u = torch.rand(batch, crop_cols + 14, generator=generator, device=generator.device)
        crop = sample_crop_boxes(u[:, :crop_cols], height, width, self.crop_scale, self.crop_ratio)
        u = u[:, crop_cols:]

        def factor(col: Tensor, strength: float) -> Tensor:
            # ColorJitter's range: U[max(0, 1 - s), 1 + s].
            lo, hi = max(0.0, 1.0 - strength), 1.0 + strength
            return lo + (hi - lo) * col

        sigma_lo, sigma_hi = self.blur_sigma
        return {
            "crop": crop,
            "flip": u[:, 0] < cfg.flip_prob,
            "jitter": u[:, 1] < cfg.jitter_prob,
            "brightness": factor(u[:, 2], cfg.brightness),
            "contrast": factor(u[:, 3], cfg.contrast),
            "saturation": factor(u[:, 4], cfg.saturation),
            "hue": cfg.hue * (2.0 * u[:, 5] - 1.0),
            # A uniformly random permutation per sample: the ranks of four uniforms.
            "order": u[:, 6:10].argsort(dim=1),
            "grayscale": u[:, 10] < cfg.grayscale_prob,
            "blur": u[:, 11] < cfg.blur_prob,
            "blur_sigma": sigma_lo + (sigma_hi - sigma_lo) * u[:, 12],
            "solarize": u[:, 13] < cfg.solarize_prob,
        }

    def apply(self, images_uint8: Tensor, params: dict[str, Tensor]) -> Tensor:
        """Apply the given per-sample parameters; deterministic, so tests can fix them.

        ``params`` has the keys and shapes :meth:`sample_params` returns (see
        :func:`identity_params`); each row of ``order`` must be a permutation of 0..3
        (brightness, contrast, saturation, hue). Order, as in the SimCLR pipeline: resized crop
        and flip, colour jitter (each sample in its own op order), grayscale, blur, solarise,
        then normalisation.
        """
        _check_images(images_uint8)
        n = images_uint8.shape[0]
        p = _check_params(params, n, images_uint8.device)

        # Scaled to [0, 1] while converting to float; resampling is linear, so it commutes.
        x = _resized_crop(images_uint8, p["crop"], self.cfg.size, p["flip"], self._scratch, 1.0 / 255.0)

        schedule, hue_rows = _jitter_schedule(p["order"].long(), p["jitter"], p["hue"])
        # One host sync for every data-dependent decision: how many samples each jitter step
        # touches, and how many rotate hue, turn gray, blur or solarise.
        step_counts = (schedule != _NO_OP).sum(dim=0)
        flags = torch.stack([hue_rows.sum(), p["grayscale"].sum(), p["blur"].sum(), p["solarize"].sum()])
        counts = torch.cat((step_counts, flags)).tolist()
        steps, (n_hue, n_gray, n_blur, n_solarize) = counts[:_STEPS], counts[_STEPS:]

        self._jitter(x, p, schedule, steps, hue_rows, n_hue)
        if n_gray:
            # lerp with an exact 0/1 weight returns either input unchanged.
            luma = _luma_into(x, self._scratch.get("luma", (n, 1, *x.shape[2:]), x))
            x.lerp_(luma, _per_sample(p["grayscale"], x))
        if n_blur:
            idx = _first_true(p["blur"], n_blur)
            blurred = gaussian_blur(x.index_select(0, idx), self.kernel_size, p["blur_sigma"][idx])
            x.index_copy_(0, idx, blurred)
        if n_solarize:
            idx = _first_true(p["solarize"], n_solarize)
            x.index_copy_(0, idx, solarize(x.index_select(0, idx), self.cfg.solarize_threshold))

        # (x - mean) / std as one fused pass: x * (1 / std) + (-mean / std).
        scale, shift = self._stats_on(images_uint8.device)
        return torch.addcmul(shift, x, scale, out=x)

    def _jitter(
        self,
        x: Tensor,
        p: dict[str, Tensor],
        schedule: Tensor,
        steps: list[int],
        hue_rows: Tensor,
        n_hue: int,
    ) -> None:
        """Colour jitter in place, following :func:`_jitter_schedule`.

        Brightness, contrast and saturation are all ``clamp(f * x + (1 - f) * g)`` with g = 0,
        the grayscale mean, or the grayscale image, so one fused blend serves every sample in
        a step (f = 1 leaves a sample bit for bit as it was). The hue step rotates only the
        samples that have a hue shift, gathered into one sub-batch.
        """
        n = x.shape[0]
        scratch = self._scratch
        one = torch.ones_like(p["brightness"])
        factors = torch.stack((p["brightness"], p["contrast"], p["saturation"], one, one), dim=1).to(x.dtype)
        for step, count in enumerate(steps):
            if step == _HUE_STEP:
                if n_hue:
                    idx = _first_true(hue_rows, n_hue)
                    sub = scratch.get("hue_sub", (n_hue, *x.shape[1:]), x)
                    torch.index_select(x, 0, idx, out=sub)
                    x.index_copy_(0, idx, _rotate_hue_(sub, p["hue"][idx], scratch))
                continue
            if not count:  # no sample has an op in this step
                continue
            op = schedule[:, step]
            f = _per_sample(factors.gather(1, op.view(-1, 1)).squeeze(1), x)
            w_gray = _per_sample(op == _SATURATION, x)
            w_mean = _per_sample(op == _CONTRAST, x)
            target = _luma_into(x, scratch.get("luma", (n, 1, *x.shape[2:]), x))
            # Take the mean before target is overwritten in place.
            mean = target.mean(dim=(1, 2, 3), keepdim=True).mul_(w_mean)
            # f * x + (1 - f) * g, in the order torchvision's blend computes it.
            target.mul_(w_gray).add_(mean).mul_(1.0 - f)
            torch.addcmul(target, x, f, out=x).clamp_(0.0, 1.0)

    def _stats_on(self, device: torch.device) -> tuple[Tensor, Tensor]:
        """Normalisation as (1, 3, 1, 1) ``1 / std`` and ``-mean / std`` on ``device``, cached."""
        if device not in self._stats:
            mean = torch.tensor(self.mean, dtype=torch.float64).view(1, 3, 1, 1)
            std = torch.tensor(self.std, dtype=torch.float64).view(1, 3, 1, 1)
            self._stats[device] = (
                (1.0 / std).to(device=device, dtype=torch.float32),
                (-mean / std).to(device=device, dtype=torch.float32),
            )
        return self._stats[device]


# Jitter schedule: three steps for the ops before hue, one hue step, three for those after.
_STEPS = 7
_HUE_STEP = 3


def _jitter_schedule(order: Tensor, jitter: Tensor, hue: Tensor) -> tuple[Tensor, Tensor]:
    """Align every sample's jitter order on one shared hue step.

    Applying op ``order[b, r]`` in round r for r = 0..3 would need a hue rotation in each of
    the four rounds, each on a different quarter of the batch, and the rotation is the costly
    op. Each sample's ops are independent of the others', though, so only the order within a
    sample matters: shift each sample's sequence so that its hue lands on step 3. A sample
    whose hue comes at position k runs its k earlier ops in steps 3-k..2 and its later ones
    from step 4 on; unused steps are no-ops. That costs two more (cheap) blend steps and
    saves three hue rotations.

    Returns the (B, 7) op per step (``_NO_OP`` for idle steps and for samples without
    jitter; step 3 is hue or idle) and the (B,) mask of samples that rotate hue.
    """
    n = order.shape[0]
    hue_pos = (order == _HUE).to(torch.uint8).argmax(dim=1)
    idle = torch.full((n, _HUE_STEP), _NO_OP, dtype=order.dtype, device=order.device)
    padded = torch.cat((idle, order, idle), dim=1)
    steps = torch.arange(_STEPS, device=order.device)
    schedule = padded.gather(1, steps + hue_pos.view(-1, 1))
    schedule = torch.where(jitter.view(-1, 1), schedule, torch.full_like(schedule, _NO_OP))
    # A zero shift is the identity; skipping it saves the costliest op.
    return schedule, jitter & (hue != 0)


def _first_true(mask: Tensor, count: int) -> Tensor:
    """Indices of the ``count`` true entries of ``mask``, without another host sync.

    A stable sort on the negated mask puts the true entries first; ``count`` is already known
    on the host, so slicing needs no ``nonzero`` (which would wait for the device).
    """
    return torch.argsort((~mask).to(torch.uint8), stable=True)[:count]


def _check_images(images: Any) -> None:
    """Reject anything but a uint8 (B, 3, H, W) tensor with a one-line message."""
    if not isinstance(images, Tensor):
        raise ReprlabError(f"view augment: images must be a torch.Tensor, got {type(images).__name__}")
    if images.dtype != torch.uint8:
        raise ReprlabError(f"view augment: images must be uint8, got dtype {images.dtype}")
    if images.ndim != 4 or images.shape[1] != 3 or images.shape[0] == 0:
        raise ReprlabError(f"view augment: images must have shape (B>0, 3, H, W), got {tuple(images.shape)}")


def _check_params(params: dict[str, Tensor], batch: int, device: torch.device) -> dict[str, Tensor]:
    """Check keys and shapes of a parameter dict and move it to ``device``."""
    missing = [k for k in PARAM_KEYS if k not in params]
    if missing:
        raise ReprlabError(
            f"view augment: params lack {', '.join(missing)}; expected keys {', '.join(PARAM_KEYS)}"
        )
    out = {}
    for key in PARAM_KEYS:
        value = params[key]
        expected = (batch, 4) if key in ("crop", "order") else (batch,)
        if not isinstance(value, Tensor) or tuple(value.shape) != expected:
            got = tuple(value.shape) if isinstance(value, Tensor) else type(value).__name__
            raise ReprlabError(f"view augment: params[{key!r}] has shape {got}, expected {expected}")
        out[key] = value.to(device)
    for key in ("flip", "jitter", "grayscale", "blur", "solarize"):
        if out[key].dtype != torch.bool:
            raise ReprlabError(
                f"view augment: params[{key!r}] has dtype {out[key].dtype}, expected torch.bool"
            )
    return out


class MultiView:
    """A method's named view pipelines: every crop of a batch, in declaration order.

    ``{"global": ViewConfig(count=2), "local": ViewConfig(size=16, count=4)}`` gives six
    crops per image: two global ones, then four local ones. Each crop is one batched call over
    the whole batch with its own per-sample parameter draws, so crops of one pipeline are
    independent of each other.
    """

    def __init__(self, views: dict[str, ViewConfig], mean: Sequence[float], std: Sequence[float]) -> None:
        for cfg in views.values():
            cfg.validate()
        if sum(cfg.count for cfg in views.values()) == 0:
            raise ReprlabError("a self-supervised method needs at least one crop: every view has count = 0")
        self.pipelines = {name: ViewAugment(cfg, mean, std) for name, cfg in views.items() if cfg.count > 0}
        #: (view name, crop side) of each crop in the order __call__ returns them
        self.layout = [(name, cfg.size) for name, cfg in views.items() for _ in range(cfg.count)]

    def __len__(self) -> int:
        return len(self.layout)

    def count(self, name: str) -> int:
        return sum(n == name for n, _ in self.layout)

    def __call__(self, images: Tensor, generator: torch.Generator) -> list[Tensor]:
        return [self.pipelines[name](images, generator) for name, _ in self.layout]
