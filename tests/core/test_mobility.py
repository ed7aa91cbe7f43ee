"""User mobility: placement, cell bounds, speeds, waypoint legs, determinism, config errors."""

from __future__ import annotations

import numpy as np
import pytest

from edgelam.envs.core.config import build
from edgelam.envs.core.mobility import (
    MobilityConfig,
    RandomWalk,
    RandomWaypoint,
    StaticUsers,
    make_mobility,
)


def test_disc_placement_is_uniform_over_the_annulus():
    mob = RandomWalk(MobilityConfig(cell_radius_m=200.0, min_distance_m=10.0))
    pos, dist = mob.reset(np.random.default_rng(0), 100_000)
    assert pos.shape == (100_000, 2) and dist.shape == (100_000,)
    r = np.hypot(pos[:, 0], pos[:, 1])
    assert r.min() >= 10.0 and r.max() <= 200.0
    # area fraction inside 100 m: (100^2 - 10^2) / (200^2 - 10^2) = 0.24812
    assert np.mean(r < 100.0) == pytest.approx(0.24812, abs=0.005)
    np.testing.assert_allclose(dist, r)


def test_square_cell_placement_and_walk_stay_inside():
    cfg = MobilityConfig(cell_shape="square", cell_radius_m=50.0, min_distance_m=10.0, speed_max_mps=30.0)
    mob = RandomWalk(cfg)
    rng = np.random.default_rng(1)
    pos, _ = mob.reset(rng, 2_000)
    for _ in range(50):
        pos, dist = mob.step(rng, 1.0)
        assert np.all(np.abs(pos) <= 50.0 + 1e-9)
        assert np.all(np.hypot(pos[:, 0], pos[:, 1]) >= 10.0 - 1e-9)
        assert np.all(dist >= 10.0)


def test_random_walk_moves_at_most_vmax_dt_and_is_deterministic():
    cfg = MobilityConfig(cell_radius_m=1000.0, speed_min_mps=1.0, speed_max_mps=2.0)
    a, b = RandomWalk(cfg), RandomWalk(cfg)
    ra, rb = np.random.default_rng(4), np.random.default_rng(4)
    pa, _ = a.reset(ra, 500)
    b.reset(rb, 500)
    for _ in range(10):
        prev = pa.copy()
        pa, _ = a.step(ra, 0.5)
        pb, _ = b.step(rb, 0.5)
        np.testing.assert_array_equal(pa, pb)
        step = np.hypot(*(pa - prev).T)
        assert np.all(step <= 1.0 + 1e-9)
    # far from any border the step is exactly v dt with v in [1, 2] m/s
    r = np.hypot(prev[:, 0], prev[:, 1])
    free = (r > 20.0) & (r < 990.0)
    assert np.all(step[free] >= 0.5 - 1e-9)


def test_random_waypoint_walks_straight_and_pauses():
    cfg = MobilityConfig(
        model="random_waypoint", cell_radius_m=100.0, speed_min_mps=2.0, speed_max_mps=2.0, pause_s=3.0
    )
    mob = make_mobility(cfg)
    assert isinstance(mob, RandomWaypoint)
    rng = np.random.default_rng(0)
    mob.reset(rng, 1)
    mob.positions_m = np.array([[20.0, 0.0]])
    mob.waypoints_m = np.array([[20.0, 5.0]])
    pos, dist = mob.step(rng, 1.0)  # 2 m towards the waypoint
    np.testing.assert_allclose(pos, [[20.0, 2.0]])
    np.testing.assert_allclose(dist, [np.hypot(20.0, 2.0)])
    mob.step(rng, 1.0)
    pos, _ = mob.step(rng, 1.0)  # 1 m left < 2 m: arrives and stops at the waypoint
    np.testing.assert_allclose(pos, [[20.0, 5.0]])
    assert mob.pause_left_s[0] == 3.0
    assert not np.allclose(mob.waypoints_m, [[20.0, 5.0]])  # the next leg is drawn
    for _ in range(3):  # paused for 3 s
        pos, _ = mob.step(rng, 1.0)
        np.testing.assert_allclose(pos, [[20.0, 5.0]])
    pos, _ = mob.step(rng, 1.0)
    assert np.hypot(*(pos[0] - [20.0, 5.0])) == pytest.approx(2.0)


def test_random_waypoint_population_stays_in_cell():
    cfg = MobilityConfig(model="random_waypoint", cell_radius_m=100.0, speed_min_mps=1.0, speed_max_mps=20.0)
    mob = make_mobility(cfg)
    rng = np.random.default_rng(3)
    mob.reset(rng, 1_000)
    for _ in range(100):
        pos, dist = mob.step(rng, 1.0)
    assert np.all(np.hypot(pos[:, 0], pos[:, 1]) <= 100.0 + 1e-9) and np.all(dist >= 10.0)
    assert np.all((mob.speeds_mps >= 1.0) & (mob.speeds_mps <= 20.0))


def test_static_users_do_not_move():
    mob = make_mobility(MobilityConfig(model="static"))
    assert isinstance(mob, StaticUsers)
    rng = np.random.default_rng(0)
    pos, _ = mob.reset(rng, 5)
    pos2, _ = mob.step(rng, 10.0)
    np.testing.assert_array_equal(pos, pos2)


def test_mobility_config_and_call_validation():
    with pytest.raises(ValueError, match=r"model: 'levy' is not allowed"):
        build(MobilityConfig, {"model": "levy"})
    with pytest.raises(ValueError, match="speed_min_mps"):
        build(MobilityConfig, {"speed_min_mps": 5.0, "speed_max_mps": 1.0})
    with pytest.raises(ValueError, match="min_distance_m"):
        build(MobilityConfig, {"cell_radius_m": 30.0, "min_distance_m": 20.0})
    with pytest.raises(ValueError, match=r"unknown config key 'radius'"):
        build(MobilityConfig, {"radius": 3})
    mob = RandomWalk(MobilityConfig())
    with pytest.raises(ValueError, match="n:"):
        mob.reset(np.random.default_rng(0), 0)
    with pytest.raises(ValueError, match="dt_s"):
        mob.step(np.random.default_rng(0), -1.0)
