"""Baselines of edgelam/SpecDecode-v0 and the speculative-decoding analytics they use.

Analytics (Leviathan et al., "Fast Inference from Transformers via Speculative Decoding",
ICML 2023): with i.i.d. per-token acceptance alpha and draft length gamma,
:func:`expected_tokens` is the mean number of tokens a round emits (Eq. 1),
:func:`expected_speedup` the walltime improvement of Theorem 3.8 for a draft/target step-time
ratio c, and :func:`optimal_gamma` its integer argmax.

Policies (all price actions with the env's own :func:`~edgelam.envs.spec_decode.dynamics.round_cost`):

* ``autoregressive``: gamma = 0 every round.
* ``fixed``: the best static (gamma, draft) for the scenario, found by simulating every pair
  on replay episodes of seeds 1_000_000 + i, disjoint from the evaluation seeds (10_000 + i).
* ``leviathan``: per round, (gamma, draft) maximising Theorem 3.8's expected speedup extended
  with the communication terms: the expected tokens ``expected_tokens(alpha_v, gamma)`` over
  the expected round cost (latency + w_E energy) under the announced loads and the running
  acceptance estimate alpha_v of each draft. The expectation over the link is taken over
  the coming round's fading given what was measured last round (:func:`predicted_rates`):
  Gauss-Markov fading makes the next fading coefficient CN(rho h_prev, 1 - rho^2), at the
  large-scale SNR measured last round.
* ``lyapunov`` (Neely 2010): drift-plus-penalty on the energy-per-token budget: per round
  minimise ``[V (latency + w_E energy) + Z (energy - budget x tokens)] / tokens`` in
  expectation, Z the env's virtual queue.
* ``oracle``: knows this round's true link rate and how many drafted tokens each
  (gamma, draft) would have accepted (replay), and minimises this round's cost per token.
"""

from __future__ import annotations

import gymnasium as gym
import numpy as np

from edgelam.baselines import register, spec_decode_hindsight
from edgelam.baselines.hindsight import register_hindsight
from edgelam.envs.core.channel import rate_from_snr_bps
from edgelam.envs.spec_decode.dynamics import round_cost
from edgelam.envs.spec_decode.spec import SPEC

ENV_ID = SPEC.id
FIXED_SEARCH_SEED = 1_000_000  # search episodes, disjoint from training seeds and evaluation seeds (10_000 + i)
# fixed CN(0, 1) draws that discretise the next round's fading innovation (deterministic policies)
_INNOVATION = np.random.default_rng(0).standard_normal((2, 32)) / np.sqrt(2.0)


def predicted_rates(env: gym.Env) -> list[float]:
    """Equally likely link rates (bit/s) of the coming round, predicted from last round's measurement.

    With lag-one fading correlation rho (``channel.rho``), last round's fading power
    ``|h|^2 = snr / mean_snr`` (both measured) and the next coefficient
    ``h' = rho |h| + sqrt(1 - rho^2) w``, w ~ CN(0, 1) (Gauss-Markov; Jakes 1974), the rates are
    ``b log2(1 + mean_snr |h'|^2)`` over 32 fixed draws of w. Without fading: last round's rate.
    """
    base = env.unwrapped
    ch = base.config.channel
    last = base.estimated_rate_bps()
    mean_snr = base.estimated_mean_snr()
    if not ch.fading or mean_snr <= 0.0:
        return [last]
    snr = 2.0 ** (last / ch.bandwidth_hz) - 1.0
    rho = ch.rho
    a = rho * np.sqrt(max(snr, 0.0) / mean_snr)
    s = np.sqrt(max(1.0 - rho * rho, 0.0))
    power = (a + s * _INNOVATION[0]) ** 2 + (s * _INNOVATION[1]) ** 2
    return np.maximum(rate_from_snr_bps(ch.bandwidth_hz, mean_snr * power), 1.0).tolist()


def expected_tokens(alpha: float, gamma: int) -> float:
    """Mean tokens per round ``(1 - alpha^(gamma+1)) / (1 - alpha)`` (``gamma + 1`` at alpha = 1)."""
    if alpha >= 1.0:
        return float(gamma + 1)
    return (1.0 - alpha ** (gamma + 1)) / (1.0 - alpha)


