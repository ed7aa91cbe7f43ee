"""Wireless channel: 3GPP path loss, shadowing, correlated Rayleigh fading, Shannon rate, traces.

Every function and class works on numpy arrays over links; randomness is drawn from
a ``numpy.random.Generator`` passed in by the caller (an env's ``np_random``).

Sources:
    * Path loss, LOS probability, shadow fading: 3GPP TR 38.901 V17.0.0, Table 7.4.1-1
      and Table 7.4.2-1; shadowing decorrelation distances Table 7.5-6 (Part 1).
    * Simple macro-cell path loss 128.1 + 37.6 log10(d[km]) with 8 dB shadowing:
      3GPP TR 36.814 V9.0.0, Annex A.2.1.1 (2 GHz macro cell).
    * Spatially correlated shadowing: Gudmundson, "Correlation model for shadow fading
      in mobile radio systems", Electronics Letters 27(23), 1991.
    * Gauss–Markov fading with rho = J0(2 pi f_d T): Jakes, "Microwave Mobile
      Communications", 1974 (Clarke/Jakes autocorrelation); first-order AR model as in
      Baddour & Beaulieu, IEEE Trans. Wireless Commun. 4(4), 2005.
    * Thermal noise -174 dBm/Hz (k T0 at 290 K); Shannon capacity b log2(1 + SNR).
"""

from __future__ import annotations

import csv
import math
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from scipy.special import exp1, j0

from edgelam.envs.core.config import bounds, choices
from edgelam.envs.core.load import ar1_block

SPEED_OF_LIGHT_MPS = 3.0e8
"""Speed of light c in m/s as used by 3GPP TR 38.901 (Table 7.4.1-1, note 1)."""

NOISE_PSD_DBM_PER_HZ = -174.0
"""Thermal noise power spectral density k T0 at T0 = 290 K, in dBm/Hz."""

NOISE_PSD_W_PER_HZ = 10.0 ** (NOISE_PSD_DBM_PER_HZ / 10.0) / 1000.0

# Floor of the rate a transfer is priced at (transfer_time_s): a powerless link (SNR 0, Shannon rate 0)
# makes a transfer take bits / 1 s, long but finite, so latency, energy and virtual queues stay finite.
# Internal only: the envs report the physical rate (0 at zero transmit power) in info.
MIN_RATE_BPS = 1.0
"""Thermal noise power spectral density in W/Hz (about 3.98e-21)."""


_ndarray = np.ndarray  # bound once: rate_from_snr_bps's scalar path tests for it on every call


def _out(x: np.ndarray) -> np.ndarray | float:
    """A 0-d result as a numpy float scalar, anything else as the array itself."""
    return x[()] if x.ndim == 0 else x


def db_to_linear(x_db: np.ndarray | float) -> np.ndarray | float:
    """Power ratio from decibels: 10^(x/10)."""
    return _out(np.power(10.0, np.asarray(x_db, dtype=np.float64) / 10.0))


def linear_to_db(x: np.ndarray | float) -> np.ndarray | float:
    """Decibels from a positive power ratio: 10 log10(x).

    Raises:
        ValueError: if any value is not positive.
    """
    arr = np.asarray(x, dtype=np.float64)
    if np.any(~(arr > 0)):
        raise ValueError(f"linear_to_db: values must be positive, got min {np.min(arr)!r}")
    return _out(10.0 * np.log10(arr))


def dbm_to_w(x_dbm: np.ndarray | float) -> np.ndarray | float:
    """Power in watts from dBm: 10^(x/10) / 1000."""
    return _out(np.power(10.0, np.asarray(x_dbm, dtype=np.float64) / 10.0) / 1000.0)


def _nonnegative(name: str, x: np.ndarray | float) -> np.ndarray:
    arr = np.asarray(x, dtype=np.float64)
    if np.any(~(arr >= 0)) or np.any(~np.isfinite(arr)):
        raise ValueError(f"{name}: values must be finite and >= 0, got {x!r}")
    return arr


def snr_linear(
    bandwidth_hz: np.ndarray | float,
    tx_power_w: np.ndarray | float,
    gain: np.ndarray | float,
    noise_psd_w_per_hz: float = NOISE_PSD_W_PER_HZ,
    noise_figure_db: float = 0.0,
) -> np.ndarray | float:
    """Receive SNR p g / (N0 F b) (linear); 0 where the bandwidth is 0.

    Args:
        bandwidth_hz: allocated bandwidth b in Hz.
        tx_power_w: transmit power p in W.
        gain: linear channel power gain g (path loss, shadowing and fading).
        noise_psd_w_per_hz: thermal noise PSD N0 in W/Hz.
        noise_figure_db: receiver noise figure F in dB.
    """
    b = _nonnegative("bandwidth_hz", bandwidth_hz)
    p = _nonnegative("tx_power_w", tx_power_w)
    g = _nonnegative("gain", gain)
    if not noise_psd_w_per_hz > 0:
        raise ValueError(f"noise_psd_w_per_hz must be > 0, got {noise_psd_w_per_hz!r}")
    noise_w = noise_psd_w_per_hz * 10.0 ** (noise_figure_db / 10.0) * b
    signal_w = p * g
    snr = np.divide(signal_w, noise_w, out=np.zeros(np.broadcast(signal_w, noise_w).shape), where=noise_w > 0)
    return _out(snr)


