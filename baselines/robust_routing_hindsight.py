"""Hindsight of edgelam/RobustRouting-v0: the zero-sum game's return is 0 for every joint plan (exact).

What "best return" means here. The evaluation rows of a parallel env count an episode's
``return`` as the mean over the agents of their returns (:func:`edgelam.agents.marl.evaluate_parallel`).
RobustRouting-v0 is zero-sum: the adversary's reward is ``0.0 - r`` for the router's ``r``
(:func:`~edgelam.envs.robust_routing.dynamics.adversary_reward`), so its episode sum is exactly
minus the router's (IEEE rounding is symmetric under negation) and the mean over the two agents
is exactly 0 whatever both agents do. The best return of an episode, known in hindsight or not, is
therefore 0, and every joint plan attains it: the kind is ``exact`` with ``value = 0``, which the
solver checks on its own plan (its two agents' returns, replayed, must cancel; otherwise it reports
the plan's realised mean as a ``planner`` value with ``fallback=True``). The normalised score
(return - random) / (hindsight - random) is then undefined (0 / 0, NaN), as it should be for a
team return that no policy can change; a router is compared on ``return/router``, and
``compare`` scores it against the router return this plan's planner realises (kind ``planner``,
:func:`edgelam.agents.compare.run._protagonist_view`).

What the plan plays, so that ``return/router`` of its rows is informative: the adversary plays the
centre of its box, the zero action (the mean action of the uniform ``random`` adversary: mix
``0.7 base + 0.3 uniform``, the scenario's arrival rate, the override cell uniform), and the router
the MicroserviceRouting-v0 perfect-information planner against it
(:func:`~edgelam.baselines.microservice_routing_hindsight.rollout_plan`, fortified by ``greedy``),
stepping the env's own functions (``apply_adversary`` then ``advance``, B = 1) on a copy of the
env's state and generator, so the router's planned return is what the env pays. It is a planner's
value for the router, not a bound: the adversary's actions are not exogenous (they are an agent's),
so no router-side bound is claimed.

How it is called. Shared by both agents (``evaluate("hindsight", id)``: the rows carry
``hindsight_value``), :class:`RobustHindsightPolicy` hands out the joint plan, the router's route
and then the adversary's zero action of each step. As the router alone against another adversary
(``{"router": "hindsight", "adversary": ...}``, how ``compare`` and ``evaluate --score`` run a
baseline of an adversarial env), the plan's routes assume the zero adversary, so after the first
route it routes online: each route is the planner's lookahead choice
(:func:`~edgelam.baselines.microservice_routing_hindsight.lookahead_action`) from the env's true
state and generator, the zero adversary its model of the demand to come. It tells the two apart by
the calls: two per env step (both agents) or one. Against the zero adversary the online router
makes the planner's choices (the same lookahead from the same states), so it returns the plan's
router return unless the fortification chose ``greedy``'s routes.

Solver failure (any exception in the planner) falls back to ``greedy`` routes against the zero
adversary, still of value 0 (``fallback=True``, the reason in ``solver``).
"""

from __future__ import annotations

import copy
from typing import Any

import numpy as np

from edgelam.baselines.hindsight import HindsightPolicy, Plan, rollout
from edgelam.baselines.microservice_routing_hindsight import (
    HORIZON,
    Step,
    greedy_replay,
    lookahead_action,
    rollout_plan,
)
from edgelam.envs.microservice_routing.dynamics import State, advance
from edgelam.envs.robust_routing.dynamics import AdversaryParams, apply_adversary
from edgelam.envs.robust_routing.env import ADVERSARY, ROUTER


def zero_adversary_step(params: Any, adversary: AdversaryParams) -> Step:
    """The RobustRouting-v0 step with the adversary's zero action: ``apply_adversary`` then ``advance``'s rewards."""

    def step(state: State, actions: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        apply_adversary(adversary, state, np.zeros((state.num_rows, adversary.action_dim)))
        return advance(params, state, actions, rng).reward

    return step


def solve(env: Any, horizon: int = HORIZON) -> Plan:
    """The hindsight plan of the RobustRouting-v0 episode ``env`` is in (module docstring).

    Args:
        env: the parallel env, right after ``reset``.
        horizon: the router planner's lookahead, decisions.
    """
    env = getattr(env, "unwrapped", env)
    params, state, rng = env.params, env.state, copy.deepcopy(env._rng)  # the generator the env steps with
    steps = env.config.episode_length - int(state.step[0])
    step = zero_adversary_step(params, env.adversary)
    zero = np.zeros(env.adversary.action_dim, dtype=np.float32)
    try:
        routes, router_return, base = rollout_plan(params, state, rng, steps, step, horizon)
        solver = (f"zero-sum: the mean over agents is 0 for every plan; router: rollout planner (horizon {horizon}, "
                  f"fortified by greedy {base:.6g}) returns {router_return:.6g} against the zero adversary")
        fallback = False
    except Exception as exc:
        solver, fallback = f"planner failed: {exc!r}", True
        try:
            routes, _ = greedy_replay(params, state, rng, steps, step)
            solver = f"greedy routes against the zero adversary ({solver})"
        except Exception as exc2:  # the last resort must not raise
            routes = [0] * steps
            solver = f"server 0 against the zero adversary ({solver}; greedy failed: {exc2!r})"
    actions = [{ROUTER: np.int64(a), ADVERSARY: zero.copy()} for a in routes]
    value, _ = rollout(env, actions)  # the mean over agents, as the evaluation rows count it
    if value != 0.0:
        return Plan(actions, value, "planner", f"{solver}; the agents' returns do not cancel", fallback=True)
    return Plan(actions, 0.0, "exact", solver, fallback=fallback)


class RobustHindsightPolicy(HindsightPolicy):
    """``hindsight`` of RobustRouting-v0: the joint plan when both agents call it, an online planning router
    when only the router does (module docstring). SB3's ``predict`` interface."""

    def __init__(self, env: Any, horizon: int = HORIZON) -> None:
        super().__init__(env, lambda e: solve(e, horizon))
        self.horizon = horizon
        self._episode: Any = None  # the env's State of the current episode (reset builds a new one)
        self._last_step = -1
        self._calls = 0  # calls at env step ``_last_step``
        self._shared = False  # both agents call: two calls at step 0

    def predict(self, observation, state=None, episode_start=None, deterministic=True):
        if isinstance(observation, dict):
            return super().predict(observation, state, episode_start, deterministic)
        env = getattr(self.env, "unwrapped", self.env)
        t = int(env.state.step[0])
        if env.state is not self._episode:
            self._episode, self._last_step, self._calls, self._shared = env.state, -1, 0, False
            self._start()
        if t == self._last_step:
            self._calls += 1
            if t == 0:
                self._shared = True
            return np.zeros(env.adversary.action_dim, dtype=np.float32), state
        self._last_step, self._calls = t, 1
        plan = self.last_plan
        assert plan is not None
        if t == 0 or self._shared:
            if t >= len(plan.actions):
                raise ValueError(f"hindsight: the plan has {len(plan.actions)} actions and the episode asks for more")
            return plan.actions[t][ROUTER], state
        step = zero_adversary_step(env.params, env.adversary)
        left = env.config.episode_length - t
        return np.int64(lookahead_action(env.params, env.state, env._rng, left, step, self.horizon)), state
