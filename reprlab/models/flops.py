"""Parameter counts, FLOP counts and throughput, with one convention for every architecture.

The research question compares a CNN and a Vision Transformer (Dosovitskiy et al. 2021) "at
matched size", so the size measures must mean the same thing for both families:

* **Parameters** are ``sum(p.numel())`` over ``model.parameters()`` (buffers such as BatchNorm
  running statistics are not parameters and are not counted).
* **FLOPs** follow :data:`FLOP_CONVENTION`: they are measured by running one forward pass under
  :class:`torch.utils.flop_counter.FlopCounterMode`, which counts a multiply-add as 2 FLOPs in
  convolutions, linear layers and batched matmuls, including the two matmuls inside
  ``scaled_dot_product_attention`` (QK^T and AV). Bias additions, normalisation, activations,
  softmax, pooling and residual additions are elementwise and not counted. A 3x3 convolution
  therefore costs ``2*Cin*Cout*9*Hout*Wout`` FLOPs whether or not it has a bias, and one
  self-attention layer over N tokens of width D costs ``8*N*D^2 + 4*N^2*D`` FLOPs.
  Papers that quote "FLOPs" for ResNets usually mean multiply-adds, i.e. half of this number.
* **Throughput** is images per second on synthetic data, in fp32, after warm-up.
"""

from __future__ import annotations

import copy
import time
from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.utils.flop_counter import FlopCounterMode, sdpa_flop_count

from reprlab.errors import ReprlabError
from reprlab.runtime import channels_last_hazard

FLOP_CONVENTION = (
    "FLOPs/image: 1 multiply-add = 2 FLOPs in conv, linear and attention matmuls (QK^T, AV); "
    "bias, norm, activation, softmax and pooling not counted"
)


