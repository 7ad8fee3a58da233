"""``reprlab export`` on tiny real CIFAR-100 runs, checked where a user would load the file: in a
fresh Python process that never imports reprlab, with torchvision, timm or ONNX Runtime alone.

Three runs (a few steps each): a supervised ResNet-18 at full width 64 (its architecture maps to
torchvision and timm), a supervised ViT (maps to timm's VisionTransformer) and a DINO ResNet-18
of width 8 (maps to neither: refused; its state_dict export is its EMA teacher, what the probe scores).
The reference is reprlab's own backbone (``load_checkpoint_backbone``: what ``reprlab probe``
uses) or its whole classifier on 64 CIFAR-100 test images."""

import contextlib
import hashlib
import io
import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch

from reprlab.cli import main
from reprlab.data.device import prepare_batch, stats_tensors
from reprlab.eval.backbones import load_checkpoint_backbone
from reprlab.models import create_model

pytestmark = pytest.mark.realdata

TINY = ["data.fraction=0.02", "data.val_size=100", "train.batch_size=32", "train.eval_test=false", 'train.precision="fp32"',
        "train.progress=false", "train.num_threads=2", "model.channels_last=false"]


@pytest.fixture(scope="module")
def runs(tmp_path_factory, data_root, cache_root):
    out = tmp_path_factory.mktemp("runs")
    common = ["--data-root", str(data_root), *TINY, f'data.cache_dir="{cache_root}"', f'run.out_dir="{out}"']
    sup = ["train", "--config", "configs/supervised/resnet18_scratch.toml"]
    assert main([*sup, *common, "train.max_steps=3"]) == 0  # no run.name: the directory ends with the config hash
    assert main([*sup, *common, "train.max_steps=2", 'model.name="vit"', "model.kwargs.depth=2", "model.kwargs.dim=64", 'run.name="vit"']) == 0
    assert main(["pretrain", "--config", "configs/pretrain/dino_cifar100.toml", *common, "train.max_steps=2", "model.kwargs.width=8",
                 "method.knn_bank_size=200", 'run.name="dino8"']) == 0
    (resnet,) = [p for p in out.iterdir() if p.name.startswith("resnet18_scratch-")]
    return {"resnet": resnet, "vit": out / "vit", "dino": out / "dino8"}


@pytest.fixture(scope="module")
def images(cifar):
    return cifar.test.images[:64].clone()


def _reference(run, u8, head):
    """reprlab's outputs on ``u8``: the probe's backbone (features), or the supervised model (logits)."""
    bb = load_checkpoint_backbone(run)
    mean, std = stats_tensors(bb.mean, bb.std, "cpu")
    x = prepare_batch(u8, mean, std, bb.input_size)
    if not head:
        with torch.no_grad():
            return bb.model.eval()(x)
    ckpt = torch.load(run / "checkpoints" / "last.pt", weights_only=False)
    model = create_model(ckpt["model_name"], num_classes=100, **ckpt["model_kwargs"])
    model.load_state_dict({k.removeprefix("backbone."): v for k, v in ckpt["method"].items() if k.startswith("backbone.")}, strict=True)
    with torch.no_grad():
        return model.eval()(x)


def _export(capsys, run, fmt, out, *flags):
    capsys.readouterr()
    assert main(["export", str(run), "--format", fmt, "--out", str(out), *flags]) == 0
    printed = capsys.readouterr().out
    return printed, json.loads(out.with_name(out.name + ".json").read_text())


#: Runs in a fresh interpreter: builds each model with the library alone (written out here, not
#: taken from reprlab), loads the export, and also runs the recipe the export printed.
FRESH = textwrap.dedent('''
    import json, sys
    import numpy as np
    import torch
    jobs = json.loads(sys.argv[1])
    out = {}
    for name, job in jobs.items():
        side = json.load(open(job["sidecar"]))
        u8 = np.load(job["images"])
        x01 = torch.from_numpy(u8).float() / 255.0
        mean, std = (torch.tensor(side[k]).view(1, 3, 1, 1) for k in ("mean", "std"))
        x = (x01 - mean) / std
        arch, path, c = side["architecture"], job["file"], side["num_classes"] or 0
        if side["format"] == "torchvision":
            import torchvision
            model = torchvision.models.resnet18(num_classes=c or 1000)
            model.conv1 = torch.nn.Conv2d(3, 64, kernel_size=3, stride=1, padding=1, bias=False)
            model.maxpool = torch.nn.Identity()
            if not c:
                model.fc = torch.nn.Identity()
        elif side["format"] == "timm" and arch["model"] == "resnet18":
            import timm
            model = timm.create_model("resnet18", num_classes=c)
            model.conv1 = torch.nn.Conv2d(3, 64, kernel_size=3, stride=1, padding=1, bias=False)
            model.maxpool = torch.nn.Identity()
        elif side["format"] == "timm":
            from timm.models.vision_transformer import VisionTransformer
            k = arch["kwargs"]
            model = VisionTransformer(img_size=32, patch_size=4, embed_dim=k["dim"], depth=k["depth"], num_heads=1, num_classes=c)
        if side["format"] == "onnx":
            import onnxruntime
            session = onnxruntime.InferenceSession(path, providers=["CPUExecutionProvider"])
            got = session.run(None, {"images": x01.numpy()})
            printed = {}
            exec("\\n".join(side["code"]), {"images": x01.numpy()}, printed)
            recipe = [printed[n] for n in side["outputs"]]
        else:
            model.load_state_dict(torch.load(path), strict=True)  # weights_only: nothing of reprlab's is pickled
            with torch.no_grad():
                got = [model.eval()(x).numpy()]
            printed = {}
            exec("\\n".join(side["code"]), printed)
            with torch.no_grad():
                recipe = [printed["model"](x).numpy()]
        np.save(job["result"], got[-1])
        out[name] = {"shapes": [list(g.shape) for g in got], "recipe_diff": float(max(np.abs(a - b).max() for a, b in zip(got, recipe)))}
        if len(got) == 2:
            np.save(job["result"] + ".features.npy", got[0])
    assert "reprlab" not in sys.modules and not any(m.startswith("reprlab.") for m in sys.modules)
    print(json.dumps(out))
''')


