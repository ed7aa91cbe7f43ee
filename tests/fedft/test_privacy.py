"""Sample-level differential privacy in FedFT: the RDP accountant, DP-SGD's per-sample clipping, the private
scenario in both backends."""

from __future__ import annotations

import json
import shutil
import warnings

import gymnasium as gym
import numpy as np
import pytest
import torch
from gymnasium.utils.env_checker import check_env as gym_check_env
from scipy import integrate
from stable_baselines3.common.env_checker import check_env as sb3_check_env

import edgelam.envs  # noqa: F401  (registers the ids)
from edgelam.envs.fedft.data import load_partition
from edgelam.envs.fedft.dynamics import SURROGATE_FILE
from edgelam.envs.fedft.env import parallel_env
from edgelam.envs.fedft.privacy import (
    ORDERS,
    LoRATape,
    RDPAccountant,
    clip_per_sample,
    rdp_to_epsilon,
    sample_rates,
    sgm_rdp,
)

ENV_ID = "edgelam/FedFTAllocation-v0"
CASES = [(0.01, 4.0, 10_000), (0.05, 1.0, 90), (0.125, 0.5, 30), (0.03, 2.0, 300), (0.2, 0.8, 7)]


def _equal(k: int) -> np.ndarray:
    return np.concatenate([np.zeros(k), np.ones(k)]).astype(np.float32)


# -- accountant -------------------------------------------------------------------------------------


@pytest.mark.parametrize(("q", "sigma", "steps"), CASES)
def test_rdp_and_epsilon_match_opacus(q, sigma, steps):
    rdp_ref = pytest.importorskip("opacus.accountants.analysis.rdp")  # the `test` extra installs it
    mine = sgm_rdp(q, sigma) * steps
    ref = rdp_ref.compute_rdp(q=q, noise_multiplier=sigma, steps=steps, orders=ORDERS)
    np.testing.assert_allclose(mine, ref, rtol=1e-6)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # opacus: "optimal order is the smallest alpha"
        eps_ref, order_ref = rdp_ref.get_privacy_spent(orders=ORDERS, rdp=ref, delta=1e-5)
    eps, order = rdp_to_epsilon(mine, 1e-5)
    assert eps == pytest.approx(eps_ref, rel=1e-6) and order == order_ref


@pytest.mark.parametrize(("q", "sigma", "alpha"), [(0.05, 1.0, 2), (0.05, 1.0, 7), (0.2, 2.0, 12), (0.01, 0.7, 4)])
def test_rdp_is_the_renyi_divergence_of_the_sampled_gaussian(q, sigma, alpha):
    """Mironov et al. 2019, Sec. 3.3: A_alpha = E_{z ~ N(0, s^2)} [((1 - q) + q exp((2z - 1) / (2 s^2)))^alpha],
    integrated numerically here, independent of the binomial expansion the accountant sums."""
    def integrand(z):
        log_ratio = np.logaddexp(np.log1p(-q), np.log(q) + (2 * z - 1) / (2 * sigma**2))
        return np.exp(alpha * log_ratio - z**2 / (2 * sigma**2)) / np.sqrt(2 * np.pi * sigma**2)

    # the integrand peaks between 0 and about alpha; beyond 40 sigma of either it is below 1e-300
    a_alpha, _ = integrate.quad(integrand, -40 * sigma, alpha + 40 * sigma, points=[0.0, float(alpha)],
                                epsabs=0, epsrel=1e-12, limit=400)
    rdp = sgm_rdp(q, sigma, orders=np.array([alpha]))[0]
    assert rdp == pytest.approx(np.log(a_alpha) / (alpha - 1), rel=1e-8)


def test_full_batch_is_the_gaussian_mechanism_and_no_sampling_is_free():
    np.testing.assert_allclose(sgm_rdp(1.0, 1.5), ORDERS / (2 * 1.5**2))  # Mironov 2017, Prop. 7
    assert np.all(sgm_rdp(0.0, 1.0) == 0.0)


def test_abadi_mnist_example_moments_accountant_value():
    """Abadi et al., CCS 2016, Sec. 3.1: q = 0.01 (L = 600 of 60,000), sigma = 4, delta = 1e-5, E = 100 epochs
    (10,000 steps) gives epsilon ~ 1.26 by the moments accountant, i.e. the RDP bound with Mironov's (2017)
    conversion; Balle et al.'s (2020) conversion, which the accountant reports, is tighter."""
    rdp = sgm_rdp(0.01, 4.0) * 10_000
    mironov = float(np.min(rdp + np.log(1 / 1e-5) / (ORDERS - 1)))
    assert mironov == pytest.approx(1.26, abs=0.005)
    eps, _ = rdp_to_epsilon(rdp, 1e-5)
    assert 0.9 < eps < mironov


