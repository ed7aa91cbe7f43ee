"""edgelam tune: the study, its validation split, pruning, continuing, writing the best back."""

from __future__ import annotations

import json
import shutil

import optuna
import pytest

from edgelam.agents import hyperparams as hp
from edgelam.agents import tune as tune_mod
from edgelam.agents.common import TEST_SEED
from edgelam.agents.evaluate import evaluate
from edgelam.agents.policies import load_policy
from edgelam.agents.tune import VALIDATION_SEED, TuneSettings, held_out_gain, run_trial, tune
from edgelam.agents.tune_write import write_best
from tests.agents.conftest import TOY


def _settings(tmp_path, **kw) -> TuneSettings:
    return TuneSettings(env_id=TOY, trials=kw.pop("trials", 3), minutes=5, timesteps=512, evaluations=2,
                        episodes=3, out=tmp_path / "study", **kw)


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
        t.value for t in optuna.load_study(study_name=f"{TOY}:ppo", storage=f"sqlite:///{tmp_path}/study/study.db")
        .trials if t.value is not None)
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
        env_id="edgelam/SplitInference-v0", algo="ppo", budget=20_000,
        best_params={"n_steps": 64, "gamma": 0.95, "policy_kwargs": {"net_arch": [128, 128], "activation_fn": "relu"}},
        best={"mean": -40.0, "ci95": 1.5, "trial": 7}, untuned={"mean": -50.0, "ci95": 2.0},
        complete=9, pruned=3, wall_s=600.0, folder=tmp_path)
    result.test = {"trial": 7, "episodes": 30, "seed": 10_000, "tuned": {"mean": -41.0, "ci95": 1.0},
                   "untuned": {"mean": -52.0, "ci95": 2.5}, "gain": {"mean": 11.0, "ci95": 0.5},
                   "verdict": "beats", "p_value": 1e-6}
    records = tmp_path / "tuning"
    for _ in range(2):  # writing twice leaves one entry
        write_best(result, "edgelam tune edgelam/SplitInference-v0 --trials 12", path, records,
                   TuneSettings(env_id="edgelam/SplitInference-v0", scenario="congested_edge", trials=12))
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
        k: v for k, v in before.items() if k != "edgelam/SplitInference-v0"}


def test_bad_settings_are_refused():
    with pytest.raises(ValueError, match="no search space"):
        TuneSettings(env_id=TOY, algo="trpo")
    with pytest.raises(ValueError, match="trials must be >= 1"):
        TuneSettings(env_id=TOY, trials=0)
    with pytest.raises(ValueError, match="minutes"):
        TuneSettings(env_id=TOY, minutes=0)
    with pytest.raises(ValueError, match="unknown env id 'edgelam/Nope-v0'"):
        TuneSettings(env_id="edgelam/Nope-v0")
