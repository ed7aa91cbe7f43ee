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
}


def _check(queues: np.ndarray, increments: np.ndarray) -> None:
    """``queues[t]`` (after step t) against the replay from Z = 0; both regimes must occur."""
    z, grew, floored = 0.0, False, False
    for t, (q, inc) in enumerate(zip(queues.tolist(), increments.tolist(), strict=True)):
        expected = max(z + inc, 0.0)
        assert q == pytest.approx(expected, rel=1e-9, abs=1e-12), f"step {t}: Z {q} != max({z} + {inc}, 0)"
        grew |= z > 0.0 and expected > 0.0 and expected != max(inc, 0.0)
        floored |= z > 0.0 and z + inc < 0.0
        z = q
    assert grew, "the episode never accumulated a queue: the case's budget is too loose"
    assert floored, "the queue never drained to 0: the case's budget is too tight"


@pytest.mark.parametrize("case", sorted(CASES))
def test_virtual_queue_replays_from_info_over_an_episode(case):
    c = CASES[case]
    env = gym.make(c.env_id, **c.overrides)
    env.action_space.seed(1)
    env.reset(seed=1)
    queues, increments, done = [], [], False
    while not done:
        _, _, terminated, truncated, info = env.step(env.action_space.sample())
        queues.append(info["virtual_queue"])
        increments.append(c.increment(info, c.budget))
        done = terminated or truncated
    env.close()
    assert len(queues) >= 20
    _check(np.array(queues), np.array(increments))


def test_fedft_power_virtual_queue_replays_from_every_agents_info():
    env = make_parallel("edgelam/FedFTPower-v0", energy_budget_j=4.15)
    for i, agent in enumerate(env.possible_agents):
        env.action_space(agent).seed(i)
    env.reset(seed=1)
    queues, increments = [], []
    while env.agents:
        _, _, _, _, infos = env.step({a: env.action_space(a).sample() for a in env.agents})
        seen = {info["virtual_queue"] for info in infos.values()}
        assert len(seen) == 1, "agents disagree on the shared queue"
        first = next(iter(infos.values()))
        queues.append(first["virtual_queue"])
        increments.append(first["total_energy_j"] - 4.15)
    env.close()
    _check(np.array(queues), np.array(increments))


VECTOR_CASES = {
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
    env = cls(num_envs=3, **c.overrides)
    env.action_space.seed(2)
    env.reset(seed=2)
    rows: list[list[tuple[float, float]]] = [[] for _ in range(3)]
    alive = np.ones(3, dtype=bool)
    while alive.any():
        _, _, terminated, truncated, info = env.step(env.action_space.sample())
        for b in np.flatnonzero(alive):
            step = {k: v[b] for k, v in info.items() if isinstance(v, np.ndarray) and v.shape[:1] == (3,)}
            rows[b].append((float(step["virtual_queue"]), float(c.increment(step, c.budget))))
        alive &= ~(terminated | truncated)  # a finished row autoresets: its queue starts again
    env.close()
    for row in rows:
        queues, increments = np.array(row).T
        _check(queues, increments)
