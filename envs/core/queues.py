"""Queues: FCFS and processor-sharing servers, Lindley maps of Poisson background work, virtual queues.

Work is measured in seconds of service at full speed. Every kernel takes Python numbers
(a single env's step) or numpy arrays (B rows of a vector env, or many servers).

Sources:
    * FCFS waiting time by Lindley's recursion W_{n+1} = max(W_n + S_n - A_{n+1}, 0)
      (Lindley, Proc. Cambridge Phil. Soc. 48, 1952) — the unfinished work seen by an arrival.
    * Stationary M/M/1 unfinished work and the Pollaczek–Khinchine mean wait of M/G/1,
      lambda E[S^2] / (2 (1 - rho)) (Kleinrock, Queueing Systems Vol. 1, 1975).
    * Processor-sharing slowdown 1 / (1 - rho) (Kleinrock, Queueing Systems Vol. 2, 1976).
    * Virtual queue of a time-average constraint, Z(t+1) = max(Z(t) + y(t) - budget, 0)
      (Neely, "Stochastic Network Optimization with Application to Communication and
      Queueing Systems", Morgan & Claypool 2010, Sec. 4.4).
"""

from __future__ import annotations

import math

import numba
import numpy as np

_ndarray = np.ndarray  # bound once: the scalar paths below test for it on every call


def virtual_queue_step(queue, arrival, budget):
    """Next virtual queue ``max(queue + arrival - budget, 0)`` of the constraint avg(arrival) <= budget.

    Neely (2010), Sec. 4.4: the queue is the constraint's accumulated excess; it is stable
    (Z(t) / t -> 0) exactly when the time-average constraint holds. A Python number ``queue``
    takes a plain-float path (the single envs' hot loop); a numpy array ``queue`` (a vector
    env's B rows) is broadcast with the other arguments. The units are those of ``arrival``
    (J, J per token, USD ...).
    """
    if isinstance(queue, _ndarray):
        return np.maximum(queue + arrival - budget, 0.0)
    return max(queue + arrival - budget, 0.0)


def _out(x: np.ndarray) -> np.ndarray | float:
    return x[()] if x.ndim == 0 else x


def _nonnegative(name: str, x: np.ndarray | float) -> np.ndarray:
    arr = np.asarray(x, dtype=np.float64)
    if np.any(~(arr >= 0)) or np.any(~np.isfinite(arr)):
        raise ValueError(f"{name}: values must be finite and >= 0, got {x!r}")
    return arr


def fcfs_finish_s(free_at_s, ready_s, service_s):
    """Finish time of a job at a first-come-first-served server, in absolute time (s).

    The server is busy until ``free_at_s``; the job is ready at ``ready_s`` and needs
    ``service_s``: it starts at ``max(ready_s, free_at_s)`` and finishes ``service_s`` later,
    which is the server's next ``free_at_s``. Its wait ``max(free_at_s - ready_s, 0)`` is
    Lindley's recursion (Lindley 1952) written in time stamps. A Python number ``free_at_s``
    takes a plain-float path (one routed stage per step); a numpy array (one entry per server)
    is broadcast with the other arguments.
    """
    if isinstance(free_at_s, _ndarray):
        return np.maximum(ready_s, free_at_s) + service_s
    return max(ready_s, free_at_s) + service_s


def fcfs_wait_s(free_at_s, ready_s):
    """Wait ``max(free_at_s - ready_s, 0)`` of a job ready at ``ready_s`` at a FCFS server busy until ``free_at_s``.

    The backlog ahead of the job, in s (Lindley 1952; see :func:`fcfs_finish_s`). A Python
    number ``free_at_s`` takes a plain-float path; a numpy array (one entry per server) is broadcast.
    """
    if isinstance(free_at_s, _ndarray):
        return np.maximum(free_at_s - ready_s, 0.0)
    return max(free_at_s - ready_s, 0.0)


def processor_sharing_time_s(work_s, background_util, share=1.0):
    """Time ``work_s / (share (1 - background_util))`` to serve ``work_s`` on a processor-sharing server.

    The server's background load takes the fraction ``background_util`` of its speed and the
    job gets the fraction ``share`` of the rest, so full-speed work ``work_s`` (s) takes that
    long; with ``share = 1`` it is the M/G/1-PS slowdown 1 / (1 - rho) of a job's mean sojourn
    (Kleinrock, Queueing Systems Vol. 2, 1976). Python numbers, numpy arrays (broadcast) and
    cvxpy expressions in ``work_s`` alike: the same expression prices the single env, the
    vector env and a convex baseline.
    """
    return work_s / (share * (1.0 - background_util))


