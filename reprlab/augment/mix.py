"""Batch-level augmentations that run on the accelerator, seeded by one ``torch.Generator``.

* :class:`BatchMix`: CutMix (Yun et al. 2019) and Mixup (Zhang et al. 2018), returning soft
  targets with label smoothing folded in.
* :func:`random_erasing`: random erasing (Zhong et al. 2020) with per-pixel noise fill.
* :func:`rand_augment`: RandAugment (Cubuk et al. 2020) on a uint8 batch.
* :func:`sample_beta`: a Beta sampler driven by an explicit generator.

Every random draw goes through the generator passed in (which must live on the images'
device), so a run is reproducible from its seed and nothing is copied to the host except a
handful of scalars used for control flow.
"""

from __future__ import annotations

import math
from typing import Callable, Optional

import torch
from torch import Tensor

from reprlab.augment.configs import MixConfig
from reprlab.errors import ReprlabError


class _LazyFunctional:
    """``torchvision.transforms.v2.functional``, imported on first use: RandAugment is the only
    user, and importing torchvision costs every process (the CLI's start-up included) ~1 s."""

    def __getattr__(self, name: str):
        from torchvision.transforms.v2 import functional

        return getattr(functional, name)


TF = _LazyFunctional()

__all__ = [
    "RAND_AUGMENT_OPS",
    "BatchMix",
    "MixConfig",
    "rand_augment",
    "random_erasing",
    "sample_beta",
]


# ---------------------------------------------------------------------------------------------
# Generator-aware Beta sampling


def _check_generator(generator: object, device: torch.device) -> torch.Generator:
    """Raise unless ``generator`` is a torch.Generator on the same device type as the data."""
    if not isinstance(generator, torch.Generator):
        raise ReprlabError(
            f"generator is {type(generator).__name__}; expected a torch.Generator"
        )
    if generator.device.type != device.type:
        raise ReprlabError(
            f"generator is on {generator.device}; expected one on the data's device {device}"
        )
    return generator


def _log_standard_gamma(
    shape: float, size: int, generator: torch.Generator, device: torch.device
) -> Tensor:
    """Log of ``size`` Gamma(shape, 1) samples via Marsaglia & Tsang's rejection method.

    ``torch.distributions.Gamma`` cannot take a generator, hence this sampler. Candidates are
    drawn for the whole vector each round and accepted entries are kept, so the number of
    generator draws (and thus the stream) depends only on the seed. Working in log space keeps
    the small-shape boost ``G(a) = G(a + 1) * U^(1/a)`` from underflowing to 0 for a << 1.
    """
    boosted = shape < 1.0
    k = shape + 1.0 if boosted else shape
    d = k - 1.0 / 3.0
    c = 1.0 / math.sqrt(9.0 * d)
    result = torch.zeros(size, device=device)
    pending = torch.ones(size, dtype=torch.bool, device=device)
    # Acceptance is >= 95 % per round. The first 8 rounds run unconditionally, so on an
    # accelerator the sampler costs no host sync (an entry is still pending after them with
    # probability < 1e-10); only then is `pending` inspected, and the cap of 64 rounds only
    # guards against an infinite loop if something upstream produced NaNs.
    for round_ in range(64):
        normal = torch.randn(size, generator=generator, device=device)
        uniform = torch.rand(size, generator=generator, device=device)
        v = (1.0 + c * normal) ** 3
        log_v = torch.where(v > 0, v, torch.ones_like(v)).log()
        accept = (v > 0) & (uniform.log() < 0.5 * normal**2 + d - d * v + d * log_v)
        result = torch.where(accept & pending, math.log(d) + log_v, result)
        pending = pending & ~accept
        if round_ >= 7 and not bool(pending.any()):
            break
    else:  # pragma: no cover - astronomically unlikely
        raise ReprlabError(
            f"Gamma sampler with shape {shape} did not converge; expected a finite shape"
        )
    if boosted:
        # 1 - U lies in (0, 1], so the log is finite.
        uniform = 1.0 - torch.rand(size, generator=generator, device=device)
        result = result + uniform.log() / shape
    return result


