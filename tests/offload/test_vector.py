"""The batched Offload vector env is the single env, B times, without a Python loop per device."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest

import edgelam.envs  # noqa: F401
from edgelam.envs.offload.env import OffloadEnv
from edgelam.envs.offload.spec import SPEC
from edgelam.envs.offload.vector import OffloadVectorEnv

ENV_ID = "edgelam/Offload-v0"


def _same(single, vec_row, where) -> None:
    """A single env's value equals the vector env's row bit for bit (a float, an int, a bool or a str)."""
    if isinstance(single, float):
        assert np.float64(single).tobytes() == np.float64(vec_row).tobytes(), (where, single, vec_row)
    else:
        assert single == vec_row, (where, single, vec_row)


def _assert_info_equal(single: dict, vec: dict, t: int) -> None:
    assert [k for k in vec if not k.startswith("_")] == list(single), t
    for key, value in single.items():
        _same(value, vec[key][0], (t, key))


@pytest.mark.parametrize("scenario", SPEC.scenarios())
@pytest.mark.parametrize("overrides", [{}, {"battery_j": 40.0}, {"episode_length": 7, "budget.per_task": None}])
@pytest.mark.parametrize("seed", [7, 11])
def test_one_device_vector_env_equals_the_single_env(scenario, overrides, seed):
    """Same seed, same actions: same obs, reward, ends and info, bit for bit, across resets (and a reseed).

    A 40 J battery empties within ~60 tasks, so the episodes end by termination too.
    """
    steps = 600  # crosses block boundaries (256 tasks) and episode ends
    single = OffloadEnv(scenario=scenario, **overrides)
    vec = OffloadVectorEnv(num_envs=1, scenario=scenario, **overrides)
    rng = np.random.default_rng(seed)
    actions = rng.integers(0, 3, steps)
    obs_s, info_s = single.reset(seed=seed)
    obs_v, info_v = vec.reset(seed=seed)
    assert np.array_equal(obs_s, obs_v[0])
    _assert_info_equal(info_s, info_v, -1)
    ends = {"terminated": 0, "truncated": 0}
    for t in range(steps):
        obs_s, r_s, term_s, trunc_s, info_s = single.step(int(actions[t]))
        obs_v, r_v, term_v, trunc_v, info_v = vec.step(actions[t : t + 1])
        assert obs_s.dtype == obs_v.dtype and np.array_equal(obs_s, obs_v[0]), t
        assert type(r_s) is float and type(term_s) is bool and type(trunc_s) is bool
        _same(r_s, r_v[0], t)
        assert (term_s, trunc_s) == (bool(term_v[0]), bool(trunc_v[0])), t
        _assert_info_equal(info_s, info_v, t)
        if t == steps // 2:  # a reseed mid-episode starts both over from the same generator
            obs_s, info_s = single.reset(seed=seed + 1)
            obs_v, info_v = vec.reset(seed=seed + 1)
            assert np.array_equal(obs_s, obs_v[0])
            _assert_info_equal(info_s, info_v, t)
        elif term_s or trunc_s:
            ends["terminated" if term_s else "truncated"] += 1
            obs_s, info_s = single.reset()
            obs_v, r_v, term_v, trunc_v, info_v = vec.step(actions[t : t + 1])  # next-step autoreset
            assert np.array_equal(obs_s, obs_v[0]) and r_v[0] == 0.0 and not term_v[0] and not trunc_v[0]
            _assert_info_equal(info_s, info_v, t)
    assert ends["terminated"] + ends["truncated"] >= 2
    if "battery_j" in overrides:  # the tiers' own batteries may bind too (medium, hard)
        assert ends["terminated"] >= 2


def test_reset_with_a_seed_repeats_the_batch():
    vec = OffloadVectorEnv(num_envs=8, battery_j=40.0)
    actions = np.random.default_rng(1).integers(0, 3, (150, 8))
    runs = []
    for _ in range(2):
        obs, _ = vec.reset(seed=3)
        out = [obs]
        for a in actions:
            obs, reward, _, _, _ = vec.step(a)
            out += [obs, reward]
        runs.append(out)
    assert all(np.array_equal(x, y) for x, y in zip(*runs, strict=True))


def test_batch_spaces_and_per_device_autoreset():
    """B = 8 with a small battery: devices end at different steps, each resets alone on its next step."""
    b = 8
    vec = gym.make_vec(ENV_ID, num_envs=b, vectorization_mode="vector_entry_point", battery_j=40.0)
    assert vec.metadata["autoreset_mode"] == gym.vector.AutoresetMode.NEXT_STEP
    obs, info = vec.reset(seed=0)
    assert obs.shape == (b, 8) and vec.observation_space.contains(obs)
    assert info["distance_m"].shape == (b,)
    rng = np.random.default_rng(0)
    ended = np.zeros(b, dtype=bool)
    lone_resets = 0
    first_rate = np.full(b, np.nan)
    for _ in range(400):
        actions = rng.integers(0, 3, b)
        obs, reward, terminated, truncated, info = vec.step(actions)
        restarted_last_step = ~np.isnan(first_rate)
        # the rate a reset announced is the one its first task is sent at (on the new episode's link)
        assert np.array_equal(info["uplink_rate_bps"][restarted_last_step], first_rate[restarted_last_step])
        first_rate = np.where(ended, info["uplink_rate_bps"], np.nan)
        assert vec.observation_space.contains(obs)
        assert reward.shape == (b,) and np.all(np.isfinite(reward))
        if ended.any():
            # the devices that ended last step restart: reward 0, a fresh battery and clock
            assert np.all(reward[ended] == 0.0) and not terminated[ended].any() and not truncated[ended].any()
            assert np.all(obs[ended, 5] == 1.0) and np.all(obs[ended, 7] == 0.0)
            assert np.all(info["distance_m"][ended] >= 30.0) and np.array_equal(info["_distance_m"], ended)
            if not ended.all():
                lone_resets += 1
                stepped = ~ended
                assert np.array_equal(info["_latency_s"], stepped)
                assert np.all(info["latency_s"][stepped] > 0) and np.all(info["energy_j"][stepped] > 0)
        else:
            assert "_latency_s" not in info and np.all(info["latency_s"] > 0)
        assert np.all(info["battery_j"][~ended] >= 0.0)
        assert np.all(terminated == (info["battery_j"] <= 0.0) & ~ended)
        ended = terminated | truncated
    assert lone_resets > 10  # the devices really desynchronised
    assert len(set(np.round(reward, 9))) > 1  # independent devices differ
    with pytest.raises(ValueError, match="actions"):
        vec.step(np.full(b, 3))
    with pytest.raises(ValueError, match="actions"):
        vec.step(np.zeros(b - 1, dtype=np.int64))
    vec.close()


def test_lone_resets_keep_the_statistics_of_the_single_env():
    """Per-device resets give the single env's distribution of rates and costs, and a new link per episode."""
    b = 64
    vec = OffloadVectorEnv(num_envs=b, battery_j=40.0)  # ~60-task episodes, most resets are lone ones
    vec.reset(seed=0)
    rates, latency = [], []
    sums, counts = np.zeros(b), np.zeros(b)
    episode_means: list[list[float]] = [[] for _ in range(b)]
    for _ in range(400):
        _, _, term, trunc, info = vec.step(np.ones(b, dtype=np.int64))  # always the edge
        keep = info.get("_latency_s", np.ones(b, dtype=bool))
        log_rate = np.log10(info["uplink_rate_bps"])
        rates.append(log_rate[keep])
        latency.append(info["latency_s"][keep])
        sums += np.where(keep, log_rate, 0.0)
        counts += keep
        for i in np.flatnonzero(term | trunc):  # test bookkeeping, not the env's hot path
            episode_means[i].append(sums[i] / counts[i])
            sums[i] = counts[i] = 0.0
    single = OffloadEnv(battery_j=40.0)
    s_rates, s_latency = [], []
    single.reset(seed=1)
    for _ in range(6000):
        _, _, term, trunc, info = single.step(1)
        s_rates.append(np.log10(info["uplink_rate_bps"]))
        s_latency.append(info["latency_s"])
        if term or trunc:
            single.reset()
    # episodes are the independent unit (distance and shadowing are drawn per episode): ~100 of them
    # in the single run; 6 standard errors of the single run's mean as the tolerance
    for v, s in ((np.concatenate(rates), s_rates), (np.concatenate(latency), s_latency)):
        assert abs(np.mean(v) - np.mean(s)) < 6 * np.std(s) / np.sqrt(100)
    # a device's consecutive episodes see independent links (a stale distance or shadowing would correlate them)
    pairs = np.array([(m[j], m[j + 1]) for m in episode_means for j in range(len(m) - 1)])
    assert len(pairs) > 150
    assert abs(np.corrcoef(pairs.T)[0, 1]) < 0.3


