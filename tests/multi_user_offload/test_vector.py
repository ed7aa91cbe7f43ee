"""The batched MultiUserOffload game: B games of N users, the PettingZoo env at B = 1, and its SB3 agent-row view."""

from __future__ import annotations

import numpy as np
import pytest

from edgelam.envs.core.vector import AgentRowsVectorEnv
from edgelam.envs.multi_user_offload.spec import SPEC
from edgelam.envs.multi_user_offload.vector import GAME_KEYS, MultiUserOffloadGames
from edgelam.envs.registration import make_batched, make_parallel

ENV_ID = SPEC.id
CASES = [*({"scenario": s} for s in SPEC.scenarios()), {"num_users": 1}, {"num_users": 16, "channel.fading": False}]


def _joint(env, row: np.ndarray) -> dict:
    return {a: np.int64(k) for a, k in zip(env.possible_agents, row.tolist(), strict=True)}


def _assert_infos_equal(infos: dict, info: dict, agents: list[str], t: int) -> None:
    """The PettingZoo env's per-agent dicts against game 0 of the batched game's arrays."""
    for i, agent in enumerate(agents):
        for key, value in infos[agent].items():
            got = info[key][0] if key in GAME_KEYS else info[key][0, i]
            assert value == got, (t, agent, key, value, got)


@pytest.mark.parametrize("kwargs", CASES, ids=str)
def test_one_game_equals_the_parallel_env_bit_for_bit_across_resets(kwargs):
    """Same seed, same actions and splits: same observations, rewards, ends and infos, resets included."""
    kwargs = {**kwargs, "episode_length": 25}
    env = make_parallel(ENV_ID, **kwargs)
    game = make_batched(ENV_ID, num_games=1, **kwargs)
    n = env.n
    rng = np.random.default_rng(0)
    obs, infos = env.reset(seed=11)
    g_obs, g_info = game.reset(seed=11)
    ends = 0
    for t in range(90):
        assert np.array_equal(g_obs[0], np.stack([obs[a] for a in env.possible_agents])), t
        actions = rng.integers(0, 3, size=(1, n))
        if t % 7 == 3:  # a controller's split (every other time infeasible for user 0) on both
            band, compute = rng.dirichlet(np.ones(n)) * 0.99, rng.dirichlet(np.ones(n)) * 0.99
            band[0] *= t % 14 == 3
            game.set_allocation(band[None], compute[None])
            if env.agents:
                env.set_allocation(band, compute)
        g_obs, g_reward, g_term, g_trunc, g_info = game.step(actions)
        if not env.agents:  # the game's next-step autoreset is the env's reset() without a seed
            obs, infos = env.reset()
            assert np.array_equal(g_info["distance_m"][0], [infos[a]["distance_m"] for a in env.possible_agents])
            assert not g_reward.any() and not g_term.any() and not g_trunc.any()
            ends += 1
            continue
        obs, rewards, terms, truncs, infos = env.step(_joint(env, actions[0]))
        assert g_reward[0].tolist() == [rewards[a] for a in env.possible_agents], t
        assert g_term[0].tolist() == [terms[a] for a in env.possible_agents], t
        assert g_trunc[0].tolist() == [truncs[a] for a in env.possible_agents], t
        _assert_infos_equal(infos, g_info, env.possible_agents, t)
        assert set(g_info) == set(infos[env.possible_agents[0]])
    assert ends == 3


def _rollout(game: MultiUserOffloadGames, seed: int, steps: int) -> list:
    rng = np.random.default_rng(seed)
    out = [game.reset(seed=seed)]
    for _ in range(steps):
        out.append(game.step(rng.integers(0, 3, size=(game.num_games, game.num_agents))))
    return out


def _same(a, b) -> bool:
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b, strict=True))
    return np.array_equal(a, b)


def test_same_seed_same_trajectory_and_seeds_differ():
    game = make_batched(ENV_ID, num_games=8, episode_length=10)
    first = _rollout(game, 3, 35)
    assert _same(first, _rollout(make_batched(ENV_ID, num_games=8, episode_length=10), 3, 35))
    assert _same(first, _rollout(game, 3, 35))  # reset(seed) reseeds everything
    assert not _same(first, _rollout(game, 4, 35))
    # the games of a batch are different games
    obs = first[1][0]
    assert not np.array_equal(obs[0], obs[1])


def test_partial_reset_and_autoreset_of_some_games():
    game = make_batched(ENV_ID, num_games=4, episode_length=5)
    game.reset(seed=0)
    actions = np.ones((4, game.num_agents), dtype=np.int64)
    for _ in range(2):
        game.step(actions)
    before = game.state
    mask = np.array([False, True, False, False])
    obs, info = game.reset(options={"reset_mask": mask})
    assert info["_distance_m"].tolist() == mask.tolist() and (info["distance_m"][1] >= 30).all()
    assert not info["distance_m"][~mask].any()
    assert game.state.step.tolist() == [2, 0, 2, 2]
    for name in ("battery_j", "prompt", "spectral_eff", "fading", "cloud_rtt_s"):
        assert np.array_equal(getattr(game.state, name)[~mask], getattr(before, name)[~mask]), name
    assert obs[1, :, 7].tolist() == [0.0] * game.num_agents  # elapsed fraction of a new episode
    # games 0, 2, 3 end after 3 more slots, game 1 after 5: each autoresets on the step after its end
    ended = []
    for t in range(6):
        _, reward, term, trunc, info = game.step(actions)
        ended.append(trunc[:, 0].tolist())
        assert not term.any()
        if t == 3:  # the step after games 0, 2, 3 ended
            assert info["_latency_s"].tolist() == [False, True, False, False]
            assert info["_distance_m"].tolist() == [True, False, True, True]
            assert not reward[[0, 2, 3]].any() and reward[1].all()
            assert game.state.step.tolist() == [0, 4, 0, 0]
    assert ended[2] == [True, False, True, True] and ended[4] == [False, True, False, False]
    with pytest.raises(ValueError, match="reset_mask"):
        game.reset(options={"reset_mask": np.zeros(4, dtype=bool)})
    with pytest.raises(ValueError, match="seed"):
        game.reset(seed=1, options={"reset_mask": mask})


