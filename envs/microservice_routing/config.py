"""Scenario of MicroserviceRouting-v0, loaded from ``configs/scenarios/microservice_routing/*.yaml``."""

from __future__ import annotations

from dataclasses import dataclass, field

from edgelam.envs.core.config import bounds, choices


@dataclass(frozen=True)
class DemandConfig:
    """Poisson request arrivals of mobile users.

    ``arrival_rate_hz`` requests/s in total; each request is of pipeline type i with
    probability ``mix[i]`` (normalised; order of ``pipelines``) and comes from one of
    ``num_users`` users chosen uniformly. Users move between the cells of the servers:
    each user hands over to a neighbouring cell on a ring of the K cells at rate
    ``handover_rate_hz`` (a continuous-time random walk, simulated lazily per user).
    ``hotspot_cell`` (-1: none) starts every user there, so demand is concentrated
    and then spreads (the setting where migrating replicas after users pays).
    """

    arrival_rate_hz: float = field(default=12.0, metadata=bounds(1e-3, 1e5))
    pipelines: tuple[str, ...] = ("text_chat", "image_captioning", "speech_qa")
    mix: tuple[float, ...] = field(default=(0.4, 0.3, 0.3), metadata=bounds(0.0, None))
    num_users: int = field(default=50, metadata=bounds(1, 100_000))
    handover_rate_hz: float = field(default=0.05, metadata=bounds(0.0, 1e3))
    hotspot_cell: int = field(default=-1, metadata=bounds(-1, 1_000))


@dataclass(frozen=True)
class MigrationConfig:
    """Optional migration of replicas (moves, never copies: replica counts are kept).

    Moving a replica ships its fp16 weights over the inter-server link; the replica
    serves at the destination after ``weight_bytes * 8 / link_bps``; the move costs
    ``energy_j_per_bit`` J per bit. Long-term budget: mean migration energy per step
    <= ``budget_j_per_step``, tracked by the virtual queue
    Z(t+1) = max(Z(t) + y(t) - budget, 0) (Neely 2010) in ``info["virtual_queue"]``.
    """

    enabled: bool = False
    energy_j_per_bit: float = field(default=2.0e-8, metadata=bounds(0.0, 1.0))
    budget_j_per_step: float = field(default=0.5, metadata=bounds(0.0, None))


@dataclass(frozen=True)
class RewardConfig:
    """Per request: -(e2e latency_s + slo_penalty * [latency > slo_s]) - migration_weight_per_j * migration J.

    Paid stage by stage (see the env docstring); an infeasible action (a server without
    the microservice, or an infeasible migration) is projected and costs ``infeasible_penalty``.
    """

    slo_penalty: float = field(default=1.0, metadata=bounds(0.0, 1e6))
    migration_weight_per_j: float = field(default=0.0, metadata=bounds(0.0, 1e6))
    infeasible_penalty: float = field(default=0.5, metadata=bounds(0.0, 1e6))


@dataclass(frozen=True)
class MicroserviceRoutingConfig:
    """One MicroserviceRouting-v0 scenario; every field is validated on load.

    ``servers`` are hardware classes of ``configs/hardware.yaml``, one per cell;
    ``link_bps[i][j]`` the backhaul bandwidth from server i to j (diagonal ignored:
    local hand-over is free); ``placement[m]`` the servers hosting a replica of
    microservice m. ``backbone_card`` (a ``configs/model_cards.yaml`` name, or null)
    prices the LM-side microservices at that real model's size (see ``dynamics.py``);
    null keeps the profiled ``edge`` LM.
    """

    description: str = ""
    episode_length: int = field(default=400, metadata=bounds(1, 1_000_000))
    catalog_path: str | None = None  # a catalog JSON written by catalog.py; None = shipped
    servers: tuple[str, ...] = ("jetson_agx_orin", "jetson_agx_orin", "edge_gpu_l4", "edge_gpu_a10")
    link_bps: tuple[tuple[float, ...], ...] = (
        (0.0, 1e9, 1e9, 1e9),
        (1e9, 0.0, 1e9, 1e9),
        (1e9, 1e9, 0.0, 1e9),
        (1e9, 1e9, 1e9, 0.0),
    )
    hop_latency_s: float = field(default=0.002, metadata=bounds(0.0, 10.0))
    access_rate_bps: float = field(default=100e6, metadata=bounds(1e3, 1e12))
    transfer_energy_j_per_bit: float = field(default=2.0e-8, metadata=bounds(0.0, 1.0))
    placement: dict[str, tuple[int, ...]] = field(default_factory=dict)  # microservice -> hosting servers
    backbone_card: str | None = "Qwen2.5-0.5B"
    weight_bits: int = field(default=16, metadata=choices(4, 8, 16))
    slo_s: float = field(default=0.6, metadata=bounds(1e-3, 1e4))
    demand: DemandConfig = field(default_factory=DemandConfig)
    migration: MigrationConfig = field(default_factory=MigrationConfig)
    reward: RewardConfig = field(default_factory=RewardConfig)

    def cost_limit(self) -> float | None:
        """Per-episode limit of ``info["cost"]`` (migration energy, J): ``migration.budget_j_per_step`` x
        ``episode_length`` (one routing decision per step), or None when ``migration.enabled`` is false."""
        m = self.migration
        return m.budget_j_per_step * self.episode_length if m.enabled else None

    def validate(self) -> None:
        """Cross-field checks (catalog names, matrix shape, placement) -> ValueError naming the key."""
        from edgelam.envs.core.hardware import load_hardware_catalog
        from edgelam.envs.core.model_cards import load_model_cards
        from edgelam.envs.microservice_routing.catalog import MICROSERVICES, PIPELINES

        hw = load_hardware_catalog()
        k = len(self.servers)
        for i, name in enumerate(self.servers):
            if name not in hw:
                raise ValueError(f"servers[{i}]: unknown hardware {name!r} (catalog: {', '.join(hw)})")
        if len(self.link_bps) != k or any(len(row) != k for row in self.link_bps):
            raise ValueError(f"link_bps: expected a {k} x {k} matrix (one row and column per server)")
        for i, row in enumerate(self.link_bps):
            for j, bps in enumerate(row):
                if i != j and not bps > 0:
                    raise ValueError(f"link_bps[{i}][{j}]: must be > 0 bit/s off the diagonal, got {bps!r}")
        for name, hosts in self.placement.items():
            if name not in MICROSERVICES:
                raise ValueError(f"placement.{name}: unknown microservice (known: {', '.join(MICROSERVICES)})")
            if any(h < 0 or h >= k for h in hosts) or len(set(hosts)) != len(hosts):
                raise ValueError(f"placement.{name}: servers must be distinct indices in 0..{k - 1}, got {hosts}")
        d = self.demand
        for i, p in enumerate(d.pipelines):
            if p not in PIPELINES:
                raise ValueError(f"demand.pipelines[{i}]: unknown pipeline {p!r} (known: {', '.join(PIPELINES)})")
            missing = [m for m in PIPELINES[p] if not self.placement.get(m)]
            if missing:
                raise ValueError(f"placement: pipeline {p!r} needs a replica of {missing[0]!r}")
        if len(d.mix) != len(d.pipelines) or sum(d.mix) <= 0:
            raise ValueError("demand.mix: one non-negative weight per pipeline, with a positive sum")
        if d.hotspot_cell >= k:
            raise ValueError(f"demand.hotspot_cell: must be -1 or in 0..{k - 1}, got {d.hotspot_cell}")
        if self.backbone_card is not None and self.backbone_card not in load_model_cards():
            raise ValueError(f"backbone_card: unknown card {self.backbone_card!r}")
