"""Baselines of edgelam/MicroserviceRouting-v0 (and the router of edgelam/RobustRouting-v0).

All of them read the env's own simulator state (``env.unwrapped.state``, the
:class:`~edgelam.envs.microservice_routing.dynamics.State` the step advances, with its
``params``) through the functions of :mod:`~edgelam.envs.microservice_routing.dynamics`
that price the step, and choose among the hosts of the pending microservice:

* ``random_masked``: uniform over the valid actions (the built-in ``random`` samples
  the whole space and pays the infeasible-action penalty).
* ``least_loaded``: the host with the smallest backlog ahead of the stage.
* ``nearest``: the host with the lowest transfer time of the stage's input.
* ``greedy``: the host with the earliest expected finish (transfer + queue + compute).
* ``round_robin``: the hosts of each microservice in turn, in server order.
* ``shortest_expected_delay`` (SED; Whitt, Oper. Res. 34(1), 1986): the host with the
  smallest expected delay of the stage there, the unfinished work ahead of it plus its
  own service time on that server; unlike ``greedy`` it does not see the backhaul.
* ``cvxpy``: fractional routing of the current arrival rates. With lambda_m the rate of
  stages of microservice m (arrival rate x expected stages of m per request under the
  current pipeline mix) and S_ms its mean service time on server s, it solves

      min  sum_s rho_s / (1 - rho_s)      (mean number in system of M/M/1 servers; by
      s.t. rho_s = sum_m lambda_m x_ms S_ms <= 1 - eps,   Little's law, proportional to the
           sum_s x_ms = 1,  x_ms >= 0,  x_ms = 0 where s does not host m,   mean delay)

  with cvxpy (convex: inv_pos of an affine utilisation), then draws each stage's server
  from its row x_m. The solution is cached per (rate, mix, placement) and re-solved when
  the adversary or a migration changes them. When the load exceeds the hosts' capacity
  (no feasible x) or the solver fails, it routes in proportion to the hosts' service
  rates and counts the event in ``solver_fallbacks``.
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
from edgelam.envs.microservice_routing.dynamics import finish_times_s, pending_microservice, queue_lengths_s
from edgelam.envs.microservice_routing.spec import SPEC as ROUTING
from edgelam.envs.robust_routing.spec import SPEC as ROBUST

ENV_IDS = (ROUTING.id, ROBUST.id)


def _env(env):
    return getattr(env, "unwrapped", env)


class _View:
    """The pending stage of the env's one row (B = 1): what every baseline below reads."""

    def __init__(self, env) -> None:
        self.env = _env(env)

    @property
    def params(self):
        return self.env.params

    @property
    def state(self):
        return self.env.state

    def microservice(self) -> int:
        return int(pending_microservice(self.params, self.state)[0])

    def hosts(self) -> np.ndarray:
        """(K,) bool, the servers hosting the pending microservice."""
        return self.state.hosts[0, self.microservice()]

    def argmin_host(self, score: np.ndarray) -> int:
        """The host with the least ``score`` (K,) (lowest index on ties)."""
        return int(np.argmin(np.where(self.hosts(), score, np.inf)))


class _RandomMasked:
    def __init__(self, env: gym.Env, seed: int | None = None) -> None:
        self.env = _env(env)
        self.rng = np.random.default_rng(seed)

    def predict(self, observation, state=None, episode_start=None, deterministic=True):
        valid = np.flatnonzero(self.env.action_masks())
        return np.int64(valid[self.rng.integers(len(valid))]), state


class _Route(_View):
    """argmin over the hosts of the pending microservice of a per-server score (lowest index on ties)."""

    def __init__(self, env: gym.Env, rule: str) -> None:
        super().__init__(env)
        self.rule = rule

    def score(self) -> np.ndarray:
        params, s = self.params, self.state
        if self.rule == "least_loaded":
            return queue_lengths_s(params, s)[0]
        if self.rule == "nearest":
            return params.transfer_s[s.pipeline[0], s.stage[0], s.loc[0]]
        return finish_times_s(params, s)[0]

    def predict(self, observation, state=None, episode_start=None, deterministic=True):
        return np.int64(self.argmin_host(self.score())), state


