"""Hindsight of edgelam/MultiUserOffload-v0: per-slot enumeration of the joint tiers with the optimal split.

Slots are decoupled. A slot's rewards (:func:`~edgelam.envs.multi_user_offload.dynamics.transition`)
read the users' tiers, the split of the band and of the edge, and the slot's exogenous state (tasks,
spectral efficiencies, cloud RTT); what the actions change (battery, the fraction that offloaded) is
only observed: it is never priced and no episode ends on it. The draws of a slot
(:func:`~edgelam.envs.multi_user_offload.dynamics.draw_exogenous`) have a fixed size whatever the
actions. So the return is a sum of per-slot terms over a trace the actions do not change, and its
maximum is the sum of the per-slot maxima.

A slot's maximum. Its actions are the tier vector (3^N of them) and the split the env applies: equal
shares, or a controller's (:meth:`~edgelam.envs.multi_user_offload.env.MultiUserOffloadEnv.set_allocation`,
shares >= 0 summing to <= 1). For fixed tiers the split enters the users' summed reward only as
``w_T sum_i a_i / x_i`` (upload time; the transmit energy does not depend on it) and
``(w_T + w_E P_idle) sum_j s_j / (y_j (1 - u))`` (edge compute; latency and the device's idle energy),
the same weight for every user, so the optimum is the square-root split x_i = sqrt(a_i) / sum sqrt(a)
(``sqrt_allocation`` of :mod:`edgelam.baselines.multi_user_offload`, the split the ``cvxpy``
baseline applies; :mod:`edgelam.envs.multi_user_offload.dynamics`). The solver therefore tries every
tier vector with that split, each game of one batch through the env's own ``transition``, keeps the
best, and plays it: its plan holds the split of each slot, which its policy hands to
``set_allocation`` before the step. A split whose shares sum to slightly more than 1 (the env accepts
1 + 1e-6 for rounding) is outside the model and is not used. Checks in code: in every slot the
square-root split must do at least as well as equal shares for every tier vector, and the replayed
step must pay what the batch priced; ``tests/multi_user_offload/test_hindsight.py`` also checks that
no perturbed split beats it and the optimum against every tier sequence of a toy episode.

Kind: ``exact`` for up to :data:`MAX_EXACT_USERS` users (3^N games per slot). With more users the
enumeration is intractable and the kind is ``bound``: in each slot the users' rewards are measured as
``g[i, k] - c_i / x_i - d_i / y_i`` by ``transition`` (the form the paragraph above derives; checked
on random tiers and splits, else no bound), the split's minimum (sum sqrt c)^2 / (1 + 1e-6) (allowing
``set_allocation``'s rounding slack) is relaxed by a Lagrange multiplier per shared resource, which
makes the slot separable over users, and the multipliers are minimised (:func:`_bound_and_plan`). The
value is the sum of these per-slot bounds; the plan played is single-user improvement from the
relaxation's maximiser with the square-root split, whose realised return is at most the value (the
gap is about 1% of the return with 7 users, 0.02% with 1,024).

Solver failure (any exception) falls back to the ``cvxpy`` baseline (``greedy`` above
:data:`MAX_EXACT_USERS` users) played on a :func:`~edgelam.baselines.hindsight.fork` of the env (kind
``planner``, ``fallback=True``, the reason in ``solver``), and if that fails too, to every user on its
device. The live backend works as the
replay one: its model numbers are cached per (task, tier), so the enumeration runs each task's
models at most once per tier.
"""

from __future__ import annotations

import copy
import itertools
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy.optimize import minimize

from edgelam.baselines.hindsight import HindsightPolicy, Plan, fork, rollout
from edgelam.envs.multi_user_offload.dynamics import (
    CLOUD,
    DEVICE,
    EDGE,
    Exogenous,
    State,
    draw_exogenous,
    slot_costs,
    transition,
)

MAX_EXACT_USERS = 6  # 3^6 = 729 tier vectors a slot: about 1 s an episode of 200 slots
ALLOCATION_SLACK = 1e-6  # set_allocation accepts shares summing to 1 + 1e-6 (rounding): the bound allows it
SOLVER = "per-slot enumeration of the 3^N tier vectors with the square-root split, on the replayed trace"
BOUND = ("per-slot Lagrangian bound of the shared band and edge terms (certified decomposition of the rewards), "
         "played: single-user improvement with the square-root split, on the replayed trace")


@dataclass(frozen=True)
class AllocatedPlan(Plan):
    """A :class:`Plan` with the split of each step: ``allocations[t]`` = (band_share (N,), compute_share (N,)),
    or None for the env's equal shares."""

    allocations: tuple[tuple[np.ndarray, np.ndarray] | None, ...] = ()


