"""VICReg's mechanics inside the method, on real CIFAR-100 images: the three logged terms and the
total are eq. 6 of the paper on the method's own embeddings; with the batch split over
(simulated) ranks the variance and covariance terms are over the global batch and the
invariance term over the rank's own samples."""

from __future__ import annotations

import pytest
import torch

from helpers_methods import MethodWorld, batch, capture_outputs, tiny_method
from reprlab.methods.base import StepContext

pytestmark = pytest.mark.realdata
CTX = StepContext(0, 10, 10)


def variance_covariance(z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """One branch's terms from the paper's definitions (eqs. 1-4) in float64, element by element."""
    z = z.double()
    n, d = z.shape
    std = torch.sqrt(z.var(0, unbiased=True) + 1e-4)
    v = torch.relu(1 - std).mean()
    zc = z - z.mean(0)
    cov = zc.T @ zc / (n - 1)
    c = sum(cov[i, j] ** 2 for i in range(d) for j in range(d) if i != j) / d
    return v, c


def reference_terms(z1, z2):
    v1, c1 = variance_covariance(z1)
    v2, c2 = variance_covariance(z2)
    return ((z1.double() - z2.double()) ** 2).mean(), v1 + v2, c1 + c2


def test_terms_and_total_follow_eq_6(cifar):
    method = tiny_method("vicreg", cifar)
    m = method.cfg.method
    assert (m.sim_coeff, m.std_coeff, m.cov_coeff, m.proj_layers) == (25.0, 25.0, 1.0, 3)
    z = capture_outputs(method.projector)
    method.train()
    loss, extra = method.training_step(batch(cifar, 32), None, torch.Generator().manual_seed(0), CTX)
    s, v, c = reference_terms(*z[0].chunk(2))
    assert set(extra) == {"invariance", "variance", "covariance"}
    for key, ref in (("invariance", s), ("variance", v), ("covariance", c)):
        torch.testing.assert_close(extra[key].double(), ref, rtol=1e-5, atol=1e-7, msg=key)
    torch.testing.assert_close(loss.double(), 25 * s + 25 * v + 1 * c, rtol=1e-5, atol=1e-6)


def test_variance_and_covariance_over_the_global_batch_invariance_local(cifar, monkeypatch):
    world = MethodWorld(2, monkeypatch)
    ranks = [tiny_method("vicreg", cifar) for _ in range(2)]
    ranks[1].load_state_dict(ranks[0].state_dict())
    images = batch(cifar, 32).chunk(2)
    z = [capture_outputs(r.projector) for r in ranks]

    def step(rank):
        ranks[rank].train()
        return ranks[rank].training_step(images[rank], None, torch.Generator().manual_seed(rank), CTX)

    out = world.run(step)
    z1 = torch.cat([z[r][0].chunk(2)[0] for r in range(2)])
    z2 = torch.cat([z[r][0].chunk(2)[1] for r in range(2)])
    _, v, c = reference_terms(z1, z2)
    for r, (loss, extra) in enumerate(out):
        s_local = ((z[r][0].chunk(2)[0].double() - z[r][0].chunk(2)[1].double()) ** 2).mean()
        torch.testing.assert_close(extra["invariance"].double(), s_local, rtol=1e-5, atol=1e-7)
        torch.testing.assert_close(extra["variance"].double(), v, rtol=1e-5, atol=1e-7)
        torch.testing.assert_close(extra["covariance"].double(), c, rtol=1e-5, atol=1e-7)
        torch.testing.assert_close(loss.double(), 25 * s_local + 25 * v + c, rtol=1e-5, atol=1e-6)
        _, v_local, c_local = reference_terms(*z[r][0].chunk(2))
        assert v > 0 and not torch.allclose(v, v_local, rtol=1e-3), "the variance term is the rank's local one"
        assert not torch.allclose(c, c_local, rtol=1e-3), "the covariance term is the rank's local one"
