"""SpecDecode-v0: the spec of its id (registered by :mod:`edgelam.envs.registration`)."""

from __future__ import annotations

from edgelam.envs.core.spec import EnvSpec

SPEC = EnvSpec(
    id="edgelam/SpecDecode-v0",
    kind="gymnasium",
    entry_point="edgelam.envs.spec_decode.env:SpecDecodeEnv",
    vector_entry_point="edgelam.envs.spec_decode.vector:SpecDecodeVectorEnv",
    config="edgelam.envs.spec_decode.config:SpecDecodeConfig",
    scenario_dir="spec_decode",
    baselines="edgelam.baselines.spec_decode",
    cost_keys=("virtual_queue",),
)

SPECS: tuple[EnvSpec, ...] = (SPEC,)
