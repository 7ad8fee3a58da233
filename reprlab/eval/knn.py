"""Weighted k-nearest-neighbour classification on frozen features: the cheap monitor of
self-supervised pretraining (Wu et al. 2018, "Unsupervised Feature Learning via Non-Parametric
Instance Discrimination": cosine similarity, the k nearest training features vote for their
class with weight ``exp(sim / T)``; k = 200, T = 0.1 as there).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


@torch.no_grad()
def knn_predict(
    query: torch.Tensor, bank: torch.Tensor, bank_labels: torch.Tensor, num_classes: int, k: int = 200, temperature: float = 0.1, chunk: int = 1024
) -> torch.Tensor:
    """Class scores (N_query, C) from the temperature-weighted votes of the k nearest neighbours."""
    query = F.normalize(query.float(), dim=1)
    bank = F.normalize(bank.float(), dim=1)
    k = min(k, bank.shape[0])
    out = []
    for i in range(0, query.shape[0], chunk):
        sim = query[i : i + chunk] @ bank.T
        top_sim, top_idx = sim.topk(k, dim=1)
        weights = (top_sim / temperature).exp()
        votes = torch.zeros(sim.shape[0], num_classes, device=sim.device)
        votes.scatter_add_(1, bank_labels[top_idx], weights)
        out.append(votes)
    return torch.cat(out)


def knn_accuracy(query, query_labels, bank, bank_labels, num_classes: int, k: int = 200, temperature: float = 0.1) -> float:
    scores = knn_predict(query, bank, bank_labels, num_classes, k, temperature)
    return (scores.argmax(1) == query_labels).float().mean().item() * 100.0
