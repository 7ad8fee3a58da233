"""Tests for on-device batch augmentations: CutMix (Yun et al. 2019), Mixup (Zhang et al.
2018), random erasing (Zhong et al. 2020), RandAugment (Cubuk et al. 2020) and the Beta sampler.

CutMix provenance is checked pixel by pixel: every sample is a distinct constant image, so each
output pixel reveals which input image it came from.
"""

from __future__ import annotations

import pytest
import torch
from torch import Tensor

from reprlab.augment.mix import (
    RAND_AUGMENT_OPS,
    BatchMix,
    MixConfig,
    _apply_op,
    _cutmix_boxes,
    rand_augment,
    random_erasing,
    sample_beta,
)
from reprlab.errors import ReprlabError

# Non-square on purpose, so a swapped height/width shows up.
H, W = 12, 20


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def many_betas(alpha: float, beta: float, seed: int, chunks: int = 4) -> Tensor:
    """100k Beta draws in chunks of 25k: below torch's 32k-element threshold every op stays
    single-threaded, which keeps the test fast on a busy 2-core machine."""
    g = gen(seed)
    return torch.cat([sample_beta(alpha, beta, 25_000, generator=g) for _ in range(chunks)])


def constant_batch(batch: int, channels: int = 3) -> Tensor:
    """Sample i is the constant image i + 1 (never 0, so no value is ambiguous)."""
    values = torch.arange(1, batch + 1, dtype=torch.float32).view(batch, 1, 1, 1)
    return values.expand(batch, channels, H, W).contiguous()


def bounding_box_is_filled(mask: Tensor) -> bool:
    """True when the True pixels of a 2-D mask form one full axis-aligned rectangle."""
    if not mask.any():
        return True
    rows = mask.any(dim=1).nonzero().squeeze(1)
    cols = mask.any(dim=0).nonzero().squeeze(1)
    box = mask[rows.min() : rows.max() + 1, cols.min() : cols.max() + 1]
    return bool(box.all()) and int(mask.sum()) == box.numel()


# ---------------------------------------------------------------------------------------------
# Beta sampler


@pytest.mark.parametrize("alpha", [0.2, 1.0, 2.0])
def test_beta_sampler_mean_and_variance(alpha: float) -> None:
    samples = many_betas(alpha, alpha, seed=int(alpha * 10))
    assert samples.dtype == torch.float32 and samples.shape == (100_000,)
    assert torch.isfinite(samples).all() and samples.min() >= 0 and samples.max() <= 1
    # Beta(a, a): mean 1/2, variance 1 / (4 (2a + 1)). Standard errors at n = 1e5 are < 1.5e-3.
    assert samples.mean().item() == pytest.approx(0.5, abs=6e-3)
    assert samples.var().item() == pytest.approx(1.0 / (4.0 * (2.0 * alpha + 1.0)), abs=4e-3)


def test_beta_sampler_asymmetric_and_uniform_quantiles() -> None:
    a, b = 2.0, 5.0
    samples = many_betas(a, b, seed=1)
    assert samples.mean().item() == pytest.approx(a / (a + b), abs=3e-3)
    assert samples.var().item() == pytest.approx(a * b / ((a + b) ** 2 * (a + b + 1)), abs=1.5e-3)
    # Beta(1, 1) is uniform: its empirical CDF must be the identity.
    uniform = many_betas(1.0, 1.0, seed=2)
    for q in (0.1, 0.25, 0.5, 0.9):
        assert (uniform < q).float().mean().item() == pytest.approx(q, abs=6e-3)


def test_beta_sampler_is_deterministic_under_a_seed() -> None:
    first = sample_beta(0.2, 0.2, 1000, generator=gen(42))
    again = sample_beta(0.2, 0.2, 1000, generator=gen(42))
    other = sample_beta(0.2, 0.2, 1000, generator=gen(43))
    assert torch.equal(first, again)
    assert not torch.equal(first, other)


def test_beta_sampler_rejects_bad_input() -> None:
    with pytest.raises(ReprlabError, match="alpha=0"):
        sample_beta(0, 1.0, 3, generator=gen(0))
    with pytest.raises(ReprlabError, match="beta=-1"):
        sample_beta(1.0, -1.0, 3, generator=gen(0))
    with pytest.raises(ReprlabError, match="expected a torch.Generator"):
        sample_beta(1.0, 1.0, 3, generator=0)  # type: ignore[arg-type]


