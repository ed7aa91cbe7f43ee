"""rl-zoo3 trains an edgelam id from configs/agents/hyperparams, and edgelam evaluates what it saved."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from edgelam.agents import hyperparams as hp
from edgelam.agents.evaluate import evaluate
from edgelam.agents.policies import NormalizedPolicy, load_policy, zoo_run

pytest.importorskip("rl_zoo3")

ENV = "edgelam/SplitInference-v0"
ZOO_ENV = ENV.replace("/", "-")  # rl-zoo3's folder and file name of a namespaced id


def _zoo(module: str, *args: str, cwd: Path) -> str:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    out = subprocess.run([sys.executable, "-m", module, *args], cwd=cwd, env=env, capture_output=True, text=True,
                         timeout=600)
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-4000:]
    return out.stdout


@pytest.fixture(scope="module")
def zoo_run_dir(tmp_path_factory) -> Path:
    logs = tmp_path_factory.mktemp("zoo")
    _zoo("rl_zoo3.train", "--algo", "ppo", "--env", ENV, "--gym-packages", "edgelam.envs",
         "--conf-file", str(hp.hyperparams_file("ppo")), "-n", "2048", "-f", str(logs), "--seed", "0",
         "--eval-freq", "-1", "--log-interval", "-1", cwd=logs)
    return logs / "ppo" / f"{ZOO_ENV}_1"


def test_rl_zoo3_trains_with_the_envs_entry_of_the_hyperparameter_file(zoo_run_dir):
    assert (zoo_run_dir / f"{ZOO_ENV}.zip").is_file()
    config = yaml.load((zoo_run_dir / ZOO_ENV / "config.yml").read_text(), Loader=yaml.UnsafeLoader)
    used = dict(config)
    entry = hp.read_file(hp.hyperparams_file("ppo"), "ppo")[ENV]
    assert used["gamma"] == entry["gamma"] == 0.9  # SplitInference's own entry, not the default's 0.99
    assert {k: used[k] for k in ("n_envs", "n_steps", "batch_size", "normalize")} == {
        k: entry[k] for k in ("n_envs", "n_steps", "batch_size", "normalize")}


def test_edgelam_evaluates_an_rl_zoo3_run_as_rl_zoo3_enjoy_does(zoo_run_dir):
    model, algo, stats = zoo_run(zoo_run_dir)
    assert (model.name, algo, stats.name) == (f"{ZOO_ENV}.zip", "ppo", "vecnormalize.pkl")
    assert isinstance(load_policy(zoo_run_dir), NormalizedPolicy)  # the run normalised observations
    length = 40
    out = _zoo("rl_zoo3.enjoy", "--algo", "ppo", "--env", ENV, "--gym-packages", "edgelam.envs",
               "-f", str(zoo_run_dir.parent.parent), "--exp-id", "1", "-n", str(length), "--no-render",
               "--seed", "0", "--env-kwargs", f"episode_length:{length}", cwd=zoo_run_dir)
    enjoyed = float(re.search(r"Episode Reward: (-?[\d.]+)", out).group(1))
    row = evaluate(zoo_run_dir, ENV, episodes=1, seed=0, env_kwargs={"episode_length": length})[0]
    assert row["length"] == length
    assert row["return"] == pytest.approx(enjoyed, abs=0.006)  # enjoy prints 2 decimals