def test_accountant_grows_with_steps_shrinks_with_noise_and_charges_only_devices_that_ran():
    rates = sample_rates(8, np.array([64, 128, 256]))
    np.testing.assert_allclose(rates, [0.125, 0.0625, 0.03125])
    acc, quiet = RDPAccountant(rates, 1.0, 1e-5), RDPAccountant(rates, 2.0, 1e-5)
    previous = np.zeros(3)
    for t in range(10):
        ran = np.array([True, True, t % 2 == 0])
        acc.spend(ran, 3)
        quiet.spend(ran, 3)
        eps = acc.epsilon()
        assert np.all(eps[ran] > previous[ran]) and np.all(eps[~ran] == previous[~ran])
        assert np.all(quiet.epsilon() < eps)
        previous = eps
    assert eps[0] > eps[1] > eps[2]  # more data -> smaller sampling rate -> less privacy spent
    idle = RDPAccountant(rates, 1.0, 1e-5)
    idle.spend(np.array([False, True, False]), 3)
    assert idle.epsilon()[0] == 0.0 and idle.epsilon()[2] == 0.0 and idle.epsilon()[1] > 0.0
    with pytest.raises(ValueError, match="delta"):
        RDPAccountant(rates, 1.0, 1.0)
    with pytest.raises(ValueError, match="noise_multiplier"):
        sgm_rdp(0.1, 0.0)


# -- DP-SGD: per-sample gradients and clipping -------------------------------------------------------


def _toy_lora(seed: int = 0):
    """A two-layer toy model with LoRA on both layers and non-zero B (so every adapter gets a gradient)."""
    from edgelam.envs.lam import attach_lora

    torch.manual_seed(seed)
    model = torch.nn.Sequential(torch.nn.Linear(6, 5), torch.nn.Tanh(), torch.nn.Linear(5, 3))
    attach_lora(model, rank=2, alpha=4.0, targets=("0", "2"), seed=seed)
    tape = LoRATape([model[0], model[2]])
    with torch.no_grad():
        for p in tape.params:
            p.normal_(0.0, 1.0)
    return model, tape


def test_per_sample_gradients_are_each_samples_own_gradient():
    """In float64, so that the two ways of summing (per-sample outer products vs autograd) agree to
    rounding: float32 differs by a few ulp of the larger terms on some CPUs (4e-5 relative seen on
    an element near zero), which would hide nothing but fail a tight float32 tolerance."""
    model, tape = _toy_lora()
    model.double()
    x = torch.randn(4, 7, 6, generator=torch.Generator().manual_seed(1), dtype=torch.float64)  # 4 sequences x 7
    with tape:
        out = model(x)
    grads, _ = tape.per_sample_grads((out**2).mean(dim=(1, 2)).sum())
    for i in range(4):
        own = torch.autograd.grad((model(x[i : i + 1]) ** 2).mean(), tape.params)
        for g, o in zip(grads, own, strict=True):
            assert g.dtype == torch.float64
            torch.testing.assert_close(g[i], o, rtol=1e-10, atol=1e-12)


def test_clipping_bounds_every_samples_contribution():
    model, tape = _toy_lora()
    x = torch.randn(6, 7, 6, generator=torch.Generator().manual_seed(2)) * torch.tensor([0.1, 0.3, 1, 3, 10, 30])[
        :, None, None]
    with tape:
        out = model(x)
    grads, _ = tape.per_sample_grads((out**2).mean(dim=(1, 2)).sum())
    norms = clip_per_sample(grads, 1.0)[1]
    clip = float(torch.sqrt(norms.min() * norms.max()))
    summed, norms = clip_per_sample(grads, clip)
    assert norms.min() < clip < norms.max()  # some samples are clipped, some are not
    for i in range(6):
        without_i = [g[torch.arange(6) != i] for g in grads]
        rest, _ = clip_per_sample(without_i, clip)
        contribution = torch.sqrt(sum(((s - r) ** 2).sum() for s, r in zip(summed, rest, strict=True)))
        assert float(contribution) == pytest.approx(min(float(norms[i]), clip), rel=1e-5)  # the sensitivity is C


def _one_private_round(fed, batch: np.ndarray) -> dict:
    fed.reset()
    fed.private_local_update([batch] * fed.local_steps, torch.Generator().manual_seed(0))
    from edgelam.envs.lam import lora_state

    return lora_state(fed.lm)


