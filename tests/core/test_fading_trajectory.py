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


@pytest.mark.parametrize("rho", [0.999, 0.5, np.array([0.9, -0.3, 0.0])])
def test_step_from_given_normals_is_the_step_recursion(rho):
    """step_from(z) with the normals step() would draw gives step()'s coefficients; Python floats give its bits."""
    drawn, given = GaussMarkovFading(3, rho), GaussMarkovFading(3, rho)
    rng_a, rng_b = np.random.default_rng(4), np.random.default_rng(4)
    drawn.reset(rng_a)
    given.reset(rng_b)
    h = [complex(x) for x in given.h]
    scale = np.broadcast_to(given.cn_scale, (3,)).tolist()
    rhos = np.broadcast_to(given.rho, (3,)).tolist()
    for _ in range(50):
        want = drawn.step(rng_a)
        z = rng_b.standard_normal((2, 3))
        got = given.step_from(z)
        assert np.allclose(got, want, rtol=1e-12, atol=0.0) and np.allclose(given.h, drawn.h, rtol=1e-12, atol=1e-15)
        parts = zip(rhos, scale, h, *z.tolist(), strict=True)
        h = [complex(r * x.real + c * a, r * x.imag + c * b) for r, c, x, a, b in parts]
        assert got.tolist() == [x.real * x.real + x.imag * x.imag for x in h]  # bit for bit


def test_step_from_keeps_the_gauss_markov_statistics():
    fading = GaussMarkovFading(256, 0.9)
    rng = np.random.default_rng(2)
    fading.reset(rng)
    power = np.array([fading.step_from(rng.standard_normal((2, 256))) for _ in range(400)]).T
    x = power - power.mean()
    assert power.mean() == pytest.approx(1.0, abs=0.03)
    assert (x[:, 1:] * x[:, :-1]).mean() / x.var() == pytest.approx(0.81, abs=0.03)


def test_link_step_from_and_move_with_given_normals_follow_the_rng_draws():
    cfg = build(ChannelConfig, {"bandwidth_hz": 10e6})
    links = [WirelessLink(cfg, n_links=2) for _ in range(2)]
    rngs = [np.random.default_rng(7), np.random.default_rng(7)]
    for link, rng in zip(links, rngs, strict=True):
        link.reset(rng, np.array([40.0, 300.0]))
    links[0].move(rngs[0], np.array([45.0, 290.0]), np.array([5.0, 10.0]))
    links[1].move(rngs[1], np.array([45.0, 290.0]), np.array([5.0, 10.0]), normals=rngs[1].standard_normal(2))
    assert np.array_equal(links[0].shadowing_db, links[1].shadowing_db)
    assert not np.array_equal(links[0].large_scale_gain, np.ones(2))
    want = links[0].step(rngs[0])
    got = links[1].step_from(rngs[1].standard_normal((2, 2)))
    for w, g in zip(want, got, strict=True):
        assert np.allclose(g, w, rtol=1e-12, atol=0.0)
    assert np.allclose(got[1], cfg.tx_power_w * got[0] / links[1].noise_w, rtol=1e-15)


@pytest.mark.parametrize("model", ["UMi", "UMa", "simple"])
def test_move_one_is_move_for_one_user(model):
    cfg = build(ChannelConfig, {"model": model})
    links = [WirelessLink(cfg, n_links=1) for _ in range(2)]
    for link in links:
        link.reset(np.random.default_rng(3), 120.0)
    rng = np.random.default_rng(5)
    d, start = 120.0, float(links[1].shadowing_db[0])
    for _ in range(40):
        step, normal = rng.uniform(-30.0, 30.0), rng.standard_normal()
        new = min(max(d + step, 5.0), 5000.0)  # below 10 m both price the link at 10 m
        links[0].move(rng, new, abs(new - d), normals=np.array([normal]))
        gain = links[1].move_one(new, abs(new - d), normal)
        d = new
        assert gain == pytest.approx(links[0].large_scale_gain[0], rel=1e-13)
        assert links[1].shadowing_db[0] == pytest.approx(links[0].shadowing_db[0], rel=1e-13, abs=1e-13)
        assert links[1].distances_m[0] == links[0].distances_m[0]
        assert links[1].mean_snr == pytest.approx(links[0].mean_snr, rel=1e-13)
    assert links[1].shadowing_db[0] != start  # the shadowing walked
    with pytest.raises(ValueError, match="move_one"):
        WirelessLink(cfg, n_links=2).move_one(50.0, 1.0, 0.0)
    with pytest.raises(ValueError, match="moved_m"):
        links[1].move_one(50.0, -1.0, 0.0)
