"""The FedFT round in scalar form, one loop over the batch, compiled by numba (:mod:`edgelam.envs.core.jit`).

Each kernel takes arrays with a leading row axis B (devices K on the next axis, topics G
after them) and writes its results into output arrays it is handed; :mod:`.dynamics`
calls them in the order of a round: :func:`allocate_rows` or :func:`request_rows` (the
action's bandwidth and power), :func:`snr_rows` (uplink SNR), then, once numpy has taken
the logarithm of the Shannon rate, :func:`round_cost_rows` (times, energies,
participants), :func:`surrogate_rows` (the replay backend's new topic losses),
:func:`settle_rows` (reward, energy queue, next round's fading) and :func:`feature_rows`
(the observation's numbers). The logarithms stay in numpy (``np.log2``, ``np.log10``):
numpy's vectorised ones differ from the libm ones compiled code calls in the last bit for
some inputs, and the env's numbers since v0 are numpy's. Everything else is the same IEEE
double operations as the numpy expressions of v0, in the same order (sums in numpy's
pairwise order, :func:`pairwise_sum`), so the numbers are those of v0 bit for bit. The
energy queue is :func:`edgelam.envs.core.queues.virtual_queue_step` (compiled by
:mod:`edgelam.envs.core.jit`).
"""

from __future__ import annotations

import math

import numpy as np

# numpy's error model (no zero check before each division, so the loops pipeline): no divisor below can be 0.
# Bandwidth, rate and request sums are tested before they divide; the CPU frequency, deadline, noise,
# SNR reference, episode length, topic count and initial loss are positive (config bounds, shipped values);
# a participant's data size is >= 8 samples, and a budget is floored at 1e-12.
from edgelam.envs.core.jit import njit_numpy_errors as njit
from edgelam.envs.core.jit import virtual_queue_step


@njit
def _block_sum(a: np.ndarray, lo: int, n: int) -> float:
    """numpy's pairwise sum of ``a[lo:lo + n]`` for n <= 128: sequential below 8, else 8 interleaved partial sums."""
    if n < 8:
        res = 0.0
        for i in range(lo, lo + n):
            res += a[i]
        return res
    r0, r1, r2, r3 = a[lo], a[lo + 1], a[lo + 2], a[lo + 3]
    r4, r5, r6, r7 = a[lo + 4], a[lo + 5], a[lo + 6], a[lo + 7]
    i = 8
    m = n - n % 8
    while i < m:
        j = lo + i
        r0 += a[j]
        r1 += a[j + 1]
        r2 += a[j + 2]
        r3 += a[j + 3]
        r4 += a[j + 4]
        r5 += a[j + 5]
        r6 += a[j + 6]
        r7 += a[j + 7]
        i += 8
    res = ((r0 + r1) + (r2 + r3)) + ((r4 + r5) + (r6 + r7))
    while i < n:
        res += a[lo + i]
        i += 1
    return res


@njit
def _left_size(n: int) -> int:
    n2 = n // 2
    return n2 - n2 % 8


@njit
def pairwise_sum(a: np.ndarray, lo: int, n: int) -> float:
    """Sum of ``a[lo:lo + n]`` (1-D float64) in the order of numpy's ``np.sum``: blocks of at most 128
    (:func:`_block_sum`) combined as numpy's recursion halves the range (run here on an explicit stack:
    numba's cache does not take recursive functions)."""
    if n <= 128:
        return _block_sum(a, lo, n)
    seg_lo = np.empty(64, dtype=np.int64)
    seg_n = np.empty(64, dtype=np.int64)
    right = np.zeros(64, dtype=np.bool_)  # the segment's left half is summed, its value in ``left``
    left = np.empty(64)
    top = 0
    seg_lo[0], seg_n[0] = lo, n
    while True:
        if seg_n[top] > 128:  # descend into the left half
            right[top] = False
            seg_lo[top + 1], seg_n[top + 1] = seg_lo[top], _left_size(seg_n[top])
            top += 1
            continue
        v = _block_sum(a, seg_lo[top], seg_n[top])
        while True:  # hand v to the parents whose right half it completes
            if top == 0:
                return v
            parent = top - 1
            if not right[parent]:
                left[parent], right[parent] = v, True
                n2 = _left_size(seg_n[parent])
                seg_lo[top], seg_n[top] = seg_lo[parent] + n2, seg_n[parent] - n2
                break
            v = left[parent] + v
            top = parent


