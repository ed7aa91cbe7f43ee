"""Baselines of edgelam/Offload-v0.

All of them price tiers with the env's own cost function
(``edgelam.envs.offload.dynamics.task_cost``) on what the device knows: the uplink
rate of this slot, the edge's announced unfinished work and the last measured cloud RTT.

* ``always_device`` / ``always_edge`` / ``always_cloud``: a fixed tier.
* ``threshold``: confidence cascade -- the device answers when its model's confidence
  is >= ``high``, the edge when it is >= ``low``, the cloud otherwise (defaults: the
  median and the lower quartile of the device confidence over the profile).
* ``greedy``: per task, argmax of the expected reward, with the expected quality of each
  tier a least-squares line in the device confidence fitted on the replay profile.
* ``lyapunov`` (Neely 2010, drift-plus-penalty): argmin ``-V * expected reward + Z * y``
  with Z the env's budget virtual queue and y the budgeted metric (energy or cloud cost).
* ``oracle``: argmax of the true reward (true per-task quality and true cloud RTT).
"""

from __future__ import annotations

import gymnasium as gym
import numpy as np

from edgelam.baselines import offload_hindsight, register
from edgelam.baselines.hindsight import register_hindsight
from edgelam.envs.offload.dynamics import CLOUD, DEVICE, EDGE, task_cost
from edgelam.envs.offload.spec import SPEC

ENV_ID = SPEC.id
TIER_IDS = (DEVICE, EDGE, CLOUD)


class _Static:
    def __init__(self, env: gym.Env, tier: int) -> None:
        self.action = np.int64(tier)

    def predict(self, observation, state=None, episode_start=None, deterministic=True):
        return self.action, state


class Threshold:
    """Confidence cascade: device if conf >= high, edge if conf >= low, else cloud."""

    def __init__(self, env: gym.Env, high: float | None = None, low: float | None = None) -> None:
        self.env = env.unwrapped
        conf = self.env.tables.confidence
        self.high = float(np.quantile(conf, 0.5)) if high is None else high
        self.low = float(np.quantile(conf, 0.25)) if low is None else low
        if self.low > self.high:
            raise ValueError(f"threshold baseline: low {self.low} exceeds high {self.high}")

    def tier(self, confidence: float) -> int:
        """Tier of a task whose device confidence is ``confidence``."""
        return DEVICE if confidence >= self.high else EDGE if confidence >= self.low else CLOUD

    def predict(self, observation, state=None, episode_start=None, deterministic=True):
        return np.int64(self.tier(self.env.device_confidence)), state


def quality_fit(quality: np.ndarray, confidence: np.ndarray) -> np.ndarray:
    """Least-squares lines quality_k ~ a_k + b_k conf for each tier: (3, 2) of (b_k, a_k)."""
    return np.stack([np.polyfit(confidence, quality[:, k], 1) for k in range(quality.shape[1])])


class UtilitySearch:
    """argmax over tiers of the (expected or true) reward, optionally drift-plus-penalty."""

    def __init__(self, env: gym.Env, oracle: bool = False, lyapunov_v: float | None = None) -> None:
        self.env = env.unwrapped
        self.oracle = oracle
        self.v = lyapunov_v
        cfg = self.env.config
        if lyapunov_v is not None and cfg.budget.per_task is None:
            raise ValueError("lyapunov baseline: the scenario sets no budget.per_task (e.g. budget.per_task=0.5)")
        self.fit = quality_fit(self.env.tables.quality, self.env.tables.confidence)

    def scores(self) -> np.ndarray:
        """Expected reward (or drift-plus-penalty score, higher is better) of each tier, shape (3,)."""
        env = self.env
        cfg = env.config
        w = cfg.reward
        p = env.prompt_index
        rtt = env.true_cloud_rtt_s if self.oracle else env.last_cloud_rtt_s
        if self.oracle:
            quality = env.tables.quality[p]
        else:
            quality = np.clip(self.fit[:, 0] * env.device_confidence + self.fit[:, 1], 0.0, 1.0)
        out = np.empty(3)
        for k in TIER_IDS:
            latency, energy, usd = task_cost(env.tables, p, k, env.uplink_rate_bps, env.edge_wait_s, rtt)
            reward = (
                w.quality_weight * quality[k]
                - w.latency_weight * latency
                - w.energy_weight_per_j * energy
                - w.cloud_cost_weight_per_usd * usd
            )
            if self.v is not None:
                y = energy if cfg.budget.metric == "energy_j" else usd
                reward = self.v * reward - env.virtual_queue * y
            out[k] = reward
        return out

    def predict(self, observation, state=None, episode_start=None, deterministic=True):
        return np.int64(int(np.argmax(self.scores()))), state


register(ENV_ID, "always_device", lambda env: _Static(env, DEVICE))
register(ENV_ID, "always_edge", lambda env: _Static(env, EDGE))
register(ENV_ID, "always_cloud", lambda env: _Static(env, CLOUD))
register(ENV_ID, "threshold", lambda env, **kw: Threshold(env, **kw))
register(ENV_ID, "greedy", lambda env: UtilitySearch(env))
register(ENV_ID, "lyapunov", lambda env, v=1.0: UtilitySearch(env, lyapunov_v=v))
register(ENV_ID, "oracle", lambda env: UtilitySearch(env, oracle=True))
register_hindsight(ENV_ID, offload_hindsight.solve)
