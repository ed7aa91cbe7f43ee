"""AR(1) background load: its stationary law, its two paths and the block filter against its recursion."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest

from edgelam.envs.core.config import build
from edgelam.envs.core.load import AR1LoadConfig, ar1_block, ar1_load_step


def test_config_validates_and_gives_the_innovation_std():
    cfg = build(AR1LoadConfig, {"mean": 0.4, "std": 0.1, "corr": 0.8})
    assert cfg.innovation_std == pytest.approx(0.1 * math.sqrt(1.0 - 0.64), rel=1e-15)
    with pytest.raises(ValueError, match="max_util"):
        build(AR1LoadConfig, {"max_util": 1.0})


def test_clipped_step_has_the_stationary_mean_and_std_and_stays_in_range():
    cfg = AR1LoadConfig(mean=0.4, std=0.05, corr=0.9, max_util=0.95)
    normals = np.random.default_rng(0).standard_normal((20_000, 64))
    u = np.full(64, cfg.mean)
    seen = np.empty_like(normals)
    for t, z in enumerate(normals):
        u = ar1_load_step(u, cfg.mean, cfg.corr, cfg.innovation_std, cfg.max_util, z)
        seen[t] = u
    assert seen.mean() == pytest.approx(0.4, abs=2e-3)
    assert seen.std() == pytest.approx(0.05, rel=0.03)
    lag1 = np.corrcoef(seen[1:].ravel(), seen[:-1].ravel())[0, 1]
    assert lag1 == pytest.approx(0.9, abs=0.01)
    top = AR1LoadConfig(mean=0.9, std=0.3, corr=0.5, max_util=0.95)
    clipped = ar1_load_step(np.full(3, 0.9), top.mean, top.corr, top.innovation_std, top.max_util,
                            np.array([-9.0, 0.0, 9.0]))
    assert np.array_equal(clipped, [0.0, 0.9, 0.95])


def test_scalar_step_equals_the_array_step_bit_for_bit():
    rng = np.random.default_rng(1)
    u, z = rng.uniform(0.0, 0.9, 50), rng.standard_normal(50)
    s = 0.15 * math.sqrt(1 - 0.95**2)
    batched = ar1_load_step(u, 0.3, 0.95, s, 0.9, z)
    scalar = [ar1_load_step(float(a), 0.3, 0.95, s, 0.9, float(b)) for a, b in zip(u, z, strict=True)]
    assert all(isinstance(x, float) for x in scalar)
    assert np.array_equal(batched, scalar)


@pytest.mark.parametrize("gain", [1.0, 0.6])
def test_block_filter_is_the_recursion_and_continues_across_blocks(gain):
    rng = np.random.default_rng(2)
    x0, e = rng.standard_normal(3), rng.standard_normal((3, 40))
    x, expected = x0.copy(), np.empty_like(e)
    for t in range(e.shape[1]):
        x = 0.7 * x + gain * e[:, t]
        expected[:, t] = x
    np.testing.assert_allclose(ar1_block(x0, 0.7, e, gain), expected, rtol=1e-12, atol=1e-12)
    first = ar1_block(x0, 0.7, e[:, :25], gain)
    rest = ar1_block(first[:, -1], 0.7, e[:, 25:], gain)
    np.testing.assert_allclose(np.concatenate([first, rest], axis=1), expected, rtol=1e-12, atol=1e-12)
    h0 = x0 + 1j * rng.standard_normal(3)  # complex rows: the Gauss-Markov fading coefficient
    assert np.iscomplexobj(ar1_block(h0, 0.7, e + 0j, gain))


def test_config_defaults_and_bounds_are_the_documented_ones():
    # the shipped scenarios set their own values, so only this pins the class's own
    cfg = AR1LoadConfig()
    assert (cfg.mean, cfg.std, cfg.corr, cfg.max_util) == (0.3, 0.1, 0.9, 0.95)
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.mean = 0.5  # configs are values: shared between envs and rows
    for key, lo, hi in (("mean", 0.0, 0.95), ("std", 0.0, 0.5), ("corr", 0.0, 1.0), ("max_util", 0.0, 0.99)):
        for inside in (lo, hi):
            assert getattr(build(AR1LoadConfig, {key: inside}), key) == inside
        for outside in (lo - 0.01, hi + 0.01):
            with pytest.raises(ValueError, match=key):
                build(AR1LoadConfig, {key: outside})


def test_block_filter_gain_defaults_to_one():
    rng = np.random.default_rng(5)
    x0, e = rng.standard_normal(2), rng.standard_normal((2, 6))
    np.testing.assert_array_equal(ar1_block(x0, 0.5, e), ar1_block(x0, 0.5, e, 1.0))
    assert not np.array_equal(ar1_block(x0, 0.5, e), ar1_block(x0, 0.5, e, 2.0))
