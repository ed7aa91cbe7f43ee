"""What the hindsight tests of several envs check the same way: brute force on toys, plans that return their
value, and a hindsight value at least every baseline's return on the same episodes."""

from __future__ import annotations

import copy
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import pytest

from edgelam import baselines
from edgelam.agents.evaluate import evaluate
from edgelam.baselines.hindsight import fork


def _play_step(sim: Any, action: Any) -> tuple[float, bool]:
    _, reward, terminated, truncated, _ = sim.step(copy.copy(action))
    return float(reward), bool(terminated or truncated)


def brute_force(env: Any, actions: Sequence[Any], steps: int | None = None,
                play: Callable[[Any, Any], tuple[float, bool]] = _play_step, restore: bool = False) -> float:
    """The best return over every sequence of ``actions`` from ``env``'s state, depth-first with the env's real
    step, to the episode's end or over ``steps`` decisions. ``play(sim, action)`` steps and gives (reward,
    whether the episode ended). Each branch steps a fork of its parent; with ``restore`` (an env whose
    ``state.copy()`` and ``np_random`` are all it carries between steps) one fork is rewound to the parent's
    state and generator instead, far cheaper where a fork copies large read-only tables."""
    sim = fork(getattr(env, "unwrapped", env))

    def best(node: Any, depth: int) -> float:
        if steps is not None and depth == steps:
            return 0.0
        saved = (node.state.copy(), copy.deepcopy(node.np_random)) if restore else None
        out = -np.inf
        for action in actions:
            if saved is not None:
                node.state, node.np_random = saved[0].copy(), copy.deepcopy(saved[1])
                child = node
            else:
                child = fork(node)
            reward, done = play(child, action)
            out = max(out, reward + (0.0 if done else best(child, depth + 1)))
        return out

    return best(sim, 0)


def assert_exact_plans_return_their_value(env_id: str, seed: int, episodes: int = 3, **kwargs: Any) -> None:
    """Every episode's hindsight is exact, not a fallback, and returns its value."""
    for row in evaluate("hindsight", env_id, episodes, seed, **kwargs):
        assert row["hindsight_exact"] == 1.0 and row["hindsight_fallback"] == 0.0
        assert row["return"] == pytest.approx(row["hindsight_value"], rel=1e-9)


def hindsight_margins(env_id: str, seed: int, episodes: int = 3, rel: float = 1e-9, **kwargs: Any
                      ) -> dict[str, float]:
    """Per other baseline, the mean of hindsight's value minus its return on the same episodes, after checking
    that the value is at least the return on each episode (to ``rel`` of the value)."""
    value = [r["hindsight_value"] for r in evaluate("hindsight", env_id, episodes, seed, **kwargs)]
    margins = {}
    for name in baselines.available(env_id):
        if name == "hindsight":
            continue
        returns = [r["return"] for r in evaluate(name, env_id, episodes, seed, **kwargs)]
        for v, r in zip(value, returns, strict=True):
            assert v >= r - rel * max(1.0, abs(v)), name
        margins[name] = float(np.mean(value) - np.mean(returns))
    return margins
