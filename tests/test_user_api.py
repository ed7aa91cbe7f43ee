"""What a new user does first with every env id: copies, SB3 and Gymnasium helpers, bad actions."""

from __future__ import annotations

import copy
import pickle

import gymnasium as gym
import numpy as np
import pytest

import edgelam.envs  # noqa: F401  (registers the ids)
from edgelam.envs.registration import GYM_ENVS, PARALLEL_ENVS, make_parallel

GYM_IDS = sorted(GYM_ENVS)
PARALLEL_IDS = sorted(PARALLEL_ENVS)


def _same(a, b) -> bool:
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, np.ndarray) or isinstance(b, np.ndarray):
        return np.array_equal(np.asarray(a), np.asarray(b))
    return a == b


def _gym_continues_alike(env_a, env_b, seed: int, steps: int = 12) -> None:
    env_a.action_space.seed(seed)
    for t in range(steps):
        action = env_a.action_space.sample()
        out_a, out_b = env_a.step(action), env_b.step(copy.deepcopy(action))
        assert all(_same(x, y) for x, y in zip(out_a, out_b, strict=True)), (t, out_a, out_b)
        if out_a[2] or out_a[3]:
            assert _same(env_a.reset(seed=seed + t), env_b.reset(seed=seed + t))


@pytest.mark.parametrize("env_id", GYM_IDS)
@pytest.mark.parametrize("clone", ["pickle", "deepcopy"])
def test_gym_env_copies_continue_the_same_trajectory(env_id, clone):
    env = gym.make(env_id)
    env.reset(seed=3)
    env.action_space.seed(3)
    for _ in range(3):
        env.step(env.action_space.sample())
    twin = pickle.loads(pickle.dumps(env)) if clone == "pickle" else copy.deepcopy(env)
    _gym_continues_alike(env, twin, seed=4)


@pytest.mark.parametrize("env_id", PARALLEL_IDS)
@pytest.mark.parametrize("clone", ["pickle", "deepcopy"])
def test_parallel_env_copies_continue_the_same_trajectory(env_id, clone):
    env = make_parallel(env_id)
    env.reset(seed=3)
    twin = pickle.loads(pickle.dumps(env)) if clone == "pickle" else copy.deepcopy(env)
    for agent in env.possible_agents:
        env.action_space(agent).seed(5)
    for t in range(8):
        actions = {a: env.action_space(a).sample() for a in env.agents}
        out_a, out_b = env.step(actions), twin.step(copy.deepcopy(actions))
        assert all(_same(x, y) for x, y in zip(out_a, out_b, strict=True)), t
        if not env.agents:
            break
