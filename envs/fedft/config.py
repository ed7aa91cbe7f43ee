"""Scenarios of FedFTAllocation-v0 (``configs/scenarios/fed_ft_allocation``) and FedFTPower-v0 (``fed_ft_power``)."""

from __future__ import annotations

from dataclasses import dataclass, field

from edgelam.envs.core.channel import ChannelConfig
from edgelam.envs.core.config import bounds, choices
from edgelam.envs.fedft.dynamics import load_model_costs

MODES = ("lora_fedavg", "split")
WIRE_DTYPES = {"float16": 16, "bfloat16": 16, "float32": 32}  # dtype of split activations/gradients -> bits


@dataclass(frozen=True)
class LoRAConfig:
    """Federated LoRA fine-tuning of the executed model (Hu et al., ICLR 2022; FedAvg, McMahan et al., 2017).

    Adapters of rank ``rank`` on the q/v projections; each round every participant runs
    ``local_steps`` AdamW steps of ``batch_size`` sequences of 64 tokens from its own data.
    """

    rank: int = field(default=4, metadata=bounds(1, 64))
    alpha: float = field(default=8.0, metadata=bounds(1e-3, 1e3))
    lr: float = field(default=5e-3, metadata=bounds(1e-6, 1.0))
    local_steps: int = field(default=3, metadata=bounds(1, 100))
    batch_size: int = field(default=8, metadata=bounds(1, 256))


@dataclass(frozen=True)
class SplitConfig:
    """Split federated fine-tuning (``mode: split``): SplitFed V1 (Thapa et al., AAAI 2022) with LoRA as in
    SplitLoRA (Lin et al., arXiv 2407.00952, 2024).

    Each device keeps the token embedding and the first ``device_layers`` decoder layers with
    their adapters; the edge server runs the remaining layers with their adapters, the final
    norm, the LM head and the loss. Per local step the device uploads the cut-layer
    activations (B, T, d) and the next-token labels (B, T - 1) and, when it has trainable
    layers, receives the gradient w.r.t. those activations (B, T, d); both tensors travel as
    ``wire_dtype``. The downlink uses a band of ``downlink_bandwidth_hz`` shared equally by
    all K devices (not allocated by the agent) at the base station's power spectral density
    ``bs_tx_psd_w_per_hz``: 46 dBm over 10 MHz (3GPP TR 36.814 V9.0.0, Table A.2.1.1-2),
    received with the UE noise figure ``ue_noise_figure_db`` (9 dB, same table).
    """

    device_layers: int = field(default=1, metadata=bounds(0, 63))
    wire_dtype: str = field(default="float16", metadata=choices(*WIRE_DTYPES))
    downlink_bandwidth_hz: float = field(default=2.0e5, metadata=bounds(1.0, 1e10))
    bs_tx_psd_w_per_hz: float = field(default=4.0e-6, metadata=bounds(0.0, 1.0))
    ue_noise_figure_db: float = field(default=9.0, metadata=bounds(0.0, 30.0))

    @property
    def wire_bits(self) -> int:
        """Bits per exchanged activation / gradient value."""
        return WIRE_DTYPES[self.wire_dtype]


@dataclass(frozen=True)
class PrivacyConfig:
    """Sample-level differential privacy of every device's local training (:mod:`.privacy`; off by default).

    DP-SGD (Abadi et al., CCS 2016): Poisson sampling of each local batch at rate
    q = batch_size / n_k, per-sequence gradient clipping to ``clip_norm`` (L2, over the
    adapters the sequence trains), Gaussian noise of std ``noise_multiplier * clip_norm`` on
    the sum, divided by ``batch_size``. Privacy spent is tracked per device by a Rényi-DP
    accountant of the sampled Gaussian mechanism (Mironov et al. 2019) and reported as
    epsilon at ``delta``; delta should be well below 1 / n_k (Abadi et al. use 1e-5 for
    60,000 examples). The bounds keep sigma where the accountant is meaningful and the
    clip norm positive.
    """

    enabled: bool = False
    noise_multiplier: float = field(default=1.0, metadata=bounds(0.01, 100.0))
    clip_norm: float = field(default=0.5, metadata=bounds(1e-6, 1e6))  # the shipped replay correction's
    delta: float = field(default=1e-5, metadata=bounds(1e-12, 0.1))


@dataclass(frozen=True)
class RewardConfig:
    """reward = loss_scale * (previous validation loss - new validation loss) - energy_weight_per_j * energy_j."""

    loss_scale: float = field(default=100.0, metadata=bounds(0.0, 1e6))
    energy_weight_per_j: float = field(default=0.2, metadata=bounds(0.0, 1e6))


