"""Offload-v0 defined once: where each LLM task runs (device small model, edge model, cloud big model).

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
(Mao et al., IEEE COMST 2017); FCFS waiting by Lindley's recursion (Lindley 1952);
budget virtual queue (Neely 2010).

The simulator is written once, over a batched :class:`State` of B devices (arrays with a
leading axis B): :func:`initial` starts episodes, :func:`transition` (in place:
:func:`advance`) runs every device's pending task on its chosen tier, :func:`observation`
is what a device sees. The Gymnasium env is B = 1, the vector env B; the baselines and
oracles read the same state. The step and the observation are written once, in scalar form
over one row, as loops over the rows compiled by numba (:mod:`edgelam.envs.core.jit`), which
call the core kernels (transfer time, virtual queue, Lindley map). Exogenous randomness
(prompts, fading, background edge work, WAN RTT) is drawn in blocks of ``CHUNK`` slots for
the B devices at once (:class:`Exogenous`, :func:`draw_exogenous`), in one fixed order, so
one device and B devices see the same trajectory for the same seed.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from edgelam.envs.core.channel import (
    MIN_RATE_BPS,
    ChannelConfig,
    WirelessLink,
    shannon_rate_bps,
    transfer_time_s,
)
from edgelam.envs.core.hardware import HardwareSpec, model_cost
from edgelam.envs.core.jit import lindley_interval, njit, transfer_time_one_s, virtual_queue_step
from edgelam.envs.core.load import ar1_block, lognormal_ar1_block
from edgelam.envs.core.model_cards import ModelCard
from edgelam.envs.core.queues import background_interval_map, mm1_stationary_work_s
from edgelam.envs.offload.config import OffloadConfig

DEVICE, EDGE, CLOUD = 0, 1, 2
TIER_NAMES = np.asarray(("device", "edge", "cloud"))  # info["tier"] of the vector env, by tier index
CHUNK = 256  # exogenous randomness is drawn in blocks of this many task slots
QUEUE_SCALE = 10.0  # observation: virtual queue / (QUEUE_SCALE budget)
# observation: device confidence, T / 128, log10(rate bit/s) / 10, edge queue s, last cloud RTT s,
# battery fraction, virtual queue / (10 budget), elapsed fraction
OBS_HIGH = (1.0, 32.0, 2.0, 100.0, 10.0, 1.0, 100.0, 1.0)


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


def tier_cost(compute_s, upload_s, cloud_usd, tier, edge_wait_s, cloud_rtt_s, edge_rtt_s, down_s, dev_active_w,
              tx_power_w, dev_idle_w) -> tuple:
    """(latency_s, device energy_j, cloud_cost_usd) of a task priced ``compute_s`` on ``tier`` (0, 1 or 2).

    ``upload_s`` is the request's upload time at the slot's rate, ``cloud_usd`` the task's
    cloud price, ``edge_wait_s`` the edge's unfinished work, ``cloud_rtt_s`` the WAN round
    trip; the rest are the scenario's (:class:`TierTables`). Python numbers (the baselines,
    through :func:`task_cost`), numpy arrays (broadcast), or compiled into the step kernel:
    one formula. Each term is switched by a 0/1 tier indicator; adding or multiplying by
    exact zeros and ones leaves every tier's value bit-identical to its own branch-free expression.
    """
    on_device = tier == DEVICE
    on_edge = tier == EDGE
    on_cloud = tier == CLOUD
    offloaded = tier != DEVICE
    up_s = offloaded * upload_s
    latency = compute_s + up_s + on_edge * edge_rtt_s + on_edge * edge_wait_s + on_cloud * cloud_rtt_s
    latency = latency + offloaded * down_s
    energy = on_device * dev_active_w * compute_s + offloaded * (tx_power_w * up_s + dev_idle_w * (latency - up_s))
    return latency, energy, on_cloud * cloud_usd


_tier_cost = njit(tier_cost)


def task_cost(
    t: TierTables, prompt: int, tier: int, rate_bps: float, edge_wait_s: float, cloud_rtt_s: float
) -> tuple[float, float, float]:
    """(latency_s, device energy_j, cloud_cost_usd) of task ``prompt`` on ``tier`` (0 device, 1 edge, 2 cloud).

    Python numbers over the precomputed rows (the baselines call it per tier); the env's
    step prices its task with the same :func:`tier_cost`, compiled.
    """
    upload_s = transfer_time_s(t.up_bits_list[prompt], rate_bps, None, 0.0)
    return tier_cost(
        t.compute_rows[prompt][tier], upload_s, t.cloud_usd_list[prompt], tier, edge_wait_s, cloud_rtt_s,
        t.edge_rtt_s, t.down_s, t.dev_active_w, t.tx_power_w, t.dev_idle_w,
    )


@dataclass(frozen=True)
class Params:
    """What one scenario fixes, as the arrays the kernels read (P held-out prompts); :meth:`build`."""

    config: OffloadConfig
    tables: TierTables
    token_obs: np.ndarray  # (P,) T / 128, at most 32 (observation entry 1)
    consts: np.ndarray  # (len(_CONSTS),) float64 scalars of the scenario, in the order of _CONSTS

    @classmethod
    def build(cls, config: OffloadConfig, tables: TierTables, horizon: int | None = None) -> Params:
        """Params of ``config`` priced by ``tables``; ``horizon`` (default: ``episode_length``) truncates episodes."""
        cfg, w, budget = config, config.reward, config.budget.per_task
        values = {
            "quality_weight": w.quality_weight,
            "latency_weight": w.latency_weight,
            "energy_weight_per_j": w.energy_weight_per_j,
            "cloud_cost_weight_per_usd": w.cloud_cost_weight_per_usd,
            "edge_rtt_s": tables.edge_rtt_s,
            "down_s": tables.down_s,
            "dev_active_w": tables.dev_active_w,
            "tx_power_w": tables.tx_power_w,
            "dev_idle_w": tables.dev_idle_w,
            "has_budget": float(budget is not None),
            "budget": 0.0 if budget is None else budget,
            "budget_energy": float(cfg.budget.metric == "energy_j"),
            "battery_j": cfg.battery_j,
            "episode_length": float(cfg.episode_length),
            "horizon": float(cfg.episode_length if horizon is None else horizon),
        }
        return cls(
            config=cfg,
            tables=tables,
            token_obs=np.minimum(tables.prompt_tokens / 128.0, 32.0),
            consts=np.array([values[name] for name in _CONSTS], dtype=np.float64),
        )

    @property
    def num_prompts(self) -> int:
        """P."""
        return len(self.tables.prompt_tokens)

    @property
    def has_budget(self) -> bool:
        """Whether the scenario sets ``budget.per_task`` (then ``info`` carries ``virtual_queue``)."""
        return self.config.budget.per_task is not None


# the scalars of Params.consts (``horizon``: tasks after which an episode is truncated), and their
# positions, which the kernels read them by
_CONSTS = ("quality_weight", "latency_weight", "energy_weight_per_j", "cloud_cost_weight_per_usd", "edge_rtt_s",
           "down_s", "dev_active_w", "tx_power_w", "dev_idle_w", "has_budget", "budget", "budget_energy",
           "battery_j", "episode_length", "horizon")
(_QUALITY_W, _LATENCY_W, _ENERGY_W, _CLOUD_W, _EDGE_RTT, _DOWN, _ACTIVE_W, _TX_W, _IDLE_W, _HAS_BUDGET, _BUDGET,
 _BUDGET_ENERGY, _BATTERY, _EPISODE, _HORIZON) = range(len(_CONSTS))


@dataclass(frozen=True, slots=True)
class Exogenous:
    """The next ``CHUNK`` task slots of B devices, drawn ahead (what no decision changes); arrays (B, CHUNK).

    A device that starts a new episode inside the block keeps its row's prompts, innovations
    and background work (i.i.d.) and gets its rates and RTTs recomputed from its new link
    (:func:`restart_rows` writes them in place).
    """

    prompt: np.ndarray  # int, held-out prompt of the task
    innovation: np.ndarray  # complex CN(0, 1) innovations of the Gauss-Markov fading
    rate_bps: np.ndarray  # uplink Shannon rate in bit/s (0 with no transmit power; priced at >= 1 bit/s)
    bg_shift_s: np.ndarray  # background work of the task interval minus its length, s (Lindley map shift)
    bg_floor_s: np.ndarray  # edge work left at the interval's end by background jobs alone, s (map floor)
    rtt_shock: np.ndarray  # N(0, 1) innovations of the log-RTT AR(1)
    rtt_s: np.ndarray  # cloud round trip in s

    def copy(self) -> Exogenous:
        """A deep copy."""
        return Exogenous(*(getattr(self, f).copy() for f in Exogenous.__slots__))


def uplink_rates(
    channel: ChannelConfig, large_scale_gain: np.ndarray, innovation: np.ndarray, h0: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """(rate_bps (B, n), last fading coefficient (B,)) of B links over n slots from h0 (B,) on.

    h_t = rho h_{t-1} + sqrt(1 - rho^2) e_t (Gauss-Markov Rayleigh fading, Jakes 1974) run by
    :func:`~edgelam.envs.core.load.ar1_block` along the slots; rate = b log2(1 + p g |h|^2 / (N0 F b)), the
    physical rate (0 at zero transmit power; the step prices uploads at no less than 1 bit/s).
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
    return lognormal_ar1_block(wan.rtt_mean_s, wan.rtt_log_std, wan.corr, shock, z0)


