"""One conformance suite, parametrised over every edgelam env id, read from the env specs.

A new env joins it by listing its spec (``SPEC_MODULES`` in ``edgelam.envs.registration``);
tests/test_spec.py runs the Gymnasium checks below on a toy env registered from a spec.
Every env config has an ``episode_length`` field (int >= 1), which the bad-config tests use.
"""

from __future__ import annotations

import warnings

import gymnasium as gym
import numpy as np
import pettingzoo
import pytest
from gymnasium.utils.env_checker import check_env as gym_check_env
from stable_baselines3.common.env_checker import check_env as sb3_check_env

import edgelam.envs  # noqa: F401  (registers the ids)
from edgelam.envs.registration import ENV_IDS, SPECS, make_parallel

GYM_IDS = sorted(s.id for s in SPECS if s.kind == "gymnasium")
PARALLEL_IDS = sorted(s.id for s in SPECS if s.kind == "pettingzoo")


def _equal(a, b) -> bool:
    if isinstance(a, dict):
        return isinstance(b, dict) and a.keys() == b.keys() and all(_equal(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)):
        return len(a) == len(b) and all(_equal(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, np.ndarray) or isinstance(b, np.ndarray):
        return np.array_equal(np.asarray(a), np.asarray(b))
    return a == b


def _rollout(env_id: str, seed: int, steps: int, **kwargs) -> list:
    env = gym.make(env_id, **kwargs)
    env.action_space.seed(seed)
    obs, info = env.reset(seed=seed)
    trace = [(obs, info)]
    for _ in range(steps):
        obs, reward, terminated, truncated, info = env.step(env.action_space.sample())
        trace.append((obs, reward, terminated, truncated, info))
        if terminated or truncated:
            obs, info = env.reset()
            trace.append((obs, info))
    env.close()
    return trace


# The public ids of the design (its environment table), written out: the contract the
# registration must meet, not read back from the dicts that register them.
DESIGN_GYM_IDS = {
    "edgelam/SplitInference-v0",
    "edgelam/Offload-v0",
    "edgelam/SpecDecode-v0",
    "edgelam/MicroserviceRouting-v0",
    "edgelam/FedFTAllocation-v0",
    "edgelam/EdgeModelCache-v0",
}
DESIGN_PARALLEL_IDS = {
    "edgelam/MultiUserOffload-v0",
    "edgelam/RobustRouting-v0",
    "edgelam/FedFTPower-v0",
    "edgelam/CooperativeModelCache-v0",
}
# in the design's table, not built yet: each moves into a set above when it is registered
DESIGN_PENDING_IDS: set[str] = set()


def test_every_design_id_is_registered_or_pending():
    gym_ids = {i for i in gym.registry if i.startswith("edgelam/")}
    assert gym_ids == DESIGN_GYM_IDS
    for env_id in DESIGN_GYM_IDS:
        assert gym.spec(env_id).entry_point.startswith("edgelam.envs."), env_id
    assert set(ENV_IDS) == DESIGN_GYM_IDS | DESIGN_PARALLEL_IDS
    for env_id in sorted(DESIGN_PARALLEL_IDS):
        env = make_parallel(env_id)
        assert isinstance(env, pettingzoo.ParallelEnv), env_id
        env.close()
    for env_id in sorted(DESIGN_PENDING_IDS):
        assert env_id not in gym.registry, f"{env_id} is registered: move it out of DESIGN_PENDING_IDS"
        with pytest.raises(ValueError, match="unknown PettingZoo env id"):
            make_parallel(env_id)


@pytest.mark.parametrize("env_id", GYM_IDS)
def test_gymnasium_check_env_no_warnings(env_id):
    env = gym.make(env_id)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        gym_check_env(env.unwrapped, skip_render_check=True)
    env.close()


@pytest.mark.parametrize("env_id", GYM_IDS)
def test_sb3_check_env_no_warnings(env_id):
    env = gym.make(env_id)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        sb3_check_env(env.unwrapped, warn=True)
    env.close()


@pytest.mark.parametrize("env_id", GYM_IDS)
def test_same_seed_same_trajectory(env_id):
    a = _rollout(env_id, seed=3, steps=200)
    b = _rollout(env_id, seed=3, steps=200)
    assert _equal(a, b)


@pytest.mark.parametrize("env_id", GYM_IDS)
def test_different_seeds_differ(env_id):
    a = _rollout(env_id, seed=1, steps=50)
    b = _rollout(env_id, seed=2, steps=50)
    assert not _equal(a, b)


@pytest.mark.parametrize("env_id", GYM_IDS)
def test_reset_seed_reseeds_everything(env_id):
    env = gym.make(env_id)
    env.action_space.seed(0)
    actions = [env.action_space.sample() for _ in range(30)]
    runs = []
    for _ in range(2):
        obs, _ = env.reset(seed=11)
        trace = [obs]
        for a in actions:
            obs, reward, terminated, truncated, info = env.step(a)
            trace.append((obs, reward, info))
            if terminated or truncated:
                break
        runs.append(trace)
    env.close()
    assert _equal(runs[0], runs[1])


@pytest.mark.parametrize("env_id", GYM_IDS)
def test_step_contract(env_id):
    env = gym.make(env_id)
    env.reset(seed=0)
    env.action_space.seed(0)
    for _ in range(20):
        obs, reward, terminated, truncated, info = env.step(env.action_space.sample())
        assert type(reward) is float and np.isfinite(reward)
        assert env.observation_space.contains(obs)
        for key in ("latency_s", "energy_j"):
            assert isinstance(info[key], float) and np.isfinite(info[key]) and info[key] >= 0.0
        if terminated or truncated:
            env.reset()
    env.close()


def _bad_actions(space: gym.Space) -> list:
    if isinstance(space, gym.spaces.Discrete):
        return [space.start + space.n, -1, np.array([0, 0])]
    if isinstance(space, gym.spaces.MultiDiscrete):
        return [space.nvec.copy(), -np.ones_like(space.nvec), np.zeros(space.nvec.size + 1, dtype=np.int64)]
    if isinstance(space, gym.spaces.Box):
        high = np.full(space.shape, 2.0, dtype=space.dtype)
        return [
            high,
            np.zeros((*space.shape, 2), dtype=space.dtype),
            np.full(space.shape, np.nan, space.dtype),
        ]
    raise AssertionError(f"unexpected action space {space}")


@pytest.mark.parametrize("env_id", GYM_IDS)
def test_bad_action_raises_value_error(env_id):
    env = gym.make(env_id)
    env.reset(seed=0)
    for action in _bad_actions(env.action_space):
        with pytest.raises(ValueError, match="action"):
            env.step(action)
    env.close()


@pytest.mark.parametrize("env_id", GYM_IDS)
@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"no_such_key": 1}, "no_such_key"),
        ({"episode_length": 0}, "episode_length"),
        ({"episode_length": "long"}, "episode_length"),
        ({"scenario": "no_such_scenario"}, "no_such_scenario"),
        ({"backend": "imaginary"}, "backend"),
    ],
)
def test_bad_config_raises_value_error(env_id, kwargs, match):
    with pytest.raises(ValueError, match=match):
        gym.make(env_id, **kwargs)


