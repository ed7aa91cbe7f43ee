"""Batched RobustRouting-v0: B router-vs-adversary games stepped together, no Python loop per game.

:class:`RobustRoutingGames` is the batched parallel game (the spec's ``batched_entry_point``);
:class:`OneSideVectorEnv` is one agent's B rows as a Gymnasium vector env, the other agent
acting through a fixed policy (what RARL trains each side on, with SB3 through
:class:`edgelam.agents.vec.SB3VectorAdapter`).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
from gymnasium import spaces
from gymnasium.vector import AutoresetMode, VectorEnv
from gymnasium.vector.utils import batch_space

from edgelam.envs.core.actions import check_batch_integers, check_box
from edgelam.envs.core.vector import check_batch_arguments, partial_reset_mask
from edgelam.envs.microservice_routing.dynamics import State, advance, initial, view
from edgelam.envs.robust_routing.dynamics import STEP_KEYS, adversary_reward, apply_adversary, step_info
from edgelam.envs.robust_routing.env import ADVERSARY, ROUTER, RobustRoutingEnv


class RobustRoutingGames:
    """``num_games`` games of RobustRouting-v0 (a router against a demand adversary), played with array math.

    The PettingZoo env (:class:`~.env.RobustRoutingEnv`) with a leading game axis, agent by
    agent as PettingZoo's parallel API has it: ``step`` takes ``{"router": (B,) ints,
    "adversary": (B, P + 1 + K) floats}`` and returns dicts over the two agents of
    observations (B, 5K + M + 5) float32, rewards (B,) (zero-sum), terminations and
    truncations (B,) bool, and ``info`` dicts of arrays with a leading axis B (the env's keys,
    :data:`~.dynamics.STEP_KEYS`; ``queue_lengths_s`` (B, K); the router's also
    ``action_mask`` (B, K) int8). Spaces, physics, the adversary's effect, the observation and
    the reward are the env's: the same functions (:func:`~.dynamics.apply_adversary`,
    :func:`~edgelam.envs.microservice_routing.dynamics.advance`,
    :func:`~edgelam.envs.microservice_routing.dynamics.view`,
    :func:`~.dynamics.adversary_reward`) on B rows instead of one. :meth:`action_masks` is
    the router's (B, K) bool mask; ``state`` the simulator's batched state (what the
    baselines read).

    Episodes follow Gymnasium's vector conventions per game: a game truncates after
    ``episode_length`` decisions (both agents; never terminated) and the step after that
    resets it (next-step autoreset: its actions are ignored, its rewards are 0,
    ``terminated`` and ``truncated`` are False, its observations and mask are the new
    episode's first). In a step where only some games reset, every step key carries a
    boolean mask ``_<key>`` (B,) (False for the resetting games); ``action_mask`` is every
    game's current one. ``reset(options={"reset_mask": mask})`` resets only the games of a
    bool mask (B,) now (the router's reset info then has ``_action_mask``).

    All games draw from one generator (in the order
    :func:`~edgelam.envs.microservice_routing.dynamics.advance` says). When every game resets
    in the same step (always with ``num_games=1``) the batch draws what the env's
    ``reset()`` draws, so with ``num_games=1`` and the same seed the game equals the
    PettingZoo env bit for bit, resets included. Replay backend only.

    Build it with ``edgelam.envs.registration.make_batched("edgelam/RobustRouting-v0",
    num_games=256, scenario=..., **overrides)`` (the spec's ``batched_entry_point``).
    """

    metadata = {"name": "robust_routing_v0_batched", "render_modes": [], "autoreset_mode": "next_step"}

    def __init__(self, num_games: int = 1, scenario: str = "default", backend: str = "replay", **overrides: Any):
        check_batch_arguments("num_games", num_games, backend, overrides, "batched game")
        self.single = RobustRoutingEnv(scenario=scenario, backend="replay", **overrides)
        self.config = self.single.config
        self.params = self.single.params
        self.tables = self.single.tables
        self.adversary = self.single.adversary
        self.num_games = num_games
        self.possible_agents = list(self.single.possible_agents)
        self.num_agents = len(self.possible_agents)
        self.episode_length = self.config.episode_length
        self._batch_action_spaces = {a: batch_space(self.single.action_space(a), num_games)
                                     for a in self.possible_agents}
        self.np_random = np.random.default_rng()
        self._needs_reset = np.zeros(num_games, dtype=bool)
        self._set_state(initial(self.params, np.random.default_rng(0), num_games))  # replaced by reset()

    def observation_space(self, agent: str) -> spaces.Box:
        """One agent's observation space (the env's object; both agents see the same)."""
        return self.single.observation_space(agent)

    def action_space(self, agent: str) -> spaces.Space:
        """One agent's action space in one game (the env's object)."""
        return self.single.action_space(agent)

    def _set_state(self, state: State) -> None:
        self.state = state  # the B games, advanced in place
        self._refresh()

    def _refresh(self) -> None:
        self._obs, self._mask, self._queue = view(self.params, self.state)

    def action_masks(self) -> np.ndarray:
        """(B, K) bool: the router's valid servers for each game's pending stage."""
        return self._mask.copy()

    def _observations(self) -> dict[str, np.ndarray]:
        return {ROUTER: self._obs, ADVERSARY: self._obs.copy()}

    def reset(self, *, seed: int | list[int] | None = None, options: dict[str, Any] | None = None):
        """Reset every game, or those of ``options["reset_mask"]`` (bool (B,), Gymnasium's partial reset).

        ``seed`` seeds the one generator of the batch (a list: its first entry); a partial
        reset continues the generator (it takes no seed). Returns (observations per agent,
        infos per agent: the router's ``action_mask`` (B, K) int8, and ``_action_mask`` (B,)
        after a partial reset).
        """
        mask = partial_reset_mask(options, seed, self.num_games)
        if mask is not None:
            self._reset_rows(np.flatnonzero(mask))
            self._needs_reset = self._needs_reset & ~mask
            self._refresh()
            return self._observations(), {ROUTER: {"action_mask": self._mask.astype(np.int8), "_action_mask": mask},
                                          ADVERSARY: {}}
        if isinstance(seed, list):
            seed = seed[0]
        if seed is not None:
            self.np_random = np.random.default_rng(seed)
        self._reset_all()
        return self._observations(), {ROUTER: {"action_mask": self._mask.astype(np.int8)}, ADVERSARY: {}}

    def _reset_all(self) -> None:
        self._set_state(initial(self.params, self.np_random, self.num_games))
        self._needs_reset = np.zeros(self.num_games, dtype=bool)

    def _reset_rows(self, rows: np.ndarray) -> None:
        self.state.set_rows(rows, initial(self.params, self.np_random, len(rows)))

    def _check(self, actions: Any) -> tuple[np.ndarray, np.ndarray]:
        if not isinstance(actions, Mapping) or set(actions) != set(self.possible_agents):
            keys = sorted(actions) if isinstance(actions, Mapping) else type(actions).__name__
            raise ValueError(f"actions: expected a dict with the actions of {self.possible_agents}, got {keys}")
        route = check_batch_integers(actions[ROUTER], self._batch_action_spaces[ROUTER],
                                     "per game: the edge server of the pending stage")
        push = check_box(actions[ADVERSARY], self._batch_action_spaces[ADVERSARY],
                         "per game: pipeline-mix logits, arrival-rate shift, cell logits",
                         who=f"actions of {ADVERSARY}", within_bounds=False)
        return route, push

    def step(self, actions: Mapping[str, Any]):
        """Play one decision of every game (next-step autoreset for the games that ended in the previous one).

        Returns:
            (observations, rewards, terminations, truncations, infos), each a dict over the agents.

        Raises:
            ValueError: unless ``actions`` holds both agents' actions: the router's integers
                in 0..K-1 of shape (B,), the adversary's finite numbers of shape (B, P + 1 + K).
        """
        route, push = self._check(actions)
        b = self.num_games
        resetting = self._needs_reset
        if resetting.all():
            self._reset_all()
            zeros = np.zeros(b, dtype=bool)
            return (self._observations(), {ROUTER: np.zeros(b), ADVERSARY: np.zeros(b)},
                    {ROUTER: zeros, ADVERSARY: zeros.copy()}, {ROUTER: zeros.copy(), ADVERSARY: zeros.copy()},
                    {ROUTER: {"action_mask": self._mask.astype(np.int8)}, ADVERSARY: {}})
        apply_adversary(self.adversary, self.state, push)
        out = advance(self.params, self.state, route, self.np_random)
        reward = out.reward.copy()
        truncated = self.state.step >= self.episode_length
        some = resetting.any()
        if some:
            rows = np.flatnonzero(resetting)
            reward[rows] = 0.0
            truncated[rows] = False
            self._reset_rows(rows)
        self._refresh()
        info = step_info(out, self.state, self._queue)
        if some:
            stepped = ~resetting
            for key in STEP_KEYS:
                info[f"_{key}"] = stepped
        self._needs_reset = truncated.copy()  # the caller may write the returned arrays
        terminated = np.zeros(b, dtype=bool)
        return (
            self._observations(),
            {ROUTER: reward, ADVERSARY: adversary_reward(reward)},
            {ROUTER: terminated, ADVERSARY: terminated.copy()},
            {ROUTER: truncated, ADVERSARY: truncated.copy()},
            {ROUTER: {**info, "action_mask": self._mask.astype(np.int8)}, ADVERSARY: dict(info)},
        )

    def one_side(
        self,
        agent: str,
        opponents: Mapping[str, Any],
        zero_sum_with: str | None = None,
        deterministic_opponents: bool = False,
    ) -> OneSideVectorEnv:
        """``agent``'s rows of these games as a vector env, the other agent acting by ``opponents``
        (:class:`OneSideVectorEnv`; what :func:`edgelam.agents.rarl.train_rarl` trains on with ``batched``)."""
        return OneSideVectorEnv(self, agent, opponents, zero_sum_with, deterministic_opponents)

    def close(self) -> None:
        """Nothing to release."""


class OneSideVectorEnv(VectorEnv):
    """One agent's B rows of a :class:`RobustRoutingGames` as a Gymnasium vector env; the other agent is fixed.

    What RARL (Pinto et al., ICML 2017) trains each side on: ``step(actions)`` takes the
    learner's actions (B, ...), asks ``opponents[other].predict(observations (B, ...),
    deterministic=...)`` (an SB3 model or any policy that takes a batch) for the other
    agent's, and steps every game. Rewards are the learner's, or with ``zero_sum_with`` minus
    that agent's. Observations, ends, ``info`` arrays and masks are the learner's rows of the
    game's; next-step autoreset and partial resets (bool (B,)) as the game's. SB3 trains on it
    through :class:`edgelam.agents.vec.SB3VectorAdapter`.

    Args:
        game: the batched game (its generator is this env's).
        agent: the learning agent.
        opponents: agent -> policy for the other agent; read at each step, so the mapping may be
            filled or changed after construction.
        zero_sum_with: if set, the reward is minus this agent's reward.
        deterministic_opponents: passed to the opponent's ``predict``.

    Raises:
        ValueError: if ``agent`` or ``zero_sum_with`` is not an agent of the game.
    """

    metadata = {"render_modes": [], "autoreset_mode": AutoresetMode.NEXT_STEP}

    def __init__(
        self,
        game: RobustRoutingGames,
        agent: str,
        opponents: Mapping[str, Any],
        zero_sum_with: str | None = None,
        deterministic_opponents: bool = False,
    ) -> None:
        for name in (agent, zero_sum_with):
            if name is not None and name not in game.possible_agents:
                raise ValueError(f"unknown agent {name!r} (agents: {game.possible_agents})")
        self.game = game
        self.agent = agent
        self.others = [a for a in game.possible_agents if a != agent]
        self.opponents = opponents
        self.zero_sum_with = zero_sum_with
        self.deterministic_opponents = deterministic_opponents
        self.num_envs = game.num_games
        self.single_observation_space = game.observation_space(agent)
        self.single_action_space = game.action_space(agent)
        self.observation_space = batch_space(self.single_observation_space, self.num_envs)
        self.action_space = batch_space(self.single_action_space, self.num_envs)
        self._observations: dict[str, np.ndarray] = {}

    def reset(self, *, seed: int | list[int] | None = None, options: dict[str, Any] | None = None):
        """Reset the games (all, or a partial ``reset_mask``); the learner's observations and info."""
        self._observations, infos = self.game.reset(seed=seed, options=options)
        return self._observations[self.agent], dict(infos[self.agent])

    def step(self, actions: Any):
        """Step every game: ``actions`` for the learner, the opponent's policy for the other agent."""
        joint = {self.agent: np.asarray(actions)}
        for other in self.others:
            action, _ = self.opponents[other].predict(self._observations[other],
                                                      deterministic=self.deterministic_opponents)
            joint[other] = np.asarray(action).reshape(self.num_envs, *self.game.action_space(other).shape)
        self._observations, rewards, terms, truncs, infos = self.game.step(joint)
        reward = rewards[self.agent] if self.zero_sum_with is None else 0.0 - rewards[self.zero_sum_with]
        return self._observations[self.agent], reward, terms[self.agent], truncs[self.agent], infos[self.agent]

    def action_masks(self) -> np.ndarray:
        """The router's (B, K) bool masks when the learner is the router (what MaskablePPO reads)."""
        if self.agent != ROUTER:
            raise ValueError(f"action_masks: only the router has a mask, not {self.agent!r}")
        return self.game.action_masks()

    def close(self, **kwargs: Any) -> None:
        self.game.close()
