"""EdgeModelCache-v0 defined once: an edge server's toolbox of task models, serving one request per step.

The catalogue (:func:`~edgelam.envs.lam.toolbox.toolbox_catalogue`) holds M models in the order
``device`` (small general), ``edge`` (general), ``edge+<task>`` (one task model per task), ``cloud``
(big general), each a set of parameter blocks priced at the size of a real model card; the edge
caches a set of them (a bitmask over the M models) whose footprint, the bytes of the union of their
blocks, stays within ``capacity_bytes``. A request is a held-out window of its task's code; the
quality of serving it with model m is m's real teacher-forced top-1 accuracy on that window
(the per-window toolbox profile, :func:`~edgelam.envs.lam.toolbox.measure_windows`).

One step serves one request with action ``a = serve * (M + 1) + op``:

* ``serve < M``: the edge runs model ``serve``. Cached: a hit. Not cached: its missing blocks are
  downloaded over the backhaul first (latency += backhaul RTT + bytes 8 / rate), then it runs and
  joins the cache if it fits after the op (else it is served and dropped, a bypass).
  latency = access up + access RTT + t_edge(m) + access down; edge energy = P_active t_edge(m).
* ``serve = M``: forward to the cloud: latency = access up + access RTT + WAN RTT + t_cloud + access
  down, cloud cost = (T + N) x price per token, no edge energy; a private request forwarded is a
  privacy violation (its data left the edge; Tian et al. serve such queries at the edge).
* ``op < M`` toggles model ``op`` after serving: cached -> evicted; not cached -> prefetched over
  the idle backhaul (its missing bytes downloaded, resident from the next request; only if it fits,
  else nothing is fetched); ``op = serve`` on a fetched model drops it after serving. ``op = M``: none.

Compute is the roofline time of prefill (T tokens) and N - 1 decode steps with the LM head on the
card and hardware (:func:`edgelam.envs.offload.dynamics.generation_time_s`; Williams et al., CACM
2009; Pope et al., MLSys 2023); a task model runs at the backbone's price (LoRA merged, or rank-8
matmuls beside the projections: under 1% of their FLOPs). Requests follow drifting Zipf popularity
per user group (Breslau et al., INFOCOM 1999; :mod:`edgelam.envs.core.caching`); the backhaul rate
and the WAN RTT are log-normal AR(1) processes (:func:`edgelam.envs.core.load.lognormal_ar1_block`).
Budget virtual queue: Neely 2010.

The simulator is written once over a batched :class:`State` of B edges: :func:`initial` starts
episodes, :func:`advance` serves every row's pending request in place, :func:`observation` is what an
edge sees. One request of one row is :func:`serve`, compiled by numba; the step loop and the
hindsight DP (:mod:`edgelam.baselines.model_cache_hindsight`) both call it. Exogenous randomness
(requests, windows, privacy, drift, backhaul rate, WAN RTT) is drawn in blocks of ``CHUNK``
requests for the B rows at once, in one fixed order, whatever the actions.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from edgelam.envs.core.caching import Catalogue, zipf_pmf
from edgelam.envs.core.jit import njit, virtual_queue_step
from edgelam.envs.core.load import lognormal_ar1_block
from edgelam.envs.model_cache.config import ModelCacheConfig, model_names

CHUNK = 256  # exogenous randomness is drawn in blocks of this many requests
QUEUE_SCALE = 10.0  # observation: virtual queue / (QUEUE_SCALE budget)
GB = 1e9


@dataclass(frozen=True)
class Tables:
    """What the scenario prices, per model (M) and per window (W of the scenario's tasks)."""

    names: tuple[str, ...]  # the M cacheable models
    catalogue: Catalogue
    footprint: np.ndarray  # (2^M,) bytes stored by each cache mask
    missing: np.ndarray  # (2^M, M) bytes of model m not yet stored by a mask (what fetching it moves)
    compute_s: np.ndarray  # (M,) time to serve a request on the edge hardware
    energy_j: np.ndarray  # (M,) edge energy of that
    cloud_s: float  # time to serve it in the cloud (the big card on the cloud hardware)
    cloud_usd: float  # cloud price of a request
    access_s: float  # access up + RTT + down of a request between its user and the edge
    top1: np.ndarray  # (M, W) teacher-forced top-1 accuracy of each model on each window
    win_start: np.ndarray  # (n_tasks,) first window of each task (rows of top1's axis 1)
    win_count: np.ndarray  # (n_tasks,) windows of each task
    window_index: np.ndarray  # (W,) each window's index in its task's held-out set (live backend)


def build_tables(cfg: ModelCacheConfig) -> Tables:
    """Price every model of ``cfg``'s catalogue and read the per-window quality profile."""
    from edgelam.envs.core.hardware import load_hardware_catalog
    from edgelam.envs.core.model_cards import get_model_card
    from edgelam.envs.lam.toolbox import load_windows, toolbox_catalogue
    from edgelam.envs.offload.dynamics import generation_time_s

    tasks = cfg.requests.tasks
    names = model_names(tasks)
    c = cfg.cards
    small, backbone, big = get_model_card(c.small), get_model_card(c.backbone), get_model_card(c.big)
    cat = toolbox_catalogue(tasks, backbone, small, c.weight_bits, c.adapter_bits, big=big,
                            merged=c.task_models == "merged")
    assert cat.names == names
    m = cat.n_models
    footprint = np.array([cat.footprint([i for i in range(m) if mask >> i & 1]) for mask in range(1 << m)],
                         dtype=np.float64)
    missing = np.empty((1 << m, m))
    for mask in range(1 << m):
        for i in range(m):
            missing[mask, i] = footprint[mask | 1 << i] - footprint[mask]
    hw = load_hardware_catalog()
    edge, cloud = hw[cfg.edge_hardware], hw[cfg.cloud_hardware]
    t = np.array([cfg.prompt_tokens])
    cards = [small, backbone, *([backbone] * len(tasks)), big]
    compute = np.array([generation_time_s(edge, card, t, cfg.decode_tokens, c.weight_bits)[0] for card in cards])
    cloud_s = float(generation_time_s(cloud, big, t, cfg.decode_tokens, cfg.cloud_weight_bits)[0])
    up = 8.0 * (cfg.prompt_tokens * cfg.token_id_bytes + cfg.request_overhead_bytes) / cfg.access_rate_bps
    down = 8.0 * cfg.decode_tokens * cfg.token_id_bytes / cfg.access_rate_bps
    prof = load_windows(cfg.windows_path)
    missing_rows = [n for n in names if n not in prof.models]
    if missing_rows:
        raise ValueError(f"windows_path: the profile has no rows for {missing_rows} (rows: {', '.join(prof.models)})")
    rows = [prof.models.index(n) for n in names]
    sel = [prof.windows_of(prof.tasks.index(task)) for task in tasks]
    counts = np.array([len(s) for s in sel], dtype=np.int64)
    if np.any(counts == 0):
        empty = [t for t, k in zip(tasks, counts, strict=True) if k == 0]
        raise ValueError(f"windows_path: no held-out windows for task(s) {empty}")
    cols = np.concatenate(sel)
    return Tables(
        names=names,
        catalogue=cat,
        footprint=footprint,
        missing=missing,
        compute_s=compute,
        energy_j=edge.power_active_w * compute,
        cloud_s=cloud_s,
        cloud_usd=(cfg.prompt_tokens + cfg.decode_tokens) * cfg.cloud_price_usd_per_token,
        access_s=up + cfg.access_rtt_s + down,
        top1=np.ascontiguousarray(prof.top1[rows][:, cols]),
        win_start=np.concatenate([[0], np.cumsum(counts)[:-1]]).astype(np.int64),
        win_count=counts,
        window_index=prof.index[cols],
    )


# the scalars of Params.consts, and their positions, which the kernels read them by
_CONSTS = ("quality_weight", "latency_weight", "energy_weight_per_j", "cloud_cost_weight_per_usd",
           "backhaul_weight_per_gb", "privacy_penalty", "backhaul_rtt_s", "access_s", "cloud_s",
           "cloud_usd", "has_budget", "budget", "budget_bytes", "popularity_decay", "rate_mean_bps", "rtt_mean_s",
           "metro_rate_bps", "metro_rtt_s", "metro_weight_per_gb", "episode_length", "horizon")
(_QUALITY_W, _LATENCY_W, _ENERGY_W, _CLOUD_W, _BACKHAUL_W, _PRIVACY_W, _BACKHAUL_RTT, _ACCESS, _CLOUD_S,
 _CLOUD_USD, _HAS_BUDGET, _BUDGET, _BUDGET_BYTES, _DECAY, _RATE_MEAN, _RTT_MEAN, _METRO_RATE, _METRO_RTT, _METRO_W,
 _EPISODE, _HORIZON) = range(len(_CONSTS))


@dataclass(frozen=True)
class Params:
    """What one scenario fixes, as the arrays the kernels read; :meth:`build`."""

    config: ModelCacheConfig
    tables: Tables
    consts: np.ndarray
    rank_cdf: np.ndarray  # (n_tasks,) Zipf CDF over the popularity ranks
    group_cdf: np.ndarray  # (G,) CDF of the user groups
    initial_mask: int  # the cache at each episode's start

    @classmethod
    def build(cls, config: ModelCacheConfig, tables: Tables | None = None, horizon: int | None = None) -> Params:
        cfg, w, budget = config, config.reward, config.budget.per_request
        metro = getattr(cfg, "metro", None)
        t = build_tables(cfg) if tables is None else tables
        mask = 0
        for name in cfg.initial_cache or ():
            mask |= 1 << t.names.index(name)
        if t.footprint[mask] > cfg.capacity_bytes:
            raise ValueError(f"initial_cache: {list(cfg.initial_cache or ())} take {t.footprint[mask]:.4g} B, "
                             f"more than capacity_bytes {cfg.capacity_bytes:.4g}")
        values = {
            "quality_weight": w.quality_weight, "latency_weight": w.latency_weight,
            "energy_weight_per_j": w.energy_weight_per_j, "cloud_cost_weight_per_usd": w.cloud_cost_weight_per_usd,
            "backhaul_weight_per_gb": w.backhaul_weight_per_gb, "privacy_penalty": w.privacy_penalty,
            "backhaul_rtt_s": cfg.backhaul.rtt_s, "access_s": t.access_s,
            "cloud_s": t.cloud_s, "cloud_usd": t.cloud_usd, "has_budget": float(budget is not None),
            "budget": 0.0 if budget is None else budget,
            "budget_bytes": float(cfg.budget.metric == "backhaul_bytes"),
            "popularity_decay": cfg.requests.popularity_decay, "rate_mean_bps": cfg.backhaul.rate_mean_bps,
            "rtt_mean_s": cfg.wan.rtt_mean_s, "episode_length": float(cfg.episode_length),
            # a neighbour's copy (CooperativeModelCache-v0; the single edge has none: never read there)
            "metro_rate_bps": metro.rate_bps if metro else 1.0, "metro_rtt_s": metro.rtt_s if metro else 0.0,
            "metro_weight_per_gb": metro.weight_per_gb if metro else 0.0,
            "horizon": float(cfg.episode_length if horizon is None else horizon),
        }
        pmf = zipf_pmf(len(cfg.requests.tasks), cfg.requests.zipf_exponent)
        g = np.asarray(cfg.requests.group_weights, dtype=np.float64)
        return cls(cfg, t, np.array([values[k] for k in _CONSTS], dtype=np.float64), np.cumsum(pmf),
                   np.cumsum(g / g.sum()), mask)

    @property
    def num_models(self) -> int:
        """M."""
        return len(self.tables.names)

    @property
    def num_tasks(self) -> int:
        return len(self.config.requests.tasks)

    @property
    def num_groups(self) -> int:
        return len(self.group_cdf)

    @property
    def num_actions(self) -> int:
        """(M + 1)^2: serve option x op."""
        return (self.num_models + 1) ** 2

    @property
    def obs_dim(self) -> int:
        """Observation length (layout in the env docstring)."""
        return 2 * self.num_tasks + self.num_groups + self.num_models + 6

    @property
    def obs_high(self) -> np.ndarray:
        """(obs_dim,) float32 upper bounds of the observation (0 below): 1 for the one-hot, bit and share
        entries; rate / mean and RTT / mean clipped at 10, the queue entry at 100, the elapsed fraction 1."""
        high = np.ones(self.obs_dim, np.float32)
        high[-4:] = (10.0, 10.0, 100.0, 1.0)
        return high

    @property
    def has_budget(self) -> bool:
        return self.config.budget.per_request is not None


@njit
def serve(consts, capacity, footprint, missing, compute_s, energy_j, top1, mask, action, window, private, rate_bps,
          rtt_s, neighbour):
    """One request served from cache ``mask`` (of an edge storing at most ``capacity`` bytes) with ``action``
    (module docstring), in Python numbers.

    ``neighbour``: bitmask of the models a neighbouring edge holds (CooperativeModelCache-v0; 0 for a
    lone edge): those are downloaded over the metro link (its RTT, rate and price per GB) instead of
    the backhaul.

    Returns (reward, next mask, latency_s, energy_j, cloud_cost_usd, backhaul_bytes, quality, hit, kept,
    prefetched, privacy_violation, cost, metro_bytes): ``hit`` 1 when the request was served from the
    toolbox (a cached model), else 0 (downloaded or forwarded: the hit ratio is its mean); ``kept`` 1
    when a downloaded model joined the cache (0 dropped, -1 nothing downloaded); ``prefetched`` 1 when
    the op prefetched a model (0 it did not fit, -1 no prefetch asked); ``cost`` the budgeted metric
    (backhaul bytes, not metro ones, or the edge energy).
    """
    m = compute_s.shape[0]
    s, op = action // (m + 1), action % (m + 1)
    new = mask
    usd = 0.0
    fetched = 0.0
    metro = 0.0
    hit = 0.0
    kept = -1.0
    prefetched = -1.0
    violation = 0.0
    if s == m:
        latency = consts[_ACCESS] + rtt_s + consts[_CLOUD_S]
        energy = 0.0
        usd = consts[_CLOUD_USD]
        quality = top1[m - 1, window]
        violation = 1.0 if private else 0.0
    else:
        latency = consts[_ACCESS] + compute_s[s]
        energy = energy_j[s]
        quality = top1[s, window]
        hit = 1.0 if (mask >> s) & 1 else 0.0
        if hit == 0.0:  # a download before serving
            if (neighbour >> s) & 1:
                metro = missing[mask, s]
                latency += consts[_METRO_RTT] + metro * 8.0 / consts[_METRO_RATE]
            else:
                fetched = missing[mask, s]
                latency += consts[_BACKHAUL_RTT] + fetched * 8.0 / rate_bps
    prefetch = -1
    if op < m:
        if (mask >> op) & 1:
            new = new & ~(1 << op)
        elif op != s:
            prefetch = op
    if s < m and hit == 0.0:  # the downloaded model joins the cache if it fits
        kept = 0.0
        if op != s and footprint[new | (1 << s)] <= capacity:
            new = new | (1 << s)
            kept = 1.0
    if prefetch >= 0:
        prefetched = 0.0
        if footprint[new | (1 << prefetch)] <= capacity:
            if (neighbour >> prefetch) & 1:
                metro += missing[new, prefetch]
            else:
                fetched += missing[new, prefetch]
            new = new | (1 << prefetch)
            prefetched = 1.0
    reward = (consts[_QUALITY_W] * quality - consts[_LATENCY_W] * latency - consts[_ENERGY_W] * energy
              - consts[_CLOUD_W] * usd - consts[_BACKHAUL_W] * fetched / GB - consts[_METRO_W] * metro / GB
              - consts[_PRIVACY_W] * violation)
    cost = fetched if consts[_BUDGET_BYTES] > 0.0 else energy
    return reward, new, latency, energy, usd, fetched, quality, hit, kept, prefetched, violation, cost, metro


@njit
def cheapest_download(consts, rate_bps):
    """A copy of ``consts`` whose metro link is the cheaper of the backhaul (at ``rate_bps``) and the metro
    on every count -- the larger rate, the smaller RTT and price per GB -- so that :func:`serve` with
    every model at a neighbour prices each download at no more than either source: the relaxation of
    CooperativeModelCache-v0's hindsight bound."""
    out = consts.copy()
    out[_METRO_RATE] = max(consts[_METRO_RATE], rate_bps)
    out[_METRO_RTT] = min(consts[_METRO_RTT], consts[_BACKHAUL_RTT])
    out[_METRO_W] = min(consts[_METRO_W], consts[_BACKHAUL_W])
    return out


@dataclass(frozen=True, slots=True)
class Exogenous:
    """The next ``CHUNK`` requests of B edges, drawn ahead (what no decision changes); arrays (B, CHUNK)
    (``swap`` and ``swap_at``: (B, CHUNK, G)). ``task``, ``window`` and the rank-dependent values are
    derived from the uniforms and the groups' rankings (:func:`_derive_requests`)."""

    u_group: np.ndarray  # uniform: the request's user group
    u_rank: np.ndarray  # uniform: its popularity rank (Zipf)
    u_window: np.ndarray  # uniform: which held-out window of its task
    private: np.ndarray  # bool: carries sensitive data
    swap: np.ndarray  # bool (B, CHUNK, G): before this request, two neighbouring ranks of group g swap
    swap_at: np.ndarray  # int (B, CHUNK, G): the upper of the two ranks
    rate_shock: np.ndarray  # N(0, 1) innovations of the backhaul's log-rate AR(1)
    rtt_shock: np.ndarray  # N(0, 1) innovations of the WAN's log-RTT AR(1)
    group: np.ndarray  # int
    task: np.ndarray  # int
    window: np.ndarray  # int, column of Tables.top1
    rate_bps: np.ndarray  # backhaul rate
    rtt_s: np.ndarray  # WAN round trip

    def copy(self) -> Exogenous:
        return Exogenous(*(getattr(self, f).copy() for f in Exogenous.__slots__))


@njit
def _derive_requests(rows, k0, ranking, u_rank, rank_cdf, group, u_window, swap, swap_at, win_start, win_count,
                     task, window):
    """For rows ``rows`` from slot ``k0`` on: apply each slot's swaps to the groups' ``ranking`` (B, G, n)
    in place, then draw the task at the Zipf rank of ``u_rank`` in the request's group and its window."""
    n = ranking.shape[2]
    for b in rows:
        for k in range(k0, u_rank.shape[1]):
            for g in range(ranking.shape[1]):
                if swap[b, k, g] and n > 1:
                    i = swap_at[b, k, g]
                    ranking[b, g, i], ranking[b, g, i + 1] = ranking[b, g, i + 1], ranking[b, g, i]
            r = 0
            while r < n - 1 and u_rank[b, k] >= rank_cdf[r]:
                r += 1
            j = ranking[b, group[b, k], r]
            task[b, k] = j
            window[b, k] = win_start[j] + min(int(u_window[b, k] * win_count[j]), win_count[j] - 1)


def draw_exogenous(rng: np.random.Generator, params: Params, ranking: np.ndarray, z_rate: np.ndarray,
                   z_rtt: np.ndarray) -> tuple[Exogenous, np.ndarray, np.ndarray]:
    """Draw the next ``CHUNK`` requests of B edges; returns (block, last log-rate latent, last log-RTT latent).

    Random draws in this order: group uniforms (B, n), rank uniforms, window uniforms, private
    uniforms, swap uniforms (B, n, G), swap positions, rate shocks (B, n), RTT shocks (B, n). The
    rankings (B, G, tasks) are advanced in place through the block's swaps.
    """
    cfg, b, n, g = params.config, ranking.shape[0], CHUNK, params.num_groups
    u_group, u_rank, u_window = rng.random((b, n)), rng.random((b, n)), rng.random((b, n))
    private = rng.random((b, n)) < cfg.requests.private_share
    swap = rng.random((b, n, g)) < cfg.requests.swap_prob
    swap_at = rng.integers(0, max(params.num_tasks - 1, 1), size=(b, n, g))
    rate_shock, rtt_shock = rng.standard_normal((b, n)), rng.standard_normal((b, n))
    group = np.minimum(np.searchsorted(params.group_cdf, u_group, side="right"), g - 1).astype(np.int64)
    bh, wan = cfg.backhaul, cfg.wan
    rate, z_rate = lognormal_ar1_block(bh.rate_mean_bps, bh.log_std, bh.corr, rate_shock, z_rate)
    rtt, z_rtt = lognormal_ar1_block(wan.rtt_mean_s, wan.rtt_log_std, wan.corr, rtt_shock, z_rtt)
    task = np.empty((b, n), dtype=np.int64)
    window = np.empty((b, n), dtype=np.int64)
    t = params.tables
    _derive_requests(np.arange(b), 0, ranking, u_rank, params.rank_cdf, group, u_window, swap, swap_at, t.win_start,
                     t.win_count, task, window)
    blk = Exogenous(u_group, u_rank, u_window, private, swap, swap_at, rate_shock, rtt_shock, group, task, window,
                    rate, rtt)
    return blk, z_rate, z_rtt


@dataclass(frozen=True, slots=True)
class Starts:
    """How n new episodes start, arrays with a leading axis n; :func:`draw_starts`."""

    ranking: np.ndarray  # (n, G, tasks) each group's task at each popularity rank
    z_rate: np.ndarray  # (n,) backhaul log-rate latent
    z_rtt: np.ndarray  # (n,) WAN log-RTT latent

    def take(self, rows: slice) -> Starts:
        return Starts(*(getattr(self, f)[rows] for f in Starts.__slots__))


def draw_starts(rng: np.random.Generator, params: Params, n: int) -> Starts:
    """Initial states of ``n`` episodes. Draws in this order: ranking uniforms (n, G, tasks) (each
    group's ranking is their argsort: a uniform random permutation), rate latents (n,), RTT latents (n,)."""
    ranking = np.argsort(rng.random((n, params.num_groups, params.num_tasks)), axis=-1).astype(np.int64)
    return Starts(ranking, rng.standard_normal(n), rng.standard_normal(n))


@dataclass(slots=True)
class State:
    """B edges, each at its pending request (slot ``slot`` of the block ``requests``); written in place."""

    step: np.ndarray  # (B,) int, requests served in the episode
    cache: np.ndarray  # (B,) int, bitmask of the cached models
    virtual_queue: np.ndarray  # (B,)
    popularity: np.ndarray  # (B, tasks) exponential average of the requested tasks
    last_rtt_s: np.ndarray  # (B,) WAN RTT measured on the last forwarded request (the mean before any)
    ranking: np.ndarray  # (B, G, tasks) the groups' rankings at the block's end
    z_rate: np.ndarray  # (B,) latents at the block's last slot
    z_rtt: np.ndarray
    requests: Exogenous
    slot: int

    @property
    def num_rows(self) -> int:
        return len(self.step)

    def copy(self) -> State:
        return State(*(getattr(self, f).copy() if f != "slot" else self.slot for f in State.__slots__))

    def pending(self, field: str) -> np.ndarray:
        """(B,) the pending request's entry of the block's ``field``."""
        return getattr(self.requests, field)[:, self.slot]


def initial(params: Params, rng: np.random.Generator, n: int) -> State:
    """New episodes of ``n`` edges: the scenario's initial cache, uniform popularity, empty virtual queue,
    the first block of requests. Draws :func:`draw_starts`, then :func:`draw_exogenous`."""
    s = draw_starts(rng, params, n)
    ranking = s.ranking.copy()
    blk, z_rate, z_rtt = draw_exogenous(rng, params, ranking, s.z_rate, s.z_rtt)
    return State(
        step=np.zeros(n, dtype=np.int64),
        cache=np.full(n, params.initial_mask, dtype=np.int64),
        virtual_queue=np.zeros(n),
        popularity=np.full((n, params.num_tasks), 1.0 / params.num_tasks),
        last_rtt_s=np.full(n, params.config.wan.rtt_mean_s),
        ranking=ranking,
        z_rate=z_rate,
        z_rtt=z_rtt,
        requests=blk,
        slot=0,
    )


def restart_rows(params: Params, state: State, rows: np.ndarray, starts: Starts) -> None:
    """New episodes for rows ``rows`` from the pending slot on, in place: their requests of the block's
    remaining slots are re-derived from their new rankings (the uniforms kept, they are i.i.d.), their
    rates and RTTs from their new latents."""
    cfg, s, k, t = params.config, state, state.slot, params.tables
    blk = s.requests
    sub = np.ix_(rows, np.arange(k, CHUNK))
    s.ranking[rows] = starts.ranking
    _derive_requests(rows, k, s.ranking, blk.u_rank, params.rank_cdf, blk.group, blk.u_window, blk.swap,
                     blk.swap_at, t.win_start, t.win_count, blk.task, blk.window)
    bh, wan = cfg.backhaul, cfg.wan
    blk.rate_bps[sub], s.z_rate[rows] = lognormal_ar1_block(bh.rate_mean_bps, bh.log_std, bh.corr,
                                                            blk.rate_shock[sub], starts.z_rate)
    blk.rtt_s[sub], s.z_rtt[rows] = lognormal_ar1_block(wan.rtt_mean_s, wan.rtt_log_std, wan.corr,
                                                        blk.rtt_shock[sub], starts.z_rtt)
    s.step[rows] = 0
    s.cache[rows] = params.initial_mask
    s.virtual_queue[rows] = 0.0
    s.popularity[rows] = 1.0 / params.num_tasks
    s.last_rtt_s[rows] = cfg.wan.rtt_mean_s


# what a step did, one row per column of Outcome.table: its info key, then reward, cost, truncated
OUTCOME_ROWS = ("latency_s", "energy_j", "quality", "cloud_cost_usd", "backhaul_bytes", "hit", "kept", "prefetched",
                "privacy_violation", "model", "task", "private", "cached_bytes", "backhaul_rate_bps",
                "virtual_queue", "reward", "cost", "truncated", "metro_bytes")
_NUM_OUTCOMES = len(OUTCOME_ROWS)
_NO_VALUES = np.zeros(0)


@njit
def _step_rows(actions, k, consts, capacity, footprint, missing, compute_s, energy_j, top1, quality_in, neighbour, task,
               window, private, rate, rtt, step, cache, virtual_queue, popularity, last_rtt, out):
    """Serve every row's pending request (slot ``k``) with ``actions[b]`` (:func:`serve`), in place.
    ``quality_in`` (B,) replaces the profile's quality when not empty (the live backend); ``neighbour``
    (B,) the models each row's neighbours hold (zeros for lone edges); ``capacity`` (B,) each row's storage."""
    m = compute_s.shape[0]
    n_actions = (m + 1) * (m + 1)
    for b in range(actions.shape[0]):  # checked before any row changes
        if actions[b] < 0 or actions[b] >= n_actions:
            raise ValueError("actions: each action is serve * (M + 1) + op in [0, (M + 1)^2)")
    decay, has_budget, budget, horizon = consts[_DECAY], consts[_HAS_BUDGET] > 0.0, consts[_BUDGET], consts[_HORIZON]
    for b in range(actions.shape[0]):
        a = actions[b]
        (reward, new, latency, energy, usd, fetched, quality, hit, kept, prefetched, violation, cost,
         metro) = serve(consts, capacity[b], footprint, missing, compute_s, energy_j, top1, cache[b], a,
                        window[b, k], private[b, k], rate[b, k], rtt[b, k], neighbour[b])
        if quality_in.shape[0]:
            reward += consts[_QUALITY_W] * (quality_in[b] - quality)
            quality = quality_in[b]
        if has_budget:
            virtual_queue[b] = virtual_queue_step(virtual_queue[b], cost, budget)
        j = task[b, k]
        for i in range(popularity.shape[1]):
            popularity[b, i] = (1.0 - decay) * popularity[b, i] + (decay if i == j else 0.0)
        if a // (m + 1) == m:
            last_rtt[b] = rtt[b, k]
        cache[b] = new
        step[b] += 1
        out[0, b], out[1, b], out[2, b], out[3, b], out[4, b] = latency, energy, quality, usd, fetched
        out[5, b], out[6, b], out[7, b], out[8, b], out[9, b] = hit, kept, prefetched, violation, a // (m + 1)
        out[10, b], out[11, b], out[12, b], out[13, b] = j, private[b, k], footprint[new], rate[b, k]
        out[14, b], out[15, b], out[16, b], out[17, b] = virtual_queue[b], reward, cost, step[b] >= horizon
        out[18, b] = metro


@njit
def _observe(k, consts, capacity, footprint, task, private, group, rate, step, cache, virtual_queue, popularity,
             last_rtt, obs):
    """Fill ``obs`` (B, D) float32 with every row's view of its pending request (slot ``k``; env docstring)."""
    n, m = popularity.shape[1], 0
    while (1 << m) < footprint.shape[0]:
        m += 1
    g = obs.shape[1] - 2 * n - m - 6
    budget = consts[_BUDGET]
    for b in range(obs.shape[0]):
        for i in range(obs.shape[1]):
            obs[b, i] = 0.0
        obs[b, task[b, k]] = 1.0
        obs[b, n] = 1.0 if private[b, k] else 0.0
        obs[b, n + 1 + group[b, k]] = 1.0
        base = n + 1 + g
        for i in range(m):
            obs[b, base + i] = 1.0 if (cache[b] >> i) & 1 else 0.0
        base += m
        obs[b, base] = max(capacity[b] - footprint[cache[b]], 0.0) / capacity[b]
        for i in range(n):
            obs[b, base + 1 + i] = popularity[b, i]
        base += 1 + n
        obs[b, base] = min(rate[b, k] / consts[_RATE_MEAN], 10.0)
        obs[b, base + 1] = min(last_rtt[b] / consts[_RTT_MEAN], 10.0) if consts[_RTT_MEAN] > 0.0 else 0.0
        obs[b, base + 2] = min(virtual_queue[b] / (QUEUE_SCALE * budget), 100.0) if budget > 0.0 else 0.0
        obs[b, base + 3] = step[b] / consts[_EPISODE]


def observation(params: Params, state: State, capacity: np.ndarray | None = None) -> np.ndarray:
    """(B, D) float32 observation of every row's pending request (layout in the env docstring); ``capacity``
    (B,) each row's storage (default: the scenario's ``capacity_bytes``)."""
    s, blk = state, state.requests
    obs = np.empty((s.num_rows, params.obs_dim), dtype=np.float32)
    capacity = np.full(s.num_rows, params.config.capacity_bytes) if capacity is None else capacity
    _observe(s.slot, params.consts, capacity, params.tables.footprint, blk.task, blk.private, blk.group, blk.rate_bps,
             s.step, s.cache, s.virtual_queue, s.popularity, s.last_rtt_s, obs)
    return obs


@dataclass(slots=True)
class Outcome:
    """What one step did in each row (rows :data:`OUTCOME_ROWS`) and the observation of the next request."""

    table: np.ndarray
    observation: np.ndarray

    @property
    def reward(self) -> np.ndarray:
        return self.table[15]

    @property
    def cost(self) -> np.ndarray:
        return self.table[16]

    @property
    def truncated(self) -> np.ndarray:
        return self.table[17] > 0.0

    def info(self, params: Params) -> dict[str, np.ndarray]:
        """The step's ``info`` arrays (B,), in the single env's order."""
        t = self.table
        info = {key: t[i] for i, key in enumerate(OUTCOME_ROWS[:9])}
        info["model"] = np.asarray((*params.tables.names, "cloud_forward"))[t[9].astype(np.int64)]
        info["task"] = t[10].astype(np.int64)
        info["private"] = t[11] > 0.0
        info["cached_bytes"] = t[12]
        info["backhaul_rate_bps"] = t[13]
        if params.has_budget:
            info["virtual_queue"] = t[14]
        info["cost"] = t[16]
        return info


def advance(params: Params, state: State, actions: np.ndarray, rng: np.random.Generator,
            quality: np.ndarray | None = None, neighbour: np.ndarray | None = None,
            capacity: np.ndarray | None = None) -> Outcome:
    """Serve every row's pending request with its action, writing ``state`` in place; what the step did.

    Raises:
        ValueError: if ``actions`` is not an int array (B,) of actions in [0, (M + 1)^2); the state is
            left as it was.
    """
    s, t = state, params.tables
    blk = s.requests
    b = len(s.step)
    if actions.shape != (b,) or actions.dtype.kind not in "iu":
        raise ValueError(f"actions: expected an int array of {b} actions, got {actions!r}")
    if quality is not None and quality.shape != (b,):
        raise ValueError(f"quality: expected shape ({b},), got {quality.shape}")
    table = np.empty((_NUM_OUTCOMES, b))
    neighbour = np.zeros(b, dtype=np.int64) if neighbour is None else neighbour
    capacity = np.full(b, params.config.capacity_bytes) if capacity is None else capacity
    _step_rows(actions, s.slot, params.consts, capacity, t.footprint, t.missing, t.compute_s, t.energy_j, t.top1,
               _NO_VALUES if quality is None else quality, neighbour, blk.task, blk.window, blk.private, blk.rate_bps,
               blk.rtt_s,
               s.step, s.cache, s.virtual_queue, s.popularity, s.last_rtt_s, table)
    s.slot += 1
    if s.slot >= CHUNK:
        s.requests, s.z_rate, s.z_rtt = draw_exogenous(rng, params, s.ranking, s.z_rate, s.z_rtt)
        s.slot = 0
    return Outcome(table, observation(params, s, capacity))


def expected_quality(params: Params) -> np.ndarray:
    """(M, tasks) each model's mean top-1 accuracy over each task's windows: the toolbox table, what a
    policy may know before a model has run on the request. :func:`serve` with this table as ``top1`` and
    the task as ``window`` prices a request at its task's expected quality."""
    t = params.tables
    return np.stack([t.top1[:, s:s + c].mean(axis=1) for s, c in zip(t.win_start, t.win_count, strict=True)], axis=1)


__all__ = ["CHUNK", "GB", "Exogenous", "Outcome", "Params", "Starts", "State", "Tables", "advance", "build_tables",
           "cheapest_download", "draw_exogenous", "draw_starts", "expected_quality", "initial", "observation",
           "restart_rows", "serve"]
