"""Hindsight: the best return of one episode when its whole realised exogenous trace is known.

Every env id registers a baseline named ``hindsight`` (``register_hindsight``). At the start of
each episode it reads the env's simulator state (``env.unwrapped``, as the oracles do), replays
that episode's exogenous trace (channel, loads, arrivals, prompts, acceptance draws) through the
env's own dynamics, solves for the whole episode at once and then plays the plan it found.

What the value of a plan means is its :data:`Kind`, which each env's docstring states:

* ``"exact"``: ``value`` is the optimal return of the episode and the plan attains it (the
  realised return equals ``value``); a brute-force test on a toy instance checks the claim;
* ``"bound"``: ``value`` is a certified upper bound on the return of any policy on that episode
  (an LP or Lagrangian relaxation); the plan played is a feasible policy built from the
  relaxation, whose realised return is at most ``value``;
* ``"planner"``: no exact method or bound is tractable; ``value`` is the realised return of the
  strongest perfect-information planner the env has (named in ``solver``). It is a reference,
  not a bound: an online policy may beat it.

The evaluation loop (``edgelam.agents.evaluate``) adds the last plan's ``value``, its kind and
whether a solver failed (``fallback``) to the episode's row as ``hindsight_value``,
``hindsight_exact`` / ``hindsight_bound`` and ``hindsight_fallback``; the normalised score
(return - random) / (hindsight - random) uses ``hindsight_value``.

Solver failure: a solve function that cannot solve (a MILP solver error, a time limit) returns a
plan from a safe fallback (e.g. the per-step oracle's actions, whose return is then its value and
its kind ``"planner"``) with ``fallback=True`` and the reason in ``solver``; it never raises.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import gymnasium as gym
import numpy as np

from edgelam.baselines import register

Kind = Literal["exact", "bound", "planner"]
KINDS: tuple[str, ...] = ("exact", "bound", "planner")


@dataclass(frozen=True)
class Plan:
    """One episode's hindsight solution.

    Attributes:
        actions: the env action of every step, in order (a joint ``{agent: action}`` dict per step
            for a parallel env); the episode may end before they run out (an empty battery).
        value: the return the plan's kind promises (module docstring): the optimum (``exact``), an
            upper bound (``bound``) or the planner's own return (``planner``).
        kind: ``"exact"``, ``"bound"`` or ``"planner"``.
        solver: how it was solved, e.g. ``"per-step enumeration"``, ``"HiGHS MILP"``; with
            ``fallback`` the reason the solver failed.
        fallback: a solver failed and a safe fallback produced the plan.
    """

    actions: Sequence[Any]
    value: float
    kind: Kind
    solver: str
    fallback: bool = False

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"Plan: kind {self.kind!r} is not one of {KINDS}")
        if not np.isfinite(self.value):
            raise ValueError(f"Plan: value {self.value!r} is not finite")
        if len(self.actions) == 0:
            raise ValueError("Plan: no actions")


Solve = Callable[[Any], Plan]


def fork(env: Any) -> Any:
    """A deep copy of ``env.unwrapped`` with its state and generator: stepping it replays the episode.

    The copy draws the same exogenous values as the original from here on (the same generator
    state), through the same dynamics, so a solver can try actions on it without touching the env
    being evaluated.
    """
    return copy.deepcopy(env.unwrapped if hasattr(env, "unwrapped") else env)


class HindsightPolicy:
    """Plays the plan ``solve(env.unwrapped)`` computed at the start of each episode.

    SB3's ``predict`` interface. An episode starts when ``episode_start`` is true (the evaluation
    loop passes it), or on the first call. For a parallel env, called with one agent's observation
    at a time (``edgelam.agents.marl.evaluate_parallel`` calls the agents in ``env.agents`` order),
    it hands out that step's joint action agent by agent; called with the dict of all observations
    it returns the whole joint action.

    Attributes:
        plans: every plan computed so far, one per episode.
    """

    def __init__(self, env: gym.Env | Any, solve: Solve) -> None:
        self.env = env
        self.solve = solve
        self.plans: list[Plan] = []
        self._t = 0
        self._pending: list[Any] = []

    @property
    def last_plan(self) -> Plan | None:
        """The plan of the current (or last) episode; ``None`` before the first."""
        return self.plans[-1] if self.plans else None

    def _start(self) -> None:
        self.plans.append(self.solve(self.env.unwrapped if hasattr(self.env, "unwrapped") else self.env))
        self._t = 0
        self._pending = []

    def _next(self) -> Any:
        plan = self.last_plan
        assert plan is not None
        if self._t >= len(plan.actions):
            raise ValueError(f"hindsight: the plan has {len(plan.actions)} actions and the episode asks for more")
        action = plan.actions[self._t]
        self._t += 1
        return action

    def predict(self, observation, state=None, episode_start=None, deterministic=True):
        del deterministic
        if not self.plans or (episode_start is not None and bool(np.asarray(episode_start).ravel()[0])):
            if isinstance(observation, dict) or not self._pending:
                self._start()
        if isinstance(observation, dict):
            joint = self._next()
            return {a: joint[a] for a in observation}, state
        if isinstance(self.env.unwrapped if hasattr(self.env, "unwrapped") else self.env, gym.Env):
            return self._next(), state
        if not self._pending:  # a parallel env called agent by agent: one joint step per round of calls
            joint = self._next()
            agents = list(getattr(self.env, "agents", joint.keys()))
            self._pending = [joint[a] for a in agents if a in joint]
        return self._pending.pop(0), state


def register_hindsight(env_id: str, solve: Solve) -> None:
    """Register baseline ``hindsight`` of ``env_id``: a :class:`HindsightPolicy` playing ``solve``'s plans."""
    register(env_id, "hindsight", lambda env: HindsightPolicy(env, solve))


def plan_row(plan: Plan | None) -> dict[str, float]:
    """The keys an episode row gets from its hindsight plan (none without one)."""
    if plan is None:
        return {}
    return {
        "hindsight_value": float(plan.value),
        "hindsight_exact": float(plan.kind == "exact"),
        "hindsight_bound": float(plan.kind == "bound"),
        "hindsight_fallback": float(plan.fallback),
    }


def rollout(env: Any, actions: Sequence[Any]) -> tuple[float, int]:
    """Return and length of ``actions`` played on a :func:`fork` of ``env`` from its current state.

    Stops at the first terminated or truncated step. For a parallel env each action is a joint
    dict and the return is the mean over agents of their summed rewards, as the evaluation rows
    count it.
    """
    sim = fork(env)
    total = 0.0
    steps = 0
    for action in actions:
        if isinstance(action, dict):
            _, rewards, terms, truncs, _ = sim.step(action)
            total += float(np.mean(list(rewards.values()))) if rewards else 0.0
            steps += 1
            if not sim.agents or all(terms.get(a, False) or truncs.get(a, False) for a in action):
                break
        else:
            _, reward, terminated, truncated, _ = sim.step(action)
            total += float(reward)
            steps += 1
            if terminated or truncated:
                break
    return total, steps
