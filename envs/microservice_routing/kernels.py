"""The routing step in scalar form, one loop over the batch, compiled by numba (:mod:`edgelam.envs.core.jit`).

Each kernel takes the rows to advance and the arrays of a :class:`~.dynamics.State`
(leading axis B) and :class:`~.dynamics.Params` (the scenario's tables), and updates the
state arrays in place (:mod:`.dynamics` hands them copies: its functions are pure). A
step is :func:`route` for every row, then, for the rows whose request completed,
:func:`deliver_and_arrive` and :func:`settle`; between them the caller draws the users'
handovers, whose Poisson intensity the previous kernel leaves in ``handover_lam``.
Physics from the core (:func:`~edgelam.envs.core.queues.fcfs_finish_s`,
:func:`~edgelam.envs.core.queues.fcfs_wait_s`,
:func:`~edgelam.envs.core.queues.virtual_queue_step`) via :mod:`edgelam.envs.core.jit`.
"""

from __future__ import annotations

import math

import numpy as np

from edgelam.envs.core.jit import fcfs_finish_s, fcfs_wait_s, njit, virtual_queue_step


@njit
def pick(weights: np.ndarray, u: float) -> int:
    """Index of the first cumulative weight above ``u`` (the last index if none is): inverse-CDF sampling."""
    acc = 0.0
    for i in range(weights.shape[0]):
        acc += weights[i]
        if u < acc:
            return i
    return weights.shape[0] - 1


@njit
def migration_source(hosts: np.ndarray, link_bps: np.ndarray, dst: int) -> int:
    """Host (``hosts`` (K,) bool) a migration to ``dst`` moves: fastest link to ``dst``, lowest index on ties."""
    best, best_bps = -1, -1.0
    for s in range(hosts.shape[0]):
        if hosts[s] and link_bps[s, dst] > best_bps:
            best, best_bps = s, link_bps[s, dst]
    return best


@njit
def nearest_host(hosts: np.ndarray, transfer_s: np.ndarray) -> int:
    """Host with the smallest transfer time ``transfer_s`` (K,) of the pending input (lowest index on ties)."""
    best, best_t = -1, math.inf
    for s in range(hosts.shape[0]):
        if hosts[s] and transfer_s[s] < best_t:
            best, best_t = s, transfer_s[s]
    return best


@njit
def stage_start_s(ready_s, transfer_s, replica_ready_s):
    """When a stage may start on a server: its input has arrived and the microservice's replica is loaded."""
    return max(ready_s + transfer_s, replica_ready_s)


@njit
def reward(latency_s, migration_j, violated, infeasible, w_migration, slo_penalty, infeasible_penalty):
    """-(latency) - w migration J - SLO penalty [violated] - infeasible penalty [infeasible]."""
    return -latency_s - w_migration * migration_j - slo_penalty * violated - infeasible_penalty * infeasible


@njit
def finish_times(
    migrate, stage_ms, transfer_s, service_s, link_bps, replica_transfer_s,
    pipeline, stage, loc, ready_s, free_at_s, hosts, replica_ready_s, out,
):
    """``out[b, s]``: finish time of row b's pending stage routed to server s (after migrating a replica
    there when ``migrate``); nothing changes. What a step would reserve, for the baselines."""
    k = free_at_s.shape[1]
    for b in range(pipeline.shape[0]):
        p, j = pipeline[b], stage[b]
        ms = stage_ms[p, j]
        for s in range(k):
            replica = replica_ready_s[b, ms, s]
            if migrate:
                src = migration_source(hosts[b, ms], link_bps, s)
                replica = ready_s[b] + replica_transfer_s[ms, src, s]
            start = stage_start_s(ready_s[b], transfer_s[p, j, loc[b], s], replica)
            out[b, s] = fcfs_finish_s(free_at_s[b, s], start, service_s[p, j, s])