def sample_beta(
    alpha: float, beta: float, size: int, *, generator: torch.Generator
) -> Tensor:
    """Draw ``size`` float32 samples of Beta(alpha, beta) on the generator's device.

    Uses ``X / (X + Y)`` with ``X ~ Gamma(alpha)``, ``Y ~ Gamma(beta)``, evaluated as
    ``sigmoid(log X - log Y)`` so that tiny shapes (e.g. Mixup's alpha = 0.2, Zhang et al.
    2018), whose gamma draws can be below float32's range, still give values in [0, 1].

    Raises:
        ReprlabError: for non-positive or non-finite shapes, a negative size or a non-generator.
    """
    for name, value in (("alpha", alpha), ("beta", beta)):
        if not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0:
            raise ReprlabError(f"Beta {name}={value!r} is invalid; expected a finite number > 0")
    if isinstance(size, bool) or not isinstance(size, int) or size < 0:
        raise ReprlabError(f"Beta sample size {size!r} is invalid; expected an integer >= 0")
    if not isinstance(generator, torch.Generator):
        raise ReprlabError(f"generator is {type(generator).__name__}; expected a torch.Generator")
    device = generator.device
    log_x = _log_standard_gamma(float(alpha), size, generator, device)
    log_y = _log_standard_gamma(float(beta), size, generator, device)
    return torch.sigmoid(log_x - log_y)


# ---------------------------------------------------------------------------------------------
# CutMix / Mixup


