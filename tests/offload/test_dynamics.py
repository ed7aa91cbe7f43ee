"""Offload-v0's simulator over a batched State: rows independent, the step pure, baselines priced by the step."""

from __future__ import annotations

import numpy as np
import pytest

from edgelam.envs.core.channel import WirelessLink
from edgelam.envs.offload.dynamics import (
    CHUNK,
    EDGE,
    OUTCOME_ROWS,
    Exogenous,
    Params,
    State,
    advance,
    initial,
    observation,
    task_cost,
    transition,
)
from edgelam.envs.offload.env import OffloadEnv


def _params(**overrides) -> Params:
    env = OffloadEnv(**overrides)
    return env.params


def _row(state: State, i: int) -> State:
    """Row ``i`` of ``state`` as a one-row State (copies)."""
    tasks = Exogenous(*(getattr(state.tasks, f)[i : i + 1].copy() for f in Exogenous.__slots__))
    fields = {f: getattr(state, f)[i : i + 1].copy() for f in State.__slots__ if f not in ("tasks", "slot")}
    return State(**fields, tasks=tasks, slot=state.slot)


def _assert_states_equal(a: State, b: State) -> None:
    assert a.slot == b.slot
    for f in State.__slots__:
        if f == "tasks":
            for g in Exogenous.__slots__:
                assert np.array_equal(getattr(a.tasks, g), getattr(b.tasks, g)), g
        elif f != "slot":
            x, y = getattr(a, f), getattr(b, f)
            assert x.dtype == y.dtype and np.array_equal(x, y), f


@pytest.mark.parametrize("overrides", [{}, {"battery_j": 40.0, "budget.metric": "cloud_cost_usd"}])
def test_each_row_of_a_batch_steps_as_that_row_alone(overrides):
    """B rows advanced together give, row by row, what each row gives stepped alone (same slot, same tasks)."""
    params = _params(**overrides)
    b = 6
    state, _ = initial(params, np.random.default_rng(3), WirelessLink(params.config.channel, n_links=b))
    rows = [_row(state, i) for i in range(b)]
    actions = np.random.default_rng(4).integers(0, 3, (40, b))
    rng = np.random.default_rng(5)  # not drawn from: 40 steps stay inside the first block
    for a in actions:
        out = advance(params, state, a, rng)
        for i in range(b):
            one = advance(params, rows[i], a[i : i + 1], rng)
            assert np.array_equal(one.table[:, 0], out.table[:, i]), i
            assert np.array_equal(one.observation[0], out.observation[i]), i
    for i in range(b):
        _assert_states_equal(rows[i], _row(state, i))
    assert len(set(out.table[OUTCOME_ROWS.index("latency_s")])) == b  # the rows really differ


def test_transition_is_pure_and_equals_advance():
    params = _params(**{"budget.per_task": 0.5})
    state, _ = initial(params, np.random.default_rng(0), WirelessLink(params.config.channel, n_links=4))
    before = state.copy()
    actions = np.array([0, 1, 2, 1])
    after, reward, cost, info = transition(params, state, actions, np.random.default_rng(1))
    _assert_states_equal(state, before)  # the input state is left as it was
    out = advance(params, state, actions, np.random.default_rng(1))
    _assert_states_equal(after, state)
    assert np.array_equal(reward, out.reward)
    assert np.array_equal(cost, info["energy_j"])  # the budgeted metric is energy
    assert np.array_equal(info["virtual_queue"], np.maximum(cost - 0.5, 0.0))  # Z(1) = max(0 + y - budget, 0)
    assert list(info["tier"]) == ["device", "edge", "cloud", "edge"]
    assert np.array_equal(observation(params, after), out.observation)


def test_every_step_observes_the_next_task_and_a_block_boundary_draws_the_next_block():
    params = _params()
    state, _ = initial(params, np.random.default_rng(0), WirelessLink(params.config.channel, n_links=3))
    rng = np.random.default_rng(1)
    first = state.tasks.prompt.copy()
    actions = np.random.default_rng(2).integers(0, 3, (CHUNK + 20, 3))
    for t, a in enumerate(actions):
        out = advance(params, state, a, rng)
        assert state.slot == (t + 1) % CHUNK and np.all(state.step == t + 1)
        assert np.array_equal(out.observation, observation(params, state)), t  # the step's view of the next task
        if t == CHUNK - 1:
            assert not np.array_equal(state.tasks.prompt, first)  # a new block


