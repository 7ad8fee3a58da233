"""eval/knn.py against a slow, obviously-correct float64 loop over every query."""

from __future__ import annotations

import math

import pytest
import torch

from reprlab.eval.knn import knn_accuracy, knn_predict


def slow_scores(query, bank, labels, classes, k, t):
    out = torch.zeros(len(query), classes, dtype=torch.float64)
    for i, q in enumerate(query.double()):
        sims = [(float(q @ b / (q.norm() * b.norm())), int(y)) for b, y in zip(bank.double(), labels)]
        for s, y in sorted(sims, reverse=True)[:k]:
            out[i, y] += math.exp(s / t)
    return out


@pytest.mark.parametrize("k,t,chunk", [(1, 0.1, 1024), (5, 0.07, 3), (200, 0.5, 7), (50, 1.0, 1024)])
def test_knn_votes_match_the_slow_reference(k, t, chunk):
    g = torch.Generator().manual_seed(k)
    query, bank = torch.randn(17, 6, generator=g), torch.randn(40, 6, generator=g) * 3.0  # scale must not matter: cosine
    labels = torch.randint(0, 4, (40,), generator=g)
    fast = knn_predict(query, bank, labels, 4, k, t, chunk=chunk)
    torch.testing.assert_close(fast.double(), slow_scores(query, bank, labels, 4, k, t), rtol=1e-4, atol=1e-6)


def test_knn_accuracy_is_the_percentage_of_queries_whose_vote_wins():
    g = torch.Generator().manual_seed(0)
    centres = torch.randn(3, 8, generator=g) * 10
    bank_labels = torch.arange(30) % 3
    bank = centres[bank_labels] + torch.randn(30, 8, generator=g)
    query_labels = torch.tensor([0, 1, 2, 0])
    query = centres[query_labels] + 0.1 * torch.randn(4, 8, generator=g)
    assert knn_accuracy(query, query_labels, bank, bank_labels, 3, k=5) == 100.0
    assert knn_accuracy(query, (query_labels + 1) % 3, bank, bank_labels, 3, k=5) == 0.0
    assert knn_accuracy(query, torch.tensor([0, 1, 0, 0]), bank, bank_labels, 3, k=5) == 75.0
