"""Pure cost model of running one LLM task on the device, the edge or the cloud.

A task is a held-out prompt of ``T`` tokens whose answer is ``N`` generated tokens.
Each tier prices the generation (prefill of ``T`` tokens + ``N - 1`` decode steps +
``N`` LM-head passes) with the roofline model on its model card and hardware
(:func:`edgelam.envs.core.hardware.model_cost`); offloaded tasks add the radio:

* device: latency = t_dev; energy = P_active t_dev.
* edge: latency = up + RTT_edge + W + t_edge + down, with up = (T b_id + overhead) 8 / R_up,
  W the FCFS wait behind the edge's unfinished work, down = N b_id 8 / R_down; W evolves
  by Lindley's recursion over the real arrival times of the Poisson background jobs
  between two tasks (exponential service), so tasks see the edge busy with probability
  equal to its utilisation (PASTA) and its mean work is the Pollaczek-Khinchine wait;
  device energy = P_tx up + P_idle (latency - up).
* cloud: latency = up + RTT_wan + t_cloud + down; energy as for the edge;
  cloud cost = (T + N) x price per token.

Quality of a tier is the real teacher-forced top-1 accuracy of its executed model on
the task's 32 reference tokens (``offload`` replay profile, :mod:`edgelam.envs.lam.profile`).

Sources: roofline (Williams et al., CACM 2009) with prefill compute-bound and decode
memory-bound (Pope et al., MLSys 2023); MEC offloading latency/energy decomposition
(Mao et al., IEEE COMST 2017); FCFS waiting by Lindley's recursion (Lindley 1952).

Exogenous randomness (prompts, fading, background edge work, WAN RTT) is drawn in
blocks of slots for B users at once (:func:`draw_task_block`), by the single env
(B = 1) and the vector env alike, in one fixed order, so both see the same trajectory
for the same seed.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from edgelam.envs.core.channel import ChannelConfig, shannon_rate_bps, transfer_time_s
from edgelam.envs.core.hardware import HardwareSpec, model_cost
from edgelam.envs.core.load import ar1_block
from edgelam.envs.core.model_cards import ModelCard
from edgelam.envs.core.queues import background_interval_map, mm1_stationary_work_s

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


def tier_cost(
    t: TierTables, compute_s, up_bits, cloud_usd, tier, rate_bps, edge_wait_s, cloud_rtt_s
) -> tuple:
    """(latency_s, device energy_j, cloud_cost_usd) of tasks priced ``compute_s`` on ``tier`` (0, 1 or 2).

    One formula for one task (python numbers: the single env, the baselines) and for a
    batch (numpy arrays of shape (B,): the vector env). ``compute_s``, ``up_bits`` and
    ``cloud_usd`` are the task's entries of the tables (:func:`task_cost` looks them up).
    Each term is switched by a 0/1 tier indicator; adding or multiplying by exact zeros
    and ones leaves every tier's value bit-identical to its own branch-free expression.
    """
    on_device = tier == DEVICE
    on_edge = tier == EDGE
    on_cloud = tier == CLOUD
    offloaded = tier != DEVICE
    up_s = offloaded * transfer_time_s(up_bits, rate_bps, None, 0.0)
    latency = compute_s + up_s + on_edge * t.edge_rtt_s + on_edge * edge_wait_s + on_cloud * cloud_rtt_s
    latency = latency + offloaded * t.down_s
    energy = on_device * t.dev_active_w * compute_s + offloaded * (
        t.tx_power_w * up_s + t.dev_idle_w * (latency - up_s)
    )
    return latency, energy, on_cloud * cloud_usd


def task_cost(
    t: TierTables, prompt: int, tier: int, rate_bps: float, edge_wait_s: float, cloud_rtt_s: float
) -> tuple[float, float, float]:
    """(latency_s, device energy_j, cloud_cost_usd) of task ``prompt`` on ``tier`` (0 device, 1 edge, 2 cloud).

    Scalar Python math over the precomputed rows (the env's hot path; baselines call it per tier).
    """
    return tier_cost(
        t, t.compute_rows[prompt][tier], t.up_bits_list[prompt], t.cloud_usd_list[prompt], tier, rate_bps,
        edge_wait_s, cloud_rtt_s,
    )


@dataclass(frozen=True)
class TaskBlock:
    """Exogenous state of B users over n task slots; every array is shaped (B, n)."""

    prompt: np.ndarray  # int, held-out prompt of the task
    innovation: np.ndarray  # complex CN(0, 1) innovations of the Gauss-Markov fading
    rate_bps: np.ndarray  # uplink Shannon rate in bit/s (0 with no transmit power; priced at >= 1 bit/s)
    bg_shift_s: np.ndarray  # background work of the task interval minus its length, s (Lindley map shift)
    bg_floor_s: np.ndarray  # edge work left at the interval's end by background jobs alone, s (map floor)
    rtt_shock: np.ndarray  # N(0, 1) innovations of the log-RTT AR(1)
    rtt_s: np.ndarray  # cloud round trip in s


def uplink_rates(
    channel: ChannelConfig, large_scale_gain: np.ndarray, innovation: np.ndarray, h0: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """(rate_bps (B, n), last fading coefficient (B,)) of B links over n slots from h0 (B,) on.

    h_t = rho h_{t-1} + sqrt(1 - rho^2) e_t (Gauss-Markov Rayleigh fading, Jakes 1974) run by
    :func:`~edgelam.envs.core.load.ar1_block` along the slots; rate = b log2(1 + p g |h|^2 / (N0 F b)), the
    physical rate (0 at zero transmit power; :func:`tier_cost` prices uploads at no less than 1 bit/s).
    """
    rho = channel.rho
    h = ar1_block(h0, rho, innovation, gain=math.sqrt(1.0 - rho**2))
    fading = np.abs(h) ** 2 if channel.fading else np.ones(h.shape)
    rates = shannon_rate_bps(
        channel.bandwidth_hz, channel.tx_power_w, large_scale_gain[:, None] * fading,
        channel.noise_psd_w_per_hz, channel.noise_figure_db,
    )
    return np.asarray(rates, dtype=np.float64), h[:, -1].copy()


def cloud_rtts(wan, shock: np.ndarray, z0: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(rtt_s (B, n), last latent (B,)): log-normal RTT around ``wan.rtt_mean_s`` with AR(1) log-correlation.

    z_t = c z_{t-1} + sqrt(1 - c^2) shock_t, rtt = mean exp(sigma z - sigma^2 / 2) (mean preserved).
    """
    z = ar1_block(z0, wan.corr, shock, gain=math.sqrt(1.0 - wan.corr**2))
    rtt = wan.rtt_mean_s * np.exp(wan.rtt_log_std * z - 0.5 * wan.rtt_log_std**2)
    return rtt, z[:, -1].copy()


def draw_task_block(
    rng: np.random.Generator, cfg, num_prompts: int, large_scale_gain: np.ndarray, h0: np.ndarray,
    z0: np.ndarray, n: int,
) -> tuple[TaskBlock, np.ndarray, np.ndarray]:
    """Draw the next ``n`` tasks of B users (an Offload config ``cfg``); returns (block, last h, last z).

    Random draws in this order: prompts (B, n), fading innovations (real (B, n), imaginary (B, n)),
    background arrivals, their arrival times and their work in each task interval
    (:func:`edgelam.envs.core.queues.background_interval_map`), RTT shocks (B, n). Fading
    continues from ``h0`` and the RTT latent from ``z0`` (each (B,)).
    """
    b = len(h0)
    prompt = rng.integers(num_prompts, size=(b, n))
    innovation = (rng.standard_normal((b, n)) + 1j * rng.standard_normal((b, n))) / math.sqrt(2.0)
    rate, h_last = uplink_rates(cfg.channel, large_scale_gain, innovation, h0)
    eq = cfg.edge_queue
    shift, floor = background_interval_map(rng, eq.utilisation, eq.mean_job_s, cfg.task_interval_s, size=(b, n))
    shock = rng.standard_normal((b, n))
    rtt, z_last = cloud_rtts(cfg.wan, shock, z0)
    return TaskBlock(prompt, innovation, rate, shift, floor, shock, rtt), h_last, z_last


def initial_edge_work_s(rng: np.random.Generator, cfg, size: int) -> np.ndarray:
    """(B,) unfinished work of the edge when an episode starts: its stationary M/M/1 workload.

    The edge server has run its background traffic long before the device's first task,
    so the episode starts in the queue's steady state rather than empty
    (:func:`edgelam.envs.core.queues.mm1_stationary_work_s`).
    """
    return mm1_stationary_work_s(rng, cfg.edge_queue.utilisation, cfg.edge_queue.mean_job_s, size)
