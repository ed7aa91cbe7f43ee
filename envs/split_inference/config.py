"""Scenario of SplitInference-v0, loaded from ``configs/scenarios/split_inference/*.yaml``."""

from __future__ import annotations

from dataclasses import dataclass, field

from edgelam.envs.core.channel import ChannelConfig
from edgelam.envs.core.config import bounds, choices
from edgelam.envs.core.load import AR1LoadConfig


@dataclass(frozen=True)
class RewardConfig:
    """reward = -(latency_weight * latency_s + energy_weight_per_j * energy_j + quality_weight * quality_loss)."""

    latency_weight: float = field(default=1.0, metadata=bounds(0.0, 1e3))
    energy_weight_per_j: float = field(default=0.5, metadata=bounds(0.0, 1e3))
    quality_weight: float = field(default=2.0, metadata=bounds(0.0, 1e3))


@dataclass(frozen=True)
class SplitInferenceConfig:
    """One SplitInference-v0 scenario; every field is validated on load.

    ``model_card`` prices compute and activations (a real LLM shape from
    ``configs/model_cards.yaml``, or ``auto``: the executed model's own shape, from its
    ``config.json``); ``executed_model`` is the model whose real split execution gives the
    quality of each (split layer, bits): the model the split profile in ``profile_dir`` was
    recorded on (the shipped ``cloud``, or a model of your own, ``edgelam profile --models``); the
    card's split layer l maps to the executed model's layer
    ``clip(round(l * L_exec / L_card), 1, L_exec - 1)`` for 0 < l < L_card.
    """

    description: str = ""
    episode_length: int = field(default=200, metadata=bounds(1, 1_000_000))
    model_card: str = "Qwen2.5-0.5B"
    executed_model: str = "cloud"  # checked against the split profile's model when the env is built
    profile_dir: str | None = None  # replay profiles written by `edgelam profile --out DIR`; None = shipped
    device_hw: str = "phone_npu"
    edge_hw: str = "edge_gpu_l4"
    device_weight_bits: int = field(default=8, metadata=choices(4, 8, 16))
    edge_weight_bits: int = field(default=16, metadata=choices(8, 16))
    decode_tokens: int = field(default=32, metadata=bounds(1, 4096))
    token_id_bytes: int = field(default=4, metadata=bounds(1, 8))
    rtt_s: float = field(default=0.01, metadata=bounds(0.0, 2.0))
    downlink_rate_bps: float = field(default=100e6, metadata=bounds(1e3, 1e12))
    distance_m: tuple[float, ...] = field(default=(30.0, 250.0), metadata=bounds(10.0, 5000.0, length=2))
    csi_delay_slots: int = field(default=1, metadata=choices(0, 1))
    csi_noise_db: float = field(default=1.0, metadata=bounds(0.0, 20.0))
    snr_history: int = field(default=4, metadata=bounds(1, 32))
    energy_budget_j: float | None = field(default=None, metadata=bounds(0.0, None))
    channel: ChannelConfig = field(default_factory=ChannelConfig)
    edge_load: AR1LoadConfig = field(default_factory=AR1LoadConfig)  # background load of the edge (latent AR(1))
    reward: RewardConfig = field(default_factory=RewardConfig)

    def cost_limit(self) -> float | None:
        """Per-episode limit of ``info["cost"]`` (device energy, J): ``energy_budget_j`` x ``episode_length``
        (one request per step), or None without ``energy_budget_j``."""
        budget = self.energy_budget_j
        return None if budget is None else budget * self.episode_length

    def validate(self) -> None:
        """Cross-field checks (names against the catalogs) -> ValueError naming the key."""
        from edgelam.envs.core.hardware import load_hardware_catalog
        from edgelam.envs.core.model_cards import AUTO_CARD, load_model_cards

        catalog = load_hardware_catalog()
        for key in ("device_hw", "edge_hw"):
            if getattr(self, key) not in catalog:
                raise ValueError(
                    f"{key}: unknown hardware {getattr(self, key)!r} (catalog: {', '.join(catalog)})"
                )
        cards = load_model_cards()
        if self.model_card != AUTO_CARD and self.model_card not in cards:
            raise ValueError(f"model_card: unknown card {self.model_card!r} (cards: {AUTO_CARD}, {', '.join(cards)})")
        if self.distance_m[0] > self.distance_m[1]:
            raise ValueError(f"distance_m: min {self.distance_m[0]} exceeds max {self.distance_m[1]}")
