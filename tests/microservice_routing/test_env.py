"""MicroserviceRouting-v0 behaviour: masks, projection, baselines, Lyapunov migration budget, speed."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest

import edgelam.envs  # noqa: F401
from edgelam import baselines
from edgelam.envs.microservice_routing.dynamics import pending_microservice

ENV_ID = "edgelam/MicroserviceRouting-v0"


def _run(env, policy, seed: int, steps: int | None = None) -> tuple[float, dict]:
    obs, _ = env.reset(seed=seed)
    total, sums = 0.0, {"completed": 0, "e2e": 0.0, "migration_j": 0.0}
    done, n = False, 0
    while not done:
        action, _ = policy.predict(obs)
        obs, reward, terminated, truncated, info = env.step(action)
        total += reward
        sums["completed"] += info["completed"]
        sums["e2e"] += info["e2e_latency_s"]
        sums["migration_j"] += info["migration_energy_j"]
        n += 1
        done = terminated or truncated or (steps is not None and n >= steps)
    sums["steps"] = n
    sums["virtual_queue"] = info["virtual_queue"]
    return total, sums


def test_mask_marks_hosts_and_infeasible_action_is_projected():
    """Over many requests: a server without the microservice is projected onto the host its input reaches
    first, i.e. the least of 0 (input already there) or bytes x 8 / link rate + hop latency (lowest index on
    ties), computed here from the tables and the scenario, not by the simulator."""
    env = gym.make(ENV_ID)
    env.reset(seed=0)
    base = env.unwrapped
    t, cfg, k = base.tables, base.config, base.tables.num_servers
    rng = np.random.default_rng(0)
    projected, local, not_first = 0, 0, 0
    for _ in range(300):
        state = base.state
        mask = base.action_masks()
        ms = int(pending_microservice(base.params, state)[0])
        hosts = [s for s in range(k) if s in cfg.placement[t.microservices[ms]]]
        assert mask.tolist() == [s in hosts for s in range(k)]
        if mask.all():
            _, _, terminated, truncated, info = env.step(int(rng.choice(hosts)))
            assert not info["infeasible_action"]
        else:
            loc, in_bytes = int(state.loc[0]), t.stage_in_bytes[state.pipeline[0]][state.stage[0]]
            reach = [0.0 if s == loc else in_bytes * 8.0 / t.link_bps[loc][s] + cfg.hop_latency_s for s in hosts]
            expected = hosts[int(np.argmin(reach))]
            _, reward, terminated, truncated, info = env.step(int(rng.choice(np.flatnonzero(~mask))))
            assert info["infeasible_action"] and info["server"] == expected
            assert reward <= -cfg.reward.infeasible_penalty
            projected += 1
            local += expected == loc
            not_first += expected != hosts[0]
        if terminated or truncated:
            env.reset(seed=1)
    # both kinds of projection occur: onto the server holding the input, and past a lower-index host
    assert projected >= 50 and local >= 5 and not_first >= 5


def test_request_rewards_sum_to_negative_e2e_latency():
    env = gym.make(ENV_ID, **{"reward.slo_penalty": 0.0})
    policy = baselines.make("greedy", env)
    obs, _ = env.reset(seed=4)
    acc = 0.0
    for _ in range(60):
        action, _ = policy.predict(obs)
        obs, reward, _, _, info = env.step(action)
        acc += reward
        if info["completed"]:
            assert acc == pytest.approx(-info["e2e_latency_s"], rel=1e-9, abs=1e-12)
            acc = 0.0


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_greedy_beats_random_on_default(seed):
    env = gym.make(ENV_ID)
    greedy, _ = _run(env, baselines.make("greedy", env), seed)
    for name in ("random", "random_masked", "nearest"):
        policy = baselines.make(name, env, seed=seed) if name.startswith("random") else baselines.make(name, env)
        other, _ = _run(env, policy, seed)
        assert greedy > other, name


def test_lyapunov_keeps_migration_within_budget():
    budget = 0.01
    kwargs = {"scenario": "migration", "episode_length": 3000, "migration.budget_j_per_step": budget}
    env = gym.make(ENV_ID, **kwargs)
    _, free = _run(env, baselines.make("greedy_migrate", env), seed=5)
    _, lyap = _run(env, baselines.make("lyapunov", env), seed=5)
    assert free["migration_j"] / free["steps"] > 2 * budget  # migrating is tempting here
    assert lyap["migration_j"] > 0.0
    assert lyap["migration_j"] / lyap["steps"] <= budget * 1.05
    assert lyap["e2e"] / lyap["completed"] < free["e2e"] / free["completed"]


def test_lyapunov_needs_migration():
    with pytest.raises(ValueError, match="migration"):
        baselines.make("lyapunov", gym.make(ENV_ID))


def test_migration_moves_a_replica():
    env = gym.make(ENV_ID, scenario="migration")
    env.reset(seed=0)
    base = env.unwrapped
    k, ms = base.tables.num_servers, int(pending_microservice(base.params, base.state)[0])
    before = base.state.hosts[0, ms].tolist()
    target = before.index(False)
    _, _, _, _, info = env.step(k + target)
    assert info["migrated"] and base.state.hosts[0, ms, target]
    assert base.state.hosts[0, ms].sum() == sum(before)
    assert info["migration_energy_j"] == pytest.approx(base.tables.weight_bytes[ms] * 8 * 2e-8)




def test_card_scaling_prices_the_projector_and_the_backbone_by_hand():
    """At Llama-3.2-3B (d = 3072, 28 layers), the image captioning projector maps the encoder's 196 tokens
    of width 256 to d through a 256 x d and a d x d matrix: its weights, FLOPs and bytes by hand."""
    from edgelam.envs.core.model_cards import get_model_card
    from edgelam.envs.microservice_routing.catalog import load_catalog
    from edgelam.envs.microservice_routing.dynamics import scaled_stages

    card = get_model_card("Llama-3.2-3B")
    catalog = load_catalog()
    pipelines, weights = scaled_stages(catalog, card, 16)
    assert weights["backbone"] == 28 * card.weight_bytes_per_layer(16)
    stages = pipelines["image_captioning"]
    proj = stages[[s["microservice"] for s in stages].index("input_projector")]
    assert proj["out_shape"] == [1, 196, 192]  # the executed edge model's width in the catalog
    assert weights["input_projector"] == (256 * 3072 + 3072 * 3072) * 2
    assert proj["flops"] == 2 * 196 * (256 * 3072 + 3072 * 3072)
    assert proj["out_bytes"] == 196 * 3072 * 2  # fp16 activations at the card's width (x 3072 / 192)
    assert proj["mem_bytes"] == weights["input_projector"] + proj["in_bytes"] + proj["out_bytes"]


def test_params_price_transfers_and_normalise_the_demand_mix():
    env = gym.make(ENV_ID, demand={"mix": [2.0, 1.0, 1.0]})
    params = env.unwrapped.params
    np.testing.assert_allclose(params.base_mix, [0.5, 0.25, 0.25])
    t = params.tables
    e_bit = env.unwrapped.config.transfer_energy_j_per_bit
    for p, stages in enumerate(t.stage_ms):
        for j in range(len(stages)):
            assert params.send_j[p, j] == pytest.approx(t.stage_in_bytes[p][j] * 8 * e_bit, rel=1e-12)
            # between two servers: bytes x 8 / link rate + one hop; on the same server nothing
            assert params.transfer_s[p, j, 0, 1] == pytest.approx(
                t.stage_in_bytes[p][j] * 8 / t.link_bps[0][1] + env.unwrapped.config.hop_latency_s, rel=1e-12)
            assert params.transfer_s[p, j, 1, 1] == 0.0
    env.close()
