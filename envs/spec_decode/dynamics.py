"""SpecDecode-v0 defined once: speculative-decoding rounds of B users over a fading link, on a batched State.

A round with draft length ``g >= 1`` and draft variant ``v``:

* ``edge_draft`` (draft at the edge, target/verifier on the device): the edge drafts ``g``
  tokens, sends them (and ``prob_bytes_per_token`` of draft probabilities each) down the
  link, the device verifies all ``g + 1`` positions in one pass and returns the verdict.
* ``device_draft`` (draft on the device, target at the edge/cloud): the device drafts,
  uploads the tokens, the server verifies and returns the verdict.

latency = g t_draft(v) / (1 - u_draft_host) + B_fwd(g) 8 / R + t_verify(g) / (1 - u_target_host)
          + B_verdict 8 / R + RTT
energy (device) = P_active (device compute) + P_tx (device transmit) + P_idle (rest of the round)

``g = 0`` is plain autoregressive decoding by the target: one target decode step; in
``edge_draft`` it runs on the device and uses no link; in ``device_draft`` the target is
remote, so its token comes back over the link (verdict bytes + RTT).

Compute is priced by the roofline model (``edgelam.envs.core.hardware``) at the mean context
of a request: a draft step is one single-token pass, the verification one parallel pass of
``g + 1`` tokens with a KV cache (``"prefill"`` pricing: weights read once, memory-bound at
small g) through every target layer and the LM head. Both directions of the
link run at the current Shannon rate R (a reciprocal TDD link) for at most one fading
slot (``slot_s``, the coherence interval the env steps fading by); a transfer longer than
that sees fresh fading in the slots after it, so the rest of its bits go at the ergodic
(fading-averaged) rate of the link's large-scale SNR
(:func:`edgelam.envs.core.channel.transfer_time_s`). Without this a
round caught in a deep fade would hold one fading realisation for minutes.

The simulator is a batched :class:`State` (B users, each its own episode) advanced by
:func:`advance` (in place) or :func:`transition` (pure); :func:`initial` and :func:`start_rows`
start episodes, :func:`observation` is what a controller sees. The round, the channel and
load advance, the observation, reward and virtual queue are written once, in scalar form
over one row, in the compiled :func:`simulate` (numba, :mod:`edgelam.envs.core.jit`), which
calls the core kernels (Shannon and ergodic rate, transfer time, processor sharing, AR(1)
load, virtual queue); the Gymnasium env is B = 1, the vector env B, and the baselines read
the same state. The only numpy steps inside a round are the random draws (in blocks,
:class:`Exogenous`) and, under ``drift_mps``, the path loss at the new distances
(:meth:`~edgelam.envs.core.channel.PathLoss.path_loss_db`).

Sources: Leviathan et al., "Fast Inference from Transformers via Speculative Decoding",
ICML 2023 (rounds, acceptance); processor sharing slowdown 1 / (1 - u) (Kleinrock 1976).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from edgelam.envs.core import jit
from edgelam.envs.core.channel import MIN_RATE_BPS, WirelessLink, transfer_time_one_s
from edgelam.envs.core.hardware import HardwareSpec, lm_head_cost, transformer_layer_cost
from edgelam.envs.core.jit import compiled
from edgelam.envs.core.jit import njit_numpy_errors as njit  # no divisor below can be 0
from edgelam.envs.core.model_cards import ModelCard
from edgelam.envs.core.queues import processor_sharing_time_s
from edgelam.envs.spec_decode.config import BlockageConfig, SpecDecodeConfig

BLOCK_ROUNDS = 256  # rounds of random numbers drawn per call (see block_rounds)
BLOCK_VALUES = 4096  # at most this many (rounds x users) per call of the vector env
RTT_SCALE_S = 0.1  # observation: RTT / 0.1 s
QUEUE_SCALE = 10.0  # observation: virtual queue / (10 x budget), clipped to 10
NORMALS = 5  # per round and user: fading (real, imaginary), edge load, device load, shadowing


@dataclass(frozen=True)
class RoundTables:
    """Prices of every (gamma, variant), precomputed once per scenario (python lists for speed)."""

    edge_draft: bool  # topology: True = draft at the edge, verifier on the device
    draft_step_s: list[float]  # (V,) one draft decode step on the draft's host, unloaded
    verify_s: list[float]  # (gamma_max + 1,) target pass over gamma + 1 tokens on its host, unloaded
    fwd_bytes: list[float]  # (gamma_max + 1,) drafted tokens (+ probabilities) sent to the verifier
    verdict_bytes: float  # verdict (accepted count + correction/bonus token) sent back
    rtt_s: float
    dev_active_w: float
    dev_idle_w: float
    tx_power_w: float
    slot_s: float = math.inf  # fading coherence slot; transfers longer than it continue at the ergodic rate


def _pass_s(hw: HardwareSpec, card: ModelCard, tokens: int, context: float, bits: int, layers: int) -> float:
    """One forward pass over ``tokens`` new positions with a KV cache (weights read once) + their LM heads."""
    layer_s, _ = transformer_layer_cost(hw, card, "prefill", tokens, context, bits)
    head_s, _ = lm_head_cost(hw, card, tokens=tokens, weight_bits=bits)
    return float(layers * layer_s + head_s)


def build_tables(
    edge_draft: bool,
    target: ModelCard,
    target_bits: int,
    drafts: list[tuple[ModelCard, float, int]],
    device: HardwareSpec,
    edge: HardwareSpec,
    gamma_max: int,
    mean_context: float,
    token_id_bytes: int,
    prob_bytes_per_token: float,
    verdict_bytes: int,
    rtt_s: float,
    tx_power_w: float,
    slot_s: float = math.inf,
) -> RoundTables:
    """Price the draft step of each ``(card, layer fraction, weight bits)`` and the verify pass of each gamma."""
    draft_hw, target_hw = (edge, device) if edge_draft else (device, edge)
    draft_step = [
        _pass_s(draft_hw, card, 1, mean_context, bits, max(1, round(frac * card.num_layers)))
        for card, frac, bits in drafts
    ]
    verify = [
        _pass_s(target_hw, target, g + 1, mean_context, target_bits, target.num_layers) for g in range(gamma_max + 1)
    ]
    return RoundTables(
        edge_draft=edge_draft,
        draft_step_s=draft_step,
        verify_s=verify,
        fwd_bytes=[g * (token_id_bytes + prob_bytes_per_token) for g in range(gamma_max + 1)],
        verdict_bytes=float(verdict_bytes),
        rtt_s=rtt_s,
        dev_active_w=device.power_active_w,
        dev_idle_w=device.power_idle_w,
        tx_power_w=tx_power_w,
        slot_s=slot_s,
    )


def round_cost_one(
    edge_draft: bool, gamma: int, step_s: float, verify_s: float, plain_verify_s: float, fwd_bytes: float,
    verdict_bytes: float, rtt_s: float, dev_active_w: float, dev_idle_w: float, tx_power_w: float, slot_s: float,
    rate_bps: float, ergodic_bps: float, edge_util: float, device_util: float,
) -> tuple[float, float]:
    """(latency_s, device energy_j) of one round of ``gamma`` drafted tokens, in plain numbers (module docstring).

    ``step_s`` is the draft's step, ``verify_s`` the verification of ``gamma + 1`` tokens and
    ``plain_verify_s`` that of one token (``gamma = 0``), all unloaded; ``fwd_bytes`` the drafted
    tokens sent to the verifier. The one definition of a round's price: :func:`round_cost`
    calls it, :func:`simulate` calls its compiled copy.
    """
    dev_slow = processor_sharing_time_s(1.0, device_util)  # seconds per second of full-speed compute
    edge_slow = processor_sharing_time_s(1.0, edge_util)
    back = transfer_time_one_s(verdict_bytes * 8.0, rate_bps, ergodic_bps, slot_s)
    if edge_draft:
        if gamma == 0:  # the device decodes one token by itself
            plain = plain_verify_s * dev_slow
            return plain, dev_active_w * plain
        fwd = transfer_time_one_s(fwd_bytes * 8.0, rate_bps, ergodic_bps, slot_s)
        draft = gamma * step_s * edge_slow
        verify = verify_s * dev_slow
        latency = draft + fwd + verify + back + rtt_s
        return latency, dev_active_w * verify + tx_power_w * back + dev_idle_w * (draft + fwd + rtt_s)
    if gamma == 0:  # the remote target's token comes back
        plain = plain_verify_s * edge_slow + back + rtt_s
        return plain, dev_idle_w * plain
    fwd = transfer_time_one_s(fwd_bytes * 8.0, rate_bps, ergodic_bps, slot_s)
    draft = gamma * step_s * dev_slow
    verify = verify_s * edge_slow
    latency = draft + fwd + verify + back + rtt_s
    return latency, dev_active_w * draft + tx_power_w * fwd + dev_idle_w * (verify + back + rtt_s)


def round_cost(
    t: RoundTables, gamma: int, variant: int, rate_bps: float, edge_util: float, device_util: float,
    ergodic_bps: float,
) -> tuple[float, float]:
    """(latency_s, device energy_j) of one round with ``gamma`` drafted tokens of draft ``variant`` (Python numbers).

    ``rate_bps`` is the link rate in the round's fading slot, ``ergodic_bps`` the fading-averaged
    rate that a transfer longer than ``t.slot_s`` continues at
    (:func:`~edgelam.envs.core.channel.transfer_time_s`). What the baselines price actions
    with: :func:`round_cost_one` on the scenario's tables, the function the env's rounds run.
    """
    return round_cost_one(
        t.edge_draft, gamma, t.draft_step_s[variant], t.verify_s[gamma], t.verify_s[0], t.fwd_bytes[gamma],
        t.verdict_bytes, t.rtt_s, t.dev_active_w, t.dev_idle_w, t.tx_power_w, t.slot_s, rate_bps, ergodic_bps,
        edge_util, device_util,
    )


def accepted_run(beta_row, pos: int, n_draft: int, uniforms) -> int:
    """Draft tokens accepted in a round: accept token i iff ``uniforms[i] < beta_row[pos + i]``, stop at the first
    rejection (Leviathan et al. 2023, sequential acceptance). Lists or arrays (compiled in :func:`simulate`)."""
    a = 0
    while a < n_draft and uniforms[a] < beta_row[pos + a]:
        a += 1
    return a


def blockage_loss_one_db(start_s: float, end_s: float, loss_db: float, ramp_s: float, clock_s: float) -> float:
    """Blockage loss in dB at episode clock ``clock_s`` (s) of the schedule ``(start_s, end_s, loss_db, ramp_s)``.

    ``loss_db`` while ``start_s <= t < end_s``, ramping linearly from 0 over the ``ramp_s``
    after ``start_s`` and back to 0 over the ``ramp_s`` before ``end_s``; abrupt for
    ``ramp_s = 0``; 0 outside (:class:`~edgelam.envs.spec_decode.config.BlockageConfig`).
    """
    if loss_db == 0.0 or not (start_s <= clock_s < end_s):
        return 0.0
    if ramp_s == 0.0:
        return loss_db
    return loss_db * min(min((clock_s - start_s) / ramp_s, (end_s - clock_s) / ramp_s), 1.0)


_accepted_run = compiled(accepted_run)
_blockage_loss_one_db = compiled(blockage_loss_one_db)
_round_cost_one = compiled(
    round_cost_one, processor_sharing_time_s=jit.processor_sharing_time_s, transfer_time_one_s=jit.transfer_time_one_s
)


@njit
def _blockage_loss_rows(start_s, end_s, loss_db, ramp_s, clock_s, out):
    for i in range(clock_s.shape[0]):
        out[i] = _blockage_loss_one_db(start_s, end_s, loss_db, ramp_s, clock_s[i])


def blockage_loss_db(blockage: BlockageConfig, clock_s):
    """Blockage loss in dB at episode clock ``clock_s`` (s): a float for a float, an array for an array.

    The schedule of :class:`~edgelam.envs.spec_decode.config.BlockageConfig`
    (:meth:`~edgelam.envs.spec_decode.config.BlockageConfig.loss_at` calls this), by
    :func:`blockage_loss_one_db`, the function the rounds run, for each clock.
    """
    b = blockage
    if isinstance(clock_s, np.ndarray):
        out = np.empty(clock_s.shape)
        _blockage_loss_rows(b.start_s, b.end_s, b.loss_db, b.ramp_s, np.ascontiguousarray(clock_s, float).ravel(),
                            out.reshape(-1))
        return out
    return blockage_loss_one_db(b.start_s, b.end_s, b.loss_db, b.ramp_s, clock_s)


def block_rounds(episode_length: int, num_envs: int) -> int:
    """Rounds of random numbers drawn per call by the single env (``num_envs=1``) and the vector env.

    Both draw, per round and user, the fading innovation (2 normals), the two load shocks
    (2 normals), the shadowing innovation of ``drift_mps`` (1 normal) and ``gamma_max``
    acceptance uniforms, for this many rounds at once (a block is dropped at a full reset:
    one episode has at most ``episode_length + 1`` rounds). With one user the vector env's
    blocks are the single env's, so both consume the same random stream.
    """
    return max(1, min(BLOCK_ROUNDS, episode_length + 1, BLOCK_VALUES // num_envs))


# -- the scenario's constants -------------------------------------------------------------------

# entries of Params.consts, what simulate reads
(_EDGE_DRAFT, _VERDICT_BYTES, _RTT, _ACTIVE_W, _IDLE_W, _TX_W, _SLOT, _TOKENS, _REQUESTS, _EPISODE, _BATTERY,
 _ENERGY_WEIGHT, _BUDGET, _HAS_BUDGET, _RHO, _CN_SCALE, _NOISE_W, _BANDWIDTH, _FADING, _DRIFT,
 _SHADOWING, _BLOCK_START, _BLOCK_END, _BLOCK_LOSS, _BLOCK_RAMP, _EDGE_MEAN, _EDGE_CORR, _EDGE_INNOVATION,
 _EDGE_MAX, _DEVICE_MEAN, _DEVICE_CORR, _DEVICE_INNOVATION, _DEVICE_MAX, _RTT_OBS, _LOG_RATE_MAX, _TABLES) = range(36)


@dataclass(frozen=True)
class Params:
    """What one scenario fixes: its config, tables, acceptance profile and the constants :func:`simulate` reads."""

    config: SpecDecodeConfig
    tables: RoundTables
    beta: np.ndarray  # (V, P, N) per-position acceptance probability of each draft on each prompt
    mean_acceptance: np.ndarray  # (V,) profile mean over the request's positions, the prior of the EMA
    prompt_ids: np.ndarray  # (P,) int, held-out prompt id of each profiled prompt
    episode_length: int  # rounds before truncation
    consts: np.ndarray  # (_TABLES + V + 3 (gamma_max + 1) + 1,) float64: scalars, draft steps, verify passes,
    # fwd bytes, EMA steps
    obs_high: np.ndarray  # (V + 10,) float32 upper bounds of the observation
    initial_row: np.ndarray  # State.real of a user at an episode start, before its own draws (START_FIELDS)
    links: dict[int, WirelessLink] = field(default_factory=dict, compare=False)  # draw episode starts, by row count

    @classmethod
    def build(cls, cfg: SpecDecodeConfig, tables: RoundTables, beta: np.ndarray, prompt_ids: np.ndarray,
              obs_high: np.ndarray, episode_length: int | None = None) -> Params:
        """The arrays of scenario ``cfg`` priced by ``tables`` (``episode_length``: a cap below the scenario's)."""
        link = WirelessLink(cfg.channel, n_links=1)
        v = beta.shape[0]
        consts = np.zeros(_TABLES + v + 3 * (cfg.gamma_max + 1) + 1)
        b = cfg.blockage
        budget = cfg.energy_budget_j_per_token
        episode = cfg.episode_length if episode_length is None else episode_length
        values = {
            _EDGE_DRAFT: tables.edge_draft, _VERDICT_BYTES: tables.verdict_bytes, _RTT: tables.rtt_s,
            _ACTIVE_W: tables.dev_active_w, _IDLE_W: tables.dev_idle_w, _TX_W: tables.tx_power_w,
            _SLOT: tables.slot_s, _TOKENS: cfg.tokens_per_request, _REQUESTS: cfg.requests_per_episode,
            _EPISODE: episode, _BATTERY: cfg.battery_j, _ENERGY_WEIGHT: cfg.reward.energy_weight_per_j,
            _BUDGET: 0.0 if budget is None else budget, _HAS_BUDGET: budget is not None,
            _RHO: float(link.fading.rho), _CN_SCALE: float(link.fading.cn_scale),
            _NOISE_W: link.noise_w, _BANDWIDTH: cfg.channel.bandwidth_hz, _FADING: cfg.channel.fading,
            _DRIFT: cfg.drift_mps, _SHADOWING: cfg.channel.shadowing, _BLOCK_START: b.start_s, _BLOCK_END: b.end_s,
            _BLOCK_LOSS: b.loss_db, _BLOCK_RAMP: b.ramp_s,
            _EDGE_MEAN: cfg.edge_load.mean, _EDGE_CORR: cfg.edge_load.corr,
            _EDGE_INNOVATION: cfg.edge_load.innovation_std, _EDGE_MAX: cfg.edge_load.max_util,
            _DEVICE_MEAN: cfg.device_load.mean, _DEVICE_CORR: cfg.device_load.corr,
            _DEVICE_INNOVATION: cfg.device_load.innovation_std, _DEVICE_MAX: cfg.device_load.max_util,
            _RTT_OBS: min(max(cfg.rtt_s / RTT_SCALE_S, 0.0), float(obs_high[1])), _LOG_RATE_MAX: float(obs_high[0]),
        }
        for key, value in values.items():
            consts[key] = float(value)
        g1 = cfg.gamma_max + 1
        consts[_TABLES : _TABLES + v] = tables.draft_step_s
        consts[_TABLES + v : _TABLES + v + g1] = tables.verify_s
        consts[_TABLES + v + g1 : _TABLES + v + 2 * g1] = tables.fwd_bytes
        # the EMA's step 1 - (1 - c)^k for k = 0 .. gamma_max + 1 tested tokens (Python's pow, as the kernel's)
        rate = cfg.acceptance_ema
        consts[_TABLES + v + 2 * g1 :] = [1.0 - (1.0 - rate) ** float(k) for k in range(g1 + 1)]
        mean_acceptance = beta[:, :, : cfg.tokens_per_request].mean(axis=(1, 2))
        row = np.zeros(EMA + v + cfg.gamma_max)
        row[[RATE, EST_RATE, ERGODIC, EST_ERGODIC]] = 1.0
        row[[MEAN_SNR, EST_MEAN_SNR]] = -1.0
        row[BATTERY], row[EDGE_UTIL], row[DEVICE_UTIL] = cfg.battery_j, cfg.edge_load.mean, cfg.device_load.mean
        row[EMA : EMA + v] = mean_acceptance
        return cls(
            config=cfg, tables=tables, beta=np.ascontiguousarray(beta, dtype=np.float64),
            mean_acceptance=mean_acceptance, prompt_ids=np.asarray(prompt_ids, dtype=np.int64),
            episode_length=episode, consts=consts, obs_high=obs_high, initial_row=row, links={1: link},
        )

    @property
    def num_variants(self) -> int:
        """V, the draft variants."""
        return self.beta.shape[0]

    @property
    def num_prompts(self) -> int:
        """P, the profiled prompts."""
        return self.beta.shape[1]

    def link(self, num_rows: int) -> WirelessLink:
        """A :class:`WirelessLink` of ``num_rows`` links, what episode starts are drawn with."""
        if num_rows not in self.links:
            self.links[num_rows] = WirelessLink(self.config.channel, n_links=num_rows)
        return self.links[num_rows]


# -- the batched state ----------------------------------------------------------------------------

# columns of State.real (float64), one row per user
(RATE, EST_RATE, ERGODIC, EST_ERGODIC, MEAN_SNR, EST_MEAN_SNR, CLOCK, DISTANCE, BATTERY, QUEUE, EDGE_UTIL,
 DEVICE_UTIL, FADING_RE, FADING_IM, LARGE_SCALE_GAIN, SHADOWING, SHADOWING_STD, DECORRELATION, NEXT_DISTANCE,
 PATH_LOSS, ELAPSED, EMA) = range(22)  # EMA: V rows, then UNIFORMS: gamma_max rows
# columns of State.count (int64), one row per user
ROUND, REQUESTS_DONE, PROMPT, POS, LAST_ACCEPTED, LAST_PROPOSED = range(6)


@dataclass(frozen=True, slots=True)
class Exogenous:
    """The random numbers of a block of rounds for every user, drawn ahead (what no controller affects)."""

    values: np.ndarray  # (K, B, 5 + gamma_max): per round and user the 5 normals (:data:`NORMALS`), the uniforms
    used: np.ndarray  # () int, rounds of the block already advanced to (K: used up)


@dataclass(frozen=True, slots=True)
class State:
    """B users' speculative decoding, each its own episode; the fields are (B,) arrays (``ema`` (B, V),
    ``uniforms`` (B, gamma_max)), views of two buffers (a row per user) that :func:`simulate` steps in place.

    ``real`` (B, 22 + V + gamma_max) float64 holds, by column: the link rate of the coming round and the one
    measured last round (bit/s), their ergodic rates (bit/s), large-scale SNRs (linear), the episode
    clock (s), distance (m), battery (J), energy virtual queue (J), edge and device utilisation, the
    fading coefficient (real, imaginary), the large-scale gain, the shadowing (dB), its standard
    deviation (dB) and decorrelation distance (m), three columns of scratch (the next distance and its
    path loss under drift, the time the advance moves on by), the acceptance EMA of each draft, the
    coming round's acceptance uniforms.
    ``count`` (B, 6) int64: rounds in the episode, requests done, prompt (index into the profile),
    position in the request, the last round's accepted and proposed tokens.
    """

    real: np.ndarray
    count: np.ndarray
    los: np.ndarray  # (B,) bool, LOS state of each link (drawn at the episode start)
    block: Exogenous

    @classmethod
    def empty(cls, num_rows: int, num_variants: int, gamma_max: int, block_len: int) -> State:
        """B rows to be started (:func:`start_rows`) and an unused block of ``block_len`` rounds."""
        return cls(
            real=np.zeros((num_rows, EMA + num_variants + gamma_max)),
            count=np.zeros((num_rows, 6), dtype=np.int64),
            los=np.zeros(num_rows, dtype=bool),
            block=Exogenous(np.zeros((block_len, num_rows, NORMALS + gamma_max)), np.array(block_len)),
        )

    @property
    def num_rows(self) -> int:
        """B."""
        return self.real.shape[0]

    def copy(self) -> State:
        """A deep copy."""
        return State(self.real.copy(), self.count.copy(), self.los.copy(),
                     Exogenous(self.block.values.copy(), self.block.used.copy()))

    rate_bps = property(lambda s: s.real[:, RATE], doc="(B,) link rate of the coming round, bit/s.")
    estimated_rate_bps = property(lambda s: s.real[:, EST_RATE], doc="(B,) link rate measured last round, bit/s.")
    ergodic_rate_bps = property(lambda s: s.real[:, ERGODIC], doc="(B,) ergodic rate of the coming round, bit/s.")
    estimated_ergodic_rate_bps = property(lambda s: s.real[:, EST_ERGODIC], doc="(B,) last round's ergodic rate.")
    mean_snr = property(lambda s: s.real[:, MEAN_SNR], doc="(B,) large-scale SNR of the coming round (linear).")
    estimated_mean_snr = property(lambda s: s.real[:, EST_MEAN_SNR], doc="(B,) last round's large-scale SNR.")
    clock_s = property(lambda s: s.real[:, CLOCK], doc="(B,) episode clock: the sum of the round latencies, s.")
    distance_m = property(lambda s: s.real[:, DISTANCE], doc="(B,) distance to the base station, m.")
    battery_j = property(lambda s: s.real[:, BATTERY], doc="(B,) battery energy left, J.")
    virtual_queue = property(lambda s: s.real[:, QUEUE], doc="(B,) energy-per-token virtual queue, J.")
    edge_util = property(lambda s: s.real[:, EDGE_UTIL], doc="(B,) background utilisation of the edge.")
    device_util = property(lambda s: s.real[:, DEVICE_UTIL], doc="(B,) background utilisation of the device.")
    ema = property(lambda s: s.real[:, EMA : s.real.shape[1] - s.block.values.shape[2] + NORMALS],
                   doc="(B, V) running estimate of each draft's per-token acceptance rate.")
    uniforms = property(lambda s: s.real[:, s.real.shape[1] - s.block.values.shape[2] + NORMALS :],
                        doc="(B, gamma_max) the coming round's acceptance uniforms.")
    round = property(lambda s: s.count[:, ROUND], doc="(B,) int rounds in the episode.")
    requests_done = property(lambda s: s.count[:, REQUESTS_DONE], doc="(B,) int requests completed.")
    prompt = property(lambda s: s.count[:, PROMPT], doc="(B,) int current request's prompt (profile index).")
    pos = property(lambda s: s.count[:, POS], doc="(B,) int tokens generated in the current request.")
    last_accepted = property(lambda s: s.count[:, LAST_ACCEPTED], doc="(B,) int tokens accepted last round.")
    last_proposed = property(lambda s: s.count[:, LAST_PROPOSED], doc="(B,) int tokens drafted last round.")


# the per-user values an episode start sets in State.real (the rest come from Params.initial_row)
START_FIELDS = np.array([DISTANCE, FADING_RE, FADING_IM, LARGE_SCALE_GAIN, SHADOWING, SHADOWING_STD, DECORRELATION])


@dataclass(frozen=True, slots=True)
class EpisodeStarts:
    """What a new episode of each of n users draws: distance, LOS, shadowing and initial fading."""

    values: np.ndarray  # (n, 7) the :data:`START_FIELDS`: distance m, fading (re, im), large-scale gain, shadowing
    # dB and the LOS state's shadowing standard deviation dB and decorrelation distance m
    los: np.ndarray  # (n,) bool

    @property
    def distance_m(self) -> np.ndarray:
        """(n,) distances, uniform in the scenario's ``distance_m``."""
        return self.values[:, 0]

    def take(self, rows: slice) -> EpisodeStarts:
        """The starts of ``rows``."""
        return EpisodeStarts(self.values[rows], self.los[rows])


def draw_episode_starts(params: Params, rng: np.random.Generator, n: int) -> EpisodeStarts:
    """Episode starts of ``n`` users. Draws: the distances (uniform), then the link's
    (:meth:`~edgelam.envs.core.channel.WirelessLink.reset`: LOS, shadowing, fading)."""
    distance = rng.uniform(*params.config.distance_m, size=n)
    link = params.link(n)
    link.reset(rng, distance)
    h, los = link.fading.h, link.los.copy()
    values = np.stack([distance, h.real, h.imag, link.large_scale_gain, link.shadowing_db,
                       link.path_loss.shadowing_std_db(los), link.path_loss.decorrelation_distance_m(los)], axis=1)
    return EpisodeStarts(values, los)


def start_rows(params: Params, state: State, rows: np.ndarray, starts: EpisodeStarts) -> None:
    """Rows ``rows`` (int indices) of ``state`` begin an episode from ``starts`` (in place; their first request
    and the first advance follow: :func:`new_requests`, :func:`advance`)."""
    _start_rows(rows, params.initial_row, START_FIELDS, starts.values, state.real, state.count)
    state.los[rows] = starts.los


@njit
def _start_rows(rows, initial_row, fields, values, real, count):
    for i in range(rows.shape[0]):
        b = rows[i]
        real[b, :] = initial_row
        for j in range(fields.shape[0]):
            real[b, fields[j]] = values[i, j]
        count[b, :] = 0


def new_requests(params: Params, state: State, rows: np.ndarray, rng: np.random.Generator) -> np.ndarray | None:
    """Users ``rows`` start a new request with a uniform prompt (draws: the prompts; with one row in the batch,
    also the live backend's request seed, which is returned). The position is reset by :func:`simulate`."""
    if state.num_rows == 1:  # the same draws as size=1, without their overhead
        state.count[0, PROMPT] = rng.integers(params.num_prompts)
        state.count[0, POS] = 0
        return np.array([rng.integers(2**31)])
    state.count[rows, PROMPT] = rng.integers(params.num_prompts, size=len(rows))
    state.count[rows, POS] = 0
    return None


def draw_block(params: Params, state: State, rng: np.random.Generator) -> None:
    """The random numbers of the next block of rounds, in place: normals (K, 5, B), then uniforms (K, gamma_max, B)
    (stored round by round and user by user, each user's numbers of a round side by side)."""
    values = state.block.values
    k, b, _ = values.shape
    values[:, :, :NORMALS] = rng.standard_normal((k, NORMALS, b)).transpose(0, 2, 1)
    values[:, :, NORMALS:] = rng.random((k, params.config.gamma_max, b)).transpose(0, 2, 1)
    state.block.used[()] = 0


# -- the round, written once ----------------------------------------------------------------------

ROUND_STEP, ADVANCE_STEP, OBSERVE = 1, 2, 4  # what simulate does: the round, the advance, the observation
# rows of the outcome tables simulate writes
LATENCY, ENERGY, REWARD, ROUND_RATE, ROUND_EDGE_UTIL, ROUND_DEVICE_UTIL, ROUND_QUEUE = range(7)  # out (B, 7)
# counts (B, 8) int64: then the flags (0 / 1)
TOKENS, ACCEPTED, PROPOSED, ROUND_PROMPT, REQUEST_DONE, REQUEST_STARTS, TERMINATED, TRUNCATED = range(8)
# rows of the control table (4, B) int64 the caller fills: the action, replay or live acceptance, autoreset
GAMMA, VARIANT, LIVE_ACCEPTED, SKIP = range(4)


@njit
def simulate(mode, k, consts, beta, real, count, control, block, out, counts, obs):
    """One round (``mode & ROUND_STEP``), the advance to the next (``ADVANCE_STEP``), the observation (``OBSERVE``).

    The round of row b (skipped where ``control[SKIP, b]``, a row that starts an episode this
    step): the draft length cut to the tokens left minus one, the accepted run (replay: the
    state's uniforms against ``beta``; live: ``control[LIVE_ACCEPTED, b]`` when >= 0), the
    round's latency and energy (:func:`round_cost_one`), the acceptance EMA over the tested
    tokens, battery, reward, virtual queue, request and episode ends; a finished request
    that is not the episode's last restarts at position 0 (the caller draws its prompt). The
    advance, by the round's latency (0 for a skipped row): drift and Gudmundson shadowing
    (the caller has put the new distance and its path loss in the scratch rows), the
    Gauss-Markov fading with the block's normals of round ``k``, blockage, Shannon rate,
    ergodic rate (only when the large-scale SNR changed), the AR(1) loads, the next round's
    uniforms. A skipped row's outcome is 0 and its estimates are then its current values, as
    after a reset. Then the observation (``obs`` (B, V + 10) float32). Returns the number of rows that
    start a request (a finished one's successor, or an episode's first) in the round.
    """
    c = consts
    v = beta.shape[0]
    g = real.shape[1] - EMA - v
    u0 = EMA + v
    t = _TABLES
    n_tokens = int(c[_TOKENS])
    starting = 0
    for b in range(real.shape[0]):
        skip = control[SKIP, b] != 0
        if mode & ROUND_STEP and not skip:
            gamma, variant, pos = control[GAMMA, b], control[VARIANT, b], count[b, POS]
            n_draft = min(gamma, n_tokens - pos - 1)
            if control[LIVE_ACCEPTED, b] >= 0:
                accepted = control[LIVE_ACCEPTED, b]
            else:
                accepted = _accepted_run(beta[variant, count[b, PROMPT]], pos, n_draft, real[b, u0:])
            emitted = accepted + 1
            rate, eu, du = real[b, RATE], real[b, EDGE_UTIL], real[b, DEVICE_UTIL]
            latency, energy = _round_cost_one(
                c[_EDGE_DRAFT] != 0.0, n_draft, c[t + variant], c[t + v + n_draft], c[t + v],
                c[t + v + g + 1 + n_draft], c[_VERDICT_BYTES], c[_RTT], c[_ACTIVE_W], c[_IDLE_W], c[_TX_W], c[_SLOT],
                rate, real[b, ERGODIC], eu, du,
            )
            if n_draft > 0:
                tested = accepted + (1 if accepted < n_draft else 0)
                eta = c[t + v + 2 * (g + 1) + tested]  # 1 - (1 - acceptance_ema) ** tested
                real[b, EMA + variant] += eta * (accepted / tested - real[b, EMA + variant])
            count[b, LAST_ACCEPTED], count[b, LAST_PROPOSED] = accepted, n_draft
            count[b, POS] = pos + emitted
            real[b, BATTERY] -= energy
            out[b, LATENCY], out[b, ENERGY] = latency, energy
            out[b, REWARD] = -(latency + c[_ENERGY_WEIGHT] * energy) / n_tokens
            out[b, ROUND_RATE], out[b, ROUND_EDGE_UTIL], out[b, ROUND_DEVICE_UTIL] = rate, eu, du
            counts[b, TOKENS], counts[b, ACCEPTED], counts[b, PROPOSED] = emitted, accepted, n_draft
            counts[b, ROUND_PROMPT] = count[b, PROMPT]
            if c[_HAS_BUDGET] != 0.0:
                real[b, QUEUE] = jit.virtual_queue_step(real[b, QUEUE], energy, c[_BUDGET] * emitted)
            out[b, ROUND_QUEUE] = real[b, QUEUE]
            count[b, ROUND] += 1
            done = count[b, POS] >= n_tokens
            terminated = False
            starts = False
            if done:
                count[b, REQUESTS_DONE] += 1
                if count[b, REQUESTS_DONE] >= c[_REQUESTS]:
                    terminated = True
                else:
                    starts = True
                    count[b, POS] = 0
            counts[b, REQUEST_DONE], counts[b, REQUEST_STARTS] = done, starts
            starting += starts
            counts[b, TERMINATED] = terminated or real[b, BATTERY] <= 0.0
            counts[b, TRUNCATED] = count[b, ROUND] >= c[_EPISODE]
            real[b, ELAPSED] = latency
        elif mode & ROUND_STEP:
            starting += 1
            real[b, ELAPSED] = 0.0
            for i in range(out.shape[1]):
                out[b, i] = 0.0
            for i in range(counts.shape[1]):
                counts[b, i] = 0
        if mode & ADVANCE_STEP:
            _advance_row(c, real, b, block[k, b], u0, g)
            if skip:
                real[b, EST_RATE], real[b, EST_ERGODIC] = real[b, RATE], real[b, ERGODIC]
                real[b, EST_MEAN_SNR] = real[b, MEAN_SNR]
        if mode & OBSERVE:
            _observe_row(c, real, count, b, v, g, obs)
    return starting


@njit
def _advance_row(c, real, b, z, u0, g):
    """Row b's link, loads and uniforms of the next round, ``real[b, ELAPSED]`` s later (``z``: the round's draws)."""
    if c[_DRIFT] != 0.0:  # WirelessLink.move_one: Gudmundson shadowing over the distance moved
        d = real[b, NEXT_DISTANCE]
        shadowing = real[b, SHADOWING]
        if c[_SHADOWING] != 0.0:
            a = math.exp(-abs(d - real[b, DISTANCE]) / real[b, DECORRELATION])
            shadowing = a * shadowing + math.sqrt(1.0 - a * a) * real[b, SHADOWING_STD] * z[4]
        real[b, SHADOWING] = shadowing
        real[b, LARGE_SCALE_GAIN] = 10.0 ** (-(real[b, PATH_LOSS] + shadowing) / 10.0)
        real[b, DISTANCE] = d
    clock = real[b, CLOCK] + real[b, ELAPSED]
    real[b, CLOCK] = clock
    real[b, EST_RATE], real[b, EST_ERGODIC], real[b, EST_MEAN_SNR] = real[b, RATE], real[b, ERGODIC], real[b, MEAN_SNR]
    rho, cn = c[_RHO], c[_CN_SCALE]
    hr = rho * real[b, FADING_RE] + cn * z[0]
    hi = rho * real[b, FADING_IM] + cn * z[1]
    real[b, FADING_RE], real[b, FADING_IM] = hr, hi
    ls_gain = real[b, LARGE_SCALE_GAIN]
    gain = ls_gain * (hr * hr + hi * hi) if c[_FADING] != 0.0 else ls_gain
    snr = c[_TX_W] * gain / c[_NOISE_W]
    mean_snr = c[_TX_W] * ls_gain / c[_NOISE_W]
    if c[_BLOCK_LOSS] > 0.0:
        loss_db = _blockage_loss_one_db(c[_BLOCK_START], c[_BLOCK_END], c[_BLOCK_LOSS], c[_BLOCK_RAMP], clock)
        if loss_db > 0.0:
            snr *= 10.0 ** (-loss_db / 10.0)
            mean_snr *= 10.0 ** (-loss_db / 10.0)
    real[b, RATE] = jit.rate_from_snr_bps(c[_BANDWIDTH], snr)
    if mean_snr != real[b, MEAN_SNR]:  # large-scale change (reset, blockage, drift): re-evaluate the closed form
        real[b, MEAN_SNR] = mean_snr
        real[b, ERGODIC] = max(jit.ergodic_rate_one_bps(c[_BANDWIDTH], mean_snr), 1.0)
    real[b, EDGE_UTIL] = jit.ar1_load_step(real[b, EDGE_UTIL], c[_EDGE_MEAN], c[_EDGE_CORR], c[_EDGE_INNOVATION],
                                           c[_EDGE_MAX], z[2])
    real[b, DEVICE_UTIL] = jit.ar1_load_step(real[b, DEVICE_UTIL], c[_DEVICE_MEAN], c[_DEVICE_CORR],
                                             c[_DEVICE_INNOVATION], c[_DEVICE_MAX], z[3])
    for i in range(g):
        real[b, u0 + i] = z[NORMALS + i]


@njit
def _observe_row(c, real, count, b, v, g, obs):
    """Row b's observation (env docstring), clipped to its Box where a value can leave it."""
    n_tokens, requests = c[_TOKENS], c[_REQUESTS]
    obs[b, 0] = min(math.log10(max(real[b, EST_RATE], MIN_RATE_BPS)) / 10.0, c[_LOG_RATE_MAX])
    obs[b, 1] = c[_RTT_OBS]
    obs[b, 2], obs[b, 3] = real[b, EDGE_UTIL], real[b, DEVICE_UTIL]
    for i in range(v):
        obs[b, 4 + i] = min(max(real[b, EMA + i], 0.0), 1.0)
    obs[b, 4 + v] = count[b, LAST_ACCEPTED] / g
    obs[b, 5 + v] = count[b, LAST_PROPOSED] / g
    obs[b, 6 + v] = (n_tokens - count[b, POS]) / n_tokens
    obs[b, 7 + v] = (requests - count[b, REQUESTS_DONE]) / requests
    obs[b, 8 + v] = min(max(real[b, BATTERY] / c[_BATTERY], 0.0), 1.0)
    budget = c[_BUDGET]
    obs[b, 9 + v] = (min(real[b, QUEUE] / (QUEUE_SCALE * max(budget, 1e-12)), QUEUE_SCALE)
                     if c[_HAS_BUDGET] != 0.0 else 0.0)


# -- the step, in numpy around the compiled round -------------------------------------------------


@dataclass(frozen=True, slots=True)
class Outcome:
    """What one step did in each row (tables written by :func:`simulate`)."""

    out: np.ndarray  # (B, 7) float64: latency s, energy J, reward, round's link rate bit/s, edge and device util,
    # the virtual queue after the round J
    counts: np.ndarray  # (B, 8) int64: tokens emitted, accepted, proposed, prompt (profile index), then 0 / 1:
    # request done, next request starts, terminated, truncated
    obs: np.ndarray  # (B, V + 10) float32, the observation after the step

    @property
    def reward(self) -> np.ndarray:
        """(B,) the round's reward (env docstring)."""
        return self.out[:, REWARD]


def tables_for(num_rows: int, num_variants: int) -> Outcome:
    """Empty outcome tables of ``num_rows`` rows (with ``num_variants`` drafts)."""
    return Outcome(np.zeros((num_rows, 7)), np.zeros((num_rows, 8), dtype=np.int64),
                   np.zeros((num_rows, num_variants + 10), dtype=np.float32))


def _move(params: Params, state: State) -> None:
    """Under drift: the next distances and their path loss into the scratch rows (numpy's path loss)."""
    r = state.real
    d = np.minimum(np.maximum(r[:, DISTANCE] + params.config.drift_mps * r[:, ELAPSED], 10.0), 5000.0)
    r[:, NEXT_DISTANCE] = d
    r[:, PATH_LOSS] = params.link(1).path_loss.path_loss_db(d, state.los)


def advance(
    params: Params, state: State, control: np.ndarray, rng: np.random.Generator, result: Outcome,
    on_requests=None,
) -> None:
    """One step of every row, in place: the round, new requests, the advance to the next round.

    ``control`` (4, B) int64: the actions (gamma, variant), live acceptances (-1: replay) and the
    rows that start an episode this step (already started by :func:`start_rows`: no round, an
    advance of 0 s; they start a request). ``result`` receives the outcome. Random draws in this
    order: the prompts (and, with one row, the live request seeds, passed with the rows to
    ``on_requests``) of the rows that start a request, then a new block when the current one is
    used up (the order of the env since v0).
    """
    block = state.block
    used = int(block.used)
    need_block = used == block.values.shape[0]
    if need_block or params.config.drift_mps != 0.0:
        if simulate(ROUND_STEP, 0, params.consts, params.beta, state.real, state.count, control, block.values,
                    result.out, result.counts, result.obs):
            _start_requests(params, state, control, result, rng, on_requests)
        if need_block:
            draw_block(params, state, rng)
            used = 0
        if params.config.drift_mps != 0.0:
            _move(params, state)
        simulate(ADVANCE_STEP | OBSERVE, used, params.consts, params.beta, state.real, state.count, control,
                 block.values, result.out, result.counts, result.obs)
    else:  # no draw between the round and the advance: one call (the prompts do not enter the advance)
        if simulate(ROUND_STEP | ADVANCE_STEP | OBSERVE, used, params.consts, params.beta, state.real, state.count,
                    control, block.values, result.out, result.counts, result.obs):
            _start_requests(params, state, control, result, rng, on_requests)
    block.used[()] = used + 1


def _start_requests(params, state, control, result, rng, on_requests) -> None:
    """The prompts of the rows whose next request starts, and of those that start an episode (in row order)."""
    if state.num_rows == 1:
        seeds = new_requests(params, state, _ROW0, rng)
        if on_requests is not None:
            on_requests(_ROW0, seeds)
        return
    new_requests(params, state, np.flatnonzero(result.counts[:, REQUEST_STARTS] | control[SKIP]), rng)


_ROW0 = np.zeros(1, dtype=np.int64)


def initial(params: Params, rng: np.random.Generator, num_rows: int, block_len: int,
            on_requests=None) -> tuple[State, Outcome]:
    """New episodes of ``num_rows`` users and their first observation (in the outcome's ``obs``).

    Random draws in this order: the episode starts (:func:`draw_episode_starts`), the first
    requests (:func:`new_requests`), then the first block of rounds (``block_len`` rounds,
    :func:`draw_block`). With one row these are the draws of the env's ``reset()`` since v0.
    """
    state = State.empty(num_rows, params.num_variants, params.config.gamma_max, block_len)
    rows = np.arange(num_rows)
    start_rows(params, state, rows, draw_episode_starts(params, rng, num_rows))
    seeds = new_requests(params, state, rows, rng)
    if on_requests is not None:
        on_requests(rows, seeds)
    result = tables_for(num_rows, params.num_variants)
    restart(params, state, np.ones(num_rows, dtype=bool), rng, result)
    return state, result


def restart(params: Params, state: State, rows: np.ndarray, rng: np.random.Generator, result: Outcome) -> None:
    """The advance of 0 s that follows a (full or partial) reset: every row's link and loads move one round,
    the rows of the bool mask ``rows`` (just started) take their estimates from it. Draws a block when needed."""
    control = np.zeros((4, state.num_rows), dtype=np.int64)
    control[SKIP] = rows
    used = int(state.block.used)
    if used == state.block.values.shape[0]:
        draw_block(params, state, rng)
        used = 0
    state.real[:, ELAPSED] = 0.0
    if params.config.drift_mps != 0.0:
        _move(params, state)
    simulate(ADVANCE_STEP | OBSERVE, used, params.consts, params.beta, state.real, state.count, control,
             state.block.values, result.out, result.counts, result.obs)
    state.block.used[()] = used + 1


def transition(params: Params, state: State, actions: np.ndarray, rng: np.random.Generator
               ) -> tuple[State, np.ndarray, np.ndarray, dict[str, np.ndarray]]:
    """The pure step: (next state, reward (B,), energy cost J (B,), info arrays (B,)); ``state`` is left as it was.

    :func:`advance` on a copy with the replay backend, ``actions`` (B, 2) int checked by the
    caller (gamma, variant). ``info``: ``latency_s``, ``tokens``, ``accepted_tokens``,
    ``proposed_tokens``, ``request_done``, ``terminated``, ``truncated`` (the env docstring says what each is).
    """
    after = state.copy()
    b = state.num_rows
    control = np.zeros((4, b), dtype=np.int64)
    control[GAMMA], control[VARIANT], control[LIVE_ACCEPTED] = actions[:, 0], actions[:, 1], -1
    result = tables_for(b, params.num_variants)
    advance(params, after, control, rng, result)
    out, counts = result.out, result.counts
    info = {"latency_s": out[:, LATENCY], "tokens": counts[:, TOKENS], "accepted_tokens": counts[:, ACCEPTED],
            "proposed_tokens": counts[:, PROPOSED], "request_done": counts[:, REQUEST_DONE] != 0,
            "terminated": counts[:, TERMINATED] != 0, "truncated": counts[:, TRUNCATED] != 0}
    return after, result.reward, out[:, ENERGY], info


def observation(params: Params, state: State) -> np.ndarray:
    """(B, V + 10) float32 observation of every row (the env docstring's layout)."""
    result = tables_for(state.num_rows, params.num_variants)
    control = np.zeros((4, state.num_rows), dtype=np.int64)
    simulate(OBSERVE, 0, params.consts, params.beta, state.real, state.count, control, state.block.values,
             result.out, result.counts, result.obs)
    return result.obs
