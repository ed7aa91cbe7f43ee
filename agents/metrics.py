"""Per-episode metrics and their summary (mean and Student-t 95% confidence interval)."""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np
from scipy import stats

from edgelam.agents.common import numeric_info

# row keys that identify an episode rather than measure it
ID_KEYS = frozenset({"episode", "seed", "policy", "train_seed"})


class EpisodeMetrics:
    """Accumulates one episode: return, length, and each numeric ``info`` key.

    A key in ``sums`` gets its episode sum, any other key its mean over the steps
    that reported it.
    """

    def __init__(self, sums: frozenset[str]) -> None:
        self.sums = sums
        self.total_reward = 0.0
        self.length = 0
        self._totals: dict[str, float] = {}
        self._counts: dict[str, int] = {}

    def add(self, reward: float, info: Mapping[str, Any]) -> None:
        """Record one step's reward and info."""
        self.total_reward += float(reward)
        self.length += 1
        for key, value in numeric_info(info).items():
            self._totals[key] = self._totals.get(key, 0.0) + value
            self._counts[key] = self._counts.get(key, 0) + 1

    def row(self) -> dict[str, float]:
        """``{"return", "length", <info key>: sum or mean}`` of the episode so far."""
        out: dict[str, float] = {"return": self.total_reward, "length": self.length}
        for key, total in self._totals.items():
            out[key] = total if key in self.sums else total / self._counts[key]
        return out


def ci95_halfwidth(values: Iterable[float]) -> float:
    """Half-width of the Student-t 95% confidence interval of the mean (NaN for n < 2)."""
    x = np.asarray(list(values), dtype=float)
    if x.size < 2:
        return math.nan
    return float(stats.t.ppf(0.975, x.size - 1) * x.std(ddof=1) / math.sqrt(x.size))


def summarize(rows: Iterable[Mapping[str, Any]]) -> dict[str, tuple[float, float, int]]:
    """Mean, 95% CI half-width (Student t) and count of every metric over episode rows.

    Args:
        rows: episode rows as :func:`edgelam.agents.evaluate.evaluate` returns them;
            identifying keys (``episode``, ``seed``, ``policy``, ``train_seed``) and
            non-numeric values are skipped; a metric missing from some rows is
            summarised over the rows that have it.

    Returns:
        metric -> ``(mean, ci95_halfwidth, n)``, metrics in first-seen order.
    """
    columns: dict[str, list[float]] = {}
    for row in rows:
        for key, value in row.items():
            if key in ID_KEYS or isinstance(value, bool) or not isinstance(value, (int, float, np.number)):
                continue
            columns.setdefault(key, []).append(float(value))
    return {key: (float(np.mean(v)), ci95_halfwidth(v), len(v)) for key, v in columns.items()}