@njit
def row_sum(a: np.ndarray, b: int, n: int) -> float:
    """:func:`pairwise_sum` of row ``b`` of the 2-D ``a`` (its first ``n`` entries): below 8 entries numpy
    sums sequentially from 0, done here on ``a[b, i]`` without a row view (the view and the call cost
    more than the sum of a few devices); from 8 on, numpy's pairwise order on the row."""
    if n < 8:
        res = 0.0
        for i in range(n):
            res += a[b, i]
        return res
    return pairwise_sum(a[b], 0, n)


@njit
def in_unit_box(a: np.ndarray) -> bool:
    """Whether every entry of the 1-D ``a`` is a finite number in [-1, 1] (an action in the envs' Box)."""
    for i in range(a.shape[0]):
        if not (a[i] >= -1.0 and a[i] <= 1.0):
            return False
    return True


@njit
def _max0(x: float) -> float:
    """np.maximum(x, 0.0) (also np.clip(x, 0.0, None))."""
    return x if x >= 0.0 else 0.0


@njit
def _clip(x: float, lo: float, hi: float) -> float:
    """np.clip(x, lo, hi) of a number."""
    x = x if x >= lo else lo
    return x if x <= hi else hi


@njit
def _simplex_theta(x: np.ndarray, u: np.ndarray) -> float:
    """The threshold theta of the simplex projection max(x - theta, 0) of ``x`` (K,) (Duchi et al., ICML 2008).

    Sorted descending into the scratch ``u`` (K,) (an insertion sort on up to 32 devices, where
    numba's sort costs more; numba's sort above), the cumulative sums minus 1, the last index rho
    with u_rho > css_rho / (rho + 1): theta = css_rho / (rho + 1). Ties sort in any order: the sums
    are of the same numbers in the same (descending) order.
    """
    k = x.shape[0]
    if k <= 32:
        for i in range(k):
            v = x[i]
            j = i
            while j > 0 and u[j - 1] < v:
                u[j] = u[j - 1]
                j -= 1
            u[j] = v
    else:
        for i in range(k):
            u[i] = -x[i]
        u.sort()
        for i in range(k):
            u[i] = -u[i]
    acc = 0.0
    rho = 0
    css_rho = 0.0
    for i in range(k):
        ui = u[i]
        acc = ui if i == 0 else acc + ui
        css = acc - 1.0
        if ui - css / (i + 1) > 0:
            rho = i
            css_rho = css
    return css_rho / (rho + 1.0)


@njit
def project_simplex_row(x: np.ndarray, out: np.ndarray, u: np.ndarray) -> None:
    """``out`` (K,) = Euclidean projection of ``x`` (K,) onto the probability simplex: max(x - theta, 0)
    (:func:`_simplex_theta`; ``u`` (K,) is scratch)."""
    theta = _simplex_theta(x, u)
    for i in range(x.shape[0]):
        out[i] = _max0(x[i] - theta)


@njit
def snr_rows(bandwidth, power, gains, noise_w_per_hz, out):
    """``out`` = uplink SNR p g / (N0 b) of every device (0 where b = 0), (B, K)."""
    for b in range(bandwidth.shape[0]):
        for i in range(bandwidth.shape[1]):
            w = bandwidth[b, i]
            out[b, i] = power[b, i] * gains[b, i] / (noise_w_per_hz * w) if w > 0 else 0.0


@njit
def allocate_rows(actions, bandwidth_hz, p_max_w, shares, bandwidth, power, gains, noise_w_per_hz, snr):
    """FedFTAllocation-v0's action (B, 2K) in [-1, 1] -> ``bandwidth`` (B, K) Hz and ``power`` (B, K) W.

    Bandwidth: the simplex projection of (a_k + 1) / 2 times the band; power (a_{K+k} + 1) / 2 p_max.
    ``shares`` (2, K) is scratch; ``snr`` receives :func:`snr_rows` of the allocation on ``gains``.
    """
    k = bandwidth.shape[1]
    x, u = shares[0], shares[1]
    for b in range(actions.shape[0]):
        for i in range(k):
            x[i] = (actions[b, i] + 1.0) / 2.0
        theta = _simplex_theta(x, u)
        for i in range(k):
            bandwidth[b, i] = _max0(x[i] - theta) * bandwidth_hz
            power[b, i] = (actions[b, k + i] + 1.0) / 2.0 * p_max_w
    snr_rows(bandwidth, power, gains, noise_w_per_hz, snr)


