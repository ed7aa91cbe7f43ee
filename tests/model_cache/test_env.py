"""EdgeModelCache-v0: the step's prices by hand, the cache's bookkeeping, requests, backends, bad configs."""

from __future__ import annotations

import math

import gymnasium as gym
import numpy as np
import pytest

import edgelam.envs  # noqa: F401  (registers the ids)
from edgelam.envs.core.caching import zipf_pmf
from edgelam.envs.core.hardware import load_hardware_catalog
from edgelam.envs.core.model_cards import LORA_PROJECTIONS, get_model_card
from edgelam.envs.lam.toolbox import load_windows
from edgelam.envs.model_cache.dynamics import CHUNK
from edgelam.envs.model_cache.env import EdgeModelCacheEnv

ENV_ID = "edgelam/EdgeModelCache-v0"
M = 8  # device, edge, five task models, cloud
FORWARD = M


def act(serve: int, op: int = M) -> int:
    return serve * (M + 1) + op


def _fresh(**overrides) -> EdgeModelCacheEnv:
    env = EdgeModelCacheEnv(**overrides)
    env.reset(seed=0)
    return env


def test_a_download_costs_its_bytes_over_the_backhaul_then_hits_cost_nothing_more():
    env = _fresh()
    cfg, t = env.config, env.tables
    card = get_model_card("Llama-3.2-3B")
    size = card.total_weight_bytes(4)
    rate, window, task = env.backhaul_rate_bps, int(env.state.pending("window")[0]), env.task
    gui = 2
    _, reward, _, _, info = env.step(act(gui))
    up = 8 * (224 * 4 + 400) / 100e6
    down = 8 * 32 * 4 / 100e6
    compute = t.compute_s[gui]
    assert info["backhaul_bytes"] == size and info["hit"] == 0.0 and info["kept"] == 1.0
    assert info["latency_s"] == pytest.approx(up + 0.01 + down + compute + cfg.backhaul.rtt_s + 8 * size / rate,
                                              rel=1e-12)
    assert info["energy_j"] == pytest.approx(load_hardware_catalog()["edge_gpu_l4"].power_active_w * compute)
    quality = load_windows().top1[2, load_windows().windows_of(task)[window - t.win_start[task]]]
    assert info["quality"] == quality
    w = cfg.reward
    assert reward == pytest.approx(w.quality_weight * quality - w.latency_weight * info["latency_s"]
                                   - w.energy_weight_per_j * info["energy_j"] - w.backhaul_weight_per_gb * size / 1e9)
    assert env.cache_mask == 1 << gui and info["cached_bytes"] == size
    _, _, _, _, info = env.step(act(gui))
    assert info["hit"] == 1.0 and info["backhaul_bytes"] == 0.0 and info["kept"] == -1.0
    assert info["latency_s"] == pytest.approx(up + 0.01 + down + compute, rel=1e-12)


def test_forwarding_prices_the_wan_and_the_cloud_and_flags_private_requests():
    env = _fresh()
    seen = {False: 0, True: 0}
    for _ in range(300):
        private, rtt = env.private, float(env.state.pending("rtt_s")[0])
        _, _, _, _, info = env.step(act(FORWARD))
        assert info["model"] == "cloud_forward" and info["hit"] == 0.0 and info["energy_j"] == 0.0
        assert info["cloud_cost_usd"] == pytest.approx(256 * 1e-6)
        assert info["latency_s"] == pytest.approx(env.tables.access_s + rtt + env.tables.cloud_s, rel=1e-12)
        assert info["privacy_violation"] == float(private) and info["private"] == private
        assert info["backhaul_bytes"] == 0.0 and env.last_rtt_s == rtt
        seen[private] += 1
    assert seen[True] > 10 and seen[False] > 200


