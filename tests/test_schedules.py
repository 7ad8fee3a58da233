"""reprlab/schedules.py: the learning-rate factor (multistep, warmup, cosine) and the scalar schedules."""

import math
from types import SimpleNamespace

import pytest

from reprlab.schedules import lr_factor


def sched(**kw):
    base = dict(name="multistep", warmup_epochs=0.0, milestones=[2.0, 4.0], gamma=0.1, min_lr_ratio=0.0)
    return SimpleNamespace(**{**base, **kw})


def test_multistep_and_warmup():
    s = sched(warmup_epochs=1.0)
    assert lr_factor(0, 60, 10, s) == pytest.approx(0.1)
    assert lr_factor(9, 60, 10, s) == pytest.approx(1.0)
    assert lr_factor(19, 60, 10, s) == 1.0
    assert lr_factor(20, 60, 10, s) == pytest.approx(0.1)
    assert lr_factor(40, 60, 10, s) == pytest.approx(0.01)


def test_cosine_endpoints_and_midpoint():
    s = sched(name="cosine", min_lr_ratio=0.1)
    assert lr_factor(0, 100, 10, s) == pytest.approx(1.0)
    assert lr_factor(50, 100, 10, s) == pytest.approx(0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * 0.5)))
    assert lr_factor(100, 100, 10, s) == pytest.approx(0.1)


def test_scalar_schedules_follow_their_formulas():
    from reprlab.schedules import ScalarSchedule, value_at

    # BYOL (Grill et al. 2020): tau_k = 1 - (1 - tau_base) (cos(pi k / K) + 1) / 2, k = 0..K
    s, K = ScalarSchedule(start=0.99, end=1.0, shape="cosine"), 100
    for k in (0, 1, 37, 50, 99, 100):
        assert s.at(k, K + 1, 10) == pytest.approx(1 - (1 - 0.99) * (math.cos(math.pi * k / K) + 1) / 2, abs=1e-12)
    # DINO teacher temperature: linear 0.04 -> 0.07 over 3 epochs of 10 steps, then constant
    t = ScalarSchedule(start=0.07, warmup_from=0.04, warmup_epochs=3)
    assert t.at(0, 100, 10) == pytest.approx(0.04) and t.at(15, 100, 10) == pytest.approx(0.055) and t.at(30, 100, 10) == t.at(99, 100, 10) == 0.07
    lin = ScalarSchedule(start=1.0, end=0.0, shape="linear")
    assert lin.at(0, 11, 1) == 1.0 and lin.at(5, 11, 1) == pytest.approx(0.5) and lin.at(10, 11, 1) == 0.0
    assert ScalarSchedule(start=0.3, end=0.9, shape="constant").at(7, 10, 1) == 0.3
    assert value_at(0.25, 3, 10, 1) == 0.25
