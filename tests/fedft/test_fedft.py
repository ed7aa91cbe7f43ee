"""FedFTAllocation-v0 / FedFTPower-v0: round physics, min-energy solver, baselines, surrogate vs live."""

from __future__ import annotations

import time

import gymnasium as gym
import numpy as np
import pytest

import edgelam.envs  # noqa: F401  (registers the ids)
from edgelam import baselines
from edgelam.baselines.fedft import closed_form_power, min_energy_allocation
from edgelam.envs.core.channel import NOISE_PSD_W_PER_HZ
from edgelam.envs.fedft.data import SEQ_LEN, TOPICS, load_partition
from edgelam.envs.fedft.dynamics import load_surrogate, project_simplex, round_costs, topic_weights, upload_rate_bps
from edgelam.envs.fedft.env import FedFTPowerEnv, parallel_env

ENV_ID = "edgelam/FedFTAllocation-v0"
N0 = NOISE_PSD_W_PER_HZ * 10 ** 0.5  # 5 dB noise figure
BITS = 196_608.0


def _instance(rng: np.random.Generator, k: int = 5):
    """Random feasible-looking instance: gains of 50..400 m macro links with Rayleigh fading."""
    gains = 10 ** (-rng.uniform(100, 130, k) / 10) * rng.exponential(1.0, k)
    deadline = rng.uniform(1.0, 2.5, k)
    return gains, deadline


def _equal_energy(gains, deadline, band, p_max):
    k = gains.size
    rate = upload_rate_bps(np.full(k, band / k), np.full(k, p_max), gains, N0)
    return float(np.sum(p_max * BITS / rate)), rate * deadline >= BITS


# -- pure physics -----------------------------------------------------------------------------------


def test_project_simplex_exact_values_and_properties():
    np.testing.assert_allclose(project_simplex(np.array([0.5, 0.5, 0.5, 0.5])), [0.25] * 4)
    np.testing.assert_allclose(project_simplex(np.array([1.0, 0.0, 0.2])), [0.9, 0.0, 0.1])
    np.testing.assert_allclose(project_simplex(np.array([1.0, 1.0, 0.0])), [0.5, 0.5, 0.0])
    x = np.random.default_rng(0).uniform(0, 1, (50, 6))
    for row in x:
        p = project_simplex(row)
        assert abs(p.sum() - 1.0) < 1e-12 and np.all(p >= 0)
        np.testing.assert_allclose(project_simplex(p), p, atol=1e-12)


def test_round_costs_toy_values_and_deadline_drop():
    # 1 MHz, SNR 3 -> 2 Mbit/s: 1 Mbit in 0.5 s; compute 1e9 cycles at 1 GHz = 1 s, 1e-28*1e9*1e18 = 0.1 J
    gain = 3 * N0 * 1e6 / 0.1
    c = round_costs(1e6, np.array([1e6, 1e6, 0.0]), np.array([0.1, 0.1, 0.1]), np.full(3, gain), N0, 1e9,
                    np.array([1e9, 0.5e9, 1e9]), 1e-28, 1.9)
    np.testing.assert_allclose(c.upload_s[:2], [0.5, 0.5])
    np.testing.assert_array_equal(c.scheduled, [True, True, False])
    np.testing.assert_array_equal(c.participants, [True, False, False])  # the 2nd needs 2 + 0.5 > 1.9 s
    np.testing.assert_allclose(c.compute_energy_j, [0.1, 0.025, 0.0])
    np.testing.assert_allclose(c.upload_energy_j, [0.05, 0.0, 0.0])  # 2nd: window max(1.9 - 2, 0) = 0
    assert c.latency_s == pytest.approx(1.9)


def test_topic_weights_are_the_pooled_topic_shares():
    counts = np.array([[10, 0], [5, 5], [0, 20]])
    sizes = counts.sum(axis=1)
    np.testing.assert_allclose(topic_weights(np.array([True, True, False]), sizes, counts), [0.75, 0.25])
    np.testing.assert_allclose(topic_weights(np.zeros(3, bool), sizes, counts), [0.0, 0.0])


