"""ppo_lagrangian: the dual step, the shaped reward PPO sees, lambda's direction, resume, budgets, violations."""

from __future__ import annotations

import csv
import itertools
import json
from typing import ClassVar

import gymnasium as gym
import numpy as np
import pytest
import torch
from stable_baselines3.common.callbacks import BaseCallback
from stable_baselines3.common.env_util import make_vec_env
from stable_baselines3.common.vec_env import DummyVecEnv

from edgelam.agents import hyperparams as hp
from edgelam.agents import lagrangian as lag
from edgelam.agents.policies import load_policy
from edgelam.agents.trainers import TrainSettings, default_timesteps, train_run, trainer_for
from edgelam.agents.vec import SB3VectorAdapter
from tests.agents.conftest import TOY

SPLIT = "edgelam/SplitInference-v0"
OFFLOAD = "edgelam/Offload-v0"
EPISODE = 16  # SplitInference episodes of 16 requests: several end in every rollout
# small PPO, plain SGD on lambda so that every dual step can be recomputed by hand
TINY = {"n_envs": 2, "n_steps": 32, "batch_size": 64, "n_epochs": 1, "policy_kwargs": {"net_arch": [16]},
        "lambda_optimizer": "sgd"}


def _run(tmp_path, name, *, budget_j, timesteps=1024, hyperparams=None, **kw):
    settings = TrainSettings(SPLIT, "ppo_lagrangian", timesteps, 0, tmp_path / name,
                             env_kwargs={"episode_length": EPISODE, "energy_budget_j": budget_j},
                             hyperparams={**TINY, **(hyperparams or {})}, **kw)
    return train_run(trainer_for("ppo_lagrangian"), settings)


def _updates(folder) -> list[dict]:
    return json.loads((folder / lag.LAGRANGE_FILE).read_text())["updates"]


# -- the dual step ------------------------------------------------------------------------------


def test_sgd_dual_step_on_hand_made_episode_costs_with_the_clamp_at_zero():
    m = lag.LagrangeMultiplier(cost_limit=10.0, lambda_lr=0.1, lambda_optimizer="sgd", value=0.5)
    assert m.update([]) == 0.5  # no episode has ended yet: no step
    expected = [
        ([14.0, 16.0], 1.0),  # J_c = 15: 0.5 + 0.1 * (15 - 10)
        ([], 1.5),  # none ended: J_c carried (15)
        ([2.0], 0.7),  # 1.5 + 0.1 * (2 - 10)
        ([0.0, 0.0], 0.0),  # 0.7 - 1.0 < 0: clamped at 0
        ([], 0.0),  # J_c = 0 carried: stays at the clamp
        ([11.0, 13.0, 9.0], 0.1),  # J_c = 11
    ]
    for costs, value in expected:
        assert m.update(costs) == pytest.approx(value, abs=1e-12), costs
        assert m.value >= 0.0


def test_adam_dual_step_is_omnisafes_torch_adam_on_the_lambda_loss_then_the_clamp():
    costs = [[12.0], [], [0.0, 1.0], [0.0], [0.0], [0.0], [], [40.0], [30.0, 20.0]]
    limit, lr, init = 10.0, 0.35, 0.2
    m = lag.LagrangeMultiplier(limit, lr, "adam", value=init)
    param = torch.nn.Parameter(torch.tensor(init, dtype=torch.float64))
    opt = torch.optim.Adam([param], lr=lr)
    jc, clamped = None, False
    for batch in costs:
        jc = float(np.mean(batch)) if batch else jc
        opt.zero_grad()
        (-param * (jc - limit)).backward()
        opt.step()
        param.data.clamp_(min=0.0)
        expected = float(param.detach())
        clamped |= expected == 0.0
        assert m.update(batch) == pytest.approx(expected, rel=1e-9, abs=1e-12)
    assert clamped  # the sequence reaches the clamp


# -- the shaped reward ------------------------------------------------------------------------