def test_partial_reset_with_a_mask():
    """reset(options={"reset_mask": m}) starts new episodes in the rows of m only; the others are untouched."""
    vec = OffloadVectorEnv(num_envs=4)
    vec.reset(seed=0)
    for _ in range(5):
        obs_before, *_ = vec.step(np.ones(4, dtype=np.int64))
    before = vec.state.copy()
    mask = np.array([True, False, False, True])
    obs, info = vec.reset(options={"reset_mask": mask})
    assert np.all(obs[mask, 7] == 0.0) and np.all(obs[~mask, 7] == 5 / 200)
    assert np.array_equal(obs[~mask], obs_before[~mask])
    assert np.array_equal(info["_distance_m"], mask) and np.all(info["distance_m"][mask] >= 30.0)
    assert np.all(info["distance_m"][~mask] == 0.0)
    s, k = vec.state, vec.state.slot
    assert np.array_equal(info["uplink_rate_bps"], s.tasks.rate_bps[:, k])
    for f in ("step", "edge_work_s", "virtual_queue", "battery_j", "last_rtt_s", "large_scale_gain", "fading",
              "rtt_latent"):
        assert np.array_equal(getattr(s, f)[~mask], getattr(before, f)[~mask]), f
    for f in ("rate_bps", "rtt_s"):
        assert np.array_equal(getattr(s.tasks, f)[~mask], getattr(before.tasks, f)[~mask]), f
        assert np.array_equal(getattr(s.tasks, f)[mask, :k], getattr(before.tasks, f)[mask, :k]), f  # the past
        assert not np.any(getattr(s.tasks, f)[mask, k:] == getattr(before.tasks, f)[mask, k:]), f  # a new link
    assert np.array_equal(s.tasks.prompt, before.tasks.prompt)  # the tasks themselves are kept
    assert np.all(s.step[mask] == 0) and np.all(s.battery_j[mask] == vec.config.battery_j)
    assert np.all(s.virtual_queue[mask] == 0.0) and np.all(s.last_rtt_s[mask] == vec.config.wan.rtt_mean_s)
    _, _, _, _, info = vec.step(np.ones(4, dtype=np.int64))
    assert "_latency_s" not in info  # a partial reset is not an autoreset: every row steps next
    with pytest.raises(ValueError, match="reset_mask"):
        vec.reset(options={"reset_mask": np.zeros(4, dtype=bool)})
    with pytest.raises(ValueError, match="seed"):
        vec.reset(seed=1, options={"reset_mask": mask})


def test_bad_arguments():
    with pytest.raises(ValueError, match="num_envs"):
        OffloadVectorEnv(num_envs=0)
    with pytest.raises(ValueError, match="backend"):
        OffloadVectorEnv(num_envs=2, backend="live")
    with pytest.raises(ValueError, match="battery_j"):
        OffloadVectorEnv(num_envs=2, battery_j=-1.0)
