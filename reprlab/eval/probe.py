"""The linear classification protocol on CIFAR-100 with a frozen backbone, cached variant.

Features of the train (45k), val (5k) and test (10k) splits are extracted once (backbone in
eval mode, no gradients); a multinomial logistic regression is fitted on the train features by
full-batch L-BFGS for every L2 strength of a grid; the strength is chosen on the validation
features, and the test split is evaluated once, with that choice. This is the protocol of
Kornblith et al. 2019 ("Do Better ImageNet Models Transfer Better?") minus the refit on
train+val, so the probe sees the same 45k images as every other protocol here. Afterwards every
backbone parameter and BN buffer is checked to be bit-identical to before.
"""

from __future__ import annotations

import json
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

from reprlab import distributed
from reprlab.data.device import stats_tensors
from reprlab.errors import ReprlabError
from reprlab.io import atomic_torch_save, load_torch
from reprlab.runtime import resolve_precision
from reprlab.eval.features import extract_features
from reprlab.eval.frozen import snapshot, verify_unchanged
from reprlab.eval.metrics import classification_metrics


@dataclass
class LogRegFit:
    weight: torch.Tensor  # (C, D)
    bias: torch.Tensor  # (C,)
    l2: float
    iterations: int


def fit_logreg(x: torch.Tensor, y: torch.Tensor, num_classes: int, l2: float, max_iter: int = 300, init: LogRegFit | None = None) -> LogRegFit:
    """Multinomial logistic regression: min_W mean CE(xW^T + b, y) + l2/2 ||W||^2 by L-BFGS."""
    d = x.shape[1]
    w = (init.weight.clone() if init else torch.zeros(num_classes, d, device=x.device)).requires_grad_(True)
    b = (init.bias.clone() if init else torch.zeros(num_classes, device=x.device)).requires_grad_(True)
    opt = torch.optim.LBFGS([w, b], lr=1.0, max_iter=max_iter, history_size=20, tolerance_grad=1e-6, tolerance_change=1e-9, line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        loss = F.cross_entropy(x @ w.T + b, y) + 0.5 * l2 * (w * w).sum()
        loss.backward()
        return loss

    opt.step(closure)
    iters = opt.state[opt._params[0]].get("n_iter", max_iter)
    return LogRegFit(w.detach(), b.detach(), l2, int(iters))


def standardize(train: torch.Tensor, *others: torch.Tensor) -> list[torch.Tensor]:
    """Zero-mean, unit-variance features (statistics from train only): L-BFGS converges in far
    fewer iterations and one L2 grid suits every backbone."""
    mu, sd = train.mean(0, keepdim=True), train.std(0, keepdim=True).clamp_min(1e-6)
    return [(t - mu) / sd for t in (train, *others)]


def accuracy_report(logits: torch.Tensor, labels: torch.Tensor, classes: list[str], coarse_of_fine: torch.Tensor | None, coarse_classes: list[str] | None) -> dict:
    """top-1/top-5, per-class accuracy and the 20-superclass accuracy of the fine predictions."""
    out: dict = {k.split("/", 1)[1]: v for k, v in classification_metrics(logits, labels, "x").items()}
    pred = logits.topk(1, dim=1).indices[:, 0]  # the same prediction acc1 counted
    per_class = {}
    for c, name in enumerate(classes):
        m = labels == c
        per_class[name] = round((pred[m] == c).float().mean().item() * 100, 2) if m.any() else None
    out["per_class_acc1"] = per_class
    if coarse_of_fine is not None:
        # superclass accuracy: the fine prediction counts when it lies in the right superclass
        out["superclass_acc1"] = (coarse_of_fine[pred] == coarse_of_fine[labels]).float().mean().item() * 100
        by_super = {}  # fine-label accuracy over the test images of each superclass
        for s, name in enumerate(coarse_classes or []):
            m = coarse_of_fine[labels] == s
            by_super[name] = round((pred[m] == labels[m]).float().mean().item() * 100, 2) if m.any() else None
        out["fine_acc1_by_superclass"] = by_super
    return out


def coarse_map(train) -> torch.Tensor | None:
    if train.coarse_labels is None:
        return None
    cmap = torch.full((train.num_classes,), -1, dtype=torch.long)
    cmap[train.labels] = train.coarse_labels
    return cmap


def _bar(enabled: bool, total: int, desc: str, unit: str):
    """A tqdm bar on stderr, as the training loop's (``train.progress``); None when turned off."""
    if not enabled:
        return None
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, unit=unit, unit_scale=unit == "img", dynamic_ncols=True, file=sys.stderr)