class BatchMix:
    """Apply CutMix or Mixup to a whole batch on its device and return soft targets.

    Pairing: sample ``i`` is mixed with sample ``i - 1`` (the batch rolled by one). The loader
    already shuffles, so these pairs are random; unlike a random permutation, the roll never
    pairs a sample with itself (for B >= 2, a permutation's fixed points would silently skip
    mixing) and uses every image exactly once as a partner.

    Choice per batch: with both methods enabled, Mixup is picked with ``switch_prob`` and
    CutMix otherwise, and the picked method is then applied with its own probability; with one
    enabled it is applied with its probability. A batch that is not mixed is returned as is.

    CutMix (Yun et al. 2019): ``lambda ~ Beta(a, a)``, a box of relative side
    ``sqrt(1 - lambda)`` with a uniform centre is clipped to the image and pasted from the
    partner; the partner's target weight is then the *pasted* area over ``H * W``, which
    differs from ``1 - lambda`` whenever the box is clipped or rounded.

    Mixup (Zhang et al. 2018): ``x = lambda * x + (1 - lambda) * x_partner`` with the same
    weights on the targets.
    """

    def __init__(self, cfg: MixConfig, num_classes: int) -> None:
        cfg.validate()
        if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1:
            raise ReprlabError(f"num_classes={num_classes!r} is invalid; expected an integer >= 1")
        self.cfg = cfg
        self.num_classes = num_classes

    def one_hot(self, y: Tensor) -> Tensor:
        """Smoothed one-hot float32 targets (B, num_classes) for class indices ``y``."""
        eps = float(self.cfg.label_smoothing)
        target = torch.zeros(y.shape[0], self.num_classes, device=y.device)
        target.scatter_(1, y.long().unsqueeze(1), 1.0)
        return target * (1.0 - eps) + eps / self.num_classes

    def _check(self, x: Tensor, y: Tensor, generator: torch.Generator) -> None:
        if x.ndim != 4 or not x.is_floating_point():
            raise ReprlabError(
                f"images have shape {tuple(x.shape)} and dtype {x.dtype}; "
                "expected a floating (B, C, H, W) tensor"
            )
        integer = not (y.is_floating_point() or y.is_complex() or y.dtype == torch.bool)
        if y.ndim != 1 or y.shape[0] != x.shape[0] or not integer:
            raise ReprlabError(
                f"labels have shape {tuple(y.shape)} and dtype {y.dtype}; "
                f"expected integer class indices of shape ({x.shape[0]},)"
            )
        if y.device != x.device:
            raise ReprlabError(f"labels are on {y.device}; expected the images' device {x.device}")
        # Only checked on the CPU: on an accelerator the check would stall on a device sync.
        if y.device.type == "cpu" and y.numel() > 0:
            low, high = int(y.min()), int(y.max())
            if low < 0 or high >= self.num_classes:
                bad = low if low < 0 else high
                raise ReprlabError(
                    f"class index {bad} is out of range; expected 0 <= index < {self.num_classes}"
                )
        _check_generator(generator, x.device)

    def _choose(self, generator: torch.Generator, device: torch.device) -> Optional[str]:
        """Return "cutmix", "mixup" or None for this batch."""
        cfg = self.cfg
        # Always draw both numbers so the generator stream does not depend on the config.
        switch, apply = torch.rand(2, generator=generator, device=device).tolist()
        if cfg.cutmix_prob > 0 and cfg.mixup_prob > 0:
            method = "mixup" if switch < cfg.switch_prob else "cutmix"
        elif cfg.cutmix_prob > 0:
            method = "cutmix"
        elif cfg.mixup_prob > 0:
            method = "mixup"
        else:
            return None
        prob = cfg.mixup_prob if method == "mixup" else cfg.cutmix_prob
        return method if apply < prob else None

    def __call__(
        self, x: Tensor, y: Tensor, generator: torch.Generator
    ) -> tuple[Tensor, Tensor]:
        """Mix a batch.

        Args:
            x: float images (B, C, H, W).
            y: integer class indices (B,) on the same device.
            generator: a ``torch.Generator`` on ``x``'s device; the only source of randomness.

        Returns:
            ``(images, targets)``: images (B, C, H, W) (``x`` itself when the batch is not
            mixed) and float32 targets (B, num_classes) whose rows sum to 1.
        """
        self._check(x, y, generator)
        method = self._choose(generator, x.device)
        targets = self.one_hot(y)
        if method is None:
            return x, targets

        batch = x.shape[0]
        n_draws = batch if self.cfg.per_sample else 1
        partner_x = x.roll(1, dims=0)
        partner_t = targets.roll(1, dims=0)
        if method == "mixup":
            alpha = self.cfg.mixup_alpha
            lam = sample_beta(alpha, alpha, n_draws, generator=generator)
            # Round lambda to the image dtype first so that, for bf16 images, the targets carry
            # exactly the weight the pixels were mixed with.
            lam_x = lam.to(x.dtype).expand(batch).view(batch, 1, 1, 1)
            mixed = lam_x * x + (1.0 - lam_x) * partner_x
            partner_weight = 1.0 - lam_x.view(batch).float()
        else:
            alpha = self.cfg.cutmix_alpha
            lam = sample_beta(alpha, alpha, n_draws, generator=generator)
            mask, pasted = _cutmix_boxes(lam, x.shape[-2], x.shape[-1], generator)
            mask = mask.expand(batch, -1, -1).unsqueeze(1)  # (B, 1, H, W) broadcasts over C
            mixed = torch.where(mask, partner_x, x)
            partner_weight = pasted.expand(batch)
        w = partner_weight.unsqueeze(1)
        return mixed, (1.0 - w) * targets + w * partner_t


