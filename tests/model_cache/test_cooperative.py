"""CooperativeModelCache-v0: downloads from neighbours, churn, per-edge storage, the batched game and the bound."""

from __future__ import annotations

import math

import numpy as np
import pytest

import edgelam.envs  # noqa: F401  (registers the ids)
from edgelam import baselines
from edgelam.baselines import cooperative_cache
from edgelam.envs.core.caching import Catalogue, lru_hits
from edgelam.envs.core.model_cards import get_model_card
from edgelam.envs.model_cache.cooperative import CooperativeCacheGames, parallel_env
from edgelam.envs.model_cache.dynamics import cheapest_download, expected_quality, serve

M = 8
FORWARD = M * (M + 1) + M
SIZE = get_model_card("Llama-3.2-3B").total_weight_bytes(4)


def act(serve_with: int, op: int = M) -> int:
    return serve_with * (M + 1) + op


def _joint(env, **actions) -> dict:
    return {a: actions.get(a, FORWARD) for a in env.agents}


def test_a_model_a_neighbour_holds_comes_over_the_metro_and_outside_the_backhaul_budget():
    env = parallel_env(**{"budget.per_request": 1e6})
    env.reset(seed=0)
    _, _, _, _, infos = env.step(_joint(env, edge_0=act(M, 2), edge_1=act(M, 2)))  # both prefetch gui at once
    assert infos["edge_0"]["backhaul_bytes"] == SIZE and infos["edge_1"]["backhaul_bytes"] == SIZE
    # the cost is the team's backhaul bytes, in every edge's row; the queue the team's, against 3 edges x 1 MB
    assert all(i["cost"] == 2 * SIZE for i in infos.values()) and infos["edge_0"]["metro_bytes"] == 0.0
    assert all(i["virtual_queue"] == 2 * SIZE - 3e6 for i in infos.values())
    rate = float(env.state.pending("rate_bps")[2])
    _, _, _, _, infos = env.step(_joint(env, edge_2=act(2)))  # edge 2 downloads gui on demand: from a neighbour
    i2 = infos["edge_2"]
    assert i2["metro_bytes"] == SIZE and i2["backhaul_bytes"] == 0.0 and i2["cost"] == 0.0 and i2["kept"] == 1.0
    cfg = env.config
    compute = env.tables.compute_s[2]
    assert i2["latency_s"] == pytest.approx(env.tables.access_s + compute + cfg.metro.rtt_s + 8 * SIZE / 25e9,
                                            rel=1e-12)
    assert rate > 0 and all(i["virtual_queue"] == 2 * SIZE - 6e6 for i in infos.values())
    assert env.unwrapped.game.team_queue[0] == 2 * SIZE - 6e6
    assert env.config.cost_limit() == 1e6 * 3 * 500


def test_an_edge_that_leaves_loses_its_toolbox_forwards_and_rejoins_empty():
    env = parallel_env(**{"membership.leave_prob": 1.0, "membership.join_prob": 0.0}, initial_cache=["edge"])
    obs, info = env.reset(seed=1)
    assert all(i["online"] for i in info.values()) and obs["edge_0"][-2] == 1.0
    _, _, _, _, infos = env.step(_joint(env, edge_0=act(1), edge_1=act(2)))
    for agent, i in infos.items():
        assert not i["online"] and i["model"] == "cloud_forward" and i["backhaul_bytes"] == 0.0, agent
        assert i["cached_bytes"] == 0.0 and i["edges_online"] == 0
    rejoin = parallel_env(**{"membership.initially_offline": 2, "membership.join_prob": 1.0})
    obs, info = rejoin.reset(seed=2)
    assert [i["online"] for i in info.values()] == [True, False, False] and obs["edge_2"][-2] == 0.0
    assert obs["edge_0"][-1] == pytest.approx(1 / 3)
    _, _, _, _, infos = rejoin.step(_joint(rejoin, edge_2=act(2)))
    assert infos["edge_2"]["online"] and infos["edge_2"]["backhaul_bytes"] == SIZE
    with pytest.raises(ValueError, match=r"membership\.initially_offline"):
        parallel_env(**{"membership.initially_offline": 4})


def test_each_edge_has_its_own_storage_and_bad_capacities_name_their_key():
    env = parallel_env(capacities_bytes=[5e9, 2e9, 1.7e9])
    obs, _ = env.reset(seed=0)
    two = act(M, 3)
    env.step(_joint(env, edge_0=act(M, 2), edge_1=act(M, 2), edge_2=act(M, 2)))
    obs, _, _, _, infos = env.step(_joint(env, edge_0=two, edge_1=two, edge_2=two))
    assert [infos[a]["prefetched"] for a in env.agents] == [1.0, 0.0, 0.0]  # a second 1.6 GB model fits edge 0 only
    free = 5 + 1 + 2 + M  # the free-storage entry of the observation
    assert obs["edge_1"][free] == pytest.approx((2e9 - SIZE) / 2e9, rel=1e-6)
    with pytest.raises(ValueError, match="capacities_bytes"):
        parallel_env(capacities_bytes=[5e9, 5e9])
    with pytest.raises(ValueError, match=r"capacities_bytes\[1\]"):
        parallel_env(capacities_bytes=[5e9, 1e8, 5e9])
    with pytest.raises(ValueError, match=r"capacities_bytes\[2\]"):
        parallel_env(capacities_bytes=[5e9, 5e9, math.inf])


