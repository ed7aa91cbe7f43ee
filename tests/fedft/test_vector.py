"""FedFTAllocation-v0's vector env and FedFTPower-v0's batched game: B rows of the one batched State.

At B = 1 they equal the single envs bit for bit across resets (every shipped scenario); the
same seed gives the same trajectory; a partial reset mask resets only its rows; the agent-row
view of the game steps with Box actions; the game takes 1,024 devices.
"""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest

import edgelam.envs  # noqa: F401  (registers the ids)
from edgelam.envs import make_parallel
from edgelam.envs.core.vector import AgentRowsVectorEnv
from edgelam.envs.fedft.dynamics import (
    Params,
    State,
    advance,
    draw_fading,
    draw_learning_noise,
    initial,
    transition,
)
from edgelam.envs.fedft.spec import ALLOCATION, POWER
from edgelam.envs.fedft.vector import FedFTAllocationVectorEnv, FedFTPowerGames
from edgelam.envs.registration import make_batched

STEPS = 65  # over two resets of the 30-round episodes


def _same(a, b) -> bool:
    a, b = np.asarray(a), np.asarray(b)
    return a.shape == b.shape and np.array_equal(a, b)


def _allocation_actions(rng: np.random.Generator, k: int) -> np.ndarray:
    a = rng.uniform(-1.0, 1.0, size=2 * k).astype(np.float32)
    if rng.random() < 0.3:
        a[rng.integers(k)] = -1.0  # a device without band
        a[k + rng.integers(k)] = -1.0  # one without power
    return a


@pytest.mark.parametrize("scenario", ALLOCATION.scenarios())
def test_vector_env_at_one_row_equals_the_single_env_across_resets(scenario):
    env = gym.make(ALLOCATION.id, scenario=scenario)
    venv = gym.make_vec(ALLOCATION.id, num_envs=1, vectorization_mode="vector_entry_point", scenario=scenario)
    rng = np.random.default_rng(3)
    obs, info = env.reset(seed=11)
    vobs, vinfo = venv.reset(seed=11)
    assert _same(vobs[0], obs) and vinfo["loss"][0] == info["loss"]
    assert _same(vinfo["distance_m"][0], info["distance_m"])
    k = env.unwrapped.fed.k
    reset_next = False
    for _ in range(STEPS):
        a = _allocation_actions(rng, k)
        vobs, vrew, vterm, vtrunc, vinfo = venv.step(a[None])
        if reset_next:  # the vector env's autoreset step is the single env's reset()
            obs, info = env.reset()
            assert _same(vobs[0], obs) and vrew[0] == 0.0 and not vterm[0] and not vtrunc[0]
            assert vinfo["loss"][0] == info["loss"] and _same(vinfo["distance_m"][0], info["distance_m"])
            reset_next = False
            continue
        obs, rew, term, trunc, info = env.step(a)
        assert _same(vobs[0], obs) and vrew[0] == rew and vterm[0] == term and vtrunc[0] == trunc
        assert set(vinfo) == set(info)
        for key, value in info.items():
            assert _same(vinfo[key][0], value), key
        reset_next = trunc


@pytest.mark.parametrize("scenario", POWER.scenarios())
def test_batched_game_of_one_game_equals_the_pettingzoo_env_across_resets(scenario):
    env = make_parallel(POWER.id, scenario=scenario)
    game = make_batched(POWER.id, num_games=1, scenario=scenario)
    rng = np.random.default_rng(5)
    obs, infos = env.reset(seed=4)
    gobs, ginfo = game.reset(seed=4)
    agents = env.possible_agents
    assert all(_same(gobs[0, i], obs[a]) and ginfo["distance_m"][0, i] == infos[a]["distance_m"]
               for i, a in enumerate(agents))
    reset_next = False
    for _ in range(STEPS):
        a = rng.uniform(-1.0, 1.0, size=(len(agents), 2)).astype(np.float32)
        a[rng.random(len(agents)) < 0.2, 0] = -1.0
        gobs, grew, gterm, gtrunc, ginfo = game.step(a[None])
        if reset_next:
            obs, infos = env.reset()
            assert np.all(grew == 0.0) and not gterm.any() and not gtrunc.any()
            assert all(_same(gobs[0, i], obs[ag]) for i, ag in enumerate(agents))
            reset_next = False
            continue
        obs, rew, term, trunc, infos = env.step({ag: a[i] for i, ag in enumerate(agents)})
        for i, ag in enumerate(agents):
            assert _same(gobs[0, i], obs[ag]) and grew[0, i] == rew[ag]
            assert gterm[0, i] == term[ag] and gtrunc[0, i] == trunc[ag]
            assert set(infos[ag]) == set(ginfo)
            for key, value in infos[ag].items():
                got = ginfo[key][0] if ginfo[key].ndim == 1 else ginfo[key][0, i]
                assert got == value, (ag, key)
        reset_next = trunc[agents[0]]


