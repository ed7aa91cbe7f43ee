"""EdgeModelCache-v0's hindsight is exact: brute force over every action sequence of a toy episode agrees."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest

import edgelam.envs  # noqa: F401  (registers the ids)
from edgelam import baselines
from edgelam.baselines import model_cache_hindsight
from edgelam.baselines.hindsight import fork

ENV_ID = "edgelam/EdgeModelCache-v0"


def _best_by_brute_force(env, steps: int) -> float:
    """The best return over every action sequence of ``steps`` requests, by stepping forks (a tree search)."""
    n = env.action_space.n

    def search(sim, left):
        if left == 0:
            return 0.0
        best = -np.inf
        for a in range(n):
            child = fork(sim)
            _, reward, _, _, _ = child.step(a)
            best = max(best, reward + search(child, left - 1))
        return best

    return search(fork(env), steps)


@pytest.mark.parametrize("seed", [0, 1])
def test_dp_value_equals_brute_force_on_a_toy_episode(seed):
    """One task (M = 4: device, edge, edge+gui, cloud; 25 actions), 3 requests, a cache for one model at a
    time and a slow backhaul: every one of the 15,625 sequences is tried."""
    env = gym.make(ENV_ID, episode_length=3, capacity_bytes=2e9, **{"requests.tasks": ["gui"],
                                                                     "requests.private_share": 0.5,
                                                                     "backhaul.rate_mean_bps": 2e9})
    env.reset(seed=seed)
    plan = model_cache_hindsight.solve(env)
    assert plan.kind == "exact" and not plan.fallback and len(plan.actions) == 3
    assert plan.value == pytest.approx(_best_by_brute_force(env.unwrapped, 3), rel=1e-12, abs=1e-12)


def test_hindsight_plays_its_value_and_beats_every_online_baseline_on_hard_episodes():
    for seed in (11, 12):
        returns = {}
        for name in baselines.available(ENV_ID):
            env = gym.make(ENV_ID, scenario="hard")
            policy = baselines.make(name, env)
            obs, _ = env.reset(seed=seed)
            total, done, start = 0.0, False, True
            while not done:
                action, _ = policy.predict(obs, episode_start=np.array([start]))
                start = False
                obs, reward, _, truncated, _ = env.step(action)
                total += reward
                done = truncated
            returns[name] = total
            if name == "hindsight":
                assert total == pytest.approx(policy.last_plan.value, rel=1e-9)
        best_online = max(v for k, v in returns.items() if k != "hindsight")
        assert returns["hindsight"] > best_online


def test_a_failing_solver_falls_back_to_forwarding_and_says_so(monkeypatch):
    env = gym.make(ENV_ID, episode_length=20)
    env.reset(seed=0)

    def broken(*args):
        raise RuntimeError("no DP today")

    monkeypatch.setattr(model_cache_hindsight, "dp", broken)
    plan = model_cache_hindsight.solve(env)
    assert plan.fallback and plan.kind == "planner" and "no DP today" in plan.solver
    assert set(plan.actions) == {8 * 9 + 8} and len(plan.actions) == 20
