"""Executors: how the study runner's runs are dispatched, once the runner has decided what runs.

The runner (:mod:`reprlab.studies.runner`) alone decides *what* runs and *when* (staleness,
resume, ``--only``, ``best_of``, dependencies); an executor only starts a run's command line
somewhere and says when it has ended. Whether a run *finished* is never the executor's word:
the runner reads the run directory's ``result.json`` once the executor says the run ended.

An executor has ``slots`` (how many runs it keeps going at once) and:

* ``start(argv, log, slot) -> handle``: start ``python -m reprlab CMD ...`` (``argv``), its output
  appended to ``log``; the handle's ``poll()`` is None while it runs, then an exit code.
* ``where(slot, handle)``: a few words for the runner's ``start`` line (a worker, a job id).
* ``failure(handle, code, log)``: the runner's one-line reason for a non-zero ``code``.
* ``interrupt(handles)``: Ctrl-C on the runner: stop (or cancel) what it started, say so.
* ``close()``: the study ended; release what the executor holds.

:class:`LocalExecutor` is ``--executor local``: child processes of the runner on this machine
(:mod:`reprlab.studies.process`). ``--executor slurm`` is :mod:`reprlab.studies.slurm`.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import IO, Any, Callable, Protocol

from reprlab.errors import ReprlabError
from reprlab.studies.process import exit_text, last_line, spawn, terminate, under_torchrun


class Executor(Protocol):
    slots: int

    def start(self, argv: list[str], log: Path, slot: int) -> Any: ...

    def where(self, slot: int, handle: Any) -> str: ...

    def failure(self, handle: Any, code: int, log: Path) -> str: ...

    def interrupt(self, handles: list[Any], out: IO[str]) -> None: ...

    def close(self) -> None: ...


def worker_envs(workers: int, gpus_per_run: int = 1) -> list[dict[str, str]]:
    """One environment per worker: its own GPU (its group of ``gpus_per_run`` GPUs), or its
    share of the CPU threads (split again over the ``gpus_per_run`` processes of a run).

    CPU threads go through ``OMP_NUM_THREADS`` rather than ``train.num_threads``: the config of
    a run directory must not depend on how many workers the runner happened to have, or a
    resume with another ``--workers`` would be refused as a different config.
    """
    base = dict(os.environ)
    if workers <= 1 and gpus_per_run <= 1:
        return [base]
    import torch

    n_gpu = torch.cuda.device_count()
    if n_gpu:
        visible = base.get("CUDA_VISIBLE_DEVICES")
        ids = [v.strip() for v in visible.split(",") if v.strip()] if visible else [str(i) for i in range(n_gpu)]
        if gpus_per_run > 1:
            if workers * gpus_per_run > len(ids):
                raise ReprlabError(f"--workers {workers} x --gpus-per-run {gpus_per_run} needs {workers * gpus_per_run} GPUs; {len(ids)} visible ({','.join(ids)})")
            return [{**base, "CUDA_VISIBLE_DEVICES": ",".join(ids[i * gpus_per_run : (i + 1) * gpus_per_run])} for i in range(workers)]
        return [{**base, "CUDA_VISIBLE_DEVICES": ids[i % len(ids)]} for i in range(workers)]
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    threads = str(max(1, cores // (workers * gpus_per_run)))
    return [{**base, "OMP_NUM_THREADS": threads, "MKL_NUM_THREADS": threads} for _ in range(workers)]


class LocalExecutor:
    """``--executor local``: each run a child process of the runner on one of ``workers`` slots,
    with the slot's GPUs or share of the cores; Ctrl-C stops the children (they die with the
    runner anyway: ``PR_SET_PDEATHSIG``). ``launch(argv, log, env)`` starts one process
    (:func:`spawn`; tests inject a fake)."""

    def __init__(self, workers: int = 1, gpus_per_run: int = 1, launch: Callable[[list[str], Path, dict[str, str]], Any] | None = None) -> None:
        if workers < 1:
            raise ReprlabError(f"--workers must be >= 1, got {workers}")
        self.slots, self.gpus_per_run = workers, gpus_per_run
        self.launch = launch or spawn
        self.envs = worker_envs(workers, gpus_per_run)

    def start(self, argv: list[str], log: Path, slot: int) -> Any:
        return self.launch(under_torchrun(argv, self.gpus_per_run), log, self.envs[slot])

    def where(self, slot: int, handle: Any) -> str:
        gpu = self.envs[slot].get("CUDA_VISIBLE_DEVICES") if self.slots > 1 or self.gpus_per_run > 1 else None
        return f"worker {slot + 1}" + (f", CUDA_VISIBLE_DEVICES={gpu}" if gpu is not None else "")

    def failure(self, handle: Any, code: int, log: Path) -> str:
        return f"{exit_text(code)}: {last_line(log)}  (log {log})"

    def interrupt(self, handles: list[Any], out: IO[str]) -> None:
        # children in our process group got the SIGINT too; give them a moment to stop cleanly
        for proc in handles:
            terminate(proc, grace_s=30.0)

    def close(self) -> None:
        pass