@njit
def request_rows(actions, bandwidth_hz, p_max_w, requests, bandwidth, power, gains, noise_w_per_hz, snr):
    """FedFTPower-v0's actions (B, K, 2) [power, request] -> ``bandwidth`` (B, K) Hz and ``power`` (B, K) W.

    Requests r = (a_1 + 1) / 2 are normalised onto the band, b_k = r_k / sum_j r_j B (no band
    for anyone when the sum is 0); power (a_0 + 1) / 2 p_max. ``requests`` (K,) is scratch;
    ``snr`` receives :func:`snr_rows` of the allocation on ``gains``.
    """
    k = bandwidth.shape[1]
    for b in range(actions.shape[0]):
        for i in range(k):
            requests[i] = (actions[b, i, 1] + 1.0) / 2.0
        total = pairwise_sum(requests, 0, k)
        for i in range(k):
            bandwidth[b, i] = requests[i] / total * bandwidth_hz if total > 0 else 0.0
            power[b, i] = (actions[b, i, 0] + 1.0) / 2.0 * p_max_w
    snr_rows(bandwidth, power, gains, noise_w_per_hz, snr)


@njit
def round_cost_rows(
    bits, bandwidth, power, rate, cycles, cpu_freq_hz, kappa, deadline_s, deadline_tol_s, downlink_s,
    scheduled, participants, compute_s, upload_s, compute_j, upload_j, energy_j, device_latency_s, sums, counts,
):
    """Times, energies and participants of one round of every row (:func:`~.dynamics.round_costs`).

    Per device (B, K): ``scheduled`` (b > 0 and p > 0), ``participants`` (scheduled and
    compute + download + upload <= ``deadline_tol_s``), ``compute_s`` cycles / f, ``upload_s``
    bits / rate (inf at rate 0), ``compute_j`` kappa cycles f^2 and ``upload_j`` p min(upload,
    window) (0 unless scheduled), ``energy_j`` their sum, ``device_latency_s`` min(compute +
    upload, deadline) (0 unless scheduled). Per row: ``sums`` (B, 4) total energy, computation
    energy, upload energy and latency (the last scheduled device's finish, capped at the
    deadline; 0 if none); ``counts`` (B, 2) participants and dropped devices.
    """
    k = bandwidth.shape[1]
    energy_coeff = kappa * cycles
    for b in range(bandwidth.shape[0]):
        latency = -math.inf
        any_scheduled = False
        n_part = 0
        n_drop = 0
        total_j = compute_total_j = upload_total_j = 0.0  # numpy's sums below 8 devices: sequential from 0
        for i in range(k):
            s = bandwidth[b, i] > 0 and power[b, i] > 0
            r = rate[b, i]
            up = bits / r if r > 0 else math.inf
            f = cpu_freq_hz[b, i]
            comp = cycles / f
            busy = comp + downlink_s[b, i]
            done = busy + up
            part = s and done <= deadline_tol_s
            window = _max0(deadline_s - busy)
            scheduled[b, i] = s
            participants[b, i] = part
            compute_s[b, i] = comp
            upload_s[b, i] = up
            if s:
                uj = power[b, i] * (up if up <= window else window)
                cj = energy_coeff * (f * f)
                finish = done if done <= deadline_s else deadline_s
                latency = finish if not any_scheduled or finish > latency else latency
                any_scheduled = True
                own = comp + up
                device_latency_s[b, i] = own if own <= deadline_s else deadline_s
                n_part += part
                n_drop += not part
            else:
                uj = 0.0
                cj = 0.0
                device_latency_s[b, i] = 0.0
            upload_j[b, i] = uj
            compute_j[b, i] = cj
            ej = cj + uj
            energy_j[b, i] = ej
            compute_total_j += cj
            upload_total_j += uj
            total_j += ej
        if k >= 8:  # numpy's pairwise order
            compute_total_j = pairwise_sum(compute_j[b], 0, k)
            upload_total_j = pairwise_sum(upload_j[b], 0, k)
            total_j = pairwise_sum(energy_j[b], 0, k)
        sums[b, 0] = total_j
        sums[b, 1] = compute_total_j
        sums[b, 2] = upload_total_j
        sums[b, 3] = latency if any_scheduled else 0.0
        counts[b, 0] = n_part
        counts[b, 1] = n_drop


