"""Shared set-up of edgelam's batched replay vector envs (``vector_entry_point``)."""

from __future__ import annotations

from typing import Any

import gymnasium as gym
from gymnasium.vector import AutoresetMode, VectorEnv
from gymnasium.vector.utils import batch_space


class ReplayVectorEnv(VectorEnv):
    """Base of the numpy-batched vector envs: ``num_envs`` copies of one single env's scenario.

    :meth:`_setup` validates the arguments ``gym.make_vec`` passes, builds the single env
    whose scenario, tables and spaces the batch shares (``self.single``, ``self.config``),
    batches the spaces and sets ``episode_length`` to the scenario's (or to a smaller
    ``max_episode_steps`` passed to ``gym.make_vec``, as a ``TimeLimit`` would cut it).
    Replay backend only; Gymnasium's next-step autoreset.
    """

    metadata = {"render_modes": [], "autoreset_mode": AutoresetMode.NEXT_STEP}

    def _setup(
        self,
        single_cls: type[gym.Env],
        num_envs: int,
        scenario: str,
        backend: str,
        max_episode_steps: int | None,
        overrides: dict[str, Any],
    ) -> None:
        if not (isinstance(num_envs, int) and not isinstance(num_envs, bool) and num_envs >= 1):
            raise ValueError(f"num_envs: expected a positive int, got {num_envs!r}")
        if backend != "replay":
            raise ValueError(f"backend: the vector env runs the replay backend only, got {backend!r}")
        overrides.pop("render_mode", None)
        self.single = single_cls(scenario=scenario, backend="replay", **overrides)
        self.config = self.single.config
        # the ids register no max_episode_steps; one passed to gym.make_vec acts as a TimeLimit would
        self.episode_length = min(self.config.episode_length, max_episode_steps or self.config.episode_length)
        self.num_envs = num_envs
        self.single_action_space = self.single.action_space
        self.single_observation_space = self.single.observation_space
        self.action_space = batch_space(self.single_action_space, num_envs)
        self.observation_space = batch_space(self.single_observation_space, num_envs)
