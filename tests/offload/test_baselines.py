"""Offload-v0's baselines score each tier by the formula their docstrings give (kills the mutants of
baselines/offload.py that the behavioural tests in test_offload.py left alive)."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest

import edgelam.envs  # noqa: F401
from edgelam import baselines
from edgelam.baselines.hindsight import fork
from edgelam.envs.offload.dynamics import CLOUD, DEVICE, EDGE, task_cost

ENV_ID = "edgelam/Offload-v0"
TIERS = (DEVICE, EDGE, CLOUD)
# every reward term weighs in (the cloud is priced, the edge is loaded) and a budget for lyapunov
KWARGS = {"reward.cloud_cost_weight_per_usd": 3.0e4, "reward.energy_weight_per_j": 0.3, "budget.per_task": 0.4,
          "edge_queue.utilisation": 0.4}


def _env(**overrides) -> gym.Env:
    env = gym.make(ENV_ID, **{**KWARGS, **overrides}).unwrapped
    env.reset(seed=3)
    return env


def _costs(env, rtt: float) -> np.ndarray:
    """(3, 3) latency, energy and USD of each tier of the current task, by the env's cost function."""
    return np.array([task_cost(env.tables, env.prompt_index, k, env.uplink_rate_bps, env.edge_wait_s, rtt)
                     for k in TIERS])


def _reward(env, quality: np.ndarray, costs: np.ndarray) -> np.ndarray:
    w = env.config.reward
    return (w.quality_weight * quality - w.latency_weight * costs[:, 0] - w.energy_weight_per_j * costs[:, 1]
            - w.cloud_cost_weight_per_usd * costs[:, 2])


def test_oracle_scores_are_the_rewards_the_env_pays():
    env = _env()
    oracle = baselines.make("oracle", env)
    checked = 0
    for _ in range(12):
        scores = oracle.scores()
        paid = np.array([fork(env).step(np.int64(k))[1] for k in TIERS])
        np.testing.assert_allclose(scores, paid, rtol=1e-12, atol=1e-12)
        assert oracle.predict(None)[0] == int(np.argmax(paid))
        checked += len(set(np.round(paid, 9))) == 3
        env.step(oracle.predict(None)[0])
    assert checked >= 10  # the three tiers really differ


def test_greedy_scores_use_the_fitted_quality_and_the_last_measured_rtt():
    env = _env()
    greedy = baselines.make("greedy", env)
    conf, quality = env.tables.confidence, env.tables.quality
    lines = [np.polyfit(conf, quality[:, k], 1) for k in TIERS]  # the least-squares line of each tier
    for _ in range(6):
        expected_quality = np.clip([b * env.device_confidence + a for b, a in lines], 0.0, 1.0)
        expected = _reward(env, expected_quality, _costs(env, env.last_cloud_rtt_s))
        np.testing.assert_allclose(greedy.scores(), expected, rtol=1e-12, atol=1e-12)
        assert env.last_cloud_rtt_s != env.true_cloud_rtt_s  # so the oracle's rtt would price the cloud apart
        env.step(greedy.predict(None)[0])
    assert greedy.v is None and not greedy.oracle and baselines.make("oracle", env).oracle


@pytest.mark.parametrize("metric", ["energy_j", "cloud_cost_usd"])
def test_lyapunov_scores_are_v_times_the_reward_minus_the_queue_times_the_budgeted_metric(metric):
    budget = 0.4 if metric == "energy_j" else 1.0e-5
    env = _env(**{"budget.metric": metric, "budget.per_task": budget})
    for _ in range(8):  # grow the virtual queue above 0 with tasks the device pays for
        env.step(np.int64(DEVICE if metric == "energy_j" else CLOUD))
    assert env.virtual_queue > 0
    greedy, default = baselines.make("greedy", env), baselines.make("lyapunov", env)
    assert default.v == 1.0
    lyap = baselines.make("lyapunov", env, v=2.5)
    costs = _costs(env, env.last_cloud_rtt_s)
    y = costs[:, 1] if metric == "energy_j" else costs[:, 2]
    np.testing.assert_allclose(lyap.scores(), 2.5 * greedy.scores() - env.virtual_queue * y, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(default.scores(), greedy.scores() - env.virtual_queue * y, rtol=1e-12, atol=1e-12)


def test_threshold_boundaries_belong_to_the_smaller_model():
    env = _env()
    pol = baselines.make("threshold", env, high=0.6, low=0.2)
    assert [pol.tier(c) for c in (0.6, 0.6 - 1e-12, 0.2, 0.2 - 1e-12)] == [DEVICE, EDGE, EDGE, CLOUD]
    same = baselines.make("threshold", env, high=0.4, low=0.4)  # a two-way cascade is allowed
    assert [same.tier(c) for c in (0.4, 0.39)] == [DEVICE, CLOUD]
    with pytest.raises(ValueError, match=r"low 0\.5 exceeds high 0\.4"):
        baselines.make("threshold", env, high=0.4, low=0.5)
    conf = env.tables.confidence
    default = baselines.make("threshold", env)
    assert (default.high, default.low) == (float(np.quantile(conf, 0.5)), float(np.quantile(conf, 0.25)))


def test_lyapunov_needs_a_budget_and_the_others_do_not():
    env = gym.make(ENV_ID, **{"budget.per_task": None}).unwrapped
    env.reset(seed=0)
    assert env.config.budget.per_task is None
    with pytest.raises(ValueError, match=r"lyapunov baseline: the scenario sets no budget\.per_task"):
        baselines.make("lyapunov", env)
    for name in ("greedy", "oracle"):
        assert baselines.make(name, env).predict(None)[0] in TIERS
