"""Baselines of edgelam/MultiUserOffload-v0, and the convex bandwidth / compute split they use.

Joint-policy interface: a :class:`JointPolicy` decides for all users at once.
``predict(obs_dict) -> (action_dict, state)`` takes the dict of every live agent's
observation and returns one action per agent. Called SB3-style with ONE agent's
observation (as ``edgelam.agents.marl.evaluate_parallel`` does, in ``env.agents``
order), it computes the joint decision on the first call of a slot and hands out the
agents' actions one call after the other.

* ``greedy``: every user independently picks the tier of best expected reward for
  itself, assuming equal shares among the users that offloaded in the last slot plus
  itself; expected quality is a line in its device confidence (as in Offload-v0).
* ``cvxpy``: decisions by a convex relaxation and rounding, then the convex optimal
  split. Given the decisions, sum_i a_i / x_i + sum_j s_j / (y_j (1 - u)) is minimised
  by ``optimal_allocation`` (cvxpy) = x_i proportional to sqrt(a_i) (closed form
  ``sqrt_allocation``), with total (sum sqrt(a_i))^2. Relaxation: z_i in the simplex
  over the 3 tiers; minimise sum_i z_i . c_i + w_T [(sum_i (z_i1 + z_i2) sqrt(a_i))^2
  + (sum_i z_i1 sqrt(s_i))^2 / (1 - u)], convex (squares of nonnegative linear forms),
  with c_i the split-independent weighted costs minus expected quality; exact at
  integral z. Rounding: argmax_k z_ik, then one pass of single-user improvement on the
  exact objective. The split is applied with ``env.set_allocation``.

  Solver failure: when cvxpy raises ``SolverError`` or returns no solution, the split falls
  back to its closed form ``sqrt_allocation`` (the same optimum, no solver), and the
  relaxation to z_i = the one-hot argmin of c_i (each user's best tier ignoring the shared
  congestion term), which the single-user improvement pass then corrects on the exact
  objective. ``solver_status`` says how the last slot was decided: ``"optimal"`` or
  ``"fallback: <reason>"``.
"""

from __future__ import annotations

import cvxpy as cp
import numpy as np

from edgelam.baselines import register
from edgelam.baselines.offload import quality_fit
from edgelam.envs.core.queues import processor_sharing_time_s
from edgelam.envs.multi_user_offload.dynamics import equal_shares, slot_costs
from edgelam.envs.multi_user_offload.spec import SPEC
from edgelam.envs.offload.dynamics import CLOUD, DEVICE, EDGE

ENV_ID = SPEC.id


def sqrt_allocation(a: np.ndarray, total: float = 1.0) -> np.ndarray:
    """Closed-form minimiser of sum_i a_i / x_i s.t. sum_i x_i <= total: x_i = total sqrt(a_i) / sum sqrt(a)."""
    r = np.sqrt(np.asarray(a, dtype=np.float64))
    return total * r / r.sum()


def optimal_allocation(a: np.ndarray, total: float = 1.0) -> np.ndarray:
    """Solve min sum_i a_i / x_i s.t. sum_i x_i <= total, x >= 0 with cvxpy (a_i > 0).

    Raises:
        ValueError: a coefficient is not > 0.
        cvxpy.error.SolverError: the solver fails or returns no solution.
    """
    a = np.asarray(a, dtype=np.float64)
    if a.size == 0:
        return a.copy()
    if np.any(~(a > 0)):
        raise ValueError(f"a: every coefficient must be > 0, got {a!r}")
    scale = a.sum()
    x = cp.Variable(a.size, pos=True)
    problem = cp.Problem(cp.Minimize(cp.sum(cp.multiply(a / scale, cp.inv_pos(x)))), [cp.sum(x) <= total])
    problem.solve(solver=cp.CLARABEL)
    if x.value is None:
        raise cp.error.SolverError(f"allocation problem is {problem.status}")
    return np.asarray(x.value) * total / max(float(np.sum(x.value)), total)


