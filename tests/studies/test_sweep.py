"""Sweeps: the Optuna plumbing with an injected fake trial executor (fast), and one real sweep."""

from __future__ import annotations

import io
import json
import subprocess
import sys

import pytest

from helpers_sweeps import FakeExecutor
from reprlab.errors import ReprlabError
from reprlab.studies.results import best_trial, read_curve, trial_dir_name
from reprlab.studies.sweep import load_sweep, open_study, run_sweep, sweep_progress
from reprlab.studies.sweep_spec import Param, parse_sweep

CONFIG = "configs/supervised/resnet18_scratch.toml"


def _spec(**kw):
    table = {
        "name": "search",
        "command": "train",
        "config": CONFIG,
        "sampler": "grid",
        "trials": 3,
        "pruner": {"name": "median", "startup_trials": 1, "warmup_epochs": 0},
        "space": {"optim.lr": {"choices": [0.1, 0.01, 0.001]}},
    }
    table.update(kw)
    return parse_sweep(table, "test sweep")


def _sweep(spec, out, executor, **kw):
    return run_sweep(spec, out, executor=executor, poll_s=0.001, out=io.StringIO(), **kw)


def test_a_poor_curve_is_pruned_after_a_good_trial(tmp_path):
    ex = FakeExecutor([[10.0, 20.0, 30.0, 40.0], [1.0, 2.0, 3.0, 4.0]])
    summary = _sweep(_spec(trials=2), tmp_path, ex)
    assert [o.state for o in summary.outcomes] == ["complete", "pruned"]
    good, poor = ex.runs
    assert not good.terminated and poor.terminated
    # stopped as soon as its first epoch fell below the good trial's (a poll may add one more)
    assert len(read_curve(poor.dir / "metrics.jsonl", "val/acc1")) < 4 and not (poor.dir / "result.json").exists()
    marker = json.loads((poor.dir / "pruned.json").read_text())
    assert marker["epoch"] == 1 and marker["value"] == 1.0 and marker["params"] == poor.params
    assert summary.outcomes[0].value == 40.0 and summary.best_value == 40.0
    # the trial directory is keyed by the parameters, not by Optuna's trial number
    assert poor.dir.name == trial_dir_name(poor.params)


def test_without_a_pruner_the_same_poor_curve_runs_to_the_end(tmp_path):
    ex = FakeExecutor([[10.0, 20.0, 30.0, 40.0], [1.0, 2.0, 3.0, 4.0]])
    summary = _sweep(_spec(trials=2, pruner="none"), tmp_path, ex)
    assert [o.state for o in summary.outcomes] == ["complete", "complete"]
    assert not ex.runs[1].terminated and not (ex.runs[1].dir / "pruned.json").exists()


def test_default_storage_is_sqlite_in_the_sweep_dir_and_rerun_adds_no_trials(tmp_path):
    import optuna

    ex = FakeExecutor([[5.0, 6.0], [7.0, 9.0], [1.0, 8.0]])
    spec = _spec(trials=3, pruner="none")
    _sweep(spec, tmp_path, ex)
    db = tmp_path / "search" / "optuna.db"
    assert db.is_file()
    study = optuna.load_study(study_name="search", storage=f"sqlite:///{db}")
    trials = study.get_trials()
    assert [t.state.name for t in trials] == ["COMPLETE"] * 3
    # intermediate values are the per-epoch curve, the value is result.json val.acc1
    assert sorted(t.value for t in trials) == [6.0, 8.0, 9.0]
    assert all(len(t.intermediate_values) == 2 for t in trials)
    # a grid sampler visits each point once
    assert sorted(t.params["optim.lr"] for t in trials) == [0.001, 0.01, 0.1]
    # the finished sweep again: nothing starts, no trial is added
    again = _sweep(spec, tmp_path, ex)
    assert len(ex.runs) == 3 and again.outcomes == []
    assert len(optuna.load_study(study_name="search", storage=f"sqlite:///{db}").get_trials()) == 3
    assert sweep_progress(spec, tmp_path).done
    # best_trial reads the run directories: the parameters of the 9.0 run
    best_run = next(r for r in ex.runs if r.curve[-1] == 9.0)
    assert best_trial(tmp_path, "search") == best_run.params


def test_trials_is_a_total_so_raising_it_adds_only_the_difference(tmp_path):
    ex = FakeExecutor([[5.0], [6.0], [7.0]])
    spec = parse_sweep({"name": "r", "command": "train", "config": CONFIG, "sampler": "random", "pruner": "none", "trials": 1,
                        "space": {"optim.lr": {"low": 1e-3, "high": 1e-1, "log": True}}}, "t")
    _sweep(spec, tmp_path, ex)
    _sweep(spec, tmp_path, ex, trials=3)
    assert len(ex.runs) == 3
    assert sweep_progress(spec, tmp_path, trials=3).complete == 3


