"""Budgets as costs (Safety-Gymnasium's convention): ``info["cost"]`` per step, ``EnvSpec.cost_limit`` per episode.

An env with a long-term budget reports in ``info["cost"]`` the quantity y its virtual queue
Z <- max(Z + y - b, 0) accumulates, so the queue replays from the costs alone: Z(t+1) - Z(t) =
cost(t) - b(t) wherever it stays off its floor (b(t) = b, or b x the round's tokens for
SpecDecode-v0's budget per token). Summed over a full episode, b(t) is the spec's
``cost_limit``, so an episode's cost against its limit is what the queue says of it. The
scenario settings are those of tests/test_virtual_queues.py (each case's budget both
accumulates a queue and drains it), whose episode helpers these tests use.
"""

from __future__ import annotations

import math
import re
import typing
from pathlib import Path

import numpy as np
import pytest
import yaml

import edgelam.envs  # noqa: F401  (registers the ids)
from edgelam.envs.core.spec import load_attribute
from edgelam.envs.fedft.vector import FedFTAllocationVectorEnv
from edgelam.envs.microservice_routing.vector import MicroserviceRoutingVectorEnv
from edgelam.envs.model_cache.vector import EdgeModelCacheVectorEnv
from edgelam.envs.offload.vector import OffloadVectorEnv
from edgelam.envs.registration import SPECS, find_spec, make_batched
from edgelam.envs.spec_decode.vector import SpecDecodeVectorEnv
from edgelam.envs.split_inference.vector import SplitInferenceVectorEnv
from tests.test_virtual_queues import (
    CASES,
    VECTOR_CASES,
    _check,
    episode_infos,
    parallel_episode_infos,
    replay_queue,
    vector_episode_rows,
)

SCENARIOS = Path(__file__).resolve().parent.parent / "configs" / "scenarios"
POWER = "edgelam/FedFTPower-v0"
POWER_BUDGET_J = 4.15  # tests/test_virtual_queues.py's FedFTPower budget

# the info key of the quantity each case's queue accumulates: the cost is that value itself
BUDGETED_KEY = {
    "split_inference": "energy_j",
    "offload_energy": "energy_j",
    "offload_usd": "cloud_cost_usd",
    "spec_decode": "energy_j",
    "microservice_migration": "migration_energy_j",
    "fedft_allocation": "energy_j",
    "model_cache_bytes": "backhaul_bytes",
    "model_cache_energy": "energy_j",
}
# the cases whose step budget is not b: SpecDecode-v0's is b per emitted token
STEP_BUDGET = {"spec_decode": lambda info, b: b * info["tokens"]}
VECTOR_ROWS = {**VECTOR_CASES, "fedft_allocation": (FedFTAllocationVectorEnv, CASES["fedft_allocation"])}


def _step_budget(case: str, info: dict, budget: float) -> float:
    rule = STEP_BUDGET.get(case)
    return budget if rule is None else rule(info, budget)


def _scenario_and_overrides(overrides: dict) -> tuple[str, dict]:
    """A case's overrides without ``scenario`` (a constructor argument, not a key), and that scenario."""
    rest = dict(overrides)
    return rest.pop("scenario", "default"), rest


def _valid_costs(costs: np.ndarray) -> None:
    assert costs.dtype == np.float64 and np.all(np.isfinite(costs)) and np.all(costs >= 0.0), costs


@pytest.mark.parametrize("case", sorted(CASES))
def test_cost_is_what_the_virtual_queue_accumulates(case):
    c = CASES[case]
    infos = episode_infos(c.env_id, c.overrides)
    assert all(type(i["cost"]) is float for i in infos)
    costs = np.array([i["cost"] for i in infos])
    _valid_costs(costs)
    assert np.array_equal(costs, [i[BUDGETED_KEY[case]] for i in infos])
    budgets = np.array([_step_budget(case, i, c.budget) for i in infos])
    _check(np.array([i["virtual_queue"] for i in infos]), costs - budgets)


@pytest.mark.parametrize("case", sorted(VECTOR_ROWS))
def test_vector_cost_rows_are_what_each_rows_queue_accumulates(case):
    cls, c = VECTOR_ROWS[case]
    for row in vector_episode_rows(cls, c.overrides):
        costs = np.array([float(s["cost"]) for s in row])
        _valid_costs(costs)
        assert np.array_equal(costs, [float(s[BUDGETED_KEY[case]]) for s in row])
        budgets = np.array([float(_step_budget(case, s, c.budget)) for s in row])
        _check(np.array([float(s["virtual_queue"]) for s in row]), costs - budgets)


