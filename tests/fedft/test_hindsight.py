"""The hindsight planner of FedFTAllocation-v0 / FedFTPower-v0 (:mod:`edgelam.baselines.fedft_hindsight`)."""

from __future__ import annotations

import itertools

import gymnasium as gym
import numpy as np
import pytest

import edgelam.envs  # noqa: F401  (registers the ids)
from edgelam import baselines
from edgelam.agents.evaluate import evaluate
from edgelam.baselines import fedft_hindsight
from edgelam.baselines.fedft import ALLOCATION_ID, POWER_ID, min_energy_allocation
from edgelam.baselines.hindsight import rollout
from edgelam.envs.core.channel import NOISE_PSD_W_PER_HZ
from edgelam.envs.fedft.env import parallel_env

IDS = (ALLOCATION_ID, POWER_ID)
SEED = 10000
EPISODES = 3
N0 = NOISE_PSD_W_PER_HZ * 10 ** 0.5


def _make(env_id: str, **overrides):
    if env_id == POWER_ID:
        env = parallel_env(**overrides)
    else:
        env = gym.make(env_id, **overrides).unwrapped
    env.reset(seed=SEED)
    return env


@pytest.fixture(scope="module")
def hindsight_rows():
    return {env_id: evaluate("hindsight", env_id, episodes=EPISODES, seed=SEED) for env_id in IDS}


@pytest.mark.parametrize("env_id", IDS)
def test_registered(env_id):
    assert "hindsight" in baselines.available(env_id)


@pytest.mark.parametrize("env_id", IDS)
def test_bound_is_above_the_realised_return(env_id, hindsight_rows):
    for row in hindsight_rows[env_id]:
        assert row["hindsight_bound"] == 1.0 and row["hindsight_exact"] == 0.0 and row["hindsight_fallback"] == 0.0
        assert row["return"] <= row["hindsight_value"]


@pytest.mark.parametrize("env_id", IDS)
def test_beats_every_other_baseline(env_id, hindsight_rows):
    """The bound is above every baseline's return (by construction); the plan played too (nothing guarantees
    that for a planner, but with the episode's future it beats them all here)."""
    values = np.array([r["hindsight_value"] for r in hindsight_rows[env_id]])
    played = np.array([r["return"] for r in hindsight_rows[env_id]])
    for name in baselines.available(env_id):
        if name == "hindsight":
            continue
        returns = np.array([r["return"] for r in evaluate(name, env_id, episodes=EPISODES, seed=SEED)])
        assert np.all(values >= returns) and np.all(played >= returns), (name, values, played, returns)


@pytest.mark.parametrize("env_id", IDS)
def test_trace_is_what_the_env_draws(env_id):
    """The channel of every round is action-independent and the trace has it; the rounds' learning noise is the
    n-th block of the trace, n the earlier rounds with participants (random play skips some rounds)."""
    env = _make(env_id, episode_length=8)
    trace = fedft_hindsight.exogenous_trace(env)
    rng = np.random.default_rng(0)
    n = 0
    for t in range(8):
        np.testing.assert_array_equal(env.fed.gains, trace.gains[t])
        before = env.fed.learn_rng.bit_generator.state
        if env_id == POWER_ID:
            actions = {a: rng.uniform(-1, 1, 2).astype(np.float32) for a in env.agents}
            if t % 3 == 0:
                actions = {a: -np.ones(2, dtype=np.float32) for a in env.agents}
            _, _, _, _, infos = env.step(actions)
            m = infos["device_0"]["num_participants"]
        else:
            action = rng.uniform(-1, 1, 2 * env.fed.k).astype(np.float32)
            if t % 3 == 0:
                action[:] = -1.0
            m = env.step(action)[4]["num_participants"]
        drawn = np.random.Generator(np.random.PCG64())
        drawn.bit_generator.state = before
        if m > 0:
            np.testing.assert_array_equal(drawn.standard_normal((1, env.fed.g))[0], trace.noise[n])
            n += 1
        else:
            assert env.fed.learn_rng.bit_generator.state == before


@pytest.mark.parametrize("env_id", IDS)
def test_toy_episode_enumerated(env_id):
    """3 rounds of 2 devices, every sequence of the rounds' participant sets (at most 4^3) enumerated: the planner
    finds the best, the bound is above it (and not far: the relaxation's looseness needs several topics' data)."""
    env = _make(env_id, episode_length=3, num_devices=2)
    plan = fedft_hindsight.solve(env)
    rounds = fedft_hindsight._Rounds(env, fedft_hindsight.exogenous_trace(env))
    best = max(rollout(env, [rounds.env_action(t, c) for t, c in enumerate(seq)])[0]
               for seq in itertools.product(*(range(len(c)) for c in rounds.candidates)))
    played = rollout(env, plan.actions)[0]
    assert played == pytest.approx(best, rel=1e-12)
    assert plan.kind == "bound" and f"{played:.6g}" in plan.solver
    assert best <= plan.value <= best + 0.5 * abs(best) + 1.0


