"""reprlab.distributed on a real process group: 2 CPU processes, gloo, the code path NCCL takes
on GPUs. Each test starts its processes itself, bounds them with a timeout and kills them by
PID if they overrun, so a hang can never stall CI."""

from __future__ import annotations

import os
import sys
import time

import pytest
import torch
import torch.multiprocessing as mp

WORLD = 2


def _ntxent_rank(rank: int, init: str, out: str) -> None:
    import torch.distributed as dist

    from reprlab import distributed
    from reprlab.losses import nt_xent

    dist.init_process_group("gloo", init_method=init, rank=rank, world_size=WORLD)
    try:
        g = torch.Generator().manual_seed(0)
        z1, z2 = torch.randn(8, 5, generator=g, dtype=torch.float64), torch.randn(8, 5, generator=g, dtype=torch.float64)
        a = z1[rank * 4 : (rank + 1) * 4].clone().requires_grad_()
        b = z2[rank * 4 : (rank + 1) * 4].clone().requires_grad_()
        loss = nt_xent(a, b, 0.3, gather=distributed.gather_others)
        loss.backward()
        summed = distributed.all_reduce_sum(torch.tensor([float(rank + 1)]))
        gathered = distributed.gather_nograd(torch.full((2,), float(rank)))
        torch.save({"loss": loss.detach(), "ga": a.grad, "gb": b.grad, "sum": summed, "gathered": gathered, "world": distributed.world_size()}, f"{out}/rank{rank}.pt")
    finally:
        dist.destroy_process_group()


def _run_ranks(fn, tmp_path, timeout: float = 120.0) -> None:
    init = f"file://{tmp_path}/store"
    ctx = mp.start_processes(fn, args=(init, str(tmp_path)), nprocs=WORLD, join=False, start_method="spawn")
    deadline = time.monotonic() + timeout
    try:
        while not ctx.join(timeout=1.0):
            if time.monotonic() > deadline:
                raise AssertionError(f"ranks still running after {timeout:.0f} s")
    finally:
        for p in ctx.processes:
            if p.is_alive():
                os.kill(p.pid, 9)


@pytest.mark.skipif(not torch.distributed.is_available() or sys.platform != "linux", reason="needs torch.distributed with gloo (Linux)")
def test_gathered_ntxent_over_two_ranks_equals_the_single_process_loss_and_gradients(tmp_path):
    from reprlab.losses import nt_xent

    _run_ranks(_ntxent_rank, tmp_path)
    r = [torch.load(tmp_path / f"rank{i}.pt") for i in range(WORLD)]
    g = torch.Generator().manual_seed(0)
    z1 = torch.randn(8, 5, generator=g, dtype=torch.float64).requires_grad_()
    z2 = torch.randn(8, 5, generator=g, dtype=torch.float64).requires_grad_()
    full = nt_xent(z1, z2, 0.3)
    full.backward()
    # the global loss is the mean of the ranks' losses; a rank's gradient (all ranks' losses
    # through the differentiable gather) is WORLD x the global loss's gradient of its rows
    assert torch.allclose(sum(x["loss"] for x in r) / WORLD, full.detach(), rtol=1e-12, atol=1e-12)
    for i, x in enumerate(r):
        assert torch.allclose(x["ga"] / WORLD, z1.grad[i * 4 : (i + 1) * 4], atol=1e-12)
        assert torch.allclose(x["gb"] / WORLD, z2.grad[i * 4 : (i + 1) * 4], atol=1e-12)
        assert x["world"] == WORLD and x["sum"].item() == 3.0 and x["gathered"].tolist() == [0.0, 0.0, 1.0, 1.0]
    # without the gather each rank sees only its own negatives: a different loss
    local = nt_xent(z1[:4].detach(), z2[:4].detach(), 0.3)
    assert not torch.allclose(local, r[0]["loss"])


def test_collectives_are_identities_in_one_process():
    from reprlab import distributed

    t = torch.randn(3, 2)
    assert distributed.world_size() == 1 and distributed.rank() == 0
    assert distributed.gather(t) is t and distributed.gather_nograd(t) is t and distributed.all_reduce_sum(t) is t
    assert distributed.gather_others(t).shape == (0, 2)


def _bn_rank(rank: int, init: str, out: str) -> None:
    import torch.distributed as dist
    from torch import nn

    from reprlab.models.sync_bn import convert_sync_batchnorm

    dist.init_process_group("gloo", init_method=init, rank=rank, world_size=WORLD)
    try:
        x, w = _bn_data()
        bn = convert_sync_batchnorm(nn.Sequential(nn.BatchNorm2d(3)).double(), torch.device("cpu"))
        local = x[rank * 3 : (rank + 1) * 3].clone().requires_grad_()
        y = bn(local)
        (y * w[rank * 3 : (rank + 1) * 3]).sum().backward()
        # the weight's gradient is summed over ranks, as DDP's averaging of a sum of losses would
        gw = bn[0].weight.grad.clone()
        dist.all_reduce(gw)
        torch.save({"y": y.detach(), "gx": local.grad, "gw": gw, "rm": bn[0].running_mean, "rv": bn[0].running_var, "type": type(bn[0]).__name__}, f"{out}/bn{rank}.pt")
    finally:
        dist.destroy_process_group()


def _bn_data():
    g = torch.Generator().manual_seed(1)
    x = torch.randn(6, 3, 4, 4, generator=g, dtype=torch.float64) * 0.01 + 1000.0  # a large mean: cancellation would show
    w = torch.randn(6, 3, 4, 4, generator=g, dtype=torch.float64)
    return x, w


@pytest.mark.skipif(not torch.distributed.is_available() or sys.platform != "linux", reason="needs torch.distributed with gloo (Linux)")
def test_global_batchnorm_over_two_ranks_equals_batchnorm_on_the_whole_batch(tmp_path):
    from torch import nn

    _run_ranks(_bn_rank, tmp_path)
    r = [torch.load(tmp_path / f"bn{i}.pt") for i in range(WORLD)]
    x, w = _bn_data()
    x.requires_grad_()
    bn = nn.BatchNorm2d(3).double()
    y = bn(x)
    (y * w).sum().backward()
    assert r[0]["type"] == "GlobalBatchNorm"
    torch.testing.assert_close(torch.cat([p["y"] for p in r]), y.detach(), rtol=1e-7, atol=1e-7)
    torch.testing.assert_close(torch.cat([p["gx"] for p in r]), x.grad, rtol=1e-6, atol=1e-6)
    for p in r:
        torch.testing.assert_close(p["gw"], bn.weight.grad, rtol=1e-9, atol=1e-9)
        torch.testing.assert_close(p["rm"], bn.running_mean, rtol=1e-12, atol=1e-12)
        torch.testing.assert_close(p["rv"], bn.running_var, rtol=1e-9, atol=1e-12)
