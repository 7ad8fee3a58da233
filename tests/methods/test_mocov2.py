"""MoCo v2's mechanics inside the method, on real CIFAR-100 images: the queue holds the last
keys in FIFO order with a wrapping pointer (also when one step brings more keys than it holds,
and with the keys of every rank, in rank order); the loss contrasts against the queue as it was
before the step; the key encoder is the EMA of the query encoder at the scheduled momentum and
gets no gradient."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from helpers_methods import MethodWorld, adamw, batch, capture_outputs, tiny_method, update

pytestmark = pytest.mark.realdata


def fifo(initial: torch.Tensor, keys: list[torch.Tensor]) -> tuple[torch.Tensor, int]:
    """A queue written one key at a time, the obvious way."""
    rows, ptr = [r for r in initial.clone()], 0
    for key in torch.cat(keys):
        rows[ptr] = key
        ptr = (ptr + 1) % len(rows)
    return torch.stack(rows), ptr


def enqueued(target_out: torch.Tensor, symmetric: bool) -> torch.Tensor:
    """The keys a step enqueues, from the key projector's output on [view 1; view 2]."""
    keys = F.normalize(target_out.float(), dim=1)
    return keys if symmetric else keys.chunk(2)[1]


@pytest.mark.parametrize("symmetric, size, steps", [(True, 80, 4), (False, 40, 4), (True, 24, 2)])
def test_queue_holds_the_last_keys_in_fifo_order(cifar, symmetric, size, steps):
    # 16 images: 32 keys a step (symmetric) or 16; 80 rows wrap after 3 steps, 24 rows are
    # fewer than one step's keys (only the newest 24 survive).
    method = tiny_method("mocov2", cifar, f"method.queue_size={size}", f"method.symmetric={str(symmetric).lower()}")
    initial = method.queue.clone()
    torch.testing.assert_close(initial.norm(dim=1), torch.ones(size))  # random unit rows
    out = capture_outputs(method.target_projector)
    opt, gen, images = adamw(method), torch.Generator().manual_seed(0), batch(cifar, 16)
    keys = []
    for step in range(steps):
        update(method, opt, images, gen, step)
        keys.append(enqueued(out[step], symmetric))
    expected, ptr = fifo(initial, keys)
    assert int(method.queue_ptr) == ptr == sum(len(k) for k in keys) % size
    assert torch.equal(method.queue, expected)
    newest = torch.cat(keys)[-size:]
    assert torch.equal(torch.roll(method.queue, -ptr, dims=0), newest)  # read from the pointer: oldest to newest


def info_nce(q, k, queue, t):
    """Eq. 1 in float64: (1 + K)-way cross-entropy with the positive first."""
    q, k, queue = F.normalize(q.double(), dim=1), F.normalize(k.double(), dim=1), queue.double()
    logits = torch.cat([(q * k).sum(1, keepdim=True), q @ queue.T], dim=1) / t
    return (torch.logsumexp(logits, 1) - logits[:, 0]).mean()


@pytest.mark.parametrize("symmetric", [True, False])
def test_loss_contrasts_against_the_queue_before_the_step(cifar, symmetric):
    method = tiny_method("mocov2", cifar, "method.queue_size=64", f"method.symmetric={str(symmetric).lower()}")
    t = method.cfg.method.temperature
    q_out, k_out = capture_outputs(method.projector), capture_outputs(method.target_projector)
    opt, gen, images = adamw(method), torch.Generator().manual_seed(0), batch(cifar, 16)
    update(method, opt, images, gen, 0)  # the queue now holds real keys
    queue = method.queue.clone()
    loss, _ = update(method, opt, images, gen, 1)
    (q1, q2), (k1, k2) = q_out[1].chunk(2), k_out[1].chunk(2)
    if symmetric:
        expected = 0.5 * (info_nce(q1, k2, queue, t) + info_nce(q2, k1, queue, t))
    else:
        expected = info_nce(q1, k2, queue, t)
    torch.testing.assert_close(loss.double(), expected, rtol=1e-5, atol=1e-6)


def test_key_encoder_is_the_ema_at_the_scheduled_momentum_and_gets_no_gradient(cifar):
    method = tiny_method("mocov2", cifar, "method.queue_size=64")
    pairs = [(method.target_backbone, method.backbone), (method.target_projector, method.projector)]
    opt, gen, images = adamw(method), torch.Generator().manual_seed(0), batch(cifar, 16)
    for step in (30, 31, 32):  # let the key encoder lag behind
        update(method, opt, images, gen, step)
    before = [[p.clone() for p in target.parameters()] for target, _ in pairs]
    update(method, opt, images, gen, 33)
    # the recipe's 0.99 -> 0.999 cosine at step 33 of 100: t = 1/3, cos(pi/3) = 1/2
    m = 0.999 + (0.99 - 0.999) * 0.5 * (1 + math.cos(math.pi * 33 / 99))
    assert abs(m - 0.99225) < 1e-12
    for (target, online), old in zip(pairs, before):
        for t_new, t_old, o in zip(target.parameters(), old, online.parameters()):
            assert not t_new.requires_grad and t_new.grad is None
            torch.testing.assert_close(t_new, m * t_old + (1 - m) * o, rtol=1e-6, atol=1e-8)
    trained = {id(p) for _, p, _ in method.named_trainable()}
    assert not any(id(p) in trained for target, _ in pairs for p in target.parameters())


def test_queue_receives_every_ranks_keys_in_rank_order(cifar, monkeypatch):
    world = MethodWorld(2, monkeypatch)
    ranks = [tiny_method("mocov2", cifar, "method.queue_size=128") for _ in range(2)]
    ranks[1].load_state_dict(ranks[0].state_dict())
    initial = ranks[0].queue.clone()
    outs = [capture_outputs(r.target_projector) for r in ranks]
    opts = [adamw(r) for r in ranks]
    images = batch(cifar, 32).chunk(2)
    world.run(lambda r: update(ranks[r], opts[r], images[r], torch.Generator().manual_seed(r), 0))
    keys = [enqueued(outs[r][0], True) for r in range(2)]  # 32 keys per rank
    expected, ptr = fifo(initial, keys)
    for r in range(2):
        assert int(ranks[r].queue_ptr) == ptr == 64
        assert torch.equal(ranks[r].queue, expected)