# ---------------------------------------------------------------------------------------------
# CutMix


@pytest.mark.parametrize("per_sample", [True, False])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_cutmix_label_weight_is_exact_pasted_fraction(per_sample: bool, seed: int) -> None:
    batch, num_classes = 32, 40
    mix = BatchMix(MixConfig(cutmix_prob=1.0, per_sample=per_sample), num_classes)
    x = constant_batch(batch)
    y = torch.arange(batch) + 5  # distinct labels, so each weight is attributable
    out, targets = mix(x, y, gen(seed))

    assert out.shape == x.shape and targets.shape == (batch, num_classes)
    assert targets.dtype == torch.float32
    torch.testing.assert_close(targets.sum(dim=1), torch.ones(batch), rtol=0, atol=1e-6)
    masks = []
    for i in range(batch):
        partner = (i - 1) % batch  # documented pairing: the batch rolled by one
        changed = out[i] != x[i]
        # The same pixels change in every channel, and only to the partner's value.
        assert torch.equal(changed, changed[:1].expand_as(changed))
        assert torch.equal(out[i][changed], x[partner][changed])
        assert torch.equal(out[i][~changed], x[i][~changed])
        mask = changed[0]
        assert bounding_box_is_filled(mask)
        masks.append(mask)
        pasted = int(mask.sum())
        expected_weight = torch.tensor(pasted / (H * W), dtype=torch.float32)
        assert targets[i, y[partner]] == expected_weight, (i, pasted)
        assert targets[i, y[i]].item() == pytest.approx(1.0 - pasted / (H * W), abs=1e-6)
        others = torch.ones(num_classes, dtype=torch.bool)
        others[int(y[i])] = False
        others[int(y[partner])] = False
        assert torch.count_nonzero(targets[i, others]) == 0

    stacked = torch.stack(masks)
    if per_sample:
        # Independent boxes: sizes and positions differ across the batch.
        assert len({int(m.sum()) for m in masks}) > 5
    else:
        assert torch.equal(stacked, stacked[:1].expand_as(stacked))


def test_cutmix_pasted_region_comes_from_partner_at_same_positions() -> None:
    batch = 16
    mix = BatchMix(MixConfig(cutmix_prob=1.0), 100)
    y = torch.randint(0, 100, (batch,), generator=gen(9))
    # Boxes depend only on the generator, not on pixel values: the constant batch reveals the
    # masks that the same seed applies to a random batch.
    probe, _ = mix(constant_batch(batch), y, gen(5))
    mask = probe != constant_batch(batch)
    assert mask.any()
    x = torch.randn(batch, 3, H, W, generator=gen(6))
    out, _ = mix(x, y, gen(5))
    partner_x = x.roll(1, dims=0)
    assert torch.equal(out[mask], partner_x[mask])
    assert torch.equal(out[~mask], x[~mask])


def test_cutmix_boxes_are_clipped_and_cover_the_range() -> None:
    mix = BatchMix(MixConfig(cutmix_prob=1.0), 600)
    batch = 512
    out, targets = mix(constant_batch(batch, channels=1), torch.arange(batch), gen(3))
    fractions = (out != constant_batch(batch, channels=1)).float().mean(dim=(1, 2, 3))
    # With lambda ~ U(0, 1) the requested fraction is ~U(0, 1); clipping only removes area.
    assert fractions.min() == 0.0 or fractions.min() < 0.02
    assert fractions.max() > 0.8
    assert 0.2 < fractions.mean().item() < 0.5