def ergodic_rate_bps(bandwidth_hz: float, mean_snr: np.ndarray | float) -> np.ndarray | float:
    """Ergodic Shannon rate E[b log2(1 + s X)] of a Rayleigh link, X ~ Exp(1), mean SNR ``s`` (linear).

    Closed form ``b e^(1/s) E1(1/s) / ln 2`` (Goldsmith, *Wireless Communications*, 2005,
    Sec. 4.2.4; E1 the exponential integral), evaluated as ``b (x e^x E1(x)) s / ln 2`` with
    ``x = 1/s`` so that deep blockage neither overflows nor underflows: for x > 500 the
    asymptotic series ``x e^x E1(x) ~ 1 - 1/x + 2/x^2`` is used. Zero mean SNR gives zero
    rate. ``mean_snr`` may be an array (the result then is one too).

    Raises:
        ValueError: for a negative or non-finite bandwidth or mean SNR.
    """
    if not (math.isfinite(bandwidth_hz) and bandwidth_hz >= 0.0):
        raise ValueError(f"bandwidth_hz: must be finite and >= 0, got {bandwidth_hz!r}")
    if isinstance(mean_snr, (float, int)):  # scalar fast path (one call per env step)
        if not (math.isfinite(mean_snr) and mean_snr >= 0.0):
            raise ValueError(f"mean_snr: must be finite and >= 0, got {mean_snr!r}")
        return ergodic_rate_one_bps(bandwidth_hz, mean_snr)
    snr = np.asarray(mean_snr, dtype=np.float64)
    if not np.all(np.isfinite(snr) & (snr >= 0.0)):
        raise ValueError(f"mean_snr: must be finite and >= 0, got {mean_snr!r}")
    positive = snr > 0.0
    x = np.where(positive, 1.0 / np.where(positive, snr, 1.0), 1.0)
    small = np.minimum(x, 500.0)
    with np.errstate(over="ignore"):
        scaled = np.where(x > 500.0, 1.0 - 1.0 / x + 2.0 / (x * x), small * np.exp(small) * exp1(small))
    rate = np.where(positive, bandwidth_hz * scaled * snr / math.log(2.0), 0.0)
    return float(rate) if rate.ndim == 0 else rate


def ergodic_rate_one_bps(bandwidth_hz: float, mean_snr: float) -> float:
    """:func:`ergodic_rate_bps` of one link, Python floats, unchecked (its plain-number path).

    The closed form and its asymptotic branch for x = 1/s > 500 as there; the compiled
    simulators call this one (:mod:`edgelam.envs.core.jit`), so the formula is written once.
    """
    if mean_snr == 0.0:
        return 0.0
    x = 1.0 / mean_snr
    scaled = 1.0 - 1.0 / x + 2.0 / (x * x) if x > 500.0 else x * math.exp(x) * float(exp1(x))
    return bandwidth_hz * scaled * mean_snr / math.log(2.0)


def transfer_time_s(bits, rate_bps, ergodic_bps, coherence_s: float):
    """Seconds to send ``bits`` over a fading link: at ``rate_bps`` (the current fading state) for at
    most ``coherence_s``, the rest at ``ergodic_bps``.

    After one coherence interval the Rayleigh fading has decorrelated, so a long transfer
    averages over it: its remaining bits go at the ergodic rate E[b log2(1 + s X)]
    (:func:`ergodic_rate_bps`; Goldsmith 2005, Sec. 4.2.4). ``ergodic_bps=None`` keeps
    ``rate_bps`` for the whole transfer. Both rates are floored at ``MIN_RATE_BPS`` (a
    link with no power is slow, not infinitely so). Python numbers or numpy arrays (broadcast).
    """
    if type(rate_bps) is float and type(bits) is float and type(ergodic_bps) is not np.ndarray:  # one transfer
        if ergodic_bps is None:
            return bits / (rate_bps if rate_bps > MIN_RATE_BPS else MIN_RATE_BPS)
        return transfer_time_one_s(bits, rate_bps, ergodic_bps, coherence_s)
    if isinstance(rate_bps, np.ndarray) or isinstance(bits, np.ndarray) or isinstance(ergodic_bps, np.ndarray):
        rate_bps = np.maximum(rate_bps, MIN_RATE_BPS)
        if ergodic_bps is None:
            return bits / rate_bps
        in_interval = rate_bps * coherence_s
        return np.where(
            bits <= in_interval,
            bits / rate_bps,
            coherence_s + (bits - in_interval) / np.maximum(ergodic_bps, MIN_RATE_BPS),
        )
    rate_bps = max(rate_bps, MIN_RATE_BPS)
    if ergodic_bps is None:
        return bits / rate_bps
    in_interval = rate_bps * coherence_s
    if bits <= in_interval:
        return bits / rate_bps
    return coherence_s + (bits - in_interval) / max(ergodic_bps, MIN_RATE_BPS)


def transfer_time_one_s(bits: float, rate_bps: float, ergodic_bps: float, coherence_s: float) -> float:
    """:func:`transfer_time_s` of one transfer with an ergodic rate, Python floats (its plain-float path).

    The compiled simulators call this one (:mod:`edgelam.envs.core.jit`), so the formula is written once.
    """
    rate = rate_bps if rate_bps > MIN_RATE_BPS else MIN_RATE_BPS
    in_interval = rate * coherence_s
    if bits <= in_interval:
        return bits / rate
    return coherence_s + (bits - in_interval) / (ergodic_bps if ergodic_bps > MIN_RATE_BPS else MIN_RATE_BPS)


def rate_from_snr_bps(bandwidth_hz, snr):
    """Shannon rate b log2(1 + SNR) in bit/s of a link of bandwidth b (Hz) at linear SNR ``snr``.

    The capacity of the AWGN channel (Shannon, "A mathematical theory of communication",
    Bell Syst. Tech. J. 27, 1948); with ``bandwidth_hz = 1`` it is the spectral efficiency in
    bit/s/Hz. A Python number ``snr`` takes a plain-float path (``math.log2``: the single
    envs' hot loop); a numpy array ``snr`` is broadcast with ``bandwidth_hz`` (``np.log2``).
    Inputs are not validated here: :func:`shannon_rate_bps` is the checked entry point from
    power, gain and noise.
    """
    if isinstance(snr, _ndarray):
        return bandwidth_hz * np.log2(1.0 + snr)
    return bandwidth_hz * math.log2(1.0 + snr)


def shannon_rate_bps(
    bandwidth_hz: np.ndarray | float,
    tx_power_w: np.ndarray | float,
    gain: np.ndarray | float,
    noise_psd_w_per_hz: float = NOISE_PSD_W_PER_HZ,
    noise_figure_db: float = 0.0,
) -> np.ndarray | float:
    """Shannon rate b log2(1 + p g / (N0 F b)) in bit/s, broadcast over arrays.

    Zero bandwidth gives zero rate (the limit b -> 0), never ``nan``.

    Args:
        bandwidth_hz: allocated bandwidth b in Hz.
        tx_power_w: transmit power p in W.
        gain: linear channel power gain g.
        noise_psd_w_per_hz: thermal noise PSD N0 in W/Hz (default -174 dBm/Hz).
        noise_figure_db: receiver noise figure F in dB.

    Raises:
        ValueError: for negative or non-finite inputs.
    """
    b = _nonnegative("bandwidth_hz", bandwidth_hz)
    snr = np.asarray(snr_linear(b, tx_power_w, gain, noise_psd_w_per_hz, noise_figure_db))
    return _out(rate_from_snr_bps(b, snr))


