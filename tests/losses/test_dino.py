"""Tests for DINO's loss and centre update (Caron et al. 2021) against slow float64 references.

The reference loops over (teacher crop, student crop) pairs and samples, writing each
softmax and log-softmax out by hand; the vectorised loss must match its value and its
gradients in the student outputs, and pass no gradient to the teacher or the centre.
"""

from __future__ import annotations

import math

import pytest
import torch
from torch import Tensor

from helpers_ranks import ThreadWorld
from reprlab.errors import ReprlabError
from reprlab.losses import dino_center_update, dino_loss


def slow_dino(
    students: list[Tensor], teachers: list[Tensor], center: Tensor, tau_s: float, tau_t: float
) -> Tensor:
    batch = students[0].shape[0]
    total = students[0].new_zeros(())
    pairs = 0
    for g, teacher in enumerate(teachers):
        for v, student in enumerate(students):
            if v == g:
                continue  # the student's view of the teacher's own crop
            pairs += 1
            for b in range(batch):
                t_row = torch.exp((teacher[b] - center) / tau_t)
                p_teacher = (t_row / t_row.sum()).detach()
                s_row = student[b] / tau_s
                log_p_student = s_row - torch.log(torch.exp(s_row).sum())
                total = total - (p_teacher * log_p_student).sum() / batch
    return total / pairs


def _assert_rel_close(actual: Tensor, expected: Tensor, rel: float) -> None:
    scale = expected.abs().max().clamp_min(1e-12)
    err = (actual.double() - expected.double()).abs().max()
    assert err <= rel * scale, f"max err {err.item():.3e} > {rel:.0e} * scale {scale.item():.3e}"


def _crops(
    batch: int, n_global: int, n_local: int, seed: int
) -> tuple[list[Tensor], list[Tensor], Tensor]:
    gen = torch.Generator().manual_seed(seed)
    k = 10
    image = 2.0 * torch.randn(batch, k, generator=gen, dtype=torch.float64)
    students = [
        image + torch.randn(batch, k, generator=gen, dtype=torch.float64)
        for _ in range(n_global + n_local)
    ]
    teachers = [
        s + 0.3 * torch.randn(batch, k, generator=gen, dtype=torch.float64)
        for s in students[:n_global]
    ]
    center = 0.5 * torch.randn(k, generator=gen, dtype=torch.float64)
    return students, teachers, center


@pytest.mark.parametrize("batch", [2, 3, 8, 17])
@pytest.mark.parametrize(("n_global", "n_local"), [(2, 0), (2, 4), (1, 3)])
@pytest.mark.parametrize(("tau_s", "tau_t"), [(0.1, 0.04), (0.2, 0.07)])
def test_dino_matches_slow_reference(
    batch: int, n_global: int, n_local: int, tau_s: float, tau_t: float
) -> None:
    students0, teachers0, center0 = _crops(batch, n_global, n_local, seed=batch + 10 * n_local)
    rs = [s.clone().requires_grad_() for s in students0]
    ref = slow_dino(rs, teachers0, center0, tau_s, tau_t)
    # With one global crop, student crop 0 is in no pair: its reference gradient is zero.
    ref_g = [
        torch.zeros_like(r) if g is None else g
        for r, g in zip(rs, torch.autograd.grad(ref, rs, allow_unused=True))
    ]

    ss = [s.clone().requires_grad_() for s in students0]
    ts = [t.clone().requires_grad_() for t in teachers0]
    center = center0.clone().requires_grad_()
    got = dino_loss(ss, ts, center, tau_s, tau_t, n_global=n_global)
    assert got.dtype == torch.float64
    assert abs(got.item() - ref.item()) <= 1e-10 * abs(ref.item())
    grads = torch.autograd.grad(got, ss + ts + [center], allow_unused=True)
    # One scale for all crops: a crop whose prediction is nearly right has a tiny gradient.
    _assert_rel_close(torch.stack(grads[: len(ss)]), torch.stack(ref_g), 1e-10)
    assert all(g is None for g in grads[len(ss) :]), "teacher and centre must get no gradient"

    # The stacked (V, B, K) and concatenated (V * B, K) layouts give the same loss.
    stacked = dino_loss(
        torch.stack(students0), torch.stack(teachers0), center0.unsqueeze(0), tau_s, tau_t, n_global
    )
    concatenated = dino_loss(
        torch.cat(students0),
        torch.cat(teachers0),
        center0,
        tau_s,
        tau_t,
        n_global,
        n_crops=len(students0),
    )
    assert stacked.item() == pytest.approx(ref.item(), rel=1e-12)
    assert concatenated.item() == pytest.approx(ref.item(), rel=1e-12)

    got32 = dino_loss(
        [s.float() for s in students0],
        [t.float() for t in teachers0],
        center0.float(),
        tau_s,
        tau_t,
        n_global,
    )
    assert abs(got32.item() - ref.item()) <= 1e-5 * abs(ref.item())


