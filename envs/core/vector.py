"""Shared set-up of edgelam's batched replay vector envs (``vector_entry_point``), and the agent-row
view of a batched parallel game (``batched_entry_point``) that parameter sharing trains on."""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium.vector import AutoresetMode, VectorEnv
from gymnasium.vector.utils import batch_space


def partial_reset_mask(options: dict[str, Any] | None, seed: Any, num_rows: int) -> np.ndarray | None:
    """The rows a partial reset marks (Gymnasium's ``reset(options={"reset_mask": mask})``), validated.

    Returns the bool mask (``num_rows``,), or None for a full reset: no mask, or one that marks
    every row (then ``reset`` goes on as a full reset without a seed).

    Raises:
        ValueError: if the mask is not a bool array of ``num_rows`` with a True, or a ``seed`` comes
            with it (a partial reset continues the batch's one generator).
    """
    mask = None if options is None else options.get("reset_mask")
    if mask is None:
        return None
    mask = np.asarray(mask)
    if mask.shape != (num_rows,) or mask.dtype != np.bool_ or not mask.any():
        raise ValueError(f"options['reset_mask']: expected a bool array ({num_rows},) with a True, got {mask!r}")
    if seed is not None:
        raise ValueError("seed: a partial reset (options['reset_mask']) continues the generator; pass no seed")
    return None if mask.all() else mask


def check_batch_arguments(count_name: str, count: Any, backend: str, overrides: dict[str, Any], what: str) -> None:
    """The checks every batched simulator makes of its constructor: ``count`` (``num_envs`` /
    ``num_games``) a positive int, the replay backend; a ``render_mode`` that ``gym.make_vec``
    passes is dropped from ``overrides`` (batched simulators do not render).

    Raises:
        ValueError: naming ``count_name`` or ``backend`` (``what``: "vector env", "batched game").
    """
    if not (isinstance(count, int) and not isinstance(count, bool) and count >= 1):
        raise ValueError(f"{count_name}: expected a positive int, got {count!r}")
    if backend != "replay":
        raise ValueError(f"backend: the {what} runs the replay backend only, got {backend!r}")
    overrides.pop("render_mode", None)


