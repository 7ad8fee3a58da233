"""Where and how a run computes: device, autocast precision, seeding and the global RNG state.

Below every other layer: data, methods, evaluation and the loop all ask this module, never each
other, which device and precision to use.
"""

from __future__ import annotations

import functools
import os
import random
import sys
from typing import Iterable

import numpy as np
import torch

from reprlab.errors import ReprlabError


def resolve_device(name: str) -> torch.device:
    """``train.device``; under a data-parallel launch ``auto``/``cuda`` mean this rank's GPU,
    ``cuda:LOCAL_RANK``."""
    from reprlab import distributed

    if name in ("auto", "cuda") and torch.cuda.is_available():
        return torch.device("cuda", distributed.local_rank()) if distributed.launched() else torch.device("cuda")
    if name == "auto":
        return torch.device("cpu")
    try:
        dev = torch.device(name)
    except RuntimeError:
        raise ReprlabError(f"train.device={name!r} is not a device; expected auto, cpu, cuda or cuda:N") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ReprlabError(f"train.device={name!r} but no CUDA device is available; use train.device=cpu or auto")
    return dev


# ---------------------------------------------------------------------------------------------
# Precision. Autocast only: parameters, optimiser state, losses and metrics stay float32 (every
# method casts its outputs to float before the loss; features are returned as float32).

#: forces what train.precision=auto picks on a CPU: 1 = bf16 autocast, 0 = float32
CPU_BF16_ENV = "REPRLAB_CPU_BF16"
#: x86 features with which oneDNN computes bf16 convolutions and matmuls in hardware. Without
#: them bf16 is emulated through float32 (AVX-512 alone) or not vectorised at all and brings no
#: speed-up, only rounding, so auto keeps float32 there. (ARM's bf16 is not measured here: fp32.)
NATIVE_BF16_FLAGS = ("amx_bf16", "avx512_bf16")


def bf16_verdict(flags: Iterable[str], source: str = "CPU flags", kernels: bool = True) -> tuple[bool, str]:
    """Whether a CPU with feature ``flags`` computes bf16 natively, and why (a pure function, so
    both answers are testable on any machine). ``kernels``: torch has oneDNN's bf16 kernels."""
    have = [f for f in NATIVE_BF16_FLAGS if f in set(flags)]
    if not kernels:
        return False, "this torch build has no oneDNN bf16 kernels"
    if have:
        return True, f"the CPU computes bf16 natively ({', '.join(have)} in {source})"
    return False, f"the CPU has no native bf16 (neither {' nor '.join(NATIVE_BF16_FLAGS)} in {source}); emulated bf16 is no faster than float32"


def _proc_cpuinfo_flags(path: str = "/proc/cpuinfo") -> frozenset[str] | None:
    """The first CPU's feature flags as the kernel lists them (Linux; x86 ``flags``, ARM
    ``Features``); None where there is no such file."""
    try:
        with open(path) as f:
            for line in f:
                key, _, value = line.partition(":")
                if key.strip() in ("flags", "Features"):
                    return frozenset(value.split())
    except OSError:
        return None
    return frozenset()


def cpu_features() -> tuple[frozenset[str], str]:
    """The CPU feature flags that count, and where they were read.

    torch's own answer first (``torch.cpu.get_capabilities``: cpuinfo's CPUID probe, what its
    kernels dispatch on). On Linux a flag also has to be in ``/proc/cpuinfo``: the kernel lists
    AMX only when it manages AMX state, and without that oneDNN cannot use the tiles. (The two
    spell the bf16 and AMX flags alike; other names differ, e.g. ``avx512_f`` / ``avx512f``.)
    """
    proc = _proc_cpuinfo_flags()
    get_caps = getattr(torch.cpu, "get_capabilities", None)
    if get_caps is not None:
        caps = frozenset(k for k, v in get_caps().items() if v is True)
        if proc is not None:
            return caps & proc, "torch.cpu.get_capabilities() and /proc/cpuinfo"
        return caps, "torch.cpu.get_capabilities()"
    if proc is not None:
        return proc, "/proc/cpuinfo"
    return frozenset(), "no source of CPU flags (torch too old, no /proc/cpuinfo)"


