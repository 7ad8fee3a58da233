"""``--executor slurm``: each run of a study a SLURM job, submitted through submitit.

The study runner still decides what runs and when (:mod:`reprlab.studies.runner`); this module
only dispatches: a run is submitted once its dependencies are complete, at most ``max_jobs`` in
the queue at once. A job runs the run's ordinary command line (``python -m reprlab CMD ...``)
with its output appended to the run's ``log.txt``, as locally; whether the run *finished* is read
from its ``result.json`` by the runner, never from ``sacct`` (clusters without accounting are
common): ``squeue`` only says when a job has left the queue.

Time limits and preemption (submitit's checkpoint/requeue): SLURM signals the job ``USR2``
``signal_delay_s`` before its limit (or on preemption); submitit calls :meth:`RunCommand.checkpoint`,
which stops the training process and hands back the same command, and requeues the job. The
requeued job re-runs the command, which resumes from the run's ``checkpoints/last.pt`` (the
product's resume), so what is lost is the work since the last ``last.pt``
(``train.checkpoint_every_steps`` bounds it). The training process ignores ``USR2`` (it is the
job's to handle) and dies with the job's Python process.

K devices per run (``--gpus-per-run K``): ``torchrun --standalone`` inside the job; on several
nodes (``--nodes-per-run M``) submitit's ``srun`` starts one task per node and each starts
``torchrun`` with a c10d rendezvous on the first node. On a partition without GPUs (no ``gpu``
GRES) a run is K CPU processes, as ``--executor local`` does on a CPU machine.

Job ids are recorded in ``<study out>/.slurm/jobs.json`` (``study status`` shows each run's job
and its state); submitit's files (the pickled call, the job's own stdout/stderr) are in
``<study out>/.slurm/<job id>/``.
"""

from __future__ import annotations

import getpass
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import IO, Any

from reprlab.errors import ReprlabError
from reprlab.io import atomic_write_json, make_dirs
from reprlab.studies.checks import did_you_mean
from reprlab.studies.process import exit_text, last_line, spawn, terminate, under_torchrun

#: states of a job that has not left the queue (squeue's long names)
ACTIVE = {"PENDING", "RUNNING", "REQUEUED", "REQUEUE_HOLD", "REQUEUE_FED", "CONFIGURING", "COMPLETING",
          "SUSPENDED", "RESIZING", "SIGNALING", "STAGE_OUT", "RESV_DEL_HOLD", "SPECIAL_EXIT"}
RDZV_PORT = 29500  # the c10d rendezvous port on a multi-node run's first node
EXTRA = "pip install 'reprlab[slurm]'"


# ============================================================================================
# Checks before anything is submitted or written
# ============================================================================================


def _tool(name: str, *args: str) -> str:
    """The output of a SLURM client command; its failure as one line."""
    try:
        p = subprocess.run([name, *args], capture_output=True, text=True, timeout=60)
    except OSError as e:
        raise ReprlabError(f"--executor slurm: cannot run {name}: {e.strerror}") from None
    except subprocess.TimeoutExpired:
        raise ReprlabError(f"--executor slurm: `{name} {' '.join(args)}` did not answer in 60 s (is slurmctld reachable?)") from None
    if p.returncode != 0:
        err = (p.stderr.strip().splitlines() or [f"exit {p.returncode}"])[-1]
        raise ReprlabError(f"--executor slurm: `{name} {' '.join(args)}` failed: {err}")
    return p.stdout


