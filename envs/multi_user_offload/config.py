"""Scenario of MultiUserOffload-v0, loaded from ``configs/scenarios/multi_user_offload/*.yaml``."""

from __future__ import annotations

from dataclasses import dataclass, field

from edgelam.envs.core.channel import ChannelConfig
from edgelam.envs.core.config import bounds
from edgelam.envs.offload.config import RewardConfig, TierConfig, WanConfig, validate_tiers


@dataclass(frozen=True)
class MultiUserOffloadConfig:
    """One MultiUserOffload-v0 scenario; the tiers, radio and prices mean what they mean in Offload-v0.

    ``channel.bandwidth_hz`` is the uplink band all users share (FDMA); a user given the
    whole band transmits at ``channel.tx_power_w``. ``edge_background_util`` is the
    fraction of the edge server busy with other traffic; the rest is shared by the users
    who pick the edge (processor sharing). ``num_users`` goes up to 1,024: the shares are
    fractions of one slot's band and edge time, so any number of users can split them
    (1,024 offloading users of a 10 MHz band get about 10 kHz each on average, e.g. one
    180 kHz NR resource block for 1/18 of the slot).
    """

    description: str = ""
    episode_length: int = field(default=200, metadata=bounds(1, 1_000_000))
    num_users: int = field(default=4, metadata=bounds(1, 1024))
    profile_dir: str | None = None  # replay profiles written by `edgelam profile --out DIR`; None = shipped
    device: TierConfig = field(default_factory=TierConfig)
    edge: TierConfig = field(default_factory=lambda: TierConfig("Llama-3.2-3B", "edge_gpu_l4", 16, "edge"))
    cloud: TierConfig = field(default_factory=lambda: TierConfig("Llama-3.1-8B", "cloud_a100", 16, "cloud"))
    decode_tokens: int = field(default=32, metadata=bounds(1, 4096))
    token_id_bytes: int = field(default=4, metadata=bounds(1, 8))
    request_overhead_bytes: int = field(default=400, metadata=bounds(0, 1_000_000))
    edge_rtt_s: float = field(default=0.01, metadata=bounds(0.0, 2.0))
    downlink_rate_bps: float = field(default=100e6, metadata=bounds(1e3, 1e12))
    cloud_price_usd_per_token: float = field(default=0.18e-6, metadata=bounds(0.0, 1.0))
    edge_background_util: float = field(default=0.3, metadata=bounds(0.0, 0.95))
    distance_m: tuple[float, ...] = field(default=(30.0, 250.0), metadata=bounds(10.0, 5000.0, length=2))
    battery_j: float = field(default=2000.0, metadata=bounds(1e-3, None))
    channel: ChannelConfig = field(default_factory=ChannelConfig)
    wan: WanConfig = field(default_factory=WanConfig)
    reward: RewardConfig = field(default_factory=RewardConfig)

    def validate(self) -> None:
        """Cross-field checks (names against the catalogs) -> ValueError naming the key."""
        validate_tiers(self)
        if self.distance_m[0] > self.distance_m[1]:
            raise ValueError(f"distance_m: min {self.distance_m[0]} exceeds max {self.distance_m[1]}")
