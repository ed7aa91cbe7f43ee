"""Pure cost model of one speculative-decoding round over precomputed tables (one round or a batch).

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

Sources: Leviathan et al., "Fast Inference from Transformers via Speculative Decoding",
ICML 2023 (rounds, acceptance); processor sharing slowdown 1 / (1 - u) (Kleinrock 1976).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import numpy as np

from edgelam.envs.core.channel import transfer_time_s
from edgelam.envs.core.hardware import HardwareSpec, lm_head_cost, transformer_layer_cost
from edgelam.envs.core.model_cards import ModelCard
from edgelam.envs.core.queues import processor_sharing_time_s
from edgelam.envs.spec_decode.config import BlockageConfig

BLOCK_ROUNDS = 256  # rounds of random numbers drawn per call (see block_rounds)
BLOCK_VALUES = 4096  # at most this many (rounds x users) per call of the vector env


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


def _where(cond, a, b):
    """``a`` where ``cond`` else ``b``: a Python conditional for one round, ``np.where`` for a batch."""
    return np.where(cond, a, b) if isinstance(cond, np.ndarray) else (a if cond else b)


def batch_tables(t: RoundTables) -> RoundTables:
    """``t`` with numpy arrays instead of lists, for :func:`round_cost` over arrays of actions."""
    return replace(t, draft_step_s=np.asarray(t.draft_step_s), verify_s=np.asarray(t.verify_s),
                   fwd_bytes=np.asarray(t.fwd_bytes))


def round_cost(
    t: RoundTables,
    gamma,
    variant,
    rate_bps,
    edge_util,
    device_util,
    ergodic_bps=None,
) -> tuple:
    """(latency_s, device energy_j) of one round with ``gamma`` drafted tokens of draft ``variant``.

    ``rate_bps`` is the link rate in the round's fading slot, ``ergodic_bps`` the fading-averaged
    rate that a transfer longer than ``t.slot_s`` continues at
    (:func:`~edgelam.envs.core.channel.transfer_time_s`). Python
    numbers price one round (the single env, the baselines); arrays of shape (B,) price a batch
    (the vector env, with :func:`batch_tables`) with the same expressions, so both give the same bits.
    """
    dev_slow = processor_sharing_time_s(1.0, device_util)  # seconds per second of full-speed compute
    edge_slow = processor_sharing_time_s(1.0, edge_util)
    back = transfer_time_s(t.verdict_bytes * 8.0, rate_bps, ergodic_bps, t.slot_s)
    fwd = transfer_time_s(t.fwd_bytes[gamma] * 8.0, rate_bps, ergodic_bps, t.slot_s)
    step_s, verify_s = t.draft_step_s[variant], t.verify_s[gamma]
    if t.edge_draft:
        draft = gamma * step_s * edge_slow
        verify = verify_s * dev_slow
        latency = draft + fwd + verify + back + t.rtt_s
        energy = t.dev_active_w * verify + t.tx_power_w * back + t.dev_idle_w * (draft + fwd + t.rtt_s)
        plain = t.verify_s[0] * dev_slow  # gamma = 0: the device decodes one token by itself
        plain_energy = t.dev_active_w * plain
    else:
        draft = gamma * step_s * dev_slow
        verify = verify_s * edge_slow
        latency = draft + fwd + verify + back + t.rtt_s
        energy = t.dev_active_w * draft + t.tx_power_w * fwd + t.dev_idle_w * (verify + back + t.rtt_s)
        plain = t.verify_s[0] * edge_slow + back + t.rtt_s  # gamma = 0: the remote target's token comes back
        plain_energy = t.dev_idle_w * plain
    plain_round = gamma == 0
    return _where(plain_round, plain, latency), _where(plain_round, plain_energy, energy)


def accepted_run(beta_row: list[float], pos: int, n_draft: int, uniforms: list[float]) -> int:
    """Draft tokens accepted in a round: accept token i iff ``uniforms[i] < beta_row[pos + i]``, stop at the first
    rejection (Leviathan et al. 2023, sequential acceptance)."""
    a = 0
    while a < n_draft and uniforms[a] < beta_row[pos + a]:
        a += 1
    return a


def accepted_runs(
    beta: np.ndarray, variant: np.ndarray, prompt: np.ndarray, pos: np.ndarray, n_draft: np.ndarray,
    uniforms: np.ndarray,
) -> np.ndarray:
    """:func:`accepted_run` for a batch of B rounds: ``beta`` (V, P, N); ``variant``, ``prompt``, ``pos``,
    ``n_draft`` (B,) ints with ``pos + n_draft < N``; ``uniforms`` (gamma_max, B), position-major so that
    every array operation runs along the batch. Accepted draft tokens, shape (B,).

    The run of leading acceptances is counted over all ``gamma_max`` uniforms and cut at ``n_draft``;
    positions past a row's end read the next row (or, ``mode="clip"``, the last value), which the cut
    leaves unused.
    """
    g, b = uniforms.shape
    flat = (variant * beta.shape[1] + prompt) * beta.shape[2] + pos  # (variant, prompt, pos) in the flat beta
    ok = np.empty((g + 1, b), dtype=bool)
    ok[g] = False  # a rejection after the last uniform: argmin finds the first rejection
    np.less(uniforms, beta.reshape(-1).take(flat + np.arange(g)[:, None], mode="clip"), out=ok[:g])
    return np.minimum(ok.argmin(axis=0), n_draft)


def blockage_loss_db(blockage: BlockageConfig, clock_s):
    """Blockage loss in dB at episode clock ``clock_s`` (s): a float for a float, an array for an array (B,).

    The one implementation of :class:`~edgelam.envs.spec_decode.config.BlockageConfig`'s
    schedule (:meth:`~edgelam.envs.spec_decode.config.BlockageConfig.loss_at` calls it):
    ``loss_db`` while ``start_s <= t < end_s``, ramping linearly from 0 over the ``ramp_s``
    after ``start_s`` and back to 0 over the ``ramp_s`` before ``end_s``; abrupt for
    ``ramp_s = 0``; 0 outside. One expression for a single round (the single env, Python
    numbers) and a batch (the vector env), like :func:`round_cost`.
    """
    b = blockage
    batch = isinstance(clock_s, np.ndarray)
    if b.loss_db == 0.0:
        return np.zeros(clock_s.shape) if batch else 0.0
    inside = (b.start_s <= clock_s) & (clock_s < b.end_s)
    if b.ramp_s == 0.0:
        return _where(inside, b.loss_db, 0.0)
    least = np.minimum if batch else min
    ramp = least(least((clock_s - b.start_s) / b.ramp_s, (b.end_s - clock_s) / b.ramp_s), 1.0)
    return _where(inside, b.loss_db * ramp, 0.0)


def block_rounds(episode_length: int, num_envs: int) -> int:
    """Rounds of random numbers drawn per call by the single env (``num_envs=1``) and the vector env.

    Both draw, per round and user, the fading innovation (2 normals), the two load shocks
    (2 normals), the shadowing innovation of ``drift_mps`` (1 normal) and ``gamma_max``
    acceptance uniforms, for this many rounds at once (a block is dropped at a full reset:
    one episode has at most ``episode_length + 1`` rounds). With one user the vector env's
    blocks are the single env's, so both consume the same random stream.
    """
    return max(1, min(BLOCK_ROUNDS, episode_length + 1, BLOCK_VALUES // num_envs))
