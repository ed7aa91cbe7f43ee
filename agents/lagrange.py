"""The dual variable of PPO-Lagrangian (:mod:`edgelam.agents.lagrangian`): lambda >= 0, its dual step, the
reward it shapes, and the record of its steps in a run folder (``lagrange.json``)."""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

LAGRANGE_FILE = "lagrange.json"
# the Lagrangian keys of an entry and their defaults (OmniSafe's PPO-Lag defaults and names; cost_limit_margin,
# edgelam's: the dual step targets (1 - margin) x the limit, a constraint tightening, 0 = the limit itself)
LAGRANGIAN_KEYS: dict[str, Any] = {"lagrangian_multiplier_init": 0.001, "lambda_lr": 0.035, "lambda_optimizer": "adam",
                                   "cost_limit_margin": 0.0}
OPTIMIZERS = ("sgd", "adam")
# Adam's constants (torch.optim.Adam's defaults, OmniSafe's optimizer)
ADAM_BETAS = (0.9, 0.999)
ADAM_EPS = 1e-8


def shaped_reward(reward: np.ndarray, cost: np.ndarray, lagrange_multiplier: float) -> np.ndarray:
    """The reward PPO trains on: ``(r - lambda c) / (1 + lambda)`` (OmniSafe's normalised penalty)."""
    return (np.asarray(reward, dtype=np.float64) - lagrange_multiplier * cost) / (1.0 + lagrange_multiplier)


@dataclass
class LagrangeMultiplier:
    """lambda >= 0 of the constraint E[episode cost] <= ``cost_limit`` and its dual step.

    Attributes:
        cost_limit: d, the per-episode cost limit (the cost's unit).
        lambda_lr: step size of the dual step.
        lambda_optimizer: ``"sgd"`` (``lambda + lambda_lr (J_c - d)``) or ``"adam"``.
        value: lambda now.
        mean_episode_cost: the J_c of the last step (``None`` before any episode ended).
        adam_m, adam_v, adam_t: Adam's moments and step count.
    """

    cost_limit: float
    lambda_lr: float
    lambda_optimizer: str = "sgd"
    value: float = 0.0
    mean_episode_cost: float | None = None
    adam_m: float = 0.0
    adam_v: float = 0.0
    adam_t: int = 0

    def update(self, episode_costs: Sequence[float]) -> float:
        """One dual step on the costs of the episodes that ended in a rollout; the new lambda.

        J_c is their mean, or the previous J_c when the sequence is empty (no step before the
        first episode has ended).
        """
        if len(episode_costs):
            self.mean_episode_cost = float(np.mean(episode_costs))
        if self.mean_episode_cost is None:
            return self.value
        gap = self.mean_episode_cost - self.cost_limit
        if self.lambda_optimizer == "sgd":
            value = self.value + self.lambda_lr * gap
        else:  # Adam on the loss -lambda * gap (its gradient is -gap), as torch.optim.Adam steps it
            beta1, beta2 = ADAM_BETAS
            grad = -gap
            self.adam_t += 1
            self.adam_m = beta1 * self.adam_m + (1.0 - beta1) * grad
            self.adam_v = beta2 * self.adam_v + (1.0 - beta2) * grad * grad
            m_hat = self.adam_m / (1.0 - beta1**self.adam_t)
            v_hat = self.adam_v / (1.0 - beta2**self.adam_t)
            value = self.value - self.lambda_lr * m_hat / (math.sqrt(v_hat) + ADAM_EPS)
        self.value = max(value, 0.0)
        return self.value


def read_updates(path: Path) -> list[dict[str, Any]]:
    """The dual steps of a run's ``lagrange.json`` (empty when absent)."""
    if not path.is_file():
        return []
    try:
        return list(json.loads(path.read_text())["updates"])
    except (json.JSONDecodeError, KeyError, TypeError) as exc:
        raise ValueError(f"{path}: not a {LAGRANGE_FILE} ({exc})") from None


def write_updates(path: Path, cost_limit: float, updates: Sequence[Mapping[str, Any]]) -> None:
    """Write ``lagrange.json`` atomically: the cost limit and every dual step."""
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps({"cost_limit": cost_limit, "updates": list(updates)}, indent=1) + "\n")
    tmp.replace(path)


def restore(multiplier: LagrangeMultiplier, updates: Sequence[Mapping[str, Any]]) -> None:
    """Set ``multiplier`` to the state after the last of ``updates`` (unchanged when there is none)."""
    if updates:
        last = updates[-1]
        multiplier.value = float(last["lagrange_multiplier"])
        cost = last["mean_episode_cost"]
        multiplier.mean_episode_cost = None if cost is None else float(cost)
        multiplier.adam_m, multiplier.adam_v = float(last["adam_m"]), float(last["adam_v"])
        multiplier.adam_t = int(last["adam_t"])
