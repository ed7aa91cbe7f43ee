"""Baselines of edgelam/FedFTAllocation-v0 and edgelam/FedFTPower-v0, and the min-energy allocation solver.

They read the env's own state and price allocations with its own functions
(``env.unwrapped.fed``: :class:`edgelam.envs.fedft.core.Federation`, and
:mod:`edgelam.envs.fedft.dynamics`), so they optimise exactly what the env charges; in both
modes: ``fed.bits`` is the upload of a round (adapters, or split mode's activations, labels and
device adapters) and ``fed.upload_window_s`` the deadline less computation and (split mode)
gradient download.

FedFTAllocation-v0:

* ``equal``: equal bandwidth shares, p_max for everyone.
* ``random``: uniform random actions.
* ``min_energy``: every device that can make the deadline at all (full band, p_max) is
  scheduled with the allocation of :func:`min_energy_allocation` over its upload window
  (deadline minus computation and download time, less a 1% margin for float32 actions);
  while those devices cannot all make it together (the solver finds the problem
  infeasible), the one with the least full-band headroom (capacity over its window / bits)
  is left out and the rest re-solved; the policy's ``solver_status`` says how the last
  round was solved (``optimal`` or ``fallback: ...``) and ``left_out`` how many devices the
  rule left out.
* ``lyapunov`` (Neely 2010, drift-plus-penalty): each round chooses the scheduled set S
  minimising ``V * (energy_weight * E(S) - loss_scale * dL(S)) + Z * E(S)``, with E(S) the
  round energy under the min-energy allocation of S, dL(S) the expected loss decrease of
  the env's surrogate and Z the env's energy virtual queue; greedy removal from the
  min_energy set, re-solving after each removal. Keeps the long-term energy per round near
  ``energy_budget_j`` (queue O(V)).

FedFTPower-v0 (one policy shared by all agents, called with each agent's observation):

* ``equal``: every device requests the same band and transmits at p_max.
* ``random``: each agent samples its own action space.
* ``min_energy`` / ``lyapunov``: the controllers above, each device handed its share of the
  joint decision (:class:`Joint`).
"""

from __future__ import annotations

import warnings

import cvxpy as cp
import gymnasium as gym
import numpy as np

from edgelam.baselines import register
from edgelam.envs.fedft.dynamics import topic_weights, upload_rate_bps
from edgelam.envs.fedft.spec import ALLOCATION, POWER

ALLOCATION_ID = ALLOCATION.id
POWER_ID = POWER.id
DEADLINE_MARGIN = 0.01
MHZ = 1e6
MW = 1e-3


def closed_form_power(
    gains: np.ndarray, bits: np.ndarray | float, deadline_s: np.ndarray | float, bandwidth_hz: np.ndarray,
    noise_w_per_hz: float,
) -> np.ndarray:
    """Least power that uploads ``bits`` in ``deadline_s`` on band b: p = (N0 b / g)(2^(s / (b t)) - 1), in W."""
    b = np.asarray(bandwidth_hz, dtype=np.float64)
    with np.errstate(over="ignore", divide="ignore", invalid="ignore"):
        p = noise_w_per_hz * b / gains * np.expm1(np.log(2.0) * bits / (b * deadline_s))
    return np.where(b > 0, p, np.inf)


