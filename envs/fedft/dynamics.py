"""The FedFT envs defined once: projection of actions, round costs, the loss surrogate, over a batched state.

A :class:`State` holds B federations (rows) of K devices in arrays with a leading axis B;
:func:`initial` draws new episodes, :func:`advance` plays one round of every row in place
(:func:`transition` is the pure step on a copy), :func:`observation` /
:func:`agent_observations` are what FedFTAllocation-v0 / FedFTPower-v0 observe. The
single envs are B = 1 (:class:`edgelam.envs.fedft.core.Federation`), the vector env and the
batched game (:mod:`.vector`) are B; the round is written once, in scalar form over one
row, in :mod:`.kernels` (compiled by numba), and :func:`round_costs`,
:func:`project_simplex` and :meth:`Surrogate.mean_decrease`, which the baselines call on
(K,) arrays, run the same kernels, so a controller optimises exactly what the env charges.

Round model (Yang et al., "Energy efficient federated learning over wireless communication
networks", TWC 2021): device k computes its local update in t_cmp = cycles / f_k seconds
with energy kappa * cycles * f_k^2, then uploads ``bits`` over its FDMA share b_k at power
p_k with the Shannon rate r_k = b_k log2(1 + p_k g_k / (N0 b_k)), taking bits / r_k
seconds at energy p_k * bits / r_k. A device with b_k = 0 or p_k = 0 is not scheduled
(no computation, no energy). A scheduled device whose t_cmp + t_up exceeds the deadline is
dropped from the aggregation; it still spends its computation energy and transmits until
the deadline.

Split mode (:class:`edgelam.envs.fedft.config.SplitConfig`): the device exchanges the
cut-layer activations, labels and gradients of every local step (:meth:`ModelCosts.split_bits`)
instead of uploading adapters, and computes only its share of the model's forward FLOPs
(:meth:`ModelCosts.device_flop_share`). Computation and transfers of a step alternate
(device forward, upload, server forward/backward, download, device backward), so the
round takes compute + upload + download time; the downlink time (:func:`downlink_time_s`)
is fixed by the channel before the agent allocates the uplink. The edge server's own
computation is neglected: forward and backward of a local step of 8 sequences of the
shipped ``edge`` model are about 8 GFLOP, under 1 ms on a 10 TFLOP/s accelerator, against
seconds of transfer.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from edgelam.envs.core.channel import PathLoss, WirelessLink, make_path_loss, rate_from_snr_bps
from edgelam.envs.fedft import kernels
from edgelam.envs.fedft.data import load_partition
from edgelam.envs.fedft.privacy import RDPAccountant, sample_rates, sgm_rdp

if TYPE_CHECKING:  # config imports this module (load_model_costs)
    from edgelam.envs.fedft.config import FedFTConfig

SURROGATE_FILE = Path(__file__).resolve().parent / "surrogate.json"
MODEL_COSTS_FILE = Path(__file__).resolve().parent / "model_costs.json"
DEADLINE_RTOL = 1e-9
LABEL_BITS = 16  # a next-token id sent in split mode: uint16 (vocabularies up to 65,536)
ADAPTER_BITS = 16  # an uploaded adapter value (float16), as in lora_fedavg
SNR_REF_DB = 40.0  # observation scale of the full-band, full-power SNR in dB
DEVICE_FEATURES = 4  # observed numbers per device


def project_simplex(x: np.ndarray) -> np.ndarray:
    """Euclidean projection of ``x`` (K,) onto the probability simplex (Duchi et al., ICML 2008)."""
    x = np.asarray(x, dtype=np.float64)
    out = np.empty_like(x)
    kernels.project_simplex_row(np.ascontiguousarray(x), out, np.empty_like(x))
    return out


def upload_rate_bps(bandwidth_hz: np.ndarray, power_w: np.ndarray, gains: np.ndarray, noise_w_per_hz: float):
    """Shannon rate b log2(1 + p g / (N0 b)) in bit/s, (K,); 0 where b = 0."""
    b = np.asarray(bandwidth_hz, dtype=np.float64)
    snr = np.divide(np.asarray(power_w) * gains, noise_w_per_hz * b, out=np.zeros_like(b), where=b > 0)
    return rate_from_snr_bps(b, snr)


@dataclass(frozen=True)
class RoundCosts:
    """Outcome of one round's allocation (arrays over devices, (K,); SI units)."""

    scheduled: np.ndarray  # bool: given band and power
    participants: np.ndarray  # bool: scheduled and done before the deadline
    compute_s: np.ndarray
    upload_s: np.ndarray  # inf where the rate is 0
    compute_energy_j: np.ndarray
    upload_energy_j: np.ndarray
    latency_s: float  # until the last scheduled device finished (the deadline if one was dropped)

    @property
    def energy_j(self) -> np.ndarray:
        """(K,) total device energy in J."""
        return self.compute_energy_j + self.upload_energy_j


def round_costs(
    bits: float,
    bandwidth_hz: np.ndarray,
    power_w: np.ndarray,
    gains: np.ndarray,
    noise_w_per_hz: float,
    cycles: float,
    cpu_freq_hz: np.ndarray,
    kappa: float,
    deadline_s: float,
    downlink_s: np.ndarray | float = 0.0,
) -> RoundCosts:
    """Times, energies and participants of one round (see the module docstring).

    ``downlink_s`` (scalar or (K,)) is the time a device spends receiving in the round (split
    mode's gradients); it counts toward the deadline like computation, at no device energy.
    """
    k = np.shape(bandwidth_hz)[-1]
    rows = [np.ascontiguousarray(np.broadcast_to(np.asarray(x, dtype=np.float64), (k,))).reshape(1, k)
            for x in (bandwidth_hz, power_w, gains, cpu_freq_hz, downlink_s)]
    c = costs_rows(bits, *rows[:3], noise_w_per_hz, cycles, rows[3], kappa, deadline_s, rows[4])
    return c.row(0)


