"""Costs in the evaluation rows and the compare: the episode cost, the violation flag, the team cost."""

from __future__ import annotations

import csv
import json

import gymnasium as gym
import numpy as np
import pytest
from rich.console import Console

from edgelam.agents.common import cost_limit, make_parallel
from edgelam.agents.compare import compare, format_cell
from edgelam.agents.evaluate import evaluate

SPLIT = "edgelam/SplitInference-v0"
POWER = "edgelam/FedFTPower-v0"
# (env id, scenario) of every single-agent env whose scenario has a budget
BUDGETED = [
    (SPLIT, "default"),
    ("edgelam/Offload-v0", "default"),
    ("edgelam/SpecDecode-v0", "default"),
    ("edgelam/FedFTAllocation-v0", "default"),
    ("edgelam/MicroserviceRouting-v0", "migration"),
]


class Constant:
    """A policy that always takes one action (so a test can replay its episode by hand)."""

    def __init__(self, action) -> None:
        self.action = action

    def predict(self, observation, state=None, episode_start=None, deterministic=True):
        return self.action, state


def _constant(space: gym.Space, seed: int = 1) -> Constant:
    space.seed(seed)
    return Constant(space.sample())


def _step_costs(env_id: str, scenario: str, policy: Constant, seed: int, **overrides) -> list[float]:
    """``info["cost"]`` of each step of one episode of ``policy``, stepped here."""
    env = gym.make(env_id, scenario=scenario, **overrides)
    env.reset(seed=seed)
    costs, done = [], False
    while not done:
        _, _, terminated, truncated, info = env.step(policy.action)
        costs.append(float(info["cost"]))
        done = terminated or truncated
    env.close()
    return costs


@pytest.mark.parametrize(("env_id", "scenario"), BUDGETED)
def test_the_episode_cost_is_the_sum_of_the_step_costs(env_id, scenario):
    space = gym.make(env_id, scenario=scenario).action_space
    policy = _constant(space)
    rows = evaluate(policy, env_id, episodes=2, seed=7, scenario=scenario)
    limit = cost_limit(env_id, scenario)
    assert limit is not None
    for row in rows:
        costs = _step_costs(env_id, scenario, policy, row["seed"])
        assert len(costs) == row["length"] > 1
        assert row["cost"] == pytest.approx(sum(costs), rel=1e-12)
        assert row["cost_violation"] == float(sum(costs) > limit)


def test_no_cost_and_no_violation_without_a_budget():
    for env_id in ("edgelam/MultiUserOffload-v0", "edgelam/RobustRouting-v0"):
        assert cost_limit(env_id) is None
        row = evaluate("random", env_id, episodes=1, seed=0)[0]
        assert "cost" not in row and "cost_violation" not in row, env_id
    # a scenario without a budget: the cost is reported (no migration, 0 J), no violation without a limit
    routing = "edgelam/MicroserviceRouting-v0"
    assert cost_limit(routing) is None
    row = evaluate("random", routing, episodes=1, seed=0)[0]
    assert row["cost"] == 0.0 and "cost_violation" not in row


def test_the_violation_flag_flips_exactly_at_the_limit():
    length = 12
    space = gym.make(SPLIT).action_space
    policy = _constant(space, seed=3)
    cost = evaluate(policy, SPLIT, episodes=1, seed=4, env_kwargs={"episode_length": length})[0]["cost"]
    assert cost > 0
    budget = cost / length  # the per-request budget whose episode limit is this cost
    while budget * length < cost:
        budget = np.nextafter(budget, np.inf)
    while budget * length > cost:
        budget = np.nextafter(budget, -np.inf)
    flags = {}
    for name, b in (("at", budget), ("below", budget * (1 - 1e-12)), ("above", budget * (1 + 1e-12))):
        overrides = {"episode_length": length, "energy_budget_j": float(b)}
        limit = cost_limit(SPLIT, "default", overrides)
        row = evaluate(policy, SPLIT, episodes=1, seed=4, env_kwargs=overrides)[0]
        assert row["cost"] == cost  # the budget changes the limit, not this policy's episode
        flags[name] = (row["cost_violation"], limit)
    assert flags["at"] == (0.0, cost)
    assert flags["below"][0] == 1.0 and flags["below"][1] < cost
    assert flags["above"][0] == 0.0 and flags["above"][1] > cost