def test_noise_free_unclipped_dp_sgd_is_the_plain_update_in_both_modes():
    """sigma = 0 and a huge clip norm: DP-SGD on a batch of exactly batch_size sequences is the plain AdamW update
    (per-sample gradients sum to the batch gradient); in split mode (float32 wire) it is the same update. Within
    2e-5 (0.4% of one Adam step of lr 5e-3): Adam rescales the float rounding of near-zero gradient entries."""
    from edgelam.envs.fedft.live import LiveFederation, SplitLiveFederation
    from edgelam.envs.lam import lora_state

    part = load_partition()
    args = ("edge", 4, 8.0, 5e-3, 2, 4, part.val[:1])
    batch = part.train[0][:4]
    plain = LiveFederation(*args)
    plain.reset()
    plain.local_update([batch, batch])
    expected = lora_state(plain.lm)
    for fed in (LiveFederation(*args, noise_multiplier=0.0, clip_norm=1e6),
                SplitLiveFederation(*args, device_layers=1, wire_dtype="float32", noise_multiplier=0.0,
                                    clip_norm=1e6)):
        got = _one_private_round(fed, batch)
        for key, value in expected.items():
            np.testing.assert_allclose(got[key].numpy(), value.numpy(), rtol=1e-4, atol=2e-5, err_msg=key)
    noisy = _one_private_round(LiveFederation(*args, noise_multiplier=1.0, clip_norm=0.5), batch)
    assert max(float((noisy[k] - expected[k]).abs().max()) for k in expected) > 1e-3


# -- the private scenario ---------------------------------------------------------------------------


def _episode_eps(seed: int = 0, **kwargs) -> tuple[np.ndarray, np.ndarray, list]:
    env = gym.make(ENV_ID, scenario="private", **kwargs)
    env.reset(seed=seed)
    k = env.unwrapped.fed.k
    eps, losses, infos = [], [], []
    for _ in range(env.unwrapped.config.episode_length):
        _, _, _, _, info = env.step(_equal(k))
        eps.append(info["epsilon"])
        losses.append(info["loss"])
        infos.append(info)
    return np.array(eps), np.array(losses), infos


def test_private_replay_reports_growing_epsilon_and_smaller_noise_spends_more():
    eps, _, infos = _episode_eps()
    assert np.all(np.diff(eps) > 0) and eps[0] > 0
    last = infos[-1]
    assert last["epsilon"] == pytest.approx(float(last["device_epsilon"].max()))
    assert last["device_epsilon"].shape == (5,) and np.all(last["device_epsilon"] > 0)
    loud, _, _ = _episode_eps(**{"privacy.noise_multiplier": 0.7})
    assert np.all(loud > eps)
    print(f"epsilon after the private episode (equal policy, seed 0): {eps[-1]:.3f} (sigma 0.7: {loud[-1]:.3f})")


def test_only_scheduled_devices_spend_privacy():
    env = gym.make(ENV_ID, scenario="private")
    env.reset(seed=0)
    action = _equal(5)
    action[0] = -1.0  # device 0: no band, not scheduled
    for _ in range(3):
        _, _, _, _, info = env.step(action)
    assert info["device_epsilon"][0] == 0.0 and np.all(info["device_epsilon"][1:] > 0)
    acc = env.unwrapped.fed.accountant
    np.testing.assert_array_equal(acc.steps, [0, 9, 9, 9, 9])
    # a device scheduled but dropped at the deadline trained and transmitted: it is charged
    late = gym.make(ENV_ID, scenario="private", deadline_s=0.5)
    late.reset(seed=0)
    _, _, _, _, info = late.step(_equal(5))
    assert info["num_participants"] == 0 and np.all(info["device_epsilon"] > 0)


def test_private_replay_is_slowed_by_the_fitted_dp_correction():
    _, private, _ = _episode_eps()
    env = gym.make(ENV_ID)
    env.reset(seed=0)
    plain = [env.step(_equal(5))[4]["loss"] for _ in range(30)]
    s = env.unwrapped.fed.surrogate.private(1.0, 0.5)
    assert 0.0 < s.decrease_scale < 1.0
    assert private[0] - private[-1] < 0.8 * (plain[0] - plain[-1])


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"privacy.noise_multiplier": -1.0}, "privacy.noise_multiplier"),
        ({"privacy.delta": 1.0}, "privacy.delta"),
        ({"privacy.delta": 0.0}, "privacy.delta"),
        ({"privacy.clip_norm": 0.0}, "privacy.clip_norm"),
        ({"privacy.enabled": "yes"}, "privacy.enabled"),
        ({"privacy.epsilon": 3.0}, "privacy.epsilon"),
        ({"privacy.clip_norm": 2.0}, "privacy.clip_norm"),  # the replay correction was fitted for 0.5
    ],
)
def test_bad_privacy_config_raises_value_error(kwargs, match):
    with pytest.raises(ValueError, match=match):
        gym.make(ENV_ID, scenario="private", **kwargs)
    with pytest.raises(ValueError, match=match):
        parallel_env(scenario="private", **kwargs)