# -- path loss -------------------------------------------------------------------------------------


class PathLoss(ABC):
    """Large-scale path loss model: mean loss, LOS probability, shadowing spread.

    Args:
        carrier_hz: carrier frequency f_c in Hz.
        h_bs_m: base-station antenna height in m (``None``: the model's default).
        h_ut_m: user-terminal antenna height in m.
    """

    default_h_bs_m: float = 10.0

    def __init__(self, carrier_hz: float = 3.5e9, h_bs_m: float | None = None, h_ut_m: float = 1.5) -> None:
        if not (0.5e9 <= carrier_hz <= 100e9):
            raise ValueError(f"carrier_hz: {carrier_hz!r} outside the TR 38.901 range [0.5e9, 100e9] Hz")
        h_bs = self.default_h_bs_m if h_bs_m is None else float(h_bs_m)
        if not h_bs > 1.0:
            raise ValueError(f"h_bs_m: must exceed the 1 m effective environment height, got {h_bs!r}")
        if not (1.5 <= h_ut_m <= 22.5):
            raise ValueError(f"h_ut_m: {h_ut_m!r} outside the TR 38.901 range [1.5, 22.5] m")
        self.carrier_hz = float(carrier_hz)
        self.h_bs_m = h_bs
        self.h_ut_m = float(h_ut_m)

    @property
    def carrier_ghz(self) -> float:
        """Carrier frequency in GHz (the unit of the TR 38.901 formulas)."""
        return self.carrier_hz / 1e9

    @property
    def breakpoint_m(self) -> float:
        """Breakpoint distance d'_BP = 4 h'_BS h'_UT f_c / c with h' = h - 1 m (TR 38.901 Table 7.4.1-1 note 1).

        The effective environment height h_E = 1 m is exact for UMi and for UMa with
        h_UT <= 13 m (TR 38.901 note 1: then C(d2D, h_UT) = 0).
        """
        return 4.0 * (self.h_bs_m - 1.0) * (self.h_ut_m - 1.0) * self.carrier_hz / SPEED_OF_LIGHT_MPS

    @staticmethod
    def _d2d(d2d_m: np.ndarray | float) -> np.ndarray:
        d = np.asarray(d2d_m, dtype=np.float64)
        if np.any(~(d > 0)) or np.any(~np.isfinite(d)):
            raise ValueError(f"d2d_m: distances must be finite and > 0 m, got {d2d_m!r}")
        return d

    def d3d_m(self, d2d_m: np.ndarray | float) -> np.ndarray:
        """3-D distance sqrt(d2D^2 + (h_BS - h_UT)^2) in m; ``ValueError`` for d2D <= 0."""
        return np.hypot(self._d2d(d2d_m), self.h_bs_m - self.h_ut_m)

    @abstractmethod
    def path_loss_db(self, d2d_m: np.ndarray | float, los: np.ndarray | bool) -> np.ndarray | float:
        """Mean path loss in dB at 2-D distance ``d2d_m`` (m) for the LOS state ``los``."""

    @abstractmethod
    def los_probability(self, d2d_m: np.ndarray | float) -> np.ndarray | float:
        """Probability that a link at 2-D distance ``d2d_m`` (m) is line of sight."""

    @abstractmethod
    def shadowing_std_db(self, los: np.ndarray | bool) -> np.ndarray | float:
        """Log-normal shadow-fading standard deviation sigma_SF in dB."""

    @abstractmethod
    def decorrelation_distance_m(self, los: np.ndarray | bool) -> np.ndarray | float:
        """Shadowing decorrelation distance in m (exponential autocorrelation, Gudmundson 1991)."""


class UMiStreetCanyon(PathLoss):
    """3GPP TR 38.901 UMi-Street Canyon (Table 7.4.1-1; LOS probability Table 7.4.2-1).

    LOS (d in m, f_c in GHz):
        PL1 = 32.4 + 21 log10(d3D) + 20 log10(f_c)                  for d2D <= d'_BP,
        PL2 = 32.4 + 40 log10(d3D) + 20 log10(f_c)
              - 9.5 log10(d'_BP^2 + (h_BS - h_UT)^2)                for d2D > d'_BP; sigma_SF = 4 dB.
    NLOS: max(PL_LOS, 22.4 + 35.3 log10(d3D) + 21.3 log10(f_c) - 0.3 (h_UT - 1.5)); sigma_SF = 7.82 dB.
    LOS probability: 1 for d2D <= 18 m, else 18/d2D + exp(-d2D/36) (1 - 18/d2D).
    Default BS height 10 m (TR 38.901 Table 7.4.1-1). Shadowing decorrelation distance
    10 m (LOS) / 13 m (NLOS), TR 38.901 Table 7.5-6 Part 1.
    """

    default_h_bs_m = 10.0

    def _los_db(self, d2d: np.ndarray, d3d: np.ndarray) -> np.ndarray:
        fc = self.carrier_ghz
        pl1 = 32.4 + 21.0 * np.log10(d3d) + 20.0 * math.log10(fc)
        bp = self.breakpoint_m
        pl2 = (
            32.4
            + 40.0 * np.log10(d3d)
            + 20.0 * math.log10(fc)
            - 9.5 * math.log10(bp**2 + (self.h_bs_m - self.h_ut_m) ** 2)
        )
        return np.where(d2d <= bp, pl1, pl2)

    def path_loss_db(self, d2d_m: np.ndarray | float, los: np.ndarray | bool) -> np.ndarray | float:
        d2d = np.asarray(d2d_m, dtype=np.float64)
        d3d = self.d3d_m(d2d)
        pl_los = self._los_db(d2d, d3d)
        pl_nlos = 22.4 + 35.3 * np.log10(d3d) + 21.3 * math.log10(self.carrier_ghz) - 0.3 * (self.h_ut_m - 1.5)
        return _out(np.where(np.asarray(los, dtype=bool), pl_los, np.maximum(pl_los, pl_nlos)))

    def los_probability(self, d2d_m: np.ndarray | float) -> np.ndarray | float:
        d = self._d2d(d2d_m)
        p = 18.0 / d + np.exp(-d / 36.0) * (1.0 - 18.0 / d)
        return _out(np.where(d <= 18.0, 1.0, p))

    def shadowing_std_db(self, los: np.ndarray | bool) -> np.ndarray | float:
        return _out(np.where(np.asarray(los, dtype=bool), 4.0, 7.82))

    def decorrelation_distance_m(self, los: np.ndarray | bool) -> np.ndarray | float:
        return _out(np.where(np.asarray(los, dtype=bool), 10.0, 13.0))


