"""Hindsight of edgelam/MicroserviceRouting-v0: a certified no-queueing bound, and a rollout planner that plays it.

Kind ``bound``. No exact method is tractable: the FCFS backlogs couple every decision of the
400 with every later one, and the users' cells are drawn from the env's generator at times the
actions set (below), so the optimum is a 400-stage scheduling problem over an action-dependent
trace. What the solver returns instead:

* ``value``: an upper bound on the return of *every* action sequence on the episode
  (:func:`latency_bound`);
* ``actions``: the plan of a perfect-information rollout planner (:func:`rollout_plan`), whose
  realised return is at most ``value`` (the solver string names it and gives its return).

Which draws the actions change. At reset the env draws one block of ``BLOCK`` arrivals
(:class:`~edgelam.envs.microservice_routing.dynamics.Exogenous`: gaps, pipeline uniforms, users,
override uniforms); the routing decisions never touch them, and the arrival clock
(``arrival += gap / rate``) does not read a finish time, so while the block lasts the sequence of
requests, their arrival times and pipelines, hence which (request, stage) every decision routes,
is the same whatever the router does. The users' handovers are not: :func:`~.dynamics.handover_steps`
draws a Poisson count whose intensity is the time since the user's last move, read at the
finish time of its request (action-dependent), so how far the generator advances, and every
later handover and any later block of arrivals, depend on the actions.

The bound (proof sketch). Fix any action sequence. The steps of one request pay, summed,
``-(latency of its stages (+ delivery)) - slo_penalty [e2e > slo_s] - migration_weight J -
infeasible_penalty [projected]``, the last two >= 0 and dropped. In :func:`kernels.route` a stage
routed to s finishes at ``max(free_at[s], start) + service >= start + service`` with
``start >= ready + transfer(loc -> s)``, and its latency is ``finish - ready`` (the first stage:
``finish - arrival`` with ``ready = arrival + upload``); so the request's first j stages take at
least ``c_j``, the cheapest chain ``upload + sum (transfer + service)`` over hosts s_0, ..., s_{j-1}
and any cell of arrival, and its e2e latency at least ``c_full = c_n + min over cells of the
delivery``. Taking the minimum over every cell makes this hold for whatever cells the handover
and override draws give, so it does not matter that the actions move the generator. Hosts:
without migration the placement never changes (an unmasked action is projected to a host); with
migration any server may host, so the minimum is over all of them. A request certain to miss
(``c_full > slo_s``) pays ``slo_penalty`` in the bound. Summing over the requests of the block in
order of arrival until the episode's decisions are used up (the last one cut after the stages it
gets) bounds the return; decisions past the block (a scenario whose episode outlasts ``BLOCK``
arrivals) get 0, a bound on any reward. The tables are the env's own (``Params.upload_s``,
``transfer_s``, ``service_s``, ``deliver_s``); the pipelines of the block are drawn by the env's
:func:`kernels.pick`. A slack of 1e-9 s per decision covers floating-point rounding.

The planner. From a copy of the env's :class:`~.dynamics.State` and generator it commits one
decision at a time with the env's own step (:func:`~.dynamics.advance`, B = 1, the generator the
env will use), so its plan's return is what the env pays, bit for bit. Before each decision it
scores every valid action (the mask's K: hosts, or migrations to non-hosts) by a ``horizon``-step
lookahead: a batch of copies of the state, one per action, takes the action and then ``greedy``'s
routes (earliest finish among the hosts, as the baseline) for the rest of the window, on a copy of
the generator (the batch draws the handovers in its own order, so the lookahead is an estimate;
the committed step is exact). Fortified: the plain greedy trajectory is replayed too, and the
better of the two is played, so the plan never does worse than ``greedy`` on the episode.

Solver failure: an exception in the planner or the bound falls back to the greedy replay (kind
``planner``, ``fallback=True``, the reason in ``solver``); if that fails too, to routing every stage
to server 0 (projected to a host), its return measured on a :func:`~edgelam.baselines.hindsight.fork`.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

import numpy as np

from edgelam.baselines.hindsight import Plan, rollout
from edgelam.envs.microservice_routing import kernels
from edgelam.envs.microservice_routing.dynamics import (
    BLOCK,
    Exogenous,
    Params,
    State,
    action_mask,
    advance,
    finish_times_s,
    pending_microservice,
)

HORIZON = 10  # decisions of lookahead per candidate action
SLACK_S = 1e-9  # per decision, for floating-point rounding of the bound
# the env's step on a batch of rows: (state, actions (B,), generator) -> rewards (B,); writes state in place
Step = Callable[[State, np.ndarray, np.random.Generator], np.ndarray]


def tile(state: State, n: int) -> State:
    """``n`` copies of the one row of ``state`` as a batch of ``n`` rows."""
    a = state.arrivals
    arrivals = Exogenous(*(np.repeat(getattr(a, g), n, axis=0) for g in Exogenous.__slots__))
    return State(*(arrivals if f == "arrivals" else np.repeat(getattr(state, f), n, axis=0) for f in State.__slots__))


def greedy_routes(params: Params, state: State) -> np.ndarray:
    """(B,) int64 the host of each row's pending stage with the earliest finish (``greedy``; lowest index on ties)."""
    finish = finish_times_s(params, state)
    hosts = state.hosts[np.arange(state.num_rows), pending_microservice(params, state)]
    return np.argmin(np.where(hosts, finish, np.inf), axis=1).astype(np.int64)


