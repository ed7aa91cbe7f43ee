"""Pure dynamics of the FedFT envs: projection of actions, round costs, the loss surrogate.

All functions are numpy over devices (shape (K,)); the envs and the baselines call the same
ones, so a controller optimises exactly what the env charges.

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
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edgelam.envs.core.channel import rate_from_snr_bps

SURROGATE_FILE = Path(__file__).resolve().parent / "surrogate.json"
MODEL_COSTS_FILE = Path(__file__).resolve().parent / "model_costs.json"
DEADLINE_RTOL = 1e-9
LABEL_BITS = 16  # a next-token id sent in split mode: uint16 (vocabularies up to 65,536)
ADAPTER_BITS = 16  # an uploaded adapter value (float16), as in lora_fedavg


def project_simplex(x: np.ndarray) -> np.ndarray:
    """Euclidean projection of ``x`` (K,) onto the probability simplex (Duchi et al., ICML 2008)."""
    x = np.asarray(x, dtype=np.float64)
    u = np.sort(x)[::-1]
    css = np.cumsum(u) - 1.0
    k = np.arange(1, x.size + 1)
    rho = np.nonzero(u - css / k > 0)[0][-1]
    return np.maximum(x - css[rho] / (rho + 1.0), 0.0)


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
    b = np.asarray(bandwidth_hz, dtype=np.float64)
    p = np.asarray(power_w, dtype=np.float64)
    scheduled = (b > 0) & (p > 0)
    rate = upload_rate_bps(b, p, gains, noise_w_per_hz)
    upload = np.divide(bits, rate, out=np.full_like(rate, np.inf), where=rate > 0)
    compute = cycles / np.asarray(cpu_freq_hz, dtype=np.float64)
    busy = compute + np.asarray(downlink_s, dtype=np.float64)
    done = busy + upload
    participants = scheduled & (done <= deadline_s * (1.0 + DEADLINE_RTOL))
    window = np.clip(deadline_s - busy, 0.0, None)
    up_energy = np.where(scheduled, p * np.minimum(upload, window), 0.0)
    cmp_energy = np.where(scheduled, kappa * cycles * np.asarray(cpu_freq_hz) ** 2, 0.0)
    latency = float(np.max(np.minimum(done[scheduled], deadline_s))) if scheduled.any() else 0.0
    return RoundCosts(scheduled, participants, compute, upload, cmp_energy, up_energy, latency)


def downlink_time_s(
    bits: float, gains: np.ndarray, bandwidth_hz: float, bs_psd_w_per_hz: float, noise_w_per_hz: float
) -> np.ndarray:
    """(K,) seconds for each of K devices to receive ``bits`` on an equal share B/K of the downlink band.

    The base station transmits at the power spectral density ``bs_psd_w_per_hz`` on every
    share, so the SNR psd g / N0 does not depend on K; the link gain is the uplink's
    (reciprocal block-fading channel). 0 where ``bits`` is 0, inf where the rate is 0.
    """
    g = np.asarray(gains, dtype=np.float64)
    if bits == 0:
        return np.zeros_like(g)
    share = np.full_like(g, bandwidth_hz / g.size)
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
        head = self.headroom - (self.initial_loss[: losses.shape[-1]] - losses)
        d = head * (self.gain_own * weights + self.gain_shared) - self.noise_cost / np.maximum(m, 1.0)[..., None]
        d = d * self.decrease_scale
        return np.where(m[..., None] > 0, d, 0.0)

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
