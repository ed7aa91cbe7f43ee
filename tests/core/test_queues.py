"""Queues: the FCFS server, Lindley maps and virtual queues against hand examples and queueing theory."""

from __future__ import annotations

import numpy as np
import pytest

from edgelam.envs.core.queues import (
    background_interval_map,
    fcfs_finish_s,
    fcfs_wait_s,
    lindley_interval,
    mm1_stationary_work_s,
    order_within_runs,
    pollaczek_khinchine_wait_s,
    processor_sharing_time_s,
    virtual_queue_step,
)


def test_fcfs_three_job_hand_example():
    # A (2 s) ready at 0 on an idle server, B (3 s) ready at 1 s behind it, C (1 s) ready at 6 s after both
    free = 0.0
    free = fcfs_finish_s(free, 0.0, 2.0)
    assert free == 2.0
    free = fcfs_finish_s(free, 1.0, 3.0)  # B waits 1 s for A
    assert free == 5.0
    free = fcfs_finish_s(free, 6.0, 1.0)  # the server idled from 5 s to 6 s
    assert free == 7.0
    assert isinstance(free, float)
    both = fcfs_finish_s(np.array([2.0, 0.0]), np.array([1.0, 1.0]), np.array([3.0, 5.0]))
    np.testing.assert_array_equal(both, [5.0, 6.0])
    assert fcfs_wait_s(5.0, 1.0) == 4.0 and fcfs_wait_s(5.0, 6.0) == 0.0  # B's wait would be 4 s; C's none
    np.testing.assert_array_equal(fcfs_wait_s(np.array([2.0, 0.0]), 1.0), [1.0, 0.0])


def _simulate_sojourn(service, lam: float, n_servers: int = 500, n_jobs: int = 2_200, warmup: int = 200) -> float:
    """Mean sojourn over many independent single-server FCFS queues (Poisson arrivals, one job at a time)."""
    rng = np.random.default_rng(11)
    arrival, free = np.zeros(n_servers), np.zeros(n_servers)
    total = 0.0
    for k in range(n_jobs):
        arrival = arrival + rng.exponential(1.0 / lam, n_servers)
        free = fcfs_finish_s(free, arrival, service(rng, n_servers))
        if k >= warmup:
            total += float(np.sum(free - arrival))
    return total / (n_servers * (n_jobs - warmup))


def test_simulated_mm1_matches_closed_form():
    lam, mu = 0.7, 1.0
    sim = _simulate_sojourn(lambda rng, n: rng.exponential(1.0 / mu, n), lam)
    assert sim == pytest.approx(1.0 / (mu - lam), rel=0.03)  # M/M/1 mean sojourn (Kleinrock 1975)


def test_simulated_md1_matches_pollaczek_khinchine():
    lam = 0.7  # deterministic 1 s service: W = 0.7 * 1 / (2 * 0.3) = 1.1667 s, sojourn 2.1667 s
    sim = _simulate_sojourn(lambda rng, n: np.ones(n), lam)
    wait = pollaczek_khinchine_wait_s(lam, 1.0, 1.0)
    assert wait == pytest.approx(0.7 / 0.6)
    assert sim == pytest.approx(wait + 1.0, rel=0.03)


def test_pollaczek_khinchine_is_mm1_for_exponential_service_and_rejects_unstable_queues():
    # exponential service: E[S^2] = 2 / mu^2, so PK wait + E[S] is the M/M/1 sojourn
    lam, mu = np.array([0.1, 0.5, 0.9]), 1.0
    np.testing.assert_allclose(pollaczek_khinchine_wait_s(lam, 1 / mu, 2 / mu**2) + 1 / mu, 1.0 / (mu - lam))
    with pytest.raises(ValueError, match="unstable"):
        pollaczek_khinchine_wait_s(np.array([0.5, 1.2]), 1.0, 1.0)
    with pytest.raises(ValueError, match="second_moment_s2"):
        pollaczek_khinchine_wait_s(0.5, 1.0, 0.5)


def _lindley_by_events(w0: float, arrivals: np.ndarray, services: np.ndarray, dt: float) -> float:
    """Unfinished work at the end of an interval: Lindley's recursion job by job."""
    w, t = w0, 0.0
    for a, s in sorted(zip(arrivals, services, strict=True)):
        w = max(w - (a - t), 0.0) + s
        t = a
    return max(w - (dt - t), 0.0)


