import dataclasses
import tomllib

import pytest

from reprlab.config import Config, describe, dumps_toml, field_comments, flatten, from_dict, load_config, to_dict
from reprlab.errors import ReprlabError


def _all_dataclasses(obj, seen=None):
    seen = seen if seen is not None else set()
    if type(obj) in seen:
        return seen
    seen.add(type(obj))
    for f in dataclasses.fields(obj):
        v = getattr(obj, f.name)
        if dataclasses.is_dataclass(v):
            _all_dataclasses(v, seen)
    return seen


def test_every_default_has_a_one_line_comment():
    for cls in _all_dataclasses(Config()):
        comments = field_comments(cls)
        missing = [f.name for f in dataclasses.fields(cls) if not comments.get(f.name)]
        assert not missing, f"{cls.__name__} fields without a comment: {missing}"
    assert all(c for _, _, c in describe())


def test_overrides_are_typed_and_applied_in_order(tmp_path):
    f = tmp_path / "c.toml"
    f.write_text('[optim]\nlr = 0.2\nname = "adamw"\n[train]\nepochs = 3\n[model.kwargs]\nwidth = 32\n')
    cfg = load_config(f, ["optim.lr=0.05", "schedule.milestones=[1, 2]", "model.kwargs.zero_init_residual=true", 'method.name="simclr"', "views.crop_scale=[0.2, 1.0]"])
    assert cfg.optim.lr == 0.05 and cfg.optim.name == "adamw" and cfg.train.epochs == 3
    assert cfg.schedule.milestones == [1.0, 2.0] and all(isinstance(m, float) for m in cfg.schedule.milestones)
    assert cfg.model.kwargs == {"width": 32, "zero_init_residual": True}
    assert cfg.views["view"].crop_scale == (0.2, 1.0)


@pytest.mark.parametrize(
    "override, words",
    [
        ("optim.lrr=0.1", ["optim.lrr", "optim.lr"]),
        ("trian.epochs=3", ["trian", "train"]),
        ("train.epochs=ten", ["train.epochs", "int", "ten"]),
        ("train.epochs=1.5", ["train.epochs", "int"]),
        ("optim.nesterov=1", ["optim.nesterov", "true or false"]),
        ("optim.name=sgdd", ["optim.name", "sgd"]),
        ("train.batch_size=0", ["train.batch_size", "positive"]),
        ("data.fraction=1.5", ["data.fraction"]),
        ("optim", ["key=value"]),
    ],
)
def test_bad_keys_and_values_are_named(override, words):
    with pytest.raises(ReprlabError) as e:
        load_config(None, [override])
    msg = str(e.value)
    assert "\n" not in msg
    for w in words:
        assert w in msg


def test_unknown_key_in_file_names_file_and_suggestion(tmp_path):
    f = tmp_path / "bad.toml"
    f.write_text("[optim]\nweight_decy = 0.1\n")
    with pytest.raises(ReprlabError, match=r"optim\.weight_decy.*bad\.toml.*optim\.weight_decay"):
        load_config(f)


def test_resolved_config_round_trips_through_toml():
    cfg = load_config(None, ["optim.lr=0.003", "model.kwargs.width=16", 'run.name="x y"', 'method.name="simclr"', "views.hue=0.0"])
    text = dumps_toml(to_dict(cfg))
    back = from_dict(tomllib.loads(text))
    assert to_dict(back) == to_dict(cfg)
    assert flatten(tomllib.loads(text))["optim.lr"] == 0.003


def test_cnn_and_vit_recipes_are_identical_except_the_model():
    a = flatten(to_dict(load_config("configs/cnn_vs_vit/resnet18.toml")))
    b = flatten(to_dict(load_config("configs/cnn_vs_vit/vit.toml")))
    differ = {k for k in a.keys() | b.keys() if a.get(k) != b.get(k)}
    assert "model.name" in differ and "run.family" in differ
    assert all(k.startswith("model.") or k == "run.family" for k in differ), differ
    assert a["aug.mix.cutmix_prob"] == 1.0 and a["optim.no_decay_norm_bias"] is True


def test_short_spellings_from_the_cli_map_to_canonical_keys():
    cfg = load_config("configs/cnn_vs_vit/vit.toml", ["model.depth=6", "model.dim=384", "aug.cutmix.prob=0.5", "aug.mixup.alpha=0.2"])
    assert cfg.model.kwargs["depth"] == 6 and cfg.model.kwargs["dim"] == 384 and cfg.model.kwargs["patch_size"] == 4
    assert cfg.aug.mix.cutmix_prob == 0.5 and cfg.aug.mix.mixup_alpha == 0.2
    assert "depth" not in to_dict(cfg)["model"]  # written back canonically


