"""The model registry contract for every registered architecture.

CPU budget: every non-heavy model runs one training forward/backward and one ``embed`` at
batch 2; the heavy 224 px presets (~130 M params) are built on the meta device only, which
checks their parameter counts and output shapes without allocating or computing anything.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import pytest

from reprlab.errors import ReprlabError
from reprlab.models import create_model, get_entry, list_models
from reprlab.models.flops import count_params

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