def test_ops_evict_prefetch_and_drop_and_a_prefetch_that_does_not_fit_fetches_nothing():
    env = _fresh()  # 5 GB: three 1.6 GB task models, or the 4 GB big model and the 0.25 GB small one
    _, _, _, _, info = env.step(act(FORWARD, 2))  # prefetch edge+gui while forwarding
    assert info["prefetched"] == 1.0 and info["backhaul_bytes"] > 1.6e9 and env.cache_mask == 0b100
    env.step(act(FORWARD, 3))
    env.step(act(FORWARD, 4))
    assert env.cache_mask == 0b11100
    _, _, _, _, info = env.step(act(FORWARD, 5))  # a fourth does not fit: nothing is fetched
    assert info["prefetched"] == 0.0 and info["backhaul_bytes"] == 0.0 and env.cache_mask == 0b11100
    _, _, _, _, info = env.step(act(2, 2))  # serve with gui (a hit), then evict it
    assert info["hit"] == 1.0 and env.cache_mask == 0b11000
    _, _, _, _, info = env.step(act(6, 6))  # download edge+core, serve, drop it (a bypass)
    assert info["hit"] == 0.0 and info["kept"] == 0.0 and info["backhaul_bytes"] > 1.6e9
    assert env.cache_mask == 0b11000
    _, _, _, _, info = env.step(act(7))  # the big model does not fit beside two task models: served, dropped
    assert info["kept"] == 0.0 and env.cache_mask == 0b11000
    _, _, _, _, info = env.step(act(7, 3))  # evicting one first is not enough either (1.6 + 4.0 > 5)
    assert info["kept"] == 0.0 and env.cache_mask == 0b10000
    _, _, _, _, info = env.step(act(7, 4))
    assert info["kept"] == 1.0 and env.cache_mask == 1 << 7
    assert info["cached_bytes"] == get_model_card("Llama-3.1-8B").total_weight_bytes(4)


def test_adapter_task_models_share_the_backbone_so_a_second_one_downloads_only_its_adapter():
    env = _fresh(**{"cards.task_models": "adapter"})
    backbone = get_model_card("Llama-3.2-3B")
    weights, adapter = backbone.total_weight_bytes(4), 2 * backbone.lora_params(8, LORA_PROJECTIONS)  # fp16
    _, _, _, _, info = env.step(act(FORWARD, 2))
    assert info["backhaul_bytes"] == weights + adapter
    _, _, _, _, info = env.step(act(FORWARD, 1))  # the general edge model: the backbone alone, stored already
    assert info["prefetched"] == 1.0 and info["backhaul_bytes"] == 0.0
    _, _, _, _, info = env.step(act(3))
    assert info["backhaul_bytes"] == adapter and info["kept"] == 1.0
    assert info["cached_bytes"] == weights + 2 * adapter
    env.step(act(FORWARD, 1))
    env.step(act(FORWARD, 2))  # evicting edge and gui keeps the backbone for packaging
    assert env.cache_mask == 1 << 3 and env.tables.footprint[env.cache_mask] == weights + adapter


def test_requests_follow_each_groups_zipf_ranking_and_drift_only_with_swaps():
    env = EdgeModelCacheEnv(episode_length=4 * CHUNK, **{"requests.group_weights": [1.0],
                                                          "requests.zipf_exponent": 1.0})
    counts = np.zeros(5)
    for seed in range(12):
        env.reset(seed=seed)
        ranking = env.state.ranking[0, 0].copy()
        tasks = []
        for _ in range(4 * CHUNK):
            tasks.append(env.task)
            env.step(act(FORWARD))
        np.testing.assert_array_equal(env.state.ranking[0, 0], ranking)  # no swaps: a fixed ranking
        counts += np.bincount([int(np.flatnonzero(ranking == j)[0]) for j in tasks], minlength=5)
    share = counts / counts.sum()
    np.testing.assert_allclose(share, zipf_pmf(5, 1.0), atol=0.02)
    drifting = EdgeModelCacheEnv(**{"requests.swap_prob": 0.05})
    drifting.reset(seed=1)
    before = drifting.state.ranking.copy()
    for _ in range(CHUNK):
        drifting.step(act(FORWARD))
    assert not np.array_equal(drifting.state.ranking, before)
    assert sorted(drifting.state.ranking[0, 1]) == [0, 1, 2, 3, 4]


def test_observation_shows_the_request_the_cache_and_the_popularity():
    env = EdgeModelCacheEnv()
    obs, _ = env.reset(seed=4)
    assert obs.shape == (2 * 5 + 2 + M + 6,)
    assert obs[env.task] == 1.0 and obs[:5].sum() == 1.0 and obs[5] == float(env.private)
    obs, *_ = env.step(act(FORWARD, 3))
    cached = obs[5 + 1 + 2: 5 + 1 + 2 + M]
    np.testing.assert_array_equal(cached, [0, 0, 0, 1, 0, 0, 0, 0])
    free = obs[5 + 1 + 2 + M]
    assert free == pytest.approx(1 - get_model_card("Llama-3.2-3B").total_weight_bytes(4) / 5e9, rel=1e-6)
    np.testing.assert_allclose(obs[5 + 1 + 2 + M + 1: 5 + 1 + 2 + M + 6], env.popularity, rtol=1e-6)
    assert env.popularity.sum() == pytest.approx(1.0)


