"""SplitInference baselines: each one's defining property on the congested-edge scenario."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest

import edgelam.envs  # noqa: F401  (registers the ids)
from edgelam import baselines

ENV_ID = "edgelam/SplitInference-v0"


def _episode(name: str, seed: int = 0, policy_kwargs: dict | None = None, **overrides):
    env = gym.make(ENV_ID, scenario="congested_edge", **overrides)
    policy = baselines.make(name, env, **(policy_kwargs or {}))
    obs, _ = env.reset(seed=seed)
    rewards, actions, infos, done = [], [], [], False
    while not done:
        action, _ = policy.predict(obs)
        actions.append(tuple(int(a) for a in action))
        obs, reward, terminated, truncated, info = env.step(action)
        rewards.append(reward)
        infos.append(info)
        done = terminated or truncated
    env.close()
    return np.array(rewards), actions, infos


def test_each_baseline_has_its_defining_property():
    runs = {name: _episode(name) for name in baselines.available(ENV_ID)}
    assert set(runs) == {"random", "device_only", "edge_only", "lyapunov", "neurosurgeon", "oracle", "hindsight"}
    layers = gym.make(ENV_ID, scenario="congested_edge").unwrapped.tables.num_layers
    full = 2  # index of 16-bit activations in (4, 8, 16)
    # the static splits: the whole model on the device / at the edge, full precision
    assert set(runs["device_only"][1]) == {(layers, full)}
    assert set(runs["edge_only"][1]) == {(0, full)}
    assert all(i["split_layer"] == 0 and i["uplink_bytes"] > 0 for i in runs["edge_only"][2])
    # the oracle minimises the request's true cost (the negative reward) over every (split, bits):
    # no policy does better on any request of the same episode (the exogenous trace ignores actions)
    oracle = runs["oracle"][0]
    for name, (rewards, _, _) in runs.items():
        assert np.all(oracle >= rewards - 1e-12), name
    assert oracle.sum() > runs["device_only"][0].sum() + 5.0 and oracle.sum() > runs["edge_only"][0].sum() + 5.0
    # hindsight is exact: with rewards independent per request it is the oracle's per-request optimum
    assert runs["hindsight"][0].sum() == pytest.approx(oracle.sum(), rel=1e-12)
    assert all(runs["hindsight"][0] >= oracle - 1e-12)
    # neurosurgeon searches the same cost with the estimated channel: close to the oracle
    assert runs["neurosurgeon"][0].sum() >= oracle.sum() - 0.02 * abs(oracle.sum())
    # lyapunov pays return for a lower energy, and keeps its virtual queue lower
    lyap, neuro = runs["lyapunov"][2], runs["neurosurgeon"][2]
    assert np.mean([i["energy_j"] for i in lyap]) < np.mean([i["energy_j"] for i in neuro]) - 0.05
    assert lyap[-1]["virtual_queue"] < neuro[-1]["virtual_queue"]
    assert runs["lyapunov"][0].sum() < runs["neurosurgeon"][0].sum()


def test_lyapunov_is_neurosurgeon_while_its_queue_is_empty_and_needs_a_budget():
    # a budget no request reaches: the queue stays 0 and the drift term vanishes
    loose = _episode("lyapunov", energy_budget_j=100.0)
    neuro = _episode("neurosurgeon", energy_budget_j=100.0)
    assert all(i["virtual_queue"] == 0.0 for i in loose[2])
    assert loose[1] == neuro[1]
    # a smaller V weighs the queue more: less energy per request
    small_v = _episode("lyapunov", policy_kwargs={"v": 0.1})
    large_v = _episode("lyapunov", policy_kwargs={"v": 100.0})
    energy = [np.mean([i["energy_j"] for i in run[2]]) for run in (small_v, large_v)]
    assert energy[0] < energy[1]
    env = gym.make(ENV_ID, energy_budget_j=None)
    with pytest.raises(ValueError, match="energy_budget_j"):
        baselines.make("lyapunov", env)
    baselines.make("neurosurgeon", env)  # needs none
