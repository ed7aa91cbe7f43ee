"""edgelam/SpecDecode-v0: draft length and draft model per speculative-decoding round over a fading link."""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium import spaces

from edgelam.envs.core.actions import MultiDiscreteAction
from edgelam.envs.core.config import load_scenario
from edgelam.envs.core.hardware import load_hardware_catalog
from edgelam.envs.core.model_cards import AUTO_CARD, ModelCard, get_model_card, resolve_model_card
from edgelam.envs.core.render import RENDER_FPS, RENDER_MODES, Panel, Renderer
from edgelam.envs.spec_decode import dynamics as dyn
from edgelam.envs.spec_decode.config import TARGET_CARD, SpecDecodeConfig
from edgelam.envs.spec_decode.dynamics import QUEUE_SCALE, RTT_SCALE_S, Params, RoundTables, State, build_tables
from edgelam.envs.spec_decode.spec import SPEC

BACKENDS = ("replay", "live")
__all__ = ["BACKENDS", "QUEUE_SCALE", "RTT_SCALE_S", "SpecDecodeEnv", "make_params", "observation_space"]

# what render_mode='rgb_array' draws, against the step index (edgelam.envs.core.render)
RENDER_PANELS = (
    Panel("draft tokens per round", ("proposed_tokens", "accepted_tokens"), "tokens", labels=("proposed", "accepted"),
          steps=True),
    Panel("draft length gamma chosen", ("gamma",), steps=True),
    Panel("link rate", ("link_rate_bps",), "Mbit/s", scale=1e-6),
    Panel("round latency", ("latency_s",), "s"),
    Panel("energy budget virtual queue", ("virtual_queue",), "J"),
)


def _acceptance_tables(cfg: SpecDecodeConfig) -> tuple[np.ndarray, np.ndarray, np.ndarray, str]:
    """(beta (V, P, N) of the scenario's drafts at its temperature, prompt ids (P,), prompt lengths (P,), target)."""
    from edgelam.envs.lam import load_profile

    prof = load_profile("acceptance", cfg.profile_dir)
    variants = [str(v) for v in prof["variants"]]
    temps = [float(t) for t in prof["temperatures"]]
    if cfg.temperature not in temps:
        raise ValueError(f"temperature: {cfg.temperature} is not in the acceptance profile ({temps})")
    missing = [v for v in cfg.draft_variants if v not in variants]
    if missing:
        raise ValueError(f"draft_variants: {missing} not in the acceptance profile (profiled: {variants})")
    n = prof["beta"].shape[-1]
    if cfg.iid_alpha is None and cfg.tokens_per_request > n:
        raise ValueError(f"tokens_per_request: {cfg.tokens_per_request} exceeds the {n} profiled positions")
    rows = [variants.index(v) for v in cfg.draft_variants]
    beta = np.asarray(prof["beta"], dtype=np.float64)[rows, temps.index(cfg.temperature)]
    return beta, np.asarray(prof["prompt_index"]), np.asarray(prof["prompt_len"]), str(prof["target"])


def _draft_card(cfg: SpecDecodeConfig, i: int, card: str) -> ModelCard:
    """Card ``card`` of draft ``i``; ``auto``: the card of draft ``i``'s model in the profile, from its config.json."""
    if card != AUTO_CARD:
        return get_model_card(card)
    from edgelam.envs.lam.replay import profile_models

    models = profile_models(cfg.profile_dir)
    variant = cfg.draft_variants[i]
    if variant not in models:
        raise ValueError(f"draft_cards[{i}]: 'auto' prices a model of the profile, and draft {variant!r} is not one "
                         f"(models: {', '.join(models)}); give it a card name or 'target'")
    return resolve_model_card(AUTO_CARD, path=models[variant])