@dataclass(frozen=True)
class FedFTConfig:
    """One FedFT scenario (both envs); every field is validated on load.

    ``channel.bandwidth_hz`` is the total uplink band B shared by FDMA and
    ``channel.tx_power_w`` the device power limit p_max; ``channel.slot_s`` should be the
    round length (fading is redrawn, correlated by rho = J0(2 pi f_d T), once per round).
    Devices' topic mixtures are Dirichlet(``dirichlet_alpha``) over the first ``num_topics``
    topics of the shipped partition (:mod:`.data`); their data sizes are uniform in
    ``samples_per_device``; the validation set is the union of those topics' validation
    sequences. A device's local computation takes ``cycles_per_sample * local_steps *
    batch_size`` CPU cycles at frequency f: time cycles / f, energy kappa * cycles * f^2
    (Yang et al., TWC 2021). ``mode`` is ``lora_fedavg`` (devices train all adapters and
    upload them) or ``split`` (see :class:`SplitConfig`; the device runs only its share of the
    model's real forward FLOPs, so its cycles are that share of these). ``privacy`` turns on
    DP-SGD on the devices' local steps (:class:`PrivacyConfig`).
    """

    description: str = ""
    episode_length: int = field(default=30, metadata=bounds(1, 100_000))
    mode: str = field(default="lora_fedavg", metadata=choices(*MODES))
    model: str = field(default="edge", metadata=choices("edge", "device", "cloud"))
    profile_dir: str | None = None  # folder of a surrogate.json from `python -m edgelam.envs.fedft.profile`
    num_devices: int = field(default=5, metadata=bounds(1, 1024))
    num_topics: int = field(default=5, metadata=bounds(1, 8))
    dirichlet_alpha: float = field(default=0.3, metadata=bounds(1e-3, 1e3))
    samples_per_device: tuple[int, ...] = field(default=(64, 256), metadata=bounds(8, 4096, length=2))
    distance_m: tuple[float, ...] = field(default=(50.0, 400.0), metadata=bounds(10.0, 5000.0, length=2))
    cpu_freq_hz: tuple[float, ...] = field(default=(1.0e9, 2.0e9), metadata=bounds(1e7, 1e11, length=2))
    kappa: float = field(default=1e-28, metadata=bounds(0.0, 1e-20))
    cycles_per_sample: float = field(default=1.25e8, metadata=bounds(1.0, 1e13))
    deadline_s: float = field(default=4.0, metadata=bounds(1e-3, 1e5))
    energy_budget_j: float = field(default=2.0, metadata=bounds(0.0, 1e6))
    lora: LoRAConfig = field(default_factory=LoRAConfig)
    split: SplitConfig = field(default_factory=SplitConfig)
    privacy: PrivacyConfig = field(default_factory=PrivacyConfig)
    channel: ChannelConfig = field(default_factory=ChannelConfig)
    reward: RewardConfig = field(default_factory=RewardConfig)

    @property
    def bandwidth_hz(self) -> float:
        """Total uplink band B in Hz."""
        return self.channel.bandwidth_hz

    @property
    def p_max_w(self) -> float:
        """Device transmit power limit in W."""
        return self.channel.tx_power_w

    @property
    def noise_w_per_hz(self) -> float:
        """Receiver noise PSD N0 F in W/Hz (thermal noise times noise figure)."""
        return self.channel.noise_psd_w_per_hz * 10.0 ** (self.channel.noise_figure_db / 10.0)

    def cost_limit(self) -> float:
        """Per-episode limit of ``info["cost"]`` (the round's device energy, all devices, J):
        ``energy_budget_j`` x ``episode_length`` (one round per step). Every scenario has a budget
        (0 is a budget of zero energy, not none)."""
        return self.energy_budget_j * self.episode_length

    def validate(self) -> None:
        """Cross-field checks -> ValueError naming the key."""
        if self.mode == "split":
            load_model_costs(self.model).check_device_layers(self.split.device_layers)
        if self.mode != "split" and self.split != SplitConfig():
            raise ValueError(f"split: settings of mode 'split' given with mode {self.mode!r}; "
                             "set mode: split or drop the split section")
        for key in ("samples_per_device", "distance_m", "cpu_freq_hz"):
            lo, hi = getattr(self, key)
            if lo > hi:
                raise ValueError(f"{key}: min {lo} exceeds max {hi}")
        if self.channel.tx_power_w <= 0:
            raise ValueError("channel.tx_power_w: p_max must be > 0")
