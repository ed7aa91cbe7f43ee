"""Baselines of edgelam/EdgeModelCache-v0.

Every baseline prices a choice with the env's own compiled
:func:`~edgelam.envs.model_cache.dynamics.serve`, at what the edge knows before a model runs: the
request's task, its privacy, the backhaul rate of its slot, the last measured WAN RTT, and each
model's expected quality on the task (the toolbox table,
:func:`~edgelam.envs.model_cache.dynamics.expected_quality`); none sees future requests.

* ``always_cloud``: forward every request.
* ``greedy``: per request, the action of best expected immediate reward (myopic: a download only
  pays later, so it never fetches into an empty cache; a per-step rule).
* ``lru`` / ``lfu``: the classic toolbox of Tian et al.: serve each request with its own task model,
  downloading it on a miss, and evict the least recently (frequently: perfect LFU, every request
  counted) requested model when the download would not fit; one eviction per request, as the action
  allows (a download that still does not fit is served and dropped).
* ``placement``: popularity placement re-solved every ``period`` requests: the cache of largest
  expected gain over the next ``period`` requests (popularity from the observation's average) less
  the backhaul price of the blocks it must download, by HiGHS
  (:func:`~edgelam.envs.core.caching.assignment_placement`); the edge prefetches the placement's
  models (one per request), evicts the others and serves each request with its best cached model
  or the cloud.
* ``lyapunov`` (Neely 2010, drift-plus-penalty): ``placement`` that also pays for the budgeted metric
  at the env's virtual queue Z: a backhaul budget prices each GB downloaded at (Z in GB) / V, so it
  stops fetching while the budget is overspent; an energy budget prices each J served at Z / V.
* ``hindsight``: :mod:`edgelam.baselines.model_cache_hindsight` (exact DP).
"""

from __future__ import annotations

import gymnasium as gym
import numpy as np

from edgelam.baselines import model_cache_hindsight, register
from edgelam.baselines.hindsight import register_hindsight
from edgelam.envs.core.caching import assignment_placement
from edgelam.envs.model_cache.dynamics import GB, expected_quality, serve
from edgelam.envs.model_cache.spec import SPEC

ENV_ID = SPEC.id


class _Pricing:
    """Expected rewards of actions on the env's pending request (module docstring)."""

    def __init__(self, env: gym.Env) -> None:
        self.env = env.unwrapped
        self.params = self.env.params
        self.m = self.params.num_models
        self.quality = np.ascontiguousarray(expected_quality(self.params))
        self.forward = self.m * (self.m + 1) + self.m
        # an edge of CooperativeModelCache-v0 (an EdgeView) has its own storage and neighbours
        self.config = self.env.config  # the scenario (an EdgeView: its team's, whose budget the rows do not keep)
        self.capacity = float(getattr(self.env, "capacity_bytes", self.config.capacity_bytes))

    def price(self, action: int, mask: int | None = None) -> tuple:
        """:func:`serve`'s tuple for ``action`` on the pending request (expected quality, last RTT)."""
        e = self.env
        mask = e.cache_mask if mask is None else mask
        return self.serve(mask, action, e.task, e.private, e.backhaul_rate_bps, e.last_rtt_s, self.neighbour())

    def serve(self, mask: int, action: int, task: int, private: bool, rate: float, rtt: float, neighbour: int) -> tuple:
        """:func:`serve` at the task's expected quality (``task`` indexes :attr:`quality`'s columns)."""
        p, t = self.params, self.params.tables
        return serve(p.consts, self.capacity, t.footprint, t.missing, t.compute_s, t.energy_j, self.quality, mask,
                     action, task, private, rate, rtt, neighbour)

    def neighbour(self) -> int:
        """Bitmask of the models a neighbour holds (0 for a lone edge)."""
        return int(getattr(self.env, "neighbour_mask", 0))

    def action(self, serve_with: int, op: int | None = None) -> int:
        return serve_with * (self.m + 1) + (self.m if op is None else op)

    def best_cached(self, mask: int, energy_price: float = 0.0) -> int:
        """The action serving the pending request with its best cached model or the cloud, no op, by
        expected reward less ``energy_price`` per J of edge energy."""
        options = [s for s in range(self.m) if mask >> s & 1] + [self.m]

        def score(a: int) -> float:
            out = self.price(a, mask)
            return out[0] - energy_price * out[3]

        return max((self.action(s) for s in options), key=score)


class AlwaysCloud(_Pricing):
    def predict(self, observation, state=None, episode_start=None, deterministic=True):
        return np.int64(self.forward), state


class Greedy(_Pricing):
    """argmax over every action of the expected immediate reward."""

    def predict(self, observation, state=None, episode_start=None, deterministic=True):
        mask = self.env.cache_mask
        rewards = [self.price(a, mask)[0] for a in range(self.params.num_actions)]
        return np.int64(int(np.argmax(rewards))), state


