"""SplitInference-v0: the spec of its id (registered by :mod:`edgelam.envs.registration`)."""

from __future__ import annotations

from edgelam.envs.core.spec import EnvSpec

SPEC = EnvSpec(
    id="edgelam/SplitInference-v0",
    kind="gymnasium",
    entry_point="edgelam.envs.split_inference.env:SplitInferenceEnv",
    vector_entry_point="edgelam.envs.split_inference.vector:SplitInferenceVectorEnv",
    config="edgelam.envs.split_inference.config:SplitInferenceConfig",
    scenario_dir="split_inference",
    baselines="edgelam.baselines.split_inference",
    cost_keys=("virtual_queue", "budget_excess_j"),
)

SPECS: tuple[EnvSpec, ...] = (SPEC,)
