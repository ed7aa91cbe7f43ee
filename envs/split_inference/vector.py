"""Batched SplitInference-v0: B independent users stepped by numpy over arrays, no per-user Python loop."""

from __future__ import annotations

from typing import Any

import numpy as np

from edgelam.envs.core.actions import check_batch_integers
from edgelam.envs.core.channel import rate_from_snr_bps
from edgelam.envs.core.queues import virtual_queue_step
from edgelam.envs.core.vector import ReplayVectorEnv
from edgelam.envs.split_inference.dynamics import BITS, BLOCK, Exogenous, request_cost
from edgelam.envs.split_inference.env import QUEUE_SCALE, SNR_SCALE_DB, SplitInferenceEnv


class SplitInferenceVectorEnv(ReplayVectorEnv):
    """``num_envs`` copies of :class:`SplitInferenceEnv` advanced together with array math.

    Spaces, reward, ``info`` keys (as arrays of shape (B,)) and physics are those of
    the single env, built from the same scenario and the same cost functions. All
    copies share one episode length, so they truncate together; the step after a
    truncation resets every copy (Gymnasium's next-step autoreset: reward 0,
    ``terminated`` and ``truncated`` False). With ``num_envs=1`` and the same seed
    the trajectory equals the single env's. Replay backend only. A ``max_episode_steps``
    passed to ``gym.make_vec`` caps ``episode_length``, as a ``TimeLimit`` would.

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
        self.tables = self.single.tables
        self.num_layers = self.single.num_layers
        self.exo = Exogenous(self.config, self.single.num_prompts, n_users=num_envs)
        self._low = self.single_observation_space.low
        self._high = self.single_observation_space.high
        self._t = 0
        self._k = BLOCK
        self._needs_reset = False

    def _next_slot(self) -> None:
        self._k += 1
        if self._k >= BLOCK:
            self._block = self.exo.next_block(self.np_random)
            self._k = 0
        k, blk = self._k, self._block
        self._rate = blk.rate_bps[:, k]
        self._util = blk.edge_util[:, k]
        self._prompt = blk.prompt[:, k]
        self._snr_db = blk.snr_db[:, k]
        self._snr_hist = np.concatenate([blk.est_snr_db[:, k : k + 1], self._snr_hist[:, :-1]], axis=1)

    def _obs(self) -> np.ndarray:
        cfg = self.config
        budget = cfg.energy_budget_j
        queue = np.zeros(self.num_envs) if budget is None else self._queue / (QUEUE_SCALE * max(budget, 1e-12))
        est_rate = rate_from_snr_bps(cfg.channel.bandwidth_hz, 10.0 ** (self._snr_hist[:, 0] / 10.0))
        obs = np.concatenate(
            [
                self._snr_hist / SNR_SCALE_DB,
                np.stack(
                    [
                        np.log10(np.maximum(est_rate, 1.0)) / 10.0,
                        self._util,
                        self.tables.prompt_tokens[self._prompt] / 128.0,
                        np.full(self.num_envs, cfg.decode_tokens / 128.0),
                        queue,
                        np.full(self.num_envs, self._t / cfg.episode_length),
                    ],
                    axis=1,
                ),
            ],
            axis=1,
        )
        return np.clip(obs, self._low, self._high).astype(np.float32)

    def reset(self, *, seed: int | list[int] | None = None, options: dict[str, Any] | None = None):
        if isinstance(seed, list):
            seed = seed[0]
        super().reset(seed=seed)
        self.exo.reset(self.np_random)
        self._queue = np.zeros(self.num_envs)
        self._t = 0
        self._snr_hist = np.repeat(self.exo.initial_snr_db[:, None], self.config.snr_history, axis=1)
        self._k = BLOCK - 1  # the first _next_slot draws a block
        self._block = None
        self._next_slot()
        self._needs_reset = False
        return self._obs(), {"uplink_rate_bps": self._rate.copy()}

    def step(self, actions):
        a = check_batch_integers(actions, self.action_space, "per user: [split_layer, bits_index]")
        if self._needs_reset:
            obs, info = self.reset()
            zeros = np.zeros(self.num_envs, dtype=bool)
            return obs, np.zeros(self.num_envs), zeros, zeros.copy(), info
        layer, bits = a[:, 0], a[:, 1]
        cfg, w = self.config, self.config.reward
        latency, energy, up_bytes, qloss = request_cost(
            self.tables, self._prompt, layer, bits, self._rate, self._util, self.exo.ergodic_bps
        )
        reward = -(w.latency_weight * latency + w.energy_weight_per_j * energy + w.quality_weight * qloss)
        info = {
            "latency_s": latency,
            "energy_j": energy,
            "quality": 1.0 - qloss,
            "quality_loss": qloss,
            "uplink_bytes": up_bytes.astype(np.float64),
            "uplink_rate_bps": self._rate,
            "snr_db": self._snr_db,
            "edge_util": self._util,
            "split_layer": layer,
            "bits": np.asarray(BITS)[bits],
            "prompt_index": self._prompt,
        }
        if cfg.energy_budget_j is not None:
            self._queue = virtual_queue_step(self._queue, energy, cfg.energy_budget_j)
            info["virtual_queue"] = self._queue.copy()
            info["budget_excess_j"] = energy - cfg.energy_budget_j
        self._t += 1
        truncated = np.full(self.num_envs, self._t >= self.episode_length)
        self._needs_reset = bool(truncated[0])
        self._next_slot()
        return self._obs(), reward, np.zeros(self.num_envs, dtype=bool), truncated, info
