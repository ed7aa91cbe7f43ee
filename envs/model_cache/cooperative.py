"""edgelam/CooperativeModelCache-v0: several edges keep toolboxes of task models and fetch from each other."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import numpy as np
from gymnasium import spaces
from gymnasium.utils import seeding
from pettingzoo import ParallelEnv

from edgelam.envs.core.actions import check_batch_integers
from edgelam.envs.core.config import load_scenario
from edgelam.envs.core.jit import njit
from edgelam.envs.core.queues import virtual_queue_step
from edgelam.envs.core.render import RENDER_FPS, RENDER_MODES, Panel, Renderer, merge_agents
from edgelam.envs.core.vector import check_batch_arguments, partial_reset_mask
from edgelam.envs.model_cache.config import CooperativeCacheConfig
from edgelam.envs.model_cache.dynamics import Params, State, advance, draw_starts, initial, observation, restart_rows
from edgelam.envs.model_cache.spec import COOPERATIVE_SPEC as SPEC

BACKENDS = ("replay", "live")
# per-edge info keys of a step; GAME_KEYS are per game
STEP_KEYS = ("latency_s", "energy_j", "quality", "cloud_cost_usd", "backhaul_bytes", "metro_bytes", "hit", "kept",
             "prefetched", "privacy_violation", "model", "task", "private", "online", "cached_bytes", "cost")
GAME_KEYS = ("edges_online", "team_reward")
# keys every agent reports with its game's team value (counted once by the evaluation rows)
TEAM_KEYS = ("cost", "virtual_queue", "edges_online", "team_reward")

RENDER_PANELS = (
    Panel("serving model per edge (0 device, 1 edge, 2.. task models, then cloud, forwarded)", ("model_index",),
          steps=True),
    Panel("backhaul moved per edge", ("backhaul_bytes",), "GB", scale=1e-9),
    Panel("metro moved per edge", ("metro_bytes",), "GB", scale=1e-9),
    Panel("toolbox stored per edge", ("cached_bytes",), "GB", scale=1e-9),
)


@njit
def _neighbours(cache, online, n, m, out):
    """``out[r]``: the OR of the caches of the other online edges of row r's game (rows g n .. g n + n - 1)."""
    count = np.zeros(m, dtype=np.int64)
    for g in range(cache.shape[0] // n):
        count[:] = 0
        for i in range(n):
            r = g * n + i
            if online[r]:
                for j in range(m):
                    count[j] += (cache[r] >> j) & 1
        for i in range(n):
            r = g * n + i
            own = cache[r] if online[r] else 0
            mask = 0
            for j in range(m):
                if count[j] - ((own >> j) & 1) > 0:
                    mask |= 1 << j
            out[r] = mask


class CooperativeCacheGames:
    """``num_games`` games of CooperativeModelCache-v0, each of N edges, played with arrays.

    Everything is an array with a game axis and an edge axis: observations (B, N, D), actions
    (B, N), rewards, terminations and truncations (B, N), per-edge ``info`` arrays (B, N) and
    per-game ones (B,) (:data:`GAME_KEYS`). The B N edges are the rows of one EdgeModelCache-v0
    simulator (:mod:`.dynamics`, the same :func:`~.dynamics.serve`), each with its own users,
    requests, backhaul, WAN and storage; what couples the edges of a game is the metro link (a
    model another online edge of the game holds is downloaded from it) and nothing else.

    Before each request every online edge leaves with probability ``membership.leave_prob`` (its
    toolbox is lost) and every offline one rejoins with ``membership.join_prob`` (empty toolbox);
    the draws come first in the step, one uniform per edge, whatever the actions. An offline edge's
    users are served by the cloud: its action is replaced by forwarding with no op (its ``info``
    says ``online: False``; the observation shows it before the step).

    Next-step autoreset per game, as :class:`edgelam.envs.multi_user_offload.vector.MultiUserOffloadGames`;
    ``reset(options={"reset_mask": mask})`` resets the games of a bool mask (B,). With ``num_games=1``
    and the same seed the game is the PettingZoo env. Replay backend only.
    """

    metadata = {"name": "cooperative_model_cache_v0_batched", "render_modes": [], "autoreset_mode": "next_step"}

    def __init__(self, num_games: int = 1, scenario: str = "default", backend: str = "replay", **overrides: Any):
        check_batch_arguments("num_games", num_games, backend, overrides, "batched game")
        self.config: CooperativeCacheConfig = load_scenario(CooperativeCacheConfig, SPEC.scenario_dir, scenario,
                                                            overrides)
        cfg = self.config
        # the rows keep no queue of their own: the budget is the team's (team_queue below)
        self.params = Params.build(replace(cfg, budget=replace(cfg.budget, per_request=None)))
        self.team_budget = None if cfg.budget.per_request is None else cfg.budget.per_request * cfg.num_edges
        self.tables = self.params.tables
        self.num_games, self.num_agents = num_games, cfg.num_edges
        self.episode_length = cfg.episode_length
        self.possible_agents = [f"edge_{i}" for i in range(self.num_agents)]
        m = self.params.num_models
        self.num_models = m
        self.forward = m * (m + 1) + m
        # the lone edge's observation, then the neighbours' models (M bits), online, fraction online
        high = np.concatenate([self.params.obs_high, np.ones(m + 2, np.float32)])
        self.single_observation_space = spaces.Box(np.zeros_like(high), high, dtype=np.float32)
        self.single_action_space = spaces.Discrete(self.params.num_actions)
        self._batch_action_space = spaces.MultiDiscrete(np.full((num_games, self.num_agents), self.params.num_actions))
        self.capacity = np.tile(np.asarray(cfg.edge_capacities(), dtype=np.float64), num_games)
        for i, cap in enumerate(cfg.edge_capacities()):
            if self.tables.footprint[self.params.initial_mask] > cap:
                raise ValueError(f"initial_cache: {list(cfg.initial_cache or ())} does not fit edge {i}'s "
                                 f"{cap:.4g} B (capacities_bytes)")
        self.np_random, _ = seeding.np_random(None)
        self.state: State = initial(self.params, np.random.default_rng(0), num_games * self.num_agents)
        self.online = np.ones((num_games, self.num_agents), dtype=bool)
        self._needs_reset = np.zeros(num_games, dtype=bool)
        self.team_queue = np.zeros(num_games)  # the team's backhaul (or energy) virtual queue of each game
        self._live = None  # the PettingZoo env's live backend (LiveToolboxQuality), set by it

    def observation_space(self, agent: str) -> spaces.Box:
        return self.single_observation_space

    def action_space(self, agent: str) -> spaces.Discrete:
        return self.single_action_space

    # -- views ----------------------------------------------------------------------------------

    def _initial_online(self, n: int) -> np.ndarray:
        online = np.ones((n, self.num_agents), dtype=bool)
        off = self.config.membership.initially_offline
        if off:
            online[:, self.num_agents - off:] = False
        return online

    def neighbour_masks(self) -> np.ndarray:
        """(B N,) the models held by the other online edges of each edge's game (OR of their caches)."""
        out = np.empty(self.num_games * self.num_agents, dtype=np.int64)
        _neighbours(self.state.cache, self.online.ravel(), self.num_agents, self.num_models, out)
        return out

    def _observations(self) -> np.ndarray:
        base = observation(self.params, self.state, self.capacity)
        m = self.num_models
        bits = (self.neighbour_masks()[:, None] >> np.arange(m)) & 1
        online = self.online.ravel().astype(np.float32)
        frac = np.repeat(self.online.mean(axis=1), self.num_agents).astype(np.float32)
        if self.team_budget:  # the observation's queue entry: the team's queue / (10 team budget)
            base[:, -2] = np.minimum(np.repeat(self.team_queue, self.num_agents) / (10.0 * self.team_budget), 100.0)
        obs = np.concatenate([base, bits.astype(np.float32), online[:, None], frac[:, None]], axis=1)
        return obs.reshape(self.num_games, self.num_agents, -1)

    # -- episodes -------------------------------------------------------------------------------

    def _start(self, online: np.ndarray, rows: np.ndarray) -> None:
        """Empty toolboxes for the offline edges among ``rows`` (flat)."""
        off = rows[~online.ravel()[rows]]
        self.state.cache[off] = 0

    def _reset_all(self) -> dict[str, Any]:
        self.state = initial(self.params, self.np_random, self.num_games * self.num_agents)
        self.online = self._initial_online(self.num_games)
        self._start(self.online, np.arange(self.num_games * self.num_agents))
        self._needs_reset = np.zeros(self.num_games, dtype=bool)
        self.team_queue = np.zeros(self.num_games)
        return {"online": self.online.copy()}

    def _reset_some(self, games: np.ndarray) -> None:
        rows = (games[:, None] * self.num_agents + np.arange(self.num_agents)).ravel()
        restart_rows(self.params, self.state, rows, draw_starts(self.np_random, self.params, len(rows)))
        self.online[games] = self._initial_online(len(games))
        self.team_queue[games] = 0.0
        self._start(self.online, rows)

    def reset(self, *, seed: int | list[int] | None = None, options: dict[str, Any] | None = None):
        """Reset every game, or those of ``options["reset_mask"]`` (bool (B,)); (observations, info)."""
        mask = partial_reset_mask(options, seed, self.num_games)
        if mask is not None:
            self._reset_some(np.flatnonzero(mask))
            self._needs_reset = self._needs_reset & ~mask
            return self._observations(), {"online": self.online.copy(), "_online": mask}
        if isinstance(seed, list):
            seed = seed[0]
        if seed is not None:
            self.np_random, _ = seeding.np_random(seed)
        info = self._reset_all()
        return self._observations(), info

    def step(self, actions: Any):
        """One request at every edge of every game (next-step autoreset for the games that ended).

        Raises:
            ValueError: unless ``actions`` are integers of ``Discrete((M + 1)^2)`` of shape (B, N).
        """
        a = check_batch_integers(actions, self._batch_action_space, f"per edge: serve * {self.num_models + 1} + op")
        shape = a.shape
        resetting = self._needs_reset
        if resetting.all():
            info = self._reset_all()
            zeros = np.zeros(shape, dtype=bool)
            return self._observations(), np.zeros(shape), zeros, zeros.copy(), info
        mem = self.config.membership
        u = self.np_random.random(shape)
        leave = self.online & (u < mem.leave_prob)
        join = ~self.online & (u < mem.join_prob)
        self.online = (self.online & ~leave) | join
        self.state.cache[(leave | join).ravel()] = 0
        flat = a.ravel().copy()
        flat[~self.online.ravel()] = self.forward
        quality = None
        if self._live is not None:  # the serving model really runs on each edge's request window
            window = self.state.pending("window")
            quality = np.array([self._live.serving_top1(action, w)
                                for action, w in zip(flat.tolist(), window.tolist(), strict=True)])
        out = advance(self.params, self.state, flat, self.np_random, quality, neighbour=self.neighbour_masks(),
                      capacity=self.capacity)
        reward = out.reward.reshape(shape).copy()
        truncated = out.truncated.reshape(shape).copy()
        info: dict[str, Any] = {k: v.reshape(shape) for k, v in out.info(self.params).items()}
        info["metro_bytes"] = out.table[18].reshape(shape)
        info["model_index"] = out.table[9].reshape(shape).astype(np.int64)
        info["online"] = self.online.copy()
        info["edges_online"] = self.online.sum(axis=1)
        info["team_reward"] = reward.mean(axis=1)
        # the team's cost of the step in every edge's row, and its queue (Neely 2010) against the summed budget
        team_cost = out.cost.reshape(shape).sum(axis=1)
        if self.team_budget is not None:
            self.team_queue = virtual_queue_step(self.team_queue, team_cost, self.team_budget)
            info["virtual_queue"] = np.repeat(self.team_queue[:, None], self.num_agents, axis=1)
        info["cost"] = np.repeat(team_cost[:, None], self.num_agents, axis=1)
        terminated = np.zeros(shape, dtype=bool)
        if resetting.any():
            games = np.flatnonzero(resetting)
            reward[games] = 0.0
            truncated[games] = False
            stepped = ~resetting
            for key in list(info):
                info[f"_{key}"] = stepped
            self._reset_some(games)
        self._needs_reset = truncated[:, 0].copy()
        return self._observations(), reward, terminated, truncated, info

    def close(self) -> None:
        """Nothing to release."""


class CooperativeModelCacheEnv(ParallelEnv):
    """N edge servers, each serving its own users from a toolbox of task models, fetching from each other.

    Every edge is an EdgeModelCache-v0 edge (the same real models, per-window quality, prices and
    :func:`~edgelam.envs.model_cache.dynamics.serve`) with its own user groups, drifting popularity,
    private share, backhaul, WAN and storage (``capacities_bytes``: heterogeneous edges). What an
    edge gains from the others: a model another online edge holds is downloaded over the metro link
    (``metro``: 25 Gbit/s, 2 ms, 0.05 per GB by default) instead of the backhaul to the cloud's model
    store, and those bytes count against no backhaul budget. Edges leave and rejoin during an
    episode (``membership``, Tian et al.'s node management): a leaving edge loses its toolbox, its
    users are served by the cloud while it is away, and it rejoins empty.

    ``backend="live"`` runs each edge's serving model on its request's window inside ``step()``
    (EdgeModelCache-v0's live backend); ``"replay"`` reads the per-window profile.

    ## Action Space
    Per agent ``Discrete((M + 1)^2)``, EdgeModelCache-v0's: ``serve * (M + 1) + op`` (serve with a
    model, downloading it if missing, or forward; evict or prefetch one model). An offline edge's
    action is replaced by forwarding with no op (``info["online"]`` is False for it).

    ## Observation Space
    Per agent ``Box(float32, (2 n + G + 2 M + 8,))``: EdgeModelCache-v0's observation of its own
    request and toolbox, then the models its online neighbours hold (M bits), whether it is online,
    and the fraction of the game's edges online.

    ## Rewards
    Per agent EdgeModelCache-v0's reward of its own request, with the metro download price
    ``metro.weight_per_gb`` per GB; ``info`` carries ``team_reward`` (the mean over the edges, the
    return edgelam's evaluation reports) and ``edges_online``.

    Cost (Safety-Gymnasium's convention): the budget is the team's, ``budget.per_request`` per request
    and edge. Every agent's ``info["cost"]`` is the team's ``budget.metric`` of the step (the edges'
    backhaul bytes summed, not metro ones, or their edge energy) and ``info["virtual_queue"]`` the
    team's queue Z <- max(Z + cost - N budget, 0); both are listed in ``metadata["info_team"]``, so an
    episode row counts them once. The spec's ``cost_limit(scenario)`` is ``budget.per_request`` x
    ``num_edges`` x ``episode_length``: 1.6e10 B in scenario ``hard`` (8 MB x 4 edges x 500
    requests), ``None`` without a budget.

    ## Hindsight
    Kind ``bound`` (``edgelam.baselines.cooperative_cache``): with every edge's requests, rates,
    RTTs and the membership known, each edge's own DP over (request, cache) -- EdgeModelCache-v0's
    exact DP with the leaves forced -- where every download is priced at the cheaper of the
    backhaul and the metro link (the smaller RTT and price, the larger rate): each edge's reward can
    only be lower in the real game, where a model comes over the metro only if a neighbour holds it,
    so the mean of the edges' values bounds every joint policy; the edges' plans are played together.

    ## Episode End
    All agents are truncated after ``episode_length`` requests; never terminated.

    ## Physics and sources
    EdgeModelCache-v0's (real-size model cards, roofline compute, per-window real quality, Zipf
    popularity with drift, log-normal AR(1) backhaul and WAN); a metro link between neighbouring MEC
    sites at a fixed rate and RTT; caching models that share parameters across edges (TrimCaching:
    Qu et al., ICDCS 2024) and joint caching at the edge (Xu, Niyato and Brinton, arXiv 2501.14205);
    node join and leave of Tian et al.'s framework.

    ## Batched game
    ``edgelam.envs.registration.make_batched("edgelam/CooperativeModelCache-v0", num_games=B)`` plays
    B games in arrays (:class:`CooperativeCacheGames`); ``edgelam.envs.core.vector.AgentRowsVectorEnv``
    views its B N edges as one vector env (parameter sharing). With B = 1 and the same seed it is this env.

    ## Version History
    * v0: initial release.
    """

    metadata = {
        "name": "cooperative_model_cache_v0",
        "render_modes": RENDER_MODES,
        "render_fps": RENDER_FPS,
        "is_parallelizable": True,
        "metric_directions": {"quality": "max", "hit": "max", "backhaul_bytes": "min", "metro_bytes": "min",
                              "cloud_cost_usd": "min", "privacy_violation": "min"},
        "info_sums": ("backhaul_bytes", "metro_bytes", "privacy_violation"),
        "info_team": TEAM_KEYS,
    }

    def __init__(self, scenario: str = "default", backend: str = "replay", render_mode: str | None = None,
                 **overrides: Any):
        if backend not in BACKENDS:
            raise ValueError(f"backend: {backend!r} is not one of {BACKENDS} (CooperativeModelCache-v0)")
        self._renderer = Renderer("CooperativeModelCache-v0", render_mode, RENDER_PANELS)
        self.game = CooperativeCacheGames(1, scenario, "replay", **overrides)
        if backend == "live":
            from edgelam.envs.model_cache.live import LiveToolboxQuality

            self.game._live = LiveToolboxQuality(self.game.tables, self.game.config.requests.tasks)
        self.config = self.game.config
        self.params, self.tables = self.game.params, self.game.tables
        self.env_id = SPEC.id
        self.spec = None
        self.backend = backend
        self.render_mode = render_mode
        self.possible_agents = list(self.game.possible_agents)
        self._renderer.entry_labels = tuple(self.possible_agents)
        self.agents: list[str] = []
        self.observation_spaces = dict.fromkeys(self.possible_agents, self.game.single_observation_space)
        self.action_spaces = dict.fromkeys(self.possible_agents, self.game.single_action_space)
        self._budget = self.config.budget.per_request

    def observation_space(self, agent: str) -> spaces.Box:
        return self.observation_spaces[agent]

    def action_space(self, agent: str) -> spaces.Discrete:
        return self.action_spaces[agent]

    @property
    def state(self) -> State:
        """The simulator's rows (one per edge), what the baselines read."""
        return self.game.state

    @property
    def online(self) -> np.ndarray:
        """(N,) whether each edge is online."""
        return self.game.online[0]

    @property
    def step_count(self) -> int:
        return int(self.game.state.step[0])

    def _obs(self, obs: np.ndarray) -> dict[str, np.ndarray]:
        return dict(zip(self.possible_agents, obs[0], strict=True))

    def reset(self, seed: int | None = None, options: dict | None = None):
        self.agents = list(self.possible_agents)
        if self._renderer.history is not None:
            self._renderer.history.clear()
        obs, info = self.game.reset(seed=seed)
        return self._obs(obs), {a: {"online": bool(o)} for a, o in zip(self.agents, info["online"][0], strict=True)}

    def step(self, actions: dict):
        if not self.agents:
            raise ValueError("step() after the episode ended; call reset()")
        if not isinstance(actions, dict) or set(actions) != set(self.agents):
            raise ValueError(f"actions: expected one action per live agent {self.agents}, got {actions!r}")
        joint = np.empty((1, len(self.possible_agents)), dtype=np.int64)
        for i, agent in enumerate(self.possible_agents):
            value = actions[agent]
            arr = np.asarray(value)
            if arr.shape != () or arr.dtype.kind not in "iu" or not 0 <= int(arr) < self.params.num_actions:
                raise ValueError(f"action of {agent} must be an integer in Discrete({self.params.num_actions}), "
                                 f"got {value!r}")
            joint[0, i] = int(arr)
        obs, reward, _, truncated, info = self.game.step(joint)
        names = (*self.tables.names, "cloud_forward")
        glob = {"edges_online": int(info["edges_online"][0]), "team_reward": float(info["team_reward"][0])}
        keys = [k for k in STEP_KEYS if k != "model"] + ["model_index"]
        if self._budget is not None:
            keys.append("virtual_queue")
        columns = {k: info[k][0].tolist() for k in keys}
        infos: dict[str, dict[str, Any]] = {}
        for i, agent in enumerate(self.possible_agents):
            row = {k: columns[k][i] for k in keys}
            row["model"] = names[row["model_index"]]
            infos[agent] = {**row, **glob}
        rewards = dict(zip(self.possible_agents, reward[0].tolist(), strict=True))
        done = bool(truncated[0, 0])
        if self._renderer.history is not None:
            action, merged = merge_agents(actions, infos, self.possible_agents, shared=GAME_KEYS)
            self._renderer.history.append(action, sum(rewards.values()) / len(rewards), merged)
        terminations = dict.fromkeys(self.possible_agents, False)
        truncations = dict.fromkeys(self.possible_agents, done)
        if done:
            self.agents = []
        return self._obs(obs), rewards, terminations, truncations, infos

    def render(self):
        """The current frame: a text line (``ansi``) or an image of the recent steps (``rgb_array``)."""
        return self._renderer.render()

    def close(self) -> None:
        """Nothing to release."""


def parallel_env(**kwargs: Any) -> CooperativeModelCacheEnv:
    """Build CooperativeModelCache-v0 (``scenario=``, ``backend=``, dotted overrides)."""
    return CooperativeModelCacheEnv(**kwargs)