class ReplayVectorEnv(VectorEnv):
    """Base of the numpy-batched vector envs: ``num_envs`` copies of one single env's scenario.

    :meth:`_setup` validates the arguments ``gym.make_vec`` passes, builds the single env
    whose scenario, tables and spaces the batch shares (``self.single``, ``self.config``),
    batches the spaces and sets ``episode_length`` to the scenario's (or to a smaller
    ``max_episode_steps`` passed to ``gym.make_vec``, as a ``TimeLimit`` would cut it).
    The simulator is built with that length, so ``episode_length`` is read-only afterwards
    (setting it, e.g. through SB3's ``set_attr``, raises ``AttributeError``).
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
        check_batch_arguments("num_envs", num_envs, backend, overrides, "vector env")
        self.single = single_cls(scenario=scenario, backend="replay", **overrides)
        self.config = self.single.config
        # the ids register no max_episode_steps; one passed to gym.make_vec acts as a TimeLimit would
        self._episode_length = min(self.config.episode_length, max_episode_steps or self.config.episode_length)
        self.num_envs = num_envs
        self.single_action_space = self.single.action_space
        self.single_observation_space = self.single.observation_space
        self.action_space = batch_space(self.single_action_space, num_envs)
        self.observation_space = batch_space(self.single_observation_space, num_envs)

    @property
    def episode_length(self) -> int:
        """Steps after which every copy truncates (fixed when the vector env is built)."""
        return self._episode_length

    @episode_length.setter
    def episode_length(self, value: int) -> None:
        raise AttributeError(
            f"episode_length is fixed when the vector env is built ({self._episode_length}); build it with "
            f"episode_length={value!r} (a scenario override) or max_episode_steps={value!r} (gym.make_vec)"
        )


class AgentRowsVectorEnv(VectorEnv):
    """The B x N agent rows of a batched parallel game as one Gymnasium vector env (parameter sharing).

    ``game`` plays B games of N agents with arrays (B, N, ...) (``num_games``,
    ``num_agents``, ``single_observation_space``, ``single_action_space``, ``reset`` and
    ``step`` as :class:`edgelam.envs.multi_user_offload.vector.MultiUserOffloadGames`). Row
    ``g N + i`` is agent ``i`` of game ``g``: observations (B N, ...), actions (B N, ...),
    rewards, terminations and truncations (B N,); a per-agent ``info`` array (B, N) becomes
    (B N,), a per-game one (B,) and every ``_key`` mask is repeated for the game's N rows.
    A partial reset mask (B N,) must cover whole games (the agents of a game share its
    episode). Next-step autoreset, as the game's; SB3 trains on it through
    :class:`edgelam.agents.vec.SB3VectorAdapter`. A game without ``single_action_space`` (agents
    with spaces of their own, as RobustRouting's router and adversary) raises ``ValueError``.
    """

    metadata = {"render_modes": [], "autoreset_mode": AutoresetMode.NEXT_STEP}

    def __init__(self, game: Any) -> None:
        if not hasattr(game, "single_action_space"):  # a game whose agents have spaces of their own
            raise ValueError(
                f"parameter sharing needs one observation and action space for all agents; the agents "
                f"{game.possible_agents} of {type(game).__name__} differ (train them apart, e.g. with RARL)"
            )
        self.game = game
        self.num_games, self.num_agents = game.num_games, game.num_agents
        self.num_envs = self.num_games * self.num_agents
        self.single_observation_space = game.single_observation_space
        self.single_action_space = game.single_action_space
        self.observation_space = batch_space(self.single_observation_space, self.num_envs)
        self.action_space = batch_space(self.single_action_space, self.num_envs)

    def _rows(self, value: Any) -> Any:
        arr = np.asarray(value)
        if arr.shape[:2] == (self.num_games, self.num_agents):
            return arr.reshape(self.num_envs, *arr.shape[2:])
        if arr.shape[:1] == (self.num_games,):
            return np.repeat(arr, self.num_agents, axis=0)
        return value

    def _info(self, info: dict[str, Any]) -> dict[str, Any]:
        return {key: self._rows(value) for key, value in info.items()}

    def reset(self, *, seed: int | list[int] | None = None, options: dict[str, Any] | None = None):
        """Reset every game, or the games whose rows ``options["reset_mask"]`` (bool (B N,)) marks."""
        if options is not None and options.get("reset_mask") is not None:
            mask = np.asarray(options["reset_mask"])
            if mask.shape != (self.num_envs,) or mask.dtype != np.bool_:
                raise ValueError(f"options['reset_mask']: expected a bool array ({self.num_envs},), got {mask!r}")
            games = mask.reshape(self.num_games, self.num_agents)
            if np.any(games.any(axis=1) != games.all(axis=1)):
                raise ValueError("options['reset_mask']: the rows of a game reset together (mark all or none of them)")
            options = {**options, "reset_mask": games[:, 0].copy()}
        obs, info = self.game.reset(seed=seed, options=options)
        return self._rows(obs), self._info(info)

    def step(self, actions: Any):
        """Step every game with the rows' actions (B N, *action shape): (B N,) integers, (B N, 2) boxes..."""
        arr = np.asarray(actions)
        shape = (self.num_envs, *self.single_action_space.shape)
        if arr.shape != shape:
            raise ValueError(f"actions: expected shape {shape}, got {arr.shape}")
        obs, reward, terminated, truncated, info = self.game.step(
            arr.reshape(self.num_games, self.num_agents, *self.single_action_space.shape))
        return self._rows(obs), self._rows(reward), self._rows(terminated), self._rows(truncated), self._info(info)

    def close(self, **kwargs: Any) -> None:
        self.game.close()