def _mkldnn_bf16() -> bool:
    if not torch.backends.mkldnn.is_available():
        return False
    check = getattr(torch.ops.mkldnn, "_is_mkldnn_bf16_supported", None)
    try:
        return bool(check()) if check is not None else True
    except (RuntimeError, AttributeError):
        return True  # the op is missing from this build; the flags decide


@functools.cache
def _detected_cpu_bf16() -> tuple[bool, str]:
    flags, source = cpu_features()
    return bf16_verdict(flags, source, _mkldnn_bf16())


def cpu_bf16_support() -> tuple[bool, str]:
    """Whether this CPU should train under bf16 autocast, and why; ``$REPRLAB_CPU_BF16`` (0/1)
    overrides the detection."""
    forced = os.environ.get(CPU_BF16_ENV, "").strip()
    if forced in ("0", "1"):
        return forced == "1", f"{CPU_BF16_ENV}={forced} forces {'bf16' if forced == '1' else 'float32'}"
    if forced:
        raise ReprlabError(f"{CPU_BF16_ENV}={forced!r}: expected 0 (float32) or 1 (bf16), or unset (detect)")
    return _detected_cpu_bf16()


_PRECISIONS = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}


def precision_choice(name: str, device: torch.device) -> tuple[torch.dtype | None, str]:
    """The autocast dtype (None = fp32) of ``train.precision=name`` on ``device``, and why."""
    if name != "auto":
        return _PRECISIONS[name], f"train.precision={name}"
    if device.type == "cuda":
        return torch.bfloat16, "train.precision=auto on a GPU"
    if device.type == "cpu":
        native, why = cpu_bf16_support()
        return (torch.bfloat16 if native else None), f"train.precision=auto on a CPU: {why}"
    return None, f"train.precision=auto on {device.type}: float32"


def _dtype_name(dtype: torch.dtype | None) -> str:
    return {None: "fp32", torch.bfloat16: "bf16", torch.float16: "fp16"}[dtype]


def precision_record(name: str, device: torch.device) -> dict:
    """What env.json says about precision: what was asked, what was chosen, why."""
    dtype, why = precision_choice(name, device)
    return {"requested": name, "autocast": _dtype_name(dtype), "reason": why}


_said: set[tuple[str, str, str]] = set()


def resolve_precision(name: str, device: torch.device) -> torch.dtype | None:
    """The autocast dtype (None = fp32).

    The first time a process resolves a choice it says which and why on stderr (the run's log):
    that happens as the method is built, after the data loaded, so a run that fails before it
    prints its one-line error alone.
    """
    dtype, why = precision_choice(name, device)
    if (name, device.type, why) not in _said:
        _said.add((name, device.type, why))
        print(f"precision: {_dtype_name(dtype)} ({why})", file=sys.stderr)
    return dtype


def seed_everything(seed: int, deterministic: bool) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    if deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True)
        torch.backends.cudnn.benchmark = False
    else:
        torch.backends.cudnn.benchmark = True


def get_rng_state() -> dict:
    state = {"torch": torch.get_rng_state(), "numpy": np.random.get_state(), "python": random.getstate()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    np.random.set_state(state["numpy"])
    random.setstate(state["python"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def channels_last_hazard(model: torch.nn.Module, device: torch.device) -> str | None:
    """Why training ``model`` in channels_last on ``device`` would be unsafe, or None.

    On a CPU, torch 2.14.1's backward of a strided 1x1 convolution in channels_last memory format
    corrupts the heap ("double free or corruption", SIGSEGV) when the convolution has fewer than
    8 input channels: a ResNet's downsampling shortcut at ``model.kwargs.width`` below 8. Seen on
    an AVX2 CPU (AMD EPYC) for 2, 4 and 6 input channels, never for 8 or more, never in the
    forward pass, never in NCHW (``benchmarks/channels_last_crash.py`` reproduces it in a child
    process). Such a model trains in NCHW instead: same numbers, no crash.
    """
    if device.type != "cpu":
        return None
    for name, m in model.named_modules():
        if isinstance(m, torch.nn.Conv2d) and m.kernel_size == (1, 1) and max(m.stride) > 1 and m.in_channels < 8:
            return f"{name} is a strided 1x1 convolution of {m.in_channels} input channels, whose CPU backward in channels_last corrupts memory in torch {torch.__version__}"
    return None