def draw_exogenous(
    rng: np.random.Generator, params: Params, large_scale_gain: np.ndarray, h0: np.ndarray, z0: np.ndarray,
) -> tuple[Exogenous, np.ndarray, np.ndarray]:
    """Draw the next ``CHUNK`` tasks of B devices; returns (block, last fading coefficient, last RTT latent).

    Random draws in this order: prompts (B, n), fading innovations (real (B, n), imaginary (B, n)),
    background arrivals, their arrival times and their work in each task interval
    (:func:`edgelam.envs.core.queues.background_interval_map`), RTT shocks (B, n). Fading
    continues from ``h0`` and the RTT latent from ``z0`` (each (B,)) on links of ``large_scale_gain`` (B,).
    """
    cfg, b, n = params.config, len(h0), CHUNK
    prompt = rng.integers(params.num_prompts, size=(b, n))
    innovation = (rng.standard_normal((b, n)) + 1j * rng.standard_normal((b, n))) / math.sqrt(2.0)
    rate, h_last = uplink_rates(cfg.channel, large_scale_gain, innovation, h0)
    eq = cfg.edge_queue
    shift, floor = background_interval_map(rng, eq.utilisation, eq.mean_job_s, cfg.task_interval_s, size=(b, n))
    shock = rng.standard_normal((b, n))
    rtt, z_last = cloud_rtts(cfg.wan, shock, z0)
    return Exogenous(prompt, innovation, rate, shift, floor, shock, rtt), h_last, z_last