def _lindley_queue(increments: np.ndarray) -> float:
    """Z(T) of Z(0) = 0 and Z <- max(Z + increment, 0): the largest suffix sum of the increments, or 0."""
    suffix = np.cumsum(increments[::-1])
    return max(float(suffix.max()), 0.0)


def _full_episode(case: str, overrides: dict, budget: float) -> tuple[np.ndarray, np.ndarray, np.ndarray, float]:
    """(costs, step budgets, queues) of one full episode of ``case`` under ``overrides`` (budget b =
    ``budget``), and the spec's cost limit of that scenario."""
    env_id = CASES[case].env_id
    spec = find_spec(env_id)
    scenario, rest = _scenario_and_overrides(overrides)
    cfg = spec.load_config(scenario, rest)
    infos = episode_infos(env_id, overrides)
    if case == "spec_decode":  # it ends when its requests are done: it emitted all their tokens
        assert sum(i["tokens"] for i in infos) == cfg.requests_per_episode * cfg.tokens_per_request
    else:
        assert len(infos) == cfg.episode_length, "the episode ended before its length"
    costs = np.array([i["cost"] for i in infos])
    budgets = np.array([_step_budget(case, i, budget) for i in infos])
    limit = spec.cost_limit(scenario, **rest)
    assert limit is not None
    return costs, budgets, np.array([i["virtual_queue"] for i in infos]), limit


@pytest.mark.parametrize("case", sorted(CASES))
def test_episode_cost_against_cost_limit_is_what_the_queue_says(case):
    c = CASES[case]
    costs, budgets, queues, limit = _full_episode(case, c.overrides, c.budget)
    assert budgets.sum() == pytest.approx(limit, rel=1e-12)
    excess = costs.sum() - limit
    # Z(T) = max over k of the budget excess of steps k..T-1, k = 0 being the whole episode's
    assert queues[-1] == pytest.approx(_lindley_queue(costs - budgets), rel=1e-9, abs=1e-12)
    assert queues[-1] >= excess - 1e-9 * max(1.0, abs(limit))
    if excess > 0.0:
        assert queues[-1] > 0.0, "an episode over its cost limit leaves a positive queue"


# (overrides, budget b) below every step's cost in the cases' episodes (0 where some steps cost
# nothing): the queue never reaches its floor, so it ends at exactly the episode's cost minus its limit
TIGHT = {
    "split_inference": ({"energy_budget_j": 0.05}, 0.05),
    "offload_energy": ({"budget.per_task": 0.1}, 0.1),
    "offload_usd": ({"budget.metric": "cloud_cost_usd", "budget.per_task": 0.0}, 0.0),
    "spec_decode": ({"energy_budget_j_per_token": 0.02}, 0.02),
    "microservice_migration": ({"scenario": "migration", "migration.budget_j_per_step": 0.0}, 0.0),
    "fedft_allocation": ({"energy_budget_j": 1.0}, 1.0),
    "model_cache_bytes": ({"budget.per_request": 0.0}, 0.0),
    "model_cache_energy": ({"budget.metric": "energy_j", "budget.per_request": 0.0}, 0.0),
}


@pytest.mark.parametrize("case", sorted(TIGHT))
def test_queue_of_a_tight_budget_ends_at_the_episode_cost_minus_cost_limit(case):
    costs, budgets, queues, limit = _full_episode(case, *TIGHT[case])
    assert np.all(np.cumsum(costs - budgets) >= 0.0), "the budget is not below every prefix's cost"
    assert costs.sum() > limit
    assert queues[-1] == pytest.approx(costs.sum() - limit, rel=1e-9)


def test_fedft_power_costs_are_per_agent_and_each_agents_queue_increment():
    steps = parallel_episode_infos(POWER, {"energy_budget_j": POWER_BUDGET_J})
    agents = list(steps[0])
    for agent in agents:
        costs = np.array([infos[agent]["cost"] for infos in steps])
        _valid_costs(costs)
        _check(np.array([infos[agent]["virtual_queue"] for infos in steps]), costs - POWER_BUDGET_J)
    for infos in steps:
        # one shared budget: every agent's cost is the round's total energy, the sum of the agents' own
        total = infos[agents[0]]["total_energy_j"]
        assert all(infos[a]["cost"] == total for a in agents)
        assert sum(infos[a]["energy_j"] for a in agents) == pytest.approx(total, rel=1e-12)
    episode_cost = sum(infos[agents[0]]["cost"] for infos in steps)
    limit = find_spec(POWER).cost_limit(energy_budget_j=POWER_BUDGET_J)
    assert limit == pytest.approx(POWER_BUDGET_J * len(steps), rel=1e-12)
    assert steps[-1][agents[0]]["virtual_queue"] >= episode_cost - limit - 1e-9