def _rollout(venv, seed: int, steps: int = 40) -> list:
    rng = np.random.default_rng(seed)
    out = [venv.reset(seed=seed)]
    for _ in range(steps):
        out.append(venv.step(rng.uniform(-1, 1, size=venv.action_space.shape).astype(np.float32)))
    return out


def _equal_trees(x, y) -> bool:
    if isinstance(x, dict):
        return set(x) == set(y) and all(_equal_trees(x[k], y[k]) for k in x)
    if isinstance(x, (tuple, list)):
        return len(x) == len(y) and all(_equal_trees(a, b) for a, b in zip(x, y, strict=True))
    return _same(x, y)


def test_same_seed_same_trajectory_and_another_seed_another():
    make = lambda: FedFTAllocationVectorEnv(num_envs=6, scenario="dense")  # noqa: E731
    first, again, other = _rollout(make(), 2), _rollout(make(), 2), _rollout(make(), 3)
    assert _equal_trees(first, again)
    assert not _same(first[5][0], other[5][0])
    # the rows are different federations, not copies of one
    assert not _same(first[0][0][0], first[0][0][1])


def test_partial_reset_mask_resets_only_its_rows():
    venv = FedFTAllocationVectorEnv(num_envs=4)
    venv.reset(seed=0)
    for _ in range(5):
        venv.step(np.zeros((4, 10), dtype=np.float32))
    before = venv.state.copy()
    mask = np.array([False, True, False, True])
    _, info = venv.reset(options={"reset_mask": mask})
    s = venv.state
    assert np.array_equal(s.step, [5, 0, 5, 0]) and np.array_equal(info["_loss"], mask)
    for name in State.__slots__:
        kept, now = getattr(before, name), getattr(s, name)
        assert np.array_equal(now[~mask], kept[~mask]), name
    assert not np.array_equal(s.distances_m[mask], before.distances_m[mask])
    assert np.all(s.queue[mask] == 0.0) and np.all(s.topic_loss[mask] == venv.params.initial_topic_loss)
    with pytest.raises(ValueError, match="reset_mask"):
        venv.reset(options={"reset_mask": np.zeros(4, dtype=bool)})
    with pytest.raises(ValueError, match="seed"):
        venv.reset(seed=1, options={"reset_mask": mask})
    # the rows reset out of step autoreset alone: rows 1 and 3 truncate 5 rounds after rows 0 and 2
    for _ in range(25):
        _, _, _, trunc, _ = venv.step(np.zeros((4, 10), dtype=np.float32))
    assert np.array_equal(trunc, [True, False, True, False])
    _, reward, _, trunc, info = venv.step(np.zeros((4, 10), dtype=np.float32))
    assert np.array_equal(venv.state.step, [0, 26, 0, 26]) and np.all(reward[[0, 2]] == 0.0)
    assert np.array_equal(info["_energy_j"], [False, True, False, True]) and np.array_equal(info["_distance_m"],
                                                                                           [True, False, True, False])