class _Lyapunov(_View):
    def __init__(
        self,
        env: gym.Env,
        v: float = 1.0,
        amortize_steps: float = 50.0,
        max_stall_s: float = 0.1,
        ignore_budget: bool = False,
    ) -> None:
        super().__init__(env)
        if not self.params.config.migration.enabled:
            raise ValueError("lyapunov baseline: the scenario has no migration (set migration.enabled=true)")
        self.v = v
        self.amortize_steps = amortize_steps
        self.max_stall_s = max_stall_s
        self.ignore_budget = ignore_budget

    def predict(self, observation, state=None, episode_start=None, deterministic=True):
        params, s = self.params, self.state
        k = params.num_servers
        z = 0.0 if self.ignore_budget else float(s.virtual_queue[0])
        mask = self.env.action_masks()
        finish = finish_times_s(params, s)[0].tolist()  # steady state: replica present
        finish_now = finish_times_s(params, s, migrate=True)[0].tolist()
        ready, y_migrate = float(s.ready_s[0]), float(params.migration_j[self.microservice()])
        best, best_cost = -1, np.inf
        for a in range(2 * k):
            if not mask[a]:
                continue
            srv = a % k
            latency, y = finish[srv] - ready, 0.0
            if a >= k:
                stall, y = finish_now[srv] - finish[srv], y_migrate
                if stall > self.max_stall_s:
                    continue
                latency += stall / self.amortize_steps
            cost = self.v * latency + z * y
            if a >= k and self.ignore_budget:
                cost += 1e-9  # migrate only on a strict gain
            if cost < best_cost:
                best, best_cost = a, cost
        return np.int64(best), state


class _RoundRobin(_View):
    def __init__(self, env: gym.Env) -> None:
        super().__init__(env)
        self.next_host: dict[int, int] = {}

    def predict(self, observation, state=None, episode_start=None, deterministic=True):
        if episode_start is not None and np.any(episode_start):
            self.next_host = {}
        ms, hosts = self.microservice(), self.hosts()
        k = len(hosts)
        start = self.next_host.get(ms, 0)
        for i in range(k):
            s = (start + i) % k
            if hosts[s]:
                self.next_host[ms] = s + 1
                return np.int64(s), state
        raise ValueError(f"round_robin: microservice {ms} has no host")


class _SED(_View):
    def predict(self, observation, state=None, episode_start=None, deterministic=True):
        s = self.state
        delay = queue_lengths_s(self.params, s)[0] + self.params.service_s[s.pipeline[0], s.stage[0]]
        return np.int64(self.argmin_host(delay)), state


def stage_rates(tables, rate_hz: float, mix) -> tuple[np.ndarray, np.ndarray]:
    """(lambda (M,) stage arrival rate per microservice in 1/s, S (M, K) mean service time in s).

    Each request of pipeline p brings one stage of microservice m per stage of p that uses
    m; S averages those stages' service times on each server with the mix as weights
    (microservices no pipeline uses get lambda 0 and S 0).
    """
    m_count, k = len(tables.microservices), tables.num_servers
    lam = np.zeros(m_count)
    work = np.zeros((m_count, k))
    for p, share in enumerate(mix):
        for stage, ms in enumerate(tables.stage_ms[p]):
            lam[ms] += rate_hz * share
            work[ms] += rate_hz * share * np.asarray(tables.service_s[p][stage])
    service = np.divide(work, lam[:, None], out=np.zeros_like(work), where=lam[:, None] > 0)
    return lam, service


