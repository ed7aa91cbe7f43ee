"""SplitInference-v0 defined once: the cost model of a split-inference request (Neurosurgeon / Edgent style)
and the batched simulator that charges it.

The cost model (:func:`price`, :func:`request_cost`) is a function of arrays and numbers;
the same code prices the action an env takes (compiled, in the step) and, broadcast over
every (split layer, bits) pair, the search of the ``neurosurgeon``, ``oracle`` and
``lyapunov`` baselines.

Request of ``T`` prompt tokens and ``N`` decoded tokens, card with ``L`` layers,
split layer ``l`` (layers [0, l) on the device, [l, L) and the LM head at the edge):

* ``l = L`` (device only): no radio; the device runs all layers and the head.
* ``l = 0`` (edge only): the device uploads the ``T`` token ids, the edge runs
  everything and streams the ``N`` token ids back (one round trip).
* ``0 < l < L``: one round per generated token. Round 1 uploads the ``T x d``
  prefill activations; each later round uploads one ``d``-vector (the hidden
  state of the last generated token), the edge returns one token id.

latency = t_dev + t_up + t_edge / (1 - u) + rounds * RTT + bytes_down * 8 / R_down
energy (device) = P_active * t_dev + P_tx * t_up + P_idle * (latency - t_dev - t_up)

t_up = bytes_up * 8 / R_up while the upload fits in one coherence time T_c of the fading
(``channel.coherence_time_s`` = 0.423 / f_d); beyond it the fading has decorrelated, so
the rest of the bits go at the ergodic rate E[R] of the user's large-scale SNR
(:func:`edgelam.envs.core.channel.ergodic_rate_bps`): t_up = T_c + (bits - R_up T_c) / E[R]
(:func:`edgelam.envs.core.channel.transfer_time_s`).
Without it a request that meets a deep fade would hold that fade for the whole upload.

The simulator over a batched :class:`State` (arrays with a leading axis of B users, each
its own episode): :func:`initial` starts episodes, :func:`advance` (in place) and
:func:`transition` (pure) serve every user's pending request, :func:`observation` is what
the device sees. The Gymnasium env is B = 1, the vector env B; the baselines read the same
state. The step (cost, reward, virtual queue, slot advance, observation) is written once,
in scalar form over one user, and looped over the users by numba
(:mod:`edgelam.envs.core.jit`); its physics are :func:`price` and the core kernels, compiled.
The exogenous randomness is numpy's, drawn in blocks of ``BLOCK`` slots (:class:`Exogenous`).

Sources: Kang et al., "Neurosurgeon", ASPLOS 2017 (latency/energy decomposition
over split points); Li et al., "Edgent", IEEE TWC 2020; processor-sharing
slowdown 1 / (1 - u) (Kleinrock, Queueing Systems Vol. 2, 1976).
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from edgelam.envs.core import jit
from edgelam.envs.core.channel import (
    MIN_RATE_BPS,
    WirelessLink,
    ergodic_rate_bps,
    rate_from_snr_bps,
    transfer_time_s,
)
from edgelam.envs.core.hardware import HardwareSpec, lm_head_cost, transformer_layer_cost
from edgelam.envs.core.load import ar1_block
from edgelam.envs.core.model_cards import ModelCard
from edgelam.envs.core.queues import processor_sharing_time_s
from edgelam.envs.split_inference.config import SplitInferenceConfig

BITS = (4, 8, 16)
BLOCK = 256  # request slots of exogenous state drawn per vectorised batch of random numbers
# observation scaling: SNR in dB / 40, log10(rate in bit/s) / 10, prompt tokens / 128, decode tokens / 128,
# virtual queue / (QUEUE_SCALE x budget), clipped to QUEUE_SCALE
SNR_SCALE_DB = 40.0
QUEUE_SCALE = 10.0


@dataclass(frozen=True)
class CostTables:
    """Request prices precomputed once per scenario (P = number of held-out prompts)."""

    num_layers: int  # L of the pricing card
    prompt_tokens: np.ndarray  # (P,) int, T of each request
    decode_tokens: int  # N
    dev_layer_s: np.ndarray  # (P,) one layer on the device: prefill of T tokens + N - 1 decode steps
    edge_layer_s: np.ndarray  # (P,) the same on an unloaded edge
    dev_head_s: np.ndarray  # (P,) LM head on the device for the N generated tokens
    edge_head_s: np.ndarray  # (P,) LM head at the edge for the N generated tokens
    act_bytes: np.ndarray  # (3,) bytes of one d_model activation at 4, 8, 16 bits
    token_id_bytes: int
    dev_active_w: float
    dev_idle_w: float
    tx_power_w: float
    rtt_s: float
    downlink_rate_bps: float
    quality_loss: np.ndarray  # (P, L + 1, 3) 1 - top-1 agreement with the unsplit run
    coherence_s: float = 1e9  # fading coherence time: uploads longer than it continue at the ergodic rate


def executed_layer_map(card_layers: int, exec_layers: int) -> np.ndarray:
    """Executed-model split layer for each card split layer 0..L_card (ends map to ends)."""
    ls = np.arange(card_layers + 1)
    inner = np.clip(np.rint(ls * exec_layers / card_layers), 1, max(exec_layers - 1, 1)).astype(np.int64)
    return np.where(ls == 0, 0, np.where(ls == card_layers, exec_layers, inner))


def build_tables(
    card: ModelCard,
    device: HardwareSpec,
    edge: HardwareSpec,
    prompt_tokens: np.ndarray,
    decode_tokens: int,
    device_weight_bits: int,
    edge_weight_bits: int,
    token_id_bytes: int,
    tx_power_w: float,
    rtt_s: float,
    downlink_rate_bps: float,
    quality_loss: np.ndarray,
    coherence_s: float = 1e9,
) -> CostTables:
    """Price one layer and the head for every prompt length with the roofline model."""
    prompt_tokens = np.asarray(prompt_tokens, dtype=np.int64)
    n_dec = decode_tokens - 1
    mean_ctx = prompt_tokens + decode_tokens / 2.0

    def per_layer(hw: HardwareSpec, bits: int) -> np.ndarray:
        prefill_s, _ = transformer_layer_cost(hw, card, "prefill", prompt_tokens, prompt_tokens, bits)
        decode_s, _ = transformer_layer_cost(hw, card, "decode", 1, mean_ctx, bits)
        return np.asarray(prefill_s + n_dec * decode_s, dtype=np.float64)

    def head(hw: HardwareSpec, bits: int) -> np.ndarray:
        s, _ = lm_head_cost(hw, card, tokens=1, weight_bits=bits)
        return np.full(prompt_tokens.shape, decode_tokens * float(s))

    return CostTables(
        num_layers=card.num_layers,
        prompt_tokens=prompt_tokens,
        decode_tokens=decode_tokens,
        dev_layer_s=per_layer(device, device_weight_bits),
        edge_layer_s=per_layer(edge, edge_weight_bits),
        dev_head_s=head(device, device_weight_bits),
        edge_head_s=head(edge, edge_weight_bits),
        act_bytes=np.array([card.activation_bytes(1, b) for b in BITS], dtype=np.float64),
        token_id_bytes=token_id_bytes,
        dev_active_w=device.power_active_w,
        dev_idle_w=device.power_idle_w,
        tx_power_w=tx_power_w,
        rtt_s=rtt_s,
        downlink_rate_bps=downlink_rate_bps,
        quality_loss=np.asarray(quality_loss, dtype=np.float64),
        coherence_s=float(coherence_s),
    )


def price(
    num_layers, prompt_tokens, decode_tokens, token_id_bytes, act_bytes, dev_layer_s, edge_layer_s, dev_head_s,
    edge_head_s, dev_active_w, dev_idle_w, tx_power_w, rtt_s, downlink_rate_bps, coherence_s,
    split_layer, rate_bps, edge_util, ergodic_bps,
):
    """(latency s, device energy J, uplink bytes) of one request, the formulas of the module docstring.

    ``prompt_tokens`` T and the per-layer and head times are the request's prompt's (a row of
    :class:`CostTables`), ``act_bytes`` the bytes of one activation at the chosen precision.
    Python numbers or numpy arrays (broadcast; :func:`request_cost` calls it so), and compiled
    for the step kernel (:func:`_serve_rows`): the cost model is written once.
    """
    on_device = split_layer == num_layers
    at_edge = split_layer == 0
    split = 1 - on_device - at_edge  # 1 for 0 < l < L
    up_bytes = at_edge * prompt_tokens * token_id_bytes + split * (prompt_tokens + decode_tokens - 1) * act_bytes
    down_bytes = (1 - on_device) * decode_tokens * token_id_bytes
    rounds = split * decode_tokens + at_edge
    dev_s = split_layer * dev_layer_s + on_device * dev_head_s
    edge_s = processor_sharing_time_s((num_layers - split_layer) * edge_layer_s + (1 - on_device) * edge_head_s,
                                      edge_util)
    up_s = transfer_time_s(up_bytes * 8.0, rate_bps, ergodic_bps, coherence_s)
    latency = dev_s + up_s + edge_s + rounds * rtt_s + down_bytes * 8.0 / downlink_rate_bps
    energy = dev_active_w * dev_s + tx_power_w * up_s + dev_idle_w * (latency - dev_s - up_s)
    return latency, energy, up_bytes


def request_cost(t: CostTables, prompt, split_layer, bits_index, rate_bps, edge_util, ergodic_bps=None):
    """Latency (s), device energy (J), uplink bytes and quality loss of one request.

    ``split_layer``, ``bits_index``, ``rate_bps``, ``edge_util`` and ``ergodic_bps`` broadcast
    (python numbers for one action, arrays for a search over all actions). ``rate_bps`` is
    the uplink rate in the request's fading slot; with ``ergodic_bps`` (the fading-averaged
    rate) the bits past one coherence time ``t.coherence_s`` go at that rate, without it all
    bits go at ``rate_bps``. :func:`price` on the tables' row of ``prompt``.
    """
    latency, energy, up_bytes = price(
        t.num_layers, t.prompt_tokens[prompt], t.decode_tokens, t.token_id_bytes, t.act_bytes[bits_index],
        t.dev_layer_s[prompt], t.edge_layer_s[prompt], t.dev_head_s[prompt], t.edge_head_s[prompt],
        t.dev_active_w, t.dev_idle_w, t.tx_power_w, t.rtt_s, t.downlink_rate_bps, t.coherence_s,
        split_layer, rate_bps, edge_util, ergodic_bps,
    )
    return latency, energy, up_bytes, t.quality_loss[prompt, split_layer, bits_index]


def estimated_rate_bps(bandwidth_hz, est_snr_db):
    """Uplink rate b log2(1 + SNR) the device estimates from an SNR estimate in dB (numbers or arrays)."""
    return rate_from_snr_bps(bandwidth_hz, 10.0 ** (est_snr_db / 10.0))


def all_action_costs(
    t: CostTables, prompt: int, rate_bps: float, edge_util: float, quality_loss=None, ergodic_bps=None
):
    """:func:`request_cost` over every (split layer, bits) pair: arrays shaped (L + 1, 3).

    ``quality_loss`` replaces the per-prompt loss (e.g. by its mean over prompts
    for a policy that cannot see this request's true quality).
    """
    layers = np.arange(t.num_layers + 1)[:, None]
    bits = np.arange(len(BITS))[None, :]
    latency, energy, up_bytes, q = request_cost(t, prompt, layers, bits, rate_bps, edge_util, ergodic_bps)
    if quality_loss is not None:
        q = np.broadcast_to(quality_loss, latency.shape)
    return latency, energy, up_bytes, q


@dataclass(frozen=True)
class ExogenousBlock:
    """Exogenous state of B users over ``BLOCK`` request slots; every array is shaped (B, BLOCK)."""

    snr_db: np.ndarray  # true uplink SNR in dB
    rate_bps: np.ndarray  # true uplink Shannon rate in bit/s (0 with no transmit power)
    edge_util: np.ndarray  # edge background utilisation in [0, max_util]
    prompt: np.ndarray  # index of the request's held-out prompt
    est_snr_db: np.ndarray  # the device's SNR estimate in dB (stale and noisy)


class Exogenous:
    """What the agent does not control, for B users at once, drawn in blocks of slots.

    Per user and slot: fading (Gauss-Markov, :meth:`WirelessLink.trajectory`) over
    a distance drawn uniformly in ``distance_m`` at reset (LOS and shadowing fixed
    per episode); the edge's latent AR(1) utilisation
    u = mean + x, x_{t+1} = corr x_t + std sqrt(1 - corr^2) N(0, 1), observed
    clipped to [0, max_util]; the request's held-out prompt, uniform; and the SNR
    estimate, ``csi_delay_slots`` old with ``csi_noise_db`` log-normal error.
    The uplink rate is the physical Shannon rate (0 with ``channel.tx_power_w = 0``); uploads
    are priced at no less than ``core.channel.MIN_RATE_BPS`` (:func:`transfer_time_s`), so
    latency, energy and the virtual queue stay finite. Random numbers are drawn in a
    fixed order per block, so the single env (B = 1) and the vector env with one user see
    the same trajectory for the same seed.
    """

    def __init__(self, config: SplitInferenceConfig, num_prompts: int, n_users: int = 1) -> None:
        self.config = config
        self.num_prompts = num_prompts
        self.n_users = n_users
        self.link = WirelessLink(config.channel, n_links=n_users)
        self._latent = np.zeros(n_users)
        self._last_snr_db = np.zeros(n_users)
        self.ergodic_bps = np.full(n_users, MIN_RATE_BPS)

    def reset(self, rng: np.random.Generator) -> np.ndarray:
        """New episode for every user; returns the distances (m), shape (B,)."""
        distance = rng.uniform(*self.config.distance_m, size=self.n_users)
        _, snr, _ = self.link.reset(rng, distance)
        # large-scale state is fixed for the episode: one fading-averaged rate per user
        ergodic = ergodic_rate_bps(self.config.channel.bandwidth_hz, self.link.mean_snr)
        self.ergodic_bps = np.maximum(ergodic, MIN_RATE_BPS)
        self._last_snr_db = 10.0 * np.log10(np.maximum(snr, 1e-12))
        self._latent = np.zeros(self.n_users)
        return distance

    @property
    def initial_snr_db(self) -> np.ndarray:
        """SNR (dB) at reset, before the first block: the device's first estimate history."""
        return self._last_snr_db

    def next_block(self, rng: np.random.Generator, n_slots: int = BLOCK) -> ExogenousBlock:
        """Draw the next ``n_slots`` slots (continuing fading, load and CSI from the last block)."""
        cfg, b = self.config, self.n_users
        _, snr, rate = self.link.trajectory(rng, n_slots)
        load = cfg.edge_load
        latent = ar1_block(self._latent, load.corr, load.innovation_std * rng.standard_normal((b, n_slots)))
        self._latent = latent[:, -1].copy()
        snr_db = 10.0 * np.log10(np.maximum(snr, 1e-12))
        if cfg.csi_delay_slots == 0:
            seen_db = snr_db
        else:
            seen_db = np.concatenate([self._last_snr_db[:, None], snr_db[:, :-1]], axis=1)
        self._last_snr_db = snr_db[:, -1].copy()
        est_db = seen_db + cfg.csi_noise_db * rng.standard_normal((b, n_slots))
        return ExogenousBlock(
            snr_db=snr_db,
            rate_bps=rate,
            edge_util=np.clip(load.mean + latent, 0.0, load.max_util),
            prompt=rng.integers(self.num_prompts, size=(b, n_slots)),
            est_snr_db=est_db,
        )

    def set_rows(self, rows: np.ndarray, other: Exogenous) -> None:
        """Users ``rows`` (int indices) continue from the processes of ``other``'s users (one per row), in place:
        distance, LOS, shadowing and fading of the link, the load's latent, the last SNR and the ergodic rate."""
        mine, theirs = self.link, other.link
        for name in ("distances_m", "los", "shadowing_db", "large_scale_gain", "gain", "snr", "rate_bps"):
            getattr(mine, name)[rows] = getattr(theirs, name)
        mine.fading.h[rows] = theirs.fading.h
        self._latent[rows] = other._latent
        self._last_snr_db[rows] = other._last_snr_db
        self.ergodic_bps[rows] = other.ergodic_bps


# -- the simulator: a batched State, stepped by one loop over the users compiled by numba --------------------

# State.ints columns
STEP, SLOT = 0, 1
# State.reals columns; the SNR history follows them
ERGODIC, QUEUE, DISTANCE, HIST = 0, 1, 2, 3
# State.block rows (the fields of ExogenousBlock)
SNR_DB, RATE, UTIL, PROMPT, EST_SNR_DB = range(5)
# Params.prompt_costs columns
P_TOKENS, P_DEV_LAYER, P_EDGE_LAYER, P_DEV_HEAD, P_EDGE_HEAD = range(5)
# Params.consts entries
(C_LAYERS, C_DECODE, C_TOKEN_BYTES, C_DEV_ACTIVE, C_DEV_IDLE, C_TX_POWER, C_RTT, C_DOWNLINK, C_COHERENCE,
 C_W_LATENCY, C_W_ENERGY, C_W_QUALITY, C_BUDGET, C_HAS_BUDGET, C_BANDWIDTH, C_EPISODE, C_ACT_BYTES) = range(17)
# the Outcome table's rows: the step's info keys (the last two only with an energy budget), then the reward
INFO_KEYS = ("latency_s", "energy_j", "quality", "quality_loss", "uplink_bytes", "uplink_rate_bps", "snr_db",
             "edge_util", "split_layer", "bits", "prompt_index", "virtual_queue", "budget_excess_j")
REWARD = len(INFO_KEYS)
_BITS = np.array(BITS, dtype=np.float64)


@dataclass(frozen=True)
class Params:
    """What one scenario fixes, as the arrays the compiled step reads (P prompts, L layers of the card)."""

    config: SplitInferenceConfig
    tables: CostTables
    prompt_costs: np.ndarray  # (P, 5) T, device layer s, edge layer s, device head s, edge head s (P_* columns)
    quality_loss: np.ndarray  # (P, L + 1, 3) the tables' quality loss
    consts: np.ndarray  # (C_ACT_BYTES + 3,) the scenario's numbers (C_* entries), then the 3 activation sizes
    obs_size: int  # snr_history + 6

    @classmethod
    def build(cls, config: SplitInferenceConfig, tables: CostTables) -> Params:
        """The arrays of ``config`` priced by ``tables``."""
        t, w, budget = tables, config.reward, config.energy_budget_j
        consts = [t.num_layers, t.decode_tokens, t.token_id_bytes, t.dev_active_w, t.dev_idle_w, t.tx_power_w,
                  t.rtt_s, t.downlink_rate_bps, t.coherence_s, w.latency_weight, w.energy_weight_per_j,
                  w.quality_weight, 0.0 if budget is None else budget, float(budget is not None),
                  config.channel.bandwidth_hz, config.episode_length, *t.act_bytes.tolist()]
        costs = np.stack([t.prompt_tokens.astype(np.float64), t.dev_layer_s, t.edge_layer_s, t.dev_head_s,
                          t.edge_head_s], axis=1)
        return cls(config, tables, costs, np.ascontiguousarray(t.quality_loss, dtype=np.float64),
                   np.array(consts, dtype=np.float64), config.snr_history + 6)

    @property
    def has_budget(self) -> bool:
        """Whether the scenario sets ``energy_budget_j`` (then the step updates the virtual queue)."""
        return self.config.energy_budget_j is not None


@dataclass(slots=True)
class State:
    """B users, each in its own episode, and the exogenous slots drawn for them.

    Three buffers the compiled step reads and writes in place (:func:`advance`; :func:`transition`
    works on a copy), the named views below, and the processes that draw the next block.
    """

    ints: np.ndarray  # (B, 2) int64: requests served in the episode (STEP), block column of the pending request
    # (SLOT, the same for every user: the block is drawn for all of them at once)
    reals: np.ndarray  # (B, 3 + H) float64: ergodic rate bit/s, virtual queue J, distance m, SNR estimates dB
    block: np.ndarray  # (5, BLOCK, B) float64: the drawn slots, rows SNR_DB, RATE, UTIL, PROMPT, EST_SNR_DB
    # (slot-major: a step reads one contiguous column of B users)
    exo: Exogenous  # draws the next block (fading, load and CSI state of the B users)

    @property
    def num_rows(self) -> int:
        """B."""
        return self.ints.shape[0]

    @property
    def step(self) -> np.ndarray:
        """(B,) int requests served in each episode."""
        return self.ints[:, STEP]

    @property
    def ergodic_bps(self) -> np.ndarray:
        """(B,) fading-averaged uplink rate of each episode's large-scale SNR (floored at MIN_RATE_BPS)."""
        return self.reals[:, ERGODIC]

    @property
    def virtual_queue(self) -> np.ndarray:
        """(B,) device-energy virtual queue Z in J (0 without a budget)."""
        return self.reals[:, QUEUE]

    @property
    def distance_m(self) -> np.ndarray:
        """(B,) each user's distance to the base station, drawn at its reset."""
        return self.reals[:, DISTANCE]

    @property
    def snr_history_db(self) -> np.ndarray:
        """(B, H) the device's last H SNR estimates in dB, newest first."""
        return self.reals[:, HIST:]

    def _pending(self, row: int) -> np.ndarray:
        return self.block[row, self.ints[:, SLOT], np.arange(self.num_rows)]

    @property
    def prompt(self) -> np.ndarray:
        """(B,) int held-out prompt of each pending request."""
        return self._pending(PROMPT).astype(np.int64)

    @property
    def rate_bps(self) -> np.ndarray:
        """(B,) true uplink rate in the pending request's slot (oracle knowledge)."""
        return self._pending(RATE)

    @property
    def snr_db(self) -> np.ndarray:
        """(B,) true uplink SNR in dB in the pending request's slot."""
        return self._pending(SNR_DB)

    @property
    def edge_util(self) -> np.ndarray:
        """(B,) background utilisation of the edge in the pending request's slot, announced to the device."""
        return self._pending(UTIL)

    def copy(self) -> State:
        """A deep copy (the exogenous processes included)."""
        return State(self.ints.copy(), self.reals.copy(), self.block.copy(), copy.deepcopy(self.exo))


@dataclass(frozen=True, slots=True)
class Outcome:
    """What one step did for each user: the table (REWARD + 1, B) the compiled step fills."""

    table: np.ndarray  # (REWARD + 1, B) float64: a row per INFO_KEYS entry, then the reward

    @property
    def reward(self) -> np.ndarray:
        """(B,) the step's reward (env docstring)."""
        return self.table[REWARD]

    def info(self, has_budget: bool) -> dict[str, Any]:
        """The step's ``info`` arrays (B,) (:func:`step_info`)."""
        return step_info(self.table, _as_int64, has_budget)


def _as_int64(row: np.ndarray) -> np.ndarray:
    return row.astype(np.int64)


def step_info(columns: Sequence, integer: Callable[[Any], Any], has_budget: bool) -> dict[str, Any]:
    """A step's ``info`` from the rows of its :class:`Outcome` table: arrays (B,) for the vector env, or a
    row's numbers (``table[:, b].tolist()``, ``integer=int``) for the single env; integer keys through ``integer``.
    ``virtual_queue`` and ``budget_excess_j`` are there only with an energy budget; ``cost``, the device
    energy the queue accumulates, always (the ``energy_j`` row itself)."""
    latency, energy, quality, quality_loss, up_bytes, rate, snr, util, layer, bits, prompt, queue, excess = (
        columns[:REWARD]
    )
    info = {
        "latency_s": latency,
        "energy_j": energy,
        "quality": quality,
        "quality_loss": quality_loss,
        "uplink_bytes": up_bytes,
        "uplink_rate_bps": rate,
        "snr_db": snr,
        "edge_util": util,
        "split_layer": integer(layer),
        "bits": integer(bits),
        "prompt_index": integer(prompt),
    }
    if has_budget:
        info["virtual_queue"] = queue
        info["budget_excess_j"] = excess
    info["cost"] = energy
    return info


# the physics, compiled from the functions above and the core kernels
_price = jit.compiled(price, transfer_time_s=jit.transfer_time_one_s,
                      processor_sharing_time_s=jit.processor_sharing_time_s)
_estimated_rate_bps = jit.compiled(estimated_rate_bps, rate_from_snr_bps=jit.rate_from_snr_bps)
_virtual_queue_step = jit.virtual_queue_step


# The kernels below take whole sets of users: a compiled call with array arguments costs
# reference counting per array, too much to pay per user.

@jit.njit
def _observe_rows(consts, prompt_costs, ints, reals, block, rows, obs):
    """Fill ``obs[b]`` (the env docstring's layout) from the pending request of each user ``b`` of ``rows``."""
    h = reals.shape[1] - HIST
    has_budget, queue_scale = consts[C_HAS_BUDGET] > 0.0, QUEUE_SCALE * max(consts[C_BUDGET], 1e-12)
    for b in rows:
        k = ints[b, SLOT]
        for i in range(h):
            obs[b, i] = min(max(reals[b, HIST + i] / SNR_SCALE_DB, -1.0), 2.0)
        rate = math.log10(max(_estimated_rate_bps(consts[C_BANDWIDTH], reals[b, HIST]), 1.0)) / 10.0
        obs[b, h] = min(rate, 1.5)
        obs[b, h + 1] = block[UTIL, k, b]
        obs[b, h + 2] = min(prompt_costs[int(block[PROMPT, k, b]), P_TOKENS] / 128.0, 1.0)
        obs[b, h + 3] = consts[C_DECODE] / 128.0
        obs[b, h + 4] = min(reals[b, QUEUE] / queue_scale, QUEUE_SCALE) if has_budget else 0.0
        obs[b, h + 5] = ints[b, STEP] / consts[C_EPISODE]


@jit.njit
def _arrive_rows(ints, reals, block, rows):
    """Each user of ``rows`` has the request at its slot pending: its SNR estimate joins the history (newest first)."""
    for b in rows:
        for i in range(reals.shape[1] - 1, HIST, -1):
            reals[b, i] = reals[b, i - 1]
        reals[b, HIST] = block[EST_SNR_DB, ints[b, SLOT], b]


@jit.njit
def _arrive_and_observe(consts, prompt_costs, ints, reals, block, rows, obs):
    """:func:`_arrive_rows`, then :func:`_observe_rows`."""
    _arrive_rows(ints, reals, block, rows)
    _observe_rows(consts, prompt_costs, ints, reals, block, rows, obs)


@jit.njit
def _serve_rows(actions, live_quality_loss, prompt_costs, quality_loss, consts, ints, reals, block, out, obs):
    """Serve every user's pending request with its action (split layer, bits index), in place.

    Prices it (:func:`price`), fills the user's column of ``out`` (INFO_KEYS rows, then the
    reward), updates the virtual queue Z = max(Z + E - budget, 0) (with a budget) and moves to
    the next slot. ``live_quality_loss`` (B,) replaces the profile's quality loss when it is
    not empty (the live backend). Returns 1 when the users' next requests have arrived and
    ``obs`` is filled, 0 when the block is used up (the caller draws the next one, then calls
    :func:`_arrive_and_observe`), and -1, changing nothing, when an action is out of range.
    """
    num_layers, decode, token_bytes = int(consts[C_LAYERS]), int(consts[C_DECODE]), int(consts[C_TOKEN_BYTES])
    has_budget, budget = consts[C_HAS_BUDGET] > 0.0, consts[C_BUDGET]
    live = live_quality_loss.shape[0] > 0
    n = ints.shape[0]
    if actions.shape[0] != n or actions.shape[1] != 2 or (live and live_quality_loss.shape[0] != n):
        return -1
    for b in range(n):
        if not (0 <= actions[b, 0] <= num_layers and 0 <= actions[b, 1] < 3):
            return -1
    for b in range(n):
        k = ints[b, SLOT]
        p = int(block[PROMPT, k, b])
        layer, bits = actions[b, 0], actions[b, 1]
        rate = block[RATE, k, b]
        util = block[UTIL, k, b]
        latency, energy, up_bytes = _price(
            num_layers, prompt_costs[p, P_TOKENS], decode, token_bytes, consts[C_ACT_BYTES + bits],
            prompt_costs[p, P_DEV_LAYER], prompt_costs[p, P_EDGE_LAYER], prompt_costs[p, P_DEV_HEAD],
            prompt_costs[p, P_EDGE_HEAD], consts[C_DEV_ACTIVE], consts[C_DEV_IDLE], consts[C_TX_POWER],
            consts[C_RTT], consts[C_DOWNLINK], consts[C_COHERENCE], layer, rate, util, reals[b, ERGODIC],
        )
        q = live_quality_loss[b] if live else quality_loss[p, layer, bits]
        out[0, b] = latency
        out[1, b] = energy
        out[2, b] = 1.0 - q
        out[3, b] = q
        out[4, b] = up_bytes
        out[5, b] = rate
        out[6, b] = block[SNR_DB, k, b]
        out[7, b] = util
        out[8, b] = layer
        out[9, b] = _BITS[bits]
        out[10, b] = p
        out[REWARD, b] = -(consts[C_W_LATENCY] * latency + consts[C_W_ENERGY] * energy + consts[C_W_QUALITY] * q)
        if has_budget:
            queue = _virtual_queue_step(reals[b, QUEUE], energy, budget)
            reals[b, QUEUE] = queue
            out[11, b] = queue
            out[12, b] = energy - budget
        else:
            out[11, b] = 0.0
            out[12, b] = 0.0
        ints[b, STEP] += 1
        ints[b, SLOT] = k + 1
    if n == 0 or ints[0, SLOT] >= BLOCK:
        return 0
    _arrive_and_observe(consts, prompt_costs, ints, reals, block, np.arange(n), obs)
    return 1


def _draw(params: Params, exo: Exogenous, rng: np.random.Generator, n_slots: int) -> tuple[np.ndarray, np.ndarray]:
    """New episodes of ``exo``'s users and their first ``n_slots`` slots: (reals (B, 3 + H), block (5, n_slots, B)).

    Random draws in this order: :meth:`Exogenous.reset`, then :meth:`Exogenous.next_block`;
    the SNR history starts filled with the SNR at reset.
    """
    distance = exo.reset(rng)
    reals = np.empty((exo.n_users, HIST + params.config.snr_history))
    reals[:, ERGODIC] = exo.ergodic_bps
    reals[:, QUEUE] = 0.0
    reals[:, DISTANCE] = distance
    reals[:, HIST:] = exo.initial_snr_db[:, None]
    block = np.empty((5, n_slots, exo.n_users))
    _write_block(block, exo.next_block(rng, n_slots))
    return reals, block


def _write_block(block: np.ndarray, blk: ExogenousBlock) -> None:
    """Store the drawn slots ``blk`` (arrays (B, n)) slot-major in ``block`` (5, n, B)."""
    block[SNR_DB], block[RATE], block[UTIL] = blk.snr_db.T, blk.rate_bps.T, blk.edge_util.T
    block[PROMPT], block[EST_SNR_DB] = blk.prompt.T, blk.est_snr_db.T


def _all_rows(n: int) -> np.ndarray:
    return np.arange(n, dtype=np.int64)


def initial(params: Params, rng: np.random.Generator, num_rows: int, exo: Exogenous | None = None) -> State:
    """New episodes of ``num_rows`` users, their first requests pending (:func:`_draw` says what is drawn).

    ``exo``: the processes of a previous state of ``num_rows`` users, to draw with again (its
    reset redraws all of their state; it saves building the links). With one user these are
    the draws of the env since v0.
    """
    if exo is None or exo.n_users != num_rows:
        exo = Exogenous(params.config, len(params.tables.prompt_tokens), n_users=num_rows)
    reals, block = _draw(params, exo, rng, BLOCK)
    state = State(np.zeros((num_rows, 2), dtype=np.int64), reals, block, exo)
    _arrive_and_observe(params.consts, params.prompt_costs, state.ints, state.reals, state.block,
                        _all_rows(num_rows), np.empty((num_rows, params.obs_size), dtype=np.float32))
    return state


def reset_rows(params: Params, state: State, rows: np.ndarray, rng: np.random.Generator) -> None:
    """New episodes for the users ``rows`` (int indices), in place; the other users go on.

    They draw what :func:`initial` draws for ``len(rows)`` users, but only the slots left in
    the current block (from the pending column on), so that every user keeps one block column.
    """
    k = int(state.ints[0, SLOT])
    exo = Exogenous(params.config, len(params.tables.prompt_tokens), n_users=len(rows))
    reals, block = _draw(params, exo, rng, BLOCK - k)
    state.exo.set_rows(rows, exo)
    state.reals[rows] = reals
    state.block[:, k:, rows] = block
    state.ints[rows, STEP] = 0
    _arrive_and_observe(params.consts, params.prompt_costs, state.ints, state.reals, state.block,
                        np.asarray(rows, dtype=np.int64), np.empty((state.num_rows, params.obs_size), dtype=np.float32))


def _next_block(params: Params, state: State, rng: np.random.Generator, obs: np.ndarray) -> None:
    _write_block(state.block, state.exo.next_block(rng))
    state.ints[:, SLOT] = 0
    _arrive_and_observe(params.consts, params.prompt_costs, state.ints, state.reals, state.block,
                        _all_rows(state.num_rows), obs)


_NO_LIVE = np.zeros(0)


def advance(
    params: Params, state: State, actions: np.ndarray, rng: np.random.Generator,
    live_quality_loss: np.ndarray | None = None,
) -> tuple[Outcome, np.ndarray]:
    """Serve every user's pending request, writing ``state`` in place: (what the step did, the observation
    (B, obs_size) float32 of the next requests).

    Args:
        params: the scenario.
        state: the users now; afterwards the users after the step.
        actions: (B, 2) int64 split layer in 0..L and bits index in 0..2.
        rng: draws the next block of slots when the step uses up the current one.
        live_quality_loss: (B,) quality loss measured by the live model for these actions, in
            place of the profile's (None: the profile's).

    Raises:
        ValueError: for actions of another shape or out of range (``state`` is left as it was).
    """
    b = state.num_rows
    out = np.empty((REWARD + 1, b))
    obs = np.empty((b, params.obs_size), dtype=np.float32)
    done = _serve_rows(actions, _NO_LIVE if live_quality_loss is None else live_quality_loss, params.prompt_costs,
                       params.quality_loss, params.consts, state.ints, state.reals, state.block, out, obs)
    if done == 0:
        _next_block(params, state, rng, obs)
    elif done < 0:
        raise ValueError(f"actions: expected ({b}, 2) int64 [split_layer in 0..{params.tables.num_layers}, "
                         f"bits_index in 0..2] (and {b} live quality losses), got {actions!r}")
    return Outcome(out), obs


def transition(
    params: Params, state: State, actions: np.ndarray, rng: np.random.Generator,
    live_quality_loss: np.ndarray | None = None,
) -> tuple[State, np.ndarray, dict[str, np.ndarray]]:
    """The pure step: (next state, reward (B,), info arrays (B,)); ``state`` is left as it was.

    :func:`advance` on a copy (arguments as there); the info keys are :func:`step_info`'s.
    """
    after = state.copy()
    out, _ = advance(params, after, actions, rng, live_quality_loss)
    return after, out.reward, out.info(params.has_budget)


def observation(params: Params, state: State) -> np.ndarray:
    """(B, snr_history + 6) float32 observation of every user's pending request (layout in the env docstring)."""
    obs = np.empty((state.num_rows, params.obs_size), dtype=np.float32)
    _observe_rows(params.consts, params.prompt_costs, state.ints, state.reals, state.block, _all_rows(state.num_rows),
                  obs)
    return obs
