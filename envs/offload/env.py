"""edgelam/Offload-v0: run each LLM task on the device small model, the edge model or the cloud big model."""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium import spaces

from edgelam.envs.core.actions import DiscreteAction
from edgelam.envs.core.channel import WirelessLink
from edgelam.envs.core.config import load_scenario
from edgelam.envs.core.hardware import load_hardware_catalog
from edgelam.envs.core.model_cards import AUTO_CARD, resolve_model_card
from edgelam.envs.core.render import RENDER_FPS, RENDER_MODES, Panel, Renderer
from edgelam.envs.offload.config import TIERS, OffloadConfig
from edgelam.envs.offload.dynamics import (
    OBS_HIGH,
    Params,
    State,
    TierTables,
    advance,
    build_tables,
    initial,
    observation,
)
from edgelam.envs.offload.spec import SPEC

BACKENDS = ("replay", "live")

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
    from edgelam.envs.lam.replay import profile_models

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
    # card 'auto': the tier's executed model priced from its own config.json
    paths = profile_models(cfg.profile_dir) if any(t.card == AUTO_CARD for t in tiers) else {}
    return build_tables(
        tuple(resolve_model_card(t.card, path=paths.get(t.executed_model)) for t in tiers),
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

    Cost (Safety-Gymnasium's convention): ``info["cost"]`` is that y, reported on every
    step: the task's device energy in J (``budget.metric: energy_j``, as ``energy_j``) or
    its cloud spend in USD (``budget.metric: cloud_cost_usd``, as ``cloud_cost_usd``). The
    per-episode limit, the spec's ``cost_limit(scenario)``, is ``budget.per_task`` x
    ``episode_length`` in that unit (100 J in scenario ``default``: 0.5 J x 200 tasks),
    ``None`` without ``budget.per_task``; an episode that ends early on an empty battery is
    held to it too.

    ## Hindsight
    Kind ``exact`` where attained, else ``bound`` (``edgelam.baselines.offload_hindsight``):
    label-setting DPs over the episode's state (task, the edge's unfinished work W, battery) on
    the realised trace (prompts, rates, background edge work, cloud RTTs: drawn in blocks whatever
    the tiers, read from a fork of the env), each label expanded by the three tiers with the env's
    own ``advance``. First with the battery relaxed: labels (W, return), pruned when another has no
    more W and no less return (exact: the edge reward falls and the Lindley map rises with W); its
    best return over every prefix of the episode bounds any policy, since an empty battery only
    cuts the episode short, and is ``exact`` when its plan, played, earns it (the battery does not
    bind). Otherwise labels (W, battery, return), a battery above the most energy the remaining
    tasks can draw counting as full and a margin, checked on the trace, where it may run out:
    ``exact`` within its label cap, else the relaxation's value is a certified ``bound`` and the
    best of that DP's plan and the per-task oracle is played.

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
    The simulator is :mod:`~edgelam.envs.offload.dynamics` over a batched ``State``: this env
    is one row of it (``env.state``, advanced in place, what the baselines and oracles read).

    ## Vector env
    ``gym.make_vec("edgelam/Offload-v0", num_envs=B, vectorization_mode="vector_entry_point")``
    steps B rows of the same simulator (:class:`edgelam.envs.offload.vector.OffloadVectorEnv`,
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
        self.params = Params.build(cfg, self.tables)
        self.num_prompts = self.params.num_prompts
        self.link = WirelessLink(cfg.channel, n_links=1)
        self._live = None
        if backend == "live":
            from edgelam.envs.offload.live import LiveOffloadQuality

            self._live = LiveOffloadQuality(tuple(getattr(cfg, t).executed_model for t in TIERS),
                                            profile_dir=cfg.profile_dir)
        self.action_space = spaces.Discrete(len(TIERS))
        self._check_action = DiscreteAction(self.action_space, "0 device, 1 edge, 2 cloud")
        self.observation_space = spaces.Box(
            np.zeros(len(OBS_HIGH), np.float32), np.asarray(OBS_HIGH, np.float32), dtype=np.float32
        )
        self._budget = cfg.budget.per_task
        # the virtual queue is in the unit of the budgeted metric (read by plot-episode)
        unit = "J" if cfg.budget.metric == "energy_j" else "USD"
        self.metadata = {**self.metadata, "info_units": {"virtual_queue": unit, "cost": unit}}
        self._action = np.zeros(1, dtype=np.int64)
        # live backend: the device model's accuracy and confidence on the pending task, the chosen tier's quality
        self._device_acc = 0.0
        self._confidence = np.zeros(1) if self._live is not None else None
        self._quality = np.zeros(1) if self._live is not None else None
        # the simulator's State (B = 1), advanced in place: what the baselines read; reset() replaces this one
        self.state: State = initial(self.params, np.random.default_rng(0), WirelessLink(cfg.channel))[0]

    def _live_observation(self) -> np.ndarray:
        """The observation of the pending task with the live device model's confidence (after running it)."""
        self._device_acc, self._confidence[0] = self._live.device_run(self.prompt_index)
        return observation(self.params, self.state, self._confidence)[0]

    # -- oracle / baseline views (of the State's one row) -----------------------------------------

    @property
    def prompt_index(self) -> int:
        """Held-out prompt of the pending task."""
        return int(self.state.tasks.prompt[0, self.state.slot])

    @property
    def uplink_rate_bps(self) -> float:
        """Uplink rate of the pending task's slot (the device measures it before sending)."""
        return float(self.state.tasks.rate_bps[0, self.state.slot])

    @property
    def edge_wait_s(self) -> float:
        """Unfinished work at the edge (announced by the edge server), in s."""
        return float(self.state.edge_work_s[0])

    @property
    def last_cloud_rtt_s(self) -> float:
        """Cloud RTT the device measured on the previous task, in s."""
        return float(self.state.last_rtt_s[0])

    @property
    def true_cloud_rtt_s(self) -> float:
        """Cloud RTT the pending task will see (oracle knowledge), in s."""
        return float(self.state.tasks.rtt_s[0, self.state.slot])

    @property
    def device_confidence(self) -> float:
        """The device model's real confidence on the pending task."""
        if self._live is not None:
            return float(self._confidence[0])
        return float(self.tables.confidence[self.prompt_index])

    @property
    def virtual_queue(self) -> float:
        """Budget virtual queue Z (0 without a budget)."""
        return float(self.state.virtual_queue[0])

    # -- Gymnasium API ----------------------------------------------------------------------------

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
        super().reset(seed=seed)
        if self._renderer.history is not None:
            self._renderer.history.clear()
        self.state, distance = initial(self.params, self.np_random, self.link)
        obs = observation(self.params, self.state)[0] if self._live is None else self._live_observation()
        return obs, {"distance_m": float(distance[0]), "uplink_rate_bps": self.uplink_rate_bps}

    def step(self, action):
        a = self._check_action(action)
        self._action[0] = a
        if self._live is not None:
            self._quality[0] = self._device_acc if a == 0 else self._live.accuracy(self.prompt_index, a)
        out = advance(self.params, self.state, self._action, self.np_random, self._quality)
        latency, energy, quality, usd, _, wait, rate, prompt, vq, battery, reward, cost, terminated, truncated = (
            out.table[:, 0].tolist()
        )
        info = {
            "latency_s": latency,
            "energy_j": energy,
            "quality": quality,
            "cloud_cost_usd": usd,
            "tier": TIERS[a],
            "edge_wait_s": wait,
            "uplink_rate_bps": rate,
            "prompt_index": int(prompt),
        }
        if self._budget is not None:
            info["virtual_queue"] = vq
        info["battery_j"] = battery
        info["cost"] = cost
        obs = out.observation[0] if self._live is None else self._live_observation()
        if self._renderer.history is not None:
            self._renderer.history.append(action, reward, info)
        return obs, reward, terminated > 0.0, truncated > 0.0, info

    def render(self):
        """The current frame: a text line (``ansi``) or an image of the recent steps (``rgb_array``)."""
        return self._renderer.render()
