"""The Ray engines on a local 2-CPU Ray instance: Tune sweeps equal to the local compare, RLlib PPO.

Runs only where Ray is installed (the ``ray`` extra, ``.venv-ray``; ``make test-ray``).
"""

from __future__ import annotations

import io
import json

import numpy as np
import pytest
from rich.console import Console

ray = pytest.importorskip("ray")

from edgelam.agents.cli import main  # noqa: E402
from edgelam.agents.compare import compare  # noqa: E402
from edgelam.agents.evaluate import evaluate  # noqa: E402
from edgelam.agents.ray_engine import EXPERIMENT_DIR, compare_ray  # noqa: E402
from edgelam.agents.rllib_engine import (  # noqa: E402
    RLlibPolicy,
    load_rllib_policy,
    train_rllib,
)

SPLIT = "edgelam/SplitInference-v0"
MULTI = "edgelam/MultiUserOffload-v0"
TINY_PPO = {"n_envs": 2, "n_steps": 64, "batch_size": 64, "n_epochs": 2, "policy_kwargs": {"net_arch": [16]}}
# one PPO iteration of 200 env steps in a few seconds
TINY_RLLIB = {
    "train_batch_size_per_learner": 200,
    "minibatch_size": 100,
    "num_epochs": 1,
    "model": {"fcnet_hiddens": [16]},
}

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module", autouse=True)
def local_ray():
    """One local Ray instance of 2 CPUs for the module, shut down after it."""
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


def _console() -> Console:
    return Console(file=io.StringIO(), width=120)


def _sweep(engine, out_dir, **extra):
    return engine(
        SPLIT,
        algos=("ppo",),
        seeds=(0,),
        baselines=("random",),
        timesteps=256,
        episodes=2,
        out_dir=out_dir,
        hyperparams={"ppo": TINY_PPO},
        progress=False,
        console=_console(),
        **extra,
    )


