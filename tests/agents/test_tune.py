"""edgelam tune: the study, its validation split, pruning, continuing, writing the best back."""

from __future__ import annotations

import json
import shutil

import optuna
import pytest

from edgelam.agents import hyperparams as hp
from edgelam.agents import tune as tune_mod
from edgelam.agents import tune_space
from edgelam.agents.common import TEST_SEED
from edgelam.agents.evaluate import evaluate
from edgelam.agents.policies import load_policy
from edgelam.agents.tune import VALIDATION_SEED, TuneSettings, held_out_gain, run_trial, tune
from edgelam.agents.tune_write import write_best
from tests.agents.conftest import TOY


def _settings(tmp_path, **kw) -> TuneSettings:
    return TuneSettings(
        env_id=TOY,
        trials=kw.pop("trials", 3),
        minutes=5,
        timesteps=512,
        evaluations=2,
        episodes=3,
        out=tmp_path / "study",
        **kw,
    )


def _evaluated_seeds(monkeypatch) -> list[int]:
    """The reset seed of every evaluate() call tune makes from now on (appended as they happen)."""
    seeds: list[int] = []
    real = tune_mod.evaluate

    def spy(*args, **kwargs):
        seeds.append(kwargs["seed"])
        return real(*args, **kwargs)

    monkeypatch.setattr(tune_mod, "evaluate", spy)
    return seeds


def test_a_study_evaluates_on_validation_seeds_only_and_continues(tmp_path, monkeypatch):
    seeds = _evaluated_seeds(monkeypatch)
    result = tune(_settings(tmp_path), log=lambda m: None)
    assert set(seeds) == {VALIDATION_SEED}  # never the test split (compare / results: 10000 + i)
    assert result.complete + result.pruned == 3 and result.complete >= 1
    assert set(result.best_params) >= {"n_steps", "batch_size", "gamma", "learning_rate", "policy_kwargs"}
    assert result.best["mean"] == max(
        t.value
        for t in optuna.load_study(study_name=f"{TOY}:ppo", storage=f"sqlite:///{tmp_path}/study/study.db").trials
        if t.value is not None
    )
    saved = json.loads((tmp_path / "study" / "study.json").read_text())
    assert saved["gain"] == pytest.approx(result.best["mean"] - result.untuned["mean"])
    assert saved["settings"]["budget"] == 512
    untuned_runs = len(seeds)
    again = tune(_settings(tmp_path, trials=4), log=lambda m: None)  # the same folder: one more trial
    assert again.complete + again.pruned == 4 and again.untuned == result.untuned
    assert again.wall_s > result.wall_s > result.untuned["wall_s"]  # the study's time over both calls
    assert len(seeds) > untuned_runs and (tmp_path / "study" / "trial_3").is_dir()


def test_the_held_out_gain_pairs_the_two_models_on_the_test_split(tmp_path, monkeypatch):
    settings = _settings(tmp_path, trials=2, test_episodes=4)
    result = tune(settings, log=lambda m: None)
    seeds = _evaluated_seeds(monkeypatch)
    gain = held_out_gain(result, settings)
    assert seeds == [TEST_SEED, TEST_SEED]  # the test split, which the study never saw
    returns = {}
    for name, folder in (("tuned", f"trial_{result.best['trial']}"), ("untuned", "untuned")):
        rows = evaluate(load_policy(tmp_path / "study" / folder), TOY, episodes=4, seed=TEST_SEED)
        returns[name] = [r["return"] for r in rows]
    diffs = [a - b for a, b in zip(returns["tuned"], returns["untuned"], strict=True)]
    assert gain["episodes"] == 4 and gain["trial"] == result.best["trial"]
    assert gain["tuned"]["mean"] == pytest.approx(sum(returns["tuned"]) / 4)
    assert gain["gain"]["mean"] == pytest.approx(sum(diffs) / 4)
    assert gain["verdict"] in ("beats", "ties", "loses to")
    assert held_out_gain(result, settings) == gain and len(seeds) == 2  # kept: not evaluated again


