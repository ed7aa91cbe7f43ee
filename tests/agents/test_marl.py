"""Parameter sharing on a toy parallel env, the parallel evaluation loop, and RARL."""

from __future__ import annotations

import json

import numpy as np
import pytest

from edgelam.agents.evaluate import evaluate
from edgelam.agents.marl import parallel_vec_env
from edgelam.agents.opponent import OpponentView
from edgelam.agents.rarl import train_rarl
from edgelam.agents.train import train
from tests.agents.conftest import TOY_PAR, TOY_ZERO_SUM, ToyParallelEnv, ToyZeroSumEnv


def test_parallel_vec_env_has_one_sub_env_per_agent_and_is_seeded():
    venv = parallel_vec_env(ToyParallelEnv, n_envs=2, seed=5)
    assert venv.num_envs == 4
    first = venv.reset()
    venv.seed(5)
    assert np.array_equal(venv.reset(), first)
    obs, rewards, _dones, infos = venv.step(np.zeros(4, dtype=np.int64))
    assert obs.shape == (4, 2) and rewards.shape == (4,) and len(infos) == 4
    venv.close()


def test_parameter_sharing_trains_and_evaluates_per_agent(tmp_path, tiny_ppo):
    result = train(TOY_PAR, timesteps=512, seed=0, out_dir=tmp_path / "shared", hyperparams=tiny_ppo)
    assert result.num_timesteps >= 512
    assert (tmp_path / "shared" / "model.zip").is_file()
    rows = evaluate(tmp_path / "shared", TOY_PAR, episodes=3, seed=2)
    assert rows == evaluate(tmp_path / "shared", TOY_PAR, episodes=3, seed=2)
    row = rows[0]
    assert row["length"] == 8
    assert row["return"] == pytest.approx((row["return/a0"] + row["return/a1"]) / 2)
    assert row["energy_j/a0"] == 8.0  # summed over steps (info_sums) per agent...
    assert row["energy_j"] == 16.0  # ...and over agents globally
    assert row["latency_s"] == pytest.approx((row["latency_s/a0"] + row["latency_s/a1"]) / 2)


def test_parameter_sharing_trains_on_the_batched_game_where_the_env_has_one(tmp_path, tiny_ppo):
    from edgelam.agents.marl import has_batched_game, shared_vec_env

    env_id = "edgelam/MultiUserOffload-v0"
    assert has_batched_game(env_id) and not has_batched_game(env_id, {"backend": "live"})
    assert not has_batched_game(TOY_PAR)
    venv = shared_vec_env(env_id, n_envs=2, seed=0)
    assert type(venv).__name__ == "SB3VectorAdapter" and venv.num_envs == 8  # 2 games x 4 users
    venv.close()
    result = train(env_id, timesteps=512, seed=0, out_dir=tmp_path / "mu", hyperparams=tiny_ppo,
                   env_kwargs={"episode_length": 16})
    meta = json.loads((tmp_path / "mu" / "meta.json").read_text())
    assert meta["parameter_sharing"] == "batched" and result.num_timesteps >= 512
    row = evaluate(tmp_path / "mu", env_id, episodes=1, seed=2, env_kwargs={"episode_length": 16})[0]
    assert row["length"] == 16 and {"return/user_0", "latency_s/user_3"} <= set(row)


class _Sign:
    """Matches the sign in the observation (``agree=True``: reward 1 every step) or always misses it."""

    def __init__(self, agree: bool) -> None:
        self.agree = agree

    def predict(self, observation, state=None, episode_start=None, deterministic=True):
        return np.int64((observation[0] > 0) == self.agree), state


def test_per_agent_policies_in_a_mapping():
    # 8 steps: the agreeing agent gets 8, the contrary one 0; each agent is driven by its own policy
    rows = evaluate({"a0": _Sign(True), "a1": _Sign(False)}, TOY_PAR, episodes=3, seed=0)
    assert [(r["return/a0"], r["return/a1"], r["return"]) for r in rows] == [(8.0, 0.0, 4.0)] * 3
    swapped = evaluate({"a1": _Sign(True), "a0": _Sign(False)}, TOY_PAR, episodes=3, seed=0)
    assert [(r["return/a0"], r["return/a1"]) for r in swapped] == [(0.0, 8.0)] * 3
    rows = evaluate({"a0": "random", "a1": "random"}, TOY_PAR, episodes=2, seed=0)
    assert {"return/a0", "return/a1"} <= set(rows[0])
    with pytest.raises(ValueError, match="no policy for agents"):
        evaluate({"a0": "random"}, TOY_PAR, episodes=1)


def test_adversary_view_reward_is_minus_the_protagonist_reward():
    frozen = {}
    view = OpponentView(ToyZeroSumEnv, "adversary", frozen, zero_sum_with="router")
    router = OpponentView(ToyZeroSumEnv, "router", frozen)
    frozen["router"] = type("Always0", (), {"predict": lambda self, obs, **kw: (0, None)})()
    frozen["adversary"] = type("Always1", (), {"predict": lambda self, obs, **kw: (1, None)})()
    view.reset(seed=0)
    router.reset(seed=0)
    for action in (0, 1, 0, 1):
        _, reward, _, _, info = view.step(action)
        assert reward == -info["agent_rewards"]["router"]
        assert reward == (1.0 if action == 0 else -1.0)  # the router always takes route 0
        _, reward, _, _, info = router.step(0)
        assert reward == info["agent_rewards"]["router"] == 1.0  # the adversary jams route 1


def test_rarl_alternates_and_is_zero_sum(tmp_path, tiny_ppo):
    result = train_rarl(
        TOY_ZERO_SUM,
        iterations=2,
        protagonist_steps=128,
        adversary_steps=128,
        seed=0,
        out_dir=tmp_path / "rarl",
        hyperparams=tiny_ppo,
    )
    assert [h["trained"] for h in result.history] == ["router", "adversary", "router", "adversary"]
    assert [h["timesteps"] for h in result.history] == [128, 128, 256, 256]
    assert json.loads((tmp_path / "rarl" / "history.json").read_text()) == result.history
    rows = evaluate(result.policies, TOY_ZERO_SUM, episodes=3, seed=0)
    for row in rows:
        assert row["return/adversary"] == -row["return/router"]
    saved = {a: tmp_path / "rarl" / a for a in ("router", "adversary")}
    assert evaluate(saved, TOY_ZERO_SUM, episodes=3, seed=0) == rows
    with pytest.raises(ValueError, match="already holds"):
        train_rarl(TOY_ZERO_SUM, iterations=1, out_dir=tmp_path / "rarl", hyperparams=tiny_ppo)


def test_rarl_needs_two_agents(tmp_path):
    with pytest.raises(ValueError, match="2-agent"):
        train_rarl(lambda: _ThreeAgents(), iterations=1, out_dir=tmp_path / "x")


class _ThreeAgents(ToyParallelEnv):
    def __init__(self) -> None:
        super().__init__()
        self.possible_agents = ["a", "b", "c"]
