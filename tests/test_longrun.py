"""Long runs: every registered env for 10^5 replay steps of random actions.

One episode spans the run where the scenario allows it (``episode_length`` raised; the
envs that end episodes themselves are reset as usual). Checked over the whole run:
observations finite and inside the observation space, rewards and every number in
``info`` finite; queue-like values that are stable under random actions do not grow
(mean over the last 10% of the run against the mean over its middle 10%); and memory
is flat, measured two ways: the number of Python heap blocks alive
(``sys.getallocatedblocks``, free to read) after a warm-up of 10% of the run against
the end, so any per-step leak of Python objects (an array kept per step included) over
9 x 10^4 steps fails; and ``tracemalloc`` bytes (numpy buffers included) still allocated
at the end out of those allocated over the last ``TRACE_STEPS`` steps (tracing slows
stepping several times, so it covers only that final window).

Actions are pre-sampled in blocks of ``BLOCK`` into buffers, and every record of the run
goes into arrays, all allocated before the warm-up ends, so the measures see only the env.
"""

from __future__ import annotations

import sys
import time
import tracemalloc
from typing import Any

import gymnasium as gym
import numpy as np
import pytest
from gymnasium import spaces

import edgelam.envs  # noqa: F401  (registers the ids)
from edgelam.envs.registration import ENV_IDS, GYM_ENVS, make_parallel

STEPS = 100_000
BLOCK = 10_000
WARMUP = STEPS // 10
TRACE_STEPS = 20_000  # the final window traced by tracemalloc
BLOCKS_GROWTH = 2_000  # Python heap blocks: a leak of one object per 45 steps fails
MEMORY_GROWTH_BYTES = 256 << 10  # 256 KiB over TRACE_STEPS: a leak of >= ~13 bytes per step fails
GROWTH_FACTOR = 1.5  # last-10% mean <= GROWTH_FACTOR x middle-10% mean (+ QUEUE_ATOL)
QUEUE_ATOL = 1e-3

# overrides that make one episode span the run (within each field's bounds); the routing envs at half
# their default arrival rate, where random routing is stable (at the default 14 Hz the backlog of a
# random router grows without bound, as it should: it overloads the slow servers)
LONG_EPISODE: dict[str, dict[str, Any]] = {
    "edgelam/SplitInference-v0": {"episode_length": 1_000_000},
    "edgelam/Offload-v0": {"episode_length": 1_000_000},
    "edgelam/MicroserviceRouting-v0": {"episode_length": 1_000_000, "demand.arrival_rate_hz": 7.0},
    "edgelam/SpecDecode-v0": {"episode_length": 1_000_000, "requests_per_episode": 100_000},
    "edgelam/FedFTAllocation-v0": {"episode_length": 100_000},
    "edgelam/MultiUserOffload-v0": {"episode_length": 1_000_000},
    "edgelam/RobustRouting-v0": {"episode_length": 1_000_000, "demand.arrival_rate_hz": 7.0},
    "edgelam/FedFTPower-v0": {"episode_length": 100_000},
    "edgelam/EdgeModelCache-v0": {"episode_length": 1_000_000},
    "edgelam/CooperativeModelCache-v0": {"episode_length": 1_000_000},
}
# info keys of queue-like values that are stable under random actions in the default scenario
STABLE_QUEUES: dict[str, tuple[str, ...]] = {
    "edgelam/SplitInference-v0": ("edge_util",),
    "edgelam/Offload-v0": ("edge_wait_s",),
    "edgelam/MicroserviceRouting-v0": ("queue_lengths_s",),
    "edgelam/SpecDecode-v0": ("edge_util", "device_util"),
    "edgelam/FedFTAllocation-v0": (),
    "edgelam/MultiUserOffload-v0": (),
    "edgelam/RobustRouting-v0": ("queue_lengths_s",),
    "edgelam/FedFTPower-v0": (),
    "edgelam/EdgeModelCache-v0": ("cached_bytes",),
    "edgelam/CooperativeModelCache-v0": ("cached_bytes",),
}


class _AsParallel:
    """A Gymnasium env behind the PettingZoo parallel calls (one agent), so one loop runs both kinds."""

    def __init__(self, env: gym.Env) -> None:
        self.env = env
        self.possible_agents = ["agent"]
        self.agents = ["agent"]

    def observation_space(self, agent: str) -> spaces.Space:
        return self.env.observation_space

    def action_space(self, agent: str) -> spaces.Space:
        return self.env.action_space

    def reset(self, seed: int | None = None):
        obs, info = self.env.reset(seed=seed)
        self.agents = ["agent"]
        return {"agent": obs}, {"agent": info}

    def step(self, actions: dict):
        obs, reward, terminated, truncated, info = self.env.step(actions["agent"])
        if terminated or truncated:
            self.agents = []
        return {"agent": obs}, {"agent": reward}, {"agent": terminated}, {"agent": truncated}, {"agent": info}

    def close(self) -> None:
        self.env.close()


def make_long(env_id: str):
    """The env with one episode spanning the run; the bare Gymnasium env (no TimeLimit) behind the adapter."""
    if env_id in GYM_ENVS:
        return _AsParallel(gym.make(env_id, **LONG_EPISODE[env_id]).unwrapped)
    return make_parallel(env_id, **LONG_EPISODE[env_id])


def action_buffer(space: spaces.Space) -> np.ndarray:
    """A (BLOCK, *shape) buffer for a block of actions of ``space``."""
    if isinstance(space, spaces.Discrete):
        return np.zeros(BLOCK, dtype=np.int64)
    if isinstance(space, (spaces.MultiDiscrete, spaces.Box)):
        return np.zeros((BLOCK, *space.shape), dtype=space.dtype)
    raise NotImplementedError(f"no block sampler for {space}: add one here")


