"""Baselines of edgelam/SplitInference-v0.

All of them price actions with the env's own cost model
(``edgelam.envs.split_inference.dynamics.all_action_costs``), so the search
optimises exactly what the env charges.

* ``device_only`` / ``edge_only``: split layer L / 0 (16-bit).
* ``neurosurgeon`` (Kang et al., ASPLOS 2017): every request, exhaustive search
  over all (split layer, bits) of the reward cost, with the device's stale, noisy
  uplink-rate estimate, the announced edge load and the mean quality loss of each
  action over the profile (it cannot know this request's own quality).
* ``oracle``: the same search with the true current rate and this request's true
  quality loss.
* ``lyapunov`` (Neely 2010, drift-plus-penalty): per request minimise
  ``V * cost + Z * energy`` with the estimated rate, where Z is the device-energy
  virtual queue of the scenario's ``energy_budget_j``; larger V trades budget
  slack for cost, the queue stays O(V).
"""

from __future__ import annotations

import gymnasium as gym
import numpy as np

from edgelam.baselines import register
from edgelam.envs.split_inference.dynamics import BITS, all_action_costs
from edgelam.envs.split_inference.spec import SPEC

ENV_ID = SPEC.id
FULL_PRECISION = len(BITS) - 1


class _Static:
    def __init__(self, env: gym.Env, on_device: bool) -> None:
        n = env.unwrapped.num_layers
        self.action = np.array([n if on_device else 0, FULL_PRECISION], dtype=np.int64)

    def predict(self, observation, state=None, episode_start=None, deterministic=True):
        return self.action.copy(), state


class _Search:
    """argmin over all (split layer, bits) of ``V * cost + Z * energy`` (Z = 0 unless Lyapunov)."""

    def __init__(self, env: gym.Env, oracle: bool = False, lyapunov_v: float | None = None) -> None:
        self.env = env.unwrapped
        self.oracle = oracle
        self.v = lyapunov_v
        if lyapunov_v is not None and self.env.config.energy_budget_j is None:
            raise ValueError(
                "lyapunov baseline: the scenario sets no energy_budget_j (e.g. --set energy_budget_j=0.5)"
            )
        self.mean_quality_loss = self.env.tables.quality_loss.mean(axis=0)

    def predict(self, observation, state=None, episode_start=None, deterministic=True):
        env = self.env
        w = env.config.reward
        if self.oracle:
            latency, energy, _, q = all_action_costs(
                env.tables, env.prompt_index, env.true_rate_bps, env.edge_util, ergodic_bps=env.ergodic_rate_bps
            )
        else:
            latency, energy, _, q = all_action_costs(
                env.tables,
                env.prompt_index,
                env.estimated_rate_bps(),
                env.edge_util,
                self.mean_quality_loss,
                env.ergodic_rate_bps,
            )
        cost = w.latency_weight * latency + w.energy_weight_per_j * energy + w.quality_weight * q
        if self.v is not None:
            cost = self.v * cost + env.virtual_queue * energy
        layer, bits = np.unravel_index(int(np.argmin(cost)), cost.shape)
        return np.array([layer, bits], dtype=np.int64), state


register(ENV_ID, "device_only", lambda env: _Static(env, on_device=True))
register(ENV_ID, "edge_only", lambda env: _Static(env, on_device=False))
register(ENV_ID, "neurosurgeon", lambda env: _Search(env))
register(ENV_ID, "oracle", lambda env: _Search(env, oracle=True))
register(ENV_ID, "lyapunov", lambda env, v=10.0: _Search(env, lyapunov_v=v))

from edgelam.baselines.hindsight import register_hindsight  # noqa: E402
from edgelam.baselines.split_inference_hindsight import solve as _hindsight_solve  # noqa: E402

register_hindsight(ENV_ID, _hindsight_solve)