@njit
def topic_decrease(loss, initial_loss, weight, m, gain_own, gain_shared, noise_cost, headroom, scale):
    """Expected decrease of one topic's loss in a round of m participants with topic share ``weight``
    (:class:`~.dynamics.Surrogate`): (h (gain_own w + gain_shared) - noise_cost / max(m, 1)) scale, 0 at m = 0,
    h = headroom - (initial_loss - loss)."""
    if not m > 0:
        return 0.0
    head = headroom - (initial_loss - loss)
    d = head * (gain_own * weight + gain_shared) - noise_cost / (m if m >= 1.0 else 1.0)
    return d * scale


@njit
def decrease_flat(loss, initial_loss, weight, m, gain_own, gain_shared, noise_cost, headroom, scale, out):
    """:func:`topic_decrease` over flat arrays of equal size (the broadcast of ``Surrogate.mean_decrease``)."""
    for j in range(out.shape[0]):
        out[j] = topic_decrease(loss[j], initial_loss[j], weight[j], m[j], gain_own, gain_shared, noise_cost,
                                headroom, scale)


@njit
def surrogate_rows(
    participants, data_sizes, topic_counts, topic_loss, noise, initial_loss, gain_own, gain_shared, noise_cost,
    headroom, sigma, scale, weights, out_loss,
):
    """The replay backend's new topic losses ``out_loss`` (B, G) after a round (:meth:`~.dynamics.Surrogate.step`).

    With m participants the pooled topic shares w_g = (their sequences of topic g) / (their
    sequences); new loss = loss - expected decrease - sigma / sqrt(m) z, with z the next row of
    ``noise`` (R, G) standard normals, one row for each row with participants (in row order);
    unchanged at m = 0. ``weights`` (B, G) receives w (zeros at m = 0).
    """
    k = participants.shape[1]
    g = topic_loss.shape[1]
    r = 0
    for b in range(participants.shape[0]):
        m = 0
        total = 0
        for i in range(k):
            if participants[b, i]:
                m += 1
                total += data_sizes[b, i]
        if m == 0:
            for j in range(g):
                weights[b, j] = 0.0
                out_loss[b, j] = topic_loss[b, j]
            continue
        fm = float(m)
        spread = sigma / math.sqrt(fm)
        for j in range(g):
            weights[b, j] = 0.0
        for i in range(k):  # the participants' sequences per topic: integers, summed exactly in float64
            if participants[b, i]:
                for j in range(g):
                    weights[b, j] += topic_counts[b, i, j]
        for j in range(g):
            w = weights[b, j] / float(total)
            weights[b, j] = w
            d = topic_decrease(topic_loss[b, j], initial_loss[j], w, fm, gain_own, gain_shared, noise_cost,
                               headroom, scale)
            out_loss[b, j] = topic_loss[b, j] - d - spread * noise[r, j]
        r += 1


