"""Hindsight of edgelam/SpecDecode-v0: a backward DP over (round, request, position) on the known trace.

What the episode's exogenous trace is, and what couples the rounds:

* per round, the link rate and its ergodic rate, the edge and device loads and the
  ``gamma_max`` acceptance uniforms come from the block of rounds drawn ahead
  (:func:`~edgelam.envs.spec_decode.dynamics.draw_block`): always ``gamma_max`` uniforms a round,
  whatever gamma is played, so round r's draws are a fixed function of r; drafted token i of
  round r is accepted iff ``uniform[r, i] < beta[variant, prompt, pos + i]``;
* the prompts of the requests are drawn one after the other as requests start
  (:func:`~edgelam.envs.spec_decode.dynamics.new_requests`), so request j's prompt is the j-th
  draw, as long as no block of rounds is drawn between two of them (checked: the episode's rounds
  fit in the block that is current when it starts);
* the link moves by the round index only, unless ``drift_mps`` or a ``blockage`` is set: both
  follow the episode clock (the sum of the latencies chosen), which makes the link depend on
  the actions (then the kind is ``planner``);
* the acceptance EMA and the energy virtual queue enter neither the reward nor the episode end;
  the battery does (an empty battery terminates the episode), see below.

So, with the trace fixed, the episode is a deterministic walk over (round, requests done,
position in the request): the DP's transitions are the env's own compiled round
(:func:`~edgelam.envs.spec_decode.dynamics.simulate`, ``ROUND_STEP``), run once per round on one
row per (request, position, action) with that round's recorded state, so acceptance, prices,
rewards, request and episode ends are the env's. The battery is left out of the DP state (its
rows get an unlimited battery), which is exact when no policy gains by emptying it: every reward
is <= 0, and every round of any policy is one of the DP's rows, so a policy that empties a
battery of B0 J earns at most ``-kappa B0`` with kappa the least reward lost per joule over the
rows; the DP's optimum is certified when it is >= that and its replay does not run out.

Under drift, blockage or a block of rounds drawn within the episode the kind is ``planner``: the
same DP re-solved on the trace its own plan realises (a few times), against the per-round
oracle, the best realised return kept. A DP plan whose realised episode outlasts the trace it
was solved on is completed by the per-round oracle's rounds. A solver error falls back to the per-round oracle.
"""

from __future__ import annotations

import copy
import time

import numpy as np

from edgelam.baselines.hindsight import Plan, fork, rollout
from edgelam.envs.spec_decode import dynamics as dyn

PLANNER_PASSES = 3  # DP re-solves on the realised trace when the link depends on the actions
_ROW0 = np.zeros(1, dtype=np.int64)


def light_fork(env):
    """:func:`fork` that shares the scenario's read-only tables with ``env`` (deep-copying the acceptance
    lists of every prompt is most of a fork's time); stepping it leaves ``env`` as it was."""
    shared = (env.params, env.config, env.tables, env.beta, env._beta_rows, env._prompt_id_list)
    return copy.deepcopy(env, memo={id(x): x for x in shared})


def actions_of(gamma_max: int, num_variants: int) -> np.ndarray:
    """(A, 2) the distinct actions (gamma, variant): gamma 0 once (its variant is unused), then every pair."""
    pairs = [(0, 0)] + [(g, v) for v in range(num_variants) for g in range(1, gamma_max + 1)]
    return np.asarray(pairs, dtype=np.int64)


def exogenous_coupled(env) -> list[str]:
    """Why the rounds' draws or link could depend on the actions (empty: they cannot)."""
    cfg, s = env.config, env.state
    why = []
    if cfg.drift_mps != 0.0:
        why.append("drift_mps moves the link by the episode clock")
    if cfg.blockage.loss_db > 0.0:
        why.append("the blockage follows the episode clock")
    rounds_left = env.params.episode_length - int(s.count[0, dyn.ROUND])
    if s.block.values.shape[0] - int(s.block.used) + 1 < rounds_left:
        why.append("a block of rounds is drawn within the episode, after a number of prompts the actions set")
    return why