def initial_edge_work_s(rng: np.random.Generator, cfg, size: int) -> np.ndarray:
    """(B,) unfinished work of the edge when an episode starts: its stationary M/M/1 workload.

    The edge server has run its background traffic long before the device's first task,
    so the episode starts in the queue's steady state rather than empty
    (:func:`edgelam.envs.core.queues.mm1_stationary_work_s`).
    """
    return mm1_stationary_work_s(rng, cfg.edge_queue.utilisation, cfg.edge_queue.mean_job_s, size)


@dataclass(frozen=True, slots=True)
class Starts:
    """How n new episodes start (each episode's own link and edge), arrays (n,); :func:`draw_starts`."""

    distance_m: np.ndarray  # device - base station distance
    large_scale_gain: np.ndarray  # path loss and shadowing of the episode's link (linear)
    fading: np.ndarray  # complex initial fading coefficient
    rtt_latent: np.ndarray  # initial latent of the log-RTT AR(1)
    edge_work_s: np.ndarray  # the edge's unfinished work at the first task (stationary M/M/1)

    def take(self, rows: slice) -> Starts:
        """The starts ``rows``."""
        return Starts(*(getattr(self, f)[rows] for f in Starts.__slots__))


def draw_starts(rng: np.random.Generator, params: Params, link: WirelessLink) -> Starts:
    """Initial states of ``link.n_links`` new episodes (``link`` is reset on them).

    Random draws in this order: distances (uniform in ``distance_m``), the link's LOS,
    shadowing and fading (:meth:`WirelessLink.reset`), RTT latents (normal), the edge's
    stationary work (:func:`initial_edge_work_s`).
    """
    cfg, n = params.config, link.n_links
    distance = rng.uniform(*cfg.distance_m, size=n)
    link.reset(rng, distance)
    rtt_latent = rng.standard_normal(n)
    work = initial_edge_work_s(rng, cfg, n)
    return Starts(distance, link.large_scale_gain.copy(), link.fading.h.copy(), rtt_latent, work)