@njit
def settle_rows(
    topic_loss, new_topic_loss, sums, loss_scale, energy_weight_per_j, energy_budget_j, participants,
    normals, rho, innovation, fading, large_scale_gain, p_max_w, noise_w, loss, queue, step, last_participants,
    fading_re, fading_im, gains, full_band_snr, outcome, surrogate, data_sizes, topic_counts, noise,
    initial_loss, weights,
):
    """End every row's round: losses, reward, energy queue, participation; then the next round's fading.

    With ``surrogate`` (the replay backend: (gain_own, gain_shared, noise_cost, headroom, sigma,
    decrease_scale)) ``new_topic_loss`` first receives :func:`surrogate_rows` of the round's
    ``noise`` (``weights`` the topic shares); with an empty one it holds the new losses already
    (the live model's). ``topic_loss`` (B, G) takes ``new_topic_loss``; ``outcome`` (B, 3) receives the previous
    mean loss, the new one and the reward loss_scale (previous - new) - energy_weight energy_j.
    ``queue`` Z = max(Z + energy - budget, 0), ``step`` += 1, ``last_participants`` = this
    round's. Fading h = rho h + sqrt(1 - rho^2) (z_0 + j z_1) / sqrt(2) from ``normals`` (2, B, K)
    (:func:`edgelam.envs.core.channel.gauss_markov_step`), ``gains`` = large-scale gain |h|^2
    (|h|^2 = 1 without ``fading``) and ``full_band_snr`` = max(p_max gain / ``noise_w``, 1e-30).
    """
    if surrogate.shape[0]:
        surrogate_rows(participants, data_sizes, topic_counts, topic_loss, noise, initial_loss, surrogate[0],
                       surrogate[1], surrogate[2], surrogate[3], surrogate[4], surrogate[5], weights, new_topic_loss)
    k = gains.shape[1]
    g = topic_loss.shape[1]
    half = math.sqrt(0.5)
    for b in range(gains.shape[0]):
        previous = loss[b]
        for j in range(g):
            topic_loss[b, j] = new_topic_loss[b, j]
        now = row_sum(topic_loss, b, g) / g
        loss[b] = now
        outcome[b, 0] = previous
        outcome[b, 1] = now
        energy_j = sums[b, 0]
        outcome[b, 2] = loss_scale * (previous - now) - energy_weight_per_j * energy_j
        queue[b] = virtual_queue_step(queue[b], energy_j, energy_budget_j)
        step[b] += 1
        for i in range(k):
            last_participants[b, i] = participants[b, i]
            re = rho * fading_re[b, i] + innovation * (normals[0, b, i] * half)
            im = rho * fading_im[b, i] + innovation * (normals[1, b, i] * half)
            fading_re[b, i] = re
            fading_im[b, i] = im
            gain = large_scale_gain[b, i] * (re * re + im * im) if fading else large_scale_gain[b, i]
            gains[b, i] = gain
            snr = p_max_w * gain / noise_w
            full_band_snr[b, i] = snr if snr >= 1e-30 else 1e-30


@njit
def feature_rows(
    log10_snr, snr_ref_db, cycles, cpu_freq_hz, downlink_s, deadline_s, data_sizes, last_participants, loss,
    initial_loss, queue, energy_budget_j, step, episode_length, per_agent, out,
):
    """The observation's numbers, written into ``out`` (B, W) float32.

    Per device: clip(10 log10 SNR / ``snr_ref_db``, -2, 3), clip((cycles / f + download) /
    deadline, 0, 2), data share, last participation; per row: min(loss / initial loss, 2),
    min(queue / (10 max(budget, 1e-12)), 10), min(step / episode length, 1). Layout: the K
    devices' 4 numbers, then the row's 3 (W = 4K + 3, FedFTAllocation-v0), or with
    ``per_agent`` each device's 4 followed by the row's 3 (W = 7K, FedFTPower-v0's (K, 7)).
    """
    k = data_sizes.shape[1]
    width = 7 if per_agent else 4
    budget = energy_budget_j if energy_budget_j >= 1e-12 else 1e-12
    for b in range(data_sizes.shape[0]):
        total = 0
        for i in range(k):
            total += data_sizes[b, i]
        for i in range(k):
            at = width * i
            out[b, at] = np.float32(_clip(10.0 * log10_snr[b, i] / snr_ref_db, -2.0, 3.0))
            out[b, at + 1] = np.float32(_clip((cycles / cpu_freq_hz[b, i] + downlink_s[b, i]) / deadline_s, 0.0, 2.0))
            out[b, at + 2] = np.float32(float(data_sizes[b, i]) / float(total))
            out[b, at + 3] = np.float32(1.0 if last_participants[b, i] else 0.0)
        g0 = np.float32(min(loss[b] / initial_loss, 2.0))
        g1 = np.float32(min(queue[b] / (10.0 * budget), 10.0))
        g2 = np.float32(min(step[b] / episode_length, 1.0))
        for i in range(k if per_agent else 1):
            at = 7 * i + 4 if per_agent else 4 * k
            out[b, at] = g0
            out[b, at + 1] = g1
            out[b, at + 2] = g2
