"""SB3VectorAdapter: SB3's VecEnv contract over a batched Gymnasium vector env, and PPO trained through it."""

from __future__ import annotations

import json

import gymnasium as gym
import numpy as np
import pytest
from stable_baselines3 import PPO
from stable_baselines3.common.monitor import Monitor
from stable_baselines3.common.vec_env import DummyVecEnv

import edgelam.envs  # noqa: F401
from edgelam.agents.compare import compare
from edgelam.agents.evaluate import evaluate
from edgelam.agents.train import make_train_env, train
from edgelam.agents.vec import SB3VectorAdapter
from edgelam.envs.offload.vector import OffloadVectorEnv

OFFLOAD = "edgelam/Offload-v0"


def test_one_env_adapter_equals_dummy_vec_env_of_the_single_env():
    """B = 1, same seed: the adapter gives SB3 exactly what DummyVecEnv + Monitor over the single env gives.

    Same-step resets, terminal observations, TimeLimit.truncated, Monitor's episode return and length.
    A 40 J battery makes episodes end by termination as well as by truncation.
    """
    kwargs = {"battery_j": 40.0}
    dummy = DummyVecEnv([lambda: Monitor(gym.make(OFFLOAD, **kwargs))])
    adapter = SB3VectorAdapter(OffloadVectorEnv(num_envs=1, **kwargs))
    dummy.seed(11)
    adapter.seed(11)
    assert np.array_equal(dummy.reset(), adapter.reset())
    actions = np.random.default_rng(0).integers(0, 3, (400, 1))
    ends = 0
    for a in actions:
        obs_d, rew_d, done_d, infos_d = dummy.step(a)
        obs_a, rew_a, done_a, infos_a = adapter.step(a)
        assert np.array_equal(obs_d, obs_a) and np.array_equal(rew_d, rew_a) and np.array_equal(done_d, done_a)
        assert rew_a.dtype == np.float32 and done_a.dtype == bool
        if done_d[0]:
            ends += 1
            d, v = infos_d[0], infos_a[0]
            assert np.array_equal(d["terminal_observation"], v["terminal_observation"])
            assert d["TimeLimit.truncated"] == v["TimeLimit.truncated"]
            assert (d["episode"]["r"], d["episode"]["l"]) == (v["episode"]["r"], v["episode"]["l"])
        else:
            assert "episode" not in infos_a[0] and "terminal_observation" not in infos_a[0]
    assert ends >= 5


def test_lone_resets_in_a_batch():
    """B = 8 with desynchronised episodes: done envs restart in the same step, the others keep going."""
    b = 8
    adapter = SB3VectorAdapter(OffloadVectorEnv(num_envs=b, battery_j=40.0), step_info=True)
    adapter.seed(0)
    obs = adapter.reset()
    assert obs.shape == (b, 8) and adapter.observation_space.contains(obs[0])
    assert len(adapter.reset_infos) == b and "distance_m" in adapter.reset_infos[0]
    returns, lengths = np.zeros(b), np.zeros(b, dtype=int)
    rng = np.random.default_rng(1)
    lone, episodes = 0, 0
    for _ in range(300):
        prev = obs
        obs, reward, done, infos = adapter.step(rng.integers(0, 3, b))
        assert isinstance(infos, list) and len(infos) == b
        assert np.all(infos[0]["latency_s"] > 0) and isinstance(infos[0]["tier"], str)  # step_info
        returns += reward
        lengths += 1
        for i in np.flatnonzero(done):
            episodes += 1
            info = infos[i]
            # the first observation of the new episode, and the last one of the old in the info
            assert obs[i, 5] == 1.0 and obs[i, 7] == 0.0
            assert info["terminal_observation"].shape == (8,) and info["terminal_observation"][7] > prev[i, 7]
            assert info["TimeLimit.truncated"] == (info["terminal_observation"][5] > 0.0)
            assert info["episode"]["l"] == lengths[i]
            assert info["episode"]["r"] == pytest.approx(returns[i], abs=1e-4)  # float32 step rewards summed
            returns[i], lengths[i] = 0.0, 0
        if 0 < done.sum() < b:
            lone += 1
            assert np.all(obs[~done, 7] > 0.0)  # the others are mid-episode
    assert lone > 10 and episodes > 20


