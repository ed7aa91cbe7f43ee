"""edgelam/Offload-v0: run each LLM task on the device small model, the edge model or the cloud big model."""

from __future__ import annotations

import math
from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium import spaces

from edgelam.envs.core.actions import DiscreteAction
from edgelam.envs.core.channel import MIN_RATE_BPS, WirelessLink
from edgelam.envs.core.config import load_scenario
from edgelam.envs.core.hardware import load_hardware_catalog
from edgelam.envs.core.model_cards import get_model_card
from edgelam.envs.core.queues import lindley_interval, virtual_queue_step
from edgelam.envs.core.render import RENDER_FPS, RENDER_MODES, Panel, Renderer
from edgelam.envs.offload.config import TIERS, OffloadConfig
from edgelam.envs.offload.dynamics import (
    EDGE,
    TierTables,
    build_tables,
    draw_task_block,
    initial_edge_work_s,
    task_cost,
)
from edgelam.envs.offload.spec import SPEC

BACKENDS = ("replay", "live")
CHUNK = 256  # random draws are made in blocks of this many tasks
# observation: device confidence, T / 128, log10(rate bit/s) / 10, edge queue s, last cloud RTT s,
# battery fraction, virtual queue / (10 budget), elapsed fraction
OBS_HIGH = (1.0, 32.0, 2.0, 100.0, 10.0, 1.0, 100.0, 1.0)
QUEUE_SCALE = 10.0

# what render_mode='rgb_array' draws, against the step index (edgelam.envs.core.render)
RENDER_PANELS = (
    Panel("tier chosen (0 device, 1 edge, 2 cloud)", ("action",), steps=True),
    Panel("uplink rate", ("uplink_rate_bps",), "Mbit/s", scale=1e-6),
    Panel("edge wait of offloaded tasks", ("edge_wait_s",), "s"),
    Panel("quality (top-1 accuracy)", ("quality",)),
    Panel("battery", ("battery_j",), "J"),
)


def offload_tables(cfg: Any) -> TierTables:
    """Price every held-out task on the three tiers of ``cfg`` (an Offload or MultiUserOffload config).

    Quality and device confidence are the real numbers of each tier's executed model in
    the ``offload`` replay profile (``cfg.profile_dir``; None = shipped).
    """
    from edgelam.envs.lam import load_profile

    prof = load_profile("offload", cfg.profile_dir)
    models = [str(m) for m in prof["models"]]
    cols = []
    for tier in TIERS:
        name = getattr(cfg, tier).executed_model
        if name not in models:
            raise ValueError(
                f"{tier}.executed_model: {name!r} is not in the offload profile (models: {', '.join(models)}); "
                f"run `edgelam profile` with it"
            )
        cols.append(models.index(name))
    catalog = load_hardware_catalog()
    tiers = [getattr(cfg, t) for t in TIERS]
    return build_tables(
        tuple(get_model_card(t.card) for t in tiers),
        tuple(catalog[t.hardware] for t in tiers),
        tuple(t.weight_bits for t in tiers),
        np.asarray(prof["prompt_len"]),
        cfg.decode_tokens,
        cfg.token_id_bytes,
        cfg.request_overhead_bytes,
        cfg.cloud_price_usd_per_token,
        cfg.channel.tx_power_w,
        cfg.edge_rtt_s,
        cfg.downlink_rate_bps,
        np.asarray(prof["ref_accuracy"], dtype=np.float64)[:, cols],
        np.asarray(prof["confidence"], dtype=np.float64)[:, cols[0]],
    )


