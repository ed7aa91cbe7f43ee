"""The batched RobustRouting game: B router-vs-adversary games, the PettingZoo env at B = 1, one side's SB3 view."""

from __future__ import annotations

import numpy as np
import pytest

from edgelam.envs.microservice_routing.dynamics import initial
from edgelam.envs.registration import make_batched, make_parallel
from edgelam.envs.robust_routing.dynamics import STEP_KEYS, AdversaryParams, apply_adversary
from edgelam.envs.robust_routing.kernels import pairwise_sum
from edgelam.envs.robust_routing.spec import SPEC
from edgelam.envs.robust_routing.vector import OneSideVectorEnv, RobustRoutingGames

ENV_ID = SPEC.id
CASES = [
    *({"scenario": s} for s in SPEC.scenarios()),
    {"adversary.cell_budget": 0.0, "demand.hotspot_cell": 2},
    {"adversary.mix_budget": 1.0, "adversary.rate_budget": 0.99, "adversary.cell_budget": 1.0,
     "demand.arrival_rate_hz": 30.0},
]


def _adversary_action(rng: np.random.Generator, dim: int, t: int) -> np.ndarray:
    """Random logits beyond the bounds (clipped inside), and now and then all +1 or all -1."""
    a = rng.uniform(-1.4, 1.4, size=dim).astype(np.float32)
    if t % 11 == 2:
        a[:] = 1.0
    elif t % 13 == 5:
        a[:] = -1.0
    return a


def _same(a, b) -> bool:
    """Equal bit for bit: arrays (dtype included) and numbers (type included), recursively."""
    if isinstance(a, dict):
        return isinstance(b, dict) and a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, np.ndarray):
        return isinstance(b, np.ndarray) and a.dtype == b.dtype and np.array_equal(a, b)
    return type(a) is type(b) and a == b


def _row0(per_agent: dict) -> dict:
    """Game 0 of the game's per-agent arrays, as the env's per-agent values."""
    out = {}
    for agent, value in per_agent.items():
        if isinstance(value, dict):
            out[agent] = {k: _scalar(v[0]) for k, v in value.items()}
        else:
            out[agent] = _scalar(value[0])
    return out


def _scalar(v):
    return v.item() if isinstance(v, np.generic) else v


@pytest.mark.parametrize("seed", [5, 17])
@pytest.mark.parametrize("kwargs", CASES, ids=str)
def test_one_game_equals_the_parallel_env_bit_for_bit_across_resets(kwargs, seed):
    """Same seed, same actions: same observations, rewards, ends and infos (values and types), resets included."""
    kwargs = {**kwargs, "episode_length": 23}
    env = make_parallel(ENV_ID, **kwargs)
    game = make_batched(ENV_ID, num_games=1, **kwargs)
    k, dim = env.action_space("router").n, env.action_space("adversary").shape[0]
    rng = np.random.default_rng(seed)
    obs, infos = env.reset(seed=seed)
    g_obs, g_infos = game.reset(seed=seed)
    assert _same(_row0(g_obs), obs) and _same(_row0(g_infos), infos)
    ends = 0
    for t in range(100):
        if t == 60:  # a reseed mid-episode reseeds both alike
            obs, infos = env.reset(seed=seed + 1)
            g_obs, g_infos = game.reset(seed=seed + 1)
            assert _same(_row0(g_obs), obs) and _same(_row0(g_infos), infos)
        route, push = int(rng.integers(k)), _adversary_action(rng, dim, t)  # some routes infeasible
        g_out = game.step({"router": np.array([route]), "adversary": push[None]})
        if not env.agents:  # the game's next-step autoreset is the env's reset() without a seed
            obs, infos = env.reset()
            g_obs, g_rewards, g_terms, g_truncs, g_infos = g_out
            assert _same(_row0(g_obs), obs) and _same(_row0(g_infos), infos), t
            assert not any(g_rewards[a].any() or g_terms[a].any() or g_truncs[a].any() for a in env.possible_agents)
            ends += 1
            continue
        out = env.step({"router": route, "adversary": push})
        for got, want in zip(g_out, out, strict=True):
            assert _same(_row0(got), want), (t, want, got)
    assert ends == 3


