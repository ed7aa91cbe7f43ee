"""MicroserviceRouting-v0 hindsight: a certified no-queueing bound (checked against every action sequence of toy
episodes and against the baselines) and the rollout planner it plays (its return is the env's, bit for bit)."""

from __future__ import annotations

import copy
import itertools

import gymnasium as gym
import numpy as np
import pytest

import edgelam.envs  # noqa: F401  (registers the ids)
from edgelam import baselines
from edgelam.agents.evaluate import evaluate
from edgelam.baselines import microservice_routing_hindsight as mrh
from edgelam.baselines.hindsight import rollout
from edgelam.envs.microservice_routing.dynamics import BLOCK, action_mask, advance

ENV_ID = "edgelam/MicroserviceRouting-v0"
SEED = 10000
BUSY_WALKERS = {"demand.handover_rate_hz": 20.0}  # users hand over between most requests: the generator matters


def _env(scenario: str = "default", seed: int = SEED, **overrides) -> gym.Env:
    env = gym.make(ENV_ID, scenario=scenario, **overrides)
    env.reset(seed=seed)
    return env


def _returns_of_every_sequence(env: gym.Env) -> np.ndarray:
    """The return of every action sequence of the (short) episode, each on copies of the env's state and generator."""
    base = env.unwrapped
    steps, n = base.config.episode_length, base.num_actions
    out = []
    for seq in itertools.product(range(n), repeat=steps):
        state, rng = base.state.copy(), copy.deepcopy(base.np_random)
        out.append(sum(float(advance(base.params, state, np.array([a]), rng).reward[0]) for a in seq))
    return np.array(out)


def _best_masked_return(env: gym.Env) -> float:
    """The best return over every sequence of valid actions of the (short) episode, by depth-first search.

    An unmasked action is routed as the nearest host's would be and pays the infeasible penalty on top,
    so the best over all sequences is the best over the valid ones.
    """
    base = env.unwrapped
    params = base.params

    def best(state, rng, left: int) -> float:
        if left == 0:
            return 0.0
        out = -np.inf
        for a in np.flatnonzero(action_mask(params, state)[0]):
            s, r = state.copy(), copy.deepcopy(rng)
            reward = float(advance(params, s, np.array([a]), r).reward[0])
            out = max(out, reward + best(s, r, left - 1))
        return out

    return best(base.state, base.np_random, base.config.episode_length)


@pytest.mark.parametrize("scenario", ["default", "migration"])
def test_rows_carry_a_bound_at_or_above_the_realised_return(scenario):
    rows = evaluate("hindsight", ENV_ID, episodes=3, seed=SEED, scenario=scenario)
    for row in rows:
        assert row["hindsight_bound"] == 1.0 and row["hindsight_exact"] == 0.0 and row["hindsight_fallback"] == 0.0
        assert row["return"] <= row["hindsight_value"]


def test_the_bound_holds_past_the_first_block_of_arrivals():
    row = evaluate("hindsight", ENV_ID, episodes=1, seed=SEED, env_kwargs={"episode_length": 1100})[0]
    assert row["completed"] + 1 > BLOCK  # requests of the second block, drawn after the actions moved the generator
    assert row["hindsight_bound"] == 1.0 and row["return"] <= row["hindsight_value"]


@pytest.mark.parametrize(("scenario", "steps"), [("default", 4), ("migration", 3)])
def test_the_bound_is_above_every_action_sequence_of_a_toy_episode(scenario, steps):
    for seed in (SEED, SEED + 1):
        env = _env(scenario, seed, episode_length=steps, **BUSY_WALKERS)
        bound = mrh.solve(env).value
        returns = _returns_of_every_sequence(env)
        assert returns.max() <= bound, (seed, returns.max(), bound)


def test_the_bound_is_the_optimum_where_nothing_queues_and_the_backhaul_is_free():
    # a wrong bound (a pipeline mix instead of the realised arrivals, or a constant) would not meet the brute force
    free = {"episode_length": 5, "demand.arrival_rate_hz": 0.01, "hop_latency_s": 0.0,
            "link_bps": [[0.0 if i == j else 1e18 for j in range(4)] for i in range(4)]}
    bounds = []
    for seed in (SEED, SEED + 1, SEED + 2):
        env = _env(seed=seed, **free)
        bound = mrh.solve(env).value
        best = _returns_of_every_sequence(env).max()
        assert best <= bound <= best + 1e-6, (seed, best, bound)
        bounds.append(bound)
    assert len(set(bounds)) > 1  # the bound reads each episode's own arrivals


def test_the_bound_counts_the_waits_of_contending_backbones_and_stays_above_the_optimum(monkeypatch):
    # text chats arriving together (3 stages each): two complete requests whose backbones contend, and a cut one
    crowd = {"episode_length": 7, "demand.arrival_rate_hz": 100.0, "demand.mix": [1.0, 0.0, 0.0], **BUSY_WALKERS}
    for seed in (SEED, SEED + 1):
        env = _env(seed=seed, **crowd)
        bound = mrh.solve(env).value
        assert _best_masked_return(env) <= bound
        with monkeypatch.context() as m:
            m.setattr(mrh, "pair_delays", lambda *a: [])
            assert mrh.solve(env).value > bound  # without the pair term the bound is looser (higher)


