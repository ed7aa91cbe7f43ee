"""Every env's virtual queue, replayed from ``info`` over a whole episode: Z <- max(Z + y - budget, 0).

Neely 2010's virtual queue of a long-term budget: Z(0) = 0 and
``Z(t+1) = max(Z(t) + y(t) - budget, 0)`` with y(t) the step's budgeted quantity, read
from the same step's ``info``. Each case's budget sits inside the range of y under random
actions, so one episode both accumulates (a step that starts from Z > 0 and stays > 0)
and drains to the floor (a step where Z + y - budget < 0 from Z > 0): a queue without
the accumulation, without the floor or with the wrong sign fails.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import gymnasium as gym
import numpy as np
import pytest

import edgelam.envs  # noqa: F401  (registers the ids)
from edgelam.envs.microservice_routing.vector import MicroserviceRoutingVectorEnv
from edgelam.envs.model_cache.vector import EdgeModelCacheVectorEnv
from edgelam.envs.offload.vector import OffloadVectorEnv
from edgelam.envs.registration import make_parallel
from edgelam.envs.spec_decode.vector import SpecDecodeVectorEnv
from edgelam.envs.split_inference.vector import SplitInferenceVectorEnv


@dataclass(frozen=True)
class Case:
    """An env whose ``info`` reports a virtual queue, and what its queue adds up."""

    env_id: str
    overrides: dict
    # the step's increment y - budget, from the step's info and the budget
    increment: Callable[[dict, float], float]
    budget: float


def _energy(info: dict, budget: float) -> float:
    return info["energy_j"] - budget


CASES = {
    "split_inference": Case("edgelam/SplitInference-v0", {"energy_budget_j": 0.7}, _energy, 0.7),
    "offload_energy": Case("edgelam/Offload-v0", {"budget.per_task": 0.8}, _energy, 0.8),
    "offload_usd": Case(
        "edgelam/Offload-v0",
        {"budget.metric": "cloud_cost_usd", "budget.per_task": 8e-6},
        lambda info, b: info["cloud_cost_usd"] - b,
        8e-6,
    ),
    # the energy-per-token budget: y = energy, budget x emitted tokens
    "spec_decode": Case(
        "edgelam/SpecDecode-v0",
        {"energy_budget_j_per_token": 0.12},
        lambda info, b: info["energy_j"] - b * info["tokens"],
        0.12,
    ),
    "microservice_migration": Case(
        "edgelam/MicroserviceRouting-v0",
        {"scenario": "migration", "migration.budget_j_per_step": 6.0},
        lambda info, b: info["migration_energy_j"] - b,
        6.0,
    ),
    "fedft_allocation": Case("edgelam/FedFTAllocation-v0", {"energy_budget_j": 3.0}, _energy, 3.0),
    # random actions download ~1.3 GB a request on average, in bursts: 1.6 GB a request both fills and drains
    "model_cache_bytes": Case(
        "edgelam/EdgeModelCache-v0",
        {"budget.per_request": 1.6e9},
        lambda info, b: info["backhaul_bytes"] - b,
        1.6e9,
    ),
    "model_cache_energy": Case(
        "edgelam/EdgeModelCache-v0", {"budget.metric": "energy_j", "budget.per_request": 15.0}, _energy, 15.0
    ),
}


def replay_queue(queues: np.ndarray, increments: np.ndarray) -> tuple[bool, bool]:
    """``queues[t]`` (after step t) against the replay from Z = 0 of ``increments``; (whether the queue
    accumulated: a step from Z > 0 that stays > 0, whether it drained: a step from Z > 0 to the floor)."""
    z, grew, floored = 0.0, False, False
    for t, (q, inc) in enumerate(zip(queues.tolist(), increments.tolist(), strict=True)):
        expected = max(z + inc, 0.0)
        assert q == pytest.approx(expected, rel=1e-9, abs=1e-12), f"step {t}: Z {q} != max({z} + {inc}, 0)"
        grew |= z > 0.0 and expected > 0.0 and expected != max(inc, 0.0)
        floored |= z > 0.0 and z + inc < 0.0
        z = q
    return grew, floored


def _check(queues: np.ndarray, increments: np.ndarray) -> None:
    """``queues[t]`` (after step t) against the replay from Z = 0; both regimes must occur."""
    grew, floored = replay_queue(queues, increments)
    assert grew, "the episode never accumulated a queue: the case's budget is too loose"
    assert floored, "the queue never drained to 0: the case's budget is too tight"


def episode_infos(env_id: str, overrides: dict, seed: int = 1) -> list[dict]:
    """The ``info`` of every step of one episode of ``env_id`` under random actions (seeded with ``seed``)."""
    env = gym.make(env_id, **overrides)
    env.action_space.seed(seed)
    env.reset(seed=seed)
    infos, done = [], False
    while not done:
        _, _, terminated, truncated, info = env.step(env.action_space.sample())
        infos.append(info)
        done = terminated or truncated
    env.close()
    return infos


def parallel_episode_infos(env_id: str, overrides: dict, seed: int = 1) -> list[dict[str, dict]]:
    """The per-agent ``infos`` of every step of one episode of a parallel env under random actions
    (agent i's action space seeded with i, the reset with ``seed``)."""
    env = make_parallel(env_id, **overrides)
    for i, agent in enumerate(env.possible_agents):
        env.action_space(agent).seed(i)
    env.reset(seed=seed)
    steps = []
    while env.agents:
        _, _, _, _, infos = env.step({a: env.action_space(a).sample() for a in env.agents})
        steps.append(infos)
    env.close()
    return steps


def vector_episode_rows(cls: type, overrides: dict, num_envs: int = 3, seed: int = 2) -> list[list[dict]]:
    """Each row's first episode in a vector env ``cls`` under random actions: per step, the row's entry
    of every (B,) ``info`` array (a finished row autoresets: its queue starts again)."""
    env = cls(num_envs=num_envs, **overrides)
    env.action_space.seed(seed)
    env.reset(seed=seed)
    rows: list[list[dict]] = [[] for _ in range(num_envs)]
    alive = np.ones(num_envs, dtype=bool)
    while alive.any():
        _, _, terminated, truncated, info = env.step(env.action_space.sample())
        arrays = {k: v for k, v in info.items() if isinstance(v, np.ndarray) and v.shape[:1] == (num_envs,)}
        for b in np.flatnonzero(alive):
            rows[b].append({k: v[b] for k, v in arrays.items()})
        alive &= ~(terminated | truncated)
    env.close()
    return rows


@pytest.mark.parametrize("case", sorted(CASES))
def test_virtual_queue_replays_from_info_over_an_episode(case):
    c = CASES[case]
    infos = episode_infos(c.env_id, c.overrides)
    assert len(infos) >= 20
    _check(np.array([info["virtual_queue"] for info in infos]), np.array([c.increment(i, c.budget) for i in infos]))


def test_fedft_power_virtual_queue_replays_from_every_agents_info():
    queues, increments = [], []
    for infos in parallel_episode_infos("edgelam/FedFTPower-v0", {"energy_budget_j": 4.15}):
        seen = {info["virtual_queue"] for info in infos.values()}
        assert len(seen) == 1, "agents disagree on the shared queue"
        first = next(iter(infos.values()))
        queues.append(first["virtual_queue"])
        increments.append(first["total_energy_j"] - 4.15)
    _check(np.array(queues), np.array(increments))


VECTOR_CASES = {
    "model_cache_bytes": (EdgeModelCacheVectorEnv, CASES["model_cache_bytes"]),
    "microservice_migration": (MicroserviceRoutingVectorEnv, CASES["microservice_migration"]),
    "split_inference": (SplitInferenceVectorEnv, CASES["split_inference"]),
    "offload_energy": (OffloadVectorEnv, CASES["offload_energy"]),
    # each of the three rows must both accumulate and drain: a looser budget than the single env's
    "spec_decode": (
        SpecDecodeVectorEnv,
        Case("edgelam/SpecDecode-v0", {"energy_budget_j_per_token": 0.16}, CASES["spec_decode"].increment, 0.16),
    ),
}


@pytest.mark.parametrize("case", sorted(VECTOR_CASES))
def test_vector_virtual_queue_replays_from_info_row_by_row(case):
    cls, c = VECTOR_CASES[case]
    for row in vector_episode_rows(cls, c.overrides):
        _check(np.array([float(s["virtual_queue"]) for s in row]), np.array([float(c.increment(s, c.budget))
                                                                               for s in row]))