class UMa(PathLoss):
    """3GPP TR 38.901 UMa (Table 7.4.1-1; LOS probability Table 7.4.2-1).

    LOS (d in m, f_c in GHz):
        PL1 = 28.0 + 22 log10(d3D) + 20 log10(f_c)                  for d2D <= d'_BP,
        PL2 = 28.0 + 40 log10(d3D) + 20 log10(f_c)
              - 9 log10(d'_BP^2 + (h_BS - h_UT)^2)                  for d2D > d'_BP; sigma_SF = 4 dB.
    NLOS: max(PL_LOS, 13.54 + 39.08 log10(d3D) + 20 log10(f_c) - 0.6 (h_UT - 1.5)); sigma_SF = 6 dB.
    LOS probability: 1 for d2D <= 18 m, else
        (18/d2D + exp(-d2D/63) (1 - 18/d2D)) (1 + C'(h_UT) 5/4 (d2D/100)^3 exp(-d2D/150)),
        C'(h_UT) = 0 for h_UT <= 13 m, ((h_UT - 13)/10)^1.5 above.
    Default BS height 25 m (TR 38.901 Table 7.4.1-1). Shadowing decorrelation distance
    37 m (LOS) / 50 m (NLOS), TR 38.901 Table 7.5-6 Part 1.
    """

    default_h_bs_m = 25.0

    def _los_db(self, d2d: np.ndarray, d3d: np.ndarray) -> np.ndarray:
        fc = self.carrier_ghz
        pl1 = 28.0 + 22.0 * np.log10(d3d) + 20.0 * math.log10(fc)
        bp = self.breakpoint_m
        pl2 = (
            28.0
            + 40.0 * np.log10(d3d)
            + 20.0 * math.log10(fc)
            - 9.0 * math.log10(bp**2 + (self.h_bs_m - self.h_ut_m) ** 2)
        )
        return np.where(d2d <= bp, pl1, pl2)

    def path_loss_db(self, d2d_m: np.ndarray | float, los: np.ndarray | bool) -> np.ndarray | float:
        d2d = np.asarray(d2d_m, dtype=np.float64)
        d3d = self.d3d_m(d2d)
        pl_los = self._los_db(d2d, d3d)
        pl_nlos = 13.54 + 39.08 * np.log10(d3d) + 20.0 * math.log10(self.carrier_ghz) - 0.6 * (self.h_ut_m - 1.5)
        return _out(np.where(np.asarray(los, dtype=bool), pl_los, np.maximum(pl_los, pl_nlos)))

    def los_probability(self, d2d_m: np.ndarray | float) -> np.ndarray | float:
        d = self._d2d(d2d_m)
        c = 0.0 if self.h_ut_m <= 13.0 else ((self.h_ut_m - 13.0) / 10.0) ** 1.5
        p = (18.0 / d + np.exp(-d / 63.0) * (1.0 - 18.0 / d)) * (
            1.0 + c * 1.25 * (d / 100.0) ** 3 * np.exp(-d / 150.0)
        )
        return _out(np.where(d <= 18.0, 1.0, p))

    def shadowing_std_db(self, los: np.ndarray | bool) -> np.ndarray | float:
        return _out(np.where(np.asarray(los, dtype=bool), 4.0, 6.0))

    def decorrelation_distance_m(self, los: np.ndarray | bool) -> np.ndarray | float:
        return _out(np.where(np.asarray(los, dtype=bool), 37.0, 50.0))


class SimplePathLoss(PathLoss):
    """Macro-cell path loss 128.1 + 37.6 log10(d[km]) dB, sigma_SF = 8 dB (3GPP TR 36.814 Annex A.2.1.1).

    d is the BS-UE distance, taken as the 2-D distance in km. Defined at a 2 GHz
    carrier; ``carrier_hz`` is accepted for interface compatibility
    and does not enter the formula. No LOS distinction (``los_probability`` is 0; the
    ``los`` argument is ignored). The shadowing decorrelation distance is taken as 50 m
    (the TR 38.901 UMa NLOS value, Table 7.5-6).
    """

    default_h_bs_m = 25.0

    def path_loss_db(self, d2d_m: np.ndarray | float, los: np.ndarray | bool = False) -> np.ndarray | float:
        return _out(128.1 + 37.6 * np.log10(self._d2d(d2d_m) / 1000.0))

    def los_probability(self, d2d_m: np.ndarray | float) -> np.ndarray | float:
        return _out(np.zeros_like(self._d2d(d2d_m)))

    def shadowing_std_db(self, los: np.ndarray | bool = False) -> np.ndarray | float:
        return _out(np.full(np.shape(los), 8.0))

    def decorrelation_distance_m(self, los: np.ndarray | bool = False) -> np.ndarray | float:
        return _out(np.full(np.shape(los), 50.0))


PATH_LOSS_MODELS: dict[str, type[PathLoss]] = {"UMi": UMiStreetCanyon, "UMa": UMa, "simple": SimplePathLoss}


def make_path_loss(
    name: str, carrier_hz: float = 3.5e9, h_bs_m: float | None = None, h_ut_m: float = 1.5
) -> PathLoss:
    """Path loss model by name: ``"UMi"``, ``"UMa"`` or ``"simple"``.

    Raises:
        ValueError: for an unknown name (the message lists the known ones).
    """
    if name not in PATH_LOSS_MODELS:
        raise ValueError(f"unknown path loss model {name!r} (known: {', '.join(PATH_LOSS_MODELS)})")
    return PATH_LOSS_MODELS[name](carrier_hz=carrier_hz, h_bs_m=h_bs_m, h_ut_m=h_ut_m)


