"""edgelam.envs.core.caching: footprints with shared blocks, LRU and LFU against hand-traced
hits, Belady's MIN against an exhaustive search, the HiGHS placement against enumeration."""

from __future__ import annotations

import functools
import itertools

import numpy as np
import pytest

from edgelam.envs.core import caching as C

# a 100-byte backbone with two 10-byte adapters on it (models 0 and 1), a 50-byte general model (2)
SHARED = C.Catalogue((100, 10, 10, 50), ((0, 1), (0, 2), (3,)), ("edge+a", "edge+b", "device"))
A, B, Cm, D = 0, 1, 2, 3
UNIT4 = C.Catalogue.unshared([1, 1, 1, 1], names="ABCD")


def test_footprint_stores_a_shared_backbone_once():
    assert SHARED.footprint([0, 1]) == 120  # not 110 + 110
    assert SHARED.footprint([0, 1, 2]) == 170
    assert SHARED.model_bytes(1) == 110
    assert SHARED.footprint([]) == 0


def test_lru_and_lfu_match_hand_traces():
    # capacity 2: A A B C A. LRU evicts A at C (A last used at 1, B at 2), so the last A misses;
    # LFU evicts B (1 request against A's 2), so the last A hits.
    trace = [A, A, B, Cm, A]
    assert C.lru_hits(trace, UNIT4, 2).tolist() == [False, True, False, False, False]
    assert C.lfu_hits(trace, UNIT4, 2).tolist() == [False, True, False, False, True]
    # capacity 3: A B C A D B A. LRU: D evicts B (oldest), B evicts C: hits at 3 and 6.
    trace = [A, B, Cm, A, D, B, A]
    assert np.flatnonzero(C.lru_hits(trace, UNIT4, 3)).tolist() == [3, 6]
    # LFU: D evicts B (count 1, older than C); B (count now 2) evicts C (1, older than D): same hits
    assert np.flatnonzero(C.lfu_hits(trace, UNIT4, 3)).tolist() == [3, 6]
    # perfect LFU keeps the counts of evicted models: capacity 2, A A B C B C A. C evicts B (1 < 2),
    # B (now 2) evicts C (1), C (now 2) ties A at 2 and evicts it (older), A (3) evicts B (2, older
    # than C). An LFU that forgot an evicted model's count would evict B at the second C and hit A.
    assert C.lfu_hits([A, A, B, Cm, B, Cm, A], UNIT4, 2).tolist() == [False, True] + [False] * 5


def test_lru_with_shared_blocks_evicts_until_the_footprint_fits():
    # capacity 125: edge+a (110), edge+b (+10 -> 120, fits beside it), device (50): 170 > 125, so LRU
    # evicts edge+a (160 > 125 still) then edge+b (50); edge+b misses, evicting device (160 > 125);
    # edge+a misses and fits beside it (120); edge+b hits.
    trace = [0, 1, 2, 1, 0, 1]
    hits = C.lru_hits(trace, SHARED, 125)
    assert hits.tolist() == [False] * 5 + [True]
    # a model larger than the capacity is served but never kept, and evicts nothing
    # (device, 50 bytes, stays through a request for edge+a, 110)
    assert C.lru_hits([2, 0, 0, 2], SHARED, 60).tolist() == [False, False, False, True]
    assert C.lfu_hits([2, 0, 0, 2], SHARED, 60).tolist() == [False, False, False, True]


def _brute_force_hits(trace: list[int], capacity: int) -> int:
    """The most hits of any demand policy with bypass (unit sizes), by exhaustive search."""

    @functools.cache
    def best(t: int, cache: frozenset) -> int:
        if t == len(trace):
            return 0
        m = trace[t]
        if m in cache:
            return 1 + best(t + 1, cache)
        options = [best(t + 1, cache)]  # bypass
        if len(cache) < capacity:
            options.append(best(t + 1, cache | {m}))
        else:
            options += [best(t + 1, (cache - {v}) | {m}) for v in cache]
        return max(options)

    return best(0, frozenset())


@pytest.mark.parametrize("seed", range(12))
def test_belady_hits_equal_an_exhaustive_search_and_bound_lru_and_lfu(seed):
    rng = np.random.default_rng(seed)
    n, k = int(rng.integers(3, 6)), int(rng.integers(1, 4))
    trace = rng.integers(0, n, size=int(rng.integers(8, 15))).tolist()
    hits = C.belady_hits(trace, n, k)
    assert int(hits.sum()) == _brute_force_hits(trace, k), (trace, k)
    unit = C.Catalogue.unshared([1] * n)
    assert hits.sum() >= C.lru_hits(trace, unit, k).sum()
    assert hits.sum() >= C.lfu_hits(trace, unit, k).sum()


def test_belady_evicts_the_model_needed_farthest():
    # capacity 2: A B C B A. At C, A is next needed at 4, B at 3 and C never: MIN leaves C out
    # (LRU would evict A and miss it at 4)
    assert C.belady_hits([A, B, Cm, B, A], 4, 2).tolist() == [False, False, False, True, True]


