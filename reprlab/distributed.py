"""Collectives that methods use for statistics over the global batch, identities in a single
process.

A method written with these is correct under data parallelism without knowing about it:
MoCo enqueues ``gather(keys)``, Barlow Twins and VICReg reduce their cross-correlation or
covariance sums with ``all_reduce_sum``, DINO's centre and SwAV's Sinkhorn marginals likewise.
``gather`` keeps the autograd graph (an autograd-aware all_gather), so a loss over gathered
embeddings sends gradients back to every rank.
"""

from __future__ import annotations

import os
import select
import signal
import socket
import threading
import time
from datetime import timedelta

import torch
import torch.distributed as dist

from reprlab.errors import ReprlabError


def is_distributed() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def world_size() -> int:
    return dist.get_world_size() if is_distributed() else 1


def rank() -> int:
    return dist.get_rank() if is_distributed() else 0


def gather(t: torch.Tensor) -> torch.Tensor:
    """Concatenate ``t`` (B, ...) of every rank along dim 0, in rank order; differentiable."""
    if not is_distributed():
        return t
    return _AllGather.apply(t)


def gather_nograd(t: torch.Tensor) -> torch.Tensor:
    """As :func:`gather` for tensors that carry no gradient (queue keys, teacher outputs)."""
    if not is_distributed():
        return t
    out = [torch.empty_like(t) for _ in range(dist.get_world_size())]
    dist.all_gather(out, t.contiguous())
    return torch.cat(out, dim=0)


def all_reduce_sum(t: torch.Tensor) -> torch.Tensor:
    """Sum of ``t`` over ranks (a new tensor; differentiable when distributed)."""
    if not is_distributed():
        return t
    return _AllReduceSum.apply(t)


class _AllGather(torch.autograd.Function):
    """Every rank's (B, ...) rows, concatenated in rank order; the backward sends each rank the
    sum over ranks of the gradients of its own rows. Written here (with :class:`_AllReduceSum`)
    because torch 2.14 deprecates ``torch.distributed.nn.functional``'s autograd collectives;
    tests/test_distributed.py checks values and gradients against one process."""

    @staticmethod
    def forward(ctx, t: torch.Tensor) -> torch.Tensor:
        ctx.rows = len(t)
        parts = [torch.empty_like(t) for _ in range(dist.get_world_size())]
        dist.all_gather(parts, t.contiguous())
        return torch.cat(parts, dim=0)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        grad = grad.contiguous().clone()
        dist.all_reduce(grad)
        r = dist.get_rank()
        return grad[r * ctx.rows : (r + 1) * ctx.rows]


class _AllReduceSum(torch.autograd.Function):
    """Sum over ranks whose backward sums the incoming gradients over ranks (every rank's
    loss depends on every rank's input). Written here because torch 2.14 deprecates
    ``torch.distributed.nn.functional.all_reduce`` and its replacement in
    ``_functional_collectives`` has no autograd; tests/test_data_parallel.py checks it."""

    @staticmethod
    def forward(ctx, t: torch.Tensor) -> torch.Tensor:
        out = t.clone()
        dist.all_reduce(out)
        return out

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        grad = grad.clone()
        dist.all_reduce(grad)
        return grad


def gather_others(t: torch.Tensor) -> torch.Tensor:
    """The rows of ``t`` held by every *other* rank (differentiable); (0, ...) in one process.

    NT-Xent's ``gather`` hook: another rank's views are extra negatives for the local anchors,
    and the gradient of each flows back to the rank that produced it."""
    if not is_distributed():
        return t[:0]
    everything, n, r = _AllGather.apply(t), len(t), dist.get_rank()
    return torch.cat([everything[: r * n], everything[(r + 1) * n :]], dim=0)


# --------------------------------------------------------------------------------------------
# The process group: joined when a launcher (torchrun, srun with the same variables) started us


def launched() -> bool:
    """Whether a launcher set the standard variables (``WORLD_SIZE`` above 1)."""
    return int(os.environ.get("WORLD_SIZE", "1") or 1) > 1


def local_rank() -> int:
    return int(os.environ.get("LOCAL_RANK", "0") or 0)


