"""Split mode of FedFTAllocation-v0 / FedFTPower-v0: traffic, device computation, real split training, conformance."""

from __future__ import annotations

import warnings

import gymnasium as gym
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env as gym_check_env
from stable_baselines3.common.env_checker import check_env as sb3_check_env

import edgelam.envs  # noqa: F401  (registers the ids)
from edgelam import baselines
from edgelam.envs.core.channel import NOISE_PSD_W_PER_HZ
from edgelam.envs.fedft.data import SEQ_LEN, load_partition
from edgelam.envs.fedft.dynamics import downlink_time_s, load_model_costs, round_costs
from edgelam.envs.fedft.env import parallel_env

ENV_ID = "edgelam/FedFTAllocation-v0"
# hand-computed for the edge model (d = 192), T = 64, B = 8, 3 local steps, float16 on the wire, layer 0 on the device
ACTIVATIONS = 8 * 64 * 192 * 16  # 1,572,864 bits per step (and the same for the returned gradient)
LABELS = 8 * 63 * 16  # 8,064 bits per step: next-token ids as uint16
DEVICE_ADAPTERS = 2 * (4 * 192 + 192 * 4) * 16  # q and v of layer 0, A (4 x 192) + B (192 x 4), float16: 49,152
SPLIT_UP = 3 * (ACTIVATIONS + LABELS) + DEVICE_ADAPTERS  # 4,791,936
SPLIT_DOWN = 3 * ACTIVATIONS  # 4,718,592
# reduced live scenario (2 devices, 2 topics) with a band every device makes the deadline on in both modes
TINY = {"num_devices": 2, "num_topics": 2, "channel.bandwidth_hz": 2.0e6}
TINY_SPLIT = {**TINY, "mode": "split", "split.downlink_bandwidth_hz": 2.0e6}


def _equal_action(k: int) -> np.ndarray:
    return np.concatenate([np.zeros(k), np.ones(k)]).astype(np.float32)


# -- traffic and computation ------------------------------------------------------------------------


def test_split_bits_per_round_are_the_activation_label_gradient_and_adapter_sizes():
    assert SPLIT_UP == 4_791_936 and SPLIT_DOWN == 4_718_592
    env = gym.make(ENV_ID, mode="split")
    env.reset(seed=0)
    _, _, _, _, info = env.step(_equal_action(5))
    assert info["uplink_bits"] == SPLIT_UP and info["downlink_bits"] == SPLIT_DOWN
    env = gym.make(ENV_ID, mode="split", **{"split.wire_dtype": "float32", "split.device_layers": 2})
    fed = env.unwrapped.fed
    assert fed.bits == 3 * (2 * ACTIVATIONS + LABELS) + 2 * DEVICE_ADAPTERS and fed.downlink_bits == 6 * ACTIVATIONS
    fed = gym.make(ENV_ID, mode="split", **{"split.device_layers": 0}).unwrapped.fed
    assert fed.bits == 3 * (ACTIVATIONS + LABELS) and fed.downlink_bits == 0.0  # nothing trains on the device
    assert fed.cycles == 0.0 and np.all(fed.downlink_s == 0.0)
    assert gym.make(ENV_ID).unwrapped.fed.downlink_bits == 0.0