def downlink_time_s(
    bits: float, gains: np.ndarray, bandwidth_hz: float, bs_psd_w_per_hz: float, noise_w_per_hz: float
) -> np.ndarray:
    """(K,) (or (B, K)) seconds for each of K devices to receive ``bits`` on an equal share B/K of the downlink band.

    The base station transmits at the power spectral density ``bs_psd_w_per_hz`` on every
    share, so the SNR psd g / N0 does not depend on K; the link gain is the uplink's
    (reciprocal block-fading channel). 0 where ``bits`` is 0, inf where the rate is 0.
    """
    g = np.asarray(gains, dtype=np.float64)
    if bits == 0:
        return np.zeros_like(g)
    share = np.full_like(g, bandwidth_hz / g.shape[-1])
    rate = upload_rate_bps(share, bs_psd_w_per_hz * share, g, noise_w_per_hz)
    return np.divide(bits, rate, out=np.full_like(rate, np.inf), where=rate > 0)


@dataclass(frozen=True)
class ModelCosts:
    """Shapes and forward FLOPs of one executed model, recorded from the real model (:mod:`.profile`).

    FLOPs are :meth:`edgelam.envs.lam.LM.layer_flops` / ``head_flops`` of one training
    sequence of ``seq_len`` tokens; the token embedding is a table lookup (no matmul FLOPs).
    """

    num_layers: int
    hidden_size: int
    seq_len: int
    layer_flops: np.ndarray  # (L,) forward matmul FLOPs of each decoder layer for one sequence
    head_flops: float  # forward matmul FLOPs of the LM head for one sequence
    lora_values_per_rank: np.ndarray  # (L,) adapter values of each layer per unit of rank (sum of in + out)

    def check_device_layers(self, device_layers: int) -> None:
        """ValueError unless the split leaves at least one decoder layer on the server."""
        if not 0 <= device_layers < self.num_layers:
            raise ValueError(f"split.device_layers: {device_layers} must be in [0, {self.num_layers - 1}] "
                             f"(the model has {self.num_layers} decoder layers; the server keeps at least one)")

    def device_flop_share(self, device_layers: int) -> float:
        """Share of one training sequence's forward FLOPs run on the device (its layers over all layers + head)."""
        self.check_device_layers(device_layers)
        return float(self.layer_flops[:device_layers].sum() / (self.layer_flops.sum() + self.head_flops))

    def split_bits(
        self, device_layers: int, batch_size: int, local_steps: int, wire_bits: int, rank: int
    ) -> tuple[float, float]:
        """(uplink, downlink) bits of one device in one split round.

        Per local step the device uploads the activations ``batch_size x seq_len x
        hidden_size`` at ``wire_bits`` and the labels ``batch_size x (seq_len - 1)`` at
        :data:`LABEL_BITS`, and, if ``device_layers > 0``, downloads the gradient of the same
        shape as the activations; at the end of the round it uploads its layers' adapters
        (float16) for their FedAvg. With ``device_layers == 0`` nothing on the device trains, so
        no gradient is sent back.
        """
        self.check_device_layers(device_layers)
        activations = batch_size * self.seq_len * self.hidden_size * wire_bits
        labels = batch_size * (self.seq_len - 1) * LABEL_BITS
        adapters = float(self.lora_values_per_rank[:device_layers].sum()) * rank * ADAPTER_BITS
        uplink = local_steps * (activations + labels) + adapters
        downlink = local_steps * activations if device_layers > 0 else 0
        return float(uplink), float(downlink)


def load_model_costs(model: str, path: str | Path | None = None) -> ModelCosts:
    """The :class:`ModelCosts` of a shipped model from ``model_costs.json`` (or ``path``)."""
    path = MODEL_COSTS_FILE if path is None else Path(path)
    data = json.loads(path.read_text())
    if model not in data["models"]:
        raise ValueError(f"model: {model!r} has no recorded costs in {path} (have {sorted(data['models'])}); "
                         "record them with `python -m edgelam.envs.fedft.profile --model-costs`")
    m = data["models"][model]
    return ModelCosts(
        num_layers=int(m["num_layers"]),
        hidden_size=int(m["hidden_size"]),
        seq_len=int(data["seq_len"]),
        layer_flops=np.asarray(m["layer_flops"], dtype=np.float64),
        head_flops=float(m["head_flops"]),
        lora_values_per_rank=np.asarray(m["lora_values_per_rank"], dtype=np.float64),
    )


def topic_weights(participants: np.ndarray, data_sizes: np.ndarray, topic_counts: np.ndarray) -> np.ndarray:
    """(G,) share of each topic in the data behind the FedAvg aggregate (zeros without participants).

    Args:
        participants: (K,) bool.
        data_sizes: (K,) local sequences n_k (the aggregation weights).
        topic_counts: (K, G) local sequences of each topic.
    """
    counts = topic_counts[participants].sum(axis=0).astype(np.float64)
    total = float(np.sum(np.asarray(data_sizes)[participants]))
    return counts / total if total > 0 else counts


