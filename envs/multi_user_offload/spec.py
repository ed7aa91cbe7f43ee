"""MultiUserOffload-v0: the spec of its id (registered by :mod:`edgelam.envs.registration`)."""

from __future__ import annotations

from edgelam.envs.core.spec import EnvSpec

SPEC = EnvSpec(
    id="edgelam/MultiUserOffload-v0",
    kind="pettingzoo",
    entry_point="edgelam.envs.multi_user_offload.env:parallel_env",
    batched_entry_point="edgelam.envs.multi_user_offload.vector:MultiUserOffloadGames",
    config="edgelam.envs.multi_user_offload.config:MultiUserOffloadConfig",
    scenario_dir="multi_user_offload",
    baselines="edgelam.baselines.multi_user_offload",
    agents_key="num_users",
)

SPECS: tuple[EnvSpec, ...] = (SPEC,)