def test_split_trades_device_computation_for_traffic_on_the_same_scenario():
    """Same devices, channel and allocation: split sends 24x the bits and spends 17.5% of the computation."""
    runs = {}
    for mode in ("lora_fedavg", "split"):
        env = gym.make(ENV_ID, mode=mode)
        env.reset(seed=4)
        fed = env.unwrapped.fed
        upload_s = fed.costs(*env.unwrapped.allocation(_equal_action(5))).upload_s
        _, _, _, _, info = env.step(_equal_action(5))
        runs[mode] = (info, fed.compute_s.copy(), upload_s)
    (fa, fa_cmp, fa_up), (sp, sp_cmp, sp_up) = runs["lora_fedavg"], runs["split"]
    costs = load_model_costs("edge")
    share = costs.layer_flops[0] / (costs.layer_flops.sum() + costs.head_flops)
    assert share == pytest.approx(58_220_544 / (4 * 58_220_544 + 2 * 64 * 192 * 4096))  # 0.1746
    assert sp["uplink_bits"] == SPLIT_UP and fa["uplink_bits"] == 196_608
    assert sp["downlink_bits"] == SPLIT_DOWN and fa["downlink_bits"] == 0
    np.testing.assert_allclose(sp_up, fa_up * SPLIT_UP / 196_608, rtol=1e-12)  # same rates, 24x the bits
    assert sp["compute_energy_j"] == pytest.approx(share * fa["compute_energy_j"], rel=1e-12)
    assert 0 < sp["compute_energy_j"] < 0.2 * fa["compute_energy_j"]
    np.testing.assert_allclose(sp_cmp, share * fa_cmp, rtol=1e-12)
    # on the narrow default band no device can move 4.8 Mbit before the deadline: the price of split
    assert fa["num_participants"] == 5 and sp["num_participants"] == 0


def test_downlink_time_is_shannon_on_an_equal_share_at_the_bs_psd():
    n0 = NOISE_PSD_W_PER_HZ * 10 ** 0.9
    gains = np.array([3 * n0 / 4e-6, 15 * n0 / 4e-6, 0.0])  # SNR 3 and 15: 2 and 4 bit/s/Hz
    t = downlink_time_s(1e6, gains, 1.5e6, 4e-6, n0)  # 0.5 MHz each: 1 and 2 Mbit/s
    np.testing.assert_allclose(t[:2], [1.0, 0.5])
    assert t[2] == np.inf
    np.testing.assert_array_equal(downlink_time_s(0.0, gains, 1.5e6, 4e-6, n0), 0.0)


def test_download_time_counts_toward_the_deadline():
    # 1 MHz at SNR 3: 1 Mbit up in 0.5 s; compute 1 s; a 1 s download makes 2.5 s > 2 s: dropped
    n0 = 1e-20
    gain = 3 * n0 * 1e6 / 0.1
    args = (1e6, np.array([1e6, 1e6]), np.array([0.1, 0.1]), np.full(2, gain), n0, 1e9, np.full(2, 1e9), 1e-28, 2.0)
    c = round_costs(*args, downlink_s=np.array([0.4, 1.0]))
    np.testing.assert_array_equal(c.participants, [True, False])
    np.testing.assert_allclose(c.upload_energy_j, [0.05, 0.1 * (2.0 - 1.0 - 1.0)])
    assert round_costs(*args).participants.all()


def test_split_scenario_makes_uploads_matter_and_min_energy_schedules_feasibly():
    env = gym.make(ENV_ID, scenario="split")
    fed = env.unwrapped.fed
    assert fed.cfg.mode == "split" and fed.bits == SPLIT_UP
    stats = {}
    for name in ("equal", "min_energy"):
        policy = baselines.make(name, env)
        obs, _ = env.reset(seed=0)
        infos = []
        for _ in range(30):
            obs, _, _, _, info = env.step(policy.predict(obs)[0])
            infos.append(info)
        stats[name] = (sum(i["num_dropped"] for i in infos), sum(i["energy_j"] for i in infos),
                       sum(i["num_participants"] for i in infos))
    assert stats["equal"][0] > 0  # equal shares leave far devices short of the deadline
    assert stats["min_energy"][0] == 0
    assert stats["min_energy"][1] < stats["equal"][1] and stats["min_energy"][2] > stats["equal"][2]