def test_a_fedft_power_episode_cost_is_the_team_total_not_k_times_it():
    env = make_parallel(POWER)
    policy = _constant(env.action_space(env.possible_agents[0]), seed=2)
    k = len(env.possible_agents)
    assert k > 1
    team = set(env.metadata["info_team"])
    costs, energy = [], []
    env.reset(seed=11)
    while env.agents:
        _, _, terms, truncs, infos = env.step(dict.fromkeys(env.agents, policy.action))
        first = infos[env.possible_agents[0]]
        shared = team & set(first)
        for agent in env.possible_agents:  # info_team keys really are the same for every agent
            assert {key: infos[agent][key] for key in shared} == {key: first[key] for key in shared}
        costs.append(first["cost"])
        energy.append(first["total_energy_j"])
        if all(terms.values()) or all(truncs.values()):
            break
    env.close()
    row = evaluate(policy, POWER, episodes=1, seed=11)[0]
    assert row["cost"] == pytest.approx(sum(costs), rel=1e-12)
    assert row["total_energy_j"] == pytest.approx(sum(energy), rel=1e-12)
    for agent in env.possible_agents:
        assert row[f"cost/{agent}"] == pytest.approx(sum(costs), rel=1e-12)
    limit = cost_limit(POWER)
    assert limit is not None and row["cost_violation"] == float(sum(costs) > limit)
    # per-agent sums stay summed over agents
    assert row["energy_j"] == pytest.approx(sum(row[f"energy_j/{a}"] for a in env.possible_agents), rel=1e-12)


def test_compare_reports_the_mean_cost_and_violation_rate(tmp_path):
    overrides = {"episode_length": 10, "energy_budget_j": 0.5}
    result = compare(
        SPLIT, algos=(), baselines=("edge_only", "device_only", "random"), episodes=4, env_kwargs=overrides,
        out_dir=tmp_path, progress=False, console=Console(file=open(tmp_path / "out.txt", "w"), width=300),
    )
    limit = cost_limit(SPLIT, "default", overrides)
    assert limit == pytest.approx(5.0)
    assert result.metrics[:3] == ["return", "cost", "cost_violation"]
    assert result.directions["cost"] == "min" and result.directions["cost_violation"] == "min"
    assert result.table[0][2:5] == ["return ↑", "cost ↓", "cost_violation ↓"]
    with open(tmp_path / "results.csv", newline="") as f:
        stored = {(r["policy"], r["metric"]): r for r in csv.DictReader(f)}
    rates = {}
    for row in result.table[1:]:
        policy = row[0]
        episodes = [e for e in result.episodes if e["policy"] == policy]
        assert len(episodes) == 4
        for column, metric in ((3, "cost"), (4, "cost_violation")):
            mean = float(np.mean([e[metric] for e in episodes]))
            assert float(stored[(policy, metric)]["mean"]) == pytest.approx(mean, rel=1e-12)
            assert stored[(policy, metric)]["direction"] == "min"
            csv_cell = format_cell(float(stored[(policy, metric)]["mean"]), float(stored[(policy, metric)]["ci95"]))
            assert row[column].removesuffix(" *") == csv_cell
        rates[policy] = float(stored[(policy, "cost_violation")]["mean"])
        assert rates[policy] == np.mean([e["cost"] > limit for e in episodes])
    assert rates["device_only"] == 1.0 and rates["edge_only"] == 0.0
    document = json.loads((tmp_path / "results.json").read_text())
    assert document["settings"]["cost_limit"] == limit and document["settings"]["cost_unit"] == "J"
    assert document["paired_test"]["metric"] == "return"
    report = (tmp_path / "report.md").read_text()
    assert "| cost ↓ | cost_violation ↓ |" in report and "limit of 5 J" in report

