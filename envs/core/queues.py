"""Queues of compute servers: FCFS and processor-sharing banks, background load, closed forms.

Work is measured in seconds of service at full speed. A bank of N servers keeps its
state as arrays, so an env advances every server in one numpy operation.

Sources:
    * FCFS waiting time by Lindley's recursion W_{n+1} = max(W_n + S_n - A_{n+1}, 0)
      (Lindley, Proc. Cambridge Phil. Soc. 48, 1952) — the unfinished work seen by an arrival.
    * M/M/1 mean sojourn 1 / (mu - lambda); Pollaczek–Khinchine mean wait of M/G/1
      lambda E[S^2] / (2 (1 - rho)); M/G/1 processor sharing mean sojourn
      E[S] / (1 - rho) (Kleinrock, Queueing Systems Vol. 1, 1975, and Vol. 2, 1976).
    * Virtual queue of a time-average constraint, Z(t+1) = max(Z(t) + y(t) - budget, 0)
      (Neely, "Stochastic Network Optimization with Application to Communication and
      Queueing Systems", Morgan & Claypool 2010, Sec. 4.4).
"""

from __future__ import annotations

import math

import numpy as np


def virtual_queue_step(queue, arrival, budget):
    """Next virtual queue ``max(queue + arrival - budget, 0)`` of the constraint avg(arrival) <= budget.

    Neely (2010), Sec. 4.4: the queue is the constraint's accumulated excess; it is stable
    (Z(t) / t -> 0) exactly when the time-average constraint holds. Python numbers take a
    plain-float path (the single envs' hot loop); numpy arrays (a vector env's B rows) are
    broadcast. The units are those of ``arrival`` (J, J per token, USD ...).
    """
    if isinstance(queue, np.ndarray) or isinstance(arrival, np.ndarray) or isinstance(budget, np.ndarray):
        return np.maximum(queue + arrival - budget, 0.0)
    return max(queue + arrival - budget, 0.0)


def _out(x: np.ndarray) -> np.ndarray | float:
    return x[()] if x.ndim == 0 else x


def _nonnegative(name: str, x: np.ndarray | float) -> np.ndarray:
    arr = np.asarray(x, dtype=np.float64)
    if np.any(~(arr >= 0)) or np.any(~np.isfinite(arr)):
        raise ValueError(f"{name}: values must be finite and >= 0, got {x!r}")
    return arr


def _check_servers(n_servers: int) -> int:
    if not (isinstance(n_servers, (int, np.integer)) and n_servers >= 1):
        raise ValueError(f"n_servers: expected a positive int, got {n_servers!r}")
    return int(n_servers)


class FCFSServerBank:
    """N independent first-come-first-served servers (M/G/1-style when fed Poisson arrivals).

    Attributes:
        work_s: (N,) unfinished work of each server in s (queued + in service).

    Args:
        n_servers: number of servers N.
    """

    def __init__(self, n_servers: int) -> None:
        self.n_servers = _check_servers(n_servers)
        self.work_s = np.zeros(self.n_servers)

    def reset(self) -> None:
        """Empty every server."""
        self.work_s = np.zeros(self.n_servers)

    def _indices(self, server_idx: np.ndarray | int) -> np.ndarray:
        idx = np.asarray(server_idx)
        if not np.issubdtype(idx.dtype, np.integer):
            raise ValueError(f"server_idx: expected integers, got {server_idx!r}")
        if np.any(idx < 0) or np.any(idx >= self.n_servers):
            raise ValueError(f"server_idx: must lie in 0..{self.n_servers - 1}, got {server_idx!r}")
        return idx

    def arrive(self, server_idx: np.ndarray | int, service_s: np.ndarray | float) -> np.ndarray | float:
        """Jobs arrive now at ``server_idx`` with service times ``service_s`` (s).

        Several jobs may arrive at once, also at the same server: they queue in the
        order given. Returns each job's wait before its service starts, in s (the
        server's unfinished work plus the work of earlier jobs of this call); the
        job's sojourn time is wait + service.
        """
        idx = self._indices(server_idx)
        service = _nonnegative("service_s", service_s)
        idx_b, service_b = np.broadcast_arrays(idx, service)
        flat_idx, flat_s = idx_b.ravel(), service_b.ravel()
        order = np.argsort(flat_idx, kind="stable")
        sorted_idx, sorted_s = flat_idx[order], flat_s[order]
        cum = np.cumsum(sorted_s) - sorted_s  # work ahead within this call, before group offset
        first = np.concatenate([[True], sorted_idx[1:] != sorted_idx[:-1]]) if sorted_idx.size else np.zeros(0, bool)
        group_start = np.maximum.accumulate(np.where(first, np.arange(sorted_idx.size), 0))
        ahead = cum - cum[group_start]
        wait = np.empty_like(flat_s)
        wait[order] = self.work_s[sorted_idx] + ahead
        self.work_s = self.work_s + np.bincount(flat_idx, weights=flat_s, minlength=self.n_servers)
        return _out(wait.reshape(idx_b.shape))

    def add_work(self, work_s: np.ndarray | float) -> None:
        """Add unfinished work (s) to every server, e.g. background load; (N,) or a number."""
        self.work_s = self.work_s + _nonnegative("work_s", work_s)

    def advance(self, dt_s: np.ndarray | float) -> np.ndarray:
        """Serve for ``dt_s`` seconds (a number or one per server); return (N,) work done in s."""
        dt = _nonnegative("dt_s", dt_s)
        done = np.minimum(self.work_s, dt)
        self.work_s = self.work_s - done
        return done


