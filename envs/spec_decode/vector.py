"""Batched SpecDecode-v0: B independent users' speculative decoding advanced by one compiled loop, no Python loop
per user."""

from __future__ import annotations

from typing import Any

import numpy as np

from edgelam.envs.core.actions import check_batch_integers
from edgelam.envs.core.vector import ReplayVectorEnv, partial_reset_mask
from edgelam.envs.spec_decode import dynamics as dyn
from edgelam.envs.spec_decode.dynamics import Params, State
from edgelam.envs.spec_decode.env import SpecDecodeEnv

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
    "cost",
)
POOL = 256  # episode starts drawn at once for the users that reset alone


class SpecDecodeVectorEnv(ReplayVectorEnv):
    """``num_envs`` copies of :class:`SpecDecodeEnv` on one batched :class:`~.dynamics.State` (replay backend).

    Spaces, reward, ``info`` keys (arrays of shape (B,)) and physics are those of the single
    env: the same functions (:func:`~edgelam.envs.spec_decode.dynamics.advance`, the compiled
    round :func:`~edgelam.envs.spec_decode.dynamics.simulate`) on B rows instead of one. Each
    user has its own episode (it ends when its requests are done or its battery is empty, or
    after ``episode_length`` rounds), so episodes end at different steps; the step after an
    end resets that user (Gymnasium's next-step autoreset: action ignored, reward 0,
    ``terminated`` and ``truncated`` False, the new episode's first observation). In a step
    where only some users reset, the round's ``info`` keys carry ``_<key>`` masks (False for
    the resetting users); ``request_done`` is present (mask ``_request_done``)
    for the users whose request completed, as in the single env; ``distance_m`` for the users
    that reset. ``reset(options={"reset_mask": mask})`` resets only the masked users now (and,
    as every reset, moves every user's link and loads one round on, by 0 s).

    Random numbers are drawn for the whole batch in the single env's order, the per-round ones
    in blocks of rounds (:func:`~edgelam.envs.spec_decode.dynamics.block_rounds`, dropped at a
    full reset, as the single env does at ``reset()``); when every user resets in the same step
    (always with ``num_envs=1``) the draws are the single env's ``reset()``'s, so with
    ``num_envs=1`` and the same seed the trajectory equals the single env's bit for bit, resets
    included. A user that resets alone takes its distance, LOS, shadowing and initial fading
    from a pool drawn for many episodes at once (episodes are i.i.d.). The ergodic rate of a
    user is re-evaluated only when its large-scale SNR changed (a reset; every round under
    ``drift_mps`` or during a blockage).
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
        single = self.single
        self.params: Params = Params.build(cfg, single.tables, single.beta, single.prompt_ids,
                                           single.observation_space.high, self.episode_length)
        self.tables = single.tables
        self.beta = single.beta
        self.num_prompts = single.num_prompts
        self.num_variants = single.num_variants
        self._variants = np.asarray(cfg.draft_variants)
        self._block_len = dyn.block_rounds(cfg.episode_length, num_envs)
        self._pool_size = max(POOL, num_envs)
        self._pool: dyn.EpisodeStarts | None = None
        self._pool_pos = self._pool_size
        self._control = np.zeros((4, num_envs), dtype=np.int64)
        self._control[dyn.LIVE_ACCEPTED] = -1
        self._result = dyn.tables_for(num_envs, self.num_variants)
        self._needs_reset = np.zeros(num_envs, dtype=bool)
        self.state: State = dyn.State.empty(num_envs, self.num_variants, cfg.gamma_max, self._block_len)

    # -- resets -----------------------------------------------------------------------------------

    def _start_alone(self, idx: np.ndarray) -> np.ndarray:
        """Users ``idx`` begin new episodes from the pool of starts (drawn when it runs out); their distances."""
        m = len(idx)
        if self._pool is None or self._pool_pos + m > self._pool_size:
            self._pool = dyn.draw_episode_starts(self.params, self.np_random, self._pool_size)
            self._pool_pos = 0
        starts = self._pool.take(slice(self._pool_pos, self._pool_pos + m))
        self._pool_pos += m
        dyn.start_rows(self.params, self.state, idx, starts)
        distance = np.zeros(self.num_envs)
        distance[idx] = starts.distance_m
        return distance

    def reset(self, *, seed: int | list[int] | None = None, options: dict[str, Any] | None = None):
        """Reset every user, or those of ``options["reset_mask"]`` (a bool array (B,), Gymnasium's partial reset).

        ``seed`` seeds the one generator of the batch (a list: its first entry); a partial
        reset continues the generator (it takes no seed). The info of a partial reset carries
        ``_<key>`` masks: its entries belong to the users that reset.
        """
        mask = partial_reset_mask(options, seed, self.num_envs)
        if mask is not None:
            idx = np.flatnonzero(mask)
            distance = self._start_alone(idx)
            dyn.new_requests(self.params, self.state, idx, self.np_random)
            result = self._result
            dyn.restart(self.params, self.state, mask, self.np_random, result)
            self._needs_reset = self._needs_reset & ~mask
            info = {"link_rate_bps": self.state.real[:, dyn.RATE].copy(), "_link_rate_bps": mask,
                    "distance_m": distance, "_distance_m": mask}
            return result.obs.copy(), info
        if isinstance(seed, list):
            seed = seed[0]
        super().reset(seed=seed)
        return self._reset_all()

    def _reset_all(self) -> tuple[np.ndarray, dict[str, Any]]:
        self._pool_pos = self._pool_size  # a reset(seed) must not reuse states drawn before it
        self.state, result = dyn.initial(self.params, self.np_random, self.num_envs, self._block_len)
        self._needs_reset = np.zeros(self.num_envs, dtype=bool)
        return result.obs.copy(), {"link_rate_bps": self.state.real[:, dyn.RATE].copy(),
                                   "distance_m": self.state.real[:, dyn.DISTANCE].copy()}

    # -- Gymnasium vector API ---------------------------------------------------------------------

    def step(self, actions):
        """One round for every user (next-step autoreset for those whose episode ended in the previous step)."""
        a = check_batch_integers(actions, self.action_space, "per user: [gamma, draft_variant]")
        b = self.num_envs
        resetting = self._needs_reset
        if resetting.all():
            obs, info = self._reset_all()
            zeros = np.zeros(b, dtype=bool)
            return obs, np.zeros(b), zeros, zeros.copy(), info
        control, result = self._control, self._result
        control[dyn.GAMMA], control[dyn.VARIANT] = a[:, 0], a[:, 1]
        any_reset = resetting.any()
        if any_reset:
            idx = np.flatnonzero(resetting)
            distance = self._start_alone(idx)
            control[dyn.SKIP] = resetting
        dyn.advance(self.params, self.state, control, self.np_random, result)
        out, counts = result.out, result.counts
        info: dict[str, Any] = {
            "latency_s": out[:, dyn.LATENCY].copy(),
            "energy_j": out[:, dyn.ENERGY].copy(),
            "tokens": counts[:, dyn.TOKENS].copy(),
            "accepted_tokens": counts[:, dyn.ACCEPTED].copy(),
            "proposed_tokens": counts[:, dyn.PROPOSED].copy(),
            "gamma": a[:, 0],
            "draft_variant": self._variants[a[:, 1]],
            "link_rate_bps": out[:, dyn.ROUND_RATE].copy(),
            "edge_util": out[:, dyn.ROUND_EDGE_UTIL].copy(),
            "device_util": out[:, dyn.ROUND_DEVICE_UTIL].copy(),
            "prompt_index": self.params.prompt_ids[counts[:, dyn.ROUND_PROMPT]],
        }
        if self.config.energy_budget_j_per_token is not None:
            info["virtual_queue"] = out[:, dyn.ROUND_QUEUE].copy()
        info["cost"] = info["energy_j"]  # the energy the queue accumulates: the same (copied) array
        reward = result.reward.copy()
        terminated, truncated = counts[:, dyn.TERMINATED] != 0, counts[:, dyn.TRUNCATED] != 0
        request_done = counts[:, dyn.REQUEST_DONE] != 0
        if any_reset:
            control[dyn.SKIP] = 0
            stepped = ~resetting
            for key in _STEP_KEYS:
                if key in info:
                    info[f"_{key}"] = stepped
            info["distance_m"], info["_distance_m"] = distance, resetting
            info["link_rate_bps"] = np.where(resetting, self.state.real[:, dyn.RATE], info["link_rate_bps"])
        info["request_done"], info["_request_done"] = request_done, request_done
        self._needs_reset = terminated | truncated
        return result.obs.copy(), reward, terminated, truncated, info
