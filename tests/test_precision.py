"""What train.precision=auto picks and why: CPU bf16 detection over injected flag sets (both
answers on any machine), the $REPRLAB_CPU_BF16 override, env.json and the run-start log line;
and that bf16 autocast leaves parameters, optimiser state and the loss in float32."""

import json

import pytest
import torch

from reprlab.config import load_config
from reprlab.data.types import ImageSet, Splits
from reprlab.errors import ReprlabError
from reprlab.runtime import (
    CPU_BF16_ENV,
    _proc_cpuinfo_flags,
    bf16_verdict,
    cpu_bf16_support,
    precision_choice,
    precision_record,
    resolve_precision,
)
from reprlab.train.loop import fit
from reprlab.train.rundir import RunDir

CPU = torch.device("cpu")
SPR = {"avx512f", "avx512bw", "avx512_bf16", "amx_tile", "amx_bf16"}  # a CPU with AMX
ZEN4 = {"avx2", "avx512f", "avx512bw", "avx512_bf16"}  # AVX-512 BF16, no AMX
SKYLAKE = {"avx2", "avx512f", "avx512bw", "avx512vl"}  # AVX-512 without BF16: emulated
OLD = {"sse4_2", "avx", "avx2", "fma"}


# ---------------------------------------------------------------------------------------------
# detection


@pytest.mark.parametrize("flags, native", [(SPR, True), (ZEN4, True), ({"amx_bf16"}, True), (SKYLAKE, False), (OLD, False), (set(), False)])
def test_native_bf16_is_avx512_bf16_or_amx_bf16(flags, native):
    ok, why = bf16_verdict(flags, "test flags")
    assert ok is native
    assert ("natively" in why) is native and "test flags" in why
    if native:
        assert all(f in why for f in ("amx_bf16", "avx512_bf16") if f in flags)
    else:
        assert "no faster than float32" in why


def test_no_bf16_kernels_means_float32_whatever_the_flags():
    ok, why = bf16_verdict(SPR, kernels=False)
    assert not ok and "oneDNN" in why


def test_proc_cpuinfo_flags_are_read_from_the_first_cpu(tmp_path):
    x86 = tmp_path / "x86"
    x86.write_text("processor\t: 0\nmodel name\t: Some CPU\nflags\t\t: fpu avx512f avx512_bf16 amx_tile\n\nprocessor\t: 1\nflags\t\t: fpu\n")
    assert _proc_cpuinfo_flags(str(x86)) == {"fpu", "avx512f", "avx512_bf16", "amx_tile"}
    arm = tmp_path / "arm"
    arm.write_text("processor\t: 0\nFeatures\t: fp asimd bf16 sve\n")
    assert "bf16" in _proc_cpuinfo_flags(str(arm))
    assert _proc_cpuinfo_flags(str(tmp_path / "none")) is None


def test_env_var_forces_either_answer_and_rejects_other_values(monkeypatch):
    monkeypatch.setenv(CPU_BF16_ENV, "1")
    assert cpu_bf16_support() == (True, f"{CPU_BF16_ENV}=1 forces bf16")
    assert resolve_precision("auto", CPU) is torch.bfloat16
    monkeypatch.setenv(CPU_BF16_ENV, "0")
    assert cpu_bf16_support()[0] is False and resolve_precision("auto", CPU) is None
    monkeypatch.setenv(CPU_BF16_ENV, "yes")
    with pytest.raises(ReprlabError, match=CPU_BF16_ENV):
        cpu_bf16_support()


def test_auto_follows_detection_on_cpu_and_is_bf16_on_gpu(monkeypatch):
    monkeypatch.delenv(CPU_BF16_ENV, raising=False)
    native, why = cpu_bf16_support()
    dtype, reason = precision_choice("auto", CPU)
    assert dtype is (torch.bfloat16 if native else None) and why in reason
    assert precision_choice("auto", torch.device("cuda"))[0] is torch.bfloat16
    for name, want in (("fp32", None), ("bf16", torch.bfloat16), ("fp16", torch.float16)):
        assert resolve_precision(name, CPU) is want and precision_choice(name, CPU) == (want, f"train.precision={name}")
    assert precision_record("fp32", CPU) == {"requested": "fp32", "autocast": "fp32", "reason": "train.precision=fp32"}


def test_env_json_and_the_log_say_what_auto_chose_and_why(tmp_path, monkeypatch, capsys):
    import reprlab.runtime

    monkeypatch.setenv(CPU_BF16_ENV, "0")
    monkeypatch.setattr(reprlab.runtime, "_said", set())
    run = RunDir(tmp_path / "r")
    run.open(load_config(None, []), CPU)
    run.unlock()
    why = f"train.precision=auto on a CPU: {CPU_BF16_ENV}=0 forces float32"
    assert json.loads((tmp_path / "r" / "env.json").read_text())["precision"] == {"requested": "auto", "autocast": "fp32", "reason": why}
    capsys.readouterr()
    resolve_precision("auto", CPU)
    resolve_precision("auto", CPU)
    assert capsys.readouterr().err.splitlines() == [f"precision: fp32 ({why})"]  # said once per process


# ---------------------------------------------------------------------------------------------
# bf16 autocast keeps the state in float32


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
    fit(cfg, m, run, CPU)
    run.unlock()
    assert seen["features"] and set(seen["features"]) == {torch.bfloat16}  # the step did run under bf16
    assert all(p.dtype == torch.float32 for p in m.parameters())
    ckpt = torch.load(run.last, weights_only=False)
    state = list(_float_tensors(ckpt["optimizer"]["state"]))
    assert state and all(t.dtype == torch.float32 for t in state)
    assert all(t.dtype == torch.float32 for t in _float_tensors(ckpt["method"]))  # BN running statistics included
    assert set(seen["loss"]) == {torch.float32}  # z.float() alone is not enough: a matmul under autocast is bf16 again