def fill_actions(space: spaces.Space, rng: np.random.Generator, out: np.ndarray) -> None:
    """Uniform random in-space actions into ``out`` (in place)."""
    if isinstance(space, spaces.Discrete):
        out[:] = space.start + rng.integers(space.n, size=out.shape)
    elif isinstance(space, spaces.MultiDiscrete):
        out[:] = space.start + np.floor(rng.random(out.shape) * space.nvec).astype(out.dtype)
    else:
        out[:] = rng.uniform(space.low, space.high, size=out.shape)


def _number(value: Any) -> float | None:
    """A float for a numeric info value (arrays: their max, NaN if any is NaN); None otherwise."""
    if isinstance(value, (bool, np.bool_, str)) or value is None:
        return None
    if isinstance(value, (int, float, np.number)):
        return float(value)
    arr = np.asarray(value)
    if arr.dtype.kind not in "fiu":
        return None
    return float(arr.max()) if arr.size else 0.0


def long_run(env_id: str, steps: int = STEPS, seed: int = 0) -> dict[str, Any]:
    """Run ``steps`` random steps; return every observation, reward and numeric info value, and the memory trace."""
    env = make_long(env_id)
    agents = list(env.possible_agents)
    first = agents[0]
    rng = np.random.default_rng(seed)
    obs, infos = env.reset(seed=seed)
    # buffers, allocated before the memory trace starts
    acts = {a: action_buffer(env.action_space(a)) for a in agents}
    observations = {a: np.full((steps, *env.observation_space(a).shape), np.nan, np.float32) for a in agents}
    rewards = np.full((steps, len(agents)), np.nan)
    keys: list[str] | None = None
    info_values: dict[str, np.ndarray] = {}
    resets = 0
    began = time.perf_counter()
    for t in range(steps):
        if t % BLOCK == 0:
            for a in agents:
                fill_actions(env.action_space(a), rng, acts[a])
        if t == WARMUP:
            blocks = sys.getallocatedblocks()
        if t == steps - TRACE_STEPS:
            tracemalloc.start()
        i = t % BLOCK
        obs, reward, _, _, infos = env.step({a: acts[a][i] for a in env.agents})
        for j, a in enumerate(agents):
            if a in obs:
                observations[a][t] = obs[a]
                rewards[t, j] = reward[a]
        info = infos[first]
        if keys is None:
            keys = [k for k, v in info.items() if _number(v) is not None]
            info_values = {k: np.full(steps, np.nan) for k in keys}
        for k in keys:
            info_values[k][t] = _number(info[k])
        if not env.agents:
            env.reset()
            resets += 1
    seconds = time.perf_counter() - began
    growth, _ = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    blocks = sys.getallocatedblocks() - blocks
    env.close()
    return {
        "env": env,
        "observations": observations,
        "rewards": rewards,
        "info": info_values,
        "resets": resets,
        "seconds": seconds,
        "memory_growth_bytes": growth,
        "blocks_growth": blocks,
    }


def window_means(values: np.ndarray) -> tuple[float, float]:
    """(mean over the middle 10%, mean over the last 10%) of a run."""
    n = len(values)
    return float(values[int(0.45 * n): int(0.55 * n)].mean()), float(values[int(0.9 * n):].mean())


def test_every_env_id_has_a_long_run():
    assert set(LONG_EPISODE) == set(ENV_IDS) == set(STABLE_QUEUES)


@pytest.mark.slow
@pytest.mark.parametrize("env_id", sorted(ENV_IDS))
def test_long_run_stays_finite_bounded_and_flat_in_memory(env_id):
    run = long_run(env_id)
    env = run["env"]
    print(f"{env_id}: {STEPS} steps in {run['seconds']:.1f} s, {run['resets']} resets, "
          f"{run['blocks_growth']} heap blocks more after warm-up, "
          f"{run['memory_growth_bytes']} B kept of the last {TRACE_STEPS} steps")
    for agent, obs in run["observations"].items():
        space = env.observation_space(agent)
        stepped = ~np.isnan(obs).reshape(len(obs), -1).all(axis=1)
        assert stepped.mean() > 0.99, f"{agent} observed in only {stepped.mean():.1%} of the steps"
        seen = obs[stepped]
        assert np.all(np.isfinite(seen)), f"{agent}: non-finite observation"
        low, high = np.broadcast_to(space.low, seen.shape), np.broadcast_to(space.high, seen.shape)
        outside = np.argwhere((seen < low) | (seen > high))
        assert outside.size == 0, f"{agent}: observation outside its space at (step, index) {outside[:5].tolist()}"
    rewards = run["rewards"]
    assert np.all(np.isfinite(rewards[~np.isnan(rewards)])) and np.isfinite(rewards).mean() > 0.99
    for key, values in run["info"].items():
        bad = np.flatnonzero(~np.isfinite(values))
        assert bad.size == 0, f"info[{key!r}] not finite at steps {bad[:5].tolist()}"
    for key in STABLE_QUEUES[env_id]:
        middle, last = window_means(run["info"][key])
        print(f"  {key}: middle mean {middle:.4g}, last mean {last:.4g}")
        assert last <= GROWTH_FACTOR * middle + QUEUE_ATOL, f"{key} grows: middle {middle:.4g} -> last {last:.4g}"
    assert run["blocks_growth"] < BLOCKS_GROWTH, f"{run['blocks_growth']} more Python heap blocks than after warm-up"
    assert run["memory_growth_bytes"] < MEMORY_GROWTH_BYTES, f"memory grew {run['memory_growth_bytes']} B"