def routing_step(params: Params) -> Step:
    """The MicroserviceRouting-v0 step: :func:`~.dynamics.advance`'s rewards."""
    return lambda state, actions, rng: advance(params, state, actions, rng).reward


def greedy_replay(params: Params, state: State, rng: np.random.Generator, steps: int, step: Step
                  ) -> tuple[list[int], float]:
    """``greedy``'s actions and return over ``steps`` decisions, on copies of ``state`` and ``rng``."""
    state, rng = state.copy(), copy.deepcopy(rng)
    actions, total = [], 0.0
    for _ in range(steps):
        a = greedy_routes(params, state)
        actions.append(int(a[0]))
        total += float(step(state, a, rng)[0])
    return actions, total


def lookahead_action(params: Params, state: State, rng: np.random.Generator, steps_left: int, step: Step,
                     horizon: int = HORIZON) -> int:
    """The valid action of the pending stage with the best ``horizon``-step lookahead (module docstring).

    ``state`` (one row) and ``rng`` are left as they are: the lookahead steps a batch of copies, one per
    valid action, with a copy of ``rng``; each copy takes its action, then ``greedy``'s routes.
    """
    candidates = np.flatnonzero(action_mask(params, state)[0]).astype(np.int64)
    if len(candidates) == 1:
        return int(candidates[0])
    batch, trial_rng = tile(state, len(candidates)), copy.deepcopy(rng)
    score = step(batch, candidates.copy(), trial_rng).copy()
    for _ in range(min(horizon, steps_left) - 1):
        score += step(batch, greedy_routes(params, batch), trial_rng)
    return int(candidates[int(np.argmax(score))])


def rollout_plan(params: Params, state: State, rng: np.random.Generator, steps: int, step: Step,
                 horizon: int = HORIZON) -> tuple[list[int], float, float]:
    """(actions, return, greedy's return) of the fortified rollout planner (module docstring) over ``steps``.

    ``state`` (one row) and ``rng`` are left as they are; the return is exact (the env's step, B = 1).
    """
    base_actions, base_return = greedy_replay(params, state, rng, steps, step)
    state, rng = state.copy(), copy.deepcopy(rng)
    actions, total = [], 0.0
    one = np.zeros(1, dtype=np.int64)
    for t in range(steps):
        one[0] = lookahead_action(params, state, rng, steps - t, step, horizon)
        actions.append(int(one[0]))
        total += float(step(state, one, rng)[0])
    if base_return > total:
        return base_actions, base_return, base_return
    return actions, total, base_return