def _enumerate_best(values: np.ndarray, catalogue: C.Catalogue, capacity: int) -> float:
    best = 0.0
    for r in range(catalogue.n_models + 1):
        for subset in itertools.combinations(range(catalogue.n_models), r):
            if catalogue.footprint(subset) <= capacity:
                best = max(best, float(values[list(subset)].sum()))
    return best


def test_placement_counts_the_shared_backbone_once():
    # two adapters (value 5 each, 120 bytes together) beat the general model (8, 50 bytes); a
    # placement that summed model sizes (220 bytes) would pick the general model alone
    p = C.static_placement([5.0, 5.0, 8.0], SHARED, 125)
    assert p.status == "optimal" and p.models == (0, 1) and p.value == 10.0 and p.footprint == 120


@pytest.mark.parametrize("seed", range(8))
def test_placement_equals_enumeration_on_random_shared_catalogues(seed):
    rng = np.random.default_rng(100 + seed)
    k = int(rng.integers(3, 7))
    sizes = tuple(int(s) for s in rng.integers(1, 40, size=k))
    blocks = tuple(tuple(int(b) for b in rng.choice(k, size=int(rng.integers(1, 3)), replace=False))
                   for _ in range(int(rng.integers(3, 8))))
    cat = C.Catalogue(sizes, blocks, tuple(f"m{i}" for i in range(len(blocks))))
    values = rng.uniform(-1, 5, size=cat.n_models)
    capacity = int(rng.integers(0, sum(sizes)))
    p = C.static_placement(values, cat, capacity)
    assert p.status == "optimal"
    assert p.footprint <= capacity
    assert p.value == pytest.approx(_enumerate_best(values, cat, capacity), abs=1e-6)


def test_bad_inputs_raise_value_errors_naming_the_argument():
    with pytest.raises(ValueError, match="block_bytes"):
        C.Catalogue((100, 0), ((0,), (1,)), ("a", "b"))
    with pytest.raises(ValueError, match="blocks of model 'b'"):
        C.Catalogue((100, 10), ((0,), (2,)), ("a", "b"))
    with pytest.raises(ValueError, match="names"):
        C.Catalogue((100, 10), ((0,), (1,)), ("a", "a"))
    with pytest.raises(ValueError, match="capacity"):
        C.lru_hits([0, 1], SHARED, -1)
    with pytest.raises(ValueError, match="trace"):
        C.lfu_hits([0, 3], SHARED, 100)
    with pytest.raises(ValueError, match="trace"):
        C.lru_hits([0.5, 1.0], SHARED, 100)
    with pytest.raises(ValueError, match="capacity_models"):
        C.belady_hits([0, 1], 2, -1)
    with pytest.raises(ValueError, match="values"):
        C.static_placement([1.0, 2.0], SHARED, 100)
    with pytest.raises(ValueError, match="values"):
        C.static_placement([1.0, np.nan, 2.0], SHARED, 100)


def test_zipf_pmf_is_the_normalised_power_law():
    np.testing.assert_allclose(C.zipf_pmf(3, 1.0), [6 / 11, 3 / 11, 2 / 11])
    np.testing.assert_allclose(C.zipf_pmf(4, 0.0), [0.25] * 4)
    np.testing.assert_allclose(C.zipf_pmf(2, 2.0), [0.8, 0.2])


def test_requests_of_a_fixed_ranking_follow_zipf_over_it():
    from scipy.stats import chisquare

    trace = C.request_trace(np.random.default_rng(0), 20_000, 6, 0.8, private=0.3)
    assert (trace.rank == trace.rank[0]).all()  # no drift
    counts = np.bincount(trace.task, minlength=6)
    expected = np.empty(6)
    expected[trace.rank[0, 0]] = C.zipf_pmf(6, 0.8) * 20_000  # the task at rank k has p_k
    assert chisquare(counts, expected).pvalue > 1e-3
    assert trace.private.mean() == pytest.approx(0.3, abs=0.015)
    # the most requested task is the group's first rank, not task 0
    assert int(np.argmax(counts)) == int(trace.rank[0, 0, 0])


def test_each_group_draws_from_its_own_ranking():
    trace = C.request_trace(np.random.default_rng(1), 20_000, 5, 1.2, group_weights=(3.0, 1.0))
    assert trace.group.mean() == pytest.approx(0.25, abs=0.015)
    for g in range(2):
        counts = np.bincount(trace.task[trace.group == g], minlength=5)
        assert np.argsort(-counts).tolist() == trace.rank[0, g].tolist(), g
    assert trace.rank[0, 0].tolist() != trace.rank[0, 1].tolist()  # seed 1: two different mixes


