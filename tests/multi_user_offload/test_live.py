"""MultiUserOffload-v0 live backend: real model runs in the env agree with replay of the shipped profile."""

from __future__ import annotations

import math

import numpy as np
import pytest

from edgelam import baselines
from edgelam.envs.lam import load_profile
from edgelam.envs.offload.dynamics import CLOUD, DEVICE, EDGE
from edgelam.envs.registration import make_parallel
from tests.multi_user_offload.heldout import write_heldout_subset
from tests.offload.toy import CONFIDENCE, QUALITY, write_toy_profile

ENV_ID = "edgelam/MultiUserOffload-v0"
STEPS = 500


@pytest.fixture(scope="module")
def subset_dir(tmp_path_factory):
    """The first 40 held-out tasks of the shipped profile (bounds a live run to 120 model runs)."""
    return write_heldout_subset(tmp_path_factory.mktemp("mu_heldout"), 40)


def _rollout(backend: str, profile_dir: str, policy: str) -> dict[str, np.ndarray]:
    env = make_parallel(ENV_ID, backend=backend, profile_dir=profile_dir, episode_length=STEPS)
    rng = np.random.default_rng(0)
    pol = None if policy == "random" else baselines.make(policy, env)
    obs, _ = env.reset(seed=0)
    prompts, quality, latency = [], [], []
    while env.agents:
        prompts.append(env.prompts.copy())
        acts = {a: np.int64(rng.integers(3)) for a in env.agents} if pol is None else pol.predict(obs)[0]
        obs, _, _, _, infos = env.step(acts)
        quality.append([infos[a]["quality"] for a in env.possible_agents])
        latency.append([infos[a]["latency_s"] for a in env.possible_agents])
    return {"prompts": np.array(prompts), "quality": np.array(quality), "latency_s": np.array(latency)}


@pytest.mark.parametrize("policy", ["random", "greedy"])
def test_replay_and_live_agree_over_500_steps(subset_dir, policy):
    replay = _rollout("replay", subset_dir, policy)
    live = _rollout("live", subset_dir, policy)
    assert replay["quality"].shape == (STEPS, 4)
    np.testing.assert_array_equal(live["prompts"], replay["prompts"])  # same seed, same tasks
    for key in ("quality", "latency_s"):
        assert math.isclose(live[key].mean(), replay[key].mean(), rel_tol=0.05), key


def test_live_quality_is_the_executed_models_not_the_replay_file(tmp_path):
    """With a profile of made-up numbers, live must still report what the real models score."""
    shipped = load_profile("offload")
    models = [str(m) for m in shipped["models"]]
    cols = [models.index(m) for m in ("device", "edge", "cloud")]
    real_acc = np.asarray(shipped["ref_accuracy"], np.float64)[:6, cols]
    real_conf = np.asarray(shipped["confidence"], np.float64)[:6, cols[0]]
    assert not np.allclose(real_acc, QUALITY, atol=0.02)  # the toy file really is wrong
    env = make_parallel(ENV_ID, backend="live", profile_dir=write_toy_profile(tmp_path), num_users=3)
    obs, _ = env.reset(seed=4)
    seen = np.full((6, 3), np.nan)
    for _ in range(12):
        p = env.prompts.copy()
        np.testing.assert_allclose([obs[a][0] for a in env.possible_agents], real_conf[p], atol=1e-4)
        assert not np.allclose(real_conf[p], CONFIDENCE[p], atol=0.02)
        obs, _, _, _, infos = env.step({"user_0": DEVICE, "user_1": EDGE, "user_2": CLOUD})
        got = [infos[a]["quality"] for a in env.possible_agents]
        np.testing.assert_allclose(got, real_acc[p, [DEVICE, EDGE, CLOUD]], atol=1e-4)
        seen[p, [DEVICE, EDGE, CLOUD]] = got
    done = ~np.isnan(seen).any(axis=1)
    assert done.any()
    # the three tiers run three different models: their accuracies differ on some task
    assert np.any(seen[done].max(axis=1) - seen[done].min(axis=1) > 0.02)


def test_live_runs_each_task_and_tier_once(tmp_path):
    folder = write_heldout_subset(tmp_path, 4)
    assert make_parallel(ENV_ID, profile_dir=folder).live_model_runs == 0
    env = make_parallel(ENV_ID, backend="live", profile_dir=folder)
    executed, draws = set(), 0
    env.reset(seed=1)
    for tier in (CLOUD, EDGE, CLOUD, DEVICE, EDGE):
        executed |= {(int(p), DEVICE) for p in env.prompts} | {(int(p), tier) for p in env.prompts}
        draws += 2 * env.n
        env.step(dict.fromkeys(env.agents, tier))
    executed |= {(int(p), DEVICE) for p in env.prompts}
    # 24 tasks drawn from 4: every (task, tier) pair ran its model exactly once
    assert env.live_model_runs == len(executed) <= 12 < draws
    runs = env.live_model_runs
    env.reset(seed=1)
    for tier in (CLOUD, EDGE, CLOUD, DEVICE, EDGE):
        env.step(dict.fromkeys(env.agents, tier))
    assert env.live_model_runs == runs  # the same episode again is served from the cache


def test_live_through_supersuit_parameter_sharing_equals_replay(tmp_path):
    """The SB3 view (one sub-env per user) of live equals that of replay on the shipped tasks."""
    from edgelam.agents.marl import parallel_vec_env

    folder = write_heldout_subset(tmp_path, 8)
    runs = {}
    for backend in ("replay", "live"):
        venv = parallel_vec_env(lambda b=backend: make_parallel(ENV_ID, backend=b, profile_dir=folder), 2, seed=3)
        rows = [venv.reset()]
        for k in range(6):
            obs, rewards, _dones, _infos = venv.step(np.full(venv.num_envs, k % 3, dtype=np.int64))
            rows += [obs, rewards[:, None]]
        venv.close()
        runs[backend] = np.concatenate(rows, axis=1)
    assert runs["live"].shape == (8, 6 * 9 + 8)
    np.testing.assert_allclose(runs["live"], runs["replay"], atol=1e-4)
