"""Child processes of studies and sweeps: the ``reprlab`` command line of a child, starting it
with its output appended to a log, stopping it, and reading the log's last line."""

from __future__ import annotations

import ctypes
import os
import re
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable

from reprlab.io import make_dirs, os_error


def reprlab_argv(data_root: str | None, command: str) -> list[str]:
    return [sys.executable, "-m", "reprlab", *(["--data-root", data_root] if data_root else []), command]


#: the commands that train data-parallel under torchrun (reprlab.commands.*.DATA_PARALLEL)
DATA_PARALLEL_COMMANDS = ("train", "pretrain", "finetune", "probe")


def under_torchrun(argv: list[str], nproc: int) -> list[str]:
    """``python -m reprlab CMD ...`` as ``python -m torch.distributed.run --standalone
    --nproc-per-node N -m reprlab CMD ...``: torchrun picks a free rendezvous port, so
    several such runs side by side never collide. Other commands (sweeps) are unchanged."""
    if nproc <= 1 or argv[1:3] != ["-m", "reprlab"]:
        return argv
    command = next((a for a in argv[3:] if not a.startswith("-") and a in DATA_PARALLEL_COMMANDS), None)
    if command is None:
        return argv
    return [argv[0], "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", str(nproc), *argv[1:]]


def display(argv: list[str]) -> str:
    """A command line to show: ``reprlab ...`` instead of ``/path/python -m reprlab ...``."""
    if argv[1:3] == ["-m", "reprlab"]:
        argv = ["reprlab", *argv[3:]]
    elif argv[1:3] == ["-m", "torch.distributed.run"]:
        argv = ["torchrun", *argv[3:]]
    return shlex.join(argv)


def _die_with_parent(ignore: tuple[signal.Signals, ...] = ()) -> Callable[[], None] | None:
    """A ``preexec_fn`` making the child get SIGKILL when its parent dies (Linux), and ignore
    the signals ``ignore`` (kept ignored across exec, by its own children too).

    Why: killing the runner (``kill -9``, a preempted job) must not leave a training process
    running on behalf of nobody, holding its run's lock and racing the next runner.
    """
    if not sys.platform.startswith("linux"):
        return None
    libc = ctypes.CDLL(None, use_errno=True)  # resolved before fork: dlopen in the child is unsafe
    parent = os.getpid()

    def preexec() -> None:
        for sig in ignore:
            signal.signal(sig, signal.SIG_IGN)
        libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG = 1
        if os.getppid() != parent:  # the parent died between fork and prctl
            os._exit(1)

    return preexec


def spawn(argv: list[str], log_path: Path, env: dict[str, str] | None = None, ignore: tuple[signal.Signals, ...] = ()) -> subprocess.Popen:
    """Start ``argv`` with stdout and stderr appended to ``log_path`` (ignoring the signals
    ``ignore``: a SLURM job's warning signal is its runner's to handle)."""
    make_dirs(log_path.parent)
    try:
        log = open(log_path, "ab")
    except OSError as e:
        raise os_error(e, log_path) from None
    with log:
        try:
            log.write(f"\n=== {time.strftime('%Y-%m-%d %H:%M:%S')} {display(argv)}\n".encode())
            log.flush()
        except OSError as e:
            raise os_error(e, log_path) from None
        # the child holds its own descriptor; ours can close when this block ends
        return subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env, preexec_fn=_die_with_parent(ignore))


def terminate(proc: Any, grace_s: float = 10.0) -> None:
    """SIGTERM, then SIGKILL after ``grace_s``; returns when the process is gone."""
    if proc.poll() is not None:
        return
    proc.terminate()
    try:
        proc.wait(timeout=grace_s)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def last_line(log_path: Path) -> str:
    """The last non-empty line of a log (a progress bar's carriage returns split lines too)."""
    if not log_path.is_file():
        return "(no output)"
    with open(log_path, "rb") as f:
        f.seek(max(0, log_path.stat().st_size - 8192))
        tail = f.read().decode(errors="replace")
    lines = [ln.strip() for ln in re.split(r"[\r\n]+", tail) if ln.strip()]
    return lines[-1] if lines else "(no output)"


def exit_text(code: int) -> str:
    if code < 0:
        try:
            return f"killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"killed by signal {-code}"
    return f"exit {code}"
