"""RobustRouting-v0: the spec of its id (registered by :mod:`edgelam.envs.registration`)."""

from __future__ import annotations

from edgelam.envs.core.spec import EnvSpec

SPEC = EnvSpec(
    id="edgelam/RobustRouting-v0",
    kind="pettingzoo",
    entry_point="edgelam.envs.robust_routing.env:parallel_env",
    batched_entry_point="edgelam.envs.robust_routing.vector:RobustRoutingGames",
    config="edgelam.envs.robust_routing.config:RobustRoutingConfig",
    scenario_dir="robust_routing",
    baselines="edgelam.baselines.microservice_routing",
)

SPECS: tuple[EnvSpec, ...] = (SPEC,)