class _PruneNow:
    def __init__(self) -> None:
        self.reported = []

    def report(self, value, step):
        self.reported.append((step, value))

    def should_prune(self):
        return True


def test_the_pruner_stops_a_trial_at_its_first_validation_point(tmp_path):
    trial = _PruneNow()
    settings = TuneSettings(env_id=TOY, timesteps=4096, evaluations=4, episodes=2, out=tmp_path)
    with pytest.raises(optuna.TrialPruned):
        run_trial(settings, {"n_envs": 2, "n_steps": 64, "batch_size": 64}, tmp_path / "t", trial)
    assert len(trial.reported) == 1 and trial.reported[0][0] < 4096
    meta = json.loads((tmp_path / "t" / "meta.json").read_text())
    assert meta["num_timesteps"] < 4096  # training really ended there


def test_write_best_replaces_the_entry_and_keeps_the_others(tmp_path):
    path = tmp_path / "ppo.yml"
    shutil.copy(hp.hyperparams_file("ppo"), path)
    before = hp.read_file(path, "ppo")
    result = tune_mod.TuneResult(
        env_id="edgelam/SplitInference-v0",
        algo="ppo",
        budget=20_000,
        best_params={"n_steps": 64, "gamma": 0.95, "policy_kwargs": {"net_arch": [128, 128], "activation_fn": "relu"}},
        best={"mean": -40.0, "ci95": 1.5, "trial": 7},
        untuned={"mean": -50.0, "ci95": 2.0},
        complete=9,
        pruned=3,
        wall_s=600.0,
        folder=tmp_path,
    )
    result.test = {
        "trial": 7,
        "episodes": 30,
        "seed": 10_000,
        "tuned": {"mean": -41.0, "ci95": 1.0},
        "untuned": {"mean": -52.0, "ci95": 2.5},
        "gain": {"mean": 11.0, "ci95": 0.5},
        "verdict": "beats",
        "p_value": 1e-6,
    }
    records = tmp_path / "tuning"
    for _ in range(2):  # writing twice leaves one entry
        write_best(
            result,
            "edgelam tune edgelam/SplitInference-v0 --trials 12",
            path,
            records,
            TuneSettings(env_id="edgelam/SplitInference-v0", scenario="congested_edge", trials=12),
        )
    text = path.read_text()
    assert "paired gain 11 ± 0.5 (Wilcoxon: tuned beats untuned)" in text
    record = json.loads((records / "split_inference.ppo.json").read_text())
    assert record["test"] == result.test and record["validation_gain"] == 10.0 and record["budget"] == 20_000
    assert record["command"].endswith("--trials 12") and "folder" not in record
    assert record["settings"]["scenario"] == "congested_edge" and record["settings"]["vectorized"] is True
    assert text.count("edgelam/SplitInference-v0:") == 1
    assert text.count("Tuned by `edgelam tune edgelam/SplitInference") == 1
    assert "best trial 7 -40 ± 1.5; the entry before tuning -50 ± 2" in text
    assert "Only the discount differs" not in text  # the old entry's comment went with it
    after = hp.read_file(path, "ppo")
    entry = after["edgelam/SplitInference-v0"]
    assert (entry["n_steps"], entry["gamma"], entry["n_timesteps"]) == (64, 0.95, 20_000)
    assert entry["policy_kwargs"] == {"net_arch": [128, 128], "activation_fn": "relu"}  # via nn.ReLU
    assert "activation_fn=nn.ReLU" in text  # rl-zoo3's string form, which rl-zoo3 evaluates
    assert entry["batch_size"] == before["edgelam/SplitInference-v0"]["batch_size"]  # untuned keys kept
    assert {k: v for k, v in after.items() if k != "edgelam/SplitInference-v0"} == {
        k: v for k, v in before.items() if k != "edgelam/SplitInference-v0"
    }