def test_dino_identical_crops_zero_center_is_the_entropy() -> None:
    # Every crop, student and teacher, has logits log(1, 2, 3) and both temperatures are 1:
    # each pair's cross-entropy is the entropy of p = (1/6, 2/6, 3/6).
    row = torch.log(torch.tensor([[1.0, 2.0, 3.0]], dtype=torch.float64)).repeat(4, 1)
    entropy = -(1 / 6 * math.log(1 / 6) + 2 / 6 * math.log(2 / 6) + 3 / 6 * math.log(3 / 6))
    center = torch.zeros(3, dtype=torch.float64)
    got = dino_loss([row] * 5, [row] * 2, center, student_temp=1.0, teacher_temp=1.0, n_global=2)
    assert got.item() == pytest.approx(entropy, rel=1e-14)
    # A constant centre shifts every teacher logit equally: no change. A non-constant one does.
    shifted = dino_loss([row] * 5, [row] * 2, center + 7.0, 1.0, 1.0, 2)
    assert shifted.item() == pytest.approx(entropy, rel=1e-14)
    tilted = dino_loss(
        [row] * 5, [row] * 2, torch.tensor([0.0, 0.0, 1.0], dtype=torch.float64), 1.0, 1.0, 2
    )
    assert abs(tilted.item() - entropy) > 1e-2
    # Teacher temperature 1/2 squares the teacher's odds: q = (1, 4, 9) / 14 against the
    # student's p = (1, 2, 3) / 6.
    sharp = -sum(q / 14 * math.log(p / 6) for q, p in [(1, 1), (4, 2), (9, 3)])
    assert dino_loss([row] * 5, [row] * 2, center, 1.0, 0.5, 2).item() == pytest.approx(
        sharp, rel=1e-14
    )


def test_dino_skips_only_the_same_crop_pairs() -> None:
    # With one global crop, the student's view of that crop pairs with no teacher crop, so it
    # cannot affect the loss; with two global crops it pairs with teacher crop 1, so it must.
    gen = torch.Generator().manual_seed(4)
    students = [torch.randn(3, 5, generator=gen, dtype=torch.float64) for _ in range(3)]
    teachers = [torch.randn(3, 5, generator=gen, dtype=torch.float64) for _ in range(2)]
    zero = torch.zeros(5, dtype=torch.float64)
    other_crop0 = [10.0 * torch.randn(3, 5, generator=gen, dtype=torch.float64)] + students[1:]
    one = dino_loss(students, teachers[:1], zero, 0.5, 0.5, n_global=1)
    assert dino_loss(other_crop0, teachers[:1], zero, 0.5, 0.5, n_global=1).item() == one.item()
    two = dino_loss(students, teachers, zero, 0.5, 0.5, n_global=2)
    assert (
        abs(dino_loss(other_crop0, teachers, zero, 0.5, 0.5, n_global=2).item() - two.item()) > 1e-3
    )


@pytest.mark.parametrize("momentum", [0.0, 0.9, 1.0])
def test_dino_center_update_is_an_ema_of_the_batch_mean(momentum: float) -> None:
    gen = torch.Generator().manual_seed(5)
    center = torch.randn(1, 6, generator=gen, dtype=torch.float64)
    teacher = [torch.randn(4, 6, generator=gen, dtype=torch.float64) for _ in range(2)]
    rows = [r for crop in teacher for r in crop.unbind(0)]
    mean = [sum(r[k].item() for r in rows) / len(rows) for k in range(6)]
    expected = [momentum * center[0, k].item() + (1 - momentum) * mean[k] for k in range(6)]
    new = dino_center_update(center, teacher, momentum)
    assert new.shape == (1, 6) and new.dtype == torch.float64 and not new.requires_grad
    assert new[0].tolist() == pytest.approx(expected, rel=1e-13, abs=1e-15)
    assert torch.equal(dino_center_update(center[0], torch.cat(teacher), momentum), new[0])
    # float32 centre and bf16 teacher outputs: the centre keeps its dtype.
    center32 = dino_center_update(center.float(), torch.cat(teacher).bfloat16(), momentum)
    assert center32.dtype == torch.float32


@pytest.mark.parametrize("world", [2, 3])
def test_dino_center_update_all_reduce_averages_the_global_batch(world: int) -> None:
    gen = torch.Generator().manual_seed(world)
    center = torch.randn(7, generator=gen, dtype=torch.float64)
    teacher = torch.randn(5 * world, 7, generator=gen, dtype=torch.float64)
    expected = dino_center_update(center, teacher, 0.8)
    shards = teacher.chunk(world)
    results = ThreadWorld(world).run(lambda r, ar: dino_center_update(center, shards[r], 0.8, ar))
    for got in results:
        torch.testing.assert_close(got, expected, rtol=1e-13, atol=1e-15)
    assert not torch.allclose(dino_center_update(center, shards[0], 0.8), expected)


def test_dino_rejects_bad_input() -> None:
    s = [torch.randn(4, 5) for _ in range(3)]
    t = [torch.randn(4, 5) for _ in range(2)]
    c = torch.zeros(5)
    with pytest.raises(ReprlabError, match="2 teacher crop"):
        dino_loss(s, t, c, n_global=1)
    with pytest.raises(ReprlabError, match=r"teacher crops have shape \(4, 6\)"):
        dino_loss(s, [torch.randn(4, 6)] * 2, c)
    with pytest.raises(ReprlabError, match=r"center has shape \(4,\)"):
        dino_loss(s, t, torch.zeros(4))
    with pytest.raises(ReprlabError, match="crop count is None"):
        dino_loss(torch.cat(s), t, c)
    with pytest.raises(ReprlabError, match="1 student crop"):
        dino_loss(s[:1], t[:1], c, n_global=1)
    with pytest.raises(ReprlabError, match="teacher_temp 0"):
        dino_loss(s, t, c, teacher_temp=0)
    with pytest.raises(ReprlabError, match="momentum 1.5"):
        dino_center_update(c, t, momentum=1.5)
