"""Study files (expansion, references, errors), dry runs, the scheduler with a fake executor,
and the real runner: SIGKILL mid-run, re-run, and the results of a clean run."""

from __future__ import annotations

import io
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from helpers_kill import descendant, kill_after_checkpoint
from reprlab.cli import main, resolve_argv
from reprlab.errors import ReprlabError
from reprlab.studies import spec
from reprlab.studies.runner import dry_run, run_study
from reprlab.studies.spec import run_argv


def load_study(*args, **kwargs) -> spec.Study:
    """A study as `reprlab study` loads it: with the command line's config resolver."""
    return spec.load_study(*args, resolve=resolve_argv, **kwargs)

SCRATCH = "configs/supervised/resnet18_scratch.toml"
SIMCLR = "configs/pretrain/simclr_cifar100.toml"


def _write(tmp_path: Path, text: str, name: str = "study.toml") -> Path:
    f = tmp_path / name
    f.write_text(text)
    return f


PIPELINE = f"""
[study]
name = "pipe"
overrides = ["train.epochs=2"]

[[run]]
name = "simclr"
command = "pretrain"
config = "{SIMCLR}"
seeds = [0, 1]
grid = {{ "data.fraction" = [0.1, 0.25] }}

[[run]]
name = "probe"
command = "probe"
backbone = "{{simclr}}"
seeds = [0, 1]
match = {{ "data.fraction" = [0.1, 0.25] }}
group = "SimCLR / linear"

[[run]]
name = "scratch"
command = "train"
config = "{SCRATCH}"
grid = {{ "optim.weight_decay" = [5e-4, 1e-3] }}
"""


def test_seeds_and_grid_expand_into_named_instances_with_the_values_in_the_config(tmp_path):
    study = load_study(_write(tmp_path, PIPELINE), out_dir=tmp_path / "out")
    names = list(study.nodes)
    assert names[:4] == ["simclr-f0.1-s0", "simclr-f0.1-s1", "simclr-f0.25-s0", "simclr-f0.25-s1"]
    assert set(names) == {*names[:4], "probe-f0.1-s0", "probe-f0.1-s1", "probe-f0.25-s0", "probe-f0.25-s1", "scratch-wd0.0005", "scratch-wd0.001"}
    argv = run_argv(study, study.nodes["simclr-f0.25-s1"], None)
    assert "data.fraction=0.25" in argv and "train.seed=1" in argv and 'run.sweep_keys=["data.fraction"]' in argv
    assert 'run.name="simclr-f0.25-s1"' in argv and f'run.out_dir="{tmp_path / "out"}"' in argv
    assert argv.index("train.epochs=2") < argv.index("data.fraction=0.25")  # study overrides first
    assert "optim.weight_decay=0.001" in run_argv(study, study.nodes["scratch-wd0.001"], None)


def test_a_reference_resolves_to_the_instance_with_the_same_axes_and_match_is_not_applied(tmp_path):
    study = load_study(_write(tmp_path, PIPELINE), out_dir=tmp_path / "out")
    node = study.nodes["probe-f0.25-s1"]
    assert node.deps == ["simclr-f0.25-s1"]
    argv = run_argv(study, node, "/data")
    assert argv[argv.index("--backbone") + 1] == str(tmp_path / "out" / "simclr-f0.25-s1" / "checkpoints" / "last.pt")
    assert not any(a.startswith("data.fraction=") for a in argv)  # an axis for matching only
    assert argv[argv.index("--data-root") + 1] == "/data" and argv[argv.index("--data-root") + 2] == "probe"
    # the group names the fraction, so two fractions never pool into one report group
    assert 'run.group="SimCLR / linear (f=0.25)"' in argv
    assert list(study.nodes).index("simclr-f0.25-s1") < list(study.nodes).index("probe-f0.25-s1")


def test_a_single_valued_axis_of_the_target_is_not_ambiguous(tmp_path):
    text = f"""
[[run]]
name = "pre"
command = "pretrain"
config = "{SIMCLR}"
seeds = [3]
[[run]]
name = "probe"
command = "probe"
backbone = "{{pre}}"
"""
    study = load_study(_write(tmp_path, text))
    assert study.nodes["probe"].deps == ["pre-s3"] and study.out_dir == Path("runs/study")