def check_slurm(partition: str | None) -> tuple[str, bool]:
    """(the partition to use, whether its nodes have GPUs); one-line errors when SLURM's client
    tools or submitit are missing or the partition is unknown. Runs ``sinfo`` only: nothing is
    submitted or written."""
    if shutil.which("sbatch") is None:
        raise ReprlabError("--executor slurm: sbatch not found on the PATH; run on a SLURM login node (the client tools sbatch, squeue, sinfo, scancel) or use --executor local")
    try:
        import submitit  # noqa: F401
    except ImportError:
        raise ReprlabError(f"--executor slurm needs the submitit package: {EXTRA}") from None
    rows = [r.split("|") for r in _tool("sinfo", "-h", "-o", "%P|%G").split()]
    parts = {p.rstrip("*"): p.endswith("*") for p, _ in rows}
    if partition is None:
        partition = next((p for p, default in parts.items() if default), None)
        if partition is None:
            raise ReprlabError(f"--executor slurm: this cluster has no default partition; pass --partition (sinfo lists: {', '.join(parts) or 'none'})")
    elif partition not in parts:
        raise ReprlabError(f"--partition {partition!r}: no such SLURM partition (sinfo lists: {', '.join(parts) or 'none'}){did_you_mean(partition, parts)}")
    gpus = any("gpu" in gres for p, gres in rows if p.rstrip("*") == partition)
    return partition, gpus


def parse_params(items: list[str] | None) -> dict[str, str]:
    """``--slurm-param key=value`` (repeatable) -> sbatch options (``mem=32G`` -> ``--mem=32G``)."""
    out: dict[str, str] = {}
    for item in items or []:
        key, eq, value = item.partition("=")
        if not eq or not key.strip():
            raise ReprlabError(f"--slurm-param {item!r}: expected key=value, e.g. mem=32G or cpus-per-task=8")
        out[key.strip().lstrip("-").replace("-", "_")] = value
    return out


# ============================================================================================
# Inside the job
# ============================================================================================


def job_argv(argv: list[str], nproc: int, nodes: int, master: str, job_id: str) -> list[str]:
    """The command a job's task runs: ``argv`` under ``torchrun --standalone`` on one node, or
    with a c10d rendezvous on ``master`` (the first node) across ``nodes`` nodes; commands that
    are not data-parallel (sweeps) unchanged."""
    if nodes <= 1:
        return under_torchrun(argv, nproc)
    standalone = under_torchrun(argv, max(nproc, 2))
    if standalone == argv:
        return argv
    i = standalone.index("--standalone")
    rdzv = ["--nnodes", str(nodes), "--rdzv-backend", "c10d", "--rdzv-endpoint", f"{master}:{RDZV_PORT}", "--rdzv-id", job_id]
    return [*standalone[:i], *rdzv, *standalone[i + 1 :]]


class RunCommand:
    """The callable a job runs (pickled by submitit): the run's command line, its output appended
    to the run's log (node 0; ``log-node<i>.txt`` for the others). Checkpointable: on the time
    limit or preemption, :meth:`checkpoint` hands back the same command (which resumes)."""

    def __init__(self, argv: list[str], log: str, nproc: int = 1, nodes: int = 1) -> None:
        self.argv, self.log, self.nproc, self.nodes = argv, log, nproc, nodes
        self._proc: Any = None

    def __getstate__(self) -> dict:
        return {k: v for k, v in self.__dict__.items() if k != "_proc"}

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state, _proc=None)

    def __call__(self) -> int:
        import submitit

        env = submitit.JobEnvironment()
        log = Path(self.log)
        if env.node:
            log = log.with_name(f"{log.stem}-node{env.node}.txt")
        argv = job_argv(self.argv, self.nproc, self.nodes, env.hostnames[0], str(env.job_id))
        self._proc = spawn(argv, log, dict(os.environ), ignore=(signal.SIGUSR2,))
        # poll, not wait(): submitit's signal handler (checkpoint) may stop the process meanwhile,
        # and a wait() interrupted by a handler that waits too would deadlock on Popen's lock
        while (code := self._proc.poll()) is None:
            time.sleep(1.0)
        if code != 0:
            raise ReprlabError(f"{exit_text(code)}: {last_line(log)}  (log {log})")
        return code

    def checkpoint(self) -> Any:
        import submitit

        if self._proc is not None:
            terminate(self._proc, grace_s=30.0)  # its last.pt is on disk; the requeued job resumes from it
        return submitit.helpers.DelayedSubmission(RunCommand(self.argv, self.log, self.nproc, self.nodes))


