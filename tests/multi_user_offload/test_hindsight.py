"""MultiUserOffload-v0 hindsight: per-slot enumeration of the joint tiers with the square-root split."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

import edgelam.envs  # noqa: F401  (registers the ids)
from edgelam import baselines
from edgelam.agents.evaluate import evaluate
from edgelam.baselines import multi_user_offload_hindsight as muh
from edgelam.baselines.hindsight import fork
from edgelam.baselines.multi_user_offload import CvxpyAllocation, sqrt_allocation
from edgelam.envs.offload.dynamics import CLOUD, DEVICE, EDGE
from edgelam.envs.registration import make_parallel
from tests import hindsight_checks

ENV_ID = "edgelam/MultiUserOffload-v0"
SEED = 10000


def _env(**overrides):
    env = make_parallel(ENV_ID, **overrides)
    env.reset(seed=SEED)
    return env


def _step(sim, tiers, split=None) -> float:
    """One slot of ``sim`` (a fork) with ``tiers`` and the split (None: the env's equal shares): the mean reward."""
    if split is not None:
        sim.set_allocation(*split)
    _, rewards, _, _, _ = sim.step(dict(zip(sim.possible_agents, (int(k) for k in tiers), strict=True)))
    return float(np.mean(list(rewards.values())))


def _sqrt_split(sim, tiers):
    """The cvxpy baseline's own square-root split of ``tiers`` (its closed form), independent of the solver."""
    return CvxpyAllocation(sim).allocation(np.asarray(tiers), sqrt_allocation)


def _play(env, actions, allocations=None) -> float:
    """Return (mean over agents) of the joint ``actions`` played on a fork, with the splits ``allocations``."""
    sim = fork(env)
    returns = []
    for t, joint in enumerate(actions):
        returns.append(_step(sim, [joint[a] for a in sim.possible_agents], None if allocations is None
                             else allocations[t]))
    return float(np.sum(returns))


def test_the_played_plan_realises_its_exact_value():
    rows = evaluate("hindsight", ENV_ID, episodes=3, seed=SEED)  # agent by agent (evaluate_parallel)
    for row in rows:
        assert row["length"] == 200 and row["hindsight_exact"] == 1.0 and row["hindsight_fallback"] == 0.0
        assert row["return"] == pytest.approx(row["hindsight_value"], rel=1e-9)
    # the joint-dict interface plays the same plan, the split included
    env = _env(episode_length=30)
    policy = baselines.make("hindsight", env)
    obs, total = env.reset(seed=SEED)[0], 0.0
    while env.agents:
        joint, _ = policy.predict(obs, episode_start=np.array([env.step_count == 0]))
        assert env._allocation is not None  # the plan's split, set for this step
        obs, rewards, _, _, infos = env.step(joint)
        assert not any(i["allocation_projected"] for i in infos.values())
        total += float(np.mean(list(rewards.values())))
    assert total == pytest.approx(policy.last_plan.value, rel=1e-9)


def test_exact_value_equals_brute_force_over_every_tier_sequence_of_a_toy_episode():
    steps = 3
    env = _env(num_users=2, episode_length=steps)
    plan = muh.solve(env)
    assert plan.kind == "exact" and not plan.fallback
    every = list(itertools.product((DEVICE, EDGE, CLOUD), repeat=env.n))  # each with its square-root split
    optimum = hindsight_checks.brute_force(env, every, steps,
                                           lambda sim, tiers: (_step(sim, tiers, _sqrt_split(sim, tiers)), False))
    assert plan.value == pytest.approx(optimum, rel=1e-9)
    assert _play(env, plan.actions, plan.allocations) == pytest.approx(plan.value, rel=1e-9)


def test_no_other_split_beats_the_square_root_split():
    # the split half of the exactness claim, through the env's own set_allocation and step
    env = _env(episode_length=10)
    rng = np.random.default_rng(0)
    sim = fork(env)
    for _ in range(6):
        tiers = rng.integers(3, size=env.n)
        tiers[:2] = (EDGE, CLOUD)  # at least two users share the band, one the edge
        if (tiers == EDGE).sum() < 2:
            tiers[2] = EDGE
        best = _step(fork(sim), tiers, _sqrt_split(sim, tiers))
        band, compute = _sqrt_split(sim, tiers)
        assert _step(fork(sim), tiers) <= best + 1e-12  # equal shares
        for _ in range(20):
            off, edge = tiers != DEVICE, tiers == EDGE
            other_band, other_compute = np.zeros(env.n), np.zeros(env.n)
            other_band[off] = rng.dirichlet(np.ones(off.sum()))
            other_compute[edge] = rng.dirichlet(np.ones(edge.sum()))
            mix = rng.uniform(0.0, 1.0)  # near and far from the optimum
            trial = (mix * band + (1 - mix) * other_band, mix * compute + (1 - mix) * other_compute)
            assert _step(fork(sim), tiers, trial) <= best + 1e-12
        _step(sim, tiers)
    # and on a fine grid of the band split of two cloud users
    env2 = _env(num_users=2, episode_length=3)
    best = _step(fork(env2), (CLOUD, CLOUD), _sqrt_split(env2, (CLOUD, CLOUD)))
    grid = [_step(fork(env2), (CLOUD, CLOUD), (np.array([x, 1 - x]), np.zeros(2))) for x in np.linspace(0.01, 0.99, 99)]
    assert max(grid) <= best + 1e-12 and max(grid) > best - 1e-3


def test_hindsight_value_bounds_every_baseline_on_the_same_episodes():
    margins = hindsight_checks.hindsight_margins(ENV_ID, SEED, env_kwargs={"episode_length": 40})
    assert margins["random"] > 5.0 and margins["greedy"] > 0.0 and margins["cvxpy"] > 0.0


def test_a_solver_failure_falls_back_to_the_cvxpy_baseline_flagged(monkeypatch):
    def broken(env, exact):
        raise RuntimeError("solver exploded")

    monkeypatch.setattr(muh, "_replay", broken)
    env = _env(episode_length=8)
    plan = muh.solve(env)
    assert plan.fallback and plan.kind == "planner" and "solver exploded" in plan.solver and "cvxpy" in plan.solver
    assert _play(env, plan.actions, plan.allocations) == pytest.approx(plan.value, rel=1e-9)
    row = evaluate("hindsight", ENV_ID, episodes=1, seed=SEED, env_kwargs={"episode_length": 8})[0]
    assert row["hindsight_fallback"] == 1.0 and row["return"] == pytest.approx(row["hindsight_value"], rel=1e-9)

    import edgelam.baselines.multi_user_offload as mu

    monkeypatch.setattr(mu, "CvxpyAllocation", None)  # cvxpy fails too: every user on its device
    plan = muh.solve(env)
    assert plan.fallback and "device" in plan.solver
    assert all(set(joint.values()) == {DEVICE} for joint in plan.actions)


def test_a_solver_blind_to_the_trace_or_to_the_split_does_worse():
    env = _env(episode_length=50)
    plan = muh.solve(env)
    other = _env(episode_length=50)
    other.reset(seed=SEED + 1)
    blind = muh.solve(other)  # another episode's trace
    assert _play(env, blind.actions, blind.allocations) < plan.value - 0.3
    # the right tiers without the plan's split (the env's equal shares) realise less
    assert _play(env, plan.actions) < plan.value - 1e-3


def test_the_lagrangian_bound_bounds_the_exact_optimum_and_its_plan():
    # the many-user path on a few users, where the exact optimum is known
    env = _env(episode_length=20)
    exact, bound = muh.solve(env), muh._replay(env, exact=False)
    assert exact.kind == "exact" and bound.kind == "bound"
    realised = _play(env, bound.actions, bound.allocations)
    assert realised <= exact.value * (1 + 1e-12) + 1e-12
    assert bound.value >= exact.value
    assert bound.value - exact.value < 0.03 * abs(exact.value)  # a useful bound: within 3% here
    assert realised > exact.value - 0.01 * abs(exact.value)  # and a good plan


def test_many_users_get_the_bound_whose_plan_realises_at_most_its_value():
    n = muh.MAX_EXACT_USERS + 2
    env = _env(num_users=n, episode_length=15)
    plan = muh.solve(env)
    assert plan.kind == "bound" and not plan.fallback and "Lagrangian" in plan.solver
    realised = _play(env, plan.actions, plan.allocations)
    assert realised <= plan.value * (1 + 1e-12) and realised > plan.value - 0.03 * abs(plan.value)
    row = evaluate("hindsight", ENV_ID, 1, SEED, env_kwargs={"num_users": n, "episode_length": 15})[0]
    assert row["hindsight_bound"] == 1.0 and row["return"] == pytest.approx(realised, rel=1e-9)
    for name in ("greedy", "random"):
        other = evaluate(name, ENV_ID, 1, SEED, env_kwargs={"num_users": n, "episode_length": 15})[0]["return"]
        assert other <= plan.value
    # a reward that is not of the form g - c / x - d / y (here: a term in the band share squared) is caught:
    # no bound is claimed for it
    real = muh.transition

    def bent(params, state, tiers, exo, allocation=None):
        after, reward, info = real(params, state, tiers, exo, allocation)
        return after, reward if allocation is None else reward + 0.1 * allocation[1] ** 2, info

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(muh, "transition", bent)
        plan = muh.solve(env)
    assert plan.fallback and plan.kind == "planner" and "not g - c / x - d / y" in plan.solver


@pytest.mark.slow
def test_live_backend_solves_the_same_plan_as_replay(tmp_path):
    # the live models' numbers equal the shipped profile's on these tasks, so the plans agree
    from tests.multi_user_offload.heldout import write_heldout_subset

    subset = write_heldout_subset(tmp_path, 40)
    plans = {}
    for backend in ("replay", "live"):
        env = make_parallel(ENV_ID, backend=backend, profile_dir=subset, episode_length=10)
        env.reset(seed=SEED)
        plans[backend] = muh.solve(env)
        assert plans[backend].kind == "exact" and not plans[backend].fallback
    assert plans["live"].actions == plans["replay"].actions
    assert plans["live"].value == pytest.approx(plans["replay"].value, rel=1e-9)
