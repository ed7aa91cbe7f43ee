"""Scenario of Offload-v0, loaded from ``configs/scenarios/offload/*.yaml``."""

from __future__ import annotations

from dataclasses import dataclass, field

from edgelam.envs.core.channel import ChannelConfig
from edgelam.envs.core.config import bounds, choices

TIERS = ("device", "edge", "cloud")


@dataclass(frozen=True)
class TierConfig:
    """One execution tier: the model card and hardware that price it, the model that really runs.

    ``card`` (``configs/model_cards.yaml``) on ``hardware`` (``configs/hardware.yaml``)
    prices compute with the roofline; ``card: auto`` prices the executed model itself, from
    its own ``config.json`` (:func:`edgelam.envs.core.model_cards.auto_model_card`).
    ``executed_model`` names a model of the ``offload`` replay profile (a shipped edgelam
    model, or a model of a profile you recorded with ``edgelam profile --models``, see
    ``profile_dir``) whose real teacher-forced top-1 accuracy on the task's reference
    continuation is the tier's quality.
    """

    card: str = "Qwen2.5-0.5B"
    hardware: str = "phone_npu"
    weight_bits: int = field(default=16, metadata=choices(4, 8, 16))
    executed_model: str = "device"


@dataclass(frozen=True)
class EdgeQueueConfig:
    """FCFS edge server shared with Poisson background traffic of offered load ``utilisation``."""

    utilisation: float = field(default=0.3, metadata=bounds(0.0, 0.95))
    mean_job_s: float = field(default=0.5, metadata=bounds(1e-4, 100.0))


@dataclass(frozen=True)
class WanConfig:
    """Cloud round trip: log-normal around ``rtt_mean_s`` with AR(1) log-correlation ``corr``."""

    rtt_mean_s: float = field(default=0.08, metadata=bounds(0.0, 5.0))
    rtt_log_std: float = field(default=0.3, metadata=bounds(0.0, 2.0))
    corr: float = field(default=0.9, metadata=bounds(0.0, 0.999))


@dataclass(frozen=True)
class RewardConfig:
    """reward = quality_weight * quality - latency_weight * latency_s - energy_weight_per_j * energy_j
    - cloud_cost_weight_per_usd * cloud_cost_usd."""

    quality_weight: float = field(default=1.0, metadata=bounds(0.0, 1e3))
    latency_weight: float = field(default=0.2, metadata=bounds(0.0, 1e3))
    energy_weight_per_j: float = field(default=0.05, metadata=bounds(0.0, 1e3))
    cloud_cost_weight_per_usd: float = field(default=2000.0, metadata=bounds(0.0, 1e9))


@dataclass(frozen=True)
class BudgetConfig:
    """Long-term average budget per task on ``metric`` (None = no budget); drives the virtual queue."""

    metric: str = field(default="energy_j", metadata=choices("energy_j", "cloud_cost_usd"))
    per_task: float | None = field(default=None, metadata=bounds(0.0, None))


@dataclass(frozen=True)
class OffloadConfig:
    """One Offload-v0 scenario; every field is validated on load."""

    description: str = ""
    episode_length: int = field(default=200, metadata=bounds(1, 1_000_000))
    profile_dir: str | None = None  # replay profiles written by `edgelam profile --out DIR`; None = shipped
    device: TierConfig = field(default_factory=TierConfig)
    edge: TierConfig = field(
        default_factory=lambda: TierConfig("Llama-3.2-3B", "edge_gpu_l4", 16, "edge")
    )
    cloud: TierConfig = field(
        default_factory=lambda: TierConfig("Llama-3.1-8B", "cloud_a100", 16, "cloud")
    )
    decode_tokens: int = field(default=32, metadata=bounds(1, 4096))
    token_id_bytes: int = field(default=4, metadata=bounds(1, 8))
    request_overhead_bytes: int = field(default=400, metadata=bounds(0, 1_000_000))
    task_interval_s: float = field(default=1.0, metadata=bounds(1e-3, 3600.0))
    edge_rtt_s: float = field(default=0.01, metadata=bounds(0.0, 2.0))
    downlink_rate_bps: float = field(default=100e6, metadata=bounds(1e3, 1e12))
    cloud_price_usd_per_token: float = field(default=0.18e-6, metadata=bounds(0.0, 1.0))
    distance_m: tuple[float, ...] = field(default=(30.0, 250.0), metadata=bounds(10.0, 5000.0, length=2))
    battery_j: float = field(default=2000.0, metadata=bounds(1e-3, None))
    channel: ChannelConfig = field(default_factory=ChannelConfig)
    edge_queue: EdgeQueueConfig = field(default_factory=EdgeQueueConfig)
    wan: WanConfig = field(default_factory=WanConfig)
    budget: BudgetConfig = field(default_factory=BudgetConfig)
    reward: RewardConfig = field(default_factory=RewardConfig)

    def cost_limit(self) -> float | None:
        """Per-episode limit of ``info["cost"]`` (``budget.metric``: device energy in J or cloud spend in USD):
        ``budget.per_task`` x ``episode_length`` (one task per step), or None without ``budget.per_task``."""
        budget = self.budget.per_task
        return None if budget is None else budget * self.episode_length

    def validate(self) -> None:
        """Cross-field checks (names against the catalogs) -> ValueError naming the key."""
        validate_tiers(self)
        if self.distance_m[0] > self.distance_m[1]:
            raise ValueError(f"distance_m: min {self.distance_m[0]} exceeds max {self.distance_m[1]}")


def validate_tiers(cfg) -> None:
    """Check ``cfg.device/edge/cloud`` cards and hardware exist (shared with MultiUserOffload-v0)."""
    from edgelam.envs.core.hardware import load_hardware_catalog
    from edgelam.envs.core.model_cards import AUTO_CARD, load_model_cards

    catalog = load_hardware_catalog()
    cards = load_model_cards()
    for tier in TIERS:
        t = getattr(cfg, tier)
        if t.hardware not in catalog:
            raise ValueError(f"{tier}.hardware: unknown hardware {t.hardware!r} (catalog: {', '.join(catalog)})")
        if t.card != AUTO_CARD and t.card not in cards:
            raise ValueError(f"{tier}.card: unknown card {t.card!r} (cards: {AUTO_CARD}, {', '.join(cards)})")
