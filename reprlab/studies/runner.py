"""The study runner: the state of every expanded run on disk, ``--dry-run`` and ``status``, and
the scheduler that executes a study (:mod:`reprlab.studies.spec`) as a DAG of child processes.

Execution (``reprlab study run``)
    Each run is a child process ``python -m reprlab <command> --config ... <overrides>
    run.out_dir=... run.name=...``, so the run's own skip / resume / lock logic applies and a
    crash of one run never takes the runner down. Its output is appended to ``<run dir>/log.txt``.
    Complete runs are skipped without starting a process; interrupted ones resume from
    ``checkpoints/last.pt``. A run whose directory holds results or a checkpoint of another config
    than the study would run now (an edited override, a different best_of parameter) is *stale*:
    ``--dry-run`` and ``study status`` show it with the differing keys, and ``study run`` refuses to
    start until ``--rerun`` (which starts each stale run with ``--rerun``, replacing it). The
    comparison is the run's own (``reprlab.train.rundir.config_differences``) on the config its
    command line resolves to (:func:`node_config`). A failed last attempt (result.json with
    ``status = "failed"``) is shown with its error line. The runner holds ``<out_dir>/.study.lock`` so two runners of one
    study never interleave, and children die with the runner (Linux ``PR_SET_PDEATHSIG``), so
    killing the runner at any moment leaves only resumable run directories behind.

``--only PATTERN`` (fnmatch on expanded names) *refuses* to start when a selected run depends on
an incomplete run that is not selected: silently launching a 1000-epoch pretraining because a
probe was asked for would be a bad surprise; ``--dry-run`` shows such runs as blocked.
"""

from __future__ import annotations

import fnmatch
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, Callable

from reprlab.errors import ReprlabError
from reprlab.io import FileLock, atomic_write_text, make_dirs
from reprlab.studies.checks import did_you_mean
from reprlab.studies.executors import Executor, LocalExecutor, worker_envs  # noqa: F401 (worker_envs: the runner's API)
from reprlab.studies.process import display, reprlab_argv, under_torchrun
from reprlab.studies.results import accuracy_text, best_trial, read_complete, read_failure
from reprlab.studies.spec import Node, Study, run_argv
from reprlab.studies.sweep import best_in_storage, sweep_progress

POLL_S = 0.2  # how often the runner looks at its children


# ============================================================================================
# State of a run on disk
# ============================================================================================


@dataclass
class NodeState:
    status: str  # "complete" | "stale" | "resume" | "new"
    detail: str = ""
    holds: str = ""  # stale: what the directory holds ("a complete run", "a partial run (...)")
    of: str = "of another config"  # stale: what the holdings are of (a stale input: "" -- the detail says it)


def node_config(study: Study, node: Node, best: dict[str, Any] | None = None):
    """The resolved config a run's command line would record: the child's own resolution
    (``Study.resolve``, as for ``--print-config``), run in this process."""
    if study.resolve is None:
        raise ReprlabError(f"study {study.name!r} was loaded without a config resolver (Study.resolve): cannot compare run {node.name!r} with its directory")
    return study.resolve(run_argv(study, node, None, best)[3:])  # without `python -m reprlab`


def _stale(study: Study, node: Node, holds: str) -> NodeState | None:
    """NodeState("stale") when the run directory's config.toml differs from what the study would
    run now; None when it agrees (or cannot be known yet: a best_of run before its sweep ends)."""
    from reprlab.inputs import describe_input_differences, input_differences, input_identities, read_inputs
    from reprlab.train.rundir import config_differences, describe_differences, read_config

    recorded = read_config(study.run_dir(node))
    if recorded is None:
        return None
    best = None
    if node.spec.best_of is not None:
        sweep = study.nodes[node.spec.best_of].spec
        if not sweep_progress(sweep, study.out_dir, study.storage).done:
            return None
        best = best_params(study, node)
    cfg = node_config(study, node, best)
    diff = config_differences(recorded, cfg)
    if diff:
        return NodeState("stale", describe_differences(diff), holds)
    changed = input_differences(read_inputs(study.run_dir(node)), input_identities(cfg))
    return NodeState("stale", f"made from another input: {describe_input_differences(changed)}", holds, "") if changed else None


