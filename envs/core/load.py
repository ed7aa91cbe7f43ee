"""Background load of a processor: a first-order autoregressive (AR(1)) utilisation, and AR(1) filtering.

The background utilisation u of a server (the share of its speed taken by other users'
jobs) moves slowly: u_{t+1} = mean + corr (u_t - mean) + std sqrt(1 - corr^2) N(0, 1), whose
stationary law has mean ``mean``, standard deviation ``std`` and lag-one correlation
``corr``. A job sharing the processor is slowed by 1 / (1 - u) (processor sharing).

Two forms are in use, and each env says which it runs:

* :func:`ar1_load_step`, the utilisation itself clipped to [0, max_util] every step (the
  clipped value is the state); plain floats for a single env, arrays for B rows.
* :func:`ar1_block`, a latent AR(1) x_t = corr x_{t-1} + gain e_t filtered over a block of
  steps at once (its value is unclipped; an env clips what it observes, mean + x, itself).

Sources:
    * AR(1) process and its stationary variance std^2 = innovation^2 / (1 - corr^2): Box &
      Jenkins, *Time Series Analysis: Forecasting and Control*, 1970, Sec. 3.2.4.
    * Processor-sharing slowdown 1 / (1 - u): Kleinrock, *Queueing Systems* Vol. 2, 1976.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
from scipy.signal import lfilter

from edgelam.envs.core.config import bounds

_ndarray = np.ndarray  # bound once: the scalar path tests for it on every call


@dataclass(frozen=True)
class AR1LoadConfig:
    """Background utilisation u of a processor, AR(1) over steps, clipped to [0, max_util].

    u_{t+1} = mean + corr (u_t - mean) + std sqrt(1 - corr^2) N(0, 1) (module docstring);
    a job's compute on the processor is slowed by 1 / (1 - u) (processor sharing, Kleinrock 1976).

    Attributes:
        mean: long-run mean utilisation.
        std: stationary standard deviation of the utilisation (before clipping).
        corr: lag-one correlation between consecutive steps.
        max_util: the utilisation is clipped to at most this (so 1 / (1 - u) stays finite).
    """

    mean: float = field(default=0.3, metadata=bounds(0.0, 0.95))
    std: float = field(default=0.1, metadata=bounds(0.0, 0.5))
    corr: float = field(default=0.9, metadata=bounds(0.0, 1.0))
    max_util: float = field(default=0.95, metadata=bounds(0.0, 0.99))

    @property
    def innovation_std(self) -> float:
        """Standard deviation std sqrt(1 - corr^2) of one step's innovation."""
        return self.std * math.sqrt(1.0 - self.corr**2)


def ar1_load_step(util, mean, corr, innovation_std, max_util, normal):
    """Next clipped utilisation ``min(max(mean + corr (util - mean) + innovation_std normal, 0), max_util)``.

    ``normal`` is the step's standard normal draw. A Python number ``util`` takes a
    plain-float path (a single env's hot loop); a numpy array ``util`` (a vector env's rows)
    is broadcast with the other arguments. ``innovation_std`` is :attr:`AR1LoadConfig.innovation_std`.
    """
    if isinstance(util, _ndarray):
        return np.minimum(np.maximum(mean + corr * (util - mean) + innovation_std * normal, 0.0), max_util)
    return min(max(mean + corr * (util - mean) + innovation_std * normal, 0.0), max_util)


def ar1_block(x0: np.ndarray, corr: float, innovations: np.ndarray, gain: float = 1.0) -> np.ndarray:
    """A latent AR(1) ``x_t = corr x_{t-1} + gain innovations_t`` over the last axis, continuing from ``x0``.

    Args:
        x0: (B,) the value before the block.
        corr: lag-one correlation.
        innovations: (B, T) the block's innovations (already scaled unless ``gain`` scales them).
        gain: factor applied to each innovation inside the filter.

    Returns:
        (B, T) x_1 .. x_T (``x[:, -1]`` continues the next block).
    """
    return lfilter([gain], [1.0, -corr], innovations, axis=1, zi=(corr * x0)[:, None])[0]


def lognormal_ar1_block(mean: float, log_std: float, corr: float, shocks: np.ndarray,
                        z0: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(values (B, T), last latent (B,)): a log-normal process around ``mean`` with AR(1) log-correlation.

    z_t = corr z_{t-1} + sqrt(1 - corr^2) shock_t (stationary N(0, 1) from a N(0, 1) ``z0``), value =
    mean exp(log_std z - log_std^2 / 2), so the mean is preserved (E exp(s z) = exp(s^2 / 2)). The WAN
    round trip of the offload envs and the backhaul rate of the model cache envs.
    """
    z = ar1_block(z0, corr, shocks, gain=math.sqrt(1.0 - corr**2))
    return mean * np.exp(log_std * z - 0.5 * log_std**2), z[:, -1].copy()
