"""The image ops of the self-supervised view pipeline (:mod:`reprlab.augment.views`): whole
``uint8``/float batches at once, each sample with its own parameters, on the batch's device.

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

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = [
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
