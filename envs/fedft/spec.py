"""FedFTAllocation-v0 and FedFTPower-v0: the specs of the two ids over one federation simulator."""

from __future__ import annotations

from edgelam.envs.core.spec import EnvSpec

ALLOCATION = EnvSpec(
    id="edgelam/FedFTAllocation-v0",
    kind="gymnasium",
    entry_point="edgelam.envs.fedft.env:FedFTAllocationEnv",
    vector_entry_point="edgelam.envs.fedft.vector:FedFTAllocationVectorEnv",
    config="edgelam.envs.fedft.config:FedFTConfig",
    scenario_dir="fed_ft_allocation",
    baselines="edgelam.baselines.fedft",
    cost_keys=("virtual_queue",),
)

POWER = EnvSpec(
    id="edgelam/FedFTPower-v0",
    kind="pettingzoo",
    entry_point="edgelam.envs.fedft.env:parallel_env",
    batched_entry_point="edgelam.envs.fedft.vector:FedFTPowerGames",
    config="edgelam.envs.fedft.config:FedFTConfig",
    scenario_dir="fed_ft_power",
    baselines="edgelam.baselines.fedft",
    agents_key="num_devices",
    cost_keys=("virtual_queue",),
)

SPECS: tuple[EnvSpec, ...] = (ALLOCATION, POWER)