class CostEnv(gym.Env):
    """Reward 1 - a, cost 0.25 + a (a in {0, 1}); episodes of 4 steps."""

    metadata: ClassVar[dict] = {"render_modes": []}

    def __init__(self) -> None:
        self.observation_space = gym.spaces.Box(-1.0, 1.0, shape=(1,), dtype=np.float32)
        self.action_space = gym.spaces.Discrete(2)

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.t = 0
        return np.zeros(1, dtype=np.float32), {}

    def step(self, action):
        self.t += 1
        a = int(action)
        return np.zeros(1, dtype=np.float32), 1.0 - a, False, self.t >= 4, {"cost": 0.25 + a}


def test_shaped_reward_is_r_minus_lambda_c_over_one_plus_lambda_and_episodes_carry_their_cost():
    venv = make_vec_env(CostEnv, n_envs=2, seed=0, vec_env_cls=DummyVecEnv)
    m = lag.LagrangeMultiplier(cost_limit=1.0, lambda_lr=0.1, value=3.0)
    env = lag.LagrangianReward(venv, m)
    env.reset()
    for _ in range(4):
        _, reward, dones, infos = env.step(np.array([0, 1]))
        np.testing.assert_allclose(reward, [(1.0 - 3.0 * 0.25) / 4.0, (0.0 - 3.0 * 1.25) / 4.0], rtol=1e-6)
    assert dones.all()
    assert [i["episode"]["episode_cost"] for i in infos] == [1.0, 5.0]
    assert [i["episode"]["r"] for i in infos] == [4.0, 0.0]  # the env's own return, not the shaped one
    assert env.pop_finished_costs() == [1.0, 5.0] and env.pop_finished_costs() == []


def test_on_the_batched_vector_env_the_cost_is_the_vector_envs_info_cost_array():
    kwargs = {"episode_length": 5, "energy_budget_j": 0.6}
    raw = gym.make_vec(SPLIT, num_envs=3, vectorization_mode="vector_entry_point", **kwargs)
    adapter = SB3VectorAdapter(gym.make_vec(SPLIT, num_envs=3, vectorization_mode="vector_entry_point", **kwargs))
    m = lag.LagrangeMultiplier(cost_limit=3.0, lambda_lr=0.1, value=0.7)
    env = lag.LagrangianReward(adapter, m)
    raw.reset(seed=4)
    env.seed(4)
    env.reset()
    rng = np.random.default_rng(0)
    total = np.zeros(3)
    for _ in range(5):
        actions = np.stack([rng.integers(0, 25, 3), rng.integers(0, 3, 3)], axis=1)
        _, raw_reward, _, _, info = raw.step(actions)
        _, reward, dones, infos = env.step(actions)
        assert np.all(info["cost"] > 0)
        total += info["cost"]
        np.testing.assert_allclose(reward, (raw_reward - 0.7 * info["cost"]) / 1.7, rtol=1e-5)
    assert dones.all()
    np.testing.assert_allclose([i["episode"]["episode_cost"] for i in infos], total, rtol=1e-9)
    assert env.get_attr("num_envs") == [3, 3, 3]  # attributes still reach the vector env


class _SeenRewards(BaseCallback):
    """What PPO got from env.step in its first rollout (before any dual step), and the steps' costs."""

    def __init__(self) -> None:
        super().__init__()
        self.rewards, self.costs, self.episodes = [], [], []

    def _on_step(self) -> bool:
        if not self.episodes or len(self.episodes[-1]) < 2:
            self.rewards.append(np.array(self.locals["rewards"]))
            self.costs.append([i["cost"] for i in self.locals["infos"]])
            if all("episode" in i for i in self.locals["infos"]):
                self.episodes.append([i["episode"] for i in self.locals["infos"]])
        return True


