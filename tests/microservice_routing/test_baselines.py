"""round_robin, shortest_expected_delay and cvxpy routing of MicroserviceRouting-v0 (and RobustRouting-v0)."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
from scipy.optimize import minimize

import edgelam.envs  # noqa: F401
from edgelam import baselines
from edgelam.baselines.microservice_routing import fractional_routing, stage_rates
from edgelam.envs import make_parallel
from edgelam.envs.microservice_routing.dynamics import pending_microservice

ENV_ID = "edgelam/MicroserviceRouting-v0"


def _microservice(env) -> int:
    """The microservice of the pending stage of the env's one row."""
    base = env.unwrapped
    return int(pending_microservice(base.params, base.state)[0])


def test_round_robin_cycles_each_microservices_hosts_in_server_order():
    env = gym.make(ENV_ID)
    obs, _ = env.reset(seed=0)
    tables = env.unwrapped.tables
    policy = baselines.make("round_robin", env)
    seen: dict[int, list[int]] = {}
    for _ in range(300):
        ms = _microservice(env)
        action, _ = policy.predict(obs)
        seen.setdefault(ms, []).append(int(action))
        obs, _, _, _, info = env.step(action)
        assert not info["infeasible_action"]
    placement = env.unwrapped.config.placement
    for ms, chosen in seen.items():
        hosts = sorted(placement[tables.microservices[ms]])
        want = [hosts[i % len(hosts)] for i in range(len(chosen))]
        assert chosen == want, (tables.microservices[ms], chosen[:8], want[:8])


def test_shortest_expected_delay_is_work_ahead_plus_own_service_not_the_transfer():
    env = gym.make(ENV_ID, **{"demand.arrival_rate_hz": 30.0})
    obs, _ = env.reset(seed=1)
    k = env.unwrapped.tables.num_servers
    policy = baselines.make("shortest_expected_delay", env)
    greedy = baselines.make("greedy", env)
    differs = 0
    for _ in range(400):
        hosts = np.flatnonzero(env.unwrapped.action_masks()).tolist()
        # expected delay from the observation alone: backlog and service (both in units of 0.5 s, unclipped here)
        backlog, service = obs[:k], obs[2 * k : 3 * k]
        assert np.all(backlog < 10.0) and np.all(service < 10.0)
        want = hosts[int(np.argmin([backlog[s] + service[s] for s in hosts]))]
        action, _ = policy.predict(obs)
        assert int(action) == want or np.isclose(
            backlog[want] + service[want], backlog[int(action)] + service[int(action)], rtol=1e-6
        )
        differs += int(action) != int(greedy.predict(obs)[0])
        obs, _, terminated, truncated, _ = env.step(action)
        if terminated or truncated:
            obs, _ = env.reset(seed=2)
    assert differs > 0  # it is not greedy: it ignores the backhaul transfer


def _brute_force_routing(lam, service, hosts, max_util):
    """The same convex program by SLSQP over the free fractions (an independent solver)."""
    idx = [(m, s) for m in range(len(lam)) for s in range(hosts.shape[1]) if hosts[m, s] and lam[m] > 0]

    def unpack(z):
        x = np.zeros(hosts.shape)
        for v, (m, s) in zip(z, idx, strict=True):
            x[m, s] = v
        return x

    def objective(z):
        rho = (lam[:, None] * service * unpack(z)).sum(axis=0)
        return float(np.sum(rho / (1.0 - rho)))

    cons = [{"type": "eq", "fun": lambda z, m=m: unpack(z)[m].sum() - 1.0} for m in range(len(lam)) if lam[m] > 0]
    cons.append({"type": "ineq", "fun": lambda z: max_util - (lam[:, None] * service * unpack(z)).sum(axis=0)})
    z0 = np.array([1.0 / hosts[m].sum() for m, _ in idx])
    res = minimize(objective, z0, bounds=[(0, 1)] * len(idx), constraints=cons, method="SLSQP",
                   options={"ftol": 1e-12, "maxiter": 500})
    assert res.success, res.message
    return unpack(res.x), res.fun