def study_states(study: Study) -> dict[str, NodeState]:
    """The state of every run, in dependency order; a run that holds results and depends on a
    run that will run again (stale, new, to resume) is stale too: what it was made from is
    about to change (its recorded input identity would not catch it until then)."""
    states: dict[str, NodeState] = {}
    for name, node in study.nodes.items():
        st = node_state(study, node)
        redo = [d for d in node.deps if study.nodes[d].kind != "sweep" and states[d].status != "complete"]
        if redo and st.status in ("complete", "resume") and node.kind != "sweep":
            from reprlab.train.rundir import RunDir

            holds = RunDir(study.run_dir(node)).holds()
            if holds:
                st = NodeState("stale", f"its input {redo[0]} will run again ({states[redo[0]].status})", holds, "")
        states[name] = st
    return states


def node_state(study: Study, node: Node) -> NodeState:
    if node.kind == "sweep":
        prog = sweep_progress(node.spec, study.out_dir, study.storage)
        if prog.done:
            return NodeState("complete", prog.describe())
        return NodeState("resume" if prog.started else "new", prog.describe())
    from reprlab.train.rundir import RunDir, checkpoint_step

    run_dir = study.run_dir(node)
    holds = RunDir(run_dir).holds()
    if holds:  # a complete or partial run: only if its config is the one the study runs now
        stale = _stale(study, node, holds)
        if stale is not None:
            return stale
    result = read_complete(run_dir)
    if result is not None:
        return NodeState("complete", accuracy_text(result))
    failed = read_failure(run_dir)
    note = f"last attempt failed: {failed}" if failed else ""
    last = run_dir / "checkpoints" / "last.pt"
    if last.is_file():
        try:
            return NodeState("resume", f"from step {checkpoint_step(last)}" + (f"; {note}" if note else ""))
        except ReprlabError as e:
            return NodeState("resume", f"but {e}")
    if (run_dir / "features.pt").is_file():
        return NodeState("resume", "from cached features" + (f"; {note}" if note else ""))
    return NodeState("new", note)


def best_params(study: Study, node: Node) -> dict[str, Any] | None:
    if node.best_of is None:
        return None
    sweep = study.nodes[node.best_of].spec
    # a shared storage (workers on several machines) knows trials whose directories are elsewhere
    shared = best_in_storage(sweep, study.out_dir, study.storage)
    return shared if shared is not None else best_trial(study.out_dir, sweep.name, sweep.metric)


# ============================================================================================
# Selection (--only)
# ============================================================================================


def select(study: Study, patterns: list[str] | None) -> list[str]:
    if not patterns:
        return list(study.nodes)
    chosen = [n for n in study.nodes if any(fnmatch.fnmatchcase(n, p) for p in patterns)]
    for p in patterns:
        if not any(fnmatch.fnmatchcase(n, p) for n in study.nodes):
            raise ReprlabError(f"--only {p!r} matches no run of study {study.name!r}{did_you_mean(p, study.nodes)}")
    return chosen


def missing_deps(study: Study, chosen: list[str], states: dict[str, NodeState]) -> dict[str, list[str]]:
    """Selected runs -> their incomplete dependencies that are not selected."""
    out: dict[str, list[str]] = {}
    for name in chosen:
        for d in study.nodes[name].deps:
            if d not in chosen and states[d].status != "complete":
                out.setdefault(name, []).append(d)
    return out


# ============================================================================================
# Dry run
# ============================================================================================


def _reason(study: Study, node: Node, st: NodeState, states: dict[str, NodeState], blocked: dict[str, list[str]]) -> str:
    """What would happen to ``node``, in words (the status column of --dry-run and status)."""
    reason = {"complete": "complete: skip", "resume": f"resume {st.detail}", "new": "new", "stale": f"stale: {st.detail}"}[st.status]
    if st.status == "complete" and st.detail:
        reason += f" ({st.detail})"
    if st.status == "new" and st.detail:
        reason += f" ({st.detail})"
    if st.status == "stale":
        reason += f" (holds {st.holds}{' ' + st.of if st.of else ''}; `study run --rerun` replaces it)"
    if node.kind == "sweep" and st.status != "complete":
        reason = f"{'resume' if st.status == 'resume' else 'new'} sweep: {st.detail}"
    waits = [d for d in node.deps if states[d].status != "complete"]
    if node.name in blocked:
        reason += f"; BLOCKED: needs {', '.join(blocked[node.name])} (incomplete, not selected by --only)"
    elif waits and st.status != "complete":
        reason += f"; waits for {', '.join(waits)}"
    return reason


