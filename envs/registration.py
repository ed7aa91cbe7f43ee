"""Registration of every edgelam env id (string entry points, as Gymnasium does).

Gymnasium ids go into ``gymnasium.registry`` on ``import edgelam.envs``; the
PettingZoo parallel envs are built by :func:`make_parallel` (PettingZoo has no
registry of ids), whose factories each env package also exposes as
``parallel_env()``.
"""

from __future__ import annotations

import importlib
from typing import Any

from gymnasium.envs.registration import register, registry

# id -> (entry point, vector entry point or None). No max_episode_steps: each env truncates itself after its
# scenario's episode_length, so that an episode_length override is the episode length (edgelam.envs.core.episode).
GYM_ENVS: dict[str, tuple[str, str | None]] = {
    "edgelam/SplitInference-v0": (
        "edgelam.envs.split_inference.env:SplitInferenceEnv",
        "edgelam.envs.split_inference.vector:SplitInferenceVectorEnv",
    ),
    "edgelam/Offload-v0": (
        "edgelam.envs.offload.env:OffloadEnv",
        "edgelam.envs.offload.vector:OffloadVectorEnv",
    ),
    "edgelam/MicroserviceRouting-v0": ("edgelam.envs.microservice_routing.env:MicroserviceRoutingEnv", None),
    "edgelam/SpecDecode-v0": (
        "edgelam.envs.spec_decode.env:SpecDecodeEnv",
        "edgelam.envs.spec_decode.vector:SpecDecodeVectorEnv",
    ),
    "edgelam/FedFTAllocation-v0": ("edgelam.envs.fedft.env:FedFTAllocationEnv", None),
}

# PettingZoo parallel envs: id -> "module:factory" returning a ParallelEnv
PARALLEL_ENVS: dict[str, str] = {
    "edgelam/MultiUserOffload-v0": "edgelam.envs.multi_user_offload.env:parallel_env",
    "edgelam/RobustRouting-v0": "edgelam.envs.robust_routing.env:parallel_env",
    "edgelam/FedFTPower-v0": "edgelam.envs.fedft.env:parallel_env",
}

ENV_IDS: list[str] = [*GYM_ENVS, *PARALLEL_ENVS]


def register_all() -> None:
    """Register every Gymnasium env id once, and the PettingZoo ids where PettingZoo has a registry (idempotent)."""
    for env_id, (entry, vector_entry) in GYM_ENVS.items():
        if env_id not in registry:
            register(id=env_id, entry_point=entry, vector_entry_point=vector_entry)
    _register_pettingzoo()


def _register_pettingzoo() -> None:
    """``pettingzoo.register("parallel", id, entry_point)`` for each parallel env (PettingZoo with a registry)."""
    try:
        from pettingzoo import parallel_registry
        from pettingzoo import register as pz_register
    except ImportError:  # an older PettingZoo without a registry: make_parallel() still works
        return
    for env_id, entry in PARALLEL_ENVS.items():
        if env_id not in parallel_registry:
            pz_register("parallel", env_id, entry)


def make_parallel(env_id: str, **kwargs: Any):
    """Build the PettingZoo parallel env ``env_id`` (``scenario=``, ``backend=``, dotted overrides).

    Raises:
        ValueError: if ``env_id`` is not a registered PettingZoo env.
    """
    if env_id not in PARALLEL_ENVS:
        known = ", ".join(sorted(PARALLEL_ENVS)) or "none"
        raise ValueError(f"unknown PettingZoo env id {env_id!r} (registered: {known})")
    module, factory = PARALLEL_ENVS[env_id].split(":")
    return getattr(importlib.import_module(module), factory)(**kwargs)
