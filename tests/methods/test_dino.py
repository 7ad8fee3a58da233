"""DINO's mechanics inside the method, on real CIFAR-100 images: the teacher is the EMA of the
student at the scheduled momentum and gets no gradient; only global crops reach the teacher;
the loss (the KL of student from teacher) uses the scheduled teacher temperature and the
centre before its update; the centre
moves as eq. 4, over the global batch; the last layer is frozen during the first epoch only;
the probed backbone is the teacher's; the head's logits are cosines (weight norm fixed to 1)."""

from __future__ import annotations

import pytest
import torch

from helpers_methods import MethodWorld, adamw, batch, capture_inputs, capture_outputs, tiny_method, update
from reprlab.losses import dino_loss
from reprlab.methods.base import StepContext
from reprlab.models.heads import DINOHead
from reprlab.schedules import ScalarSchedule
from reprlab.train.loop import method_meta

pytestmark = pytest.mark.realdata
B = 16


def test_teacher_is_the_ema_of_the_student_at_the_scheduled_momentum(cifar):
    method = tiny_method("dino", cifar, "method.momentum={start=0.9, end=1.0, shape='linear'}")
    opt, gen, images = adamw(method), torch.Generator().manual_seed(0), batch(cifar, B)
    update(method, opt, images, gen, step=0, total=11)  # the student moves away from the teacher
    teacher = [p.clone() for p in [*method.teacher_backbone.parameters(), *method.teacher_head.parameters()]]
    update(method, opt, images, gen, step=5, total=11)
    m = 0.9 + 0.1 * 5 / 10  # the linear schedule at step 5 of 11
    student = [*method.backbone.parameters(), *method.head.parameters()]
    new = [*method.teacher_backbone.parameters(), *method.teacher_head.parameters()]
    assert len(new) == len(student) == len(teacher)
    moved = 0
    for t_old, s, t in zip(teacher, student, new):
        torch.testing.assert_close(t, m * t_old + (1 - m) * s, rtol=0, atol=1e-6)
        moved += not torch.equal(t, t_old)
    assert moved > len(new) // 2


def test_teacher_gets_no_gradient_and_sees_only_global_crops(cifar):
    method = tiny_method("dino", cifar)
    teacher_in, student_in = capture_inputs(method.teacher_backbone), capture_inputs(method.backbone)
    method.train()
    loss, _ = method.training_step(batch(cifar, B), None, torch.Generator().manual_seed(0), StepContext(0, 10, 10))
    loss.backward()
    assert [tuple(x.shape) for x in teacher_in] == [(2 * B, 3, 32, 32)]
    assert [tuple(x.shape) for x in student_in] == [(2 * B, 3, 32, 32), (4 * B, 3, 16, 16)]
    assert torch.equal(teacher_in[0], student_in[0])  # the same global crops
    for p in [*method.teacher_backbone.parameters(), *method.teacher_head.parameters()]:
        assert p.grad is None and not p.requires_grad
    assert all(p.grad is not None for p in method.head.mlp.parameters())
    trainable = {id(p) for _, p, _ in method.named_trainable()}
    assert not trainable & {id(p) for p in method.teacher_backbone.parameters()}


