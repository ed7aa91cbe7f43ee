"""MicroserviceRouting-v0 on one batched State: the vector env is the single env, B times, bit for bit."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest

import edgelam.envs  # noqa: F401
from edgelam.agents.vec import SB3VectorAdapter
from edgelam.envs.microservice_routing import dynamics
from edgelam.envs.microservice_routing.env import MicroserviceRoutingEnv
from edgelam.envs.microservice_routing.spec import SPEC
from edgelam.envs.microservice_routing.vector import STEP_KEYS, MicroserviceRoutingVectorEnv

ENV_ID = SPEC.id
# short episodes, users that hand over often (their ring walk wraps both ways), and a hot spot
VARIANTS = [
    {"scenario": s} for s in SPEC.scenarios()
] + [
    {"episode_length": 37, "demand.num_users": 3, "demand.handover_rate_hz": 30.0},
    {"scenario": "migration", "episode_length": 120, "migration.budget_j_per_step": 0.0, "demand.hotspot_cell": 2},
]


def _actions(rng: np.random.Generator, mask: np.ndarray) -> int:
    """A valid action, or one past the mask (projected and penalised) one time in five."""
    if rng.random() < 0.8:
        return int(rng.choice(np.flatnonzero(mask)))
    return int(rng.integers(len(mask)))


def _assert_info_equal(single: dict, vec: dict, t: int) -> None:
    assert set(single) <= set(vec), (t, set(single) ^ set(vec))
    for key, value in single.items():
        assert np.array_equal(value, vec[key][0]), (t, key, value, vec[key])


@pytest.mark.parametrize("kwargs", VARIANTS, ids=repr)
def test_one_row_vector_env_equals_the_single_env_across_resets(kwargs):
    """Same seed, same actions: same obs, reward, ends, info and action masks, bit for bit, across resets
    and blocks of drawn arrivals (256 each: the default episode of 400 steps uses more than 100)."""
    steps = 1000
    single = gym.make(ENV_ID, **kwargs)
    vec = gym.make_vec(ENV_ID, num_envs=1, vectorization_mode="vector_entry_point", **kwargs)
    rng = np.random.default_rng(0)
    obs_s, info_s = single.reset(seed=11)
    obs_v, info_v = vec.reset(seed=11)
    assert np.array_equal(obs_s, obs_v[0])
    _assert_info_equal(info_s, info_v, -1)
    resets = 0
    for t in range(steps):
        mask = single.unwrapped.action_masks()
        assert np.array_equal(mask, vec.unwrapped.action_masks()[0]), t
        a = _actions(rng, mask)
        obs_s, r_s, term_s, trunc_s, info_s = single.step(a)
        obs_v, r_v, term_v, trunc_v, info_v = vec.step(np.array([a]))
        assert np.array_equal(obs_s, obs_v[0]), t
        assert r_s == r_v[0] and type(r_s) is float, t
        assert (term_s, trunc_s) == (bool(term_v[0]), bool(trunc_v[0])), t
        _assert_info_equal(info_s, info_v, t)
        if term_s or trunc_s:
            resets += 1
            obs_s, info_s = single.reset()
            obs_v, r_v, term_v, trunc_v, info_v = vec.step(np.array([a]))  # next-step autoreset
            assert np.array_equal(obs_s, obs_v[0]) and r_v[0] == 0.0 and not term_v[0] and not trunc_v[0]
            _assert_info_equal(info_s, info_v, t)
    assert resets >= 2


def test_same_seed_same_trajectory_and_seeds_differ():
    vec = MicroserviceRoutingVectorEnv(num_envs=8, scenario="migration")
    actions = np.random.default_rng(1).integers(0, 8, (500, 8))
    runs = []
    for seed in (3, 3, 4):
        obs, _ = vec.reset(seed=seed)
        out = [obs]
        for a in actions:
            obs, reward, _, _, _ = vec.step(a)
            out += [obs, reward, vec.state.virtual_queue.copy(), vec.action_masks()]
        runs.append(out)
    assert all(np.array_equal(x, y) for x, y in zip(runs[0], runs[1], strict=True))
    assert not all(np.array_equal(x, y) for x, y in zip(runs[0], runs[2], strict=True))
    assert len({tuple(o.tolist()) for o in runs[0][-4]}) == 8  # the rows are independent clusters


def test_partial_reset_and_autoreset_of_some_rows():
    """Rows desynchronised by a partial reset end at different steps; each resets alone on its next step."""
    b, length = 6, 30
    vec = gym.make_vec(ENV_ID, num_envs=b, vectorization_mode="vector_entry_point", episode_length=length)
    assert vec.metadata["autoreset_mode"] == gym.vector.AutoresetMode.NEXT_STEP
    obs, info = vec.reset(seed=0)
    assert obs.shape == (b, vec.single_observation_space.shape[0]) and vec.observation_space.contains(obs)
    assert info["action_mask"].shape == (b, 4) and info["action_mask"].dtype == np.int8
    rng = np.random.default_rng(0)
    for _ in range(7):
        vec.step(rng.integers(0, 4, b))
    mask = np.array([True, False, True, False, False, True])
    obs, info = vec.reset(options={"reset_mask": mask})
    assert np.all(obs[mask, -1] == 0.0) and np.all(obs[~mask, -1] == np.float32(7 / length))
    assert np.array_equal(info["_action_mask"], mask)
    assert np.all(vec.unwrapped.state.step[mask] == 0) and np.all(vec.unwrapped.state.free_at_s[mask] == 0.0)
    ended = np.zeros(b, dtype=bool)
    lone = 0
    for _ in range(3 * length):
        obs, reward, terminated, truncated, info = vec.step(rng.integers(0, 4, b))
        assert vec.observation_space.contains(obs) and not terminated.any()
        if ended.any():
            assert np.all(reward[ended] == 0.0) and not truncated[ended].any()
            assert np.all(obs[ended, -1] == 0.0)  # the new episode's first observation
            if not ended.all():
                lone += 1
                for key in STEP_KEYS:
                    assert np.array_equal(info[f"_{key}"], ~ended), key
                assert np.all(info["latency_s"][~ended] > 0.0)
        else:
            assert "_latency_s" not in info and np.all(info["latency_s"] > 0.0)
        assert np.array_equal(info["action_mask"].astype(bool), vec.unwrapped.action_masks())
        ended = truncated
    assert lone >= 4
    with pytest.raises(ValueError, match="reset_mask"):
        vec.reset(options={"reset_mask": np.zeros(b, dtype=bool)})
    with pytest.raises(ValueError, match="seed"):
        vec.reset(seed=1, options={"reset_mask": mask})


def test_max_episode_steps_of_make_vec_caps_the_episode():
    vec = gym.make_vec(ENV_ID, num_envs=2, vectorization_mode="vector_entry_point", max_episode_steps=5)
    vec.reset(seed=0)
    ends = [vec.step(np.zeros(2, dtype=np.int64))[3].tolist() for _ in range(5)]
    assert ends == [[False, False]] * 4 + [[True, True]]


def test_bad_arguments():
    with pytest.raises(ValueError, match="num_envs"):
        MicroserviceRoutingVectorEnv(num_envs=0)
    with pytest.raises(ValueError, match="backend"):
        MicroserviceRoutingVectorEnv(num_envs=2, backend="live")
    with pytest.raises(ValueError, match="slo_s"):
        MicroserviceRoutingVectorEnv(num_envs=2, slo_s=-1.0)
    vec = MicroserviceRoutingVectorEnv(num_envs=2)
    vec.reset(seed=0)
    with pytest.raises(ValueError, match="actions"):
        vec.step(np.array([0, 4]))


def test_baselines_lookahead_is_what_the_step_reserves():
    """finish_times_s (what greedy and Lyapunov compare) is the finish time the step then writes into free_at_s."""
    for kwargs in ({}, {"scenario": "migration"}):
        env = MicroserviceRoutingEnv(**kwargs)
        env.reset(seed=2)
        rng = np.random.default_rng(2)
        k = env.tables.num_servers
        for _ in range(300):
            a = _actions(rng, env.action_masks())
            migrate = a >= k
            before = env.state.copy()
            want = dynamics.finish_times_s(env.params, before, migrate=migrate)[0, a % k]
            _, _, _, truncated, info = env.step(a)
            if not info["infeasible_action"]:
                assert env.state.free_at_s[0, a % k] == want
            if truncated:
                env.reset()


def test_transition_is_pure_and_advance_is_its_in_place_form():
    env = MicroserviceRoutingVectorEnv(num_envs=4, scenario="migration")
    env.reset(seed=5)
    params, state = env.params, env.state
    for t in range(200):
        actions = np.random.default_rng(t).integers(0, 8, 4)
        kept = state.copy()
        after, reward, info = dynamics.transition(params, state, actions, np.random.default_rng(t))
        for f in dynamics.State.__slots__:
            x, y = getattr(state, f), getattr(kept, f)
            if f == "arrivals":
                assert all(np.array_equal(getattr(x, g), getattr(y, g)) for g in dynamics.Exogenous.__slots__)
            else:
                assert np.array_equal(x, y), f
        out = dynamics.advance(params, state, actions, np.random.default_rng(t))
        assert np.array_equal(out.reward, reward) and np.array_equal(state.free_at_s, after.free_at_s)
        assert all(np.array_equal(v, out.info(state)[k]) for k, v in info.items())


def test_one_row_handover_draws_are_the_batch_draws():
    intensity = np.array([0.7, 0.0, 2.5, 14.0])
    for rows in (np.array([0]), np.array([2]), np.array([3])):
        one = dynamics.handover_steps(np.random.default_rng(9), intensity[rows], np.array([0]))
        batch = dynamics.handover_steps(np.random.default_rng(9), intensity, rows)
        assert one[0] == batch[rows[0]] and np.all(np.delete(batch, rows) == 0)
    steps = dynamics.handover_steps(np.random.default_rng(0), np.full(20_000, 3.0), np.arange(20_000))
    assert abs(steps.mean()) < 0.05 and abs(steps.var() - 3.0) < 0.15  # +-1 steps at Poisson(3) times


def test_sb3_adapter_gives_each_env_its_mask_and_maskable_ppo_trains():
    from sb3_contrib import MaskablePPO
    from sb3_contrib.common.maskable.utils import get_action_masks

    from edgelam.agents.train import make_train_env

    venv = make_train_env(ENV_ID, "maskable_ppo", "migration", None, 4, seed=0, vectorized=True)
    assert isinstance(venv, SB3VectorAdapter)
    venv.reset()
    masks = get_action_masks(venv)
    assert masks.shape == (4, 8) and np.array_equal(masks, venv.venv.action_masks())
    model = MaskablePPO("MlpPolicy", venv, n_steps=32, batch_size=64, n_epochs=1, seed=0, device="cpu")
    model.learn(256)
    obs = venv.reset()
    for _ in range(50):
        masks = get_action_masks(venv)
        actions, _ = model.predict(obs, action_masks=masks)
        assert np.all(masks[np.arange(4), actions])
        obs, _, _, _ = venv.step(actions)
