"""`reprlab match` (reprlab/commands/match.py): ranked ViT shapes with their overrides."""

from __future__ import annotations

import pytest

from helpers_commands import run_plugin as _cli
from reprlab.errors import ReprlabError


def test_cli_match_prints_ranked_overrides(capsys) -> None:
    assert _cli("match", ["resnet18", "--family", "vit", "--top", "2"]) == 0
    out = capsys.readouterr().out
    assert "depth=9 dim=320 heads=5 mlp_ratio=4 patch_size=4" in out
    assert "11,220,132" in out and "11,166,180" in out and "-0.48%" in out
    assert "model.name=vit model.kwargs.depth=9 model.kwargs.dim=320" in out


def test_cli_match_flops_and_empty(capsys) -> None:
    assert _cli("match", ["vgg11_bn", "--flops", "--top", "1"]) == 0
    out = capsys.readouterr().out
    assert "0.306 GFLOPs/image" in out and "FLOP gap" in out
    assert _cli("match", ["resnet18", "--tolerance", "0.0001", "--mlp-ratios", "2"]) == 1
    assert "no ViT shape" in capsys.readouterr().out
    with pytest.raises(ReprlabError, match="--flops"):
        _cli("match", ["resnet18", "--flops-tolerance", "0.1"])
