"""The batched SplitInference vector env is the single env, B times, without a Python loop per user."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest

import edgelam.envs  # noqa: F401
from edgelam.envs.split_inference.vector import SplitInferenceVectorEnv

ENV_ID = "edgelam/SplitInference-v0"


def test_one_user_vector_env_equals_the_single_env():
    steps = 300  # crosses the 256-slot block boundary and an episode end
    single = gym.make(ENV_ID, episode_length=120).unwrapped
    vec = SplitInferenceVectorEnv(num_envs=1, episode_length=120)
    rng = np.random.default_rng(0)
    actions = np.stack([rng.integers(0, single.num_layers + 1, steps), rng.integers(0, 3, steps)], axis=1)
    obs_s, _ = single.reset(seed=7)
    obs_v, _ = vec.reset(seed=7)
    assert np.array_equal(obs_s, obs_v[0])
    for t in range(steps):
        obs_s, r_s, _, trunc_s, info_s = single.step(actions[t])
        obs_v, r_v, _, trunc_v, info_v = vec.step(actions[t][None, :])
        assert np.array_equal(obs_s, obs_v[0]), t
        assert r_s == pytest.approx(float(r_v[0]), rel=1e-12, abs=1e-12)
        assert info_s["latency_s"] == pytest.approx(float(info_v["latency_s"][0]), rel=1e-12)
        assert trunc_s == bool(trunc_v[0])
        if trunc_s:
            obs_s, _ = single.reset()
            obs_v, r_v, term_v, trunc_v, _ = vec.step(actions[t][None, :])  # next-step autoreset
            assert r_v[0] == 0.0 and not term_v[0] and not trunc_v[0]
            # both reset from their own generator state: same distribution, different draws
            assert vec.observation_space.contains(obs_v)


def test_make_vec_batch_and_spaces():
    vec = gym.make_vec(ENV_ID, num_envs=64, vectorization_mode="vector_entry_point")
    obs, _ = vec.reset(seed=0)
    assert obs.shape == (64, vec.single_observation_space.shape[0])
    actions = vec.action_space.sample()
    obs, reward, _terminated, _truncated, info = vec.step(actions)
    assert vec.observation_space.contains(obs)
    assert reward.shape == (64,) and np.all(np.isfinite(reward))
    assert info["latency_s"].shape == (64,) and np.all(info["latency_s"] > 0)
    assert len(set(np.round(reward, 9))) > 1  # independent users differ
    with pytest.raises(ValueError, match="actions"):
        vec.step(np.full((64, 2), 99))
    with pytest.raises(ValueError, match="actions"):
        vec.step(np.zeros((63, 2), dtype=np.int64))
    vec.close()
