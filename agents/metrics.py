"""Per-episode metrics, their summary (mean and Student-t 95% confidence interval), and paired verdicts.

A verdict "beats" / "ties" / "loses to" between two policies comes from a paired test over
the evaluation episodes both saw (the same reset seeds): a two-sided Wilcoxon signed-rank
test (Wilcoxon 1945) of the per-episode differences at level :data:`ALPHA`. Overlapping or
disjoint confidence intervals of the two means are not the test.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np
from scipy import stats

from edgelam.agents.common import numeric_info

# row keys that identify an episode rather than measure it
ID_KEYS = frozenset({"episode", "seed", "policy", "train_seed"})
# level of the paired test behind every verdict (95%)
ALPHA = 0.05
VERDICTS = ("beats", "ties", "loses to")


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


def paired_test(
    a: Iterable[float], b: Iterable[float], direction: str = "max", alpha: float = ALPHA
) -> dict[str, Any]:
    """Verdict of ``a`` against ``b`` from their paired values (``a[i]`` and ``b[i]`` on the same episode).

    A two-sided Wilcoxon signed-rank test of d = a - b (zero differences dropped, as
    Wilcoxon does); with p < ``alpha`` the verdict is ``"beats"`` when d's signed ranks lean
    towards the better ``direction`` (``"max"``: a higher, ``"min"``: a lower) and
    ``"loses to"`` otherwise, else ``"ties"`` (also when every difference is 0 or fewer
    than 2 pairs exist).

    Returns:
        ``{"n", "mean_diff", "ci95", "p_value", "verdict"}``: pairs, mean of d, Student-t
        95% half-width of that mean, the test's p-value (1.0 when it cannot reject), verdict.

    Raises:
        ValueError: on unequal lengths or a direction other than ``"max"`` / ``"min"``.
    """
    x, y = np.asarray(list(a), dtype=float), np.asarray(list(b), dtype=float)
    if x.shape != y.shape:
        raise ValueError(f"paired_test: needs as many values of each policy, got {x.size} and {y.size}")
    if direction not in ("max", "min"):
        raise ValueError(f"paired_test: direction must be 'max' or 'min', got {direction!r}")
    d = x - y
    out = {"n": int(d.size), "mean_diff": float(d.mean()) if d.size else math.nan, "ci95": ci95_halfwidth(d)}
    nonzero = d[d != 0.0]
    if nonzero.size < 2:
        return {**out, "p_value": 1.0, "verdict": "ties"}
    p_value = float(stats.wilcoxon(nonzero, alternative="two-sided").pvalue)
    ranks = stats.rankdata(np.abs(nonzero))
    lean = float(ranks[nonzero > 0].sum() - ranks[nonzero < 0].sum())  # W+ - W-
    if p_value >= alpha or lean == 0.0:
        verdict = "ties"
    else:
        verdict = "beats" if (lean > 0) == (direction == "max") else "loses to"
    return {**out, "p_value": p_value, "verdict": verdict}


def per_seed_means(rows: Iterable[Mapping[str, Any]], policy: str, metric: str) -> dict[int, float]:
    """Evaluation seed -> ``metric`` of ``policy`` on that episode (mean over training seeds)."""
    values: dict[int, list[float]] = {}
    for row in rows:
        if row.get("policy") == policy and metric in row:
            values.setdefault(int(row["seed"]), []).append(float(row[metric]))
    return {seed: float(np.mean(v)) for seed, v in values.items()}


def paired_verdicts(
    rows: Iterable[Mapping[str, Any]],
    policies: Iterable[str],
    metric: str = "return",
    direction: str = "max",
    alpha: float = ALPHA,
) -> list[dict[str, Any]]:
    """:func:`paired_test` of every pair of ``policies`` on ``metric``, over the episodes both saw.

    An agent trained on several seeds enters with its mean over them per evaluation
    episode, so each pair is one value per shared reset seed.

    Returns:
        One entry per pair ``(policy, other)``, ``policy`` before ``other`` in ``policies``:
        ``{"policy", "other", "metric", "direction", "n", "mean_diff", "ci95", "p_value", "verdict"}``
        (``verdict`` reads "<policy> <verdict> <other>").
    """
    rows = list(rows)
    names = list(policies)
    by_seed = {p: per_seed_means(rows, p, metric) for p in names}
    out = []
    for i, policy in enumerate(names):
        for other in names[i + 1 :]:
            seeds = sorted(set(by_seed[policy]) & set(by_seed[other]))
            if not seeds:
                continue
            test = paired_test([by_seed[policy][s] for s in seeds], [by_seed[other][s] for s in seeds],
                               direction, alpha)
            out.append({"policy": policy, "other": other, "metric": metric, "direction": direction, **test})
    return out


def verdicts_of(paired: Iterable[Mapping[str, Any]], policy: str) -> dict[str, list[str]]:
    """``{"beats": [...], "ties": [...], "loses to": [...]}``: the others as seen from ``policy``."""
    flip = {"beats": "loses to", "loses to": "beats", "ties": "ties"}
    out: dict[str, list[str]] = {v: [] for v in VERDICTS}
    for entry in paired:
        if entry["policy"] == policy:
            out[entry["verdict"]].append(entry["other"])
        elif entry["other"] == policy:
            out[flip[entry["verdict"]]].append(entry["policy"])
    return out


def verdict_sentence(paired: Iterable[Mapping[str, Any]], policy: str) -> str:
    """``"ppo beats random, x; ties y; loses to z"`` (empty groups left out)."""
    groups = verdicts_of(paired, policy)
    parts = [f"{v} {', '.join(names)}" for v, names in groups.items() if names]
    return f"{policy} " + ("; ".join(parts) if parts else "has no paired comparison")


# the normalised score's reference policies and the bootstrap behind its interval
RANDOM_POLICY = "random"
HINDSIGHT_POLICY = "hindsight"
HINDSIGHT_VALUE_KEY = "hindsight_value"
SCORE_KEY = "score"
BOOTSTRAP_RESAMPLES = 2000


def normalised_score(
    returns: Iterable[float], random_returns: Iterable[float], hindsight_values: Iterable[float],
    resamples: int = BOOTSTRAP_RESAMPLES, seed: int = 0,
) -> tuple[float, float, int]:
    """(mean return - mean random) / (mean hindsight - mean random) over paired episodes, with its 95% CI.

    The i-th values of the three sequences come from the same episode (the same reset seed): the
    policy's return, the uniform-random policy's return and the hindsight value (the optimum, an
    upper bound or a planner's return, :mod:`edgelam.baselines.hindsight`). Random scores 0 and
    hindsight 1. The interval is a paired percentile bootstrap over the episodes (``resamples``
    resamples of the episode indices, the same for numerator and denominator, from ``seed``),
    given as the half-width of its 2.5-97.5% range; NaN when n < 2.

    Returns:
        ``(score, ci95_halfwidth, n)``; the score is NaN when hindsight is not above random on
        average (no room to normalise by).

    Raises:
        ValueError: the sequences have different lengths or are empty.
    """
    p, r, h = (np.asarray(list(x), dtype=float) for x in (returns, random_returns, hindsight_values))
    if not (p.shape == r.shape == h.shape) or p.size == 0:
        raise ValueError(f"normalised_score: needs as many values of each, got {p.size}, {r.size}, {h.size}")
    gap = h.mean() - r.mean()
    if not gap > 0:
        return math.nan, math.nan, int(p.size)
    score = float((p.mean() - r.mean()) / gap)
    if p.size < 2:
        return score, math.nan, int(p.size)
    idx = np.random.default_rng(seed).integers(0, p.size, size=(resamples, p.size))
    gaps = h[idx].mean(axis=1) - r[idx].mean(axis=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        boot = (p[idx].mean(axis=1) - r[idx].mean(axis=1)) / gaps
    boot = boot[np.isfinite(boot) & (gaps > 0)]
    if boot.size < resamples // 2:
        return score, math.nan, int(p.size)
    lo, hi = np.percentile(boot, [2.5, 97.5])
    return score, float((hi - lo) / 2.0), int(p.size)


def normalised_scores(
    rows: Iterable[Mapping[str, Any]], policies: Iterable[str],
    random: str = RANDOM_POLICY, hindsight: str = HINDSIGHT_POLICY,
) -> dict[str, tuple[float, float, int]]:
    """:func:`normalised_score` of every policy in ``policies`` from episode rows tagged ``policy``.

    Each policy is paired with ``random``'s return and ``hindsight``'s ``hindsight_value`` over the
    evaluation seeds all three saw (an agent trained on several seeds enters with its mean per
    seed). Empty when the rows have no ``random`` or no ``hindsight`` episodes.
    """
    rows = list(rows)
    rand = per_seed_means(rows, random, "return")
    best = per_seed_means(rows, hindsight, HINDSIGHT_VALUE_KEY)
    if not rand or not best:
        return {}
    out = {}
    for policy in policies:
        mine = per_seed_means(rows, policy, "return") if policy != hindsight else best
        seeds = sorted(set(mine) & set(rand) & set(best))
        if seeds:
            out[policy] = normalised_score([mine[s] for s in seeds], [rand[s] for s in seeds], [best[s] for s in seeds])
    return out
