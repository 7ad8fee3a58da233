"""SimSiam's mechanics inside the method, on real CIFAR-100 images: the architecture of the
paper (BN on the projector's output, a bottleneck predictor), the loss is eq. 2 on the method's
own projections and predictions, and the stop-gradient holds (the projection reaches the loss
only through the predictor)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from helpers_methods import batch, capture_outputs, tiny_method
from reprlab.config import load_config
from reprlab.methods.base import StepContext
from reprlab.models.heads import ProjectionHead

pytestmark = pytest.mark.realdata
CTX = StepContext(0, 10, 10)


def test_projection_head_can_normalise_its_output():
    torch.manual_seed(0)
    head = ProjectionHead(16, 32, 8, 3, last_batch_norm=True).train()
    last_linear, last_bn = head.net[-2], head.net[-1]
    assert isinstance(last_bn, nn.BatchNorm1d) and not last_bn.affine and last_linear.bias is None
    z = head(torch.randn(64, 16) * 3 + 1).double()
    torch.testing.assert_close(z.mean(0), torch.zeros(8, dtype=torch.float64), atol=1e-5, rtol=0)
    torch.testing.assert_close(z.var(0, unbiased=False), torch.ones(8, dtype=torch.float64), atol=1e-3, rtol=0)
    plain = ProjectionHead(16, 32, 8, 3)
    assert isinstance(plain.net[-1], nn.Linear) and plain.net[-1].bias is not None


def test_architecture_is_the_papers(cifar):
    method = tiny_method("simsiam", cifar)
    m = method.cfg.method
    proj = list(method.projector.net)
    assert [type(layer) for layer in proj] == [nn.Linear, nn.BatchNorm1d, nn.ReLU] * 2 + [nn.Linear, nn.BatchNorm1d]
    assert not proj[-1].affine and proj[-2].bias is None  # BN on the output layer, no affine
    pred = list(method.predictor.net)
    assert [type(layer) for layer in pred] == [nn.Linear, nn.BatchNorm1d, nn.ReLU, nn.Linear]
    assert (pred[0].in_features, pred[0].out_features, pred[-1].out_features) == (m.proj_out_dim, m.pred_hidden_dim, m.proj_out_dim)
    full = load_config("configs/pretrain/simsiam_cifar100.toml").method
    assert full.pred_hidden_dim < full.proj_out_dim  # the predictor is a bottleneck
    assert all(p.requires_grad for p in method.parameters()) and not any(n.startswith("target") for n in method.state_dict())  # no momentum encoder


def test_loss_is_eq_2_on_the_methods_outputs(cifar):
    method = tiny_method("simsiam", cifar)
    z, p = capture_outputs(method.projector), capture_outputs(method.predictor)
    method.train()
    loss, extra = method.training_step(batch(cifar, 32), None, torch.Generator().manual_seed(0), CTX)
    (z1, z2), (p1, p2) = z[0].double().chunk(2), p[0].double().chunk(2)

    def cos(a, b):
        return (a * b).sum(1) / (a.norm(dim=1) * b.norm(dim=1))

    expected = -0.5 * (cos(p1, z2).mean() + cos(p2, z1).mean())
    torch.testing.assert_close(loss.double(), expected, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(extra["z_std"].double(), F.normalize(z1, dim=1).std(0).mean(), rtol=1e-5, atol=1e-7)


def _grads(method) -> dict[str, torch.Tensor]:
    out = {n: p.grad.clone() for n, p in method.named_parameters() if p.grad is not None}
    method.zero_grad(set_to_none=True)
    return out


def test_stop_gradient_projection_reaches_the_loss_through_the_predictor_only(cifar):
    method = tiny_method("simsiam", cifar)
    method.train()
    images = batch(cifar, 32)
    method.training_step(images, None, torch.Generator().manual_seed(0), CTX)[0].backward()
    got = _grads(method)

    def reference(stop_grad: bool) -> dict[str, torch.Tensor]:
        x = torch.cat(method.views(images, torch.Generator().manual_seed(0)))
        z = method.projector(method.encode(x))
        p1, p2 = method.predictor(z).chunk(2)
        z1, z2 = z.chunk(2)
        if stop_grad:
            z1, z2 = z1.detach(), z2.detach()
        loss = -0.5 * (F.cosine_similarity(p1, z2).mean() + F.cosine_similarity(p2, z1).mean())
        loss.backward()
        return _grads(method)

    with_sg, without_sg = reference(True), reference(False)
    assert got.keys() == with_sg.keys() and any(k.startswith("predictor.") for k in got)
    for k in got:
        torch.testing.assert_close(got[k], with_sg[k], rtol=1e-4, atol=1e-7, msg=k)
    # the check can fail: without the stop-gradient the projector's gradients differ
    assert not all(torch.allclose(got[k], without_sg[k], rtol=1e-3, atol=1e-6) for k in got if k.startswith("projector."))