# -- small-scale fading -----------------------------------------------------------------------------


def doppler_hz(speed_mps: np.ndarray | float, carrier_hz: float) -> np.ndarray | float:
    """Maximum Doppler shift f_d = v f_c / c in Hz for speed ``speed_mps`` (m/s)."""
    v = _nonnegative("speed_mps", speed_mps)
    return _out(v * carrier_hz / SPEED_OF_LIGHT_MPS)


def fading_correlation(doppler: np.ndarray | float, slot_s: float) -> np.ndarray | float:
    """Lag-one correlation rho = J0(2 pi f_d T) of Clarke/Jakes fading (Jakes 1974).

    ``slot_s`` is the slot length T in **seconds** (1 ms -> 1e-3). Passing T = 1 s by
    mistake makes rho ~ 0 (independent fading every slot) at any realistic speed.
    """
    fd = _nonnegative("doppler_hz", doppler)
    if not slot_s > 0:
        raise ValueError(f"slot_s: must be > 0 s, got {slot_s!r}")
    return _out(j0(2.0 * np.pi * fd * slot_s))


def gauss_markov_step(h: np.ndarray, rho, innovation, normals: np.ndarray) -> np.ndarray:
    """One slot of Gauss–Markov Rayleigh fading: h_t = rho h_{t-1} + sqrt(1 - rho^2) e_t, e_t ~ CN(0, 1).

    ``innovation`` is sqrt(1 - rho^2) and ``normals`` the standard normals (2, *h.shape) of the
    real and imaginary parts, e_t = (z_0 + j z_1) / sqrt(2) (Jakes 1974; Baddour & Beaulieu 2005).
    The update :meth:`GaussMarkovFading.step` runs, for callers that hold the fading state
    themselves (a batched env's state of B x N links).
    """
    return rho * h + innovation * ((normals[0] + 1j * normals[1]) * math.sqrt(0.5))


class GaussMarkovFading:
    """Rayleigh fading over N links, first-order Gauss–Markov correlated over slots.

    h_t = rho h_{t-1} + sqrt(1 - rho^2) e_t, e_t ~ CN(0, 1), h_0 ~ CN(0, 1), so
    E|h_t|^2 = 1 and E[h_t h_{t-1}^*] = rho. rho = J0(2 pi f_d T) (Jakes 1974) with
    f_d = v f_c / c and T the slot length in seconds (see :func:`fading_correlation`).

    Attributes:
        rho: lag-one correlation, scalar or (N,) per link.
        h: complex fading coefficients, shape (N,); read it for an oracle.

    Args:
        n_links: number of independent links N.
        rho: lag-one correlation in [-1, 1], a number or an (N,) array.
    """

    def __init__(self, n_links: int, rho: np.ndarray | float) -> None:
        if not (isinstance(n_links, (int, np.integer)) and n_links >= 1):
            raise ValueError(f"n_links: expected a positive int, got {n_links!r}")
        r = np.asarray(rho, dtype=np.float64)
        if r.ndim > 1 or (r.ndim == 1 and r.shape != (n_links,)):
            raise ValueError(f"rho: expected a number or shape ({n_links},), got shape {r.shape}")
        if np.any(~(np.abs(r) <= 1.0)):
            raise ValueError(f"rho: must lie in [-1, 1], got {rho!r}")
        self.n_links = int(n_links)
        self.rho = r
        self._innovation = np.sqrt(1.0 - r**2)
        self.cn_scale = self._innovation * math.sqrt(0.5)  # sqrt((1 - rho^2) / 2): innovation per real normal
        self.h = np.ones(self.n_links, dtype=np.complex128)

    @classmethod
    def from_speed(cls, n_links: int, speed_mps: float, carrier_hz: float, slot_s: float) -> GaussMarkovFading:
        """Fading of users moving at ``speed_mps`` (m/s), carrier ``carrier_hz``, slot ``slot_s`` (s)."""
        return cls(n_links, fading_correlation(doppler_hz(speed_mps, carrier_hz), slot_s))

    @property
    def power_gain(self) -> np.ndarray:
        """Fading power gains |h|^2, shape (N,)."""
        return self.h.real**2 + self.h.imag**2

    def _cn(self, rng: np.random.Generator) -> np.ndarray:
        z = rng.standard_normal((2, self.n_links))
        return (z[0] + 1j * z[1]) * math.sqrt(0.5)

    def reset(self, rng: np.random.Generator) -> np.ndarray:
        """Draw h_0 ~ CN(0, 1) for every link; return the power gains |h_0|^2, shape (N,)."""
        self.h = self._cn(rng)
        return self.power_gain

    def step(self, rng: np.random.Generator) -> np.ndarray:
        """Advance one slot; return the power gains |h_t|^2, shape (N,)."""
        self.h = gauss_markov_step(self.h, self.rho, self._innovation, rng.standard_normal((2, self.n_links)))
        return self.power_gain

    def step_from(self, z: np.ndarray) -> np.ndarray:
        """Advance one slot with the innovation's standard normals ``z`` (2, N) given; return |h_t|^2, shape (N,).

        h_t = rho h_{t-1} + sqrt((1 - rho^2) / 2) (z_0 + j z_1): the recursion of :meth:`step`
        (equal in law) for envs that draw the normals of many slots in one call. An env that
        steps one link with Python floats reproduces it bit for bit as
        ``re = rho * re + cn_scale * z0; im = rho * im + cn_scale * z1; power = re * re + im * im``.
        """
        self.h = self.rho * self.h + self.cn_scale * (z[0] + 1j * z[1])
        return self.power_gain

    def trajectory(self, rng: np.random.Generator, n_slots: int) -> np.ndarray:
        """Advance ``n_slots`` slots at once; return the power gains, shape (N, n_slots).

        The same recursion as :meth:`step`, run by :func:`~edgelam.envs.core.load.ar1_block` over a
        block of innovations drawn in one call (shape (2, N, n_slots)): envs that
        precompute a block of slots use it instead of one :meth:`step` per slot.
        """
        if not (isinstance(n_slots, (int, np.integer)) and n_slots >= 1):
            raise ValueError(f"n_slots: expected a positive int, got {n_slots!r}")
        z = rng.standard_normal((2, self.n_links, n_slots))
        e = (z[0] + 1j * z[1]) * math.sqrt(0.5)
        rho = np.broadcast_to(self.rho, (self.n_links,))
        h = np.empty((self.n_links, n_slots), dtype=np.complex128)
        for r in np.unique(rho):  # one filter per distinct correlation (usually one)
            rows = rho == r
            x = e[rows] * math.sqrt(1.0 - r**2)
            h[rows] = ar1_block(self.h[rows], r, x)
        self.h = h[:, -1].copy()
        return h.real**2 + h.imag**2


