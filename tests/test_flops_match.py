"""FLOP convention (hand counts), throughput, ViT shape matching and the two CLI plug-ins."""

from __future__ import annotations

import argparse
import importlib
import sys

import pytest
import torch
import torch.nn as nn
from timm.layers import Attention

from reprlab.errors import ReprlabError
from reprlab.models import create_model
from reprlab.models.flops import FLOP_CONVENTION, count_flops, count_forward_flops, count_params, measure_throughput
from reprlab.models.match import GAP_BIN, match_vit
from reprlab.models.vit import R18_SHAPE, vit_flop_count, vit_param_count


def _meta(name: str, **kw) -> nn.Module:
    with torch.device("meta"):
        return create_model(name, **kw)


# ---------------------------------------------------------------- FLOPs: hand counts


class _Conv(nn.Module):
    def __init__(self, **kw) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 8, **kw)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x)


@pytest.mark.parametrize(
    "kw, hout",
    [
        ({"kernel_size": 3, "padding": 1, "bias": True}, 16),
        ({"kernel_size": 3, "padding": 1, "bias": False}, 16),  # bias not counted: same number
        ({"kernel_size": 5, "stride": 2, "padding": 0, "bias": True}, 6),
    ],
)
def test_conv_flops_match_hand_count(kw: dict, hout: int) -> None:
    k = kw["kernel_size"]
    expected = 2 * 3 * 8 * k * k * hout * hout  # 2 FLOPs per multiply-add; bias add not counted
    assert count_flops(_Conv(**kw), input_size=16) == expected
    # Per image: a batch of 3 counts 3x, and count_flops divides it back out.
    assert count_flops(_Conv(**kw), input_size=16, batch=3) == expected


@pytest.mark.parametrize("device", ["cpu", "meta"])
def test_attention_flops_match_hand_count(device: str) -> None:
    n, d, heads = 17, 64, 4
    with torch.device(device):
        attn = Attention(d, num_heads=heads, qkv_bias=True)
        x = torch.zeros(2, n, d)
    qkv = 2 * n * d * (3 * d)
    scores = 2 * n * n * d  # QK^T over all heads: sum_h n*n*(d/h) multiply-adds
    mix = 2 * n * n * d  # AV
    proj = 2 * n * d * d
    # On CPU this runs the fused attention kernel, which torch's counter alone would miss.
    assert count_forward_flops(attn, x) == 2 * (qkv + scores + mix + proj)


def test_one_convention_for_conv_and_linear() -> None:
    # A patch-embedding convolution and a Linear over flattened patches do the same multiply-adds,
    # and must be counted identically: the convention is shared, not per op type.
    p, d, size = 4, 32, 16
    conv = nn.Conv2d(3, d, kernel_size=p, stride=p)
    lin = nn.Linear(3 * p * p, d)
    tokens = (size // p) ** 2
    c = count_forward_flops(conv, torch.zeros(1, 3, size, size))
    l = count_forward_flops(lin, torch.zeros(1, tokens, 3 * p * p))
    assert c == l == 2 * tokens * 3 * p * p * d


def test_vit_flops_closed_form_same_on_cpu_and_meta() -> None:
    kw = dict(depth=2, dim=64, heads=2, mlp_ratio=3, patch_size=8)
    cpu = create_model("vit", num_classes=10, **kw)
    meta = _meta("vit", num_classes=10, **kw)
    expected = vit_flop_count(2, 64, 3, 8, 32, 10)
    assert count_flops(cpu) == count_flops(meta) == expected
    # Hand count for one block over 17 tokens: qkv, QK^T, AV, proj, MLP (fc1 + fc2).
    n, d, h = 17, 64, 192
    block = 2 * n * d * 3 * d + 2 * 2 * n * n * d + 2 * n * d * d + 2 * 2 * n * d * h
    assert expected == 2 * 3 * 64 * 64 * 16 + 2 * block + 2 * 64 * 10


def test_flops_of_registered_cnns() -> None:
    # CIFAR ResNet-18 is 0.556 G multiply-adds per 32x32 image, i.e. 1.11 GFLOPs here.
    assert count_flops(_meta("resnet18")) == 1_110_937_600
    assert count_flops(_meta("vgg11_bn")) == 305_631_232


def test_count_flops_restores_mode_and_rejects_bad_input() -> None:
    model = create_model("vit", depth=1, dim=32, patch_size=8)
    model.train()
    count_flops(model)
    assert model.training
    with pytest.raises(ReprlabError, match="input_size"):
        count_flops(nn.Linear(2, 2))
    with pytest.raises(ReprlabError, match="batch"):
        count_flops(model, batch=0)


def test_count_params_by_hand() -> None:
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.Linear(4, 2))
    assert count_params(model) == (3 * 4 * 9 + 4) + (4 + 4) + (4 * 2 + 2)
    model[0].weight.requires_grad_(False)
    assert count_params(model, trainable_only=True) == 4 + 8 + 10


# ---------------------------------------------------------------- throughput


@pytest.mark.parametrize("mode", ["train", "eval"])
def test_throughput_positive_and_leaves_model_untouched(mode: str) -> None:
    model = create_model("resnet18", num_classes=10, width=4)  # family "cnn": channels_last path
    before = {k: v.clone() for k, v in model.state_dict().items()}
    rate = measure_throughput(model, 32, batch=4, device="cpu", mode=mode, steps=1, warmup=1)
    assert rate > 0
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert next(model.parameters()).is_contiguous()  # caller's copy not converted to channels_last


