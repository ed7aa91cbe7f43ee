"""Offload-v0: the spec of its id (registered by :mod:`edgelam.envs.registration`)."""

from __future__ import annotations

from edgelam.envs.core.spec import EnvSpec

SPEC = EnvSpec(
    id="edgelam/Offload-v0",
    kind="gymnasium",
    entry_point="edgelam.envs.offload.env:OffloadEnv",
    vector_entry_point="edgelam.envs.offload.vector:OffloadVectorEnv",
    config="edgelam.envs.offload.config:OffloadConfig",
    scenario_dir="offload",
    baselines="edgelam.baselines.offload",
    cost_keys=("virtual_queue",),
)

SPECS: tuple[EnvSpec, ...] = (SPEC,)