class ProcessorSharingBank:
    """N processor-sharing servers: the k jobs at a server each get 1/k of its speed.

    Jobs are kept in flat arrays (server, remaining work, id); :meth:`advance` jumps
    from one completion to the next, so its cost grows with the number of
    completions, not with time. Mean sojourn under Poisson arrivals is E[S] / (1 - rho)
    for any service distribution (Kleinrock 1976), see :func:`mg1_ps_sojourn_s`.

    Args:
        n_servers: number of servers N.
    """

    _EPS_S = 1e-12

    def __init__(self, n_servers: int) -> None:
        self.n_servers = _check_servers(n_servers)
        self.reset()

    def reset(self) -> None:
        """Remove every job and restart the clock at 0 s."""
        self.now_s = 0.0
        self.job_server = np.zeros(0, dtype=np.int64)
        self.job_remaining_s = np.zeros(0)
        self.job_id = np.zeros(0, dtype=np.int64)
        self._next_id = 0

    @property
    def jobs_per_server(self) -> np.ndarray:
        """(N,) number of jobs in each server."""
        return np.bincount(self.job_server, minlength=self.n_servers)

    def arrive(self, server_idx: np.ndarray | int, service_s: np.ndarray | float) -> np.ndarray:
        """Jobs arrive now; returns their ids (int array), reported again at completion."""
        idx = np.asarray(server_idx)
        if not np.issubdtype(idx.dtype, np.integer) or np.any(idx < 0) or np.any(idx >= self.n_servers):
            raise ValueError(f"server_idx: expected integers in 0..{self.n_servers - 1}, got {server_idx!r}")
        idx_b, service_b = np.broadcast_arrays(idx, _nonnegative("service_s", service_s))
        n = idx_b.size
        ids = np.arange(self._next_id, self._next_id + n)
        self._next_id += n
        self.job_server = np.concatenate([self.job_server, idx_b.ravel().astype(np.int64)])
        self.job_remaining_s = np.concatenate([self.job_remaining_s, service_b.ravel()])
        self.job_id = np.concatenate([self.job_id, ids])
        return ids.reshape(idx_b.shape)

    def advance(self, dt_s: float) -> tuple[np.ndarray, np.ndarray]:
        """Serve for ``dt_s`` seconds; return (ids, completion times in s) of finished jobs."""
        if not (dt_s >= 0 and math.isfinite(dt_s)):
            raise ValueError(f"dt_s: expected a finite time >= 0 s, got {dt_s!r}")
        end = self.now_s + dt_s
        done_ids: list[np.ndarray] = []
        done_t: list[np.ndarray] = []
        while self.job_id.size:
            k = np.bincount(self.job_server, minlength=self.n_servers).astype(np.float64)
            share = 1.0 / k[self.job_server]
            # time until each job finishes if nothing changes: remaining / share
            t_next = float(np.min(self.job_remaining_s / share))
            step = min(t_next, end - self.now_s)
            self.job_remaining_s = self.job_remaining_s - share * step
            self.now_s += step
            finished = self.job_remaining_s <= self._EPS_S
            if not np.any(finished):
                break
            done_ids.append(self.job_id[finished])
            done_t.append(np.full(int(finished.sum()), self.now_s))
            keep = ~finished
            self.job_server = self.job_server[keep]
            self.job_remaining_s = self.job_remaining_s[keep]
            self.job_id = self.job_id[keep]
        self.now_s = end
        if not done_ids:
            return np.zeros(0, dtype=np.int64), np.zeros(0)
        return np.concatenate(done_ids), np.concatenate(done_t)


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
    order = np.lexsort((arrival, slot))  # by slot, then by arrival time within it
    arrival, service, slot = arrival[order], service[order], slot[order]
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


def mm1_sojourn_s(lam: np.ndarray | float, mu: np.ndarray | float) -> np.ndarray | float:
    """Mean sojourn time 1 / (mu - lambda) of an M/M/1 queue in s.

    Args:
        lam: arrival rate lambda in 1/s (>= 0).
        mu: service rate mu in 1/s (> 0).

    Raises:
        ValueError: if the queue is unstable (rho = lambda / mu >= 1) or rates are invalid.
    """
    lam_a = _nonnegative("lam", lam)
    mu_a = np.asarray(mu, dtype=np.float64)
    if np.any(~(mu_a > 0)) or np.any(~np.isfinite(mu_a)):
        raise ValueError(f"mu: must be finite and > 0, got {mu!r}")
    if np.any(lam_a >= mu_a):
        raise ValueError(f"unstable queue: rho = lam / mu >= 1 (lam={lam!r}, mu={mu!r})")
    return _out(1.0 / (mu_a - lam_a))


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


def mg1_ps_sojourn_s(lam: np.ndarray | float, mean_s: np.ndarray | float) -> np.ndarray | float:
    """Mean sojourn E[S] / (1 - rho) of an M/G/1 processor-sharing queue in s (Kleinrock 1976).

    Raises:
        ValueError: if rho = lambda E[S] >= 1.
    """
    lam_a = _nonnegative("lam", lam)
    m1 = _nonnegative("mean_s", mean_s)
    rho = lam_a * m1
    if np.any(rho >= 1.0):
        raise ValueError(f"unstable queue: rho = lam * mean_s >= 1 (rho={rho!r})")
    return _out(m1 / (1.0 - rho))
