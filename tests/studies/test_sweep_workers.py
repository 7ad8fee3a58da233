"""Several workers on one sweep through a shared storage (PostgreSQL, a journal file), each a
separate process started at the same moment on an empty storage (tests/sweep_worker.py: the real
sweep code with a fake trial executor); a worker SIGKILLed mid-trial; and the one-line errors of
bad storages. The same through real training runs is tests/studies/test_sweep_storage.py."""

from __future__ import annotations

import collections
import os
import signal
import time

import pytest

from helpers_postgres import kill_all, postgres_server, postgres_url, release, start_workers, wait_all  # noqa: F401 -- fixtures
from reprlab.studies.results import trial_dir_name
from reprlab.studies.storage import open_storage, parse_storage
from reprlab.studies.sweep_workers import DISCARDED

CONFIG = "configs/supervised/resnet18_scratch.toml"
#: a continuous space (TPE: workers must not draw the same points) and a 3 x 3 grid of choices
#: from which 8 trials are asked (TPE proposes points twice: workers must not run one twice)
CONTINUOUS = {"optim.lr": {"low": 1e-4, "high": 1e-1, "log": True}, "optim.weight_decay": {"low": 1e-5, "high": 1e-2, "log": True}}
CHOICES = {"optim.lr": [0.1, 0.2, 0.3], "optim.weight_decay": [0.001, 0.002, 0.003]}


def _job(tmp_path, storage, space, trials=8):
    table = {"name": "search", "command": "train", "config": CONFIG, "sampler": "tpe", "trials": trials, "pruner": "none", "space": space}
    return {"table": table, "out": str(tmp_path / "out"), "storage": storage, "poll_s": 0.05, "record": str(tmp_path / "record.txt")}


def _storage(kind, tmp_path, request):
    if kind == "postgres":
        return request.getfixturevalue("postgres_url")
    return f"journal://{tmp_path / 'sweep.log'}"  # tmp_path is absolute: journal:///tmp/...


def _trials(storage):
    import optuna

    return optuna.load_study(study_name="search", storage=open_storage(parse_storage(storage))).get_trials()


def _record(tmp_path):
    lines = (tmp_path / "record.txt").read_text().split("\n")
    return [tuple(ln.split(" ", 1)) for ln in lines if ln]


def _check_sweep(tmp_path, storage, trials, retried=0):
    """The budget met exactly by distinct points, each trial directory trained once (an
    interrupted one: once more, resuming); returns the per-directory count of trainings."""
    all_trials = _trials(storage)
    kept = [t for t in all_trials if not any(k in t.user_attrs for k in DISCARDED)]
    complete = [t for t in kept if t.state.name == "COMPLETE"]
    assert len(complete) == trials, [(t.number, t.state.name, t.user_attrs) for t in all_trials]
    points = [tuple(sorted(t.params.items())) for t in complete]
    assert len(set(points)) == trials, [(t.number, t.state.name, t.params, t.user_attrs) for t in all_trials]
    interrupted = [t for t in kept if t.state.name == "FAIL"]
    assert len(interrupted) == retried and all(any(r.user_attrs.get("retry_of") == t.number for r in complete) for t in interrupted)
    assert not [t for t in all_trials if t.state.name == "RUNNING" or t.state.name == "WAITING"]
    trained = collections.Counter(d for _, d in _record(tmp_path))
    dirs = {str(tmp_path / "out" / "search" / trial_dir_name(t.params)) for t in complete}
    assert set(trained) == dirs
    assert sorted(os.listdir(tmp_path / "out" / "search")) == sorted(os.path.basename(d) for d in dirs)
    return trained


@pytest.mark.services
@pytest.mark.timeout(90)
@pytest.mark.parametrize("kind", ["postgres", "journal"])
@pytest.mark.parametrize("workers, space", [(2, CONTINUOUS), (4, CHOICES)], ids=["2-workers", "4-workers-choices"])
def test_workers_started_at_once_on_an_empty_storage_share_the_budget(kind, workers, space, tmp_path, request):
    storage = _storage(kind, tmp_path, request)
    procs = start_workers(workers, _job(tmp_path, storage, space), tmp_path)
    try:
        release(procs, tmp_path)
        codes = wait_all(procs, timeout_s=75)
    finally:
        kill_all(procs)
    logs = [(tmp_path / f"worker-{i}.txt").read_text() for i in range(workers)]
    assert codes == [0] * workers, logs
    trained = _check_sweep(tmp_path, storage, 8)
    assert set(trained.values()) == {1}  # no trial directory trained twice
    assert len({pid for pid, _ in _record(tmp_path)}) >= 2  # the work was shared
    # every worker returns with the whole sweep finished; none took a finished trial for a dead one
    assert all("8/8 trials finished (8 complete" in log and "interrupted" not in log for log in logs), logs