def test_failed_trials_are_recorded_and_the_sweep_goes_on(tmp_path):
    import optuna

    ex = FakeExecutor([[5.0], [6.0], [7.0]], fail_calls={0})
    summary = _sweep(_spec(trials=3, pruner="none"), tmp_path, ex)
    assert [o.state for o in summary.outcomes] == ["failed", "complete", "complete"]
    assert "something broke" in summary.outcomes[0].message
    t0 = optuna.load_study(study_name="search", storage=f"sqlite:///{tmp_path / 'search' / 'optuna.db'}").get_trials()[0]
    assert t0.state.name == "FAIL" and "something broke" in t0.user_attrs["error"]


def test_a_sweep_whose_trials_all_fail_is_an_error(tmp_path):
    ex = FakeExecutor([[5.0]], fail_calls={0, 1})
    with pytest.raises(ReprlabError, match="no trial completed.*something broke"):
        _sweep(_spec(trials=2, pruner="none"), tmp_path, ex)


def test_an_interrupted_trial_is_requeued_into_the_same_directory(tmp_path):
    spec = _spec(trials=2, pruner="none")
    study = open_study(spec, tmp_path, None, [])
    # a trial whose sweep process died: RUNNING in storage, its lock free, half a curve on disk
    dead = study.ask()
    params = {"optim.lr": Param("optim.lr", choices=(0.1, 0.01, 0.001)).suggest(dead)}
    run_dir = tmp_path / "search" / trial_dir_name(params)
    run_dir.mkdir(parents=True)
    (run_dir / "metrics.jsonl").write_text(json.dumps({"step": 10, "epoch": 1.0, "val/acc1": 3.0}) + "\n")
    dead.set_user_attr("host", __import__("socket").gethostname())
    dead.set_user_attr("run_dir", str(run_dir.resolve()))
    ex = FakeExecutor([[3.0, 4.0], [5.0, 6.0]])
    _sweep(spec, tmp_path, ex)
    assert ex.runs[0].dir == run_dir  # resumed where it was, not a new directory
    trials = study.get_trials()
    assert trials[0].state.name == "FAIL" and trials[1].user_attrs["retry_of"] == 0 and trials[1].params == params
    prog = sweep_progress(spec, tmp_path)
    assert (prog.interrupted, prog.complete, prog.failed) == (1, 2, 0) and prog.done


def test_a_storage_holding_another_definition_is_refused(tmp_path):
    _sweep(_spec(trials=1, pruner="none"), tmp_path, FakeExecutor([[1.0]]))
    other = _spec(trials=1, pruner="none", overrides=["train.epochs=3"])
    with pytest.raises(ReprlabError, match="different overrides"):
        _sweep(other, tmp_path, FakeExecutor([[1.0]]))


def test_trial_command_line_marks_the_run_as_a_sweep_trial_without_test(tmp_path):
    ex = FakeExecutor([[1.0]])
    _sweep(_spec(trials=1, pruner="none", overrides=["train.epochs=3"]), tmp_path, ex, base_overrides=["data.fraction=0.5"])
    argv = ex.runs[0].argv
    for item in ('run.sweep="search"', 'run.sweep_keys=["optim.lr"]', 'run.group="search"', "train.eval_test=false", "train.epochs=3", "data.fraction=0.5"):
        assert item in argv
    assert argv[argv.index("--config") + 1] == CONFIG and argv.index("data.fraction=0.5") < argv.index("train.epochs=3")


@pytest.mark.parametrize(
    "table, words",
    [
        ({"samplr": "tpe"}, ["unknown key 'samplr'", "did you mean 'sampler'"]),
        ({"sampler": "grid", "space": {"optim.lr": {"low": 0.1, "high": 1.0}}}, ["grid sampler needs choices or steps", "optim.lr"]),
        ({"space": {"optim.lr": {"low": 1.0, "high": 0.1}}}, ["expected low < high"]),
        ({"space": {"optim.lr": {"lo": 0.1, "high": 1.0}}}, ["unknown key 'lo'", "did you mean 'low'"]),
        ({"metric": "acc1"}, ["metric 'acc1'", "val/acc1"]),
        ({"pruner": "hyperband"}, ["pruner 'hyperband'", "median"]),
    ],
)
def test_bad_sweep_tables_name_the_key(table, words):
    base = {"name": "s", "command": "train", "config": CONFIG, "space": {"optim.lr": [0.1]}}
    with pytest.raises(ReprlabError) as e:
        parse_sweep({**base, **table}, "f.toml [sweep]")
    for w in words:
        assert w in str(e.value)


def test_an_unknown_config_key_in_the_space_fails_before_any_trial(tmp_path):
    f = tmp_path / "s.toml"
    f.write_text(f'[sweep]\nname = "s"\ncommand = "train"\nconfig = "{CONFIG}"\n[sweep.space]\n"optim.lrr" = [0.1, 0.2]\n')
    with pytest.raises(ReprlabError, match="optim.lrr.*optim.lr"):
        load_sweep(f)


def test_grid_points_from_low_high_steps():
    assert Param("k", low=1e-4, high=1e-2, log=True, steps=3).grid_values() == [1e-4, 1e-3, 1e-2]
    assert Param("k", low=0.0, high=1.0, steps=5).grid_values() == [0.0, 0.25, 0.5, 0.75, 1.0]
    assert Param("k", low=64, high=256, steps=4).grid_values() == [64, 128, 192, 256]
    assert _spec(space={"a": [1, 2, 3], "b": {"low": 0.0, "high": 1.0, "steps": 2}}).grid_size == 6


