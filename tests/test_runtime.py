"""reprlab/runtime.py: what train.precision=auto picks and why -- CPU bf16 detection over injected
flag sets (both answers on any machine), the $REPRLAB_CPU_BF16 override, env.json and the
run-start log line -- and a bad device is a one-line error."""

import json
from pathlib import Path

import pytest
import torch

from reprlab.config import load_config
from reprlab.errors import ReprlabError
from reprlab.runtime import (
    CPU_BF16_ENV,
    _proc_cpuinfo_flags,
    bf16_verdict,
    cpu_bf16_support,
    precision_choice,
    precision_record,
    resolve_device,
    resolve_precision,
)
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


def test_bad_device_is_a_one_line_error():
    with pytest.raises(ReprlabError, match="train.device='gpu'"):
        resolve_device("gpu")


def test_channels_last_hazard_names_a_resnet_below_width_8_on_a_cpu_only():
    # torch's CPU backward of a strided 1x1 convolution in channels_last corrupts the heap below
    # 8 input channels (benchmarks/results/channels_last_crash_cpu.md): such a model trains in NCHW
    from reprlab.models import create_model
    from reprlab.runtime import channels_last_hazard

    cpu = torch.device("cpu")
    why = channels_last_hazard(create_model("resnet18", num_classes=0, width=4), cpu)
    assert why is not None and "4 input channels" in why and "layer2.0" in why
    assert channels_last_hazard(create_model("resnet18", num_classes=0, width=8), cpu) is None
    assert channels_last_hazard(create_model("resnet18", num_classes=0, width=4), torch.device("cuda")) is None


def test_a_width_4_resnet_trains_on_the_cpu_without_channels_last(tmp_path):
    # in a child process: on an affected CPU the old code died here of a heap corruption
    import subprocess
    import sys

    code = (
        "import sys, pathlib, torch\n"
        f"sys.path.insert(0, {str(Path(__file__).parent)!r})\n"
        "from helpers_toy import toy_splits\n"
        "from reprlab.config import load_config\n"
        "from reprlab.methods.base import get_method\n"
        "from reprlab.train.loop import fit\n"
        "from reprlab.train.rundir import RunDir\n"
        f"cfg = load_config(None, ['model.kwargs.width=4', 'train.batch_size=64', 'train.epochs=1', 'train.progress=false', 'train.precision=fp32', 'train.eval_test=false', 'run.out_dir=\"{tmp_path}\"'])\n"
        "assert cfg.model.channels_last\n"
        "splits, cpu = toy_splits(192), torch.device('cpu')\n"
        "method = get_method('supervised')(cfg, splits, cpu)\n"
        "run = RunDir(pathlib.Path(cfg.run.out_dir) / 'x'); run.open(cfg, cpu)\n"
        "res = fit(cfg, method, splits.train, run, cpu)\n"
        "assert res.step == 3 and cfg.model.channels_last is False, (res.step, cfg.model.channels_last)\n"
        "print('trained', res.step)\n"
    )
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert p.returncode == 0 and "trained 3" in p.stdout, p.stderr[-3000:]
    assert "channels_last: off for this run (backbone.layer2.0.downsample.0 is a strided 1x1 convolution of 4 input channels" in p.stderr