@numba.njit(cache=True, nogil=True)
def order_within_runs(values: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """The permutation that sorts ``values`` within each of its consecutive runs of ``counts`` entries,
    the runs kept in place: ``np.lexsort((values, run))`` for ``run = np.repeat(arange, counts)``, ties
    in their order (a stable insertion sort per run; runs of a few entries, so linear in the total)."""
    out = np.empty(values.shape[0], dtype=np.int64)
    start = 0
    for c in counts:
        for i in range(c):
            v = values[start + i]
            j = i
            while j > 0 and values[out[start + j - 1]] > v:
                out[start + j] = out[start + j - 1]
                j -= 1
            out[start + j] = start + i
        start += c
    return out


def background_interval_map(
    rng: np.random.Generator,
    utilisation: float,
    mean_service_s: float,
    dt_s: float,
    size: tuple[int, ...],
) -> tuple[np.ndarray, np.ndarray]:
    """Lindley map ``W_end = max(W_start + shift, floor)`` of intervals of Poisson background jobs.

    During an interval of ``dt_s`` seconds, background jobs of exponential service (mean
    ``mean_service_s``) arrive at rate lambda = utilisation / mean_service_s at uniform
    times, and the FCFS server works whenever it has work. Lindley's recursion over the
    real arrival times, W <- max(W - gap, 0) + s, composes into one map of the unfinished
    work at the interval's start: ``shift = sum(s) - dt`` and ``floor = max(0, max_j
    (s_j + ... + s_last - (dt - t_j)))``, the work left at the end by the jobs from j on
    when the server was empty at t_j. A tagged arrival at the start with service S sees
    W and leaves ``max(W + S + shift, floor)`` to the next one (:func:`lindley_interval`).

    Random draws in this order: counts Poisson(lambda dt) of shape ``size``, then the
    arrival times (uniform on [0, dt)) and the service times of all the jobs.

    Returns:
        (shift_s, floor_s), each of shape ``size``.
    """
    u = float(_nonnegative("utilisation", utilisation))
    if u >= 1.0:
        raise ValueError(f"utilisation: must be < 1 for a stable queue, got {utilisation!r}")
    if not mean_service_s > 0:
        raise ValueError(f"mean_service_s: must be > 0 s, got {mean_service_s!r}")
    if not (dt_s >= 0 and math.isfinite(dt_s)):
        raise ValueError(f"dt_s: expected a finite time >= 0 s, got {dt_s!r}")
    count = rng.poisson(u / mean_service_s * dt_s, size=size).ravel()
    total = int(count.sum())
    arrival = rng.uniform(0.0, dt_s, size=total)
    service = rng.exponential(mean_service_s, size=total)
    slot = np.repeat(np.arange(count.size), count)
    order = order_within_runs(arrival, count)  # by arrival time within each slot; the slots stay in place
    arrival, service = arrival[order], service[order]
    work = np.bincount(slot, weights=service, minlength=count.size)
    before = np.cumsum(service) - service  # work of the earlier jobs (all slots)
    first = np.cumsum(count) - count  # index of each slot's first job
    before_in_slot = before - before[first[slot]]
    left = work[slot] - before_in_slot - (dt_s - arrival)  # work left at the end by jobs j.. of an empty start
    floor = np.zeros(count.size)
    np.maximum.at(floor, slot, left)
    return (work - dt_s).reshape(size), floor.reshape(size)


def lindley_interval(work_s, shift_s, floor_s):
    """Unfinished work at the next arrival, ``max(work + shift, floor)`` (numbers or arrays).

    ``work_s`` is the work at the start of the interval including the arriving job's own
    service; ``shift_s`` and ``floor_s`` come from :func:`background_interval_map`.
    """
    if isinstance(work_s, float):
        return max(work_s + shift_s, floor_s)
    return np.maximum(work_s + shift_s, floor_s)


def mm1_stationary_work_s(
    rng: np.random.Generator, utilisation: float, mean_service_s: float, size: int | tuple[int, ...]
) -> np.ndarray:
    """Draws of the stationary unfinished work of an M/M/1 queue, in s.

    P(W > x) = rho exp(-(mu - lambda) x) (Kleinrock 1975, Vol. 1, Sec. 5.7): empty with
    probability 1 - rho, else exponential of mean E[S] / (1 - rho). Random draws: a
    uniform, then an exponential, each of shape ``size``.
    """
    u = float(_nonnegative("utilisation", utilisation))
    if u >= 1.0:
        raise ValueError(f"utilisation: must be < 1 for a stable queue, got {utilisation!r}")
    busy = rng.random(size) < u
    return np.where(busy, rng.exponential(mean_service_s / (1.0 - u), size), 0.0)


def pollaczek_khinchine_wait_s(
    lam: np.ndarray | float, mean_s: np.ndarray | float, second_moment_s2: np.ndarray | float
) -> np.ndarray | float:
    """Mean M/G/1 waiting time lambda E[S^2] / (2 (1 - lambda E[S])) in s (Pollaczek–Khinchine).

    Args:
        lam: arrival rate in 1/s.
        mean_s: mean service time E[S] in s.
        second_moment_s2: E[S^2] in s^2 (>= E[S]^2).

    Raises:
        ValueError: if rho = lambda E[S] >= 1 or the moments are inconsistent.
    """
    lam_a = _nonnegative("lam", lam)
    m1 = _nonnegative("mean_s", mean_s)
    m2 = _nonnegative("second_moment_s2", second_moment_s2)
    if np.any(m2 < m1**2 * (1.0 - 1e-12)):
        raise ValueError(f"second_moment_s2: must be >= mean_s^2 (got {second_moment_s2!r} < {mean_s!r}^2)")
    rho = lam_a * m1
    if np.any(rho >= 1.0):
        raise ValueError(f"unstable queue: rho = lam * mean_s >= 1 (rho={rho!r})")
    return _out(lam_a * m2 / (2.0 * (1.0 - rho)))
