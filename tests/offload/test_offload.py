"""Offload-v0: exact costs, reward bookkeeping, baselines (cascade, Lyapunov budget, oracle), replay vs live."""

from __future__ import annotations

import itertools
import math

import gymnasium as gym
import numpy as np
import pytest

import edgelam.envs  # noqa: F401
from edgelam import baselines
from edgelam.envs.offload.dynamics import CLOUD, DEVICE, EDGE, TierTables, task_cost
from tests.offload.toy import CONFIDENCE, QUALITY, write_toy_profile

ENV_ID = "edgelam/Offload-v0"


@pytest.fixture(scope="module")
def toy_dir(tmp_path_factory):
    return write_toy_profile(tmp_path_factory.mktemp("offload_profile"))


def _toy_tables() -> TierTables:
    return TierTables(
        prompt_tokens=np.array([100]), decode_tokens=32, compute_s=np.array([[1.0, 2.0, 0.5]]),
        up_bits=np.array([8000.0]), down_bits=1024.0, cloud_usd=np.array([1e-4]), quality=np.zeros((1, 3)),
        confidence=np.zeros(1), dev_active_w=5.0, dev_idle_w=0.5, tx_power_w=0.2, edge_rtt_s=0.01,
        downlink_rate_bps=1e6, down_s=1.024e-3, compute_rows=[[1.0, 2.0, 0.5]], up_bits_list=[8000.0],
        cloud_usd_list=[1e-4],
    )


def test_task_cost_hand_checked():
    t = _toy_tables()
    assert task_cost(t, 0, DEVICE, 1e6, 0.5, 0.1) == (1.0, 5.0, 0.0)
    lat, en, usd = task_cost(t, 0, EDGE, 1e6, 0.5, 0.1)
    # 2 s compute + 8 ms upload + 10 ms RTT + 0.5 s queue + 1.024 ms download
    assert lat == pytest.approx(2.519024)
    assert en == pytest.approx(0.2 * 0.008 + 0.5 * (2.519024 - 0.008))
    assert usd == 0.0
    lat, en, usd = task_cost(t, 0, CLOUD, 1e6, 0.5, 0.1)
    assert lat == pytest.approx(0.5 + 0.008 + 0.1 + 0.001024)
    assert usd == 1e-4


def test_step_reward_is_the_documented_sum(toy_dir):
    env = gym.make(ENV_ID, profile_dir=toy_dir)
    env.reset(seed=0)
    w = env.unwrapped.config.reward
    for a in (0, 1, 2, 1, 0, 2):
        p = env.unwrapped.prompt_index
        _, r, _, _, info = env.step(a)
        assert info["quality"] == pytest.approx(QUALITY[p, a])
        expected = (
            info["quality"] - w.latency_weight * info["latency_s"] - w.energy_weight_per_j * info["energy_j"]
            - w.cloud_cost_weight_per_usd * info["cloud_cost_usd"]
        )
        assert r == pytest.approx(expected)


def test_observation_carries_the_real_device_confidence(toy_dir):
    env = gym.make(ENV_ID, profile_dir=toy_dir)
    obs, _ = env.reset(seed=1)
    for _ in range(10):
        assert obs[0] == pytest.approx(CONFIDENCE[env.unwrapped.prompt_index], abs=1e-6)
        obs, *_ = env.step(0)


def test_edge_queue_grows_under_overload_and_prices_the_wait(toy_dir):
    env = gym.make(ENV_ID, profile_dir=toy_dir, task_interval_s=0.01)
    env.reset(seed=0)
    waits = [env.step(EDGE)[4]["edge_wait_s"] for _ in range(20)]
    assert waits[0] >= 0.0 and all(b > a for a, b in itertools.pairwise(waits))


def test_threshold_cascade_ranks_by_confidence(toy_dir):
    env = gym.make(ENV_ID, profile_dir=toy_dir)
    pol = baselines.make("threshold", env, high=0.7, low=0.3)
    tiers = [pol.tier(c) for c in sorted(CONFIDENCE, reverse=True)]
    assert tiers == [DEVICE, DEVICE, EDGE, EDGE, CLOUD, CLOUD]
    assert tiers == sorted(tiers)  # less confident tasks never go to a smaller model


def _run(env, pol, steps: int, seed: int = 0):
    obs, _ = env.reset(seed=seed)
    rows = []
    for _ in range(steps):
        a, _ = pol.predict(obs)
        obs, r, te, tr, info = env.step(a)
        rows.append((r, info["energy_j"], info["quality"]))
        if te or tr:
            obs, _ = env.reset()
    return np.array(rows)


def test_baselines_feasible_and_oracle_best(toy_dir):
    env = gym.make(ENV_ID, profile_dir=toy_dir)
    means = {}
    for name in baselines.available(ENV_ID):
        if name == "hindsight":  # plans whole episodes from their start; tests/offload/test_hindsight.py
            continue
        rows = _run(env, baselines.make(name, env), 400)
        assert np.all(np.isfinite(rows))
        means[name] = rows[:, 0].mean()
    assert means["oracle"] >= max(means.values()) - 1e-12
    assert means["greedy"] > means["random"]


def test_lyapunov_keeps_the_energy_budget(toy_dir):
    budget = 0.3
    env = gym.make(
        ENV_ID, max_episode_steps=2000, profile_dir=toy_dir, **{"budget.per_task": budget, "episode_length": 2000}
    )
    greedy = _run(env, baselines.make("greedy", env), 2000)
    assert greedy[:, 1].mean() > budget  # the budget binds: the unconstrained policy exceeds it
    lyap = _run(env, baselines.make("lyapunov", env), 2000)
    assert lyap[:, 1].mean() <= budget * 1.02
    assert env.unwrapped.virtual_queue < 50 * budget


@pytest.mark.slow
def test_replay_matches_live(tmp_path):
    """Live (real models run in step()) vs replay of a profile recorded by the same function, 500 steps."""
    import json

    from edgelam.envs.lam import load, load_prompts
    from edgelam.envs.lam.profile import profile_offload
    from edgelam.envs.lam.replay import FORMAT_VERSION, sha256_file

    models = ["device", "edge"]
    data = profile_offload([load(m) for m in models], load_prompts()[:12])
    np.savez(tmp_path / "offload.npz", format_version=np.int64(FORMAT_VERSION), **data)
    (tmp_path / "manifest.json").write_text(json.dumps(
        {"format_version": FORMAT_VERSION, "files": {"offload.npz": sha256_file(tmp_path / "offload.npz")}}
    ))
    kw = {"profile_dir": str(tmp_path), "cloud.executed_model": "edge", "episode_length": 500}
    stats = []
    for backend in ("replay", "live"):
        env = gym.make(ENV_ID, backend=backend, max_episode_steps=500, **kw)
        env.action_space.seed(0)
        env.reset(seed=0)
        rows = [env.step(env.action_space.sample())[4] for _ in range(500)]
        stats.append((np.mean([r["quality"] for r in rows]), np.mean([r["latency_s"] for r in rows])))
    (q_replay, l_replay), (q_live, l_live) = stats
    assert math.isclose(q_live, q_replay, rel_tol=0.05)
    assert math.isclose(l_live, l_replay, rel_tol=0.05)
