"""SwAV's mechanics inside the method, on real CIFAR-100 images: the Sinkhorn codes have the
equipartition marginals (rows sum to 1, prototype columns to B/K), over the global batch when
it is split over (simulated) ranks; the queue holds the latest projections newest first and
joins the codes from its start epoch once full; the prototypes are frozen for the first epochs
and renormalised to unit rows after every update."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from helpers_methods import MethodWorld, adamw, batch, capture_outputs, tiny_method, update
from reprlab.losses import sinkhorn_knopp, swav_loss
from reprlab.methods.base import StepContext

pytestmark = pytest.mark.realdata
B = 16


def record_codes(method) -> list[tuple[torch.Tensor, list[torch.Tensor]]]:
    """(queue before the step, codes) of every training step from now on."""
    out, assign = [], method.assign

    def wrapped(scores, ctx):
        codes = assign(scores, ctx)
        out.append((method.queue.clone(), codes))
        return codes

    method.assign = wrapped
    return out


# The paper's 3 iterations end on the per-sample rescaling: rows are exact, the prototype
# columns only near B / K (here within ~7 %); converged, the columns are exact too.
@pytest.mark.parametrize("iterations, column_tol", [(3, 0.15), (50, 1e-4)])
def test_codes_have_the_equipartition_marginals(cifar, iterations, column_tol):
    method = tiny_method("swav", cifar, "method.queue_size=0", f"method.sinkhorn_iterations={iterations}")
    k = method.cfg.method.num_prototypes
    codes, scores = record_codes(method), capture_outputs(method.prototypes)
    method.train()
    loss, _ = method.training_step(batch(cifar, 2 * B), None, torch.Generator().manual_seed(0), StepContext(0, 10, 10))
    (_, q), s = codes[0], scores[0].chunk(2)
    assert len(q) == 2 and not any(c.requires_grad for c in q)
    for c, si in zip(q, s):
        assert c.shape == (2 * B, k)
        torch.testing.assert_close(c.sum(1), torch.ones(2 * B), rtol=0, atol=1e-5)
        torch.testing.assert_close(c.sum(0), torch.full((k,), 2 * B / k), rtol=column_tol, atol=0)
        # not a trivial (uniform) solution: the codes follow the scores
        assert c.max() > 5 / k
        torch.testing.assert_close(c, sinkhorn_knopp(si, 0.05, iterations))
    torch.testing.assert_close(loss, swav_loss(list(s), q, 0.1, (0, 1)))


def test_codes_are_equipartitioned_over_the_global_batch(cifar, monkeypatch):
    world = MethodWorld(2, monkeypatch)
    ranks = [tiny_method("swav", cifar, "method.queue_size=0", "method.sinkhorn_iterations=50") for _ in range(2)]
    ranks[1].load_state_dict(ranks[0].state_dict())
    k = ranks[0].cfg.method.num_prototypes
    images = batch(cifar, 2 * B).chunk(2)
    codes, scores = [record_codes(r) for r in ranks], [capture_outputs(r.prototypes) for r in ranks]

    def step(rank):
        ranks[rank].train()
        ranks[rank].training_step(images[rank], None, torch.Generator().manual_seed(rank), StepContext(0, 10, 10))

    world.run(step)
    for crop in range(2):
        q = torch.cat([codes[r][0][1][crop] for r in range(2)])
        torch.testing.assert_close(q.sum(1), torch.ones(2 * B), rtol=0, atol=1e-5)
        torch.testing.assert_close(q.sum(0), torch.full((k,), 2 * B / k), rtol=1e-4, atol=0)
        s = torch.cat([scores[r][0].chunk(2)[crop] for r in range(2)])
        torch.testing.assert_close(q, sinkhorn_knopp(s, 0.05, 50))
        local = sinkhorn_knopp(scores[0][0].chunk(2)[crop], 0.05, 50)
        assert not torch.allclose(codes[0][0][1][crop], local, rtol=1e-2), "codes equipartitioned per rank"


def test_queue_holds_the_latest_projections_newest_first(cifar):
    method = tiny_method("swav", cifar, "method.queue_size=40")
    assert method.queue.shape == (2, 40, method.cfg.method.proj_out_dim)
    z = capture_outputs(method.projector)
    method.train()
    for step in range(3):
        ctx = StepContext(step, 10, 10)
        method.training_step(batch(cifar, B, seed=step), None, torch.Generator().manual_seed(step), ctx)
        method.after_optimizer_step(ctx)  # the queue moves after the optimiser step
    for crop in range(2):
        latest = [F.normalize(z[s], dim=1)[crop * B : (crop + 1) * B] for s in (2, 1, 0)]
        assert torch.equal(method.queue[crop], torch.cat(latest)[:40])  # 16 + 16 + the first 8 of step 0


def test_queue_joins_the_codes_from_its_start_epoch_once_full(cifar):
    method = tiny_method("swav", cifar, "method.queue_size=32", "method.queue_start_epochs=1")
    codes, scores = record_codes(method), capture_outputs(method.prototypes)
    method.train()
    for step in range(3):  # 2-step epochs: steps 0, 1 in epoch 0 (no queue), step 2 in epoch 1
        ctx = StepContext(step, 10, 2)
        method.training_step(batch(cifar, B, seed=step), None, torch.Generator().manual_seed(step), ctx)
        method.after_optimizer_step(ctx)
    for step in range(3):
        queue, q = codes[step]
        s = scores[step].chunk(2)  # the batch scores: the first prototype call of each step (the queue's come after, at step 2)
        for crop in range(2):
            own = sinkhorn_knopp(s[crop], 0.05, 3)
            if step < 2:
                torch.testing.assert_close(q[crop], own)
            else:
                with_queue = sinkhorn_knopp(torch.cat([s[crop], method.prototypes(queue[crop]).detach()]), 0.05, 3)[:B]
                torch.testing.assert_close(q[crop], with_queue)
                assert not torch.allclose(q[crop], own, rtol=1e-2)
    # full only once step * B rows have been enqueued
    assert not method.queue_in_use(StepContext(1, 10, 1), B) and method.queue_in_use(StepContext(2, 10, 1), B)
    assert not tiny_method("swav", cifar, "method.queue_size=0", "method.queue_start_epochs=0").queue_in_use(StepContext(50, 100, 1), B)


def test_prototypes_frozen_for_the_first_epochs_then_unit_rows_after_each_update(cifar):
    method = tiny_method("swav", cifar)
    assert method.cfg.method.freeze_prototypes_epochs == 2
    w = method.prototypes.weight
    torch.testing.assert_close(w.norm(dim=1), torch.ones(len(w)), rtol=0, atol=1e-6)
    opt, gen, images = adamw(method), torch.Generator().manual_seed(0), batch(cifar, B)
    start, proj = w.clone(), [p.clone() for p in method.projector.parameters()]
    for step in (0, 1):  # epochs 0 and 1 of 1-step epochs
        update(method, opt, images, gen, step=step, total=6, per_epoch=1)
        assert torch.equal(w, start), f"prototypes moved at step {step}"
    assert not any(torch.equal(a, b) for a, b in zip(proj, method.projector.parameters()))
    for step in (2, 3):
        before = w.clone()
        update(method, opt, images, gen, step=step, total=6, per_epoch=1)
        assert not torch.equal(w, before)
        torch.testing.assert_close(w.norm(dim=1), torch.ones(len(w)), rtol=0, atol=1e-6)
