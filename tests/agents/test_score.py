"""The normalised score (return - random) / (hindsight - random) and its paired bootstrap interval."""

from __future__ import annotations

import math

import numpy as np
import pytest

from edgelam.agents.compare import hindsight_kind, score_note
from edgelam.agents.metrics import normalised_score, normalised_scores
from edgelam.baselines.hindsight import HindsightPolicy, Plan, plan_row


def test_random_scores_zero_hindsight_one_and_the_ratio_of_means_between():
    rand = np.array([1.0, 2.0, 3.0, 4.0])
    best = rand + 10.0
    policy = rand + 2.5
    assert normalised_score(rand, rand, best)[0] == pytest.approx(0.0)
    assert normalised_score(best, rand, best)[0] == pytest.approx(1.0)
    # a ratio of the means, not a mean of per-episode ratios (which would be (2 + 7/18) / 2 = 1.19)
    score, _ci, n = normalised_score([3.0, 7.0], [1.0, 0.0], [2.0, 18.0])
    assert score == pytest.approx((5.0 - 0.5) / (10.0 - 0.5)) and n == 2
    assert normalised_score(policy, rand, best)[0] == pytest.approx(0.25)


def test_the_interval_is_paired_and_covers_the_score():
    rng = np.random.default_rng(3)
    common = rng.normal(0.0, 50.0, size=40)  # an episode-level difficulty every policy shares
    rand = common + rng.normal(0.0, 0.1, size=40)
    best = common + 10.0 + rng.normal(0.0, 0.1, size=40)
    policy = common + 6.0 + rng.normal(0.0, 0.1, size=40)
    score, ci, _ = normalised_score(policy, rand, best)
    assert score == pytest.approx(0.6, abs=0.01)
    assert 0.0 < ci < 0.02  # unpaired resampling of the three policies would give a half-width of order 1


def test_no_room_to_normalise_gives_nan_and_bad_lengths_raise():
    assert math.isnan(normalised_score([1.0, 2.0], [3.0, 3.0], [3.0, 3.0])[0])
    assert math.isnan(normalised_score([1.0], [0.0], [2.0])[1])  # one episode: no interval
    with pytest.raises(ValueError, match="as many values"):
        normalised_score([1.0, 2.0], [0.0], [2.0, 3.0])
    with pytest.raises(ValueError, match="as many values"):
        normalised_score([], [], [])


def test_scores_from_rows_pair_by_seed_and_use_the_hindsight_value_not_its_return():
    rows = []
    for seed in (10, 11, 12):
        rows.append({"policy": "random", "seed": seed, "return": 0.0})
        # a bound: the value is above what the rounded plan realised
        rows.append({"policy": "hindsight", "seed": seed, "return": 5.0, "hindsight_value": 10.0})
        rows.append({"policy": "ppo", "seed": seed, "train_seed": 0, "return": 4.0})
        rows.append({"policy": "ppo", "seed": seed, "train_seed": 1, "return": 6.0})
    rows.append({"policy": "ppo", "seed": 99, "train_seed": 0, "return": 100.0})  # not seen by the others
    scores = normalised_scores(rows, ["random", "hindsight", "ppo"])
    assert scores["random"][0] == pytest.approx(0.0)
    assert scores["hindsight"][0] == pytest.approx(1.0)
    assert scores["ppo"][0] == pytest.approx(0.5) and scores["ppo"][2] == 3
    assert normalised_scores([r for r in rows if r["policy"] != "hindsight"], ["ppo"]) == {}


def test_plan_rows_and_the_kind_named_in_the_notes():
    plan = Plan(actions=[0, 1], value=3.0, kind="bound", solver="LP relaxation")
    assert plan_row(plan) == {"hindsight_value": 3.0, "hindsight_exact": 0.0, "hindsight_bound": 1.0,
                              "hindsight_fallback": 0.0}
    assert plan_row(None) == {}
    summary = {"hindsight": {"hindsight_value": (3.0, 0.1, 5), "hindsight_exact": (0.0, 0.0, 5),
                             "hindsight_bound": (1.0, 0.0, 5), "hindsight_fallback": (0.2, 0.1, 5)}}
    assert hindsight_kind(summary) == "bound"
    note = score_note(summary)
    assert "**bound**" in note and "upper bound" in note and "20%" in note
    summary["hindsight"]["hindsight_bound"] = (0.0, 0.0, 5)
    assert hindsight_kind(summary) == "planner"
    assert hindsight_kind({"random": {"return": (0.0, 0.0, 5)}}) is None
    with pytest.raises(ValueError, match="kind"):
        Plan(actions=[0], value=1.0, kind="optimal", solver="x")
    with pytest.raises(ValueError, match="finite"):
        Plan(actions=[0], value=float("nan"), kind="exact", solver="x")


def test_hindsight_policy_replans_at_each_episode_start_only():
    import gymnasium as gym

    class Env(gym.Env):
        action_space = gym.spaces.Discrete(3)
        observation_space = gym.spaces.Discrete(1)

    env = Env()
    calls = []

    def solve(e):
        calls.append(e)
        return Plan(actions=[len(calls), 2, 0], value=1.0, kind="exact", solver="test")

    policy = HindsightPolicy(env, solve)
    first = [policy.predict(0, episode_start=np.array([t == 0]))[0] for t in range(3)]
    assert first == [1, 2, 0] and len(calls) == 1
    assert policy.predict(0, episode_start=np.array([True]))[0] == 2 and len(calls) == 2
    policy.predict(0, episode_start=np.array([False]))
    policy.predict(0, episode_start=np.array([False]))
    with pytest.raises(ValueError, match="plan has 3 actions"):
        policy.predict(0, episode_start=np.array([False]))
