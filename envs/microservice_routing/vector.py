"""Batched MicroserviceRouting-v0: B independent edge clusters advanced by one compiled loop, no Python loop per row."""

from __future__ import annotations

from typing import Any

import numpy as np

from edgelam.envs.core.actions import check_batch_integers
from edgelam.envs.core.vector import ReplayVectorEnv, partial_reset_mask
from edgelam.envs.microservice_routing.dynamics import OUTCOME_COLUMNS, State, advance, initial, view
from edgelam.envs.microservice_routing.env import MicroserviceRoutingEnv

# info keys of a step (under a ``_key`` mask, False for the rows that autoreset in it)
STEP_KEYS = (*OUTCOME_COLUMNS[:-1], "virtual_queue", "cost", "queue_lengths_s")


class MicroserviceRoutingVectorEnv(ReplayVectorEnv):
    """``num_envs`` copies of :class:`MicroserviceRoutingEnv` on one batched :class:`~.dynamics.State`.

    Spaces, reward, physics and ``info`` keys are those of the single env: the same
    functions (:func:`~.dynamics.advance`, :func:`~.dynamics.view`) on B rows instead of
    one. ``info`` values are arrays with a leading axis B (``queue_lengths_s`` (B, K),
    ``action_mask`` (B, A) int8); :meth:`action_masks` gives the (B, A) bool masks of the
    pending stages (one row per sub-env, what sb3-contrib's MaskablePPO needs; the SB3
    adapter :class:`edgelam.agents.vec.SB3VectorAdapter` hands out its rows).

    Each row has its own episode: it truncates after ``episode_length`` decisions and the
    step after that resets it (Gymnasium's next-step autoreset: its action is ignored, its
    reward is 0, ``terminated`` and ``truncated`` are False, its observation and mask are
    the new episode's first). In a step where only some rows reset, the step's ``info`` keys
    carry a boolean mask ``_<key>`` (False for the resetting rows); ``action_mask`` is every
    row's current one. ``reset(options={"reset_mask": mask})`` resets only the rows of a
    bool mask (B,) now.

    All rows draw from one generator (:func:`~.dynamics.advance` says in which order). When
    every row resets in the same step (always with ``num_envs=1``) the vector env draws what
    the single env's ``reset()`` draws, so with ``num_envs=1`` and the same seed the
    trajectory equals the single env's bit for bit, resets included. Replay backend only. A
    ``max_episode_steps`` passed to ``gym.make_vec`` caps ``episode_length``, as a
    ``TimeLimit`` would.

    Create it with ``gym.make_vec("edgelam/MicroserviceRouting-v0", num_envs=256,
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
        self._setup(MicroserviceRoutingEnv, num_envs, scenario, backend, max_episode_steps, overrides)
        self.params = self.single.params
        self._needs_reset = np.zeros(num_envs, dtype=bool)
        self._set_state(initial(self.params, np.random.default_rng(0), num_envs))  # replaced by reset()

    def _set_state(self, state: State) -> None:
        self.state = state  # the B rows, advanced in place
        self._refresh()

    def _refresh(self) -> None:
        self._obs, self._mask, self._queue = view(self.params, self.state)

    def action_masks(self) -> np.ndarray:
        """(B, A) bool valid actions of every row's pending stage."""
        return self._mask.copy()

    def reset(self, *, seed: int | list[int] | None = None, options: dict[str, Any] | None = None):
        """Reset every row, or those of ``options["reset_mask"]`` (a bool array (B,), Gymnasium's partial reset).

        ``seed`` seeds the one generator of the batch (a list: its first entry); a partial
        reset continues the generator (it takes no seed) and its ``action_mask`` carries the
        mask ``_action_mask`` of the rows that reset.
        """
        mask = partial_reset_mask(options, seed, self.num_envs)
        if mask is not None:
            self._reset_rows(np.flatnonzero(mask))
            self._needs_reset = self._needs_reset & ~mask
            self._refresh()
            return self._obs, {"action_mask": self._mask.astype(np.int8), "_action_mask": mask}
        if isinstance(seed, list):
            seed = seed[0]
        super().reset(seed=seed)
        self._reset_all()
        return self._obs, {"action_mask": self._mask.astype(np.int8)}

    def _reset_all(self) -> None:
        self._set_state(initial(self.params, self.np_random, self.num_envs))
        self._needs_reset = np.zeros(self.num_envs, dtype=bool)

    def _reset_rows(self, rows: np.ndarray) -> None:
        self.state.set_rows(rows, initial(self.params, self.np_random, len(rows)))

    def step(self, actions):
        """Step every row (next-step autoreset for those whose episode ended in the previous step)."""
        a = check_batch_integers(actions, self.action_space, "per row: the edge server of the pending stage")
        b = self.num_envs
        resetting = self._needs_reset
        if resetting.all():
            self._reset_all()
            zeros = np.zeros(b, dtype=bool)
            return self._obs, np.zeros(b), zeros, zeros.copy(), {"action_mask": self._mask.astype(np.int8)}
        out = advance(self.params, self.state, a, self.np_random)
        reward = out.reward.copy()
        info = out.info(self.state)
        terminated = np.zeros(b, dtype=bool)
        truncated = self.state.step >= self.episode_length
        if resetting.any():
            rows = np.flatnonzero(resetting)
            reward[rows] = 0.0
            truncated[rows] = False
            stepped = ~resetting
            for key in STEP_KEYS:
                info[f"_{key}"] = stepped
            self._reset_rows(rows)
        self._refresh()
        info["queue_lengths_s"] = self._queue
        info["action_mask"] = self._mask.astype(np.int8)
        self._needs_reset = truncated
        return self._obs, reward, terminated, truncated, info
