"""The batched SpecDecode vector env is the single env, B times, without a Python loop per user."""

from __future__ import annotations

from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest

import edgelam.envs  # noqa: F401
from edgelam.envs.spec_decode import dynamics
from edgelam.envs.spec_decode.config import BlockageConfig
from edgelam.envs.spec_decode.dynamics import accepted_run, blockage_loss_db, round_cost
from edgelam.envs.spec_decode.env import SpecDecodeEnv
from edgelam.envs.spec_decode.vector import SpecDecodeVectorEnv

ENV_ID = "edgelam/SpecDecode-v0"
SCENARIOS = sorted(p.stem for p in (Path(__file__).parents[2] / "configs" / "scenarios" / "spec_decode").glob("*.yaml"))


def _assert_info_equal(single: dict, vec: dict, t: int) -> None:
    """The single env's info equals the vector env's entry 0 bit for bit; keys it lacks are masked out there."""
    for key, value in single.items():
        mask = vec.get(f"_{key}")
        assert mask is None or mask[0], (t, key)
        got = vec[key][0]
        assert value == got and type(got.item() if isinstance(got, np.generic) else got) is type(value), (t, key)
    for key in vec:
        if not key.startswith("_") and key not in single:
            assert not vec[f"_{key}"][0], (t, key)


@pytest.mark.parametrize(
    "overrides",
    [{"scenario": s} for s in SCENARIOS] + [{"battery_j": 5.0}, {"scenario": "iid", "drift_mps": -3.0}],
    ids=[*SCENARIOS, "battery_empties", "iid_drift"],
)
def test_one_user_vector_env_equals_the_single_env(overrides):
    """Same seed, same actions: the same observations, rewards, ends and info, bit for bit, over full episodes and
    resets, for every shipped scenario (both run the one compiled round)."""
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
        assert r_v[0] == r_s and type(r_s) is float, t
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
    before = vec.state.copy()
    new, info = vec.reset(options={"reset_mask": mask})
    # the other users keep their episode (requests, position, battery, queue, clock, acceptance estimates)
    after = vec.state
    assert np.array_equal(after.count[~mask], before.count[~mask])
    for name in ("battery_j", "virtual_queue", "clock_s", "ema", "distance_m"):
        assert np.array_equal(getattr(after, name)[~mask], getattr(before, name)[~mask]), name
        assert not np.array_equal(getattr(after, name)[mask], getattr(before, name)[mask]), name
    assert np.all(after.round[mask] == 0) and np.all(after.clock_s[mask] == 0.0)
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


def test_the_compiled_round_prices_and_accepts_as_the_per_round_functions():
    """The state after a vector step holds what round_cost and accepted_run (the baselines' functions) give."""
    for topology in ("edge_draft", "device_draft"):
        vec = SpecDecodeVectorEnv(num_envs=64, topology=topology)
        vec.reset(seed=4)
        rng = np.random.default_rng(0)
        seen = set()
        for _ in range(30):
            s = vec.state
            before = {name: getattr(s, name).copy() for name in ("rate_bps", "ergodic_rate_bps", "edge_util",
                                                                  "device_util", "pos", "prompt", "uniforms")}
            actions = rng.integers(0, [vec.config.gamma_max + 1, vec.num_variants], (64, 2))
            info = vec.step(actions)[4]
            stepped = info.get("_latency_s", np.ones(64, dtype=bool))
            for i in np.flatnonzero(stepped):
                n = min(int(actions[i, 0]), vec.config.tokens_per_request - int(before["pos"][i]) - 1)
                want = accepted_run(list(vec.beta[actions[i, 1], before["prompt"][i]]), int(before["pos"][i]), n,
                                    list(before["uniforms"][i]))
                assert info["accepted_tokens"][i] == want and info["proposed_tokens"][i] == n
                seen.add(want)
                lat, en = round_cost(vec.tables, n, int(actions[i, 1]), before["rate_bps"][i].item(),
                                     before["edge_util"][i].item(), before["device_util"][i].item(),
                                     before["ergodic_rate_bps"][i].item())
                assert (info["latency_s"][i], info["energy_j"][i]) == (lat, en), i
        assert len(seen) > 3


def test_transition_is_pure_and_equals_the_in_place_step():
    """dynamics.transition leaves its state untouched and gives the vector env's step for the same draws."""
    vec = SpecDecodeVectorEnv(num_envs=16)
    vec.reset(seed=2)
    actions = np.random.default_rng(3).integers(0, [9, 4], (16, 2))
    snapshot = vec.state.copy()
    rng = np.random.default_rng(7)
    after, reward, cost, info = dynamics.transition(vec.params, vec.state, actions, rng)
    assert np.array_equal(vec.state.real, snapshot.real) and np.array_equal(vec.state.count, snapshot.count)
    vec.np_random = np.random.default_rng(7)
    _, r, _, _, vinfo = vec.step(actions)
    assert np.array_equal(r, reward) and np.array_equal(vinfo["energy_j"], cost)
    assert np.array_equal(vec.state.real, after.real) and np.array_equal(vec.state.count, after.count)
    assert np.array_equal(info["tokens"], vinfo["tokens"])
    obs = dynamics.observation(vec.params, after)
    assert obs.shape == (16, vec.num_variants + 10) and vec.single_observation_space.contains(obs[0])


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
