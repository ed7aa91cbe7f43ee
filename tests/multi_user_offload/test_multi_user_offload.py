"""MultiUserOffload-v0: shared-resource costs, the square-root split, cvxpy baseline, SuperSuit conversion."""

from __future__ import annotations

import numpy as np
import pytest

from edgelam import baselines
from edgelam.baselines.multi_user_offload import optimal_allocation, sqrt_allocation
from edgelam.envs.multi_user_offload.dynamics import equal_shares, slot_costs
from edgelam.envs.offload.dynamics import CLOUD, DEVICE, EDGE
from edgelam.envs.registration import make_parallel
from tests.offload.toy import write_toy_profile

ENV_ID = "edgelam/MultiUserOffload-v0"


@pytest.fixture(scope="module")
def toy_dir(tmp_path_factory):
    return write_toy_profile(tmp_path_factory.mktemp("mu_offload_profile"))


def _env(toy_dir, **kw):
    return make_parallel(ENV_ID, profile_dir=toy_dir, **kw)


def test_sqrt_allocation_matches_cvxpy_and_is_feasible():
    a = np.array([1.0, 4.0, 9.0, 0.25])
    closed = sqrt_allocation(a)
    np.testing.assert_allclose(closed, np.array([1, 2, 3, 0.5]) / 6.5)
    solved = optimal_allocation(a)
    assert np.all(solved >= 0) and solved.sum() <= 1.0 + 1e-9
    np.testing.assert_allclose(solved, closed, rtol=1e-3)
    # the optimum beats the equal split: (sum sqrt a)^2 < n sum a
    assert np.sum(a / closed) == pytest.approx(6.5**2)
    assert np.sum(a / closed) < np.sum(a / np.full(4, 0.25))


def test_slot_costs_share_the_band_and_the_edge(toy_dir):
    env = _env(toy_dir, num_users=2)
    env.reset(seed=0)
    t, cfg = env.tables, env.config
    prompts, se = np.array([0, 1]), np.array([2.0, 4.0])
    alone = np.array([EDGE, DEVICE])
    both = np.array([EDGE, EDGE])
    args = (se,)
    lat1, _, _, a = slot_costs(t, prompts, alone, *args, *equal_shares(alone), cfg.channel.bandwidth_hz, 0.5, 0.1)
    lat2, _, _, _ = slot_costs(t, prompts, both, *args, *equal_shares(both), cfg.channel.bandwidth_hz, 0.5, 0.1)
    # hand-checked: a = bits / (B se); user 0 alone at the edge gets the full band and half the edge (u = 0.5)
    assert a[0] == pytest.approx(t.up_bits[0] / (cfg.channel.bandwidth_hz * 2.0))
    assert lat1[0] == pytest.approx(a[0] + t.compute_s[0, EDGE] / 0.5 + t.edge_rtt_s + t.down_s)
    # user 1 joining the edge halves user 0's band and compute share
    assert lat2[0] == pytest.approx(2 * a[0] + 2 * t.compute_s[0, EDGE] / 0.5 + t.edge_rtt_s + t.down_s)


def test_one_users_choice_changes_anothers_latency(toy_dir):
    env = _env(toy_dir, num_users=3)
    lat = []
    for other in (DEVICE, CLOUD):
        env.reset(seed=5)
        _, _, _, _, infos = env.step({"user_0": EDGE, "user_1": other, "user_2": DEVICE})
        lat.append(infos["user_0"]["latency_s"])
    assert lat[1] > lat[0]


def test_cvxpy_baseline_sets_a_feasible_sqrt_split(toy_dir):
    env = _env(toy_dir, num_users=4, **{"channel.bandwidth_hz": 1e5})
    pol = baselines.make("cvxpy", env)
    obs, _ = env.reset(seed=2)
    for _ in range(5):
        actions, _ = pol.predict(obs)
        tiers = np.array([actions[a] for a in env.possible_agents])
        band, _compute = pol.allocation(tiers, sqrt_allocation)
        obs, _, _, _, infos = env.step(actions)
        got = np.array([infos[a]["band_share"] for a in env.possible_agents])
        off = tiers != DEVICE
        assert got.sum() <= 1 + 1e-6 and np.all(got[off] > 0)
        np.testing.assert_allclose(got[off], band[off], rtol=1e-3)
        assert not infos["user_0"]["allocation_projected"]