def test_loss_uses_the_scheduled_temperature_and_centre_moves_as_eq_4(cifar):
    method = tiny_method("dino", cifar)
    m = method.cfg.method
    assert m.teacher_temperature == ScalarSchedule(start=0.07, warmup_from=0.04, warmup_epochs=50)
    method.cfg.method.teacher_temperature = ScalarSchedule(start=0.07, warmup_from=0.04, warmup_epochs=2)
    with torch.no_grad():
        method.center.normal_()  # a centre that is not zero, so its use and its EMA both show
    center = method.center.clone()
    student, teacher = capture_outputs(method.head), capture_outputs(method.teacher_head)
    method.train()
    ctx = StepContext(3, 100, 4)  # 3 steps into a warm-up of 2 x 4 steps
    loss, extra = method.training_step(batch(cifar, B), None, torch.Generator().manual_seed(0), ctx)
    tau = 0.04 + 0.03 * 3 / 8
    assert extra["teacher_temperature"] == pytest.approx(tau)
    assert extra["momentum"] == pytest.approx(ctx.value(m.momentum))
    s, t = student[0].chunk(6), teacher[0]
    ce = dino_loss(s, t.chunk(2), center, 0.1, tau, 2)
    torch.testing.assert_close(extra["cross_entropy"], ce, rtol=1e-6, atol=1e-6)
    assert not torch.allclose(ce, dino_loss(s, t.chunk(2), center, 0.1, 0.07, 2), rtol=1e-4)
    torch.testing.assert_close(method.center, 0.9 * center + 0.1 * t.mean(0, keepdim=True), rtol=1e-6, atol=1e-6)
    # the reported loss is the KL of the student from the teacher, pair by pair, in float64
    pt = [torch.softmax((x.double() - center.double()) / tau, dim=1) for x in t.chunk(2)]
    ls = [torch.log_softmax(x.double() / 0.1, dim=1) for x in s]
    kl = [(pt[g] * (pt[g].log() - ls[v])).sum(1).mean() for g in range(2) for v in range(6) if v != g]
    torch.testing.assert_close(loss.double(), sum(kl) / len(kl), rtol=1e-5, atol=1e-5)
    h = torch.cat([-(q * q.log()).sum(1) for q in pt]).mean()
    torch.testing.assert_close(extra["teacher_entropy"].double(), h, rtol=1e-5, atol=1e-6)


def test_centre_is_the_mean_over_the_global_batch(cifar, monkeypatch):
    world = MethodWorld(2, monkeypatch)
    ranks = [tiny_method("dino", cifar) for _ in range(2)]
    ranks[1].load_state_dict(ranks[0].state_dict())
    images = batch(cifar, 2 * B).chunk(2)
    teacher = [capture_outputs(r.teacher_head) for r in ranks]

    def step(rank):
        ranks[rank].train()
        ranks[rank].training_step(images[rank], None, torch.Generator().manual_seed(rank), StepContext(0, 10, 10))
        return ranks[rank].center.clone()

    centers = world.run(step)
    mean = torch.cat([teacher[0][0], teacher[1][0]]).mean(0, keepdim=True)
    for c in centers:
        torch.testing.assert_close(c, 0.1 * mean, rtol=1e-5, atol=1e-7)
    assert not torch.allclose(centers[0], 0.1 * teacher[0][0].mean(0, keepdim=True), rtol=1e-3)


def test_last_layer_is_frozen_during_the_first_epoch_only(cifar):
    method = tiny_method("dino", cifar)
    assert method.cfg.method.freeze_last_layer_epochs == 1
    opt, gen, images = adamw(method), torch.Generator().manual_seed(0), batch(cifar, B)
    last = method.head.last_layer.weight
    start, mlp = last.clone(), [p.clone() for p in method.head.mlp.parameters()]
    for step in (0, 1):  # epoch 0 of 2-step epochs
        update(method, opt, images, gen, step=step, total=6, per_epoch=2)
        assert torch.equal(last, start), f"last layer moved at step {step}"
    assert not any(torch.equal(a, b) for a, b in zip(mlp, method.head.mlp.parameters()))
    update(method, opt, images, gen, step=2, total=6, per_epoch=2)  # epoch 1
    assert not torch.equal(last, start)


def test_probed_backbone_is_the_teacher(cifar):
    method = tiny_method("dino", cifar)
    assert getattr(method, method.probe_backbone) is method.teacher_backbone
    assert method.teacher_backbone is not method.backbone
    assert method_meta(method, method.cfg)["backbone_prefix"] == "teacher_backbone."


def test_head_logits_are_cosines_with_the_weight_norm_fixed_to_1():
    torch.manual_seed(0)
    head = DINOHead(32, 64, 16, 100, num_layers=3)
    x = torch.randn(8, 32)
    out = head(x)
    assert out.shape == (8, 100) and out.abs().max() <= 1 + 1e-6
    h = torch.nn.functional.normalize(head.mlp(x), dim=1)
    w = head.last_layer.weight
    torch.testing.assert_close(out, h @ (w / w.norm(dim=1, keepdim=True)).T)
    with torch.no_grad():
        w.mul_(torch.rand(100, 1) * 5 + 0.1)  # rescaling a row changes nothing
    torch.testing.assert_close(head(x), out)
    assert sum(isinstance(m, torch.nn.Linear) for m in head.mlp) == 3
    assert sum(isinstance(m, torch.nn.GELU) for m in head.mlp) == 2
