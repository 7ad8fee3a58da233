"""Classification metrics shared by the training loop's evaluation and the linear probe."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def classification_metrics(logits: torch.Tensor, labels: torch.Tensor, prefix: str) -> dict[str, float]:
    """``{prefix}/loss``, ``{prefix}/acc1`` and ``{prefix}/acc5`` (percent) of float logits."""
    loss = F.cross_entropy(logits, labels).item()
    top5 = logits.topk(min(5, logits.shape[1]), dim=1).indices
    acc1 = (top5[:, 0] == labels).float().mean().item() * 100
    acc5 = (top5 == labels[:, None]).any(1).float().mean().item() * 100
    return {f"{prefix}/loss": loss, f"{prefix}/acc1": acc1, f"{prefix}/acc5": acc5}