class AllocatingHindsightPolicy(HindsightPolicy):
    """:class:`HindsightPolicy` that also sets each step's split (``env.set_allocation``) when it hands out
    the step's joint action."""

    def _next(self) -> Any:
        t = self._t
        joint = super()._next()
        allocations = getattr(self.last_plan, "allocations", ())
        if t < len(allocations) and allocations[t] is not None:  # None: the env's equal shares
            self.env.unwrapped.set_allocation(*allocations[t])
        return joint


def policy(env: Any) -> AllocatingHindsightPolicy:
    """The ``hindsight`` baseline of MultiUserOffload-v0 on ``env``."""
    return AllocatingHindsightPolicy(env, solve)


def tier_vectors(num_users: int) -> np.ndarray:
    """(3^N, N) int64 every joint tier vector, user 0's tier the slowest."""
    return np.array(list(itertools.product((DEVICE, EDGE, CLOUD), repeat=num_users)), dtype=np.int64)


def square_root_split(tiers: np.ndarray, a: np.ndarray, s: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The optimal split of each row of ``tiers`` (M, N): band ~ sqrt(a) over the offloading users, edge
    compute ~ sqrt(s) over the edge users (``sqrt_allocation`` over each row's users); 0 for the others."""
    off = (tiers != DEVICE) * np.sqrt(a)
    edge = (tiers == EDGE) * np.sqrt(s)
    return (off / np.maximum(off.sum(axis=1, keepdims=True), 1e-300),
            edge / np.maximum(edge.sum(axis=1, keepdims=True), 1e-300))


def _tile(state: State, m: int) -> State:
    return State(**{name: np.repeat(getattr(state, name), m, axis=0) for name in State.__slots__})


def _tile_exo(exo: Exogenous, m: int) -> Exogenous:
    return Exogenous(np.repeat(exo.fading_normals, m, axis=1), np.repeat(exo.prompt, m, axis=0),
                     np.repeat(exo.rtt_shock, m))


class _Slot:
    """One slot of the replayed trace: prices any set of tier vectors, each game of a batch through ``transition``."""

    def __init__(self, env: Any, state: State, exo: Exogenous) -> None:
        self.params, self.state, self.exo = env.params, state, exo
        cfg, t = env.config, env.tables
        _, _, _, a = slot_costs(t, state.prompt, np.full_like(state.prompt, CLOUD), state.spectral_eff,
                                np.ones(state.prompt.shape), np.ones(state.prompt.shape), cfg.channel.bandwidth_hz,
                                cfg.edge_background_util, state.cloud_rtt_s[:, None])
        self.a, self.s = a, t.compute_s[state.prompt, EDGE]  # (1, N) upload time coefficient, unloaded edge time

    def play(self, tiers: np.ndarray, band: np.ndarray | None, compute: np.ndarray | None) -> np.ndarray:
        """(M, N) reward of each user for the tier vectors ``tiers`` (M, N) with the split (band, compute)
        (M, N) (None: the env's equal shares), each row one game of a batch through ``transition``."""
        m = len(tiers)
        allocation = None if band is None else (np.ones(m, dtype=bool), band, compute)
        _, reward, info = transition(self.params, _tile(self.state, m), tiers, _tile_exo(self.exo, m), allocation)
        if np.any(info["allocation_projected"]):
            raise RuntimeError("a split gave a user no share")
        return reward

    def rewards(self, tiers: np.ndarray, equal: bool = False) -> tuple[np.ndarray, tuple[np.ndarray, np.ndarray]]:
        """(mean reward over users (M,), the split (band, compute) (M, N)) of the tier vectors ``tiers`` (M, N)
        with the square-root split (``equal``: the env's equal shares)."""
        band, compute = square_root_split(tiers, self.a, self.s)
        reward = self.play(tiers, None, None) if equal else self.play(tiers, band, compute)
        return reward.mean(axis=1), (band, compute)

    def decomposition(self, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(g (N, 3), c (N,), d (N,)) with user i's reward ``g[i, k] - c_i / x_i [k offloads] - d_i / y_i
        [k = edge]`` at band share x_i and edge share y_i, measured by ``transition`` at shares 1 and 1/2
        and checked on random tiers and splits (RuntimeError if the slot's rewards are not of that form)."""
        n = self.state.prompt.shape[1]
        tiers = np.repeat(np.array([DEVICE, EDGE, EDGE, EDGE, CLOUD, CLOUD])[:, None], n, axis=1)
        band = np.repeat(np.array([1.0, 1.0, 0.5, 1.0, 1.0, 0.5])[:, None], n, axis=1)
        compute = np.repeat(np.array([1.0, 1.0, 1.0, 0.5, 1.0, 1.0])[:, None], n, axis=1)
        r = self.play(tiers, band, compute)
        c, d = r[4] - r[5], r[1] - r[3]
        g = np.stack([r[0], r[1] + c + d, r[4] + c], axis=1)
        checks = 4
        tiers = rng.integers(3, size=(checks, n))
        band, compute = rng.uniform(0.01, 1.0, size=(2, checks, n))
        predicted = (g[np.arange(n), tiers] - (tiers != DEVICE) * c / band - (tiers == EDGE) * d / compute)
        scale = np.abs(g).max() + np.abs(c / band).max() + np.abs(d / compute).max()
        if (np.any(c < 0) or np.any(d < 0) or np.abs(r[1] - r[2] - c).max() > 1e-9 * scale
                or np.abs(self.play(tiers, band, compute) - predicted).max() > 1e-9 * scale):
            raise RuntimeError("the slot's rewards are not g - c / x - d / y: no certified bound")
        return g, c, d


def solve(env: Any) -> Plan:
    """The hindsight plan of the episode ``env`` is in, from its current slot on (module docstring)."""
    env = getattr(env, "unwrapped", env)
    try:
        return _replay(env, exact=env.n <= MAX_EXACT_USERS)
    except Exception as exc:  # any solver failure falls back, flagged (module docstring)
        return _fallback(env, f"{SOLVER if env.n <= MAX_EXACT_USERS else BOUND} failed ({exc!r})")


def _replay(env: Any, exact: bool) -> AllocatedPlan:
    params, n = env.params, env.n
    state: State = env.state
    rng = copy.deepcopy(env._np_random)  # the env's generator: the same draws from here on
    steps = env.config.episode_length - int(state.step[0])
    every = tier_vectors(n) if exact else None
    checks = np.random.default_rng(0)  # the random tiers and splits the decomposition is checked on
    actions, allocations = [], []
    returns, bound = np.zeros(n), 0.0
    for _ in range(steps):
        exo = draw_exogenous(rng, params, 1)  # the env's step draws the next slot first, then plays this one
        slot = _Slot(env, state, exo)
        if exact:
            value, (band, compute) = slot.rewards(every)
            equal, _ = slot.rewards(every, equal=True)
            if np.any(equal > value + 1e-12 * np.abs(value)):
                raise RuntimeError("equal shares beat the square-root split: the split is not the optimum")
            best = int(np.argmax(value))
            tiers, split, priced = every[best], (band[best], compute[best]), float(value[best])
        else:
            tiers, split, priced, upper = _bound_and_plan(slot, checks)
        state, reward, _ = transition(params, state, tiers[None], exo, (np.ones(1, dtype=bool), split[0][None],
                                                                        split[1][None]))
        paid = float(reward[0].mean())
        if abs(paid - priced) > 1e-12 * max(1.0, abs(priced)):
            raise RuntimeError(f"the replayed slot paid {paid}, the search priced {priced}")
        returns += reward[0]
        if not exact:
            bound += max(upper, paid)  # both bound the slot; the max also absorbs rounding in the bound
        actions.append(dict(zip(env.possible_agents, tiers.tolist(), strict=True)))
        allocations.append(split)
    if exact:
        return AllocatedPlan(actions, float(np.mean(returns)), "exact", SOLVER, allocations=tuple(allocations))
    return AllocatedPlan(actions, bound, "bound", BOUND, allocations=tuple(allocations))


def _bound_and_plan(slot: _Slot, rng: np.random.Generator) -> tuple[np.ndarray, tuple[np.ndarray, np.ndarray],
                                                                     float, float]:
    """(tiers (N,), their split, their mean reward, an upper bound on any policy's mean reward) of one slot.

    With the slot's rewards ``g - c / x - d / y`` (:meth:`_Slot.decomposition`) and any split summing to
    at most ``1 + ALLOCATION_SLACK``, the summed reward of tiers z is at most
    ``sum_i g[i, z_i] - k S1(z)^2 - k S2(z)^2`` (k = 1 / (1 + slack), S1 = sum of sqrt(c) over the
    offloading users, S2 of sqrt(d) over the edge users; equality at the square-root split without
    slack), and ``-k S^2 <= k (lambda^2 - 2 lambda S)`` for every lambda: the bound
    ``sum_i max_k (g[i, k] - 2 k lambda sqrt(c_i) [k off] - 2 k mu sqrt(d_i) [k edge]) + k (lambda^2 + mu^2)``
    holds for every (lambda, mu) and is minimised over them (Nelder-Mead; any point is valid). The tiers
    played: single-user improvement on the exact objective from the relaxation's maximiser, or the best
    uniform tier vector where that does better.
    """
    g, c, d = slot.decomposition(rng)
    n = len(c)
    rc, rd = np.sqrt(c), np.sqrt(d)
    off, edge = np.array([0.0, 1.0, 1.0]), np.array([0.0, 1.0, 0.0])
    k = 1.0 / (1.0 + ALLOCATION_SLACK)

    def objective(z: np.ndarray) -> float:
        return float(g[np.arange(n), z].sum() - (rc @ (z != DEVICE)) ** 2 - (rd @ (z == EDGE)) ** 2)

    def linear(x: np.ndarray) -> np.ndarray:
        return g - 2.0 * k * (x[0] * rc[:, None] * off + x[1] * rd[:, None] * edge)

    def upper(x: np.ndarray) -> float:
        return float(linear(x).max(axis=1).sum() + k * (x[0] ** 2 + x[1] ** 2))

    uniform = [np.full(n, tier, dtype=np.int64) for tier in (DEVICE, EDGE, CLOUD)]
    start = max(uniform, key=objective)
    fit = minimize(upper, np.array([rc @ (start != DEVICE), rd @ (start == EDGE)]), method="Nelder-Mead",
                   options={"xatol": 1e-9, "fatol": 1e-12})
    fit = minimize(upper, fit.x, method="Nelder-Mead", options={"xatol": 1e-9, "fatol": 1e-12})  # unstick a kink
    relaxed = np.argmax(linear(fit.x), axis=1).astype(np.int64)
    tiers = max((_local_search(g, rc, rd, relaxed), start), key=objective)
    value, (band, compute) = slot.rewards(tiers[None])
    if abs(value[0] * n - objective(tiers)) > 1e-9 * (np.abs(g).sum() + 1.0):
        raise RuntimeError("the decomposition does not price the played tiers as transition does")
    return tiers, (band[0], compute[0]), float(value[0]), min(float(fit.fun), upper(fit.x)) / n


def _local_search(g: np.ndarray, rc: np.ndarray, rd: np.ndarray, z: np.ndarray) -> np.ndarray:
    """The best single-user tier change of ``z`` while one improves ``sum g - S1^2 - S2^2``."""
    n = len(z)
    z = z.copy()
    rows = np.arange(n)
    off, edge = np.array([0.0, 1.0, 1.0]), np.array([0.0, 1.0, 0.0])
    s1, s2 = rc @ (z != DEVICE), rd @ (z == EDGE)
    for _ in range(10 * n):
        d1 = rc[:, None] * (off[None] - (z != DEVICE)[:, None])
        d2 = rd[:, None] * (edge[None] - (z == EDGE)[:, None])
        gain = g - g[rows, z][:, None] - (s1 + d1) ** 2 + s1**2 - (s2 + d2) ** 2 + s2**2
        i, tier = np.unravel_index(int(np.argmax(gain)), gain.shape)
        if gain[i, tier] <= 1e-12 * (np.abs(g).sum() + 1.0):
            break
        s1, s2 = s1 + d1[i, tier], s2 + d2[i, tier]
        z[i] = tier
    return z


def _fallback(env: Any, reason: str) -> Plan:
    name = "cvxpy" if env.n <= MAX_EXACT_USERS else "greedy"  # cvxpy's rounding pass is O(N^2) a slot
    try:
        return _baseline_on_fork(env, name, reason)
    except Exception as exc:  # the last resort: every user on its device (no split to set)
        steps = env.config.episode_length - int(env.state.step[0])
        actions = [dict.fromkeys(env.possible_agents, DEVICE)] * steps
        value, _ = rollout(env, actions)
        return Plan(actions, value, "planner", f"all on the device; {reason}; the {name} baseline failed too "
                    f"({exc!r})", fallback=True)


def _baseline_on_fork(env: Any, name: str, reason: str) -> AllocatedPlan:
    from edgelam.baselines import multi_user_offload  # imported here: that module imports this

    sim = fork(env)
    controller = (multi_user_offload.CvxpyAllocation if name == "cvxpy" else multi_user_offload.Greedy)(sim)
    actions, allocations = [], []
    returns = np.zeros(env.n)
    while sim.agents:
        joint, _ = controller.predict(dict.fromkeys(sim.agents))
        allocations.append(sim._allocation)  # the split the controller set for this step (None: equal shares)
        _, rewards, _, _, _ = sim.step(joint)
        actions.append(joint)
        returns += np.array([rewards[a] for a in sim.possible_agents])
    return AllocatedPlan(actions, float(np.mean(returns)), "planner", f"the {name} baseline on a fork; {reason}",
                         fallback=True, allocations=tuple(allocations))
