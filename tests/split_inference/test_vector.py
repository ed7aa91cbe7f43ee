"""The batched SplitInference vector env is the single env, B times, without a Python loop per user."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest

import edgelam.envs  # noqa: F401
from edgelam.envs.core.config import scenario_names
from edgelam.envs.split_inference.dynamics import BLOCK, advance, initial, transition
from edgelam.envs.split_inference.env import SplitInferenceEnv
from edgelam.envs.split_inference.vector import SplitInferenceVectorEnv

ENV_ID = "edgelam/SplitInference-v0"
SCENARIOS = scenario_names("split_inference")


def _same(a, b) -> bool:
    """Equal bit for bit: the same keys, types and values (arrays: dtype and every element)."""
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, tuple):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, np.ndarray) or isinstance(b, np.ndarray):
        a, b = np.asarray(a), np.asarray(b)
        return a.dtype == b.dtype and a.shape == b.shape and np.array_equal(a, b)
    return type(a) is type(b) and a == b




def _check_row(info_s: dict, info_v: dict) -> None:
    assert info_s.keys() == {k for k in info_v if not k.startswith("_")}
    for key, value in info_s.items():
        assert type(value) in (int, float), key
        assert info_v[key].shape == (1,) and info_v[key].dtype == (np.int64 if type(value) is int else np.float64), key
        assert info_v[key][0] == value, key  # exact


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_one_user_vector_env_equals_the_single_env_bit_for_bit_across_resets(scenario):
    steps = 300  # crosses the 256-slot block boundary and two episode ends
    single = SplitInferenceEnv(scenario=scenario, episode_length=120)
    vec = SplitInferenceVectorEnv(num_envs=1, scenario=scenario, episode_length=120)
    rng = np.random.default_rng(0)
    actions = np.stack([rng.integers(0, single.num_layers + 1, steps), rng.integers(0, 3, steps)], axis=1)
    obs_s, info_s = single.reset(seed=7)
    obs_v, info_v = vec.reset(seed=7)
    assert _same(obs_s, obs_v[0]) and info_v["uplink_rate_bps"][0] == info_s["uplink_rate_bps"]
    resets = 0
    for t in range(steps):
        obs_s, r_s, term_s, trunc_s, info_s = single.step(actions[t])
        obs_v, r_v, term_v, trunc_v, info_v = vec.step(actions[t][None, :])
        assert _same(obs_s, obs_v[0]), t
        assert type(r_s) is float and r_v.dtype == np.float64 and r_v[0] == r_s, t
        assert (term_s, trunc_s) == (bool(term_v[0]), bool(trunc_v[0])), t
        _check_row(info_s, info_v)
        if trunc_s:
            resets += 1
            obs_s, info_s = single.reset()  # unseeded: both go on with their generator
            obs_v, r_v, term_v, trunc_v, info_v = vec.step(actions[t][None, :])  # next-step autoreset
            assert r_v[0] == 0.0 and not term_v[0] and not trunc_v[0]
            assert _same(obs_s, obs_v[0]) and info_v["uplink_rate_bps"][0] == info_s["uplink_rate_bps"]
    assert resets == 2


def _run(vec: SplitInferenceVectorEnv, actions: np.ndarray, mask_at: int | None = None) -> list:
    trace = [vec.reset(seed=3)]
    for t, a in enumerate(actions):
        trace.append(vec.step(a))
        if t == mask_at:
            trace.append(vec.reset(options={"reset_mask": np.array([False, True, False])}))
    return trace


def test_same_seed_same_trajectory_with_users_out_of_step():
    """Three users, one reset alone mid-episode: their episodes end at different steps (per-user
    autoreset, ``_key`` masks), and the same seed replays all of it bit for bit."""
    vec = SplitInferenceVectorEnv(num_envs=3, episode_length=40)
    rng = np.random.default_rng(1)
    actions = np.stack([rng.integers(0, vec.num_layers + 1, (300, 3)), rng.integers(0, 3, (300, 3))], axis=2)
    a, b = _run(vec, actions, mask_at=10), _run(SplitInferenceVectorEnv(num_envs=3, episode_length=40), actions, 10)
    assert len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b, strict=True))
    # user 1 restarted after step 11: it truncates 11 steps after the others, each autoresets alone
    truncated = np.array([step[3] for step in a[1:] if len(step) == 5])
    first = [int(np.flatnonzero(truncated[:, u])[0]) for u in range(3)]
    assert first[0] == first[2] == 39 and first[1] == 39 + 11
    alone = next(step for step in a[1:] if len(step) == 5 and "_latency_s" in step[4])
    _, reward, _, _, info = alone
    assert info["_latency_s"].tolist() == [False, True, False]  # users 0 and 2 restart, user 1 steps on
    assert reward[0] == reward[2] == 0.0 and reward[1] != 0.0
    assert not _same(_run(SplitInferenceVectorEnv(num_envs=3, episode_length=40), actions[:50])[-1][0], a[51][0])


def test_partial_reset_mask_resets_only_those_users():
    vec = SplitInferenceVectorEnv(num_envs=4, episode_length=200)
    vec.reset(seed=0)
    vec.action_space.seed(0)
    for _ in range(5):
        vec.step(vec.action_space.sample())
    before = vec.state.copy()
    obs_before = vec.step(vec.action_space.sample())[0]
    before = vec.state.copy()
    mask = np.array([False, True, False, True])
    obs, info = vec.reset(options={"reset_mask": mask})
    kept, fresh = ~mask, mask
    assert np.array_equal(obs[kept], obs_before[kept])
    assert np.array_equal(vec.state.ints[kept], before.ints[kept])
    assert np.array_equal(vec.state.reals[kept], before.reals[kept])
    assert np.array_equal(vec.state.block[:, :, kept], before.block[:, :, kept])
    assert vec.state.step[fresh].tolist() == [0, 0] and vec.state.step[kept].tolist() == [6, 6]
    assert np.all(vec.state.virtual_queue[fresh] == 0.0)
    assert not np.any(vec.state.distance_m[fresh] == before.distance_m[fresh])  # new episodes, new distances
    assert np.all(obs[fresh, -1] == 0.0) and np.all(obs[kept, -1] > 0.0)  # the episode's elapsed fraction
    assert info["_uplink_rate_bps"] is mask and info["uplink_rate_bps"].shape == (4,)
    # the reset users' slots of the current block are new; the block still ends for everyone at once
    slot = int(vec.state.ints[0, 1])
    assert not np.array_equal(vec.state.block[:, slot:, fresh], before.block[:, slot:, fresh])
    for _ in range(BLOCK):
        obs, reward, _, _, _ = vec.step(vec.action_space.sample())
        assert vec.observation_space.contains(obs) and np.all(np.isfinite(reward))
    # the compiled step runs on C-contiguous buffers only (one compiled version of it)
    assert all(x.flags.c_contiguous for x in (vec.state.ints, vec.state.reals, vec.state.block))
    with pytest.raises(ValueError, match="reset_mask"):
        vec.reset(options={"reset_mask": np.array([1, 0, 0, 0])})
    with pytest.raises(ValueError, match="seed"):
        vec.reset(seed=1, options={"reset_mask": mask})


def test_transition_is_pure_and_equals_advance():
    env = SplitInferenceEnv(episode_length=50)
    state = initial(env.params, np.random.default_rng(0), 5)
    before = state.copy()
    actions = np.stack([np.arange(5) * 5 % (env.num_layers + 1), np.arange(5) % 3], axis=1).astype(np.int64)
    after, reward, info = transition(env.params, state, actions, np.random.default_rng(1))
    assert np.array_equal(state.ints, before.ints) and np.array_equal(state.reals, before.reals)
    out, _ = advance(env.params, state, actions, np.random.default_rng(1))
    assert np.array_equal(after.reals, state.reals) and np.array_equal(after.ints, state.ints)
    assert np.array_equal(reward, out.reward) and info.keys() == out.info(True).keys()
    assert info["split_layer"].tolist() == actions[:, 0].tolist() and info["bits"].tolist() == [4, 8, 16, 4, 8]
    for bad in ([env.num_layers + 1, 0], [0, 3], [-1, 0]):
        wrong = actions.copy()
        wrong[2] = bad
        kept = state.copy()
        with pytest.raises(ValueError, match="actions"):
            advance(env.params, state, wrong, np.random.default_rng(1))
        assert np.array_equal(state.ints, kept.ints) and np.array_equal(state.reals, kept.reals)
    with pytest.raises(ValueError, match="actions"):
        advance(env.params, state, actions[:4], np.random.default_rng(1))


def test_make_vec_batch_and_spaces():
    vec = gym.make_vec(ENV_ID, num_envs=64, vectorization_mode="vector_entry_point")
    obs, _ = vec.reset(seed=0)
    assert obs.shape == (64, vec.single_observation_space.shape[0])
    actions = vec.action_space.sample()
    obs, reward, _terminated, _truncated, info = vec.step(actions)
    assert vec.observation_space.contains(obs)
    assert reward.shape == (64,) and np.all(np.isfinite(reward))
    assert info["latency_s"].shape == (64,) and np.all(info["latency_s"] > 0)
    assert len(set(np.round(reward, 9))) > 1  # independent users differ
    with pytest.raises(ValueError, match="actions"):
        vec.step(np.full((64, 2), 99))
    with pytest.raises(ValueError, match="actions"):
        vec.step(np.zeros((63, 2), dtype=np.int64))
    vec.close()