@pytest.mark.parametrize("override, suggestion", [("model.widht=16", "model.kwargs.width"), ("model.chanels_last=false", "model.channels_last")])
def test_an_unknown_architecture_argument_is_rejected_at_load_time(override, suggestion):
    with pytest.raises(ReprlabError) as e:
        load_config(None, [override])
    assert override.split("=")[0].split(".")[1] in str(e.value) and suggestion in str(e.value)


def test_sweep_keys_in_short_spelling_are_read_back():
    from reprlab.config import get_key

    cfg = load_config(None, ['model.name="vit"', "model.depth=9", 'run.sweep_keys=["model.depth", "aug.cutmix.prob"]'])
    assert {k: get_key(cfg, k) for k in cfg.run.sweep_keys} == {"model.depth": 9, "aug.cutmix.prob": 0.0}


# ---- the [method] section follows the chosen method; views by name; schedules; finite floats


def test_method_section_is_checked_against_the_chosen_method():
    assert load_config(None, ['method.name="simclr"', "method.temperature=0.2"]).method.temperature == 0.2
    with pytest.raises(ReprlabError, match=r"'method.temperature' for method 'byol'.*did you mean"):
        load_config(None, ['method.name="byol"', "method.temperature=0.2"])
    with pytest.raises(ReprlabError, match=r"'method.knn_k': expected >= 1, got 0"):
        load_config(None, ['method.name="simclr"', "method.knn_k=0"])


def test_the_last_layer_naming_the_method_wins(tmp_path):
    f = tmp_path / "c.toml"
    f.write_text('[method]\nname = "simclr"\nknn_k = 50\n')
    cfg = load_config(f, ['method.name="byol"'])
    assert cfg.method.name == "byol" and type(cfg.method).__name__ == "BYOLConfig" and cfg.method.knn_k == 50
    assert set(cfg.views) == {"view1", "view2"}


def test_flat_view_keys_set_every_view_and_named_ones_one(tmp_path):
    f = tmp_path / "v.toml"
    f.write_text('[method]\nname = "byol"\n[views]\nhue = 0.05\n[views.view2]\nsolarize_prob = 0.5\n')
    cfg = load_config(f, ["views.view1.flip_prob=0.25"])
    assert cfg.views["view1"].hue == cfg.views["view2"].hue == 0.05
    assert cfg.views["view1"].solarize_prob == 0.0 and cfg.views["view2"].solarize_prob == 0.5
    assert cfg.views["view1"].flip_prob == 0.25 and cfg.views["view2"].flip_prob == 0.5
    with pytest.raises(ReprlabError, match=r"'views.veiw2'.*did you mean 'views.view2'"):
        load_config(f, ["views.veiw2.size=3"])
    with pytest.raises(ReprlabError, match=r"views.view1: view config: count must be an integer >= 0"):
        load_config(f, ["views.view1.count=-1"])
    with pytest.raises(ReprlabError, match="method 'supervised' has no view pipelines"):
        load_config(None, ["views.hue=0.1"])


def test_a_scheduled_key_takes_a_number_or_a_table_and_round_trips(tmp_path):
    from reprlab.schedules import ScalarSchedule

    cfg = load_config(None, ['method.name="byol"', "method.momentum=0.995"])
    assert cfg.method.momentum == 0.995
    cfg = load_config(None, ['method.name="byol"', "method.momentum.end=0.999"])  # one field of the default table
    assert cfg.method.momentum == ScalarSchedule(start=0.99, end=0.999, shape="cosine")
    cfg = load_config(None, ['method.name="byol"', 'method.momentum={start = 0.9, end = 1.0, shape = "linear", warmup_epochs = 1.0}', "optim.weight_decay={start = 0.04, end = 0.4}"])
    assert cfg.method.momentum.shape == "linear" and cfg.optim.weight_decay == ScalarSchedule(start=0.04, end=0.4)
    back = from_dict(tomllib.loads(dumps_toml(to_dict(cfg))))
    assert to_dict(back) == to_dict(cfg)
    with pytest.raises(ReprlabError, match=r"'method.momentum.shape'.*'cosin' is not one of constant, linear, cosine"):
        load_config(None, ['method.name="byol"', 'method.momentum.shape="cosin"'])
    with pytest.raises(ReprlabError, match=r"unknown config key 'method.momentum.strat'.*'method.momentum.start'"):
        load_config(None, ['method.name="byol"', "method.momentum.strat=1.0"])


