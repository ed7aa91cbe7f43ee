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
enumeration is intractable and the solver is a ``planner``: in each slot, single-user tier changes
(each one priced by ``transition`` with the square-root split) from the best uniform tier vector,
until none improves; its value is its own realised return.

Solver failure (any exception) falls back to the ``cvxpy`` baseline played on a
:func:`~edgelam.baselines.hindsight.fork` of the env (kind ``planner``, ``fallback=True``, the reason
in ``solver``), and if that fails too, to every user on its device. The live backend works as the
replay one: its model numbers are cached per (task, tier), so the enumeration runs each task's
models at most once per tier.
"""

from __future__ import annotations

import copy
import itertools
from dataclasses import dataclass
from typing import Any

import numpy as np

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
SOLVER = "per-slot enumeration of the 3^N tier vectors with the square-root split, on the replayed trace"
PLANNER = "per-slot single-user improvement with the square-root split, on the replayed trace"


@dataclass(frozen=True)
class AllocatedPlan(Plan):
    """A :class:`Plan` with the split of each step: ``allocations[t]`` = (band_share (N,), compute_share (N,))."""

    allocations: tuple[tuple[np.ndarray, np.ndarray], ...] = ()


class AllocatingHindsightPolicy(HindsightPolicy):
    """:class:`HindsightPolicy` that also sets each step's split (``env.set_allocation``) when it hands out
    the step's joint action."""

    def _next(self) -> Any:
        t = self._t
        joint = super()._next()
        allocations = getattr(self.last_plan, "allocations", ())
        if t < len(allocations):
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

    def rewards(self, tiers: np.ndarray, equal: bool = False) -> tuple[np.ndarray, tuple[np.ndarray, np.ndarray]]:
        """(mean reward over users (M,), the split (band, compute) (M, N)) of the tier vectors ``tiers`` (M, N)
        with the square-root split (``equal``: the env's equal shares)."""
        m = len(tiers)
        band, compute = square_root_split(tiers, self.a, self.s)
        allocation = None if equal else (np.ones(m, dtype=bool), band, compute)
        _, _, info = transition(self.params, _tile(self.state, m), tiers, _tile_exo(self.exo, m), allocation)
        if np.any(info["allocation_projected"]):
            raise RuntimeError("the square-root split gave a user no share")
        return info["global_reward"], (band, compute)


def solve(env: Any) -> Plan:
    """The hindsight plan of the episode ``env`` is in, from its current slot on (module docstring)."""
    env = getattr(env, "unwrapped", env)
    try:
        return _replay(env, exact=env.n <= MAX_EXACT_USERS)
    except Exception as exc:  # any solver failure falls back, flagged (module docstring)
        return _fallback(env, f"{SOLVER if env.n <= MAX_EXACT_USERS else PLANNER} failed ({exc!r})")


def _replay(env: Any, exact: bool) -> AllocatedPlan:
    params, n = env.params, env.n
    state: State = env.state
    rng = copy.deepcopy(env._np_random)  # the env's generator: the same draws from here on
    steps = env.config.episode_length - int(state.step[0])
    every = tier_vectors(n) if exact else None
    actions, allocations = [], []
    returns = np.zeros(n)
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
            tiers, split, priced = _improve(slot, n)
        state, reward, _ = transition(params, state, tiers[None], exo, (np.ones(1, dtype=bool), split[0][None],
                                                                        split[1][None]))
        paid = float(reward[0].mean())
        if abs(paid - priced) > 1e-12 * max(1.0, abs(priced)):
            raise RuntimeError(f"the replayed slot paid {paid}, the search priced {priced}")
        returns += reward[0]
        actions.append(dict(zip(env.possible_agents, tiers.tolist(), strict=True)))
        allocations.append(split)
    kind, solver = ("exact", SOLVER) if exact else ("planner", PLANNER)
    return AllocatedPlan(actions, float(np.mean(returns)), kind, solver, allocations=tuple(allocations))


def _improve(slot: _Slot, n: int) -> tuple[np.ndarray, tuple[np.ndarray, np.ndarray], float]:
    """Best uniform tier vector, then the best single-user change while one improves (the planner)."""
    tiers = np.repeat(np.arange(3, dtype=np.int64)[:, None], n, axis=1)
    value, _ = slot.rewards(tiers)
    current = tiers[int(np.argmax(value))]
    best = float(value.max())
    while True:
        moves = np.repeat(current[None], 3 * n, axis=0)
        moves[np.arange(3 * n), np.repeat(np.arange(n), 3)] = np.tile(np.arange(3), n)
        value, _ = slot.rewards(moves)
        k = int(np.argmax(value))
        if value[k] <= best + 1e-12 * abs(best):
            break
        current, best = moves[k], float(value[k])
    value, (band, compute) = slot.rewards(current[None])
    return current, (band[0], compute[0]), float(value[0])


def _fallback(env: Any, reason: str) -> Plan:
    try:
        return _cvxpy_on_fork(env, reason)
    except Exception as exc:  # the last resort: every user on its device (no split to set)
        steps = env.config.episode_length - int(env.state.step[0])
        actions = [dict.fromkeys(env.possible_agents, DEVICE)] * steps
        value, _ = rollout(env, actions)
        return Plan(actions, value, "planner", f"all on the device; {reason}; the cvxpy baseline failed too "
                    f"({exc!r})", fallback=True)


def _cvxpy_on_fork(env: Any, reason: str) -> AllocatedPlan:
    from edgelam.baselines.multi_user_offload import CvxpyAllocation  # imported here: that module imports this

    sim = fork(env)
    controller = CvxpyAllocation(sim)
    actions, allocations = [], []
    returns = np.zeros(env.n)
    while sim.agents:
        joint, _ = controller.predict(dict.fromkeys(sim.agents))
        allocations.append(sim._allocation)  # the split the controller set for this step
        _, rewards, _, _, _ = sim.step(joint)
        actions.append(joint)
        returns += np.array([rewards[a] for a in sim.possible_agents])
    return AllocatedPlan(actions, float(np.mean(returns)), "planner", f"the cvxpy baseline on a fork; {reason}",
                         fallback=True, allocations=tuple(allocations))
