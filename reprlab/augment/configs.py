"""The augmentation sections of a run's config: ``[views]`` (:class:`ViewConfig`, one per
named view pipeline) and ``[aug.mix]`` (:class:`MixConfig`). Plain dataclasses without torch,
so that :mod:`reprlab.config` loads them (and the command line starts) without importing it; the
code that applies them is :mod:`reprlab.augment.views` and :mod:`reprlab.augment.mix`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from reprlab.errors import ReprlabError

__all__ = ["CropCount", "MixConfig", "ViewConfig", "ViewRules", "blur_kernel_size"]


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


@dataclass
class MixConfig:
    """Batch-mixing settings for CutMix (Yun et al. 2019) and Mixup (Zhang et al. 2018)."""

    cutmix_alpha: float = 1.0  # CutMix lambda ~ Beta(alpha, alpha); 1.0 (uniform) as in the paper
    cutmix_prob: float = 0.0  # probability that a batch is CutMix-ed (0 disables CutMix)
    mixup_alpha: float = 0.8  # Mixup lambda ~ Beta(alpha, alpha); small alpha keeps it near 0 or 1
    mixup_prob: float = 0.0  # probability that a batch is Mixup-ed (0 disables Mixup)
    switch_prob: float = 0.5  # with both enabled: chance a batch picks Mixup rather than CutMix
    label_smoothing: float = 0.0  # target = (1 - eps) * mixed one-hot + eps / num_classes
    per_sample: bool = True  # draw lambda (and CutMix box) per sample; False: one per batch

    def validate(self) -> None:
        """Raise :class:`ReprlabError` naming the first invalid field."""
        for name in ("cutmix_alpha", "mixup_alpha"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not (
                math.isfinite(value) and value > 0
            ):
                raise ReprlabError(f"mix.{name}={value!r} is invalid; expected a number > 0")
        for name in ("cutmix_prob", "mixup_prob", "switch_prob"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not (
                0.0 <= value <= 1.0
            ):
                raise ReprlabError(f"mix.{name}={value!r} is invalid; expected a number in [0, 1]")
        eps = self.label_smoothing
        if isinstance(eps, bool) or not isinstance(eps, (int, float)) or not 0.0 <= eps < 1.0:
            raise ReprlabError(
                f"mix.label_smoothing={eps!r} is invalid; expected a number in [0, 1)"
            )
        if not isinstance(self.per_sample, bool):
            raise ReprlabError(
                f"mix.per_sample={self.per_sample!r} is invalid; expected true or false"
            )


# --------------------------------------------------------------------------------------------
# What a method accepts from its views (declared by its [method] dataclass: no torch)


@dataclass(frozen=True)
class CropCount:
    """How many crops a view may give per image: ``min`` to ``max`` (None: no upper bound)."""

    min: int
    max: int | None

    def accepts(self, n: int) -> bool:
        return self.min <= n and (self.max is None or n <= self.max)

    def __str__(self) -> str:
        if self.max == self.min:
            return str(self.min)
        return f"{self.min} or more" if self.max is None else f"{self.min} to {self.max}"


@dataclass(frozen=True)
class ViewRules:
    """The views a method accepts and the crops it can use from each: its ``[method]``
    dataclass declares them (``view_rules()``), the config is checked against them on load and
    ``reprlab config views`` prints them.

    ``same_size``: views whose crops must all have one side length (crops that are concatenated
    into one batch); ``smaller``: views whose crops must be smaller than those (DINO's local
    crops, which the teacher never sees); ``why``: what the method does with its crops, in one
    line, quoted in the error."""

    counts: dict[str, CropCount]
    same_size: tuple[str, ...] = ()
    smaller: tuple[str, ...] = ()
    why: str = ""

    def check(self, method: str, views: dict[str, ViewConfig]) -> None:
        """Raise the one-line error naming the first view key the method cannot use."""
        why = f" ({self.why})" if self.why else ""
        for name, view in views.items():
            if name not in self.counts:  # a method's default views and its rules disagree: a bug of the method
                raise ReprlabError(f"method {method!r} declares no crop count for its view {name!r} (methods/configs.py: view_rules)")
            need = self.counts[name]
            if not need.accepts(view.count):
                exactly = "exactly " if need.min == need.max else ""
                crops = "crop" if need.min == need.max == 1 else "crops"
                raise ReprlabError(f"config key 'views.{name}.count' = {view.count!r}: method {method!r} needs {exactly}{need} {crops} from view {name!r}{why}")
        used = [n for n in self.same_size if n in views and views[n].count > 0]
        for name in used[1:]:
            if views[name].size != views[used[0]].size:
                raise ReprlabError(f"config key 'views.{name}.size' = {views[name].size!r}: method {method!r} needs one crop size for views "
                                   f"{', '.join(self.same_size)} (views.{used[0]}.size = {views[used[0]].size!r}){why}")
        for name in self.smaller:
            if used and name in views and views[name].count > 0 and views[name].size >= views[used[0]].size:
                raise ReprlabError(f"config key 'views.{name}.size' = {views[name].size!r}: method {method!r} needs the crops of view {name!r} "
                                   f"smaller than those of {', '.join(self.same_size)} ({views[used[0]].size} px){why}")

    def describe(self, views: dict[str, ViewConfig]) -> list[str]:
        """One line per view (its default crops and what the method accepts), then the size
        rules and ``why``: what ``reprlab config views`` prints for a method."""
        if not views:
            return ["no views (its augmentation is [aug]: crop, flip, RandAugment, erasing, CutMix/Mixup)"]
        width = max(len(n) for n in views)
        lines = [f"{'views.' + n + '.count':<{width + 12}}  accepts {str(self.counts.get(n, '?')):<10} (default {v.count}; size {v.size} px)" for n, v in views.items()]
        if len(self.same_size) > 1:
            lines.append(f"one crop size for views {', '.join(self.same_size)}")
        if self.smaller:
            lines.append(f"crops of view {', '.join(self.smaller)} smaller than those of {', '.join(self.same_size)}")
        if self.why:
            lines.append(f"why: {self.why}")
        return lines
