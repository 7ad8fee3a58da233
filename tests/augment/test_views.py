"""Tests for batched per-sample view augmentation (reprlab.augment.views, .ops).

Reference semantics are ``torchvision.transforms.v2.functional`` applied image by image; the
batched ops must agree within one 8-bit grey level (1/255).
"""

from __future__ import annotations

import math

import pytest
import torch
import torchvision.transforms.v2.functional as TF

from reprlab.augment.configs import blur_kernel_size
from reprlab.augment.ops import (
    adjust_brightness,
    adjust_contrast,
    adjust_hue,
    adjust_saturation,
    gaussian_blur,
    resized_crop,
    rgb_to_grayscale,
    sample_crop_boxes,
    solarize,
)
from reprlab.augment.views import MultiView, ViewAugment, ViewConfig, identity_params
from reprlab.errors import ReprlabError

TOL = 1.0 / 255.0
MEAN = (0.507, 0.487, 0.441)
STD = (0.267, 0.256, 0.276)


def _random_images(n: int, size: int = 32, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (n, 3, size, size), generator=g, dtype=torch.uint8)


def _smooth_images(n: int, size: int = 32, seed: int = 1) -> torch.Tensor:
    """Photo-like images: low-frequency colour gradients and blobs, with mostly similar
    neighbouring pixels (random noise never has that)."""
    g = torch.Generator().manual_seed(seed)
    yy, xx = torch.meshgrid(torch.linspace(0, 1, size), torch.linspace(0, 1, size), indexing="ij")
    out = []
    for _ in range(n):
        freq = torch.rand(3, 2, generator=g) * 3
        phase = torch.rand(3, generator=g) * 6.28
        base = torch.rand(3, generator=g)
        waves = [torch.sin(6 * (freq[c, 0] * xx + freq[c, 1] * yy) + phase[c]) for c in range(3)]
        chans = [0.5 * base[c] + 0.25 * (1 + waves[c]) for c in range(3)]
        out.append(torch.stack(chans))
    return (torch.stack(out) * 255).round().to(torch.uint8)


