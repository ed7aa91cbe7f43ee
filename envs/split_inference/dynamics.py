"""Pure cost model of one split-inference request (Neurosurgeon / Edgent style).

Everything here is a function of arrays and numbers; the same code prices the
action an env takes and, broadcast over every (split layer, bits) pair, the
search of the ``neurosurgeon``, ``oracle`` and ``lyapunov`` baselines.

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

Sources: Kang et al., "Neurosurgeon", ASPLOS 2017 (latency/energy decomposition
over split points); Li et al., "Edgent", IEEE TWC 2020; processor-sharing
slowdown 1 / (1 - u) (Kleinrock, Queueing Systems Vol. 2, 1976).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from edgelam.envs.core.channel import MIN_RATE_BPS, WirelessLink, ergodic_rate_bps, transfer_time_s
from edgelam.envs.core.hardware import HardwareSpec, lm_head_cost, transformer_layer_cost
from edgelam.envs.core.load import ar1_block
from edgelam.envs.core.model_cards import ModelCard
from edgelam.envs.core.queues import processor_sharing_time_s

BITS = (4, 8, 16)
BLOCK = 256  # request slots of exogenous state drawn per vectorised batch of random numbers


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


def request_cost(t: CostTables, prompt: int, split_layer, bits_index, rate_bps, edge_util, ergodic_bps=None):
    """Latency (s), device energy (J), uplink bytes and quality loss of one request.

    ``split_layer``, ``bits_index``, ``rate_bps``, ``edge_util`` and ``ergodic_bps`` broadcast
    (python numbers for one action, arrays for a search over all actions). ``rate_bps`` is
    the uplink rate in the request's fading slot; with ``ergodic_bps`` (the fading-averaged
    rate) the bits past one coherence time ``t.coherence_s`` go at that rate, without it all
    bits go at ``rate_bps``.
    """
    L = t.num_layers
    T = t.prompt_tokens[prompt]
    N = t.decode_tokens
    on_device = split_layer == L
    at_edge = split_layer == 0
    split = 1 - on_device - at_edge  # 1 for 0 < l < L
    up_bytes = at_edge * T * t.token_id_bytes + split * (T + N - 1) * t.act_bytes[bits_index]
    down_bytes = (1 - on_device) * N * t.token_id_bytes
    rounds = split * N + at_edge
    dev_s = split_layer * t.dev_layer_s[prompt] + on_device * t.dev_head_s[prompt]
    edge_s = processor_sharing_time_s(
        (L - split_layer) * t.edge_layer_s[prompt] + (1 - on_device) * t.edge_head_s[prompt], edge_util
    )
    up_s = transfer_time_s(up_bytes * 8.0, rate_bps, ergodic_bps, t.coherence_s)
    latency = dev_s + up_s + edge_s + rounds * t.rtt_s + down_bytes * 8.0 / t.downlink_rate_bps
    energy = t.dev_active_w * dev_s + t.tx_power_w * up_s + t.dev_idle_w * (latency - dev_s - up_s)
    quality_loss = t.quality_loss[prompt, split_layer, bits_index]
    return latency, energy, up_bytes, quality_loss


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

    def __init__(self, config, num_prompts: int, n_users: int = 1) -> None:
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

    def next_block(self, rng: np.random.Generator) -> ExogenousBlock:
        """Draw the next ``BLOCK`` slots (continuing fading, load and CSI from the last block)."""
        cfg, b = self.config, self.n_users
        _, snr, rate = self.link.trajectory(rng, BLOCK)
        load = cfg.edge_load
        latent = ar1_block(self._latent, load.corr, load.innovation_std * rng.standard_normal((b, BLOCK)))
        self._latent = latent[:, -1].copy()
        snr_db = 10.0 * np.log10(np.maximum(snr, 1e-12))
        if cfg.csi_delay_slots == 0:
            seen_db = snr_db
        else:
            seen_db = np.concatenate([self._last_snr_db[:, None], snr_db[:, :-1]], axis=1)
        self._last_snr_db = snr_db[:, -1].copy()
        est_db = seen_db + cfg.csi_noise_db * rng.standard_normal((b, BLOCK))
        return ExogenousBlock(
            snr_db=snr_db,
            rate_bps=rate,
            edge_util=np.clip(load.mean + latent, 0.0, load.max_util),
            prompt=rng.integers(self.num_prompts, size=(b, BLOCK)),
            est_snr_db=est_db,
        )