def init_from_env() -> bool:
    """Join the process group that ``torchrun`` describes in ``RANK``/``WORLD_SIZE``/
    ``LOCAL_RANK``/``MASTER_ADDR``/``MASTER_PORT``: NCCL when CUDA is available (each rank on
    ``cuda:LOCAL_RANK``), gloo otherwise. Without those variables nothing happens (False)."""
    if not launched() or (dist.is_available() and dist.is_initialized()):
        return is_distributed()
    missing = [k for k in ("RANK", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT") if k not in os.environ]
    if missing:
        raise ReprlabError(f"WORLD_SIZE={os.environ['WORLD_SIZE']} but {', '.join(missing)} not set; start data-parallel runs with torchrun")
    cuda = torch.cuda.is_available()
    if cuda:
        torch.cuda.set_device(local_rank())
    timeout = timedelta(seconds=int(os.environ.get("REPRLAB_DIST_TIMEOUT", "1800")))
    r, w = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    # The group's keys live under a prefix of their own per restart of the group: after
    # torchrun --max-restarts brings a group back, a rank must not read the address a killed
    # rank of the previous attempt published (measured here: gloo then fails to connect).
    agent = os.environ.get("TORCHELASTIC_USE_AGENT_STORE") == "True"
    store = dist.TCPStore(os.environ["MASTER_ADDR"], int(os.environ["MASTER_PORT"]), w, is_master=r == 0 and not agent, timeout=timeout, multi_tenant=not agent)
    attempt = os.environ.get("TORCHELASTIC_RESTART_COUNT", "0")
    dist.init_process_group("nccl" if cuda else "gloo", store=dist.PrefixStore(f"reprlab/attempt_{attempt}", store), rank=r, world_size=w, timeout=timeout)
    global _peers
    _peers = all_gather_object((socket.gethostname(), os.getpid(), _start_time(os.getpid())))  # so a survivor can say which rank died, and how
    _watch_peers()
    return True


# --------------------------------------------------------------------------------------------
# A rank that died: what the survivors say instead of the backend's "Connection closed by peer"

#: (host, pid, start time) of every rank of the group, by rank (on this machine /proc tells their fate)
_peers: list[tuple[str, int, int | None]] = []
#: rank -> how it ended ("signal 9"), seen by the watcher thread the moment it ended
_died: dict[int, str] = {}


def _stat(pid: int) -> list[str] | None:
    """The fields of ``/proc/<pid>/stat`` from the state on (field 3), or None when it is gone."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            text = f.read()
    except OSError:
        return None
    return text.rsplit(")", 1)[1].split()


def _start_time(pid: int) -> int | None:
    fields = _stat(pid)
    return int(fields[19]) if fields else None  # field 22: start time (tells a reused pid apart)


def _fate(pid: int, start: int | None) -> str | None:
    """How the process ``pid`` ended -- "signal 9", "exit code 1", "" when its status is no
    longer known -- or None while it runs."""
    fields = _stat(pid)
    if fields is None or (start is not None and int(fields[19]) != start):
        return ""  # gone, its status collected by the launcher (or the pid reused)
    if fields[0] not in ("Z", "X"):
        return None
    status = int(fields[49])  # field 52: the exit status as waitpid reports it (a zombie's)
    return f"signal {status & 0x7F}" if status & 0x7F else f"exit code {status >> 8}"


def peer_failure(wait_s: float = 2.0) -> str | None:
    """"rank 1 died (signal 9)" when another rank of this machine's group has died (waiting up
    to ``wait_s`` for it to be seen dead: the backend notices a closed connection first), else
    None. Call it when a collective failed."""
    if not _peers:
        return None
    deadline = time.monotonic() + wait_s
    while True:
        dead = sorted(_died.items()) or [(r, fate) for r, (_, pid, start) in _local_peers() if (fate := _fate(pid, start)) is not None]
        if dead or time.monotonic() > deadline:
            break
        time.sleep(0.01)
    if not dead:
        return None
    r, fate = dead[0]
    return f"rank {r} died" + (f" ({fate})" if fate else "") + "; the run stopped on every rank (re-run the same command to resume from the last checkpoint)"


def _local_peers() -> list[tuple[int, tuple[str, int, int | None]]]:
    """(rank, (host, pid, start)) of the other ranks on this machine."""
    me, host = dist.get_rank() if dist.is_initialized() else -1, socket.gethostname()
    return [(r, p) for r, p in enumerate(_peers) if r != me and p[0] == host]


def _watch_peers() -> None:
    """Note the moment another rank on this machine ends, and how (a thread waiting on pidfds).

    The launcher collects a dead rank's exit status within a fraction of a second and then stops
    the survivors with SIGTERM, often before their next collective fails; so the fate is read
    from ``/proc`` while the dead rank is still a zombie, and a SIGTERM after a rank died ends
    this one with that line (SIGTERM for any other reason keeps its default: the process ends)."""
    if not hasattr(os, "pidfd_open"):
        return
    fds = {}
    for r, (_, pid, start) in _local_peers():
        try:
            fds[os.pidfd_open(pid)] = (r, pid, start)
        except OSError:
            continue
    if not fds:
        return

    def watch() -> None:
        poller = select.poll()
        for fd in fds:
            poller.register(fd, select.POLLIN)
        while len(_died) < len(fds):
            for fd, _ in poller.poll():
                r, pid, start = fds[fd]
                _died.setdefault(r, _fate(pid, start) or "")
                poller.unregister(fd)

    threading.Thread(target=watch, name="reprlab-peer-watch", daemon=True).start()
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, _on_sigterm)


def _on_sigterm(signum, frame) -> None:
    why = peer_failure(wait_s=0.5)
    if why is not None:
        _stopping()
        raise ReprlabError(why)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)  # stopped for another reason: end as SIGTERM would
    os.kill(os.getpid(), signal.SIGTERM)


def _stopping() -> None:
    """This rank is failing: the launcher's SIGTERM must not interrupt the failure's record (it
    kills the rank if it lingers)."""
    if threading.current_thread() is threading.main_thread() and signal.getsignal(signal.SIGTERM) is _on_sigterm:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)


def explain_failure(error: BaseException) -> BaseException:
    """A backend error of a collective that another rank's death caused, as a one-line
    ReprlabError saying so; any other error unchanged."""
    if _peers:
        _stopping()
    if isinstance(error, RuntimeError) and _peers:
        why = peer_failure()
        if why is not None:
            return ReprlabError(why)
    return error


def shutdown() -> None:
    global _peers
    if _peers and threading.current_thread() is threading.main_thread() and signal.getsignal(signal.SIGTERM) in (_on_sigterm, signal.SIG_IGN):
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
    _peers = []
    _died.clear()
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def is_main() -> bool:
    """Rank 0: the one process that writes the run directory and prints progress."""
    return rank() == 0


def barrier() -> None:
    if is_distributed():
        dist.barrier()


def mean_over_ranks(t: torch.Tensor) -> torch.Tensor:
    """Mean of ``t`` over ranks, no gradient (logged losses and scalars)."""
    if not is_distributed():
        return t
    t = t.detach().clone()
    dist.all_reduce(t)
    return t / dist.get_world_size()


def broadcast_object(obj=None, src: int = 0):
    """``obj`` of rank ``src`` on every rank (a decision, a one-line error)."""
    if not is_distributed():
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=src)
    return box[0]


def all_gather_object(obj) -> list:
    """``[obj of rank 0, obj of rank 1, ...]`` on every rank (generator states at checkpoints)."""
    if not is_distributed():
        return [obj]
    out = [None] * dist.get_world_size()
    dist.all_gather_object(out, obj)
    return out


def shard(n: int) -> slice:
    """This rank's contiguous share of ``n`` rows for sharded evaluation (sizes differ by <= 1)."""
    w, r = world_size(), rank()
    return slice(r * n // w, (r + 1) * n // w)


def gather_rows(t: torch.Tensor, n: int) -> torch.Tensor:
    """Undo :func:`shard`: every rank's rows (no gradient), in rank order, ``n`` in all."""
    if not is_distributed():
        return t
    w = dist.get_world_size()
    size = max((r + 1) * n // w - r * n // w for r in range(w))
    padded = torch.zeros((size, *t.shape[1:]), dtype=t.dtype, device=t.device)
    padded[: len(t)] = t
    parts = [torch.empty_like(padded) for _ in range(w)]
    dist.all_gather(parts, padded)
    return torch.cat([p[: (r + 1) * n // w - r * n // w] for r, p in enumerate(parts)])

