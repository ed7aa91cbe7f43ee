"""Scenario of RobustRouting-v0: a MicroserviceRouting-v0 scenario plus the adversary's budget."""

from __future__ import annotations

from dataclasses import dataclass, field

from edgelam.envs.core.config import bounds
from edgelam.envs.microservice_routing.config import MicroserviceRoutingConfig


@dataclass(frozen=True)
class AdversaryConfig:
    """How far the adversary may perturb demand (Pinto et al., ICML 2017: a bounded adversary).

    Per arrival, with the adversary's action a in [-1, 1]^(P + 1 + K):
    mix' = (1 - mix_budget) mix + mix_budget softmax(3 a_mix) (total variation <= mix_budget);
    rate' = rate (1 + rate_budget a_rate); with probability ``cell_budget`` the request's
    user is moved to a cell drawn from softmax(3 a_cell).
    """

    mix_budget: float = field(default=0.3, metadata=bounds(0.0, 1.0))
    rate_budget: float = field(default=0.3, metadata=bounds(0.0, 0.99))
    cell_budget: float = field(default=0.3, metadata=bounds(0.0, 1.0))


@dataclass(frozen=True)
class RobustRoutingConfig(MicroserviceRoutingConfig):
    """MicroserviceRouting-v0 fields (migration must stay disabled) + ``adversary``."""

    adversary: AdversaryConfig = field(default_factory=AdversaryConfig)

    def validate(self) -> None:
        """The routing checks, and no migration (the router's action space is Discrete(K))."""
        super().validate()
        if self.migration.enabled:
            raise ValueError("migration.enabled: RobustRouting-v0 routes only; use MicroserviceRouting-v0")
