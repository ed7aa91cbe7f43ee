"""Offload-v0's hindsight: an exact label DP over (edge backlog, battery) on the realised trace."""

from __future__ import annotations

import types

import gymnasium as gym
import numpy as np
import pytest

import edgelam.envs  # noqa: F401
from edgelam.baselines import make
from edgelam.baselines import offload_hindsight as oh
from edgelam.baselines.hindsight import fork, rollout
from tests import hindsight_checks

ID = "edgelam/Offload-v0"
SEED = 10000
# 5 tasks 50 ms apart (the edge is still busy with the agent's own last task), cloud priced out: the per-task
# oracle sends a task to the edge that delays a better one later (seed 3)
COUPLED = {"episode_length": 5, "task_interval_s": 0.05, "reward.cloud_cost_weight_per_usd": 2.0e5}
# rewards below zero and a 2 J battery: the best plan empties it within the 5 tasks
EMPTY_BATTERY = {"episode_length": 5, "battery_j": 2.0, "reward.latency_weight": 3.0}
# tier hard (busy edge, dear cloud) with 2 J for 5 tasks 50 ms apart: the battery binds the optimum, so the
# relaxation is not attained and the battery-aware DP decides
BINDING_BATTERY = {"scenario": "hard", "episode_length": 5, "battery_j": 2.0, "task_interval_s": 0.05}


def brute_force(env) -> float:
    """The best return over every sequence of tiers from ``env``'s state."""
    return hindsight_checks.brute_force(env, range(3), restore=True)


def test_exact_plans_return_their_value():
    hindsight_checks.assert_exact_plans_return_their_value(ID, SEED)


def test_hindsight_is_at_least_every_baseline():
    hindsight_checks.hindsight_margins(ID, SEED)


@pytest.mark.parametrize(("overrides", "seeds"), [(COUPLED, range(4)), (EMPTY_BATTERY, range(2)),
                                                   (BINDING_BATTERY, range(4))])
def test_value_is_the_brute_force_optimum(overrides, seeds):
    env = gym.make(ID, **overrides).unwrapped
    for seed in seeds:
        env.reset(seed=seed)
        plan = oh.solve(env)
        assert plan.kind == "exact" and not plan.fallback
        assert plan.value == pytest.approx(brute_force(env), rel=1e-9)
        assert rollout(env, plan.actions)[0] == pytest.approx(plan.value, rel=1e-9)


def test_the_battery_aware_stage_decides_where_the_battery_binds():
    env = gym.make(ID, **BINDING_BATTERY).unwrapped
    env.reset(seed=1)
    _, relaxed, _, _ = oh.label_dp(env, battery_aware=False)
    plan = oh.solve(env)
    assert "battery-aware" in plan.solver or "(edge backlog, battery)" in plan.solver
    assert plan.value < relaxed - 1e-3  # the relaxation's plan runs out of battery


def test_a_capped_dp_gives_a_certified_bound(monkeypatch):
    monkeypatch.setattr(oh, "MAX_LABELS", 1)
    env = gym.make(ID, **BINDING_BATTERY).unwrapped
    for seed in range(2):
        env.reset(seed=seed)
        plan = oh.solve(env)
        assert plan.kind == "bound" and not plan.fallback
        optimum = brute_force(env)
        realised, ended = oh.play(env, plan.actions)
        assert ended and realised <= optimum + 1e-12 <= plan.value + 2e-12
        assert realised >= oh.play(env, oh.oracle_plan(env))[0]


def test_the_battery_can_end_the_best_plan_early():
    env = gym.make(ID, **EMPTY_BATTERY).unwrapped
    env.reset(seed=0)
    plan = oh.solve(env)
    assert len(plan.actions) < 5 and rollout(env, plan.actions)[1] == len(plan.actions)


def test_a_solver_blind_to_the_future_is_beaten():
    """The per-task oracle (no future) and the DP run on another episode's trace fall short of the optimum."""
    env = gym.make(ID, **COUPLED).unwrapped
    env.reset(seed=3)
    optimum = brute_force(env)
    assert oh.solve(env).value == pytest.approx(optimum, rel=1e-9)
    assert rollout(env, oh.oracle_plan(env))[0] < optimum - 1e-3
    other = fork(env)
    other.reset(seed=4)
    padded = [*oh.solve(other).actions, *[np.int64(0)] * 5]  # played to the episode's end
    assert rollout(env, padded)[0] < optimum - 1e-3


def test_a_solver_failure_falls_back_to_the_oracle(monkeypatch):
    def broken(env, battery_aware, max_labels=None):
        raise RuntimeError("no solver")

    monkeypatch.setattr(oh, "label_dp", broken)
    env = gym.make(ID, episode_length=20).unwrapped
    env.reset(seed=SEED)
    plan = oh.solve(env)
    assert plan.fallback and plan.kind == "planner" and "no solver" in plan.solver
    assert plan.value == pytest.approx(rollout(env, plan.actions)[0])
    policy = make("hindsight", env)
    env.reset(seed=SEED)
    policy.predict(None, episode_start=np.array([True]))
    assert policy.last_plan.fallback


def test_dominance_margin_is_the_worst_loss_after_a_label_ends():
    # least partial sums from each task on: -1, -2, 0, -1 (and 0 past the end)
    assert oh.dominance_margin(np.array([1.0, -2.0, 1.0, -1.0])).tolist() == [1.0, 1.0, 0.0, 0.0]


def test_live_backend_is_refused():
    with pytest.raises(ValueError, match="live backend"):
        oh.solve(types.SimpleNamespace(backend="live"))
