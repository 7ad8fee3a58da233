"""The command line as a Unix tool: a closed pipe ends a command quietly, and an operating-system
error (read-only file system, full disk, permission) is one line without a traceback."""

from __future__ import annotations

import errno
import os
import subprocess
import sys

import pytest

from reprlab.cli import main

BROKEN_PIPE_EXIT = 141  # 128 + SIGPIPE, what a shell reports for `yes | head -1`'s writer


def _closed_pipe(args: list[str]) -> subprocess.CompletedProcess:
    """Run ``reprlab ARGS`` with stdout a real pipe whose reading end is already closed (the
    state ``| head`` leaves behind), so the command's first write meets a broken pipe."""
    r, w = os.pipe()
    os.close(r)
    try:
        p = subprocess.run([sys.executable, "-m", "reprlab", *args], stdout=w, stderr=subprocess.PIPE, text=True, timeout=120)
    finally:
        os.close(w)
    return p


@pytest.mark.parametrize("args", [["config"], ["study", "run", "quick", "--dry-run"], ["study", "list"]])
def test_a_closed_pipe_ends_the_command_quietly(args):
    p = _closed_pipe(args)
    assert p.stderr == "" and p.returncode == BROKEN_PIPE_EXIT, p.stderr[-2000:]


def test_head_reads_the_first_lines_and_the_command_ends_quietly():
    p = subprocess.run(f"{sys.executable} -m reprlab config | head -n 2", shell=True, capture_output=True, text=True, timeout=120)
    assert p.returncode == 0 and len(p.stdout.splitlines()) == 2
    assert "Traceback" not in p.stderr and "BrokenPipeError" not in p.stderr


@pytest.mark.parametrize(
    "err, cause",
    [(errno.EROFS, "read-only file system"), (errno.ENOSPC, "no space left on device"), (errno.EACCES, "permission denied")],
)
def test_an_operating_system_error_is_one_line_naming_the_path_and_the_cause(monkeypatch, capsys, err, cause):
    def fail(args):
        raise OSError(err, os.strerror(err), "/some/where/file")

    monkeypatch.setattr("reprlab.commands.params.run", fail)
    assert main(["params", "resnet18"]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert lines == [f"reprlab: error: /some/where/file: {cause}"]


def test_other_os_errors_keep_their_traceback(monkeypatch):
    def fail(args):
        raise OSError(errno.EINVAL, "Invalid argument", "/x")

    monkeypatch.setattr("reprlab.commands.params.run", fail)
    with pytest.raises(OSError):
        main(["params", "resnet18"])


def test_data_root_flag_lasts_one_call(tmp_path, monkeypatch, capsys):
    # main() runs in-process in tests and notebooks: one call's --data-root must not become
    # every later call's data root (it once leaked into the tests that ran after it).
    from reprlab.cli import main
    from reprlab.data import paths

    monkeypatch.setenv(paths.ENV_DATA, str(tmp_path / "env-root"))
    main(["--data-root", str(tmp_path / "flag-root"), "data", "info", "no-such-dataset"])
    capsys.readouterr()
    assert paths.data_root() == (tmp_path / "env-root", f"${paths.ENV_DATA}")


def test_overrides_and_options_mix_in_any_order_and_the_last_override_wins(capsys):
    import tomllib

    argv = ["pretrain", "train.max_steps=1", "--config", "configs/pretrain/byol_cifar100.toml", 'run.name="foo"', "--print-config", "train.max_steps=3"]
    assert main(argv) == 0
    cfg = tomllib.loads(capsys.readouterr().out)
    assert cfg["method"]["name"] == "byol" and cfg["run"]["name"] == "foo" and cfg["train"]["max_steps"] == 3


def test_a_word_that_is_neither_option_nor_override_is_refused_with_the_subcommand_usage(capsys):
    with pytest.raises(SystemExit) as e:
        main(["pretrain", "train.max_steps=1", "--config", "configs/pretrain/byol_cifar100.toml", "--bogus", "run.name=foo"])
    err = capsys.readouterr().err
    assert e.value.code == 2 and "usage: reprlab pretrain" in err and "reprlab pretrain: error: unrecognized arguments: --bogus" in err


@pytest.mark.parametrize("name", ["../escape", "a/b", "..", ".", ".hidden", "x\\\\y", " x", "x\\ty"])
def test_a_run_name_is_one_folder_name_and_nothing_is_written_outside_out_dir(tmp_path, capsys, name):
    out = tmp_path / "runs"
    code = main(["--data-root", str(tmp_path / "none"), "train", "data.download=false", f'run.out_dir="{out}"', f'run.name="{name}"',
                 f'data.cache_dir="{tmp_path}/c"'])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and err[0].startswith("reprlab: error: config key 'run.name': ") and "is not a folder name" in err[0], err
    assert sorted(p.name for p in tmp_path.iterdir()) == []  # no run directory, inside out_dir or next to it
