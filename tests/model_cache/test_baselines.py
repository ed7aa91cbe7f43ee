"""EdgeModelCache-v0's baselines: LRU and LFU are the textbook policies, placement and Lyapunov do what they say."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest

import edgelam.envs  # noqa: F401  (registers the ids)
from edgelam import baselines
from edgelam.envs.core.caching import Catalogue, lfu_hits, lru_hits

ENV_ID = "edgelam/EdgeModelCache-v0"
# merged task models of one size and room for two of them: one eviction always makes room
TWO_SLOTS = {"capacity_bytes": 3.3e9, "episode_length": 300}


def _play(name: str, seed: int, **overrides) -> tuple[list[int], list[dict], float]:
    env = gym.make(ENV_ID, **overrides)
    policy = baselines.make(name, env)
    obs, _ = env.reset(seed=seed)
    tasks, infos, total, done, start = [], [], 0.0, False, True
    while not done:
        tasks.append(env.unwrapped.task)
        action, _ = policy.predict(obs, episode_start=np.array([start]))
        start = False
        obs, reward, terminated, truncated, info = env.step(action)
        infos.append(info)
        total += reward
        done = terminated or truncated
    return tasks, infos, total


@pytest.mark.parametrize(("name", "reference"), [("lru", lru_hits), ("lfu", lfu_hits)])
def test_lru_and_lfu_hit_exactly_where_the_textbook_policies_hit_on_the_envs_trace(name, reference):
    """Each request served by its own task model: the hits equal those of core.caching's LRU / perfect LFU
    (checked there against hand-computed traces) on the same request sequence, for two drifting episodes."""
    for seed in (0, 1):
        tasks, infos, _ = _play(name, seed, **TWO_SLOTS, **{"requests.swap_prob": 0.02})
        assert all(i["model"] == f"edge+{('gui', 'packaging', 'concurrency', 'web', 'core')[t]}"
                   for t, i in zip(tasks, infos, strict=True))
        hits = np.array([i["hit"] == 1.0 for i in infos])
        expected = reference(tasks, Catalogue.unshared([1] * 5), 2)
        np.testing.assert_array_equal(hits, expected)
        assert 0.2 < hits.mean() < 0.95
    assert not np.array_equal(lru_hits(tasks, Catalogue.unshared([1] * 5), 2),
                              lfu_hits(tasks, Catalogue.unshared([1] * 5), 2))


def test_placement_prefetches_its_plan_and_serves_every_request_locally_or_forwards_it():
    _, infos, total = _play("placement", 3)
    assert all(i["kept"] == -1.0 for i in infos)  # it never downloads on demand: only prefetches
    assert sum(i["prefetched"] == 1.0 for i in infos) >= 1
    assert np.mean([i["hit"] == 1.0 for i in infos]) > 0.9
    _, _, cloud = _play("always_cloud", 3)
    assert total > cloud


def test_lyapunov_downloads_less_under_a_tight_backhaul_budget_and_needs_one():
    env = gym.make(ENV_ID)
    with pytest.raises(ValueError, match=r"budget\.per_request"):
        baselines.make("lyapunov", env)
    with pytest.raises(ValueError, match="period"):
        baselines.make("placement", env, period=0)
    # the hard tier at 1 GB over 500 requests: on these episodes placement re-plans into a third download
    for seed in (2, 3):
        spent = {}
        for name in ("placement", "lyapunov"):
            _, infos, _ = _play(name, seed, scenario="hard", **{"budget.per_request": 2e6})
            spent[name] = sum(i["backhaul_bytes"] for i in infos)
        assert spent["lyapunov"] < spent["placement"]


def test_greedy_picks_the_best_immediate_expected_reward():
    env = gym.make(ENV_ID, initial_cache=["edge", "edge+gui", "device"])
    policy = baselines.make("greedy", env)
    obs, _ = env.reset(seed=0)
    for _ in range(30):
        action, _ = policy.predict(obs)
        scores = [policy.price(a)[0] for a in range(81)]
        assert scores[int(action)] == max(scores)
        obs, *_ = env.step(action)