def test_cutmix_box_size_follows_lambda_until_clipped() -> None:
    # lambda = 0.75 asks for sides sqrt(0.25) = 1/2 of the image: a 6 x 10 box at 12 x 20.
    n = 200
    mask, pasted = _cutmix_boxes(torch.full((n,), 0.75), H, W, gen(0))
    assert mask.shape == (n, H, W)
    torch.testing.assert_close(pasted, mask.float().mean(dim=(1, 2)), rtol=0, atol=0)
    clipped = 0
    for m in mask:
        rows, cols = m.any(dim=1), m.any(dim=0)
        at_border = bool(rows[0] or rows[-1] or cols[0] or cols[-1])
        if at_border and (rows.sum() < 6 or cols.sum() < 10):
            clipped += 1
            assert 0 < m.sum() < 60
        else:
            assert (rows.sum(), cols.sum()) == (6, 10)
    assert 0 < clipped < n  # centres are uniform, so both cases occur
    empty_mask, empty = _cutmix_boxes(torch.ones(5), H, W, gen(1))
    assert not empty_mask.any() and torch.equal(empty, torch.zeros(5))


@pytest.mark.parametrize("smoothing", [0.0, 0.1])
def test_no_mixing_is_identity_with_one_hot_targets(smoothing: float) -> None:
    num_classes = 10
    mix = BatchMix(MixConfig(label_smoothing=smoothing), num_classes)  # both probs default 0
    x = torch.randn(6, 3, H, W, generator=gen(0))
    y = torch.tensor([0, 3, 3, 9, 1, 2])
    out, targets = mix(x, y, gen(1))
    assert torch.equal(out, x)
    expected = torch.full((6, num_classes), smoothing / num_classes)
    expected[torch.arange(6), y] += 1.0 - smoothing
    torch.testing.assert_close(targets, expected, rtol=0, atol=1e-7)
    torch.testing.assert_close(targets.sum(dim=1), torch.ones(6), rtol=0, atol=1e-6)


def test_label_smoothing_is_folded_into_mixed_targets() -> None:
    num_classes, eps = 50, 0.2
    x, y = constant_batch(8), torch.arange(8)
    plain_out, plain = BatchMix(MixConfig(cutmix_prob=1.0), num_classes)(x, y, gen(4))
    smooth_out, smooth = BatchMix(
        MixConfig(cutmix_prob=1.0, label_smoothing=eps), num_classes
    )(x, y, gen(4))
    assert torch.equal(plain_out, smooth_out)
    torch.testing.assert_close(smooth, (1 - eps) * plain + eps / num_classes, rtol=0, atol=1e-6)
    torch.testing.assert_close(smooth.sum(dim=1), torch.ones(8), rtol=0, atol=1e-6)


def test_probabilities_and_switch_choose_methods_at_the_configured_rates() -> None:
    x, y = constant_batch(2, channels=1), torch.tensor([0, 1])
    g = gen(123)

    def kind(cfg: MixConfig) -> str:
        out, _ = BatchMix(cfg, 2)(x, y, g)
        if torch.equal(out, x):
            return "none"
        integral = torch.equal(out, out.round())
        return "cutmix" if integral else "mixup"

    runs = 300
    half_cutmix = [kind(MixConfig(cutmix_prob=0.5)) for _ in range(runs)]
    assert set(half_cutmix) <= {"none", "cutmix"}
    # Empty boxes (lambda close to 1) also look like "none", hence the slightly low band.
    assert 0.35 < half_cutmix.count("cutmix") / runs < 0.6
    both = [kind(MixConfig(cutmix_prob=1.0, mixup_prob=1.0, switch_prob=0.25)) for _ in range(runs)]
    assert 0.17 < both.count("mixup") / runs < 0.33
    assert both.count("cutmix") > runs // 2


# ---------------------------------------------------------------------------------------------
# Mixup


@pytest.mark.parametrize("per_sample", [True, False])
def test_mixup_blends_images_with_the_target_weights(per_sample: bool) -> None:
    batch, num_classes = 24, 30
    mix = BatchMix(MixConfig(mixup_prob=1.0, mixup_alpha=0.8, per_sample=per_sample), num_classes)
    x = torch.randn(batch, 3, H, W, generator=gen(10))
    y = torch.arange(batch)
    out, targets = mix(x, y, gen(11))
    torch.testing.assert_close(targets.sum(dim=1), torch.ones(batch), rtol=0, atol=1e-6)
    lams = []
    for i in range(batch):
        partner = (i - 1) % batch
        lam = targets[i, y[i]].item()
        assert targets[i, y[partner]].item() == pytest.approx(1.0 - lam, abs=1e-6)
        expected = lam * x[i] + (1.0 - lam) * x[partner]
        torch.testing.assert_close(out[i], expected, rtol=1e-6, atol=1e-6)
        lams.append(lam)
    if per_sample:
        assert len({round(v, 6) for v in lams}) == batch
    else:
        assert len({round(v, 6) for v in lams}) == 1
    assert all(0.0 <= v <= 1.0 for v in lams)