def test_bad_configs_name_their_key():
    with pytest.raises(ValueError, match="capacity_bytes"):
        EdgeModelCacheEnv(capacity_bytes=1e8)
    with pytest.raises(ValueError, match=r"requests\.tasks.*gaming"):
        EdgeModelCacheEnv(**{"requests.tasks": ["gui", "gaming"]})
    with pytest.raises(ValueError, match=r"backhaul\.rate_mean_bps"):
        EdgeModelCacheEnv(**{"backhaul.rate_mean_bps": -1.0})
    with pytest.raises(ValueError, match="access_rate_bps"):
        EdgeModelCacheEnv(access_rate_bps=-5.0)
    with pytest.raises(ValueError, match="initial_cache"):
        EdgeModelCacheEnv(initial_cache=["edge+gaming"])
    with pytest.raises(ValueError, match="initial_cache"):
        EdgeModelCacheEnv(initial_cache=["cloud", "edge"], capacity_bytes=5e9)
    with pytest.raises(ValueError, match=r"cards\.backbone"):
        EdgeModelCacheEnv(**{"cards.backbone": "GPT-9"})
    with pytest.raises(ValueError, match="action"):
        _fresh().step((M + 1) ** 2)


def test_initial_cache_and_task_subsets_shape_the_catalogue():
    env = _fresh(initial_cache=["edge"], **{"requests.tasks": ["web", "gui"]})
    assert env.tables.names == ("device", "edge", "edge+web", "edge+gui", "cloud")
    assert env.action_space.n == 36 and env.cache_mask == 0b10
    w = load_windows()
    assert env.tables.win_count.tolist() == [len(w.windows_of(3)), len(w.windows_of(0))]
    for _ in range(50):
        assert env.task in (0, 1)
        env.step(5 * 6 + 5)


def test_vector_env_of_one_row_is_the_single_env():
    single = gym.make(ENV_ID, scenario="hard")
    vec = gym.make_vec(ENV_ID, num_envs=1, vectorization_mode="vector_entry_point", scenario="hard")
    rng = np.random.default_rng(0)
    a, _ = single.reset(seed=9)
    b, _ = vec.reset(seed=9)
    np.testing.assert_array_equal(a, b[0])
    for _ in range(1100):  # two episodes and a half, across blocks
        action = int(rng.integers(81))
        a, ra, _, ta, ia = single.step(action)
        b, rb, _, _, ib = vec.step(np.array([action]))
        assert ra == rb[0] and ia["backhaul_bytes"] == ib["backhaul_bytes"][0]
        np.testing.assert_array_equal(a, b[0])
        if ta:
            a, _ = single.reset()
            b, *_ = vec.step(np.array([0]))
            np.testing.assert_array_equal(a, b[0])


def test_a_row_that_resets_alone_starts_its_own_episode():
    vec = gym.make_vec(ENV_ID, num_envs=3, vectorization_mode="vector_entry_point", initial_cache=["device"])
    vec.reset(seed=2)
    for _ in range(9):  # op 3 toggles edge+packaging: prefetched on odd steps, evicted on even ones
        vec.step(np.full(3, act(FORWARD, 3)))
    vec.unwrapped.reset(options={"reset_mask": np.array([False, True, False])})
    state = vec.unwrapped.state
    assert state.step.tolist() == [9, 0, 9] and state.cache.tolist() == [0b1001, 0b1, 0b1001]
    assert state.popularity[1].tolist() == [0.2] * 5


@pytest.mark.slow
def test_replay_matches_live_over_500_steps():
    """Live (the serving model really runs on the request's window in step()) against replay."""
    stats = []
    for backend in ("replay", "live"):
        env = gym.make(ENV_ID, backend=backend)
        env.action_space.seed(0)
        env.reset(seed=0)
        rows = [env.step(env.action_space.sample())[4] for _ in range(500)]
        stats.append([np.mean([r["hit"] == 1.0 for r in rows]), np.mean([r["quality"] for r in rows]),
                      np.mean([r["latency_s"] for r in rows])])
        if backend == "live":
            assert env.unwrapped._live.runs == 500
    for replay, live in zip(*stats, strict=True):
        assert math.isclose(live, replay, rel_tol=0.05)