def record_trace(env, actions=()) -> tuple[np.ndarray, list[int]]:
    """(State.real rows before each round (rounds, width), prompts of the requests from the current one on).

    A fork plays ``actions`` and then gamma = 0 (one token a round: every round any policy can
    reach) until the episode's last round or last request, ignoring an empty battery (the DP
    prices the battery apart). Prompts: those the fork starts, then further draws of
    :func:`~edgelam.envs.spec_decode.dynamics.new_requests` on its generator.
    """
    sim = light_fork(env)
    s = sim.state
    cfg = sim.config
    rounds_left = sim.params.episode_length - int(s.count[0, dyn.ROUND])
    prompts = [int(s.count[0, dyn.PROMPT])]
    rows = []
    plain = np.zeros(2, dtype=np.int64)
    for i in range(rounds_left):
        rows.append(sim.state.real[0].copy())
        done_before = int(sim.state.count[0, dyn.REQUESTS_DONE])
        sim.step(actions[i] if i < len(actions) else plain)
        if int(sim.state.count[0, dyn.REQUESTS_DONE]) >= cfg.requests_per_episode:
            break
        if int(sim.state.count[0, dyn.REQUESTS_DONE]) > done_before:
            prompts.append(int(sim.state.count[0, dyn.PROMPT]))
    requests_left = cfg.requests_per_episode - int(env.state.count[0, dyn.REQUESTS_DONE])
    while len(prompts) < requests_left:
        dyn.new_requests(sim.params, sim.state, _ROW0, sim.np_random)
        prompts.append(int(sim.state.count[0, dyn.PROMPT]))
    return np.asarray(rows), prompts


def round_tables(env, rows: np.ndarray, prompts: list[int]):
    """The env's round on every (round, request, position, action): reward, next request, next position, ended,
    and the energy of each, arrays (rounds, requests left, N, A); requests relative to the current one."""
    p = env.params
    cfg = env.config
    acts = actions_of(cfg.gamma_max, p.num_variants)
    n, a = cfg.tokens_per_request, len(acts)
    j0 = int(env.state.count[0, dyn.REQUESTS_DONE])
    r0 = int(env.state.count[0, dyn.ROUND])
    jj, pp, aa = np.meshgrid(np.arange(len(prompts)), np.arange(n), np.arange(a), indexing="ij")
    jj, pp, aa = jj.ravel(), pp.ravel(), aa.ravel()
    b = len(jj)
    control = np.zeros((4, b), dtype=np.int64)
    control[dyn.GAMMA], control[dyn.VARIANT], control[dyn.LIVE_ACCEPTED] = acts[aa, 0], acts[aa, 1], -1
    base_count = np.zeros((b, 6), dtype=np.int64)
    base_count[:, dyn.REQUESTS_DONE] = j0 + jj
    base_count[:, dyn.PROMPT] = np.asarray(prompts)[jj]
    base_count[:, dyn.POS] = pp
    shape = (len(rows), len(prompts), n, a)
    reward, energy = np.empty(shape), np.empty(shape)
    next_j, next_pos = np.empty(shape, dtype=np.int64), np.empty(shape, dtype=np.int64)
    ended = np.empty(shape, dtype=bool)
    result = dyn.tables_for(b, p.num_variants)
    for i, row in enumerate(rows):
        real = np.repeat(row[None], b, axis=0)
        real[:, dyn.BATTERY] = np.inf  # the battery is priced apart (module docstring)
        count = base_count.copy()
        count[:, dyn.ROUND] = r0 + i
        dyn.simulate(dyn.ROUND_STEP, 0, p.consts, p.beta, real, count, control, env.state.block.values,
                     result.out, result.counts, result.obs)
        reward[i] = result.out[:, dyn.REWARD].reshape(shape[1:])
        energy[i] = result.out[:, dyn.ENERGY].reshape(shape[1:])
        next_j[i] = (count[:, dyn.REQUESTS_DONE] - j0).reshape(shape[1:])
        next_pos[i] = count[:, dyn.POS].reshape(shape[1:])
        ended[i] = ((result.counts[:, dyn.TERMINATED] | result.counts[:, dyn.TRUNCATED]) != 0).reshape(shape[1:])
    return acts, reward, next_j, next_pos, ended, energy


def backward_dp(reward, next_j, next_pos, ended, pos0: int) -> tuple[list[int], float]:
    """(action indices from (request 0, ``pos0``) on, optimal return) of the tables of :func:`round_tables`."""
    rounds, requests, n, _ = reward.shape
    value = np.zeros((requests, n))
    best = np.empty((rounds, requests, n), dtype=np.int64)
    values = [value]
    for i in range(rounds - 1, -1, -1):
        future = np.where(ended[i], 0.0, value[np.minimum(next_j[i], requests - 1), np.minimum(next_pos[i], n - 1)])
        q = reward[i] + future
        best[i] = np.argmax(q, axis=-1)
        value = np.take_along_axis(q, best[i][..., None], axis=-1)[..., 0]
        values.append(value)
    plan = []
    j, pos = 0, pos0
    for i in range(rounds):
        a = int(best[i, j, pos])
        plan.append(a)
        if ended[i, j, pos, a]:
            break
        j, pos = int(next_j[i, j, pos, a]), int(next_pos[i, j, pos, a])
    return plan, float(values[-1][0, pos0])