@pytest.mark.services
@pytest.mark.timeout(90)
@pytest.mark.parametrize("kind", ["postgres", "journal"])
def test_a_worker_killed_mid_trial_is_retried_and_the_budget_still_met(kind, tmp_path, request):
    storage = _storage(kind, tmp_path, request)
    # worker 0 is slow (0.5 s per epoch): it is killed in its first trial; worker 1 is fast
    procs = start_workers(2, _job(tmp_path, storage, CONTINUOUS, trials=4), tmp_path, poll_s=[0.5, 0.05])
    try:
        release(procs, tmp_path)
        victim = procs[0]
        deadline = time.monotonic() + 60
        while not any(pid == str(victim.pid) for pid, _ in (_record(tmp_path) if (tmp_path / "record.txt").exists() else [])):
            assert time.monotonic() < deadline and victim.poll() is None, "the slow worker never started a trial"
            time.sleep(0.01)
        os.killpg(victim.pid, signal.SIGKILL)  # mid-trial: its trial is RUNNING in the storage
        victim.wait(timeout=30)
        codes = wait_all(procs[1:], timeout_s=60)
    finally:
        kill_all(procs)
    log = (tmp_path / "worker-1.txt").read_text()
    assert codes == [0], log
    assert "was interrupted; re-queued" in log, log
    trained = _check_sweep(tmp_path, storage, 4, retried=1)
    killed_dir = next(d for pid, d in _record(tmp_path) if pid == str(victim.pid))
    assert trained[killed_dir] == 2 and all(n == 1 for d, n in trained.items() if d != killed_dir)


def test_best_of_takes_the_best_trial_of_a_shared_storage_whose_directory_is_on_another_machine(tmp_path):
    import io
    import shutil

    from helpers_sweeps import FakeExecutor
    from reprlab.studies.results import best_trial
    from reprlab.studies.runner import best_params
    from reprlab.studies.spec import load_study
    from reprlab.studies.sweep import run_sweep

    f = tmp_path / "study.toml"
    f.write_text(f'[[sweep]]\nname = "search"\ncommand = "train"\nconfig = "{CONFIG}"\nsampler = "grid"\npruner = "none"\n'
                 '[sweep.space]\n"optim.lr" = [0.1, 0.01]\n\n'
                 f'[[run]]\nname = "final"\ncommand = "train"\nconfig = "{CONFIG}"\nbest_of = "search"\n')
    url = f"journal://{tmp_path / 'sweep.log'}"
    study = load_study(f, out_dir=tmp_path / "out", storage=url)
    ex = FakeExecutor([[30.0], [60.0]])
    run_sweep(study.nodes["search"].spec, tmp_path / "out", storage=url, executor=ex, poll_s=0.001, out=io.StringIO())
    best, other = (r for r in sorted(ex.runs, key=lambda r: -r.curve[-1]))
    shutil.rmtree(best.dir)  # the best trial ran on a machine whose disk this one does not see
    assert best_trial(tmp_path / "out", "search") == other.params  # the directories alone are wrong here
    assert best_params(study, study.nodes["final"]) == best.params


def test_a_trial_of_another_machine_is_requeued_only_after_its_heartbeat_stops(tmp_path):
    import io

    import optuna

    from reprlab.studies.sweep_workers import STALE_AFTER_S, recover_interrupted

    study = optuna.create_study(study_name="search", storage=open_storage(parse_storage(f"journal://{tmp_path / 'sweep.log'}")))
    beating, silent = study.ask(), study.ask()
    for trial, beat in ((beating, time.time() - 5), (silent, time.time() - STALE_AFTER_S - 5)):
        trial.suggest_float("optim.lr", 1e-4, 1e-1, log=True)
        trial.set_user_attr("host", "another-machine")  # no lock or pid to look at from here
        trial.set_user_attr("heartbeat", beat)
    out = io.StringIO()
    assert recover_interrupted(study, out) == 1
    by_number = {t.number: t for t in study.get_trials()}
    assert by_number[beating.number].state.name == "RUNNING" and by_number[silent.number].state.name == "FAIL"
    retry = [t for t in by_number.values() if t.user_attrs.get("retry_of") == silent.number]
    assert len(retry) == 1 and retry[0].state.name == "WAITING" and retry[0].system_attrs["fixed_params"] == by_number[silent.number].params
    assert f"trial {silent.number} (no directory yet) was interrupted; re-queued" in out.getvalue()
