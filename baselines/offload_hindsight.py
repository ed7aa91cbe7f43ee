"""Hindsight of edgelam/Offload-v0: label-setting DPs over the edge backlog (and the battery); exact or a bound.

What the episode's exogenous trace is, and what couples the tasks:

* the trace (prompt, uplink rate, background edge work, cloud RTT of every task slot) is drawn in
  blocks of :data:`~edgelam.envs.offload.dynamics.CHUNK` slots by
  :func:`~edgelam.envs.offload.dynamics.draw_exogenous`, whatever the tiers chosen: the number and
  order of the draws never depend on an action. It is read by stepping a :func:`fork` of the env;
* the cloud RTT AR(1) and the fading are part of that trace (no action moves them); the budget
  virtual queue enters neither the reward nor the episode end;
* the edge's unfinished work W couples the tasks: a task sent to the edge adds its own service to
  W before the Lindley map ``max(W + shift, floor)``, so it delays the later edge tasks;
* the battery: the episode terminates when it is empty.

So the state of the episode is (task, W, battery). A DP keeps, after each task, the labels that
no other label dominates, each expanded by the three tiers in one batched call of the env's own
:func:`~edgelam.envs.offload.dynamics.advance` (one row per label and tier, the trace's slot as
the rows' block, so prices, rewards and the episode end are the env's).

Stage 1, the battery relaxation: labels (W, return), no battery. A dominates B when ``W_A <= W_B``
and ``return_A >= return_B``; exact because the value of the rest of the episode does not increase
with W (condition 1: the edge tier's reward falls with W -- its latency and idle energy grow with
it, non-negative weights and idle power checked -- and the Lindley map is non-decreasing in W, so A
can copy B's tiers and keep W_A <= W_B; also checked on the labels of every task). An episode that
runs out of battery after task t earns a t-task prefix of some tier sequence, so the best return of
any prefix, ``U``, bounds every policy's return. When that best prefix, played, earns ``U`` (it ends
the episode there: the horizon, or an empty battery), it is optimal: kind ``exact``.

Stage 2, battery-aware (when stage 1 is not attained: the battery binds): labels (W, battery,
return). A dominates B when also ``battery_A >= battery_B``, which is exact when

2. more battery never hurts, up to a margin: copying B's tiers, A ends no earlier than B, and after
   B ends A can still play the better of device and cloud (rewards that do not depend on W), which
   earns at worst the least partial sum of those rewards from there on (:func:`dominance_margin`);
   so A must beat B by that margin when B's battery may still run out;
3. a battery above the most energy the remaining tasks can draw (each task's most expensive tier,
   the edge at the backlog of always-edge, the largest any policy reaches) cannot end the
   episode, so such batteries count as equal.

Stage 2 keeps at most :data:`MAX_LABELS` labels a task (the best returns); within that and with
its plan realising its value it is ``exact``. Otherwise the kind is ``bound``: ``U`` is the value
and the plan played is the best realised of stage 2's and the per-task oracle's. A plan's realised
return is always checked on a fork; a solver error falls back to the per-task oracle (flagged).
"""

from __future__ import annotations

import time

import numpy as np

from edgelam.baselines.hindsight import Plan, fork, rollout
from edgelam.envs.offload.dynamics import CLOUD, DEVICE, EDGE, Exogenous, State, advance

TIERS = np.array([DEVICE, EDGE, CLOUD], dtype=np.int64)
MAX_LABELS = 2_000  # beyond this many labels after a task the battery-aware DP keeps the best returns
RELAXED_MAX_LABELS = 50_000  # the same for the battery relaxation (whose labels differ in W only: a few)
_TOL = 1e-12  # slack of the monotonicity checks (float rounding)
_NO_DRAWS = np.random.default_rng(0)  # advance draws only when a block is used up, which the 2-slot blocks never are