def _extreme_images(size: int = 32) -> torch.Tensor:
    """Saturated and degenerate colours: black, white, primaries, secondaries (two channels
    tied at the maximum), near-gray, and a half-black/half-white split."""
    colours = [
        (0, 0, 0),
        (255, 255, 255),
        (255, 0, 0),
        (0, 255, 0),
        (0, 0, 255),
        (255, 255, 0),
        (0, 255, 255),
        (255, 0, 255),
        (128, 128, 129),
        (1, 0, 0),
    ]
    imgs = torch.tensor(colours, dtype=torch.uint8).view(-1, 3, 1, 1).expand(-1, 3, size, size).clone()
    split = torch.zeros(1, 3, size, size, dtype=torch.uint8)
    split[..., size // 2 :] = 255
    return torch.cat((imgs, split))


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """These tensors are tiny; on a shared 2-core machine intra-op threads only add barrier
    waits, so run single-threaded and restore the setting afterwards."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


IMAGE_SETS = {
    "random": lambda: _random_images(8),
    "smooth": lambda: _smooth_images(8),
    "extreme": _extreme_images,
}


def _per_image(fn, x: torch.Tensor, values: torch.Tensor | None = None, **kw) -> torch.Tensor:
    if values is None:
        return torch.stack([fn(img, **kw) for img in x])
    return torch.stack([fn(img, float(v), **kw) for img, v in zip(x, values)])


def _factors(n: int, lo: float, hi: float, seed: int) -> torch.Tensor:
    """Factors spanning [lo, hi] including both end points."""
    g = torch.Generator().manual_seed(seed)
    f = lo + (hi - lo) * torch.rand(n, generator=g)
    f[0], f[-1] = lo, hi
    return f


# --------------------------------------------------------------------------- colour ops


@pytest.mark.parametrize("images", list(IMAGE_SETS))
@pytest.mark.parametrize(
    ("ours", "theirs", "lo", "hi"),
    [
        (adjust_brightness, TF.adjust_brightness, 0.0, 2.0),
        (adjust_contrast, TF.adjust_contrast, 0.0, 2.0),
        (adjust_saturation, TF.adjust_saturation, 0.0, 2.0),
        (adjust_hue, TF.adjust_hue, -0.5, 0.5),
    ],
    ids=["brightness", "contrast", "saturation", "hue"],
)
def test_factor_ops_match_torchvision(images, ours, theirs, lo, hi):
    x = IMAGE_SETS[images]().float() / 255
    f = _factors(len(x), lo, hi, seed=3)
    got = ours(x, f)
    assert got.shape == x.shape
    assert (got - _per_image(theirs, x, f)).abs().max().item() <= TOL


@pytest.mark.parametrize("images", list(IMAGE_SETS))
def test_grayscale_and_solarize_match_torchvision(images):
    x = IMAGE_SETS[images]().float() / 255
    gray = _per_image(TF.rgb_to_grayscale, x, num_output_channels=3)
    assert (rgb_to_grayscale(x) - gray).abs().max().item() <= TOL
    for threshold in (0.0, 0.5, 128 / 255, 1.0):
        ref = _per_image(TF.solarize, x, threshold=threshold)
        assert (solarize(x, threshold) - ref).abs().max().item() <= TOL


@pytest.mark.parametrize("images", list(IMAGE_SETS))
@pytest.mark.parametrize("kernel", [3, 5])
def test_blur_matches_torchvision(images, kernel):
    x = IMAGE_SETS[images]().float() / 255
    sigma = _factors(len(x), 0.1, 2.0, seed=4)
    ref = torch.stack(
        [TF.gaussian_blur(img, [kernel, kernel], [float(s), float(s)]) for img, s in zip(x, sigma)]
    )
    got = gaussian_blur(x, kernel, sigma)
    assert (got - ref).abs().max().item() <= TOL
    # A real blur, not an identity: it changes the random images noticeably.
    if images == "random":
        assert (got - x).abs().max().item() > 0.1


def test_hue_rotation_moves_primaries_around_the_wheel():
    # A third of a turn maps red -> green -> blue -> red, exactly.
    x = torch.eye(3).view(3, 3, 1, 1).expand(3, 3, 4, 4)
    got = adjust_hue(x, torch.full((3,), 1.0 / 3.0))
    assert torch.allclose(got, x.roll(-1, dims=0), atol=1e-6)  # got[0] is green, x[1]


# --------------------------------------------------------------------------- crop


@pytest.mark.parametrize("side", [32, 64])
def test_resized_crop_matches_torchvision_crop_resize_flip(side):
    g = torch.Generator().manual_seed(5)
    images = _smooth_images(12, size=side)
    boxes = sample_crop_boxes(torch.rand(12, 22, generator=g), side, side, (0.08, 1.0), (0.75, 4 / 3))
    boxes[0] = torch.tensor([0.0, 0.0, side, side])  # whole image
    boxes[1] = torch.tensor([side - 5.0, side - 3.0, 5.0, 3.0])  # tiny box in the corner
    flip = torch.arange(12) % 2 == 1
    got = resized_crop(images, boxes, 32, flip)
    ref = []
    for img, (top, left, h, w), fl in zip(images.float(), boxes.long().tolist(), flip):
        out = TF.resized_crop(img, top, left, h, w, [32, 32], antialias=False)
        ref.append(TF.horizontal_flip(out) if fl else out)
    assert got.shape == (12, 3, 32, 32) and got.dtype == torch.float32
    assert (got - torch.stack(ref)).abs().max().item() <= 1.0  # one level on the 0..255 scale


def test_full_crop_downscale_by_two_averages_pixel_blocks():
    images = _random_images(4, size=64)
    got = resized_crop(images, torch.tensor([[0.0, 0.0, 64.0, 64.0]]).repeat(4, 1), 32)
    ref = torch.nn.functional.avg_pool2d(images.float(), 2)
    assert (got - ref).abs().max().item() < 1e-3


def test_crop_boxes_cover_configured_ranges():
    n, side = 20000, 1024  # a large canvas keeps pixel rounding of the box negligible
    g = torch.Generator().manual_seed(6)
    boxes = sample_crop_boxes(torch.rand(n, 22, generator=g), side, side, (0.08, 1.0), (3 / 4, 4 / 3))
    top, left, h, w = boxes.unbind(1)
    area = h * w / side**2
    ratio = w / h
    assert area.min() >= 0.08 - 0.002 and area.max() <= 1.0
    assert ratio.min() >= 0.75 - 0.005 and ratio.max() <= 4 / 3 + 0.005
    assert area.min() < 0.085 and area.max() > 0.95
    assert ratio.min() < 0.76 and ratio.max() > 1.32
    assert (top >= 0).all() and (left >= 0).all()
    assert (top + h <= side).all() and (left + w <= side).all()
    # Integer pixel boxes, like torchvision.
    assert torch.equal(boxes, boxes.round())


def test_crop_boxes_on_cifar_size_stay_in_range_up_to_rounding():
    n, side = 20000, 32
    g = torch.Generator().manual_seed(7)
    boxes = sample_crop_boxes(torch.rand(n, 22, generator=g), side, side, (0.08, 1.0), (3 / 4, 4 / 3))
    top, left, h, w = boxes.unbind(1)
    # Each side is the rounding of an exact side (w*, h*) whose area and ratio are in range,
    # so the exact box lies within half a pixel of the rounded one.
    area = h * w / side**2
    assert ((w + 0.5) * (h + 0.5) >= 0.08 * side**2).all() and (area <= 1.0).all()
    assert ((w + 0.5) / (h - 0.5) >= 0.75).all()
    assert ((w - 0.5) / (h + 0.5) <= 4 / 3).all()
    assert (top + h <= side).all() and (left + w <= side).all()
    assert area.min() < 0.1 and area.max() == 1.0
    # Offsets reach both ends of their range.
    assert top.min() == 0 and (top + h).max() == side


def test_crop_falls_back_to_centre_crop_when_no_box_fits():
    # Ratios of 3..4 cannot fit a box of >= 90% of a square image: torchvision then takes the
    # widest centred box with the smallest allowed ratio.
    boxes = sample_crop_boxes(torch.rand(50, 22), 32, 32, (0.9, 1.0), (3.0, 4.0))
    h = int(round(32 / 3.0))
    expected = torch.tensor([(32 - h) // 2, 0, h, 32], dtype=torch.float32)
    assert torch.equal(boxes, expected.expand(50, 4))
    # The tall side of the rule: ratios below the image's fall back to full height.
    boxes = sample_crop_boxes(torch.rand(5, 22), 32, 32, (0.9, 1.0), (0.25, 0.3))
    w = int(round(32 * 0.3))
    assert torch.equal(boxes, torch.tensor([0, (32 - w) // 2, 32, w], dtype=torch.float32).expand(5, 4))


# --------------------------------------------------------------------------- whole pipeline


def _reference_view(img_u8: torch.Tensor, p: dict, i: int, cfg: ViewConfig) -> torch.Tensor:
    """One view built from torchvision functional ops with sample i's parameters."""
    top, left, h, w = p["crop"][i].long().tolist()
    y = TF.resized_crop(img_u8.float() / 255, top, left, h, w, [cfg.size, cfg.size], antialias=False)
    if p["flip"][i]:
        y = TF.horizontal_flip(y)
    if p["jitter"][i]:
        ops = [
            lambda t: TF.adjust_brightness(t, float(p["brightness"][i])),
            lambda t: TF.adjust_contrast(t, float(p["contrast"][i])),
            lambda t: TF.adjust_saturation(t, float(p["saturation"][i])),
            lambda t: TF.adjust_hue(t, float(p["hue"][i])),
        ]
        for op in p["order"][i].tolist():
            y = ops[op](y)
    if p["grayscale"][i]:
        y = TF.rgb_to_grayscale(y, num_output_channels=3)
    if p["blur"][i]:
        k = blur_kernel_size(cfg.size, cfg.blur_kernel_frac)
        s = float(p["blur_sigma"][i])
        y = TF.gaussian_blur(y, [k, k], [s, s])
    if p["solarize"][i]:
        y = TF.solarize(y, cfg.solarize_threshold)
    return TF.normalize(y, list(MEAN), list(STD))


@pytest.mark.parametrize("side", [32, 64])
def test_apply_matches_torchvision_pipeline_per_sample(side):
    cfg = ViewConfig(jitter_prob=0.9, grayscale_prob=0.3, blur_prob=0.5, solarize_prob=0.5)
    aug = ViewAugment(cfg, MEAN, STD)
    images = torch.cat((_smooth_images(16, size=side), _random_images(8, size=side)))
    p = aug.sample_params(len(images), side, side, torch.Generator().manual_seed(8))
    # The draw exercises every branch (otherwise this test would prove less than it claims).
    for key in ("flip", "jitter", "grayscale", "blur", "solarize"):
        assert 0 < int(p[key].sum()) < len(images), key
    assert len({tuple(o) for o in p["order"].tolist()}) > 5
    got = aug.apply(images, p)
    ref = torch.stack([_reference_view(img, p, i, cfg) for i, img in enumerate(images)])
    std = torch.tensor(STD).view(1, 3, 1, 1)
    assert ((got - ref).abs() * std).max().item() <= TOL


def test_jitter_order_is_per_sample():
    # Same image, same factors, two different op orders: brightness-then-contrast and
    # contrast-then-brightness give different pixels, and each matches its own reference.
    cfg = ViewConfig()
    aug = ViewAugment(cfg, MEAN, STD)
    images = _smooth_images(1).expand(2, -1, -1, -1).contiguous()
    p = identity_params(2, 32, 32)
    p["jitter"][:] = True
    p["brightness"][:] = 1.8
    p["contrast"][:] = 0.3
    p["order"] = torch.tensor([[0, 1, 2, 3], [1, 0, 2, 3]])
    got = aug.apply(images, p)
    assert (got[0] - got[1]).abs().max().item() > 0.1
    for i in range(2):
        ref = _reference_view(images[i], p, i, cfg)
        assert (got[i] - ref).abs().max().item() <= TOL / min(STD)


def test_sampled_parameters_follow_config_ranges():
    cfg = ViewConfig(brightness=0.4, contrast=0.8, saturation=1.5, hue=0.1, blur_prob=0.5)
    aug = ViewAugment(cfg, MEAN, STD)
    p = aug.sample_params(4000, 32, 32, torch.Generator().manual_seed(9))
    for key, (lo, hi) in {
        "brightness": (0.6, 1.4),
        "contrast": (0.2, 1.8),
        "saturation": (0.0, 2.5),  # lower bound clipped at 0 like ColorJitter
        "hue": (-0.1, 0.1),
        "blur_sigma": (0.1, 2.0),
    }.items():
        v = p[key]
        span = hi - lo
        assert v.min() >= lo and v.max() <= hi, key
        assert v.min() < lo + 0.01 * span and v.max() > hi - 0.01 * span, key
    # Probabilities come out near their configured values.
    for key, prob in {"flip": 0.5, "jitter": 0.8, "grayscale": 0.2, "blur": 0.5, "solarize": 0.0}.items():
        assert abs(p[key].float().mean().item() - prob) < 0.04, key
    # Every one of the 24 orders occurs, each a permutation of the four ops.
    orders = p["order"]
    assert torch.equal(orders.sort(dim=1).values, torch.arange(4).expand(4000, 4))
    assert len({tuple(o) for o in orders.tolist()}) == 24


def test_identity_config_returns_normalised_input():
    cfg = ViewConfig(
        crop_scale=(1.0, 1.0), crop_ratio=(1.0, 1.0), flip_prob=0.0, jitter_prob=0.0, grayscale_prob=0.0
    )
    aug = ViewAugment(cfg, MEAN, STD)
    images = _random_images(16)
    out = aug(images, torch.Generator().manual_seed(0))
    expected = TF.normalize(images.float() / 255, list(MEAN), list(STD))
    assert out.shape == (16, 3, 32, 32) and out.dtype == torch.float32
    assert (out - expected).abs().max().item() < 1e-5


def test_identity_config_on_64px_input_resizes_to_32():
    cfg = ViewConfig(
        crop_scale=(1.0, 1.0), crop_ratio=(1.0, 1.0), flip_prob=0.0, jitter_prob=0.0, grayscale_prob=0.0
    )
    aug = ViewAugment(cfg, MEAN, STD)
    images = _random_images(4, size=64)
    out = aug(images, torch.Generator().manual_seed(0))
    expected = TF.normalize(torch.nn.functional.avg_pool2d(images.float() / 255, 2), list(MEAN), list(STD))
    assert out.shape == (4, 3, 32, 32)
    assert (out - expected).abs().max().item() < 1e-4


def test_samples_of_a_batch_get_different_views():
    aug = ViewAugment(ViewConfig(), MEAN, STD)
    images = _smooth_images(1).expand(16, -1, -1, -1).contiguous()
    out = aug(images, torch.Generator().manual_seed(10)).flatten(1)
    dist = torch.cdist(out, out)
    off_diag = dist[~torch.eye(16, dtype=torch.bool)]
    assert off_diag.min().item() > 1e-3


def test_two_views_differ_and_seed_reproduces_them():
    views = MultiView({"view": ViewConfig(count=2)}, MEAN, STD)
    images = _smooth_images(8)
    a1, b1 = views(images, torch.Generator().manual_seed(11))
    a2, b2 = views(images, torch.Generator().manual_seed(11))
    assert torch.equal(a1, a2) and torch.equal(b1, b2)
    assert (a1 - b1).flatten(1).abs().amax(dim=1).min().item() > 1e-3
    c, _ = views(images, torch.Generator().manual_seed(12))
    assert not torch.equal(a1, c)


def test_multi_crop_layout_sizes_and_order():
    # DINO-style: 2 global crops, then 3 local crops of a smaller side, all batched.
    views = MultiView({"global": ViewConfig(count=2), "local": ViewConfig(size=16, count=3, crop_scale=(0.05, 0.3))}, MEAN, STD)
    crops = views(_smooth_images(5), torch.Generator().manual_seed(0))
    assert [tuple(c.shape) for c in crops] == [(5, 3, 32, 32)] * 2 + [(5, 3, 16, 16)] * 3
    assert views.layout == [("global", 32)] * 2 + [("local", 16)] * 3 and views.count("local") == 3
    assert not torch.equal(crops[2], crops[3])  # each crop of a pipeline has its own draws
    off = MultiView({"global": ViewConfig(count=2), "local": ViewConfig(size=16, count=0)}, MEAN, STD)  # a view turned off
    assert len(off) == 2 and off.count("local") == 0
    with pytest.raises(ReprlabError, match="at least one crop"):
        MultiView({"v": ViewConfig(count=0)}, MEAN, STD)
    with pytest.raises(ReprlabError, match="count"):
        MultiView({"v": ViewConfig(count=-1)}, MEAN, STD)


def test_restored_generator_state_replays_views():
    aug = ViewAugment(ViewConfig(blur_prob=0.5, solarize_prob=0.5), MEAN, STD)
    images = _random_images(8)
    g = torch.Generator().manual_seed(13)
    aug(images, g)
    state = g.get_state()
    first = aug(images, g)
    g.set_state(state)
    assert torch.equal(aug(images, g), first)


def test_reused_instance_matches_fresh_one_across_batch_sizes():
    # Temporaries are kept between calls; a smaller batch after a larger one (and back) must
    # not see stale data.
    cfg = ViewConfig(blur_prob=0.5, solarize_prob=0.5)
    reused = ViewAugment(cfg, MEAN, STD)
    g = torch.Generator().manual_seed(16)
    for n in (24, 8, 24, 3):
        images = _random_images(n, seed=n)
        p = reused.sample_params(n, 32, 32, g)
        assert torch.equal(reused.apply(images, p), ViewAugment(cfg, MEAN, STD).apply(images, p))


def test_global_rng_is_not_used():
    aug = ViewAugment(ViewConfig(blur_prob=0.5), MEAN, STD)
    images = _random_images(8)
    torch.manual_seed(0)
    a = aug(images, torch.Generator().manual_seed(14))
    torch.manual_seed(1)
    b = aug(images, torch.Generator().manual_seed(14))
    assert torch.equal(a, b)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_matches_cpu_for_same_parameters():
    aug = ViewAugment(ViewConfig(blur_prob=0.5, solarize_prob=0.5), MEAN, STD)
    images = _random_images(32)
    p = aug.sample_params(32, 32, 32, torch.Generator().manual_seed(15))
    cpu = aug.apply(images, p)
    gpu = aug.apply(images.cuda(), {k: v.cuda() for k, v in p.items()})
    assert gpu.device.type == "cuda"
    assert (gpu.cpu() - cpu).abs().max().item() < 1e-4
    out = aug(images.cuda(), torch.Generator(device="cuda").manual_seed(0))
    assert out.device.type == "cuda" and out.shape == (32, 3, 32, 32)


# --------------------------------------------------------------------------- validation


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("size", 0),
        ("size", 32.0),
        ("crop_scale", (0.0, 1.0)),
        ("crop_scale", (0.5, 0.2)),
        ("crop_scale", (0.1, 1.5)),
        ("crop_scale", (0.1,)),
        ("crop_ratio", (2.0, 1.0)),
        ("crop_ratio", (0.0, 1.0)),
        ("flip_prob", 1.5),
        ("jitter_prob", -0.1),
        ("grayscale_prob", math.nan),
        ("blur_prob", 2.0),
        ("solarize_prob", "0.5"),
        ("brightness", -0.1),
        ("contrast", -1.0),
        ("saturation", math.inf),
        ("hue", 0.6),
        ("hue", -0.1),
        ("blur_sigma", (0.0, 1.0)),
        ("blur_sigma", (2.0, 1.0)),
        ("blur_kernel_frac", 0.0),
        ("solarize_threshold", 1.5),
    ],
)
def test_validate_rejects_bad_values_naming_the_field(field, value):
    cfg = ViewConfig(**{field: value})
    with pytest.raises(ReprlabError, match=field) as err:
        cfg.validate()
    assert "\n" not in str(err.value)
    with pytest.raises(ReprlabError, match=field):
        ViewAugment(cfg, MEAN, STD)


