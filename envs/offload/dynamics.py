"""Pure cost model of running one LLM task on the device, the edge or the cloud.

A task is a held-out prompt of ``T`` tokens whose answer is ``N`` generated tokens.
Each tier prices the generation (prefill of ``T`` tokens + ``N - 1`` decode steps +
``N`` LM-head passes) with the roofline model on its model card and hardware
(:func:`edgelam.envs.core.hardware.model_cost`); offloaded tasks add the radio:

* device: latency = t_dev; energy = P_active t_dev.
* edge: latency = up + RTT_edge + W + t_edge + down, with up = (T b_id + overhead) 8 / R_up,
  W the FCFS wait behind the edge's unfinished work, down = N b_id 8 / R_down;
  device energy = P_tx up + P_idle (latency - up).
* cloud: latency = up + RTT_wan + t_cloud + down; energy as for the edge;
  cloud cost = (T + N) x price per token.

Quality of a tier is the real teacher-forced top-1 accuracy of its executed model on
the task's 32 reference tokens (``offload`` replay profile, :mod:`edgelam.envs.lam.profile`).

Sources: roofline (Williams et al., CACM 2009) with prefill compute-bound and decode
memory-bound (Pope et al., MLSys 2023); MEC offloading latency/energy decomposition
(Mao et al., IEEE COMST 2017); FCFS waiting by Lindley's recursion (Lindley 1952).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from edgelam.envs.core.hardware import HardwareSpec, model_cost
from edgelam.envs.core.model_cards import ModelCard

DEVICE, EDGE, CLOUD = 0, 1, 2


@dataclass(frozen=True)
class TierTables:
    """Per-task prices precomputed once per scenario (P = number of held-out prompts)."""

    prompt_tokens: np.ndarray  # (P,) int, T of each task
    decode_tokens: int  # N
    compute_s: np.ndarray  # (P, 3) generation time on the device, an unloaded edge, the cloud
    up_bits: np.ndarray  # (P,) uplink bits of an offloaded request
    down_bits: float  # downlink bits of the answer
    cloud_usd: np.ndarray  # (P,) cloud price of the task
    quality: np.ndarray  # (P, 3) teacher-forced top-1 accuracy of each tier's executed model
    confidence: np.ndarray  # (P,) mean max softmax probability of the device's executed model
    dev_active_w: float
    dev_idle_w: float
    tx_power_w: float
    edge_rtt_s: float
    downlink_rate_bps: float
    down_s: float  # downlink time of the answer
    compute_rows: list  # compute_s as nested Python lists (fast scalar indexing)
    up_bits_list: list
    cloud_usd_list: list


def generation_time_s(hw: HardwareSpec, card: ModelCard, prompt_tokens: np.ndarray, decode_tokens: int,
                      weight_bits: int) -> np.ndarray:
    """Roofline time (s) to prefill ``T`` tokens and decode ``N - 1`` more, with the LM head, shape (P,)."""
    t = np.asarray(prompt_tokens, dtype=np.float64)
    prefill_s, _ = model_cost(hw, card, "prefill", t, t, weight_bits=weight_bits, include_head=True)
    total = np.asarray(prefill_s, dtype=np.float64)
    if decode_tokens > 1:
        decode_s, _ = model_cost(
            hw, card, "decode", decode_tokens - 1, t + decode_tokens - 1, weight_bits=weight_bits, include_head=True
        )
        total = total + np.asarray(decode_s)
    return total


def build_tables(
    cards: tuple[ModelCard, ModelCard, ModelCard],
    hardware: tuple[HardwareSpec, HardwareSpec, HardwareSpec],
    weight_bits: tuple[int, int, int],
    prompt_tokens: np.ndarray,
    decode_tokens: int,
    token_id_bytes: int,
    request_overhead_bytes: int,
    price_usd_per_token: float,
    tx_power_w: float,
    edge_rtt_s: float,
    downlink_rate_bps: float,
    quality: np.ndarray,
    confidence: np.ndarray,
) -> TierTables:
    """Price every task on every tier (device, edge, cloud order in each tuple)."""
    prompt_tokens = np.asarray(prompt_tokens, dtype=np.int64)
    compute = np.stack(
        [
            generation_time_s(hw, c, prompt_tokens, decode_tokens, b)
            for c, hw, b in zip(cards, hardware, weight_bits, strict=True)
        ],
        axis=1,
    )
    up_bits = 8.0 * (prompt_tokens * token_id_bytes + request_overhead_bytes).astype(np.float64)
    down_bits = 8.0 * decode_tokens * token_id_bytes
    cloud_usd = (prompt_tokens + decode_tokens) * price_usd_per_token
    return TierTables(
        prompt_tokens=prompt_tokens,
        decode_tokens=decode_tokens,
        compute_s=compute,
        up_bits=up_bits,
        down_bits=down_bits,
        cloud_usd=cloud_usd,
        quality=np.asarray(quality, dtype=np.float64),
        confidence=np.asarray(confidence, dtype=np.float64),
        dev_active_w=hardware[0].power_active_w,
        dev_idle_w=hardware[0].power_idle_w,
        tx_power_w=tx_power_w,
        edge_rtt_s=edge_rtt_s,
        downlink_rate_bps=downlink_rate_bps,
        down_s=down_bits / downlink_rate_bps,
        compute_rows=compute.tolist(),
        up_bits_list=up_bits.tolist(),
        cloud_usd_list=cloud_usd.tolist(),
    )


def task_cost(
    t: TierTables, prompt: int, tier: int, rate_bps: float, edge_wait_s: float, cloud_rtt_s: float
) -> tuple[float, float, float]:
    """(latency_s, device energy_j, cloud_cost_usd) of task ``prompt`` on ``tier`` (0 device, 1 edge, 2 cloud).

    Scalar Python math over the precomputed rows (the env's hot path; baselines call it per tier).
    """
    comp = t.compute_rows[prompt][tier]
    if tier == DEVICE:
        return comp, t.dev_active_w * comp, 0.0
    up_s = t.up_bits_list[prompt] / rate_bps
    if tier == EDGE:
        latency = comp + up_s + t.edge_rtt_s + edge_wait_s + t.down_s
        usd = 0.0
    else:
        latency = comp + up_s + cloud_rtt_s + t.down_s
        usd = t.cloud_usd_list[prompt]
    return latency, t.tx_power_w * up_s + t.dev_idle_w * (latency - up_s), usd