# -- bad combinations -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"mode": "split", "split.device_layers": 4}, "split.device_layers"),  # the server keeps >= 1 of 4 layers
        ({"mode": "split", "split.device_layers": -1}, "split.device_layers"),
        ({"mode": "split", "split.wire_dtype": "int8"}, "split.wire_dtype"),
        ({"mode": "split", "split.downlink_bandwidth_hz": 0.0}, "split.downlink_bandwidth_hz"),
        ({"split.device_layers": 2}, "split"),  # split settings without mode: split
        ({"mode": "splitfed"}, "mode"),
        ({"mode": "split", "model": "device", "split.device_layers": 2}, "split.device_layers"),
    ],
)
def test_bad_split_combinations_raise_value_error(kwargs, match):
    with pytest.raises(ValueError, match=match):
        gym.make(ENV_ID, **kwargs)
    with pytest.raises(ValueError, match=match):
        parallel_env(**kwargs)


# -- conformance in split mode ----------------------------------------------------------------------


def test_split_gymnasium_and_sb3_checkers_pass():
    env = gym.make(ENV_ID, scenario="split")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        gym_check_env(env.unwrapped, skip_render_check=True)
        sb3_check_env(env.unwrapped, warn=True)


def _trace(seed: int) -> list:
    env = gym.make(ENV_ID, scenario="split")
    env.action_space.seed(seed)
    obs, _ = env.reset(seed=seed)
    out = [obs]
    for _ in range(40):
        obs, reward, terminated, truncated, info = env.step(env.action_space.sample())
        out.append((obs, reward, info["loss"], info["participants"], info["energy_j"]))
        if terminated or truncated:
            out.append(env.reset()[0])
    return out


def _same(a, b) -> bool:
    if isinstance(a, tuple):
        return all(_same(x, y) for x, y in zip(a, b, strict=True))
    return bool(np.array_equal(a, b))


def test_split_same_seed_same_trajectory_and_step_contract():
    a, b, c = _trace(3), _trace(3), _trace(4)
    assert all(_same(x, y) for x, y in zip(a, b, strict=True))
    assert not all(_same(x, y) for x, y in zip(a, c, strict=True))
    env = gym.make(ENV_ID, scenario="split")
    env.reset(seed=0)
    for _ in range(10):
        obs, reward, _, _, info = env.step(env.action_space.sample())
        assert type(reward) is float and env.observation_space.contains(obs)
        assert isinstance(info["latency_s"], float) and 0.0 <= info["latency_s"] <= 4.0
        assert isinstance(info["energy_j"], float) and info["energy_j"] >= 0.0
    with pytest.raises(ValueError, match="action"):
        env.step(np.full(10, 2.0, np.float32))


def test_power_env_split_passes_the_pettingzoo_tests():
    from pettingzoo.test import parallel_api_test, parallel_seed_test

    parallel_api_test(parallel_env(scenario="split"), num_cycles=60)
    parallel_seed_test(lambda: parallel_env(scenario="split"))


def test_power_env_split_mode_prices_split_traffic_and_computation():
    totals = {}
    for mode, env in (("lora_fedavg", parallel_env()), ("split", parallel_env(scenario="split"))):
        policy = baselines.make("min_energy", env)
        obs, _ = env.reset(seed=2)
        infos = []
        while env.agents:
            obs, _, _, _, info = env.step(policy.predict(obs)[0])
            infos.append(info)
        first = [i["device_0"] for i in infos]
        totals[mode] = (first[0]["uplink_bits"], first[0]["downlink_bits"],
                        sum(i["num_participants"] for i in first), infos)
    assert totals["split"][:2] == (SPLIT_UP, SPLIT_DOWN) and totals["lora_fedavg"][:2] == (196_608, 0)
    assert totals["split"][2] > 0.8 * 30 * 5  # min_energy schedules most devices in the split scenario
    for info in totals["split"][3]:
        for agent_info in info.values():
            assert agent_info["latency_s"] <= 4.0 + 1e-9
            assert agent_info["participated"] == (agent_info["bandwidth_hz"] > 0)  # whoever is scheduled makes it


# -- live: real split learning ----------------------------------------------------------------------