def solve_trace(env, rows, prompts):
    """(actions, DP value, kappa) on the trace ``rows`` / ``prompts``; kappa: the least reward lost per joule."""
    acts, reward, next_j, next_pos, ended, energy = round_tables(env, rows, prompts)
    plan, value = backward_dp(reward, next_j, next_pos, ended, int(env.state.count[0, dyn.POS]))
    with np.errstate(divide="ignore", invalid="ignore"):
        per_joule = np.where(energy > 0.0, -reward / energy, np.inf)
    kappa = float(per_joule.min()) if bool((reward <= 0.0).all()) else -np.inf
    return [acts[a].copy() for a in plan], value, kappa


def oracle_actions(env) -> list[np.ndarray]:
    """The per-round oracle's actions on a fork of ``env`` (the safe fallback and the planner's rival)."""
    return completed(env, [])


def completed(env, actions) -> list[np.ndarray]:
    """``actions`` played on a fork of ``env``, then the per-round oracle's until the episode ends.

    A DP plan covers the rounds of the trace it was solved on; where the realised episode is
    longer (the link follows the episode clock, so other actions give other rounds) the plan
    would run out before the episode ends. Cut at the step that ends it, if that comes earlier.
    """
    from edgelam.baselines.spec_decode import _PerRound

    sim = fork(env)
    oracle = _PerRound(sim, "oracle")
    out: list[np.ndarray] = []
    while True:
        a = actions[len(out)] if len(out) < len(actions) else oracle.predict(None)[0]
        out.append(a)
        _, _, terminated, truncated, _ = sim.step(a)
        if terminated or truncated:
            return out


def _planner(env, why: str, start: float) -> Plan:
    """The DP re-solved on the trace its own plan realises, against the oracle; the best realised return."""
    oracle = oracle_actions(env)
    candidates = [(rollout(env, oracle)[0], oracle, "per-round oracle")]
    actions: list[np.ndarray] = []
    for k in range(PLANNER_PASSES):
        rows, prompts = record_trace(env, actions)
        actions, _, _ = solve_trace(env, rows, prompts)
        actions = completed(env, actions)  # the oracle's rounds where the realised episode outlasts the trace
        candidates.append((rollout(env, actions)[0], actions, f"DP pass {k + 1}"))
    realised, best, name = max(candidates, key=lambda c: c[0])
    seconds = time.perf_counter() - start
    return Plan(best, realised, "planner", f"DP on the realised trace ({name} best; {why}), {seconds:.2f} s")


def solve(env) -> Plan:
    """The hindsight plan of the episode from ``env``'s current state (kind ``exact`` when certified).

    Raises:
        ValueError: with the live backend, whose acceptances come from model runs the trace does not hold.
    """
    if getattr(env, "backend", "replay") != "replay" and env.config.iid_alpha is None:
        raise ValueError("SpecDecode hindsight: the live backend decides acceptance by running the draft and the "
                         "target inside step(), so the episode's acceptances are not known ahead; use "
                         "backend='replay'")
    start = time.perf_counter()
    try:
        why = exogenous_coupled(env)
        if why:
            return _planner(env, "; ".join(why), start)
        rows, prompts = record_trace(env)
        actions, value, kappa = solve_trace(env, rows, prompts)
        realised, steps = rollout(env, actions)
    except Exception as err:  # any solver failure falls back to the oracle, never out of predict
        actions = oracle_actions(env)
        return Plan(actions, rollout(env, actions)[0], "planner", f"per-round oracle (DP failed: {err!r})",
                    fallback=True)
    seconds = time.perf_counter() - start
    battery = float(env.state.real[0, dyn.BATTERY])
    if value < -kappa * battery:  # some policy might gain by emptying the battery: the best of two, realised
        oracle = oracle_actions(env)
        rival = rollout(env, oracle)[0]
        best, name = (actions, "DP") if realised >= rival else (oracle, "per-round oracle")
        return Plan(best, max(realised, rival), "planner",
                    f"{name} best; the battery-free DP's optimum {value:.6g} is below {-kappa * battery:.6g}, "
                    f"the most a policy that empties the battery can earn, {seconds:.2f} s")
    if steps != len(actions) or not np.isclose(realised, value, rtol=1e-9, atol=1e-12):
        actions = completed(env, actions)
        return Plan(actions, rollout(env, actions)[0], "planner",
                    f"DP whose replay returned {realised!r}, not its value {value!r} (the per-round oracle after "
                    "its last round)", fallback=True)
    return Plan(actions, value, "exact", f"backward DP over (round, request, position), {seconds:.2f} s")