def test_partial_reset_of_the_batched_game_and_its_agent_rows():
    game = FedFTPowerGames(num_games=3)
    rows = AgentRowsVectorEnv(game)
    obs, _ = rows.reset(seed=1)
    assert obs.shape == (15, 7) and rows.action_space.shape == (15, 2)
    obs, reward, term, trunc, info = rows.step(np.ones((15, 2), dtype=np.float32))
    assert term.shape == trunc.shape == (15,) and not term.any()
    assert obs.shape == (15, 7) and reward.shape == (15,) and info["loss"].shape == (15,)
    assert np.all(info["loss"].reshape(3, 5) == info["loss"].reshape(3, 5)[:, :1])  # a game's agents share it
    mask = np.repeat([False, True, False], 5)
    rows.reset(options={"reset_mask": mask})
    assert np.array_equal(game.state.step, [1, 0, 1])
    with pytest.raises(ValueError, match="rows of a game"):
        rows.reset(options={"reset_mask": np.eye(15, dtype=bool)[0]})
    with pytest.raises(ValueError, match=r"(?s)actions .* is not in Box.*within the bounds"):
        game.step(np.full((3, 5, 2), 2.0, dtype=np.float32))


def test_vector_env_rejects_bad_actions_and_backends():
    venv = FedFTAllocationVectorEnv(num_envs=2)
    venv.reset(seed=0)
    with pytest.raises(ValueError, match="not in Box"):
        venv.step(np.full((2, 10), np.nan, dtype=np.float32))
    with pytest.raises(ValueError, match="not in Box"):
        venv.step(np.zeros((3, 10), dtype=np.float32))
    with pytest.raises(ValueError, match="replay backend only"):
        FedFTAllocationVectorEnv(num_envs=2, backend="live")
    with pytest.raises(ValueError, match="num_games"):
        FedFTPowerGames(num_games=0)


def test_transition_is_pure_and_equals_advance():
    params = Params.build(FedFTAllocationVectorEnv(num_envs=1).config)
    rng = np.random.default_rng(0)
    state, _ = initial(params, rng, 3)
    bandwidth = np.full((3, params.num_devices), params.config.bandwidth_hz / params.num_devices)
    power = np.full((3, params.num_devices), params.config.p_max_w)
    fading = draw_fading(rng, params, 3)
    noise = rng.standard_normal((3, params.num_topics))
    before = state.copy()
    after, out = transition(params, state, bandwidth, power, fading, noise)
    assert all(np.array_equal(getattr(state, f), getattr(before, f)) for f in State.__slots__)
    reward = out.reward.copy()
    moved = advance(params, state, bandwidth, power, fading, lambda m: noise)
    assert np.array_equal(moved.reward, reward)
    assert all(np.array_equal(getattr(state, f), getattr(after, f)) for f in State.__slots__)
    assert np.all(after.step == 1) and not np.array_equal(after.gains, before.gains)
    assert draw_learning_noise(rng, params, np.array([0, 2, 0])).shape == (1, params.num_topics)


def test_batched_game_takes_1024_devices():
    game = make_batched(POWER.id, num_games=2, num_devices=1024)
    obs, _ = game.reset(seed=0)
    assert obs.shape == (2, 1024, 7)
    obs, reward, _, _, info = game.step(np.ones((2, 1024, 2), dtype=np.float32))
    assert reward.shape == (2, 1024) and info["bandwidth_hz"].shape == (2, 1024)
    assert np.allclose(info["bandwidth_hz"].sum(axis=1), game.config.bandwidth_hz)
    env = make_parallel(POWER.id, num_devices=1024)
    obs, _ = env.reset(seed=0)
    assert len(obs) == 1024


def test_sb3_view_of_the_batched_game_ends_episodes_together_and_ppo_trains_on_it():
    from stable_baselines3 import PPO

    from edgelam.agents.marl import batched_vec_env

    venv = batched_vec_env(POWER.id, n_envs=2, seed=0)
    assert venv.num_envs == 10 and venv.reset().shape == (10, 7)
    rng = np.random.default_rng(0)
    for t in range(1, 31):
        _, reward, dones, infos = venv.step(rng.uniform(-1, 1, (10, 2)).astype(np.float32))
        assert reward.dtype == np.float32 and dones.all() == (t == 30) and (not dones.any() or t == 30)
    assert all("episode" in info and "terminal_observation" in info for info in infos)
    model = PPO("MlpPolicy", venv, n_steps=16, batch_size=80, n_epochs=1, seed=0, device="cpu")
    model.learn(160)
    assert model.num_timesteps >= 160