def test_bad_arguments():
    with pytest.raises(ValueError, match="num_games"):
        make_batched(ENV_ID, num_games=0)
    with pytest.raises(ValueError, match="backend"):
        make_batched(ENV_ID, backend="live")
    with pytest.raises(ValueError, match="num_users"):
        make_batched(ENV_ID, num_users=1025)
    with pytest.raises(ValueError, match="no batched parallel game"):
        make_batched("edgelam/SplitInference-v0")  # a Gymnasium id: its batch is a vector env
    game = make_batched(ENV_ID, num_games=2)
    game.reset(seed=0)
    with pytest.raises(ValueError, match="actions"):
        game.step(np.full((2, game.num_agents), 3))
    with pytest.raises(ValueError, match="actions"):
        game.step(np.zeros(game.num_agents, dtype=np.int64))
    with pytest.raises(ValueError, match="band_share"):
        game.set_allocation(np.ones((2, game.num_agents)), np.zeros((2, game.num_agents)))


def test_a_thousand_users_per_game():
    """num_users = 1,024 (the cap): the split stays a partition of each game's band."""
    game = make_batched(ENV_ID, num_games=2, num_users=1024)
    obs, _ = game.reset(seed=0)
    assert obs.shape == (2, 1024, 8)
    _, reward, _, _, info = game.step(np.random.default_rng(0).integers(0, 3, size=(2, 1024)))
    assert np.isfinite(reward).all()
    np.testing.assert_allclose(info["band_share"].sum(axis=1), 1.0)
    assert game.observation_space("user_0").contains(obs[0, 0])


def test_agent_rows_are_the_games_arrays_row_by_row():
    game = make_batched(ENV_ID, num_games=3, episode_length=4)
    twin = make_batched(ENV_ID, num_games=3, episode_length=4)
    rows = AgentRowsVectorEnv(twin)
    n = game.num_agents
    assert rows.num_envs == 3 * n and rows.single_action_space == game.single_action_space
    g_obs, g_info = game.reset(seed=2)
    r_obs, r_info = rows.reset(seed=2)
    assert np.array_equal(r_obs, g_obs.reshape(3 * n, 8))
    assert np.array_equal(r_info["distance_m"], g_info["distance_m"].ravel())
    rng = np.random.default_rng(0)
    for _ in range(6):
        a = rng.integers(0, 3, size=(3, n))
        g = game.step(a)
        r = rows.step(a.ravel())
        for x, y in zip(r[:4], g[:4], strict=True):
            assert np.array_equal(x, y.reshape(3 * n, *y.shape[2:]))
        if "global_reward" in g[4]:
            assert np.array_equal(r[4]["global_reward"], np.repeat(g[4]["global_reward"], n))
    half = np.zeros(3 * n, dtype=bool)
    half[0] = True
    with pytest.raises(ValueError, match="reset together"):
        rows.reset(options={"reset_mask": half})
    whole = np.zeros(3 * n, dtype=bool)
    whole[n : 2 * n] = True
    obs, info = rows.reset(options={"reset_mask": whole})
    assert info["_distance_m"].tolist() == whole.tolist() and obs.shape == (3 * n, 8)


def test_sb3_view_of_one_game_equals_supersuit_bit_for_bit():
    """The batched SB3 view and SuperSuit's, one copy, same seed: the rows parameter sharing trains on."""
    from edgelam.agents.marl import batched_vec_env, parallel_vec_env

    batched = batched_vec_env(ENV_ID, 1, seed=5, env_kwargs={"episode_length": 7})
    supersuit = parallel_vec_env(lambda: make_parallel(ENV_ID, episode_length=7), 1, seed=5)
    assert batched.num_envs == supersuit.num_envs == 4
    assert np.array_equal(batched.reset(), supersuit.reset())
    rng = np.random.default_rng(1)
    ends = 0
    for _ in range(30):
        actions = rng.integers(0, 3, size=4)
        obs_b, rew_b, done_b, info_b = batched.step(actions)
        obs_s, rew_s, done_s, info_s = supersuit.step(actions)
        assert np.array_equal(obs_b, obs_s) and rew_b.dtype == rew_s.dtype and np.array_equal(rew_b, rew_s)
        assert np.array_equal(done_b, done_s)
        if done_b.any():
            ends += 1
            for b, s in zip(info_b, info_s, strict=True):
                assert np.array_equal(b["terminal_observation"], s["terminal_observation"])
                assert b["episode"]["l"] == s["episode"]["l"] == 7
                assert b["episode"]["r"] == pytest.approx(float(s["episode"]["r"]), abs=1e-5)
    assert ends == 4
    batched.close()
    supersuit.close()


def test_ppo_trains_on_the_batched_view():
    from stable_baselines3 import PPO

    from edgelam.agents.marl import batched_vec_env

    venv = batched_vec_env(ENV_ID, 4, seed=0, env_kwargs={"episode_length": 20})
    assert venv.num_envs == 16
    model = PPO("MlpPolicy", venv, n_steps=32, batch_size=128, n_epochs=1, seed=0, device="cpu",
                policy_kwargs={"net_arch": [16]})
    model.learn(total_timesteps=1024)
    assert model.num_timesteps >= 1024
    assert len(model.ep_info_buffer) > 0  # finished episodes were recorded per agent row
    venv.close()
