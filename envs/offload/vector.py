"""Batched Offload-v0: B independent devices stepped by numpy over arrays, no per-device Python loop."""

from __future__ import annotations

from typing import Any

import numpy as np

from edgelam.envs.core.actions import check_batch_integers
from edgelam.envs.core.channel import MIN_RATE_BPS, WirelessLink
from edgelam.envs.core.queues import lindley_interval, virtual_queue_step
from edgelam.envs.core.vector import ReplayVectorEnv, partial_reset_mask
from edgelam.envs.offload.config import TIERS
from edgelam.envs.offload.dynamics import (
    EDGE,
    cloud_rtts,
    draw_task_block,
    initial_edge_work_s,
    tier_cost,
    uplink_rates,
)
from edgelam.envs.offload.env import CHUNK, QUEUE_SCALE, OffloadEnv

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
)


class OffloadVectorEnv(ReplayVectorEnv):
    """``num_envs`` copies of :class:`OffloadEnv` advanced together with array math.

    Spaces, reward, ``info`` keys (as arrays of shape (B,)) and physics are those of the
    single env, built from the same scenario with the same functions
    (:func:`~edgelam.envs.offload.dynamics.tier_cost`,
    :func:`~edgelam.envs.offload.dynamics.draw_task_block`). Each device has its own
    episode: it terminates when its battery is empty and truncates after
    ``episode_length`` tasks; the step after that resets it (Gymnasium's next-step
    autoreset: its action is ignored, its reward is 0, ``terminated`` and ``truncated``
    are False, its observation is the new episode's first). In a step where only some
    devices reset, the step's ``info`` keys carry a boolean mask ``_<key>`` (False for
    the resetting devices) and the reset's ``distance_m`` a mask ``_distance_m``.
    ``reset(options={"reset_mask": mask})`` resets only the masked devices now.

    Exogenous randomness is drawn for all devices in blocks of ``CHUNK`` tasks. When
    every device resets in the same step (always with ``num_envs=1``; also when all
    episodes end together) the vector env draws exactly what the single env's
    ``reset()`` draws, so with ``num_envs=1`` and the same seed the trajectory equals the
    single env's, resets included. A device that resets alone keeps its row of the
    current block: fresh LOS, shadowing and fading state, the rest of its row's fading
    and RTT recomputed from them, the unused prompts and background work kept (they are
    i.i.d.). Replay backend only. A ``max_episode_steps`` passed to ``gym.make_vec`` caps
    ``episode_length``, as a ``TimeLimit`` would.

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
        self.link = WirelessLink(cfg.channel, n_links=num_envs)
        self._pool_link = WirelessLink(cfg.channel, n_links=max(CHUNK, num_envs))
        self._pool_pos = self._pool_link.n_links  # empty: drawn on the first lone reset
        self._tokens = np.minimum(self.tables.prompt_tokens / 128.0, 32.0)
        self._tiers = np.asarray(TIERS)
        self._budget = cfg.budget.per_task
        self._needs_reset = np.zeros(num_envs, dtype=bool)
        self._k = CHUNK

    # -- exogenous state ----------------------------------------------------------------------

    def _draw_block(self) -> None:
        blk, self._h, self._z = draw_task_block(
            self.np_random, self.config, self.num_prompts, self._lsg, self._h, self._z, CHUNK
        )
        self._prompt_blk, self._innovation = blk.prompt, blk.innovation
        self._rate_blk, self._shift_blk, self._floor_blk = blk.rate_bps, blk.bg_shift_s, blk.bg_floor_s
        self._shock_blk, self._rtt_blk = blk.rtt_shock, blk.rtt_s
        self._k = 0

    def _reset_all(self) -> dict[str, Any]:
        """New episode for every device: the single env's ``reset()`` draws, for B devices."""
        cfg, rng, b = self.config, self.np_random, self.num_envs
        distance = rng.uniform(*cfg.distance_m, size=b)
        self.link.reset(rng, distance)
        self._lsg = self.link.large_scale_gain.copy()
        self._h = self.link.fading.h.copy()
        self._z = rng.standard_normal(b)
        self._queue = initial_edge_work_s(rng, cfg, b)
        self._t = np.zeros(b, dtype=np.int64)
        self._vq = np.zeros(b)
        self._battery = np.full(b, cfg.battery_j)
        self._last_rtt = np.full(b, cfg.wan.rtt_mean_s)
        self._needs_reset = np.zeros(b, dtype=bool)
        self._pool_pos = self._pool_link.n_links  # a reset(seed) must not reuse states drawn before it
        self._draw_block()
        return {"distance_m": distance, "uplink_rate_bps": self._rate_blk[:, 0].copy()}

    def _draw_pool(self) -> None:
        """Initial states (distance, LOS, shadowing, fading, RTT latent) of the next devices to reset alone."""
        cfg, rng, n = self.config, self.np_random, self._pool_link.n_links
        distance = rng.uniform(*cfg.distance_m, size=n)
        self._pool_link.reset(rng, distance)
        self._pool = (distance, self._pool_link.large_scale_gain.copy(), self._pool_link.fading.h.copy(),
                      rng.standard_normal(n), initial_edge_work_s(rng, cfg, n))
        self._pool_pos = 0

    def _reset_some(self, idx: np.ndarray) -> np.ndarray:
        """New episode for devices ``idx`` from the current slot on; returns their distances (m).

        Their initial states come from a pool drawn for many episodes at once (episodes are
        i.i.d., so drawing ahead changes no distribution and saves one channel reset per episode).
        """
        cfg, m, k = self.config, len(idx), self._k
        if self._pool_pos + m > self._pool_link.n_links:
            self._draw_pool()
        take = slice(self._pool_pos, self._pool_pos + m)
        self._pool_pos += m
        distance, lsg, h0, z0, work0 = (x[take] for x in self._pool)
        self._lsg[idx] = lsg
        rows = np.ix_(idx, np.arange(k, CHUNK))
        self._rate_blk[rows], self._h[idx] = uplink_rates(cfg.channel, lsg, self._innovation[rows], h0)
        self._rtt_blk[rows], self._z[idx] = cloud_rtts(cfg.wan, self._shock_blk[rows], z0)
        self._t[idx] = 0
        self._queue[idx] = work0
        self._vq[idx] = 0.0
        self._battery[idx] = cfg.battery_j
        self._last_rtt[idx] = cfg.wan.rtt_mean_s
        return distance

    def _obs(self) -> np.ndarray:
        cfg, k = self.config, self._k
        prompt = self._prompt_blk[:, k]
        obs = np.empty((self.num_envs, 8), dtype=np.float32)
        obs[:, 0] = self.tables.confidence[prompt]
        obs[:, 1] = self._tokens[prompt]
        obs[:, 2] = np.clip(np.log10(np.maximum(self._rate_blk[:, k], MIN_RATE_BPS)) / 10.0, 0.0, 2.0)
        obs[:, 3] = np.minimum(self._queue, 100.0)
        obs[:, 4] = np.minimum(self._last_rtt, 10.0)
        obs[:, 5] = np.maximum(self._battery, 0.0) / cfg.battery_j
        obs[:, 6] = np.minimum(self._vq / (QUEUE_SCALE * self._budget), 100.0) if self._budget else 0.0
        obs[:, 7] = self._t / cfg.episode_length
        return obs

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
            rate = self._rate_blk[:, self._k].copy()
            info = {"distance_m": distance, "_distance_m": mask, "uplink_rate_bps": rate, "_uplink_rate_bps": mask}
            return self._obs(), info
        if isinstance(seed, list):
            seed = seed[0]
        super().reset(seed=seed)
        info = self._reset_all()
        return self._obs(), info

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
            return self._obs(), np.zeros(b), zeros, zeros.copy(), info
        cfg, w, t, k = self.config, self.config.reward, self.tables, self._k
        prompt = self._prompt_blk[:, k]
        rate = self._rate_blk[:, k]
        rtt = self._rtt_blk[:, k]
        compute = t.compute_s[prompt, a]
        latency, energy, usd = tier_cost(t, compute, t.up_bits[prompt], t.cloud_usd[prompt], a, rate,
                                         self._queue, rtt)
        quality = t.quality[prompt, a]
        reward = (
            w.quality_weight * quality
            - w.latency_weight * latency
            - w.energy_weight_per_j * energy
            - w.cloud_cost_weight_per_usd * usd
        )
        on_edge = a == EDGE
        info: dict[str, Any] = {
            "latency_s": latency,
            "energy_j": energy,
            "quality": quality,
            "cloud_cost_usd": usd,
            "tier": self._tiers[a],
            "edge_wait_s": on_edge * self._queue,
            "uplink_rate_bps": rate,
            "prompt_index": prompt,
        }
        if self._budget is not None:
            y = energy if cfg.budget.metric == "energy_j" else usd
            self._vq = virtual_queue_step(self._vq, y, self._budget)
            info["virtual_queue"] = self._vq.copy()
        self._queue = lindley_interval(self._queue + on_edge * compute, self._shift_blk[:, k], self._floor_blk[:, k])
        self._battery = self._battery - energy
        self._last_rtt = rtt.copy()
        self._t = self._t + 1
        terminated = self._battery <= 0.0
        info["battery_j"] = np.maximum(self._battery, 0.0)
        truncated = self._t >= self.episode_length
        self._k += 1
        if self._k >= CHUNK:
            self._draw_block()
        if resetting.any():
            idx = np.flatnonzero(resetting)
            stepped = ~resetting
            reward[idx] = 0.0
            terminated[idx] = False
            truncated[idx] = False
            for key in _STEP_KEYS:
                if key in info:
                    info[f"_{key}"] = stepped
            info["uplink_rate_bps"] = np.where(resetting, self._rate_blk[:, self._k], rate)
            distance = np.zeros(b)
            distance[idx] = self._reset_some(idx)
            info["distance_m"], info["_distance_m"] = distance, resetting
        self._needs_reset = terminated | truncated
        return self._obs(), reward, terminated, truncated, info
