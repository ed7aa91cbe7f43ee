"""Batched SplitInference-v0: B independent users advanced by one compiled loop, no Python loop per user."""

from __future__ import annotations

from typing import Any

import numpy as np

from edgelam.envs.core.actions import check_batch_integers
from edgelam.envs.core.vector import ReplayVectorEnv, partial_reset_mask
from edgelam.envs.split_inference.dynamics import State, advance, initial, observation, reset_rows, step_info
from edgelam.envs.split_inference.env import SplitInferenceEnv

# info keys of a step (under a ``_key`` mask, False for the users that autoreset in it)
_NO_BUDGET_KEYS = tuple(step_info([0.0] * 13, int, False))
_BUDGET_KEYS = tuple(step_info([0.0] * 13, int, True))


class SplitInferenceVectorEnv(ReplayVectorEnv):
    """``num_envs`` copies of :class:`SplitInferenceEnv` on one batched :class:`~.dynamics.State`.

    Spaces, reward, physics and ``info`` keys (as arrays of shape (B,)) are those of the
    single env: the same functions (:func:`~.dynamics.advance`, :func:`~.dynamics.observation`)
    on B users instead of one.

    Each user has its own episode: it truncates after ``episode_length`` requests and the
    step after that resets it (Gymnasium's next-step autoreset: its action is ignored, its
    reward is 0, ``terminated`` and ``truncated`` are False, its observation is the new
    episode's first). In a step where only some users reset, the step's ``info`` keys carry
    a boolean mask ``_<key>`` (False for the resetting users).
    ``reset(options={"reset_mask": mask})`` resets only the users of a bool mask (B,) now
    (:func:`~.dynamics.reset_rows`); its ``uplink_rate_bps`` carries the mask ``_uplink_rate_bps``.

    All users draw from one generator, their exogenous slots in blocks of ``BLOCK``. When
    every user resets in the same step (always with ``num_envs=1``; also when all episodes
    end together, as they do unless a partial reset set them apart) the vector env draws
    what the single env's ``reset()`` draws, so with ``num_envs=1`` and the same seed the
    trajectory equals the single env's bit for bit, resets included. Replay backend only. A
    ``max_episode_steps`` passed to ``gym.make_vec`` caps ``episode_length``, as a
    ``TimeLimit`` would.

    Create it with ``gym.make_vec("edgelam/SplitInference-v0", num_envs=256,
    vectorization_mode="vector_entry_point", scenario=..., **overrides)``.
    """

    def __init__(
        self,
        num_envs: int = 1,
        scenario: str = "default",
        backend: str = "replay",
        max_episode_steps: int | None = None,
        **overrides: Any,
    ):
        self._setup(SplitInferenceEnv, num_envs, scenario, backend, max_episode_steps, overrides)
        self.params = self.single.params
        self.tables = self.single.tables
        self.num_layers = self.single.num_layers
        self._has_budget = self.params.has_budget
        self._step_keys = _BUDGET_KEYS if self._has_budget else _NO_BUDGET_KEYS
        self.state: State = initial(self.params, np.random.default_rng(0), num_envs)  # replaced by reset()
        self._needs_reset = np.zeros(num_envs, dtype=bool)

    def reset(self, *, seed: int | list[int] | None = None, options: dict[str, Any] | None = None):
        """Reset every user, or those of ``options["reset_mask"]`` (a bool array (B,), Gymnasium's partial reset).

        ``seed`` seeds the one generator of the batch (a list: its first entry); a partial
        reset continues the generator (it takes no seed).
        """
        mask = partial_reset_mask(options, seed, self.num_envs)
        if mask is not None:
            reset_rows(self.params, self.state, np.flatnonzero(mask), self.np_random)
            self._needs_reset = self._needs_reset & ~mask
            info = {"uplink_rate_bps": self.state.rate_bps, "_uplink_rate_bps": mask}
            return observation(self.params, self.state), info
        if isinstance(seed, list):
            seed = seed[0]
        super().reset(seed=seed)
        return self._reset_all()

    def _reset_all(self) -> tuple[np.ndarray, dict[str, Any]]:
        self.state = initial(self.params, self.np_random, self.num_envs, self.state.exo)
        self._needs_reset = np.zeros(self.num_envs, dtype=bool)
        return observation(self.params, self.state), {"uplink_rate_bps": self.state.rate_bps}

    def step(self, actions):
        """Step every user (next-step autoreset for those whose episode ended in the previous step)."""
        a = check_batch_integers(actions, self.action_space, "per user: [split_layer, bits_index]")
        b = self.num_envs
        resetting = self._needs_reset
        if resetting.all():
            obs, info = self._reset_all()
            zeros = np.zeros(b, dtype=bool)
            return obs, np.zeros(b), zeros, zeros.copy(), info
        out, obs = advance(self.params, self.state, a, self.np_random)
        reward = out.reward
        info = out.info(self._has_budget)
        truncated = self.state.step >= self.episode_length
        if resetting.any():
            rows = np.flatnonzero(resetting)
            reward[rows] = 0.0
            truncated[rows] = False
            stepped = ~resetting
            for key in self._step_keys:
                info[f"_{key}"] = stepped
            reset_rows(self.params, self.state, rows, self.np_random)
            obs = observation(self.params, self.state)
        self._needs_reset = truncated
        return obs, reward, np.zeros(b, dtype=bool), truncated, info
