"""The model registry contract for every registered architecture, and weight transfer.

CPU budget: every non-heavy model runs one training forward/backward and one ``embed`` at
batch 2; the heavy 224 px presets (~130 M params) are built on the meta device only, which
checks their parameter counts and output shapes without allocating or computing anything.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torchvision
import pytest

from reprlab.errors import ReprlabError
from reprlab.models import create_model, get_entry, list_models
from reprlab.models.flops import count_params
from reprlab.models.transfer import load_matching
from reprlab.models.vit import ViT, build_extended_vit, vit_param_count

LIGHT = [n for n in list_models() if not get_entry(n).heavy]
HEAVY = [n for n in list_models() if get_entry(n).heavy]

# Hand-checked counts (100-class heads); a change to an architecture must show up here.
EXPECTED_PARAMS = {
    "resnet18": 11_220_132,
    "resnet34": 21_328_292,
    "vgg11_bn": 9_277_284,
    "vgg13_bn": 9_462_180,
    "vgg16_bn": 14_774_436,
    "vit_c100_tiny": 5_380_132,
    "vit_c100_small": 21_376_996,
    "vit_c100_r18": 11_166_180,
    "vgg11_bn_imagenet224": 129_181_540,
    "vit_b16_plus6_224": 128_402_788,
}


def test_registry_has_the_expected_models() -> None:
    names = set(list_models())
    for name in ["vgg11_bn", "vgg13_bn", "vgg16_bn", "vgg11_bn_imagenet224", "vit", "vit_c100_tiny",
                 "vit_c100_small", "vit_c100_r18", "vit_b16_plus6_224"]:
        assert name in names
    assert set(HEAVY) >= {"vgg11_bn_imagenet224", "vit_b16_plus6_224"}
    assert get_entry("vit_b16_plus6_224").input_size == 224 and get_entry("vit_c100_r18").input_size == 32


def test_vgg11_bn_params_by_hand() -> None:
    # conv weights+biases of config A, two BN vectors per conv, then Linear(512, 100).
    chans = [3, 64, 128, 256, 256, 512, 512, 512, 512]
    conv = sum(cin * cout * 9 + cout for cin, cout in zip(chans, chans[1:]))
    bn = sum(2 * c for c in chans[1:])
    assert EXPECTED_PARAMS["vgg11_bn"] == conv + bn + 512 * 100 + 100


@pytest.mark.parametrize("name", sorted(EXPECTED_PARAMS))
def test_param_counts(name: str) -> None:
    with torch.device("meta"):
        model = create_model(name, num_classes=100)
    assert count_params(model) == EXPECTED_PARAMS[name]


@pytest.mark.parametrize("name", LIGHT)
def test_contract_forward_backward(name: str) -> None:
    torch.manual_seed(0)
    model = create_model(name, num_classes=7)
    size = model.input_size
    assert size == get_entry(name).input_size
    assert model.family in ("cnn", "vit")
    batch = 2 if size <= 64 else 1  # one 224 px image costs as much as ~50 CIFAR images
    x = torch.randn(batch, 3, size, size)

    model.train()
    out = model(x)
    assert out.shape == (batch, 7)
    assert torch.isfinite(out).all()
    out.float().logsumexp(1).mean().backward()
    grads = [p.grad for p in model.parameters() if p.requires_grad]
    assert all(g is not None and torch.isfinite(g).all() for g in grads), "a parameter got no/non-finite gradient"
    assert any(g.abs().sum() > 0 for g in grads)

    # In train mode BatchNorm uses batch statistics, so the same batch gives the same output.
    with torch.no_grad():
        feats = model.embed(x)
        assert feats.shape == (batch, model.num_features)
        head = model.get_classifier()
        assert isinstance(head, nn.Linear) and head.in_features == model.num_features and head.out_features == 7
        torch.testing.assert_close(head(feats), out.detach(), rtol=1e-4, atol=1e-4)

    # Headless: with the contract above, an identity classifier makes the forward return features
    # (the headless forward itself is checked on the meta device below, to save CPU).
    model.reset_classifier(0)
    assert isinstance(model.get_classifier(), nn.Identity)
    model.reset_classifier(5)
    assert model.get_classifier().out_features == 5


@pytest.mark.parametrize("name", LIGHT + HEAVY)
def test_headless_backbone_from_factory(name: str) -> None:
    # Shape-level check on the meta device: cheap even for the heavy presets.
    with torch.device("meta"):
        model = create_model(name, num_classes=0)
        assert isinstance(model.get_classifier(), nn.Identity)
        model.eval()
        out = model(torch.zeros(1, 3, model.input_size, model.input_size))
    assert out.shape == (1, model.num_features)


@pytest.mark.parametrize("name", HEAVY)
def test_heavy_presets_shapes(name: str) -> None:
    with torch.device("meta"):
        model = create_model(name, num_classes=100)
        model.eval()
        x = torch.zeros(1, 3, 224, 224)
        assert model(x).shape == (1, 100)
        assert model.embed(x).shape == (1, model.num_features)
    assert model.input_size == 224 and model.heavy


def test_vgg_imagenet_head_layout() -> None:
    with torch.device("meta"):
        model = create_model("vgg11_bn_imagenet224", num_classes=100)
        ref = torchvision.models.vgg11_bn()
    # Identical keys and shapes except the classifier width: torchvision weights map 1:1.
    ours = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    theirs = {k: tuple(v.shape) for k, v in ref.state_dict().items()}
    assert ours.keys() == theirs.keys()
    assert [k for k in ours if ours[k] != theirs[k]] == ["classifier.6.weight", "classifier.6.bias"]
    assert model.get_classifier() is model.classifier[6] and model.num_features == 4096


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


def test_vgg_imagenet_weights_errors(tmp_path) -> None:
    with pytest.raises(ReprlabError, match="not found"):
        create_model("vgg11_bn_imagenet224", weights=str(tmp_path / "nope.pth"))
    torch.save({"features.0.weight": torch.zeros(1)}, tmp_path / "bad.pth")
    with pytest.raises(ReprlabError, match="features.0.weight"):
        create_model("vgg11_bn_imagenet224", weights=str(tmp_path / "bad.pth"))


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


def test_torchvision_resnet18_weights_map() -> None:
    torch.manual_seed(0)
    ref = torchvision.models.resnet18()
    ours = create_model("resnet18", num_classes=100)
    fc_before = ours.fc.weight.detach().clone()
    loaded, skipped = load_matching(ours, ref.state_dict())
    # Only the 7x7 ImageNet stem and the 1000-class classifier cannot map onto the CIFAR variant.
    assert sorted(skipped) == ["conv1.weight", "fc.bias", "fc.weight"]
    assert len(loaded) == len(ref.state_dict()) - 3
    sd = ours.state_dict()
    for key in ["layer1.0.conv1.weight", "layer4.1.conv2.weight", "layer3.0.downsample.0.weight", "bn1.running_var"]:
        assert key in loaded
        assert torch.equal(sd[key], ref.state_dict()[key])
    assert torch.equal(ours.fc.weight, fc_before)  # skipped tensors keep the model's values


def test_torchvision_vgg11_bn_weights_map() -> None:
    torch.manual_seed(0)
    ref = torchvision.models.vgg11_bn(init_weights=False)  # default layer init is enough here
    with torch.no_grad():
        ref.features[1].running_mean.uniform_()  # a buffer, to check buffers travel too
    ours = create_model("vgg11_bn", num_classes=100)
    loaded, skipped = load_matching(ours, ref.state_dict())
    feature_keys = [k for k in ref.state_dict() if k.startswith("features.")]
    assert sorted(loaded) == sorted(feature_keys)
    assert sorted(skipped) == sorted(k for k in ref.state_dict() if k.startswith("classifier."))
    for i, layer in enumerate(ref.features):
        if isinstance(layer, nn.Conv2d):
            assert torch.equal(ours.features[i].weight, layer.weight), f"features.{i}"
    assert torch.equal(ours.features[1].running_mean, ref.features[1].running_mean)


def test_load_matching_rejects_non_mapping() -> None:
    with pytest.raises(ReprlabError, match="expected a mapping"):
        load_matching(nn.Linear(2, 2), [torch.zeros(2)])  # type: ignore[arg-type]


def test_factory_arguments_read_from_the_source_match_the_imported_factories() -> None:
    """A config checks model arguments from the source of reprlab/models (no torch import): what
    it reads must be exactly what the registered factory takes, for every model."""
    import inspect

    from reprlab.models.registry import _declared_arguments, factory_arguments

    declared = _declared_arguments()
    assert set(declared) == set(list_models())  # every model is registered under a literal name
    for name in list_models():
        params = inspect.signature(get_entry(name).factory).parameters.values()
        names = [p.name for p in params if p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD) and p.name != "num_classes"]
        assert factory_arguments(name) == (names, any(p.kind is p.VAR_KEYWORD for p in params)), name
    assert factory_arguments("resnet18") == (["width", "zero_init_residual"], False)


def test_a_model_argument_typo_is_one_line_with_the_closest_argument() -> None:
    from reprlab.config import load_config

    with pytest.raises(ReprlabError, match=r"config key 'model.kwargs.widht': model 'resnet18' takes no argument 'widht'; did you mean 'model.kwargs.width'\? \(it takes: width, zero_init_residual\)"):
        load_config(None, ["model.kwargs.widht=16"])
    with pytest.raises(ReprlabError, match=r"unknown model 'resnet81'; did you mean 'resnet18'\?"):
        load_config(None, ['model.name="resnet81"', "model.kwargs.width=16"])
