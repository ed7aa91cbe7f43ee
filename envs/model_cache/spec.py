"""EdgeModelCache-v0 and CooperativeModelCache-v0: the specs of their ids (registered by ``envs.registration``)."""

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

COOPERATIVE_SPEC = EnvSpec(
    id="edgelam/CooperativeModelCache-v0",
    kind="pettingzoo",
    entry_point="edgelam.envs.model_cache.cooperative:parallel_env",
    batched_entry_point="edgelam.envs.model_cache.cooperative:CooperativeCacheGames",
    config="edgelam.envs.model_cache.config:CooperativeCacheConfig",
    scenario_dir="cooperative_cache",
    baselines="edgelam.baselines.cooperative_cache",
    agents_key="num_edges",
    backends=("replay", "live"),
    cost_keys=("virtual_queue",),
)

SPECS: tuple[EnvSpec, ...] = (SPEC, COOPERATIVE_SPEC)
