"""The batched SpecDecode vector env is the single env, B times, without a Python loop per user."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest

import edgelam.envs  # noqa: F401
from edgelam.envs.spec_decode import dynamics
from edgelam.envs.spec_decode.config import BlockageConfig
from edgelam.envs.spec_decode.dynamics import (
    accepted_run,
    accepted_runs,
    batch_tables,
    blockage_loss_db,
    round_cost,
)
from edgelam.envs.spec_decode.env import SpecDecodeEnv
from edgelam.envs.spec_decode.vector import SpecDecodeVectorEnv

ENV_ID = "edgelam/SpecDecode-v0"


def _assert_info_equal(single: dict, vec: dict, t: int) -> None:
    """The single env's info equals the vector env's entry 0; keys it lacks are masked out there."""
    for key, value in single.items():
        mask = vec.get(f"_{key}")
        assert mask is None or mask[0], (t, key)
        got = vec[key][0]
        if isinstance(value, float):  # math.log2 (single) vs np.log2 (batch) may differ in the last bit
            assert got == pytest.approx(value, rel=1e-12, abs=0.0), (t, key)
        else:
            assert value == got, (t, key, value, got)
    for key in vec:
        if not key.startswith("_") and key not in single:
            assert not vec[f"_{key}"][0], (t, key)


@pytest.mark.parametrize(
    "overrides",
    [{}, {"scenario": "blockage"}, {"scenario": "device_draft"}, {"scenario": "iid"}, {"battery_j": 5.0}],
    ids=["default", "blockage_drift", "device_draft", "iid", "battery_empties"],
)
def test_one_user_vector_env_equals_the_single_env(overrides):
    """Same seed, same actions: same observations, rewards, ends and info over full episodes and resets."""
    single = SpecDecodeEnv(**overrides)
    vec = SpecDecodeVectorEnv(num_envs=1, **overrides)
    rng = np.random.default_rng(0)
    obs_s, info_s = single.reset(seed=5)
    obs_v, info_v = vec.reset(seed=5)
    assert np.array_equal(obs_s, obs_v[0])
    _assert_info_equal(info_s, info_v, -1)
    ends = 0
    for t in range(400):
        action = np.array([rng.integers(single.config.gamma_max + 1), rng.integers(single.num_variants)])
        obs_s, r_s, term_s, trunc_s, info_s = single.step(action)
        obs_v, r_v, term_v, trunc_v, info_v = vec.step(action[None])
        assert np.array_equal(obs_s, obs_v[0]), t
        assert r_v[0] == pytest.approx(r_s, rel=1e-12, abs=0.0), t
        assert (term_s, trunc_s) == (bool(term_v[0]), bool(trunc_v[0])), t
        _assert_info_equal(info_s, info_v, t)
        if term_s or trunc_s:
            ends += 1
            obs_s, info_s = single.reset()
            obs_v, r_v, term_v, trunc_v, info_v = vec.step(action[None])  # next-step autoreset
            assert np.array_equal(obs_s, obs_v[0]) and r_v[0] == 0.0 and not term_v[0] and not trunc_v[0]
            _assert_info_equal(info_s, info_v, t)
    assert ends >= 3


@pytest.mark.parametrize("overrides", [{}, {"scenario": "blockage"}], ids=["default", "blockage_drift"])
def test_one_user_equality_holds_across_blocks_of_random_numbers(monkeypatch, overrides):
    """Blocks of 7 rounds: both envs draw new blocks mid-episode at the same rounds and stay equal."""
    monkeypatch.setattr(dynamics, "BLOCK_ROUNDS", 7)
    assert SpecDecodeEnv(**overrides)._block_len == SpecDecodeVectorEnv(num_envs=1, **overrides)._block_len == 7
    test_one_user_vector_env_equals_the_single_env(overrides)


def test_reset_with_a_seed_repeats_the_batch():
    vec = SpecDecodeVectorEnv(num_envs=8, battery_j=5.0)
    actions = np.random.default_rng(1).integers(0, [9, 4], (120, 8, 2))
    runs = []
    for _ in range(2):
        obs, _ = vec.reset(seed=3)
        out = [obs]
        for a in actions:
            obs, reward, _, _, _ = vec.step(a)
            out += [obs, reward]
        runs.append(out)
    assert all(np.array_equal(x, y) for x, y in zip(*runs, strict=True))


def test_batch_spaces_and_per_user_autoreset():
    """B = 8: episodes end at different rounds; each user restarts alone on its next step."""
    b = 8
    vec = gym.make_vec(ENV_ID, num_envs=b, vectorization_mode="vector_entry_point")
    assert vec.metadata["autoreset_mode"] == gym.vector.AutoresetMode.NEXT_STEP
    obs, info = vec.reset(seed=0)
    v = vec.unwrapped.num_variants
    assert obs.shape == (b, v + 10) and vec.observation_space.contains(obs)
    rng = np.random.default_rng(0)
    ended = np.zeros(b, dtype=bool)
    lone = requests = 0
    for _ in range(600):
        obs, reward, terminated, truncated, info = vec.step(rng.integers(0, [9, v], (b, 2)))
        assert vec.observation_space.contains(obs)
        assert reward.shape == (b,) and np.all(np.isfinite(reward))
        if ended.any():
            assert np.all(reward[ended] == 0.0) and not (terminated | truncated)[ended].any()
            # a new episode: the whole first request and every request ahead, a full battery
            assert np.all(obs[ended, v + 6 : v + 9] == 1.0)
            assert np.array_equal(info["_distance_m"], ended) and np.all(info["distance_m"][ended] >= 30.0)
            if not ended.all():
                lone += 1
                assert np.array_equal(info["_latency_s"], ~ended)
                assert np.all(info["latency_s"][~ended] > 0) and np.all(reward[~ended] < 0)
        else:
            assert np.all(reward < 0) and "_latency_s" not in info
        done = info["request_done"] & info["_request_done"]
        requests += done.sum()
        assert np.all(info["tokens"][~ended] == info["accepted_tokens"][~ended] + 1)
        ended = terminated | truncated
    assert lone > 20 and requests > 100
    with pytest.raises(ValueError, match="actions"):
        vec.step(np.full((b, 2), 9))
    with pytest.raises(ValueError, match="actions"):
        vec.step(np.zeros((b, 2)))
    vec.close()


def test_partial_reset_with_a_mask():
    vec = SpecDecodeVectorEnv(num_envs=4)
    vec.reset(seed=0)
    for _ in range(5):
        vec.step(np.tile([4, 0], (4, 1)))
    mask = np.array([False, True, False, True])
    new, info = vec.reset(options={"reset_mask": mask})
    v = vec.num_variants
    assert np.all(new[mask, v + 6 : v + 9] == 1.0) and np.all(new[~mask, v + 6] < 1.0)
    assert np.array_equal(info["_distance_m"], mask)
    with pytest.raises(ValueError, match="reset_mask"):
        vec.reset(options={"reset_mask": np.zeros(4, dtype=bool)})
    with pytest.raises(ValueError, match="seed"):
        vec.reset(seed=1, options={"reset_mask": mask})


def test_lone_resets_keep_the_statistics_of_the_single_env():
    """Per-user resets give the single env's round statistics, and a new link for each episode."""
    b, action = 64, np.array([4, 1])
    vec = SpecDecodeVectorEnv(num_envs=b, battery_j=5.0)  # the battery ends episodes after ~10 rounds
    vec.reset(seed=0)
    accepted, latency, rates = [], [], []
    sums, counts = np.zeros(b), np.zeros(b)
    episode_means: list[list[float]] = [[] for _ in range(b)]
    for _ in range(300):
        _, _, term, trunc, info = vec.step(np.tile(action, (b, 1)))
        keep = info.get("_latency_s", np.ones(b, dtype=bool))
        accepted.append(info["accepted_tokens"][keep])
        latency.append(info["latency_s"][keep])
        log_rate = np.log10(info["link_rate_bps"])
        rates.append(log_rate[keep])
        sums += np.where(keep, log_rate, 0.0)
        counts += keep
        for i in np.flatnonzero(term | trunc):  # test bookkeeping, not the env's hot path
            episode_means[i].append(sums[i] / counts[i])
            sums[i] = counts[i] = 0.0
    single = SpecDecodeEnv(battery_j=5.0)
    single.reset(seed=1)
    s_acc, s_lat, s_rate = [], [], []
    episodes = 0
    while episodes < 300:
        _, _, term, trunc, info = single.step(action)
        s_acc.append(info["accepted_tokens"])
        s_lat.append(info["latency_s"])
        s_rate.append(np.log10(info["link_rate_bps"]))
        if term or trunc:
            single.reset()
            episodes += 1
    # episodes are the independent unit (distance and shadowing per episode): 6 standard errors over 300
    for v, s in ((accepted, s_acc), (latency, s_lat), (rates, s_rate)):
        v = np.concatenate(v)
        assert abs(np.mean(v) - np.mean(s)) < 6 * np.std(s) / np.sqrt(300)
    pairs = np.array([(m[j], m[j + 1]) for m in episode_means for j in range(len(m) - 1)])
    assert len(pairs) > 500
    assert abs(np.corrcoef(pairs.T)[0, 1]) < 0.2  # a stale link would correlate consecutive episodes


