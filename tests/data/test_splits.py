import torch

from reprlab.data.splits import nested_fraction, stratified_split


def _labels(n_cls=10, per=50):
    return torch.arange(n_cls).repeat_interleave(per)[torch.randperm(n_cls * per, generator=torch.Generator().manual_seed(3))]


def test_fractions_are_nested_stratified_and_deterministic():
    y = _labels()
    subsets = {f: set(nested_fraction(y, f, seed=7).tolist()) for f in (0.1, 0.25, 0.5, 1.0)}
    assert subsets[0.1] < subsets[0.25] < subsets[0.5] < subsets[1.0]
    for f, s in subsets.items():
        counts = torch.bincount(y[list(s)], minlength=10)
        assert (counts == round(50 * f)).all(), (f, counts)
    assert subsets[0.25] == set(nested_fraction(y, 0.25, seed=7).tolist())
    assert subsets[0.25] != set(nested_fraction(y, 0.25, seed=8).tolist())


def test_stratified_split_is_exact_disjoint_and_seeded():
    y = _labels()
    tr, va = stratified_split(y, 25, seed=0)
    assert len(va) == 25 and len(tr) == len(y) - 25
    assert not set(tr.tolist()) & set(va.tolist())
    counts = torch.bincount(y[va], minlength=10)
    assert counts.max() - counts.min() <= 1 and counts.sum() == 25
    tr2, va2 = stratified_split(y, 25, seed=0)
    assert torch.equal(va, va2)
    assert not torch.equal(va, stratified_split(y, 25, seed=1)[1])