def _fallback(k: int, bandwidth_hz: float, p_max: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    return np.full(k, bandwidth_hz / k), p_max.copy()


def min_energy_allocation(
    gains: np.ndarray,
    bits: np.ndarray | float,
    deadline_s: np.ndarray | float,
    bandwidth_hz: float,
    noise_w_per_hz: float,
    p_max_w: np.ndarray | float,
    return_status: bool = False,
):
    """Least total upload energy so that every device uploads its bits within its deadline (FDMA).

    minimise sum_k p_k t_k  s.t.  b_k log2(1 + p_k g_k / (N0 b_k)) >= s_k / t_k,
    sum_k b_k <= B, 0 <= p_k <= p_max, b_k >= 0; with t_k = ``deadline_s`` (uploading over the
    whole window is optimal since energy p s / r(p) grows with p). The rate constraint is
    convex through b log(1 + c p / b) = -rel_entr(b, b + c p) (exponential cone); it is solved
    in MHz and mW by Clarabel, falling back to SCS. The returned power is
    max(solver power, closed form (N0 b / g)(2^(s / (b t)) - 1)), which removes solver
    tolerance from the deadline. Yang et al., TWC 2021, Sec. IV.

    Args:
        gains: (K,) linear channel power gains g_k (> 0).
        bits: upload size s_k in bits, scalar or (K,).
        deadline_s: upload time t_k in s (> 0), scalar or (K,).
        bandwidth_hz: total band B in Hz.
        noise_w_per_hz: noise PSD N0 (times the noise figure) in W/Hz.
        p_max_w: power limit in W, scalar or (K,).
        return_status: also return the status string.

    Returns:
        ``(bandwidth_hz, power_w)``, (K,) each; with ``return_status`` also ``status``:
        ``"optimal"``, ``"optimal_inaccurate (polished)"`` (an inaccurate solver solution
        whose powers, raised to the closed form, meet every deadline), or
        ``"fallback: <reason>"`` when the problem is infeasible (some device cannot make its
        deadline), the solvers fail, or their solution cannot be made feasible. The safe
        fallback is the equal baseline's allocation (equal bandwidth, p_max): it needs no
        solver and gives every device its fair share of the band at full power.
    """
    g = np.asarray(gains, dtype=np.float64)
    k = g.size
    s = np.broadcast_to(np.asarray(bits, dtype=np.float64), (k,))
    t = np.broadcast_to(np.asarray(deadline_s, dtype=np.float64), (k,))
    p_max = np.broadcast_to(np.asarray(p_max_w, dtype=np.float64), (k,)).copy()
    if k == 0:
        out = (np.zeros(0), np.zeros(0))
        return (*out, "optimal") if return_status else out
    status = "optimal"
    if np.any(~(g > 0)) or np.any(~(t > 0)) or np.any(~(s >= 0)) or not bandwidth_hz > 0:
        status = "fallback: infeasible (a gain, deadline or band is not positive)"
    elif np.any(upload_rate_bps(np.full(k, bandwidth_hz), p_max, g, noise_w_per_hz) < s / t):
        status = "fallback: infeasible (a device misses its deadline even alone on the band at p_max)"
    else:
        b_mhz = cp.Variable(k, nonneg=True)
        p_mw = cp.Variable(k, nonneg=True)
        c = g * (MW / MHZ) / noise_w_per_hz
        need = s * np.log(2.0) / (t * MHZ)
        cons = [
            -cp.rel_entr(b_mhz, b_mhz + cp.multiply(c, p_mw)) >= need,
            cp.sum(b_mhz) <= bandwidth_hz / MHZ,
            p_mw <= p_max / MW,
        ]
        problem = cp.Problem(cp.Minimize(cp.sum(cp.multiply(t, p_mw))), cons)
        solved = None
        for solver in (cp.CLARABEL, cp.SCS):
            try:
                with warnings.catch_warnings():  # an inaccurate solution is polished and checked below
                    warnings.simplefilter("ignore", UserWarning)
                    problem.solve(solver=solver)
            except cp.error.SolverError:
                continue
            if problem.status in (cp.OPTIMAL, cp.OPTIMAL_INACCURATE) and b_mhz.value is not None:
                solved = (np.maximum(b_mhz.value, 0.0) * MHZ, np.maximum(p_mw.value, 0.0) * MW)
                status = "optimal" if problem.status == cp.OPTIMAL else "optimal_inaccurate (polished)"
                break
            if problem.status in (cp.INFEASIBLE, cp.INFEASIBLE_INACCURATE):
                break
        if solved is None:
            status = f"fallback: solver status {problem.status}"
        else:
            b = solved[0] * min(1.0, bandwidth_hz / max(solved[0].sum(), 1e-300))
            p = np.maximum(solved[1], closed_form_power(g, s, t, b, noise_w_per_hz))
            if np.all(p <= p_max * (1.0 + 1e-6)):
                out = (b, np.minimum(p, p_max))
                return (*out, status) if return_status else out
            status = "fallback: solver solution misses a deadline at p_max"
    out = _fallback(k, bandwidth_hz, p_max)
    return (*out, status) if return_status else out


def _encode(fed, bandwidth_hz: np.ndarray, power_w: np.ndarray) -> np.ndarray:
    """FedFTAllocation-v0 action whose projection gives these shares and at least these powers."""
    cfg = fed.cfg
    total = bandwidth_hz.sum()
    shares = bandwidth_hz / total if total > 0 else np.zeros_like(bandwidth_hz)
    a_b = (2.0 * shares - 1.0).astype(np.float32)
    a_p = np.clip(2.0 * power_w / cfg.p_max_w - 1.0, -1.0, 1.0).astype(np.float32)
    short = (a_p.astype(np.float64) + 1.0) / 2.0 * cfg.p_max_w < power_w
    a_p[short] = np.minimum(np.nextafter(a_p[short], np.float32(2.0)), np.float32(1.0))
    a_p[power_w <= 0] = -1.0
    return np.concatenate([a_b, a_p])


class Equal:
    """Equal bandwidth shares and p_max (FedFTAllocation-v0: a = [0]*K + [1]*K; FedFTPower-v0: [1, 1])."""

    def __init__(self, env) -> None:
        space = env.action_space if isinstance(env, gym.Env) else env.action_space(env.possible_agents[0])
        k = space.shape[0] // 2
        self.action = np.concatenate([np.zeros(k), np.ones(k)]).astype(np.float32)
        if not isinstance(env, gym.Env):
            self.action = np.ones(2, dtype=np.float32)

    def predict(self, observation, state=None, episode_start=None, deterministic=True):
        if isinstance(observation, dict):
            return {a: self.action.copy() for a in observation}, state
        return self.action.copy(), state


class MinEnergy:
    """Schedule every device that can make the deadline; min-energy bandwidth and power (cvxpy)."""

    def __init__(self, env: gym.Env) -> None:
        self.env = env.unwrapped
        self.solver_status = "not run"
        self.left_out = 0

    def candidates(self) -> np.ndarray:
        """(K,) bool: devices whose upload window admits the upload alone on the band at p_max."""
        fed = self.env.fed
        cfg = fed.cfg
        window = fed.upload_window_s * (1.0 - DEADLINE_MARGIN)
        rate = upload_rate_bps(np.full(fed.k, cfg.bandwidth_hz), np.full(fed.k, cfg.p_max_w), fed.gains,
                               cfg.noise_w_per_hz)
        return (window > 0) & (rate * window > fed.bits)

    def allocate(self, scheduled: np.ndarray) -> tuple[np.ndarray, np.ndarray, str]:
        """(bandwidth_hz, power_w, status) over all K devices; zero for the unscheduled ones."""
        fed = self.env.fed
        cfg = fed.cfg
        b, p = np.zeros(fed.k), np.zeros(fed.k)
        if not scheduled.any():
            return b, p, "optimal"
        window = fed.upload_window_s[scheduled] * (1.0 - DEADLINE_MARGIN)
        b[scheduled], p[scheduled], status = min_energy_allocation(
            fed.gains[scheduled], fed.bits, window, cfg.bandwidth_hz, cfg.noise_w_per_hz, cfg.p_max_w,
            return_status=True,
        )
        return b, p, status

    def schedule(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, str]:
        """(scheduled, bandwidth_hz, power_w, status): the candidates, less the fewest weakest devices that make the
        min-energy problem feasible (module docstring)."""
        fed = self.env.fed
        cfg = fed.cfg
        scheduled = self.candidates()
        window = fed.upload_window_s * (1.0 - DEADLINE_MARGIN)
        rate = upload_rate_bps(np.full(fed.k, cfg.bandwidth_hz), np.full(fed.k, cfg.p_max_w), fed.gains,
                               cfg.noise_w_per_hz)
        headroom = rate * window / fed.bits
        b, p, status = self.allocate(scheduled)
        self.left_out = 0
        while status.startswith("fallback: solver status infeasible") and scheduled.sum() > 1:
            scheduled = scheduled.copy()
            scheduled[np.flatnonzero(scheduled)[np.argmin(headroom[scheduled])]] = False
            self.left_out += 1
            b, p, status = self.allocate(scheduled)
        return scheduled, b, p, status

    def decide(self) -> tuple[np.ndarray, np.ndarray]:
        _, b, p, self.solver_status = self.schedule()
        return b, p

    def predict(self, observation, state=None, episode_start=None, deterministic=True):
        b, p = self.decide()
        return _encode(self.env.fed, b, p), state


class Lyapunov(MinEnergy):
    """Drift-plus-penalty scheduling over the env's energy virtual queue (see the module docstring)."""

    def __init__(self, env: gym.Env, v: float = 1.0) -> None:
        super().__init__(env)
        if not v > 0:
            raise ValueError(f"lyapunov baseline: v must be > 0, got {v!r}")
        self.v = float(v)

    def objective(self, scheduled: np.ndarray, energy_j: float) -> float:
        """V * (energy_weight * E - loss_scale * expected decrease) + Z * E."""
        fed = self.env.fed
        w = fed.cfg.reward
        m = int(scheduled.sum())
        weights = topic_weights(scheduled, fed.data_sizes, fed.topic_counts)
        gain = float(fed.surrogate.mean_decrease(fed.topic_loss, weights, m).mean())
        return self.v * (w.energy_weight_per_j * energy_j - w.loss_scale * gain) + fed.queue * energy_j

    def decide(self) -> tuple[np.ndarray, np.ndarray]:
        fed = self.env.fed
        scheduled, b, p, self.solver_status = self.schedule()
        energy = fed.costs(b, p).energy_j
        best = self.objective(scheduled, float(energy.sum()))
        while scheduled.any():
            trials = []
            for k in np.flatnonzero(scheduled):
                trial = scheduled.copy()
                trial[k] = False
                trials.append((self.objective(trial, float(energy[trial].sum())), k))
            value, k = min(trials)
            if value >= best:
                break
            scheduled = scheduled.copy()
            scheduled[k] = False
            b, p, self.solver_status = self.allocate(scheduled)
            energy = fed.costs(b, p).energy_j
            best = self.objective(scheduled, float(energy.sum()))
        return b, p


class Joint:
    """A FedFTAllocation-v0 controller (``MinEnergy`` / ``Lyapunov``) as a FedFTPower-v0 joint policy.

    Each device requests its share b_k / B (normalising them onto the band gives b back) and
    transmits at p_k: agent action [2 p_k / p_max - 1, 2 b_k / B - 1]. Called with the dict of
    all observations it returns every agent's action; called SB3-style with one agent's
    observation (in ``env.agents`` order) it decides once per round and hands the actions
    out one call after the other.
    """

    def __init__(self, controller: MinEnergy) -> None:
        self.controller = controller
        self.env = controller.env
        self._round: tuple | None = None
        self._queue: list[np.ndarray] = []

    @property
    def solver_status(self) -> str:
        return self.controller.solver_status

    def actions(self) -> list[np.ndarray]:
        """Per device (``possible_agents`` order) its action for the current round."""
        fed = self.env.fed
        b, p = self.controller.decide()
        flat = _encode(fed, b, p)
        return [np.array([flat[fed.k + i], flat[i]], dtype=np.float32) for i in range(fed.k)]

    def predict(self, observation, state=None, episode_start=None, deterministic=True):
        if isinstance(observation, dict):
            acts = self.actions()
            return {a: acts[i] for i, a in enumerate(self.env.possible_agents) if a in observation}, state
        fed = self.env.fed
        key = (fed.t, fed.gains.tobytes())
        if key != self._round or not self._queue:
            self._round = key
            self._queue = self.actions()
        return self._queue.pop(0), state


register(ALLOCATION_ID, "equal", lambda env: Equal(env))
register(ALLOCATION_ID, "min_energy", lambda env: MinEnergy(env))
register(ALLOCATION_ID, "lyapunov", lambda env, v=1.0: Lyapunov(env, v=v))
register(POWER_ID, "equal", lambda env: Equal(env))
register(POWER_ID, "min_energy", lambda env: Joint(MinEnergy(env)))
register(POWER_ID, "lyapunov", lambda env, v=1.0: Joint(Lyapunov(env, v=v)))

__all__ = ["Equal", "Joint", "Lyapunov", "MinEnergy", "closed_form_power", "min_energy_allocation"]

from edgelam.baselines import fedft_hindsight  # noqa: E402  (it imports this module's solvers)
from edgelam.baselines.hindsight import register_hindsight  # noqa: E402

for _id in (ALLOCATION_ID, POWER_ID):
    register_hindsight(_id, lambda env: fedft_hindsight.solve(env))
