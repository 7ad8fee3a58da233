"""The loop under bf16 autocast: parameters, optimiser state and the loss stay in float32."""

import pytest
import torch

from reprlab.config import load_config
from reprlab.data.types import ImageSet, Splits
from reprlab.train.loop import fit
from reprlab.train.rundir import RunDir

CPU = torch.device("cpu")


def _splits(n=128, classes=4):
    g = torch.Generator().manual_seed(0)
    x = torch.randint(0, 256, (n, 3, 16, 16), dtype=torch.uint8, generator=g)
    s = ImageSet(x, torch.arange(n) % classes, [str(i) for i in range(classes)])
    return Splits(s, s.subset(torch.arange(32)), s.subset(torch.arange(32, 64)), "toy", (0.4, 0.5, 0.6), (0.2, 0.25, 0.3))


def _float_tensors(obj):
    if isinstance(obj, torch.Tensor):
        if obj.is_floating_point():
            yield obj
    elif isinstance(obj, dict):
        for v in obj.values():
            yield from _float_tensors(v)
    elif isinstance(obj, (list, tuple)):
        for v in obj:
            yield from _float_tensors(v)


@pytest.mark.parametrize("method, extra", [
    ("supervised", []),
    ("supervised", ["aug.mix.cutmix_prob=1.0"]),  # soft targets
    ("simclr", ['method.name="simclr"', "method.proj_hidden_dim=32", "method.proj_out_dim=16", 'optim.name="lars"']),
])
def test_bf16_autocast_step_keeps_parameters_optimiser_state_and_loss_float32(tmp_path, method, extra):
    from reprlab.train.task import build_method

    cfg = load_config(None, ["model.kwargs.width=4", "train.batch_size=32", "train.epochs=1", "train.max_steps=2", "train.progress=false",
                             "train.log_every_steps=1", 'train.precision="bf16"', "train.eval_test=false", f'run.out_dir="{tmp_path}"', *extra])
    run = RunDir(tmp_path / "r")
    run.open(cfg, CPU)
    torch.manual_seed(0)
    m = build_method(cfg, "pretrain" if method != "supervised" else "train", _splits(), CPU)
    m.eval_due = lambda epoch, last: False
    seen: dict[str, list] = {"loss": [], "features": []}
    m.backbone.register_forward_hook(lambda mod, inp, out: seen["features"].append(out.dtype))
    step = m.training_step

    def recording_step(*a, **k):
        out = step(*a, **k)
        seen["loss"].append(out[0].dtype)
        return out

    m.training_step = recording_step
    fit(cfg, m, m.splits.train, run, CPU)
    run.unlock()
    assert seen["features"] and set(seen["features"]) == {torch.bfloat16}  # the step did run under bf16
    assert all(p.dtype == torch.float32 for p in m.parameters())
    ckpt = torch.load(run.last, weights_only=False)
    state = list(_float_tensors(ckpt["optimizer"]["state"]))
    assert state and all(t.dtype == torch.float32 for t in state)
    assert all(t.dtype == torch.float32 for t in _float_tensors(ckpt["method"]))  # BN running statistics included
    assert set(seen["loss"]) == {torch.float32}  # z.float() alone is not enough: a matmul under autocast is bf16 again