def test_planner_kind_beyond_enumeration():
    env = _make(ALLOCATION_ID, episode_length=3, num_devices=fedft_hindsight.MAX_ENUM_DEVICES + 1)
    plan = fedft_hindsight.solve(env)
    assert plan.kind == "planner" and fedft_hindsight.upper_bound(env) is None
    assert plan.value == pytest.approx(rollout(env, plan.actions)[0], rel=1e-12)


def test_bound_without_the_noise_trace_would_fail():
    """A bound that ignores the episode's noise (all blocks 0) falls below what the plan realises: the bound's
    test above catches a solver that does not use the trace (toy episode: 3 rounds of 2 devices)."""
    env = _make(ALLOCATION_ID, episode_length=3, num_devices=2)
    plan = fedft_hindsight.solve(env)
    played = rollout(env, plan.actions)[0]
    real = fedft_hindsight.exogenous_trace

    def noiseless(e):
        t = real(e)
        return fedft_hindsight.Trace(t.fading, np.zeros_like(t.noise), t.gains, t.downlink_s)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(fedft_hindsight, "exogenous_trace", noiseless)
        assert fedft_hindsight.upper_bound(env) < played <= plan.value


def test_a_solver_that_ignores_the_future_noise_would_fail():
    """The plan replayed with another episode's noise earns other rewards than it realises (the equality test
    above catches a solver that does not use the episode's own trace)."""
    env = _make(ALLOCATION_ID)
    plan = fedft_hindsight.solve(env)
    trace = fedft_hindsight.exogenous_trace(env)
    other = _make(ALLOCATION_ID)
    other.reset(seed=SEED + 1)
    wrong = fedft_hindsight.exogenous_trace(other).noise
    rewards = []
    for noise in (trace.noise, wrong):
        rounds = fedft_hindsight._Rounds(env, fedft_hindsight.Trace(trace.fading, noise, trace.gains,
                                                                    trace.downlink_s))
        state, n = env.fed.state.copy(), np.zeros(1, dtype=np.int64)
        rewards.append([float(rounds.play(state, n, t, a.astype(np.float64)[None])[0])
                        for t, a in enumerate(plan.actions)])
    right, other_noise = np.array(rewards)
    assert right.sum() == pytest.approx(rollout(env, plan.actions)[0], rel=1e-9)
    assert np.max(np.abs(other_noise - right)) > 0.1


def test_fallback_is_flagged(monkeypatch):
    def broken(*args):
        raise ValueError("solver broke")

    monkeypatch.setattr(fedft_hindsight, "_beam", broken)
    for env_id in IDS:
        env = _make(env_id)
        plan = fedft_hindsight.solve(env)
        assert plan.fallback and "solver broke" in plan.solver and plan.kind == "planner"
        assert plan.value == pytest.approx(rollout(env, plan.actions)[0], rel=1e-12)
    rows = evaluate("hindsight", ALLOCATION_ID, episodes=1, seed=SEED)
    assert rows[0]["hindsight_fallback"] == 1.0 and rows[0]["return"] == pytest.approx(rows[0]["hindsight_value"])


def test_a_failing_bound_leaves_the_planner(monkeypatch):
    def broken(env):
        raise FloatingPointError("bound broke")

    monkeypatch.setattr(fedft_hindsight, "upper_bound", broken)
    env = _make(ALLOCATION_ID, episode_length=4)
    plan = fedft_hindsight.solve(env)
    assert plan.kind == "planner" and not plan.fallback and "bound broke" in plan.solver
    assert plan.value == pytest.approx(rollout(env, plan.actions)[0], rel=1e-12)


def test_live_backend_is_refused(monkeypatch):
    env = _make(ALLOCATION_ID)
    monkeypatch.setattr(env.fed, "backend", "live")
    with pytest.raises(ValueError, match="replay"):
        fedft_hindsight.solve(env)


def test_min_energy_bands_matches_the_convex_solver():
    rng = np.random.default_rng(3)
    for trial in range(6):
        k = 4
        gains = 10 ** (-rng.uniform(100, 125, k) / 10) * rng.exponential(1.0, k)
        if trial == 0:
            gains[0] = 1e-18  # cannot make its window even alone: every set with it is infeasible
        window = rng.uniform(1.0, 2.5, k)
        masks = np.array([[1, 1, 1, 1], [1, 0, 1, 0], [0, 0, 0, 0]], dtype=bool)
        b, p, ok = fedft_hindsight.min_energy_bands(gains, window, 196_608.0, 2e5, N0, 0.2, masks)
        for mask, bi, pi, feasible in zip(masks, b, p, ok, strict=True):
            assert np.all(bi[~mask] == 0) and np.all(pi[~mask] == 0) and bi.sum() <= 2e5 * (1 + 1e-12)
            if not mask.any():
                assert feasible
                continue
            _, ref_p, status = min_energy_allocation(gains[mask], 196_608.0, window[mask], 2e5, N0, 0.2,
                                                         return_status=True)
            assert feasible == status.startswith("optimal"), status
            if feasible:
                assert np.all(pi <= 0.2)
                rate = bi[mask] * np.log2(1 + pi[mask] * gains[mask] / (N0 * bi[mask]))
                assert np.all(rate * window[mask] >= 196_608.0 * (1 - 1e-9))
                assert (pi[mask] * window[mask]).sum() <= (ref_p * window[mask]).sum() * (1 + 1e-6)