def test_attributes_methods_and_wrappers():
    assert SB3VectorAdapter(OffloadVectorEnv(num_envs=4)).get_attr("episode_length") == [200] * 4
    with pytest.raises(AttributeError, match="episode_length is fixed when the vector env is built"):
        SB3VectorAdapter(OffloadVectorEnv(num_envs=4)).set_attr("episode_length", 5)  # never silently ignored
    adapter = SB3VectorAdapter(OffloadVectorEnv(num_envs=4, max_episode_steps=5))
    assert adapter.num_envs == 4 and adapter.action_space == gym.spaces.Discrete(3)
    assert adapter.get_attr("episode_length") == [5] * 4
    assert adapter.get_attr("num_envs", indices=[1, 2]) == [4, 4]
    adapter.set_attr("metadata", {"render_modes": []})
    assert adapter.get_attr("metadata") == [{"render_modes": []}] * 4
    adapter.reset()
    for _ in range(4):
        _, _, done, _ = adapter.step(np.zeros(4, dtype=np.int64))
        assert not done.any()
    _, _, done, infos = adapter.step(np.zeros(4, dtype=np.int64))
    assert done.all() and all(i["TimeLimit.truncated"] and i["episode"]["l"] == 5 for i in infos)
    assert adapter.env_method("_check_actions", np.zeros(4, dtype=np.int64), indices=[0])[0].shape == (4,)
    assert adapter.env_is_wrapped(Monitor) == [True] * 4
    assert adapter.env_is_wrapped(gym.wrappers.TimeLimit) == [False] * 4
    assert SB3VectorAdapter(OffloadVectorEnv(num_envs=2), monitor=False).env_is_wrapped(Monitor) == [False, False]
    with pytest.raises(ValueError, match="VectorEnv"):
        SB3VectorAdapter(gym.make(OFFLOAD))


def test_seed_repeats_and_other_seed_differs():
    def rollout(seed: int) -> np.ndarray:
        adapter = SB3VectorAdapter(OffloadVectorEnv(num_envs=4))
        adapter.seed(seed)
        out = [adapter.reset()]
        for _ in range(20):
            out.append(adapter.step(np.ones(4, dtype=np.int64))[0])
        return np.stack(out)

    assert np.array_equal(rollout(3), rollout(3))
    assert not np.array_equal(rollout(3), rollout(4))


@pytest.mark.parametrize("mode", [gym.vector.AutoresetMode.NEXT_STEP, gym.vector.AutoresetMode.SAME_STEP])
def test_gymnasium_sync_vector_env(mode):
    """Any Gymnasium vector env: CartPole in SyncVectorEnv, next-step (partial reset) or same-step autoreset."""
    venv = gym.vector.SyncVectorEnv([lambda: gym.make("CartPole-v1") for _ in range(3)], autoreset_mode=mode)
    adapter = SB3VectorAdapter(venv)
    adapter.seed(0)
    obs = adapter.reset()
    ended = 0
    for _ in range(200):
        obs, reward, done, infos = adapter.step(np.zeros(3, dtype=np.int64))  # always push left: falls fast
        assert np.all(reward == 1.0)
        for i in np.flatnonzero(done):
            ended += 1
            assert abs(infos[i]["terminal_observation"][2]) > 0.2  # the pole fell
            assert np.all(np.abs(obs[i]) <= 0.05)  # the reset state
            assert infos[i]["episode"]["l"] == infos[i]["episode"]["r"]
    assert ended > 10


def test_make_train_env_vectorized_and_its_errors():
    venv = make_train_env(OFFLOAD, "ppo", "default", {"battery_j": 100.0}, 16, seed=0, vectorized=True)
    assert isinstance(venv, SB3VectorAdapter) and venv.num_envs == 16
    assert venv.get_attr("config")[0].battery_j == 100.0
    with pytest.raises(ValueError, match="vector_entry_point"):
        # every edgelam Gymnasium id has a vector env now; Gymnasium's Pendulum registers none
        make_train_env("Pendulum-v1", "ppo", "default", None, 2, seed=0, vectorized=True)
    with pytest.raises(ValueError, match="action_masks"):
        make_train_env(OFFLOAD, "maskable_ppo", "default", None, 2, seed=0, vectorized=True)
    with pytest.raises(ValueError, match="no_such_key"):
        make_train_env(OFFLOAD, "ppo", "default", {"no_such_key": 1}, 2, seed=0, vectorized=True)


# PPO small enough to learn Offload-v0 in a few thousand steps on two cores
_PPO = {
    "n_envs": 8,
    "n_steps": 64,
    "batch_size": 128,
    "n_epochs": 4,
    "learning_rate": 1.0e-3,
    "gamma": 0.9,
    "policy_kwargs": {"net_arch": [32, 32]},
}