def test_partition_is_shipped_small_and_topical():
    part = load_partition()
    assert part.topics == tuple(TOPICS)
    assert part.train.dtype == np.uint16 and part.train.shape[2] == SEQ_LEN
    assert part.val.shape[:2] == (len(TOPICS), 16)
    # non-IID: a topic's sequences share more tokens with their own topic than with another
    hist = np.stack([np.bincount(t.ravel(), minlength=4096) for t in part.train]).astype(float)
    hist /= hist.sum(axis=1, keepdims=True)
    val = np.stack([np.bincount(v.ravel(), minlength=4096) for v in part.val]).astype(float)
    val /= val.sum(axis=1, keepdims=True)
    overlap = np.minimum(val[:, None, :], hist[None, :, :]).sum(axis=2)  # (val topic, train topic)
    assert np.mean(np.argmax(overlap, axis=1) == np.arange(len(TOPICS))) >= 0.75


# -- min-energy solver ------------------------------------------------------------------------------


def test_min_energy_is_feasible_matches_closed_form_and_beats_equal():
    rng = np.random.default_rng(0)
    band, p_max = 2e5, 0.2
    solved = 0
    for _ in range(8):
        gains, deadline = _instance(rng)
        equal_e, equal_ok = _equal_energy(gains, deadline, band, p_max)
        b, p, status = min_energy_allocation(gains, BITS, deadline, band, N0, p_max, return_status=True)
        if status != "optimal":
            continue
        solved += 1
        rate = upload_rate_bps(b, p, gains, N0)
        assert np.all(rate * deadline >= BITS * (1 - 1e-6)), "a device misses its deadline"
        assert b.sum() <= band * (1 + 1e-9) and np.all(p <= p_max) and np.all(b > 0)
        np.testing.assert_allclose(p, closed_form_power(gains, BITS, deadline, b, N0), rtol=1e-3)
        energy = float(np.sum(p * deadline))
        if equal_ok.all():
            assert energy < equal_e
    assert solved >= 6


def test_min_energy_single_device_is_the_closed_form_on_the_whole_band():
    g = np.array([1e-12])
    b, p = min_energy_allocation(g, BITS, 1.5, 2e5, N0, 0.2)
    assert b[0] == pytest.approx(2e5, rel=1e-6)
    assert p[0] == pytest.approx(N0 * 2e5 / 1e-12 * (2 ** (BITS / (2e5 * 1.5)) - 1), rel=1e-4)


def test_min_energy_strong_device_gets_less_band_than_the_weak_one():
    b, _ = min_energy_allocation(np.array([1e-10, 1e-13]), BITS, 1.5, 2e5, N0, 0.2)
    assert b[1] > b[0]


def test_infeasible_instances_return_the_flagged_fallback():
    g = np.full(5, 1e-12)
    # each device alone meets its deadline on the whole band, five together cannot
    alone = float(upload_rate_bps(np.array([2e5]), np.array([0.2]), g[:1], N0)[0]) * 0.5
    b, p, status = min_energy_allocation(g, alone, 1.0, 2e5, N0, 0.2, return_status=True)
    assert status.startswith("fallback")
    np.testing.assert_allclose(b, np.full(5, 4e4))
    np.testing.assert_allclose(p, np.full(5, 0.2))
    _, _, status = min_energy_allocation(g, 1e12, 1.0, 2e5, N0, 0.2, return_status=True)
    assert status.startswith("fallback: infeasible")
    _, _, status = min_energy_allocation(g, 1.0, 1.0, 0.0, N0, 0.2, return_status=True)
    assert status == "fallback: infeasible (a gain, deadline or band is not positive)"


# -- environments -----------------------------------------------------------------------------------


def _episode(env, policy, seed=0):
    obs, _ = env.reset(seed=seed)
    ret, infos = 0.0, []
    while True:
        action, _ = policy.predict(obs)
        obs, reward, terminated, truncated, info = env.step(action)
        ret += reward
        infos.append(info)
        if terminated or truncated:
            return ret, infos