# -- link: path loss + shadowing + fading ------------------------------------------------------------


@dataclass(frozen=True)
class ChannelConfig:
    """Wireless link of a scenario (validated by :func:`edgelam.envs.core.config.build`).

    Defaults: 3.5 GHz carrier (NR band n78), 20 MHz, 0.2 W = 23 dBm (NR UE power class 3,
    3GPP TS 38.101-1 Table 6.2.1-1), pedestrian 3 km/h, 1 ms slot, UE at 1.5 m. Typical
    receiver noise figures are 5 dB at a base station and 9 dB at a UE (3GPP TR 36.814
    Annex A.2.1.1); the default 0 dB leaves noise at -174 dBm/Hz.

    Attributes:
        model: path loss model, ``"UMi"``, ``"UMa"`` (TR 38.901) or ``"simple"`` (TR 36.814).
        carrier_hz: carrier frequency in Hz.
        bandwidth_hz: bandwidth of each link in Hz.
        tx_power_w: transmit power in W.
        noise_figure_db: receiver noise figure in dB.
        noise_psd_dbm_per_hz: thermal noise PSD in dBm/Hz.
        speed_mps: user speed in m/s, sets the Doppler shift f_d = v f_c / c.
        doppler_hz: if set, the Doppler shift in Hz (overrides ``speed_mps``).
        slot_s: slot length T in seconds between two fading steps; rho = J0(2 pi f_d T).
        h_bs_m: base-station height in m (``None``: 10 m for UMi, 25 m for UMa/simple).
        h_ut_m: user height in m.
        los: ``"prob"`` draws LOS per link from the TR 38.901 probability at reset;
            ``"los"`` / ``"nlos"`` force it.
        shadowing: draw log-normal shadowing at reset (kept for the episode).
        fading: apply Rayleigh small-scale fading (otherwise |h|^2 = 1).
    """

    model: str = field(default="UMi", metadata=choices("UMi", "UMa", "simple"))
    carrier_hz: float = field(default=3.5e9, metadata=bounds(0.5e9, 100e9))
    bandwidth_hz: float = field(default=20e6, metadata=bounds(1e3, 2e9))
    tx_power_w: float = field(default=0.2, metadata=bounds(0.0, 100.0))
    noise_figure_db: float = field(default=0.0, metadata=bounds(0.0, 30.0))
    noise_psd_dbm_per_hz: float = field(default=NOISE_PSD_DBM_PER_HZ, metadata=bounds(-220.0, -100.0))
    speed_mps: float = field(default=3.0 / 3.6, metadata=bounds(0.0, 140.0))
    doppler_hz: float | None = field(default=None, metadata=bounds(0.0, 5000.0))
    slot_s: float = field(default=1e-3, metadata=bounds(1e-6, 60.0))
    h_bs_m: float | None = field(default=None, metadata=bounds(1.5, 150.0))
    h_ut_m: float = field(default=1.5, metadata=bounds(1.5, 22.5))
    los: str = field(default="prob", metadata=choices("prob", "los", "nlos"))
    shadowing: bool = True
    fading: bool = True

    @property
    def resolved_doppler_hz(self) -> float:
        """Doppler shift in Hz: ``doppler_hz`` if set, else v f_c / c."""
        if self.doppler_hz is not None:
            return self.doppler_hz
        return float(doppler_hz(self.speed_mps, self.carrier_hz))

    @property
    def coherence_time_s(self) -> float:
        """Coherence time 0.423 / f_d of Clarke's model (Rappaport, *Wireless Communications*, 2002,
        Eq. 5.40c); 1e9 s for a static link (f_d = 0)."""
        fd = self.resolved_doppler_hz
        return 0.423 / fd if fd > 0.0 else 1e9

    @property
    def rho(self) -> float:
        """Lag-one fading correlation J0(2 pi f_d T) with T = ``slot_s`` seconds."""
        return float(fading_correlation(self.resolved_doppler_hz, self.slot_s))

    @property
    def noise_psd_w_per_hz(self) -> float:
        """Thermal noise PSD in W/Hz."""
        return 10.0 ** (self.noise_psd_dbm_per_hz / 10.0) / 1000.0


