"""MultiUserOffload-v0 defined once: B games of N users offloading into a shared uplink and edge server.

Cost model of one slot. User i with task ``p_i`` picks tier k_i (0 device, 1 edge, 2 cloud).
The uplink band B is split by FDMA: an offloading user gets a fraction x_i of it and
transmits at a fixed power spectral density P_max / B (uplink power control scales the
power with the allocated bandwidth, 3GPP TS 38.213 Sec. 7.1.1), so its spectral
efficiency se_i = log2(1 + SNR_i) does not depend on x_i and

    upload time  = a_i / x_i,   a_i = up_bits_i / (B se_i),
    edge compute = s_i / (y_i (1 - u)),  s_i = the task's time on an unloaded edge,

with y_i the user's share of the edge's free capacity (processor sharing). The
transmit energy P_max x_i a_i / x_i = P_max a_i does not depend on the split. The rest
(compute, RTTs, downlink, cloud price) is priced as in Offload-v0
(:mod:`edgelam.envs.offload.dynamics`). Minimising total latency over the split,
min sum_i a_i / x_i s.t. sum_i x_i <= 1, gives x_i = sqrt(a_i) / sum_j sqrt(a_j)
(Lagrange; e.g. Boyd & Vandenberghe, Convex Optimization, 2004, Sec. 5.5.3), and
the total becomes (sum_i sqrt(a_i))^2.

The game over a batched :class:`State` (arrays with leading axes B games, N users):
:func:`initial` draws new episodes, :func:`transition` plays one slot given every user's
tier and the next slot's :class:`Exogenous` draw, :func:`observation` is what the users
see. The PettingZoo env (:mod:`.env`) is B = 1, the batched game (:mod:`.vector`) is B;
the baselines read the same state through the env. Every operation is on whole (B, N)
arrays: the cost of an agent-step does not grow with N or B. Random draws, per slot, in
this order: the fading normals (2, B, N), the tasks (B, N), the RTT shocks (B,); with B = 1
these are the draws of the env since v0, so its trajectories are unchanged.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from edgelam.envs.core.channel import WirelessLink, gauss_markov_step, rate_from_snr_bps
from edgelam.envs.core.queues import processor_sharing_time_s
from edgelam.envs.multi_user_offload.config import MultiUserOffloadConfig
from edgelam.envs.offload.dynamics import CLOUD, DEVICE, EDGE, TierTables

OBS_DIM = 8
MIN_SPECTRAL_EFF = 1e-6  # bit/s/Hz: floor of log2(1 + SNR), so a user without power uploads slowly, not never


def equal_shares(tiers: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Equal split: every offloading user gets 1 / n_offload of the band, every edge user 1 / n_edge.

    ``tiers`` is (N,) for one game or (B, N) for B games (the split is per game, the last axis).
    """
    off = tiers != DEVICE
    edge = tiers == EDGE
    return (off / np.maximum(off.sum(axis=-1, keepdims=True), 1),
            edge / np.maximum(edge.sum(axis=-1, keepdims=True), 1))