def make_params(cfg: SpecDecodeConfig, episode_length: int | None = None) -> tuple[Params, str]:
    """The simulator's :class:`~.dynamics.Params` of a scenario and the executed target (``"iid"`` without one).

    Acceptance from the replay profile (or ``iid_alpha``), round prices by the roofline on the
    scenario's cards and hardware; ``episode_length`` caps the scenario's (a vector env's ``max_episode_steps``).
    """
    n = cfg.tokens_per_request
    v = len(cfg.draft_variants)
    if cfg.iid_alpha is None:
        beta, prompt_ids, prompt_len, executed_target = _acceptance_tables(cfg)
    else:  # i.i.d. acceptance: no draft runs, no profile is read
        beta = np.full((v, 1, n), cfg.iid_alpha)
        prompt_ids, prompt_len, executed_target = np.zeros(1, np.int64), np.full(1, 64), "iid"
    target = resolve_model_card(cfg.target_card, profile_dir=cfg.profile_dir)
    drafts = [
        (target if c == TARGET_CARD else _draft_card(cfg, i, c), f, b)
        for i, (c, f, b) in enumerate(zip(cfg.draft_cards, cfg.draft_layer_fraction, cfg.draft_weight_bits,
                                          strict=True))
    ]
    catalog = load_hardware_catalog()
    tables = build_tables(
        cfg.topology == "edge_draft",
        target,
        cfg.target_weight_bits,
        drafts,
        catalog[cfg.device_hw],
        catalog[cfg.edge_hw],
        cfg.gamma_max,
        float(np.mean(prompt_len)) + n / 2.0,
        cfg.token_id_bytes,
        cfg.prob_bytes_per_token,
        cfg.verdict_bytes,
        cfg.rtt_s,
        cfg.channel.tx_power_w,
        cfg.channel.slot_s,
    )
    space = observation_space(v)
    return Params.build(cfg, tables, beta, prompt_ids, space.high, episode_length), executed_target


def observation_space(num_variants: int) -> spaces.Box:
    """Box of the observation: ``num_variants + 10`` values (layout in the env docstring)."""
    low = np.zeros(num_variants + 10, dtype=np.float32)
    high = np.ones(num_variants + 10, dtype=np.float32)
    high[0], high[1], high[-1] = 1.5, 20.0, QUEUE_SCALE
    return spaces.Box(low, high, dtype=np.float32)