@pytest.mark.parametrize(
    "overrides", [{}, {"budget.metric": "cloud_cost_usd", "budget.per_task": 1e-5, "wan.rtt_mean_s": 4.0}]
)
def test_the_baselines_price_a_task_as_the_step_does_and_read_the_state(overrides):
    """task_cost on what the env shows (the baselines' and oracle's view) equals the step's info, bit for bit."""
    env = OffloadEnv(**overrides)
    obs, info = env.reset(seed=2)
    assert info["uplink_rate_bps"] == env.uplink_rate_bps
    rng = np.random.default_rng(0)
    for _ in range(300):
        s = env.state
        assert env.edge_wait_s == s.edge_work_s[0] and env.virtual_queue == s.virtual_queue[0]
        assert env.prompt_index == s.tasks.prompt[0, s.slot] and env.true_cloud_rtt_s == s.tasks.rtt_s[0, s.slot]
        assert obs[0] == np.float32(env.device_confidence)
        assert obs[3] == np.float32(min(env.edge_wait_s, 100.0))
        assert obs[4] == np.float32(min(env.last_cloud_rtt_s, 10.0))
        a = int(rng.integers(3))
        expected = task_cost(env.tables, env.prompt_index, a, env.uplink_rate_bps, env.edge_wait_s,
                             env.true_cloud_rtt_s)
        rate, wait, queue = env.uplink_rate_bps, env.edge_wait_s, env.virtual_queue
        obs, reward, terminated, truncated, info = env.step(a)
        budget = env.config.budget
        y = info["energy_j"] if budget.metric == "energy_j" else info["cloud_cost_usd"]
        assert info["virtual_queue"] == env.virtual_queue == max(queue + y - budget.per_task, 0.0)
        assert (info["latency_s"], info["energy_j"], info["cloud_cost_usd"]) == expected
        w = env.config.reward
        assert reward == (w.quality_weight * info["quality"] - w.latency_weight * expected[0]
                          - w.energy_weight_per_j * expected[1] - w.cloud_cost_weight_per_usd * expected[2])
        assert info["quality"] == env.tables.quality[info["prompt_index"], a]
        assert info["uplink_rate_bps"] == rate and info["edge_wait_s"] == (wait if a == EDGE else 0.0)
        assert env.last_cloud_rtt_s == s.last_rtt_s[0]
        if terminated or truncated:
            obs, _ = env.reset()


@pytest.mark.slow
def test_the_live_backend_steps_the_same_simulator_with_the_models_numbers(tmp_path):
    """Live (the executed models run in step()) equals replay of a profile recorded by the same function.

    The live env reads a copy of that profile whose quality and confidence are zeroed: its
    trajectory still equals replay's bit for bit, so the step's quality and the observation's
    device confidence are the models' own (the models are deterministic).
    """
    import json

    import gymnasium as gym

    from edgelam.envs.lam import load, load_prompts
    from edgelam.envs.lam.profile import profile_offload
    from edgelam.envs.lam.replay import FORMAT_VERSION, sha256_file

    data = profile_offload([load(m) for m in ("device", "edge", "cloud")], load_prompts()[:3])
    zeroed = {**data, **{key: np.zeros_like(data[key]) for key in ("ref_accuracy", "confidence")}}
    for folder, arrays in (("true", data), ("zeroed", zeroed)):
        (tmp_path / folder).mkdir()
        np.savez(tmp_path / folder / "offload.npz", format_version=np.int64(FORMAT_VERSION), **arrays)
        digest = sha256_file(tmp_path / folder / "offload.npz")
        (tmp_path / folder / "manifest.json").write_text(
            json.dumps({"format_version": FORMAT_VERSION, "files": {"offload.npz": digest}})
        )
    runs = []
    for backend, folder in (("replay", "true"), ("live", "zeroed"), ("replay", "zeroed")):
        env = gym.make("edgelam/Offload-v0", backend=backend, profile_dir=str(tmp_path / folder), episode_length=4)
        rows = [env.reset(seed=5)]
        for t in range(7):
            rows.append(env.step(t % 3))
            if rows[-1][2] or rows[-1][3]:
                rows.append(env.reset())
        runs.append(rows)
    replay, live, zero = runs
    for a, b in zip(replay, live, strict=True):
        assert np.array_equal(a[0], b[0])
        assert a[1:] == b[1:]
    assert any(r[0][0] > 0.0 for r in replay) and all(r[0][0] == 0.0 for r in zero)  # confidence was zeroed


