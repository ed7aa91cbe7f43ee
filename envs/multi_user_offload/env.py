"""edgelam/MultiUserOffload-v0: N users offload LLM tasks into one shared uplink and edge server."""

from __future__ import annotations

from typing import Any

import numpy as np
from gymnasium import spaces
from gymnasium.utils import seeding
from pettingzoo import ParallelEnv

from edgelam.envs.core.config import load_scenario
from edgelam.envs.core.render import RENDER_FPS, RENDER_MODES, Panel, Renderer, merge_agents
from edgelam.envs.multi_user_offload.config import MultiUserOffloadConfig
from edgelam.envs.multi_user_offload.dynamics import (
    OBS_DIM,
    Params,
    State,
    blank,
    draw_exogenous,
    initial,
    observation,
    transition,
)
from edgelam.envs.multi_user_offload.spec import SPEC
from edgelam.envs.offload.config import TIERS
from edgelam.envs.offload.env import offload_tables

BACKENDS = ("replay", "live")
# device confidence, T / 128, log10(full-band rate) / 10, edge background util, last cloud RTT s,
# battery fraction, fraction of users that offloaded last slot, elapsed fraction
OBS_HIGH = (1.0, 32.0, 2.0, 1.0, 10.0, 1.0, 1.0, 1.0)

# what render_mode='rgb_array' draws, against the step index (edgelam.envs.core.render)
RENDER_PANELS = (
    Panel("tier each user chose (0 device, 1 edge, 2 cloud)", ("action",), steps=True),
    Panel("uplink band share per user", ("band_share",)),
    Panel("edge compute share per user", ("compute_share",)),
    Panel("task latency per user", ("latency_s",), "s"),
)
_GLOBAL_KEYS = ("global_reward", "total_latency_s", "mean_quality", "allocation_projected")


def observation_space() -> spaces.Box:
    """One user's observation space (the same object for every agent of an env)."""
    return spaces.Box(np.zeros(OBS_DIM, np.float32), np.asarray(OBS_HIGH, np.float32), dtype=np.float32)


class LiveTasks:
    """The live backend's model numbers: the real models run on each task (results cached per task and tier)."""

    def __init__(self, live: Any) -> None:
        self.live = live

    def confidence(self, prompt: np.ndarray) -> np.ndarray:
        conf = [self.live.device_run(p)[1] for p in prompt.ravel().tolist()]
        return np.array(conf).reshape(prompt.shape)

    def quality(self, prompt: np.ndarray, tier: np.ndarray) -> np.ndarray:
        pairs = zip(prompt.ravel().tolist(), tier.ravel().tolist(), strict=True)
        return np.array([self.live.accuracy(p, k) for p, k in pairs]).reshape(prompt.shape)