def _trace(env) -> dict[str, np.ndarray]:
    """The exogenous values of the pending task and every later one (one more than the episode has left).

    Steps a fork with the device tier: no tier changes what is drawn, or in which order
    (:func:`~edgelam.envs.offload.dynamics.draw_exogenous`), so any tiers give this trace.
    """
    sim = fork(env)
    s = sim.state
    left = int(sim.params.consts[-1]) - int(s.step[0])  # tasks to the horizon
    fields = {f: [] for f in Exogenous.__slots__}
    for t in range(left + 1):
        s = sim.state
        for f in Exogenous.__slots__:
            fields[f].append(getattr(s.tasks, f)[0, s.slot])
        if t < left:
            sim.step(DEVICE)
    return {f: np.asarray(v) for f, v in fields.items()}


def _rows(env, trace: dict[str, np.ndarray], t: int, work: np.ndarray, battery: np.ndarray,
          step: int) -> State:
    """A State of one row per (label, tier) at task ``t`` of the trace: labels repeated 3 times."""
    s0 = env.state
    n = 3 * len(work)
    block = Exogenous(*(np.repeat(trace[f][None, t : t + 2], n, axis=0) for f in Exogenous.__slots__))
    return State(
        step=np.full(n, step, dtype=np.int64),
        edge_work_s=np.repeat(work, 3),
        virtual_queue=np.zeros(n),
        battery_j=np.repeat(battery, 3),
        last_rtt_s=np.full(n, s0.last_rtt_s[0]),
        large_scale_gain=np.full(n, s0.large_scale_gain[0]),
        fading=np.full(n, s0.fading[0]),
        rtt_latent=np.full(n, s0.rtt_latent[0]),
        tasks=block,
        slot=0,
    )


def _expand(env, trace, t, work, battery, step):
    """Every label at task ``t`` on every tier: (reward, next work, next battery, ended), each (3 n,)."""
    rows = _rows(env, trace, t, work, battery, step)
    out = advance(env.params, rows, np.tile(TIERS, len(work)), _NO_DRAWS)
    ended = out.terminated | out.truncated
    return out.reward.copy(), rows.edge_work_s, rows.battery_j, ended, out.table[1].copy()


def _bounds(env, trace, left: int, work0: float):
    """(best of device and cloud per task (left,), most energy of the tasks from t on (left + 1,)).

    Three rows run the whole trace: always device, always edge (the largest backlog any policy
    reaches: the Lindley map is non-decreasing in W and the own service adds to it) and always cloud.
    """
    work = np.full(3, work0)
    battery = np.full(3, np.inf)
    safe = np.empty(left)
    most = np.empty(left)
    step = int(env.state.step[0])
    for t in range(left):
        rows = _rows(env, trace, t, work, battery, step + t)
        keep = np.arange(3) * 3 + TIERS  # row i plays tier i
        out = advance(env.params, rows, np.tile(TIERS, 3), _NO_DRAWS)
        reward, energy = out.reward[keep], out.table[1][keep]
        work = rows.edge_work_s[keep]
        safe[t] = max(reward[DEVICE], reward[CLOUD])
        most[t] = energy.max()
    remaining = np.concatenate([np.cumsum(most[::-1])[::-1], [0.0]])
    return safe, remaining


def dominance_margin(safe: np.ndarray) -> np.ndarray:
    """(left,) the return by which a label must beat one that may still run out of battery to prune it.

    ``L[u]``: the least partial sum of ``safe`` (best of device and cloud per task) from task u on
    (0 past the end), what a label that outlives the one it pruned collects at worst after that one
    ends (condition 2). A label created at task t ends, at the earliest, at t + 1; so the margin of
    task t is ``max(0, -min(L[t + 2:]))``.
    """
    left = len(safe)
    low = np.zeros(left + 1)
    for u in range(left - 1, -1, -1):
        low[u] = safe[u] + min(0.0, low[u + 1])
    worst = np.minimum.accumulate(np.minimum(low, 0.0)[::-1])[::-1]  # min over u' >= u, (left + 1,)
    return -np.append(worst[2:], 0.0)[:left]


