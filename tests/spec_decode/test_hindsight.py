"""SpecDecode-v0's hindsight: a backward DP over (round, request, position) on the realised trace."""

from __future__ import annotations

import types

import gymnasium as gym
import numpy as np
import pytest

import edgelam.envs  # noqa: F401
from edgelam.agents.evaluate import evaluate
from edgelam.baselines import make
from edgelam.baselines import spec_decode_hindsight as sh
from edgelam.baselines.hindsight import fork, rollout
from tests import hindsight_checks

ID = "edgelam/SpecDecode-v0"
SEED = 10000
# two drafts, gamma <= 2, one request of 6 tokens in at most 4 rounds: plain decoding is cut off by the horizon
TWO_DRAFTS = {"gamma_max": 2, "draft_variants": ["device", "early_exit:2"], "draft_cards": ["Qwen2.5-0.5B", "target"],
              "draft_layer_fraction": [1.0, 0.25], "draft_weight_bits": [16, 16]}
TOY = {"episode_length": 4, "requests_per_episode": 1, "tokens_per_request": 6, **TWO_DRAFTS}
# two requests of 4 tokens in 5 rounds: the DP crosses a request boundary (the second prompt)
TWO_REQUESTS = {"episode_length": 5, "requests_per_episode": 2, "tokens_per_request": 4, **TWO_DRAFTS}
ACTIONS = [np.array([g, v]) for g in range(3) for v in range(2)]  # the whole action space of the toys


def brute_force(env) -> float:
    """The best return over every sequence of actions from ``env``'s state."""
    return hindsight_checks.brute_force(env, ACTIONS, restore=True)


def test_exact_plans_return_their_value():
    hindsight_checks.assert_exact_plans_return_their_value(ID, SEED)


def test_hindsight_is_at_least_every_baseline():
    hindsight_checks.hindsight_margins(ID, SEED, rel=1e-12)


@pytest.mark.parametrize(("scenario", "overrides", "seeds"), [
    ("default", TOY, range(4)),
    ("default", TWO_REQUESTS, range(1)),
    ("device_draft", {**TOY, "draft_weight_bits": [8, 8]}, range(2)),
])
def test_value_is_the_brute_force_optimum(scenario, overrides, seeds):
    env = gym.make(ID, scenario=scenario, **overrides).unwrapped
    for seed in seeds:
        env.reset(seed=seed)
        plan = sh.solve(env)
        assert plan.kind == "exact" and not plan.fallback
        assert plan.value == pytest.approx(brute_force(env), rel=1e-9)
        assert rollout(env, plan.actions)[0] == pytest.approx(plan.value, rel=1e-9)


def test_a_solver_blind_to_the_future_is_beaten():
    """The per-round oracle (no future) and the DP run on another episode's trace fall short of the optimum."""
    env = gym.make(ID, **TOY).unwrapped
    env.reset(seed=1)
    optimum = brute_force(env)
    assert sh.solve(env).value == pytest.approx(optimum, rel=1e-9)
    assert rollout(env, sh.oracle_actions(env))[0] < optimum - 1e-3
    other = fork(env)
    other.reset(seed=0)
    padded = [*sh.solve(other).actions, *[np.zeros(2, dtype=np.int64)] * 4]  # played to the episode's end
    assert rollout(env, padded)[0] < optimum - 1e-3


def test_a_battery_that_may_run_out_is_not_claimed_exact():
    env = gym.make(ID, battery_j=0.05, **TOY).unwrapped
    env.reset(seed=1)
    plan = sh.solve(env)
    assert plan.kind == "planner" and not plan.fallback
    assert plan.value == pytest.approx(rollout(env, plan.actions)[0], rel=1e-12)
    assert plan.value >= rollout(env, sh.oracle_actions(env))[0]


@pytest.mark.parametrize(("scenario", "overrides", "reason"), [
    ("blockage", {}, "episode clock"),
    ("default", {"episode_length": 300}, "block of rounds"),
])
def test_action_dependent_traces_get_a_planner(scenario, overrides, reason):
    env = gym.make(ID, scenario=scenario, **overrides).unwrapped
    env.reset(seed=SEED)
    assert any(reason in why for why in sh.exogenous_coupled(env))
    if scenario == "blockage":
        plan = sh.solve(env)
        assert plan.kind == "planner" and not plan.fallback
        assert plan.value == pytest.approx(rollout(env, plan.actions)[0], rel=1e-12)
        assert plan.value >= rollout(env, sh.oracle_actions(env))[0]


def test_a_solver_failure_falls_back_to_the_oracle(monkeypatch):
    def broken(env, rows, prompts):
        raise RuntimeError("no solver")

    monkeypatch.setattr(sh, "solve_trace", broken)
    env = gym.make(ID, **TOY).unwrapped
    env.reset(seed=SEED)
    plan = sh.solve(env)
    assert plan.fallback and plan.kind == "planner" and "no solver" in plan.solver
    assert plan.value == pytest.approx(rollout(env, plan.actions)[0])
    policy = make("hindsight", env)
    env.reset(seed=SEED)
    policy.predict(None, episode_start=np.array([True]))
    assert policy.last_plan.fallback


def test_live_backend_is_refused():
    with pytest.raises(ValueError, match="live backend"):
        sh.solve(types.SimpleNamespace(backend="live", config=types.SimpleNamespace(iid_alpha=None)))


def test_a_planner_plan_lasts_the_whole_episode_on_the_hard_tier():
    # hard's test split: drift and blockage follow the episode clock, and on seed TEST_SEED the realised
    # episode of the DP's plan outlasts the trace the DP was solved on; the oracle's rounds complete it
    from edgelam.agents.common import TEST_SEED
    from edgelam.agents.compare.plan import eval_overrides

    overrides = eval_overrides(ID, "hard", None, "test")
    (row,) = evaluate("hindsight", ID, 1, TEST_SEED, "hard", overrides)
    assert not row["hindsight_exact"] and not row["hindsight_bound"] and not row["hindsight_fallback"]
    assert row["return"] == pytest.approx(row["hindsight_value"], rel=1e-12)
    env = gym.make(ID, scenario="hard", **overrides).unwrapped
    env.reset(seed=TEST_SEED)
    plan = sh.solve(env)
    sim = fork(env)
    ends = [sim.step(a)[2:4] for a in plan.actions]
    assert any(ends[-1]) and not any(any(e) for e in ends[:-1])  # ends exactly at its last action
    assert plan.value >= rollout(env, sh.oracle_actions(env))[0]
