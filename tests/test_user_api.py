"""What a new user does first with every env id: copies, SB3 and Gymnasium helpers, bad actions."""

from __future__ import annotations

import copy
import pickle

import gymnasium as gym
import numpy as np
import pytest

import edgelam.envs  # noqa: F401  (registers the ids)
from edgelam.envs.registration import GYM_ENVS, PARALLEL_ENVS, make_parallel

GYM_IDS = sorted(GYM_ENVS)
PARALLEL_IDS = sorted(PARALLEL_ENVS)


def _same(a, b) -> bool:
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, np.ndarray) or isinstance(b, np.ndarray):
        return np.array_equal(np.asarray(a), np.asarray(b))
    return a == b


def _gym_continues_alike(env_a, env_b, seed: int, steps: int = 12) -> None:
    env_a.action_space.seed(seed)
    for t in range(steps):
        action = env_a.action_space.sample()
        out_a, out_b = env_a.step(action), env_b.step(copy.deepcopy(action))
        assert all(_same(x, y) for x, y in zip(out_a, out_b, strict=True)), (t, out_a, out_b)
        if out_a[2] or out_a[3]:
            assert _same(env_a.reset(seed=seed + t), env_b.reset(seed=seed + t))


@pytest.mark.parametrize("env_id", GYM_IDS)
@pytest.mark.parametrize("clone", ["pickle", "deepcopy"])
def test_gym_env_copies_continue_the_same_trajectory(env_id, clone):
    env = gym.make(env_id)
    env.reset(seed=3)
    env.action_space.seed(3)
    for _ in range(3):
        env.step(env.action_space.sample())
    twin = pickle.loads(pickle.dumps(env)) if clone == "pickle" else copy.deepcopy(env)
    _gym_continues_alike(env, twin, seed=4)


@pytest.mark.parametrize("env_id", PARALLEL_IDS)
@pytest.mark.parametrize("clone", ["pickle", "deepcopy"])
def test_parallel_env_copies_continue_the_same_trajectory(env_id, clone):
    env = make_parallel(env_id)
    env.reset(seed=3)
    twin = pickle.loads(pickle.dumps(env)) if clone == "pickle" else copy.deepcopy(env)
    for agent in env.possible_agents:
        env.action_space(agent).seed(5)
    for t in range(8):
        actions = {a: env.action_space(a).sample() for a in env.agents}
        out_a, out_b = env.step(actions), twin.step(copy.deepcopy(actions))
        assert all(_same(x, y) for x, y in zip(out_a, out_b, strict=True)), t
        if not env.agents:
            break


# overrides that keep an episode from terminating early, so that it runs to its length
_LONG = {
    "edgelam/Offload-v0": {"battery_j": 1e6},
    "edgelam/SpecDecode-v0": {"battery_j": 1e6, "requests_per_episode": 10_000},
}


@pytest.mark.parametrize("env_id", GYM_IDS)
def test_the_scenarios_episode_length_is_the_episode_length(env_id):
    """An episode_length override longer than the default scenario's is honoured (gym.make, make_vec sync)."""
    from edgelam.envs.core.config import to_dict

    default = gym.make(env_id).unwrapped.config.episode_length
    length = default + 13
    env = gym.make(env_id, episode_length=length, **_LONG.get(env_id, {}))
    assert to_dict(env.unwrapped.config)["episode_length"] == length
    env.reset(seed=0)
    env.action_space.seed(0)
    for t in range(1, length + 1):
        _, _, terminated, truncated, _ = env.step(env.action_space.sample())
        assert not terminated and truncated == (t == length), (t, length)
    vec = gym.make_vec(env_id, num_envs=2, vectorization_mode="sync", episode_length=length, **_LONG.get(env_id, {}))
    vec.reset(seed=0)
    vec.action_space.seed(0)
    for t in range(1, length + 1):
        _, _, terminated, truncated, _ = vec.step(vec.action_space.sample())
        assert not terminated.any() and truncated.all() == (t == length) == truncated.any(), (t, length)



