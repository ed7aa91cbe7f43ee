"""edgelam/MultiUserOffload-v0: N users offload LLM tasks into one shared uplink and edge server."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from gymnasium import spaces
from gymnasium.utils import seeding
from pettingzoo import ParallelEnv

from edgelam.envs.core.channel import WirelessLink, rate_from_snr_bps
from edgelam.envs.core.config import load_scenario
from edgelam.envs.core.render import RENDER_FPS, RENDER_MODES, Panel, Renderer, merge_agents
from edgelam.envs.multi_user_offload.config import MultiUserOffloadConfig
from edgelam.envs.multi_user_offload.dynamics import equal_shares, slot_costs
from edgelam.envs.multi_user_offload.spec import SPEC
from edgelam.envs.offload.config import TIERS
from edgelam.envs.offload.dynamics import DEVICE
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
    one step. Agents' action spaces stay identical (needed by SuperSuit parameter sharing).

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
        obs_space = spaces.Box(np.zeros(len(OBS_HIGH), np.float32), np.asarray(OBS_HIGH, np.float32), dtype=np.float32)
        act_space = spaces.Discrete(len(TIERS))
        self.observation_spaces = dict.fromkeys(self.possible_agents, obs_space)
        self.action_spaces = dict.fromkeys(self.possible_agents, act_space)
        self.link = WirelessLink(cfg.channel, n_links=self.n)
        self._np_random, _ = seeding.np_random(None)
        self._allocation: tuple[np.ndarray, np.ndarray] | None = None
        self._live = None
        if backend == "live":
            from edgelam.envs.offload.live import LiveOffloadQuality

            self._live = LiveOffloadQuality(tuple(getattr(cfg, t).executed_model for t in TIERS), cache=True)
        self._init_state()

    def _init_state(self) -> None:
        self._t = 0
        self._battery = np.full(self.n, self.config.battery_j)
        self._prompts = np.zeros(self.n, dtype=np.int64)
        self._conf = np.zeros(self.n)
        self._se = np.ones(self.n)
        self._z = 0.0
        self._rtt = self.config.wan.rtt_mean_s
        self._last_rtt = self._rtt
        self._offloaded = 0.0

    def observation_space(self, agent: str) -> spaces.Box:
        return self.observation_spaces[agent]

    def action_space(self, agent: str) -> spaces.Discrete:
        return self.action_spaces[agent]

    # -- state views for controllers --------------------------------------------------------------

    @property
    def prompts(self) -> np.ndarray:
        """(N,) held-out prompt of each user's pending task."""
        return self._prompts

    @property
    def device_confidence(self) -> np.ndarray:
        """(N,) the device model's real confidence on each user's pending task (live: just computed)."""
        return self._conf

    @property
    def live_model_runs(self) -> int:
        """Real model executions so far in this env instance (0 for ``backend="replay"``)."""
        return 0 if self._live is None else self._live.runs

    @property
    def spectral_efficiency(self) -> np.ndarray:
        """(N,) log2(1 + SNR) of each user this slot (bit/s/Hz, independent of its band share)."""
        return self._se

    @property
    def last_cloud_rtt_s(self) -> float:
        """Cloud RTT measured in the previous slot, in s."""
        return self._last_rtt

    @property
    def offloaded_fraction(self) -> float:
        """Fraction of users that offloaded in the previous slot."""
        return self._offloaded

    @property
    def step_count(self) -> int:
        """Slots played in this episode."""
        return self._t

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

    # -- dynamics ---------------------------------------------------------------------------------

    def _next_slot(self) -> None:
        cfg, rng = self.config, self._np_random
        _, snr, _ = self.link.step(rng)
        self._se = np.maximum(rate_from_snr_bps(1.0, snr), 1e-6)  # bit/s/Hz: the rate of 1 Hz
        self._prompts = rng.integers(self.num_prompts, size=self.n)
        if self._live is None:
            self._conf = self.tables.confidence[self._prompts]
        else:
            self._conf = np.array([self._live.device_run(int(p))[1] for p in self._prompts])
        wan = cfg.wan
        self._z = wan.corr * self._z + math.sqrt(1.0 - wan.corr**2) * float(rng.standard_normal())
        self._rtt = wan.rtt_mean_s * math.exp(wan.rtt_log_std * self._z - 0.5 * wan.rtt_log_std**2)

    def _observations(self) -> dict[str, np.ndarray]:
        cfg = self.config
        t = self.tables
        obs = np.empty((self.n, len(OBS_HIGH)), dtype=np.float32)
        obs[:, 0] = self._conf
        obs[:, 1] = np.minimum(t.prompt_tokens[self._prompts] / 128.0, 32.0)
        obs[:, 2] = np.clip(np.log10(np.maximum(cfg.channel.bandwidth_hz * self._se, 1.0)) / 10.0, 0.0, 2.0)
        obs[:, 3] = cfg.edge_background_util
        obs[:, 4] = min(self._last_rtt, 10.0)
        obs[:, 5] = np.maximum(self._battery, 0.0) / cfg.battery_j
        obs[:, 6] = self._offloaded
        obs[:, 7] = self._t / cfg.episode_length
        return {a: obs[i] for i, a in enumerate(self.possible_agents)}

    def reset(self, seed: int | None = None, options: dict | None = None):
        if seed is not None:
            self._np_random, _ = seeding.np_random(seed)
        cfg, rng = self.config, self._np_random
        self.agents = list(self.possible_agents)
        if self._renderer.history is not None:
            self._renderer.history.clear()
        self._init_state()
        self._allocation = None
        distances = rng.uniform(*cfg.distance_m, size=self.n)
        self.link.reset(rng, distances)
        self._z = float(rng.standard_normal())
        self._next_slot()
        infos = {a: {"distance_m": float(distances[i])} for i, a in enumerate(self.possible_agents)}
        return self._observations(), infos

    def _actions(self, actions: dict) -> np.ndarray:
        if not isinstance(actions, dict) or set(actions) != set(self.agents):
            raise ValueError(f"actions: expected one action per live agent {self.agents}, got {actions!r}")
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
        cfg, w = self.config, self.config.reward
        band, compute = equal_shares(tiers)
        projected = False
        if self._allocation is not None:
            b, c = self._allocation
            self._allocation = None
            off, edge = tiers != DEVICE, tiers == 1
            if np.all(b[off] > 0) and np.all(c[edge] > 0):
                band, compute = b, c
            else:
                projected = True
        latency, energy, usd, _ = slot_costs(
            self.tables, self._prompts, tiers, self._se, band, compute,
            cfg.channel.bandwidth_hz, cfg.edge_background_util, self._rtt,
        )
        if self._live is None:
            quality = self.tables.quality[self._prompts, tiers]
        else:
            quality = np.array([self._live.accuracy(int(p), int(k)) for p, k in zip(self._prompts, tiers, strict=True)])
        rewards_arr = (
            w.quality_weight * quality
            - w.latency_weight * latency
            - w.energy_weight_per_j * energy
            - w.cloud_cost_weight_per_usd * usd
        )
        glob = {
            "global_reward": float(rewards_arr.mean()),
            "total_latency_s": float(latency.sum()),
            "mean_quality": float(quality.mean()),
            "allocation_projected": projected,
        }
        infos = {}
        for i, a in enumerate(self.possible_agents):
            infos[a] = {
                "latency_s": float(latency[i]),
                "energy_j": float(energy[i]),
                "quality": float(quality[i]),
                "cloud_cost_usd": float(usd[i]),
                "tier": TIERS[tiers[i]],
                "band_share": float(band[i]),
                "compute_share": float(compute[i]),
                **glob,
            }
        self._battery = self._battery - energy
        self._offloaded = float(np.mean(tiers != DEVICE))
        self._last_rtt = self._rtt
        self._t += 1
        truncated = self._t >= cfg.episode_length
        self._next_slot()
        obs = self._observations()
        rewards = {a: float(rewards_arr[i]) for i, a in enumerate(self.possible_agents)}
        terminations = dict.fromkeys(self.possible_agents, False)
        truncations = dict.fromkeys(self.possible_agents, truncated)
        if self._renderer.history is not None:
            action, merged = merge_agents(actions, infos, self.possible_agents, shared=tuple(glob))
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