def test_joint_policy_per_agent_calls_equal_dict_call(toy_dir):
    env = _env(toy_dir)
    pol = baselines.make("greedy", env)
    obs, _ = env.reset(seed=3)
    joint, _ = pol.predict(obs)
    single = {a: pol.predict(obs[a])[0] for a in env.agents}
    assert joint == single


def test_baselines_beat_random_on_global_reward(toy_dir):
    means = {}
    for name in ("random", "greedy", "cvxpy"):
        env = _env(toy_dir, episode_length=30)
        rng = np.random.default_rng(0)
        pol = None if name == "random" else baselines.make(name, env)
        obs, _ = env.reset(seed=0)
        total = []
        while env.agents:
            acts = {a: np.int64(rng.integers(3)) for a in env.agents} if pol is None else pol.predict(obs)[0]
            obs, _, _, _, infos = env.step(acts)
            total.append(infos["user_0"]["global_reward"])
        means[name] = np.mean(total)
    assert means["cvxpy"] > means["random"] and means["greedy"] > means["random"]


def test_bad_config_and_action(toy_dir):
    with pytest.raises(ValueError, match="num_users"):
        _env(toy_dir, num_users=0)
    with pytest.raises(ValueError, match="episode_length"):
        _env(toy_dir, episode_length=0)
    with pytest.raises(ValueError, match="backend"):
        make_parallel(ENV_ID, backend="imaginary")
    env = _env(toy_dir)
    env.reset(seed=0)
    with pytest.raises(ValueError, match="action"):
        env.step({a: 3 for a in env.agents})


def test_supersuit_parameter_sharing_for_sb3(toy_dir):
    from edgelam.agents.marl import parallel_vec_env

    env = _env(toy_dir)
    first = env.possible_agents[0]
    assert all(env.observation_space(a) == env.observation_space(first) for a in env.possible_agents)
    assert all(env.action_space(a) == env.action_space(first) for a in env.possible_agents)
    # through SuperSuit (the SB3 vec env parameter sharing trains on), row c n + j is user j of copy c:
    # its observation and reward are those of a plain env reset with seed + c stepped with the same actions
    venv = parallel_vec_env(lambda: _env(toy_dir), n_envs=2, seed=3)
    refs = [_env(toy_dir) for _ in range(2)]
    obs = venv.reset()
    ref_obs = [r.reset(seed=3 + c)[0] for c, r in enumerate(refs)]
    assert obs.shape == (2 * env.n, 8)
    rng = np.random.default_rng(0)
    for _ in range(4):
        np.testing.assert_array_equal(obs, np.stack([o[a] for o in ref_obs for a in env.possible_agents]))
        actions = rng.integers(0, 3, size=2 * env.n)  # DEVICE, EDGE or CLOUD, row by row
        obs, rewards, _dones, _infos = venv.step(actions)
        ref_rewards = []
        for c, r in enumerate(refs):
            out = r.step({a: int(actions[c * env.n + j]) for j, a in enumerate(r.possible_agents)})
            ref_obs[c] = out[0]
            ref_rewards += [out[1][a] for a in r.possible_agents]
        np.testing.assert_allclose(rewards, ref_rewards, rtol=1e-6)  # SB3 stores rewards as float32
        assert len(set(np.round(rewards, 6))) > 1
    venv.close()