@dataclass(slots=True)
class State:
    """B devices, each at its pending task (slot ``slot`` of the block ``tasks``).

    The arrays are the simulator's memory: :func:`advance` and :func:`restart_rows` write
    them in place (the env shells own their state); :func:`transition` is the pure step, on a copy.
    """

    step: np.ndarray  # (B,) int, tasks done in the episode
    edge_work_s: np.ndarray  # (B,) unfinished work at the edge seen by the pending task, s
    virtual_queue: np.ndarray  # (B,) budget virtual queue Z (the budgeted metric's unit; 0 without a budget)
    battery_j: np.ndarray  # (B,) battery left (may be < 0 after the last task)
    last_rtt_s: np.ndarray  # (B,) cloud RTT measured on the previous task (the mean before the first)
    large_scale_gain: np.ndarray  # (B,) path loss and shadowing of each device's link (linear)
    fading: np.ndarray  # (B,) complex fading coefficient at the block's last slot (continues the next block)
    rtt_latent: np.ndarray  # (B,) log-RTT AR(1) latent at the block's last slot
    tasks: Exogenous  # (B, CHUNK) the slots drawn ahead
    slot: int  # the pending task's slot in ``tasks`` (the same for every device)

    @property
    def num_rows(self) -> int:
        """B."""
        return len(self.step)

    def copy(self) -> State:
        """A deep copy."""
        return State(*(getattr(self, f).copy() if f != "slot" else self.slot for f in State.__slots__))

    def pending(self, field: str) -> np.ndarray:
        """(B,) the pending task's entry of the block's ``field`` (``prompt``, ``rate_bps``, ``rtt_s`` ...)."""
        return getattr(self.tasks, field)[:, self.slot]


def initial(params: Params, rng: np.random.Generator, link: WirelessLink) -> tuple[State, np.ndarray]:
    """New episodes of ``link.n_links`` devices and their distances (m): full battery, empty virtual queue,
    a stationary edge, the first block of tasks. Draws :func:`draw_starts`, then :func:`draw_exogenous`."""
    s = draw_starts(rng, params, link)
    tasks, h, z = draw_exogenous(rng, params, s.large_scale_gain, s.fading, s.rtt_latent)
    n = link.n_links
    state = State(
        step=np.zeros(n, dtype=np.int64),
        edge_work_s=s.edge_work_s,
        virtual_queue=np.zeros(n),
        battery_j=np.full(n, params.config.battery_j),
        last_rtt_s=np.full(n, params.config.wan.rtt_mean_s),
        large_scale_gain=s.large_scale_gain,
        fading=h,
        rtt_latent=z,
        tasks=tasks,
        slot=0,
    )
    return state, s.distance_m