def test_replay_without_a_dp_correction_says_live_or_refit(tmp_path):
    data = json.loads(SURROGATE_FILE.read_text())
    data.pop("privacy")
    (tmp_path / "surrogate.json").write_text(json.dumps(data))
    with pytest.raises(ValueError, match=r"DP-SGD correction.*backend='live'"):
        gym.make(ENV_ID, scenario="private", profile_dir=str(tmp_path))
    shutil.copy(SURROGATE_FILE, tmp_path / "surrogate.json")
    gym.make(ENV_ID, scenario="private", profile_dir=str(tmp_path))  # the shipped file has one


def test_private_scenario_passes_the_checkers():
    from pettingzoo.test import parallel_api_test, parallel_seed_test

    env = gym.make(ENV_ID, scenario="private")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        gym_check_env(env.unwrapped, skip_render_check=True)
        sb3_check_env(env.unwrapped, warn=True)
    parallel_api_test(parallel_env(scenario="private"), num_cycles=60)
    parallel_seed_test(lambda: parallel_env(scenario="private"))


def test_power_env_reports_each_agents_own_epsilon():
    """Device i sits out (no band, no power) its first i rounds; its epsilon, recomputed with Opacus from
    q_i = batch / n_i, sigma and 3 local steps per round it was scheduled, is the one its info reports."""
    rdp_ref = pytest.importorskip("opacus.accountants.analysis.rdp")  # the `test` extra installs it
    env = parallel_env(scenario="private")
    env.reset(seed=1)
    cfg, sizes = env.config, env.fed.data_sizes.copy()
    scheduled = dict.fromkeys(env.possible_agents, 0)
    for t in range(6):
        actions = {a: np.array([1.0, 1.0] if i <= t else [-1.0, -1.0], np.float32)
                   for i, a in enumerate(env.possible_agents)}
        _, _, _, _, infos = env.step(actions)
        for a in env.possible_agents:
            scheduled[a] += infos[a]["bandwidth_hz"] > 0.0 and infos[a]["power_w"] > 0.0
    assert list(scheduled.values()) == [6, 5, 4, 3, 2]
    expected = []
    for i, a in enumerate(env.possible_agents):
        q = min(1.0, cfg.lora.batch_size / sizes[i])
        steps = cfg.lora.local_steps * scheduled[a]
        rdp = rdp_ref.compute_rdp(q=q, noise_multiplier=cfg.privacy.noise_multiplier, steps=steps, orders=ORDERS)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # opacus: "optimal order is the smallest alpha"
            expected.append(rdp_ref.get_privacy_spent(orders=ORDERS, rdp=rdp, delta=cfg.privacy.delta)[0])
    eps = np.array([infos[a]["epsilon"] for a in env.possible_agents])
    np.testing.assert_allclose(eps, expected, rtol=1e-6)
    assert infos["device_0"]["max_epsilon"] == pytest.approx(max(expected), rel=1e-6)
    assert len(set(np.round(eps, 6))) == len(eps)  # five devices, five different budgets spent
    plain = parallel_env()
    plain.reset(seed=1)
    _, _, _, _, infos = plain.step({a: np.zeros(2, np.float32) for a in plain.agents})
    assert "epsilon" not in infos["device_0"] and "max_epsilon" not in infos["device_0"]


# -- live: the noise really slows the real loss -----------------------------------------------------


@pytest.mark.slow
def test_live_dp_sgd_visibly_slows_the_real_loss():
    """Tiny live scenario (2 devices, 2 topics), equal allocation, 6 rounds, seed 0: without DP the validation loss
    falls by more than twice what it falls with DP-SGD (sigma 1, clip 0.5); the accountant runs in live too.

    Measured at ed41b90 (each row's local sequences from its own seed): the loss falls by 0.023, 0.028
    and 0.034 without DP on seeds 0, 1 and 2, and by -0.004 to -0.006 with DP-SGD, so the floor on the
    plain decrease (it really learns) is 0.015, below the spread of the seeds."""
    tiny = {"num_devices": 2, "num_topics": 2, "channel.bandwidth_hz": 2.0e6}
    drops, last = {}, {}
    for name, kwargs in (("plain", {"scenario": "default"}), ("private", {"scenario": "private"})):
        env = gym.make(ENV_ID, backend="live", **kwargs, **tiny)
        _, info = env.reset(seed=0)
        start = info["loss"]
        for _ in range(6):
            _, _, _, _, info = env.step(_equal(2))
        drops[name], last[name] = start - info["loss"], info
    print(f"6 live rounds: loss decrease {drops['plain']:.4f} without DP, {drops['private']:.4f} with DP-SGD, "
          f"epsilon {last['private']['epsilon']:.3f}")
    assert drops["plain"] > 0.015 and drops["private"] < 0.5 * drops["plain"]
    assert "epsilon" not in last["plain"] and last["private"]["epsilon"] > 0
