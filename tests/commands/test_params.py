"""`reprlab params` (reprlab/commands/params.py): counts, FLOPs, throughput only when asked, the model list."""

from __future__ import annotations

import argparse
import importlib

import pytest

from helpers_commands import run_plugin as _cli
from reprlab.errors import ReprlabError
from reprlab.models.flops import FLOP_CONVENTION


def test_cli_params_counts_heavy_without_timing(capsys) -> None:
    assert _cli("params", ["resnet18", "vgg11_bn_imagenet224", "vit_b16_plus6_224", "--no-throughput"]) == 0
    out = capsys.readouterr().out
    assert "11,220,132" in out and "129,181,540" in out and "128,402,788" in out
    assert "1.111" in out  # resnet18 GFLOPs/image
    assert FLOP_CONVENTION in out


def test_cli_params_times_light_but_not_heavy(capsys) -> None:
    argv = ["vit", "vgg11_bn_imagenet224", "--throughput", "--batch", "2", "--steps", "1", "--warmup", "0", "--num-classes", "10"]
    assert _cli("params", argv) == 0
    out = capsys.readouterr().out
    vit_row = next(line for line in out.splitlines() if line.startswith("vit "))
    heavy_row = next(line for line in out.splitlines() if line.startswith("vgg11_bn_imagenet224"))
    assert vit_row.split()[-1] != "-" and vit_row.split()[-2] != "-"
    assert heavy_row.split()[-2:] == ["-", "-"]
    assert "add --heavy" in out


def test_cli_params_does_not_time_unless_asked_and_says_so(capsys, monkeypatch) -> None:
    def no_timing(*a, **k):
        raise AssertionError("params timed a model without --throughput")

    monkeypatch.setattr("reprlab.models.flops.measure_throughput", no_timing)
    assert _cli("params", ["resnet18", "vgg11_bn", "vit_c100_small"]) == 0
    out = capsys.readouterr().out
    assert "11,220,132" in out and "--throughput" in out  # the note says how to get img/s
    parser = argparse.ArgumentParser()
    importlib.import_module("reprlab.commands.params").add_arguments(parser)
    assert "--throughput" in parser.format_help() and "seconds" in parser.format_help()


def test_cli_params_list(capsys) -> None:
    assert _cli("params", ["--list"]) == 0
    rows = {line.split()[0]: line for line in capsys.readouterr().out.splitlines()[3:]}
    assert "heavy" in rows["vit_b16_plus6_224"] and "heavy" not in rows["vit_c100_r18"]
    assert {"vgg11_bn", "vgg13_bn", "vgg16_bn", "vit", "vit_c100_tiny", "vit_c100_small"} <= rows.keys()


def test_cli_params_rejects_unknown_model_and_bad_batch() -> None:
    with pytest.raises(ReprlabError, match="--list"):
        _cli("params", [])
    with pytest.raises(ReprlabError, match="resnet18"):
        _cli("params", ["resnet81", "--no-throughput"])
    with pytest.raises(ReprlabError, match="--batch"):
        _cli("params", ["resnet18", "--batch", "0"])