# ============================================================================================
# The executor
# ============================================================================================


#: states of a job that has left the queue without completing
FAILED = {"FAILED", "CANCELLED", "TIMEOUT", "NODE_FAIL", "OUT_OF_MEMORY", "BOOT_FAIL", "DEADLINE", "PREEMPTED", "REVOKED"}


class SlurmJob:
    """A submitted run: ``poll()`` is None while the job is in the queue (squeue), then 1 when
    SLURM says it failed (FAILED, CANCELLED, TIMEOUT, ...), else 0; on 0 the runner decides from
    the run's result.json whether it is complete."""

    def __init__(self, executor: "SlurmExecutor", job_id: str, log: Path, adopted: bool = False) -> None:
        self.executor, self.job_id, self.log, self.adopted = executor, job_id, log, adopted

    @property
    def state(self) -> str:
        return self.executor.states.get(self.job_id, "ended")

    def poll(self) -> int | None:
        self.executor.refresh()
        st = self.state
        if st in ACTIVE:
            return None
        return 1 if st in FAILED else 0  # COMPLETED, or no longer listed (MinJobAge): result.json decides

    def job_log(self) -> Path:
        return self.executor.folder / self.job_id / f"{self.job_id}_0_log.err"


def queue_states(job_ids: list[str] | None = None) -> dict[str, str]:
    """{job id: state} of this user's jobs that SLURM still knows (squeue, all states)."""
    out = _tool("squeue", "-h", "-r", "--states=all", "-o", "%i|%T", "-u", getpass.getuser())  # -r: one line per array task
    states = dict(line.split("|", 1) for line in out.split() if "|" in line)
    return {j: s for j, s in states.items() if job_ids is None or j in job_ids}


def cancel(job_ids: list[str]) -> None:
    if job_ids:
        _tool("scancel", *job_ids)