def test_equal_action_gives_equal_shares_and_reward_formula():
    env = gym.make(ENV_ID)
    env.reset(seed=1)
    k = env.unwrapped.fed.k
    cfg = env.unwrapped.config
    action = np.concatenate([np.zeros(k), np.ones(k)]).astype(np.float32)
    loss0 = env.unwrapped.fed.loss
    _, reward, _, _, info = env.step(action)
    np.testing.assert_allclose(info["bandwidth_hz"], cfg.bandwidth_hz / k)
    np.testing.assert_allclose(info["power_w"], cfg.p_max_w)
    expected = cfg.reward.loss_scale * (loss0 - info["loss"]) - cfg.reward.energy_weight_per_j * info["energy_j"]
    assert reward == pytest.approx(expected)
    assert info["virtual_queue"] == pytest.approx(max(info["energy_j"] - cfg.energy_budget_j, 0.0))


def test_nobody_scheduled_leaves_the_model_and_energy_untouched():
    env = gym.make(ENV_ID)
    env.reset(seed=2)
    k = env.unwrapped.fed.k
    loss0 = env.unwrapped.fed.loss
    _, reward, _, _, info = env.step(-np.ones(2 * k, dtype=np.float32))
    assert info["loss"] == loss0 and info["energy_j"] == 0.0 and reward == 0.0 and info["num_participants"] == 0


def test_an_impossible_deadline_drops_every_device():
    env = gym.make(ENV_ID, deadline_s=0.5)  # computation alone takes >= 1.5 s
    env.reset(seed=0)
    k = env.unwrapped.fed.k
    loss0 = env.unwrapped.fed.loss
    _, _, _, _, info = env.step(np.concatenate([np.zeros(k), np.ones(k)]).astype(np.float32))
    assert info["num_participants"] == 0 and info["num_dropped"] == k
    assert info["loss"] == loss0 and info["energy_j"] > 0 and info["latency_s"] == pytest.approx(0.5)


def test_surrogate_settings_must_match_the_scenario():
    with pytest.raises(ValueError, match="surrogate"):
        gym.make(ENV_ID, **{"lora.rank": 8})


def test_min_energy_baseline_schedules_feasibly_and_saves_energy_over_equal():
    env = gym.make(ENV_ID)
    r_eq, eq = _episode(env, baselines.make("equal", env))
    policy = baselines.make("min_energy", env)
    r_me, me = _episode(env, policy)
    assert policy.solver_status.startswith("optimal")
    assert sum(i["num_dropped"] for i in me) == 0
    assert sum(i["upload_energy_j"] for i in me) < 0.5 * sum(i["upload_energy_j"] for i in eq)
    assert sum(i["num_participants"] for i in me) >= sum(i["num_participants"] for i in eq)
    assert r_me > r_eq


def test_lyapunov_keeps_energy_near_the_budget_where_equal_overspends():
    env = gym.make(ENV_ID)
    budget = env.unwrapped.config.energy_budget_j
    _, eq = _episode(env, baselines.make("equal", env))
    _, ly = _episode(env, baselines.make("lyapunov", env))
    assert np.mean([i["energy_j"] for i in eq]) > 1.5 * budget
    assert np.mean([i["energy_j"] for i in ly]) < 1.2 * budget
    assert ly[-1]["virtual_queue"] < 0.2 * eq[-1]["virtual_queue"]
    assert ly[-1]["loss"] < ly[0]["loss"]


# -- PettingZoo env ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"no_such_key": 1}, "no_such_key"),
        ({"episode_length": 0}, "episode_length"),
        ({"episode_length": "long"}, "episode_length"),
        ({"scenario": "no_such_scenario"}, "no_such_scenario"),
        ({"backend": "imaginary"}, "backend"),
    ],
)
def test_power_env_bad_config(kwargs, match):
    with pytest.raises(ValueError, match=match):
        parallel_env(**kwargs)


def test_power_env_requests_are_normalised_and_rewards_are_shared_minus_own_energy():
    env = parallel_env()
    env.reset(seed=0)
    cfg = env.config
    req = {a: np.array([1.0, -1.0 + 0.5 * i], np.float32) for i, a in enumerate(env.agents)}
    loss0 = env.fed.loss
    _, rewards, _, _, infos = env.step(req)
    shares = np.array([0.25 * i for i in range(env.fed.k)])
    for i, a in enumerate(env.possible_agents):
        assert infos[a]["bandwidth_hz"] == pytest.approx(cfg.bandwidth_hz * shares[i] / shares.sum())
        shared = cfg.reward.loss_scale * (loss0 - infos[a]["loss"])
        assert rewards[a] == pytest.approx(shared - cfg.reward.energy_weight_per_j * infos[a]["energy_j"])
    assert infos["device_0"]["energy_j"] == 0.0  # no band requested: not scheduled