class WirelessLink:
    """N links to one base station: path loss + log-normal shadowing + Gauss–Markov Rayleigh fading.

    gain = 10^(-(PL(d) + S) / 10) |h_t|^2, SNR = p gain / (N0 F b), rate = b log2(1 + SNR).
    The LOS state and shadowing S ~ N(0, sigma_SF^2) are drawn at :meth:`reset` and
    kept for the episode; :meth:`move` updates distances with Gudmundson (1991)
    spatially correlated shadowing. :meth:`step` advances fading by one slot of
    ``config.slot_s`` seconds with rho = J0(2 pi f_d T) — T is the slot length in
    seconds; T = 1 s by mistake makes rho ~ 0 (3 km/h at 3.5 GHz with T = 1 ms gives
    rho = 0.999). Distances below 10 m are priced at 10 m, the lower validity limit of
    the TR 38.901 formulas.

    Sources: 3GPP TR 38.901 Tables 7.4.1-1, 7.4.2-1, 7.5-6; Jakes (1974); Shannon.

    Args:
        config: the validated channel configuration.
        n_links: number of links N.
    """

    MIN_DISTANCE_M = 10.0

    def __init__(self, config: ChannelConfig, n_links: int = 1) -> None:
        if not (isinstance(n_links, (int, np.integer)) and n_links >= 1):
            raise ValueError(f"n_links: expected a positive int, got {n_links!r}")
        self.config = config
        self.n_links = int(n_links)
        self.path_loss = make_path_loss(config.model, config.carrier_hz, config.h_bs_m, config.h_ut_m)
        self.fading = GaussMarkovFading(self.n_links, config.rho)
        self._noise_w = config.noise_psd_w_per_hz * 10.0 ** (config.noise_figure_db / 10.0) * config.bandwidth_hz
        self.distances_m = np.full(self.n_links, self.MIN_DISTANCE_M)
        self.los = np.zeros(self.n_links, dtype=bool)
        self.shadowing_db = np.zeros(self.n_links)
        self.large_scale_gain = np.ones(self.n_links)
        self.gain = np.ones(self.n_links)
        self.snr = np.zeros(self.n_links)
        self.rate_bps = np.zeros(self.n_links)

    def _distances(self, distances_m: np.ndarray | float) -> np.ndarray:
        d = np.asarray(distances_m, dtype=np.float64)
        if d.ndim > 1 or (d.ndim == 1 and d.shape != (self.n_links,)):
            raise ValueError(f"distances_m: expected a number or shape ({self.n_links},), got shape {d.shape}")
        if np.any(~(d > 0)) or np.any(~np.isfinite(d)):
            raise ValueError(f"distances_m: must be finite and > 0 m, got {distances_m!r}")
        return np.maximum(np.broadcast_to(d, (self.n_links,)), self.MIN_DISTANCE_M)

    def _update_large_scale(self) -> None:
        pl_db = np.asarray(self.path_loss.path_loss_db(self.distances_m, self.los))
        self.large_scale_gain = np.power(10.0, -(pl_db + self.shadowing_db) / 10.0)

    def _outputs(self, fading_power: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        cfg = self.config
        self.gain = self.large_scale_gain * (fading_power if cfg.fading else 1.0)
        self.snr = cfg.tx_power_w * self.gain / self._noise_w
        self.rate_bps = rate_from_snr_bps(cfg.bandwidth_hz, self.snr)
        return self.gain, self.snr, self.rate_bps

    def reset(
        self, rng: np.random.Generator, distances_m: np.ndarray | float
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Draw LOS states, shadowing and initial fading at the given 2-D distances (m).

        Random draws in this order: LOS (uniform, only for ``los="prob"``), shadowing
        (normal, only when enabled), fading (normal).

        Returns:
            (gain, snr, rate_bps): linear power gain, linear SNR and Shannon rate in
            bit/s, each shape (N,).
        """
        cfg = self.config
        self.distances_m = self._distances(distances_m).copy()
        if cfg.los == "prob":
            self.los = rng.random(self.n_links) < self.path_loss.los_probability(self.distances_m)
        else:
            self.los = np.full(self.n_links, cfg.los == "los")
        if cfg.shadowing:
            self.shadowing_db = self.path_loss.shadowing_std_db(self.los) * rng.standard_normal(self.n_links)
        else:
            self.shadowing_db = np.zeros(self.n_links)
        self._update_large_scale()
        return self._outputs(self.fading.reset(rng))

    @property
    def mean_snr(self) -> np.ndarray:
        """Linear SNR averaged over the small-scale fading (path loss + shadowing only), shape (N,)."""
        return self.config.tx_power_w * self.large_scale_gain / self._noise_w

    def step(self, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Advance fading one slot; return (gain, snr, rate_bps), each shape (N,)."""
        return self._outputs(self.fading.step(rng))

    def step_from(self, z: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """:meth:`step` with the fading innovation's standard normals ``z`` (2, N) given
        (:meth:`GaussMarkovFading.step_from`)."""
        return self._outputs(self.fading.step_from(z))

    @property
    def noise_w(self) -> float:
        """Receiver noise power N0 F b in W: ``snr = tx_power_w * gain / noise_w``."""
        return self._noise_w

    def trajectory(self, rng: np.random.Generator, n_slots: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Advance fading ``n_slots`` slots (large-scale state fixed); (gain, snr, rate_bps), each (N, n_slots).

        Leaves the link in the state of the last slot, as ``n_slots`` calls of
        :meth:`step` would (with a different but equally distributed random stream).
        """
        cfg = self.config
        power = self.fading.trajectory(rng, n_slots) if cfg.fading else np.ones((self.n_links, n_slots))
        gain = self.large_scale_gain[:, None] * power
        snr = cfg.tx_power_w * gain / self._noise_w
        rate = rate_from_snr_bps(cfg.bandwidth_hz, snr)
        self.gain, self.snr, self.rate_bps = gain[:, -1].copy(), snr[:, -1].copy(), rate[:, -1].copy()
        return gain, snr, rate

    def move(
        self,
        rng: np.random.Generator,
        distances_m: np.ndarray | float,
        moved_m: np.ndarray | float | None = None,
        normals: np.ndarray | None = None,
    ) -> None:
        """Set new distances; shadowing follows Gudmundson's exponential correlation.

        S_new = a S_old + sqrt(1 - a^2) sigma_SF n, a = exp(-Delta / d_corr), with
        Delta the distance each user travelled (``moved_m``; default the change in
        distance to the BS, a lower bound) and d_corr from TR 38.901 Table 7.5-6. The
        LOS state is kept. ``normals`` (N,) are the standard normals n, drawn by the caller
        (default: from ``rng``). Call :meth:`step` (or read :attr:`gain`) afterwards.
        """
        new = self._distances(distances_m)
        delta = np.abs(new - self.distances_m) if moved_m is None else _nonnegative("moved_m", moved_m)
        self.distances_m = new.copy()
        if self.config.shadowing:
            a = np.exp(-delta / self.path_loss.decorrelation_distance_m(self.los))
            sigma = self.path_loss.shadowing_std_db(self.los)
            n = rng.standard_normal(self.n_links) if normals is None else normals
            self.shadowing_db = a * self.shadowing_db + np.sqrt(1.0 - a**2) * sigma * n
        self._update_large_scale()

    def move_one(self, distance_m: float, moved_m: float, normal: float) -> float:
        """:meth:`move` for a link of one user (``n_links == 1``) with Python floats; returns the new large-scale gain.

        The same model (Gudmundson shadowing with the given standard normal ``normal``, the path
        loss model at the new distance, floored at 10 m) without the per-call checks and numpy
        calls on arrays of one element that dominate a single-user env's step; equal to
        :meth:`move` up to the last bits of ``exp`` and ``pow``.
        """
        if self.n_links != 1:
            raise ValueError(f"move_one: the link has {self.n_links} users, expected 1 (use move)")
        if not (distance_m > 0.0 and math.isfinite(distance_m)):
            raise ValueError(f"distance_m: must be finite and > 0 m, got {distance_m!r}")
        if not (moved_m >= 0.0 and math.isfinite(moved_m)):
            raise ValueError(f"moved_m: must be finite and >= 0, got {moved_m!r}")
        d = max(float(distance_m), self.MIN_DISTANCE_M)
        los = bool(self.los[0])
        shadowing = float(self.shadowing_db[0])
        if self.config.shadowing:
            a = math.exp(-moved_m / float(self.path_loss.decorrelation_distance_m(los)))
            sigma = float(self.path_loss.shadowing_std_db(los))
            shadowing = a * shadowing + math.sqrt(1.0 - a * a) * sigma * normal
        gain = 10.0 ** (-(float(self.path_loss.path_loss_db(d, los)) + shadowing) / 10.0)
        self.distances_m[0], self.shadowing_db[0], self.large_scale_gain[0] = d, shadowing, gain
        return gain

    def rate_for(
        self, bandwidth_hz: np.ndarray | float | None = None, tx_power_w: np.ndarray | float | None = None
    ) -> np.ndarray:
        """Shannon rates (bit/s) of the current gains under another bandwidth/power allocation."""
        cfg = self.config
        b = cfg.bandwidth_hz if bandwidth_hz is None else bandwidth_hz
        p = cfg.tx_power_w if tx_power_w is None else tx_power_w
        return np.asarray(shannon_rate_bps(b, p, self.gain, cfg.noise_psd_w_per_hz, cfg.noise_figure_db))


# -- throughput traces -------------------------------------------------------------------------------


class ThroughputTrace:
    """Replay of a measured throughput trace, sample-and-hold in time.

    The rate at time t is the rate of the last sample at or before t (the first
    sample's rate before the first time stamp). Beyond the end the trace either
    repeats (``mode="cyclic"``, period = t_last - t_first + the last sampling
    interval) or holds its last value (``mode="hold"``).

    Args:
        time_s: strictly increasing, finite sample times in s, shape (K,).
        rate_bps: non-negative finite rates in bit/s, shape (K,).
        mode: ``"cyclic"`` or ``"hold"``.
        source: where the samples came from (used in messages).
    """

    def __init__(
        self, time_s: np.ndarray, rate_bps: np.ndarray, mode: str = "cyclic", source: str = "<array>"
    ) -> None:
        t = np.asarray(time_s, dtype=np.float64)
        r = np.asarray(rate_bps, dtype=np.float64)
        if mode not in ("cyclic", "hold"):
            raise ValueError(f"mode: {mode!r} is not allowed (allowed: 'cyclic', 'hold')")
        if t.ndim != 1 or t.shape != r.shape or t.size == 0:
            raise ValueError(f"{source}: time_s and rate_bps must be equal-length non-empty 1-D arrays")
        if np.any(~np.isfinite(t)) or np.any(np.diff(t) <= 0):
            raise ValueError(f"{source}: time_s must be finite and strictly increasing")
        if np.any(~np.isfinite(r)) or np.any(r < 0):
            raise ValueError(f"{source}: rate_bps must be finite and >= 0")
        self.time_s = t
        self.rate_bps = r
        self.mode = mode
        self.source = source
        last_interval = t[-1] - t[-2] if t.size > 1 else math.inf
        self.period_s = float(t[-1] - t[0] + last_interval)

    @classmethod
    def from_csv(cls, path: Path | str, mode: str = "cyclic") -> ThroughputTrace:
        """Read a CSV with header columns ``time_s`` and ``rate_bps`` (others are ignored).

        Raises:
            ValueError: for a missing file, a missing column, a non-numeric or
                non-finite value, a negative rate or non-increasing times; the
                message names the file and the 1-based line.
        """
        path = Path(path)
        try:
            text = path.read_text()
        except OSError as exc:
            raise ValueError(f"cannot read throughput trace {path}: {exc}") from None
        rows = csv.reader(text.splitlines())
        header = next(rows, None)
        if header is None:
            raise ValueError(f"{path}: empty file, expected a header 'time_s,rate_bps'")
        names = [h.strip() for h in header]
        for col in ("time_s", "rate_bps"):
            if col not in names:
                raise ValueError(f"{path}:1: missing column {col!r} (header: {','.join(names)})")
        it, ir = names.index("time_s"), names.index("rate_bps")
        times: list[float] = []
        rates: list[float] = []
        for line, row in enumerate(rows, start=2):
            if not row or all(not c.strip() for c in row):
                continue
            if len(row) <= max(it, ir):
                raise ValueError(f"{path}:{line}: expected {len(names)} columns, got {len(row)}")
            try:
                t, r = float(row[it]), float(row[ir])
            except ValueError:
                raise ValueError(f"{path}:{line}: non-numeric value in {row!r}") from None
            if not (math.isfinite(t) and math.isfinite(r)):
                raise ValueError(f"{path}:{line}: non-finite value in {row!r}")
            if r < 0:
                raise ValueError(f"{path}:{line}: negative rate_bps {r!r}")
            if times and t <= times[-1]:
                raise ValueError(f"{path}:{line}: time_s {t!r} does not increase (previous {times[-1]!r})")
            times.append(t)
            rates.append(r)
        if not times:
            raise ValueError(f"{path}: no data rows")
        return cls(np.array(times), np.array(rates), mode=mode, source=str(path))

    def rate_at(self, t_s: np.ndarray | float) -> np.ndarray | float:
        """Rate in bit/s at time(s) ``t_s`` (s), vectorised."""
        t = np.asarray(t_s, dtype=np.float64)
        if np.any(~np.isfinite(t)):
            raise ValueError(f"t_s: must be finite, got {t_s!r}")
        if self.mode == "cyclic" and math.isfinite(self.period_s):
            t = self.time_s[0] + np.mod(t - self.time_s[0], self.period_s)
        idx = np.clip(np.searchsorted(self.time_s, t, side="right") - 1, 0, self.time_s.size - 1)
        return _out(self.rate_bps[idx])