@pytest.mark.parametrize("override", ["optim.lr=nan", "optim.lr=inf", "optim.momentum=-inf", "schedule.milestones=[1.0, nan]", "views.hue=nan", "method.momentum.end=inf"])
def test_non_finite_floats_are_rejected_with_the_value(override):
    with pytest.raises(ReprlabError) as e:
        load_config(None, ['method.name="byol"', override])
    assert "expected a finite number" in str(e.value) and override.split("=")[0].split(".")[0] in str(e.value)
    assert ("nan" in str(e.value)) or ("inf" in str(e.value))


def test_non_finite_float_in_a_file_names_the_file(tmp_path):
    f = tmp_path / "n.toml"
    f.write_text("[optim]\nlr = nan\n")
    with pytest.raises(ReprlabError, match=r"'optim.lr' \(.*n\.toml\): expected a finite number, got nan"):
        load_config(f)


@pytest.mark.parametrize("key, meant", [("optim.learning_rate", "optim.lr"), ("optim.wd", "optim.weight_decay"), ("train.batchsize", "train.batch_size"),
                                        ("optim.lrr", "optim.lr"), ("train.num_epochs", "train.epochs"), ("optim.decay", "optim.weight_decay")])
def test_unknown_key_hint_uses_meaning_not_only_spelling(key, meant):
    with pytest.raises(ReprlabError) as e:
        load_config(None, [f"{key}=1"])
    assert f"did you mean '{meant}'" in str(e.value)


def test_config_command_sections_methods_and_unknown_prefixes(capsys):
    from reprlab.cli import main

    assert main(["config", "optim"]) == 0
    out = capsys.readouterr().out
    assert "optim.lr" in out and "optim.lars_eta" in out and "train." not in out
    assert main(["config", "method", "--method", "byol"]) == 0
    out = capsys.readouterr().out
    assert "method.pred_hidden_dim" in out and "method.momentum" in out and "start = 0.99" in out
    assert main(["config", "views.view2", "--method", "byol"]) == 0
    assert "views.view2.solarize_prob" in capsys.readouterr().out
    assert main(["config", "optimizer"]) == 2
    err = capsys.readouterr().err.strip()
    assert "'optimizer'" in err and "did you mean 'optim'" in err and "\n" not in err


def test_config_views_prints_every_method_s_views_and_the_crop_counts_it_accepts(capsys):
    from reprlab.cli import main
    from reprlab.registry import METHOD_CONFIGS

    assert main(["config", "views"]) == 0
    out = capsys.readouterr().out
    assert all(f"{name}:\n" in out for name in METHOD_CONFIGS.names())  # every registered method, from the registry
    assert "views.view2.count  accepts 1 " in out and "views.local.count    accepts 0 or more  (default 4; size 16 px)" in out
    assert main(["config", "views", "--method", "swav"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("swav:\n  views.view.count  accepts 2 or more  (default 2; size 32 px)") and "byol" not in out
    # `config method --method NAME` ends with the method's views (the README says so)
    assert main(["config", "method", "--method", "dino"]) == 0
    out = capsys.readouterr().out
    assert "method.out_dim" in out and "views of dino:" in out and "views.global1.count  accepts 1" in out


def test_pretrain_help_names_every_registered_method():
    from reprlab.commands import pretrain
    from reprlab.registry import METHOD_CONFIGS

    assert all(name in pretrain.HELP for name in METHOD_CONFIGS.names())


def test_an_on_off_key_takes_a_boolean_and_a_wrong_type_names_the_accepted_values():
    assert load_config(None, ["train.sync_bn=true"]).train.sync_bn == "on"
    assert load_config(None, ["train.sync_bn=false"]).train.sync_bn == "off"
    with pytest.raises(ReprlabError, match=r"config key 'train.sync_bn' \(command line\): expected one of auto, on, off, got 1$"):
        load_config(None, ["train.sync_bn=1"])
    with pytest.raises(ReprlabError, match=r"config key 'train.precision' \(command line\): expected one of auto, fp32, bf16, fp16, got 16"):
        load_config(None, ["train.precision=16"])