def fractional_routing(
    lam: np.ndarray, service: np.ndarray, hosts: np.ndarray, max_util: float = 0.99
) -> tuple[np.ndarray | None, str]:
    """(x (M, K) routing fractions minimising sum_s rho_s / (1 - rho_s), solver status); x None if infeasible.

    Args:
        lam: (M,) stage arrival rates in 1/s.
        service: (M, K) mean service times in s.
        hosts: (M, K) bool, where each microservice has a replica.
        max_util: the capacity constraint rho_s <= max_util (< 1: M/M/1 delays are finite).
    """
    import cvxpy as cp

    m_count, k = service.shape
    used = lam > 0
    if not np.all(hosts[used].any(axis=1)):
        return None, "no_host"
    x = cp.Variable((m_count, k), nonneg=True)
    load = cp.multiply(lam[:, None] * service, x)  # (M, K) utilisation each microservice brings
    rho = cp.sum(load, axis=0)
    constraints = [cp.sum(x[used], axis=1) == 1, rho <= max_util, x[~hosts] == 0] if used.any() else []
    if not used.any():
        return np.where(hosts, 1.0 / np.maximum(hosts.sum(axis=1, keepdims=True), 1), 0.0), "idle"
    objective = cp.Minimize(cp.sum(cp.inv_pos(1.0 - rho)) - k)
    problem = cp.Problem(objective, constraints)
    try:
        problem.solve(solver=cp.CLARABEL)
    except cp.error.SolverError:
        return None, "solver_error"
    if problem.status not in (cp.OPTIMAL, cp.OPTIMAL_INACCURATE) or x.value is None:
        return None, str(problem.status)
    sol = np.where(hosts, np.maximum(x.value, 0.0), 0.0)
    rows = sol.sum(axis=1, keepdims=True)
    sol = np.divide(sol, rows, out=np.where(hosts, 1.0 / np.maximum(hosts.sum(axis=1, keepdims=True), 1), 0.0),
                    where=rows > 0)
    return sol, str(problem.status)


class _CvxpyRouting(_View):
    def __init__(self, env: gym.Env, seed: int | None = None, max_util: float = 0.99) -> None:
        super().__init__(env)
        self.rng = np.random.default_rng(seed)
        self.max_util = max_util
        self.solver_fallbacks = 0
        self.last_status = ""
        self._cache: dict[tuple, np.ndarray] = {}

    def routing(self) -> np.ndarray:
        """(M, K) routing fractions for the simulator's current rate, mix and placement."""
        s = self.state
        rate_hz, mix, hosts = float(s.rate_hz[0]), tuple(s.mix[0].tolist()), s.hosts[0]
        key = (rate_hz, mix, hosts.tobytes())
        if key not in self._cache:
            lam, service = stage_rates(self.params.tables, rate_hz, mix)
            x, self.last_status = fractional_routing(lam, service, hosts, self.max_util)
            if x is None:  # overload or solver failure: split in proportion to the hosts' service rates
                self.solver_fallbacks += 1
                speed = np.where(hosts, 1.0 / np.maximum(service, 1e-12), 0.0)
                x = speed / np.maximum(speed.sum(axis=1, keepdims=True), 1e-300)
            self._cache[key] = x
        return self._cache[key]

    def predict(self, observation, state=None, episode_start=None, deterministic=True):
        row = self.routing()[self.microservice()]
        return np.int64(self.rng.choice(len(row), p=row / row.sum())), state


for _env_id in ENV_IDS:
    register(_env_id, "random_masked", lambda env, seed=None: _RandomMasked(env, seed))
    register(_env_id, "round_robin", lambda env: _RoundRobin(env))
    register(_env_id, "shortest_expected_delay", lambda env: _SED(env))
    register(_env_id, "cvxpy", lambda env, seed=0: _CvxpyRouting(env, seed))
    register(_env_id, "least_loaded", lambda env: _Route(env, "least_loaded"))
    register(_env_id, "nearest", lambda env: _Route(env, "nearest"))
    register(_env_id, "greedy", lambda env: _Route(env, "greedy"))
register(ENV_IDS[0], "lyapunov", lambda env, v=1.0: _Lyapunov(env, v))
register(ENV_IDS[0], "greedy_migrate", lambda env: _Lyapunov(env, ignore_budget=True))

from edgelam.baselines import microservice_routing_hindsight, robust_routing_hindsight  # noqa: E402
from edgelam.baselines.hindsight import register_hindsight  # noqa: E402

register_hindsight(ROUTING.id, microservice_routing_hindsight.solve)
register(ROBUST.id, "hindsight", robust_routing_hindsight.RobustHindsightPolicy)