def test_fedft_power_batched_game_costs_replay_each_games_queue():
    budget = 4.0  # the 3 games' mean round energies are 3.4, 4.5 and 3.7 J under these actions
    game = make_batched(POWER, num_games=3, energy_budget_j=budget)
    rng = np.random.default_rng(3)
    game.reset(seed=3)
    rows: list[list[tuple[float, float]]] = [[] for _ in range(3)]
    for _ in range(game.episode_length):
        actions = rng.uniform(-1.0, 1.0, (3, game.num_agents, 2)).astype(np.float32)
        _, _, _, _, info = game.step(actions)
        assert info["cost"].shape == (3,) and np.array_equal(info["cost"], info["total_energy_j"])
        for g in range(3):
            rows[g].append((float(info["virtual_queue"][g]), float(info["cost"][g])))
    regimes = []
    for row in rows:
        queues, costs = np.array(row).T
        _valid_costs(costs)
        regimes.append(replay_queue(queues, costs - budget))
    grew, floored = np.array(regimes).T
    assert grew.any() and floored.any(), regimes


VECTOR_ENVS = {
    "edgelam/SplitInference-v0": (SplitInferenceVectorEnv, {}),
    "edgelam/Offload-v0": (OffloadVectorEnv, {}),
    "edgelam/SpecDecode-v0": (SpecDecodeVectorEnv, {}),
    "edgelam/MicroserviceRouting-v0": (MicroserviceRoutingVectorEnv, {"scenario": "migration"}),
    "edgelam/FedFTAllocation-v0": (FedFTAllocationVectorEnv, {}),
    "edgelam/EdgeModelCache-v0": (EdgeModelCacheVectorEnv, {}),
}


@pytest.mark.parametrize("env_id", sorted(VECTOR_ENVS))
def test_vector_cost_carries_the_masks_of_the_other_step_keys(env_id):
    cls, overrides = VECTOR_ENVS[env_id]
    env = cls(num_envs=2, episode_length=4, **overrides)
    env.action_space.seed(0)
    env.reset(seed=0)
    env.step(env.action_space.sample())
    env.reset(options={"reset_mask": np.array([True, False])})  # row 1 ends a step before row 0 from now on
    masked = 0
    for _ in range(12):
        _, _, _, _, info = env.step(env.action_space.sample())
        if "latency_s" not in info:  # every row reset in this step: the info is the resets'
            assert "cost" not in info
            continue
        assert info["cost"].shape == (2,)
        if "_latency_s" in info:
            masked += 1
            assert np.array_equal(info["_cost"], info["_latency_s"]) and not info["_cost"].all()
        else:
            assert "_cost" not in info
        _valid_costs(info["cost"][info.get("_cost", np.ones(2, dtype=bool))])
    env.close()
    assert masked >= 2


def _yaml(spec, scenario: str) -> dict:
    return yaml.safe_load((SCENARIOS / spec.scenario_dir / f"{scenario}.yaml").read_text())


# one scenario of each env with a budget, its limit by hand from the scenario's own YAML, and the
# episode-size key the limit is proportional to
HAND_LIMITS = {
    "edgelam/SplitInference-v0": (
        "llama1b_phone_l4", lambda y: y["energy_budget_j"] * y["episode_length"], "episode_length"),
    "edgelam/Offload-v0": ("default", lambda y: y["budget"]["per_task"] * y["episode_length"], "episode_length"),
    "edgelam/SpecDecode-v0": (
        "blockage",
        lambda y: y["energy_budget_j_per_token"] * y["requests_per_episode"] * y["tokens_per_request"],
        "requests_per_episode",
    ),
    "edgelam/MicroserviceRouting-v0": (
        "migration", lambda y: y["migration"]["budget_j_per_step"] * y["episode_length"], "episode_length"),
    "edgelam/FedFTAllocation-v0": ("dense", lambda y: y["energy_budget_j"] * y["episode_length"], "episode_length"),
    "edgelam/FedFTPower-v0": ("split", lambda y: y["energy_budget_j"] * y["episode_length"], "episode_length"),
    "edgelam/EdgeModelCache-v0": (
        "hard", lambda y: y["budget"]["per_request"] * y["episode_length"], "episode_length"),
    "edgelam/CooperativeModelCache-v0": (
        "hard", lambda y: y["budget"]["per_request"] * y["num_edges"] * y["episode_length"], "episode_length"),
}


