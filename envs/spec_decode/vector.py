"""Batched SpecDecode-v0: B independent users' speculative decoding stepped by numpy, no per-user Python loop."""

from __future__ import annotations

from typing import Any

import numpy as np

from edgelam.envs.core.actions import check_batch_integers
from edgelam.envs.core.channel import MIN_RATE_BPS, WirelessLink, ergodic_rate_bps, rate_from_snr_bps
from edgelam.envs.core.load import ar1_load_step
from edgelam.envs.core.queues import virtual_queue_step
from edgelam.envs.core.vector import ReplayVectorEnv
from edgelam.envs.spec_decode.dynamics import (
    accepted_runs,
    batch_tables,
    block_rounds,
    blockage_loss_db,
    round_cost,
)
from edgelam.envs.spec_decode.env import QUEUE_SCALE, RTT_SCALE_S, SpecDecodeEnv

# info keys of a round (absent, under the ``_key`` mask, for the users that autoreset in it)
_STEP_KEYS = (
    "latency_s",
    "energy_j",
    "tokens",
    "accepted_tokens",
    "proposed_tokens",
    "gamma",
    "draft_variant",
    "edge_util",
    "device_util",
    "prompt_index",
    "virtual_queue",
)


class SpecDecodeVectorEnv(ReplayVectorEnv):
    """``num_envs`` copies of :class:`SpecDecodeEnv` advanced together with array math (replay backend).

    Spaces, reward, ``info`` keys (arrays of shape (B,)) and physics are those of the single
    env, built from the same scenario with the same functions
    (:func:`~edgelam.envs.spec_decode.dynamics.round_cost` on arrays,
    :func:`~edgelam.envs.spec_decode.dynamics.accepted_runs`, the same
    :class:`~edgelam.envs.core.channel.WirelessLink` over B links). Each user has its own
    episode (it ends when its requests are done or its battery is empty, or after
    ``episode_length`` rounds), so episodes end at different steps; the step after an end
    resets that user (Gymnasium's next-step autoreset: action ignored, reward 0,
    ``terminated`` and ``truncated`` False, the new episode's first observation). In a step
    where only some users reset, the round's ``info`` keys carry ``_<key>`` masks (False for
    the resetting users); ``request_done`` is present (mask ``_request_done``) for the users
    whose request completed, as in the single env; ``distance_m`` for the users that reset.
    ``reset(options={"reset_mask": mask})`` resets only the masked users now.

    Random numbers are drawn for the whole batch in the single env's order, the per-round ones
    in blocks of rounds (:func:`~edgelam.envs.spec_decode.dynamics.block_rounds`, dropped at a
    full reset, as the single env does at ``reset()``); when every user resets in the same step
    (always with ``num_envs=1``) the draws are the single env's ``reset()``'s, so with
    ``num_envs=1`` and the same seed the trajectory equals the single env's, resets included.
    A user that resets alone takes its distance, LOS, shadowing and initial fading from a pool
    drawn for many episodes at once (episodes are i.i.d.). The ergodic rate of a user is
    re-evaluated (:func:`~edgelam.envs.core.channel.ergodic_rate_bps`, one array call per round)
    only for the users whose large-scale SNR changed (a reset; every round under ``drift_mps``
    or during a blockage).
    A ``max_episode_steps`` passed to ``gym.make_vec`` caps ``episode_length``, as a ``TimeLimit`` would.

    Create it with ``gym.make_vec("edgelam/SpecDecode-v0", num_envs=256,
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
        self._setup(SpecDecodeEnv, num_envs, scenario, backend, max_episode_steps, overrides)
        cfg = self.config
        self.tables = batch_tables(self.single.tables)  # numpy arrays, indexed by arrays of actions
        self.beta = self.single.beta
        self.num_prompts = self.single.num_prompts
        self.num_variants = self.single.num_variants
        self.link = WirelessLink(cfg.channel, n_links=num_envs)
        self._pool_link = WirelessLink(cfg.channel, n_links=max(256, num_envs))
        self._pool_pos = self._pool_link.n_links
        self._variants = np.asarray(cfg.draft_variants)
        self._prompt_ids = np.asarray(self.single.prompt_ids)
        high = self.single_observation_space.high.astype(np.float64)
        self._obs_high = np.repeat(high[:, None], num_envs, axis=1)  # (D, B): clipping without broadcasting
        loads = (cfg.edge_load, cfg.device_load)  # AR(1) parameters of the (edge, device) utilisation rows
        self._load_mean = np.array([[x.mean] for x in loads])
        self._load_corr = np.array([[x.corr] for x in loads])
        self._load_innovation = np.array([[x.innovation_std] for x in loads])
        self._load_max = np.array([[x.max_util] for x in loads])
        # EMA step 1 - (1 - c)^k of k tested draft tokens, k = 0..gamma_max + 1
        self._eta = 1.0 - (1.0 - cfg.acceptance_ema) ** np.arange(cfg.gamma_max + 2)
        self._rows = np.arange(num_envs)
        self._block_len = block_rounds(cfg.episode_length, num_envs)
        self._block_pos = self._block_len  # no block drawn yet
        self._needs_reset = np.zeros(num_envs, dtype=bool)
        self._init_state()

    # -- state ------------------------------------------------------------------------------------

    def _init_state(self) -> None:
        cfg, b = self.config, self.num_envs
        self._round = np.zeros(b, dtype=np.int64)
        self._requests_done = np.zeros(b, dtype=np.int64)
        self._prompt = np.zeros(b, dtype=np.int64)
        self._pos = np.zeros(b, dtype=np.int64)
        self._utils = np.repeat(self._load_mean, b, axis=1)  # (2, B): edge, device background utilisation
        self._rate = np.ones(b)
        self._est_rate = np.ones(b)
        self._ergodic = np.ones(b)
        self._est_ergodic = np.ones(b)
        self._mean_snr = np.full(b, -1.0)
        self._est_mean_snr = np.full(b, -1.0)
        self._clock = np.zeros(b)
        self._distance = np.zeros(b)
        self._battery = np.full(b, cfg.battery_j)
        self._queue = np.zeros(b)
        self._ema = np.repeat(self.single.mean_acceptance[:, None], b, axis=1)  # (V, B)
        self._last_accepted = np.zeros(b, dtype=np.int64)
        self._last_proposed = np.zeros(b, dtype=np.int64)
        self._uniforms = np.zeros((cfg.gamma_max, b))  # position-major, see accepted_runs

    def _clear(self, idx: np.ndarray) -> None:
        """The single env's ``_reset_state`` for users ``idx``."""
        cfg = self.config
        for name in ("_round", "_requests_done", "_pos", "_clock", "_queue", "_last_accepted", "_last_proposed"):
            getattr(self, name)[idx] = 0
        self._utils[:, idx] = self._load_mean
        self._mean_snr[idx] = -1.0
        self._battery[idx] = cfg.battery_j
        self._ema[:, idx] = self.single.mean_acceptance[:, None]

    def _new_requests(self, idx: np.ndarray) -> None:
        """Users ``idx`` start a new request with a uniform prompt.

        The single env also draws the live backend's request seed; with one user the vector env
        draws it too (unused), so that both consume the same random stream.
        """
        rng, m = self.np_random, len(idx)
        self._prompt[idx] = rng.integers(self.num_prompts, size=m)
        if self.num_envs == 1:
            rng.integers(2**31, size=m)
        self._pos[idx] = 0

    def _advance(self, elapsed_s: np.ndarray) -> None:
        """Channel, loads and acceptance uniforms of the next round for every user (the single env's order)."""
        cfg, rng = self.config, self.np_random
        k = self._block_pos
        if k == self._block_len:  # the single env's _draw_block, for B users: shapes (rounds, ..., B)
            self._normals = rng.standard_normal((self._block_len, 5, self.num_envs))
            self._uniform_block = rng.random((self._block_len, cfg.gamma_max, self.num_envs))
            k = 0
        self._block_pos = k + 1
        z = self._normals[k]  # (5, B): fading (real, imaginary), edge load, device load, shadowing
        if cfg.drift_mps != 0.0:
            d = np.clip(self._distance + cfg.drift_mps * elapsed_s, 10.0, 5000.0)
            self.link.move(rng, d, np.abs(d - self._distance), normals=z[4])
            self._distance = d
        self._clock = self._clock + elapsed_s
        self._est_rate, self._est_ergodic, self._est_mean_snr = self._rate, self._ergodic, self._mean_snr
        _, snr, _ = self.link.step_from(z[:2])
        mean_snr = self.link.mean_snr
        loss_db = blockage_loss_db(cfg.blockage, self._clock) if cfg.blockage.loss_db > 0.0 else None
        if loss_db is not None and loss_db.any():
            factor = np.where(loss_db > 0.0, 10.0 ** (-loss_db / 10.0), 1.0)
            snr, mean_snr = snr * factor, mean_snr * factor
        self._rate = rate_from_snr_bps(cfg.channel.bandwidth_hz, snr)
        changed = (mean_snr != self._mean_snr).nonzero()[0]
        if changed.size:
            ergodic = self._ergodic.copy()
            ergodic[changed] = np.maximum(ergodic_rate_bps(cfg.channel.bandwidth_hz, mean_snr[changed]), 1.0)
            self._ergodic = ergodic
        self._mean_snr = mean_snr
        self._utils = ar1_load_step(
            self._utils, self._load_mean, self._load_corr, self._load_innovation, self._load_max, z[2:4]
        )
        self._uniforms = self._uniform_block[k]

    def _draw_pool(self) -> None:
        cfg, rng, n = self.config, self.np_random, self._pool_link.n_links
        distance = rng.uniform(*cfg.distance_m, size=n)
        link = self._pool_link
        link.reset(rng, distance)
        self._pool = (link.distances_m.copy(), link.los.copy(), link.shadowing_db.copy(),
                      link.large_scale_gain.copy(), link.fading.h.copy(), distance)
        self._pool_pos = 0

    def _start_episodes(self, idx: np.ndarray | None) -> np.ndarray:
        """New episodes for users ``idx`` (None: all, drawn as the single env's ``reset()``), before the advance.

        ``None`` also starts every user's first request; for ``idx`` the caller does (with the users whose
        next request starts in the same round). Returns the users' distances (m).
        """
        cfg, rng = self.config, self.np_random
        if idx is None:
            self._init_state()
            self._pool_pos = self._pool_link.n_links  # a reset(seed) must not reuse states drawn before it
            self._block_pos = self._block_len  # nor random numbers: a new block, as the single env's reset()
            distance = rng.uniform(*cfg.distance_m, size=self.num_envs)
            self.link.reset(rng, distance)
            self._distance = distance.copy()
            self._new_requests(self._rows)
            return distance
        self._clear(idx)
        m = len(idx)
        if self._pool_pos + m > self._pool_link.n_links:
            self._draw_pool()
        take = slice(self._pool_pos, self._pool_pos + m)
        self._pool_pos += m
        d2d, los, shadowing, gain, h, distance = (x[take] for x in self._pool)
        link = self.link
        link.distances_m[idx], link.los[idx], link.shadowing_db[idx] = d2d, los, shadowing
        link.large_scale_gain[idx], link.fading.h[idx] = gain, h
        self._distance[idx] = distance
        return distance

    def _obs(self) -> np.ndarray:
        cfg = self.config
        g, v = cfg.gamma_max, self.num_variants
        budget = cfg.energy_budget_j_per_token
        raw = np.empty((v + 10, self.num_envs))  # feature-major: each row is one feature over the batch
        raw[0] = np.log10(np.maximum(self._est_rate, MIN_RATE_BPS)) / 10.0
        raw[1] = cfg.rtt_s / RTT_SCALE_S
        raw[2:4] = self._utils
        raw[4 : 4 + v] = self._ema
        raw[4 + v] = self._last_accepted / g
        raw[5 + v] = self._last_proposed / g
        raw[6 + v] = (cfg.tokens_per_request - self._pos) / cfg.tokens_per_request
        raw[7 + v] = (cfg.requests_per_episode - self._requests_done) / cfg.requests_per_episode
        raw[8 + v] = self._battery / cfg.battery_j
        raw[9 + v] = 0.0 if budget is None else self._queue / (QUEUE_SCALE * max(budget, 1e-12))
        np.minimum(np.maximum(raw, 0.0, out=raw), self._obs_high, out=raw)  # np.clip, without its Python overhead
        return np.ascontiguousarray(raw.T, dtype=np.float32)

    # -- Gymnasium vector API ---------------------------------------------------------------------

    def reset(self, *, seed: int | list[int] | None = None, options: dict[str, Any] | None = None):
        """Reset every user, or those of ``options["reset_mask"]`` (a bool array (B,), Gymnasium's partial reset).

        ``seed`` seeds the one generator of the batch (a list: its first entry); a partial
        reset continues the generator (it takes no seed). The info of a partial reset carries
        ``_<key>`` masks: its entries belong to the users that reset.
        """
        mask = None if options is None else options.get("reset_mask")
        if mask is not None:
            mask = np.asarray(mask)
            if mask.shape != (self.num_envs,) or mask.dtype != np.bool_ or not mask.any():
                raise ValueError(
                    f"options['reset_mask']: expected a bool array ({self.num_envs},) with a True, got {mask!r}"
                )
            if seed is not None:
                raise ValueError("seed: a partial reset (options['reset_mask']) continues the generator; pass no seed")
            if not mask.all():
                idx = mask.nonzero()[0]
                distance = np.zeros(self.num_envs)
                distance[idx] = self._start_episodes(idx)
                self._new_requests(idx)
                self._advance(np.zeros(self.num_envs))
                self._settle(idx)
                self._needs_reset = self._needs_reset & ~mask
                info = {"link_rate_bps": self._rate.copy(), "_link_rate_bps": mask, "distance_m": distance,
                        "_distance_m": mask}
                return self._obs(), info
        if isinstance(seed, list):
            seed = seed[0]
        super().reset(seed=seed)
        return self._obs_after_full_reset()

    def _settle(self, idx: np.ndarray | None) -> None:
        """After the first advance of a new episode its estimates are the current values (as in ``reset()``)."""
        if idx is None:
            self._est_rate, self._est_ergodic, self._est_mean_snr = self._rate, self._ergodic, self._mean_snr
        else:
            for est, now in (("_est_rate", "_rate"), ("_est_ergodic", "_ergodic"), ("_est_mean_snr", "_mean_snr")):
                value = getattr(self, est).copy()
                value[idx] = getattr(self, now)[idx]
                setattr(self, est, value)

    def _obs_after_full_reset(self) -> tuple[np.ndarray, dict[str, Any]]:
        distance = self._start_episodes(None)
        self._advance(np.zeros(self.num_envs))
        self._settle(None)
        self._needs_reset = np.zeros(self.num_envs, dtype=bool)
        return self._obs(), {"link_rate_bps": self._rate.copy(), "distance_m": distance}

    def _check_actions(self, actions) -> tuple[np.ndarray, np.ndarray]:
        a = check_batch_integers(actions, self.action_space, "per user: [gamma, draft_variant]")
        return a[:, 0], a[:, 1]

    def step(self, actions):
        """One round for every user (next-step autoreset for those whose episode ended in the previous step)."""
        gamma, variant = self._check_actions(actions)
        b = self.num_envs
        resetting = self._needs_reset
        if resetting.all():
            obs, info = self._obs_after_full_reset()
            zeros = np.zeros(b, dtype=bool)
            return obs, np.zeros(b), zeros, zeros.copy(), info
        cfg = self.config
        n_tokens = cfg.tokens_per_request
        n_draft = np.minimum(gamma, n_tokens - self._pos - 1)
        accepted = accepted_runs(self.beta, variant, self._prompt, self._pos, n_draft, self._uniforms)
        emitted = accepted + 1
        edge_util, device_util = self._utils
        latency, energy = round_cost(self.tables, n_draft, variant, self._rate, edge_util, device_util, self._ergodic)
        # acceptance EMA of the drafted variant over the tested tokens (no change without drafting)
        tested = accepted + (accepted < n_draft)
        drafted = tested > 0
        ema_v = self._ema[variant, self._rows]
        step = self._eta[tested] * (accepted / np.maximum(tested, 1) - ema_v)
        self._ema[variant, self._rows] = np.where(drafted, ema_v + step, ema_v)
        self._last_accepted, self._last_proposed = accepted.copy(), n_draft.copy()
        self._pos = self._pos + emitted
        self._battery = self._battery - energy
        reward = -(latency + cfg.reward.energy_weight_per_j * energy) / n_tokens
        info: dict[str, Any] = {
            "latency_s": latency,
            "energy_j": energy,
            "tokens": emitted,
            "accepted_tokens": accepted,
            "proposed_tokens": n_draft,
            "gamma": gamma,
            "draft_variant": self._variants[variant],
            "link_rate_bps": self._rate,
            "edge_util": edge_util,
            "device_util": device_util,
            "prompt_index": self._prompt_ids[self._prompt],
        }
        budget = cfg.energy_budget_j_per_token
        if budget is not None:
            self._queue = virtual_queue_step(self._queue, energy, budget * emitted)
            info["virtual_queue"] = self._queue.copy()
        self._round = self._round + 1
        request_done = self._pos >= n_tokens
        self._requests_done = self._requests_done + request_done
        terminated = request_done & (self._requests_done >= cfg.requests_per_episode)
        starting = request_done & ~terminated  # users whose next request starts (and, below, new episodes)
        terminated |= self._battery <= 0.0
        truncated = self._round >= self.episode_length
        elapsed = latency
        any_reset = resetting.any()
        if any_reset:
            request_done &= ~resetting
            starting |= resetting
            idx = resetting.nonzero()[0]
            stepped = ~resetting
            reward[idx] = 0.0
            terminated[idx] = False
            truncated[idx] = False
            for key in _STEP_KEYS:
                if key in info:
                    info[f"_{key}"] = stepped
            distance = np.zeros(b)
            distance[idx] = self._start_episodes(idx)
            info["distance_m"], info["_distance_m"] = distance, resetting
            elapsed = np.where(resetting, 0.0, latency)
        info["request_done"], info["_request_done"] = request_done, request_done
        if starting.any():
            self._new_requests(starting.nonzero()[0])
        self._advance(elapsed)
        if any_reset:
            self._settle(idx)
            info["link_rate_bps"] = np.where(resetting, self._rate, info["link_rate_bps"])
        self._needs_reset = terminated | truncated
        return self._obs(), reward, terminated, truncated, info
