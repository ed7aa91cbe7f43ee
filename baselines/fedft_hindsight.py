"""Hindsight planner of FedFTAllocation-v0 and FedFTPower-v0 (:mod:`edgelam.baselines.hindsight`).

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

Why it is a planner (kind ``"planner"``), not exact and not a bound: the reward of a round depends
on the actions only through the set S of devices whose update arrives (the surrogate's decrease)
and the round energy (scheduling a device that misses the deadline only adds energy), and the
return telescopes to ``loss_scale (L_0 - L_T) - energy_weight sum_t E_t`` (FedFTPower-v0: the
energy term over K). But the final loss couples every round: each topic's headroom h evolves as
h' = h (1 - s (gain_own w_g(S) + gain_shared)) + s noise_cost / m - sigma / sqrt(m) eps_n, a
product over rounds whose noise index n depends on which earlier rounds had participants. With
2^K sets per round over 30 rounds (32^30 for the default 5 devices) and a state of G headrooms
plus n, neither enumeration nor a DP over the state is tractable, and no certified upper bound is
implemented (letting each topic pick its own sets would give one, by a DP over one headroom and n per
topic; not done). So the value is the planner's own realised return: an
online policy may beat it (it has not on the test episodes, ``tests/fedft/test_hindsight.py``).

The planner (:func:`solve`), every step priced by the env's own functions on a batched
:class:`~edgelam.envs.fedft.dynamics.State` (:func:`~edgelam.envs.fedft.dynamics.allocation` /
:func:`~edgelam.envs.fedft.dynamics.requested_allocation` and
:func:`~edgelam.envs.fedft.dynamics.advance` of rows that share the round's channel):

1. candidates per round: every set S of devices (up to :data:`MAX_ENUM_DEVICES` devices; beyond,
   nested sets of the devices cheapest alone and the full set less each device), each with the
   least-energy FDMA allocation that lets all of S upload before the deadline
   (:func:`min_energy_bands`, the KKT solution of the min-energy problem of
   :func:`edgelam.baselines.fedft.min_energy_allocation`, vectorised over the sets), encoded as
   the env's float32 action;
2. a beam search over the rounds, keeping the best partial returns with at most a few rows per
   noise index n (so rows facing different future noise survive);
3. coordinate ascent on the best sequence: each round's set is replaced by the best candidate
   given the rest of the sequence (whole-episode rollouts of all candidates at once), sweep after
   sweep until no round improves.

The plan's value is its return replayed on a fork (:func:`~edgelam.baselines.hindsight.rollout`),
so it is what playing the plan realises. Replay backend only: the live backend's losses come from
training the model, which cannot be replayed (``ValueError``).
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
from edgelam.envs.fedft.dynamics import (
    Params,
    State,
    Workspace,
    advance,
    allocation,
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
SOLVER = "planner: beam search + coordinate ascent over participant sets (min-energy FDMA per set)"


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
    masks = np.asarray(masks, dtype=bool)
    k = masks.shape[1]
    g = np.asarray(gains, dtype=np.float64)
    t = np.asarray(window_s, dtype=np.float64)
    alone = (t > 0) & (upload_rate_bps(np.full(k, bandwidth_hz), np.full(k, p_max_w), g, noise_w_per_hz) * t > bits)
    safe_t = np.where(t > 0, t, 1.0)

    def power(b: np.ndarray) -> np.ndarray:
        return closed_form_power(g, bits, safe_t, b, noise_w_per_hz)

    lo, hi = np.zeros(k), np.full(k, float(bandwidth_hz))  # p(hi) <= p_max for the devices that can make it alone
    for _ in range(BISECTIONS):
        mid = 0.5 * (lo + hi)
        ok = power(mid) <= p_max_w
        hi, lo = np.where(ok, mid, hi), np.where(ok, lo, mid)
    b_min = hi
    feasible = ~np.any(masks & ~alone, axis=1) & (np.where(masks, b_min, 0.0).sum(axis=1) <= bandwidth_hz)
    coef = safe_t * noise_w_per_hz / g  # -e'(b) = coef (1 - e^u (1 - u))

    def slope(b: np.ndarray) -> np.ndarray:
        u = np.log(2.0) * bits / (b * safe_t)
        return coef * (1.0 - np.exp(u) * (1.0 - u))

    def band(lam: np.ndarray) -> np.ndarray:
        u = 1.0 + lambertw((lam / coef - 1.0) / np.e, 0).real
        with np.errstate(divide="ignore"):
            return np.maximum(np.log(2.0) * bits / (safe_t * u), b_min)

    on = masks & feasible[:, None] & alone
    big = np.finfo(np.float64).max
    lam_lo = np.log(np.where(on, slope(np.full(k, float(bandwidth_hz))), big).min(axis=1, initial=big))
    with np.errstate(divide="ignore"):  # a row without devices: log 0, replaced below
        lam_hi = np.log(np.where(on, slope(b_min), 0.0).max(axis=1, initial=0.0))
    rows = on.any(axis=1)
    lam_lo, lam_hi = np.where(rows, lam_lo, 0.0), np.where(rows, lam_hi, 0.0)
    for _ in range(BISECTIONS):
        mid = 0.5 * (lam_lo + lam_hi)
        over = np.where(on, band(np.exp(mid)[:, None]), 0.0).sum(axis=1) > bandwidth_hz
        lam_lo, lam_hi = np.where(over, mid, lam_lo), np.where(over, lam_hi, mid)
    b = np.where(on, band(np.exp(lam_hi)[:, None]), 0.0)  # the side whose bands fit in B
    p = np.where(on, np.minimum(power(np.where(on, b, 1.0)), p_max_w), 0.0)
    return b, p, feasible


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
    return Plan(actions, value, "planner", SOLVER)


__all__ = ["MAX_ENUM_DEVICES", "Trace", "exogenous_trace", "min_energy_bands", "solve"]