def _summary(chosen: list[str], states: dict[str, NodeState], total: int) -> str:
    counts = {"complete": 0, "resume": 0, "new": 0, "stale": 0}
    for n in chosen:
        counts[states[n].status] += 1
    return f"{len(chosen)} of {total} runs selected: {counts['complete']} complete, {counts['resume']} to resume, {counts['new']} new, {counts['stale']} stale"


def dry_run(study: Study, only: list[str] | None = None, data_root: str | None = None, out: IO[str] = sys.stdout, gpus_per_run: int = 1) -> int:
    """Print every expanded run in execution order, its command line and what would happen."""
    chosen = select(study, only)
    states = study_states(study)
    blocked = missing_deps(study, chosen, states)
    est = f", est. {study.gpu_hours:g} GPU-hours in all" if study.gpu_hours is not None else ""
    print(f"study {study.name!r} ({study.path}) -> {study.out_dir}{est}", file=out)
    print(_summary(chosen, states, len(study.nodes)), file=out)
    width = max(len(n) for n in chosen) if chosen else 0
    for i, name in enumerate(chosen, 1):
        node, st = study.nodes[name], states[name]
        reason = _reason(study, node, st, states, blocked)
        best = None
        if node.best_of is not None and states[node.best_of].status == "complete":
            best = best_params(study, node)
        argv = run_argv(study, node, data_root, best)
        if st.status == "stale":
            argv.insert(len(reprlab_argv(data_root, node.spec.command)), "--rerun")  # what `study run --rerun` starts
        line = display(under_torchrun(argv, gpus_per_run))
        if node.best_of is not None and best is None:
            line += f"  <+ best parameters of {node.best_of}>"
        print(f"{i:3d}. {name:<{width}}  {reason}", file=out)
        print(f"       {line}", file=out)
    return 0


def status(study: Study, only: list[str] | None = None, out: IO[str] | None = None, notes: dict[str, str] | None = None) -> int:
    """One line per expanded run: complete (with its accuracy), stale, to resume, new, and its
    ``notes`` entry (an executor's word on it: its SLURM job and state); starts nothing."""
    out = out or sys.stdout
    chosen = select(study, only)
    states = study_states(study)
    blocked = missing_deps(study, chosen, states)
    print(f"study {study.name!r} -> {study.out_dir}: {_summary(chosen, states, len(study.nodes))}", file=out)
    width = max(len(n) for n in chosen) if chosen else 0
    for name in chosen:
        note = (notes or {}).get(name)
        print(f"{name:<{width}}  {_reason(study, study.nodes[name], states[name], states, blocked)}{f'; {note}' if note else ''}", file=out)
    return 0


# ============================================================================================
# The runner
# ============================================================================================


def _fmt_time(seconds: float) -> str:
    m, s = divmod(int(seconds), 60)
    h, m = divmod(m, 60)
    return f"{h}h{m:02d}m" if h else f"{m}m{s:02d}s"


@dataclass
class _Job:
    node: Node
    proc: Any
    slot: int
    started: float
    replica: int = 0


def check_parallelism(workers: int, gpus_per_run: int) -> None:
    """``--workers`` and ``--gpus-per-run``, refused alike by ``study run`` and its ``--dry-run``."""
    if workers < 1:
        raise ReprlabError(f"--workers must be >= 1, got {workers}")
    if gpus_per_run < 1:
        raise ReprlabError(f"--gpus-per-run must be >= 1, got {gpus_per_run}")