class FeatureCache:
    """Features of a probe run, kept in its run directory so a re-run skips the extraction.

    The file carries a fingerprint of everything the features depend on (backbone, its step,
    resolution, data and model settings); a file with another fingerprint is ignored.
    """

    def __init__(self, path: Path, fingerprint: dict) -> None:
        self.path = path
        self.fingerprint = json.dumps(fingerprint, sort_keys=True, default=str)

    def load(self) -> dict | None:
        if not self.path.is_file():
            return None
        try:
            blob = load_torch(self.path, "feature cache", weights_only=True)
        except ReprlabError:  # damaged (a full disk, a copy cut short): extract again
            return None
        return blob["features"] if isinstance(blob, dict) and blob.get("fingerprint") == self.fingerprint else None

    def save(self, feats: dict) -> None:
        if not distributed.is_main():  # rank 0 alone writes
            return
        atomic_torch_save({"fingerprint": self.fingerprint, "features": feats}, self.path)


def cached_probe(backbone, splits, cfg, device: torch.device, feature_cache=None) -> dict:
    """Run the cached linear protocol; returns the fields of result.json it owns.

    With ``train.eval_test = false`` (sweep trials) the test split is neither embedded nor scored.
    """
    if splits.test is None:
        raise ReprlabError(f"the linear protocol evaluates on CIFAR-100; dataset {splits.name!r} has no test split")
    if len(splits.val) == 0:
        raise ReprlabError("the linear protocol chooses L2 on the validation split; data.val_size must be > 0")
    use_test = cfg.train.eval_test
    parts = ("train", "val", "test") if use_test else ("train", "val")
    model = backbone.model.to(device)
    if cfg.model.channels_last:
        model = model.to(memory_format=torch.channels_last)
    before = snapshot(model)
    mean, std = stats_tensors(backbone.mean, backbone.std, device)
    res = cfg.eval.resolution or backbone.input_size
    t0 = time.perf_counter()

    amp = resolve_precision(cfg.train.precision, device)
    feats = feature_cache.load() if feature_cache else None
    if feats is None or not all(s in feats for s in parts):
        bar = _bar(cfg.train.progress, sum(len(getattr(splits, s)) for s in parts), f"probe: features ({'+'.join(parts)})", "img")
        feats = {
            s: extract_features(model, getattr(splits, s).images, mean, std, cfg.train.eval_batch_size, device, res, cfg.model.channels_last, amp,
                                on_batch=bar.update if bar else None).cpu()
            for s in parts
        }
        if bar is not None:
            bar.close()
        if feature_cache:
            feature_cache.save(feats)
    t_feat = time.perf_counter() - t0
    verify_unchanged(model, before)
    xtr, xva, *xte = (f.to(device) for f in standardize(*(feats[s] for s in parts)))
    ytr, yva = (getattr(splits, s).labels.to(device) for s in ("train", "val"))
    if not torch.isfinite(xtr).all():
        raise ReprlabError("backbone features contain NaN/inf; the checkpoint is broken")
    num_classes = splits.train.num_classes
    t1 = time.perf_counter()
    sweep, fits, prev = [], {}, None
    bar = _bar(cfg.train.progress, len(cfg.eval.l2_grid), "probe: fit (L-BFGS per L2)", "fit")
    for l2 in sorted(cfg.eval.l2_grid, reverse=True):  # strong to weak regularisation, warm-started
        fitted = fit_logreg(xtr, ytr, num_classes, l2, cfg.eval.max_iter, init=prev)
        prev = fits[l2] = fitted
        val_acc = ((xva @ fitted.weight.T + fitted.bias).argmax(1) == yva).float().mean().item() * 100
        tr_acc = ((xtr @ fitted.weight.T + fitted.bias).argmax(1) == ytr).float().mean().item() * 100
        sweep.append({"l2": l2, "val_acc1": val_acc, "train_acc1": tr_acc, "iterations": fitted.iterations})
        if bar is not None:
            bar.set_postfix(l2=f"{l2:g}", val_acc1=f"{val_acc:.2f}", refresh=False)
            bar.update(1)
    if bar is not None:
        bar.close()
    best = max(sweep, key=lambda r: (r["val_acc1"], r["l2"]))  # ties: the stronger regularisation
    w = fits[best["l2"]]
    t_fit = time.perf_counter() - t1
    cmap = coarse_map(splits.train)
    val = accuracy_report((xva @ w.weight.T + w.bias).cpu(), yva.cpu(), splits.train.classes, cmap, splits.train.coarse_classes)
    out: dict = {}
    if use_test:
        test_logits = xte[0] @ w.weight.T + w.bias  # the test split's one and only use
        test = accuracy_report(test_logits.cpu(), splits.test.labels, splits.train.classes, cmap, splits.train.coarse_classes)
        out = {
            "test": {k: v for k, v in test.items() if not isinstance(v, dict)},
            "test_per_class_acc1": test["per_class_acc1"],
            "test_fine_acc1_by_superclass": test.get("fine_acc1_by_superclass"),
        }
    return {
        "val": {k: val[k] for k in ("acc1", "acc5", "loss", "superclass_acc1") if k in val},
        **out,
        "l2_sweep": sweep,
        "l2": best["l2"],
        "feature_dim": int(xtr.shape[1]),
        "feature_seconds": round(t_feat, 2),
        "fit_seconds": round(t_fit, 2),
        "resolution": res,
        "frozen_verified": True,
    }
