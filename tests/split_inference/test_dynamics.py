"""Exact values of the split-inference cost model on a toy table computed by hand."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from edgelam.envs.split_inference.dynamics import (
    CostTables,
    all_action_costs,
    executed_layer_map,
    request_cost,
)


def toy_tables() -> CostTables:
    # 4 layers; one prompt of 10 tokens; 3 decoded tokens
    return CostTables(
        num_layers=4,
        prompt_tokens=np.array([10]),
        decode_tokens=3,
        dev_layer_s=np.array([0.1]),
        edge_layer_s=np.array([0.01]),
        dev_head_s=np.array([0.05]),
        edge_head_s=np.array([0.005]),
        act_bytes=np.array([50.0, 100.0, 200.0]),
        token_id_bytes=4,
        dev_active_w=2.0,
        dev_idle_w=0.5,
        tx_power_w=0.2,
        rtt_s=0.01,
        downlink_rate_bps=1e6,
        quality_loss=np.array([[[0, 0, 0], [0.3, 0.1, 0.0], [0.2, 0.05, 0.0], [0.1, 0.02, 0.0], [0, 0, 0]]]),
    )


def test_device_only_hand_computed():
    lat, en, up, q = request_cost(toy_tables(), 0, 4, 2, 1e6, 0.5)
    assert lat == pytest.approx(4 * 0.1 + 0.05)  # no radio, no edge
    assert en == pytest.approx(2.0 * 0.45)
    assert up == 0 and q == 0


def test_edge_only_hand_computed():
    lat, en, up, q = request_cost(toy_tables(), 0, 0, 0, 1e6, 0.5)
    up_s = 10 * 4 * 8 / 1e6
    edge_s = (4 * 0.01 + 0.005) / 0.5
    down_s = 3 * 4 * 8 / 1e6
    assert up == 40
    assert lat == pytest.approx(up_s + edge_s + 0.01 + down_s)
    assert en == pytest.approx(0.2 * up_s + 0.5 * (lat - up_s))
    assert q == 0


def test_split_hand_computed():
    lat, en, up, q = request_cost(toy_tables(), 0, 1, 1, 2e6, 0.0)
    sent = (10 + 3 - 1) * 100.0
    up_s = sent * 8 / 2e6
    dev_s = 0.1
    edge_s = 3 * 0.01 + 0.005
    lat_expected = dev_s + up_s + edge_s + 3 * 0.01 + 3 * 4 * 8 / 1e6
    assert up == sent and q == 0.1
    assert lat == pytest.approx(lat_expected)
    assert en == pytest.approx(2.0 * dev_s + 0.2 * up_s + 0.5 * (lat_expected - dev_s - up_s))


def test_all_action_costs_broadcast_equals_scalar_calls():
    t = toy_tables()
    lat, en, up, q = all_action_costs(t, 0, 3e5, 0.2)
    assert lat.shape == (5, 3)
    for layer in range(5):
        for b in range(3):
            one = request_cost(t, 0, layer, b, 3e5, 0.2)
            assert (lat[layer, b], en[layer, b], up[layer, b], q[layer, b]) == pytest.approx(one)


def test_channel_decides_the_best_split():
    t = toy_tables()
    lat_good, *_ = all_action_costs(t, 0, 1e9, 0.0)
    lat_bad, *_ = all_action_costs(t, 0, 1e2, 0.0)
    assert np.unravel_index(np.argmin(lat_good), lat_good.shape)[0] == 0  # fast link: all at the edge
    assert np.unravel_index(np.argmin(lat_bad), lat_bad.shape)[0] == 4  # dead link: all on the device


def test_executed_layer_map_keeps_ends_and_interior():
    # card split l -> the executed layer nearest l * E / L (ties to even), interior kept in 1..E-1
    # 24 -> 8: l / 3 rounded; l = 1 (0.33) and l = 23 (7.67) are pulled inside
    assert executed_layer_map(24, 8).tolist() == [
        0, 1, 1, 1, 1, 2, 2, 2, 3, 3, 3, 4, 4, 4, 5, 5, 5, 6, 6, 6, 7, 7, 7, 7, 8
    ]  # fmt: skip
    # 32 -> 4: l / 8 rounded; the ties l = 4, 12, 20, 28 (0.5, 1.5, 2.5, 3.5) go to 0->1, 2, 2, 4->3
    assert executed_layer_map(32, 4).tolist() == [0, *[1] * 11, *[2] * 9, *[3] * 11, 4]
    assert executed_layer_map(8, 8).tolist() == list(range(9))
    assert executed_layer_map(2, 8).tolist() == [0, 4, 8]
    assert executed_layer_map(28, 8).tolist()[:9] == [0, 1, 1, 1, 1, 1, 2, 2, 2]  # 5 * 8 / 28 = 1.43, 6 -> 1.71
    m = executed_layer_map(24, 8)
    assert m.dtype == np.int64 and np.all(np.diff(m) >= 0)


def test_upload_past_one_coherence_time_goes_at_the_ergodic_rate():
    from dataclasses import replace

    t = replace(toy_tables(), coherence_s=0.01)
    sent_bits = (10 + 3 - 1) * 100.0 * 8  # 9600 bits of 8-bit activations
    # a deep fade (1 kbit/s) carries 10 bits in the coherence time; the other 9590 go at 1 Mbit/s
    lat, _, _, _ = request_cost(t, 0, 1, 1, 1e3, 0.0, ergodic_bps=1e6)
    lat_plain, _, _, _ = request_cost(t, 0, 1, 1, 1e3, 0.0)
    up_s = 0.01 + (sent_bits - 10.0) / 1e6
    assert lat == pytest.approx(lat_plain - sent_bits / 1e3 + up_s)
    # an upload that fits in the coherence time is priced at the slot's rate either way
    fast, _, _, _ = request_cost(t, 0, 1, 1, 1e7, 0.0, ergodic_bps=1e3)
    assert fast == pytest.approx(request_cost(t, 0, 1, 1, 1e7, 0.0)[0])
    # broadcast over all actions equals scalar calls
    lat_all, _, _, _ = all_action_costs(t, 0, 1e3, 0.0, ergodic_bps=1e6)
    assert lat_all[1, 1] == pytest.approx(lat)


def test_build_tables_prices_prefill_then_decode_steps_and_a_head_per_token():
    """A layer: the prompt's prefill + (N - 1) one-token decode steps at the mean context T + N / 2; the
    head: N passes (the prefill's last position emits the first token)."""
    from edgelam.envs.core.hardware import get_hardware, lm_head_cost, transformer_layer_cost
    from edgelam.envs.core.model_cards import get_model_card
    from edgelam.envs.split_inference.dynamics import build_tables

    card, dev, edge = get_model_card("Llama-3.2-1B"), get_hardware("phone_npu"), get_hardware("edge_gpu_l4")
    prompts, n = np.array([16, 64]), 8
    t = build_tables(card, dev, edge, prompts, n, 8, 16, 4, 0.2, 0.01, 1e8, np.zeros((2, card.num_layers + 1, 3)))
    for i, p in enumerate(prompts.tolist()):
        for hw, bits, layer_s, head_s in ((dev, 8, t.dev_layer_s, t.dev_head_s), (edge, 16, t.edge_layer_s,
                                                                                     t.edge_head_s)):
            prefill, _ = transformer_layer_cost(hw, card, "prefill", p, p, bits)
            step, _ = transformer_layer_cost(hw, card, "decode", 1, p + n / 2, bits)
            assert layer_s[i] == pytest.approx(prefill + (n - 1) * step, rel=1e-12)
            assert head_s[i] == pytest.approx(n * lm_head_cost(hw, card, 1, bits)[0], rel=1e-12)
    assert t.act_bytes.tolist() == [card.d_model * b / 8 for b in (4, 8, 16)]


def test_exogenous_snr_db_is_ten_log10_of_the_rates_snr():
    """The block's SNR in dB is that of its Shannon rate r = B log2(1 + snr); without CSI delay and noise
    the estimate is exact."""
    from edgelam.envs.core.config import load_scenario
    from edgelam.envs.split_inference.config import SplitInferenceConfig
    from edgelam.envs.split_inference.dynamics import Exogenous

    cfg = load_scenario(SplitInferenceConfig, "split_inference", "default", {"csi_delay_slots": 0, "csi_noise_db": 0.0})
    exo = Exogenous(cfg, num_prompts=5, n_users=3)
    rng = np.random.default_rng(0)
    exo.reset(rng)
    block = exo.next_block(rng)
    snr = 2.0 ** (block.rate_bps / cfg.channel.bandwidth_hz) - 1.0
    np.testing.assert_allclose(block.snr_db, 10.0 * np.log10(snr), rtol=1e-9, atol=1e-9)
    np.testing.assert_array_equal(block.est_snr_db, block.snr_db)
    assert block.snr_db.std() > 1.0  # fading moves it by decibels within the block


def test_delayed_csi_is_last_slots_snr_also_across_blocks_and_the_load_is_the_ar1():
    """With a one-slot CSI delay (no noise) each slot's estimate is the previous slot's SNR, the first
    slot of a block included (the last slot of the block before); the edge load's latent is the AR(1)
    x' = corr x + std sqrt(1 - corr^2) N(0, 1), stationary with std ``std``."""
    from edgelam.envs.core.config import load_scenario
    from edgelam.envs.split_inference.config import SplitInferenceConfig
    from edgelam.envs.split_inference.dynamics import Exogenous

    over = {"csi_delay_slots": 1, "csi_noise_db": 0.0, "edge_load.max_util": 0.99, "edge_load.mean": 0.5,
            "edge_load.std": 0.1, "edge_load.corr": 0.9}
    cfg = load_scenario(SplitInferenceConfig, "split_inference", "default", over)
    exo = Exogenous(cfg, num_prompts=5, n_users=2)
    rng = np.random.default_rng(1)
    exo.reset(rng)
    first = exo.initial_snr_db.copy()
    blocks = [exo.next_block(rng) for _ in range(40)]
    np.testing.assert_array_equal(blocks[0].est_snr_db[:, 0], first)
    for prev, block in itertools.pairwise(blocks):
        np.testing.assert_array_equal(block.est_snr_db[:, 0], prev.snr_db[:, -1])
        np.testing.assert_array_equal(block.est_snr_db[:, 1:], block.snr_db[:, :-1])
    load = np.concatenate([b.edge_util for b in blocks], axis=1) - 0.5  # (2, 40 x BLOCK), rarely clipped
    assert load.std() == pytest.approx(0.1, rel=0.1)
    lag1 = np.mean([np.corrcoef(row[:-1], row[1:])[0, 1] for row in load])
    assert lag1 == pytest.approx(0.9, abs=0.03)


def test_compiled_step_prices_as_request_cost_bit_for_bit():
    """The compiled step (scalar, one user at a time) charges what :func:`request_cost` (numpy, broadcast over
    the users) computes from the same state: latency, energy, bytes, quality loss and reward, exactly."""
    from edgelam.envs.split_inference.dynamics import advance, initial
    from edgelam.envs.split_inference.env import SplitInferenceEnv

    env = SplitInferenceEnv(scenario="congested_edge")
    rng = np.random.default_rng(4)
    state = initial(env.params, rng, 300)
    layers = rng.integers(0, env.num_layers + 1, 300)
    layers[:3] = [0, env.num_layers, 1]  # both ends and a split
    actions = np.stack([layers, rng.integers(0, 3, 300)], axis=1)
    prompt, rate, util, ergodic = state.prompt, state.rate_bps, state.edge_util, state.ergodic_bps.copy()
    queue = state.virtual_queue.copy()
    out, _ = advance(env.params, state, actions, rng)
    lat, en, up, q = request_cost(env.tables, prompt, actions[:, 0], actions[:, 1], rate, util, ergodic)
    info = out.info(True)
    assert np.array_equal(info["latency_s"], lat) and np.array_equal(info["energy_j"], en)
    assert np.array_equal(info["uplink_bytes"], up) and np.array_equal(info["quality_loss"], q)
    w = env.config.reward
    assert np.array_equal(out.reward, -(w.latency_weight * lat + w.energy_weight_per_j * en + w.quality_weight * q))
    budget = env.config.energy_budget_j
    assert np.array_equal(info["virtual_queue"], np.maximum(queue + en - budget, 0.0))
    assert np.array_equal(state.virtual_queue, info["virtual_queue"])
    assert info["prompt_index"].tolist() == prompt.tolist() and np.array_equal(info["uplink_rate_bps"], rate)