def slot_costs(
    t: TierTables,
    prompts: np.ndarray,
    tiers: np.ndarray,
    spectral_eff: np.ndarray,
    band_share: np.ndarray,
    compute_share: np.ndarray,
    bandwidth_hz: float,
    edge_util: float,
    cloud_rtt_s,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(latency_s, device energy_j, cloud_cost_usd, upload time coefficient a) per user.

    Arrays (N,) of one game or (B, N) of B games (``cloud_rtt_s`` a number, or (B, 1)).
    ``band_share`` / ``compute_share`` are the fractions of the band / free edge capacity of
    each user (only offloading / edge users' entries are read; they must be > 0).
    """
    off = tiers != DEVICE
    edge = tiers == EDGE
    comp = t.compute_s[prompts, tiers]
    a = t.up_bits[prompts] / (bandwidth_hz * spectral_eff)
    up_s = np.where(off, a / np.where(off, band_share, 1.0), 0.0)
    comp = np.where(edge, processor_sharing_time_s(comp, edge_util, np.where(edge, compute_share, 1.0)), comp)
    latency = comp + up_s + off * t.down_s + edge * t.edge_rtt_s + (tiers == CLOUD) * cloud_rtt_s
    energy = np.where(off, t.tx_power_w * a + t.dev_idle_w * (latency - up_s), t.dev_active_w * comp)
    usd = (tiers == CLOUD) * t.cloud_usd[prompts]
    return latency, energy, usd, a


class TaskModels(Protocol):
    """Where the model numbers of a task come from: the replay tables or the live models."""

    def confidence(self, prompt: np.ndarray) -> np.ndarray:
        """Device-model confidence on each task, the shape of ``prompt``."""

    def quality(self, prompt: np.ndarray, tier: np.ndarray) -> np.ndarray:
        """Teacher-forced top-1 accuracy of each task on its tier, the shape of ``prompt``."""


@dataclass(frozen=True)
class ReplayTasks:
    """The replay backend's numbers: the ``offload`` profile in the scenario's :class:`TierTables`."""

    tables: TierTables

    def confidence(self, prompt: np.ndarray) -> np.ndarray:
        return self.tables.confidence[prompt]

    def quality(self, prompt: np.ndarray, tier: np.ndarray) -> np.ndarray:
        return self.tables.quality[prompt, tier]


@dataclass(frozen=True)
class Params:
    """What one scenario fixes: config, task prices, the source of model numbers, channel constants."""

    config: MultiUserOffloadConfig
    tables: TierTables
    tasks: TaskModels
    num_users: int  # N
    num_prompts: int  # P held-out tasks
    prompt_obs: np.ndarray  # (P,) prompt tokens / 128, at most 32 (observation entry 1)
    rho: np.ndarray  # 0-d lag-one fading correlation J0(2 pi f_d T)
    innovation: np.ndarray  # 0-d sqrt(1 - rho^2)
    noise_w: float  # receiver noise over the whole band, W

    @classmethod
    def build(cls, config: MultiUserOffloadConfig, tables: TierTables, tasks: TaskModels | None = None) -> Params:
        """Params of ``config`` priced by ``tables`` (replay numbers unless ``tasks`` is given)."""
        rho = np.asarray(config.channel.rho, dtype=np.float64)
        return cls(
            config=config,
            tables=tables,
            tasks=ReplayTasks(tables) if tasks is None else tasks,
            num_users=config.num_users,
            num_prompts=len(tables.prompt_tokens),
            prompt_obs=np.minimum(tables.prompt_tokens / 128.0, 32.0),
            rho=rho,
            innovation=np.sqrt(1.0 - rho**2),
            noise_w=WirelessLink(config.channel).noise_w,
        )


@dataclass(frozen=True, slots=True)
class State:
    """B games of N users at the start of a slot: the pending tasks and what the users know."""

    step: np.ndarray  # (B,) int, slots played in the episode
    battery_j: np.ndarray  # (B, N) device energy left (may go negative; the observation clips it)
    prompt: np.ndarray  # (B, N) int, held-out task pending at each user
    confidence: np.ndarray  # (B, N) device-model confidence on it
    spectral_eff: np.ndarray  # (B, N) log2(1 + SNR) over the whole band this slot, bit/s/Hz
    fading: np.ndarray  # (B, N) complex Gauss-Markov fading coefficient h
    large_scale_gain: np.ndarray  # (B, N) path loss and shadowing, linear (fixed per episode)
    rtt_latent: np.ndarray  # (B,) AR(1) latent of the log cloud RTT
    cloud_rtt_s: np.ndarray  # (B,) cloud round trip of this slot, s
    last_cloud_rtt_s: np.ndarray  # (B,) the previous slot's, s (observed)
    offloaded_fraction: np.ndarray  # (B,) fraction of users that offloaded in the previous slot

    @property
    def num_games(self) -> int:
        """B."""
        return len(self.step)

    def with_rows(self, rows: np.ndarray, other: State) -> State:
        """This state with games ``rows`` (int indices) replaced by the games of ``other`` (one per row)."""
        out = {}
        for name in State.__slots__:
            value = getattr(self, name).copy()
            value[rows] = getattr(other, name)
            out[name] = value
        return State(**out)


@dataclass(frozen=True, slots=True)
class Exogenous:
    """The random draws of one slot of B games (what no user controls)."""

    fading_normals: np.ndarray  # (2, B, N) standard normals of the fading innovation (real, imaginary)
    prompt: np.ndarray  # (B, N) int, the next task of each user, uniform over the held-out set
    rtt_shock: np.ndarray  # (B,) standard normal innovation of the log-RTT AR(1)


def draw_exogenous(rng: np.random.Generator, params: Params, num_games: int) -> Exogenous:
    """The next slot's draws for ``num_games`` games, in the order of the module docstring."""
    n = params.num_users
    normals = rng.standard_normal((2, num_games * n)).reshape(2, num_games, n)
    prompt = rng.integers(params.num_prompts, size=(num_games, n))
    return Exogenous(normals, prompt, rng.standard_normal(num_games))


def _exp(x: np.ndarray) -> np.ndarray:
    """exp of a (B,) array; ``math.exp`` for one game (the numbers of the per-game env since v0:
    ``np.exp`` differs from it in the last bit for some inputs)."""
    if x.size == 1:
        return np.array([math.exp(float(x[0]))])
    return np.exp(x)


def _next_slot(params: Params, fading: np.ndarray, large_scale_gain: np.ndarray, rtt_latent: np.ndarray,
               exo: Exogenous) -> tuple[np.ndarray, ...]:
    """The next slot: (prompt, confidence, spectral_eff, fading, rtt_latent, cloud_rtt_s) of :class:`State`.

    Fading advances one slot, the users get their new tasks, the cloud RTT's latent one AR(1) step.
    """
    cfg = params.config
    ch, wan = cfg.channel, cfg.wan
    h = gauss_markov_step(fading, params.rho, params.innovation, exo.fading_normals)
    power = h.real**2 + h.imag**2
    gain = large_scale_gain * (power if ch.fading else 1.0)
    snr = ch.tx_power_w * gain / params.noise_w
    latent = wan.corr * rtt_latent + math.sqrt(1.0 - wan.corr**2) * exo.rtt_shock
    return (
        exo.prompt,
        params.tasks.confidence(exo.prompt),
        np.maximum(rate_from_snr_bps(1.0, snr), MIN_SPECTRAL_EFF),  # bit/s/Hz: the rate of 1 Hz
        h,
        latent,
        wan.rtt_mean_s * _exp(wan.rtt_log_std * latent - 0.5 * wan.rtt_log_std**2),
    )


def blank(params: Params, num_games: int) -> State:
    """The state before the first reset (no task drawn yet: task 0, confidence 0, unit spectral efficiency)."""
    cfg, shape = params.config, (num_games, params.num_users)
    rtt = np.full(num_games, cfg.wan.rtt_mean_s)
    return State(
        step=np.zeros(num_games, dtype=np.int64),
        battery_j=np.full(shape, cfg.battery_j),
        prompt=np.zeros(shape, dtype=np.int64),
        confidence=np.zeros(shape),
        spectral_eff=np.ones(shape),
        fading=np.ones(shape, dtype=np.complex128),
        large_scale_gain=np.ones(shape),
        rtt_latent=np.zeros(num_games),
        cloud_rtt_s=rtt,
        last_cloud_rtt_s=rtt.copy(),
        offloaded_fraction=np.zeros(num_games),
    )


def initial(params: Params, rng: np.random.Generator, num_games: int) -> tuple[State, np.ndarray]:
    """New episodes of ``num_games`` games: (state at the first slot, user distances (B, N) in m).

    Random draws in this order: distances (uniform in ``distance_m``), the links' LOS states,
    shadowing and initial fading (:meth:`WirelessLink.reset` over the B x N links), the RTT
    latents (B,), then the first slot (:func:`draw_exogenous`).
    """
    cfg, shape = params.config, (num_games, params.num_users)
    distance = rng.uniform(*cfg.distance_m, size=shape)
    link = WirelessLink(cfg.channel, n_links=distance.size)
    link.reset(rng, distance.reshape(-1))
    large_scale_gain = link.large_scale_gain.reshape(shape)
    latent = rng.standard_normal(num_games)
    slot = _next_slot(params, link.fading.h.reshape(shape), large_scale_gain, latent,
                      draw_exogenous(rng, params, num_games))
    prompt, confidence, spectral_eff, fading, latent, rtt = slot
    state = State(
        step=np.zeros(num_games, dtype=np.int64),
        battery_j=np.full(shape, cfg.battery_j),
        prompt=prompt,
        confidence=confidence,
        spectral_eff=spectral_eff,
        fading=fading,
        large_scale_gain=large_scale_gain,
        rtt_latent=latent,
        cloud_rtt_s=rtt,
        last_cloud_rtt_s=np.full(num_games, cfg.wan.rtt_mean_s),
        offloaded_fraction=np.zeros(num_games),
    )
    return state, distance


def transition(
    params: Params,
    state: State,
    tiers: np.ndarray,
    exo: Exogenous,
    allocation: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None,
) -> tuple[State, np.ndarray, dict[str, np.ndarray]]:
    """Play one slot: (next state, reward (B, N), info arrays).

    Args:
        params: the scenario.
        state: the games at this slot.
        tiers: (B, N) int, each user's tier (0 device, 1 edge, 2 cloud), already checked.
        exo: the next slot's draws (:func:`draw_exogenous`).
        allocation: ``(requested (B,) bool, band_share (B, N), compute_share (B, N))``: a
            controller's split for the games where ``requested``; a game whose split gives an
            offloading user no band or an edge user no compute falls back to equal shares and
            is flagged in ``allocation_projected``. Default: equal shares everywhere.

    Returns:
        ``info`` holds (B, N) arrays ``latency_s``, ``energy_j``, ``quality``,
        ``cloud_cost_usd``, ``band_share``, ``compute_share`` and (B,) arrays
        ``global_reward`` (mean over users), ``total_latency_s``, ``mean_quality`` and
        ``allocation_projected``.
    """
    cfg, w, t = params.config, params.config.reward, params.tables
    band, compute = equal_shares(tiers)
    projected = np.zeros(state.num_games, dtype=bool)
    if allocation is not None:
        requested, band_req, compute_req = allocation
        off, edge = tiers != DEVICE, tiers == EDGE
        ok = requested & np.all((band_req > 0) | ~off, axis=1) & np.all((compute_req > 0) | ~edge, axis=1)
        band = np.where(ok[:, None], band_req, band)
        compute = np.where(ok[:, None], compute_req, compute)
        projected = requested & ~ok
    latency, energy, usd, _ = slot_costs(
        t, state.prompt, tiers, state.spectral_eff, band, compute,
        cfg.channel.bandwidth_hz, cfg.edge_background_util, state.cloud_rtt_s[:, None],
    )
    quality = params.tasks.quality(state.prompt, tiers)
    reward = (
        w.quality_weight * quality
        - w.latency_weight * latency
        - w.energy_weight_per_j * energy
        - w.cloud_cost_weight_per_usd * usd
    )
    n = params.num_users
    info = {
        "latency_s": latency,
        "energy_j": energy,
        "quality": quality,
        "cloud_cost_usd": usd,
        "band_share": band,
        "compute_share": compute,
        "global_reward": reward.sum(axis=1) / n,  # = mean(axis=1), without its Python overhead
        "total_latency_s": latency.sum(axis=1),
        "mean_quality": quality.sum(axis=1) / n,
        "allocation_projected": projected,
    }
    prompt, confidence, spectral_eff, fading, latent, rtt = _next_slot(
        params, state.fading, state.large_scale_gain, state.rtt_latent, exo
    )
    after = State(
        step=state.step + 1,
        battery_j=state.battery_j - energy,
        prompt=prompt,
        confidence=confidence,
        spectral_eff=spectral_eff,
        fading=fading,
        large_scale_gain=state.large_scale_gain,
        rtt_latent=latent,
        cloud_rtt_s=rtt,
        last_cloud_rtt_s=state.cloud_rtt_s,
        offloaded_fraction=np.count_nonzero(tiers != DEVICE, axis=1) / n,
    )
    return after, reward, info


def observation(params: Params, state: State) -> np.ndarray:
    """(B, N, 8) float32: each user's device confidence, prompt tokens / 128, log10(full-band rate in
    bit/s) / 10, edge background utilisation, last cloud RTT (s), battery fraction, fraction of users
    that offloaded in the last slot, elapsed fraction of the episode."""
    cfg = params.config
    obs = np.empty((*state.prompt.shape, OBS_DIM), dtype=np.float32)
    obs[..., 0] = state.confidence
    obs[..., 1] = params.prompt_obs[state.prompt]
    rate_obs = np.log10(np.maximum(cfg.channel.bandwidth_hz * state.spectral_eff, 1.0)) / 10.0  # >= 0
    obs[..., 2] = np.minimum(rate_obs, 2.0)
    obs[..., 3] = cfg.edge_background_util
    obs[..., 4] = np.minimum(state.last_cloud_rtt_s, 10.0)[:, None]
    obs[..., 5] = np.maximum(state.battery_j, 0.0) / cfg.battery_j
    obs[..., 6] = state.offloaded_fraction[:, None]
    obs[..., 7] = (state.step / cfg.episode_length)[:, None]
    return obs


__all__ = [
    "CLOUD",
    "DEVICE",
    "EDGE",
    "OBS_DIM",
    "Exogenous",
    "Params",
    "ReplayTasks",
    "State",
    "TaskModels",
    "blank",
    "draw_exogenous",
    "equal_shares",
    "initial",
    "observation",
    "slot_costs",
    "transition",
]
