"""EdgeModelCache-v0: the spec of its id (registered by :mod:`edgelam.envs.registration`)."""

from __future__ import annotations

from edgelam.envs.core.spec import EnvSpec

SPEC = EnvSpec(
    id="edgelam/EdgeModelCache-v0",
    kind="gymnasium",
    entry_point="edgelam.envs.model_cache.env:EdgeModelCacheEnv",
    vector_entry_point="edgelam.envs.model_cache.vector:EdgeModelCacheVectorEnv",
    config="edgelam.envs.model_cache.config:ModelCacheConfig",
    scenario_dir="model_cache",
    baselines="edgelam.baselines.model_cache",
    cost_keys=("virtual_queue",),
)

SPECS: tuple[EnvSpec, ...] = (SPEC,)