def test_model_costs_file_is_the_real_models():
    from edgelam.envs.fedft.live import measure_model_costs
    from edgelam.envs.lam import SHIPPED_MODELS, load

    for name in SHIPPED_MODELS:
        real = measure_model_costs(load(name), SEQ_LEN)
        c = load_model_costs(name)
        assert (c.num_layers, c.hidden_size, c.seq_len) == (real["num_layers"], real["hidden_size"], SEQ_LEN)
        np.testing.assert_array_equal(c.layer_flops, real["layer_flops"])
        np.testing.assert_array_equal(c.lora_values_per_rank, real["lora_values_per_rank"])
        assert c.head_flops == real["head_flops"]


def _one_round(fed, seed: int = 0):
    part = load_partition()
    rng = np.random.default_rng(seed)
    local = [part.train[0][:64], part.train[1][:96]]
    fed.reset()
    loss = fed.round(local, np.array([True, True]), np.array([64.0, 96.0]), rng)
    return loss, {k: v.clone() for k, v in fed.global_state.items()}


def test_live_split_update_is_the_full_model_update_and_trains_the_device_layers():
    """float32 on the wire: the split round is the lora_fedavg round; float16: the real rounding moves it slightly."""
    from edgelam.envs.fedft.live import LiveFederation, SplitLiveFederation

    val = load_partition().val[:2]
    args = ("edge", 4, 8.0, 5e-3, 3, 8, val)
    full_loss, full = _one_round(LiveFederation(*args))
    split32 = SplitLiveFederation(*args, device_layers=1, wire_dtype="float32")
    loss32, state32 = _one_round(split32)
    for key, value in full.items():
        np.testing.assert_allclose(state32[key].numpy(), value.numpy(), rtol=1e-5, atol=1e-7, err_msg=key)
    np.testing.assert_allclose(loss32, full_loss, atol=1e-5)
    assert split32.last_traffic_bits == (SPLIT_UP + 3 * ACTIVATIONS, 2 * SPLIT_DOWN)  # float32: twice the values
    split16 = SplitLiveFederation(*args, device_layers=1, wire_dtype="float16")
    loss16, state16 = _one_round(split16)
    assert split16.last_traffic_bits == (SPLIT_UP, SPLIT_DOWN)
    device_b = [k for k in state16 if ".layers.0." in k and k.endswith("lora_B")]
    assert len(device_b) == 2 and all(float(state16[k].abs().max()) > 0 for k in device_b)  # B starts at 0
    diff = max(float((state16[k] - full[k]).abs().max()) for k in full)
    assert 0.0 < diff < 5e-3
    assert np.max(np.abs(loss16 - full_loss)) < 1e-3


@pytest.mark.slow
def test_live_split_rounds_train_like_lora_fedavg():
    """Tiny live scenario (2 devices, 2 topics), equal allocation, 6 rounds per mode: the split loss falls and
    follows the lora_fedavg loss of the same devices and batches; the env's bits are those that crossed the cut."""
    curves = {}
    for name, kwargs in (("lora_fedavg", TINY), ("split", TINY_SPLIT)):
        env = gym.make(ENV_ID, backend="live", **kwargs)
        _, info = env.reset(seed=0)
        losses, parts = [info["loss"]], []
        for _ in range(6):
            _, _, _, _, info = env.step(_equal_action(2))
            losses.append(info["loss"])
            parts.append(info["participants"])
        curves[name] = (np.array(losses), np.array(parts), env.unwrapped.fed, info)
    split, fedavg = curves["split"], curves["lora_fedavg"]
    assert split[1].all() and fedavg[1].all()  # everyone took part in every round of both
    print("split", np.round(split[0], 4), "lora_fedavg", np.round(fedavg[0], 4))
    assert split[0][0] == fedavg[0][0]
    assert split[0][-3:].mean() < split[0][0] - 0.02
    np.testing.assert_allclose(split[0], fedavg[0], atol=2e-3)
    fed, info = split[2], split[3]
    assert fed.live.last_traffic_bits == (info["uplink_bits"], info["downlink_bits"]) == (SPLIT_UP, SPLIT_DOWN)
    assert info["compute_energy_j"] < 0.2 * fedavg[3]["compute_energy_j"]
