"""Toy envs for the agent tests: a Gymnasium env, a masked one, two PettingZoo parallel envs."""

from __future__ import annotations

import functools
from typing import ClassVar

import gymnasium as gym
import numpy as np
import pytest
from pettingzoo import ParallelEnv

from edgelam import baselines
from edgelam.envs import registration

TOY = "edgelam_test/Toy-v0"
TOY_MASK = "edgelam_test/ToyMask-v0"
TOY_PAR = "edgelam_test/ToyParallel-v0"
TOY_ZERO_SUM = "edgelam_test/ToyZeroSum-v0"


class ToyEnv(gym.Env):
    """Guess which of 3 bins the hidden target falls in; the observation hints at it.

    Reward 1 - |action - target|; info: latency_s (averaged), energy_j (summed),
    slo_violated (bool), plus a dict and an array value that evaluation must skip.
    """

    metadata: ClassVar[dict] = {
        "render_modes": [],
        "info_sums": ["energy_j"],
        "metric_directions": {"quality": "max"},
    }
    render_mode = None

    def __init__(self, noise: float = 0.1) -> None:
        self.noise = noise
        self.observation_space = gym.spaces.Box(-2.0, 2.0, shape=(3,), dtype=np.float32)
        self.action_space = gym.spaces.Discrete(3)
        self.target = 0

    def _obs(self) -> np.ndarray:
        hint = np.zeros(3, dtype=np.float32)
        hint[self.target] = 1.0
        noisy = hint + self.noise * self.np_random.standard_normal(3)
        return np.clip(noisy, -2.0, 2.0).astype(np.float32)

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.target = int(self.np_random.integers(3))
        return self._obs(), {}

    def step(self, action):
        error = abs(int(action) - self.target)
        reward = 1.0 - error
        info = {
            "latency_s": 0.01 * (1 + error),
            "energy_j": 0.5 * (1 + int(action)),
            "slo_violated": error > 0,
            "quality": float(error == 0),
            "detail": {"error": error},
            "trace": np.arange(3),
        }
        self.target = int(self.np_random.integers(3))
        return self._obs(), reward, False, False, info


class ToyMaskEnv(ToyEnv):
    """ToyEnv whose action 2 is forbidden, published in ``info["action_mask"]``.

    ``info["masked_action"]`` is 1.0 when the step took the forbidden action (its episode
    mean is the share of such steps), so tests see what a policy did with the mask.
    """

    MASK = np.array([True, True, False])

    def reset(self, *, seed=None, options=None):
        obs, _ = super().reset(seed=seed, options=options)
        return obs, {"action_mask": self.MASK.copy()}

    def step(self, action):
        obs, reward, terminated, truncated, info = super().step(action)
        info["action_mask"] = self.MASK.copy()
        info["masked_action"] = float(not self.MASK[int(action)])
        return obs, reward, terminated, truncated, info


class ZeroPolicy:
    """Always bin 0."""

    def predict(self, observation, state=None, episode_start=None, deterministic=True):
        return np.int64(0), state


class HintPolicy:
    """The bin the observation points at (its argmax): right every step when ``noise=0``."""

    def predict(self, observation, state=None, episode_start=None, deterministic=True):
        return np.int64(np.argmax(observation)), state


class OraclePolicy:
    """Reads the true target from the env."""

    def __init__(self, env: gym.Env) -> None:
        self.env = env

    def predict(self, observation, state=None, episode_start=None, deterministic=True):
        return np.int64(self.env.unwrapped.target), state


class ToyParallelEnv(ParallelEnv):
    """Two agents each match the sign of their own observation (reward 1 or 0); 8 steps."""

    metadata: ClassVar[dict] = {"name": "toy_parallel", "info_sums": ["energy_j"]}
    render_mode = None

    def __init__(self, horizon: int = 8) -> None:
        self.horizon = horizon
        self.possible_agents = ["a0", "a1"]
        self.agents = []
        self._obs_space = gym.spaces.Box(-1.0, 1.0, shape=(2,), dtype=np.float32)
        self._act_space = gym.spaces.Discrete(2)
        self.rng = np.random.default_rng()

    @functools.cache  # noqa: B019
    def observation_space(self, agent):
        return self._obs_space

    @functools.cache  # noqa: B019
    def action_space(self, agent):
        return self._act_space

    def _observe(self):
        self.signs = self.rng.integers(2, size=len(self.possible_agents))
        return {
            a: np.array([2.0 * s - 1.0, self.t / self.horizon], dtype=np.float32)
            for a, s in zip(self.possible_agents, self.signs, strict=True)
        }

    def reset(self, seed=None, options=None):
        if seed is not None:
            self.rng = np.random.default_rng(seed)
        self.agents = list(self.possible_agents)
        self.t = 0
        return self._observe(), {a: {} for a in self.agents}

    def step(self, actions):
        signs = dict(zip(self.possible_agents, self.signs, strict=True))
        rewards = {a: float(int(actions[a]) == signs[a]) for a in self.possible_agents}
        infos = {a: {"latency_s": 0.1 * (2 - rewards[a]), "energy_j": 1.0} for a in self.agents}
        self.t += 1
        done = self.t >= self.horizon
        obs = self._observe()
        terminations = dict.fromkeys(self.agents, False)
        truncations = dict.fromkeys(self.agents, done)
        if done:
            self.agents = []
        return obs, rewards, terminations, truncations, infos


class ToyZeroSumEnv(ToyParallelEnv):
    """Router picks a route, the adversary jams one: router +1 if they differ, -1 if not."""

    metadata: ClassVar[dict] = {"name": "toy_zero_sum"}

    def __init__(self, horizon: int = 8) -> None:
        super().__init__(horizon)
        self.possible_agents = ["router", "adversary"]

    def step(self, actions):
        obs, _, terminations, truncations, infos = super().step(actions)
        hit = int(actions["router"]) == int(actions["adversary"])
        reward = -1.0 if hit else 1.0
        return obs, {"router": reward, "adversary": -reward}, terminations, truncations, infos


@pytest.fixture(scope="session", autouse=True)
def toy_envs():
    """Register the toy ids (Gymnasium, parallel) and the toy env's baselines."""
    gym.register(TOY, entry_point=ToyEnv, max_episode_steps=10)
    gym.register(TOY_MASK, entry_point=ToyMaskEnv, max_episode_steps=10)
    baselines.register(TOY, "zero", lambda env: ZeroPolicy())
    baselines.register(TOY, "oracle", OraclePolicy)
    registration.PARALLEL_ENVS[TOY_PAR] = ToyParallelEnv
    registration.PARALLEL_ENVS[TOY_ZERO_SUM] = ToyZeroSumEnv
    yield
    for env_id in (TOY, TOY_MASK):
        gym.registry.pop(env_id, None)
    registration.PARALLEL_ENVS.pop(TOY_PAR, None)
    registration.PARALLEL_ENVS.pop(TOY_ZERO_SUM, None)


@pytest.fixture
def tiny_ppo() -> dict:
    """PPO settings small enough for a few hundred steps to take well under a second."""
    return {"n_envs": 2, "n_steps": 64, "batch_size": 64, "n_epochs": 2, "policy_kwargs": {"net_arch": [16]}}
