"""The ViT (reprlab/models/vit.py): a preset that copies blocks, an extended ViT loaded from weights,
bad configs, closed-form parameter counts, average pooling."""

from __future__ import annotations

import torch
import torch.nn as nn
import pytest

from reprlab.errors import ReprlabError
from reprlab.models import create_model
from reprlab.models.flops import count_params
from reprlab.models.vit import ViT, build_extended_vit, vit_param_count


def test_vit_b16_plus6_copies_blocks_6_to_11() -> None:
    with torch.device("meta"):
        model = create_model("vit_b16_plus6_224")
    assert len(model.blocks) == 18 and model.copied_blocks == (6, 7, 8, 9, 10, 11)
    base = vit_param_count(12, 768, 4.0, 16, 224, 100)
    per_block = sum(p.numel() for p in model.blocks[0].parameters())
    assert count_params(model) == base + 6 * per_block


def test_extended_vit_loads_weights_then_copies(tmp_path) -> None:
    torch.manual_seed(1)
    shape = dict(img_size=32, patch_size=8, depth=3, dim=64, heads=2)
    source = ViT(num_classes=10, **shape)
    path = tmp_path / "vit.pth"
    torch.save({"model": source.state_dict()}, path)  # DeiT-style wrapper; its 10-class head is ignored

    model = build_extended_vit(4, copy_blocks=[1, 2], weights=str(path), drop_path_rate=0.1, **shape)
    assert len(model.blocks) == 5
    for i, j in [(0, 0), (1, 1), (2, 2), (3, 1), (4, 2)]:
        for (k, a), b in zip(model.blocks[i].state_dict().items(), source.blocks[j].state_dict().values()):
            assert torch.equal(a, b), f"block {i} {k} != source block {j}"
    # Copies are independent parameters, not shared modules.
    assert model.blocks[3].attn.qkv.weight.data_ptr() != model.blocks[1].attn.qkv.weight.data_ptr()
    torch.testing.assert_close(model.pos_embed, source.pos_embed)
    assert model.get_classifier().out_features == 4
    # Stochastic depth is re-laid over the final depth: 0 for the first block, the max for the last.
    assert isinstance(model.blocks[0].drop_path1, nn.Identity)
    assert model.blocks[4].drop_path1.drop_prob == pytest.approx(0.1)
    assert model(torch.randn(2, 3, 32, 32)).shape == (2, 4)


def test_extended_vit_rejects_bad_inputs(tmp_path) -> None:
    shape = dict(img_size=32, patch_size=8, depth=2, dim=32, heads=1)
    with pytest.raises(ReprlabError, match="not found"):
        build_extended_vit(3, [0], weights=str(tmp_path / "missing.pth"), **shape)
    wrong = ViT(num_classes=3, img_size=32, patch_size=8, depth=2, dim=64, heads=1).state_dict()
    torch.save(wrong, tmp_path / "wrong.pth")
    with pytest.raises(ReprlabError, match="expected shape"):
        build_extended_vit(3, [0], weights=str(tmp_path / "wrong.pth"), **shape)
    with pytest.raises(ReprlabError, match="copy_blocks"):
        build_extended_vit(3, [2], **shape)


@pytest.mark.parametrize(
    "kwargs, fragment",
    [
        ({"dim": 96, "heads": 5}, "heads=5"),
        ({"patch_size": 5}, "patch_size=5"),
        ({"pool": "max"}, "pool='max'"),
        ({"depth": 0}, "depth=0"),
        ({"dim": 100}, "dim 100"),
        ({"drop_path_rate": 1.5}, "drop_path_rate"),
        ({"not_a_kwarg": 1}, "not_a_kwarg"),
    ],
)
def test_vit_bad_config_is_a_user_error(kwargs: dict, fragment: str) -> None:
    with pytest.raises(ReprlabError, match=fragment.replace("(", r"\(")):
        create_model("vit", **kwargs)


@pytest.mark.parametrize(
    "kwargs",
    [
        {},
        {"depth": 3, "dim": 96, "mlp_ratio": 3, "pool": "avg", "qkv_bias": False},
        {"depth": 2, "dim": 64, "patch_size": 8, "num_classes": 0},
        {"depth": 1, "dim": 160, "heads": 5, "mlp_ratio": 2.5, "patch_size": 2},
    ],
)
def test_vit_closed_form_param_count(kwargs: dict) -> None:
    with torch.device("meta"):
        model = create_model("vit", **kwargs)
    cfg = {"depth": 6, "dim": 256, "mlp_ratio": 4.0, "patch_size": 4, "num_classes": 100, "pool": "token", "qkv_bias": True}
    cfg.update({k: v for k, v in kwargs.items() if k in cfg})
    assert vit_param_count(img_size=32, **cfg) == count_params(model)


def test_vit_avg_pool_has_no_class_token() -> None:
    model = create_model("vit", depth=1, dim=64, pool="avg")
    assert model.cls_token is None and model.pos_embed.shape == (1, 64, 64)
    with pytest.raises(ReprlabError, match="global_pool"):
        model.reset_classifier(10, global_pool="token")
