"""Batched EdgeModelCache-v0: B independent edge servers on one batched State, stepped by one compiled loop."""

from __future__ import annotations

from typing import Any

import numpy as np

from edgelam.envs.core.actions import check_batch_integers
from edgelam.envs.core.vector import ReplayVectorEnv, partial_reset_mask
from edgelam.envs.model_cache.dynamics import (
    CHUNK,
    Params,
    Starts,
    State,
    advance,
    draw_starts,
    initial,
    observation,
    restart_rows,
)
from edgelam.envs.model_cache.env import EdgeModelCacheEnv

# info keys of a step (absent, under the ``_key`` mask, for the edges that autoreset in it)
_STEP_KEYS = ("latency_s", "energy_j", "quality", "cloud_cost_usd", "backhaul_bytes", "hit", "kept", "prefetched",
              "privacy_violation", "model", "task", "private", "cached_bytes", "backhaul_rate_bps", "virtual_queue",
              "cost")


class EdgeModelCacheVectorEnv(ReplayVectorEnv):
    """``num_envs`` copies of :class:`EdgeModelCacheEnv` on one batched
    :class:`~edgelam.envs.model_cache.dynamics.State`.

    Spaces, reward, ``info`` keys (arrays of shape (B,)) and physics are those of the single env:
    the same :func:`~edgelam.envs.model_cache.dynamics.advance` on B rows. Each edge truncates after
    ``episode_length`` requests; the step after that resets it (Gymnasium's next-step autoreset:
    its action is ignored, its reward is 0, its observation is the new episode's first); in a step
    where only some edges reset, the step's ``info`` keys carry a mask ``_<key>`` (False for the
    resetting edges). ``reset(options={"reset_mask": mask})`` resets only the masked edges now.

    Requests are drawn for all edges in blocks of ``CHUNK``; when every edge resets together
    (always with ``num_envs=1``) the vector env draws exactly what the single env's ``reset()`` draws,
    so with ``num_envs=1`` and the same seed the trajectory equals the single env's. An edge that
    resets alone keeps its row's uniforms of the block and gets fresh rankings and latents, its
    requests, rates and RTTs re-derived from them (:func:`~edgelam.envs.model_cache.dynamics.restart_rows`).
    Replay backend only. A ``max_episode_steps`` passed to ``gym.make_vec`` caps ``episode_length``.
    """

    def __init__(self, num_envs: int = 1, scenario: str = "default", backend: str = "replay",
                 max_episode_steps: int | None = None, **overrides: Any):
        self._setup(EdgeModelCacheEnv, num_envs, scenario, backend, max_episode_steps, overrides)
        self.tables = self.single.tables
        self.params = Params.build(self.config, self.tables, horizon=self.episode_length)
        self._pool: Starts | None = None
        self._pool_size = max(CHUNK, num_envs)
        self._pool_pos = self._pool_size  # empty: drawn on the first lone reset
        self._needs_reset = np.zeros(num_envs, dtype=bool)
        self.state: State = initial(self.params, np.random.default_rng(0), num_envs)  # replaced by reset()

    def _reset_all(self) -> dict[str, Any]:
        self.state = initial(self.params, self.np_random, self.num_envs)
        self._needs_reset = np.zeros(self.num_envs, dtype=bool)
        self._pool_pos = self._pool_size  # a reset(seed) must not reuse starts drawn before it
        return {"cached_bytes": self.tables.footprint[self.state.cache]}

    def _reset_some(self, idx: np.ndarray) -> None:
        """New episodes for edges ``idx`` from the current slot on (starts drawn ahead, episodes are i.i.d.)."""
        m = len(idx)
        if self._pool_pos + m > self._pool_size:
            self._pool = draw_starts(self.np_random, self.params, self._pool_size)
            self._pool_pos = 0
        restart_rows(self.params, self.state, idx, self._pool.take(slice(self._pool_pos, self._pool_pos + m)))
        self._pool_pos += m

    def reset(self, *, seed: int | list[int] | None = None, options: dict[str, Any] | None = None):
        """Reset every edge, or those of ``options["reset_mask"]`` (a bool array (B,), Gymnasium's partial reset).

        ``seed`` seeds the one generator of the batch (a list: its first entry); a partial reset
        continues the generator."""
        mask = partial_reset_mask(options, seed, self.num_envs)
        if mask is not None:
            self._reset_some(np.flatnonzero(mask))
            self._needs_reset = self._needs_reset & ~mask
            cached = self.tables.footprint[self.state.cache]
            return observation(self.params, self.state), {"cached_bytes": cached, "_cached_bytes": mask}
        if isinstance(seed, list):
            seed = seed[0]
        super().reset(seed=seed)
        info = self._reset_all()
        return observation(self.params, self.state), info

    def _check_actions(self, actions) -> np.ndarray:
        m = self.params.num_models
        return check_batch_integers(actions, self.action_space, f"per edge: serve * {m + 1} + op")

    def step(self, actions):
        """Step every edge (next-step autoreset for those whose episode ended in the previous step)."""
        a = self._check_actions(actions)
        b = self.num_envs
        resetting = self._needs_reset
        if resetting.all():
            info = self._reset_all()
            zeros = np.zeros(b, dtype=bool)
            return observation(self.params, self.state), np.zeros(b), zeros, zeros.copy(), info
        out = advance(self.params, self.state, a, self.np_random)
        reward, truncated = out.reward, out.truncated
        terminated = np.zeros(b, dtype=bool)
        info: dict[str, Any] = out.info(self.params)
        if resetting.any():
            idx = np.flatnonzero(resetting)
            reward[idx] = 0.0
            truncated[idx] = False
            stepped = ~resetting
            for key in _STEP_KEYS:
                if key in info:
                    info[f"_{key}"] = stepped
            self._reset_some(idx)
            obs = observation(self.params, self.state)
        else:
            obs = out.observation
        self._needs_reset = terminated | truncated
        return obs, reward, terminated, truncated, info
