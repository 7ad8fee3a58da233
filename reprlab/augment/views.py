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

The image ops themselves (and how they match torchvision) are in :mod:`reprlab.augment.ops`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor

from reprlab.augment.configs import ViewConfig, _range, blur_kernel_size
from reprlab.augment.ops import _luma_into, _per_sample, _resized_crop, _rotate_hue_, _Scratch, gaussian_blur, sample_crop_boxes, solarize
from reprlab.errors import ReprlabError

__all__ = ["ViewConfig", "ViewAugment", "MultiView", "identity_params"]

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
        # Temporaries reused across calls (see the note above the ops in reprlab.augment.ops).
        # This makes an instance unsafe to call from several threads at once; data-loader
        # workers are processes, and each gets its own copy.
        self._scratch = _Scratch()

    def __call__(self, images: Tensor, generator: torch.Generator) -> Tensor:
        """images: uint8 (B,3,H,W) on any device. Returns float32 (B,3,size,size), normalised
        with mean/std, on the same device."""
        # Views are computed in float32 whatever the caller's autocast: the blur's convolution
        # would otherwise come back in bf16 and the ops mix dtypes (and lose colour precision).
        with torch.autocast(images.device.type, enabled=False):
            return self.view(images, generator)

    def view(self, images: Tensor, generator: torch.Generator) -> Tensor:
        """:meth:`__call__` without its autocast guard: for callers already outside autocast
        (:class:`MultiView` switches it off once for all its crops)."""
        _check_images(images)
        gdev, idev = generator.device, images.device
        same_index = gdev.index is None or idev.index is None or gdev.index == idev.index
        if gdev.type != idev.type or not same_index:
            raise ReprlabError(f"view augment: generator is on {gdev}, expected the images' device {idev}")
        b, _, h, w = images.shape
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
        # float32 whatever the caller's autocast (see ViewAugment.__call__): one switch for all crops
        with torch.autocast(images.device.type, enabled=False):
            return [self.pipelines[name].view(images, generator) for name, _ in self.layout]