@dataclass(frozen=True)
class Surrogate:
    """Fitted surrogate of one FedAvg round's decrease of each topic's validation loss.

    With m participants whose pooled data has topic shares w (G,), the decrease of topic g is

        d_g = h_g * (gain_own * w_g + gain_shared) - noise_cost / m + sigma / sqrt(m) * eps_g,

    with h_g = headroom - (L_g(0) - L_g) what is left of the decrease the adapters can reach,
    eps ~ N(0, 1), and exactly 0 when m = 0 (the global adapters do not change). ``gain_own``
    is what a topic gains from its own data in the aggregate (non-IID), ``gain_shared`` what
    every topic gains from any data, ``noise_cost`` the harm of a noisy aggregate of few
    updates (so the loss settles higher with fewer participants). Fitted by least squares to
    live runs (:mod:`.profile`); ``error`` holds its measured error against live.

    ``decrease_scale`` multiplies the whole expected decrease (1 without privacy);
    :meth:`private` sets it for DP-SGD from the fitted ``privacy`` correction (see there).
    """

    gain_own: float
    gain_shared: float
    noise_cost: float
    headroom: float
    sigma: float
    initial_loss: np.ndarray  # (8,) validation loss of every shipped topic before fine-tuning
    adapter_bits: int
    settings: dict
    error: dict
    privacy: dict | None = None  # the DP-SGD correction fitted by :func:`.profile.fit_privacy`, if any
    decrease_scale: float = 1.0

    def private(self, noise_multiplier: float, clip_norm: float) -> Surrogate:
        """This surrogate under DP-SGD with ``noise_multiplier`` sigma and ``clip_norm`` C.

        The expected decrease is slowed by rho(sigma) = 1 / (1 + slowdown * sigma^exponent)
        and the round noise has the std fitted to DP runs; both fitted to live DP-SGD runs of
        one clip norm (:func:`.profile.fit_privacy`, measured error in ``privacy["error"]``).

        Raises:
            ValueError: the surrogate has no DP correction, or one fitted for another clip norm.
        """
        p = self.privacy
        refit = ("fit one with `python -m edgelam.envs.fedft.profile --scenario private --privacy` and set "
                 "profile_dir, or use backend='live'")
        if not p:
            raise ValueError(f"privacy: the replay surrogate has no DP-SGD correction; {refit}")
        if p["clip_norm"] != clip_norm:
            raise ValueError(f"privacy.clip_norm: {clip_norm} differs from the clip norm {p['clip_norm']} the "
                             f"surrogate's DP correction was fitted with; {refit}")
        rho = 1.0 / (1.0 + p["slowdown"] * noise_multiplier ** p["exponent"])
        return dataclasses.replace(self, decrease_scale=rho, sigma=float(p["sigma"]))

    def mean_decrease(self, losses: np.ndarray, weights: np.ndarray, num_participants: int | np.ndarray):
        """Expected decrease (G,) (or (..., G) for batched weights / counts)."""
        m = np.asarray(num_participants, dtype=np.float64)
        losses = np.asarray(losses, dtype=np.float64)
        loss0 = self.initial_loss[: losses.shape[-1]]
        shape = np.broadcast_shapes(losses.shape, np.shape(weights), (*m.shape, 1), loss0.shape)
        flat = [np.ascontiguousarray(np.broadcast_to(x, shape), dtype=np.float64).ravel()
                for x in (losses, loss0, weights, m[..., None])]
        out = np.empty(flat[0].size)
        kernels.decrease_flat(*flat, self.gain_own, self.gain_shared, self.noise_cost, self.headroom,
                              self.decrease_scale, out)
        return out.reshape(shape)

    def step(self, losses: np.ndarray, weights: np.ndarray, num_participants: int, rng: np.random.Generator):
        """New per-topic losses (G,) after one round (draws G normals from ``rng`` when m > 0)."""
        if num_participants == 0:
            return losses.copy()
        noise = self.sigma / np.sqrt(num_participants) * rng.standard_normal(losses.shape)
        return losses - self.mean_decrease(losses, weights, num_participants) - noise


def _privacy_block(block: dict | None) -> dict | None:
    """The DP-SGD correction of a ``surrogate.json`` with its numeric fields checked (KeyError / ValueError)."""
    if not block:
        return None
    return {**block, **{k: float(block[k]) for k in ("clip_norm", "slowdown", "exponent", "sigma")}}


def load_surrogate(profile_dir: str | Path | None = None) -> Surrogate:
    """Read ``surrogate.json`` (the shipped one, or the one in ``profile_dir``).

    Raises:
        ValueError: the file is missing, not JSON, or lacks a field (the message names the
            file and how to fit it again).
    """
    path = SURROGATE_FILE if profile_dir is None else Path(profile_dir) / "surrogate.json"
    refit = "fit it with `python -m edgelam.envs.fedft.profile --out DIR`"
    if not path.exists():
        raise ValueError(f"profile_dir: {path} is missing; {refit}")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        p = data["params"]
        return Surrogate(
            gain_own=float(p["gain_own"]),
            gain_shared=float(p["gain_shared"]),
            noise_cost=float(p["noise_cost"]),
            headroom=float(p["headroom"]),
            sigma=float(p["sigma"]),
            initial_loss=np.asarray(data["initial_loss"], dtype=np.float64),
            adapter_bits=int(data["adapter_bits"]),
            settings=dict(data["settings"]),
            error=dict(data.get("error", {})),
            privacy=_privacy_block(data.get("privacy")),
        )
    except (OSError, ValueError, KeyError, TypeError) as exc:  # ValueError: bad UTF-8 or JSON, a non-number
        raise ValueError(f"profile_dir: {path} is corrupt ({type(exc).__name__}: {exc}); {refit}") from None


# -- the env defined once, over a batched state ---------------------------------------------------