def test_throughput_headless_vit_trains_a_copy() -> None:
    # a headless model has no logits: the train-mode measurement must still back-propagate
    # (through a loss on the features) and must do so on a copy, not on the caller's weights
    model = create_model("vit", num_classes=0, depth=1, dim=32, patch_size=8)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    rate = measure_throughput(model, batch=2, steps=1, warmup=0)
    assert 0 < rate < float("inf")
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


@pytest.mark.parametrize(
    "kw, fragment",
    [({"mode": "infer"}, "mode"), ({"batch": 0}, "batch"), ({"device": "nonsense"}, "device"), ({"steps": 0}, "steps")],
)
def test_throughput_rejects_bad_input(kw: dict, fragment: str) -> None:
    args = {"batch": 2, "device": "cpu", "mode": "eval", "steps": 1, "warmup": 0, **kw}
    with pytest.raises(ReprlabError, match=fragment):
        measure_throughput(nn.Linear(3, 2), 8, **args)


@pytest.mark.skipif(torch.cuda.is_available(), reason="only meaningful without CUDA")
def test_throughput_cuda_missing_is_a_user_error() -> None:
    with pytest.raises(ReprlabError, match="CUDA is not available"):
        measure_throughput(nn.Linear(3, 2), 8, batch=1, device="cuda", steps=1)


# ---------------------------------------------------------------- matching


@pytest.mark.parametrize("target", ["resnet18", "resnet34", "vgg16_bn"])
def test_match_within_tolerance_and_counts_are_real(target: str) -> None:
    params = count_params(_meta(target))
    found = match_vit(params, tolerance=0.02, top=3)
    assert len(found) == 3
    for c in found:
        assert c.verified
        assert abs(c.params - params) <= 0.02 * params
        assert c.param_gap == c.params - params
        assert c.dim % c.heads == 0 and c.head_dim in (32, 64)
        # Build through the registry exactly as the printed kwargs say.
        model = _meta("vit", num_classes=100, **c.kwargs())
        assert sum(p.numel() for p in model.parameters()) == c.params
        assert f"depth={c.depth} dim={c.dim} heads={c.heads}" in c.override()
    # Ranked: the 0.5 % bins never go down.
    bins = [int(abs(c.rel_gap) / GAP_BIN) for c in found]
    assert bins == sorted(bins)


def test_resnet18_best_match_is_the_preset_and_really_instantiates() -> None:
    best = match_vit(11_220_132, top=1)[0]
    assert {k: getattr(best, k) for k in R18_SHAPE} == R18_SHAPE
    model = create_model("vit", **best.kwargs())  # a real CPU model this time
    assert sum(p.numel() for p in model.parameters()) == best.params == 11_166_180


def test_match_ranking_and_filters() -> None:
    all_found = match_vit(11_220_132, tolerance=0.01, top=None)
    assert len(all_found) >= 4
    assert all(abs(c.rel_gap) <= 0.01 for c in all_found)
    keys = [(int(abs(c.rel_gap) / GAP_BIN), c.shape_penalty) for c in all_found]
    assert keys == sorted(keys)
    # A FLOP target and tolerance keep only shapes within it, ranked by FLOP gap inside a bin.
    target = 1_500_000_000
    with_flops = match_vit(11_220_132, tolerance=0.02, flops_target=target, flops_tolerance=0.01, top=4)
    assert len(with_flops) == 4 and all(abs(c.flops - target) <= 0.01 * target for c in with_flops)
    assert [int(abs(c.rel_gap) / GAP_BIN) for c in with_flops] == sorted(int(abs(c.rel_gap) / GAP_BIN) for c in with_flops)
    assert all(c.flops_rel_gap is not None for c in with_flops)
    # Head width 32 only when asked.
    narrow = match_vit(11_220_132, head_dims=(32,), top=2)
    assert all(c.head_dim == 32 for c in narrow)


def test_match_analytic_count_for_other_patch_and_pool() -> None:
    found = match_vit(5_000_000, patch_sizes=(2, 8), pool="avg", mlp_ratios=(4,), top=4)
    assert {c.patch_size for c in found} <= {2, 8}
    for c in found:
        assert vit_param_count(c.depth, c.dim, 4, c.patch_size, 32, 100, "avg") == c.params
        assert count_params(_meta("vit", **c.kwargs())) == c.params


@pytest.mark.parametrize(
    "kw, fragment",
    [
        ({"target_params": 0}, "target_params"),
        ({"tolerance": 0}, "tolerance"),
        ({"patch_sizes": (5,)}, "patch_sizes"),
        ({"flops_tolerance": 0.1}, "flops_target"),
        ({"dims": ()}, "dims"),
        ({"top": 0}, "top"),
    ],
)
def test_match_rejects_bad_input(kw: dict, fragment: str) -> None:
    args = {"target_params": 11_000_000, **kw}
    with pytest.raises(ReprlabError, match=fragment):
        match_vit(**args)


# ---------------------------------------------------------------- CLI plug-ins


@pytest.fixture(autouse=True)
def _plain_tables(monkeypatch) -> None:
    # Force the plain-text table whether or not rich is installed, so rows can be parsed.
    monkeypatch.setitem(sys.modules, "rich", None)
    monkeypatch.setitem(sys.modules, "rich.console", None)
    monkeypatch.setitem(sys.modules, "rich.table", None)


def _cli(name: str, argv: list[str]) -> int:
    mod = importlib.import_module(f"reprlab.commands.{name}")
    assert mod.NAME == name and isinstance(mod.HELP, str) and "\n" not in mod.HELP
    parser = argparse.ArgumentParser()
    mod.add_arguments(parser)
    return mod.run(parser.parse_args(argv))


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