def test_slots_draw_log_normal_rtts_and_play_battery_and_offloading_by_hand():
    """The cloud RTT is log-normal around wan.rtt_mean_s with an AR(1) log-latent that stays N(0, 1);
    a slot drains each battery by its energy and records the share of users that offloaded."""
    from edgelam.envs.multi_user_offload import dynamics as dyn
    from edgelam.envs.multi_user_offload.env import parallel_env as muo_parallel_env

    env = muo_parallel_env()
    params = env.params
    wan = params.config.wan
    rng = np.random.default_rng(0)
    state, _ = dyn.initial(params, rng, 20_000)
    assert state.cloud_rtt_s.mean() == pytest.approx(wan.rtt_mean_s, rel=0.02)
    assert np.log(state.cloud_rtt_s).std() == pytest.approx(wan.rtt_log_std, rel=0.03)
    n = params.num_users
    tiers = np.tile(np.arange(n) % 3, (20_000, 1))
    after, _, info = dyn.transition(params, state, tiers, dyn.draw_exogenous(rng, params, 20_000))
    np.testing.assert_allclose(after.battery_j, state.battery_j - info["energy_j"], rtol=1e-12)
    assert np.all(after.offloaded_fraction == np.count_nonzero(tiers[0] != 0) / n)
    assert after.cloud_rtt_s.mean() == pytest.approx(wan.rtt_mean_s, rel=0.02)
    assert np.corrcoef(after.rtt_latent, state.rtt_latent)[0, 1] == pytest.approx(wan.corr, abs=0.02)
    assert after.rtt_latent.std() == pytest.approx(1.0, abs=0.02)
    np.testing.assert_array_equal(after.last_cloud_rtt_s, state.cloud_rtt_s)
    env.close()


def test_the_joint_objective_is_the_negated_team_reward_of_the_slot():
    """JointPolicy._objective, given the true qualities and the slot's true RTT, is minus the sum of the users'
    rewards the env pays for those tiers at those shares: the baselines score tiers by the env's reward."""
    from edgelam.baselines.multi_user_offload import Greedy

    env = make_parallel(ENV_ID)
    env.reset(seed=5)
    base = env.unwrapped if hasattr(env, "unwrapped") else env
    policy = Greedy(base)
    n = base.n
    tiers = np.array([(DEVICE, EDGE, CLOUD)[i % 3] for i in range(n)])
    base.state.last_cloud_rtt_s[:] = base.state.cloud_rtt_s  # the estimate the policy prices with = the truth
    band, compute = equal_shares(tiers[None])
    quality = base.tables.quality[base.prompts]
    expected = policy._objective(tiers, band[0], compute[0], quality)
    _, rewards, _, _, infos = env.step({a: int(tiers[i]) for i, a in enumerate(env.possible_agents)})
    assert -sum(rewards.values()) == pytest.approx(expected, rel=1e-9)
    assert infos[env.possible_agents[2]]["cloud_cost_usd"] > 0  # the cloud term is in play
    env.close()


def test_greedy_users_price_an_equal_share_among_last_slots_offloaders():
    """After a slot in which every user offloaded, each user assumes it shares the band and the edge with all
    n - 1 others: its tier is the argmin of its own cost at share 1 / n (the env's slot_costs and reward
    weights). On the hard tier (on default every user picks the cloud whatever the share) the share changes
    some user's choice over 12 slots, so a wrong share is seen."""
    from edgelam.baselines.multi_user_offload import Greedy

    env = make_parallel(ENV_ID, scenario="hard")
    base = env.unwrapped if hasattr(env, "unwrapped") else env
    n, cfg, w = base.n, base.config, base.config.reward

    def own_costs(policy, share):
        quality = policy.expected_quality()
        cost = np.empty((n, 3))
        for k in (DEVICE, EDGE, CLOUD):
            lat, en, usd, _ = slot_costs(base.tables, base.prompts, np.full(n, k), base.spectral_efficiency,
                                         np.full(n, share), np.full(n, share), cfg.channel.bandwidth_hz,
                                         cfg.edge_background_util, base.last_cloud_rtt_s)
            cost[:, k] = w.latency_weight * lat + w.energy_weight_per_j * en + w.cloud_cost_weight_per_usd * usd
            cost[:, k] -= w.quality_weight * quality[:, k]
        return cost

    share_matters, tiers_seen = False, set()
    for seed in range(12):
        env.reset(seed=seed)
        env.step({a: int(EDGE) for a in env.possible_agents})
        assert base.offloaded_fraction == 1.0
        policy = Greedy(base)
        expected = np.argmin(own_costs(policy, 1.0 / n), axis=1)
        np.testing.assert_array_equal(policy.decide(), expected)
        share_matters |= bool(np.any(expected != np.argmin(own_costs(policy, 1.0), axis=1)))
        tiers_seen |= set(expected.tolist())
    assert share_matters and len(tiers_seen) >= 2
    env.close()


