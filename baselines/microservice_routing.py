"""Baselines of edgelam/MicroserviceRouting-v0 (and the router of edgelam/RobustRouting-v0).

All of them read the env's own simulator (``env.unwrapped.sim``, the same
:class:`~edgelam.envs.microservice_routing.dynamics.RoutingSim` that prices the
step) and choose among the hosts of the pending microservice:

* ``random_masked``: uniform over the valid actions (the built-in ``random`` samples
  the whole space and pays the infeasible-action penalty).
* ``least_loaded``: the host with the smallest backlog ahead of the stage.
* ``nearest``: the host with the lowest transfer time of the stage's input.
* ``greedy``: the host with the earliest expected finish (transfer + queue + compute).
* ``lyapunov`` (migration scenarios; Neely 2010, drift-plus-penalty): over every
  valid route and migration minimise ``V * latency + Z * y``, where ``latency`` is
  the stage's steady-state latency at that server (transfer + queue + compute) plus
  the one-off wait for a migrated replica amortised over ``amortize_steps`` later
  requests that no longer pay it, ``y`` the migration energy and Z the env's virtual
  queue of the long-term migration budget. Migrations that would stall the
  destination server longer than ``max_stall_s`` (its FCFS queue waits behind the
  replica) are not considered. ``V`` trades budget slack for latency; with ``ignore_budget=True``
  (``greedy_migrate``) Z is taken as 0: migrate whenever it pays.
"""

from __future__ import annotations

import gymnasium as gym
import numpy as np

from edgelam.baselines import register

ENV_IDS = ("edgelam/MicroserviceRouting-v0", "edgelam/RobustRouting-v0")


def _sim(env):
    return getattr(env, "unwrapped", env).sim


class _RandomMasked:
    def __init__(self, env: gym.Env, seed: int | None = None) -> None:
        self.sim = _sim(env)
        self.rng = np.random.default_rng(seed)

    def predict(self, observation, state=None, episode_start=None, deterministic=True):
        valid = np.flatnonzero(self.sim.action_mask())
        return np.int64(valid[self.rng.integers(len(valid))]), state


class _Route:
    """argmin over the hosts of the pending microservice of a per-server score (lowest index on ties)."""

    def __init__(self, env: gym.Env, rule: str) -> None:
        self.sim = _sim(env)
        self.rule = rule

    def score(self, s: int) -> float:
        sim = self.sim
        if self.rule == "least_loaded":
            return max(sim.free_at[s] - sim.ready, 0.0)
        if self.rule == "nearest":
            return sim.transfer_s(sim.loc, s, sim.t.stage_in_bytes[sim.pipeline][sim.stage])
        return sim.expected_finish(s)[0]

    def predict(self, observation, state=None, episode_start=None, deterministic=True):
        hosts = self.sim.hosts[self.sim.microservice]
        best = min((s for s in range(self.sim.k) if hosts[s]), key=self.score)
        return np.int64(best), state


class _Lyapunov:
    def __init__(
        self,
        env: gym.Env,
        v: float = 1.0,
        amortize_steps: float = 50.0,
        max_stall_s: float = 0.1,
        ignore_budget: bool = False,
    ) -> None:
        self.sim = _sim(env)
        if not self.sim.migration:
            raise ValueError("lyapunov baseline: the scenario has no migration (set migration.enabled=true)")
        self.v = v
        self.amortize_steps = amortize_steps
        self.max_stall_s = max_stall_s
        self.ignore_budget = ignore_budget

    def predict(self, observation, state=None, episode_start=None, deterministic=True):
        sim = self.sim
        k = sim.k
        z = 0.0 if self.ignore_budget else sim.virtual_queue
        mask = sim.action_mask()
        best, best_cost = -1, np.inf
        for a in range(2 * k):
            if not mask[a]:
                continue
            s = a % k
            finish = sim.expected_finish(s)[0]  # steady state: replica present
            latency, y = finish - sim.ready, 0.0
            if a >= k:
                finish_now, y = sim.expected_finish(s, migrate=True)
                if finish_now - finish > self.max_stall_s:
                    continue
                latency += (finish_now - finish) / self.amortize_steps
            cost = self.v * latency + z * y
            if a >= k and self.ignore_budget:
                cost += 1e-9  # migrate only on a strict gain
            if cost < best_cost:
                best, best_cost = a, cost
        return np.int64(best), state


for _env_id in ENV_IDS:
    register(_env_id, "random_masked", lambda env, seed=None: _RandomMasked(env, seed))
    register(_env_id, "least_loaded", lambda env: _Route(env, "least_loaded"))
    register(_env_id, "nearest", lambda env: _Route(env, "nearest"))
    register(_env_id, "greedy", lambda env: _Route(env, "greedy"))
register(ENV_IDS[0], "lyapunov", lambda env, v=1.0: _Lyapunov(env, v))
register(ENV_IDS[0], "greedy_migrate", lambda env: _Lyapunov(env, ignore_budget=True))