@njit
def route(
    actions, stage_ms, num_stages, transfer_s, service_s, compute_j, send_j, link_bps,
    replica_transfer_s, migration_j, consts,
    pipeline, stage, loc, user, arrival_s, ready_s, free_at_s, hosts, replica_ready_s, virtual_queue,
    user_time_s, step, out, handover_lam,
):
    """Route (or migrate and route) every row's pending stage; an infeasible action goes to the nearest host.

    ``consts``: (migration enabled, migration budget J/step, handover rate 1/s, migration weight
    1/J, SLO penalty, infeasible penalty). ``out`` (B, 10) columns: server, migrated, infeasible,
    stage latency s, energy J, migration J, completed, e2e latency s, SLO violated, reward (of a
    row that completed its request, :func:`deliver_and_arrive` adds the delivery and fills the
    last three). ``handover_lam`` (B,): for a row that completed, the Poisson intensity of its
    user's handovers since the user's last move, else 0.
    """
    k = free_at_s.shape[1]
    migration, budget_j, handover_hz = consts[0] > 0.0, consts[1], consts[2]
    for b in range(actions.shape[0]):
        p, j, a = pipeline[b], stage[b], actions[b]
        ms = stage_ms[p, j]
        migrate = a >= k
        server = a - k if migrate else a
        feasible = not hosts[b, ms, server] if migrate else hosts[b, ms, server]
        if not feasible:
            migrate, server = False, nearest_host(hosts[b, ms], transfer_s[p, j, loc[b]])
        mig_j = 0.0
        if migrate:
            src = migration_source(hosts[b, ms], link_bps, server)
            replica_ready_s[b, ms, server] = ready_s[b] + replica_transfer_s[ms, src, server]
            hosts[b, ms, src] = False
            hosts[b, ms, server] = True
            mig_j = migration_j[ms]
        start = stage_start_s(ready_s[b], transfer_s[p, j, loc[b], server], replica_ready_s[b, ms, server])
        finish = fcfs_finish_s(free_at_s[b, server], start, service_s[p, j, server])
        free_at_s[b, server] = finish
        latency = finish - (arrival_s[b] if j == 0 else ready_s[b])  # the first stage includes the upload
        energy = compute_j[p, j, server] + (0.0 if server == loc[b] else send_j[p, j]) + mig_j
        if migration:
            virtual_queue[b] = virtual_queue_step(virtual_queue[b], mig_j, budget_j)
        ready_s[b], loc[b], stage[b] = finish, server, j + 1
        step[b] += 1
        completed = stage[b] == num_stages[p]
        handover_lam[b] = 0.0
        if completed:
            handover_lam[b] = _advance_user(user_time_s[b], user[b], finish, handover_hz)
        else:
            out[b, 9] = reward(latency, mig_j, False, not feasible, consts[3], consts[4], consts[5])
        out[b, 0], out[b, 1], out[b, 2] = server, migrate, not feasible
        out[b, 3], out[b, 4], out[b, 5] = latency, energy, mig_j
        out[b, 6], out[b, 7], out[b, 8] = completed, 0.0, False


@njit
def _advance_user(user_time_s, u, time_s, handover_hz):
    """Advance user ``u``'s clock to ``time_s``; the Poisson intensity of its handovers since (0: none drawn)."""
    dt = time_s - user_time_s[u]
    user_time_s[u] = time_s
    return handover_hz * dt if dt > 0.0 and handover_hz > 0.0 else 0.0


