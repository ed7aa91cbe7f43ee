"""Hindsight of edgelam/MicroserviceRouting-v0: a certified latency bound, and a rollout planner that plays it.

Kind ``bound``. No exact method is tractable: the FCFS backlogs couple every decision of the
400 with every later one, and the users' cells are drawn from the env's generator at times the
actions set (below), so the optimum is a 400-stage scheduling problem over an action-dependent
trace. What the solver returns instead:

* ``value``: an upper bound on the return of *every* action sequence on the episode
  (:func:`latency_bound`): each request's cheapest chain of upload, transfers, compute and delivery
  with no queueing, plus the waits the requests' backbone stages certainly add to each other;
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
routed to s is processed over ``[S, S + service]`` with ``S = max(free_at[s], start)`` and
``start >= ready + transfer(loc -> s)``, and its latency is ``finish - ready`` (the first stage:
``finish - arrival`` with ``ready = arrival + upload``); so the request's first j stages take at
least ``c_j``, the cheapest chain ``upload + sum (transfer + service)`` over hosts s_0, ..., s_{j-1}
and any cell of arrival (:func:`chain_bounds`). Taking the minimum over every cell makes this hold
for whatever cells the handover and override draws give, so it does not matter that the actions
move the generator. Hosts: without migration the placement never changes (an unmasked action is
projected to a host); with migration any server may host, so the minimum is over all of them.

Queueing, at one pivot stage per request (the stage with the largest least service time: the
backbone; :func:`pivot_bounds`). Split the cheapest chain there: if request r's pivot runs on s,
its e2e latency is at least ``before_r(s) + W_r + service_r(s) + after_r(s)``, where ``before_r(s)``
is the cheapest time from arrival until the pivot's input is at s, ``after_r(s)`` the cheapest time
from the pivot's end at s to delivery, and ``W_r = S_r - rho_r(s) >= 0`` the pivot's start beyond
its earliest possible start ``rho_r(s) = arrival_r + before_r(s)``. The processing intervals on one
server are disjoint (each stage starts after ``free_at``, the previous one's finish), so the
intervals of the pivots processed on s before k lie inside ``(-inf, S_k]`` and
``W_k >= sum over those j of |[S_j, S_j + service_j] cap [rho_k, inf)| >= sum_j
max(0, min(service_j, rho_j + service_j - rho_k))`` (using ``S_j >= rho_j``); the least of this over
the two orders of a pair is its delay ``d_jk(s)`` (:func:`pair_delays`), and the total wait of the
pivots on s is at least the sum of ``d_jk(s)`` over the pairs sharing s (other stages on s only add
to it). So the latency of the requests is at least the optimum of ``min sum_r cost_r(s_r) +
sum_{pairs on one server} d_jk(s)`` over the pivots' servers, a MILP (x_rs binary, y_jks >=
x_js + x_ks - 1) whose HiGHS dual bound, less a tolerance, is a lower bound even when HiGHS stops at
its time limit (:func:`pivot_assignment_bound`; without HiGHS, ``sum_r min_s cost_r(s)``).

Which requests: the arrival times (``arrival += gap / rate``, never a finish time) and pipelines
of the block drawn so far are the same whatever the router does, so :func:`request_trace` reads
them off a replay of ``greedy`` on copies of the env's state and generator (the env's own step).
A request certain to miss (its cheapest e2e ``c_full > slo_s``) pays ``slo_penalty`` in the bound;
the request the episode's end cuts pays ``c_j`` for the j stages it gets (no pivot term); decisions
past the block (a scenario whose episode outlasts ``BLOCK`` arrivals) get 0, a bound on any
reward. The tables are the env's own (``Params.upload_s``, ``transfer_s``, ``service_s``,
``deliver_s``). A slack of 1e-9 s per decision covers floating-point rounding.

The planner. From a copy of the env's :class:`~.dynamics.State` and generator it commits one
decision at a time with the env's own step (:func:`~.dynamics.advance`, B = 1, the generator the
env will use), so its plan's return is what the env pays, bit for bit. Before each decision it
scores every valid action (the mask's K: hosts, or migrations to non-hosts) by a ``horizon``-step
lookahead: a batch of copies of the state, one per action, takes the action and then ``greedy``'s
routes (earliest finish among the hosts, as the baseline) for the rest of the window, on a copy of
the generator (the batch draws the handovers in its own order, so the lookahead is an estimate;
the committed step is exact). Fortified: the plain greedy trajectory is replayed too, and the
better of the two is played, so the plan never does worse than ``greedy`` on the episode.

Solver failure: HiGHS failing or stopping early only loosens the bound (its dual bound, or no pair
term); an exception in the planner or the bound falls back to the greedy replay (kind
``planner``, ``fallback=True``, the reason in ``solver``); if that fails too, to routing every stage
to server 0 (projected to a host), its return measured on a :func:`~edgelam.baselines.hindsight.fork`.
"""

