"""Scenario of SpecDecode-v0, loaded from ``configs/scenarios/spec_decode/*.yaml``."""

from __future__ import annotations

from dataclasses import dataclass, field

from edgelam.envs.core.channel import ChannelConfig
from edgelam.envs.core.config import bounds, choices
from edgelam.envs.core.load import AR1LoadConfig

TARGET_CARD = "target"  # a draft priced as (a part of) the target's own card


@dataclass(frozen=True)
class BlockageConfig:
    """Scheduled blockage: an extra loss on the link while the episode clock is in [start_s, end_s).

    The loss ramps linearly from 0 to ``loss_db`` over ``ramp_s`` after ``start_s`` and back to 0
    over the ``ramp_s`` before ``end_s`` (a blocker crossing the first Fresnel zone: the
    knife-edge loss of 3GPP TR 38.901 Sec. 7.6.4.2 grows over the crossing time);
    ``ramp_s = 0`` switches it abruptly. The clock is the sum of the round latencies, so a
    blockage lasts the same time whatever the policy does.
    """

    start_s: float = field(default=0.0, metadata=bounds(0.0, 1e6))
    end_s: float = field(default=0.0, metadata=bounds(0.0, 1e6))
    loss_db: float = field(default=0.0, metadata=bounds(0.0, 80.0))
    ramp_s: float = field(default=0.0, metadata=bounds(0.0, 1e6))

    def loss_at(self, t_s: float) -> float:
        """Blockage loss in dB at episode time ``t_s`` (:func:`edgelam.envs.spec_decode.dynamics.blockage_loss_db`)."""
        from edgelam.envs.spec_decode.dynamics import blockage_loss_db  # dynamics imports this module

        return blockage_loss_db(self, t_s)


@dataclass(frozen=True)
class RewardConfig:
    """reward = -(latency_s + energy_weight_per_j * energy_j) / tokens_per_request."""

    energy_weight_per_j: float = field(default=0.05, metadata=bounds(0.0, 1e3))