def test_bad_settings_are_refused():
    with pytest.raises(ValueError, match="no search space"):
        TuneSettings(env_id=TOY, algo="trpo")
    with pytest.raises(ValueError, match="trials must be >= 1"):
        TuneSettings(env_id=TOY, trials=0)
    with pytest.raises(ValueError, match="minutes"):
        TuneSettings(env_id=TOY, minutes=0)
    with pytest.raises(ValueError, match="unknown env id 'edgelam/Nope-v0'"):
        TuneSettings(env_id="edgelam/Nope-v0")


# -- ppo_lagrangian: the study selects on the cost constraint ---------------------------------------

SPLIT = "edgelam/SplitInference-v0"


def test_select_best_takes_the_best_feasible_trial_not_the_best_return():
    trials = [
        {"trial": 0, "mean": 10.0, "violation": 0.5},  # the highest return, over the limit on half the episodes
        {"trial": 1, "mean": 2.0, "violation": 0.1},  # feasible (<= 0.10)
        {"trial": 2, "mean": 1.0, "violation": 0.0},  # feasible, lower return
    ]
    best, feasible = tune_mod.select_best(trials)
    assert (best["trial"], feasible) == (1, True)  # return alone would pick trial 0
    best, feasible = tune_mod.select_best([{**t, "violation": t["violation"] + 0.3} for t in trials])
    assert (best["trial"], feasible) == (2, False)  # none feasible: the lowest violation share
    with pytest.raises(ValueError, match="no trials"):
        tune_mod.select_best([])


def test_a_ppo_lagrangian_study_records_violations_and_picks_by_the_constraint(tmp_path, monkeypatch):
    monkeypatch.setitem(tune_space.SAMPLERS, "ppo_lagrangian", _tiny_lagrangian)
    settings = TuneSettings(
        env_id=SPLIT,
        algo="ppo_lagrangian",
        trials=2,
        minutes=5,
        timesteps=512,
        evaluations=2,
        episodes=3,
        out=tmp_path / "study",
        env_kwargs={"episode_length": 16, "energy_budget_j": 3.0},
    )
    logged: list[str] = []
    result = tune(settings, log=logged.append)
    saved = json.loads((tmp_path / "study" / "study.json").read_text())
    records = saved["constraint"]["trials"]
    assert len(records) == 2 and all(0.0 <= r["violation"] <= 1.0 for r in records)
    chosen, feasible = tune_mod.select_best(records)
    assert result.best["trial"] == chosen["trial"] and saved["constraint"]["feasible"] is feasible
    assert result.best["violation"] == chosen["violation"] and "violation" in result.untuned
    assert any("over the cost limit" in line for line in logged)
    assert set(result.best_params) >= {"lambda_lr", "cost_limit_margin", "n_steps"}
    path = tmp_path / "ppo_lagrangian.yml"
    shutil.copy(tune_mod.lagrangian.hyperparams_file(), path)
    write_best(result, "edgelam tune --algo ppo_lagrangian", path, tmp_path / "tuning")
    ppo, lagr = tune_mod.lagrangian.read_file(path)[SPLIT]
    assert lagr.lambda_lr == pytest.approx(result.best_params["lambda_lr"])
    assert ppo["n_steps"] == result.best_params["n_steps"] and ppo["n_timesteps"] == 512
    assert "Constrained selection" in path.read_text()


def _tiny_lagrangian(trial, n_envs):
    """The real space's Lagrangian keys over a PPO small enough for the test's budget."""
    params = tune_space.sample_ppo_lagrangian(trial, n_envs)
    return {**params, "n_steps": 32, "batch_size": 64, "n_epochs": 1, "policy_kwargs": {"net_arch": [16]}}


def test_a_constrained_trial_is_never_pruned(tmp_path):
    trial = _PruneNow()
    settings = TuneSettings(
        env_id=SPLIT,
        algo="ppo_lagrangian",
        timesteps=256,
        evaluations=2,
        episodes=2,
        out=tmp_path,
        env_kwargs={"episode_length": 16, "energy_budget_j": 3.0},
    )
    out = run_trial(settings, {"n_envs": 2, "n_steps": 32, "batch_size": 64, "n_epochs": 1}, tmp_path / "t", trial)
    assert trial.reported == [] and len(out["curve"]) == 2 and "violation" in out