def test_power_env_bad_action_and_equal_policy():
    env = parallel_env()
    env.reset(seed=0)
    with pytest.raises(ValueError, match="action"):
        env.step({a: np.array([2.0, 0.0], np.float32) for a in env.agents})
    policy = baselines.make("equal", env)
    obs, _ = env.reset(seed=0)
    actions, _ = policy.predict(obs)
    _, _, _, _, infos = env.step(actions)
    assert infos["device_0"]["bandwidth_hz"] == pytest.approx(env.config.bandwidth_hz / env.fed.k)


def test_power_env_joint_min_energy_matches_per_agent_calls_and_saves_energy():
    env = parallel_env()
    totals = {}
    for name in ("equal", "min_energy"):
        policy = baselines.make(name, env)
        obs, _ = env.reset(seed=3)
        energy, dropped = 0.0, 0
        while env.agents:
            joint, _ = policy.predict(obs)
            if name == "min_energy":
                single = [policy.predict(obs[a])[0] for a in env.agents]
                for a, act in zip(env.agents, single, strict=True):
                    np.testing.assert_array_equal(act, joint[a])
            obs, _, _, _, infos = env.step(joint)
            first = infos[env.possible_agents[0]]
            energy += first["total_energy_j"]
            dropped += sum(i["bandwidth_hz"] > 0 and not i["participated"] for i in infos.values())
        totals[name] = (energy, dropped)
    assert totals["min_energy"][1] == 0
    assert totals["min_energy"][0] < totals["equal"][0]


def test_power_env_supersuit_parameter_sharing():
    """Through SuperSuit (the SB3 vec env parameter sharing trains on), row c K + j is agent j of copy c:
    its observation and reward are those of a plain env reset with seed + c stepped with the same actions."""
    from edgelam.agents.marl import parallel_vec_env

    env = parallel_env()
    assert isinstance(env, FedFTPowerEnv)
    k = env.fed.k
    venv = parallel_vec_env(parallel_env, n_envs=2, seed=5)
    refs = [parallel_env() for _ in range(2)]
    obs = venv.reset()
    ref_obs = [r.reset(seed=5 + c)[0] for c, r in enumerate(refs)]
    assert obs.shape == (2 * k, 7)
    rng = np.random.default_rng(0)
    for _ in range(3):
        np.testing.assert_array_equal(obs, np.stack([o[a] for o in ref_obs for a in env.possible_agents]))
        actions = rng.uniform(-1.0, 1.0, size=(2 * k, 2)).astype(np.float32)  # a different action per row
        obs, rewards, _, _ = venv.step(actions)
        ref_rewards = []
        for c, r in enumerate(refs):
            out = r.step({a: actions[c * k + j] for j, a in enumerate(r.possible_agents)})
            ref_obs[c] = out[0]
            ref_rewards += [out[1][a] for a in r.possible_agents]
        np.testing.assert_allclose(rewards, ref_rewards, rtol=1e-6)  # SB3 stores rewards as float32
        assert len(set(np.round(rewards, 6))) > 1  # agents pay their own energy: rewards differ across rows
    venv.close()


# -- live backend -----------------------------------------------------------------------------------


