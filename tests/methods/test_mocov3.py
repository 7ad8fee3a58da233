"""MoCo v3's mechanics inside the method, on real CIFAR-100 images: the loss is the paper's
symmetrised, 2t-scaled contrast of queries against the momentum keys; keys are gathered from
every rank and each rank's positives sit at its row offset; the momentum encoder is the EMA at
the scheduled momentum and gets no gradient; the heads are those of the official ResNet code."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from helpers_methods import MethodWorld, adamw, batch, capture_outputs, tiny_method, update
from reprlab.methods.base import StepContext

pytestmark = pytest.mark.realdata
CTX = StepContext(0, 10, 10)


def ctr(q, k, t, offset=0):
    """2t * CE(q k^T / t) with query i's positive at key row offset + i, in float64."""
    q, k = F.normalize(q.double(), dim=1), F.normalize(k.double(), dim=1)
    logits = q @ k.T / t
    labels = torch.arange(len(q)) + offset
    return 2 * t * F.cross_entropy(logits, labels)


def test_heads_are_those_of_the_resnet_recipe(cifar):
    method = tiny_method("mocov3", cifar)
    proj, pred = list(method.projector.net), list(method.predictor.net)
    assert method.cfg.method.proj_layers == 2  # the recipe: official ResNet code and solo-learn
    assert [type(x) for x in proj] == [nn.Linear, nn.BatchNorm1d, nn.ReLU, nn.Linear, nn.BatchNorm1d]
    assert not proj[-1].affine  # BN on the projector's output, none on the predictor's
    assert [type(x) for x in pred] == [nn.Linear, nn.BatchNorm1d, nn.ReLU, nn.Linear]


def test_loss_is_the_symmetrised_2t_contrast(cifar):
    method = tiny_method("mocov3", cifar)
    t = method.cfg.method.temperature
    q_out, k_out = capture_outputs(method.predictor), capture_outputs(method.target_projector)
    method.train()
    loss, _ = method.training_step(batch(cifar, 32), None, torch.Generator().manual_seed(0), CTX)
    (q1, q2), (k1, k2) = q_out[0].chunk(2), k_out[0].chunk(2)
    torch.testing.assert_close(loss.double(), ctr(q1, k2, t) + ctr(q2, k1, t), rtol=1e-5, atol=1e-6)


def test_keys_are_gathered_and_positives_are_at_the_rank_offset(cifar, monkeypatch):
    world = MethodWorld(2, monkeypatch)
    ranks = [tiny_method("mocov3", cifar) for _ in range(2)]
    ranks[1].load_state_dict(ranks[0].state_dict())
    t = ranks[0].cfg.method.temperature
    q_out = [capture_outputs(r.predictor) for r in ranks]
    k_out = [capture_outputs(r.target_projector) for r in ranks]
    images = batch(cifar, 32).chunk(2)

    def step(rank):
        ranks[rank].train()
        return ranks[rank].training_step(images[rank], None, torch.Generator().manual_seed(rank), CTX)[0]

    losses = world.run(step)
    k1 = torch.cat([k_out[r][0].chunk(2)[0] for r in range(2)])  # rank order
    k2 = torch.cat([k_out[r][0].chunk(2)[1] for r in range(2)])
    for r in range(2):
        q1, q2 = q_out[r][0].chunk(2)
        expected = ctr(q1, k2, t, 16 * r) + ctr(q2, k1, t, 16 * r)
        torch.testing.assert_close(losses[r].double(), expected, rtol=1e-5, atol=1e-6)
        local = ctr(q1, k_out[r][0].chunk(2)[1], t) + ctr(q2, k_out[r][0].chunk(2)[0], t)
        assert not torch.allclose(losses[r].double(), local, rtol=1e-3), "the loss used only the rank's own keys"
    wrong_offset = ctr(q_out[1][0].chunk(2)[0], k2, t, 0) + ctr(q_out[1][0].chunk(2)[1], k1, t, 0)
    assert not torch.allclose(losses[1].double(), wrong_offset, rtol=1e-3)


def test_momentum_encoder_is_the_ema_at_the_scheduled_momentum_and_gets_no_gradient(cifar):
    method = tiny_method("mocov3", cifar)
    pairs = [(method.target_backbone, method.backbone), (method.target_projector, method.projector)]
    opt, gen, images = adamw(method), torch.Generator().manual_seed(0), batch(cifar, 16)
    for step in (70, 71, 72):  # let the momentum encoder lag behind
        update(method, opt, images, gen, step)
    before = [[p.clone() for p in target.parameters()] for target, _ in pairs]
    _, extra = update(method, opt, images, gen, 73)
    # the recipe's 0.99 -> 1 cosine at step 73 of 100 (t = 73/99)
    m = 1.0 + (0.99 - 1.0) * 0.5 * (1 + math.cos(math.pi * 73 / 99))
    assert extra["momentum"] == pytest.approx(m, abs=1e-12)
    for (target, online), old in zip(pairs, before):
        for t_new, t_old, o in zip(target.parameters(), old, online.parameters()):
            assert not t_new.requires_grad and t_new.grad is None
            torch.testing.assert_close(t_new, m * t_old + (1 - m) * o, rtol=1e-6, atol=1e-8)
    trained = {id(p) for _, p, _ in method.named_trainable()}
    assert not any(id(p) in trained for target, _ in pairs for p in target.parameters())
    assert any(n.startswith("predictor.") for n, _, _ in method.named_trainable())
