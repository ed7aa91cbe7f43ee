"""MicroserviceRouting-v0: the spec of its id (registered by :mod:`edgelam.envs.registration`)."""

from __future__ import annotations

from edgelam.envs.core.spec import EnvSpec

SPEC = EnvSpec(
    id="edgelam/MicroserviceRouting-v0",
    kind="gymnasium",
    entry_point="edgelam.envs.microservice_routing.env:MicroserviceRoutingEnv",
    vector_entry_point="edgelam.envs.microservice_routing.vector:MicroserviceRoutingVectorEnv",
    config="edgelam.envs.microservice_routing.config:MicroserviceRoutingConfig",
    scenario_dir="microservice_routing",
    baselines="edgelam.baselines.microservice_routing",
    cost_keys=("virtual_queue",),
)

SPECS: tuple[EnvSpec, ...] = (SPEC,)