@njit
def deliver_and_arrive(
    rows, deliver, handover_steps, num_servers, deliver_s, deliver_j, interarrival, pipeline_u, arrival_user,
    consts, slo_s,
    pipeline, user, loc, arrival_s, ready_s, user_cell, user_time_s, rate_hz, mix, arrivals_used,
    out, handover_lam,
):
    """For each row of ``rows``: deliver its finished request (when ``deliver``), then take the next arrival.

    Delivery moves the user by its drawn ``handover_steps``, sends the result from the last
    server to the user's cell and down the access link, and fills the row's e2e latency,
    SLO flag and reward in ``out``. The next arrival comes ``interarrival / rate`` after the
    last one, of the pipeline drawn from the mix, from the block's user; ``handover_lam``
    gets the intensity of that user's handovers since its last move. The caller has
    refilled the arrival block of every row that used all of it.
    """
    handover_hz = consts[2]
    for b in rows:
        if deliver:
            u, p, server = user[b], pipeline[b], loc[b]
            cell = (user_cell[b, u] + handover_steps[b]) % num_servers
            user_cell[b, u] = cell
            d = deliver_s[p, server, cell]
            if server != cell:
                out[b, 4] += deliver_j[p]
            latency = out[b, 3] + d
            e2e = ready_s[b] + d - arrival_s[b]
            violated = e2e > slo_s
            out[b, 3], out[b, 7], out[b, 8] = latency, e2e, violated
            out[b, 9] = reward(latency, out[b, 5], violated, out[b, 2] > 0.0, consts[3], consts[4], consts[5])
        i = arrivals_used[b]
        now = arrival_s[b] + interarrival[b, i] / rate_hz[b]
        pipeline[b] = pick(mix[b], pipeline_u[b, i])
        u = arrival_user[b, i]
        user[b] = u
        arrivals_used[b] = i + 1
        arrival_s[b] = now
        handover_lam[b] = _advance_user(user_time_s[b], u, now, handover_hz)


@njit
def settle(
    rows, handover_steps, num_servers, upload_s, override_u,
    pipeline, user, stage, loc, arrival_s, ready_s, user_cell, override_prob, override_cells, arrivals_used,
):
    """The new request of each row of ``rows``: its user moves by ``handover_steps`` (or, with the
    adversary's probability, to a cell drawn from its distribution); the input is uploaded there."""
    for b in rows:
        u = user[b]
        cell = (user_cell[b, u] + handover_steps[b]) % num_servers
        user_cell[b, u] = cell
        i = arrivals_used[b] - 1
        if override_u[b, i, 0] < override_prob[b]:
            cell = pick(override_cells[b], override_u[b, i, 1])
            user_cell[b, u] = cell
        stage[b], loc[b] = 0, cell
        ready_s[b] = arrival_s[b] + upload_s[pipeline[b]]


@njit
def observe(
    time_scale_s, obs_clip, slo_s, queue_scale_j, episode_length, max_stages,
    stage_ms, num_stages, obs_transfer, obs_service, obs_in_bytes,
    step, pipeline, stage, loc, user, arrival_s, ready_s, free_at_s, hosts, user_cell, virtual_queue,
    obs, mask, queue,
):
    """Fill ``obs`` (B, 5K + M + 5) float32 (layout in the env docstring), the action ``mask``
    (B, K or 2K) bool (hosts; with migration, then non-hosts) and each server's backlog ``queue`` (B, K)."""
    k = free_at_s.shape[1]
    m = hosts.shape[1]
    migration = mask.shape[1] > k
    for b in range(obs.shape[0]):
        p, j, ready = pipeline[b], stage[b], ready_s[b]
        ms = stage_ms[p, j]
        for s in range(k):
            wait = fcfs_wait_s(free_at_s[b, s], ready)
            queue[b, s] = wait
            host = hosts[b, ms, s]
            mask[b, s] = host
            if migration:
                mask[b, k + s] = not host
            obs[b, s] = min(wait / time_scale_s, obs_clip)
            obs[b, k + s] = obs_transfer[p, j, loc[b], s]
            obs[b, 2 * k + s] = obs_service[p, j, s]
            obs[b, 3 * k + s] = 1.0 if host else 0.0
            obs[b, 4 * k + m + s] = 0.0
        for i in range(m):
            obs[b, 4 * k + i] = 0.0
        obs[b, 4 * k + ms] = 1.0
        obs[b, 4 * k + m + user_cell[b, user[b]]] = 1.0
        tail = 5 * k + m
        slack = (slo_s - (ready - arrival_s[b])) / slo_s
        obs[b, tail] = obs_in_bytes[p, j]
        obs[b, tail + 1] = min(max(slack, -1.0), 1.0)
        obs[b, tail + 2] = (num_stages[p] - j) / max_stages
        obs[b, tail + 3] = min(virtual_queue[b] / queue_scale_j, obs_clip) if queue_scale_j > 0.0 else 0.0
        obs[b, tail + 4] = step[b] / episode_length
