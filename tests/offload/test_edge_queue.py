"""Offload-v0's edge server is an M/M/1 workload process seen by the tasks (PASTA, Pollaczek-Khinchine).

With every task kept on the device the edge carries only its Poisson background jobs
(exponential service of mean m, offered load u). Tasks arrive at fixed times independent
of that traffic, so each one sees the stationary workload: the edge is busy with
probability u (Wolff 1982) and the mean unfinished work is the M/G/1 mean wait
lambda E[S^2] / (2 (1 - u)) = u m / (1 - u) (Pollaczek-Khinchine, E[S^2] = 2 m^2).
"""

from __future__ import annotations

import numpy as np
import pytest

from edgelam.envs.core.queues import pollaczek_khinchine_wait_s
from edgelam.envs.offload.env import OffloadEnv
from edgelam.envs.offload.vector import OffloadVectorEnv

MEAN_JOB_S = 0.5
EPISODES = 40
TASKS = 250


def _seen_by_tasks(u: float) -> tuple[np.ndarray, np.ndarray]:
    """Per-episode (busy fraction, mean wait in s) seen by arriving tasks, every task on the device."""
    env = OffloadEnv(
        episode_length=TASKS, battery_j=1e6, **{"edge_queue.utilisation": u, "edge_queue.mean_job_s": MEAN_JOB_S}
    )
    busy, wait = [], []
    for ep in range(EPISODES):
        env.reset(seed=1000 + ep)
        seen = []
        for _ in range(TASKS):
            seen.append(env.edge_wait_s)
            env.step(0)
        seen_a = np.asarray(seen)
        busy.append(np.mean(seen_a > 0.0))
        wait.append(seen_a.mean())
    return np.asarray(busy), np.asarray(wait)


def _ci99(x: np.ndarray) -> float:
    return 2.576 * x.std(ddof=1) / np.sqrt(len(x))


@pytest.mark.parametrize("u", [0.1, 0.3, 0.5, 0.8])
def test_arriving_tasks_see_the_edge_busy_with_probability_u_and_the_pk_mean_wait(u):
    busy, wait = _seen_by_tasks(u)
    assert abs(busy.mean() - u) <= _ci99(busy), (u, busy.mean(), _ci99(busy))
    lam = u / MEAN_JOB_S
    pk = float(pollaczek_khinchine_wait_s(lam, MEAN_JOB_S, 2.0 * MEAN_JOB_S**2))
    assert abs(wait.mean() - pk) <= _ci99(wait), (u, wait.mean(), pk, _ci99(wait))


def test_vector_env_sees_the_same_edge_load():
    u, b = 0.5, 64
    vec = OffloadVectorEnv(num_envs=b, episode_length=TASKS, battery_j=1e6, **{"edge_queue.utilisation": u})
    vec.reset(seed=3)
    seen = np.empty((TASKS, b))
    for t in range(TASKS):
        seen[t] = vec.state.edge_work_s
        vec.step(np.zeros(b, dtype=np.int64))
    busy = (seen > 0.0).mean(axis=0)
    assert abs(busy.mean() - u) <= _ci99(busy), (busy.mean(), _ci99(busy))


def test_an_offloaded_task_adds_its_own_service_to_the_next_tasks_wait():
    """With no background traffic the edge is a D/D/1 queue of the offloaded tasks alone."""
    env = OffloadEnv(**{"edge_queue.utilisation": 0.0})
    env.reset(seed=0)
    assert env.edge_wait_s == 0.0
    service = env.tables.compute_rows[env.prompt_index][1]
    env.step(1)
    assert env.edge_wait_s == pytest.approx(max(service - env.config.task_interval_s, 0.0))
