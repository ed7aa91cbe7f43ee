"""Model caching at an edge server: a catalogue of models that share parameter blocks, and the
classic replacement and placement policies over a request trace (the building blocks of the
edge model cache envs, issue #17).

A :class:`Catalogue` has blocks (sizes in bytes) and models, each a set of blocks: task models
that are LoRA adapters on one backbone share the backbone block, so a cache that holds several
of them stores it once (TrimCaching: Qu, Lin, Liu et al., 2024). A cache is a set of models; its
footprint is the bytes of the union of their blocks (:meth:`Catalogue.footprint`).

Replacement policies run on demand: a request for a cached model is a hit; on a miss the model
is fetched and inserted unless it alone exceeds the capacity (then it is served without being
kept), evicting cached models in the policy's order until the footprint fits.

* :func:`lru_hits`: evict the least recently requested model.
* :func:`lfu_hits`: evict the model with the fewest requests so far, counting the requests of
  models that were evicted since ("perfect" LFU); ties go to the least recently requested.
* :func:`belady_hits`: Belady's MIN for models of one size (Belady, IBM Systems Journal 5(2),
  1966), with bypass: on a miss with a full cache, of the cached models and the requested one
  the one requested again farthest in the future (or never) is left out. It maximises the hits of
  any policy, online or not, on the trace (Mattson, Gecsei, Slutz and Traiger, IBM Systems
  Journal 9(2), 1970); tests/core/test_caching.py checks it against an exhaustive search.
* :func:`static_placement`: the fixed set that maximises the summed value of its models within
  the capacity, shared blocks counted once: the MILP max sum v_i x_i s.t. x_i <= y_b for each
  block b of model i, sum_b bytes_b y_b <= C, x, y binary, solved exactly by HiGHS through
  ``scipy.optimize.milp`` (Huangfu and Hall, Math. Prog. Comp. 10, 2018). With value =
  popularity x quality gain it is the static popularity placement baseline of the issue.
* :func:`assignment_placement`: the same with each task served by its best cached model (a capacitated
  facility location: a model's value depends on the others cached) and a cost per stored block.
* :func:`joint_placement`: the caches of several edges at once, a model's first copy downloaded from the
  cloud and the others from a neighbour (the cooperative placement of CooperativeModelCache-v0).

Requests (:func:`zipf_pmf`, :func:`request_trace`): tasks are requested with Zipf popularity,
p_k proportional to k^-s over the popularity ranks k = 1..n (Breslau, Cao, Fan, Phillips and
Shenker, INFOCOM 1999: web requests follow Zipf with s of 0.64-0.83). Each user group ranks the
tasks its own way (its task mix); the ranking drifts by a swap of two neighbouring ranks at
random times (a Poisson process of ``swap_rate`` swaps per request), so a task's popularity
changes in steps while the shape of the distribution stays Zipf. A share ``private`` of the
requests carries sensitive data (Tian et al.: served by the task model straight from the cloud).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Catalogue:
    """``block_bytes[k]``: the size of block k; ``blocks[i]``: the blocks model i is made of;
    ``names[i]``: its name."""

    block_bytes: tuple[int, ...]
    blocks: tuple[tuple[int, ...], ...]
    names: tuple[str, ...]

    def __post_init__(self) -> None:
        sizes = np.asarray(self.block_bytes)
        if sizes.ndim != 1 or len(sizes) == 0 or not np.all(np.isfinite(sizes)) or np.any(sizes <= 0):
            raise ValueError(f"block_bytes: need one or more sizes > 0, got {self.block_bytes!r}")
        if len(self.names) != len(self.blocks) or len(set(self.names)) != len(self.names):
            raise ValueError(f"names: need one distinct name per model, got {self.names!r} for {len(self.blocks)}")
        for name, bs in zip(self.names, self.blocks, strict=True):
            if not bs or any(not 0 <= b < len(sizes) for b in bs) or len(set(bs)) != len(bs):
                raise ValueError(f"blocks of model {name!r}: need distinct block indices in [0, {len(sizes)}), "
                                 f"got {bs!r}")

    @classmethod
    def unshared(cls, model_bytes: Sequence[int], names: Sequence[str] | None = None) -> Catalogue:
        """Models that share nothing: model i is block i."""
        names = tuple(names) if names is not None else tuple(f"m{i}" for i in range(len(model_bytes)))
        return cls(tuple(int(b) for b in model_bytes), tuple((i,) for i in range(len(model_bytes))), names)

    @property
    def n_models(self) -> int:
        return len(self.blocks)

    def footprint(self, models: Iterable[int]) -> int:
        """Bytes stored to hold ``models``: every block of theirs, once."""
        used = {b for m in models for b in self.blocks[m]}
        return int(sum(self.block_bytes[b] for b in used))

    def model_bytes(self, model: int) -> int:
        """Bytes of one model on its own (what a fetch into an empty cache moves)."""
        return self.footprint((model,))


def _trace(trace: Sequence[int] | np.ndarray, n_models: int) -> list[int]:
    t = np.asarray(trace)
    if t.ndim != 1 or (t.size and not np.issubdtype(t.dtype, np.integer)):
        raise ValueError(f"trace: need a 1-d sequence of model indices, got {trace!r}")
    if t.size and (t.min() < 0 or t.max() >= n_models):
        raise ValueError(f"trace: model indices must be in [0, {n_models}), got {t.min()}..{t.max()}")
    return t.astype(np.int64).tolist()


def _capacity(capacity: float) -> float:
    c = float(capacity)
    if not np.isfinite(c) or c < 0:
        raise ValueError(f"capacity: need a finite number >= 0, got {capacity!r}")
    return c


def _evicting(trace: Sequence[int], catalogue: Catalogue, capacity: float, lfu: bool) -> np.ndarray:
    requests = _trace(trace, catalogue.n_models)
    cap = _capacity(capacity)
    cache: set[int] = set()
    last = [-1] * catalogue.n_models
    count = [0] * catalogue.n_models
    hits = np.zeros(len(requests), dtype=bool)
    for t, m in enumerate(requests):
        count[m] += 1
        if m in cache:
            hits[t] = True
        elif catalogue.model_bytes(m) <= cap:
            while catalogue.footprint(cache | {m}) > cap:
                victim = min(cache, key=(lambda i: (count[i], last[i])) if lfu else (lambda i: last[i]))
                cache.discard(victim)
            cache.add(m)
        last[m] = t
    return hits


def lru_hits(trace: Sequence[int] | np.ndarray, catalogue: Catalogue, capacity: float) -> np.ndarray:
    """Hit (True) or miss of each request of ``trace`` (model indices) under LRU within ``capacity`` bytes."""
    return _evicting(trace, catalogue, capacity, lfu=False)


def lfu_hits(trace: Sequence[int] | np.ndarray, catalogue: Catalogue, capacity: float) -> np.ndarray:
    """Hit or miss of each request under perfect LFU (ties: least recent) within ``capacity`` bytes."""
    return _evicting(trace, catalogue, capacity, lfu=True)


def belady_hits(trace: Sequence[int] | np.ndarray, n_models: int, capacity_models: int) -> np.ndarray:
    """Hit or miss of each request under Belady's MIN with bypass, for ``n_models`` models of one
    size and room for ``capacity_models`` of them: the most hits any policy gets on ``trace``."""
    if int(n_models) != n_models or n_models < 1:
        raise ValueError(f"n_models: need an integer >= 1, got {n_models!r}")
    if int(capacity_models) != capacity_models or capacity_models < 0:
        raise ValueError(f"capacity_models: need an integer >= 0, got {capacity_models!r}")
    requests = _trace(trace, int(n_models))
    never = len(requests)
    next_use = [never] * len(requests)
    seen = [never] * int(n_models)
    for t in range(len(requests) - 1, -1, -1):
        next_use[t] = seen[requests[t]]
        seen[requests[t]] = t
    cache: dict[int, int] = {}  # cached model -> its next request
    hits = np.zeros(len(requests), dtype=bool)
    for t, m in enumerate(requests):
        if m in cache:
            hits[t] = True
            cache[m] = next_use[t]
            continue
        if capacity_models == 0:
            continue
        if len(cache) < capacity_models:
            cache[m] = next_use[t]
            continue
        farthest = max(cache, key=cache.__getitem__)
        if cache[farthest] > next_use[t]:  # else the requested model is the one left out
            del cache[farthest]
            cache[m] = next_use[t]
    return hits


@dataclass(frozen=True)
class Placement:
    """``models``: the placed set (indices); ``value``: its summed value; ``footprint``: its bytes;
    ``status``: ``"optimal"``, or ``"fallback"`` with ``message`` when HiGHS did not prove optimality
    (then ``models`` is the greedy value-per-byte set, feasible but not certified)."""

    models: tuple[int, ...]
    value: float
    footprint: int
    status: str
    message: str = ""


def _greedy_placement(values: np.ndarray, catalogue: Catalogue, cap: float) -> tuple[int, ...]:
    chosen: set[int] = set()
    for m in np.argsort(-values / np.array([catalogue.model_bytes(i) for i in range(catalogue.n_models)]),
                        kind="stable"):
        if values[m] > 0 and catalogue.footprint(chosen | {int(m)}) <= cap:
            chosen.add(int(m))
    return tuple(sorted(chosen))


def static_placement(values: Sequence[float] | np.ndarray, catalogue: Catalogue, capacity: float,
                     time_limit_s: float = 10.0) -> Placement:
    """The set of models of largest summed ``values`` whose footprint fits ``capacity`` bytes (module docstring)."""
    from scipy.optimize import Bounds, LinearConstraint, milp

    v = np.asarray(values, dtype=np.float64)
    if v.shape != (catalogue.n_models,) or not np.all(np.isfinite(v)):
        raise ValueError(f"values: need {catalogue.n_models} finite numbers (one per model), got {values!r}")
    cap = _capacity(capacity)
    n, k = catalogue.n_models, len(catalogue.block_bytes)
    # variables: x_0..x_{n-1} (model placed), y_0..y_{k-1} (block stored)
    c = np.concatenate([-v, np.zeros(k)])
    rows = []
    for i, bs in enumerate(catalogue.blocks):
        for b in bs:
            row = np.zeros(n + k)
            row[i], row[n + b] = 1.0, -1.0
            rows.append(row)
    link = LinearConstraint(np.array(rows), -np.inf, 0.0)
    room = LinearConstraint(np.concatenate([np.zeros(n), np.asarray(catalogue.block_bytes, float)])[None], -np.inf, cap)
    res = milp(c, constraints=[link, room], integrality=np.ones(n + k), bounds=Bounds(0, 1),
               options={"time_limit": float(time_limit_s)})
    if res.status == 0 and res.x is not None:
        models = tuple(int(i) for i in np.flatnonzero(res.x[:n] > 0.5))
        status, message = "optimal", ""
    else:
        models = _greedy_placement(v, catalogue, cap)
        status, message = "fallback", f"HiGHS: {res.message}"
    return Placement(models, float(v[list(models)].sum()), catalogue.footprint(models), status, message)


def assignment_placement(gain: Sequence[Sequence[float]] | np.ndarray, demand: Sequence[float] | np.ndarray,
                         catalogue: Catalogue, capacity: float, block_cost: Sequence[float] | np.ndarray | None = None,
                         time_limit_s: float = 10.0) -> Placement:
    """The cache that maximises the demand-weighted gain of serving each task with its best cached model,
    less the cost of the blocks it stores, within ``capacity`` bytes (shared blocks counted once).

    ``gain[m, j]``: what serving one request of task j with model m earns over the fallback (the cloud;
    a negative gain is never taken); ``demand[j]``: the requests of task j expected; ``block_cost[b]``:
    the cost of storing block b (e.g. its download, 0 for a block already stored). The MILP (a
    capacitated facility location over shared blocks)::

        max  sum_j demand_j sum_m gain_mj z_mj - sum_b block_cost_b y_b
        s.t. z_mj <= x_m,  sum_m z_mj <= 1,  x_m <= y_b (b a block of m),  sum_b bytes_b y_b <= capacity,
             x, y binary, z in [0, 1]

    is solved by HiGHS through ``scipy.optimize.milp``; for a binary x the best z serves each task by
    its best cached model, so z needs no integrality. ``value`` is the objective; on a solver failure
    the status is ``"fallback"``: the greedy set of :func:`static_placement` on the summed positive gains.
    """
    from scipy.optimize import Bounds, LinearConstraint, milp

    g = np.asarray(gain, dtype=np.float64)
    n, k = catalogue.n_models, len(catalogue.block_bytes)
    if g.ndim != 2 or g.shape[0] != n or not np.all(np.isfinite(g)):
        raise ValueError(f"gain: need a finite ({n}, tasks) array, got shape {np.shape(gain)}")
    t = g.shape[1]
    d = np.asarray(demand, dtype=np.float64)
    if d.shape != (t,) or not np.all(np.isfinite(d)) or np.any(d < 0):
        raise ValueError(f"demand: need {t} finite numbers >= 0 (one per task), got {demand!r}")
    c_b = np.zeros(k) if block_cost is None else np.asarray(block_cost, dtype=np.float64)
    if c_b.shape != (k,) or not np.all(np.isfinite(c_b)):
        raise ValueError(f"block_cost: need {k} finite numbers (one per block), got {block_cost!r}")
    cap = _capacity(capacity)
    nz = n * t  # z_mj at n + k + m t + j
    size = n + k + nz
    c = np.zeros(size)
    c[n:n + k] = c_b
    c[n + k:] = -(np.clip(g, 0.0, None) * d[None, :]).ravel()
    rows = []
    for m in range(n):
        for j in range(t):
            row = np.zeros(size)
            row[n + k + m * t + j], row[m] = 1.0, -1.0
            rows.append(row)
        for b in catalogue.blocks[m]:
            row = np.zeros(size)
            row[m], row[n + b] = 1.0, -1.0
            rows.append(row)
    for j in range(t):
        row = np.zeros(size)
        row[n + k + j:size:t] = 1.0
        rows.append(row)
    room = np.zeros(size)
    room[n:n + k] = catalogue.block_bytes
    rows.append(room)
    hi = np.zeros(len(rows))
    hi[-t - 1:-1] = 1.0
    hi[-1] = cap
    integrality = np.concatenate([np.ones(n + k), np.zeros(nz)])
    res = milp(c, constraints=[LinearConstraint(np.array(rows), -np.inf, hi)], integrality=integrality,
               bounds=Bounds(0, 1), options={"time_limit": float(time_limit_s)})
    if res.status == 0 and res.x is not None:
        models = tuple(int(i) for i in np.flatnonzero(res.x[:n] > 0.5))
        return Placement(models, float(-res.fun), catalogue.footprint(models), "optimal")
    values = (np.clip(g, 0.0, None) * d[None, :]).sum(axis=1)
    models = _greedy_placement(values, catalogue, cap)
    return Placement(models, float(values[list(models)].sum()), catalogue.footprint(models), "fallback",
                     f"HiGHS: {res.message}")


def joint_placement(gain: np.ndarray, demand: np.ndarray, catalogue: Catalogue, capacities: Sequence[float],
                    stored: np.ndarray, first_cost: Sequence[float], copy_cost: Sequence[float],
                    time_limit_s: float = 10.0) -> tuple[tuple[tuple[int, ...], ...], float, str, str]:
    """The caches of E cooperating edges that maximise their summed gain less the downloads: each task of
    each edge served by its best model cached there (:func:`assignment_placement` per edge), a model held
    by no edge yet downloaded once from the cloud (``first_cost[m]``) and every other copy from a
    neighbour (``copy_cost[m]`` each), nothing for a model an edge holds already (``stored[e, m]``).

    ``gain`` (M, n) as in :func:`assignment_placement`; ``demand`` (E, n) each edge's expected requests;
    ``capacities`` (E,) bytes. The MILP adds u_m (the first copy of m comes from the cloud) with
    u_m >= x_em for every edge e when no edge holds m, and prices u_m (first - copy) + x_em copy. The
    download costs are per model (its blocks not counted as shared across models). Returns (the models
    of each edge, the objective, ``"optimal"`` or ``"fallback"``, HiGHS's message on a fallback: each
    edge's own :func:`assignment_placement` then).
    """
    from scipy.optimize import Bounds, LinearConstraint, milp

    g = np.asarray(gain, dtype=np.float64)
    d = np.asarray(demand, dtype=np.float64)
    held = np.asarray(stored, dtype=bool)
    caps = [_capacity(c) for c in capacities]
    m, k = catalogue.n_models, len(catalogue.block_bytes)
    e = len(caps)
    if g.ndim != 2 or g.shape[0] != m or not np.all(np.isfinite(g)):
        raise ValueError(f"gain: need a finite ({m}, tasks) array, got shape {np.shape(gain)}")
    t = g.shape[1]
    if d.shape != (e, t) or not np.all(np.isfinite(d)) or np.any(d < 0):
        raise ValueError(f"demand: need an ({e}, {t}) array of numbers >= 0, got shape {d.shape}")
    if held.shape != (e, m):
        raise ValueError(f"stored: need an ({e}, {m}) bool array, got shape {held.shape}")
    first, copy = np.asarray(first_cost, dtype=np.float64), np.asarray(copy_cost, dtype=np.float64)
    if first.shape != (m,) or copy.shape != (m,) or not (np.all(np.isfinite(first)) and np.all(np.isfinite(copy))):
        raise ValueError(f"first_cost, copy_cost: need {m} finite numbers each")
    nx, ny, nz = e * m, e * k, e * m * t
    size = nx + ny + nz + m  # x_em, y_eb, z_emj, u_m

    def xi(ei, mi):
        return ei * m + mi

    def yi(ei, b):
        return nx + ei * k + b

    def zi(ei, mi, j):
        return nx + ny + (ei * m + mi) * t + j

    c = np.zeros(size)
    rows, hi = [], []
    for ei in range(e):
        for mi in range(m):
            if not held[ei, mi]:
                c[xi(ei, mi)] = copy[mi]
            for j in range(t):
                c[zi(ei, mi, j)] = -max(g[mi, j], 0.0) * d[ei, j]
                row = np.zeros(size)
                row[zi(ei, mi, j)], row[xi(ei, mi)] = 1.0, -1.0
                rows.append(row)
                hi.append(0.0)
            for b in catalogue.blocks[mi]:
                row = np.zeros(size)
                row[xi(ei, mi)], row[yi(ei, b)] = 1.0, -1.0
                rows.append(row)
                hi.append(0.0)
        for j in range(t):
            row = np.zeros(size)
            for mi in range(m):
                row[zi(ei, mi, j)] = 1.0
            rows.append(row)
            hi.append(1.0)
        row = np.zeros(size)
        row[nx + ei * k:nx + (ei + 1) * k] = catalogue.block_bytes
        rows.append(row)
        hi.append(caps[ei])
    for mi in range(m):
        u = nx + ny + nz + mi
        if held[:, mi].any():
            continue  # a neighbour has it: every copy comes over the metro, u_m stays 0
        c[u] = first[mi] - copy[mi]
        for ei in range(e):
            row = np.zeros(size)
            row[xi(ei, mi)], row[u] = 1.0, -1.0
            rows.append(row)
            hi.append(0.0)
    integrality = np.concatenate([np.ones(nx + ny), np.zeros(nz), np.ones(m)])
    res = milp(c, constraints=[LinearConstraint(np.array(rows), -np.inf, np.array(hi))], integrality=integrality,
               bounds=Bounds(0, 1), options={"time_limit": float(time_limit_s)})
    if res.status == 0 and res.x is not None:
        x = res.x[:nx].reshape(e, m) > 0.5
        return tuple(tuple(int(i) for i in np.flatnonzero(x[ei])) for ei in range(e)), float(-res.fun), "optimal", ""
    own = [assignment_placement(g, d[ei], catalogue, caps[ei]).models for ei in range(e)]
    return tuple(own), float("nan"), "fallback", f"HiGHS: {res.message}"


def zipf_pmf(n: int, exponent: float) -> np.ndarray:
    """Zipf probabilities of the ranks 1..n: k^-s / sum_j j^-s."""
    if int(n) != n or n < 1:
        raise ValueError(f"n: need an integer >= 1, got {n!r}")
    if not np.isfinite(exponent) or exponent < 0:
        raise ValueError(f"exponent: need a finite number >= 0, got {exponent!r}")
    w = np.arange(1, int(n) + 1, dtype=np.float64) ** -float(exponent)
    return w / w.sum()


@dataclass(frozen=True)
class RequestTrace:
    """``task[t]``, ``group[t]`` and ``private[t]`` of each request t, and ``rank[t, g, :]`` the task
    at each popularity rank of group g when request t arrives."""

    task: np.ndarray
    group: np.ndarray
    private: np.ndarray
    rank: np.ndarray


def request_trace(rng: np.random.Generator, length: int, n_tasks: int, exponent: float,
                  group_weights: Sequence[float] = (1.0,), swap_rate: float = 0.0,
                  private: float = 0.0) -> RequestTrace:
    """``length`` requests (see the module docstring): a group by ``group_weights``, a task by the Zipf
    law of ``exponent`` over that group's current ranking (each group starts from its own random
    permutation), swaps of neighbouring ranks at ``swap_rate`` per request and group, and a private
    flag with probability ``private``."""
    if int(length) != length or length < 0:
        raise ValueError(f"length: need an integer >= 0, got {length!r}")
    pmf = zipf_pmf(n_tasks, exponent)
    w = np.asarray(group_weights, dtype=np.float64)
    if w.ndim != 1 or len(w) == 0 or not np.all(np.isfinite(w)) or np.any(w < 0) or w.sum() <= 0:
        raise ValueError(f"group_weights: need one or more finite weights >= 0, not all 0, got {group_weights!r}")
    if not np.isfinite(swap_rate) or swap_rate < 0:
        raise ValueError(f"swap_rate: need a finite number >= 0, got {swap_rate!r}")
    if not 0.0 <= private <= 1.0:
        raise ValueError(f"private: need a probability in [0, 1], got {private!r}")
    length, n, groups = int(length), int(n_tasks), len(w)
    ranking = np.stack([rng.permutation(n) for _ in range(groups)])
    group = rng.choice(groups, size=length, p=w / w.sum())
    rank_drawn = rng.choice(n, size=length, p=pmf)
    swaps = rng.poisson(swap_rate, size=(length, groups)) if swap_rate > 0 else np.zeros((length, groups), int)
    at = rng.integers(0, max(n - 1, 1), size=(length, groups, max(int(swaps.max(initial=0)), 1)))
    rank = np.empty((length, groups, n), dtype=np.int64)
    task = np.empty(length, dtype=np.int64)
    for t in range(length):
        for g in range(groups):
            for i in range(swaps[t, g] if n > 1 else 0):
                k = at[t, g, i]
                ranking[g, k], ranking[g, k + 1] = ranking[g, k + 1], ranking[g, k]
        rank[t] = ranking
        task[t] = ranking[group[t], rank_drawn[t]]
    return RequestTrace(task, group, rng.random(length) < private, rank)
