"""The adversary's effect in scalar form, one loop over the batch, compiled by numba (:mod:`edgelam.envs.core.jit`).

:func:`~.dynamics.apply_adversary` calls :func:`shift_logits`, then numpy's ``exp`` on the
logits (numba's ``exp`` differs from numpy's in the last bit on some inputs), then
:func:`mix_and_cells`, which sums each softmax in numpy's own order (:func:`pairwise_sum`),
so that the v0 env's numpy softmax is reproduced bit for bit and every row of a batch gets
what it gets alone. Each kernel writes the state arrays of a
:class:`~edgelam.envs.microservice_routing.dynamics.State` (leading axis B) in place.
"""

from __future__ import annotations

import numpy as np

from edgelam.envs.core.jit import njit


@njit
def shift_logits(actions, num_pipelines, consts, logits, rate_hz, override_prob):
    """Clip each row's action (P + 1 + K,) to [-1, 1]; write the next arrival's rate and override probability.

    ``consts``: (arrival rate 1/s, mix budget, rate budget, cell budget, logit scale). ``logits``
    (B, P + K) gets ``scale (x - max x)`` of the clipped pipeline-mix logits (first P) and cell logits
    (last K, only when the cell budget is positive), what numpy's ``exp`` turns into softmax weights.
    """
    p = num_pipelines
    k = logits.shape[1] - p
    rate, rate_budget, cell_budget, scale = consts[0], consts[2], consts[3], consts[4]
    for b in range(actions.shape[0]):
        top = -2.0
        for i in range(p):
            top = max(top, min(max(actions[b, i], -1.0), 1.0))
        for i in range(p):
            logits[b, i] = scale * (min(max(actions[b, i], -1.0), 1.0) - top)
        rate_hz[b] = rate * (1.0 + rate_budget * min(max(actions[b, p], -1.0), 1.0))
        override_prob[b] = cell_budget
        if cell_budget > 0.0:
            top = -2.0
            for j in range(k):
                top = max(top, min(max(actions[b, p + 1 + j], -1.0), 1.0))
            for j in range(k):
                logits[b, p + j] = scale * (min(max(actions[b, p + 1 + j], -1.0), 1.0) - top)
        else:
            for j in range(k):
                logits[b, p + j] = 0.0


@njit
def _block_sum(x, start, n):
    """numpy's pairwise sum of at most 128 terms: one accumulator below 8, else 8 interleaved ones."""
    if n < 8:
        res = 0.0
        for i in range(n):
            res += x[start + i]
        return res
    r0, r1, r2, r3 = x[start], x[start + 1], x[start + 2], x[start + 3]
    r4, r5, r6, r7 = x[start + 4], x[start + 5], x[start + 6], x[start + 7]
    i = 8
    while i < n - n % 8:
        j = start + i
        r0, r1, r2, r3 = r0 + x[j], r1 + x[j + 1], r2 + x[j + 2], r3 + x[j + 3]
        r4, r5, r6, r7 = r4 + x[j + 4], r5 + x[j + 5], r6 + x[j + 6], r7 + x[j + 7]
        i += 8
    res = ((r0 + r1) + (r2 + r3)) + ((r4 + r5) + (r6 + r7))
    while i < n:
        res += x[start + i]
        i += 1
    return res


@njit
def pairwise_sum(x, start, n):
    """Sum of ``x[start : start + n]`` in numpy's order (``np.add.reduce`` of a 1-D run): blocks of at most
    128 terms (:func:`_block_sum`), longer runs split in halves (multiples of 8) and added, left + right.

    The halving is numpy's recursion, unrolled on an explicit stack (numba cannot cache recursive code).
    """
    if n <= 128:
        return _block_sum(x, start, n)
    starts = np.empty(64, dtype=np.int64)
    sizes = np.empty(64, dtype=np.int64)
    phase = np.zeros(64, dtype=np.int64)  # 0: split, 1: left half summed, 2: both halves summed
    left = np.empty(64)
    starts[0], sizes[0], top, total = start, n, 1, 0.0
    while top > 0:
        f = top - 1
        m = sizes[f]
        half = m // 2
        half -= half % 8
        if m > 128 and phase[f] < 2:
            lo, size = (starts[f], half) if phase[f] == 0 else (starts[f] + half, m - half)
            phase[f] += 1
            starts[top], sizes[top], phase[top] = lo, size, 0
            top += 1
            continue
        value = _block_sum(x, starts[f], m) if m <= 128 else left[f] + total
        top -= 1
        if top > 0 and phase[top - 1] == 1:
            left[top - 1] = value
        else:
            total = value
    return total


@njit
def mix_and_cells(weights, base_mix, consts, mix, override_cells):
    """Each row's next-arrival pipeline mix (1 - budget) base + budget softmax, and the override cells' softmax.

    ``weights`` (B, P + K): exp of :func:`shift_logits`' logits, normalised over the first P and
    over the last K (sums in numpy's order, :func:`pairwise_sum`). Without a cell budget the
    cells are uniform.
    """
    p = base_mix.shape[0]
    k = weights.shape[1] - p
    mix_budget, cell_budget = consts[1], consts[3]
    keep = 1.0 - mix_budget
    for b in range(weights.shape[0]):
        row = weights[b]
        total = pairwise_sum(row, 0, p)
        for i in range(p):
            mix[b, i] = keep * base_mix[i] + mix_budget * (row[i] / total)
        if cell_budget > 0.0:
            total = pairwise_sum(row, p, k)
            for j in range(k):
                override_cells[b, j] = row[p + j] / total
        else:
            for j in range(k):
                override_cells[b, j] = 1.0 / k
