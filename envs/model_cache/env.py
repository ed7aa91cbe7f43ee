"""edgelam/EdgeModelCache-v0: an edge server's toolbox of task models (Tian et al.'s edge-cloud BAIM framework)."""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium import spaces

from edgelam.envs.core.actions import DiscreteAction
from edgelam.envs.core.config import load_scenario
from edgelam.envs.core.render import RENDER_FPS, RENDER_MODES, Panel, Renderer
from edgelam.envs.model_cache.config import ModelCacheConfig
from edgelam.envs.model_cache.dynamics import Params, State, advance, initial, observation
from edgelam.envs.model_cache.spec import SPEC

BACKENDS = ("replay", "live")

RENDER_PANELS = (
    Panel("serving model (0 device, 1 edge, 2.. task models, then cloud, forwarded)", ("model_index",), steps=True),
    Panel("quality (top-1 accuracy)", ("quality",)),
    Panel("latency", ("latency_s",), "s"),
    Panel("backhaul moved", ("backhaul_bytes",), "GB", scale=1e-9),
    Panel("toolbox stored", ("cached_bytes",), "GB", scale=1e-9),
)


class EdgeRow:
    """What the baselines read of one edge: row :attr:`row` of the simulator's :attr:`state` (an
    :class:`EdgeModelCacheEnv`, whose one row it is, or an edge of CooperativeModelCache-v0)."""

    params: Params
    state: State
    row: int = 0

    @property
    def num_models(self) -> int:
        """M, the cacheable models (``params.tables.names``)."""
        return self.params.num_models

    @property
    def cache_mask(self) -> int:
        """Bitmask of the cached models."""
        return int(self.state.cache[self.row])

    @property
    def task(self) -> int:
        """Task of the pending request (index into ``config.requests.tasks``)."""
        return int(self.state.pending("task")[self.row])

    @property
    def private(self) -> bool:
        """Whether the pending request carries sensitive data."""
        return bool(self.state.pending("private")[self.row])

    @property
    def backhaul_rate_bps(self) -> float:
        """The backhaul rate of the pending request's slot (measured before deciding)."""
        return float(self.state.pending("rate_bps")[self.row])

    @property
    def last_rtt_s(self) -> float:
        """WAN round trip measured on the last forwarded request (its mean before any)."""
        return float(self.state.last_rtt_s[self.row])

    @property
    def popularity(self) -> np.ndarray:
        """(n,) the exponentially averaged share of each task in the recent requests."""
        return self.state.popularity[self.row].copy()

    @property
    def virtual_queue(self) -> float:
        """The budget's virtual queue (0 without a budget)."""
        return float(self.state.virtual_queue[self.row])

    @property
    def step_count(self) -> int:
        """Requests served in this episode."""
        return int(self.state.step[self.row])

    @property
    def steps_left(self) -> int:
        """Requests left until the episode truncates."""
        return int(self.params.consts[-1]) - self.step_count