class JointPolicy:
    """Joint decisions for all users; see the module docstring for the calling conventions."""

    def __init__(self, env) -> None:
        self.env = env.unwrapped if hasattr(env, "unwrapped") else env
        self.fit = quality_fit(self.env.tables.quality, self.env.tables.confidence)
        self._slot: tuple[int, int] | None = None
        self._queue: list = []

    def expected_quality(self) -> np.ndarray:
        """(N, 3) expected quality of each tier from each user's device confidence."""
        conf = self.env.device_confidence  # the backend's value (live: just computed by the device model)
        return np.clip(conf[:, None] * self.fit[:, 0] + self.fit[:, 1], 0.0, 1.0)

    def decide(self) -> np.ndarray:
        """(N,) tiers of all users for the pending slot."""
        raise NotImplementedError

    def predict(self, observation, state=None, episode_start=None, deterministic=True):
        env = self.env
        if isinstance(observation, dict):
            tiers = self.decide()
            return {a: np.int64(tiers[i]) for i, a in enumerate(env.possible_agents) if a in observation}, state
        key = (id(env.prompts), env.step_count)
        if key != self._slot or not self._queue:
            self._slot = key
            self._queue = [np.int64(k) for k in self.decide()]
        return self._queue.pop(0), state

    def _objective(self, tiers: np.ndarray, band: np.ndarray, compute: np.ndarray, quality: np.ndarray) -> float:
        env = self.env
        cfg = env.config
        w = cfg.reward
        lat, en, usd, _ = slot_costs(
            env.tables, env.prompts, tiers, env.spectral_efficiency, band, compute,
            cfg.channel.bandwidth_hz, cfg.edge_background_util, env.last_cloud_rtt_s,
        )
        q = quality[np.arange(len(tiers)), tiers]
        cost = w.latency_weight * lat + w.energy_weight_per_j * en + w.cloud_cost_weight_per_usd * usd
        return float(np.sum(cost - w.quality_weight * q))


class Greedy(JointPolicy):
    """Independent greedy users (equal shares among last slot's offloaders plus oneself)."""

    def decide(self) -> np.ndarray:
        env = self.env
        n = env.n
        cfg = env.config
        w = cfg.reward
        quality = self.expected_quality()
        others = round(env.offloaded_fraction * n)
        share = np.full(n, 1.0 / (min(others, n - 1) + 1))
        # each user's own cost of each tier (column k: every user alone on tier k with that share), (N, 3);
        # a user's cost does not depend on the tiers of the others once the shares are fixed
        cost = np.empty((n, 3))
        for k in (DEVICE, EDGE, CLOUD):
            lat, en, usd, _ = slot_costs(
                env.tables, env.prompts, np.full(n, k), env.spectral_efficiency, share, share,
                cfg.channel.bandwidth_hz, cfg.edge_background_util, env.last_cloud_rtt_s,
            )
            cost[:, k] = (w.latency_weight * lat + w.energy_weight_per_j * en + w.cloud_cost_weight_per_usd * usd
                          - w.quality_weight * quality[:, k])
        return np.argmin(cost, axis=1).astype(np.int64)  # ties: the first tier, device before edge before cloud