@dataclass(frozen=True)
class Costs:
    """Outcome of one round's allocation in every row: arrays (B, K) per device, (B,) per row (SI units)."""

    bandwidth_hz: np.ndarray  # (B, K) the allocation priced
    power_w: np.ndarray  # (B, K)
    scheduled: np.ndarray  # (B, K) bool: given band and power
    participants: np.ndarray  # (B, K) bool: scheduled and done before the deadline
    compute_s: np.ndarray  # (B, K)
    upload_s: np.ndarray  # (B, K) inf where the rate is 0
    compute_energy_j: np.ndarray  # (B, K)
    upload_energy_j: np.ndarray  # (B, K)
    energy_j: np.ndarray  # (B, K) their sum
    device_latency_s: np.ndarray  # (B, K) min(compute + upload, deadline) if scheduled, else 0 (no download)
    sums: np.ndarray  # (B, 4) total energy, computation energy, upload energy (J), latency (s)
    counts: np.ndarray  # (B, 2) int: participants, scheduled devices dropped at the deadline

    @property
    def num_participants(self) -> np.ndarray:
        """(B,) devices whose update arrived."""
        return self.counts[:, 0]

    @classmethod
    def empty(cls, num_rows: int, num_devices: int, bandwidth_hz: np.ndarray | None = None,
              power_w: np.ndarray | None = None) -> Costs:
        """Unwritten arrays for B = ``num_rows`` rows of K = ``num_devices`` (with these allocation arrays if
        given)."""
        shape = (num_rows, num_devices)
        return cls(
            np.empty(shape) if bandwidth_hz is None else bandwidth_hz,
            np.empty(shape) if power_w is None else power_w,
            np.empty(shape, dtype=bool), np.empty(shape, dtype=bool),
            *(np.empty(shape) for _ in range(6)),
            np.empty((num_rows, 4)), np.empty((num_rows, 2), dtype=np.int64),
        )

    def row(self, b: int) -> RoundCosts:
        """Row ``b`` as a :class:`RoundCosts` (views)."""
        return RoundCosts(self.scheduled[b], self.participants[b], self.compute_s[b], self.upload_s[b],
                          self.compute_energy_j[b], self.upload_energy_j[b], float(self.sums[b, 3]))


def costs_rows(
    bits: float,
    bandwidth_hz: np.ndarray,
    power_w: np.ndarray,
    gains: np.ndarray,
    noise_w_per_hz: float,
    cycles: float,
    cpu_freq_hz: np.ndarray,
    kappa: float,
    deadline_s: float,
    downlink_s: np.ndarray,
    out: Costs | None = None,
    snr: np.ndarray | None = None,
) -> Costs:
    """:func:`round_costs` of B rows at once: every argument array (B, K) float64, C-contiguous.

    The uplink rate is :func:`edgelam.envs.core.channel.rate_from_snr_bps` of the SNR p g / (N0 b)
    (0 where b = 0); the rest is :func:`.kernels.round_cost_rows`. With ``out`` (a
    :class:`Workspace`'s, whose ``bandwidth_hz`` and ``power_w`` are the arrays passed) the
    results are written into its arrays and ``out`` is returned. ``snr`` is the SNR of this
    allocation on ``gains`` when the caller has it (:func:`allocation` with a workspace).
    """
    if out is None:
        out = Costs.empty(*bandwidth_hz.shape, bandwidth_hz, power_w)
    if snr is None:
        snr = out.upload_s  # scratch until the kernel writes the upload times
        kernels.snr_rows(bandwidth_hz, power_w, gains, noise_w_per_hz, snr)
    rate = rate_from_snr_bps(bandwidth_hz, snr)
    kernels.round_cost_rows(bits, bandwidth_hz, power_w, rate, cycles, cpu_freq_hz, kappa, deadline_s,
                            deadline_s * (1.0 + DEADLINE_RTOL), downlink_s, out.scheduled, out.participants,
                            out.compute_s, out.upload_s, out.compute_energy_j, out.upload_energy_j, out.energy_j,
                            out.device_latency_s, out.sums, out.counts)
    return out