def expected_speedup(alpha: float, gamma: int, c: float) -> float:
    """Walltime speedup over plain decoding, Theorem 3.8: ``expected_tokens / (gamma c + 1)``."""
    return expected_tokens(alpha, gamma) / (gamma * c + 1.0)


def optimal_gamma(alpha: float, c: float, gamma_max: int) -> int:
    """Integer gamma in 0..gamma_max maximising :func:`expected_speedup` (the smallest on ties)."""
    speedups = [expected_speedup(alpha, g, c) for g in range(gamma_max + 1)]
    return int(np.argmax(speedups))


class _Static:
    def __init__(self, gamma: int, variant: int) -> None:
        self.action = np.array([gamma, variant], dtype=np.int64)

    def predict(self, observation, state=None, episode_start=None, deterministic=True):
        return self.action.copy(), state


class _PerRound:
    """argmin over every (gamma, draft) of the (expected or, for the oracle, true) cost per token."""

    def __init__(self, env: gym.Env, mode: str = "leviathan", v: float = 10.0) -> None:
        self.env = env.unwrapped
        self.mode = mode
        self.v = v
        if mode == "lyapunov" and self.env.config.energy_budget_j_per_token is None:
            raise ValueError(
                "lyapunov baseline: the scenario sets no energy_budget_j_per_token (e.g. energy_budget_j_per_token=0.1)"
            )

    def predict(self, observation, state=None, episode_start=None, deterministic=True):
        env = self.env
        cfg = env.config
        w_e = cfg.reward.energy_weight_per_j
        oracle = self.mode == "oracle"
        rates = [env.true_rate_bps] if oracle else predicted_rates(env)
        ergodic = env.true_ergodic_rate_bps if oracle else env.estimated_ergodic_rate_bps()
        alphas = env.acceptance_ema
        cap = env.tokens_left - 1
        best, best_cost = (0, 0), float("inf")
        for variant in range(env.num_variants):
            for gamma in range(cfg.gamma_max + 1):
                n = min(gamma, cap)
                if n < gamma or (gamma == 0 and variant > 0):
                    continue  # the same round as a smaller gamma / the variant is unused
                latency = energy = 0.0
                for rate in rates:  # expectation over the predicted link rates
                    lat, en = round_cost(env.tables, n, variant, rate, env.edge_util, env.device_util, ergodic)
                    latency += lat
                    energy += en
                latency /= len(rates)
                energy /= len(rates)
                if oracle:
                    tokens = env.accepted_if(n, variant) + 1.0
                else:
                    tokens = expected_tokens(alphas[variant], n)
                cost = latency + w_e * energy
                if self.mode == "lyapunov":
                    budget = cfg.energy_budget_j_per_token
                    cost = self.v * cost + env.virtual_queue * (energy - budget * tokens)
                if cost / tokens < best_cost:
                    best, best_cost = (gamma, variant), cost / tokens
        return np.array(best, dtype=np.int64), state


def best_static_action(env: gym.Env, episodes: int = 3) -> tuple[int, int]:
    """(gamma, draft) with the highest mean return over replay episodes of the env's scenario."""
    base = env.unwrapped
    sim = type(base)(scenario=base.scenario, backend="replay", **base.overrides)
    best, best_return = (0, 0), -float("inf")
    for variant in range(sim.num_variants):
        for gamma in range(sim.config.gamma_max + 1):
            if gamma == 0 and variant > 0:
                continue
            action = np.array([gamma, variant], dtype=np.int64)
            total = 0.0
            for i in range(episodes):
                sim.reset(seed=FIXED_SEARCH_SEED + i)
                done = False
                while not done:
                    _, reward, terminated, truncated, _ = sim.step(action)
                    total += reward
                    done = terminated or truncated
            if total > best_return:
                best, best_return = (gamma, variant), total
    return best


register(ENV_ID, "autoregressive", lambda env: _Static(0, 0))
register(ENV_ID, "fixed", lambda env: _Static(*best_static_action(env)))
register(ENV_ID, "leviathan", lambda env: _PerRound(env, "leviathan"))
register(ENV_ID, "lyapunov", lambda env, v=10.0: _PerRound(env, "lyapunov", v))
register(ENV_ID, "oracle", lambda env: _PerRound(env, "oracle"))
register_hindsight(ENV_ID, spec_decode_hindsight.solve)
