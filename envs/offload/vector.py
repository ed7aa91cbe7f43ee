"""Batched Offload-v0: B independent devices on one batched State, stepped by one compiled loop over the rows."""

from __future__ import annotations

from typing import Any

import numpy as np

from edgelam.envs.core.actions import check_batch_integers
from edgelam.envs.core.channel import WirelessLink
from edgelam.envs.core.vector import ReplayVectorEnv, partial_reset_mask
from edgelam.envs.offload.dynamics import (
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
from edgelam.envs.offload.env import OffloadEnv

# info keys of a step (absent, under the ``_key`` mask, for the devices that autoreset in it)
_STEP_KEYS = (
    "latency_s",
    "energy_j",
    "quality",
    "cloud_cost_usd",
    "tier",
    "edge_wait_s",
    "prompt_index",
    "virtual_queue",
    "battery_j",
    "cost",
)


class OffloadVectorEnv(ReplayVectorEnv):
    """``num_envs`` copies of :class:`OffloadEnv` on one batched :class:`~edgelam.envs.offload.dynamics.State`.

    Spaces, reward, ``info`` keys (as arrays of shape (B,)) and physics are those of the
    single env: the same functions (:func:`~edgelam.envs.offload.dynamics.advance`,
    :func:`~edgelam.envs.offload.dynamics.observation`) on B rows instead of one. Each
    device has its own episode: it terminates when its battery is empty and truncates after
    ``episode_length`` tasks; the step after that resets it (Gymnasium's next-step
    autoreset: its action is ignored, its reward is 0, ``terminated`` and ``truncated``
    are False, its observation is the new episode's first). In a step where only some
    devices reset, the step's ``info`` keys carry a boolean mask ``_<key>`` (False for
    the resetting devices) and the reset's ``distance_m`` a mask ``_distance_m``; the
    resetting devices' ``uplink_rate_bps`` is their new episode's first rate, as a reset's.
    ``reset(options={"reset_mask": mask})`` resets only the masked devices now.

    Exogenous randomness is drawn for all devices in blocks of ``CHUNK`` tasks. When
    every device resets in the same step (always with ``num_envs=1``; also when all
    episodes end together) the vector env draws exactly what the single env's
    ``reset()`` draws, so with ``num_envs=1`` and the same seed the trajectory equals the
    single env's, resets included. A device that resets alone keeps its row of the
    current block: fresh LOS, shadowing and fading state, the rest of its row's fading
    and RTT recomputed from them, the unused prompts and background work kept (they are
    i.i.d.; :func:`~edgelam.envs.offload.dynamics.restart_rows`). Replay backend only. A
    ``max_episode_steps`` passed to ``gym.make_vec`` caps ``episode_length``, as a
    ``TimeLimit`` would.

    Create it with ``gym.make_vec("edgelam/Offload-v0", num_envs=256,
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
        self._setup(OffloadEnv, num_envs, scenario, backend, max_episode_steps, overrides)
        cfg = self.config
        self.tables = self.single.tables
        self.num_prompts = self.single.num_prompts
        self.params = Params.build(cfg, self.tables, horizon=self.episode_length)
        self.link = WirelessLink(cfg.channel, n_links=num_envs)
        self._pool_link = WirelessLink(cfg.channel, n_links=max(CHUNK, num_envs))
        self._pool: Starts | None = None
        self._pool_pos = self._pool_link.n_links  # empty: drawn on the first lone reset
        self._needs_reset = np.zeros(num_envs, dtype=bool)
        self.state: State = initial(self.params, np.random.default_rng(0), self.link)[0]  # replaced by reset()

    def _reset_all(self) -> dict[str, Any]:
        """New episode for every device: the single env's ``reset()`` draws, for B devices."""
        self.state, distance = initial(self.params, self.np_random, self.link)
        self._needs_reset = np.zeros(self.num_envs, dtype=bool)
        self._pool_pos = self._pool_link.n_links  # a reset(seed) must not reuse states drawn before it
        return {"distance_m": distance, "uplink_rate_bps": self.state.pending("rate_bps").copy()}

    def _reset_some(self, idx: np.ndarray) -> np.ndarray:
        """New episode for devices ``idx`` from the current slot on; returns their distances (m).

        Their initial states come from a pool drawn for many episodes at once (episodes are
        i.i.d., so drawing ahead changes no distribution and saves one channel reset per episode).
        """
        m = len(idx)
        if self._pool_pos + m > self._pool_link.n_links:
            self._pool = draw_starts(self.np_random, self.params, self._pool_link)
            self._pool_pos = 0
        starts = self._pool.take(slice(self._pool_pos, self._pool_pos + m))
        self._pool_pos += m
        restart_rows(self.params, self.state, idx, starts)
        return starts.distance_m

    # -- Gymnasium vector API -----------------------------------------------------------------

    def reset(self, *, seed: int | list[int] | None = None, options: dict[str, Any] | None = None):
        """Reset every device, or those of ``options["reset_mask"]`` (a bool array (B,), Gymnasium's partial reset).

        ``seed`` seeds the one generator of the batch (a list: its first entry); a partial
        reset continues the generator (it takes no seed). The info of a partial reset
        carries ``_<key>`` masks: its entries belong to the devices that reset.
        """
        mask = partial_reset_mask(options, seed, self.num_envs)
        if mask is not None:
            idx = np.flatnonzero(mask)
            distance = np.zeros(self.num_envs)
            distance[idx] = self._reset_some(idx)
            self._needs_reset = self._needs_reset & ~mask
            rate = self.state.pending("rate_bps").copy()
            info = {"distance_m": distance, "_distance_m": mask, "uplink_rate_bps": rate, "_uplink_rate_bps": mask}
            return observation(self.params, self.state), info
        if isinstance(seed, list):
            seed = seed[0]
        super().reset(seed=seed)
        info = self._reset_all()
        return observation(self.params, self.state), info

    def _check_actions(self, actions) -> np.ndarray:
        return check_batch_integers(actions, self.action_space, "per device: 0 device, 1 edge, 2 cloud")

    def step(self, actions):
        """Step every device (next-step autoreset for those whose episode ended in the previous step)."""
        a = self._check_actions(actions)
        b = self.num_envs
        resetting = self._needs_reset
        if resetting.all():
            info = self._reset_all()
            zeros = np.zeros(b, dtype=bool)
            return observation(self.params, self.state), np.zeros(b), zeros, zeros.copy(), info
        out = advance(self.params, self.state, a, self.np_random)
        reward, terminated, truncated = out.reward, out.terminated, out.truncated
        info: dict[str, Any] = out.info(self.params)
        if resetting.any():
            idx = np.flatnonzero(resetting)
            stepped = ~resetting
            reward[idx] = 0.0
            terminated[idx] = False
            truncated[idx] = False
            for key in _STEP_KEYS:
                if key in info:
                    info[f"_{key}"] = stepped
            distance = np.zeros(b)
            distance[idx] = self._reset_some(idx)
            # a reset row's entry is its new episode's first rate (the reset info's), on its new link
            info["uplink_rate_bps"] = np.where(resetting, self.state.pending("rate_bps"), info["uplink_rate_bps"])
            info["distance_m"], info["_distance_m"] = distance, resetting
            obs = observation(self.params, self.state)
        else:
            obs = out.observation
        self._needs_reset = terminated | truncated
        return obs, reward, terminated, truncated, info