def count_params(model: nn.Module, trainable_only: bool = False) -> int:
    """Number of parameters, ``sum(p.numel())``; works on meta-device models too."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)


def _model_device(model: nn.Module) -> torch.device:
    for t in model.parameters():
        return t.device
    for t in model.buffers():
        return t.device
    return torch.device("cpu")


def _extra_flop_formulas() -> dict[Any, Any]:
    # On CPU, ``scaled_dot_product_attention`` dispatches to a fused kernel that
    # FlopCounterMode has no formula for, so attention would silently count as 0 FLOPs on CPU
    # but be counted on CUDA and on the meta device. Registering the same formula torch uses for
    # its CUDA kernels keeps one count whatever device the model lives on.
    extra: dict[Any, Any] = {}
    for name in ("_scaled_dot_product_flash_attention_for_cpu", "_scaled_dot_product_fused_attention_overrideable"):
        op = getattr(torch.ops.aten, name, None)
        if op is not None:
            extra[op] = _sdpa_flop
    return extra


def _sdpa_flop(query_shape: Any, key_shape: Any, value_shape: Any, *args: Any, out_shape: Any = None, **kwargs: Any) -> int:
    # FlopCounterMode passes shapes (it wraps custom formulas); QK^T + AV, 2 FLOPs per multiply-add.
    return sdpa_flop_count(query_shape, key_shape, value_shape)


def count_forward_flops(module: nn.Module, *inputs: torch.Tensor) -> int:
    """Total FLOPs of ``module(*inputs)`` under :data:`FLOP_CONVENTION` (no_grad, mode unchanged)."""
    with torch.no_grad(), FlopCounterMode(display=False, custom_mapping=_extra_flop_formulas()) as counter:
        module(*inputs)
    return int(counter.get_total_flops())


def count_flops(model: nn.Module, input_size: int | None = None, batch: int = 1) -> int:
    """Forward FLOPs per image under :data:`FLOP_CONVENTION`.

    The model runs once in eval mode under ``no_grad`` on a zero batch of
    ``(batch, 3, input_size, input_size)`` on its own device (a meta-device model costs nothing
    to count); its training mode is restored afterwards. ``input_size`` defaults to
    ``model.input_size``.
    """
    size = input_size if input_size is not None else getattr(model, "input_size", None)
    if not isinstance(size, int) or isinstance(size, bool) or size < 1:
        raise ReprlabError(f"input_size {size!r} is not usable; expected a positive int side length")
    if not isinstance(batch, int) or isinstance(batch, bool) or batch < 1:
        raise ReprlabError(f"batch {batch!r} is not usable; expected a positive int")
    x = torch.zeros(batch, 3, size, size, device=_model_device(model))
    was_training = model.training
    model.eval()
    try:
        total = count_forward_flops(model, x)
    finally:
        model.train(was_training)
    # Every counted op is linear in the batch, so the per-image count is exact, not rounded.
    return total // batch


def resolve_device(device: str | torch.device) -> torch.device:
    """``torch.device(device)``, refusing devices that cannot run a timed measurement here."""
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError):
        raise ReprlabError(f"device {device!r} is not a torch device; expected e.g. 'cpu' or 'cuda'") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ReprlabError(f"device {device!r} requested but CUDA is not available; expected 'cpu'")
    if dev.type == "meta":
        raise ReprlabError("device 'meta' cannot be timed; expected 'cpu' or 'cuda'")
    return dev


def _sync(dev: torch.device) -> None:
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)


def measure_throughput(
    model: nn.Module,
    input_size: int | None = None,
    batch: int = 128,
    device: str | torch.device = "cpu",
    mode: str = "train",
    steps: int = 10,
    warmup: int = 3,
) -> float:
    """Images per second on synthetic data, after ``warmup`` untimed steps.

    ``mode="train"`` times forward + cross-entropy + backward + an SGD (momentum 0.9) step, the
    work of one training iteration; ``mode="eval"`` times a ``no_grad`` forward in eval mode.
    CNNs (``model.family == "cnn"``) run in ``channels_last`` memory format in both modes, since
    that is the layout a tuned training run uses for convolutions (in ``train`` mode, on a CPU, not
    for a model that :func:`reprlab.runtime.channels_last_hazard` names, as in the training loop);
    ViTs keep the default layout.

    The measurement runs on a deep copy, so the caller's weights, BatchNorm statistics and
    device are untouched.
    """
    if mode not in ("train", "eval"):
        raise ReprlabError(f"throughput mode {mode!r} is unknown; expected 'train' or 'eval'")
    for label, value, low in (("batch", batch, 1), ("steps", steps, 1), ("warmup", warmup, 0)):
        if not isinstance(value, int) or value < low:
            raise ReprlabError(f"{label} {value!r} is not usable; expected an int >= {low}")
    size = input_size if input_size is not None else getattr(model, "input_size", None)
    if not isinstance(size, int) or size < 1:
        raise ReprlabError(f"input_size {size!r} is not usable; expected a positive int side length")
    dev = resolve_device(device)
    if _model_device(model).type == "meta":
        raise ReprlabError("model lives on the meta device and cannot be timed; build it on a real device")

    m = copy.deepcopy(model).to(dev)
    # (not where torch's CPU backward corrupts memory in channels_last: runtime.channels_last_hazard)
    cl = getattr(model, "family", None) == "cnn" and (mode == "eval" or channels_last_hazard(m, dev) is None)
    fmt = torch.channels_last if cl else torch.contiguous_format
    m = m.to(memory_format=fmt)
    x = torch.randn(batch, 3, size, size, device=dev).contiguous(memory_format=fmt)

    if mode == "eval":
        m.eval()

        def step() -> None:
            with torch.no_grad():
                m(x)

    else:
        m.train()
        head = m.get_classifier() if hasattr(m, "get_classifier") else None
        classes = head.out_features if isinstance(head, nn.Linear) else 0
        y = torch.randint(0, max(classes, 1), (batch,), device=dev)
        opt = torch.optim.SGD(m.parameters(), lr=1e-3, momentum=0.9)

        def step() -> None:
            opt.zero_grad(set_to_none=True)
            out = m(x)
            # A headless backbone has no logits; a squared mean still drives a full backward pass.
            loss = F.cross_entropy(out, y) if classes else out.float().pow(2).mean()
            loss.backward()
            opt.step()

    for _ in range(warmup):
        step()
    _sync(dev)
    start = time.perf_counter()
    for _ in range(steps):
        step()
    _sync(dev)
    elapsed = time.perf_counter() - start
    return batch * steps / max(elapsed, 1e-9)