#: name: (run, format, --with-head); the ONNX graph with the head also outputs the features
CASES = {
    "resnet_torchvision": ("resnet", "torchvision", False),
    "resnet_timm": ("resnet", "timm", False),
    "resnet_torchvision_head": ("resnet", "torchvision", True),
    "resnet_onnx_head": ("resnet", "onnx", True),
    "vit_timm_head": ("vit", "timm", True),
}


@pytest.fixture(scope="module")
def exported(runs, tmp_path_factory):
    """name -> (the export's file, what the command printed, its sidecar), each exported once."""
    folder, out = tmp_path_factory.mktemp("exports"), {}
    for name, (run, fmt, head) in CASES.items():
        path = folder / (f"{name}.onnx" if fmt == "onnx" else f"{name}.pt")
        with contextlib.redirect_stdout(io.StringIO()) as printed:
            assert main(["export", str(runs[run]), "--format", fmt, "--out", str(path), *(["--with-head"] if head else [])]) == 0
        out[name] = (path, printed.getvalue(), json.loads(path.with_name(path.name + ".json").read_text()))
    return out


def test_exports_load_without_reprlab_and_match_its_features_and_predictions(runs, images, exported, tmp_path):
    np.save(tmp_path / "images.npy", images.numpy())
    printed = {name: e[1] for name, e in exported.items()}
    sidecars = {name: e[2] for name, e in exported.items()}
    jobs = {name: {"sidecar": f"{path}.json", "file": str(path), "images": str(tmp_path / "images.npy"), "result": str(tmp_path / f"{name}.npy")}
            for name, (path, _, _) in exported.items()}
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}  # nothing of this checkout on the path either
    p = subprocess.run([sys.executable, "-c", FRESH, json.dumps(jobs)], capture_output=True, text=True, env=env, cwd=tmp_path, timeout=300)
    assert p.returncode == 0, p.stderr[-3000:]
    fresh = json.loads(p.stdout.strip().splitlines()[-1])
    diffs = {}
    for name, (run, fmt, head) in CASES.items():
        ours = _reference(runs[run], images, head).numpy()
        theirs = np.load(tmp_path / f"{name}.npy")
        assert theirs.shape == ours.shape == ((64, 100) if head else (64, sidecars[name]["feature_dim"]))
        diffs[name] = float(np.abs(theirs - ours).max())
        assert diffs[name] <= (1e-4 if fmt == "onnx" else 1e-5), (name, diffs[name])
        assert fresh[name]["recipe_diff"] == 0.0  # the printed lines build the same model
        if head:
            assert (theirs.argmax(1) == ours.argmax(1)).all()
        if fmt == "onnx" and head:  # the graph's first output: the features
            feats = np.load(tmp_path / f"{name}.npy.features.npy")
            assert np.abs(feats - _reference(runs[run], images, False).numpy()).max() <= 1e-4
        assert all(line in printed[name] for line in sidecars[name]["code"])  # what the user is told to type
    print("max abs differences:", json.dumps(diffs))