def test_cvxpy_routing_is_feasible_and_optimal_on_the_default_scenario():
    env = gym.make(ENV_ID)
    env.reset(seed=0)
    tables, state = env.unwrapped.tables, env.unwrapped.state
    mix = state.mix[0].tolist()
    lam, service = stage_rates(tables, float(state.rate_hz[0]), mix)
    # hand check of the rates: text_chat is 40% of 14 req/s and uses the text encoder once
    te = tables.microservices.index("text_encoder")
    assert lam[te] == pytest.approx(14.0 * sum(share * tables.stage_ms[p].count(te) for p, share in enumerate(mix)))
    hosts = state.hosts[0]
    x, status = fractional_routing(lam, service, hosts, max_util=0.99)
    assert status == "optimal"
    used = lam > 0
    np.testing.assert_allclose(x[used].sum(axis=1), 1.0, atol=1e-6)
    assert np.all(x >= 0) and np.all(x[~hosts] == 0)
    rho = (lam[:, None] * service * x).sum(axis=0)
    assert np.all(rho <= 0.99 + 1e-6)
    _, ref_obj = _brute_force_routing(lam, service, hosts, 0.99)
    assert np.sum(rho / (1 - rho)) == pytest.approx(ref_obj, rel=1e-4)
    # a naive split (uniform over the hosts) is feasible here and no better
    uniform = np.where(hosts, 1.0 / hosts.sum(axis=1, keepdims=True), 0.0)
    rho_u = (lam[:, None] * service * uniform).sum(axis=0)
    if np.all(rho_u < 1):
        assert np.sum(rho / (1 - rho)) <= np.sum(rho_u / (1 - rho_u)) + 1e-9


def test_cvxpy_routing_samples_its_fractions_and_falls_back_on_overload():
    env = gym.make(ENV_ID)
    obs, _ = env.reset(seed=0)
    policy = baselines.make("cvxpy", env)
    x = policy.routing()
    counts = np.zeros_like(x)
    for _ in range(2000):
        ms = _microservice(env)
        action, _ = policy.predict(obs)
        counts[ms, int(action)] += 1
        obs, _, _, truncated, info = env.step(action)
        assert not info["infeasible_action"]
        if truncated:
            obs, _ = env.reset()
    freq = counts / np.maximum(counts.sum(axis=1, keepdims=True), 1)
    busy = counts.sum(axis=1) > 300
    np.testing.assert_allclose(freq[busy], x[busy], atol=0.06)
    assert policy.solver_fallbacks == 0
    # more load than the hosts can serve: no feasible fractions, a safe fallback, counted
    hot = gym.make(ENV_ID, **{"demand.arrival_rate_hz": 5000.0})
    hot.reset(seed=0)
    fallback = baselines.make("cvxpy", hot)
    action, _ = fallback.predict(None)
    assert hot.unwrapped.action_masks()[int(action)] and fallback.solver_fallbacks == 1
    assert fallback.last_status in ("infeasible", "infeasible_inaccurate")


def test_new_routing_baselines_run_on_robust_routing_and_adapt_to_the_adversary():
    env = make_parallel("edgelam/RobustRouting-v0")
    obs, _ = env.reset(seed=0)
    for name in ("round_robin", "shortest_expected_delay", "cvxpy"):
        assert name in baselines.available("edgelam/RobustRouting-v0")
    policy = baselines.make("cvxpy", env)
    before = policy.routing().copy()
    adv = np.ones(env.action_space("adversary").shape, dtype=np.float32)
    action, _ = policy.predict(obs["router"])
    env.step({"router": action, "adversary": adv})
    after = policy.routing()
    assert not np.allclose(before, after)  # the adversary raised the rate and skewed the mix: a new solution


def test_random_masked_is_seeded_by_the_evaluation_seed():
    from edgelam.agents.evaluate import evaluate

    first = evaluate("random_masked", "edgelam/MicroserviceRouting-v0", episodes=2, seed=7,
                     env_kwargs={"episode_length": 60})
    again = evaluate("random_masked", "edgelam/MicroserviceRouting-v0", episodes=2, seed=7,
                     env_kwargs={"episode_length": 60})
    assert [r["return"] for r in first] == [r["return"] for r in again]  # an unseeded one differs run to run
