"""Batch normalisation over the global batch of a data-parallel run.

On CUDA this is :class:`torch.nn.SyncBatchNorm`. PyTorch's SyncBatchNorm refuses CPU tensors,
so on CPU (gloo, the path the tests run) :class:`GlobalBatchNorm` computes the same thing with
one autograd-aware all-gather per layer: every rank's count, mean and sum of squared deviations,
combined exactly into the global mean and biased variance (not E[x^2] - E[x]^2, which cancels),
the affine transform, and running statistics with the unbiased variance of the global batch. Gradients flow back through
the reductions to every rank, so a 2-rank run at batch 2B trains like one process at 2B.
"""

from __future__ import annotations

import torch
from torch import nn

from reprlab import distributed


class GlobalBatchNorm(nn.modules.batchnorm._BatchNorm):
    """BatchNorm of any input rank (N, C, ...) whose training statistics span all ranks."""

    def _check_input_dim(self, x: torch.Tensor) -> None:
        if x.dim() < 2:
            raise ValueError(f"expected at least 2D input (got {x.dim()}D input)")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not (self.training and distributed.is_distributed()):
            return super().forward(x)
        self._check_input_dim(x)
        dims = [0, *range(2, x.dim())]
        shape = [1, -1] + [1] * (x.dim() - 2)
        xf = x.to(torch.promote_types(x.dtype, torch.float32))
        # One collective: every rank's (count, mean, sum of squared deviations), combined
        # exactly (Chan et al.'s parallel variance), as torch's SyncBatchNorm does on CUDA.
        count = torch.full((1,), x.numel() / x.shape[1], dtype=xf.dtype, device=x.device)
        local_mean = xf.mean(dims)
        local_m2 = (xf - local_mean.view(shape)).pow(2).sum(dims)
        stats = distributed.gather(torch.cat([count, local_mean, local_m2])[None])  # (world, 1 + 2C)
        c = x.shape[1]
        counts, means, m2s = stats[:, :1].detach(), stats[:, 1 : 1 + c], stats[:, 1 + c :]
        n = counts.sum()
        mean = (counts * means).sum(0) / n
        var = (m2s + counts * (means - mean).pow(2)).sum(0) / n
        centred = xf - mean.view(shape)
        y = centred * torch.rsqrt(var + self.eps).view(shape)
        if self.affine:
            y = y * self.weight.view(shape) + self.bias.view(shape)
        if self.track_running_stats:
            with torch.no_grad():
                self.num_batches_tracked.add_(1)
                m = 1.0 / float(self.num_batches_tracked) if self.momentum is None else self.momentum
                self.running_mean.lerp_(mean.detach(), m)
                self.running_var.lerp_(var.detach() * n / max(float(n) - 1, 1.0), m)
        return y.to(x.dtype)


def convert_sync_batchnorm(module: nn.Module, device: torch.device) -> nn.Module:
    """Every BatchNorm layer of ``module`` as one over the global batch, in place (the same
    parameters and buffers); returns ``module`` (a new one if ``module`` itself is a BatchNorm)."""
    if device.type == "cuda":
        return nn.SyncBatchNorm.convert_sync_batchnorm(module)
    if isinstance(module, nn.modules.batchnorm._BatchNorm) and not isinstance(module, GlobalBatchNorm):
        out = GlobalBatchNorm(module.num_features, module.eps, module.momentum, module.affine, module.track_running_stats)
        if module.affine:
            out.weight, out.bias = module.weight, module.bias
        if module.track_running_stats:
            out.running_mean, out.running_var, out.num_batches_tracked = module.running_mean, module.running_var, module.num_batches_tracked
        out.train(module.training)
        return out
    for name, child in module.named_children():
        new = convert_sync_batchnorm(child, device)
        if new is not child:
            module.add_module(name, new)
    return module