def test_mixup_lambda_distribution_matches_beta() -> None:
    batch = 4000
    mix = BatchMix(MixConfig(mixup_prob=1.0, mixup_alpha=0.4), 2)
    y = torch.arange(batch) % 2  # the rolled partner always has the other label
    _, targets = mix(torch.zeros(batch, 1, 2, 2), y, gen(0))
    lam = targets[torch.arange(batch), y]
    # Beta(0.4, 0.4): mean 1/2, variance 1 / (4 * 1.8); standard errors ~6e-3 and ~2.5e-3.
    assert lam.mean().item() == pytest.approx(0.5, abs=0.025)
    assert lam.var().item() == pytest.approx(1.0 / (4.0 * 1.8), abs=0.01)


# ---------------------------------------------------------------------------------------------
# Config and input validation


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("cutmix_alpha", 0.0),
        ("mixup_alpha", -0.5),
        ("cutmix_prob", 1.5),
        ("mixup_prob", -0.1),
        ("switch_prob", 2),
        ("label_smoothing", 1.0),
        ("per_sample", "yes"),
    ],
)
def test_mix_config_validate_names_the_field(field: str, value: object) -> None:
    cfg = MixConfig(**{field: value})  # type: ignore[arg-type]
    with pytest.raises(ReprlabError, match=rf"mix\.{field}="):
        cfg.validate()
    with pytest.raises(ReprlabError, match=field):
        BatchMix(cfg, 10)


def test_batch_mix_rejects_bad_inputs() -> None:
    mix = BatchMix(MixConfig(cutmix_prob=1.0), 10)
    with pytest.raises(ReprlabError, match="num_classes=0"):
        BatchMix(MixConfig(), 0)
    with pytest.raises(ReprlabError, match=r"images have shape \(2, 3, 4\)"):
        mix(torch.zeros(2, 3, 4), torch.tensor([0, 1]), gen(0))
    with pytest.raises(ReprlabError, match="uint8"):
        mix(torch.zeros(2, 3, 4, 4, dtype=torch.uint8), torch.tensor([0, 1]), gen(0))
    with pytest.raises(ReprlabError, match=r"labels have shape \(3,\)"):
        mix(torch.zeros(2, 3, 4, 4), torch.tensor([0, 1, 2]), gen(0))
    with pytest.raises(ReprlabError, match="class index 10"):
        mix(torch.zeros(2, 3, 4, 4), torch.tensor([0, 10]), gen(0))
    with pytest.raises(ReprlabError, match="expected a torch.Generator"):
        mix(torch.zeros(2, 3, 4, 4), torch.tensor([0, 1]), None)  # type: ignore[arg-type]


# ---------------------------------------------------------------------------------------------
# Random erasing


def test_random_erasing_prob_zero_is_identity() -> None:
    x = torch.randn(4, 3, H, W, generator=gen(0))
    assert torch.equal(random_erasing(x, 0.0, generator=gen(1)), x)


@pytest.mark.parametrize("scale", [(0.02, 0.33), (0.1, 0.2)])
def test_random_erasing_prob_one_erases_a_rectangle_within_scale(
    scale: tuple[float, float],
) -> None:
    batch, side = 40, 16  # 30k elements: stays under torch's multi-threading threshold
    x = torch.full((batch, 3, side, side), 100.0)  # standard-normal noise never equals 100
    out = random_erasing(x, 1.0, scale=scale, generator=gen(7))
    changed = out != x
    areas = []
    for i in range(batch):
        # All channels are erased together, in one filled rectangle smaller than the image.
        assert torch.equal(changed[i], changed[i, :1].expand_as(changed[i]))
        mask = changed[i, 0]
        assert mask.any(), f"sample {i} was not erased"
        assert bounding_box_is_filled(mask)
        assert mask.any(dim=1).sum() < side and mask.any(dim=0).sum() < side
        fraction = mask.sum().item() / (side * side)
        assert scale[0] <= fraction <= scale[1], (i, fraction)
        areas.append(fraction)
    assert len(set(areas)) > 5  # sizes are random
    noise = out[changed]
    assert abs(noise.mean().item()) < 0.1 and noise.std().item() == pytest.approx(1.0, abs=0.1)