class SlurmExecutor:
    """``--executor slurm``: one SLURM job per run, at most ``max_jobs`` in the queue. Build it
    with :func:`check_slurm`'s partition (the checks run before anything is written)."""

    def __init__(self, out_dir: Path, partition: str, gpus: bool, gpus_per_run: int = 1, nodes_per_run: int = 1, timeout_min: int = 60,
                 account: str | None = None, qos: str | None = None, constraint: str | None = None, params: dict[str, str] | None = None,
                 max_jobs: int = 8, poll_s: float = 1.0, signal_delay_s: int = 90) -> None:
        for flag, value in (("--max-jobs", max_jobs), ("--gpus-per-run", gpus_per_run), ("--nodes-per-run", nodes_per_run), ("--timeout-min", timeout_min)):
            if value < 1:
                raise ReprlabError(f"{flag} must be >= 1, got {value}")
        self.folder = Path(out_dir) / ".slurm"
        self.record = self.folder / "jobs.json"
        self.slots, self.gpus_per_run, self.nodes, self.poll_s = max_jobs, gpus_per_run, nodes_per_run, poll_s
        self.states: dict[str, str] = {}
        self._polled = 0.0
        self._warned = False
        opts: dict[str, Any] = dict(partition=partition, time=timeout_min, nodes=nodes_per_run, ntasks_per_node=1,
                                    signal_delay_s=min(signal_delay_s, timeout_min * 30), account=account, qos=qos, constraint=constraint)
        if gpus:
            opts["gpus_per_node"] = gpus_per_run
        else:
            opts["cpus_per_task"] = gpus_per_run  # K gloo processes
        self.options = {k: v for k, v in opts.items() if v is not None}
        self.params = params or {}
        self.where_text = f"partition {partition}" + (f", {gpus_per_run} GPU(s)" if gpus else f", {gpus_per_run} CPU process(es)") + (f" x {nodes_per_run} nodes" if nodes_per_run > 1 else "")
        self._submitit: Any = None

    def _executor(self) -> Any:
        if self._submitit is None:
            import submitit

            make_dirs(self.folder)
            ex = submitit.SlurmExecutor(folder=self.folder / "%j", max_num_timeout=100)
            known = {k: v for k, v in self.params.items() if k in ex._valid_parameters()}
            extra = {k.replace("_", "-"): v for k, v in self.params.items() if k not in known}
            ex.update_parameters(**self.options, **known, **({"additional_parameters": extra} if extra else {}))
            self._submitit = ex
        return self._submitit

    def start(self, argv: list[str], log: Path, slot: int) -> SlurmJob:
        # a job of this run still in the queue (its runner was killed, or lost its terminal):
        # follow it rather than submit a second one that would race it for the run's lock
        rec = read_jobs(self.folder.parent).get(str(log.relative_to(self.folder.parent)))
        if rec and queue_states().get(rec["job"]) in ACTIVE:
            self.states[rec["job"]] = "PENDING"
            return SlurmJob(self, rec["job"], log, adopted=True)
        ex = self._executor()
        ex.update_parameters(job_name=f"reprlab:{log.parent.name}")
        make_dirs(log.parent)
        try:
            job = ex.submit(RunCommand(argv, str(log), self.gpus_per_run, self.nodes))
        except Exception as e:  # submitit wraps sbatch's failure (bad option, refused account) in its own errors
            lines = [ln for ln in str(e).splitlines() if ln.strip()]
            raise ReprlabError(f"--executor slurm: sbatch refused the job of {log.parent.name}: {lines[-1] if lines else type(e).__name__}") from None
        self.states[job.job_id] = "PENDING"
        self._remember(log, job.job_id)
        return SlurmJob(self, job.job_id, log)

    def start_array(self, argv: list[str], logs: list[Path], name: str) -> list[SlurmJob]:
        """The same command as one SLURM job array, one task per log (sweep workers)."""
        ex = self._executor()
        ex.update_parameters(job_name=f"reprlab:{name}")
        for log in logs:
            make_dirs(log.parent)
        try:
            with ex.batch():
                jobs = [ex.submit(RunCommand(argv, str(log), self.gpus_per_run, self.nodes)) for log in logs]
        except Exception as e:  # as in start()
            lines = [ln for ln in str(e).splitlines() if ln.strip()]
            raise ReprlabError(f"--executor slurm: sbatch refused the job array of {name}: {lines[-1] if lines else type(e).__name__}") from None
        out = []
        for job, log in zip(jobs, logs):
            self.states[job.job_id] = "PENDING"
            self._remember(log, job.job_id)
            out.append(SlurmJob(self, job.job_id, log))
        return out

    def _remember(self, log: Path, job_id: str) -> None:
        jobs = read_jobs(self.folder.parent)
        jobs[str(log.relative_to(self.folder.parent))] = {"job": job_id, "submitted": time.strftime("%Y-%m-%d %H:%M:%S")}
        atomic_write_json(self.record, jobs)

    def refresh(self, force: bool = False) -> None:
        """One squeue for all jobs, at most every ``poll_s`` (one light query a second, whatever the
        number of jobs); a job SLURM no longer lists has ended."""
        if not force and time.monotonic() - self._polled < self.poll_s:
            return
        self._polled = time.monotonic()
        try:
            now = queue_states()
        except ReprlabError as e:  # a busy or restarting controller: keep the last states
            if not self._warned:
                print(f"reprlab: warning: {e}; retrying", file=sys.stderr, flush=True)
            self._warned = True
            return
        self._warned = False
        self.states = {j: now.get(j, "ended") for j in self.states}

    def where(self, slot: int, handle: SlurmJob) -> str:
        return f"SLURM job {handle.job_id} ({'already in the queue: followed, not resubmitted' if handle.adopted else self.where_text})"

    def failure(self, handle: SlurmJob, code: int, log: Path) -> str:
        line = last_line(log) if log.is_file() else last_line(handle.job_log())
        return f"SLURM job {handle.job_id} {handle.state}: {line}  (log {log}; job log {handle.job_log()})"

    def interrupt(self, handles: list[SlurmJob], out: IO[str]) -> None:
        ids = [h.job_id for h in handles if h.state in ACTIVE]
        if not ids:
            print("reprlab: interrupted; no SLURM job of this study was in the queue", file=out, flush=True)
            return
        cancel(ids)
        # scancel only asks: wait (up to 15 s) until squeue no longer shows the jobs pending or
        # running, so the line below says what is really left
        deadline = time.monotonic() + 15
        while True:
            time.sleep(0.5)
            self.refresh(force=True)
            left = [j for j in ids if self.states.get(j) in ACTIVE - {"COMPLETING"}]
            if not left or time.monotonic() > deadline:
                break
        print(f"reprlab: interrupted; cancelled SLURM job(s) {', '.join(ids)}" + (f"; still in the queue: {', '.join(left)} (scancel them)" if left else "; none left running"),
              file=out, flush=True)

    def close(self) -> None:
        pass