class SpecDecodeEnv(gym.Env):
    """Choose the draft length and the draft model of each speculative-decoding round.

    An episode serves ``requests_per_episode`` requests of ``tokens_per_request`` tokens,
    generated by the real target model (``cloud``) with draft-then-verify rounds
    (Leviathan et al. 2023). In the default ``edge_draft`` topology the edge server drafts
    with a copy of the device's model (a smaller model, an early exit, an int8 copy) and the
    device's model verifies the drafted tokens in one pass; ``device_draft`` is the reverse.

    Which draft is accepted is real: ``backend="replay"`` walks the profiled per-position
    acceptance probabilities ``beta = sum_x min(p, q)`` of each draft along the target's own
    generation of the request's prompt (``acceptance.npz`` of ``edgelam profile``), accepting
    drafted token i with probability ``beta[pos + i]`` and stopping at the first rejection;
    ``backend="live"`` runs the draft and the target with exact speculative sampling on the
    request's real context inside ``step()``. ``iid_alpha`` replaces the draft by i.i.d.
    acceptance with probability alpha (validation against theory).

    Compute is priced with the roofline model on real-size model cards; the executed models
    only decide acceptance. Default pricing (``configs/scenarios/spec_decode/default.yaml``):
    target ``Llama-3.2-3B`` int8 on the phone NPU (executed: shipped ``cloud``); drafts at the
    L4 edge: ``device`` priced as ``Qwen2.5-0.5B``, ``edge`` as ``Llama-3.2-1B``,
    ``early_exit:2`` as the first quarter of the target card's layers, ``int8`` as the target
    card at 8-bit weights (executed: shipped ``device``, ``edge``, the first 2 of 8 layers of
    ``cloud``, ``cloud`` with int8 fake-quantised weights).

    ## Action Space
    ``MultiDiscrete([gamma_max + 1, V])``: draft length gamma (0 = plain autoregressive
    decoding by the target, no drafting) and the index of the draft variant in
    ``draft_variants`` (ignored when gamma = 0). Near the end of a request gamma is cut to
    the tokens left minus one, as in the runtime.

    ## Observation Space
    ``Box(float32)`` of ``V + 10`` values: log10 of the estimated link rate in bit/s / 10
    (the previous round's rate), RTT / 0.1 s, edge and device utilisation, per-variant
    acceptance EMA (initialised at the profile mean), last accepted length / gamma_max,
    last proposed length / gamma_max, tokens left in the request / tokens_per_request,
    requests left / requests_per_episode, battery fraction left, and the energy virtual
    queue / (10 x budget) (0 without ``energy_budget_j_per_token``).

    ## Rewards
    ``-(latency_s + w_E * energy_j) / tokens_per_request`` per round, so a request's return is
    exactly ``-(time per generated token + w_E * device energy per generated token)``
    (``w_E = reward.energy_weight_per_j``). With ``energy_budget_j_per_token`` = b set, the
    virtual queue Z(t+1) = max(Z + energy_j - b x tokens, 0) (Neely 2010) is reported in
    ``info["virtual_queue"]``: the round's budget is b per emitted token.

    Cost (Safety-Gymnasium's convention): ``info["cost"]`` is the round's device energy in J
    (the ``energy_j`` the queue accumulates, not divided by its tokens), reported on every
    round. The per-episode limit, the spec's ``cost_limit(scenario)``, is b x the tokens of
    a complete episode, ``energy_budget_j_per_token`` x ``requests_per_episode`` x
    ``tokens_per_request`` J (25.6 J in scenario ``default``: 0.1 J/token x 8 x 32 tokens),
    ``None`` without a budget; an episode cut short (empty battery, ``episode_length``
    reached) emits fewer tokens but is held to the same limit.

    ## Hindsight
    Kind ``exact`` where certified (``edgelam.baselines.spec_decode_hindsight``): a backward DP
    over (round, requests done, position in the request) on the realised trace. Each round draws
    ``gamma_max`` acceptance uniforms whatever gamma is, the link and loads move by the round
    index and request j's prompt is the j-th draw, so the trace is a fixed function of the round
    and the request; the DP's transitions are the env's compiled round run on every (request,
    position, action) with the round's recorded state. The battery is left out of the DP: every
    reward is <= 0, and the optimum is certified when it beats the most a policy that empties
    the battery can earn (the least reward lost per joule over the DP's rounds x the battery).
    With ``drift_mps`` or a ``blockage`` (the link follows the episode clock, set by the
    latencies chosen), a block of rounds drawn within the episode, or an uncertified battery,
    the kind is ``planner``: the DP re-solved on the trace its plan realises, against the
    per-round oracle, the best realised return.

    ## Episode End
    Terminated when the last request is complete or the battery is empty; truncated after
    ``episode_length`` rounds (256 by default; the id registers no ``max_episode_steps``,
    so an ``episode_length`` override is the episode length).
    A finished request is followed by a new one (a fresh prompt) in the next round.

    ## Physics and sources
    3GPP TR 38.901 path loss + shadowing, Gauss-Markov Rayleigh fading over rounds
    (``slot_s`` = one round), Shannon rate (``edgelam.envs.core.channel``); optional
    ``drift_mps`` mobility (distance changes by speed x round time) and a scheduled
    ``blockage``; roofline compute prices (``edgelam.envs.core.hardware``); round model in
    ``dynamics.py``.

    ## Vector env
    The simulator is :mod:`~edgelam.envs.spec_decode.dynamics` over a batched ``State``: this
    env is one row of it (``env.state``, advanced in place; the properties below read it).
    ``gym.make_vec("edgelam/SpecDecode-v0", num_envs=B, vectorization_mode="vector_entry_point")``
    steps B rows with the same compiled round
    (:class:`edgelam.envs.spec_decode.vector.SpecDecodeVectorEnv`, replay backend, next-step
    autoreset); with B = 1 it equals this env bit for bit for the same seed. Both draw the
    random numbers of the rounds (fading, loads, shadowing under drift, acceptance uniforms)
    in blocks of rounds (:func:`~edgelam.envs.spec_decode.dynamics.block_rounds`).

    ## Version History
    * v0: initial release.
    """

    metadata = {
        "render_modes": RENDER_MODES,
        "render_fps": RENDER_FPS,
        "metric_directions": {"tokens": "max", "accepted_tokens": "max"},
        "info_units": {"virtual_queue": "J", "cost": "J"},  # units of info keys whose name does not state one
    }

    def __init__(
        self, scenario: str = "default", backend: str = "replay", render_mode: str | None = None, **overrides
    ):
        if backend not in BACKENDS:
            raise ValueError(f"backend: {backend!r} is not one of {BACKENDS}")
        self._renderer = Renderer("SpecDecode-v0", render_mode, RENDER_PANELS)
        self.config: SpecDecodeConfig = load_scenario(SpecDecodeConfig, SPEC.scenario_dir, scenario, overrides)
        self.scenario, self.overrides, self.backend, self.render_mode = scenario, dict(overrides), backend, render_mode
        cfg = self.config
        self.params, self.executed_target = make_params(cfg)
        p = self.params
        self.tables: RoundTables = p.tables
        self.num_variants = p.num_variants
        self.num_prompts = p.num_prompts
        self.beta = p.beta  # (V, P, N) per-position acceptance probability
        self.mean_acceptance = p.mean_acceptance  # (V,) profile mean, the prior of the EMA
        self.prompt_ids = p.prompt_ids
        self._beta_rows = [[list(map(float, row)) for row in variant] for variant in p.beta]  # accepted_if's lists
        self._prompt_id_list = [int(x) for x in p.prompt_ids]
        self._block_len = dyn.block_rounds(cfg.episode_length, 1)
        self._live = None
        if backend == "live" and cfg.iid_alpha is None:
            from edgelam.envs.spec_decode.live import LiveSpeculation

            self._live = LiveSpeculation(self.executed_target, cfg.draft_variants, cfg.temperature, cfg.profile_dir)
        self.action_space = spaces.MultiDiscrete([cfg.gamma_max + 1, p.num_variants])
        self._check_action = MultiDiscreteAction(self.action_space, "[gamma, draft_variant]")
        self.observation_space = observation_space(p.num_variants)
        self._control = np.zeros((4, 1), dtype=np.int64)
        self._control[dyn.LIVE_ACCEPTED] = -1
        self._result = dyn.tables_for(1, p.num_variants)
        self._on_requests = self._start_live if self._live is not None else None
        self._variant_names, self._has_budget = cfg.draft_variants, cfg.energy_budget_j_per_token is not None
        self.state: State = dyn.State.empty(1, p.num_variants, cfg.gamma_max, self._block_len)  # replaced by reset()

    # -- state read by baselines (oracle / estimates): views of env.state, the simulator's one row ------------

    @property
    def true_rate_bps(self) -> float:
        """True link rate of the coming round (oracle knowledge)."""
        return self.state.real[0, dyn.RATE].item()

    def estimated_rate_bps(self) -> float:
        """Link rate the controller knows: the one measured in the previous round."""
        return self.state.real[0, dyn.EST_RATE].item()

    @property
    def true_ergodic_rate_bps(self) -> float:
        """Fading-averaged rate of the coming round's large-scale SNR (oracle knowledge)."""
        return self.state.real[0, dyn.ERGODIC].item()

    def estimated_ergodic_rate_bps(self) -> float:
        """Fading-averaged rate the controller knows: that of the previous round's large-scale SNR."""
        return self.state.real[0, dyn.EST_ERGODIC].item()

    def estimated_mean_snr(self) -> float:
        """Large-scale (fading-averaged) linear SNR of the previous round, blockage included."""
        return self.state.real[0, dyn.EST_MEAN_SNR].item()

    @property
    def edge_util(self) -> float:
        """Background utilisation of the edge (announced)."""
        return self.state.real[0, dyn.EDGE_UTIL].item()

    @property
    def device_util(self) -> float:
        """Background utilisation of the device."""
        return self.state.real[0, dyn.DEVICE_UTIL].item()

    @property
    def acceptance_ema(self) -> list[float]:
        """Running estimate of each draft's per-token acceptance rate alpha."""
        return self.state.ema[0].tolist()

    @property
    def tokens_left(self) -> int:
        """Tokens still to generate in the current request."""
        return self.config.tokens_per_request - int(self.state.count[0, dyn.POS])

    @property
    def virtual_queue(self) -> float:
        """Energy-per-token virtual queue Z (0 without a budget)."""
        return self.state.real[0, dyn.QUEUE].item()

    def accepted_if(self, gamma: int, variant: int) -> int:
        """Draft tokens this round WOULD accept with (gamma, variant) in replay (oracle knowledge)."""
        n_draft = min(gamma, self.tokens_left - 1)
        s = self.state
        return dyn.accepted_run(self._beta_rows[variant][int(s.count[0, dyn.PROMPT])], int(s.count[0, dyn.POS]),
                                n_draft, s.uniforms[0].tolist())

    # -- Gymnasium API ---------------------------------------------------------------------------

    def _start_live(self, rows: np.ndarray, seeds: np.ndarray) -> None:
        """The live backend begins the request whose prompt and seed were just drawn."""
        self._live.start(self._prompt_id_list[int(self.state.count[0, dyn.PROMPT])], int(seeds[0]))

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
        super().reset(seed=seed)
        if self._renderer.history is not None:
            self._renderer.history.clear()
        self.state, result = dyn.initial(self.params, self.np_random, 1, self._block_len, self._on_requests)
        return result.obs[0], {"link_rate_bps": self.state.real[0, dyn.RATE].item(),
                               "distance_m": self.state.real[0, dyn.DISTANCE].item()}

    def step(self, action):
        gamma, variant = self._check_action(action)
        control, result = self._control, self._result
        control[dyn.GAMMA, 0], control[dyn.VARIANT, 0] = gamma, variant
        if self._live is not None:
            n_draft = min(gamma, self.tokens_left - 1)
            control[dyn.LIVE_ACCEPTED, 0] = self._live.round(variant, n_draft) if n_draft > 0 else 0
            if n_draft <= 0:
                self._live.round(variant, 0)
        dyn.advance(self.params, self.state, control, self.np_random, result, self._on_requests)
        latency, energy, reward, rate, edge_util, device_util, queue = result.out[0].tolist()
        emitted, accepted, proposed, prompt, request_done, _, terminated, truncated = result.counts[0].tolist()
        info = {
            "latency_s": latency,
            "energy_j": energy,
            "tokens": emitted,
            "accepted_tokens": accepted,
            "proposed_tokens": proposed,
            "gamma": gamma,
            "draft_variant": self._variant_names[variant],
            "link_rate_bps": rate,
            "edge_util": edge_util,
            "device_util": device_util,
            "prompt_index": self._prompt_id_list[prompt],
        }
        if self._has_budget:
            info["virtual_queue"] = queue
        info["cost"] = energy
        if request_done:
            info["request_done"] = True
        if self._renderer.history is not None:
            self._renderer.history.append(action, reward, info)
        return result.obs[0].copy(), reward, terminated == 1, truncated == 1, info

    def render(self):
        """The current frame: a text line (``ansi``) or an image of the recent steps (``rgb_array``)."""
        return self._renderer.render()