@pytest.mark.slow
def test_live_is_deterministic_and_close_to_the_surrogate():
    """Live rounds of the equal policy: same seed, same losses; the surrogate's expected trajectory under the same
    participation stays within 0.01 nats/token + 25% of the live decrease (measured: see the printed numbers)."""
    surrogate = load_surrogate()
    runs = []
    for _ in range(2):
        env = gym.make(ENV_ID, backend="live")
        obs, info = env.reset(seed=5)
        fed = env.unwrapped.fed
        losses, topic = [info["loss"]], fed.topic_loss.copy()
        policy = baselines.make("equal", env)
        t0 = time.perf_counter()
        for _ in range(3):
            obs, _, _, _, info = env.step(policy.predict(obs)[0])
            losses.append(info["loss"])
            w = topic_weights(info["participants"], fed.data_sizes, fed.topic_counts)
            topic = topic - surrogate.mean_decrease(topic, w, info["num_participants"])
        runs.append((np.array(losses), float(topic.mean()), (time.perf_counter() - t0) / 3))
    (live, predicted, secs), (again, _, _) = runs
    np.testing.assert_array_equal(live, again)
    live_drop, predicted_drop = live[0] - live[-1], live[0] - predicted
    print(f"live decrease {live_drop:.4f}, surrogate {predicted_drop:.4f}, {secs:.2f} s/live round")
    assert live_drop > 0
    assert live[0] == pytest.approx(float(surrogate.initial_loss[:5].mean()), abs=1e-4)
    assert abs(live_drop - predicted_drop) < 0.01 + 0.25 * live_drop


def test_min_energy_leaves_out_the_weakest_device_when_all_together_are_infeasible():
    """Four devices each make the deadline alone on the band; together they cannot, since the weak one
    needs nearly all of it. The baseline drops the device of least headroom (only it) and solves again."""
    from types import SimpleNamespace

    from edgelam.baselines.fedft import DEADLINE_MARGIN, MinEnergy

    band, p_max, window = 2e5, 0.2, 1.0
    usable = window * (1.0 - DEADLINE_MARGIN)
    bits = 6 * usable * band  # 6 bit/s/Hz over the whole band: rate grows about linearly with the band
    def gain(h):  # Shannon inverted: alone on the band at p_max, h x bits in the usable window
        return (2 ** (h * bits / usable / band) - 1) * N0 * band / p_max

    gains = np.array([gain(h) for h in (2.5, 1.05, 3.0, 3.5)])
    cfg = SimpleNamespace(bandwidth_hz=band, p_max_w=p_max, noise_w_per_hz=N0)
    fed = SimpleNamespace(cfg=cfg, k=4, gains=gains, bits=bits, upload_window_s=np.full(4, window))
    policy = MinEnergy(SimpleNamespace(unwrapped=SimpleNamespace(fed=fed)))
    assert policy.candidates().all()
    # a device whose upload alone fills 99.9% of the usable window (the window less the margin) is no candidate
    fed.gains = np.append(gains, gain(0.999))
    fed.k, fed.upload_window_s = 5, np.full(5, window)
    assert policy.candidates().tolist() == [True] * 4 + [False]
    fed.gains, fed.k, fed.upload_window_s = gains, 4, np.full(4, window)
    _, _, status = policy.allocate(np.ones(4, bool))
    assert status.startswith("fallback: solver status infeasible")
    scheduled, b, p, status = policy.schedule()
    assert scheduled.tolist() == [True, False, True, True] and policy.left_out == 1
    assert status.startswith("optimal") and b[1] == 0.0 and p[1] == 0.0
    rate = upload_rate_bps(b[scheduled], p[scheduled], gains[scheduled], N0)
    assert np.all(rate * usable >= bits * (1 - 1e-4)) and b.sum() <= band * (1 + 1e-6)


def test_encoded_powers_decode_to_at_least_the_powers_asked_for():
    """The baselines' actions are float32: _encode rounds each power code up so that the env's decoding,
    (a + 1) / 2 p_max, never gives a device less power than the solver asked for."""
    from types import SimpleNamespace

    from edgelam.baselines.fedft import _encode

    fed = SimpleNamespace(cfg=SimpleNamespace(p_max_w=0.2))
    power = np.random.default_rng(0).uniform(1e-4, 0.2, 2000)
    action = _encode(fed, np.full(2000, 1e3), power)
    decoded = (action[2000:].astype(np.float64) + 1.0) / 2.0 * 0.2
    assert np.all(decoded >= power) and np.all(action[2000:] <= 1.0)
    assert np.max(decoded - power) < 1e-7  # rounded up by about one float32 step, no more