# -- rarl: no callbacks, validated once at its end against the random adversary ----------------------


def test_a_rarl_study_validates_the_protagonist_at_its_end_and_writes_rarl_yml(tmp_path, monkeypatch):
    monkeypatch.setitem(tune_space.SAMPLERS, "rarl", _tiny_rarl)
    seeds = _evaluated_seeds(monkeypatch)
    settings = TuneSettings(
        env_id="edgelam/RobustRouting-v0",
        algo="rarl",
        trials=1,
        minutes=5,
        timesteps=512,
        evaluations=4,
        episodes=2,
        test_episodes=2,
        out=tmp_path / "study",
    )
    result = tune(settings, log=lambda m: None)
    assert result.complete == 1 and result.pruned == 0
    assert seeds == [VALIDATION_SEED, VALIDATION_SEED]  # the untuned entry's and the trial's, once each
    assert len(result.untuned["curve"]) == 1  # one validation point: the end
    gain = held_out_gain(result, settings)
    assert gain["episodes"] == 2
    path = tmp_path / "rarl.yml"
    shutil.copy(hp.rarl_file(), path)
    write_best(result, "edgelam tune --algo rarl", path, tmp_path / "tuning")
    entry = hp.rarl_overrides("edgelam/RobustRouting-v0", path)
    assert entry["n_steps"] == 32 and entry["n_timesteps"] == 512
    assert hp.rarl_overrides("edgelam/SplitInference-v0", path) == {}


def _tiny_rarl(trial, n_envs):
    params = tune_space.sample_rarl(trial, n_envs)
    return {**params, "n_envs": 2, "n_steps": 32, "batch_size": 64, "n_epochs": 1, "policy_kwargs": {"net_arch": [16]}}


def test_rarl_without_a_rarl_yml_entry_trains_on_ppo_yml_alone():
    from edgelam.agents.rarl import RarlTrainer
    from edgelam.agents.trainers import TrainSettings

    run = TrainSettings("edgelam/RobustRouting-v0", "rarl", hyperparams={"n_steps": 64})
    assert hp.rarl_overrides("edgelam/RobustRouting-v0") == {}
    assert RarlTrainer().settings(run)["hyperparams"] == {"n_steps": 64}
    assert RarlTrainer.default_timesteps("edgelam/RobustRouting-v0") == hp.default_timesteps(
        "edgelam/RobustRouting-v0", "ppo"
    )


def test_the_cli_offers_every_search_space():
    from edgelam.agents.cli_compare import TUNE_ALGOS

    assert set(TUNE_ALGOS) == set(tune_space.SAMPLERS) >= {"ppo_lagrangian", "rarl"}


def test_the_study_picks_the_feasible_trial_over_a_higher_return_one(tmp_path, monkeypatch):
    outcomes = iter([(0.0, 0.0), (10.0, 0.5), (1.0, 0.0)])  # (return, violation): untuned, trial 0, trial 1

    def fake_run_trial(settings, params, out_dir, trial=None):
        mean, violation = next(outcomes)
        return {
            "mean": mean,
            "ci95": 0.1,
            "violation": violation,
            "cost": 1.0,
            "cost_limit": 2.0,
            "curve": [],
            "wall_s": 0.01,
            "num_timesteps": 1,
        }

    monkeypatch.setattr(tune_mod, "run_trial", fake_run_trial)
    settings = TuneSettings(env_id=SPLIT, algo="ppo_lagrangian", trials=2, out=tmp_path / "study")
    result = tune(settings, log=lambda m: None)
    assert (result.best["trial"], result.best["mean"], result.constraint["feasible"]) == (1, 1.0, True)
    saved = json.loads((tmp_path / "study" / "study.json").read_text())
    assert [r["violation"] for r in saved["constraint"]["trials"]] == [0.5, 0.0]