class MultiUserOffloadEnv(ParallelEnv):
    """N users each run their LLM task on the device, the edge or the cloud, every slot.

    Every slot each user gets a task, a prompt drawn uniformly from the held-out set
    (its answer is the 32-token reference continuation). Tiers, roofline pricing and
    real per-task quality are those of ``Offload-v0``: a tier's quality is the
    teacher-forced top-1 accuracy of the shipped edgelam model executing for it
    (``<tier>.executed_model``: ``device``, ``edge``, ``cloud`` by default). Users who
    offload share the uplink band (FDMA), users at the edge share its free capacity, so
    one user's choice changes the others' latency; the split is documented in
    :mod:`.dynamics`.

    ## Backends
    ``"replay"`` (default) reads each task's device confidence and per-tier quality from
    the ``offload`` profile (``profile_dir``; None = shipped), recorded by ``edgelam
    profile``. ``"live"`` runs the real models inside the env with the same function
    (:class:`edgelam.envs.offload.live.LiveOffloadQuality`): the device model on every
    new task (its confidence is in the observation, its accuracy is the device tier's
    quality) and the chosen edge or cloud model in :meth:`step`. Both backends draw the
    same tasks, channels and RTTs from the same seed; only the source of the model
    numbers differs. Live results are cached per (task, tier) inside the env instance:
    the runs are deterministic, so a task executed twice (by two users, or in two
    slots) runs its model once, and an episode costs at most 3 x (number of held-out
    tasks) model runs. A reduced held-out set (a ``profile_dir`` holding the first P
    prompts) bounds that further.

    Allocation: equal shares by default. A controller (the ``cvxpy`` baseline) may set
    the split of the next :meth:`step` with :meth:`set_allocation`; it applies to that
    one step. Agents' action spaces stay identical (needed by parameter sharing).

    The dynamics are :mod:`.dynamics` over a batched state; this env is one game of it
    (B = 1; its :attr:`state` is what the baselines read). :class:`.vector.MultiUserOffloadGames`
    plays B games at once, and its SB3 view of the B x N agent rows trains parameter-sharing
    PPO without SuperSuit (:func:`edgelam.agents.marl.batched_vec_env`). ``num_users`` goes
    up to 1,024: nothing in a step loops over users in Python except building the per-agent
    dicts of the PettingZoo API (and, with ``backend="live"``, the model runs).

    ## Action Space
    Per agent ``Discrete(3)``: 0 device, 1 edge, 2 cloud.

    ## Observation Space
    Per agent ``Box(float32, (8,))``: own device-model confidence on its task, prompt
    tokens / 128, log10(rate over the whole band in bit/s) / 10, edge background
    utilisation, last cloud RTT in s, battery fraction, fraction of users that offloaded
    in the last slot, elapsed fraction of the episode.

    ## Rewards
    Per agent ``w_Q quality - w_T latency_s - w_E energy_j - w_C cloud_cost_usd``; every
    agent's ``info`` also carries the global metrics ``global_reward`` (mean over users),
    ``total_latency_s`` and ``mean_quality``.

    ## Hindsight
    ``hindsight`` is **exact** for up to 6 users
    (:mod:`edgelam.baselines.multi_user_offload_hindsight`): every slot of the replayed trace,
    each of the 3^N tier vectors is priced by :func:`.dynamics.transition` with the
    square-root split, the optimal split for fixed tiers, and the best is played, its split
    set with :meth:`set_allocation`. It is exact because slots are decoupled: the rewards
    read no state the actions change (battery and offloaded fraction are only observed) and
    the draws do not depend on the actions. The optimum is over the documented splits
    (shares summing to at most 1; the 1e-6 rounding slack of :meth:`set_allocation` is not
    used). With more users it is a **bound**: per slot, a Lagrangian relaxation of the shared
    band and edge terms (separable over users; valid for any split ``set_allocation`` accepts)
    bounds every policy, and single-user improvement with the square-root split is played.

    ## Episode End
    All agents are truncated after ``episode_length`` slots; never terminated.

    ## Physics and sources
    3GPP TR 38.901 path loss + shadowing, Gauss-Markov Rayleigh fading over slots,
    Shannon spectral efficiency (``edgelam.envs.core.channel``); FDMA uplink with power
    control and processor-sharing edge, square-root optimal split (Boyd & Vandenberghe
    2004; :mod:`.dynamics`); roofline compute and MEC latency/energy decomposition of
    Offload-v0 (Williams et al. 2009, Mao et al. 2017); log-normal AR(1) WAN RTT.

    ## Version History
    * v0: initial release.
    """

    metadata = {
        "name": "multi_user_offload_v0",
        "render_modes": RENDER_MODES,
        "render_fps": RENDER_FPS,
        "is_parallelizable": True,
    }

    def __init__(self, scenario: str = "default", backend: str = "replay", render_mode: str | None = None,
                 **overrides):
        if backend not in BACKENDS:
            raise ValueError(f"backend: {backend!r} is not one of {BACKENDS} (MultiUserOffload-v0)")
        self._renderer = Renderer("MultiUserOffload-v0", render_mode, RENDER_PANELS)
        self.config: MultiUserOffloadConfig = load_scenario(
            MultiUserOffloadConfig, SPEC.scenario_dir, scenario, overrides
        )
        cfg = self.config
        self.env_id = SPEC.id
        self.spec = None
        self.backend = backend
        self.render_mode = render_mode
        self.tables = offload_tables(cfg)
        self.num_prompts = len(self.tables.prompt_tokens)
        self.n = cfg.num_users
        self.possible_agents = [f"user_{i}" for i in range(self.n)]
        self._renderer.entry_labels = tuple(self.possible_agents)
        self.agents: list[str] = []
        obs_space = observation_space()
        act_space = spaces.Discrete(len(TIERS))
        self.observation_spaces = dict.fromkeys(self.possible_agents, obs_space)
        self.action_spaces = dict.fromkeys(self.possible_agents, act_space)
        self._np_random, _ = seeding.np_random(None)
        self._allocation: tuple[np.ndarray, np.ndarray] | None = None
        self._live = None
        tasks = None
        if backend == "live":
            from edgelam.envs.offload.live import LiveOffloadQuality

            self._live = LiveOffloadQuality(tuple(getattr(cfg, t).executed_model for t in TIERS), cache=True,
                                            profile_dir=cfg.profile_dir)
            tasks = LiveTasks(self._live)
        self.params = Params.build(cfg, self.tables, tasks)
        self._tiers = np.asarray(TIERS)
        self._set_state(blank(self.params, 1))

    def observation_space(self, agent: str) -> spaces.Box:
        return self.observation_spaces[agent]

    def action_space(self, agent: str) -> spaces.Discrete:
        return self.action_spaces[agent]

    # -- state views for controllers --------------------------------------------------------------

    def _set_state(self, state: State) -> None:
        self.state = state  # the game's State (B = 1): what the properties below are views of
        self._prompts = state.prompt[0]  # one view per slot: controllers key a slot by its identity

    @property
    def prompts(self) -> np.ndarray:
        """(N,) held-out prompt of each user's pending task."""
        return self._prompts

    @property
    def device_confidence(self) -> np.ndarray:
        """(N,) the device model's real confidence on each user's pending task (live: just computed)."""
        return self.state.confidence[0]

    @property
    def live_model_runs(self) -> int:
        """Real model executions so far in this env instance (0 for ``backend="replay"``)."""
        return 0 if self._live is None else self._live.runs

    @property
    def spectral_efficiency(self) -> np.ndarray:
        """(N,) log2(1 + SNR) of each user this slot (bit/s/Hz, independent of its band share)."""
        return self.state.spectral_eff[0]

    @property
    def last_cloud_rtt_s(self) -> float:
        """Cloud RTT measured in the previous slot, in s."""
        return float(self.state.last_cloud_rtt_s[0])

    @property
    def offloaded_fraction(self) -> float:
        """Fraction of users that offloaded in the previous slot."""
        return float(self.state.offloaded_fraction[0])

    @property
    def step_count(self) -> int:
        """Slots played in this episode."""
        return int(self.state.step[0])

    def set_allocation(self, band_share: np.ndarray, compute_share: np.ndarray) -> None:
        """Split of the band and of the free edge capacity for the next :meth:`step` only, (N,) each.

        Shares are fractions in [0, 1] summing to <= 1 (in ``possible_agents`` order); the
        step reads the entries of offloading (band) and edge (compute) users. If one of those
        is 0 the step falls back to equal shares and sets ``info["allocation_projected"]``.

        Raises:
            ValueError: wrong shape, negative entries or a sum above 1.
        """
        out = []
        for key, x in (("band_share", band_share), ("compute_share", compute_share)):
            arr = np.asarray(x, dtype=np.float64)
            if arr.shape != (self.n,) or np.any(~np.isfinite(arr)) or np.any(arr < 0) or arr.sum() > 1.0 + 1e-6:
                raise ValueError(f"{key}: expected {self.n} shares >= 0 summing to <= 1, got {x!r}")
            out.append(arr)
        self._allocation = (out[0], out[1])

    # -- PettingZoo API ---------------------------------------------------------------------------

    def _observations(self) -> dict[str, np.ndarray]:
        return dict(zip(self.possible_agents, observation(self.params, self.state)[0], strict=True))

    def reset(self, seed: int | None = None, options: dict | None = None):
        if seed is not None:
            self._np_random, _ = seeding.np_random(seed)
        self.agents = list(self.possible_agents)
        if self._renderer.history is not None:
            self._renderer.history.clear()
        self._allocation = None
        state, distance = initial(self.params, self._np_random, 1)
        self._set_state(state)
        infos = {a: {"distance_m": d} for a, d in zip(self.possible_agents, distance[0].tolist(), strict=True)}
        return self._observations(), infos

    def _actions(self, actions: dict) -> np.ndarray:
        if not isinstance(actions, dict) or set(actions) != set(self.agents):
            raise ValueError(f"actions: expected one action per live agent {self.agents}, got {actions!r}")
        values = [actions[a] for a in self.possible_agents]
        if set(map(type, values)) <= {int, np.int64}:  # the common case: plain integers
            tiers = np.array(values, dtype=np.int64)
            if tiers.min() >= 0 and tiers.max() < len(TIERS):
                return tiers
        tiers = np.empty(self.n, dtype=np.int64)
        for i, agent in enumerate(self.possible_agents):
            a = np.asarray(actions[agent])
            if a.shape != () or not np.issubdtype(a.dtype, np.integer) or not 0 <= int(a) < 3:
                raise ValueError(f"action of {agent} must be an integer in Discrete(3), got {actions[agent]!r}")
            tiers[i] = int(a)
        return tiers

    def step(self, actions: dict):
        if not self.agents:
            raise ValueError("step() after the episode ended; call reset()")
        tiers = self._actions(actions)
        allocation = None
        if self._allocation is not None:
            band, compute = self._allocation
            self._allocation = None
            allocation = (np.ones(1, dtype=bool), band[None], compute[None])
        exo = draw_exogenous(self._np_random, self.params, 1)
        state, reward, info = transition(self.params, self.state, tiers[None], exo, allocation)
        self._set_state(state)
        glob = {
            "global_reward": float(info["global_reward"][0]),
            "total_latency_s": float(info["total_latency_s"][0]),
            "mean_quality": float(info["mean_quality"][0]),
            "allocation_projected": bool(info["allocation_projected"][0]),
        }
        columns = zip(
            self.possible_agents,
            info["latency_s"][0].tolist(),
            info["energy_j"][0].tolist(),
            info["quality"][0].tolist(),
            info["cloud_cost_usd"][0].tolist(),
            self._tiers[tiers].tolist(),
            info["band_share"][0].tolist(),
            info["compute_share"][0].tolist(),
            strict=True,
        )
        infos = {
            a: {"latency_s": lat, "energy_j": en, "quality": q, "cloud_cost_usd": usd, "tier": tier,
                "band_share": band, "compute_share": comp, **glob}
            for a, lat, en, q, usd, tier, band, comp in columns
        }
        truncated = self.step_count >= self.config.episode_length
        obs = self._observations()
        rewards = dict(zip(self.possible_agents, reward[0].tolist(), strict=True))
        terminations = dict.fromkeys(self.possible_agents, False)
        truncations = dict.fromkeys(self.possible_agents, truncated)
        if self._renderer.history is not None:
            action, merged = merge_agents(actions, infos, self.possible_agents, shared=_GLOBAL_KEYS)
            # the mean over agents: the return edgelam compare and plot-episode report for a parallel env
            self._renderer.history.append(action, sum(rewards.values()) / len(rewards), merged)
        if truncated:
            self.agents = []
        return obs, rewards, terminations, truncations, infos

    def render(self):
        """The current frame: a text line (``ansi``) or an image of the recent steps (``rgb_array``).

        The return in it is the sum of the users' rewards.
        """
        return self._renderer.render()

    def close(self) -> None:
        """Nothing to release (live models are shared, cached by :func:`edgelam.envs.lam.load`)."""


def parallel_env(**kwargs: Any) -> MultiUserOffloadEnv:
    """Build MultiUserOffload-v0 (``scenario=``, ``backend=``, dotted overrides)."""
    return MultiUserOffloadEnv(**kwargs)
