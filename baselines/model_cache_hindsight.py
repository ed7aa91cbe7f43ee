"""Hindsight of edgelam/EdgeModelCache-v0: backward DP over (request, cache), exact.

The episode's exogenous trace -- each request's task, window and privacy, the backhaul rate and the WAN
RTT of its slot -- is drawn in blocks of :data:`~edgelam.envs.model_cache.dynamics.CHUNK` requests by
:func:`~edgelam.envs.model_cache.dynamics.draw_exogenous` whatever the actions (the popularity drift
is part of it), and is read by stepping a :func:`fork` of the env. Given the trace, a step's reward
and the next state depend only on the cache (a bitmask over the M models) and the action: the virtual
queue, the popularity average and the last RTT enter the observation only. So the value of the rest of
the episode is a function V_t(cache) over at most 2^M <= 256 caches, and

    V_T = 0,   V_t(c) = max_a [ r_t(c, a) + V_{t+1}(c'(c, a)) ]

over the (M + 1)^2 actions, each priced by the env's own compiled
:func:`~edgelam.envs.model_cache.dynamics.serve` on the trace's slot, is the optimal return from the
pending cache: kind ``exact``. The plan follows the argmax forward; its realised return, checked on a
fork, equals the value up to the order of the float sums. A solver error falls back to forwarding
every request (kind ``planner``, flagged).
"""

from __future__ import annotations

import numpy as np

from edgelam.baselines.hindsight import Plan, fork, rollout
from edgelam.envs.core.jit import njit
from edgelam.envs.model_cache.dynamics import cheapest_download, serve

_TOL = 1e-6  # |realised - value| allowed (float sums in another order)


def trace(env) -> dict[str, np.ndarray]:
    """The window, privacy, backhaul rate and WAN RTT of the pending request and every later one of the
    episode, read by stepping a fork (no action changes what is drawn)."""
    sim = fork(env)
    left = sim.steps_left
    m = sim.num_models
    forward = m * (m + 1) + m
    out = {k: [] for k in ("window", "private", "rate_bps", "rtt_s")}
    for t in range(left):
        for k in out:
            out[k].append(sim.state.pending(k)[0])
        if t + 1 < left:
            sim.step(forward)
    return {k: np.asarray(v) for k, v in out.items()}


@njit
def dp(consts, cap, footprint, missing, compute_s, energy_j, top1, window, private, rate, rtt, online, relax, mask0):
    """Best return and plan of one edge over a known trace (module docstring), a compiled backward DP.

    ``online`` (T,) bool: an offline slot forwards with no op from an empty cache (its toolbox lost;
    CooperativeModelCache-v0's churn, all True for a lone edge). ``relax``: every download priced at the
    cheaper of the backhaul and the metro link (:func:`~edgelam.envs.model_cache.dynamics.cheapest_download`),
    the relaxation of the cooperative bound; False for the lone edge, which prices its own backhaul.
    """
    m = compute_s.shape[0]
    n_states, n_actions, steps = 1 << m, (m + 1) * (m + 1), window.shape[0]
    forward = m * (m + 1) + m
    everything = n_states - 1
    value = np.full((steps + 1, n_states), -np.inf)
    best = np.zeros((steps, n_states), dtype=np.int64)
    for c in range(n_states):
        if footprint[c] <= cap or c == mask0:
            value[steps, c] = 0.0
    for t in range(steps - 1, -1, -1):
        k = cheapest_download(consts, rate[t]) if relax else consts
        neighbour = everything if relax else 0
        if not online[t]:
            out = serve(k, cap, footprint, missing, compute_s, energy_j, top1, 0, forward, window[t], private[t],
                        rate[t], rtt[t], 0)
            for c in range(n_states):
                value[t, c], best[t, c] = out[0] + value[t + 1, 0], forward
            continue
        for c in range(n_states):
            if not (footprint[c] <= cap or c == mask0):
                continue
            top, arg = -np.inf, 0
            for a in range(n_actions):
                out = serve(k, cap, footprint, missing, compute_s, energy_j, top1, c, a, window[t], private[t],
                            rate[t], rtt[t], neighbour)
                v = out[0] + value[t + 1, out[1]]
                if v > top:
                    top, arg = v, a
            value[t, c], best[t, c] = top, arg
    plan = np.empty(steps, dtype=np.int64)
    c = mask0
    for t in range(steps):
        if not online[t]:
            c = 0
        a = best[t, c]
        plan[t] = a
        c = serve(consts, cap, footprint, missing, compute_s, energy_j, top1, c, a, window[t], private[t], rate[t],
                  rtt[t], 0)[1]
    return value[0, mask0], plan


def solve(env) -> Plan:
    """The exact hindsight plan of the episode from ``env``'s pending request (module docstring)."""
    sim = env.unwrapped if hasattr(env, "unwrapped") else env
    m = sim.num_models
    forward = m * (m + 1) + m
    try:
        tr = trace(sim)
        p, t = sim.params, sim.tables
        online = np.ones(len(tr["window"]), dtype=np.bool_)
        value, plan = dp(p.consts, float(p.config.capacity_bytes), t.footprint, t.missing, t.compute_s, t.energy_j,
                         t.top1, tr["window"], tr["private"], tr["rate_bps"], tr["rtt_s"], online, False,
                         sim.cache_mask)
        actions = [int(a) for a in plan]
        realised, _ = rollout(sim, actions)
        if abs(realised - value) > _TOL * max(1.0, abs(value)):
            raise RuntimeError(f"the DP's plan earns {realised:.9g}, not its value {value:.9g}")
        return Plan(actions, float(value), "exact", "backward DP over (request, cache bitmask)")
    except Exception as err:  # any solver failure falls back safely (flagged)
        actions = [forward] * max(sim.steps_left, 1)
        realised, _ = rollout(sim, actions)
        return Plan(actions, realised, "planner", f"forward every request (DP failed: {err})", fallback=True)