def run_study(
    study: Study,
    workers: int = 1,
    gpus_per_run: int = 1,
    only: list[str] | None = None,
    data_root: str | None = None,
    out: IO[str] = sys.stdout,
    executor: Executor | Callable[[list[str], Path, dict[str, str]], Any] | None = None,
    rerun: bool = False,
) -> int:
    """Run every selected run in dependency order; 0 when all are complete, 1 otherwise.

    A failed run does not stop the others: runs that do not depend on it go on; its dependents
    are reported as blocked, and the exit status lists both. ``executor`` dispatches the runs
    (:mod:`reprlab.studies.executors`: default a :class:`LocalExecutor` of ``workers`` slots);
    a plain function ``executor(argv, log, env)`` is the local one's way to start a process
    (tests inject a fake).

    A *stale* run (its directory holds results or a checkpoint of another config than the study
    would run now) is never skipped as complete: without ``rerun`` the study refuses to start,
    naming them; with ``rerun`` each stale run is started with ``--rerun``, which replaces it.
    """
    check_parallelism(workers, gpus_per_run)
    chosen = select(study, only)
    states = study_states(study)
    stale = [n for n in chosen if states[n].status == "stale"]
    if stale and not rerun:
        more = f", {', '.join(stale[1:4])}{', ...' if len(stale) > 4 else ''}" if len(stale) > 1 else ""
        raise ReprlabError(
            f"study {study.name!r}: {len(stale)} run(s) hold results of another config or input: {stale[0]} ({states[stale[0]].detail}){more}; "
            "pass --rerun to replace them (or leave them out with --only); `reprlab study status` lists them"
        )
    blocked_by_only = missing_deps(study, chosen, states)
    if blocked_by_only:
        first, deps = next(iter(blocked_by_only.items()))
        raise ReprlabError(
            f"--only: {first!r} needs {', '.join(repr(d) for d in deps)}, which is incomplete and not selected "
            f"({len(blocked_by_only)} run(s) affected); select it too or drop --only (see --dry-run)"
        )
    if executor is None or not hasattr(executor, "start"):
        executor = LocalExecutor(workers, gpus_per_run, executor)
    make_dirs(study.out_dir)
    with FileLock(study.out_dir / ".study.lock", f"study directory {study.out_dir}"):
        atomic_write_text(study.out_dir / "study.toml", study.path.read_text())  # what produced this folder
        try:
            return _Scheduler(study, chosen, data_root, out, executor).run()
        finally:
            executor.close()