BAD_ACTIONS = ["edge", None, b"\x00", object(), [[1, 2], [3, 4]], float("nan"), {"a": 1}]


def _space_name(space) -> str:
    return type(space).__name__


@pytest.mark.parametrize("env_id", GYM_IDS)
@pytest.mark.parametrize("bad", BAD_ACTIONS, ids=repr)
def test_a_bad_action_names_itself_and_the_space(env_id, bad):
    env = gym.make(env_id).unwrapped
    env.reset(seed=0)
    with pytest.raises(ValueError) as err:
        env.step(bad)
    msg = str(err.value)
    assert "action" in msg and _space_name(env.action_space) in msg and repr(bad)[:20] in msg, msg


@pytest.mark.parametrize("env_id", PARALLEL_IDS)
@pytest.mark.parametrize("bad", BAD_ACTIONS, ids=repr)
def test_a_bad_agent_action_names_the_agent_and_its_space(env_id, bad):
    env = make_parallel(env_id)
    env.reset(seed=0)
    actions = {a: env.action_space(a).sample() for a in env.agents}
    victim = env.agents[-1]
    actions[victim] = bad
    with pytest.raises(ValueError) as err:
        env.step(actions)
    msg = str(err.value)
    assert victim in msg and _space_name(env.action_space(victim)) in msg and repr(bad)[:20] in msg, msg


@pytest.mark.parametrize("env_id", [i for i in GYM_IDS if GYM_ENVS[i][1]])
@pytest.mark.parametrize("bad", ["edge", None, 1.5, [[1]], float("nan")], ids=repr)
def test_a_bad_batch_of_actions_names_itself_and_the_space(env_id, bad):
    vec = gym.make_vec(env_id, num_envs=2, vectorization_mode="vector_entry_point")
    vec.reset(seed=0)
    with pytest.raises(ValueError) as err:
        vec.step(bad)
    msg = str(err.value)
    assert "actions" in msg and _space_name(vec.action_space) in msg and repr(bad)[:20] in msg, msg
    space = vec.action_space
    good = space.sample()
    good.flat[0] = space.nvec.flat[0] if hasattr(space, "nvec") else space.high.flat[0] + 1  # one past the end
    with pytest.raises(ValueError, match=rf"(?s)actions .* is not in {_space_name(space)}"):
        vec.step(good)


@pytest.mark.parametrize(
    ("env_id", "key"),
    [("edgelam/SplitInference-v0", "uplink_rate_bps"), ("edgelam/Offload-v0", "uplink_rate_bps"),
     ("edgelam/SpecDecode-v0", "link_rate_bps")],
)
def test_zero_transmit_power_reports_the_physical_rate_zero(env_id, key):
    """The 1 bit/s floor that keeps transfer times finite is internal; info reports the Shannon rate, 0."""
    env = gym.make(env_id, **{"channel.tx_power_w": 0.0})
    _, info = env.reset(seed=0)
    assert info[key] == 0.0
    env.action_space.seed(0)
    for _ in range(5):
        obs, reward, _, _, info = env.step(env.action_space.sample())
        assert info[key] == 0.0 and np.isfinite(reward) and np.all(np.isfinite(obs))
        assert np.isfinite(info["latency_s"]) and np.isfinite(info["energy_j"])
    powered = gym.make(env_id)
    _, info = powered.reset(seed=0)
    assert info[key] > 1e3


@pytest.mark.parametrize("env_id", GYM_IDS)
def test_sb3_make_vec_env_and_gym_make_vec_work(env_id):
    """SB3's make_vec_env first tries render_mode='rgb_array' (the first line of most tutorials)."""
    from stable_baselines3.common.env_util import make_vec_env

    venv = make_vec_env(env_id, n_envs=2, seed=0)
    obs = venv.reset()
    assert obs.shape == (2, *venv.observation_space.shape)
    venv.step(np.stack([venv.action_space.sample() for _ in range(2)]))
    frames = venv.get_images()
    assert len(frames) == 2 and frames[0].ndim == 3 and frames[0].shape[2] == 3
    venv.close()
    for mode in ("sync", "async"):
        vec = gym.make_vec(env_id, num_envs=2, vectorization_mode=mode)
        vec.reset(seed=0)
        vec.step(vec.action_space.sample())
        vec.close()