def test_sidecar_records_architecture_normalisation_and_provenance(runs, exported):
    out, printed, side = exported["resnet_torchvision"]
    ckpt_file = runs["resnet"] / "checkpoints" / "last.pt"
    ckpt = torch.load(ckpt_file, weights_only=False)
    assert side["architecture"]["model"] == "resnet18" and side["architecture"]["kwargs"] == {}
    assert side["architecture"]["built_by"]["replaced"] == {"conv1": "torch.nn.Conv2d(3, 64, kernel_size=3, stride=1, padding=1, bias=False)",
                                                            "maxpool": "torch.nn.Identity()", "fc": "torch.nn.Identity()"}
    assert side["feature_dim"] == 512 and side["resolution"] == 32 and side["normalisation"] == "outside the model"
    assert side["mean"] == pytest.approx([0.5071, 0.4865, 0.4409], abs=1e-4) and side["std"] == pytest.approx([0.2673, 0.2564, 0.2762], abs=1e-4)
    prov = side["provenance"]
    assert prov["checkpoint_sha256"] == hashlib.sha256(ckpt_file.read_bytes()).hexdigest()
    assert runs["resnet"].name == f"resnet18_scratch-{prov['config_hash']}"  # the hash the run is named by
    assert (prov["method"], prov["dataset"], prov["fraction"], prov["steps"], prov["max_steps"]) == ("supervised", "cifar100", 0.02, 3, 3)
    assert prov["epochs"] == ckpt["config"]["train"]["epochs"] and prov["run"] == runs["resnet"].name
    assert printed.splitlines()[0] == f"wrote {out} (torchvision: resnet18, 512 features) and {out.name}.json"
    # the ONNX sidecar says the normalisation is inside the graph, and names both outputs
    _, printed, onnx_side = exported["resnet_onnx_head"]
    assert onnx_side["normalisation"] == "inside the graph" and onnx_side["outputs"] == ["features", "logits"]
    assert onnx_side["feature_dim"] == 512 and onnx_side["num_classes"] == 100 and onnx_side["provenance"] == prov
    assert "(onnx: resnet18, 512 features and 100 logits)" in printed.splitlines()[0] and "the graph normalises" in printed


def test_state_dict_export_is_the_probes_backbone(runs, tmp_path, capsys):
    out = tmp_path / "dino.pt"
    _, side = _export(capsys, runs["dino"], "state_dict", out)
    assert side["architecture"]["kwargs"] == {"width": 8} and side["feature_dim"] == 64 and side["provenance"]["method"] == "dino"
    sd = torch.load(out)
    model = create_model("resnet18", num_classes=0, width=8)
    model.load_state_dict(sd, strict=True)
    probe = load_checkpoint_backbone(runs["dino"]).model.state_dict()
    assert sd.keys() == probe.keys() and all(torch.equal(sd[k], probe[k]) for k in sd)
    ckpt = torch.load(runs["dino"] / "checkpoints" / "last.pt", weights_only=False)
    student = {k.removeprefix("backbone."): v for k, v in ckpt["method"].items() if k.startswith("backbone.")}
    assert ckpt["backbone_prefix"] != "backbone." and any(not torch.equal(sd[k], student[k]) for k in sd)  # DINO: the teacher


def _refused(capsys, argv, out_dir):
    before = sorted(os.listdir(out_dir))
    capsys.readouterr()
    code = main(["export", *argv])
    err = capsys.readouterr().err.strip().splitlines()
    assert code != 0 and len(err) == 1 and err[0].startswith("reprlab: error: "), err
    assert sorted(os.listdir(out_dir)) == before  # nothing left behind, not even a temporary file
    return err[0]


def test_bad_input_is_one_line_and_leaves_nothing(runs, tmp_path, capsys):
    dino, out = str(runs["dino"]), str(tmp_path / "x.pt")
    msg = _refused(capsys, [dino, "--format", "torchvision", "--out", out], tmp_path)
    assert "torchvision's resnet18 is 64 channels wide; this one is 8 wide" in msg and msg.endswith("formats that work: onnx, state_dict")
    msg = _refused(capsys, [str(runs["vit"]), "--format", "torchvision", "--out", out], tmp_path)
    assert "torchvision's VisionTransformer" in msg and msg.endswith("formats that work: timm, onnx, state_dict")
    msg = _refused(capsys, [dino, "--format", "onnx", "--with-head", "--out", out], tmp_path)
    assert "is a dino run: it has no classifier" in msg and "drop --with-head" in msg
    msg = _refused(capsys, [dino, "--format", "tim", "--out", out], tmp_path)
    assert "unknown export format 'tim' (did you mean 'timm'?)" in msg
    junk = tmp_path / "junk.pt"
    junk.write_text("not a checkpoint")
    msg = _refused(capsys, [str(junk), "--format", "onnx", "--out", out], tmp_path)
    assert str(junk) in msg and "is not a file written by torch.save (it holds text beginning 'not a checkpoint'); expected a reprlab checkpoint" in msg
    msg = _refused(capsys, [str(tmp_path), "--format", "onnx", "--out", out], tmp_path)
    assert "checkpoints/last.pt not found" in msg
    msg = _refused(capsys, [dino, "--format", "onnx", "--out", str(tmp_path / "no" / "x.onnx")], tmp_path)
    assert "does not exist" in msg
    ckpt = runs["dino"] / "checkpoints" / "last.pt"
    before = hashlib.sha256(ckpt.read_bytes()).hexdigest()
    msg = _refused(capsys, [str(ckpt), "--format", "state_dict", "--out", str(ckpt)], tmp_path)
    assert "is the checkpoint itself" in msg and hashlib.sha256(ckpt.read_bytes()).hexdigest() == before