def test_drift_swaps_neighbouring_ranks_at_its_rate():
    trace = C.request_trace(np.random.default_rng(2), 20_000, 8, 1.0, swap_rate=0.01)
    changed = np.flatnonzero((trace.rank[1:, 0] != trace.rank[:-1, 0]).any(axis=1)) + 1
    assert 140 <= len(changed) <= 260  # Poisson mean 20,000 x (1 - e^-0.01) = 199
    for t in changed[:50]:
        moved = np.flatnonzero(trace.rank[t, 0] != trace.rank[t - 1, 0])
        if len(moved) == 2:  # one swap: two neighbours exchanged
            assert moved[1] == moved[0] + 1
            assert trace.rank[t, 0, moved[0]] == trace.rank[t - 1, 0, moved[1]]
        assert sorted(trace.rank[t, 0]) == list(range(8))
    again = C.request_trace(np.random.default_rng(2), 20_000, 8, 1.0, swap_rate=0.01)
    assert np.array_equal(again.task, trace.task) and np.array_equal(again.rank, trace.rank)


def test_bad_request_settings_raise_value_errors_naming_the_key():
    rng = np.random.default_rng(0)
    for kwargs, key in [({"n_tasks": 0}, "n"), ({"exponent": -1.0}, "exponent"), ({"length": -5}, "length"),
                        ({"group_weights": (0.0, 0.0)}, "group_weights"), ({"swap_rate": -0.1}, "swap_rate"),
                        ({"private": 1.5}, "private")]:
        args = {"length": 10, "n_tasks": 4, "exponent": 1.0, **kwargs}
        with pytest.raises(ValueError, match=f"^{key}:"):
            C.request_trace(rng, **args)


def test_assignment_placement_equals_an_exhaustive_search_over_every_cache():
    """Random gains (some negative), demands, block costs and capacities on a catalogue with shared blocks:
    HiGHS's optimum is the best of every subset that fits, each task served by its best cached model."""
    rng = np.random.default_rng(1)
    cat = C.Catalogue((5, 3, 2, 2, 4), ((0,), (0, 1), (0, 2), (3,), (4,), (1, 3)), tuple("abcdef"))
    for _ in range(25):
        gain, demand = rng.normal(0, 1, (6, 3)), rng.uniform(0, 5, 3)
        cost, cap = rng.uniform(0, 2, 5), rng.uniform(3, 12)
        plan = C.assignment_placement(gain, demand, cat, cap, cost)
        best = -np.inf
        for r in range(7):
            for s in itertools.combinations(range(6), r):
                if cat.footprint(s) <= cap:
                    stored = {b for m in s for b in cat.blocks[m]}
                    value = sum(demand[j] * max([0.0, *(gain[m, j] for m in s)]) for j in range(3))
                    best = max(best, value - sum(cost[b] for b in stored))
        assert plan.status == "optimal" and plan.value == pytest.approx(best, abs=1e-6)
        assert plan.footprint <= cap
    with pytest.raises(ValueError, match="gain"):
        C.assignment_placement(np.zeros((2, 3)), np.ones(3), cat, 10.0)
    with pytest.raises(ValueError, match="demand"):
        C.assignment_placement(np.zeros((6, 3)), -np.ones(3), cat, 10.0)
    with pytest.raises(ValueError, match="block_cost"):
        C.assignment_placement(np.zeros((6, 3)), np.ones(3), cat, 10.0, np.ones(2))


def test_joint_placement_equals_an_exhaustive_search_over_both_edges_caches():
    """Two edges, a first copy priced above the others, some models held already: HiGHS's optimum is the best
    pair of caches by exhaustive search under the same pricing."""
    rng = np.random.default_rng(0)
    cat = C.Catalogue((3, 2, 2, 4), ((0,), (0, 1), (2,), (3,)), tuple("abcd"))
    subsets = [s for r in range(5) for s in itertools.combinations(range(4), r)]
    for _ in range(15):
        gain, demand, caps = rng.normal(0.5, 1, (4, 2)), rng.uniform(0, 4, (2, 2)), rng.uniform(3, 8, 2)
        held = rng.random((2, 4)) < 0.2
        if any(cat.footprint(np.flatnonzero(held[e])) > caps[e] for e in range(2)):
            held[:] = False
        first, copy = rng.uniform(1, 3, 4), rng.uniform(0, 1, 4)
        models, value, status, _ = C.joint_placement(gain, demand, cat, caps, held, first, copy)
        best = -np.inf
        for s0, s1 in itertools.product(subsets, subsets):
            if cat.footprint(s0) > caps[0] or cat.footprint(s1) > caps[1]:
                continue
            v = 0.0
            for e, s in enumerate((s0, s1)):
                v += sum(demand[e, j] * max([0.0, *(gain[m, j] for m in s)]) for j in range(2))
                v -= sum(copy[m] for m in s if not held[e, m])
            v -= sum(first[m] - copy[m] for m in range(4) if not held[:, m].any() and (m in s0 or m in s1))
            best = max(best, v)
        assert status == "optimal" and value == pytest.approx(best, abs=1e-6)
        assert all(cat.footprint(models[e]) <= caps[e] for e in range(2))
    with pytest.raises(ValueError, match="stored"):
        C.joint_placement(gain, demand, cat, caps, np.zeros((3, 4), bool), first, copy)