def test_random_erasing_probability_and_determinism() -> None:
    x = torch.full((400, 1, 16, 16), 100.0)
    out = random_erasing(x, 0.3, generator=gen(8))
    erased = (out != x).flatten(1).any(dim=1).float().mean().item()
    assert 0.22 < erased < 0.38
    assert torch.equal(out, random_erasing(x, 0.3, generator=gen(8)))
    assert not torch.equal(out, random_erasing(x, 0.3, generator=gen(9)))


def test_random_erasing_rejects_bad_input() -> None:
    x = torch.zeros(2, 3, 8, 8)
    with pytest.raises(ReprlabError, match="prob=1.5"):
        random_erasing(x, 1.5, generator=gen(0))
    with pytest.raises(ReprlabError, match=r"scale=\(0.5, 0.1\)"):
        random_erasing(x, 0.5, scale=(0.5, 0.1), generator=gen(0))
    with pytest.raises(ReprlabError, match=r"ratio=\(0.0, 1.0\)"):
        random_erasing(x, 0.5, ratio=(0.0, 1.0), generator=gen(0))


# ---------------------------------------------------------------------------------------------
# RandAugment


def uint8_batch(batch: int, seed: int) -> Tensor:
    return torch.randint(0, 256, (batch, 3, 16, 16), generator=gen(seed), dtype=torch.uint8)


def test_rand_augment_dtype_shape_and_determinism() -> None:
    x = uint8_batch(24, 0)
    out = rand_augment(x, num_ops=2, magnitude=9, generator=gen(1))
    assert out.dtype == torch.uint8 and out.shape == x.shape
    assert torch.equal(out, rand_augment(x, num_ops=2, magnitude=9, generator=gen(1)))
    assert not torch.equal(out, rand_augment(x, num_ops=2, magnitude=9, generator=gen(2)))
    changed = (out != x).flatten(1).any(dim=1)
    assert changed.sum() > 12  # most samples drew at least one non-identity op
    assert torch.equal(x, uint8_batch(24, 0))  # the input is not modified in place
    assert torch.equal(rand_augment(x, num_ops=0, generator=gen(1)), x)


@pytest.mark.parametrize("name", RAND_AUGMENT_OPS)
def test_each_rand_augment_op_runs_batched(name: str) -> None:
    x = uint8_batch(4, 3)
    out = _apply_op(x, name, magnitude=15)
    assert out.dtype == torch.uint8 and out.shape == x.shape
    if name == "identity":
        assert torch.equal(out, x)
    else:
        assert not torch.equal(out, x)
    assert torch.equal(_apply_op(x, name, magnitude=15), out)  # ops themselves are deterministic


def test_rand_augment_rejects_bad_input() -> None:
    with pytest.raises(ReprlabError, match="float32"):
        rand_augment(torch.zeros(2, 3, 8, 8), generator=gen(0))
    with pytest.raises(ReprlabError, match="magnitude=31"):
        rand_augment(uint8_batch(2, 0), magnitude=31, generator=gen(0))
    with pytest.raises(ReprlabError, match="num_ops=-1"):
        rand_augment(uint8_batch(2, 0), num_ops=-1, generator=gen(0))


def test_signed_ops_use_the_sign() -> None:
    x = uint8_batch(4, 5)
    for name in ("rotate", "shear_x", "translate_y", "brightness"):
        positive = _apply_op(x, name, 20, negate=False)
        assert not torch.equal(positive, _apply_op(x, name, 20, negate=True))
    # Unsigned ops ignore it.
    assert torch.equal(_apply_op(x, "solarize", 20, False), _apply_op(x, "solarize", 20, True))
    assert len(RAND_AUGMENT_OPS) == 14
