"""Write hand-made run directories (the run-directory contract) for tests.

The numbers are chosen by the test, not produced by training, so a report built from these
directories can be checked against values computed independently in the test.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

# How many training log lines make_run writes per epoch (tests derive expected point counts).
TRAIN_LOGS_PER_EPOCH = 3


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value)  # a JSON string is a valid TOML basic string
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    raise TypeError(f"cannot write {value!r} as TOML")


def dump_toml(config: dict[str, Any], _prefix: str = "") -> str:
    """A minimal TOML writer for nested dicts of scalars/lists (enough for test configs)."""
    scalars = [f"{k} = {_toml_value(v)}" for k, v in config.items() if not isinstance(v, dict)]
    out = []
    if scalars:
        if _prefix:
            out.append(f"[{_prefix}]")
        out.extend(scalars)
        out.append("")
    for k, v in config.items():
        if isinstance(v, dict):
            out.append(dump_toml(v, f"{_prefix}.{k}" if _prefix else k))
    return "\n".join(out)


def metrics_lines(
    epochs: int,
    task: str = "probe",
    final_val: float = 40.0,
    train_logs_per_epoch: int = TRAIN_LOGS_PER_EPOCH,
    test_acc1: float | None = None,
) -> list[dict[str, Any]]:
    """Metric lines: ``epochs * train_logs_per_epoch`` train lines and one eval line per epoch.

    Pretraining runs log ``knn/acc1`` instead of ``val/*``; others end with a ``test/acc1``
    line when ``test_acc1`` is given.
    """
    lines: list[dict[str, Any]] = []
    steps_per_log = 10
    step = 0
    for e in range(epochs):
        for i in range(train_logs_per_epoch):
            step += steps_per_log
            epoch = e + (i + 1) / train_logs_per_epoch
            frac = epoch / epochs
            line = {"step": step, "epoch": round(epoch, 6), "train/loss": round(4.6 - 2.5 * frac, 6)}
            if task != "pretrain":  # a contrastive pretraining run has no train accuracy
                line["train/acc1"] = round(5 + (final_val + 8) * frac, 6)
            line["lr"] = round(0.1 * (1 - frac) + 1e-4, 8)
            lines.append(line)
        frac = (e + 1) / epochs
        if task == "pretrain":
            lines.append({"step": step, "epoch": float(e + 1), "knn/acc1": round(final_val * frac, 6)})
        else:
            lines.append(
                {
                    "step": step,
                    "epoch": float(e + 1),
                    "val/loss": round(4.4 - 2.0 * frac, 6),
                    "val/acc1": round(final_val * frac, 6),
                    "val/acc5": round(min(100.0, final_val * frac + 25), 6),
                }
            )
    if test_acc1 is not None and task != "pretrain":
        lines.append({"step": step, "epoch": float(epochs), "test/acc1": test_acc1})
    return lines


def make_run(
    root: Path,
    name: str,
    group: str,
    seed: int = 0,
    val_acc1: float | None = 40.0,
    test_acc1: float | None = 39.0,
    test_acc5: float | None = None,
    *,
    task: str = "probe",
    status: str = "complete",
    epochs: int = 5,
    curves: bool = True,
    config: dict[str, Any] | None = None,
    **result: Any,
) -> Path:
    """Create ``root/name`` with config.toml, metrics.jsonl (if ``curves``) and result.json.

    Extra keyword arguments are copied into result.json (``protocol``, ``fraction``, ...).
    A ``None`` val/test accuracy leaves that block out, as a sweep trial without test would.
    Returns the run directory.
    """
    run_dir = Path(root) / name
    run_dir.mkdir(parents=True, exist_ok=True)
    cfg = config if config is not None else {"seed": seed, "optim": {"lr": 0.1, "epochs": epochs}, "model": {"name": result.get("model", "resnet18")}}
    (run_dir / "config.toml").write_text(dump_toml(cfg), encoding="utf-8")
    if curves:
        lines = metrics_lines(epochs, task=task, final_val=val_acc1 if val_acc1 is not None else 30.0, test_acc1=test_acc1)
        (run_dir / "metrics.jsonl").write_text("".join(json.dumps(l) + "\n" for l in lines), encoding="utf-8")
    res: dict[str, Any] = {"run": name, "status": status, "task": task, "group": group, "seed": seed, "epochs": epochs}
    if val_acc1 is not None:
        res["val"] = {"acc1": val_acc1, "acc5": min(100.0, val_acc1 + 25), "loss": 2.0}
    if test_acc1 is not None:
        res["test"] = {"acc1": test_acc1, "acc5": test_acc5 if test_acc5 is not None else min(100.0, test_acc1 + 25), "loss": 2.1}
    res.update(result)
    write_result(run_dir, res)
    return run_dir


def write_result(run_dir: Path, result: dict[str, Any]) -> None:
    """(Over)write ``run_dir/result.json``."""
    (Path(run_dir) / "result.json").write_text(json.dumps(result, indent=2), encoding="utf-8")


def make_study(root: Path, all_curves: bool = False) -> dict[str, list[Path]]:
    """A small but complete study exercising every report section; returns run dirs by group.

    - scratch (3 seeds, test mean 30.0) and SimCLR linear probe at 25/50/100% (100%: test mean
      35.0), an ImageNet-supervised reference, a SimCLR pretraining run (kNN curves),
    - a CNN and a ViT group with params/FLOPs/throughput,
    - a 2-key sweep (heat map) with 2 seeds per trial and no test numbers,
    - a single-seed fine-tuning group (std shown as "—"),
    - one failed run and one directory with metrics but no result.json.

    Only the scratch and pretraining groups log curves unless ``all_curves``:
    figure rendering dominates the build time and the other groups add no new case.
    """
    root = Path(root)
    runs: dict[str, list[Path]] = {}

    def add(group: str, name: str, curves: bool = True, **kw: Any) -> None:
        runs.setdefault(group, []).append(make_run(root, name, group, curves=curves or all_curves, **kw))

    common_cnn = {"model": "resnet18", "family": "cnn", "params": 11_220_132, "flops_per_image": 5.6e8, "throughput_img_s": 5200.0}
    for seed, (v, t) in enumerate([(30.5, 29.0), (31.0, 30.0), (31.5, 31.0)]):
        add("Scratch / resnet18", f"scratch/s{seed}", seed=seed, val_acc1=v, test_acc1=t, task="train",
            protocol="scratch", backbone_source="scratch", method="supervised", **common_cnn)
    add("SimCLR pretrain (TIN 100%)", "simclr-tin-100/pretrain-s0", seed=0, val_acc1=None, test_acc1=None, task="pretrain",
        protocol="pretrain", backbone_source="scratch", method="simclr", dataset="tiny-imagenet", fraction=1.0, epochs=4)
    for frac, accs in [(0.25, [(28.0, 27.5), (28.6, 28.5)]), (0.5, [(31.0, 31.2), (31.8, 31.8)]), (1.0, [(35.2, 34.5), (35.9, 35.5)])]:
        pct = int(frac * 100)
        for seed, (v, t) in enumerate(accs):
            add(f"SimCLR (TIN {pct}%) / linear", f"simclr-tin-{pct}/probe-s{seed}", curves=False, seed=seed, val_acc1=v, test_acc1=t,
                protocol="linear-cached", backbone_source="simclr", method="simclr", dataset="tiny-imagenet", fraction=frac, model="resnet18")
    for seed, t in enumerate([44.0, 45.0]):
        add("ImageNet-supervised / linear", f"imagenet/probe-s{seed}", curves=False, seed=seed, val_acc1=t + 0.5, test_acc1=t,
            protocol="linear-cached", backbone_source="imagenet-supervised", method="supervised", model="resnet18")
    for seed, t in enumerate([38.0, 39.0]):
        add("ViT-S/4 scratch", f"vit/s{seed}", curves=False, seed=seed, val_acc1=t + 1, test_acc1=t, task="train", protocol="scratch-vit",
            backbone_source="random-init", method="supervised", model="vit-s4", family="vit", params=10_800_000,
            flops_per_image=1.4e9, throughput_img_s=2100.0)
    for lr in (1e-3, 3e-3):
        for wd in (0.05, 0.1):
            for seed in (0, 1):
                acc = 30 + 1000 * lr + 10 * wd + seed * 0.5
                add("vit-search", f"vit-search/lr{lr}-wd{wd}-s{seed}", curves=False, seed=seed, val_acc1=round(acc, 3), test_acc1=None,
                    task="train", sweep="vit-search", sweep_params={"optim.lr": lr, "optim.weight_decay": wd}, model="vit-s4", epochs=2)
    add("ImageNet-supervised / finetune", "imagenet/finetune-s0", curves=False, seed=0, val_acc1=53.1, test_acc1=52.3, task="finetune",
        protocol="finetune-full", backbone_source="imagenet-supervised", method="supervised", model="resnet18")
    add("ViT-S/4 scratch", "vit/s2-crashed", seed=2, val_acc1=None, test_acc1=None, task="train", status="failed", epochs=5)
    orphan = root / "vit/s3-running"
    orphan.mkdir(parents=True)
    (orphan / "metrics.jsonl").write_text(json.dumps({"step": 10, "epoch": 0.5, "train/loss": 4.0}) + "\n{\"step\": 2", encoding="utf-8")
    return runs


# ------------------------------------------------------------------------------------------
# Reading a built report back, and expected values computed without the report package
# ------------------------------------------------------------------------------------------


def read_results(run_dirs: list[Path]) -> list[dict[str, Any]]:
    """The result.json documents of ``run_dirs``, parsed with plain ``json``."""
    return [json.loads((Path(d) / "result.json").read_text()) for d in run_dirs]


def expected_stat(values: list[float]) -> str:
    """The mean ± std string computed independently (ddof=1; "—" for a single value)."""
    import statistics

    std = f"{statistics.stdev(values):.2f}" if len(values) >= 2 else "—"
    return f"{statistics.mean(values):.2f} ± {std}"


def md_section(md: str, section: str) -> str:
    """The text of the ``## section`` of a report.md, up to the next level-2 heading."""
    return md.split(f"## {section}\n", 1)[1].split("\n## ", 1)[0]


def md_row(md: str, section: str, first_cell: str) -> str:
    """The Markdown table line of ``section`` whose first cell is ``first_cell``."""
    rows = [l for l in md_section(md, section).splitlines() if l.startswith(f"| {first_cell} |")]
    assert len(rows) == 1, f"expected one row for {first_cell!r} in {section!r}, got {rows}"
    return rows[0]


def html_row(page: str, section_anchor: str, first_cell: str) -> str:
    """The HTML table row of the section with id ``section_anchor`` whose first cell is ``first_cell``."""
    import html
    import re

    body = page.split(f'id="{section_anchor}"', 1)[1].split("<h2", 1)[0]
    rows = [r for r in re.findall(r"<tr>.*?</tr>", body) if r.startswith(f"<tr><td>{html.escape(first_cell)}</td>")]
    assert len(rows) == 1, f"expected one row for {first_cell!r}, got {len(rows)}"
    return rows[0]


def count_lines_with(path: Path, key: str) -> int:
    """metrics.jsonl lines holding both ``key`` and an epoch (what a curve plots)."""
    lines = [json.loads(l) for l in Path(path).read_text().splitlines() if l.strip()]
    return sum(1 for l in lines if l.get(key) is not None and l.get("epoch") is not None)


# ------------------------------------------------------------------------------------------
# Self-supervised method comparisons
# ------------------------------------------------------------------------------------------


def make_ssl_runs(
    root: Path,
    method: str,
    probe: list[float],
    *,
    finetune_full: list[float] | None = None,
    finetune_head: list[float] | None = None,
    source: str | None = None,
    **result: Any,
) -> dict[str, list[Path]]:
    """Cached-probe (and fine-tuning) runs over one pretraining ``method``, seed i = i-th value.

    ``source`` is the backbone_source (defaults to the method, as for an SSL checkpoint; a
    reference is e.g. method "supervised" with source "imagenet-supervised", or "none" with
    "random-init"). Groups are named "<source> / <protocol>" plus any extra result keys.
    Returns run dirs by group.
    """
    source = source or method
    runs: dict[str, list[Path]] = {}
    extra = "".join(f" {k}={v}" for k, v in sorted(result.items()))
    for protocol, task, values in (("linear-cached", "probe", probe), ("finetune-head", "finetune", finetune_head), ("finetune-full", "finetune", finetune_full)):
        group = f"{source} / {protocol}{extra}"
        for seed, acc in enumerate(values or []):
            name = f"{source}-{protocol}{extra}/s{seed}".replace(" ", "-").replace("=", "")
            runs.setdefault(group, []).append(
                make_run(root, name, group, seed, acc + 1.0, acc, task=task, curves=False, protocol=protocol, backbone_source=source, method=method, **result)
            )
    return runs


# ------------------------------------------------------------------------------------------
# A toy-budget study shaped like `reprlab study run quick` (result.json's "budget")
# ------------------------------------------------------------------------------------------


def budget(epochs: float | None, recipe: str | None, recipe_epochs: int | None, steps: int | None = None, backbone: dict | None = None) -> dict[str, Any]:
    """A result.json ``budget`` block (reprlab.result.BUDGET_KEYS)."""
    return {"epochs": epochs, "steps": steps, "recipe": recipe, "recipe_epochs": recipe_epochs, "recipe_steps": None, "backbone": backbone}


def add_online_probe(run_dir: Path, final: float) -> list[float]:
    """Add ``online/val_acc1`` to every kNN evaluation line of ``run_dir/metrics.jsonl`` (rising to
    ``final``), as the online linear probe logs it; returns the values written, in order."""
    path = Path(run_dir) / "metrics.jsonl"
    lines = [json.loads(l) for l in path.read_text().splitlines() if l.strip()]
    evals = [l for l in lines if "knn/acc1" in l]
    values = [round(final * (i + 1) / len(evals), 6) for i in range(len(evals))]
    for line, value in zip(evals, values):
        line["online/val_acc1"] = value
    path.write_text("".join(json.dumps(l) + "\n" for l in lines), encoding="utf-8")
    return values


def make_quick_like_study(root: Path, online: bool = True) -> dict[str, Path]:
    """The quick study's shape at its toy budget: SimCLR and BYOL pretrained 4 of their recipes'
    500 / 1000 epochs (kNN curves, and the online probe's with ``online``), their cached probes
    (BYOL's below random init), a random-init probe, a 2-epoch fine-tune, and a CNN and a ViT
    trained 2 of 200 epochs; plus a scratch run at its full recipe budget. Returns run dirs by name."""
    root = Path(root)
    out: dict[str, Path] = {}
    common = {"dataset": "cifar100", "model": "resnet18"}
    pre_budget = {}
    labels = {"simclr": "SimCLR", "byol": "BYOL"}
    for name, method, recipe_epochs, knn in (("simclr", "simclr", 500, 14.0), ("byol", "byol", 1000, 12.0)):
        recipe = f"configs/pretrain/{method}_cifar100.toml"
        pre_budget[name] = budget(4, recipe, recipe_epochs, steps=140)
        out[name] = make_run(root, f"{name}-s0", f"{labels[name]} pretraining (w16)", 0, knn, None, task="pretrain", epochs=4, protocol="pretrain",
                             backbone_source=method, method=method, fraction=0.2, budget=pre_budget[name], **common)
        write_result(out[name], {**json.loads((out[name] / "result.json").read_text()), "val": {"knn_acc1": knn}})  # as a pretraining run names it
        if online:
            add_online_probe(out[name], knn + 3.0)
    for name, acc in (("simclr", 15.2), ("byol", 12.9)):
        bb = {"method": name, "dataset": "cifar100", "fraction": 0.2, "pretrain_epochs": 4, "checkpoint": str(root / f"{name}-s0" / "checkpoints" / "last.pt")}
        out[f"probe-{name}"] = make_run(root, f"probe-{name}-s0", f"{labels[name]} / linear", 0, acc + 0.4, acc, curves=False, protocol="linear-cached",
                                        backbone_source=name, method=name, fraction=0.2, backbone=bb, budget=budget(None, None, None, backbone=pre_budget[name]),
                                        **common)
    out["probe-random"] = make_run(root, "probe-random-s0", "random init / linear", 0, 14.9, 14.7, curves=False, protocol="linear-cached",
                                   backbone_source="random-init", method="none", budget=budget(None, None, None), **common)
    bb = {"method": "simclr", "dataset": "cifar100", "fraction": 0.2, "pretrain_epochs": 4, "checkpoint": str(root / "simclr-s0" / "checkpoints" / "last.pt")}
    out["finetune-simclr"] = make_run(root, "finetune-simclr-s0", "SimCLR / full fine-tune", 0, 19.0, 18.4, task="finetune", epochs=2, curves=False,
                                      protocol="finetune-full", backbone_source="simclr", method="simclr", fraction=0.2, backbone=bb,
                                      budget=budget(2, "configs/finetune/resnet18.toml", 30, steps=70, backbone=pre_budget["simclr"]), **common)
    out["scratch"] = make_run(root, "scratch-s0", "scratch", 0, 16.5, 16.1, task="train", epochs=2, protocol="scratch", backbone_source="scratch",
                              method="supervised", budget=budget(2, "configs/supervised/resnet18_scratch.toml", 200, steps=70), **common)
    for name, model, acc, params in (("cnn", "resnet18", 17.3, 713_076), ("vit", "vit", 13.1, 718_020)):
        family = "cnn" if model == "resnet18" else "vit"
        out[name] = make_run(root, f"{name}-s0", f"{'ResNet-18 w16 (CNN)' if family == 'cnn' else 'ViT 9x80 (ViT)'}", 0, acc + 0.5, acc, task="train", epochs=2,
                             curves=False, protocol="scratch", backbone_source="scratch", method="supervised", family=family, params=params,
                             flops_per_image=3.0e7, throughput_img_s=900.0, dataset="cifar100", model=model,
                             budget=budget(2, f"configs/cnn_vs_vit/{'resnet18' if family == 'cnn' else 'vit'}.toml", 200, steps=70))
    return out
