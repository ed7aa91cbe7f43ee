"""tests/mutation.py's statistics: the Wilson interval of a sampled mutation score."""

from __future__ import annotations

import math

import pytest
from scipy.stats import binomtest

from tests.mutation import wilson_interval


@pytest.mark.parametrize(("killed", "n"), [(30, 40), (40, 40), (0, 12), (7, 9), (301, 378)])
def test_wilson_interval_is_scipys(killed, n):
    expected = binomtest(killed, n).proportion_ci(confidence_level=0.95, method="wilson")
    low, high = wilson_interval(killed, n)
    assert low == pytest.approx(expected.low, abs=2e-4) and high == pytest.approx(expected.high, abs=2e-4)
    assert low <= killed / n <= high


def test_wilson_interval_of_no_mutants_is_undefined():
    assert all(math.isnan(x) for x in wilson_interval(0, 0))
