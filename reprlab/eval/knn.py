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


class KNNMonitor:
    """The kNN monitor of self-supervised pretraining on CIFAR-100: the training split (minus
    validation) as the memory bank, the validation split as queries, whatever the pretraining
    set. Labels reach only this monitor, never a loss. Data is loaded once, on first use.

    ``data_cfg`` is the run's DataConfig: when it already is full fine-label CIFAR-100 at 32 px
    its splits are reused, otherwise CIFAR-100 is loaded from the same root and cache.
    """

    def __init__(self, splits, data_cfg, k: int = 200, temperature: float = 0.1, bank_size: int = 0) -> None:
        self.splits, self.data_cfg = splits, data_cfg
        self.k, self.temperature, self.bank_size = k, temperature, bank_size
        self._data = None

    def data(self):
        """(bank split, query split, number of classes)."""
        if self._data is None:
            s = self.splits
            if not (s.name == "cifar100" and self.data_cfg.labels == "fine" and self.data_cfg.fraction == 1.0 and self.data_cfg.resolution == 32):
                from dataclasses import replace

                from reprlab.data.registry import load_splits

                s = load_splits(replace(self.data_cfg, dataset="cifar100", fraction=1.0, resolution=32, labels="fine"))
            bank = s.train
            if self.bank_size and self.bank_size < len(bank):
                bank = bank.subset(torch.arange(len(bank))[:: max(1, len(bank) // self.bank_size)][: self.bank_size])
            self._data = (bank, s.val, s.train.num_classes)
        return self._data

    def __call__(self, backbone, mean, std, batch_size: int, device, channels_last: bool, amp_dtype) -> float:
        """kNN top-1 (%) of ``backbone``'s pooled features on CIFAR-100 validation."""
        from reprlab.eval.features import extract_features

        bank, val, num_classes = self.data()
        res = backbone.input_size
        fb = extract_features(backbone, bank.images, mean, std, batch_size, device, res, channels_last, amp_dtype)
        fq = extract_features(backbone, val.images, mean, std, batch_size, device, res, channels_last, amp_dtype)
        return knn_accuracy(fq, val.labels.to(device), fb, bank.labels.to(device), num_classes, self.k, self.temperature)