def test_apply_adversary_is_the_same_per_game_at_any_batch_size_and_keeps_the_budget():
    """Rows of a batch get what each gets alone; mix within total variation mix_budget of the base; rate bounded."""
    env = make_parallel(ENV_ID, **{"adversary.mix_budget": 0.4, "adversary.rate_budget": 0.5})
    adv = AdversaryParams.build(env.config, env.params)
    rng = np.random.default_rng(3)
    actions = rng.uniform(-3.0, 3.0, size=(64, adv.action_dim))
    batch = initial(env.params, np.random.default_rng(0), 64)
    apply_adversary(adv, batch, actions)
    for b in range(0, 64, 7):
        one = initial(env.params, np.random.default_rng(0), 1)
        apply_adversary(adv, one, actions[b : b + 1].copy())
        for name in ("rate_hz", "mix", "override_prob", "override_cells"):
            assert np.array_equal(getattr(one, name)[0], getattr(batch, name)[b]), (b, name)
    tv = 0.5 * np.abs(batch.mix - env.params.base_mix).sum(axis=1)
    assert (tv <= 0.4 + 1e-12).all() and tv.max() > 0.1
    assert np.allclose(batch.mix.sum(axis=1), 1.0) and np.allclose(batch.override_cells.sum(axis=1), 1.0)
    rate = env.config.demand.arrival_rate_hz
    assert batch.rate_hz.min() >= rate * 0.5 and batch.rate_hz.max() <= rate * 1.5
    clipped = np.clip(actions[:, adv.num_pipelines], -1.0, 1.0)
    assert np.array_equal(batch.rate_hz, rate * (1.0 + 0.5 * clipped))
    assert (batch.override_prob == env.config.adversary.cell_budget).all()
    # all cell logits equal but the first: the first cell is the most likely
    push = np.zeros((1, adv.action_dim))
    push[0, adv.num_pipelines + 1] = 1.0
    apply_adversary(adv, batch, np.repeat(push, 64, axis=0))
    assert (batch.override_cells.argmax(axis=1) == 0).all()


@pytest.mark.parametrize("n", [*range(0, 20), 127, 128, 129, 136, 300, 1000, 4099])
def test_pairwise_sum_is_numpys_sum(n):
    """The softmax's compiled sums add in numpy's order (what the v0 env's numpy softmax did)."""
    rng = np.random.default_rng(n)
    for _ in range(20):
        x = rng.uniform(0.0, 1.0, n + 3) * 10.0 ** rng.uniform(-8.0, 8.0, n + 3)  # magnitudes far apart
        assert pairwise_sum(x, 3, n) == x[3:].sum()


def _rollout(game: RobustRoutingGames, seed: int, steps: int) -> list:
    rng = np.random.default_rng(seed)
    b, k, dim = game.num_games, game.action_space("router").n, game.action_space("adversary").shape[0]
    out = [game.reset(seed=seed)]
    for _ in range(steps):
        out.append(game.step({"router": rng.integers(k, size=b), "adversary": rng.uniform(-1, 1, (b, dim))}))
    return out


def test_same_seed_same_trajectory_and_seeds_differ():
    game = make_batched(ENV_ID, num_games=6, episode_length=9)
    first = _rollout(game, 3, 30)
    assert _same(first, _rollout(make_batched(ENV_ID, num_games=6, episode_length=9), 3, 30))
    assert _same(first, _rollout(game, 3, 30))  # reset(seed) reseeds everything
    assert not _same(first, _rollout(game, 4, 30))
    obs = first[1][0]["router"]
    assert not np.array_equal(obs[0], obs[1])  # the games of a batch are different games


def test_zero_sum_and_the_adversary_sets_each_games_rate():
    game = make_batched(ENV_ID, num_games=4)
    game.reset(seed=0)
    p, rate = game.adversary.num_pipelines, game.config.demand.arrival_rate_hz
    budget = game.config.adversary.rate_budget
    push = np.zeros((4, game.adversary.action_dim), dtype=np.float32)
    push[:, p] = [-5.0, -0.5, 0.5, 5.0]  # clipped to [-1, 1]
    for _ in range(20):
        _, rewards, _, _, infos = game.step({"router": np.zeros(4, dtype=np.int64), "adversary": push})
        assert np.array_equal(rewards["adversary"], -rewards["router"]) and (rewards["router"] < 0).all()
        assert np.array_equal(infos["router"]["arrival_rate_hz"], rate * (1 + budget * np.array([-1, -0.5, 0.5, 1])))
        assert infos["router"]["action_mask"].shape == (4, game.action_space("router").n)
        assert "action_mask" not in infos["adversary"] and set(infos["adversary"]) == set(STEP_KEYS)