def test_background_interval_map_equals_lindley_over_the_arrival_times():
    """The (shift, floor) map of each interval gives the job-by-job recursion's end work for any start."""
    dt, mean, u, n = 1.0, 0.5, 0.7, 400
    shift, floor = background_interval_map(np.random.default_rng(5), u, mean, dt, size=(n,))
    # the same draws, in the documented order, replayed job by job
    rng = np.random.default_rng(5)
    count = rng.poisson(u / mean * dt, size=n)
    arrival = rng.uniform(0.0, dt, size=count.sum())
    service = rng.exponential(mean, size=count.sum())
    bounds_ = np.concatenate([[0], np.cumsum(count)])
    assert (count == 0).any() and (count >= 3).any()
    for w0 in (0.0, 0.3, 2.5):
        for i in range(n):
            a, s = arrival[bounds_[i] : bounds_[i + 1]], service[bounds_[i] : bounds_[i + 1]]
            want = _lindley_by_events(w0, a, s, dt)
            assert lindley_interval(w0, float(shift[i]), float(floor[i])) == pytest.approx(want, abs=1e-12), (i, w0)
    # a hand example: jobs of 0.4 s at 0.1 s and 0.3 s at 0.9 s in a 1 s interval from empty:
    # the first ends at 0.5 s, the second leaves 0.2 s at 1 s
    assert _lindley_by_events(0.0, np.array([0.1, 0.9]), np.array([0.4, 0.3]), 1.0) == pytest.approx(0.2)


def test_stationary_mm1_work_has_the_busy_probability_and_the_pk_mean():
    u, mean = 0.6, 0.5
    w = mm1_stationary_work_s(np.random.default_rng(0), u, mean, 200_000)
    assert np.mean(w > 0) == pytest.approx(u, abs=0.005)
    pk = pollaczek_khinchine_wait_s(u / mean, mean, 2 * mean**2)
    assert w.mean() == pytest.approx(pk, rel=0.02)
    with pytest.raises(ValueError, match="utilisation"):
        mm1_stationary_work_s(np.random.default_rng(0), 1.0, mean, 3)


def test_lindley_interval_by_hand():
    # work 2 s (arriving job included), the interval's background shifts it by +0.5 s / -3 s, floor 0.25 s
    assert lindley_interval(2.0, 0.5, 0.0) == 2.5
    assert lindley_interval(2.0, -3.0, 0.25) == 0.25
    out = lindley_interval(np.array([2.0, 2.0, 1.0]), np.array([0.5, -3.0, -0.5]), np.array([0.0, 0.25, 0.75]))
    np.testing.assert_array_equal(out, [2.5, 0.25, 0.75])


def test_background_interval_map_argument_checks():
    rng = np.random.default_rng(0)
    shift, floor = background_interval_map(rng, 0.5, 0.2, 0.5, size=(4,))  # an interval shorter than 1 s
    assert shift.shape == floor.shape == (4,) and np.all(floor >= 0.0)
    with pytest.raises(ValueError, match="dt_s"):
        background_interval_map(rng, 0.5, 0.2, -0.5, size=(4,))


def test_virtual_queue_step_accumulates_and_floors_at_zero():
    assert virtual_queue_step(0.0, 3.0, 1.0) == 2.0  # excess accumulates
    assert virtual_queue_step(2.0, 0.5, 1.0) == 1.5
    assert virtual_queue_step(1.5, 0.0, 2.0) == 0.0  # drains to the floor, never below
    assert isinstance(virtual_queue_step(1.0, 2.0, 0.5), float)


def test_virtual_queue_step_arrays_equal_the_scalar_path_bit_for_bit():
    rng = np.random.default_rng(0)
    z, y, budget = rng.exponential(1.0, 64), rng.exponential(1.0, 64), rng.exponential(1.0, 64)
    batched = virtual_queue_step(z, y, budget)
    scalar = [virtual_queue_step(float(a), float(b), float(c)) for a, b, c in zip(z, y, budget, strict=True)]
    assert np.array_equal(batched, scalar) and (batched == 0.0).any() and (batched > 0.0).any()
    assert np.array_equal(virtual_queue_step(z, y, 1.0), virtual_queue_step(z, y, np.full(64, 1.0)))


def test_processor_sharing_time_is_the_slowdown_of_the_free_capacity():
    assert processor_sharing_time_s(1.0, 0.5) == 2.0  # half the speed taken by background load
    assert processor_sharing_time_s(3.0, 0.25, share=0.5) == 8.0  # a half share of the remaining 3/4
    work, util = np.array([1.0, 2.0]), np.array([0.0, 0.75])
    np.testing.assert_array_equal(processor_sharing_time_s(work, util), [1.0, 8.0])
    assert processor_sharing_time_s(0.3, 0.6) == 0.3 / (1.0 - 0.6)  # share 1: bit for bit work / (1 - u)


def test_order_within_runs_is_lexsort_by_run_then_value_with_ties_in_order():
    rng = np.random.default_rng(3)
    counts = rng.integers(0, 6, size=400)
    values = np.round(rng.uniform(0.0, 1.0, size=int(counts.sum())), 1)  # many ties within runs
    run = np.repeat(np.arange(counts.size), counts)
    order = order_within_runs(values, counts)
    assert np.array_equal(order, np.lexsort((values, run)))
    assert order_within_runs(np.array([0.5, 0.2, 0.2, 0.9]), np.array([3, 0, 1])).tolist() == [1, 2, 0, 3]
    assert order_within_runs(np.zeros(0), np.zeros(2, dtype=np.int64)).size == 0
