"""Block generation of Gauss-Markov fading (used by envs that precompute slots) has the same statistics."""

from __future__ import annotations

import numpy as np
import pytest

from edgelam.envs.core.channel import ChannelConfig, GaussMarkovFading, WirelessLink
from edgelam.envs.core.config import build


@pytest.mark.parametrize("rho", [0.98, 0.5, -0.2])
def test_trajectory_power_autocorrelation_is_rho_squared(rho):
    # for Rayleigh fading corr(|h_t|^2, |h_{t-1}|^2) = |rho|^2
    fading = GaussMarkovFading(64, rho)
    rng = np.random.default_rng(1)
    fading.reset(rng)
    power = fading.trajectory(rng, 4000)
    x = power - power.mean()
    lag1 = (x[:, 1:] * x[:, :-1]).mean() / x.var()
    assert power.mean() == pytest.approx(1.0, abs=0.02)
    assert lag1 == pytest.approx(rho**2, abs=0.02)


def test_trajectory_continues_from_the_current_state():
    fading = GaussMarkovFading(1, 1.0)  # rho = 1: the state never changes
    rng = np.random.default_rng(0)
    fading.reset(rng)
    start = fading.power_gain.copy()
    assert np.allclose(fading.trajectory(rng, 10), start[:, None])


def test_link_trajectory_matches_the_shannon_rate_of_its_gains():
    cfg = build(ChannelConfig, {"bandwidth_hz": 10e6, "noise_figure_db": 9.0})
    link = WirelessLink(cfg, n_links=3)
    rng = np.random.default_rng(0)
    link.reset(rng, np.array([50.0, 100.0, 200.0]))
    gain, snr, rate = link.trajectory(rng, 20)
    assert gain.shape == snr.shape == rate.shape == (3, 20)
    assert np.allclose(rate, 10e6 * np.log2(1.0 + snr))
    assert np.allclose(link.rate_bps, rate[:, -1]) and np.allclose(link.rate_for(), rate[:, -1])
    with pytest.raises(ValueError, match="n_slots"):
        link.trajectory(rng, 0)
