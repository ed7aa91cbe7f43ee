"""Baseline policies with SB3's ``predict`` interface, and the solvers they use.

``make(name, env)`` builds baseline ``name`` for the env instance ``env`` (the
env it will be evaluated on: oracles read its true state through
``env.unwrapped``); ``available(env_id)`` lists the names for an env id. The module
that registers an env's baselines is named by its spec (``EnvSpec.baselines``) and
imported on first use.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any, Protocol

import gymnasium as gym
import numpy as np

from edgelam.envs import registration


class Policy(Protocol):
    """What the evaluation loop calls: SB3's ``predict`` signature."""

    def predict(
        self,
        observation: Any,
        state: Any = None,
        episode_start: np.ndarray | None = None,
        deterministic: bool = True,
    ) -> tuple[Any, Any]: ...


Factory = Callable[[gym.Env], Policy]

_REGISTRY: dict[str, dict[str, Factory]] = {}


def register(env_id: str, name: str, factory: Factory) -> None:
    """Register baseline ``name`` for ``env_id`` (a later call replaces it)."""
    _REGISTRY.setdefault(env_id, {})[name] = factory


def _load(env_id: str) -> dict[str, Factory]:
    """The factories of ``env_id``, after importing the baselines module its spec names."""
    spec = registration.find_spec(env_id)
    if spec is not None and spec.baselines is not None:
        importlib.import_module(spec.baselines)
    return _REGISTRY.get(env_id, {})


def available(env_id: str) -> list[str]:
    """Names of the baselines registered for ``env_id`` (``random`` is always there)."""
    return ["random", *sorted(n for n in _load(env_id) if n != "random")]


class RandomPolicy:
    """Uniform random actions from the env's action space, from a generator seeded with ``seed``."""

    def __init__(self, env: gym.Env, seed: int | None = None) -> None:
        self.action_space = env.action_space
        self.rng = np.random.default_rng(seed)

    def predict(self, observation, state=None, episode_start=None, deterministic=True):
        del observation, episode_start, deterministic
        space = self.action_space
        if isinstance(space, gym.spaces.Discrete):
            return np.int64(space.start + self.rng.integers(space.n)), state
        if isinstance(space, gym.spaces.MultiDiscrete):
            return (space.start + self.rng.integers(space.nvec)).astype(space.dtype), state
        if isinstance(space, gym.spaces.Box):
            return self.rng.uniform(space.low, space.high).astype(space.dtype), state
        raise ValueError(f"random baseline: unsupported action space {space}")


def make(name: str, env: gym.Env, **kwargs: Any) -> Policy:
    """Build baseline ``name`` for ``env``.

    Raises:
        ValueError: if no baseline of that name exists for the env's id.
    """
    env_id = env.spec.id if env.spec is not None else getattr(env, "env_id", None)
    if env_id is None:
        raise ValueError("baselines.make: env has no spec id; create it with gym.make or edgelam's factory")
    factories = _load(env_id)
    if name == "random" and "random" not in factories:
        return RandomPolicy(env, **kwargs)
    if name not in factories:
        raise ValueError(
            f"unknown baseline {name!r} for {env_id} (available: {', '.join(available(env_id))})"
        )
    return factories[name](env, **kwargs)