def test_optimal_allocation_splits_any_total_in_proportion_to_sqrt_a():
    a = np.array([1.0, 4.0, 9.0])
    x = optimal_allocation(a, total=2.0)
    np.testing.assert_allclose(x, 2.0 * np.sqrt(a) / np.sqrt(a).sum(), rtol=1e-4)
    assert x.sum() == pytest.approx(2.0, rel=1e-6) and x.sum() <= 2.0 + 1e-12
    with pytest.raises(ValueError, match="a: every coefficient must be > 0"):
        optimal_allocation(np.array([1.0, 0.0]))


def test_observation_entries_and_a_split_without_compute_for_an_edge_user():
    """The observation is what its docstring says, by hand; a controller's split that gives an edge user no
    compute is replaced by equal shares and flagged."""
    from edgelam.envs.multi_user_offload import dynamics as dyn
    from edgelam.envs.multi_user_offload.env import parallel_env as muo_parallel_env

    env = muo_parallel_env()
    params, rng = env.params, np.random.default_rng(3)
    state, _ = dyn.initial(params, rng, 4)
    state.last_cloud_rtt_s[:] = [0.05, 3.0, 12.0, 0.2]
    obs = dyn.observation(params, state)
    tokens = params.tables.prompt_tokens[state.prompt]
    np.testing.assert_allclose(obs[..., 1], np.minimum(tokens / 128.0, 32.0), rtol=1e-6)
    np.testing.assert_allclose(obs[:, 0, 4], [0.05, 3.0, 10.0, 0.2], rtol=1e-6)  # clipped at 10 s
    n = params.num_users
    tiers = np.full((4, n), EDGE)
    band = np.full((4, n), 1.0 / n)
    compute = band.copy()
    compute[0, 0] = 0.0  # game 0: an edge user without compute
    requested = np.ones(4, bool)
    _, _, info = dyn.transition(params, state, tiers, dyn.draw_exogenous(rng, params, 4), (requested, band, compute))
    assert info["allocation_projected"].tolist() == [True, False, False, False]
    np.testing.assert_allclose(info["compute_share"][0], 1.0 / n)
    env.close()


def test_joint_policies_expect_each_tiers_quality_from_a_least_squares_line_in_confidence():
    """expected_quality = clip(b_k conf + a_k, 0, 1), (b_k, a_k) the least-squares line of tier k's measured
    quality against the device confidence over the profile's prompts."""
    from edgelam.baselines.multi_user_offload import Greedy

    env = make_parallel(ENV_ID)
    env.reset(seed=2)
    base = env.unwrapped if hasattr(env, "unwrapped") else env
    t = base.tables
    conf = base.device_confidence
    expected = np.empty((base.n, 3))
    for k in range(3):
        slope, intercept = np.polyfit(t.confidence, t.quality[:, k], 1)
        expected[:, k] = np.clip(slope * conf + intercept, 0.0, 1.0)
    np.testing.assert_allclose(Greedy(base).expected_quality(), expected, rtol=1e-12)
    assert len(np.unique(conf)) > 1  # the users' tasks differ
    env.close()


def test_cvxpy_allocation_attains_the_exhaustive_optimum_of_its_objective():
    """On 8 hard-tier slots (8 users), the relaxed-and-rounded decisions with the local search reach the
    least expected objective at the square-root split over all 3^8 tier vectors."""
    import itertools

    from edgelam.baselines.multi_user_offload import CvxpyAllocation, sqrt_allocation

    env = make_parallel(ENV_ID, scenario="hard")
    base = env.unwrapped if hasattr(env, "unwrapped") else env
    every = [np.array(t) for t in itertools.product((DEVICE, EDGE, CLOUD), repeat=base.n)]
    for seed in range(8):
        env.reset(seed=seed)
        policy = CvxpyAllocation(base)
        quality = policy.expected_quality()
        tiers = policy.decide()
        assert policy.solver_status == "optimal"
        got = policy._objective(tiers, *policy.allocation(tiers, sqrt_allocation), quality)
        best = min(policy._objective(t, *policy.allocation(t, sqrt_allocation), quality) for t in every)
        assert got == pytest.approx(best, abs=1e-9), seed
    env.close()