class CvxpyAllocation(JointPolicy):
    """Relaxed-and-rounded decisions with the convex optimal (square-root) bandwidth / compute split.

    ``solver_status`` is ``"optimal"`` or ``"fallback: <reason>"`` for the last decided slot
    (see the module docstring for the fallbacks).
    """

    def __init__(self, env) -> None:
        super().__init__(env)
        self.solver_status = "not run"
        self._failures: list[str] = []

    def _solved_allocation(self, a: np.ndarray) -> np.ndarray:
        """``optimal_allocation(a)``, or its closed form ``sqrt_allocation(a)`` when the solver fails."""
        try:
            return optimal_allocation(a)
        except cp.error.SolverError as exc:
            self._failures.append(f"allocation solver failed ({exc})")
            return sqrt_allocation(a)

    def _split(self, tiers: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        env = self.env
        cfg = env.config
        _, _, _, a = slot_costs(env.tables, env.prompts, tiers, env.spectral_efficiency, np.ones(env.n),
                                np.ones(env.n), cfg.channel.bandwidth_hz, cfg.edge_background_util, 0.0)
        s = env.tables.compute_s[env.prompts, EDGE]
        return a, s, s

    def allocation(self, tiers: np.ndarray, solver=None) -> tuple[np.ndarray, np.ndarray]:
        """Optimal (band, compute) shares (N,) for fixed decisions (default solver: cvxpy with fallback)."""
        solver = self._solved_allocation if solver is None else solver
        a, s, _ = self._split(tiers)
        band, compute = np.zeros(self.env.n), np.zeros(self.env.n)
        off, edge = tiers != DEVICE, tiers == EDGE
        if off.any():
            band[off] = solver(a[off])
        if edge.any():
            compute[edge] = solver(s[edge])
        return band, compute

    def relaxed(self) -> np.ndarray:
        """(N, 3) solution z of the convex relaxation."""
        env = self.env
        n = env.n
        cfg = env.config
        w = cfg.reward
        quality = self.expected_quality()
        a, s, _ = self._split(np.full(n, CLOUD))
        costs = np.empty((n, 3))
        for k in (DEVICE, EDGE, CLOUD):
            tiers = np.full(n, k)
            # split-independent part: the full band / full edge for everyone, minus those terms
            lat, en, usd, _ = slot_costs(env.tables, env.prompts, tiers, env.spectral_efficiency, np.ones(n),
                                         np.ones(n), cfg.channel.bandwidth_hz, cfg.edge_background_util,
                                         env.last_cloud_rtt_s)
            lat = lat - (k != DEVICE) * a - processor_sharing_time_s((k == EDGE) * s, cfg.edge_background_util)
            costs[:, k] = (w.latency_weight * lat + w.energy_weight_per_j * en
                           + w.cloud_cost_weight_per_usd * usd - w.quality_weight * quality[:, k])
        z = cp.Variable((n, 3), nonneg=True)
        shared = cp.square((z[:, EDGE] + z[:, CLOUD]) @ np.sqrt(a)) + processor_sharing_time_s(
            cp.square(z[:, EDGE] @ np.sqrt(s)), cfg.edge_background_util
        )
        problem = cp.Problem(cp.Minimize(cp.sum(cp.multiply(costs, z)) + w.latency_weight * shared),
                             [cp.sum(z, axis=1) == 1])
        try:
            problem.solve(solver=cp.CLARABEL)
            failure = None if z.value is not None else f"relaxation status {problem.status}"
        except cp.error.SolverError as exc:
            failure = f"relaxation solver failed ({exc})"
        if failure is None:
            return np.asarray(z.value)
        self._failures.append(failure)
        return np.eye(3)[np.argmin(costs, axis=1)]

    def decide(self) -> np.ndarray:
        self._failures = []
        quality = self.expected_quality()
        tiers = np.argmax(self.relaxed(), axis=1).astype(np.int64)
        best = self._objective(tiers, *self.allocation(tiers, sqrt_allocation), quality)
        for i in range(len(tiers)):
            for k in (DEVICE, EDGE, CLOUD):
                trial = tiers.copy()
                trial[i] = k
                cost = self._objective(trial, *self.allocation(trial, sqrt_allocation), quality)
                if cost < best - 1e-12:
                    best, tiers = cost, trial
        self.env.set_allocation(*self.allocation(tiers))
        self.solver_status = f"fallback: {'; '.join(self._failures)}" if self._failures else "optimal"
        return tiers



register(ENV_ID, "greedy", lambda env: Greedy(env))
register(ENV_ID, "cvxpy", lambda env: CvxpyAllocation(env))

__all__ = ["CvxpyAllocation", "Greedy", "JointPolicy", "equal_shares", "optimal_allocation", "sqrt_allocation"]

from edgelam.baselines.multi_user_offload_hindsight import policy as _hindsight_policy  # noqa: E402

register(ENV_ID, "hindsight", _hindsight_policy)
