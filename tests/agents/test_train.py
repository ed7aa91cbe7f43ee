"""Training: determinism, checkpoints, resume, hyperparameter validation."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
import torch

from edgelam.agents import hyperparams as hp
from edgelam.agents.policies import load_policy
from edgelam.agents.train import train
from tests.agents.conftest import TOY


def _params(model) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.policy.state_dict().items()}


def test_same_seed_same_policy_other_seed_other_policy(tmp_path, tiny_ppo):
    a = train(TOY, timesteps=2000, seed=3, out_dir=tmp_path / "a", hyperparams=tiny_ppo)
    b = train(TOY, timesteps=2000, seed=3, out_dir=tmp_path / "b", hyperparams=tiny_ppo)
    c = train(TOY, timesteps=2000, seed=4, out_dir=tmp_path / "c", hyperparams=tiny_ppo)
    assert a.num_timesteps == b.num_timesteps == c.num_timesteps  # only the seed differs
    pa, pb = _params(a.model), _params(b.model)
    assert pa.keys() == pb.keys()
    assert all(torch.equal(pa[k], pb[k]) for k in pa)
    pc = _params(c.model)
    assert not any(torch.equal(pa[k], pc[k]) for k in pa if pa[k].is_floating_point())


def test_run_folder_and_checkpoint_round_trip(tmp_path, tiny_ppo):
    out = tmp_path / "run"
    result = train(TOY, timesteps=512, seed=0, out_dir=out, hyperparams=tiny_ppo, checkpoint_freq=256)
    assert result.num_timesteps >= 512
    for name in ("model.zip", "vecnormalize.pkl", "meta.json", "learning_curve.csv"):
        assert (out / name).is_file(), name
    assert sorted(p.name for p in (out / "checkpoints").glob("model_*_steps.zip")) == [
        "model_256_steps.zip",
        "model_512_steps.zip",
    ]
    assert list((out / "tb").rglob("events.out.tfevents.*"))
    meta = json.loads((out / "meta.json").read_text())
    assert meta["algo"] == "ppo" and meta["finished"] and meta["num_timesteps"] == result.num_timesteps
    with open(out / "learning_curve.csv", newline="") as f:
        curve = list(csv.DictReader(f))
    assert curve and set(curve[0]) == {"timesteps", "episode_return", "episode_length"}

    observations = np.random.default_rng(0).uniform(-1, 1, size=(20, 3)).astype(np.float32)
    expected = [result.policy().predict(o, deterministic=True)[0] for o in observations]
    for path in (out / "model.zip", out / "checkpoints" / "model_512_steps.zip"):
        loaded = load_policy(path)
        assert [loaded.predict(o, deterministic=True)[0] for o in observations] == expected


def test_resume_continues_to_the_requested_total(tmp_path, tiny_ppo):
    out = tmp_path / "run"
    train(TOY, timesteps=512, seed=0, out_dir=out, hyperparams=tiny_ppo, checkpoint_freq=256)
    with pytest.raises(ValueError, match="already holds a run"):
        train(TOY, timesteps=1024, seed=0, out_dir=out, hyperparams=tiny_ppo)
    with pytest.raises(ValueError, match="other settings"):
        train(TOY, timesteps=1024, seed=1, out_dir=out, hyperparams=tiny_ppo, resume=True)

    # a finished run with enough steps is loaded, not retrained
    same = train(TOY, timesteps=512, seed=0, out_dir=out, hyperparams=tiny_ppo, resume=True)
    assert same.resumed_from == 512 and same.num_timesteps == 512

    # an interrupted run: the final model is missing, the latest checkpoint is at 512
    (out / "model.zip").unlink()
    meta = json.loads((out / "meta.json").read_text())
    (out / "meta.json").write_text(json.dumps({**meta, "finished": False}))
    resumed = train(TOY, timesteps=1024, seed=0, out_dir=out, hyperparams=tiny_ppo, resume=True)
    assert resumed.resumed_from == 512
    assert resumed.num_timesteps >= 1024
    assert json.loads((out / "meta.json").read_text())["num_timesteps"] == resumed.num_timesteps
    with open(out / "learning_curve.csv", newline="") as f:
        steps = [int(r["timesteps"]) for r in csv.DictReader(f)]
    assert steps == sorted(steps) and steps[-1] > 512


def test_hyperparameter_files_and_overrides_are_validated(tmp_path):
    params = hp.resolve(TOY, "ppo")  # no entry for the toy id: the file's default
    assert params == hp.resolve(None, "ppo") and params["n_envs"] >= 1 and "n_steps" in params
    assert hp.resolve("edgelam/SplitInference-v0", "ppo")["gamma"] == 0.9  # its own entry
    assert hp.default_timesteps("edgelam/MultiUserOffload-v0", "ppo") == 1_000_000
    with pytest.raises(ValueError, match="unknown algorithm"):
        hp.resolve(TOY, "trpo")
    with pytest.raises(ValueError, match=r"unknown key 'ppo\.n_stepz'"):
        hp.resolve(TOY, "ppo", {"n_stepz": 8})
    with pytest.raises(ValueError, match="activation"):
        hp.resolve(TOY, "ppo", {"policy_kwargs": {"activation_fn": "swish"}})
    with pytest.raises(ValueError, match="n_timesteps"):
        hp.resolve(TOY, "ppo", {"n_timesteps": 0})
    bad = tmp_path / "ppo.yml"
    bad.write_text("default:\n  n_steps: 8\nedgelam/SplitInferance-v0:\n  n_steps: 8\n")
    with pytest.raises(ValueError, match="'edgelam/SplitInferance-v0' is neither 'default' nor a registered env id"):
        hp.read_file(bad, "ppo")
    for algo in hp.ALGOS:
        for entry, section in hp.read_file(hp.hyperparams_file(algo), algo).items():
            assert hp.sb3_kwargs(section) and section["policy"] == "MlpPolicy", (algo, entry)
            assert "n_timesteps" not in hp.sb3_kwargs(section)


def test_policy_kwargs_in_rl_zoo3s_string_form_are_read_without_eval():
    text = "dict(net_arch=dict(pi=[32, 32], vf=[16]), activation_fn=nn.ReLU, ortho_init=False)"
    assert hp.parse_policy_kwargs(text) == {"net_arch": {"pi": [32, 32], "vf": [16]}, "activation_fn": "relu",
                                            "ortho_init": False}
    kwargs = hp.sb3_kwargs(hp.resolve(TOY, "ppo", {"policy_kwargs": "dict(activation_fn=nn.Tanh)"}))
    assert kwargs["policy_kwargs"]["activation_fn"] is torch.nn.Tanh
    for bad, match in [("__import__('os').system('true')", "expected dict"), ("dict(act=nn.Swish)", "nn.Swish"),
                       ("dict(x=open('f'))", "expected dict"), ("dict(net_arch=[64,", "cannot parse")]:
        with pytest.raises(ValueError, match=match):
            hp.parse_policy_kwargs(bad)


def test_algorithm_must_fit_the_action_space(tmp_path):
    with pytest.raises(ValueError, match="sac needs a Box action space"):
        train(TOY, algo="sac", timesteps=64, out_dir=tmp_path / "sac")