def _prune(work, battery_eff, value, safe_battery: float, margin: float) -> np.ndarray:
    """Indices of the labels that no other dominates: a label with lower-or-equal W, higher-or-equal battery and a
    higher-or-equal return, higher by ``margin`` where the pruned one's battery is below ``safe_battery``."""
    order = np.lexsort((-battery_eff, work, -value))  # best return first; ties: lower W, more battery
    kept: list[int] = []
    kw = np.empty(len(order))
    kb = np.empty(len(order))
    kv = np.empty(len(order))
    for i in order:
        k = len(kept)
        if k:
            dominates = (kw[:k] <= work[i]) & (kb[:k] >= battery_eff[i])
            if battery_eff[i] < safe_battery:
                dominates &= kv[:k] >= value[i] + margin
            if dominates.any():
                continue
        kw[k], kb[k], kv[k] = work[i], battery_eff[i], value[i]
        kept.append(int(i))
    return np.asarray(kept, dtype=np.int64)


def _monotone(work, reward, next_work, energy) -> bool:
    """Sampled check of condition 1 on this task's labels: with W, the edge reward falls, the edge
    energy and every tier's next W rise."""
    order = np.argsort(work, kind="stable")
    r = reward.reshape(-1, 3)[order]
    w = next_work.reshape(-1, 3)[order]
    e = energy.reshape(-1, 3)[order]
    return bool(np.all(np.diff(r[:, EDGE]) <= _TOL) and np.all(np.diff(w, axis=0) >= -_TOL)
                and np.all(np.diff(e[:, EDGE]) >= -_TOL))


def label_dp(env, battery_aware: bool, max_labels: int | None = None) -> tuple[list[int], float, bool, str]:
    """(tiers, best return, whether the pruning is certified, why not) of the episode from ``env``'s state.

    ``battery_aware``: labels (W, battery, return), the episode ending on an empty battery. Otherwise
    the battery relaxation: labels (W, return) with no battery at all, and the best return of any
    prefix of the episode (an episode that runs out after task t earns a t-task prefix), so the
    value bounds every policy's return, and the plan is that prefix.
    """
    if max_labels is None:
        max_labels = MAX_LABELS if battery_aware else RELAXED_MAX_LABELS
    w = env.config.reward
    s = env.state
    step0 = int(s.step[0])
    left = int(env.params.consts[-1]) - step0
    trace = _trace(env)
    reasons = []
    if min(w.latency_weight, w.energy_weight_per_j, env.tables.dev_idle_w) < 0.0:
        reasons.append("a negative latency / energy weight or idle power")
    if battery_aware:
        safe, remaining = _bounds(env, trace, left, float(s.edge_work_s[0]))
        margin = dominance_margin(safe)
    work = np.array([float(s.edge_work_s[0])])
    battery = np.array([float(s.battery_j[0]) if battery_aware else np.inf])
    value = np.array([0.0])
    # per task, over its expanded (label, tier) rows: the label they came from and the tier; and the rows kept
    parents: list[np.ndarray] = []
    tiers: list[np.ndarray] = []
    kept: list[np.ndarray] = []
    best = (-np.inf, -1, -1)  # (return, task, expanded row of that task) of the best candidate
    capped = False
    for t in range(left):
        reward, next_work, next_battery, ended, energy = _expand(env, trace, t, work, battery, step0 + t)
        if len(work) > 1 and not _monotone(work, reward, next_work, energy):
            reasons.append(f"the edge reward or backlog not monotone in W at task {t}")
        total = np.repeat(value, 3) + reward
        parents.append(np.repeat(np.arange(len(work)), 3))
        tiers.append(np.tile(TIERS, len(work)))
        candidates = np.flatnonzero(ended) if battery_aware else np.arange(len(total))
        if len(candidates):
            i = int(candidates[np.argmax(total[candidates])])
            if total[i] > best[0]:
                best = (float(total[i]), t, i)
        live = np.flatnonzero(~ended)
        if len(live) == 0:
            break
        if battery_aware:
            cap = remaining[t + 1] + 1.0  # any battery above remaining[t + 1] outlasts the episode
            keep = live[_prune(next_work[live], np.minimum(next_battery[live], cap), total[live], cap, margin[t])]
        else:
            keep = live[_prune(next_work[live], np.zeros(len(live)), total[live], -np.inf, 0.0)]
        if len(keep) > max_labels:
            keep = keep[np.argsort(-total[keep], kind="stable")[:max_labels]]
            capped = True
        kept.append(keep)
        work, battery, value = next_work[keep], next_battery[keep], total[keep]
    if capped:
        reasons.append(f"more than {max_labels} labels (the best returns kept)")
    _, t, i = best
    plan = []
    while True:
        plan.append(int(tiers[t][i]))
        p = int(parents[t][i])
        if t == 0:
            break
        t, i = t - 1, int(kept[t - 1][p])
    return plan[::-1], best[0], not reasons, "; ".join(reasons)