def test_the_request_trace_is_the_same_whatever_the_router_does():
    for scenario in ("default", "migration"):
        env = _env(scenario, **BUSY_WALKERS)
        base = env.unwrapped
        rng = np.random.default_rng(1)

        def random_routes(params, state, rng=rng):
            return rng.integers(params.num_actions, size=1)

        args = (base.params, base.state, base.np_random, 400)
        greedy, other = mrh.request_trace(*args), mrh.request_trace(*args, routes=random_routes)
        assert greedy == other and sum(n for _, _, n in greedy) == 400


def test_a_highs_failure_only_loosens_the_bound(monkeypatch):
    env = _env()
    tight = mrh.solve(env)
    monkeypatch.setitem(__import__("sys").modules, "highspy", None)  # import highspy fails
    loose = mrh.solve(env)
    assert "HiGHS failed" in loose.solver and loose.kind == "bound" and not loose.fallback
    assert rollout(env, loose.actions)[0] <= tight.value < loose.value


def test_the_planned_return_is_what_the_env_pays_with_its_own_generator():
    env = _env(**BUSY_WALKERS)
    base = env.unwrapped
    steps = base.config.episode_length
    actions, planned, _ = mrh.rollout_plan(base.params, base.state, base.np_random, steps,
                                           mrh.routing_step(base.params))
    assert rollout(env, [np.int64(a) for a in actions]) == (planned, steps)
    # a solver replaying the trace with another generator than the env's would get another return
    _, other, _ = mrh.rollout_plan(base.params, base.state, np.random.default_rng(0), steps,
                                   mrh.routing_step(base.params))
    assert other != planned


def test_the_bound_is_at_or_above_every_baseline_and_the_plan_at_or_above_greedy():
    episodes = 5
    hindsight = evaluate("hindsight", ENV_ID, episodes=episodes, seed=SEED)
    values = np.array([row["hindsight_value"] for row in hindsight])
    played = np.array([row["return"] for row in hindsight])
    others = [n for n in baselines.available(ENV_ID) if n != "hindsight"]
    assert {"greedy", "random", "random_masked", "cvxpy"} <= set(others)
    for name in others:
        try:
            rows = evaluate(name, ENV_ID, episodes=episodes, seed=SEED)
        except ValueError:  # lyapunov / greedy_migrate need the migration scenario
            continue
        returns = np.array([row["return"] for row in rows])
        assert np.all(returns <= values), (name, returns, values)
        if name == "greedy":
            assert np.all(played >= returns)  # fortified by greedy


def test_the_migration_bound_is_at_or_above_the_migrating_baselines():
    values = np.array([r["hindsight_value"] for r in evaluate("hindsight", ENV_ID, 2, SEED, "migration")])
    for name in ("lyapunov", "greedy_migrate", "greedy"):
        returns = np.array([r["return"] for r in evaluate(name, ENV_ID, 2, SEED, "migration")])
        assert np.all(returns <= values), (name, returns, values)


def test_a_planner_failure_falls_back_to_the_greedy_replay_and_is_flagged(monkeypatch):
    def broken(*args, **kwargs):
        raise RuntimeError("no plan")

    monkeypatch.setattr(mrh, "rollout_plan", broken)
    rows = evaluate("hindsight", ENV_ID, episodes=2, seed=SEED)
    greedy = evaluate("greedy", ENV_ID, episodes=2, seed=SEED)
    for row, ref in zip(rows, greedy, strict=True):
        assert row["hindsight_fallback"] == 1.0 and row["hindsight_bound"] == 0.0
        assert row["return"] == row["hindsight_value"] == ref["return"]
    plan = mrh.solve(_env())
    assert plan.fallback and plan.kind == "planner" and "no plan" in plan.solver


def test_a_bound_failure_keeps_the_plan_and_is_flagged(monkeypatch):
    monkeypatch.setattr(mrh, "latency_bound", lambda *a: (_ for _ in ()).throw(RuntimeError("no bound")))
    env = _env()
    plan = mrh.solve(env)
    assert plan.fallback and plan.kind == "planner" and "no bound" in plan.solver
    assert rollout(env, plan.actions)[0] == plan.value


def test_the_pivot_milp_solves_silently_and_pairs_only_tighten(capfd):
    from edgelam.baselines.microservice_routing_hindsight import pivot_assignment_bound

    cost = np.array([[1.0, 3.0], [1.0, 2.5]])  # both pivots prefer server 0
    capfd.readouterr()
    alone, how = pivot_assignment_bound(cost, [], 2.0)
    shared, _ = pivot_assignment_bound(cost, [(0, 1, 0, 5.0)], 2.0)  # sharing server 0 delays by 5 s
    assert "HiGHS" not in capfd.readouterr().out  # no banner from C++ on stdout
    assert how.startswith("HiGHS") and alone == pytest.approx(2.0, abs=1e-5)
    assert shared == pytest.approx(min(2.0 + 5.0, 1.0 + 2.5, 3.0 + 1.0), abs=1e-5)  # 3.5: split them