class EdgeModelCacheEnv(EdgeRow, gym.Env):
    """Serve each request from the edge's toolbox of task models, fetch one, or forward it to the cloud.

    Tian et al.'s edge-cloud framework keeps at each edge server a toolbox of compact task models
    derived from the cloud's big model: a request whose task model is in the toolbox is served
    locally, otherwise the model is downloaded from the cloud or the request forwarded. Here the
    models are real: ``device`` (shipped small general model), ``edge`` (shipped general edge model),
    one LoRA task model per task (``edge+<task>``, the edge backbone with that task's adapter trained
    on the task's share of the corpus, :mod:`edgelam.envs.lam.toolbox`) and ``cloud`` (shipped big
    model), M = 3 + tasks in all. A request is a held-out 256-token code window of one task; the
    quality of serving it with a model is that model's real teacher-forced top-1 accuracy on the
    window: ``backend="live"`` runs the model on it inside ``step()``, ``"replay"`` reads the
    per-window profile the same function recorded. Sizes and compute are those of real model cards
    (default int4: Qwen2.5-0.5B 0.25 GB, Llama-3.2-3B 1.6 GB per task model, Llama-3.1-8B 4.0 GB) on
    an L4 edge GPU; the cloud runs the big card on an A100. A merged task model is its own copy of the
    backbone; with ``cards.task_models: adapter`` the task models share one backbone, stored once.

    ## Action Space
    ``Discrete((M + 1)^2)``, ``a = serve * (M + 1) + op`` (``(5 + 3 + 1)^2 = 81`` by default):

    * ``serve`` in 0..M-1: the edge serves the request with that model, downloading it first when it
      is not cached (it then joins the cache if it fits after the op, else it is dropped after
      serving); ``serve = M``: forward the request to the cloud.
    * ``op`` in 0..M-1 toggles that model after serving: cached, it is evicted; not cached, it is
      prefetched over the idle backhaul (resident from the next request, only if it fits: else
      nothing is fetched, ``info["prefetched"] = 0``); ``op = serve`` drops a model fetched for this
      request. ``op = M``: no change.

    ## Observation Space
    ``Box(float32, (2 n + G + M + 6,))`` for n tasks and G user groups: the request's task (one-hot
    n), private flag, user group (one-hot G), the cached models (M bits), free storage fraction, each
    task's exponentially averaged share of the recent requests (n, weight ``requests.popularity_decay``),
    backhaul rate / its mean (clipped at 10), last measured WAN RTT / its mean, budget virtual queue /
    (10 budget) (0 without a budget), fraction of the episode elapsed.

    ## Rewards
    ``w_Q quality - w_T latency_s - w_E energy_j - w_C cloud_cost_usd - w_B backhaul_bytes / 1e9
    - w_P privacy_violation``: latency = access up + RTT + (download of a missing model) + compute +
    down at the edge, or access + WAN RTT + cloud compute when forwarded; energy = the edge GPU's
    power x its compute time; cloud cost = (T + N) x price per token; backhaul bytes = the bytes of
    downloaded and prefetched models (blocks not stored yet); a privacy violation is a private request
    forwarded to the cloud (its data leave the edge; Tian et al. serve such queries at the edge).

    Cost (Safety-Gymnasium's convention): ``info["cost"]`` is the step's ``budget.metric``, the
    backhaul bytes (default) or the edge energy in J, reported on every step. With
    ``budget.per_request`` set the virtual queue Z(t+1) = max(Z + cost - budget, 0) (Neely 2010) is in
    ``info["virtual_queue"]`` and the spec's ``cost_limit(scenario)`` is ``budget.per_request`` x
    ``episode_length`` in that unit (5e9 B in scenario ``hard``: 10 MB x 500 requests, about three
    task-model downloads; ``None`` without a budget, as in ``default``).

    ## Hindsight
    Kind ``exact`` (``edgelam.baselines.model_cache_hindsight``): with the episode's requests, windows,
    backhaul rates and WAN RTTs known (drawn in blocks whatever the actions, read from a fork of the
    env), the only state the actions move that the reward depends on is the cache, a bitmask over M
    models (2^M <= 256 states); backward DP over (request, cache) with every action evaluated by the
    env's own compiled :func:`~edgelam.envs.model_cache.dynamics.serve` gives the optimal return,
    and its plan, played, attains it. tests/model_cache check it against brute force on a toy trace.

    ## Episode End
    Truncated after the scenario's ``episode_length`` requests (500 by default; the id registers no
    ``max_episode_steps``, so an ``episode_length`` override is the episode length); never terminated.

    ## Physics and sources
    Roofline compute of prefill and decode with the LM head on each card and hardware (Williams et
    al., CACM 2009; Pope et al., MLSys 2023); model sizes of real cards at int4 (AWQ: Lin et al.,
    MLSys 2024), LoRA adapters of rank 8 on every projection (Hu et al., ICLR 2022), shared blocks
    stored once (TrimCaching: Qu et al., ICDCS 2024); Zipf popularity per user group with drift by
    neighbouring-rank swaps (Breslau et al., INFOCOM 1999); log-normal AR(1) backhaul rate and WAN
    RTT; download time = bytes 8 / rate + RTT; the caching task of Xu, Niyato and Brinton (arXiv
    2501.14205). The simulator is :mod:`~edgelam.envs.model_cache.dynamics` over a batched ``State``:
    this env is one row of it (``env.state``, advanced in place, what the baselines read).

    ## Vector env
    ``gym.make_vec("edgelam/EdgeModelCache-v0", num_envs=B, vectorization_mode="vector_entry_point")``
    steps B rows of the same simulator (:class:`edgelam.envs.model_cache.vector.EdgeModelCacheVectorEnv`,
    replay backend, next-step autoreset); with B = 1 it equals this env for the same seed.

    ## Version History
    * v0: initial release.
    """

    metadata = {
        "render_modes": RENDER_MODES,
        "render_fps": RENDER_FPS,
        "metric_directions": {"quality": "max", "hit": "max", "backhaul_bytes": "min", "cloud_cost_usd": "min",
                              "privacy_violation": "min"},
        "info_sums": ("backhaul_bytes", "privacy_violation"),
    }

    def __init__(self, scenario: str = "default", backend: str = "replay", render_mode: str | None = None,
                 **overrides):
        if backend not in BACKENDS:
            raise ValueError(f"backend: {backend!r} is not one of {BACKENDS}")
        self._renderer = Renderer("EdgeModelCache-v0", render_mode, RENDER_PANELS)
        self.config: ModelCacheConfig = load_scenario(ModelCacheConfig, SPEC.scenario_dir, scenario, overrides)
        self.backend = backend
        self.render_mode = render_mode
        cfg = self.config
        self.params = Params.build(cfg)
        self.tables = self.params.tables
        m = self.params.num_models
        self._live = None
        if backend == "live":
            from edgelam.envs.model_cache.live import LiveToolboxQuality

            self._live = LiveToolboxQuality(self.tables, cfg.requests.tasks)
        self.action_space = spaces.Discrete(self.params.num_actions)
        self._check_action = DiscreteAction(self.action_space, f"serve * {m + 1} + op; serve {m} forwards, op {m} none")
        high = self.params.obs_high
        self.observation_space = spaces.Box(np.zeros_like(high), high, dtype=np.float32)
        self._budget = cfg.budget.per_request
        unit = "B" if cfg.budget.metric == "backhaul_bytes" else "J"
        self.metadata = {**self.metadata, "info_units": {"virtual_queue": unit, "cost": unit}}
        self._action = np.zeros(1, dtype=np.int64)
        self._quality = np.zeros(1)
        self.state: State = initial(self.params, np.random.default_rng(0), 1)

    # -- Gymnasium API --------------------------------------------------------------------------

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
        super().reset(seed=seed)
        if self._renderer.history is not None:
            self._renderer.history.clear()
        self.state = initial(self.params, self.np_random, 1)
        return observation(self.params, self.state)[0], {"cached_bytes": float(self.tables.footprint[self.cache_mask])}

    def step(self, action):
        a = self._check_action(action)
        self._action[0] = a
        quality = None
        if self._live is not None:
            self._quality[0] = self._live.serving_top1(a, int(self.state.pending("window")[0]))
            quality = self._quality
        out = advance(self.params, self.state, self._action, self.np_random, quality)
        (latency, energy, q, usd, fetched, hit, kept, prefetched, violation, model, task, private, cached, rate, vq,
         reward, cost, truncated, _) = out.table[:, 0].tolist()
        names = self.tables.names
        info = {
            "latency_s": latency,
            "energy_j": energy,
            "quality": q,
            "cloud_cost_usd": usd,
            "backhaul_bytes": fetched,
            "hit": hit,
            "kept": kept,
            "prefetched": prefetched,
            "privacy_violation": violation,
            "model": names[int(model)] if model < len(names) else "cloud_forward",
            "model_index": int(model),
            "task": int(task),
            "private": private > 0.0,
            "cached_bytes": cached,
            "backhaul_rate_bps": rate,
        }
        if self._budget is not None:
            info["virtual_queue"] = vq
        info["cost"] = cost
        if self._renderer.history is not None:
            self._renderer.history.append(action, reward, info)
        return out.observation[0], reward, False, truncated > 0.0, info

    def render(self):
        """The current frame: a text line (``ansi``) or an image of the recent steps (``rgb_array``)."""
        return self._renderer.render()