def play(env, tiers) -> tuple[float, bool]:
    """(return, whether the episode ended on the last of ``tiers`` and not before) of ``tiers`` on a fork."""
    total, steps = rollout(env, tiers)
    if steps < len(tiers):
        return total, False
    sim = fork(env)
    done = False
    for tier in tiers:
        _, _, terminated, truncated, _ = sim.step(tier)
        done = terminated or truncated
    return total, done


def oracle_plan(env) -> list[int]:
    """The per-task oracle's tiers on a fork of ``env`` (the safe fallback)."""
    from edgelam.baselines.offload import UtilitySearch

    sim = fork(env)
    oracle = UtilitySearch(sim, oracle=True)
    tiers = []
    while True:
        a, _ = oracle.predict(None)
        tiers.append(int(a))
        _, _, terminated, truncated, _ = sim.step(a)
        if terminated or truncated:
            return tiers


def solve(env) -> Plan:
    """The hindsight plan of the episode from ``env``'s current state (kind ``exact`` when certified).

    First the battery relaxation: when its best plan, played, earns its value, nothing beats it
    (``exact``). Otherwise the battery-aware DP (``exact`` when certified and within its labels);
    failing that the relaxation's value still bounds every policy (``bound``), played by the best
    of the DP's plan and the per-task oracle.

    Raises:
        ValueError: with the live backend, whose qualities come from model runs the trace does not hold.
    """
    if getattr(env, "backend", "replay") != "replay":
        raise ValueError("Offload hindsight: the live backend measures quality by running the models inside "
                         "step(), so the episode's qualities are not known ahead; use backend='replay'")
    start = time.perf_counter()
    try:
        tiers, bound, certified, why = label_dp(env, battery_aware=False)
        realised, ended = play(env, tiers)
        if certified and ended and np.isclose(realised, bound, rtol=1e-9, atol=1e-9):
            seconds = time.perf_counter() - start
            return Plan(_actions(tiers), bound, "exact",
                        f"label DP over the edge backlog, battery relaxed and its optimum attained, {seconds:.2f} s")
        tiers_b, value_b, certified_b, why_b = label_dp(env, battery_aware=True)
        realised_b, ended_b = play(env, tiers_b)
    except Exception as err:  # any solver failure falls back to the oracle, never out of predict
        tiers = oracle_plan(env)
        return Plan(_actions(tiers), play(env, tiers)[0], "planner", f"per-task oracle (label DP failed: {err!r})",
                    fallback=True)
    seconds = time.perf_counter() - start
    if certified_b and ended_b and np.isclose(realised_b, value_b, rtol=1e-9, atol=1e-9):
        return Plan(_actions(tiers_b), value_b, "exact",
                    f"label DP over (edge backlog, battery), {seconds:.2f} s")
    oracle = oracle_plan(env)
    rivals = [(play(env, oracle)[0], oracle, "per-task oracle")]
    if ended_b:
        rivals.append((realised_b, tiers_b, "battery-aware label DP"))
    if ended:
        rivals.append((realised, tiers, "relaxed label DP"))
    realised_best, best, name = max(rivals, key=lambda r: r[0])
    if certified and bound >= realised_best:
        return Plan(_actions(best), bound, "bound",
                    f"battery relaxation of the label DP ({name} played; battery-aware DP: {why_b or 'not attained'}), "
                    f"{seconds:.2f} s")
    return Plan(_actions(best), realised_best, "planner",
                f"{name} (not certified: {'; '.join(x for x in (why, why_b) if x)}), {seconds:.2f} s")


def _actions(tiers) -> list[np.int64]:
    return [np.int64(a) for a in tiers]