@dataclass(frozen=True)
class SpecDecodeConfig:
    """One SpecDecode-v0 scenario; every field is validated on load.

    Acceptance comes from the executed pair of the acceptance profile in ``profile_dir``
    (the shipped one: target ``cloud`` with the draft variants ``device``, ``edge``,
    ``early_exit:2``, ``int8``; or a family of your own, ``edgelam profile --models``);
    ``draft_variants`` picks which of them the action can choose. Compute is priced by the
    roofline on real-size cards: the target by ``target_card``; draft ``i`` by
    ``draft_cards[i]`` (a card name, or ``"target"`` for the target's own card) using the
    fraction ``draft_layer_fraction[i]`` of its layers at ``draft_weight_bits[i]`` bits.
    ``auto`` prices a model of the profile from its own ``config.json``: the executed target
    for ``target_card``, draft ``i``'s model (a model of the profile, not a derived
    ``early_exit:k`` / ``int8`` draft) for ``draft_cards[i]``.
    """

    description: str = ""
    episode_length: int = field(default=256, metadata=bounds(1, 1_000_000))  # rounds cap (truncation)
    requests_per_episode: int = field(default=8, metadata=bounds(1, 100_000))
    tokens_per_request: int = field(default=32, metadata=bounds(2, 4096))
    gamma_max: int = field(default=8, metadata=bounds(1, 31))
    topology: str = field(default="edge_draft", metadata=choices("edge_draft", "device_draft"))
    temperature: float = field(default=1.0, metadata=choices(0.0, 1.0))
    iid_alpha: float | None = field(default=None, metadata=bounds(0.0, 1.0))
    profile_dir: str | None = None  # replay profiles written by `edgelam profile --out DIR`; None = shipped
    target_card: str = "Llama-3.2-3B"
    target_weight_bits: int = field(default=8, metadata=choices(4, 8, 16))
    draft_variants: tuple[str, ...] = ("device", "edge", "early_exit:2", "int8")
    draft_cards: tuple[str, ...] = ("Qwen2.5-0.5B", "Llama-3.2-1B", TARGET_CARD, TARGET_CARD)
    draft_layer_fraction: tuple[float, ...] = field(default=(1.0, 1.0, 0.25, 1.0), metadata=bounds(0.01, 1.0))
    draft_weight_bits: tuple[int, ...] = field(default=(16, 16, 16, 8), metadata=choices(4, 8, 16))
    device_hw: str = "phone_npu"
    edge_hw: str = "edge_gpu_l4"
    token_id_bytes: int = field(default=4, metadata=bounds(1, 8))
    prob_bytes_per_token: float = field(default=0.0, metadata=bounds(0.0, 1e7))
    verdict_bytes: int = field(default=8, metadata=bounds(1, 4096))
    rtt_s: float = field(default=0.01, metadata=bounds(0.0, 2.0))
    distance_m: tuple[float, ...] = field(default=(30.0, 200.0), metadata=bounds(10.0, 5000.0, length=2))
    drift_mps: float = field(default=0.0, metadata=bounds(-100.0, 100.0))
    blockage: BlockageConfig = field(default_factory=BlockageConfig)
    acceptance_ema: float = field(default=0.2, metadata=bounds(0.0, 1.0))
    battery_j: float = field(default=200.0, metadata=bounds(1e-3, None))
    energy_budget_j_per_token: float | None = field(default=None, metadata=bounds(0.0, None))
    channel: ChannelConfig = field(default_factory=ChannelConfig)
    # background loads of the edge and the device (clipped AR(1) over rounds)
    edge_load: AR1LoadConfig = field(default_factory=lambda: AR1LoadConfig(corr=0.95, max_util=0.9))
    device_load: AR1LoadConfig = field(
        default_factory=lambda: AR1LoadConfig(mean=0.1, std=0.05, corr=0.95, max_util=0.9)
    )
    reward: RewardConfig = field(default_factory=RewardConfig)

    def cost_limit(self) -> float | None:
        """Per-episode limit of ``info["cost"]`` (the round's device energy, J), or None without
        ``energy_budget_j_per_token``: the budget per token x the tokens of a complete episode,
        ``energy_budget_j_per_token`` x ``requests_per_episode`` x ``tokens_per_request``.

        The virtual queue's budget of a round is ``energy_budget_j_per_token`` x its emitted tokens, and
        a complete episode emits exactly ``requests_per_episode`` x ``tokens_per_request`` tokens (a
        round never emits past the end of its request), so this is the queue's budget summed over it.
        """
        budget = self.energy_budget_j_per_token
        return None if budget is None else budget * self.requests_per_episode * self.tokens_per_request

    def validate(self) -> None:
        """Cross-field checks (lengths, names against the catalogs) -> ValueError naming the key."""
        from edgelam.envs.core.hardware import load_hardware_catalog
        from edgelam.envs.core.model_cards import AUTO_CARD, load_model_cards

        catalog = load_hardware_catalog()
        for key in ("device_hw", "edge_hw"):
            if getattr(self, key) not in catalog:
                raise ValueError(f"{key}: unknown hardware {getattr(self, key)!r} (catalog: {', '.join(catalog)})")
        cards = load_model_cards()
        if self.target_card != AUTO_CARD and self.target_card not in cards:
            raise ValueError(f"target_card: unknown card {self.target_card!r} (cards: {AUTO_CARD}, {', '.join(cards)})")
        n = len(self.draft_variants)
        for key in ("draft_cards", "draft_layer_fraction", "draft_weight_bits"):
            if len(getattr(self, key)) != n:
                raise ValueError(f"{key}: needs one entry per draft variant ({n}), got {len(getattr(self, key))}")
        for i, card in enumerate(self.draft_cards):
            if card not in (TARGET_CARD, AUTO_CARD) and card not in cards:
                raise ValueError(
                    f"draft_cards[{i}]: unknown card {card!r} (cards: {', '.join(cards)}, 'target' or 'auto')"
                )
        if len(set(self.draft_variants)) != n:
            raise ValueError(f"draft_variants: duplicate names in {self.draft_variants}")
        if self.distance_m[0] > self.distance_m[1]:
            raise ValueError(f"distance_m: min {self.distance_m[0]} exceeds max {self.distance_m[1]}")
        if self.blockage.end_s < self.blockage.start_s:
            raise ValueError("blockage.end_s: must be >= blockage.start_s")