@dataclass(frozen=True)
class Params:
    """What one scenario fixes (the ``config`` and the numbers derived from it), shared by every row."""

    config: FedFTConfig
    surrogate: Surrogate  # with the DP-SGD correction applied in a private replay scenario
    num_devices: int  # K
    num_topics: int  # G
    bits: float  # uplink bits of a device in a round (adapters, or split mode's traffic)
    downlink_bits: float  # downlink bits of a device in a round (split mode's gradients; 0 otherwise)
    cycles: float  # CPU cycles of a device's local computation in a round
    initial_topic_loss: np.ndarray  # (G,) validation loss of each topic before fine-tuning
    initial_loss: float  # their mean
    path_loss: PathLoss
    rho: float  # lag-one fading correlation J0(2 pi f_d T) over a round
    innovation: float  # sqrt(1 - rho^2)
    full_band_noise_w: float  # N0 F B: noise over the whole uplink band, W
    downlink_noise_w_per_hz: float  # N0 times the UE noise figure, W/Hz
    model_costs: ModelCosts | None  # split mode's recorded shapes and FLOPs
    pool_size: int  # training sequences of each topic in the shipped partition (:mod:`.data`)
    # the config's numbers the round reads, as plain fields (the hot path reads them every round)
    bandwidth_hz: float  # uplink band B, Hz
    p_max_w: float  # device power limit, W
    noise_w_per_hz: float  # N0 F, W/Hz
    deadline_s: float
    deadline_tol_s: float  # the deadline with the relative tolerance DEADLINE_RTOL of float rounding
    kappa: float
    energy_budget_j: float
    loss_scale: float
    energy_weight_per_j: float
    fading: bool
    local_steps: int
    episode_length: int

    @classmethod
    def build(cls, cfg: FedFTConfig, backend: str = "replay") -> Params:
        """Params of a validated scenario; the surrogate is checked against its LoRA settings.

        Raises:
            ValueError: the surrogate is missing or corrupt, fitted with other LoRA settings, or
                lacks the DP-SGD correction a private replay scenario needs.
        """
        surrogate = load_surrogate(cfg.profile_dir)
        s = surrogate.settings
        mine = {"model": cfg.model, "rank": cfg.lora.rank, "alpha": cfg.lora.alpha, "lr": cfg.lora.lr,
                "local_steps": cfg.lora.local_steps, "batch_size": cfg.lora.batch_size}
        diff = {k: (v, s.get(k)) for k, v in mine.items() if s.get(k) != v}
        if diff:
            raise ValueError(f"lora/model: the surrogate was fitted with other settings {diff} (scenario, surrogate); "
                             "fit one with `python -m edgelam.envs.fedft.profile --out DIR` and set profile_dir")
        dp = cfg.privacy
        if dp.enabled and backend == "replay":
            surrogate = surrogate.private(dp.noise_multiplier, dp.clip_norm)
        lo = cfg.lora
        cycles = cfg.cycles_per_sample * lo.local_steps * lo.batch_size
        bits, downlink_bits, model_costs = float(surrogate.adapter_bits), 0.0, None
        if cfg.mode == "split":
            sp = cfg.split
            model_costs = load_model_costs(cfg.model)
            cycles *= model_costs.device_flop_share(sp.device_layers)
            bits, downlink_bits = model_costs.split_bits(sp.device_layers, lo.batch_size, lo.local_steps,
                                                         sp.wire_bits, lo.rank)
        ch = cfg.channel
        rho = np.asarray(ch.rho, dtype=np.float64)
        initial = surrogate.initial_loss[: cfg.num_topics].copy()
        return cls(
            config=cfg,
            surrogate=surrogate,
            num_devices=cfg.num_devices,
            num_topics=cfg.num_topics,
            bits=bits,
            downlink_bits=downlink_bits,
            cycles=cycles,
            initial_topic_loss=initial,
            initial_loss=float(initial.mean()),
            path_loss=make_path_loss(ch.model, ch.carrier_hz, ch.h_bs_m, ch.h_ut_m),
            rho=float(rho),
            innovation=float(np.sqrt(1.0 - rho**2)),
            full_band_noise_w=cfg.noise_w_per_hz * cfg.bandwidth_hz,
            downlink_noise_w_per_hz=ch.noise_psd_w_per_hz * 10.0 ** (cfg.split.ue_noise_figure_db / 10.0),
            model_costs=model_costs,
            pool_size=int(load_partition().train.shape[1]),
            bandwidth_hz=cfg.bandwidth_hz,
            p_max_w=cfg.p_max_w,
            noise_w_per_hz=cfg.noise_w_per_hz,
            deadline_s=cfg.deadline_s,
            deadline_tol_s=cfg.deadline_s * (1.0 + DEADLINE_RTOL),
            kappa=cfg.kappa,
            energy_budget_j=cfg.energy_budget_j,
            loss_scale=cfg.reward.loss_scale,
            energy_weight_per_j=cfg.reward.energy_weight_per_j,
            fading=cfg.channel.fading,
            local_steps=cfg.lora.local_steps,
            episode_length=cfg.episode_length,
        )

    @property
    def private(self) -> bool:
        """Whether the devices run DP-SGD (the state then carries their privacy accountants)."""
        return self.config.privacy.enabled

    @functools.cached_property
    def surrogate_coeffs(self) -> np.ndarray:
        """(6,) the surrogate's gain_own, gain_shared, noise_cost, headroom, sigma, decrease_scale (the kernels')."""
        s = self.surrogate
        return np.array([s.gain_own, s.gain_shared, s.noise_cost, s.headroom, s.sigma, s.decrease_scale])


@dataclass(slots=True)
class State:
    """B rows (federations) at the start of a round: devices, channel, global model, energy queue.

    The arrays are the simulator's memory: :func:`advance` writes them in place (the env
    shells own their state); :func:`transition` is the pure step, on a copy.
    """

    step: np.ndarray  # (B,) int, rounds played in the episode
    queue: np.ndarray  # (B,) energy virtual queue Z, J
    loss: np.ndarray  # (B,) global validation loss, the mean over topics, nats/token
    topic_loss: np.ndarray  # (B, G) validation loss of each topic, nats/token
    distances_m: np.ndarray  # (B, K) 2-D distance of each device to the base station, m (drawn)
    large_scale_gain: np.ndarray  # (B, K) path loss and shadowing, linear (fixed per episode)
    fading_re: np.ndarray  # (B, K) real part of the Gauss-Markov fading coefficient h
    fading_im: np.ndarray  # (B, K) imaginary part of h
    gains: np.ndarray  # (B, K) link power gain of this round, linear
    full_band_snr: np.ndarray  # (B, K) SNR of each device alone on the band at p_max, linear, at least 1e-30
    downlink_s: np.ndarray  # (B, K) time to receive this round's downlink (split mode; zeros otherwise), s
    cpu_freq_hz: np.ndarray  # (B, K) CPU frequency of each device, Hz
    data_sizes: np.ndarray  # (B, K) int, local sequences of each device
    topic_counts: np.ndarray  # (B, K, G) int, local sequences of each topic
    last_participants: np.ndarray  # (B, K) bool, whose update arrived in the previous round
    step_rdp: np.ndarray  # (B, K, A) RDP of one DP-SGD step of each device at the accountant's orders (A = 0 off)
    rdp: np.ndarray  # (B, K, A) RDP accumulated so far
    dp_steps: np.ndarray  # (B, K) int, DP-SGD steps each device ran so far

    @property
    def num_rows(self) -> int:
        """B."""
        return len(self.step)

    def copy(self) -> State:
        """A deep copy."""
        return State(*(getattr(self, f).copy() for f in State.__slots__))

    def set_rows(self, rows: np.ndarray, other: State) -> None:
        """Overwrite rows ``rows`` (int indices) with the rows of ``other`` (one per row), in place."""
        for f in State.__slots__:
            getattr(self, f)[rows] = getattr(other, f)

    def accountant(self, params: Params) -> RDPAccountant:
        """The rows' privacy accountants as one :class:`~.privacy.RDPAccountant` over (B, K) devices (views)."""
        return RDPAccountant.over(self.step_rdp, self.rdp, self.dp_steps, params.config.privacy.delta)

    def epsilon(self, params: Params) -> np.ndarray:
        """(B, K) privacy spent so far by each device, epsilon at ``privacy.delta`` (zeros without privacy)."""
        if not params.private:
            return np.zeros(self.gains.shape)
        return self.accountant(params).epsilon()


