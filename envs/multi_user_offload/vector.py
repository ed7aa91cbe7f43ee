"""Batched MultiUserOffload-v0: B games of N users stepped together by numpy, no Python loop per game or user."""

from __future__ import annotations

from typing import Any

import numpy as np
from gymnasium import spaces
from gymnasium.utils import seeding

from edgelam.envs.core.actions import check_batch_integers
from edgelam.envs.core.config import load_scenario
from edgelam.envs.core.vector import check_batch_arguments, partial_reset_mask
from edgelam.envs.multi_user_offload.config import MultiUserOffloadConfig
from edgelam.envs.multi_user_offload.dynamics import (
    Params,
    State,
    blank,
    draw_exogenous,
    initial,
    observation,
    transition,
)
from edgelam.envs.multi_user_offload.env import observation_space
from edgelam.envs.multi_user_offload.spec import SPEC
from edgelam.envs.offload.config import TIERS
from edgelam.envs.offload.env import offload_tables

# per-game info keys, (B,); the others are per user, (B, N)
GAME_KEYS = ("global_reward", "total_latency_s", "mean_quality", "allocation_projected")


class MultiUserOffloadGames:
    """``num_games`` games of MultiUserOffload-v0, each of N users, played with array math.

    The batched parallel game: the PettingZoo env (:class:`~.env.MultiUserOffloadEnv`)
    with a leading game axis. Everything is an array: observations (B, N, 8) float32,
    actions (B, N) ints (0 device, 1 edge, 2 cloud), rewards, terminations and
    truncations (B, N), and ``info`` arrays (B, N) per user (``latency_s``,
    ``energy_j``, ``quality``, ``cloud_cost_usd``, ``tier``, ``band_share``,
    ``compute_share``) and (B,) per game (:data:`GAME_KEYS`). Dynamics, reward and
    spaces are the env's (:mod:`.dynamics`, the same functions).
    :class:`~edgelam.envs.core.vector.AgentRowsVectorEnv` views the B x N agent rows as
    one Gymnasium vector env, the SB3 view parameter sharing trains on
    (:func:`edgelam.agents.marl.batched_vec_env`).

    Episodes follow Gymnasium's vector conventions per game: a game truncates after
    ``episode_length`` slots (all its users at once; never terminated), and the step
    after that resets it (next-step autoreset: its actions are ignored, its rewards are
    0, ``terminated`` and ``truncated`` are False, its observations are the new
    episode's first). In a step where only some games reset, every ``info`` key carries
    a boolean mask ``_<key>`` (B,) (False for the resetting games), and the resets'
    ``distance_m`` a mask ``_distance_m``. ``reset(options={"reset_mask": mask})``
    resets only the games of a bool mask (B,) now.

    All games draw from one generator, one slot of every game per call
    (:func:`~.dynamics.draw_exogenous`). With ``num_games=1`` and the same seed the
    game equals the PettingZoo env bit for bit, resets included (an autoreset draws
    what the env's ``reset()`` without a seed draws). Replay backend only.

    Build it with ``edgelam.envs.registration.make_batched("edgelam/MultiUserOffload-v0",
    num_games=256, scenario=..., **overrides)`` (the spec's ``batched_entry_point``).
    """

    metadata = {"name": "multi_user_offload_v0_batched", "render_modes": [], "autoreset_mode": "next_step"}

    def __init__(self, num_games: int = 1, scenario: str = "default", backend: str = "replay", **overrides: Any):
        check_batch_arguments("num_games", num_games, backend, overrides, "batched game")
        self.config: MultiUserOffloadConfig = load_scenario(
            MultiUserOffloadConfig, SPEC.scenario_dir, scenario, overrides
        )
        self.tables = offload_tables(self.config)
        self.params = Params.build(self.config, self.tables)
        self.num_games = num_games
        self.num_agents = self.config.num_users
        self.episode_length = self.config.episode_length
        self.possible_agents = [f"user_{i}" for i in range(self.num_agents)]
        self.single_observation_space = observation_space()
        self.single_action_space = spaces.Discrete(len(TIERS))
        self._batch_action_space = spaces.MultiDiscrete(np.full((num_games, self.num_agents), len(TIERS)))
        self._tiers = np.asarray(TIERS)
        self.np_random, _ = seeding.np_random(None)
        self.state: State = blank(self.params, num_games)  # the B games: what a controller reads
        self._needs_reset = np.zeros(num_games, dtype=bool)
        self._allocation: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None

    def observation_space(self, agent: str) -> spaces.Box:
        """One user's observation space (the same object for every agent)."""
        return self.single_observation_space

    def action_space(self, agent: str) -> spaces.Discrete:
        """One user's action space (the same object for every agent)."""
        return self.single_action_space

    def set_allocation(self, band_share: np.ndarray, compute_share: np.ndarray, mask: np.ndarray | None = None) -> None:
        """Split of the band and the free edge capacity of each game for the next :meth:`step` only, (B, N) each.

        As :meth:`MultiUserOffloadEnv.set_allocation <.env.MultiUserOffloadEnv.set_allocation>`, per
        game; ``mask`` (B,) bool picks the games it applies to (default all).

        Raises:
            ValueError: wrong shapes, negative entries or a game's shares summing above 1.
        """
        shape = (self.num_games, self.num_agents)
        out = []
        for key, x in (("band_share", band_share), ("compute_share", compute_share)):
            arr = np.asarray(x, dtype=np.float64)
            if arr.shape != shape or np.any(~np.isfinite(arr)) or np.any(arr < 0) or np.any(arr.sum(axis=1) > 1 + 1e-6):
                raise ValueError(f"{key}: expected shares {shape} >= 0, each game's summing to <= 1, got {x!r}")
            out.append(arr)
        requested = np.ones(self.num_games, dtype=bool) if mask is None else np.asarray(mask)
        if requested.shape != (self.num_games,) or requested.dtype != np.bool_:
            raise ValueError(f"mask: expected a bool array ({self.num_games},), got {mask!r}")
        self._allocation = (requested, out[0], out[1])

    def _observations(self) -> np.ndarray:
        return observation(self.params, self.state)

    def reset(self, *, seed: int | list[int] | None = None, options: dict[str, Any] | None = None):
        """Reset every game, or those of ``options["reset_mask"]`` (bool (B,), Gymnasium's partial reset).

        ``seed`` seeds the one generator of the batch (a list: its first entry); a partial
        reset continues the generator (it takes no seed). Returns (observations (B, N, 8),
        info with ``distance_m`` (B, N), and ``_distance_m`` (B,) after a partial reset).
        """
        mask = partial_reset_mask(options, seed, self.num_games)
        if mask is not None:
            distance = self._reset_some(np.flatnonzero(mask))
            self._needs_reset = self._needs_reset & ~mask
            return self._observations(), {"distance_m": distance, "_distance_m": mask}
        if isinstance(seed, list):
            seed = seed[0]
        if seed is not None:
            self.np_random, _ = seeding.np_random(seed)
        distance = self._reset_all()
        return self._observations(), {"distance_m": distance}

    def _reset_all(self) -> np.ndarray:
        self.state, distance = initial(self.params, self.np_random, self.num_games)
        self._needs_reset = np.zeros(self.num_games, dtype=bool)
        self._allocation = None
        return distance

    def _reset_some(self, rows: np.ndarray) -> np.ndarray:
        """New episodes for games ``rows``; their distances in a (B, N) array (0 for the other games)."""
        fresh, distance = initial(self.params, self.np_random, len(rows))
        self.state = self.state.with_rows(rows, fresh)
        out = np.zeros((self.num_games, self.num_agents))
        out[rows] = distance
        return out

    def step(self, actions: Any):
        """Play one slot of every game (next-step autoreset for the games that ended in the previous one).

        Returns:
            (observations (B, N, 8), rewards (B, N), terminations (B, N), truncations (B, N), info).

        Raises:
            ValueError: unless ``actions`` are integers in 0..2 of shape (B, N).
        """
        tiers = check_batch_integers(actions, self._batch_action_space, "per user: 0 device, 1 edge, 2 cloud")
        shape = tiers.shape
        resetting = self._needs_reset
        if resetting.all():
            distance = self._reset_all()
            zeros = np.zeros(shape, dtype=bool)
            return self._observations(), np.zeros(shape), zeros, zeros.copy(), {"distance_m": distance}
        allocation, self._allocation = self._allocation, None
        exo = draw_exogenous(self.np_random, self.params, self.num_games)
        self.state, reward, info = transition(self.params, self.state, tiers, exo, allocation)
        info["tier"] = self._tiers[tiers]
        truncated = np.repeat((self.state.step >= self.episode_length)[:, None], self.num_agents, axis=1)
        terminated = np.zeros(shape, dtype=bool)
        if resetting.any():
            rows = np.flatnonzero(resetting)
            stepped = ~resetting
            reward[rows] = 0.0
            truncated[rows] = False
            for key in list(info):
                info[f"_{key}"] = stepped
            info["distance_m"], info["_distance_m"] = self._reset_some(rows), resetting
        self._needs_reset = truncated[:, 0].copy()
        return self._observations(), reward, terminated, truncated, info

    def close(self) -> None:
        """Nothing to release."""