class OffloadEnv(gym.Env):
    """Choose where each LLM task runs: the device small model, the edge model or the cloud big model.

    Each step is one task, a prompt drawn uniformly from the held-out set; its answer is
    the 32-token reference continuation. Compute is priced by the roofline model on each
    tier's model card and hardware (default: Qwen2.5-0.5B int8 on a phone NPU,
    Llama-3.2-3B on an L4 edge GPU, Llama-3.1-8B on an A100 in the cloud). The quality of
    a tier is the real teacher-forced top-1 accuracy of the shipped edgelam model that
    executes for it (``device``, ``edge`` and ``cloud`` by default; see the scenario's
    ``<tier>.executed_model``): ``backend="live"`` runs that model on the task inside
    ``step()`` (and the device model for its confidence), ``"replay"`` reads the
    ``offload`` profile recorded by ``edgelam profile`` with the same function.

    ## Action Space
    ``Discrete(3)``: 0 = device, 1 = edge, 2 = cloud.

    ## Observation Space
    ``Box(float32, (8,))``: the device model's real confidence on this task (mean max
    softmax probability over the answer), prompt tokens / 128, log10(uplink rate in bit/s)
    / 10, the edge server's unfinished work in s, the last measured cloud RTT in s,
    battery fraction, budget virtual queue / (10 x budget) (0 without a budget), fraction
    of the episode elapsed.

    ## Rewards
    ``w_Q quality - w_T latency_s - w_E energy_j - w_C cloud_cost_usd``; quality = top-1
    accuracy on the reference tokens, energy = device energy, cloud cost = (T + N) x price
    per token. With ``budget.per_task`` set, Z(t+1) = max(Z + y - budget, 0) for
    y = ``budget.metric`` (Neely 2010) is in ``info["virtual_queue"]``.

    ## Episode End
    Truncated after the scenario's ``episode_length`` tasks (200 by default; the id
    registers no ``max_episode_steps``, so an ``episode_length`` override is the episode length);
    terminated when the battery is empty.

    ## Physics and sources
    3GPP TR 38.901 path loss + shadowing, Gauss-Markov Rayleigh fading over task slots,
    Shannon rate (``edgelam.envs.core.channel``); roofline compute (``core.hardware``);
    FCFS edge with Poisson background jobs, Lindley's recursion over their arrival times
    within each task interval and a stationary start (``core.queues``; Lindley 1952), so
    tasks see it busy with probability ``edge_queue.utilisation`` (PASTA); log-normal
    AR(1) WAN RTT; costs in ``dynamics.py``.

    ## Vector env
    ``gym.make_vec("edgelam/Offload-v0", num_envs=B, vectorization_mode="vector_entry_point")``
    steps B devices with numpy (:class:`edgelam.envs.offload.vector.OffloadVectorEnv`,
    replay backend, next-step autoreset); with B = 1 it equals this env for the same seed.

    ## Version History
    * v0: initial release.
    """

    metadata = {
        "render_modes": RENDER_MODES,
        "render_fps": RENDER_FPS,
        "metric_directions": {"quality": "max", "cloud_cost_usd": "min"},
    }

    def __init__(
        self, scenario: str = "default", backend: str = "replay", render_mode: str | None = None, **overrides
    ):
        if backend not in BACKENDS:
            raise ValueError(f"backend: {backend!r} is not one of {BACKENDS}")
        self._renderer = Renderer("Offload-v0", render_mode, RENDER_PANELS)
        self.config: OffloadConfig = load_scenario(OffloadConfig, SPEC.scenario_dir, scenario, overrides)
        self.backend = backend
        self.render_mode = render_mode
        cfg = self.config
        self.tables: TierTables = offload_tables(cfg)
        self.num_prompts = len(self.tables.prompt_tokens)
        self.link = WirelessLink(cfg.channel, n_links=1)
        self._live = None
        if backend == "live":
            from edgelam.envs.offload.live import LiveOffloadQuality

            self._live = LiveOffloadQuality(tuple(getattr(cfg, t).executed_model for t in TIERS))
        self.action_space = spaces.Discrete(len(TIERS))
        self._check_action = DiscreteAction(self.action_space, "0 device, 1 edge, 2 cloud")
        self.observation_space = spaces.Box(
            np.zeros(len(OBS_HIGH), np.float32), np.asarray(OBS_HIGH, np.float32), dtype=np.float32
        )
        self._quality_rows = self.tables.quality.tolist()
        self._conf = self.tables.confidence.tolist()
        self._tokens = (self.tables.prompt_tokens / 128.0).tolist()
        self._budget = cfg.budget.per_task
        self._budget_energy = cfg.budget.metric == "energy_j"
        # the virtual queue is in the unit of the budgeted metric (read by plot-episode)
        self.metadata = {**self.metadata, "info_units": {"virtual_queue": "J" if self._budget_energy else "USD"}}
        self._w = cfg.reward
        self._reset_state()

    def _reset_state(self) -> None:
        self._t = 0
        self._k = CHUNK
        self._queue = 0.0
        self._vq = 0.0
        self._battery = self.config.battery_j
        self._h = 1.0 + 0j
        self._z = 0.0
        self._last_rtt = self.config.wan.rtt_mean_s
        self._prompts: list = []
        self._rates: list = []
        self._bg_shift: list = []
        self._bg_floor: list = []
        self._rtts: list = []
        self._prompt = 0
        self._rate = 1.0
        self._rtt = 0.0
        self._device_conf = 0.0
        self._device_acc: float | None = None

    # -- randomness, drawn in blocks -------------------------------------------------------------

    def _draw_chunk(self) -> None:
        """Draw the next CHUNK tasks: prompts, fading, background edge work, WAN RTT."""
        blk, h, z = draw_task_block(
            self.np_random, self.config, self.num_prompts, self.link.large_scale_gain,
            np.array([self._h]), np.array([self._z]), CHUNK,
        )
        self._h, self._z = complex(h[0]), float(z[0])
        self._prompts = blk.prompt[0].tolist()
        self._rates = blk.rate_bps[0].tolist()
        self._bg_shift = blk.bg_shift_s[0].tolist()
        self._bg_floor = blk.bg_floor_s[0].tolist()
        self._rtts = blk.rtt_s[0].tolist()
        self._k = 0

    def _next_task(self) -> None:
        if self._k >= CHUNK:
            self._draw_chunk()
        k = self._k
        self._prompt = self._prompts[k]
        self._rate = self._rates[k]
        self._rtt = self._rtts[k]
        self._k = k + 1
        if self._live is None:
            self._device_conf = self._conf[self._prompt]
        else:
            self._device_acc, self._device_conf = self._live.device_run(self._prompt)

    # -- oracle / baseline views ------------------------------------------------------------------

    @property
    def prompt_index(self) -> int:
        """Held-out prompt of the pending task."""
        return self._prompt

    @property
    def uplink_rate_bps(self) -> float:
        """Uplink rate of the pending task's slot (the device measures it before sending)."""
        return self._rate

    @property
    def edge_wait_s(self) -> float:
        """Unfinished work at the edge (announced by the edge server), in s."""
        return self._queue

    @property
    def last_cloud_rtt_s(self) -> float:
        """Cloud RTT the device measured on the previous task, in s."""
        return self._last_rtt

    @property
    def true_cloud_rtt_s(self) -> float:
        """Cloud RTT the pending task will see (oracle knowledge), in s."""
        return self._rtt

    @property
    def device_confidence(self) -> float:
        """The device model's real confidence on the pending task."""
        return self._device_conf

    @property
    def virtual_queue(self) -> float:
        """Budget virtual queue Z (0 without a budget)."""
        return self._vq

    def _obs(self) -> np.ndarray:
        cfg = self.config
        vq = 0.0 if not self._budget else min(self._vq / (QUEUE_SCALE * self._budget), 100.0)
        return np.array(
            [
                self._device_conf,
                min(self._tokens[self._prompt], 32.0),
                min(max(math.log10(max(self._rate, MIN_RATE_BPS)) / 10.0, 0.0), 2.0),
                min(self._queue, 100.0),
                min(self._last_rtt, 10.0),
                max(self._battery, 0.0) / cfg.battery_j,
                vq,
                self._t / cfg.episode_length,
            ],
            dtype=np.float32,
        )

    # -- Gymnasium API ----------------------------------------------------------------------------

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
        super().reset(seed=seed)
        if self._renderer.history is not None:
            self._renderer.history.clear()
        cfg, rng = self.config, self.np_random
        self._reset_state()
        distance = float(rng.uniform(*cfg.distance_m))
        self.link.reset(rng, distance)
        self._h = complex(self.link.fading.h[0])
        self._z = float(rng.standard_normal())
        self._queue = float(initial_edge_work_s(rng, cfg, 1)[0])
        self._next_task()
        return self._obs(), {"distance_m": distance, "uplink_rate_bps": self._rate}

    def step(self, action):
        a = self._check_action(action)
        cfg, w = self.config, self._w
        p = self._prompt
        latency, energy, usd = task_cost(self.tables, p, a, self._rate, self._queue, self._rtt)
        if self._live is None:
            quality = self._quality_rows[p][a]
        else:
            quality = self._device_acc if a == 0 else self._live.accuracy(p, a)
        reward = (
            w.quality_weight * quality
            - w.latency_weight * latency
            - w.energy_weight_per_j * energy
            - w.cloud_cost_weight_per_usd * usd
        )
        info = {
            "latency_s": latency,
            "energy_j": energy,
            "quality": quality,
            "cloud_cost_usd": usd,
            "tier": TIERS[a],
            "edge_wait_s": self._queue if a == EDGE else 0.0,
            "uplink_rate_bps": self._rate,
            "prompt_index": p,
        }
        if self._budget is not None:
            y = energy if self._budget_energy else usd
            self._vq = virtual_queue_step(self._vq, y, self._budget)
            info["virtual_queue"] = self._vq
        service = self.tables.compute_rows[p][EDGE] if a == EDGE else 0.0
        k = self._k - 1
        self._queue = lindley_interval(self._queue + service, self._bg_shift[k], self._bg_floor[k])
        self._battery -= energy
        self._last_rtt = self._rtt
        self._t += 1
        terminated = self._battery <= 0.0
        info["battery_j"] = max(self._battery, 0.0)
        truncated = self._t >= cfg.episode_length
        self._next_task()
        if self._renderer.history is not None:
            self._renderer.history.append(action, reward, info)
        return self._obs(), float(reward), terminated, truncated, info

    def render(self):
        """The current frame: a text line (``ansi``) or an image of the recent steps (``rgb_array``)."""
        return self._renderer.render()