@dataclass(frozen=True)
class Episode:
    """What :func:`initial` draws besides the state: one learning seed per row."""

    learning_seeds: np.ndarray  # (B,) int, one per row (:func:`learning_generator` seeds with the first)

    def pool_draws(self, params: Params, state: State, row: int = 0) -> np.ndarray:
        """The pool index of every local sequence of ``row``'s devices, device-major then topic-major
        (``state.topic_counts[row]`` of them), for the live backend, which trains on those sequences.

        They come from the row's own generator, seeded by its learning seed with spawn key 1 (so
        not from the env's generator, and not the learning generator's stream): replay, which
        never reads them, does not draw them.
        """
        seed = np.random.SeedSequence(int(self.learning_seeds[row]), spawn_key=(1,))
        return np.random.default_rng(seed).integers(params.pool_size, size=int(state.topic_counts[row].sum()))


_NO_SURROGATE = np.empty(0)  # settle_rows' surrogate coefficients of the live backend (its losses are given)
_NO_NOISE = [np.empty((0, g)) for g in range(9)]  # a round's noise with no participants, per number of topics


def _downlink(params: Params, gains: np.ndarray) -> np.ndarray:
    sp = params.config.split
    return downlink_time_s(params.downlink_bits, gains, sp.downlink_bandwidth_hz, sp.bs_tx_psd_w_per_hz,
                           params.downlink_noise_w_per_hz)


def initial(params: Params, rng: np.random.Generator, num_rows: int) -> tuple[State, Episode]:
    """``num_rows`` new episodes: devices (distances, channel, CPU, local data) and the first round's fading.

    Random draws, each a block over the rows (B, K): distances (uniform), LOS states (uniform,
    only for ``los: prob``), shadowing (normal, when enabled), fading (normals (2, B K)), CPU
    frequencies (uniform), data sizes (integers), topic mixtures (Dirichlet), topic counts
    (multinomial), one learning seed per row (integers); with one row these are the single
    env's draws. The live backend's local sequences come from each row's seed
    (:meth:`Episode.pool_draws`), not from ``rng``.
    """
    cfg, k, g, n = params.config, params.num_devices, params.num_topics, num_rows
    ch, pl = cfg.channel, params.path_loss
    distances = rng.uniform(*cfg.distance_m, size=(n, k))
    d = np.maximum(distances, WirelessLink.MIN_DISTANCE_M)
    if ch.los == "prob":
        los = rng.random((n, k)) < pl.los_probability(d)
    else:
        los = np.full((n, k), ch.los == "los")
    shadowing = pl.shadowing_std_db(los) * rng.standard_normal((n, k)) if ch.shadowing else np.zeros((n, k))
    large = np.power(10.0, -(np.asarray(pl.path_loss_db(d, los)) + shadowing) / 10.0)
    z = rng.standard_normal((2, n * k)).reshape(2, n, k)
    fading_re, fading_im = z[0] * math.sqrt(0.5), z[1] * math.sqrt(0.5)
    gains = large * (fading_re**2 + fading_im**2 if ch.fading else 1.0)
    cpu = rng.uniform(*cfg.cpu_freq_hz, size=(n, k))
    lo, hi = cfg.samples_per_device
    data_sizes = rng.integers(lo, hi + 1, size=(n, k))
    mixtures = rng.dirichlet(np.full(g, cfg.dirichlet_alpha), size=(n, k))
    topic_counts = rng.multinomial(data_sizes, mixtures)
    seeds = rng.integers(2**63, size=n)
    if params.private:
        dp = cfg.privacy
        q = sample_rates(cfg.lora.batch_size, data_sizes).ravel()
        unique, index = np.unique(q, return_inverse=True)
        step_rdp = sgm_rdp(unique, dp.noise_multiplier)[index.ravel()].reshape(n, k, -1)
    else:
        step_rdp = np.zeros((n, k, 0))
    snr = params.p_max_w * gains / params.full_band_noise_w
    topic_loss = np.tile(params.initial_topic_loss, (n, 1))
    state = State(
        step=np.zeros(n, dtype=np.int64),
        queue=np.zeros(n),
        loss=np.full(n, params.initial_loss),
        topic_loss=topic_loss,
        distances_m=distances,
        large_scale_gain=large,
        fading_re=np.ascontiguousarray(fading_re),
        fading_im=np.ascontiguousarray(fading_im),
        gains=gains,
        full_band_snr=np.maximum(snr, 1e-30),
        downlink_s=_downlink(params, gains),
        cpu_freq_hz=cpu,
        data_sizes=data_sizes,
        topic_counts=topic_counts,
        last_participants=np.zeros((n, k), dtype=bool),
        step_rdp=step_rdp,
        rdp=np.zeros_like(step_rdp),
        dp_steps=np.zeros((n, k), dtype=np.int64),
    )
    return state, Episode(seeds)