@pytest.mark.parametrize(
    "runs, words",
    [
        # the target varies over seeds, the referencing run has none
        ('[[run]]\nname = "a"\ncommand = "pretrain"\nconfig = "%s"\nseeds = [0, 1]\n'
         '[[run]]\nname = "b"\ncommand = "probe"\nbackbone = "{a}"\n' % SIMCLR, ["'b' refers to {a}", "'seed'", "ambiguous"]),
        ('[[run]]\nname = "a"\ncommand = "pretrain"\nconfig = "%s"\ngrid = { "data.fraction" = [0.1, 0.5] }\n'
         '[[run]]\nname = "b"\ncommand = "probe"\nbackbone = "{a}"\n' % SIMCLR, ["'b' refers to {a}", "'data.fraction'", "ambiguous"]),
        ('[[run]]\nname = "a"\ncommand = "pretrain"\nconfig = "%s"\ngrid = { "data.fraction" = [0.1, 0.5] }\n'
         '[[run]]\nname = "b"\ncommand = "probe"\nbackbone = "{a}"\nmatch = { "data.fraction" = [0.3] }\n' % SIMCLR, ["no instance of 'a'", "data.fraction=0.3"]),
        ('[[run]]\nname = "a"\ncommand = "finetune"\nbackbone = "{b}"\n[[run]]\nname = "b"\ncommand = "finetune"\nbackbone = "{a}"\n', ["dependency cycle", "a -> b -> a"]),
        ('[[run]]\nname = "a"\ncommand = "probe"\nbackbone = "{simclrr}"\n[[run]]\nname = "simclr"\ncommand = "train"\n', ["{simclrr} names no run", "did you mean 'simclr'"]),
        ('[[run]]\nname = "a"\ncommand = "train"\nseed = [0]\n', ["unknown key 'seed'", "did you mean 'seeds'"]),
        ('[study]\ndescripton = "x"\n[[run]]\nname = "a"\ncommand = "train"\n', ["[study]", "unknown key 'descripton'", "did you mean 'description'"]),
        ('[[runs]]\nname = "a"\n', ["unknown key 'runs'", "did you mean 'run'"]),
        ('[[run]]\nname = "a"\ncommand = "trian"\n', ["command 'trian'", "did you mean 'train'"]),
        ('[[run]]\nname = "a"\ncommand = "train"\noverrides = ["optim.lrr=0.1"]\n', ["run 'a'", "optim.lrr", "optim.lr"]),
        ('[[run]]\nname = "a"\ncommand = "train"\nconfig = "configs/nope.toml"\n', ["'a'", "configs/nope.toml", "not found"]),
        ('[[run]]\nname = "a"\ncommand = "train"\nbest_of = "search"\n', ["best_of 'search' is not a [[sweep]]"]),
        ('[[run]]\nname = "a"\ncommand = "train"\nseeds = [0]\n[[run]]\nname = "a-s0"\ncommand = "train"\n', ["'a-s0' occurs twice"]),
    ],
)
def test_bad_study_files_are_one_line_errors_naming_the_problem(tmp_path, runs, words):
    f = _write(tmp_path, runs)
    with pytest.raises(ReprlabError) as e:
        load_study(f)
    msg = str(e.value)
    assert "\n" not in msg
    for w in words:
        assert w in msg, msg


