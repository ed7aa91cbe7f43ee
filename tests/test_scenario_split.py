"""Scenario tiers that extend another scenario, and the test split's shifted values."""

from __future__ import annotations

import pytest

from edgelam.agents.compare import CompareSettings, plan_compare
from edgelam.agents.evaluate import evaluate
from edgelam.envs.core.config import load_scenario, scenario_data
from edgelam.envs.offload.config import OffloadConfig
from edgelam.envs.registration import find_spec

ENV = "edgelam/Offload-v0"


def _tier(tmp_path, text: str, name: str = "tier.yaml"):
    path = tmp_path / name
    path.write_text(text)
    return str(path)


def test_a_tier_states_only_what_it_changes(tmp_path):
    path = _tier(tmp_path, "extends: default\nbattery_j: 100.0\nchannel:\n  speed_mps: 3.0\n")
    base, tier = load_scenario(OffloadConfig, "offload"), load_scenario(OffloadConfig, "offload", path)
    assert tier.battery_j == 100.0 and base.battery_j != 100.0
    assert tier.channel.speed_mps == 3.0 and tier.channel.carrier_hz == base.channel.carrier_hz  # merged key by key
    assert tier.reward == base.reward and tier.episode_length == base.episode_length


def test_a_scenario_extends_a_yaml_path_relative_to_its_own_folder(tmp_path):
    """CooperativeModelCache-v0's default extends EdgeModelCache-v0's (``../model_cache/default.yaml``): every
    value of the lone edge's default is there, its own keys on top; a path resolves from the file's folder."""
    from edgelam.envs.model_cache.config import CooperativeCacheConfig, ModelCacheConfig

    edge = load_scenario(ModelCacheConfig, "model_cache")
    team = load_scenario(CooperativeCacheConfig, "cooperative_cache")
    assert team.reward == edge.reward and team.requests == edge.requests and team.capacity_bytes == edge.capacity_bytes
    assert team.num_edges == 3 and team.description != edge.description
    (tmp_path / "sub").mkdir()
    _tier(tmp_path, "extends: default\nbattery_j: 100.0\n", "base.yaml")
    nested = _tier(tmp_path / "sub", "extends: ../base.yaml\nchannel:\n  speed_mps: 3.0\n")
    tier = load_scenario(OffloadConfig, "offload", nested)
    assert tier.battery_j == 100.0 and tier.channel.speed_mps == 3.0
    loop = _tier(tmp_path, "extends: ./loop.yaml\nbattery_j: 5.0\n", "loop.yaml")
    with pytest.raises(ValueError, match="cycle"):
        load_scenario(OffloadConfig, "offload", loop)


def test_extends_cycles_and_bad_test_blocks_are_refused(tmp_path):
    a = _tier(tmp_path, f"extends: {tmp_path / 'b.yaml'}\nbattery_j: 1.0\n", "a.yaml")
    _tier(tmp_path, f"extends: {a}\nbattery_j: 2.0\n", "b.yaml")
    with pytest.raises(ValueError, match="cycle"):
        scenario_data("offload", a)
    with pytest.raises(ValueError, match="test must be a mapping"):
        load_scenario(OffloadConfig, "offload", _tier(tmp_path, "extends: default\ntest: 3\n"))
    with pytest.raises(ValueError, match=r"test: channel\.sped_mps"):
        load_scenario(OffloadConfig, "offload", _tier(tmp_path, "extends: default\ntest:\n  channel.sped_mps: 2.0\n"))
    with pytest.raises(ValueError, match="split must be one of"):
        CompareSettings(ENV, split="validation")


def test_compare_evaluates_on_the_shifted_test_split_and_trains_on_the_scenario(tmp_path):
    path = _tier(tmp_path, "extends: default\nepisode_length: 20\ntest:\n  channel.speed_mps: 30.0\n"
                 "  edge_queue.utilisation: 0.8\n")
    spec = find_spec(ENV)
    assert spec.test_overrides(path) == {"channel.speed_mps": 30.0, "edge_queue.utilisation": 0.8}
    assert spec.test_overrides("default") == {}
    plan = plan_compare(CompareSettings(ENV, scenario=path, algos=["ppo"], seeds=[0], timesteps=64, episodes=2,
                                        baselines=["greedy"], env_kwargs={"battery_j": 500.0}, out_dir=tmp_path))
    agent, greedy = plan.jobs
    assert agent.env_kwargs == {"battery_j": 500.0}  # training sees the scenario
    assert dict(greedy.evaluated_with) == {"battery_j": 500.0, "channel.speed_mps": 30.0,
                                           "edge_queue.utilisation": 0.8}
    train = plan_compare(CompareSettings(ENV, scenario=path, baselines=["greedy"], episodes=2, split="train",
                                         out_dir=tmp_path))
    assert dict(train.jobs[-1].evaluated_with) == {}
    shifted = evaluate("greedy", ENV, 2, 10000, path, greedy.evaluated_with)
    plain = evaluate("greedy", ENV, 2, 10000, path, {"battery_j": 500.0})
    assert [r["return"] for r in shifted] != [r["return"] for r in plain]
