"""The one evaluation loop: same episodes for every policy, info aggregation, summary statistics."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats

from edgelam.agents.evaluate import evaluate, summarize
from edgelam.agents.metrics import ci95_halfwidth
from edgelam.agents.train import train
from tests.agents.conftest import TOY, TOY_MASK, OraclePolicy


def test_baseline_twice_gives_identical_rows():
    first = evaluate("random", TOY, episodes=4, seed=7)
    second = evaluate("random", TOY, episodes=4, seed=7)
    assert first == second
    assert [r["seed"] for r in first] == [7, 8, 9, 10]
    assert evaluate("random", TOY, episodes=4, seed=8) != first


def test_every_policy_sees_the_same_episodes():
    # the oracle is perfect on every episode; the targets (hence energy of the oracle) depend on the seed only
    oracle = evaluate("oracle", TOY, episodes=3, seed=0)
    factory = evaluate(OraclePolicy, TOY, episodes=3, seed=0)
    assert oracle == factory
    assert all(r["return"] == 10.0 and r["quality"] == 1.0 for r in oracle)


def test_info_sums_are_summed_others_averaged_and_non_scalars_skipped():
    rows = evaluate("zero", TOY, episodes=2, seed=1)
    row = rows[0]
    assert row["length"] == 10
    assert row["energy_j"] == pytest.approx(10 * 0.5)  # listed in metadata["info_sums"]: summed
    assert 0.01 <= row["latency_s"] <= 0.03  # averaged over steps
    assert row["slo_violated"] == pytest.approx(1.0 - row["quality"])  # bools averaged as 0/1
    assert "detail" not in row and "trace" not in row  # dict / array values skipped


def test_sb3_model_and_saved_path_give_identical_numbers(tmp_path, tiny_ppo):
    result = train(TOY, timesteps=256, seed=0, out_dir=tmp_path / "run", hyperparams=tiny_ppo)
    in_memory = evaluate(result.policy(), TOY, episodes=3, seed=5)
    assert in_memory == evaluate(result.policy(), TOY, episodes=3, seed=5)
    assert evaluate(tmp_path / "run", TOY, episodes=3, seed=5) == in_memory
    assert evaluate(str(tmp_path / "run" / "model.zip"), TOY, episodes=3, seed=5) == in_memory
    stochastic = evaluate(result.policy(), TOY, episodes=3, seed=5, deterministic=False)
    assert stochastic == evaluate(result.policy(), TOY, episodes=3, seed=5, deterministic=False)


def test_maskable_ppo_gets_the_mask_plain_ppo_does_not(tmp_path, tiny_ppo):
    train(TOY_MASK, algo="maskable_ppo", timesteps=128, seed=0, out_dir=tmp_path / "m", hyperparams=tiny_ppo)
    # sampled actions (deterministic=False) over 5 x 10 steps of a policy trained 128 steps, still
    # near uniform over 3 actions: an unmasked one takes action 2 in a step with probability ~1/3
    rows = evaluate(tmp_path / "m", TOY_MASK, episodes=5, seed=0, deterministic=False)
    assert [r["masked_action"] for r in rows] == [0.0] * 5
    # action 2 is masked: energy per step is 0.5 (action 0) or 1.0 (action 1), never 1.5
    assert all(5.0 <= r["energy_j"] <= 10.0 for r in rows)
    train(TOY_MASK, algo="ppo", timesteps=128, seed=0, out_dir=tmp_path / "p", hyperparams=tiny_ppo)
    plain = evaluate(tmp_path / "p", TOY_MASK, episodes=5, seed=0, deterministic=False)
    assert sum(r["masked_action"] for r in plain) * 10 >= 5  # plain PPO takes the masked action, often


def test_summarize_uses_the_student_t_interval():
    rows = [{"episode": i, "seed": i, "return": float(v), "cost": 1.0} for i, v in enumerate([1, 2, 4, 7])]
    summary = summarize(rows)
    assert set(summary) == {"return", "cost"}
    mean, half, n = summary["return"]
    x = np.array([1.0, 2.0, 4.0, 7.0])
    assert (mean, n) == (3.5, 4)
    assert half == pytest.approx(stats.t.ppf(0.975, 3) * x.std(ddof=1) / 2.0)
    assert summary["cost"] == (1.0, 0.0, 4)
    assert math.isnan(ci95_halfwidth([3.0]))


def test_unknown_baseline_and_env_raise_value_error():
    with pytest.raises(ValueError, match="unknown baseline"):
        evaluate("no_such_baseline", TOY, episodes=1)
    with pytest.raises(ValueError, match="unknown env id"):
        evaluate("random", "edgelam_test/Missing-v0", episodes=1)
