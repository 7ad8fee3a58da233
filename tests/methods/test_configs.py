"""Every method's torch-free config (reprlab/methods/configs.py) declares the views it accepts and
the crop counts it can use from each; a config asking for anything else is refused on load with
one line naming the key, the value and what the method needs. Parametrised over the registry:
a new method is covered by itself."""

from __future__ import annotations

import pytest

from reprlab.config import load_config
from reprlab.errors import ReprlabError
from reprlab.registry import METHOD_CONFIGS

ALL = METHOD_CONFIGS.names()


def _bad_counts(rules) -> list[tuple[str, int]]:
    """(view, count) pairs outside what the method accepts: one below its minimum, one above its maximum."""
    out = []
    for view, need in rules.counts.items():
        out += [(view, need.min - 1)] if need.min > 0 else []
        out += [(view, need.max + 1)] if need.max is not None else []
    return out


@pytest.mark.parametrize("name", ALL)
def test_every_method_declares_a_rule_for_each_of_its_views_and_its_defaults_pass(name):
    cls = METHOD_CONFIGS.get(name)
    assert set(cls.view_rules().counts) == set(cls.default_views()), name
    cfg = load_config(None, [f'method.name="{name}"'])
    assert set(cfg.views) == set(cls.default_views())


@pytest.mark.parametrize("name", ALL)
def test_every_method_refuses_a_crop_count_it_cannot_use(name):
    cls = METHOD_CONFIGS.get(name)
    if not cls.default_views():  # a method without views takes no [views] key at all
        with pytest.raises(ReprlabError, match=f"method '{name}' has no view pipelines"):
            load_config(None, [f'method.name="{name}"', "views.count=2"])
        return
    bad = _bad_counts(cls.view_rules())
    assert bad, f"{name} accepts every count of every view: nothing it could refuse"
    for view, count in bad:
        with pytest.raises(ReprlabError) as e:
            load_config(None, [f'method.name="{name}"', f"views.{view}.count={count}"])
        msg = str(e.value)
        assert "\n" not in msg and msg.startswith(f"config key 'views.{view}.count' = {count}: method '{name}' needs ")
        assert str(cls.view_rules().counts[view]) in msg  # what the method needs


@pytest.mark.parametrize("recipe, override, words", [
    ("byol", "views.view2.count=0", ["views.view2.count' = 0", "exactly 1 crop", "splits it in halves"]),
    ("simclr", "views.view.count=1", ["views.view.count' = 1", "exactly 2 crops"]),
    ("simclr", "views.view.count=3", ["views.view.count' = 3", "exactly 2 crops"]),
    ("byol", "views.view1.size=24", ["views.view2.size' = 32", "one crop size for views view1, view2", "views.view1.size = 24"]),
    ("dino", "views.local.size=32", ["views.local.size' = 32", "smaller than those of global1, global2 (32 px)"]),
    ("dino", "views.global2.size=16", ["views.global2.size' = 16", "one crop size"]),
    ("swav", "views.view.count=1", ["views.view.count' = 1", "2 or more crops"]),
])
def test_the_recipes_refuse_views_their_method_cannot_use(recipe, override, words):
    with pytest.raises(ReprlabError) as e:
        load_config(f"configs/pretrain/{recipe}_cifar100.toml", [override])
    for w in words:
        assert w in str(e.value)


@pytest.mark.parametrize("recipe, override", [("swav", "views.view.count=4"), ("dino", "views.local.count=0"), ("dino", "views.local.size=24"),
                                              ("byol", "views.size=24")])
def test_views_a_method_can_use_are_accepted(recipe, override):
    load_config(f"configs/pretrain/{recipe}_cifar100.toml", [override])


def test_a_config_built_in_code_is_checked_when_the_method_is_built():
    from reprlab.methods.ssl import SSLMethod

    cfg = load_config("configs/pretrain/simclr_cifar100.toml")
    cfg.views["view"].count = 3  # past load_config's check
    with pytest.raises(ReprlabError, match=r"views.view.count' = 3: method 'simclr' needs exactly 2"):
        SSLMethod(cfg, None, None)  # refused before anything is built