def _drawn(overrides: dict, rows: int = 4000):
    from edgelam.envs.core.config import load_scenario
    from edgelam.envs.fedft.config import FedFTConfig
    from edgelam.envs.fedft.dynamics import Params, initial

    cfg = load_scenario(FedFTConfig, "fed_ft_allocation", "default", overrides)
    params = Params.build(cfg)
    state, _ = initial(params, np.random.default_rng(0), rows)
    return cfg, params, state


def test_drawn_devices_follow_the_configured_laws():
    """Rayleigh fading multiplies the large-scale gain (|h|^2 ~ Exp(1)); LOS states follow TR 38.901's
    probability at each device's distance; data sizes cover [lo, hi] inclusive; the Gauss-Markov
    fading keeps unit power (innovation^2 + rho^2 = 1)."""
    cfg, params, state = _drawn({"channel": {"shadowing": False, "los": "prob"}})
    ratio = state.gains / state.large_scale_gain
    assert ratio.mean() == pytest.approx(1.0, abs=0.02)
    assert np.mean(ratio < 1.0) == pytest.approx(1 - np.exp(-1.0), abs=0.01)
    d = np.maximum(state.distances_m, 10.0)
    pl = params.path_loss
    los_gain = 10 ** (-np.asarray(pl.path_loss_db(d, True)) / 10)
    nlos_gain = 10 ** (-np.asarray(pl.path_loss_db(d, False)) / 10)
    is_los = np.isclose(state.large_scale_gain, los_gain, rtol=1e-9, atol=0.0)
    assert np.all(is_los | np.isclose(state.large_scale_gain, nlos_gain, rtol=1e-9, atol=0.0))
    assert is_los.mean() == pytest.approx(float(np.mean(pl.los_probability(d))), abs=0.01)
    lo, hi = cfg.samples_per_device
    assert state.data_sizes.min() == lo and state.data_sizes.max() == hi
    assert params.innovation**2 + params.rho**2 == pytest.approx(1.0, abs=1e-12)
    from scipy.special import j0

    # 10 ms slots at 3 km/h and 3.5 GHz: f_d = v f_c / c = 9.72 Hz (c = 3e8 m/s as TR 38.901 takes it),
    # rho = J0(2 pi f_d T) = 0.909 (Jakes)
    slow_cfg, slow, _ = _drawn({"channel": {"slot_s": 0.01}}, rows=2)
    assert slow_cfg.channel.speed_mps == pytest.approx(3 / 3.6)
    assert slow.rho == pytest.approx(j0(2 * np.pi * (3 / 3.6) * 3.5e9 / 3e8 * 0.01), rel=1e-9)
    assert slow.innovation == pytest.approx(np.sqrt(1 - slow.rho**2), rel=1e-12)


def test_downlink_time_is_bits_over_an_equal_share_of_the_band():
    from edgelam.envs.fedft.dynamics import downlink_time_s

    g, band, psd = np.array([1e-10, 1e-11, 1e-12, 1e-13]), 1e6, 1e-9
    share = band / 4
    expected = 1e6 / (share * np.log2(1 + psd * share * g / (N0 * share)))
    np.testing.assert_allclose(downlink_time_s(1e6, g, band, psd, N0), expected, rtol=1e-12)
    assert downlink_time_s(0.0, g, band, psd, N0).tolist() == [0.0] * 4


def test_split_bits_are_activations_labels_gradients_and_adapters():
    from edgelam.envs.fedft.dynamics import ADAPTER_BITS, LABEL_BITS, ModelCosts

    costs = ModelCosts(num_layers=4, hidden_size=192, seq_len=64, layer_flops=np.ones(4), head_flops=1.0,
                       lora_values_per_rank=np.array([768.0, 768.0, 768.0, 768.0]))
    up, down = costs.split_bits(device_layers=2, batch_size=8, local_steps=3, wire_bits=8, rank=4)
    activations = 8 * 64 * 192 * 8
    labels = 8 * 63 * LABEL_BITS
    assert up == 3 * (activations + labels) + 2 * 768 * 4 * ADAPTER_BITS
    assert down == 3 * activations
    assert costs.split_bits(0, 8, 3, 8, 4) == (3 * (activations + labels), 0.0)