def _step_some(env, n: int = 6) -> None:
    if hasattr(env, "possible_agents"):
        env.reset(seed=0)
        for _ in range(n):
            env.step({a: env.action_space(a).sample() for a in env.agents})
    else:
        env.reset(seed=0)
        env.action_space.seed(0)
        for _ in range(n):
            env.step(env.action_space.sample())


def _make(env_id: str, **kwargs):
    return make_parallel(env_id, **kwargs) if env_id in PARALLEL_ENVS else gym.make(env_id, **kwargs).unwrapped


@pytest.mark.parametrize("env_id", GYM_IDS + PARALLEL_IDS)
def test_rgb_array_draws_the_recent_history(env_id):
    env = _make(env_id, render_mode="rgb_array")
    assert env.metadata["render_modes"] == ["ansi", "rgb_array"] and env.metadata["render_fps"] > 0
    env.reset(seed=0)
    empty = env.render()
    assert empty.dtype == np.uint8 and empty.ndim == 3 and empty.shape[2] == 3
    _step_some(env)
    frame = env.render()
    assert frame.shape == empty.shape
    # the lines of the history make the frame differ from the empty axes, and a reset clears them
    assert np.mean(np.any(frame != empty, axis=2)) > 0.005
    env.reset(seed=0)
    assert np.array_equal(env.render(), empty)


@pytest.mark.parametrize("env_id", GYM_IDS + PARALLEL_IDS)
def test_ansi_names_the_step_and_the_last_values(env_id):
    env = _make(env_id, render_mode="ansi")
    env.reset(seed=0)
    assert "t=0" in env.render()
    _step_some(env, 3)
    line = env.render()
    assert isinstance(line, str) and "t=3" in line and "reward=" in line and "\n" not in line
    off = _make(env_id)
    off.reset(seed=0)
    assert off.render() is None  # no render_mode: nothing is drawn (Gymnasium warns)
    with pytest.raises(ValueError, match="render_mode"):
        _make(env_id, render_mode="bogus")


@pytest.mark.parametrize("env_id", GYM_IDS)
def test_checkers_pass_with_a_render_mode(env_id):
    import warnings

    from gymnasium.utils.env_checker import check_env

    for mode in ("ansi", "rgb_array"):
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            check_env(gym.make(env_id, render_mode=mode).unwrapped, skip_render_check=False)


def test_record_video_writes_an_episode(tmp_path):
    pytest.importorskip("moviepy")
    from gymnasium.wrappers import RecordVideo

    env = RecordVideo(
        gym.make("edgelam/SplitInference-v0", render_mode="rgb_array", episode_length=8),
        str(tmp_path), episode_trigger=lambda ep: True, disable_logger=True,
    )
    env.reset(seed=0)
    done = False
    while not done:
        _, _, terminated, truncated, _ = env.step(env.action_space.sample())
        done = terminated or truncated
    env.close()
    videos = list(tmp_path.glob("*.mp4"))
    assert len(videos) == 1 and videos[0].stat().st_size > 1000


def test_pettingzoo_aec_api_test_passes_on_every_parallel_id():
    """PettingZoo's AEC api_test samples with the info's action mask, which Gymnasium wants as int8."""
    from pettingzoo.test import api_test
    from pettingzoo.utils import parallel_to_aec

    for env_id in PARALLEL_IDS:
        api_test(parallel_to_aec(make_parallel(env_id)), num_cycles=20)


@pytest.mark.parametrize("env_id", ["edgelam/MicroserviceRouting-v0"])
def test_info_mask_samples_a_valid_action(env_id):
    env = gym.make(env_id)
    _, info = env.reset(seed=0)
    assert info["action_mask"].dtype == np.int8
    for _ in range(20):
        action = env.action_space.sample(mask=info["action_mask"])
        assert env.unwrapped.action_masks()[action]
        _, _, _, _, info = env.step(action)
        assert not info["infeasible_action"]
