"""Channel physics against hand computations from the standards (TR 38.901, Jakes, Shannon)."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest

from edgelam.envs.core.channel import (
    NOISE_PSD_W_PER_HZ,
    ChannelConfig,
    GaussMarkovFading,
    SimplePathLoss,
    ThroughputTrace,
    UMa,
    UMiStreetCanyon,
    WirelessLink,
    db_to_linear,
    dbm_to_w,
    doppler_hz,
    ergodic_rate_bps,
    fading_correlation,
    linear_to_db,
    make_path_loss,
    rate_from_snr_bps,
    shannon_rate_bps,
    snr_linear,
    transfer_time_one_s,
    transfer_time_s,
)
from edgelam.envs.core.config import build

# -- units and rate ------------------------------------------------------------------------------------


def test_unit_conversions():
    assert NOISE_PSD_W_PER_HZ == pytest.approx(3.981e-21, rel=1e-3)
    assert dbm_to_w(23.0) == pytest.approx(0.1995, rel=1e-3)
    assert db_to_linear(30.0) == pytest.approx(1000.0)
    assert linear_to_db(np.array([1.0, 100.0])) == pytest.approx([0.0, 20.0])
    with pytest.raises(ValueError, match="positive"):
        linear_to_db(0.0)


def test_shannon_rate_matches_hand_computation():
    # 20 MHz, 0.2 W, gain 1e-10: N0 b = 3.9811e-21 * 2e7 = 7.9621e-14 W,
    # SNR = 2e-11 / 7.9621e-14 = 251.19, rate = 2e7 * log2(252.19) = 159.567 Mbit/s.
    assert snr_linear(20e6, 0.2, 1e-10) == pytest.approx(251.1886, rel=1e-5)
    assert shannon_rate_bps(20e6, 0.2, 1e-10) == pytest.approx(159.5672e6, rel=1e-5)
    # a 7 dB noise figure divides the SNR by 10^0.7 = 5.0119: 2e7 log2(1 + 50.119) = 113.53 Mbit/s
    assert shannon_rate_bps(20e6, 0.2, 1e-10, noise_figure_db=7.0) == pytest.approx(
        20e6 * math.log2(1 + 251.1886 / 5.011872), rel=1e-5
    )


def test_shannon_rate_broadcasts_and_zero_bandwidth_gives_zero():
    b = np.array([0.0, 10e6, 20e6])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        r = shannon_rate_bps(b[:, None], 0.2, np.array([1e-10, 1e-12]))
    assert r.shape == (3, 2)
    assert np.all(r[0] == 0.0) and np.all(np.isfinite(r))
    assert r[2, 0] == pytest.approx(159.5672e6, rel=1e-5)
    for bad in ({"bandwidth_hz": -1.0}, {"tx_power_w": -0.1}, {"gain": np.nan}):
        args = {"bandwidth_hz": 1e6, "tx_power_w": 0.1, "gain": 1e-9, **bad}
        with pytest.raises(ValueError, match=next(iter(bad))):
            shannon_rate_bps(**args)


# -- path loss ------------------------------------------------------------------------------------------
# Hand values, TR 38.901 Table 7.4.1-1 at fc = 3.5 GHz, hUT = 1.5 m (20 log10 3.5 = 10.8814):
# UMi, hBS = 10 m: d'BP = 4 * 9 * 0.5 * 3.5e9 / 3e8 = 210 m.
#   d2D = 50 m:  d3D = 50.7174; LOS = 32.4 + 21 log10(50.7174) + 10.8814 = 79.0896;
#                NLOS' = 22.4 + 35.3 log10(50.7174) + 21.3 log10(3.5) = 94.1807.
#   d2D = 200 m: d3D = 200.1805; LOS = 91.6112; NLOS = 115.2288.
#   d2D = 800 m (beyond d'BP): LOS = 32.4 + 40 log10(800.0452) + 10.8814
#                - 9.5 log10(210^2 + 8.5^2) = 115.2770; NLOS = 136.4686.
# UMa, hBS = 25 m: d'BP = 4 * 24 * 0.5 * 3.5e9 / 3e8 = 560 m.
#   d2D = 50 / 200 / 800 m: NLOS = 92.5108 / 114.4620 / 137.8814; LOS(800 m) = 105.5382.


def test_umi_path_loss_matches_tr38901_hand_values():
    pl = UMiStreetCanyon(carrier_hz=3.5e9, h_bs_m=10.0, h_ut_m=1.5)
    assert pl.breakpoint_m == pytest.approx(210.0)
    d = np.array([50.0, 200.0, 800.0])
    np.testing.assert_allclose(pl.path_loss_db(d, True), [79.0896, 91.6112, 115.2770], atol=1e-3)
    np.testing.assert_allclose(pl.path_loss_db(d, False), [94.1807, 115.2288, 136.4686], atol=1e-3)
    np.testing.assert_allclose(pl.shadowing_std_db(np.array([True, False])), [4.0, 7.82])


def test_uma_path_loss_matches_tr38901_hand_values():
    pl = UMa(carrier_hz=3.5e9, h_ut_m=1.5)
    assert pl.h_bs_m == 25.0 and pl.breakpoint_m == pytest.approx(560.0)
    d = np.array([50.0, 200.0, 800.0])
    np.testing.assert_allclose(pl.path_loss_db(d, False), [92.5108, 114.4620, 137.8814], atol=1e-3)
    assert pl.path_loss_db(800.0, True) == pytest.approx(105.5382, abs=1e-3)
    np.testing.assert_allclose(pl.shadowing_std_db(np.array([True, False])), [4.0, 6.0])


def test_los_probability_matches_tr38901_table_7_4_2_1():
    # UMi: 18/d + exp(-d/36)(1 - 18/d); UMa (hUT <= 13 m): 18/d + exp(-d/63)(1 - 18/d).
    d = np.array([10.0, 50.0, 200.0, 800.0])
    umi = make_path_loss("UMi", 3.5e9)
    np.testing.assert_allclose(umi.los_probability(d), [1.0, 0.519585, 0.093518, 0.022500], atol=1e-6)
    assert umi.los_probability(18.0) == 1.0 and umi.los_probability(18.5) == pytest.approx(0.989140, abs=1e-6)
    uma = make_path_loss("UMa", 3.5e9)
    np.testing.assert_allclose(uma.los_probability(d), [1.0, 0.649402, 0.128048, 0.022503], atol=1e-6)


def test_simple_path_loss_and_factory_errors():
    pl = make_path_loss("simple")
    assert isinstance(pl, SimplePathLoss)
    # 128.1 + 37.6 log10(d_km): 1 km -> 128.1; 0.5 km -> 128.1 - 37.6 * 0.30103 = 116.7813
    np.testing.assert_allclose(pl.path_loss_db(np.array([1000.0, 500.0])), [128.1, 116.7813], atol=1e-4)
    assert pl.shadowing_std_db(False) == 8.0 and pl.los_probability(100.0) == 0.0
    with pytest.raises(ValueError, match=r"unknown path loss model 'RMa'.*UMi, UMa, simple"):
        make_path_loss("RMa")
    with pytest.raises(ValueError, match="carrier_hz"):
        make_path_loss("UMi", carrier_hz=200e9)
    with pytest.raises(ValueError, match="d2d_m"):
        make_path_loss("UMi").path_loss_db(np.array([10.0, 0.0]), True)


# -- fading ---------------------------------------------------------------------------------------------


def test_doppler_and_rho_values():
    # 3 km/h at 3.5 GHz: f_d = 0.8333 * 3.5e9 / 3e8 = 9.722 Hz; T = 1 ms: rho = J0(0.06109) = 0.99907
    assert doppler_hz(3 / 3.6, 3.5e9) == pytest.approx(9.7222, rel=1e-4)
    assert fading_correlation(9.7222, 1e-3) == pytest.approx(0.999067, abs=1e-6)
    assert ChannelConfig().rho == pytest.approx(0.999067, abs=1e-6)
    # 120 km/h: J0(2 pi 388.9 Hz 1 ms) = -0.0199 (fading decorrelates every slot)
    assert ChannelConfig(speed_mps=120 / 3.6).rho == pytest.approx(-0.019893, abs=1e-5)
    assert ChannelConfig(doppler_hz=0.0).rho == 1.0


@pytest.mark.parametrize("speed_kmh", [3.0, 60.0])
def test_gauss_markov_autocorrelation_matches_bessel(speed_kmh):
    n_links, n_slots = 16, 100_000
    # J0(2 pi f_d T): 0.99907 at 3 km/h, 0.66024 at 60 km/h (3.5 GHz, T = 1 ms)
    expected = {3.0: 0.999067, 60.0: 0.660245}[speed_kmh]
    fading = GaussMarkovFading.from_speed(n_links, speed_kmh / 3.6, 3.5e9, 1e-3)
    assert fading.rho == pytest.approx(expected, abs=1e-6)
    rng = np.random.default_rng(7)
    fading.reset(rng)
    cross, power = 0.0 + 0.0j, 0.0
    for _ in range(n_slots):
        prev = fading.h
        gains = fading.step(rng)
        cross += np.vdot(prev, fading.h)
        power += gains.sum()
    assert gains.shape == (n_links,)
    assert abs(cross.real / power - expected) < 0.02
    assert abs(cross.imag / power) < 0.02
    assert power / (n_links * n_slots) == pytest.approx(1.0, abs=0.1)


def test_fading_trajectory_is_the_step_recursion_over_a_block():
    fading = GaussMarkovFading(3, np.array([0.9, 0.5, 0.9]))
    fading.reset(np.random.default_rng(9))
    h = fading.h.copy()
    gains = fading.trajectory(np.random.default_rng(10), 50)
    z = np.random.default_rng(10).standard_normal((2, 3, 50))  # the block of innovations it draws
    e = (z[0] + 1j * z[1]) * math.sqrt(0.5)
    expected = np.empty((3, 50))
    for t in range(50):
        h = fading.rho * h + np.sqrt(1.0 - fading.rho**2) * e[:, t]
        expected[:, t] = np.abs(h) ** 2
    np.testing.assert_allclose(gains, expected, rtol=1e-10)
    np.testing.assert_allclose(fading.power_gain, expected[:, -1], rtol=1e-10)  # state = last slot
    with pytest.raises(ValueError, match="n_slots"):
        fading.trajectory(np.random.default_rng(0), 0)


def test_fading_trajectory_statistics():
    # complex Gaussian h: E|h|^2 = 1 and corr(|h_t|^2, |h_{t-1}|^2) = rho^2 (60 km/h: 0.660245^2)
    fading = GaussMarkovFading(16, 0.660245)
    rng = np.random.default_rng(9)
    fading.reset(rng)
    gains = fading.trajectory(rng, 50_000)
    assert gains.shape == (16, 50_000)
    assert gains.mean() == pytest.approx(1.0, abs=0.02)
    lag1 = np.mean((gains[:, 1:] - 1.0) * (gains[:, :-1] - 1.0)) / np.var(gains)
    assert lag1 == pytest.approx(0.660245**2, abs=0.02)


def test_fading_reset_is_unit_power_rayleigh_and_validates():
    fading = GaussMarkovFading(200_000, 0.5)
    g = fading.reset(np.random.default_rng(1))
    assert g.mean() == pytest.approx(1.0, abs=0.01)
    assert np.mean(g < 1.0) == pytest.approx(1 - math.exp(-1.0), abs=0.01)  # |h|^2 ~ Exp(1)
    with pytest.raises(ValueError, match="rho"):
        GaussMarkovFading(4, 1.5)
    with pytest.raises(ValueError, match="n_links"):
        GaussMarkovFading(0, 0.5)
    with pytest.raises(ValueError, match=r"rho: expected a number or shape \(3,\)"):
        GaussMarkovFading(3, np.array([0.9, 0.5]))


# -- link -------------------------------------------------------------------------------------------


def test_link_without_randomness_is_pure_path_loss():
    cfg = ChannelConfig(model="UMi", los="los", shadowing=False, fading=False)
    link = WirelessLink(cfg, n_links=3)
    gain, snr, rate = link.reset(np.random.default_rng(0), np.array([50.0, 200.0, 800.0]))
    np.testing.assert_allclose(10 * np.log10(gain), [-79.0896, -91.6112, -115.2770], atol=1e-3)
    np.testing.assert_allclose(snr, 0.2 * gain / (NOISE_PSD_W_PER_HZ * 20e6), rtol=1e-12)
    np.testing.assert_allclose(rate, shannon_rate_bps(20e6, 0.2, gain), rtol=1e-12)
    gain2, _, _ = link.step(np.random.default_rng(1))
    np.testing.assert_allclose(gain2, gain)
    block_gain, _, block_rate = link.trajectory(np.random.default_rng(2), 4)
    assert block_gain.shape == (3, 4)
    np.testing.assert_allclose(block_gain, np.repeat(gain[:, None], 4, axis=1))
    np.testing.assert_allclose(block_rate[:, -1], link.rate_bps)
    # below 10 m (the lower validity limit of TR 38.901's formulas) a link is priced at 10 m
    near, _, _ = WirelessLink(cfg, n_links=3).reset(np.random.default_rng(0), np.array([5.0, 10.0, 12.0]))
    assert near[0] == near[1] > near[2]


def test_link_is_deterministic_and_fades_around_the_mean():
    cfg = build(ChannelConfig, {"model": "UMa", "noise_figure_db": 5, "speed_mps": 30})
    a, b = WirelessLink(cfg, 4), WirelessLink(cfg, 4)
    ra, rb = np.random.default_rng(3), np.random.default_rng(3)
    out_a = [a.reset(ra, 100.0)] + [a.step(ra) for _ in range(5)]
    out_b = [b.reset(rb, 100.0)] + [b.step(rb) for _ in range(5)]
    for x, y in zip(out_a, out_b, strict=True):
        for u, v in zip(x, y, strict=True):
            np.testing.assert_array_equal(u, v)
    fading_mean = np.mean([a.step(ra)[0] / a.large_scale_gain for _ in range(3000)])
    assert fading_mean == pytest.approx(1.0, abs=0.1)
    assert np.all(a.distances_m == 100.0) and a.snr.shape == (4,)
    np.testing.assert_allclose(a.rate_for(bandwidth_hz=0.0), 0.0)


def test_link_move_correlates_shadowing():
    cfg = ChannelConfig(model="UMi", los="nlos")
    link = WirelessLink(cfg, n_links=20_000)
    rng = np.random.default_rng(5)
    link.reset(rng, 100.0)
    s0 = link.shadowing_db.copy()
    assert np.std(s0) == pytest.approx(7.82, rel=0.03)
    link.move(rng, 100.0, moved_m=0.0)
    np.testing.assert_array_equal(link.shadowing_db, s0)
    link.move(rng, 100.0, moved_m=13.0)  # one decorrelation distance: correlation exp(-1)
    assert np.corrcoef(s0, link.shadowing_db)[0, 1] == pytest.approx(math.exp(-1.0), abs=0.02)
    assert np.std(link.shadowing_db) == pytest.approx(7.82, rel=0.03)


def test_link_and_config_validation():
    with pytest.raises(ValueError, match=r"model: 'RMa' is not allowed"):
        build(ChannelConfig, {"model": "RMa"})
    with pytest.raises(ValueError, match=r"unknown config key 'speed'"):
        build(ChannelConfig, {"speed": 3})
    with pytest.raises(ValueError, match=r"carrier_hz: .* out of range"):
        build(ChannelConfig, {"carrier_hz": 1e12})
    assert build(ChannelConfig, {"carrier_hz": 0.5e9}).carrier_hz == 0.5e9  # TR 38.901's lowest carrier
    with pytest.raises(ValueError, match=r"h_ut_m: .* out of range"):
        build(ChannelConfig, {"h_ut_m": 1.0})  # the UMi/UMa formulas hold for 1.5 m <= h_UT <= 22.5 m
    link = WirelessLink(ChannelConfig(), 2)
    with pytest.raises(ValueError, match="distances_m"):
        link.reset(np.random.default_rng(0), np.array([10.0, -1.0]))
    with pytest.raises(ValueError, match="distances_m"):
        link.reset(np.random.default_rng(0), np.array([10.0, 20.0, 30.0]))


# -- traces ----------------------------------------------------------------------------------------------


def test_trace_round_trip_hold_and_cyclic(tmp_path):
    path = tmp_path / "trace.csv"
    path.write_text("time_s,rate_bps,note\n0,1e6,a\n1.0,2e6,b\n2.5,0,c\n")
    hold = ThroughputTrace.from_csv(path, mode="hold")
    np.testing.assert_array_equal(hold.time_s, [0.0, 1.0, 2.5])
    t = np.array([-1.0, 0.0, 0.5, 1.0, 2.49, 2.5, 10.0])
    np.testing.assert_array_equal(hold.rate_at(t), [1e6, 1e6, 1e6, 2e6, 2e6, 0.0, 0.0])
    cyc = ThroughputTrace.from_csv(path)
    assert cyc.period_s == pytest.approx(4.0)  # 2.5 - 0 + last interval 1.5
    np.testing.assert_array_equal(cyc.rate_at(np.array([4.0, 5.2, 6.6, 7.9])), [1e6, 2e6, 0.0, 0.0])
    assert cyc.rate_at(1.5) == 2e6


@pytest.mark.parametrize(
    ("text", "pattern"),
    [
        ("time,rate_bps\n0,1\n", r"trace\.csv:1: missing column 'time_s'"),
        ("time_s,rate\n0,1\n", r"missing column 'rate_bps'"),
        ("time_s,rate_bps\n0,1\n1,fast\n", r"trace\.csv:3: non-numeric"),
        ("time_s,rate_bps\n0,1\n1,-5\n", r"trace\.csv:3: negative rate_bps"),
        ("time_s,rate_bps\n0,1\n0,5\n", r"trace\.csv:3: time_s 0\.0 does not increase"),
        ("time_s,rate_bps\n0,1\n2,5\n1,3\n", r"trace\.csv:4: time_s 1\.0 does not increase \(previous 2\.0\)"),
        ("time_s,rate_bps\n0,nan\n", r"trace\.csv:2: non-finite"),
        ("time_s,rate_bps\n", r"no data rows"),
        ("", r"empty file"),
    ],
)
def test_trace_bad_files_raise(tmp_path, text, pattern):
    path = tmp_path / "trace.csv"
    path.write_text(text)
    with pytest.raises(ValueError, match=pattern):
        ThroughputTrace.from_csv(path)


def test_trace_missing_file_and_mode(tmp_path):
    with pytest.raises(ValueError, match=r"cannot read throughput trace .*absent\.csv"):
        ThroughputTrace.from_csv(tmp_path / "absent.csv")
    with pytest.raises(ValueError, match="mode"):
        ThroughputTrace(np.array([0.0]), np.array([1.0]), mode="loop")


@pytest.mark.parametrize("mean_snr", [1e-4, 0.03, 1.0, 100.0])
def test_ergodic_rate_matches_monte_carlo_over_rayleigh_fading(mean_snr):
    x = np.random.default_rng(0).exponential(size=1_000_000)
    monte_carlo = float(np.mean(1e7 * np.log2(1.0 + mean_snr * x)))
    assert ergodic_rate_bps(1e7, mean_snr) == pytest.approx(monte_carlo, rel=5e-3)
    assert ergodic_rate_bps(1e7, mean_snr) < 1e7 * np.log2(1.0 + mean_snr)  # Jensen: fading costs rate


def test_ergodic_rate_is_continuous_across_its_asymptotic_branch_and_validates():
    assert ergodic_rate_bps(1e7, 1 / 499.99) == pytest.approx(ergodic_rate_bps(1e7, 1 / 500.01), rel=1e-4)
    assert ergodic_rate_bps(1e7, 0.0) == 0.0
    with pytest.raises(ValueError, match="mean_snr"):
        ergodic_rate_bps(1e7, -1.0)


def test_ergodic_rate_of_an_array_equals_the_scalar_path():
    snr = np.array([0.0, 1e-4, 1 / 600.0, 0.03, 1.0, 100.0])
    assert ergodic_rate_bps(1e7, snr) == pytest.approx([ergodic_rate_bps(1e7, float(s)) for s in snr], rel=1e-12)


def test_rate_from_snr_is_shannon_and_its_scalar_path_equals_its_array_path():
    snr = np.array([0.0, 1.0, 3.0, 1e-9, 1e6])
    rates = rate_from_snr_bps(1e6, snr)
    assert np.array_equal(rates[:3], [0.0, 1e6, 2e6])
    scalar = [rate_from_snr_bps(1e6, float(x)) for x in snr]
    assert all(isinstance(r, float) for r in scalar)
    np.testing.assert_allclose(scalar, rates, rtol=1e-15, atol=0.0)
    p, g = 0.2, 1e-10
    assert rate_from_snr_bps(5e6, p * g / (NOISE_PSD_W_PER_HZ * 5e6)) == pytest.approx(shannon_rate_bps(5e6, p, g))


def test_transfer_time_is_bits_over_rate_then_the_ergodic_rate_past_one_coherence_interval():
    assert transfer_time_s(8000.0, 1e6, None, 1.0) == pytest.approx(8e-3)  # the plain-float path
    assert transfer_time_s(8000, 1_000_000, None, 1.0) == pytest.approx(8e-3)  # other Python numbers
    rates = np.array([1e6, 2e6])
    np.testing.assert_allclose(transfer_time_s(np.array([8000.0, 16000.0]), rates, None, 1.0), [8e-3, 8e-3])
    # 3 Mbit at 1 Mbit/s for a 1 s coherence interval, then 2 Mbit at the ergodic 2 Mbit/s: 2 s
    assert transfer_time_one_s(3e6, 1e6, 2e6, 1.0) == pytest.approx(2.0)
    assert transfer_time_one_s(0.5e6, 1e6, 2e6, 1.0) == pytest.approx(0.5)
    assert transfer_time_s(3e6, 1e6, 2e6, 1.0) == pytest.approx(2.0)
    assert transfer_time_s(3_000_000, 1_000_000, 2_000_000, 1) == pytest.approx(2.0)
