"""The one Registry (reprlab/registry.py) behind models, datasets and methods."""

from __future__ import annotations

import pytest

from reprlab.errors import ReprlabError

def test_models_datasets_and_methods_share_one_registry_class():
    from reprlab.data.registry import DATASETS
    from reprlab.models.registry import MODELS
    from reprlab.registry import METHODS, Registry

    assert all(isinstance(r, Registry) for r in (MODELS, DATASETS, METHODS))
    assert {"cifar100", "tiny-imagenet", "image-folder"} <= set(DATASETS.names())  # loaded lazily from their modules


def test_an_unknown_model_or_dataset_is_one_line_with_the_closest_name():
    from types import SimpleNamespace

    from reprlab.data.registry import load_splits
    from reprlab.models import get_entry

    with pytest.raises(ReprlabError, match=r"^unknown model 'resnet19'; did you mean 'resnet18'\? \(known: .*resnet18"):
        get_entry("resnet19")
    with pytest.raises(ReprlabError, match=r"^unknown dataset 'cifar10'; did you mean 'cifar100'\? \(known: cifar100, image-folder, tiny-imagenet\)$"):
        load_splits(SimpleNamespace(dataset="cifar10"))
    with pytest.raises(ReprlabError, match=r"^unknown model 'a\.b' \(known: "):  # not a module name: no import is tried
        get_entry("a.b")


def test_a_name_registered_twice_is_refused():
    from reprlab.registry import Registry

    reg: Registry = Registry("thing", "reprlab.methods")
    def a():
        pass

    reg.register("a")(a)
    reg.register("a")(a)  # the same object again: fine
    with pytest.raises(ValueError, match="thing 'a' registered twice"):
        reg.register("a")(lambda: None)
    assert reg.get("a") is a