@pytest.mark.parametrize("env_id", PARALLEL_IDS)
def test_pettingzoo_parallel_api(env_id):
    from pettingzoo.test import parallel_api_test

    parallel_api_test(make_parallel(env_id), num_cycles=200)


@pytest.mark.parametrize("env_id", PARALLEL_IDS)
def test_pettingzoo_parallel_seed(env_id):
    from pettingzoo.test import parallel_seed_test

    parallel_seed_test(lambda: make_parallel(env_id))


def _multi_user_offload_live(tmp_path) -> dict:
    from tests.multi_user_offload.heldout import write_heldout_subset

    return {"profile_dir": write_heldout_subset(tmp_path, 8)}  # first 8 held-out tasks: <= 24 model runs


# parallel envs with backend="live" -> overrides of a reduced scenario that keeps the real model runs fast
LIVE_PARALLEL = {"edgelam/MultiUserOffload-v0": _multi_user_offload_live}


@pytest.mark.parametrize("env_id", sorted(LIVE_PARALLEL))
def test_pettingzoo_parallel_api_and_seed_live(env_id, tmp_path):
    from pettingzoo.test import parallel_api_test, parallel_seed_test

    kwargs = {"backend": "live", **LIVE_PARALLEL[env_id](tmp_path)}
    parallel_api_test(make_parallel(env_id, **kwargs), num_cycles=200)
    parallel_seed_test(lambda: make_parallel(env_id, **kwargs))


@pytest.mark.parametrize("env_id", PARALLEL_IDS)
def test_pettingzoo_registry_builds_the_same_env(env_id):
    pettingzoo = pytest.importorskip("pettingzoo")
    if not hasattr(pettingzoo, "parallel_registry"):
        pytest.skip("this PettingZoo has no registry")
    env = pettingzoo.make("parallel", env_id)
    ref = make_parallel(env_id)
    assert type(env) is type(ref) and env.possible_agents == ref.possible_agents