def test_tune_sweep_equals_the_local_engine_and_resumes(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # the engines write run folders relative to the working directory
    local = _sweep(compare, "local")
    on_ray = _sweep(compare_ray, "ray", workers=2)

    assert on_ray.failed == []
    trials = list((tmp_path / "ray" / EXPERIMENT_DIR).iterdir())
    assert len(trials) == 1 and len(list(trials[0].glob("_trial*"))) == 2  # 2 jobs -> 2 Tune trials
    # same seeds, same numbers: the CSV byte for byte, every episode row, the trained weights
    assert (tmp_path / "ray" / "results.csv").read_bytes() == (tmp_path / "local" / "results.csv").read_bytes()
    assert on_ray.episodes == local.episodes
    assert on_ray.summary == local.summary and on_ray.kinds == local.kinds == {"ppo": "agent", "random": "baseline"}
    for name in ("results.json", "report.md", "learning_curves.png", "metrics.png"):
        assert (tmp_path / "ray" / name).is_file()
    local_doc = json.loads((tmp_path / "local" / "results.json").read_text())
    ray_doc = json.loads((tmp_path / "ray" / "results.json").read_text())
    assert ray_doc["summary"] == local_doc["summary"] and ray_doc["episodes"] == local_doc["episodes"]
    assert [r["num_timesteps"] for r in ray_doc["runs"]] == [r["num_timesteps"] for r in local_doc["runs"]]
    assert (tmp_path / "ray/runs/ppo/seed_0/model.zip").is_file()

    # a rerun restores the finished Tune experiment: no trial runs again (a rerun trial would
    # find the finished training run and report it reused)
    again = _sweep(compare_ray, "ray", workers=2)
    assert again.failed == [] and again.episodes == on_ray.episodes
    assert [r["reused"] for r in again.runs] == [False]
    assert len(list((tmp_path / "ray" / EXPERIMENT_DIR).iterdir())) == 1


def test_a_failing_trial_is_retried_then_reported_never_dropped(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)

    def run():
        return compare_ray(
            SPLIT,
            algos=(),
            baselines=("random", "no_such_baseline"),
            episodes=1,
            out_dir="out",
            progress=False,
            console=_console(),
            max_failures=1,
        )

    result = run()
    assert result.kinds == {"random": "baseline"}
    (failure,) = result.failed
    assert failure["job"] == "baseline/no_such_baseline" and "no_such_baseline" in failure["error"]
    assert failure["attempts"] == 2  # the first run and its one retry
    assert "## Failed jobs" in (tmp_path / "out" / "report.md").read_text()
    assert json.loads((tmp_path / "out" / "results.json").read_text())["failed"][0]["job"] == failure["job"]

    # the rerun (here from the CLI) resumes the experiment: the failed trial runs again, the
    # finished one does not; the failure is an exit status 1 naming the job
    argv = ["compare", SPLIT, "--engine", "ray", "--algos", "", "--baselines", "random,no_such_baseline"]
    argv += ["--episodes", "1", "--out", "out", "--max-failures", "1", "--json"]
    assert main(argv) == 1
    printed = capsys.readouterr()
    assert "1 jobs failed (baseline/no_such_baseline)" in printed.err
    again = json.loads(printed.out)  # --json: nothing but the results on stdout (Tune's output on stderr)
    assert [f["job"] for f in again["failed"]] == [failure["job"]]
    assert again["episodes"] == json.loads(json.dumps(result.episodes))
    (finished,) = (tmp_path / "out" / EXPERIMENT_DIR).glob("*/*job=baseline_random*")
    assert len((finished / "result.json").read_text().splitlines()) == 1


def test_rllib_ppo_on_a_gymnasium_env_is_evaluated_by_the_shared_loop(tmp_path):
    result = train_rllib(SPLIT, timesteps=200, seed=0, out_dir=tmp_path / "run", hyperparams=TINY_RLLIB)
    assert result.iterations == 1 and result.num_env_steps == 200
    assert (tmp_path / "run" / "checkpoint").is_dir() and result.modules == {"default_agent": "default_policy"}
    policy = result.policy()
    assert isinstance(policy, RLlibPolicy)
    rows = evaluate(policy, SPLIT, episodes=2, seed=5)
    assert [r["seed"] for r in rows] == [5, 6] and all(r["length"] == 200 for r in rows)
    assert all(np.isfinite(r["return"]) and r["energy_j"] > 0 for r in rows)
    assert evaluate(policy, SPLIT, episodes=2, seed=5) == rows  # deterministic: the mode of the policy
    action, _ = policy.predict(np.zeros(10, dtype=np.float32))
    assert action.shape == (2,) and action in policy.action_space

    # the saved run loads by path, through the CLI's evaluate too
    assert evaluate(str(tmp_path / "run"), SPLIT, episodes=2, seed=5) == rows
    assert main(["evaluate", SPLIT, "--policy", str(tmp_path / "run"), "--episodes", "1", "--json"]) == 0


def test_rllib_ppo_on_a_pettingzoo_env_shared_and_per_agent(tmp_path, capsys):
    hp = [f"--hp={k}={v}" for k, v in TINY_RLLIB.items() if k != "model"] + ["--hp=model.fcnet_hiddens=[16]"]
    argv = ["train", MULTI, "--engine", "rllib", "--timesteps", "100", "--out", str(tmp_path / "shared"), "--json"]
    assert main(argv + hp) == 0
    shared = json.loads(capsys.readouterr().out)
    assert set(shared["modules"].values()) == {"shared"} and len(shared["modules"]) == 4
    assert shared["iterations"] == 1 and shared["num_timesteps"] >= 100
    rows = evaluate(load_rllib_policy(tmp_path / "shared"), MULTI, episodes=1, seed=3)
    assert rows[0]["length"] > 0 and np.isfinite(rows[0]["return"]) and "return/user_0" in rows[0]

    per_agent = train_rllib(
        MULTI, timesteps=100, seed=0, out_dir=tmp_path / "own", per_agent=True, hyperparams=TINY_RLLIB
    )
    policies = load_rllib_policy(tmp_path / "own")
    assert set(policies) == set(per_agent.modules) == {f"user_{i}" for i in range(4)}
    assert len({id(p.module) for p in policies.values()}) == 4
    assert evaluate(policies, MULTI, episodes=1, seed=3)[0]["length"] == rows[0]["length"]


def test_bad_input_is_a_clear_error(tmp_path):
    with pytest.raises(ValueError, match="per_agent"):
        train_rllib(SPLIT, timesteps=10, out_dir=tmp_path / "a", per_agent=True)
    with pytest.raises(ValueError, match="unknown RLlib algorithm"):
        train_rllib(SPLIT, algo="dqn_typo", timesteps=10, out_dir=tmp_path / "b")
    with pytest.raises(ValueError, match="workers"):
        compare_ray(SPLIT, workers=0, out_dir=tmp_path / "c", progress=False)
    assert main(["train", SPLIT, "--num-env-runners", "1"]) == 2  # an rllib option without --engine rllib


def test_tune_on_ray_runs_the_local_trials_and_finds_their_best(tmp_path):
    from edgelam.agents.tune import TuneSettings, run_trial
    from edgelam.agents.tune_ray import tune_ray

    settings = TuneSettings(env_id=SPLIT, trials=2, minutes=5, timesteps=256, evaluations=1, episodes=2,
                            env_kwargs={"episode_length": 20}, out=tmp_path / "study")
    result = tune_ray(settings, workers=2)
    assert result.complete + result.pruned == 2 and result.complete >= 1
    assert {"n_steps", "batch_size", "gamma", "learning_rate", "policy_kwargs"} <= set(result.best_params)
    assert (tmp_path / "study" / "untuned.json").is_file()
    assert len(list((tmp_path / "study" / "ray_trials").iterdir())) == 2
    # the best Ray trial, rerun here by the local engine's run_trial: the same validation return
    again = run_trial(settings, result.best_params, tmp_path / "again")
    assert again["mean"] == result.best["mean"]
