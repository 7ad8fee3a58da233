"""Why a method's probe falls below random init at a short CPU budget: collapse or too short?

    python benchmarks/methods_collapse.py                       # runs/methods-cpu (250 steps)
    python benchmarks/methods_collapse.py --runs runs/methods-cpu-750 --runs runs/methods-cpu

Reads the run directories of ``benchmarks/methods_cpu.py`` (never trains) and, for each
pretrained backbone and the random-init one, extracts pooled features of 2,000 CIFAR-100
validation images and measures

* effective rank: exp of the entropy of the normalised singular values of the centred
  features (Roy & Vetterli 2007); D for isotropic features, 1 for a collapse onto one direction;
* mean cosine between the L2-normalised features of different images (near 1: complete
  collapse, every image maps to the same point);

next to the kNN curve and loss curve of pretraining. It writes
``benchmarks/results/methods_collapse.md`` and ``methods_cpu_curves.png``.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent


def rows_of(run: Path, key: str) -> list[tuple[int, float]]:
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines() if line.strip()]
    return [(r["step"], r[key]) for r in rows if key in r]


def spectrum_stats(feats: torch.Tensor) -> tuple[float, float]:
    f = feats.double()
    s = torch.linalg.svdvals(f - f.mean(0))
    p = s / s.sum()
    eff_rank = torch.exp(-(p * torch.log(p.clamp_min(1e-300))).sum()).item()
    z = torch.nn.functional.normalize(f, dim=1)
    cos = z @ z.T
    n = len(z)
    mean_cos = ((cos.sum() - cos.diagonal().sum()) / (n * (n - 1))).item()
    return eff_rank, mean_cos


def features(source: str, cfg, splits, n: int) -> torch.Tensor:
    from reprlab.eval.backbones import load_backbone
    from reprlab.eval.features import extract_features
    from reprlab.data.device import stats_tensors

    bb = load_backbone(source, cfg, splits.mean, splits.std)
    mean, std = stats_tensors(bb.mean, bb.std, torch.device("cpu"))
    return extract_features(bb.model, splits.val.images[:n], mean, std, 500, torch.device("cpu"), bb.input_size, False, None)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--runs", action="append", default=None, help="a methods_cpu.py output folder (repeatable)")
    p.add_argument("--images", type=int, default=2000)
    p.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "methods_collapse.md")
    args = p.parse_args()
    from reprlab.config import load_config
    from reprlab.data.registry import load_splits

    folders = [ROOT / r for r in (args.runs or ["runs/methods-cpu"])]
    cfg = load_config(None, ["model.kwargs.width=16", "train.precision=fp32"])
    splits = load_splits(cfg.data)
    torch.manual_seed(0)
    rand_rank, rand_cos = spectrum_stats(features("random-init", cfg, splits, args.images))
    lines = [
        "# Collapse or too short? Feature statistics of the short-budget backbones",
        "",
        f"Pooled features of {args.images} CIFAR-100 validation images (width-16 ResNet-18, 128 dimensions). Effective rank: exp of",
        "the entropy of the normalised singular values (128 = isotropic, 1 = one direction); mean cosine between",
        "different images (1 = every image maps to one point). Produced by `python benchmarks/methods_collapse.py`",
        "from the run directories of `benchmarks/methods_cpu.py`; curves in `methods_cpu_curves.png`.",
        "",
        f"Random init: effective rank **{rand_rank:.1f}**, mean cosine **{rand_cos:.3f}**.",
        "",
        "| budget | method | probe gain over random init | effective rank | mean cosine | kNN val (%) by step | loss first -> last |",
        "|---|---|---:|---:|---:|---|---|",
    ]
    curves = {}
    base = {}
    for folder in folders:
        rand = folder / "probe-random-init" / "result.json"
        base[folder] = json.loads(rand.read_text())["test"]["acc1"] if rand.is_file() else None
        for run in sorted(folder.glob("pretrain-*")):
            m = run.name[len("pretrain-"):]
            probe = folder / f"probe-{m}" / "result.json"
            res = run / "result.json"
            if not (probe.is_file() and res.is_file()) or json.loads(res.read_text()).get("status") != "complete":
                continue
            steps = json.loads(res.read_text())["steps"]
            gain = json.loads(probe.read_text())["test"]["acc1"] - base[folder] if base[folder] is not None else float("nan")
            rank, cos = spectrum_stats(features(str(run), cfg, splits, args.images))
            knn, loss = rows_of(run, "knn/acc1"), rows_of(run, "train/loss")
            curves[(steps, m)] = (knn, loss)
            knn_text = ", ".join(f"{s}: {v:.1f}" for s, v in knn)
            lines.append(f"| {steps} steps | {m} | {gain:+.2f} | {rank:.1f} | {cos:.3f} | {knn_text} | {loss[0][1]:.3f} -> {loss[-1][1]:.3f} |")
            print(lines[-1], flush=True)
    args.out.write_text("\n".join(lines) + "\n")
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (a, b) = plt.subplots(1, 2, figsize=(11, 4))
    for (steps, m), (knn, loss) in sorted(curves.items()):
        style = "-" if steps > 250 else "--"
        a.plot([s for s, _ in knn], [v for _, v in knn], style, marker="o", label=f"{m} ({steps})")
        first = loss[0][1] or 1.0
        b.plot([s for s, _ in loss], [v / first for _, v in loss], style, label=f"{m} ({steps})")
    a.set(xlabel="step", ylabel="kNN top-1 on val (%)", title="kNN monitor")
    b.set(xlabel="step", ylabel="loss / first logged loss", title="training loss (relative)")
    a.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    fig.savefig(args.out.with_name("methods_cpu_curves.png"), dpi=110)
    print(args.out.read_text())
    return 0


if __name__ == "__main__":
    sys.exit(main())