def read_jobs(out_dir: Path) -> dict[str, dict]:
    """``<out>/.slurm/jobs.json``: {run log path relative to out: {"job": id, "submitted": time}}."""
    path = Path(out_dir) / ".slurm" / "jobs.json"
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as e:
        raise ReprlabError(f"{path}: unreadable record of SLURM jobs ({e}); remove it to start afresh") from None


def job_notes(out_dir: Path) -> dict[str, str]:
    """For ``study status``: {run name: "SLURM job ID STATE"} of the runs submitted to SLURM (the
    state from squeue when it is on the PATH; "ended" once SLURM no longer lists the job)."""
    jobs = read_jobs(out_dir)
    if not jobs:
        return {}
    states: dict[str, str] | None = None
    if shutil.which("squeue"):
        try:
            states = queue_states()
        except ReprlabError:
            states = None
    notes = {}
    for log, rec in jobs.items():
        run = Path(log).parent.name
        state = "(squeue unavailable)" if states is None else states.get(rec["job"], "ended")
        notes[run] = f"SLURM job {rec['job']} {state}"
    return notes


def follow(executor: SlurmExecutor, jobs: list[SlurmJob], out: IO[str]) -> list[SlurmJob]:
    """Wait until every job has left the queue, saying when each starts and ends; Ctrl-C cancels
    those still in the queue (and says so). The jobs that did not end COMPLETED."""
    said: dict[str, str] = {}
    try:
        while True:
            codes = [j.poll() for j in jobs]
            for j, code in zip(jobs, codes):
                word = "running" if j.state == "RUNNING" else ("ended" if code is not None else None)
                if word and said.get(j.job_id) != word:
                    said[j.job_id] = word
                    end = f" ({j.state}; log {j.log})" if word == "ended" else ""
                    print(f"{time.strftime('%H:%M:%S')} SLURM job {j.job_id} {word}{end}", file=out, flush=True)
            if all(c is not None for c in codes):
                return [j for j, c in zip(jobs, codes) if c != 0]
            time.sleep(executor.poll_s)
    except KeyboardInterrupt:
        executor.interrupt(jobs, out)
        raise


def sweep_storage_check(storage: str | None, workers: int) -> None:
    """Several sweep workers on several machines need a storage made for it: refuse SQLite."""
    if workers > 1 and (storage is None or storage.startswith("sqlite")):
        what = "the default storage (SQLite in the sweep's folder)" if storage is None else f"--storage {storage} (SQLite)"
        raise ReprlabError(
            f"--workers {workers} on SLURM: {what} locks or corrupts with several writers on a network file system; "
            "pass --storage postgresql://USER@HOST/DB (pip install 'reprlab[postgres]') or --storage journal:///shared/path/sweep.log"
        )
