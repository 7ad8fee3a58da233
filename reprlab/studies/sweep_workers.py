"""What the workers of one sweep agree on through its Optuna storage: how far the sweep is, which
asked trial may run (no point twice, the budget in total), and which RUNNING trial lost its worker.

Any number of ``reprlab sweep`` processes, on any number of machines, may share one storage
(:mod:`reprlab.studies.storage`); none of them leads. Everything here is decided from what the
storage holds, by trial number, which the storage hands out uniquely.
"""

from __future__ import annotations

import os
import socket
import time
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from reprlab.io import is_locked, pid_alive
from reprlab.studies.sweep_spec import SweepSpec

HEARTBEAT_S = 60.0  # how often a running trial refreshes its heartbeat attribute
STALE_AFTER_S = 600.0  # a trial of another host without a heartbeat for this long is interrupted
HOST = socket.gethostname()
MAX_DUPLICATES = 30  # proposals in a row that another trial already holds: the space is used up
#: trial user attributes that take a trial out of the sweep's count (it ran nothing)
DISCARDED = ("duplicate_of", "over_budget")


def quiet_optuna():
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)  # one status line per trial is ours
    return optuna


@dataclass
class SweepProgress:
    target: int
    started: bool = False
    complete: int = 0
    pruned: int = 0
    failed: int = 0
    interrupted: int = 0
    running: int = 0
    waiting: int = 0

    @property
    def finished(self) -> int:
        return self.complete + self.pruned + self.failed

    @property
    def done(self) -> bool:
        return self.finished >= self.target and self.running == 0 and self.waiting == 0 and self.complete >= 1

    def describe(self) -> str:
        text = f"{self.finished}/{self.target} trials finished ({self.complete} complete, {self.pruned} pruned, {self.failed} failed)"
        if self.running:
            text += f", {self.running} running or interrupted"
        return text


def progress_of(trials: list, target: int) -> SweepProgress:
    """Count trials; a FAIL that a later trial retries was an interruption, not a result, and a
    trial discarded before it ran (a duplicate, one over the budget) is not counted at all."""
    retried = {t.user_attrs.get("retry_of") for t in trials if "retry_of" in t.user_attrs}
    prog = SweepProgress(target=target, started=bool(trials))
    for t in trials:
        state = t.state.name
        if any(k in t.user_attrs for k in DISCARDED):
            continue
        if state == "FAIL" and t.number in retried:
            prog.interrupted += 1
        elif state in ("COMPLETE", "PRUNED", "FAIL", "RUNNING", "WAITING"):
            attr = {"COMPLETE": "complete", "PRUNED": "pruned", "FAIL": "failed", "RUNNING": "running", "WAITING": "waiting"}[state]
            setattr(prog, attr, getattr(prog, attr) + 1)
    return prog


def requeue(study: Any, number: int, params: dict[str, Any] | None) -> None:
    """Mark an interrupted trial FAIL and queue its parameters again (same directory)."""
    optuna = quiet_optuna()
    if params is not None:
        study.enqueue_trial(params, user_attrs={"retry_of": number})
    study.tell(number, state=optuna.trial.TrialState.FAIL, skip_if_finished=True)


def recover_interrupted(study: Any, out: IO[str]) -> int:
    """Re-queue RUNNING trials whose process is gone (see the module docstring); returns how many."""
    optuna = quiet_optuna()
    now = time.time()
    n = 0
    for t in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,)):
        attrs = t.user_attrs
        if attrs.get("host") == HOST and attrs.get("run_dir"):
            gone = not is_locked(Path(attrs["run_dir"]) / ".trial.lock")
        elif attrs.get("host") == HOST and attrs.get("pid"):  # not started yet: is its worker alive?
            gone = not pid_alive(int(attrs["pid"]))
        else:
            start = t.datetime_start.timestamp() if t.datetime_start else now
            gone = now - float(attrs.get("heartbeat", start)) > STALE_AFTER_S
        # Read the state again, after the check: a worker tells a trial's end before it lets go
        # of the lock, so a free lock on a trial that finished a moment ago is no interruption
        # (re-queuing it would run its point twice).
        if gone and t.number not in {x.number for x in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,))}:
            continue
        if gone and any(k in attrs for k in DISCARDED):  # discarded, its worker died before telling
            study.tell(t.number, state=optuna.trial.TrialState.FAIL, skip_if_finished=True)
        elif gone:
            requeue(study, t.number, dict(t.params) if t.params else None)
            n += 1
            where = Path(attrs["run_dir"]).name if attrs.get("run_dir") else "no directory yet"
            print(f"{time.strftime('%H:%M:%S')} trial {t.number} ({where}) was interrupted; re-queued", file=out, flush=True)
    return n




def admit(study: Any, trial: Any, spec: SweepSpec, target: int, poll_s: float) -> str | None:
    """Whether a freshly asked trial may run: None, else why not ("duplicate" or "budget", after
    discarding it). Several workers ask at once, so this is decided in the storage, by trial number:

    * its parameters are written (suggested) before the other trials are read; a trial holding
      the same parameters with a lower number wins; one with a higher number is waited for until
      it is admitted (this one loses) or discarded (this one wins) -- a higher number never waits
      for a lower one, so nobody waits forever, and two workers never both admit one point;
    * it runs only if fewer than ``target`` counted trials have a lower number, so N workers stop
      at the sweep's budget in total (a discarded trial frees its place for the next ask).
    """
    optuna = quiet_optuna()
    trial.set_user_attr("host", HOST)
    trial.set_user_attr("pid", os.getpid())
    params = {k: p.suggest(trial) for k, p in spec.space.items()}
    while True:
        trials = study.get_trials(deepcopy=False)
        retried = {t.user_attrs.get("retry_of") for t in trials}
        counted = [t for t in trials if not any(k in t.user_attrs for k in DISCARDED) and t.number != trial.number
                   and not (t.number in retried and t.state.name == "FAIL")]  # an interrupted trial: its retry counts
        same = [t for t in counted if t.params == params]
        lower = [t for t in same if t.number < trial.number or t.user_attrs.get("admitted")]
        reason = None
        if lower:
            trial.set_user_attr("duplicate_of", min(t.number for t in lower))
            reason = "duplicate"
        elif sum(1 for t in counted if t.number < trial.number) >= target:
            trial.set_user_attr("over_budget", True)
            reason = "budget"
        elif any(t.state.name == "RUNNING" for t in same):  # a higher number that has not decided yet
            time.sleep(min(poll_s, 0.2))
            continue
        if reason is not None:
            study.tell(trial, state=optuna.trial.TrialState.FAIL)
            return reason
        trial.set_user_attr("admitted", True)
        return None