def test_the_batched_game_of_one_is_the_pettingzoo_env():
    env = parallel_env(scenario="hard")
    game = CooperativeCacheGames(1, scenario="hard")
    obs, _ = env.reset(seed=4)
    gobs, _ = game.reset(seed=4)
    rng = np.random.default_rng(0)
    for _ in range(600):  # past the episode's end and its autoreset
        joint = rng.integers(81, size=(1, 4))
        if not env.agents:
            obs, _ = env.reset()
            gobs, *_ = game.step(joint)
        else:
            obs, rewards, _, _, _ = env.step(dict(zip(env.possible_agents, joint[0].tolist(), strict=True)))
            gobs, grewards, *_ = game.step(joint)
            assert list(rewards.values()) == grewards[0].tolist()
        np.testing.assert_array_equal(np.stack([obs[a] for a in env.possible_agents]), gobs[0])


def test_per_edge_lru_hits_where_the_textbook_policy_hits_on_each_edges_trace():
    env = parallel_env(capacity_bytes=3.3e9, episode_length=200)
    policy = baselines.make("lru", env)
    obs, _ = env.reset(seed=3)
    tasks, hits = [[] for _ in env.possible_agents], [[] for _ in env.possible_agents]
    while env.agents:
        for i in range(3):
            tasks[i].append(int(env.state.pending("task")[i]))
        joint = {a: policy.predict(obs[a])[0] for a in env.agents}
        obs, _, _, _, infos = env.step(joint)
        for i, a in enumerate(env.possible_agents):
            hits[i].append(infos[a]["hit"] == 1.0)
    for i in range(3):
        np.testing.assert_array_equal(hits[i], lru_hits(tasks[i], Catalogue.unshared([1] * 5), 2))


def test_the_relaxed_price_is_never_below_the_real_one():
    """The bound's lemma: with every download at the cheaper source, a step earns at least what it earns from
    either real source, for random caches, actions, neighbours, rates and requests."""
    game = CooperativeCacheGames(1, scenario="hard")
    p, t = game.params, game.tables
    q = np.ascontiguousarray(expected_quality(p))
    rng = np.random.default_rng(0)
    for _ in range(3000):
        mask, a, neighbour = int(rng.integers(256)), int(rng.integers(81)), int(rng.integers(256))
        task, private, rate = int(rng.integers(5)), bool(rng.random() < 0.3), float(rng.lognormal(np.log(3e9), 1.0))
        cap = float(rng.choice([2e9, 4e9, 6e9]))
        real = serve(p.consts, cap, t.footprint, t.missing, t.compute_s, t.energy_j, q, mask, a, task, private, rate,
                     0.15, neighbour)
        relaxed = serve(cheapest_download(p.consts, rate), cap, t.footprint, t.missing, t.compute_s, t.energy_j, q,
                        mask, a, task, private, rate, 0.15, 255)
        assert relaxed[0] >= real[0] - 1e-12 and relaxed[1] == real[1]


def test_hindsight_bounds_every_baseline_and_its_own_plan():
    for seed in (5, 6):
        returns = {}
        for name in baselines.available("edgelam/CooperativeModelCache-v0"):
            if name == "random":  # sampled per agent by the evaluation loop (edgelam.agents.marl), not a joint policy
                continue
            env = parallel_env(scenario="hard", episode_length=150)
            policy = baselines.make(name, env)
            obs, _ = env.reset(seed=seed)
            total, start = 0.0, True
            while env.agents:
                joint = {}
                for a in env.agents:
                    joint[a], _ = policy.predict(obs[a], episode_start=np.array([start]))
                start = False
                obs, rewards, _, _, _ = env.step(joint)
                total += float(np.mean(list(rewards.values())))
            returns[name] = total
            if name == "hindsight":
                plan = policy.last_plan
                assert plan.kind == "bound" and not plan.fallback
        env = parallel_env(scenario="hard", episode_length=150)
        env.reset(seed=seed)
        value = cooperative_cache.solve(env).value
        assert all(r <= value + 1e-9 for r in returns.values()), (value, returns)
        assert returns["hindsight"] > returns["always_cloud"]


@pytest.mark.slow
def test_replay_matches_live_over_500_steps():
    stats = []
    for backend in ("replay", "live"):
        env = parallel_env(backend=backend)
        env.reset(seed=0)
        rng = np.random.default_rng(0)
        rows = []
        while env.agents:
            _, _, _, _, infos = env.step({a: int(rng.integers(81)) for a in env.agents})
            rows.extend(infos.values())
        stats.append([np.mean([r["hit"] == 1.0 for r in rows]), np.mean([r["quality"] for r in rows]),
                      np.mean([r["latency_s"] for r in rows])])
    for replay, live in zip(*stats, strict=True):
        assert math.isclose(live, replay, rel_tol=0.05)
