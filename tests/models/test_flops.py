"""The FLOP convention (hand counts) and throughput (reprlab/models/flops.py)."""

from __future__ import annotations

import pytest
import torch
import torch.nn as nn
from timm.layers import Attention

from reprlab.errors import ReprlabError
from reprlab.models import create_model
from reprlab.models.flops import count_flops, count_forward_flops, count_params, measure_throughput
from reprlab.models.vit import vit_flop_count


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
