"""The one FedFT simulator behind both env shells: devices, channel, global model, energy queue."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from edgelam.envs.core.channel import WirelessLink
from edgelam.envs.core.queues import virtual_queue_step
from edgelam.envs.fedft.config import FedFTConfig
from edgelam.envs.fedft.data import load_partition
from edgelam.envs.fedft.dynamics import (
    RoundCosts,
    downlink_time_s,
    load_model_costs,
    load_surrogate,
    round_costs,
    topic_weights,
)
from edgelam.envs.fedft.privacy import RDPAccountant, sample_rates

BACKENDS = ("replay", "live")
SNR_REF_DB = 40.0  # observation scale of the full-band, full-power SNR in dB


@dataclass(frozen=True)
class RoundResult:
    """What one round did (SI units); ``costs`` holds the per-device arrays."""

    costs: RoundCosts
    loss: float
    previous_loss: float
    topic_loss: np.ndarray  # (G,)


class Federation:
    """State of a FedFT episode and the transition of one round.

    Randomness: devices, channel and fading come from the env's ``np_random``; learning
    randomness (live local batches, replay surrogate noise) from a generator seeded from it
    at :meth:`reset`, so both backends see the same devices and channels for one seed.
    """

    def __init__(self, cfg: FedFTConfig, backend: str) -> None:
        if backend not in BACKENDS:
            raise ValueError(f"backend: {backend!r} is not one of {BACKENDS}")
        self.cfg = cfg
        self.backend = backend
        self.k = cfg.num_devices
        self.g = cfg.num_topics
        self.surrogate = load_surrogate(cfg.profile_dir)
        self._check_surrogate()
        dp = cfg.privacy
        if dp.enabled and backend == "replay":
            self.surrogate = self.surrogate.private(dp.noise_multiplier, dp.clip_norm)
        part = load_partition()
        self.pools = part.train[: self.g]
        self.link = WirelessLink(cfg.channel, n_links=self.k)
        lo = cfg.lora
        self.cycles = cfg.cycles_per_sample * lo.local_steps * lo.batch_size
        self.bits = float(self.surrogate.adapter_bits)
        self.downlink_bits = 0.0
        if cfg.mode == "split":
            sp = cfg.split
            self.model_costs = load_model_costs(cfg.model)
            self.cycles *= self.model_costs.device_flop_share(sp.device_layers)
            self.bits, self.downlink_bits = self.model_costs.split_bits(
                sp.device_layers, lo.batch_size, lo.local_steps, sp.wire_bits, lo.rank)
        self.live = None
        if backend == "live":
            from edgelam.envs.fedft.live import make_live

            self.live = make_live(cfg, part.val[: self.g])
            if cfg.mode == "split":
                self._check_model_costs()
            if self.live.adapter_bits != self.surrogate.adapter_bits:
                raise ValueError(f"lora: adapters of {self.live.adapter_bits} bits differ from the surrogate's "
                                 f"{self.surrogate.adapter_bits}; refit the surrogate (profile_dir)")
        self.initial_topic_loss = self.surrogate.initial_loss[: self.g].copy()
        self.initial_loss = float(self.initial_topic_loss.mean())
        self._learn_rng = np.random.default_rng(0)
        self.t = 0
        self.queue = 0.0
        self.gains = np.ones(self.k)
        self.downlink_s = np.zeros(self.k)
        self.distances_m = np.zeros(self.k)
        self.cpu_freq_hz = np.ones(self.k)
        self.data_sizes = np.ones(self.k, dtype=np.int64)
        self.topic_counts = np.zeros((self.k, self.g), dtype=np.int64)
        self.local_data: list[np.ndarray] = []
        self.topic_loss = self.initial_topic_loss.copy()
        self.last_participants = np.zeros(self.k, dtype=bool)
        self.accountant: RDPAccountant | None = None

    def _check_surrogate(self) -> None:
        cfg, s = self.cfg, self.surrogate.settings
        mine = {"model": cfg.model, "rank": cfg.lora.rank, "alpha": cfg.lora.alpha, "lr": cfg.lora.lr,
                "local_steps": cfg.lora.local_steps, "batch_size": cfg.lora.batch_size}
        diff = {k: (v, s.get(k)) for k, v in mine.items() if s.get(k) != v}
        if diff:
            raise ValueError(f"lora/model: the surrogate was fitted with other settings {diff} (scenario, surrogate); "
                             "fit one with `python -m edgelam.envs.fedft.profile --out DIR` and set profile_dir")

    def _check_model_costs(self) -> None:
        """ValueError if the recorded costs the traffic and cycles come from are not the live model's."""
        from edgelam.envs.fedft.live import measure_model_costs

        mc = self.model_costs
        real = measure_model_costs(self.live.lm, mc.seq_len)
        recorded = {"num_layers": mc.num_layers, "hidden_size": mc.hidden_size, "layer_flops": mc.layer_flops.tolist(),
                    "head_flops": mc.head_flops, "lora_values_per_rank": mc.lora_values_per_rank.astype(int).tolist()}
        if real != recorded:
            raise ValueError(f"model: the recorded costs of {self.cfg.model!r} differ from the live model; re-record "
                             "them with `python -m edgelam.envs.fedft.profile --model-costs`")

    @property
    def loss(self) -> float:
        """Current global validation loss (mean over topics, nats/token)."""
        return float(self.topic_loss.mean())

    @property
    def compute_s(self) -> np.ndarray:
        """(K,) local computation time of each device in s."""
        return self.cycles / self.cpu_freq_hz

    @property
    def upload_window_s(self) -> np.ndarray:
        """(K,) time left for the upload before the deadline, in s (0 if computation and download miss it)."""
        return np.clip(self.cfg.deadline_s - self.compute_s - self.downlink_s, 0.0, None)

    def _set_gains(self, gains: np.ndarray) -> None:
        """This round's link gains and the downlink time they give (split mode; zeros otherwise)."""
        cfg = self.cfg
        self.gains = gains.copy()
        sp = cfg.split
        noise = cfg.channel.noise_psd_w_per_hz * 10.0 ** (sp.ue_noise_figure_db / 10.0)
        self.downlink_s = downlink_time_s(self.downlink_bits, self.gains, sp.downlink_bandwidth_hz,
                                          sp.bs_tx_psd_w_per_hz, noise)

    def full_band_snr_db(self) -> np.ndarray:
        """(K,) SNR in dB of each device alone on the whole band at p_max."""
        cfg = self.cfg
        snr = cfg.p_max_w * self.gains / (cfg.noise_w_per_hz * cfg.bandwidth_hz)
        return 10.0 * np.log10(np.maximum(snr, 1e-30))

    def reset(self, rng: np.random.Generator) -> None:
        """Draw devices (distances, CPU, local data) and the first round's channel."""
        cfg, k, g = self.cfg, self.k, self.g
        self.distances_m = rng.uniform(*cfg.distance_m, size=k)
        gains, _, _ = self.link.reset(rng, self.distances_m)
        self._set_gains(gains)
        self.cpu_freq_hz = rng.uniform(*cfg.cpu_freq_hz, size=k)
        lo, hi = cfg.samples_per_device
        self.data_sizes = rng.integers(lo, hi + 1, size=k)
        mixtures = rng.dirichlet(np.full(g, cfg.dirichlet_alpha), size=k)
        self.topic_counts = np.stack([rng.multinomial(n, p) for n, p in zip(self.data_sizes, mixtures, strict=True)])
        pool = self.pools.shape[1]
        self.local_data = [
            np.concatenate([self.pools[j][rng.integers(pool, size=c)] for j, c in enumerate(counts)])
            for counts in self.topic_counts
        ]
        self._learn_rng = np.random.default_rng(rng.integers(2**63))
        dp = cfg.privacy
        if dp.enabled:
            self.accountant = RDPAccountant(sample_rates(cfg.lora.batch_size, self.data_sizes), dp.noise_multiplier,
                                            dp.delta)
        self.t = 0
        self.queue = 0.0
        self.last_participants = np.zeros(k, dtype=bool)
        self.topic_loss = self.live.reset() if self.live is not None else self.initial_topic_loss.copy()

    def costs(self, bandwidth_hz: np.ndarray, power_w: np.ndarray) -> RoundCosts:
        """Costs of an allocation in the current round (no state change)."""
        cfg = self.cfg
        return round_costs(self.bits, bandwidth_hz, power_w, self.gains, cfg.noise_w_per_hz, self.cycles,
                           self.cpu_freq_hz, cfg.kappa, cfg.deadline_s, self.downlink_s)

    def play(self, bandwidth_hz: np.ndarray, power_w: np.ndarray, rng: np.random.Generator) -> RoundResult:
        """Run one round with this allocation, then draw the next round's fading."""
        costs = self.costs(bandwidth_hz, power_w)
        previous = self.loss
        part = costs.participants
        if self.live is not None:
            self.topic_loss = self.live.round(self.local_data, part, self.data_sizes.astype(np.float64),
                                              self._learn_rng)
        else:
            w = topic_weights(part, self.data_sizes, self.topic_counts)
            self.topic_loss = self.surrogate.step(self.topic_loss, w, int(part.sum()), self._learn_rng)
        if self.accountant is not None:  # a scheduled device trained and transmitted, even if it missed the deadline
            self.accountant.spend(costs.scheduled, self.cfg.lora.local_steps)
        energy = float(costs.energy_j.sum())
        self.queue = virtual_queue_step(self.queue, energy, self.cfg.energy_budget_j)
        self.last_participants = part.copy()
        self.t += 1
        gains, _, _ = self.link.step(rng)
        self._set_gains(gains)
        return RoundResult(costs, self.loss, previous, self.topic_loss.copy())

    def device_features(self) -> np.ndarray:
        """(K, 4) per device: full-band SNR dB / 40, (compute + download time) / deadline, data share, last
        participation."""
        cfg = self.cfg
        out = np.empty((self.k, 4), dtype=np.float32)
        out[:, 0] = np.clip(self.full_band_snr_db() / SNR_REF_DB, -2.0, 3.0)
        out[:, 1] = np.clip((self.compute_s + self.downlink_s) / cfg.deadline_s, 0.0, 2.0)
        out[:, 2] = self.data_sizes / self.data_sizes.sum()
        out[:, 3] = self.last_participants
        return out

    def global_features(self) -> np.ndarray:
        """(3,) loss / initial loss, energy queue / (10 x budget), elapsed fraction of the episode."""
        cfg = self.cfg
        budget = max(cfg.energy_budget_j, 1e-12)
        return np.array(
            [min(self.loss / self.initial_loss, 2.0), min(self.queue / (10.0 * budget), 10.0),
             min(self.t / cfg.episode_length, 1.0)],
            dtype=np.float32,
        )

    def device_epsilon(self) -> np.ndarray:
        """(K,) privacy spent so far by each device, epsilon at ``privacy.delta`` (zeros without privacy)."""
        return np.zeros(self.k) if self.accountant is None else self.accountant.epsilon()

    def info(self, result: RoundResult, bandwidth_hz: np.ndarray, power_w: np.ndarray) -> dict:
        """The step's ``info`` (SI units); with privacy also ``epsilon`` (max over devices) and ``device_epsilon``."""
        c = result.costs
        private = {}
        if self.accountant is not None:
            eps = self.device_epsilon()
            private = {"epsilon": float(eps.max()), "device_epsilon": eps}
        return {
            "loss": result.loss,
            "loss_decrease": result.previous_loss - result.loss,
            "topic_loss": result.topic_loss,
            "participants": c.participants.copy(),
            "num_participants": int(c.participants.sum()),
            "num_dropped": int((c.scheduled & ~c.participants).sum()),
            "energy_j": float(c.energy_j.sum()),
            "compute_energy_j": float(c.compute_energy_j.sum()),
            "upload_energy_j": float(c.upload_energy_j.sum()),
            "latency_s": float(c.latency_s),
            "uplink_bits": self.bits,
            "downlink_bits": self.downlink_bits,
            "virtual_queue": self.queue,
            "bandwidth_hz": np.asarray(bandwidth_hz, dtype=np.float64).copy(),
            "power_w": np.asarray(power_w, dtype=np.float64).copy(),
            **private,
        }