def _cutmix_boxes(
    lam: Tensor, height: int, width: int, generator: torch.Generator
) -> tuple[Tensor, Tensor]:
    """Boxes for CutMix (Yun et al. 2019) as boolean masks, one per entry of ``lam``.

    Returns ``(mask, pasted)``: mask (n, H, W) is True where the partner is pasted and
    ``pasted`` (n,) float32 is the exact fraction of True pixels, i.e. the corrected lambda
    complement. Built with index comparisons and broadcasting, so there is no loop over samples.
    """
    n, device = lam.shape[0], lam.device
    side = torch.sqrt((1.0 - lam).clamp(0.0, 1.0))
    cut_h = (side * height).floor().long()
    cut_w = (side * width).floor().long()
    centre = torch.rand(2, n, generator=generator, device=device)
    # clamp_max guards the float rounding of u * H up to H for u just below 1.
    cy = (centre[0] * height).floor().long().clamp_max(height - 1)
    cx = (centre[1] * width).floor().long().clamp_max(width - 1)
    # Start at centre - size // 2 and keep the full size before clipping, so an odd size is not
    # shortened by one pixel.
    y0 = (cy - cut_h // 2).clamp(0, height)
    y1 = (cy - cut_h // 2 + cut_h).clamp(0, height)
    x0 = (cx - cut_w // 2).clamp(0, width)
    x1 = (cx - cut_w // 2 + cut_w).clamp(0, width)
    mask = _box_mask(y0, y1, x0, x1, height, width)
    pasted = ((y1 - y0) * (x1 - x0)).float() / float(height * width)
    return mask, pasted


def _box_mask(y0: Tensor, y1: Tensor, x0: Tensor, x1: Tensor, height: int, width: int) -> Tensor:
    """(n, H, W) mask that is True on rows [y0, y1) and columns [x0, x1) of each entry."""
    rows = torch.arange(height, device=y0.device).view(1, height, 1)
    cols = torch.arange(width, device=y0.device).view(1, 1, width)
    v = lambda t: t.view(-1, 1, 1)  # noqa: E731 - local shorthand for broadcasting
    return (rows >= v(y0)) & (rows < v(y1)) & (cols >= v(x0)) & (cols < v(x1))


# ---------------------------------------------------------------------------------------------
# Random erasing

#: Candidate rectangles tried per sample before giving up on erasing it (as in the paper's
#: retry loop, but bounded so that the batch needs no data-dependent loop).
_ERASE_ATTEMPTS = 10


def _check_range(name: str, value: object, low: float, high: float) -> tuple[float, float]:
    """Validate a (lo, hi) pair with ``low < lo <= hi <= high``."""
    try:
        lo, hi = (float(v) for v in value)  # type: ignore[union-attr]
    except (TypeError, ValueError):
        raise ReprlabError(f"{name}={value!r} is invalid; expected a pair (lo, hi)") from None
    if not (low < lo <= hi <= high):
        raise ReprlabError(f"{name}={value!r} is invalid; expected {low} < lo <= hi <= {high}")
    return lo, hi


def random_erasing(
    x: Tensor,
    prob: float,
    scale: tuple[float, float] = (0.02, 0.33),
    ratio: tuple[float, float] = (0.3, 3.3),
    *,
    generator: torch.Generator,
) -> Tensor:
    """Random erasing (Zhong et al. 2020) of one rectangle per sample, batched on the device.

    Each sample is erased with probability ``prob``. Its rectangle has area fraction uniform in
    ``scale`` and aspect ratio (height / width) log-uniform in ``ratio``; after rounding to
    whole pixels a candidate is kept only if its area fraction is still within ``scale`` and it
    is strictly smaller than the image in both sides. Up to 10 candidates are tried per sample
    and the first valid one is used (none valid: the sample is left intact). The rectangle is
    filled with standard-normal noise per pixel and channel, which suits normalised images.

    Args:
        x: float images (B, C, H, W), normally already normalised.
        prob: erasing probability in [0, 1]; 0 returns ``x`` itself without drawing anything.
        scale: range of the erased area as a fraction of H * W.
        ratio: range of the rectangle's aspect ratio.
        generator: ``torch.Generator`` on ``x``'s device.

    Returns:
        A new tensor (or ``x`` when ``prob == 0``) of the same shape and dtype.
    """
    if x.ndim != 4 or not x.is_floating_point():
        raise ReprlabError(
            f"images have shape {tuple(x.shape)} and dtype {x.dtype}; "
            "expected a floating (B, C, H, W) tensor"
        )
    if isinstance(prob, bool) or not isinstance(prob, (int, float)) or not 0.0 <= prob <= 1.0:
        raise ReprlabError(f"random erasing prob={prob!r} is invalid; expected a number in [0, 1]")
    s_lo, s_hi = _check_range("random erasing scale", scale, 0.0, 1.0)
    r_lo, r_hi = _check_range("random erasing ratio", ratio, 0.0, math.inf)
    _check_generator(generator, x.device)
    if prob == 0:
        return x

    batch, _, height, width = x.shape
    device = x.device
    draws = torch.rand(batch, 2 * _ERASE_ATTEMPTS + 3, generator=generator, device=device)
    area = height * width * (s_lo + (s_hi - s_lo) * draws[:, :_ERASE_ATTEMPTS])
    log_r = math.log(r_lo) + (math.log(r_hi) - math.log(r_lo)) * draws[:, _ERASE_ATTEMPTS:-3]
    aspect = log_r.exp()
    h = torch.sqrt(area * aspect).round().long()
    w = torch.sqrt(area / aspect).round().long()
    frac = (h * w).double() / (height * width)
    valid = (h >= 1) & (w >= 1) & (h < height) & (w < width) & (frac >= s_lo) & (frac <= s_hi)
    first = valid.int().argmax(dim=1, keepdim=True)  # index of the first valid candidate
    h = h.gather(1, first).squeeze(1)
    w = w.gather(1, first).squeeze(1)
    erase = valid.any(dim=1) & (draws[:, -3] < prob)
    # Top-left corner uniform over all positions where the rectangle fits.
    top = (draws[:, -2] * (height - h + 1)).floor().long().clamp_max(height - h)
    left = (draws[:, -1] * (width - w + 1)).floor().long().clamp_max(width - w)
    mask = _box_mask(top, top + h, left, left + w, height, width) & erase.view(-1, 1, 1)
    noise = torch.randn(x.shape, generator=generator, device=device).to(x.dtype)
    return torch.where(mask.unsqueeze(1), noise, x)


# ---------------------------------------------------------------------------------------------
# RandAugment

#: Magnitudes run from 0 to 30 (31 levels, the convention of common RandAugment
#: implementations, so that "magnitude 9" means the same thing as in published recipes).
_MAX_MAGNITUDE = 30
#: Fill value for pixels uncovered by geometric ops: mid-grey adds weaker artificial edges
#: than black.
_FILL = 128.0

_Op = Callable[[Tensor, float], Tensor]  # (uint8 batch, signed level in [-1, 1]) -> uint8 batch


def _affine(
    x: Tensor, translate: tuple[float, float] = (0.0, 0.0), shear: tuple[float, float] = (0.0, 0.0)
) -> Tensor:
    """Translate (pixels) or shear (degrees) a uint8 batch about the image centre."""
    return TF.affine(
        x,
        angle=0.0,
        translate=list(translate),
        scale=1.0,
        shear=list(shear),
        interpolation=TF.InterpolationMode.BILINEAR,
        fill=[_FILL] * x.shape[1],
    )


def _shear_degrees(level: float) -> float:
    # Shear factor up to 0.3, which torchvision takes as an angle.
    return math.degrees(math.atan(0.3 * level))


def _translate_pixels(level: float, size: int) -> float:
    # Up to 150/331 of the image side: the translate range RandAugment uses at 331 px.
    return float(round(level * size * 150.0 / 331.0))


# Ranges follow the RandAugment paper's search space (Cubuk et al. 2020); level is the
# magnitude divided by 30 and carries the sign for the symmetric ops.
_OPS: dict[str, tuple[_Op, bool]] = {
    "identity": (lambda x, level: x, False),
    "autocontrast": (lambda x, level: TF.autocontrast(x), False),
    "equalize": (lambda x, level: TF.equalize(x), False),
    "rotate": (
        lambda x, level: TF.rotate(
            x, 30.0 * level, interpolation=TF.InterpolationMode.BILINEAR, fill=[_FILL] * x.shape[1]
        ),
        True,
    ),
    # Stronger magnitude = lower threshold = more pixels inverted.
    "solarize": (lambda x, level: TF.solarize(x, 255.0 * (1.0 - level)), False),
    "color": (lambda x, level: TF.adjust_saturation(x, 1.0 + 0.9 * level), True),
    # 8 bits at magnitude 0 down to 4 bits at 30.
    "posterize": (lambda x, level: TF.posterize(x, 8 - int(round(4 * level))), False),
    "contrast": (lambda x, level: TF.adjust_contrast(x, 1.0 + 0.9 * level), True),
    "brightness": (lambda x, level: TF.adjust_brightness(x, 1.0 + 0.9 * level), True),
    "sharpness": (lambda x, level: TF.adjust_sharpness(x, 1.0 + 0.9 * level), True),
    "shear_x": (lambda x, level: _affine(x, shear=(_shear_degrees(level), 0.0)), True),
    "shear_y": (lambda x, level: _affine(x, shear=(0.0, _shear_degrees(level))), True),
    "translate_x": (
        lambda x, level: _affine(x, translate=(_translate_pixels(level, x.shape[-1]), 0.0)),
        True,
    ),
    "translate_y": (
        lambda x, level: _affine(x, translate=(0.0, _translate_pixels(level, x.shape[-2]))),
        True,
    ),
}

#: Names of the RandAugment operations, in the order their indices are drawn.
RAND_AUGMENT_OPS: tuple[str, ...] = tuple(_OPS)


def _apply_op(x: Tensor, name: str, magnitude: float, negate: bool = False) -> Tensor:
    """Apply RandAugment op ``name`` at ``magnitude`` (0..30) to a uint8 batch."""
    fn, signed = _OPS[name]
    level = magnitude / _MAX_MAGNITUDE
    return fn(x, -level if (signed and negate) else level)


def rand_augment(
    x: Tensor, num_ops: int = 2, magnitude: float = 9, *, generator: torch.Generator
) -> Tensor:
    """RandAugment (Cubuk et al. 2020) on a uint8 batch, with per-sample operation choice.

    For each of ``num_ops`` rounds every sample draws one of :data:`RAND_AUGMENT_OPS`
    uniformly, all at the same ``magnitude`` (0..30).

    Deviation from the per-image formulation: samples that drew the same op in a round are
    processed together as one batched call, and the sign of the symmetric ops (rotate, shear,
    translate, colour/contrast/brightness/sharpness) is drawn once per such group instead of
    once per image. Over many batches each sign is still equally likely; only signs within a
    group of one batch are correlated. This costs at most 14 kernel launches per round
    instead of one per image.

    Args:
        x: uint8 images (B, C, H, W) with C in {1, 3}.
        num_ops: operations applied in sequence per sample (0 returns ``x``).
        magnitude: shared strength in [0, 30].
        generator: ``torch.Generator`` on ``x``'s device.

    Returns:
        A uint8 tensor of the same shape.
    """
    if x.ndim != 4 or x.dtype != torch.uint8 or x.shape[1] not in (1, 3):
        raise ReprlabError(
            f"images have shape {tuple(x.shape)} and dtype {x.dtype}; "
            "expected a uint8 (B, C, H, W) tensor with C = 1 or 3"
        )
    if isinstance(num_ops, bool) or not isinstance(num_ops, int) or num_ops < 0:
        raise ReprlabError(f"RandAugment num_ops={num_ops!r} is invalid; expected an integer >= 0")
    if (
        isinstance(magnitude, bool)
        or not isinstance(magnitude, (int, float))
        or not 0 <= magnitude <= _MAX_MAGNITUDE
    ):
        raise ReprlabError(
            f"RandAugment magnitude={magnitude!r} is invalid; "
            f"expected a number in [0, {_MAX_MAGNITUDE}]"
        )
    _check_generator(generator, x.device)
    if num_ops == 0 or x.shape[0] == 0:
        return x

    n_ops = len(RAND_AUGMENT_OPS)
    out = x.clone()
    for _ in range(num_ops):
        choice = torch.randint(0, n_ops, (x.shape[0],), generator=generator, device=x.device)
        negate = (torch.rand(n_ops, generator=generator, device=x.device) < 0.5).tolist()
        # One host sync per round: group sizes, then the groups as slices of a stable sort.
        counts = torch.bincount(choice, minlength=n_ops).tolist()
        order = torch.argsort(choice, stable=True)
        for op_index, group in enumerate(torch.split(order, counts)):
            if group.numel() == 0 or RAND_AUGMENT_OPS[op_index] == "identity":
                continue  # skip the gather/scatter for ops that would change nothing
            name = RAND_AUGMENT_OPS[op_index]
            out[group] = _apply_op(out[group], name, magnitude, negate[op_index])
    return out