@pytest.mark.slow
def test_ppo_learns_the_same_on_the_vector_env_as_on_single_envs(tmp_path):
    """PPO, same hyperparameters and seeds, 8 single envs in a DummyVecEnv vs the batched env via the adapter.

    Compared: the greedy policy's return on 5 fixed evaluation episodes and the mean episode return of
    the two halves of the training curve. Tolerance: 4 standard errors of the difference of the means
    over seeds (plus 1% of the improvement, so that a lucky tight spread does not make it flaky).
    Both must beat the untrained policy by far (it returns about -165 on these episodes, the trained
    ones +31 to +36; the random baseline about +26, the oracle +42). Measured over 8 other seeds
    (4..11): 33.6 +- 1.9 (single) vs 33.7 +- 1.2 (batched).
    """
    seeds, steps = range(4), 4096
    results: dict[bool, dict[str, list[float]]] = {}
    for vectorized in (False, True):
        res: dict[str, list[float]] = {"eval": [], "early": [], "late": []}
        for seed in seeds:
            out = tmp_path / f"{vectorized}_{seed}"
            run = train(OFFLOAD, "ppo", steps, seed, out, hyperparams=_PPO, vectorized=vectorized)
            rows = evaluate(run.policy(), OFFLOAD, episodes=5, seed=100)
            res["eval"].append(float(np.mean([r["return"] for r in rows])))
            curve = np.loadtxt(run.learning_curve, delimiter=",", skiprows=1, ndmin=2)
            half = curve[:, 0] <= steps / 2
            res["early"].append(float(curve[half, 1].mean()))
            res["late"].append(float(curve[~half, 1].mean()))
            assert json.loads((out / "meta.json").read_text()).get("vectorized", False) == vectorized
        results[vectorized] = res
    untrained = PPO("MlpPolicy", make_train_env(OFFLOAD, "ppo", "default", None, 1, 0), seed=0,
                    policy_kwargs=_PPO["policy_kwargs"], device="cpu")
    floor = float(np.mean([r["return"] for r in evaluate(untrained, OFFLOAD, episodes=5, seed=100)]))
    n = len(seeds)
    for key in ("eval", "early", "late"):
        single, batched = np.asarray(results[False][key]), np.asarray(results[True][key])
        se = np.sqrt(single.var(ddof=1) / n + batched.var(ddof=1) / n)
        tol = 4.0 * se + 0.01 * (single.mean() - floor)
        assert abs(single.mean() - batched.mean()) <= tol, (key, single, batched, tol)
    for vectorized in (False, True):
        gain = np.mean(results[vectorized]["eval"]) - floor
        assert gain > 100.0, (vectorized, results[vectorized]["eval"], floor)


def test_cli_train_vector(tmp_path, capsys):
    from edgelam.agents.cli import main

    out = tmp_path / "run"
    argv = ["train", OFFLOAD, "--vector", "--n-envs", "8", "--timesteps", "512", "--hp", "n_steps=64"]
    argv += ["--out", str(out)]
    assert main([*argv, "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["num_timesteps"] == 512
    assert json.loads((out / "meta.json").read_text())["vectorized"] is True
    assert main(["train", OFFLOAD, *argv[3:], "--timesteps", "1024", "--resume"]) == 2
    assert "vectorized" in capsys.readouterr().err  # resuming needs the same settings
    assert main([*argv, "--timesteps", "1024", "--resume"]) == 0
    assert json.loads((out / "meta.json").read_text())["num_timesteps"] == 1024


def test_compare_vector_trains_the_agents_on_the_batched_env(tmp_path, capsys):
    """compare --vector: each agent run trains through SB3VectorAdapter (its meta.json says so, its
    evaluation matches the saved model's), and a compare without it does not reuse that run."""
    from edgelam.agents.cli import main

    argv = ["compare", OFFLOAD, "--algos", "ppo", "--seeds", "0", "--timesteps", "512", "--episodes", "2",
            "--baselines", "random", "--out", str(tmp_path), "--no-progress", "--json"]
    hp = {**_PPO, "n_steps": 32}
    result = compare(OFFLOAD, algos=["ppo"], seeds=[0], timesteps=512, episodes=2, baselines=["random"],
                     out_dir=tmp_path, hyperparams={"ppo": hp}, progress=False, vectorized=True)
    meta = json.loads((tmp_path / "runs" / "ppo" / "seed_0" / "meta.json").read_text())
    assert meta["vectorized"] is True and meta["hyperparams"]["n_envs"] == 8
    saved = PPO.load(tmp_path / "runs" / "ppo" / "seed_0" / "model.zip", device="cpu")
    assert saved.n_envs == 8 and saved.num_timesteps == 512
    assert result.summary["ppo"]["return"][2] == 2
    assert main(argv) != 0  # the same folder without --vector: the run's settings differ, not reused
    assert "vectorized" in capsys.readouterr().err
