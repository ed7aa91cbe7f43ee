"""Registration of every edgelam env id (string entry points, as Gymnasium does)."""

from __future__ import annotations

from gymnasium.envs.registration import register, registry

# id -> (entry point, vector entry point or None, max_episode_steps)
GYM_ENVS: dict[str, tuple[str, str | None, int]] = {}

# PettingZoo parallel envs: id -> "module:factory" returning a ParallelEnv
PARALLEL_ENVS: dict[str, str] = {}

ENV_IDS: list[str] = []


def register_all() -> None:
    """Register every Gymnasium env id once (idempotent)."""
    for env_id, (entry, vector_entry, max_steps) in GYM_ENVS.items():
        if env_id not in registry:
            register(
                id=env_id,
                entry_point=entry,
                vector_entry_point=vector_entry,
                max_episode_steps=max_steps,
            )
    ENV_IDS[:] = [*GYM_ENVS, *PARALLEL_ENVS]