def learning_generator(seeds: np.ndarray) -> np.random.Generator:
    """The learning generator (replay surrogate noise, live local batches) after rows began episodes with these
    :attr:`Episode.learning_seeds`: seeded by the first row's (with one row, the single env's)."""
    return np.random.default_rng(seeds[0])


def draw_fading(rng: np.random.Generator, params: Params, num_rows: int) -> np.ndarray:
    """(2, B, K) standard normals of the next round's fading innovation (real, imaginary); the single env's draw."""
    return rng.standard_normal((2, num_rows * params.num_devices)).reshape(2, num_rows, params.num_devices)


def draw_learning_noise(rng: np.random.Generator, params: Params, num_participants: np.ndarray) -> np.ndarray:
    """(R, G) standard normals of the surrogate's round noise, one row for each of the R rows with participants
    (in row order, one block; the others' losses do not change)."""
    b, g = num_participants.shape[0], params.num_topics
    if b == 1:
        return rng.standard_normal((1, g)) if num_participants[0] > 0 else _NO_NOISE[g]
    return rng.standard_normal((int(np.count_nonzero(num_participants)), g))


@dataclass(frozen=True)
class Outcome:
    """What one round did in every row: its costs, and per row (B, 3) the previous loss, the new loss and
    the reward loss_scale (previous - new) - energy_weight energy_j."""

    costs: Costs
    table: np.ndarray  # (B, 3)

    @property
    def reward(self) -> np.ndarray:
        """(B,) FedFTAllocation-v0's reward of the round."""
        return self.table[:, 2]


@dataclass(frozen=True)
class Workspace:
    """The arrays one round of B rows writes (allocated once by a shell; :func:`advance` reuses them).

    What a step hands out of them (``info`` arrays) must be copied: the next round overwrites them.
    """

    costs: Costs  # the allocation (bandwidth_hz, power_w, filled by the caller) and its costs
    snr: np.ndarray  # (B, K) uplink SNR of the allocation (written with it by :func:`allocation`)
    table: np.ndarray  # (B, 3) previous loss, new loss, reward
    new_topic_loss: np.ndarray  # (B, G)
    weights: np.ndarray  # (B, G) topic shares of the participants' data
    scratch: np.ndarray  # (2, K)
    outcome: Outcome
    observation: np.ndarray  # (B, 4K + 3) float32, FedFTAllocation-v0's observation is built here
    agent_observation: np.ndarray  # (B, 7K) float32, FedFTPower-v0's (B, K, 7)

    @classmethod
    def of(cls, params: Params, num_rows: int) -> Workspace:
        """A workspace for ``num_rows`` rows of the scenario's K devices and G topics."""
        return cls.sized(num_rows, params.num_devices, params.num_topics)

    def __reduce__(self):
        """Copies (pickle, deepcopy) get a fresh workspace: it holds no state between rounds."""
        b, g = self.new_topic_loss.shape
        return Workspace.sized, (b, self.snr.shape[1], g)

    @classmethod
    def sized(cls, num_rows: int, num_devices: int, num_topics: int) -> Workspace:
        """A workspace for B = ``num_rows`` rows of K = ``num_devices`` devices and G = ``num_topics`` topics."""
        b, k, f = num_rows, num_devices, DEVICE_FEATURES
        costs = Costs.empty(b, k)
        table = np.empty((b, 3))
        shape = (b, num_topics)
        return cls(costs, np.empty((b, k)), table, np.empty(shape), np.empty(shape), np.empty((2, k)),
                   Outcome(costs, table), np.zeros((b, f * k + 3), dtype=np.float32),
                   np.zeros((b, (f + 3) * k), dtype=np.float32))


def _allocation_arrays(params: Params, num_rows: int, work: Workspace | None) -> tuple[np.ndarray, ...]:
    if work is None:
        k = params.num_devices
        return np.empty((num_rows, k)), np.empty((num_rows, k)), np.empty((2, k)), np.empty((num_rows, k))
    return work.costs.bandwidth_hz, work.costs.power_w, work.scratch, work.snr


def allocation(params: Params, state: State, actions: np.ndarray, work: Workspace | None = None
               ) -> tuple[np.ndarray, np.ndarray]:
    """FedFTAllocation-v0's (B, 2K) float64 actions in [-1, 1] -> (bandwidth_hz, power_w), (B, K) each.

    With ``work`` they are its arrays, and its ``snr`` the allocation's on the rows' gains (what
    :func:`advance` with ``work`` then prices).
    """
    bandwidth, power, scratch, snr = _allocation_arrays(params, actions.shape[0], work)
    kernels.allocate_rows(actions, params.bandwidth_hz, params.p_max_w, scratch, bandwidth, power, state.gains,
                          params.noise_w_per_hz, snr)
    return bandwidth, power


def requested_allocation(params: Params, state: State, actions: np.ndarray, work: Workspace | None = None
                         ) -> tuple[np.ndarray, np.ndarray]:
    """FedFTPower-v0's (B, K, 2) float64 actions [power, bandwidth request] -> (bandwidth_hz, power_w), (B, K)
    (with ``work`` as :func:`allocation`)."""
    bandwidth, power, scratch, snr = _allocation_arrays(params, actions.shape[0], work)
    kernels.request_rows(actions, params.bandwidth_hz, params.p_max_w, scratch[0], bandwidth, power, state.gains,
                         params.noise_w_per_hz, snr)
    return bandwidth, power


