"""SplitInference-v0 hindsight: exact per-request enumeration, checked by brute force and against the baselines."""

from __future__ import annotations

import itertools

import gymnasium as gym
import numpy as np
import pytest

import edgelam.envs  # noqa: F401  (registers the ids)
from edgelam import baselines
from edgelam.agents.evaluate import evaluate
from edgelam.baselines import split_inference_hindsight as sih
from edgelam.baselines.hindsight import fork, rollout
from edgelam.envs.split_inference.dynamics import BLOCK, SLOT, State, advance
from tests import hindsight_checks

ENV_ID = "edgelam/SplitInference-v0"
SCENARIO = "congested_edge"  # a loaded edge: the best split changes from request to request
SEED = 10000


def _env(**overrides) -> gym.Env:
    env = gym.make(ENV_ID, scenario=SCENARIO, **overrides)
    env.reset(seed=SEED)
    return env


@pytest.mark.parametrize("overrides", [{}, {"episode_length": BLOCK + 44}], ids=["one_block", "two_blocks"])
def test_the_played_plan_realises_its_exact_value(overrides):
    rows = evaluate("hindsight", ENV_ID, episodes=3, seed=SEED, scenario=SCENARIO, env_kwargs=overrides)
    for row in rows:
        assert row["length"] == overrides.get("episode_length", 200)
        assert row["hindsight_exact"] == 1.0 and row["hindsight_fallback"] == 0.0
        assert row["return"] == pytest.approx(row["hindsight_value"], rel=1e-9)


def _per_action_rewards(env, state: State) -> np.ndarray:
    """The reward of every action on the pending request of ``state``, each on its own copy (the env's step)."""
    out = []
    for action in sih.action_grid(env.num_layers):
        trial = state.copy()
        out.append(float(advance(env.params, trial, action[None].copy(), np.random.default_rng(0))[0].reward[0]))
    return np.array(out)


def test_rewards_do_not_depend_on_the_history_of_actions():
    # the exactness argument: after different actions (different virtual queues) the next request's reward
    # of every action is the same, and the trace goes on the same
    env = _env().unwrapped
    histories = {}
    for name, action in (("device", [env.num_layers, 2]), ("edge", [0, 2]), ("split", [6, 0])):
        sim = fork(env)
        for _ in range(7):
            sim.step(np.array(action))
        histories[name] = (sim.virtual_queue, _per_action_rewards(sim, sim.state), sim.state.block[:, 7:, 0].copy())
    queues = [h[0] for h in histories.values()]
    assert len(set(queues)) == 3  # the histories did change the action-dependent state
    first = histories["device"]
    for _, rewards, block in histories.values():
        np.testing.assert_array_equal(rewards, first[1])
        np.testing.assert_array_equal(block, first[2])


def test_exact_value_equals_brute_force_over_every_action_sequence_of_a_toy_episode():
    steps = 4
    env = _env(episode_length=steps)
    layers = env.unwrapped.num_layers
    subset = np.array([[a, b] for a, b in itertools.product((0, 6, layers // 2, layers), (0, 2))][1:7])
    plan = sih.solve(env, action_set=subset)
    assert plan.kind == "exact" and not plan.fallback
    assert len({tuple(a) for a in plan.actions}) > 1  # not a constant action: the toy has choices to make
    assert plan.value == pytest.approx(hindsight_checks.brute_force(env, subset, steps), rel=1e-9)
    assert rollout(env, plan.actions)[0] == pytest.approx(plan.value, rel=1e-9)
    # the full action set does at least as well, and each of its actions is the request's best
    full = sih.solve(env)
    assert full.value >= plan.value - 1e-12
    sim = fork(env)
    for action in full.actions:
        rewards = _per_action_rewards(sim, sim.state)
        assert rewards.max() == rewards[int(action[0]) * 3 + int(action[1])]
        sim.step(action)


def test_hindsight_value_bounds_every_baseline_on_the_same_episodes():
    margins = hindsight_checks.hindsight_margins(ENV_ID, SEED, episodes=4, scenario=SCENARIO)
    # strictly better than the policies that cannot see the request's true rate and quality
    assert margins["random"] > 50.0 and margins["device_only"] > 5.0 and margins["neurosurgeon"] > 0.0


def test_a_solver_failure_falls_back_to_the_oracle_flagged(monkeypatch):
    def broken(env, grid):
        raise RuntimeError("solver exploded")

    monkeypatch.setattr(sih, "_enumerate", broken)
    env = _env(episode_length=20)
    plan = sih.solve(env)
    assert plan.fallback and plan.kind == "planner" and "solver exploded" in plan.solver and "oracle" in plan.solver
    assert rollout(env, plan.actions)[0] == pytest.approx(plan.value, rel=1e-9)
    policy = baselines.make("hindsight", env)
    action, _ = policy.predict(None, episode_start=np.array([True]))  # never raises out of predict
    assert policy.last_plan.fallback and env.action_space.contains(action)

    import edgelam.baselines.split_inference as si

    monkeypatch.setattr(si, "_Search", None)  # the oracle fails too: the device-only split
    plan = sih.solve(env)
    assert plan.fallback and "device only" in plan.solver
    assert all(int(a[0]) == env.unwrapped.num_layers for a in plan.actions)


def test_a_solver_blind_to_this_episodes_trace_does_worse():
    # the plan of another episode's trace (same scenario, another seed), played on this one
    env = _env()
    other = gym.make(ENV_ID, scenario=SCENARIO)
    other.reset(seed=SEED + 1)
    blind = sih.solve(other).actions
    plan = sih.solve(env)
    assert rollout(env, blind)[0] < plan.value - 1.0
    # and the enumeration really reads the pending slot: a state whose pending column is another slot's
    # prices another request
    state = env.unwrapped.state.copy()
    state.ints[0, SLOT] += 1
    assert not np.array_equal(_per_action_rewards(env.unwrapped, state),
                              _per_action_rewards(env.unwrapped, env.unwrapped.state))


def test_live_backend_is_refused_with_the_reason(monkeypatch):
    env = _env(episode_length=3)
    monkeypatch.setattr(env.unwrapped, "backend", "live")
    with pytest.raises(ValueError, match=r"backend='live'.*replay"):
        sih.solve(env)
