"""Exact properties of the queue maps that stay true over any interval length and input type."""

from __future__ import annotations

import numpy as np
import pytest

from edgelam.envs.core.queues import background_interval_map, lindley_interval, pollaczek_khinchine_wait_s


@pytest.mark.parametrize("dt", [0.25, 2.5])
def test_background_work_per_interval_scales_with_its_length(dt):
    """Poisson(u / E[S] x dt) jobs of mean E[S] per interval: the work brought is u dt on average, so the
    shift (work - dt) averages -(1 - u) dt, over an interval shorter or longer than 1 s."""
    u, mean = 0.5, 0.2
    shift, floor = background_interval_map(np.random.default_rng(3), u, mean, dt, size=(40_000,))
    assert shift.mean() == pytest.approx(-(1.0 - u) * dt, abs=0.02 * dt)
    # Var(work) of a compound Poisson sum of exponentials: rate dt x E[S^2] = (u / E[S]) dt 2 E[S]^2
    assert shift.var() == pytest.approx(2.0 * u * mean * dt, rel=0.05)
    assert np.all(floor >= 0.0) and np.all(floor <= np.maximum(shift + dt, 0.0) + 1e-12)


def test_scalars_come_back_as_floats_and_arrays_as_arrays():
    wait = pollaczek_khinchine_wait_s(0.5, 0.8, 0.8**2)  # M/D/1: rho 0.4, W = 0.5 x 0.64 / 1.2
    assert isinstance(wait, float) and wait == pytest.approx(0.5 * 0.64 / 1.2, rel=1e-12)
    waits = pollaczek_khinchine_wait_s(np.array([0.5, 1.0]), 0.8, 1.28)  # exponential: E[S^2] = 2 E[S]^2
    assert isinstance(waits, np.ndarray) and waits.shape == (2,)
    np.testing.assert_allclose(waits, [0.5 * 1.28 / 1.2, 1.0 * 1.28 / 0.4], rtol=1e-12)
    assert isinstance(lindley_interval(1.0, -0.25, 0.5), float) and lindley_interval(1.0, -0.25, 0.5) == 0.75
