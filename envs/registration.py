"""Registration of every edgelam env id, derived from the env packages' specs.

:data:`SPEC_MODULES` lists the ``spec.py`` of each env package; their
:class:`~edgelam.envs.core.spec.EnvSpec` objects are the one source of every
id-keyed table: Gymnasium ids go into ``gymnasium.registry`` on ``import
edgelam.envs`` (string entry points, no ``max_episode_steps``: each env truncates
itself after its scenario's ``episode_length``, so an ``episode_length`` override is
the episode length); the PettingZoo parallel envs are built by :func:`make_parallel`
(and registered with PettingZoo where it has a registry). :data:`GYM_ENVS`,
:data:`PARALLEL_ENVS` and :data:`ENV_IDS` are views of the specs.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any

from gymnasium.envs.registration import register as gym_register
from gymnasium.envs.registration import registry

from edgelam.envs.core.spec import EnvSpec, load_attribute

# one line per env package: the module whose SPECS lists the package's env ids
SPEC_MODULES: tuple[str, ...] = (
    "edgelam.envs.split_inference.spec",
    "edgelam.envs.offload.spec",
    "edgelam.envs.microservice_routing.spec",
    "edgelam.envs.spec_decode.spec",
    "edgelam.envs.multi_user_offload.spec",
    "edgelam.envs.robust_routing.spec",
    "edgelam.envs.fedft.spec",
    "edgelam.envs.model_cache.spec",
)

SPECS: tuple[EnvSpec, ...] = tuple(s for m in SPEC_MODULES for s in importlib.import_module(m).SPECS)

_BY_ID: dict[str, EnvSpec] = {}

# Gymnasium ids: id -> (entry point, vector entry point or None)
GYM_ENVS: dict[str, tuple[str, str | None]] = {
    s.id: (s.entry_point, s.vector_entry_point) for s in SPECS if s.kind == "gymnasium"
}

# PettingZoo parallel envs: id -> "module:factory" returning a ParallelEnv (or the factory itself)
PARALLEL_ENVS: dict[str, str | Callable[..., Any]] = {s.id: s.entry_point for s in SPECS if s.kind == "pettingzoo"}

ENV_IDS: list[str] = [*GYM_ENVS, *PARALLEL_ENVS]


def find_spec(env_id: str) -> EnvSpec | None:
    """The spec registered under ``env_id`` (``None`` for an id without one, e.g. a plain Gymnasium id)."""
    return _BY_ID.get(env_id)


def register(spec: EnvSpec) -> None:
    """Register ``spec``: its id goes into Gymnasium's (or PettingZoo's) registry and the tables above.

    Registering the same spec again does nothing.

    Raises:
        ValueError: if another spec is registered under the same id.
    """
    known = _BY_ID.get(spec.id)
    if known is not None and known != spec:
        raise ValueError(f"env id {spec.id!r} is registered with another spec: {known}")
    _BY_ID[spec.id] = spec
    if spec.kind == "gymnasium":
        GYM_ENVS[spec.id] = (spec.entry_point, spec.vector_entry_point)
        if spec.id not in registry:
            gym_register(id=spec.id, entry_point=spec.entry_point, vector_entry_point=spec.vector_entry_point)
    else:
        PARALLEL_ENVS[spec.id] = spec.entry_point
        _register_pettingzoo(spec)
    if spec.id not in ENV_IDS:
        ENV_IDS.append(spec.id)


def register_all() -> None:
    """Register every spec of :data:`SPECS` once (idempotent)."""
    for spec in SPECS:
        register(spec)


def _register_pettingzoo(spec: EnvSpec) -> None:
    """``pettingzoo.register("parallel", id, entry_point)`` where PettingZoo has a registry."""
    try:
        from pettingzoo import parallel_registry
        from pettingzoo import register as pz_register
    except ImportError:  # an older PettingZoo without a registry: make_parallel() still works
        return
    if spec.id not in parallel_registry:
        pz_register("parallel", spec.id, spec.entry_point)


def make_parallel(env_id: str, **kwargs: Any):
    """Build the PettingZoo parallel env ``env_id`` (``scenario=``, ``backend=``, dotted overrides).

    Raises:
        ValueError: if ``env_id`` is not a registered PettingZoo env.
    """
    if env_id not in PARALLEL_ENVS:
        known = ", ".join(sorted(PARALLEL_ENVS)) or "none"
        raise ValueError(f"unknown PettingZoo env id {env_id!r} (registered: {known})")
    entry = PARALLEL_ENVS[env_id]
    factory = load_attribute(entry) if isinstance(entry, str) else entry
    return factory(**kwargs)


def make_batched(env_id: str, num_games: int = 1, **kwargs: Any):
    """Build the batched parallel game of ``env_id``: ``num_games`` games of its agents in arrays.

    The spec's ``batched_entry_point`` with ``num_games=`` and the env's ``scenario=`` and dotted
    overrides (replay backend). ``edgelam.envs.core.vector.AgentRowsVectorEnv`` views its agent
    rows as one vector env (parameter sharing).

    Raises:
        ValueError: if ``env_id`` has no batched game.
    """
    spec = find_spec(env_id)
    if spec is None or spec.batched_entry_point is None:
        known = ", ".join(s.id for s in _BY_ID.values() if s.batched_entry_point) or "none"
        raise ValueError(f"{env_id!r} has no batched parallel game (ids with one: {known})")
    return load_attribute(spec.batched_entry_point)(num_games=num_games, **kwargs)