def test_bad_actions_raise_and_leave_the_state_as_it_was():
    params = _params()
    state, _ = initial(params, np.random.default_rng(0), WirelessLink(params.config.channel, n_links=3))
    before = state.copy()
    rng = np.random.default_rng(1)
    for bad in (np.array([0, 1, 3]), np.array([-1, 0, 0]), np.array([0, 1]), np.array([0.0, 1.0, 2.0])):
        with pytest.raises(ValueError, match="actions"):
            advance(params, state, bad, rng)
        _assert_states_equal(state, before)
    with pytest.raises(ValueError, match="quality"):
        advance(params, state, np.array([0, 1, 2]), rng, quality=np.zeros(2))
    _assert_states_equal(state, before)


def test_cloud_rtts_are_log_normal_around_their_mean_with_ar1_log_correlation():
    """z_t = c z_{t-1} + sqrt(1 - c^2) e_t stays N(0, 1); rtt = mean exp(sigma z - sigma^2 / 2) has that mean."""
    from types import SimpleNamespace

    from edgelam.envs.offload.dynamics import cloud_rtts

    rng = np.random.default_rng(0)
    wan = SimpleNamespace(corr=0.8, rtt_mean_s=0.05, rtt_log_std=0.5)
    rtt, last = cloud_rtts(wan, rng.standard_normal((1, 200_000)), rng.standard_normal(1))
    assert rtt.mean() == pytest.approx(0.05, rel=0.02)
    log = np.log(rtt[0] / 0.05)
    assert log.std() == pytest.approx(0.5, rel=0.02)
    assert log.mean() == pytest.approx(-0.125, abs=0.01)  # -sigma^2 / 2
    assert np.corrcoef(log[1:], log[:-1])[0, 1] == pytest.approx(0.8, abs=0.01)
    assert last[0] == pytest.approx(log[-1] / 0.5 + 0.25, rel=1e-9)


def test_uplink_rates_carry_unit_mean_rayleigh_fading_power():
    """The rates invert to the fading power |h|^2 of a Gauss-Markov CN(0, 1) process: Exp(1)."""
    from edgelam.envs.core.channel import ChannelConfig
    from edgelam.envs.offload.dynamics import uplink_rates

    rng = np.random.default_rng(1)
    ch = ChannelConfig(model="UMi", fading=True, speed_mps=30.0, slot_s=0.01)
    n = 100_000
    innovation = (rng.standard_normal((1, n)) + 1j * rng.standard_normal((1, n))) / np.sqrt(2)
    h0 = (rng.standard_normal(1) + 1j * rng.standard_normal(1)) / np.sqrt(2)
    g = np.array([1e-11])
    rates, _ = uplink_rates(ch, g, innovation, h0)
    noise_w = ch.noise_psd_w_per_hz * 10 ** (ch.noise_figure_db / 10) * ch.bandwidth_hz
    power = (2 ** (rates[0] / ch.bandwidth_hz) - 1) * noise_w / (ch.tx_power_w * g[0])
    assert power.mean() == pytest.approx(1.0, abs=0.03)
    assert np.mean(power < 1.0) == pytest.approx(1 - np.exp(-1.0), abs=0.01)


def test_tier_tables_price_the_request_and_the_answer_bits():
    env = OffloadEnv()
    t, cfg = env.tables, env.config
    np.testing.assert_array_equal(t.up_bits, 8.0 * (t.prompt_tokens * cfg.token_id_bytes + cfg.request_overhead_bytes))
    assert t.down_bits == 8.0 * cfg.decode_tokens * cfg.token_id_bytes
    assert t.down_s == pytest.approx(t.down_bits / cfg.downlink_rate_bps, rel=1e-12)
    env.close()
