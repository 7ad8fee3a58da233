"""SIGKILL a training process from outside, by PID, once its run has a checkpoint mid-run.

:func:`kill_after_checkpoint` starts a command, watches ``checkpoints/last.pt`` of a run
directory until it holds a step of at least ``min_step``, then kills the training process (the
command itself, or one of its descendants, e.g. a study runner's child) like a dead machine
would, and returns the step of ``last.pt`` once that process is gone. That step may be later
than the first one seen: the process keeps training until the signal lands, so callers assert
on the returned step, never on ``min_step``.

The kill lands between two file writes of the run: the process is stopped (SIGSTOP) first, and
only killed while no temporary file of an atomic write (``.<name>.tmp<pid>``) exists in its run
directory; otherwise it is continued and stopped again a moment later. A kill in the middle of
writing a checkpoint is another test (it leaves that temporary file behind).

It never hangs: every wait has the deadline ``timeout_s``, and the started process (with its
whole session) is SIGKILLed on the way out whatever happened.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Callable

from reprlab.train.rundir import checkpoint_step

POLL_S = 0.01


def _tail(log) -> str:
    log.seek(0)
    return log.read().decode(errors="replace")[-3000:]


def _state(proc: Path) -> str | None:
    """The state letter (R, S, T, Z, ...) of a /proc/<pid> or /proc/<pid>/task/<tid> folder; None when gone."""
    try:
        return (proc / "stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return None


def _gone(pid: int) -> bool:
    return _state(Path(f"/proc/{pid}")) in (None, "Z", "X")


def _stopped(pid: int) -> bool:
    """Every thread of ``pid`` stopped (or gone)."""
    try:
        tasks = list(Path(f"/proc/{pid}/task").iterdir())
    except OSError:
        return True
    return all(_state(t) in (None, "T", "t", "Z", "X") for t in tasks)


def descendant(parent: int, cmdline: bytes = b"", environ: tuple[bytes, ...] = ()) -> int | None:
    """A live descendant of ``parent`` whose command line contains ``cmdline`` and whose
    environment holds every ``NAME=value`` entry of ``environ`` (/proc); None if there is none."""
    procs = {}
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                stat = (d / "stat").read_text().rsplit(")", 1)[1].split()
                env = (d / "environ").read_bytes().split(b"\0") if environ else []
                procs[int(d.name)] = (int(stat[1]), stat[0], (d / "cmdline").read_bytes(), env)
            except (OSError, IndexError, ValueError):
                continue

    def descends(pid: int) -> bool:
        while pid in procs and pid != parent:
            pid = procs[pid][0]
        return pid == parent

    for pid, (_, state, cmd, env) in procs.items():
        if pid != parent and cmdline in cmd and all(e in env for e in environ) and state not in ("Z", "X") and descends(pid):
            return pid
    return None


def _writing(run_dir: Path) -> bool:
    return any(".tmp" in p.name for p in run_dir.rglob("*"))


def _kill_between_writes(pid: int, run_dir: Path, deadline: float) -> None:
    """SIGKILL ``pid`` at a moment when no atomic write of ``run_dir`` is in flight."""
    while True:
        os.kill(pid, signal.SIGSTOP)
        while not _stopped(pid):
            assert time.monotonic() < deadline, f"process {pid} does not stop"
            time.sleep(0.001)
        if not _writing(run_dir):
            os.kill(pid, signal.SIGKILL)  # a stopped process dies of SIGKILL too
            return
        os.kill(pid, signal.SIGCONT)
        assert time.monotonic() < deadline, f"{run_dir} keeps a temporary file"
        time.sleep(0.002)


def _checkpoint_step(path: Path) -> int | None:
    try:
        return checkpoint_step(path)
    except Exception:  # being replaced this moment: the next look sees a whole file
        return None


def kill_after_checkpoint(argv: list[str], env: dict[str, str] | None, last_pt: Path, min_step: int, timeout_s: float, *,
                          victim: Callable[[int], int | None] | None = None, then: Callable[[], bool] | None = None) -> tuple[int | None, int]:
    """Run ``argv`` (in a new session, output to a temporary file); once ``last_pt`` holds a step
    ``>= min_step``, SIGKILL the process (``victim(pid)``: the PID of a descendant of the started
    process to kill instead, None while there is none) and wait until it is gone.

    Then, if ``then`` is given, waits until ``then()`` holds (the started process must not end
    before), and SIGKILLs the started process's whole session. Returns (the started process's
    return code, the step of ``last_pt`` after the kill). ``env``: the child's whole environment
    (None: this process's). Fails, with the command's output, if the process ends before such a
    checkpoint, or at ``timeout_s``.
    """
    last_pt = Path(last_pt)
    deadline = time.monotonic() + timeout_s
    with tempfile.TemporaryFile() as log:
        proc = subprocess.Popen(argv, env=env, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        try:
            while True:
                assert proc.poll() is None, f"exited ({proc.returncode}) before a checkpoint at step >= {min_step}:\n{_tail(log)}"
                assert time.monotonic() < deadline, f"no checkpoint at step >= {min_step} in {timeout_s} s:\n{_tail(log)}"
                step = _checkpoint_step(last_pt)
                pid = (victim(proc.pid) if victim else proc.pid) if step is not None and step >= min_step else None
                if pid:
                    break
                time.sleep(POLL_S)
            _kill_between_writes(pid, last_pt.parent.parent, deadline)
            if pid == proc.pid:
                proc.wait(timeout=max(1.0, deadline - time.monotonic()))
            else:
                while not _gone(pid):
                    assert time.monotonic() < deadline, f"process {pid} does not die"
                    time.sleep(POLL_S)
            step = checkpoint_step(last_pt)  # nothing writes it any more: a whole file
            if then is not None:
                while not then():
                    assert proc.poll() is None, f"exited ({proc.returncode}) early:\n{_tail(log)}"
                    assert time.monotonic() < deadline, f"timed out after the kill:\n{_tail(log)}"
                    time.sleep(POLL_S)
        finally:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)  # the started process and all it started
            proc.wait()
    return proc.returncode, step