def restart_rows(params: Params, state: State, rows: np.ndarray, starts: Starts) -> None:
    """New episodes for the devices ``rows`` (int indices) from the pending slot on, with ``starts``
    (one per row), in place: their rates and RTTs of the block's remaining slots are recomputed from
    their new links; the block's prompts and background work are kept (i.i.d.)."""
    cfg, s, k = params.config, state, state.slot
    blk = s.tasks
    sub = np.ix_(rows, np.arange(k, CHUNK))
    s.large_scale_gain[rows] = starts.large_scale_gain
    blk.rate_bps[sub], s.fading[rows] = uplink_rates(cfg.channel, starts.large_scale_gain, blk.innovation[sub],
                                                    starts.fading)
    blk.rtt_s[sub], s.rtt_latent[rows] = cloud_rtts(cfg.wan, blk.rtt_shock[sub], starts.rtt_latent)
    s.step[rows] = 0
    s.edge_work_s[rows] = starts.edge_work_s
    s.virtual_queue[rows] = 0.0
    s.battery_j[rows] = cfg.battery_j
    s.last_rtt_s[rows] = cfg.wan.rtt_mean_s


# what a step did, one row per column of Outcome.table (B per row): its info key (the first ten), then
# the reward, the cost (the budgeted metric), terminated and truncated (0 / 1)
OUTCOME_ROWS = ("latency_s", "energy_j", "quality", "cloud_cost_usd", "tier", "edge_wait_s", "uplink_rate_bps",
                "prompt_index", "virtual_queue", "battery_j", "reward", "cost", "terminated", "truncated")
_NUM_OUTCOMES = len(OUTCOME_ROWS)
_OBS_DIM = len(OBS_HIGH)
_NO_VALUES = np.zeros(0)


@njit
def _step_rows(actions, k, consts, compute_s, quality_table, cloud_usd, up_bits, confidence, token_obs, quality_in,
               prompt, rate, rtt, shift, floor, step, edge_work, virtual_queue, battery, last_rtt, out, obs):
    """Run every row's pending task (slot ``k`` of the block) on its tier ``actions[b]``, in place.

    ``quality_in`` (B,) replaces the profile's quality of the chosen tier when it is not empty
    (the live backend). ``out`` (14, B): the columns of :data:`OUTCOME_ROWS`. When the block
    has a next slot, ``obs`` (B, 8) gets each row's observation of its next task (:func:`_observe_row`).
    """
    w_q, w_t, w_e, w_c = consts[_QUALITY_W], consts[_LATENCY_W], consts[_ENERGY_W], consts[_CLOUD_W]
    edge_rtt, down, active_w, tx_w, idle_w = (consts[_EDGE_RTT], consts[_DOWN], consts[_ACTIVE_W], consts[_TX_W],
                                              consts[_IDLE_W])
    has_budget, budget, budget_energy = consts[_HAS_BUDGET] > 0.0, consts[_BUDGET], consts[_BUDGET_ENERGY] > 0.0
    horizon = consts[_HORIZON]
    for b in range(actions.shape[0]):  # checked before any row changes
        if actions[b] < DEVICE or actions[b] > CLOUD:
            raise ValueError("actions: each tier is 0 (device), 1 (edge) or 2 (cloud)")
    for b in range(actions.shape[0]):
        a, p, work = actions[b], prompt[b, k], edge_work[b]
        compute = compute_s[p, a]
        # the whole upload at the slot's rate (no coherence limit: the transfer_time_s of ergodic_bps=None)
        upload = transfer_time_one_s(up_bits[p], rate[b, k], 0.0, math.inf)
        latency, energy, usd = _tier_cost(compute, upload, cloud_usd[p], a, work, rtt[b, k], edge_rtt, down,
                                          active_w, tx_w, idle_w)
        quality = quality_in[b] if quality_in.shape[0] else quality_table[p, a]
        reward = w_q * quality - w_t * latency - w_e * energy - w_c * usd
        cost = energy if budget_energy else usd
        if has_budget:
            virtual_queue[b] = virtual_queue_step(virtual_queue[b], cost, budget)
        on_edge = a == EDGE
        edge_work[b] = lindley_interval(work + (compute if on_edge else 0.0), shift[b, k], floor[b, k])
        battery[b] -= energy
        last_rtt[b] = rtt[b, k]
        step[b] += 1
        out[0, b], out[1, b], out[2, b], out[3, b] = latency, energy, quality, usd
        out[4, b], out[5, b], out[6, b], out[7, b] = a, work if on_edge else 0.0, rate[b, k], p
        out[8, b], out[9, b], out[10, b], out[11, b] = virtual_queue[b], max(battery[b], 0.0), reward, cost
        out[12, b], out[13, b] = battery[b] <= 0.0, step[b] >= horizon
        if k + 1 < prompt.shape[1]:
            _observe_row(b, k + 1, consts, confidence[prompt[b, k + 1]], token_obs, prompt, rate, edge_work,
                         last_rtt, battery, virtual_queue, step, obs)