def test_validate_accepts_defaults_and_lists_for_ranges():
    ViewConfig().validate()
    cfg = ViewConfig(crop_scale=[0.2, 1.0], crop_ratio=[0.5, 2.0], blur_sigma=[0.5, 1.0])
    cfg.validate()
    assert cfg.crop_scale == (0.2, 1.0) and isinstance(cfg.blur_sigma, tuple)


def test_bad_images_and_params_are_rejected():
    aug = ViewAugment(ViewConfig(), MEAN, STD)
    g = torch.Generator().manual_seed(0)
    with pytest.raises(ReprlabError, match="uint8"):
        aug(torch.rand(2, 3, 32, 32), g)
    with pytest.raises(ReprlabError, match="shape"):
        aug(torch.zeros(2, 1, 32, 32, dtype=torch.uint8), g)
    p = identity_params(2, 32, 32)
    del p["hue"]
    with pytest.raises(ReprlabError, match="hue"):
        aug.apply(torch.zeros(2, 3, 32, 32, dtype=torch.uint8), p)
    with pytest.raises(ReprlabError, match="crop"):
        aug.apply(torch.zeros(3, 3, 32, 32, dtype=torch.uint8), identity_params(2, 32, 32))
    with pytest.raises(ReprlabError, match="std"):
        ViewAugment(ViewConfig(), MEAN, (0.2, 0.0, 0.2))


def test_views_are_float32_under_bf16_autocast():
    # The loop runs training_step (and so the views) under autocast; blur is a convolution.
    aug = ViewAugment(ViewConfig(blur_prob=1.0, solarize_prob=0.5), MEAN, STD)
    images = _smooth_images(4)
    ref = aug(images, torch.Generator().manual_seed(3))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = aug(images, torch.Generator().manual_seed(3))
    assert out.dtype == torch.float32 and torch.equal(out, ref)