def test_batched_dynamics_equal_the_per_round_functions():
    """accepted_runs and round_cost on arrays give, element by element, the scalar results."""
    env = SpecDecodeEnv()
    rng = np.random.default_rng(0)
    beta = env.beta
    v, p, n = beta.shape
    g = env.config.gamma_max
    b = 500
    variant, prompt, pos = rng.integers(0, v, b), rng.integers(0, p, b), rng.integers(0, n, b)
    n_draft = np.minimum(rng.integers(0, g + 1, b), n - 1 - pos)
    variant[0], prompt[0], pos[0], n_draft[0] = v - 1, p - 1, n - 1, 0  # the very end of the table
    uniforms = rng.random((g, b)) * 0.9
    got = accepted_runs(beta, variant, prompt, pos, n_draft, uniforms)
    want = [accepted_run(list(beta[variant[i], prompt[i]]), pos[i], n_draft[i], list(uniforms[:, i])) for i in range(b)]
    assert np.array_equal(got, want) and len(set(want)) > 3
    for edge_draft in (True, False):
        t = SpecDecodeEnv(topology="edge_draft" if edge_draft else "device_draft").tables
        batch = batch_tables(t)
        gamma = rng.integers(0, g + 1, b)
        rate = 10.0 ** rng.uniform(3, 9, b)
        utils = rng.uniform(0, 0.9, (2, b))
        ergodic = rate * rng.uniform(0.5, 2.0, b)
        lat, en = round_cost(batch, gamma, variant, rate, utils[0], utils[1], ergodic)
        for i in range(b):
            one = round_cost(t, int(gamma[i]), int(variant[i]), rate[i].item(), utils[0, i].item(), utils[1, i].item(),
                             ergodic[i].item())
            assert (lat[i], en[i]) == one, i