@njit
def _observe_row(b, k, consts, confidence, token_obs, prompt, rate, edge_work, last_rtt, battery, virtual_queue,
                 step, obs):
    """Fill ``obs[b]`` (float32) with row b's view of its pending task (slot ``k``; layout in the env
    docstring), the device model's ``confidence`` on it given."""
    budget, battery_j, episode_length = consts[_BUDGET], consts[_BATTERY], consts[_EPISODE]
    obs[b, 0] = confidence
    obs[b, 1] = token_obs[prompt[b, k]]
    obs[b, 2] = min(max(math.log10(max(rate[b, k], MIN_RATE_BPS)) / 10.0, 0.0), 2.0)
    obs[b, 3] = min(edge_work[b], 100.0)
    obs[b, 4] = min(last_rtt[b], 10.0)
    obs[b, 5] = max(battery[b], 0.0) / battery_j
    obs[b, 6] = min(virtual_queue[b] / (QUEUE_SCALE * budget), 100.0) if budget > 0.0 else 0.0
    obs[b, 7] = step[b] / episode_length


@njit
def _observe(k, consts, confidence, token_obs, confidence_in, prompt, rate, edge_work, last_rtt, battery,
             virtual_queue, step, obs):
    """Fill ``obs`` (B, 8) float32 with every row's view of its pending task (slot ``k``, :func:`_observe_row`).
    ``confidence_in`` (B,) replaces the profile's device confidence when it is not empty (live)."""
    for b in range(obs.shape[0]):
        conf = confidence_in[b] if confidence_in.shape[0] else confidence[prompt[b, k]]
        _observe_row(b, k, consts, conf, token_obs, prompt, rate, edge_work, last_rtt, battery, virtual_queue,
                     step, obs)


@dataclass(slots=True)
class Outcome:
    """What one step did in each row: the (14, B) table :func:`_step_rows` fills (rows :data:`OUTCOME_ROWS`),
    and the observation of each row's next task (the replay profile's device confidence)."""

    table: np.ndarray  # (14, B) float64
    observation: np.ndarray  # (B, 8) float32, :func:`observation` of the state after the step

    @property
    def reward(self) -> np.ndarray:
        """(B,) the step's reward (env docstring)."""
        return self.table[10]

    @property
    def cost(self) -> np.ndarray:
        """(B,) the step's budgeted metric (``budget.metric``: energy_j or cloud_cost_usd), what Z accumulates."""
        return self.table[11]

    @property
    def terminated(self) -> np.ndarray:
        """(B,) bool: the battery is empty."""
        return self.table[12] > 0.0

    @property
    def truncated(self) -> np.ndarray:
        """(B,) bool: the episode reached its horizon."""
        return self.table[13] > 0.0

    def info(self, params: Params) -> dict[str, np.ndarray]:
        """The step's ``info`` arrays (B,), in the single env's order (``virtual_queue`` only with a budget;
        ``cost`` is the :attr:`cost` row)."""
        t = self.table
        info = {key: t[i] for i, key in enumerate(OUTCOME_ROWS[:4])}
        info["tier"] = TIER_NAMES[t[4].astype(np.int64)]
        info["edge_wait_s"] = t[5]
        info["uplink_rate_bps"] = t[6]
        info["prompt_index"] = t[7].astype(np.int64)
        if params.has_budget:
            info["virtual_queue"] = t[8]
        info["battery_j"] = t[9]
        info["cost"] = t[11]
        return info