class Replacement(_Pricing):
    """LRU or perfect LFU over the task models, on demand (module docstring)."""

    def __init__(self, env: gym.Env, lfu: bool) -> None:
        super().__init__(env)
        self.lfu = lfu
        self._start()

    def _start(self) -> None:
        self.last = np.full(self.m, -1, dtype=np.int64)
        self.count = np.zeros(self.m, dtype=np.int64)

    def predict(self, observation, state=None, episode_start=None, deterministic=True):
        e = self.env
        t = e.step_count
        if t == 0:
            self._start()
        own = 2 + e.task
        self.count[own] += 1
        mask = e.cache_mask
        op = None
        if not mask >> own & 1:
            fp, cap = self.params.tables.footprint, self.capacity
            if fp[mask | 1 << own] > cap:
                cached = [i for i in range(self.m) if mask >> i & 1]
                if cached:
                    op = min(cached, key=(lambda i: (self.count[i], self.last[i])) if self.lfu else
                             (lambda i: self.last[i]))
        self.last[own] = t
        return np.int64(self.action(own, op)), state


class Placement(_Pricing):
    """Popularity placement by HiGHS, re-solved every ``period`` requests; drift-plus-penalty with ``v``."""

    def __init__(self, env: gym.Env, period: int = 50, v: float | None = None) -> None:
        super().__init__(env)
        if int(period) != period or period < 1:
            raise ValueError(f"placement baseline: period must be an integer >= 1, got {period!r}")
        if v is not None and (not np.isfinite(v) or v <= 0):
            raise ValueError(f"lyapunov baseline: v must be a finite number > 0, got {v!r}")
        if v is not None and self.config.budget.per_request is None:
            raise ValueError("lyapunov baseline: the scenario sets no budget.per_request "
                             "(e.g. budget.per_request=2e7)")
        self.period, self.v = int(period), v
        self.target: tuple[int, ...] = ()
        self.status = ""

    def _gains(self) -> np.ndarray:
        """(M, n) expected reward of serving a request of each task with each model, cached, over the cloud."""
        p = self.params
        cfg = self.config
        full = (1 << self.m) - 1
        rate, rtt = self.env.backhaul_rate_bps, self.env.last_rtt_s
        share = cfg.requests.private_share
        gains = np.empty((self.m, p.num_tasks))
        for j in range(p.num_tasks):
            fwd = [self.serve(full, self.forward, j, private, rate, rtt, 0)[0] for private in (False, True)]
            fallback = (1.0 - share) * fwd[0] + share * fwd[1]
            for s in range(self.m):
                gains[s, j] = self.serve(full, self.action(s), j, False, rate, rtt, 0)[0] - fallback
        return gains

    def _solve(self) -> None:
        e, p = self.env, self.params
        cat = p.tables.catalogue
        mask = e.cache_mask
        stored = {b for i in range(self.m) if mask >> i & 1 for b in cat.blocks[i]}
        per_byte = self.config.reward.backhaul_weight_per_gb / GB
        if self.v is not None and self.config.budget.metric == "backhaul_bytes":
            per_byte += e.virtual_queue / GB / (self.v * GB)  # Z in GB, priced 1 / V per GB downloaded
        cost = np.array([0.0 if b in stored else per_byte * size for b, size in enumerate(cat.block_bytes)])
        horizon = min(self.period, e.steps_left)
        demand = e.popularity * horizon
        plan = assignment_placement(self._gains(), demand, cat, self.capacity, cost)
        self.target, self.status = plan.models, plan.status

    def predict(self, observation, state=None, episode_start=None, deterministic=True):
        if self.env.step_count % self.period == 0:
            self._solve()
        return self.act(), state

    def act(self) -> np.int64:
        """The action that moves the cache towards :attr:`target` (one eviction or prefetch) and serves the
        pending request from the cache or the cloud."""
        e = self.env
        mask = e.cache_mask
        energy = self.v is not None and self.config.budget.metric == "energy_j"
        serve_action = self.best_cached(mask, e.virtual_queue / self.v if energy else 0.0)
        extra = [i for i in range(self.m) if mask >> i & 1 and i not in self.target]
        if extra:
            return np.int64(serve_action - self.m + extra[0])
        fp, cap = self.params.tables.footprint, self.capacity
        for i in self.target:
            if not mask >> i & 1 and fp[mask | 1 << i] <= cap:
                return np.int64(serve_action - self.m + i)
        return np.int64(serve_action)


register(ENV_ID, "always_cloud", lambda env: AlwaysCloud(env))
register(ENV_ID, "greedy", lambda env: Greedy(env))
register(ENV_ID, "lru", lambda env: Replacement(env, lfu=False))
register(ENV_ID, "lfu", lambda env: Replacement(env, lfu=True))
register(ENV_ID, "placement", lambda env, period=50: Placement(env, period=period))
register(ENV_ID, "lyapunov", lambda env, v=1.0, period=50: Placement(env, period=period, v=v))
register_hindsight(ENV_ID, model_cache_hindsight.solve)
