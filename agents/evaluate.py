"""The one evaluation loop every policy goes through (SB3 agents and baselines alike).

Episode ``i`` resets with ``seed + i``, so every policy evaluated with the same
``seed`` and ``episodes`` sees the same episodes. Each episode yields a row:

* ``episode``, ``seed``: the episode index and its reset seed;
* ``return``: sum of rewards; ``length``: steps;
* every scalar numeric ``info`` key (bools as 0/1): its **sum** over the episode
  if the key is listed in the env's ``metadata["info_sums"]``, its **mean** over
  the steps that reported it otherwise. Dict, array and string values are skipped;
* ``cost``: the episode cost, the sum of ``info["cost"]`` (Safety-Gymnasium's
  convention; in the env's unit, ``metadata["info_units"]["cost"]``), where the env reports one;
* ``cost_violation``: 1.0 if that cost is above the scenario's per-episode limit
  (:func:`edgelam.agents.common.cost_limit`, the spec's ``cost_limit``), else 0.0;
  only where the scenario has a limit;
* ``hindsight_value``, ``hindsight_exact``, ``hindsight_bound``, ``hindsight_fallback``: for the
  ``hindsight`` baseline, its plan's value, kind and solver fallback
  (:func:`edgelam.baselines.hindsight.plan_row`).

:func:`summarize` turns rows into mean, Student-t 95% CI half-width and count.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import gymnasium as gym
import numpy as np
from stable_baselines3.common.utils import set_random_seed

from edgelam.agents.common import (
    ParallelFactory,
    action_mask,
    cost_limit,
    info_sums,
    is_parallel,
    make_env,
    with_cost_violation,
)
from edgelam.agents.marl import evaluate_parallel
from edgelam.agents.metrics import (
    HINDSIGHT_POLICY,
    RANDOM_POLICY,
    EpisodeMetrics,
    normalised_scores,
    summarize,
)
from edgelam.agents.policies import PolicySpec, accepts_masks, resolve_policy, to_env_action
from edgelam.baselines.hindsight import plan_row

__all__ = ["evaluate", "play_episode", "score", "summarize"]


def evaluate(
    policy: PolicySpec | Mapping[str, PolicySpec],
    env_id: str | ParallelFactory,
    episodes: int = 10,
    seed: int = 0,
    scenario: str = "default",
    env_kwargs: Mapping[str, Any] | None = None,
    deterministic: bool = True,
) -> list[dict[str, float]]:
    """Evaluate a policy for ``episodes`` episodes of ``env_id``.

    Args:
        policy: anything with SB3's ``predict`` (an SB3 model, a baseline); a
            baseline name (built with ``edgelam.baselines.make(name, env)`` on the
            env being evaluated; ``random`` is seeded with ``seed``); a path to a
            saved ``model.zip`` or run folder (algorithm from its ``meta.json``,
            VecNormalize statistics applied when saved); a callable ``env -> policy``.
            For parallel envs also a mapping agent -> any of these.
        env_id: a Gymnasium id, or a parallel env id / factory
            (:func:`edgelam.agents.marl.evaluate_parallel`).
        episodes: number of episodes.
        seed: reset seed of the first episode (episode ``i`` uses ``seed + i``); also
            seeds torch and NumPy, so ``deterministic=False`` is reproducible too.
        scenario: scenario name or YAML path.
        env_kwargs: dotted scenario overrides passed to the env constructor.
        deterministic: passed to ``predict``.

    Returns:
        One row per episode (keys in the module docstring). MaskablePPO-like
        policies get the env's ``action_masks()`` (or ``info["action_mask"]``).
    """
    if not isinstance(env_id, str) or is_parallel(env_id):
        return evaluate_parallel(policy, env_id, episodes, seed, scenario, env_kwargs, deterministic)
    if isinstance(policy, Mapping):
        raise ValueError(f"{env_id} is a single-agent env: give one policy, not a mapping")
    env = make_env(env_id, scenario, env_kwargs)
    set_random_seed(seed)
    agent = resolve_policy(policy, env, seed)
    sums = info_sums(env.metadata)
    limit = cost_limit(env_id, scenario, env_kwargs)
    rows = []
    for episode in range(episodes):
        metrics = EpisodeMetrics(sums)
        play_episode(env, agent, seed + episode, deterministic, lambda _a, r, i, m=metrics: m.add(r, i))
        row = {"episode": episode, "seed": seed + episode, **metrics.row()}
        row.update(plan_row(getattr(agent, "last_plan", None)))
        rows.append(with_cost_violation(row, limit))
    env.close()
    return rows


def play_episode(
    env: gym.Env, agent: Any, seed: int, deterministic: bool, on_step: Callable[[Any, float, dict], None]
) -> None:
    """One episode of ``agent`` on ``env`` from ``reset(seed=seed)``; ``on_step(action, reward, info)`` per step.

    MaskablePPO-like agents get the env's current action mask.
    """
    masked = accepts_masks(agent)
    observation, info = env.reset(seed=seed)
    state = None
    start = True
    done = False
    while not done:
        extra = {}
        if masked:
            mask = action_mask(env, observation, info)
            if mask is not None:
                extra["action_masks"] = mask
        action, state = agent.predict(
            observation, state=state, episode_start=np.array([start]), deterministic=deterministic, **extra
        )
        start = False
        env_action = to_env_action(env.action_space, action)
        observation, reward, terminated, truncated, info = env.step(env_action)
        on_step(env_action, reward, info)
        done = terminated or truncated


def score(
    rows: list[dict[str, float]],
    env_id: str | ParallelFactory,
    seed: int = 0,
    scenario: str = "default",
    env_kwargs: Mapping[str, Any] | None = None,
    wrap: Callable[[str], Any] = lambda name: name,
) -> tuple[float, float, int]:
    """The normalised score of the episodes ``rows`` (as :func:`evaluate` returned them).

    Evaluates the ``random`` and ``hindsight`` baselines on the same episodes (the same reset
    seeds, from ``seed``) and returns :func:`edgelam.agents.metrics.normalised_score`'s
    ``(score, ci95_halfwidth, n)``: random scores 0, hindsight 1. ``wrap`` turns a baseline name
    into the policy spec to evaluate (e.g. a mapping with the adversary of an adversarial env).

    Raises:
        ValueError: the env has no ``hindsight`` baseline.
    """
    episodes = len(rows)
    tagged = [{**r, "policy": "policy"} for r in rows]
    for name in (RANDOM_POLICY, HINDSIGHT_POLICY):
        tagged += [{**r, "policy": name} for r in evaluate(wrap(name), env_id, episodes, seed, scenario, env_kwargs)]
    result = normalised_scores(tagged, ["policy"])
    if "policy" not in result:
        raise ValueError(f"score: no hindsight episodes for {env_id}")
    return result["policy"]