def test_ppo_trains_on_the_shaped_reward(tmp_path):
    seen = _SeenRewards()
    trainer = lag.LagrangianTrainer("ppo_lagrangian", callbacks=[seen])
    settings = TrainSettings(SPLIT, "ppo_lagrangian", 64, 0, tmp_path / "run",
                             env_kwargs={"episode_length": EPISODE, "energy_budget_j": 0.6},
                             hyperparams={**TINY, "normalize": False, "lagrangian_multiplier_init": 2.0})
    train_run(trainer, settings)
    rewards, costs = np.array(seen.rewards[:EPISODE]), np.array(seen.costs[:EPISODE])
    returns = np.array([e["r"] for e in seen.episodes[0]])  # Monitor's: the env's own rewards
    np.testing.assert_allclose(rewards.sum(axis=0), (returns - 2.0 * costs.sum(axis=0)) / 3.0, rtol=1e-4)


# -- lambda's direction, resume, budgets ----------------------------------------------------------


def test_lambda_rises_above_the_limit_and_falls_to_zero_below_it(tmp_path):
    # SplitInference's cheapest request costs ~0.1 J of device energy: 0.01 J per request binds
    tight = _run(tmp_path, "tight", budget_j=0.01, hyperparams={"lambda_lr": 0.01, "lagrangian_multiplier_init": 0.0},
                 vectorized=True)
    ups = _updates(tight.out_dir)
    margin = lag.resolve(SPLIT)[1].cost_limit_margin  # ppo_lagrangian.yml's entry
    assert 0.0 < margin < 1.0 and tight.cost_target == pytest.approx((1.0 - margin) * tight.cost_limit)
    assert all(u["mean_episode_cost"] > tight.cost_limit for u in ups)
    assert all(b["lagrange_multiplier"] > a["lagrange_multiplier"] for a, b in itertools.pairwise(ups))
    assert tight.lagrange_multiplier > 0.0 and tight.cost_limit == pytest.approx(0.01 * EPISODE)
    # 10 J per request never binds: lambda falls from 1 and stays at 0
    loose = _run(tmp_path, "loose", budget_j=10.0, hyperparams={"lambda_lr": 0.002, "lagrangian_multiplier_init": 1.0})
    values = [u["lagrange_multiplier"] for u in _updates(loose.out_dir)]
    assert values[0] < 1.0 and values == sorted(values, reverse=True) and values[-1] == 0.0
    with open(loose.out_dir / "learning_curve.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert float(rows[0]["lagrange_multiplier"]) == pytest.approx(1.0)  # logged per episode
    assert float(rows[-1]["lagrange_multiplier"]) == 0.0 and float(rows[-1]["episode_cost"]) > 0.0


def _recomputed(ups: list[dict], lr: float, limit: float, init: float) -> list[float]:
    out, value = [], init
    for u in ups:
        value = max(0.0, value + lr * (u["mean_episode_cost"] - limit))
        out.append(value)
    return out


def test_the_margin_tightens_the_limit_the_dual_step_drives_towards(tmp_path):
    hyper = {"lambda_lr": 0.01, "lagrangian_multiplier_init": 0.0, "cost_limit_margin": 0.25}
    run = _run(tmp_path, "margin", budget_j=0.5, timesteps=512, hyperparams=hyper)
    ups = _updates(run.out_dir)
    target = 0.75 * 0.5 * EPISODE
    # every step recomputed by hand against 0.75 d, not d
    assert [u["lagrange_multiplier"] for u in ups] == pytest.approx(_recomputed(ups, 0.01, target, 0.0))
    assert _recomputed(ups, 0.01, target, 0.0) != pytest.approx(_recomputed(ups, 0.01, 0.5 * EPISODE, 0.0))
    meta = json.loads((run.out_dir / "meta.json").read_text())
    assert meta["lagrangian"]["cost_limit"] == pytest.approx(0.5 * EPISODE)
    assert meta["lagrangian"]["cost_target"] == pytest.approx(target)
    for bad in (1.0, -0.1, "0.2"):
        with pytest.raises(ValueError, match="cost_limit_margin"):
            lag.LagrangianSettings.parse({"cost_limit_margin": bad}, "test")


def test_resume_continues_from_the_lambda_of_the_checkpoint(tmp_path):
    hyper = {"lambda_lr": 0.01, "lagrangian_multiplier_init": 0.05}
    first = _run(tmp_path, "run", budget_j=0.01, timesteps=512, hyperparams=hyper, checkpoint_freq=256)
    folder = first.out_dir
    before = _updates(folder)
    assert [u["timesteps"] for u in before] == [64 * k for k in range(1, 9)]
    meta = json.loads((folder / "meta.json").read_text())
    assert meta["algo"] == "ppo" and meta["trainer"] == "ppo_lagrangian"
    assert meta["lagrangian"]["cost_limit"] == pytest.approx(0.16) and "lambda_lr" not in meta["hyperparams"]
    # interrupted after its 256-step checkpoint: the model and the later dual steps are gone
    (folder / "model.zip").unlink()
    for path in (folder / "checkpoints").glob("*512*"):
        path.unlink()
    (folder / "meta.json").write_text(json.dumps({**meta, "finished": False}))
    resumed = _run(tmp_path, "run", budget_j=0.01, timesteps=512, hyperparams=hyper, checkpoint_freq=256,
                   resume=True)
    assert resumed.resumed_from == 256
    after = _updates(folder)
    assert after[:4] == before[:4] and [u["timesteps"] for u in after] == [64 * k for k in range(1, 9)]
    values = [u["lagrange_multiplier"] for u in after]
    target = meta["lagrangian"]["cost_target"]
    assert target == pytest.approx((1.0 - lag.resolve(SPLIT)[1].cost_limit_margin) * 0.16)  # the file's margin
    assert values == pytest.approx(_recomputed(after, 0.01, target, 0.05), abs=1e-12)  # no restart at 0.05
    assert resumed.lagrange_multiplier == values[-1] > before[3]["lagrange_multiplier"]
    reused = _run(tmp_path, "run", budget_j=0.01, timesteps=512, hyperparams=hyper, resume=True)
    assert reused.reused and reused.lagrange_multiplier == values[-1]
    env = gym.make(SPLIT, episode_length=EPISODE, energy_budget_j=0.01)
    action, _ = load_policy(folder).predict(env.reset(seed=0)[0], deterministic=True)  # loads as the PPO it is
    assert env.action_space.contains(action)


def test_a_scenario_or_env_without_a_budget_raises_naming_them(tmp_path):
    with pytest.raises(ValueError, match=r"edgelam/SplitInference-v0 scenario 'default'.*sets no budget"):
        _run(tmp_path, "none", budget_j=None)
    settings = TrainSettings(TOY, "ppo_lagrangian", 64, 0, tmp_path / "toy", hyperparams=TINY)
    with pytest.raises(ValueError, match=r"edgelam_test/Toy-v0 scenario 'default' has no EnvSpec"):
        train_run(trainer_for("ppo_lagrangian"), settings)
    assert not (tmp_path / "none").exists() and not (tmp_path / "toy").exists()


# -- settings ------------------------------------------------------------------------------------


def test_hyperparameter_file_parses_and_lagrangian_keys_never_reach_ppo():
    entries = lag.read_file()
    assert set(entries) >= {"default", SPLIT}
    for ppo_params, settings in entries.values():
        assert not set(ppo_params) & set(lag.LAGRANGIAN_KEYS)
        hp.validate("ppo", ppo_params)  # what the SB3 class gets is PPO's
        assert settings.lambda_optimizer in lag.OPTIMIZERS
    trainer = trainer_for("ppo_lagrangian")
    assert isinstance(trainer, lag.LagrangianTrainer) and trainer.hyperparams_algo == "ppo_lagrangian"
    assert default_timesteps(trainer, SPLIT) == 100_000 and default_timesteps(trainer_for("ppo"), SPLIT) == 100_000
    run = TrainSettings(SPLIT, "ppo_lagrangian", hyperparams={"lambda_lr": 0.5, "n_steps": 8})
    assert trainer.params(run)["n_steps"] == 8 and "lambda_lr" not in trainer.params(run)
    assert trainer.settings(run)["lagrangian"]["lambda_lr"] == 0.5
    with pytest.raises(ValueError, match="lambda_optimizer"):
        trainer.params(TrainSettings(SPLIT, "ppo_lagrangian", hyperparams={"lambda_optimizer": "rmsprop"}))
    with pytest.raises(ValueError, match="lagrangian_multiplier_init"):
        trainer.params(TrainSettings(SPLIT, "ppo_lagrangian", hyperparams={"lagrangian_multiplier_init": -1.0}))
    with pytest.raises(ValueError, match=r"unknown key.*n_stepz.*Lagrangian key"):
        trainer.params(TrainSettings(SPLIT, "ppo_lagrangian", hyperparams={"n_stepz": 8}))


# -- the point of the agent -------------------------------------------------------------------------

# Offload-v0 with a cloud-spend budget of 1e-5 USD per task (limit 5e-4 USD per 50-task episode): plain
# PPO sends most tasks to the cloud (~2.1e-5 USD each, the best return), over the limit; the device
# and the edge cost no USD. lambda is in 1/USD: the cloud's edge in reward over the device, ~0.12 a task
# (always_cloud 14.5 vs always_device 8.4 per episode), costs ~2.1e-5 USD, so the lambda that binds is
# ~0.12 / 2.1e-5 ~ 6000; it starts there and takes SGD steps of ~500 per rollout (lr 1e6 x a gap of
# ~5e-4 USD). With lambda from 0 (Adam, lr 1000, 40k steps) seeds 0 and 1 were still over the limit on
# every episode. Measured with these settings (20 test episodes each): ppo over the limit on 20/20
# episodes of seeds 0, 1, 2; ppo_lagrangian on 1/20 (0/20 in another run), 20/20 (its cost fell from PPO's 1.04e-3 to
# 7.1e-4 USD, lambda still rising) and 0/20. Plain r - lambda c did worse (seed 0: 16/20).
VIOLATION_KWARGS = {"episode_length": 50, "budget.metric": "cloud_cost_usd", "budget.per_task": 1.0e-5}
VIOLATION_LAGRANGIAN = {"lambda_optimizer": "sgd", "lambda_lr": 1.0e6, "lagrangian_multiplier_init": 6000.0}


def _violation_rate(folder, limit: float, episodes: int = 20) -> float:
    policy = load_policy(folder)
    env = gym.make(OFFLOAD, **VIOLATION_KWARGS)
    over = 0
    for i in range(episodes):
        obs, _ = env.reset(seed=10_000 + i)
        done, cost = False, 0.0
        while not done:
            action, _ = policy.predict(obs, deterministic=True)
            obs, _, terminated, truncated, info = env.step(int(action))
            cost += info["cost"]
            done = terminated or truncated
        over += cost > limit
    return over / episodes


@pytest.mark.slow
def test_ppo_lagrangian_violates_the_cost_limit_far_less_often_than_ppo(tmp_path):
    limit = lag.cost_limit(OFFLOAD, "default", VIOLATION_KWARGS)
    rates = {}
    for algo, hyper in (("ppo", None), ("ppo_lagrangian", VIOLATION_LAGRANGIAN)):
        rates[algo] = []
        for seed in (0, 1, 2):
            run = TrainSettings(OFFLOAD, algo, 40_000, seed, tmp_path / algo / str(seed), env_kwargs=VIOLATION_KWARGS,
                                hyperparams=hyper)
            rates[algo].append(_violation_rate(train_run(trainer_for(algo), run).out_dir, limit))
    assert np.mean(rates["ppo"]) >= 0.8, rates
    assert np.mean(rates["ppo_lagrangian"]) <= 0.5, rates