def test_cli_prints_a_bad_study_as_one_line_with_exit_2(tmp_path, capsys):
    f = _write(tmp_path, '[[run]]\nname = "a"\ncommand = "train"\nseed = [0]\n')
    assert main(["study", "run", str(f), "--dry-run"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("reprlab: error:") and "seeds" in err[0]
    assert main(["study", "run", "quik"]) == 2
    assert "did you mean 'quick'" in capsys.readouterr().err


def _complete(run_dir: Path, acc: float = 50.0, **extra) -> None:
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "result.json").write_text(json.dumps({"status": "complete", "val": {"acc1": acc}, "test": {"acc1": acc - 1}, **extra}))


def test_dry_run_lists_runs_in_dependency_order_with_reasons(tmp_path):
    import torch

    text = f"""
[[run]]
name = "probe"
command = "probe"
backbone = "{{pre}}"
seeds = [0, 1]
[[run]]
name = "pre"
command = "pretrain"
config = "{SIMCLR}"
seeds = [0, 1]
"""
    out = tmp_path / "out"
    study = load_study(_write(tmp_path, text), out_dir=out)
    _complete(out / "pre-s0", 41.0)
    (out / "pre-s1" / "checkpoints").mkdir(parents=True)
    torch.save({"step": 7, "method": {}}, out / "pre-s1" / "checkpoints" / "last.pt")
    buf = io.StringIO()
    dry_run(study, out=buf)
    lines = buf.getvalue().splitlines()
    runs = [ln for ln in lines if ln[:4].strip().rstrip(".").isdigit()]
    # file order among runs that are ready, but never before a dependency
    assert [ln.split()[1] for ln in runs] == ["pre-s0", "probe-s0", "pre-s1", "probe-s1"]
    assert "complete: skip" in runs[0] and "val 41.00" in runs[0]
    assert runs[1].split()[2:] == ["new"]
    assert "resume from step 7" in runs[2]
    assert "new; waits for pre-s1" in runs[3]
    cmd = lines[lines.index(runs[3]) + 1]
    assert cmd.strip().startswith("reprlab probe --backbone") and "pre-s1/checkpoints/last.pt" in cmd
    assert "2 complete" not in lines[1] and "1 complete, 1 to resume, 2 new" in lines[1]
    assert not (out / "study.toml").exists()  # a dry run writes nothing


# ---------------------------------------------------------------------------------------------
# The scheduler, with a fake executor standing in for `python -m reprlab ...`


class FakeProc:
    def __init__(self, argv, log, fail: bool, steps: int):
        self.argv, self.log, self.fail, self.left = argv, log, fail, steps
        self.run_dir = Path(json.loads(next(a for a in argv if a.startswith("run.out_dir=")).split("=", 1)[1])) / log.parent.name
        self.code = None

    def poll(self):
        if self.code is None:
            self.left -= 1
            if self.left <= 0:
                if self.fail:
                    self.log.write_text("Traceback...\nreprlab: error: it broke\n")
                    self.code = 2
                else:
                    _complete(self.run_dir, 10.0 + len(self.run_dir.name))
                    self.code = 0
        return self.code

    def terminate(self):
        self.code = -15

    kill = terminate

    def wait(self, timeout=None):
        return self.code


class FakeLauncher:
    def __init__(self, fail=(), steps=2):
        self.fail, self.steps, self.started, self.events = set(fail), steps, [], []

    def __call__(self, argv, log, env):
        log.parent.mkdir(parents=True, exist_ok=True)
        name = log.parent.name
        # every dependency must be complete before a run starts
        for i, a in enumerate(argv):
            if a == "--backbone":
                assert (Path(argv[i + 1]).parents[1] / "result.json").is_file(), f"{name} started before its backbone"
        self.started.append(name)
        return FakeProc(argv, log, name in self.fail, self.steps)


def test_a_failed_run_blocks_only_its_dependents_and_the_exit_status_lists_it(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr("reprlab.studies.runner.POLL_S", 0.001)
    study = load_study(_write(tmp_path, PIPELINE), out_dir=tmp_path / "out")
    launcher = FakeLauncher(fail={"simclr-f0.1-s1"})
    buf = io.StringIO()
    code = run_study(study, workers=2, out=buf, executor=launcher)
    assert code == 1
    assert sorted(launcher.started) == sorted(n for n in study.nodes if n != "probe-f0.1-s1")
    err = capsys.readouterr().err
    assert "1 failed: simclr-f0.1-s1 (exit 2: reprlab: error: it broke" in err and "1 blocked: probe-f0.1-s1" in err
    assert "blocked  probe-f0.1-s1  needs simclr-f0.1-s1" in buf.getvalue()
    # fixed and re-run: only the failed run and its dependent start; complete runs are skipped
    launcher2 = FakeLauncher()
    assert run_study(study, workers=2, out=io.StringIO(), executor=launcher2) == 0
    assert launcher2.started == ["simclr-f0.1-s1", "probe-f0.1-s1"]
    assert len(launcher.started) == len(set(launcher.started))  # nothing ran twice


def test_only_refuses_when_a_selected_run_needs_an_incomplete_unselected_one(tmp_path, monkeypatch):
    monkeypatch.setattr("reprlab.studies.runner.POLL_S", 0.001)
    study = load_study(_write(tmp_path, PIPELINE), out_dir=tmp_path / "out")
    with pytest.raises(ReprlabError, match=r"--only: 'probe-f0.1-s0' needs 'simclr-f0.1-s0', which is incomplete and not selected"):
        run_study(study, only=["probe-*"], executor=FakeLauncher())
    buf = io.StringIO()
    dry_run(study, only=["probe-*"], out=buf)
    assert "BLOCKED: needs simclr-f0.1-s0" in buf.getvalue() and "scratch" not in buf.getvalue()
    with pytest.raises(ReprlabError, match="matches no run"):
        run_study(study, only=["nothing*"], executor=FakeLauncher())
    launcher = FakeLauncher()
    assert run_study(study, only=["simclr-f0.1-*", "probe-f0.1-*"], out=io.StringIO(), executor=launcher) == 0
    assert sorted(launcher.started) == ["probe-f0.1-s0", "probe-f0.1-s1", "simclr-f0.1-s0", "simclr-f0.1-s1"]


def test_a_second_runner_of_the_same_study_is_refused(tmp_path):
    from reprlab.io import FileLock as DirLock

    study = load_study(_write(tmp_path, PIPELINE), out_dir=tmp_path / "out")
    with DirLock(tmp_path / "out" / ".study.lock", "x"):
        with pytest.raises(ReprlabError, match="in use by another process"):
            run_study(study, executor=FakeLauncher())


def test_best_of_waits_for_the_sweep_and_applies_its_best_parameters(tmp_path, monkeypatch):
    from helpers_sweeps import FakeExecutor

    from reprlab.studies.sweep import run_sweep

    text = f"""
[[sweep]]
name = "search"
command = "train"
config = "{SCRATCH}"
sampler = "grid"
pruner = "none"
[sweep.space]
"optim.lr" = [0.1, 0.01]

[[run]]
name = "final"
command = "train"
config = "{SCRATCH}"
best_of = "search"
seeds = [0, 1]
overrides = ["train.epochs=9"]
"""
    out = tmp_path / "out"
    study = load_study(_write(tmp_path, text), out_dir=out)
    assert list(study.nodes) == ["search", "final-s0", "final-s1"] and study.nodes["final-s1"].deps == ["search"]
    buf = io.StringIO()
    dry_run(study, out=buf)
    assert "new sweep: 0/2 trials" in buf.getvalue() and "waits for search" in buf.getvalue() and "<+ best parameters of search>" in buf.getvalue()
    ex = FakeExecutor([[30.0], [60.0]])
    run_sweep(study.nodes["search"].spec, out, executor=ex, poll_s=0.001, out=io.StringIO())
    best_lr = next(r.params["optim.lr"] for r in ex.runs if r.curve[-1] == 60.0)
    buf = io.StringIO()
    dry_run(study, out=buf)
    text_out = buf.getvalue()
    assert "search    complete: skip" in text_out
    argv = run_argv(study, study.nodes["final-s0"], None, {"optim.lr": best_lr})
    assert f"optim.lr={best_lr!r}" in text_out and f"optim.lr={best_lr!r}" in argv
    assert 'run.sweep_keys=["optim.lr"]' in argv and argv.index(f"optim.lr={best_lr!r}") < argv.index("train.epochs=9")
    monkeypatch.setattr("reprlab.studies.runner.POLL_S", 0.001)
    launcher = FakeLauncher()
    assert run_study(study, out=io.StringIO(), executor=launcher) == 0
    assert launcher.started == ["final-s0", "final-s1"]  # the complete sweep is skipped


def test_builtin_studies_are_listed_with_description_and_gpu_hours(capsys):
    assert main(["study", "list"]) == 0
    lines = capsys.readouterr().out.splitlines()
    by_name = {ln.split()[0]: ln for ln in lines}
    assert set(by_name) >= {"quick", "ssl_vs_supervised", "cnn_vs_vit"}
    assert "GPU-h" in by_name["ssl_vs_supervised"] and "Tiny ImageNet" in by_name["ssl_vs_supervised"]


def test_builtin_ssl_study_expands_to_the_full_design():
    from reprlab.studies.spec import find_study

    assert find_study("ssl-vs-supervised") == find_study("ssl_vs_supervised")  # either spelling
    study = load_study(find_study("ssl_vs_supervised"), out_dir="runs/x")
    names = list(study.nodes)
    for m in ("simclr", "byol", "barlow_twins"):  # the default method axis: 4 fractions x 3 seeds each
        assert len([n for n in names if n.startswith(f"ssl-{m}-")]) == 12 and len([n for n in names if n.startswith(f"full-ssl-{m}-")]) == 12
    assert len([n for n in names if n.startswith("full-sup-")]) == 12
    assert study.nodes["head-ssl-simclr-f0.5-s2"].deps == ["ssl-simclr-f0.5-s2"]
    assert study.nodes["probe-ssl-byol-f0.1-s0"].deps == ["ssl-byol-f0.1-s0"]
    argv = run_argv(study, study.nodes["head-ssl-simclr-f0.5-s2"], None)
    assert argv[argv.index("--mode") + 1] == "head" and not any(a.startswith(("data.fraction", "method.name")) for a in argv)
    assert "eval.resolution=224" in run_argv(study, study.nodes["probe-imagenet-224-s1"], None)
    assert study.gpu_hours and study.gpu_hours > 1


def test_builtin_cnn_vs_vit_tunes_both_families_alike_then_runs_the_best_with_test():
    from reprlab.studies.spec import find_study

    study = load_study(find_study("cnn_vs_vit"), out_dir="runs/x")
    cnn, vit = study.nodes["resnet18-search"].spec, study.nodes["vit-search"].spec
    assert cnn.trials == vit.trials and cnn.metric == vit.metric == "val/acc1"
    assert {k: v for k, v in vit.space.items() if k != "model.kwargs.drop_path_rate"} == cnn.space
    assert study.nodes["vit-s2"].deps == ["vit-search"] and study.nodes["resnet18-s0"].deps == ["resnet18-search"]
    assert "train.eval_test=true" in run_argv(study, study.nodes["vit-s0"], None, {"optim.lr": 1e-3})


# ---------------------------------------------------------------------------------------------
# The real runner on the real CIFAR-100: kill -9 mid-run, re-run, compare with a clean run

TINY = ["model.kwargs.width=4", "data.fraction=0.01", "train.batch_size=64", "train.epochs=2", "train.eval_test=false",
        "train.deterministic=true", "train.checkpoint_every_steps=2", "train.log_every_steps=2", "data.val_size=500",
        "train.eval_batch_size=1000", 'model.name="resnet18"', "train.num_threads=1",
        'train.precision="fp32"']  # exact resume is pinned for fp32; auto would pick bf16 on some CPUs only


def _tiny_study(tmp_path: Path, cache_root: Path) -> Path:
    overrides = [*TINY, f'data.cache_dir="{cache_root}"']
    return _write(tmp_path, f"""
[study]
name = "tiny"
overrides = {json.dumps(overrides)}

[[run]]
name = "net"
command = "train"
config = "{SCRATCH}"
seeds = [0, 1]
""")


def _study_cli(data_root, *args, env=None, **kw):
    return subprocess.run([sys.executable, "-m", "reprlab", "--data-root", str(data_root), "study", "run", *map(str, args)],
                          capture_output=True, text=True, timeout=300, env={**os.environ, **(env or {})}, **kw)


def _lines(path: Path) -> list[dict]:
    return [json.loads(x) for x in path.read_text().splitlines()]


@pytest.mark.realdata
def test_sigkill_mid_run_then_rerun_gives_the_clean_results_exactly_once(data_root, cache_root, tmp_path):
    f = _tiny_study(tmp_path, cache_root)
    killed, clean = tmp_path / "killed", tmp_path / "clean"
    names = ["net-s0", "net-s1"]

    # 1. net-s0's child is SIGKILLed from outside once it has a checkpoint (every 2 steps, and at
    #    the end of epoch 1: step 7 of 14), like a dead machine; the runner reports it and starts
    #    net-s1, and at that moment we SIGKILL the runner's whole process group too
    _, s = kill_after_checkpoint([sys.executable, "-m", "reprlab", "--data-root", str(data_root), "study", "run", str(f), "--out", str(killed)], None,
                                 killed / "net-s0" / "checkpoints" / "last.pt", min_step=2, timeout_s=240,
                                 victim=lambda runner: descendant(runner, b'run.name="net-s0"'), then=(killed / "net-s1" / "log.txt").exists)
    import torch

    assert s in (2, 4, 6, 7, 8, 10, 12)  # mid-run
    print(f"net-s0 killed after the checkpoint at step {s}")
    assert torch.load(killed / "net-s0" / "checkpoints" / "last.pt", weights_only=False)["step"] == s
    assert not any((killed / n / "result.json").exists() for n in names)

    # 2. the same command again, with two workers: resumes net-s0, runs net-s1, each started once
    p = _study_cli(data_root, f, "--out", killed, "--workers", "2")
    assert p.returncode == 0, p.stderr[-3000:] + p.stdout[-2000:]
    assert f"resume   net-s0  from step {s}" in p.stdout
    for n in names:
        assert len([ln for ln in p.stdout.splitlines() if ln.split()[2:4] in (["start", n], ["resume", n])]) == 1
        assert json.loads((killed / n / "result.json").read_text())["steps"] == 14
    assert "resuming" in (killed / "net-s0" / "log.txt").read_text().split("\n=== ")[-1]
    # one directory per expanded run, no temp files left behind
    assert sorted(p.name for p in killed.iterdir() if p.is_dir()) == names
    assert not [p for p in killed.rglob("*") if ".tmp" in p.name]

    # 3. the interrupted run ends exactly like an uninterrupted one (deterministic on CPU)
    p = _study_cli(data_root, f, "--out", clean, "--only", "net-s0")
    assert p.returncode == 0, p.stderr[-3000:] + p.stdout[-2000:]
    assert sorted(p.name for p in clean.iterdir() if p.is_dir()) == ["net-s0"]
    assert _lines(killed / "net-s0" / "metrics.jsonl") == _lines(clean / "net-s0" / "metrics.jsonl")
    a, b = (json.loads((d / "net-s0" / "result.json").read_text()) for d in (clean, killed))
    assert a["val"] == b["val"] and a["final_checkpoint"] == b["final_checkpoint"]

    # 4. once more: nothing starts, nothing is rewritten
    stamps = {p: p.stat().st_mtime_ns for n in names for p in (killed / n / "result.json", killed / n / "metrics.jsonl", killed / n / "log.txt")}
    p = _study_cli(data_root, f, "--out", killed)
    assert p.returncode == 0, p.stderr[-3000:]
    assert p.stdout.count(" skip ") == 2 and " start " not in p.stdout
    assert {p: p.stat().st_mtime_ns for p in stamps} == stamps


# ---------------------------------------------------------------------------------------------
# A run whose recorded config differs from what the study would run now is stale, never "complete"

STALE = f"""
[study]
name = "st"

[[run]]
name = "net"
command = "train"
config = "{SCRATCH}"
overrides = ["train.max_steps=10"]
"""


def _resolved_config(argv: list[str]) -> str:
    """config.toml as the run's own command resolves it (``--print-config``, in-process)."""
    import contextlib

    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        assert main([a for a in argv[3:] if a != "--rerun"] + ["--print-config"]) == 0
    return buf.getvalue()


class RecordingLauncher(FakeLauncher):
    """FakeLauncher that keeps each argv and writes the config the run would record."""

    def __init__(self, **kw):
        super().__init__(**kw)
        self.argvs = []

    def __call__(self, argv, log, env):
        self.argvs.append(argv)
        log.parent.mkdir(parents=True, exist_ok=True)
        (log.parent / "config.toml").write_text(_resolved_config(argv))
        return super().__call__(argv, log, env)


def test_a_run_whose_study_overrides_changed_is_stale_and_never_skipped_as_complete(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr("reprlab.studies.runner.POLL_S", 0.001)
    out = tmp_path / "out"
    study = load_study(_write(tmp_path, STALE), out_dir=out)
    _complete(out / "net", 30.0)
    (out / "net" / "config.toml").write_text(_resolved_config(run_argv(study, study.nodes["net"], None)))
    buf = io.StringIO()
    dry_run(study, out=buf)
    assert "complete: skip" in buf.getvalue()

    edited = _write(tmp_path, STALE.replace("train.max_steps=10", "train.max_steps=12"))
    study = load_study(edited, out_dir=out)
    buf = io.StringIO()
    dry_run(study, out=buf)
    text = buf.getvalue()
    assert "complete: skip" not in text and "0 complete" in text and "1 stale" in text
    assert "stale: train.max_steps: recorded 10, now 12" in text

    capsys.readouterr()
    assert main(["study", "status", str(edited), "--out", str(out)]) == 0
    status = capsys.readouterr().out
    assert re.search(r"net\s+stale: train\.max_steps: recorded 10, now 12", status)

    with pytest.raises(ReprlabError, match=r"1 run\(s\) hold results of another config or input: net \(train\.max_steps: recorded 10, now 12\).*--rerun"):
        run_study(study, executor=RecordingLauncher())
    launcher = RecordingLauncher()
    assert run_study(study, rerun=True, out=io.StringIO(), executor=launcher) == 0
    assert launcher.started == ["net"] and "--rerun" in launcher.argvs[0]
    buf = io.StringIO()
    dry_run(study, out=buf)
    assert "complete: skip" in buf.getvalue()  # the re-run recorded the new config


def test_a_study_points_its_sweeps_at_one_shared_storage(tmp_path):
    from helpers_sweeps import FakeExecutor

    from reprlab.studies.runner import node_state
    from reprlab.studies.sweep import run_sweep

    text = f"""
[[sweep]]
name = "search"
command = "train"
config = "{SCRATCH}"
sampler = "grid"
pruner = "none"
[sweep.space]
"optim.lr" = [0.1, 0.01]
"""
    out, url = tmp_path / "out", f"sqlite:///{tmp_path / 'shared' / 'optuna.db'}"
    study = load_study(_write(tmp_path, text), out_dir=out, storage=url)
    argv = run_argv(study, study.nodes["search"], None)
    assert argv[argv.index("--storage") + 1] == url
    run_sweep(study.nodes["search"].spec, out, storage=url, executor=FakeExecutor([[30.0], [60.0]]), poll_s=0.001, out=io.StringIO())
    assert (tmp_path / "shared" / "optuna.db").is_file() and not (out / "search" / "optuna.db").exists()
    assert node_state(study, study.nodes["search"]).status == "complete"
    # the same from the study file's [study] table
    shared = _write(tmp_path, f'[study]\nname = "s"\nstorage = "{url}"\n' + text, "s2.toml")
    s2 = load_study(shared, out_dir=out)
    assert node_state(s2, s2.nodes["search"]).status == "complete" and "--storage" not in run_argv(s2, s2.nodes["search"], None)


def test_a_read_only_study_folder_is_one_line(tmp_path, monkeypatch, capsys, record_property):
    from helpers_fs import read_only

    f = _write(tmp_path, STALE)
    ro = tmp_path / "ro"
    with read_only(ro, monkeypatch) as how:
        record_property("fs", how)
        code = main(["study", "run", str(f), "--out", str(ro / "st")])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1, err
    assert err[0] == f"reprlab: error: cannot create folder {ro / 'st'}: read-only file system"
    print(f"read-only study folder: {how}")  # after capsys.readouterr(), so that the test log shows it


# ---- the method axis: one recipe per method, probes matched to their method


def test_ssl_methods_study_has_one_pretraining_per_method_and_seed_with_its_own_recipe():
    from reprlab.studies.spec import builtin_studies, instance_config, load_study, run_argv

    path = next(p for p in builtin_studies() if p.stem == "ssl_methods")
    study = load_study(path)  # validate=True: every run's config is built
    pre = [n for n in study.nodes.values() if n.kind == "run" and n.spec.name == "ssl"]
    methods = ["simclr", "byol", "mocov2", "mocov3", "simsiam", "barlow_twins", "vicreg", "dino", "swav"]
    assert sorted(n.name for n in pre) == sorted(f"ssl-{m}-s{s}" for m in methods for s in range(3))
    for n in pre:
        assert instance_config(n.spec, n.axes).endswith(f"configs/pretrain/{n.axes['method.name']}_cifar100.toml")
        argv = run_argv(study, n, None)
        assert "train.epochs=200" in argv and argv[argv.index("--config") + 1].endswith(f"{n.axes['method.name']}_cifar100.toml")
    probe = study.nodes["probe-dino-s1"]
    assert probe.backbone.endswith("ssl-dino-s1/checkpoints/last.pt")


def test_methods_override_all_and_errors(tmp_path):
    from reprlab.methods.ssl import SSLMethod
    from reprlab.registry import METHODS
    from reprlab.studies.spec import builtin_studies, load_study

    path = next(p for p in builtin_studies() if p.stem == "ssl_vs_supervised")
    default = load_study(path, validate=False)
    assert {n.axes["method.name"] for n in default.nodes.values() if n.spec.name == "ssl"} == {"simclr", "byol", "barlow_twins"}
    everything = load_study(path, validate=False, methods=["all"])
    ssl = {n for n in METHODS.names() if issubclass(METHODS.get(n), SSLMethod)}
    assert {n.axes["method.name"] for n in everything.nodes.values() if n.spec.name == "ssl"} == ssl and len(ssl) >= 9
    assert {n.axes["method.name"] for n in everything.nodes.values() if n.spec.name == "full-ssl"} == ssl
    with pytest.raises(ReprlabError, match=r"method 'bayol' is not registered; did you mean 'byol'"):
        load_study(path, validate=False, methods=["simclr", "bayol"])
    f = tmp_path / "s.toml"
    f.write_text('[study]\nname = "s"\n[[run]]\nname = "a"\ncommand = "pretrain"\nconfig = "configs/pretrain/{method.name}_cifar100.toml"\ngrid = { "method.name" = "{methods}" }\n')
    with pytest.raises(ReprlabError, match=r"uses '\{methods\}' but the study names no methods"):
        load_study(f, validate=False)
    f.write_text('[study]\nname = "s"\n[[run]]\nname = "a"\ncommand = "pretrain"\nconfig = "configs/pretrain/{model}_cifar100.toml"\nseeds = [0]\n')
    with pytest.raises(ReprlabError, match=r"config placeholder \{model\} is not an axis"):
        load_study(f)


@pytest.mark.parametrize("args, words", [
    (["quick", "--methods", "byol"], "--methods byol: study 'quick' has no method axis"),  # quick would run SimCLR anyway
    (["ssl_methods", "--methods", ""], "--methods '': expected method names separated by commas"),  # not "the defaults"
    (["ssl_methods", "--methods", "simclr,,byol"], "--methods 'simclr,,byol': expected method names"),
    (["quick", "--workers", "0"], "--workers must be >= 1, got 0"),
    (["quick", "--workers", "-1"], "--workers must be >= 1, got -1"),
    (["quick", "--gpus-per-run", "0"], "--gpus-per-run must be >= 1, got 0"),
])
@pytest.mark.parametrize("dry", [True, False])
def test_study_options_that_would_be_ignored_are_refused_alike_in_the_run_and_its_dry_run(tmp_path, capsys, args, words, dry):
    from reprlab.cli import main

    code = main(["study", "run", *args, "--out", str(tmp_path / "out"), *(["--dry-run"] if dry else [])])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and err[0].startswith("reprlab: error: ") and words in err[0], err
    assert not (tmp_path / "out").exists()


def test_gpus_per_run_wraps_training_commands_in_torchrun_and_groups_gpus(monkeypatch):
    from reprlab.studies import runner
    from reprlab.studies.process import display, under_torchrun

    argv = [sys.executable, "-m", "reprlab", "--data-root", "d", "pretrain", "--config", "c.toml"]
    assert display(under_torchrun(argv, 2)) == "torchrun --standalone --nproc-per-node 2 -m reprlab --data-root d pretrain --config c.toml"
    assert under_torchrun(argv, 1) == argv
    sweep = [sys.executable, "-m", "reprlab", "sweep", "s.toml"]
    assert under_torchrun(sweep, 4) == sweep  # a sweep process stays one process
    monkeypatch.setattr("torch.cuda.device_count", lambda: 8)
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    envs = runner.worker_envs(4, 2)
    assert [e["CUDA_VISIBLE_DEVICES"] for e in envs] == ["0,1", "2,3", "4,5", "6,7"]
    with pytest.raises(ReprlabError, match=r"--workers 3 x --gpus-per-run 4 needs 12 GPUs; 8 visible"):
        runner.worker_envs(3, 4)
    monkeypatch.setattr("torch.cuda.device_count", lambda: 0)
    cores = len(os.sched_getaffinity(0))
    assert runner.worker_envs(1, 2)[0]["OMP_NUM_THREADS"] == str(max(1, cores // 2))  # the run's 2 processes share the cores