def test_partial_reset_and_autoreset_of_some_games():
    game = make_batched(ENV_ID, num_games=4, episode_length=5)
    game.reset(seed=0)
    dim = game.adversary.action_dim
    actions = {"router": np.zeros(4, dtype=np.int64), "adversary": np.zeros((4, dim))}
    for _ in range(2):
        game.step(actions)
    before = game.state.copy()
    mask = np.array([False, True, False, False])
    obs, infos = game.reset(options={"reset_mask": mask})
    assert infos["router"]["_action_mask"].tolist() == mask.tolist() and infos["adversary"] == {}
    assert game.state.step.tolist() == [2, 0, 2, 2]
    for name in ("free_at_s", "user_cell", "arrival_s", "ready_s", "pipeline"):
        assert np.array_equal(getattr(game.state, name)[~mask], getattr(before, name)[~mask]), name
    assert not np.array_equal(game.state.free_at_s[1], before.free_at_s[1])
    assert obs["router"][1, -1] == 0.0 and obs["router"][0, -1] == 2 / 5  # elapsed fraction of the episode
    # games 0, 2, 3 end after 3 more steps, game 1 after 5: each autoresets on the step after its end
    ended = []
    for t in range(6):
        _, rewards, terms, truncs, infos = game.step(actions)
        assert np.array_equal(truncs["router"], truncs["adversary"]) and not terms["router"].any()
        ended.append(truncs["router"].tolist())
        if t == 3:  # the step after games 0, 2, 3 ended
            for agent in game.possible_agents:
                assert infos[agent]["_latency_s"].tolist() == [False, True, False, False]
            assert not rewards["router"][[0, 2, 3]].any() and rewards["router"][1] < 0
            assert game.state.step.tolist() == [0, 4, 0, 0]
    assert ended[2] == [True, False, True, True] and ended[4] == [False, True, False, False]
    with pytest.raises(ValueError, match="reset_mask"):
        game.reset(options={"reset_mask": np.zeros(4, dtype=bool)})
    with pytest.raises(ValueError, match="seed"):
        game.reset(seed=1, options={"reset_mask": mask})


def test_bad_actions_and_arguments_raise_naming_the_problem():
    game = make_batched(ENV_ID, num_games=3)
    game.reset(seed=0)
    dim = game.adversary.action_dim
    good = {"router": np.zeros(3, dtype=np.int64), "adversary": np.zeros((3, dim))}
    with pytest.raises(ValueError, match="router"):
        game.step({"adversary": good["adversary"]})
    with pytest.raises(ValueError, match="edge server"):
        game.step({**good, "router": np.full(3, 99)})
    with pytest.raises(ValueError, match="adversary"):
        game.step({**good, "adversary": np.zeros((3, dim + 1))})
    with pytest.raises(ValueError, match="finite"):
        game.step({**good, "adversary": np.full((3, dim), np.nan)})
    with pytest.raises(ValueError, match="num_games"):
        make_batched(ENV_ID, num_games=0)
    with pytest.raises(ValueError, match="backend"):
        make_batched(ENV_ID, backend="live")
    with pytest.raises(ValueError, match="migration"):
        make_batched(ENV_ID, **{"migration.enabled": True})


class _Fixed:
    """A batched policy: the same action for every game (what an SB3 model's predict returns for a batch)."""

    def __init__(self, action: np.ndarray) -> None:
        self.action = action

    def predict(self, observation, deterministic: bool = False):
        return np.repeat(self.action[None], len(observation), axis=0), None


def test_one_side_view_plays_the_game_with_the_other_side_fixed():
    """The router's rows against a fixed adversary are the game's rows; the adversary's view is zero-sum."""
    dim = make_batched(ENV_ID).adversary.action_dim
    push = np.linspace(-1.0, 1.0, dim)
    view = OneSideVectorEnv(make_batched(ENV_ID, num_games=3, episode_length=6), "router",
                            {"adversary": _Fixed(push)})
    game = make_batched(ENV_ID, num_games=3, episode_length=6)
    obs, info = view.reset(seed=2)
    g_obs, _ = game.reset(seed=2)
    assert np.array_equal(obs, g_obs["router"]) and info["action_mask"].shape == (3, view.single_action_space.n)
    assert view.action_masks().shape == (3, view.single_action_space.n)
    for t in range(14):
        route = np.full(3, t % 4, dtype=np.int64)
        got = view.step(route)
        want = game.step({"router": route, "adversary": np.repeat(push[None], 3, axis=0)})
        for g, w in zip(got, want, strict=True):
            assert _same(g, w["router"]), t
    adv_view = OneSideVectorEnv(make_batched(ENV_ID, num_games=2), "adversary",
                                {"router": _Fixed(np.int64(0))}, zero_sum_with="router")
    adv_view.reset(seed=0)
    _, reward, *_ = adv_view.step(np.zeros((2, dim), dtype=np.float32))
    assert (reward > 0).all() and adv_view.single_action_space == make_parallel(ENV_ID).action_space("adversary")
    with pytest.raises(ValueError, match="only the router"):
        adv_view.action_masks()
    with pytest.raises(ValueError, match="unknown agent"):
        OneSideVectorEnv(make_batched(ENV_ID), "attacker", {})