def chain_bounds(params: Params, pipeline: int, allowed: np.ndarray) -> tuple[np.ndarray, float]:
    """Lower bounds on a request's latency: (c (n + 1,): its first j stages, c_full: all of them + delivery), s.

    Args:
        params: the scenario's tables.
        pipeline: the request's pipeline.
        allowed: (M, K) bool, the servers a stage of each microservice may run on.
    """
    n = int(params.num_stages[pipeline])
    c = np.zeros(n + 1)
    best = np.zeros(params.num_servers)
    for j in range(n):
        if j == 0:  # the input arrives at any cell: the cheapest transfer into each server
            cost = params.upload_s[pipeline] + params.transfer_s[pipeline, 0].min(axis=0)
        else:
            cost = (best[:, None] + params.transfer_s[pipeline, j]).min(axis=0)
        best = np.where(allowed[params.stage_ms[pipeline, j]], cost + params.service_s[pipeline, j], np.inf)
        c[j + 1] = best.min()
    return c, float((best + params.deliver_s[pipeline].min(axis=1)).min())


def latency_bound(params: Params, state: State, steps: int) -> float:
    """Upper bound on the return of any ``steps`` decisions from ``state`` (a request's first stage pending).

    Raises:
        ValueError: the pending stage is not a request's first (the bound starts at a request's arrival).
    """
    if int(state.stage[0]) != 0:
        raise ValueError("latency_bound: the pending stage must be a request's first")
    cfg = params.config
    allowed = np.ones_like(params.initial_hosts) if cfg.migration.enabled else state.hosts[0]
    slo_s, penalty = cfg.slo_s, cfg.reward.slo_penalty
    mix, used = state.mix[0], int(state.arrivals_used[0])
    pipelines = [int(state.pipeline[0])]
    pipelines += [int(kernels.pick(mix, state.arrivals.pipeline_u[0, i])) for i in range(used, BLOCK)]
    chains: dict[int, tuple[np.ndarray, float]] = {}
    left, total = steps, 0.0
    for p in pipelines:
        if left == 0:
            break
        if p not in chains:
            chains[p] = chain_bounds(params, p, allowed)
        c, full = chains[p]
        n = int(params.num_stages[p])
        if n <= left:
            total -= full + (penalty if full > slo_s * (1.0 + 1e-12) + 1e-12 else 0.0)
            left -= n
        else:
            total -= float(c[left])
            left = 0
    return total + SLACK_S * steps  # decisions past the block: reward <= 0


def _fallback(env: Any, steps: int, step: Step, reason: str, rng: np.random.Generator) -> Plan:
    try:
        actions, value = greedy_replay(env.params, env.state, rng, steps, step)
        return Plan([np.int64(a) for a in actions], value, "planner", f"greedy replay ({reason})", fallback=True)
    except Exception as exc:  # the last resort must not raise
        actions = [np.int64(0)] * steps
        value, _ = rollout(env, actions)
        return Plan(actions, value, "planner", f"server 0 ({reason}; greedy replay failed: {exc!r})", fallback=True)


def solve(env: Any, horizon: int = HORIZON) -> Plan:
    """The hindsight plan of the MicroserviceRouting-v0 episode ``env`` is in, from its pending stage on.

    Args:
        env: the env (or its wrapper), right after ``reset``; any backend (the planner steps the
            tables the env was built with).
        horizon: the planner's lookahead, decisions.
    """
    env = getattr(env, "unwrapped", env)
    params, state, rng = env.params, env.state, env.np_random
    steps = env.config.episode_length - int(state.step[0])
    step = routing_step(params)
    try:
        actions, value, base = rollout_plan(params, state, rng, steps, step, horizon)
    except Exception as exc:
        return _fallback(env, steps, step, f"planner failed: {exc!r}", rng)
    plan = [np.int64(a) for a in actions]
    played = f"rollout planner (horizon {horizon}, fortified by greedy {base:.6g}) returns {value:.6g}"
    try:
        bound = latency_bound(params, state, steps)
    except Exception as exc:
        return Plan(plan, value, "planner", f"{played}; no-queueing bound failed: {exc!r}", fallback=True)
    if value > bound:  # cannot happen if the proof holds; checked rather than assumed
        return Plan(plan, value, "planner", f"{played}; the bound {bound:.6g} is below it", fallback=True)
    return Plan(plan, bound, "bound", f"no-queueing latency bound; plan: {played}")
