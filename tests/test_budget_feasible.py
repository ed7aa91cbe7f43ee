"""A hard tier's cost limit is one a policy can keep, and one the reward-optimal plan does not keep anyway.

``compare`` and ``results`` count an episode as a violation when its cost is above the spec's
``cost_limit`` (Safety-Gymnasium's convention), and the constrained agents and the Lyapunov
baselines are judged by that share on the test split. A limit is a fair target only if:

* **it is feasible**: the cheapest plan, with the episode's exogenous trace known (the true
  rate of every request, not its estimate), keeps it on at least 95% of the test episodes,
  so a share of 10% or less is within reach of an online policy (where the trace depends on
  the actions, as SpecDecode's episode clock, a frugal plan stands in: a witness);
* **it binds**: the reward-optimal plan (``hindsight``) exceeds it on at least 10% of them,
  so keeping it costs return.

A budget that fails the first check is one no policy can keep on too many episodes (SplitInference's
0.6 J per request on its hard tier: the cheapest plan was above it on 22 of 100 test episodes);
one that fails the second prices nothing.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import gymnasium as gym
import numpy as np
import pytest

import edgelam.envs  # noqa: F401  (registers the ids)
from edgelam.agents.common import TEST_SEED
from edgelam.agents.compare.plan import eval_overrides
from edgelam.agents.evaluate import evaluate
from edgelam.envs.registration import find_spec
from edgelam.envs.spec_decode.dynamics import round_cost
from edgelam.envs.split_inference.dynamics import all_action_costs

EPISODES = 50
FEASIBLE_SHARE = 0.95  # the cheapest plan keeps the limit on at least this share of the test episodes
BINDING_SHARE = 0.10  # hindsight exceeds it on at least this share


class _Plan:
    """A plan that reads the env's true state (SB3's ``predict``; ``evaluate`` takes ``env -> plan``)."""

    def __init__(self, env: gym.Env) -> None:
        self.env = env.unwrapped


class _SplitMinEnergy(_Plan):
    """Each request's least device energy over every (split layer, bits), at its true rate: the cheapest
    plan of an episode, since a request's energy depends on its own action and the exogenous trace only."""

    def predict(
        self, observation: Any, state: Any = None, episode_start: Any = None, deterministic: bool = True
    ) -> tuple[np.ndarray, Any]:
        e = self.env
        _, energy, _, _ = all_action_costs(
            e.tables, e.prompt_index, e.true_rate_bps, e.edge_util, ergodic_bps=e.ergodic_rate_bps
        )
        return np.array(np.unravel_index(int(np.argmin(energy)), energy.shape), dtype=np.int64), state


class _SpecFrugal(_Plan):
    """Each round's (gamma, draft) of least device energy per emitted token, with the true link rate and the
    true acceptances of the round (``accepted_if``): a frugal plan, a witness that the limit can be kept (the
    link follows the episode clock, so no plan is the cheapest of every episode for certain)."""

    def predict(
        self, observation: Any, state: Any = None, episode_start: Any = None, deterministic: bool = True
    ) -> tuple[np.ndarray, Any]:
        e = self.env
        cap = e.tokens_left - 1
        best, best_cost = (0, 0), float("inf")
        for variant in range(e.num_variants):
            for gamma in range(e.config.gamma_max + 1):
                if min(gamma, cap) < gamma or (gamma == 0 and variant > 0):
                    continue  # the same round as a smaller gamma / the variant is unused
                _, energy = round_cost(
                    e.tables, gamma, variant, e.true_rate_bps, e.edge_util, e.device_util, e.true_ergodic_rate_bps
                )
                per_token = energy / (e.accepted_if(gamma, variant) + 1.0)
                if per_token < best_cost:
                    best, best_cost = (gamma, variant), per_token
        return np.array(best, dtype=np.int64), state


# env id -> the cheapest plan with the trace known (a callable env -> policy)
CHEAPEST: dict[str, Callable[[gym.Env], Any]] = {
    "edgelam/SplitInference-v0": _SplitMinEnergy,
    "edgelam/SpecDecode-v0": _SpecFrugal,
    "edgelam/EdgeModelCache-v0": "always_cloud",  # forwarding downloads nothing: the cheapest of every episode
}
# the envs whose plan above is the cheapest of every episode (the others: a witness only)
EXACT_CHEAPEST = {"edgelam/SplitInference-v0", "edgelam/EdgeModelCache-v0"}


def _test_costs(env_id: str, policy: Any) -> tuple[np.ndarray, float]:
    spec = find_spec(env_id)
    overrides = eval_overrides(env_id, "hard", {}, "test")
    limit = spec.cost_limit("hard", **overrides)
    assert limit is not None and limit > 0, f"{env_id}: the hard tier sets no budget"
    rows = evaluate(policy, env_id, episodes=EPISODES, seed=TEST_SEED, scenario="hard", env_kwargs=overrides)
    return np.array([r["cost"] for r in rows]), limit


@pytest.mark.parametrize("env_id", sorted(CHEAPEST))
def test_hard_tier_cost_limit_is_feasible_and_binds(env_id: str) -> None:
    cheapest, limit = _test_costs(env_id, CHEAPEST[env_id])
    kept = float(np.mean(cheapest <= limit))
    assert kept >= FEASIBLE_SHARE, (
        f"{env_id}: the cheapest plan keeps the {limit:g} limit on only {kept:.0%} of {EPISODES} test episodes"
    )
    best, _ = _test_costs(env_id, "hindsight")
    if env_id in EXACT_CHEAPEST:
        assert np.all(best >= cheapest - 1e-9), "the cheapest plan must cost no more than any other"
    over = float(np.mean(best > limit))
    assert over >= BINDING_SHARE, (
        f"{env_id}: hindsight exceeds the {limit:g} limit on only {over:.0%} of the test episodes: it prices nothing"
    )