def test_sb3_trains_each_side_on_its_view_against_the_other_frozen():
    """RARL's alternation on B games: each PPO learns on its side's rows while the other's model acts."""
    from stable_baselines3 import PPO

    from edgelam.agents.vec import SB3VectorAdapter

    frozen: dict = {}
    models = {}
    for offset, agent in enumerate(("router", "adversary")):
        view = OneSideVectorEnv(make_batched(ENV_ID, num_games=4, episode_length=16), agent, frozen,
                                zero_sum_with="router" if agent == "adversary" else None)
        venv = SB3VectorAdapter(view)
        venv.seed(offset)
        models[agent] = frozen[agent] = PPO("MlpPolicy", venv, n_steps=16, batch_size=32, n_epochs=1, seed=offset,
                                            device="cpu", policy_kwargs={"net_arch": [16]})
    for agent, model in models.items():
        model.learn(64)
        assert model.num_timesteps == 64 and len(model.ep_info_buffer) == 4  # 4 games x one 16-step episode
        returns = [e["r"] for e in model.ep_info_buffer]
        assert all(r < 0 for r in returns) if agent == "router" else all(r > 0 for r in returns)
        model.get_env().close()


def test_bench_times_the_batched_game_and_parameter_sharing_is_refused():
    """`edgelam bench` steps the game with each agent's own actions; one shared policy cannot act for both."""
    from edgelam.agents.bench import bench_env
    from edgelam.agents.marl import shared_vec_env

    result = bench_env(ENV_ID, steps=40, num_envs=4, live_steps=0)
    assert result["vector_unit"] == "agent-steps/s" and result["vector_num_envs"] == 4
    assert result["vector_steps_per_s"] > 0 and result["steps_per_s"] > 0
    with pytest.raises(ValueError, match="parameter sharing needs one observation and action space"):
        shared_vec_env(ENV_ID, n_envs=2, seed=0)


def test_rarl_trains_both_sides_on_the_batched_game(tmp_path):
    """train_rarl(batched=True): each phase on 4 games of one side's rows; same seed, same history."""
    from stable_baselines3.common.vec_env import VecNormalize

    from edgelam.agents.rarl import train_rarl
    from edgelam.agents.vec import SB3VectorAdapter

    ppo = {"n_envs": 4, "n_steps": 32, "batch_size": 64, "n_epochs": 1, "policy_kwargs": {"net_arch": [16]}}
    histories = []
    for run in ("a", "b"):
        result = train_rarl(ENV_ID, iterations=1, protagonist_steps=128, adversary_steps=128, seed=3,
                            out_dir=tmp_path / run, hyperparams=ppo, env_kwargs={"episode_length": 32},
                            batched=True)
        venv = result.protagonist.get_env()
        venv = venv.venv if isinstance(venv, VecNormalize) else venv
        assert isinstance(venv, SB3VectorAdapter) and isinstance(venv.venv, OneSideVectorEnv)
        histories.append(result.history)
    first = histories[0]
    assert [h["trained"] for h in first] == ["router", "adversary"]
    assert all(h["timesteps"] == 128 and h["episodes"] == 4 for h in first)  # 4 games x one 32-step episode
    assert first[0]["mean_return"] < 0 < first[1]["mean_return"]  # zero-sum
    assert histories[1] == first
    with pytest.raises(ValueError, match="no batched parallel game"):
        train_rarl(ENV_ID, iterations=1, out_dir=tmp_path / "live", hyperparams=ppo, env_kwargs={"backend": "live"},
                   batched=True)


def test_writing_the_returned_truncations_does_not_change_the_autoreset():
    game = make_batched(ENV_ID, num_games=2, episode_length=3)
    game.reset(seed=0)
    actions = {"router": np.zeros(2, dtype=np.int64), "adversary": np.zeros((2, game.adversary.action_dim))}
    for _ in range(3):
        _, _, _, truncs, _ = game.step(actions)
    assert truncs["router"].all()
    truncs["router"][:] = False
    game.step(actions)
    assert game.state.step.tolist() == [0, 0]  # both games autoreset