@pytest.mark.parametrize(
    "block, want",
    [
        (BlockageConfig(2.0, 10.0, 30.0, 0.5), [0.0, 0.0, 15.0, 30.0, 30.0, 15.0, 0.0, 0.0]),
        (BlockageConfig(1.0, 3.0, 20.0), [20.0, 20.0, 20.0, 0.0, 0.0, 0.0, 0.0, 0.0]),
        (BlockageConfig(), [0.0] * 8),
    ],
    ids=["ramped", "abrupt", "none"],
)
def test_blockage_loss_is_one_function_of_a_clock_or_a_batch_of_clocks(block, want):
    """blockage_loss_db (also BlockageConfig.loss_at) ramps in and out of the window, the same on floats and arrays."""
    marks = [1.0, 2.0, 2.25, 3.0, 6.0, 9.75, 10.0, 11.0]
    assert [blockage_loss_db(block, t) for t in marks] == pytest.approx(want, abs=1e-12)
    assert all(isinstance(blockage_loss_db(block, t), float) for t in marks)
    assert [block.loss_at(t) for t in marks] == [blockage_loss_db(block, t) for t in marks]
    clock = np.concatenate([np.random.default_rng(0).uniform(0, 12, 200), marks])
    batch = blockage_loss_db(block, clock)
    assert batch.shape == clock.shape
    assert np.array_equal(batch, [blockage_loss_db(block, t) for t in clock.tolist()])


def test_bad_arguments():
    with pytest.raises(ValueError, match="num_envs"):
        SpecDecodeVectorEnv(num_envs=0)
    with pytest.raises(ValueError, match="backend"):
        SpecDecodeVectorEnv(num_envs=2, backend="live")
    with pytest.raises(ValueError, match="gamma_max"):
        SpecDecodeVectorEnv(num_envs=2, gamma_max=0)


def test_episode_length_rules_and_an_explicit_max_episode_steps_caps_it():
    """The id registers no max_episode_steps: episode_length is the episode; one passed to make_vec cuts it."""
    kwargs = {"episode_length": 300, "requests_per_episode": 1000, "battery_j": 1e9}
    plain = np.zeros((2, 2), dtype=np.int64)  # gamma = 0: one token per round, no request ends the episode
    for cap, end in ((None, 300), (256, 256)):
        extra = {} if cap is None else {"max_episode_steps": cap}
        vec = gym.make_vec(ENV_ID, num_envs=2, vectorization_mode="vector_entry_point", **kwargs, **extra)
        assert vec.episode_length == end
        vec.reset(seed=0)
        for t in range(1, end + 1):
            _, _, terminated, truncated, _ = vec.step(plain)
            assert not terminated.any() and truncated.all() == (t == end) and truncated.any() == (t == end), t
