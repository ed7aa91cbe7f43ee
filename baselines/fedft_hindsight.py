"""Hindsight of FedFTAllocation-v0 and FedFTPower-v0: a certified bound and a planner (:mod:`.hindsight`).

What the episode's future holds, read at its first step from a :func:`~edgelam.baselines.hindsight.fork`
of the env (:func:`exogenous_trace`):

* the fading: one (2, 1, K) block of normals per round from the env's generator
  (:func:`~edgelam.envs.fedft.dynamics.draw_fading`), drawn every round whatever the action, so
  the channel gains and (split mode) downlink times of every round are known; they come from
  replaying rounds with nobody scheduled through :func:`~edgelam.envs.fedft.dynamics.advance`;
* the surrogate's learning noise: one (1, G) block from the learning generator
  (:func:`~edgelam.envs.fedft.dynamics.draw_learning_noise`) per round *with participants*. The
  draw count depends on the actions: a round nobody reaches leaves the generator alone, so the
  noise a round gets is the n-th block, n the number of earlier rounds with participants. The
  planner draws the first T blocks and hands every simulated row the block of its own n.

Kind ``"bound"`` (up to :data:`MAX_ENUM_DEVICES` devices, so in every shipped scenario but
``dense``; ``"planner"`` beyond). The plan played is the planner's (below); the value is
:func:`upper_bound`, a certified upper bound on the return of any policy on the episode.
Proof sketch:

1. The return telescopes: R = loss_scale (L_now - L_T) - w sum_t E_t with L the mean of the G
   topic losses, E_t the round's device energy and w = energy_weight_per_j (over K for
   FedFTPower-v0, whose return is the mean over agents). So R = mean_g R_g with
   R_g = loss_scale (L_now,g - L_T,g) - w sum_t E_t.
2. A round acts on the losses only through the set S of devices whose update arrives: with
   h = headroom - (L_0 - L) the surrogate maps topic g by h' = f_g(S) h + u_g(S) - spread(S) eps_n,g,
   eps_n the n-th noise block, n the earlier rounds with participants (S empty: h' = h, n kept).
   The map is read from the env's kernel (:func:`~edgelam.envs.fedft.kernels.surrogate_rows`)
   at two headrooms and two noises, and checked affine at a third point. Channel and noise
   blocks do not depend on the actions (above).
3. E_t >= Elb_t(S): the computation energy of S plus :func:`upload_energy_lower_bound` (a
   Lagrangian dual of the min-energy FDMA problem over the deadline's tolerance window, scaled by
   window / tolerance window); devices scheduled but dropped only add energy. A set is left out
   only when no allocation lets it upload (:func:`upload_energy_lower_bound`'s ``possible``).
4. Relaxation: let every topic choose its own sequence of sets. Then max over policies of
   mean_g R_g <= mean_g max_(S_t^g) R_g, and each topic's problem is a deterministic DP over
   (round, h, n) with h a number: V_t(h, n) = max_S [-w Elb_t(S) + V_t+1(f h + u - spread eps_n,
   n + [S nonempty])], V_T(h) = -loss_scale h. Every V_t(., n) is a maximum of affine functions,
   kept exactly (:func:`_envelope`) on an interval holding every headroom any policy reaches at
   round t (propagated over all sets and noise indices), so the topic's bound is
   loss_scale h_now + V_0(h_now, 0). A relative 1e-9 plus 1e-7 covers float rounding of the env's sums.

It is loose, by about 2x on the default episodes (``tests/fedft/test_hindsight.py``, and the
docstring of the env): the relaxation lets every topic train on the devices that hold its own data
and ride its own favourable noise. The optimum lies between the plan's return (the ``return``
of the hindsight rows, named in ``solver``) and the bound. An exact solution is out of reach: the
final loss couples all rounds through a product of per-topic factors with a noise index set by
past participation, 2^K sets per round over 30 rounds (32^30 by default) with a state of G
headrooms plus n.

The planner (:func:`solve`), every round priced by the env's own functions on a batched
:class:`~edgelam.envs.fedft.dynamics.State` (:func:`~edgelam.envs.fedft.dynamics.allocation` /
:func:`~edgelam.envs.fedft.dynamics.requested_allocation` and
:func:`~edgelam.envs.fedft.dynamics.advance` of rows that share the round's channel):

1. candidates per round: every set S of devices (up to :data:`MAX_ENUM_DEVICES` devices; beyond,
   nested sets of the devices cheapest alone and the full set less each device), each with the
   least-energy FDMA allocation that lets all of S upload before the deadline
   (:func:`min_energy_bands`, the KKT solution of the problem of
   :func:`edgelam.baselines.fedft.min_energy_allocation`, vectorised over the sets), encoded as
   the env's float32 action;
2. a beam search over the rounds, keeping the best partial returns with at most
   :data:`ROWS_PER_NOISE_INDEX` rows per noise index n (so rows facing different future noise survive);
3. coordinate ascent on the best sequence: each round's set is replaced by the best candidate
   given the rest of the sequence (whole-episode rollouts of all candidates at once), sweep after
   sweep until no round improves.

As a planner (beyond MAX_ENUM_DEVICES devices, or when the bound fails) the value is the plan's
return replayed on a fork (:func:`~edgelam.baselines.hindsight.rollout`), what playing it
realises. Replay backend only: the live backend's losses come from training the model, which
cannot be replayed (``ValueError``).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import gymnasium as gym
import numpy as np
from scipy.special import lambertw

from edgelam.baselines.fedft import _encode, closed_form_power
from edgelam.baselines.hindsight import Plan, fork, rollout
from edgelam.envs.core.jit import njit
from edgelam.envs.fedft import kernels
from edgelam.envs.fedft.dynamics import (
    Params,
    State,
    Workspace,
    advance,
    allocation,
    costs_rows,
    draw_fading,
    draw_learning_noise,
    requested_allocation,
    upload_rate_bps,
)
from edgelam.envs.fedft.vector import power_rewards_infos

MAX_ENUM_DEVICES = 6  # all 2^K participant sets per round up to this many devices
MAX_HEURISTIC_SETS = 64  # candidate sets per round beyond it
BEAM_WIDTH = 192  # rows kept per round
ROWS_PER_NOISE_INDEX = 6  # rows kept per noise index n (BEAM_WIDTH / 6 = 32 indices: all of a 30-round episode)
WINDOW_MARGIN = 1e-4  # relative upload-window margin against float32 actions
SWEEPS = 6  # coordinate-ascent sweeps at most
TIME_LIMIT_S = 10.0  # search time after which the best plan so far is returned
BISECTIONS = 100
PLANNER = "beam search + coordinate ascent over participant sets, min-energy FDMA per set"
RELAXATION = "per-topic relaxation, DP over (headroom, noise index) with energy lower bounds"


@dataclass(frozen=True)
class Trace:
    """The exogenous values of the rest of an episode (T rounds from the env's current one)."""

    fading: np.ndarray  # (T, 2, 1, K) the fading normals drawn after each round
    noise: np.ndarray  # (T, G) the learning generator's blocks, in draw order (round with participants n gets n)
    gains: np.ndarray  # (T, K) link power gain of each round
    downlink_s: np.ndarray  # (T, K) split-mode downlink time of each round (zeros otherwise), s


def _generator(sim: Any) -> np.random.Generator:
    """The generator the env's rounds draw their fading from."""
    return sim.np_random if isinstance(sim, gym.Env) else sim._np_random


def exogenous_trace(env: Any) -> Trace:
    """The rest of the episode's fading, channel and learning noise, from a fork of ``env`` (module docstring)."""
    sim = fork(env)
    fed = sim.fed
    p = fed.params
    k, g = p.num_devices, p.num_topics
    t_left = p.episode_length - fed.t
    rng = _generator(sim)
    fading = np.stack([draw_fading(rng, p, 1) for _ in range(t_left)])
    one = np.ones(1, dtype=np.int64)
    noise = np.concatenate([draw_learning_noise(fed.learn_rng, p, one) for _ in range(t_left)]).reshape(t_left, g)
    state = fed.state.copy()
    gains, downlink = np.empty((t_left, k)), np.empty((t_left, k))
    none = np.zeros((1, k))
    for t in range(t_left):
        gains[t], downlink[t] = state.gains[0], state.downlink_s[0]
        advance(p, state, none, none, fading[t], lambda m: np.empty((0, g)))
    return Trace(fading, noise, gains, downlink)


def min_energy_bands(
    gains: np.ndarray, window_s: np.ndarray, bits: float, bandwidth_hz: float, noise_w_per_hz: float,
    p_max_w: float, masks: np.ndarray,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Least-energy FDMA allocation of each set of devices: the problem of ``min_energy_allocation``, in closed form.

    For device k on band b uploading ``bits`` in its window t_k the least power is
    p_k(b) = (N0 b / g_k)(2^(s / (b t_k)) - 1) (:func:`~edgelam.baselines.fedft.closed_form_power`) and the
    energy e_k(b) = t_k p_k(b) is convex and decreasing in b, so the band is used up and the optimum
    has e_k'(b_k) = -lambda for every device above its least band b_min,k (where p_k = p_max). With
    x = s / (b t) and u = x ln 2, -e'(b) = (t N0 / g)(1 - e^u (1 - u)), so b_k(lambda) =
    s ln 2 / (t_k u_k) with u_k = 1 + W_0((lambda g_k / (t_k N0) - 1) / e) (Lambert W); lambda
    is found by bisection so that sum_k max(b_k(lambda), b_min,k) = B.

    Args:
        gains: (K,) link power gains.
        window_s: (K,) upload windows (deadline less computation and download), s.
        bits: upload size, bits.
        bandwidth_hz: the band B, Hz.
        noise_w_per_hz: N0 (with the noise figure), W/Hz.
        p_max_w: power limit, W.
        masks: (C, K) bool, the sets.

    Returns:
        ``(bandwidth_hz, power_w, feasible)``: (C, K), (C, K) (zeros outside each set) and (C,) bool
        (every device of the set can make its window together with the others; the empty set is feasible).
    """
    b, _, feasible, power = _water_fill(gains, window_s, bits, bandwidth_hz, noise_w_per_hz, p_max_w, masks, False)
    on = b > 0
    return b, np.where(on, np.minimum(power(np.where(on, b, 1.0)), p_max_w), 0.0), feasible


def upload_energy_lower_bound(
    gains: np.ndarray, window_s: np.ndarray, bits: float, bandwidth_hz: float, noise_w_per_hz: float,
    p_max_w: float, masks: np.ndarray,
) -> tuple[np.ndarray, np.ndarray]:
    """A certified lower bound on the upload energy of each set of devices, and which sets can upload at all.

    Any FDMA allocation under which every device of the set uploads ``bits`` within its window t_k
    spends at least the optimum of :func:`min_energy_bands`' problem, and that is at least the
    Lagrangian dual D(lambda) = sum_k min_{b >= b_lo,k} (e_k(b) + lambda b) - lambda B for any
    lambda >= 0, with b_lo,k <= b_min,k (the low end of its bisection, so the relaxed domain holds
    the true one). The inner minimum is at max(b_k(lambda), b_lo,k) (e_k convex), evaluated at the
    bisection's lambda; a relative slack of 1e-9 covers the rounding of that evaluation.

    Returns:
        ``(energy_j, possible)``: (C,) the bound (0 for the empty set) and (C,) bool, False only for sets
        no allocation lets upload (a device that misses its window alone on the band at p_max, or least
        bands over B).
    """
    b, lam, possible, power = _water_fill(gains, window_s, bits, bandwidth_hz, noise_w_per_hz, p_max_w, masks, True)
    on = b > 0
    t = np.where(np.asarray(window_s) > 0, window_s, 1.0)
    inner = np.where(on, t * power(np.where(on, b, 1.0)) + lam[:, None] * b, 0.0).sum(axis=1)
    dual = np.where(on.any(axis=1), inner - lam * bandwidth_hz, 0.0)
    return np.maximum(dual * (1.0 - 1e-9), 0.0), possible


def _water_fill(
    gains: np.ndarray, window_s: np.ndarray, bits: float, bandwidth_hz: float, noise_w_per_hz: float,
    p_max_w: float, masks: np.ndarray, relaxed: bool,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, Any]:
    """The KKT bands of :func:`min_energy_bands` (C, K), their multiplier lambda (C,), the sets' feasibility
    (C,) and p(b) (K,) -> (K,). ``relaxed``: least bands and feasibility from below (for the lower bound);
    else from above (allocations that meet the windows)."""
    masks = np.asarray(masks, dtype=bool)
    k = masks.shape[1]
    g = np.asarray(gains, dtype=np.float64)
    t = np.asarray(window_s, dtype=np.float64)
    capacity = upload_rate_bps(np.full(k, bandwidth_hz), np.full(k, p_max_w), g, noise_w_per_hz) * t
    alone = (t > 0) & ((capacity >= bits * (1.0 - 1e-12)) if relaxed else (capacity > bits))
    safe_t = np.where(t > 0, t, 1.0)

    def power(b: np.ndarray) -> np.ndarray:
        return closed_form_power(g, bits, safe_t, b, noise_w_per_hz)

    lo, hi = np.zeros(k), np.full(k, float(bandwidth_hz))  # p(hi) <= p_max < p(lo) for devices that make it alone
    for _ in range(BISECTIONS):
        mid = 0.5 * (lo + hi)
        ok = power(mid) <= p_max_w
        hi, lo = np.where(ok, mid, hi), np.where(ok, lo, mid)
    b_min = lo if relaxed else hi
    feasible = ~np.any(masks & ~alone, axis=1) & (np.where(masks, b_min, 0.0).sum(axis=1) <= bandwidth_hz)
    coef = safe_t * noise_w_per_hz / g  # -e'(b) = coef (1 - e^u (1 - u))

    def slope(b: np.ndarray) -> np.ndarray:
        with np.errstate(over="ignore", divide="ignore", invalid="ignore"):
            u = np.log(2.0) * bits / (b * safe_t)
            return coef * (1.0 - np.exp(u) * (1.0 - u))

    def band(lam: np.ndarray) -> np.ndarray:
        u = 1.0 + lambertw((lam / coef - 1.0) / np.e, 0).real
        with np.errstate(divide="ignore"):
            return np.maximum(np.log(2.0) * bits / (safe_t * u), b_min)

    on = masks & feasible[:, None] & alone
    big = np.finfo(np.float64).max
    floor = np.where(b_min > 0, b_min, float(bandwidth_hz))  # relaxed b_min may be 0 (nothing known below)
    lam_lo = np.log(np.where(on, slope(np.full(k, float(bandwidth_hz))), big).min(axis=1, initial=big))
    with np.errstate(divide="ignore"):  # a row without devices: log 0, replaced below
        lam_hi = np.log(np.where(on, slope(floor), 0.0).max(axis=1, initial=0.0))
    rows = on.any(axis=1)
    lam_lo, lam_hi = np.where(rows, lam_lo, 0.0), np.where(rows, np.maximum(lam_hi, lam_lo), 0.0)
    for _ in range(BISECTIONS):
        mid = 0.5 * (lam_lo + lam_hi)
        over = np.where(on, band(np.exp(mid)[:, None]), 0.0).sum(axis=1) > bandwidth_hz
        lam_lo, lam_hi = np.where(over, mid, lam_lo), np.where(over, lam_hi, mid)
    b = np.where(on, band(np.exp(lam_hi)[:, None]), 0.0)  # the side whose bands fit in B
    return b, np.where(rows, np.exp(lam_hi), 0.0), feasible, power



@njit
def _envelope(a: np.ndarray, c: np.ndarray, lo: float, hi: float) -> np.ndarray:
    """Indices of the lines y = a h + c that are the maximum at some h of [lo, hi] (the upper envelope there).

    From lo rightwards: the line highest at lo (ties: the steepest), then the steeper line whose
    intersection with it comes first (ties: the steepest), until the next intersection is past hi.
    """
    best, x = 0, lo
    for j in range(a.shape[0]):
        yj, yb = a[j] * lo + c[j], a[best] * lo + c[best]
        if yj > yb or (yj == yb and a[j] > a[best]):
            best = j
    keep = [best]
    while True:
        nxt, x_next = -1, np.inf
        for j in range(a.shape[0]):
            if a[j] > a[best]:
                xj = max((c[best] - c[j]) / (a[j] - a[best]), x)
                if xj < x_next or (xj == x_next and a[j] > a[nxt]):
                    nxt, x_next = j, xj
        if nxt < 0 or x_next >= hi:
            break
        best, x = nxt, x_next
        keep.append(best)
    return np.array(keep)


def upper_bound(env: Any) -> float | None:
    """A certified upper bound on the return of any policy over the rest of the episode (module docstring).

    None where it is not computed: more than :data:`MAX_ENUM_DEVICES` devices, or the surrogate's
    round is not affine in the losses and the noise (checked at a third point).
    """
    sim = fork(env)
    fed = sim.fed
    p = fed.params
    k, g = p.num_devices, p.num_topics
    if k > MAX_ENUM_DEVICES:
        return None
    trace = exogenous_trace(sim)
    t_left = len(trace.gains)
    masks = _candidate_masks(k, np.zeros(k), np.ones(k, dtype=bool))
    m = masks.sum(axis=1)
    sets = m > 0
    weight = p.energy_weight_per_j / (k if not isinstance(sim, gym.Env) else 1)
    state = fed.state
    f, u, spread = _surrogate_maps(p, state, masks)
    if f is None:
        return None
    cpu = state.cpu_freq_hz[:1]
    every = costs_rows(p.bits, np.full((1, k), p.bandwidth_hz / k), np.full((1, k), p.p_max_w), trace.gains[:1],
                       p.noise_w_per_hz, p.cycles, cpu, p.kappa, p.deadline_s, trace.downlink_s[:1])
    compute = np.where(masks, every.compute_energy_j, 0.0).sum(axis=1)  # kappa cycles f^2 of each scheduled device
    energy, possible = np.empty((t_left, len(masks))), np.empty((t_left, len(masks)), dtype=bool)
    for t in range(t_left):
        busy = p.cycles / cpu[0] + trace.downlink_s[t]
        tol, window = p.deadline_tol_s - busy, np.maximum(p.deadline_s - busy, 0.0)
        upload, possible[t] = upload_energy_lower_bound(trace.gains[t], tol, p.bits, p.bandwidth_hz,
                                                        p.noise_w_per_hz, p.p_max_w, masks)
        ratio = float(np.min(np.where(tol > 0, window / np.where(tol > 0, tol, 1.0), 1.0)))
        energy[t] = compute + upload * ratio
    headroom = p.surrogate_coeffs[3]
    h0 = state.topic_loss[0] - (p.initial_topic_loss - headroom)
    lo, hi = np.empty((t_left + 1, g)), np.empty((t_left + 1, g))
    lo[0] = hi[0] = h0
    for t in range(t_left):  # every headroom any policy can reach (noise index n <= t)
        on = possible[t] & sets
        shift = u[on][None] - spread[on][None, :, None] * trace.noise[: t + 1, None, :]  # (n, S, G)
        ends = np.stack([f[on] * lo[t] + shift, f[on] * hi[t] + shift])
        lo[t + 1] = np.minimum(lo[t], ends.min(axis=(0, 1, 2), initial=np.inf))
        hi[t + 1] = np.maximum(hi[t], ends.max(axis=(0, 1, 2), initial=-np.inf))
    total = 0.0
    for j in range(g):  # each topic on its own: V_t(h, n) = max of lines a h + c
        lines = [(np.array([-p.loss_scale]), np.array([0.0]))] * (t_left + 1)
        for t in range(t_left - 1, -1, -1):
            on = possible[t] & sets
            staged = []
            for n in range(t + 1):
                a0, c0 = lines[n]
                a1, c1 = lines[n + 1]
                shift = u[on, j] - spread[on] * trace.noise[n, j]
                a = np.concatenate([a0, (f[on, j][:, None] * a1).ravel()])
                c = np.concatenate([c0, (shift[:, None] * a1 + c1 - weight * energy[t, on][:, None]).ravel()])
                keep = _envelope(a, c, lo[t, j], hi[t, j])
                staged.append((a[keep], c[keep]))
            lines = staged
        a, c = lines[0]
        total += p.loss_scale * h0[j] + float(np.max(a * h0[j] + c))
    value = total / g
    return value + 1e-9 * abs(value) + 1e-7  # float rounding of the env's sums


def _surrogate_maps(params: Params, state: State, masks: np.ndarray):
    """Per set (C,): the replay round's headroom map h' = f h + u - spread z of every topic ((C, G), (C, G), (C,)),
    from the env's kernel :func:`~edgelam.envs.fedft.kernels.surrogate_rows` at two headrooms and two noises; None
    where a third point does not fit (not affine)."""
    p, k, g = params, params.num_devices, params.num_topics
    c = len(masks)
    coeffs = p.surrogate_coeffs
    base = p.initial_topic_loss - coeffs[3]  # the losses at headroom 0
    sizes = np.ascontiguousarray(np.broadcast_to(state.data_sizes[0], (c, k)))
    counts = np.ascontiguousarray(np.broadcast_to(state.topic_counts[0], (c, k, g)))
    rows = int(np.count_nonzero(masks.any(axis=1)))

    def run(h: float, z: float) -> np.ndarray:
        loss = np.ascontiguousarray(np.broadcast_to(base + h, (c, g)))
        out, weights = np.empty((c, g)), np.empty((c, g))
        kernels.surrogate_rows(np.ascontiguousarray(masks), sizes, counts, loss, np.full((rows, g), z),
                               p.initial_topic_loss, *coeffs, weights, out)
        return out - base

    u = run(0.0, 0.0)
    f = (run(coeffs[3], 0.0) - u) / coeffs[3]
    spread = (u - run(0.0, 1.0))[:, 0]
    h, z = 0.37 * coeffs[3], -0.77
    if not np.allclose(run(h, z), f * h + u - spread[:, None] * z, rtol=0.0, atol=1e-12):
        return None, None, None
    return f, u, spread


def _candidate_masks(k: int, alone_energy: np.ndarray, reachable: np.ndarray) -> np.ndarray:
    """(C, K) bool participant sets tried in a round: all of them, or beyond MAX_ENUM_DEVICES a family."""
    if k <= MAX_ENUM_DEVICES:
        return ((np.arange(2**k)[:, None] >> np.arange(k)) & 1).astype(bool)
    order = np.flatnonzero(reachable)[np.argsort(alone_energy[reachable], kind="stable")]
    sets = [np.zeros(k, dtype=bool)]
    sizes = np.unique(np.linspace(1, len(order), min(len(order), MAX_HEURISTIC_SETS // 2)).astype(int))
    for size in sizes:
        s = np.zeros(k, dtype=bool)
        s[order[:size]] = True
        sets.append(s)
    for i in order[: MAX_HEURISTIC_SETS - len(sets)]:
        s = reachable.copy()
        s[i] = False
        sets.append(s)
    return np.unique(np.array(sets), axis=0)


class _Rounds:
    """The candidate actions of every round and the batched round of many rows through the env's functions."""

    def __init__(self, sim: Any, trace: Trace) -> None:
        fed = sim.fed
        self.params: Params = fed.params
        self.fed = fed
        self.parallel = not isinstance(sim, gym.Env)
        self.trace = trace
        self.k = fed.k
        self.candidates: list[np.ndarray] = [self._actions(t) for t in range(len(trace.gains))]

    def _actions(self, t: int) -> np.ndarray:
        """(C, A) float64 actions of round t (A = 2K; FedFTPower-v0's (K, 2) per row flattened)."""
        p, cfg, fed = self.params, self.fed.cfg, self.fed
        gains = self.trace.gains[t]
        window = (p.deadline_s - p.cycles / fed.cpu_freq_hz - self.trace.downlink_s[t]) * (1.0 - WINDOW_MARGIN)
        if self.k <= MAX_ENUM_DEVICES:
            masks = _candidate_masks(self.k, np.zeros(self.k), np.ones(self.k, dtype=bool))
        else:
            _, single, reachable = min_energy_bands(gains, window, p.bits, p.bandwidth_hz, p.noise_w_per_hz,
                                                    p.p_max_w, np.eye(self.k, dtype=bool))
            masks = _candidate_masks(self.k, single.sum(axis=1) * window, reachable)
        b, pw, ok = min_energy_bands(gains, window, p.bits, p.bandwidth_hz, p.noise_w_per_hz, p.p_max_w, masks)
        b, pw = b[ok], pw[ok]
        flat = np.stack([_encode(fed, bi, pi) for bi, pi in zip(b, pw, strict=True)]).astype(np.float64)
        if self.parallel:  # agent i: [power, band request]
            flat = np.stack([flat[:, cfg.num_devices:], flat[:, : cfg.num_devices]], axis=2).reshape(len(b), -1)
        return flat

    def env_action(self, t: int, c: int) -> Any:
        """Candidate c of round t as the env takes it (float32; a joint dict for FedFTPower-v0)."""
        a = self.candidates[t][c].astype(np.float32)
        if not self.parallel:
            return a
        return {f"device_{i}": a[2 * i: 2 * i + 2].copy() for i in range(self.k)}

    def play(self, state: State, n: np.ndarray, t: int, actions: np.ndarray) -> np.ndarray:
        """Play round t on every row (``state`` and the noise indices ``n`` (B,) in place); (B,) rewards.

        The reward is the env's: FedFTAllocation-v0's, or FedFTPower-v0's mean over agents (the return
        the evaluation counts)."""
        p = self.params
        rows = state.num_rows
        work = Workspace.of(p, rows)
        if self.parallel:
            bw, pw = requested_allocation(p, state, np.ascontiguousarray(actions.reshape(rows, self.k, 2)), work)
        else:
            bw, pw = allocation(p, state, np.ascontiguousarray(actions), work)
        fading = np.ascontiguousarray(np.broadcast_to(self.trace.fading[t], (2, rows, self.k)))
        noise = self.trace.noise
        out = advance(p, state, bw, pw, fading, lambda m: noise[n[m > 0]], work)
        n += out.costs.counts[:, 0] > 0
        if self.parallel:
            return power_rewards_infos(p, state, out)[0].mean(axis=1)
        return out.reward.copy()


def _rows(state: State, index: np.ndarray) -> State:
    """The rows ``index`` of ``state`` (a new state)."""
    return State(*(getattr(state, f)[index] for f in State.__slots__))


def _beam(rounds: _Rounds, start: State) -> list[int]:
    """The best sequence of candidate indices the beam search finds (module docstring)."""
    state = start.copy()
    n = np.zeros(1, dtype=np.int64)
    ret = np.zeros(1)
    parents, choices = [], []
    for t, cands in enumerate(rounds.candidates):
        c = len(cands)
        rows = state.num_rows
        index = np.repeat(np.arange(rows), c)
        nxt = _rows(state, index)
        nn = n[index].copy()
        score = ret[index] + rounds.play(nxt, nn, t, np.tile(cands, (rows, 1)))
        order = np.argsort(-score, kind="stable")
        kept, per_n = [], {}
        for i in order:
            if per_n.get(nn[i], 0) < ROWS_PER_NOISE_INDEX:
                per_n[nn[i]] = per_n.get(nn[i], 0) + 1
                kept.append(i)
                if len(kept) == BEAM_WIDTH:
                    break
        kept = np.array(kept)
        parents.append(index[kept])
        choices.append(kept % c)
        state, n, ret = _rows(nxt, kept), nn[kept], score[kept]
    best = 0  # rows are kept best first
    seq = []
    for t in range(len(choices) - 1, -1, -1):
        seq.append(int(choices[t][best]))
        best = int(parents[t][best])
    return seq[::-1]


def _suffix(rounds: _Rounds, state: State, n: np.ndarray, t0: int, first: np.ndarray, seq: list[int]) -> np.ndarray:
    """Returns (B,) from round t0 on of rows that play ``first`` (B, A) at t0, then ``seq``'s choices."""
    state, n = state.copy(), n.copy()
    total = rounds.play(state, n, t0, first)
    for t in range(t0 + 1, len(seq)):
        total += rounds.play(state, n, t, np.broadcast_to(rounds.candidates[t][seq[t]], first.shape))
    return total


def _ascent(rounds: _Rounds, start: State, seq: list[int], deadline: float) -> list[int]:
    """Coordinate ascent over the rounds' choices (module docstring)."""
    seq = list(seq)
    for _ in range(SWEEPS):
        improved = False
        state, n = start.copy(), np.zeros(1, dtype=np.int64)
        for t in range(len(seq)):
            cands = rounds.candidates[t]
            rows = len(cands)
            index = np.zeros(rows, dtype=np.int64)
            returns = _suffix(rounds, _rows(state, index), n[index], t, cands, seq)
            best = int(np.argmax(returns))
            if returns[best] > returns[seq[t]] + 1e-12:
                seq[t] = best
                improved = True
            rounds.play(state, n, t, cands[seq[t]][None])
            if time.monotonic() > deadline:
                return seq
        if not improved:
            break
    return seq


def _fallback(env: Any, sim: Any, reason: str) -> Plan:
    """Everyone on an equal band at p_max every round (the equal baseline), its realised return as value."""
    k = sim.fed.k
    steps = sim.fed.params.episode_length - sim.fed.t
    if isinstance(sim, gym.Env):
        actions = [np.concatenate([np.zeros(k), np.ones(k)]).astype(np.float32) for _ in range(steps)]
    else:
        actions = [{a: np.ones(2, dtype=np.float32) for a in sim.possible_agents} for _ in range(steps)]
    value, _ = rollout(env, actions)
    return Plan(actions, value, "planner", f"fallback (equal allocation): {reason}", fallback=True)


def solve(env: Any) -> Plan:
    """The hindsight plan of the rest of the episode of a FedFTAllocation-v0 / FedFTPower-v0 env (replay backend).

    Raises:
        ValueError: the env runs the live backend (its losses come from training, which cannot be replayed).
    """
    sim = env.unwrapped if hasattr(env, "unwrapped") else env
    if sim.fed.backend != "replay":
        raise ValueError(f"hindsight: the {sim.fed.backend!r} backend's losses come from training the model, which "
                         "a plan cannot replay; use backend='replay'")
    try:
        deadline = time.monotonic() + TIME_LIMIT_S
        rounds = _Rounds(sim, exogenous_trace(sim))
        start = sim.fed.state
        seq = _ascent(rounds, start, _beam(rounds, start), deadline)
        actions = [rounds.env_action(t, c) for t, c in enumerate(seq)]
        value, _ = rollout(sim, actions)
    except Exception as exc:  # any solver failure: the safe plan, flagged (predict never raises)
        return _fallback(sim, sim, f"{type(exc).__name__}: {exc}")
    played = f"the plan played ({PLANNER}) realises {value:.6g}"
    try:
        bound = upper_bound(sim)
    except Exception as exc:  # the planner's plan stands, as a planner
        return Plan(actions, value, "planner", f"planner: {PLANNER} (bound failed: {type(exc).__name__}: {exc})")
    if bound is None:
        return Plan(actions, value, "planner", f"planner: {PLANNER}")
    if bound < value:  # cannot happen if the bound is right: do not claim it
        return Plan(actions, value, "planner", f"planner: {PLANNER} (bound {bound:.6g} below its return: not used)")
    return Plan(actions, bound, "bound", f"bound: {RELAXATION}; {played}")


__all__ = ["MAX_ENUM_DEVICES", "Trace", "exogenous_trace", "min_energy_bands", "solve"]