from __future__ import annotations

import copy
import os
import sys
from collections.abc import Callable
from typing import Any

import numpy as np

from edgelam.baselines.hindsight import Plan, rollout
from edgelam.envs.microservice_routing.dynamics import (
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


def pivot_bounds(params: Params, pipeline: int, allowed: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A request's chain split at its pivot stage (the one with the largest least service time, the backbone):
    (before (K,): the cheapest time from arrival until the pivot's input is at server s, service (K,): the pivot
    on s, after (K,): the cheapest time from the pivot's end at s to delivery), s; inf where s may not host it."""
    n, ms = int(params.num_stages[pipeline]), params.stage_ms[pipeline]
    pivot = int(np.argmax([params.service_s[pipeline, j][allowed[ms[j]]].min() for j in range(n)]))
    before = params.upload_s[pipeline] + params.transfer_s[pipeline, 0].min(axis=0)
    for j in range(pivot):
        done = np.where(allowed[ms[j]], before + params.service_s[pipeline, j], np.inf)
        before = (done[:, None] + params.transfer_s[pipeline, j + 1]).min(axis=0)
    after = params.deliver_s[pipeline].min(axis=1)
    for j in range(n - 1, pivot, -1):
        then = np.where(allowed[ms[j]], params.service_s[pipeline, j] + after, np.inf)
        after = (params.transfer_s[pipeline, j] + then[None, :]).min(axis=1)
    ok = allowed[ms[pivot]]
    return np.where(ok, before, np.inf), np.where(ok, params.service_s[pipeline, pivot], np.inf), after


def request_trace(params: Params, state: State, rng: np.random.Generator, steps: int,
                  routes: Callable[[Params, State], np.ndarray] = greedy_routes) -> list[tuple[int, float, int]]:
    """(pipeline, arrival time s, decisions in the episode) of each request of the next ``steps`` decisions whose
    arrival comes from the block drawn so far, by replaying ``routes`` on copies of ``state`` and ``rng``.

    The same for any ``routes`` (module docstring; a test checks it): the requests stop where a new block
    of arrivals is drawn, whose place in the generator the actions moved.
    """
    state, rng = state.copy(), copy.deepcopy(rng)
    step = routing_step(params)
    out: list[tuple[int, float, int]] = []
    t, used = 0, 0
    while t < steps:
        if int(state.stage[0]) != 0:
            raise ValueError("request_trace: the pending stage must be a request's first")
        if int(state.arrivals_used[0]) < used:
            break  # a new block: arrivals the actions may have changed
        used = int(state.arrivals_used[0])
        pipeline, n = int(state.pipeline[0]), int(params.num_stages[state.pipeline[0]])
        out.append((pipeline, float(state.arrival_s[0]), min(n, steps - t)))
        for _ in range(min(n, steps - t)):
            step(state, routes(params, state), rng)
            t += 1
    return out


def pair_delays(release: np.ndarray, service: np.ndarray) -> list[tuple[int, int, int, float]]:
    """(j, k, s, d): d > 0, the least wait two pivots j < k add to each other's start if both run on server s.

    ``release`` and ``service`` (R, K): the earliest start and the service of each request's pivot on each
    server (inf where it may not run). With j before k on s: k waits at least min(service_j, release_j +
    service_j - release_k) behind j; d is the least over the two orders.
    """
    out = []
    finite = np.isfinite(service)
    for s in range(release.shape[1]):
        on = np.flatnonzero(finite[:, s])
        r, p = release[on, s], service[on, s]
        for a in range(len(on)):
            for b in range(a + 1, len(on)):
                d = min(max(0.0, min(p[a], r[a] + p[a] - r[b])), max(0.0, min(p[b], r[b] + p[b] - r[a])))
                if d > 0.0:
                    out.append((int(on[a]), int(on[b]), s, float(d)))
    return out


def _quiet_highs():
    """A ``highspy.Highs`` with its output off. HiGHS 1.16 prints its banner from C++ when the object is
    built, before any option can be set, so the process's stdout is pointed at /dev/null meanwhile."""
    import highspy

    sys.stdout.flush()
    saved = os.dup(1)
    try:
        with open(os.devnull, "w") as null:
            os.dup2(null.fileno(), 1)
            h = highspy.Highs()
            h.setOptionValue("output_flag", False)
    finally:
        os.dup2(saved, 1)
        os.close(saved)
    return h


def pivot_assignment_bound(cost: np.ndarray, pairs: list[tuple[int, int, int, float]], time_limit_s: float
                           ) -> tuple[float, str]:
    """A lower bound on min over pivot servers of sum_r cost[r, s_r] + sum of the pair delays of pivots sharing a
    server, and how it was found: HiGHS's dual bound of the MILP (x binary, y >= x_js + x_ks - 1), less a
    tolerance; sum_r min_s cost[r, s] if HiGHS fails (the larger of the two in any case)."""
    floor = float(np.min(cost, axis=1).sum())
    try:
        h = _quiet_highs()
        h.setOptionValue("time_limit", float(time_limit_s))
        h.setOptionValue("threads", 1)
        x = {}
        for r, s in zip(*np.nonzero(np.isfinite(cost)), strict=True):
            x[int(r), int(s)] = h.addBinary(obj=float(cost[r, s]))
        for r in range(cost.shape[0]):
            h.addConstr(sum(x[r, int(s)] for s in np.flatnonzero(np.isfinite(cost[r]))) == 1)
        for j, k, s, d in pairs:
            h.addConstr(h.addVariable(lb=0.0, obj=d) - x[j, s] - x[k, s] >= -1.0)
        h.run()
        dual = float(h.getInfo().mip_dual_bound)
        status = h.modelStatusToString(h.getModelStatus())
    except Exception as exc:  # the pairs only tighten the bound: without them it still holds
        return floor, f"HiGHS failed ({exc!r})"
    if not np.isfinite(dual):
        return floor, f"HiGHS gave no dual bound ({status})"
    dual -= 1e-6 * (1.0 + abs(dual))  # HiGHS's feasibility tolerances
    return max(dual, floor), f"HiGHS {status}"


def latency_bound(params: Params, state: State, rng: np.random.Generator, steps: int,
                  time_limit_s: float = 2.0) -> tuple[float, str]:
    """(upper bound on the return of any ``steps`` decisions from ``state``, how the pivot MILP was solved).

    ``state`` holds a request's first stage (right after reset); ``state`` and ``rng`` are left as they are.
    """
    cfg = params.config
    allowed = np.ones_like(params.initial_hosts) if cfg.migration.enabled else state.hosts[0]
    slo_s, penalty = cfg.slo_s, cfg.reward.slo_penalty
    chains: dict[int, tuple[np.ndarray, float]] = {}
    pivots: dict[int, tuple[np.ndarray, np.ndarray, np.ndarray]] = {}
    total, cost, release, service = 0.0, [], [], []
    for pipeline, arrival_s, n in request_trace(params, state, rng, steps):
        if pipeline not in chains:
            chains[pipeline] = chain_bounds(params, pipeline, allowed)
            pivots[pipeline] = pivot_bounds(params, pipeline, allowed)
        c, full = chains[pipeline]
        if n < len(c) - 1:  # cut by the episode's end
            total -= float(c[n])
            continue
        total -= penalty if full > slo_s * (1.0 + 1e-12) + 1e-12 else 0.0
        before, pivot_s, after = pivots[pipeline]
        cost.append(before + pivot_s + after)
        release.append(arrival_s + before)
        service.append(pivot_s)
    note = "no requests"
    if cost:
        latency, note = pivot_assignment_bound(np.array(cost), pair_delays(np.array(release), np.array(service)),
                                               time_limit_s)
        total -= latency
    return total + SLACK_S * steps, note  # decisions past the block: reward <= 0


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
        bound, how = latency_bound(params, state, rng, steps)
    except Exception as exc:
        return Plan(plan, value, "planner", f"{played}; latency bound failed: {exc!r}", fallback=True)
    if value > bound:  # cannot happen if the proof holds; checked rather than assumed
        return Plan(plan, value, "planner", f"{played}; the bound {bound:.6g} is below it", fallback=True)
    return Plan(plan, bound, "bound", f"cheapest-chain + pivot-pair latency bound ({how}); plan: {played}")