def advance(params: Params, state: State, actions: np.ndarray, rng: np.random.Generator,
            quality: np.ndarray | None = None) -> Outcome:
    """Run every row's pending task on its tier, writing ``state`` in place; what the step did.

    Args:
        params: the scenario.
        state: the rows now; afterwards the rows at their next task.
        actions: (B,) int tiers in {0, 1, 2}.
        rng: the generator of the next block of tasks, drawn when the step uses up the current one.
        quality: (B,) quality of each row's chosen tier measured by a live model run, or None for the
            replay profile's.

    Raises:
        ValueError: if ``actions`` (or ``quality``) is not of shape (B,), or a tier is out of range;
            the state is left as it was.
    """
    s, t = state, params.tables
    blk = s.tasks
    b = len(s.step)
    if actions.shape != (b,) or actions.dtype.kind not in "iu":
        raise ValueError(f"actions: expected an int array of {b} tiers, got {actions!r}")
    if quality is not None and quality.shape != (b,):
        raise ValueError(f"quality: expected shape ({b},), got {quality.shape}")
    table = np.empty((_NUM_OUTCOMES, b))
    obs = np.empty((b, _OBS_DIM), dtype=np.float32)
    _step_rows(
        actions, s.slot, params.consts, t.compute_s, t.quality, t.cloud_usd, t.up_bits, t.confidence,
        params.token_obs, _NO_VALUES if quality is None else quality,
        blk.prompt, blk.rate_bps, blk.rtt_s, blk.bg_shift_s, blk.bg_floor_s,
        s.step, s.edge_work_s, s.virtual_queue, s.battery_j, s.last_rtt_s, table, obs,
    )
    s.slot += 1
    if s.slot >= CHUNK:
        s.tasks, s.fading, s.rtt_latent = draw_exogenous(rng, params, s.large_scale_gain, s.fading, s.rtt_latent)
        s.slot = 0
        obs = observation(params, s)
    return Outcome(table, obs)


def transition(params: Params, state: State, actions: np.ndarray, rng: np.random.Generator,
               quality: np.ndarray | None = None
               ) -> tuple[State, np.ndarray, np.ndarray, dict[str, np.ndarray]]:
    """The pure step: (next state, reward (B,), cost (B,), info arrays (B,)); ``state`` is left as it was.

    :func:`advance` on a copy (arguments as there); the cost is the budgeted metric, ``info`` holds
    ``latency_s``, ``energy_j``, ``quality``, ``cloud_cost_usd``, ``tier``, ``edge_wait_s``,
    ``uplink_rate_bps``, ``prompt_index``, ``virtual_queue`` (with a budget), ``battery_j`` and ``cost``
    (the returned cost).
    """
    after = state.copy()
    out = advance(params, after, actions, rng, quality)
    return after, out.reward, out.cost, out.info(params)


def observation(params: Params, state: State, confidence: np.ndarray | None = None) -> np.ndarray:
    """(B, 8) float32 observation of every row's pending task (layout in the env docstring).

    ``confidence`` (B,): the device model's confidence measured by a live run, or None for the profile's.
    """
    s, blk = state, state.tasks
    obs = np.empty((s.num_rows, _OBS_DIM), dtype=np.float32)
    _observe(
        s.slot, params.consts, params.tables.confidence, params.token_obs,
        _NO_VALUES if confidence is None else confidence, blk.prompt, blk.rate_bps,
        s.edge_work_s, s.last_rtt_s, s.battery_j, s.virtual_queue, s.step, obs,
    )
    return obs
