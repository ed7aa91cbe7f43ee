"""One agent's view of a parallel game whose other agents act through fixed policies (RARL's phases).

:class:`OpponentView` is one copy as a single-agent Gymnasium env; :func:`one_side_vec_env`
is ``n_envs`` games of the env's batched parallel game, one agent's rows (the game's
``one_side`` view, e.g. :class:`edgelam.envs.robust_routing.vector.OneSideVectorEnv`) behind
:class:`~edgelam.agents.vec.SB3VectorAdapter`, no Python loop over copies.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, ClassVar

import gymnasium as gym
from pettingzoo import ParallelEnv
from stable_baselines3.common.vec_env import VecEnv

from edgelam.agents.common import ParallelFactory, env_kwargs_for
from edgelam.agents.policies import to_env_action
from edgelam.agents.vec import SB3VectorAdapter
from edgelam.baselines import Policy
from edgelam.envs import registration


class OpponentView(gym.Env):
    """One agent's view of a parallel env; every other agent acts through a fixed policy.

    Args:
        env_fn: builds the parallel env (this view owns its instance).
        agent: the learning agent.
        opponents: agent -> policy for every other agent; read at each step, so
            the mapping may be filled or changed after construction.
        zero_sum_with: if set, the reward is minus this agent's reward
            (the RARL adversary); otherwise the env's reward of ``agent``.
        deterministic_opponents: passed to the opponents' ``predict``.

    ``info`` carries the env's info of ``agent`` plus ``agent_rewards`` (every
    agent's reward of the step).
    """

    metadata: ClassVar[dict[str, Any]] = {"render_modes": []}
    render_mode = None

    def __init__(
        self,
        env_fn: Callable[[], ParallelEnv],
        agent: str,
        opponents: Mapping[str, Policy],
        zero_sum_with: str | None = None,
        deterministic_opponents: bool = False,
    ) -> None:
        self.env = env_fn()
        if agent not in self.env.possible_agents:
            raise ValueError(f"unknown agent {agent!r} (agents: {self.env.possible_agents})")
        self.agent = agent
        self.opponents = opponents
        self.zero_sum_with = zero_sum_with
        self.deterministic_opponents = deterministic_opponents
        self.observation_space = self.env.observation_space(agent)
        self.action_space = self.env.action_space(agent)
        self._observations: dict[str, Any] = {}

    def reset(self, *, seed: int | None = None, options: dict | None = None) -> tuple[Any, dict]:
        """Reset the parallel env; returns the learning agent's observation and info."""
        super().reset(seed=seed)
        self._observations, infos = self.env.reset(seed=seed, options=options)
        return self._observations[self.agent], dict(infos.get(self.agent, {}))

    def step(self, action: Any) -> tuple[Any, float, bool, bool, dict]:
        """Step every agent: ``action`` for the learner, the opponents' policies for the rest."""
        actions = {self.agent: to_env_action(self.action_space, action)}
        for other in self.env.agents:
            if other != self.agent:
                other_action, _ = self.opponents[other].predict(
                    self._observations[other], deterministic=self.deterministic_opponents
                )
                actions[other] = to_env_action(self.env.action_space(other), other_action)
        self._observations, rewards, terminations, truncations, infos = self.env.step(actions)
        if self.zero_sum_with is not None:
            reward = -float(rewards[self.zero_sum_with])
        else:
            reward = float(rewards[self.agent])
        info = {**infos.get(self.agent, {}), "agent_rewards": {a: float(r) for a, r in rewards.items()}}
        terminated = bool(terminations.get(self.agent, False))
        truncated = bool(truncations.get(self.agent, False)) or not self.env.agents
        return self._observations.get(self.agent), reward, terminated, truncated, info

    def close(self) -> None:
        """Close the parallel env."""
        self.env.close()



def one_side_vec_env(
    env: str | ParallelFactory,
    n_envs: int,
    seed: int | None,
    scenario: str = "default",
    env_kwargs: Mapping[str, Any] | None = None,
    **view_kwargs: Any,
) -> VecEnv:
    """An SB3 VecEnv of one agent's rows of ``n_envs`` games of the env's batched game, the other agent fixed.

    ``view_kwargs`` (``agent``, ``opponents``, ``zero_sum_with``) as :class:`OpponentView`'s; the
    game's ``one_side`` builds the view (opponents predict on a batch of observations).

    Raises:
        ValueError: if ``env`` is not an id whose spec has a batched game (replay backend) with a
            ``one_side`` view.
    """
    spec = registration.find_spec(env) if isinstance(env, str) else None
    backend = dict(env_kwargs or {}).get("backend", "replay")
    if spec is None or spec.batched_entry_point is None or backend != "replay":
        raise ValueError(f"batched: {env!r} has no batched parallel game (an id whose spec has a "
                         f"batched_entry_point, replay backend)")
    game = registration.make_batched(env, num_games=n_envs, **env_kwargs_for(scenario, env_kwargs))
    if not callable(getattr(game, "one_side", None)):
        raise ValueError(f"batched: {env}'s batched game has no one_side() view of one agent's rows")
    venv = SB3VectorAdapter(game.one_side(**view_kwargs))
    venv.seed(seed)
    venv.action_space.seed(seed)
    return venv
