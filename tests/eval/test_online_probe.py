"""The online probe's own update (torch's SGD with momentum, on detached features, drawing no
random numbers from the run) and that it learns; pretraining's bit-identity with the probe on and
off is tests/methods/test_online_probe.py."""

from __future__ import annotations

import torch

from reprlab.eval.online_probe import OnlineProbe


def test_the_online_probe_steps_like_torch_sgd_and_learns_separable_features():
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(64, 8, generator=g), torch.arange(64) % 4
    x[torch.arange(64), y] += 4.0  # class c lights feature c up
    probe = OnlineProbe(8, 4, lr=0.1, seed=3)
    ref = torch.nn.Linear(8, 4)
    ref.load_state_dict(probe.linear.state_dict())
    opt = torch.optim.SGD(ref.parameters(), lr=0.1, momentum=0.9)
    state = torch.get_rng_state()
    losses = []
    for _ in range(30):
        losses.append(probe.step(x, y).item())
        opt.zero_grad()
        torch.nn.functional.cross_entropy(ref(x), y).backward()
        opt.step()
    assert torch.equal(torch.get_rng_state(), state)  # it draws nothing from the run's generator
    torch.testing.assert_close(probe.linear.weight, ref.weight, rtol=1e-6, atol=1e-6)
    assert probe.linear.weight.grad is None  # nothing left behind for a clip or an optimiser to see
    assert losses[-1] < 0.1 * losses[0]
    assert (probe.linear(x).argmax(1) == y).all()
    # its initialisation is its seed's, whatever the run's generator did before
    torch.manual_seed(123)
    assert torch.equal(OnlineProbe(8, 4, 0.1, seed=3).linear.weight, OnlineProbe(8, 4, 0.1, seed=3).linear.weight)