def test_every_env_with_cost_keys_has_a_hand_checked_cost_limit():
    assert sorted(s.id for s in SPECS if s.cost_keys) == sorted(HAND_LIMITS)


@pytest.mark.parametrize("env_id", sorted(HAND_LIMITS))
def test_cost_limit_is_the_budget_summed_over_an_episode_of_the_scenario_yaml(env_id):
    spec = find_spec(env_id)
    scenario, by_hand, size_key = HAND_LIMITS[env_id]
    values = _yaml(spec, scenario)
    limit = spec.cost_limit(scenario)
    assert type(limit) is float and limit > 0.0
    assert limit == pytest.approx(by_hand(values), rel=1e-12)
    assert spec.cost_limit(scenario, **{size_key: 2 * values[size_key]}) == pytest.approx(2.0 * limit, rel=1e-12)


@pytest.mark.parametrize(
    ("env_id", "scenario", "overrides"),
    [
        ("edgelam/SplitInference-v0", "default", {"energy_budget_j": None}),
        ("edgelam/Offload-v0", "default", {"budget.per_task": None}),
        ("edgelam/SpecDecode-v0", "default", {"energy_budget_j_per_token": None}),
        ("edgelam/MicroserviceRouting-v0", "default", {}),
        ("edgelam/MicroserviceRouting-v0", "migration", {"migration.enabled": False}),
        ("edgelam/MultiUserOffload-v0", "default", {}),
        ("edgelam/RobustRouting-v0", "default", {}),
    ],
)
def test_cost_limit_is_none_without_a_budget(env_id, scenario, overrides):
    assert find_spec(env_id).cost_limit(scenario, **overrides) is None


def test_a_zero_budget_is_a_zero_limit_not_none():
    assert find_spec("edgelam/FedFTAllocation-v0").cost_limit(energy_budget_j=0.0) == 0.0
    assert find_spec("edgelam/Offload-v0").cost_limit(**{"budget.per_task": 0.0}) == 0.0


@pytest.mark.parametrize("spec", SPECS, ids=[s.id for s in SPECS])
def test_every_shipped_scenario_has_a_finite_nonnegative_cost_limit_or_none(spec):
    for scenario in spec.scenarios():
        limit = spec.cost_limit(scenario)
        assert limit is None or (type(limit) is float and math.isfinite(limit) and limit >= 0.0), (scenario, limit)
        assert limit is None or spec.cost_keys


@pytest.mark.parametrize(
    ("case", "overrides"),
    [
        ("split_inference", {"energy_budget_j": None}),
        ("offload_energy", {"budget.per_task": None}),
        ("spec_decode", {"energy_budget_j_per_token": None}),
        ("microservice_migration", {}),  # default scenario: no migration, so no migration energy
    ],
)
def test_cost_is_reported_without_a_budget_too(case, overrides):
    infos = episode_infos(CASES[case].env_id, overrides)
    assert all("virtual_queue" not in i or i["virtual_queue"] == 0.0 for i in infos)
    costs = np.array([i["cost"] for i in infos])
    _valid_costs(costs)
    assert np.array_equal(costs, [i[BUDGETED_KEY[case]] for i in infos])


@pytest.mark.parametrize("env_id", ["edgelam/MultiUserOffload-v0", "edgelam/RobustRouting-v0"])
def test_envs_without_a_budget_report_no_cost(env_id):
    assert not find_spec(env_id).cost_keys
    steps = parallel_episode_infos(env_id, {"episode_length": 5})
    assert all("cost" not in info for infos in steps for info in infos.values())


def _env_class(spec) -> type:
    """The env class of a spec: its entry point, or the class its factory is annotated to return."""
    obj = load_attribute(spec.entry_point)
    return obj if isinstance(obj, type) else typing.get_type_hints(obj)["return"]


@pytest.mark.parametrize("env_id", sorted(HAND_LIMITS))
def test_the_docstrings_cost_paragraph_states_the_spec_cost_limit(env_id):
    spec = find_spec(env_id)
    doc = _env_class(spec).__doc__
    paragraph = doc[doc.index("Cost (Safety-Gymnasium's convention)"):].split("\n\n", 1)[0]
    assert "``info[\"cost\"]``" in paragraph and "``cost_limit(scenario)``" in paragraph
    stated = re.findall(r"([\d.]+(?:e\d+)?) (?:J|B) in scenario ``(\w+)``", paragraph)  # joules or bytes
    assert stated, paragraph
    for value, scenario in stated:
        assert float(value) == pytest.approx(spec.cost_limit(scenario), rel=1e-12), (scenario, value)