def state_costs(params: Params, state: State, bandwidth_hz: np.ndarray, power_w: np.ndarray,
                out: Costs | None = None, snr: np.ndarray | None = None) -> Costs:
    """:func:`costs_rows` of an allocation (B, K) in the rows' current round (no state change)."""
    return costs_rows(params.bits, bandwidth_hz, power_w, state.gains, params.noise_w_per_hz, params.cycles,
                      state.cpu_freq_hz, params.kappa, params.deadline_s, state.downlink_s, out, snr)


def advance(
    params: Params,
    state: State,
    bandwidth_hz: np.ndarray,
    power_w: np.ndarray,
    fading_normals: np.ndarray,
    learning_noise: Callable[[np.ndarray], np.ndarray] | None,
    work: Workspace | None = None,
    live_topic_loss: Callable[[State, Costs], np.ndarray] | None = None,
) -> Outcome:
    """Play one round of every row with this allocation (B, K), writing ``state`` in place.

    The replay surrogate moves the topic losses with ``learning_noise(num_participants)``, the
    round's (R, G) standard normals of the R rows with participants given the (B,) participant
    counts (:func:`draw_learning_noise` from the learning generator); the live backend passes
    ``live_topic_loss(state, costs)``, the trained model's (B, G) losses, instead. Devices that
    were scheduled are charged their DP-SGD steps (privacy); the energy queue, the round count
    and the participation advance; then the fading takes the next round's ``fading_normals``
    (2, B, K) (:func:`draw_fading`). With ``work`` the outcome is written into its arrays
    (``bandwidth_hz`` and ``power_w`` may be its own, as :func:`allocation` fills them with
    their SNR).
    """
    p = params
    if work is None:
        work = Workspace.of(p, state.num_rows)
    c = work.costs
    snr = work.snr
    if bandwidth_hz is not c.bandwidth_hz or power_w is not c.power_w:
        c.bandwidth_hz[:] = bandwidth_hz
        c.power_w[:] = power_w
        kernels.snr_rows(c.bandwidth_hz, c.power_w, state.gains, p.noise_w_per_hz, snr)
    kernels.round_cost_rows(p.bits, c.bandwidth_hz, c.power_w, rate_from_snr_bps(c.bandwidth_hz, snr), p.cycles,
                            state.cpu_freq_hz, p.kappa, p.deadline_s, p.deadline_tol_s, state.downlink_s, c.scheduled,
                            c.participants, c.compute_s, c.upload_s, c.compute_energy_j, c.upload_energy_j,
                            c.energy_j, c.device_latency_s, c.sums, c.counts)
    if live_topic_loss is None:
        noise, surrogate = learning_noise(c.counts[:, 0]), p.surrogate_coeffs
        work.new_topic_loss[:] = state.topic_loss
    else:
        noise, surrogate = work.weights, _NO_SURROGATE
        work.new_topic_loss[:] = live_topic_loss(state, c)
    if p.private:  # a scheduled device trained and transmitted, even if it missed the deadline
        state.accountant(p).spend(c.scheduled, p.local_steps)
    kernels.settle_rows(state.topic_loss, work.new_topic_loss, c.sums, p.loss_scale, p.energy_weight_per_j,
                        p.energy_budget_j, c.participants, fading_normals, p.rho, p.innovation, p.fading,
                        state.large_scale_gain, p.p_max_w, p.full_band_noise_w, state.loss, state.queue, state.step,
                        state.last_participants, state.fading_re, state.fading_im, state.gains, state.full_band_snr,
                        work.table, surrogate, state.data_sizes, state.topic_counts, noise, p.initial_topic_loss,
                        work.weights)
    if p.downlink_bits:
        state.downlink_s[:] = _downlink(p, state.gains)
    return work.outcome


def transition(
    params: Params,
    state: State,
    bandwidth_hz: np.ndarray,
    power_w: np.ndarray,
    fading_normals: np.ndarray,
    learning_noise: np.ndarray,
) -> tuple[State, Outcome]:
    """The pure replay round: :func:`advance` on a copy of ``state`` with the surrogate's ``learning_noise``
    (B, G) normals (the rows without participants ignore theirs). Returns (next state, outcome)."""
    after = state.copy()
    out = advance(params, after, bandwidth_hz, power_w, fading_normals, lambda m: learning_noise[m > 0])
    return after, out


def features(params: Params, state: State, out: np.ndarray, per_agent: bool) -> None:
    """What the devices observe, written into ``out`` (B, W) float32: the K devices' 4 numbers then the row's 3
    (W = 4K + 3), or with ``per_agent`` each device's 4 numbers followed by the row's 3 (W = 7K) (the envs'
    ``## Observation Space``; :func:`.kernels.feature_rows`)."""
    kernels.feature_rows(np.log10(state.full_band_snr), SNR_REF_DB, params.cycles, state.cpu_freq_hz,
                         state.downlink_s, params.deadline_s, state.data_sizes, state.last_participants, state.loss,
                         params.initial_loss, state.queue, params.energy_budget_j, state.step, params.episode_length,
                         per_agent, out)


def observation(params: Params, state: State, work: Workspace | None = None) -> np.ndarray:
    """(B, 4K + 3) float32: FedFTAllocation-v0's observation of every row (devices' features, device-major,
    then the row's); a new array (built in ``work``'s buffer when given)."""
    if work is None:
        work = Workspace.of(params, state.num_rows)
    features(params, state, work.observation, False)
    return work.observation.copy()


def agent_observations(params: Params, state: State, work: Workspace | None = None) -> np.ndarray:
    """(B, K, 7) float32: FedFTPower-v0's observation of every device (its features, then its row's); a new
    array (built in ``work``'s buffer when given)."""
    if work is None:
        work = Workspace.of(params, state.num_rows)
    features(params, state, work.agent_observation, True)
    b, k = state.gains.shape
    return work.agent_observation.reshape(b, k, DEVICE_FEATURES + 3).copy()
