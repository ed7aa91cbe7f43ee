"""edgelam/SplitInference-v0: adaptive device/edge split inference of an LLM over a fading uplink."""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium import spaces

from edgelam.envs.core.actions import MultiDiscreteAction
from edgelam.envs.core.config import load_scenario
from edgelam.envs.core.hardware import load_hardware_catalog
from edgelam.envs.core.model_cards import resolve_model_card
from edgelam.envs.core.render import RENDER_FPS, RENDER_MODES, Panel, Renderer
from edgelam.envs.split_inference.config import SplitInferenceConfig
from edgelam.envs.split_inference.dynamics import (
    BITS,
    ERGODIC,
    HIST,
    PROMPT,
    QUEUE,
    QUEUE_SCALE,
    RATE,
    REWARD,
    SLOT,
    STEP,
    UTIL,
    CostTables,
    Params,
    State,
    advance,
    build_tables,
    estimated_rate_bps,
    executed_layer_map,
    initial,
    observation,
    step_info,
)
from edgelam.envs.split_inference.spec import SPEC

BACKENDS = ("replay", "live")

# what render_mode='rgb_array' draws, against the step index (edgelam.envs.core.render)
RENDER_PANELS = (
    Panel("uplink SNR", ("snr_db",), "dB"),
    Panel("split layer chosen (0 = all at the edge)", ("split_layer",), "layer", steps=True),
    Panel("activation precision", ("bits",), "bit", steps=True),
    Panel("energy budget virtual queue", ("virtual_queue",), "J"),
    Panel("request latency", ("latency_s",), "s"),
)


def _split_quality_tables(
    executed_model: str, card_layers: int, profile_dir: str | None
) -> tuple[np.ndarray, np.ndarray]:
    """(prompt token counts (P,), quality loss (P, L_card + 1, 3)) from the profile of the executed model."""
    from edgelam.envs.lam import load_profile

    prof = load_profile("split_quality", profile_dir)
    if str(prof["model"]) != executed_model:
        raise ValueError(
            f"executed_model: the split profile in {profile_dir or 'the shipped profiles'} is of "
            f"{str(prof['model'])!r}, not {executed_model!r}; run `edgelam profile` for that model"
        )
    if list(prof["bits"]) != list(BITS):
        raise ValueError(f"split profile bits {list(prof['bits'])} != {list(BITS)}; rerun `edgelam profile`")
    exec_layers = len(prof["split_layers"]) - 1
    layer_map = executed_layer_map(card_layers, exec_layers)
    loss = 1.0 - np.asarray(prof["top1_agreement"], dtype=np.float64)[:, layer_map, :]
    return np.asarray(prof["prompt_len"], dtype=np.int64), loss