def test_best_trial_ignores_incomplete_and_pruned_trials(tmp_path):
    def make(name, status, acc, params):
        d = tmp_path / "sw" / name
        d.mkdir(parents=True)
        (d / "result.json").write_text(json.dumps({"status": status, "val": {"acc1": acc}, "sweep_params": params}))

    make("trial-aaaa", "complete", 50.0, {"optim.lr": 0.1})
    make("trial-bbbb", "complete", 61.5, {"optim.lr": 0.03})
    make("trial-cccc", "running", 99.0, {"optim.lr": 0.5})
    (tmp_path / "sw" / "trial-dddd").mkdir()
    (tmp_path / "sw" / "trial-dddd" / "pruned.json").write_text("{}")
    assert best_trial(tmp_path, "sw") == {"optim.lr": 0.03}
    with pytest.raises(ReprlabError, match="no complete trial"):
        best_trial(tmp_path, "nothing")


def test_a_pretraining_sweep_ranks_trials_by_their_knn_accuracy(tmp_path):
    from reprlab.studies.results import accuracy_text

    for name, acc, lr in (("trial-aaaa", 12.0, 0.1), ("trial-bbbb", 17.5, 0.3)):
        d = tmp_path / "sw" / name
        d.mkdir(parents=True)
        # self-supervised pretraining runs name their validation number for what it is
        (d / "result.json").write_text(json.dumps({"status": "complete", "val": {"knn_acc1": acc}, "sweep_params": {"optim.lr": lr}}))
    assert best_trial(tmp_path, "sw", "knn/acc1") == {"optim.lr": 0.3}
    assert _spec(metric="knn/acc1").metric_key == "knn_acc1" and _spec().metric_key == "acc1"
    assert accuracy_text({"val": {"knn_acc1": 17.5}}) == "val kNN 17.50"


# ---------------------------------------------------------------------------------------------
# One real sweep: two grid trials through `reprlab sweep`, on the real CIFAR-100


@pytest.mark.realdata
def test_real_grid_sweep_through_the_cli(data_root, cache_root, tmp_path):
    import optuna

    f = tmp_path / "sweep.toml"
    tiny = ["model.kwargs.width=4", "data.fraction=0.01", "train.batch_size=64", "train.epochs=2", "train.deterministic=true",
            "train.log_every_steps=2", "data.val_size=500", "train.eval_batch_size=1000", "train.num_threads=1",
            f'data.cache_dir="{cache_root}"']
    f.write_text(
        "[sweep]\nname = \"lr\"\ncommand = \"train\"\n"
        f"config = \"{CONFIG}\"\noverrides = {json.dumps(tiny)}\nsampler = \"grid\"\npruner = \"none\"\ntrials = 5\n"
        "[sweep.space]\n\"optim.lr\" = [0.05, 0.2]\n"
    )
    p = subprocess.run([sys.executable, "-m", "reprlab", "--data-root", str(data_root), "sweep", str(f), "--out", str(tmp_path / "out")],
                       capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr[-2000:] + p.stdout[-2000:]
    sweep_dir = tmp_path / "out" / "lr"
    dirs = sorted(d for d in sweep_dir.iterdir() if d.is_dir())
    assert len(dirs) == 2  # trials = 5 is capped at the grid's 2 points
    study = optuna.load_study(study_name="lr", storage=f"sqlite:///{sweep_dir / 'optuna.db'}")
    by_dir = {trial_dir_name(t.params): t for t in study.get_trials()}
    assert set(by_dir) == {d.name for d in dirs}
    for d in dirs:
        result = json.loads((d / "result.json").read_text())
        t = by_dir[d.name]
        assert result["sweep"] == "lr" and result["sweep_params"] == t.params and result["group"] == "lr"
        assert "test" not in result  # sweep trials never touch the test split
        assert t.state.name == "COMPLETE" and t.value == result["val"]["acc1"]
        assert sorted(t.intermediate_values.items()) == read_curve(d / "metrics.jsonl", "val/acc1") and len(t.intermediate_values) == 2
    best = max(study.get_trials(), key=lambda t: t.value)
    assert best_trial(tmp_path / "out", "lr") == best.params
    assert "best val/acc1" in p.stdout


def test_a_space_of_choices_only_runs_each_point_once_and_caps_the_budget_at_its_size(tmp_path):
    spec = _spec(sampler="tpe", trials=5)  # 3 choices: TPE proposes points again, none runs twice
    assert spec.target() == 3 and _spec(sampler="tpe", trials=5, space={"optim.lr": {"low": 0.01, "high": 0.1}}).target() == 5
    ex = FakeExecutor([[30.0], [60.0], [45.0]])
    summary = _sweep(spec, tmp_path, ex)
    assert summary.progress.complete == 3 and sorted(r.params["optim.lr"] for r in ex.runs) == [0.001, 0.01, 0.1]