class _Scheduler:
    """One execution of a study: start each selected run when its dependencies are done, on a
    free slot of the executor, and settle it (done or failed) when its processes have exited."""

    def __init__(self, study: Study, chosen: list[str], data_root: str | None, out: IO[str], executor: Executor) -> None:
        self.study, self.chosen, self.data_root, self.out = study, chosen, data_root, out
        self.executor, self.workers = executor, executor.slots
        self.status: dict[str, str] = {n: "pending" for n in chosen}  # pending | running | done | failed | blocked
        self.reasons: dict[str, str] = {}
        # a sweep may run as several processes sharing one Optuna storage (``parallel``)
        self.replicas = {n: study.nodes[n].replicas for n in chosen}
        self.launched: dict[str, int] = {n: 0 for n in chosen}
        self.active: dict[str, int] = {n: 0 for n in chosen}
        self.running: dict[int, _Job] = {}  # by worker slot
        self.starts: dict[str, float] = {}
        self.t0 = time.monotonic()

    def say(self, word: str, name: str, text: str = "") -> None:
        finished = sum(1 for v in self.status.values() if v in ("done", "failed", "blocked"))
        print(f"{time.strftime('%H:%M:%S')} [{finished}/{len(self.chosen)}] {word:<8} {name}{('  ' + text) if text else ''}", file=self.out, flush=True)

    def log_of(self, node: Node, replica: int) -> Path:
        return self.study.log_path(node) if replica == 0 else self.study.run_dir(node) / f"log-{replica + 1}.txt"

    def launch(self, node: Node, st: NodeState) -> None:
        study, data_root = self.study, self.data_root
        slot = next(s for s in range(self.workers) if s not in self.running)
        replica = self.launched[node.name]
        argv = run_argv(study, node, data_root, best_params(study, node))
        if st.status == "stale":  # run_study refused stale runs unless --rerun was given
            argv.insert(len(reprlab_argv(data_root, node.spec.command)), "--rerun")
        log = self.log_of(node, replica)
        proc = self.executor.start(argv, log, slot)  # each train/pretrain/finetune/probe on its K devices
        self.running[slot] = _Job(node, proc, slot, time.monotonic(), replica)
        self.launched[node.name] += 1
        self.active[node.name] += 1
        self.status[node.name] = "running"
        where = self.executor.where(slot, proc)
        word = {"resume": "resume", "stale": "rerun"}.get(st.status, "start")
        detail = f"{st.detail}; " if st.detail else ""
        n = self.replicas[node.name]
        self.say(word, node.name + (f" (process {replica + 1}/{n})" if n > 1 else ""), f"{detail}{where}; log {log}")

    def settle(self, name: str) -> None:
        """All processes of ``name`` have exited: decide done or failed."""
        if name in self.reasons:
            self.status[name] = "failed"
            self.say("FAILED", name, self.reasons[name])
            return
        st = node_state(self.study, self.study.nodes[name])
        if st.status == "complete":
            self.status[name] = "done"
            self.say("done", name, f"{st.detail}  ({_fmt_time(time.monotonic() - self.starts[name])})")
        else:
            self.status[name] = "failed"
            self.reasons[name] = f"exited 0 but is not complete ({st.detail or st.status})"
            self.say("FAILED", name, self.reasons[name])

    def visit_running(self, name: str) -> None:
        """A running node: start another process of a parallel sweep if a slot is free and work
        is left; settle it once none is active and no more will start."""
        node = self.study.nodes[name]
        if self.launched[name] < self.replicas[name] and len(self.running) < self.workers:
            prog = sweep_progress(node.spec, self.study.out_dir, self.study.storage)
            if prog.finished + prog.running >= prog.target:
                self.launched[name] = self.replicas[name]  # the processes running now cover what is left
            elif prog.started:  # only once the first process has created the storage
                self.launch(node, NodeState("resume", prog.describe()))
        if self.active[name] == 0 and self.launched[name] == self.replicas[name]:
            self.settle(name)

    def visit_pending(self, name: str) -> None:
        """A pending node: blocked by a failed dependency, skipped if complete, else started when
        its dependencies are done and a slot is free."""
        node = self.study.nodes[name]
        # a dependency that is not selected is complete: missing_deps() made sure of it
        dstates = [self.status.get(d, "done") for d in node.deps]
        bad = [d for d, s in zip(node.deps, dstates) if s in ("failed", "blocked")]
        if bad:
            self.status[name] = "blocked"
            self.reasons[name] = f"needs {', '.join(bad)}"
            self.say("blocked", name, self.reasons[name])
            return
        if any(s != "done" for s in dstates) or len(self.running) == self.workers:
            return
        st = node_state(self.study, node)
        if st.status == "complete":
            self.status[name] = "done"
            self.say("skip", name, f"complete ({st.detail})" if st.detail else "complete")
            return
        self.starts[name] = time.monotonic()
        self.launch(node, st)

    def reap(self) -> None:
        """Collect the processes that have exited."""
        for slot, job in list(self.running.items()):
            code = job.proc.poll()
            if code is None:
                continue
            del self.running[slot]
            name = job.node.name
            self.active[name] -= 1
            if code != 0:
                log = self.log_of(job.node, job.replica)
                self.reasons.setdefault(name, self.executor.failure(job.proc, code, log))
                self.launched[name] = self.replicas[name]  # no more processes for a failing node
            elif self.active[name] == 0 and self.launched[name] < self.replicas[name] and node_state(self.study, job.node).status == "complete":
                self.launched[name] = self.replicas[name]
            if self.active[name] == 0 and self.launched[name] == self.replicas[name]:
                self.settle(name)

    def run(self) -> int:
        try:
            while True:
                for name in self.chosen:
                    if self.status[name] == "running":
                        self.visit_running(name)
                    elif self.status[name] == "pending":
                        self.visit_pending(name)
                if not self.running:
                    break
                time.sleep(POLL_S)
                self.reap()
        except KeyboardInterrupt:
            self.executor.interrupt([job.proc for job in self.running.values()], self.out)
            raise
        return self.summary()

    def summary(self) -> int:
        """Print the outcome; 0 when every selected run is complete, else 1 (failed and blocked
        runs named on stderr)."""
        chosen, status, reasons, study = self.chosen, self.status, self.reasons, self.study
        failed = [n for n in chosen if status[n] == "failed"]
        blocked = [n for n in chosen if status[n] == "blocked"]
        done = sum(1 for n in chosen if status[n] == "done")
        print(f"study {study.name!r}: {done} of {len(chosen)} complete in {_fmt_time(time.monotonic() - self.t0)}; results under {study.out_dir}", file=self.out, flush=True)
        if failed or blocked:
            parts = []
            if failed:
                parts.append(f"{len(failed)} failed: " + "; ".join(f"{n} ({reasons[n]})" for n in failed))
            if blocked:
                parts.append(f"{len(blocked)} blocked: {', '.join(blocked)}")
            print(f"reprlab: error: study {study.name!r}: " + " | ".join(parts) + "; fix and re-run the same command to continue", file=sys.stderr, flush=True)
            return 1
        return 0