class SplitInferenceEnv(gym.Env):
    """Choose the split layer and activation precision of each LLM request.

    A device (phone NPU) and an edge server (GPU) share the layers of a
    transformer: layers [0, l) run on the device, the hidden state is quantised to
    4, 8 or 16 bits and sent over a Rayleigh-fading uplink, layers [l, L) and the
    LM head run at the edge under a time-varying background load. Costs are
    priced by the roofline model on the scenario's hardware and model card; the
    quality loss of (l, bits) is the real disagreement of the shipped ``cloud``
    model's split, quantised execution with its unsplit run on that request's
    prompt (``backend="live"`` executes it inside ``step()``, ``"replay"`` reads
    the profile recorded by ``edgelam profile`` from the same code).

    ## Action Space
    ``MultiDiscrete([L + 1, 3])``: split layer ``l`` in 0..L (0 = everything at
    the edge, L = everything on the device) and precision index into (4, 8, 16)
    bits. Precision is irrelevant when nothing is sent (l = 0 or L).

    ## Observation Space
    ``Box(float32)`` of ``snr_history + 6`` values: the last ``snr_history`` uplink
    SNR estimates in dB / 40 (newest first; the estimate is ``csi_delay_slots``
    old and has log-normal error ``csi_noise_db``), log10 of the estimated uplink
    rate in bit/s / 10, edge utilisation u, prompt tokens / 128, decoded tokens /
    128, device energy virtual queue / (10 x budget) (0 without a budget), and the
    fraction of the episode elapsed.

    ## Rewards
    ``-(w_L * latency_s + w_E * energy_j + w_Q * quality_loss)`` with
    ``quality_loss = 1 - top-1 agreement`` over the request's reference tokens.
    With ``energy_budget_j`` set, the virtual queue Z(t+1) = max(Z + E - budget, 0)
    (Neely 2010) is reported in ``info["virtual_queue"]``.

    Cost (Safety-Gymnasium's convention): ``info["cost"]`` is the request's device energy E
    in J (the ``energy_j`` the queue accumulates), reported on every step. The per-episode
    limit, the spec's ``cost_limit(scenario)``, is ``energy_budget_j`` x ``episode_length``
    J (120 J in scenario ``default``: 0.6 J x 200 requests), ``None`` without
    ``energy_budget_j``.

    ## Hindsight
    ``hindsight`` is **exact**: every (split layer, bits) is tried on each request of the
    replayed trace and the best kept (:mod:`edgelam.baselines.split_inference_hindsight`). A
    request's reward reads only its action, its slot's exogenous draws and the episode's
    ergodic rate (the virtual queue, the one state actions change, is observed, never priced),
    and the draws do not depend on the actions, so the episode's optimum is the sum of the
    per-request optima (the ``oracle`` baseline reaches it too). Replay backend only:
    ``backend="live"`` raises ``ValueError`` (3 (L + 1) real split executions per request).

    ## Episode End
    Truncated after the scenario's ``episode_length`` requests (200 by default; the id
    registers no ``max_episode_steps``, so an ``episode_length`` override is the episode
    length); never terminated.

    ## Physics and sources
    3GPP TR 38.901 path loss + log-normal shadowing, Gauss-Markov Rayleigh fading
    with rho = J0(2 pi f_d T) over request slots, Shannon rate with N0 = -174
    dBm/Hz (``edgelam.envs.core.channel``); roofline layer costs
    (``edgelam.envs.core.hardware``); split latency/energy as in Neurosurgeon
    (Kang et al., ASPLOS 2017), see ``dynamics.py``.
    The simulator is :mod:`~edgelam.envs.split_inference.dynamics` over a batched ``State``:
    this env is one user of it (``env.state``, advanced in place, what the baselines read);
    ``gym.make_vec(id, num_envs=B, vectorization_mode="vector_entry_point")`` steps B users
    (:class:`~edgelam.envs.split_inference.vector.SplitInferenceVectorEnv`).

    ## Version History
    * v0: initial release.
    """

    metadata = {
        "render_modes": RENDER_MODES,
        "render_fps": RENDER_FPS,
        "metric_directions": {"quality": "max", "quality_loss": "min"},
        "info_units": {"virtual_queue": "J", "cost": "J"},  # units of info keys whose name does not state one
    }

    def __init__(
        self, scenario: str = "default", backend: str = "replay", render_mode: str | None = None, **overrides
    ):
        if backend not in BACKENDS:
            raise ValueError(f"backend: {backend!r} is not one of {BACKENDS}")
        self._renderer = Renderer("SplitInference-v0", render_mode, RENDER_PANELS)
        self.config: SplitInferenceConfig = load_scenario(SplitInferenceConfig, SPEC.scenario_dir, scenario, overrides)
        self.backend = backend
        self.render_mode = render_mode
        cfg = self.config
        card = resolve_model_card(cfg.model_card, profile_dir=cfg.profile_dir)
        catalog = load_hardware_catalog()
        prompt_tokens, quality_loss = _split_quality_tables(
            cfg.executed_model, card.num_layers, cfg.profile_dir
        )
        self.tables: CostTables = build_tables(
            card,
            catalog[cfg.device_hw],
            catalog[cfg.edge_hw],
            prompt_tokens,
            cfg.decode_tokens,
            cfg.device_weight_bits,
            cfg.edge_weight_bits,
            cfg.token_id_bytes,
            cfg.channel.tx_power_w,
            cfg.rtt_s,
            cfg.downlink_rate_bps,
            quality_loss,
            cfg.channel.coherence_time_s,
        )
        self.num_layers = card.num_layers
        self.num_prompts = len(prompt_tokens)
        self.params = Params.build(cfg, self.tables)
        self._has_budget = self.params.has_budget
        self._live = None
        if backend == "live":
            from edgelam.envs.split_inference.live import LiveSplitQuality

            self._live = LiveSplitQuality(cfg.executed_model, card.num_layers, cfg.profile_dir)
        self._live_loss = np.zeros(1)

        h = cfg.snr_history
        self.action_space = spaces.MultiDiscrete([self.num_layers + 1, len(BITS)])
        self._check_action = MultiDiscreteAction(self.action_space, "[split_layer, bits_index]")
        low = np.concatenate([np.full(h, -1.0), [0.0, 0.0, 0.0, 0.0, 0.0, 0.0]]).astype(np.float32)
        high = np.concatenate([np.full(h, 2.0), [1.5, 1.0, 1.0, 32.0, QUEUE_SCALE, 1.0]]).astype(np.float32)
        self.observation_space = spaces.Box(low, high, dtype=np.float32)
        self._action = np.zeros((1, 2), dtype=np.int64)
        self.state: State = initial(self.params, np.random.default_rng(0), 1)  # replaced by reset()
        # load the compiled step now (numba's cache), not inside the first step()
        advance(self.params, self.state.copy(), self._action, np.random.default_rng(0))

    # -- what the baselines read: the pending request of the one user of ``state`` --------------------

    def _pending(self, row: int) -> float:
        s = self.state
        return float(s.block[row, s.ints[0, SLOT], 0])

    @property
    def prompt_index(self) -> int:
        """Held-out prompt of the pending request."""
        return int(self._pending(PROMPT))

    @property
    def true_rate_bps(self) -> float:
        """True uplink rate of the pending request's slot (oracle knowledge)."""
        return self._pending(RATE)

    @property
    def ergodic_rate_bps(self) -> float:
        """Fading-averaged uplink rate of this episode's large-scale SNR (known: measurable over requests)."""
        return float(self.state.reals[0, ERGODIC])

    @property
    def edge_util(self) -> float:
        """Background utilisation of the edge, announced to the device."""
        return self._pending(UTIL)

    @property
    def virtual_queue(self) -> float:
        """Device-energy virtual queue Z (0 without a budget)."""
        return float(self.state.reals[0, QUEUE])

    def estimated_rate_bps(self) -> float:
        """Uplink rate the device can estimate from its newest (stale, noisy) SNR estimate."""
        return estimated_rate_bps(self.config.channel.bandwidth_hz, float(self.state.reals[0, HIST]))

    # -- Gymnasium API ---------------------------------------------------------------------------

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
        super().reset(seed=seed)
        if self._renderer.history is not None:
            self._renderer.history.clear()
        self.state = initial(self.params, self.np_random, 1, self.state.exo)
        info = {"uplink_rate_bps": self.true_rate_bps, "distance_m": float(self.state.distance_m[0])}
        return observation(self.params, self.state)[0], info

    def step(self, action):
        layer, bits = self._check_action(action)
        act = self._action
        act[0, 0], act[0, 1] = layer, bits
        live = None
        if self._live is not None:
            live = self._live_loss
            live[0] = self._live.quality_loss(self.prompt_index, layer, BITS[bits])
        out, obs = advance(self.params, self.state, act, self.np_random, live)
        values = out.table[:, 0].tolist()
        info = step_info(values, int, self._has_budget)
        reward = values[REWARD]
        truncated = int(self.state.ints[0, STEP]) >= self.config.episode_length
        if self._renderer.history is not None:
            self._renderer.history.append(action, reward, info)
        return obs[0], reward, False, truncated, info

    def render(self):
        """The current frame: a text line (``ansi``) or an image of the recent steps (``rgb_array``)."""
        return self._renderer.render()
