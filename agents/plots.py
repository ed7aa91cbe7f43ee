"""PNG plots of the compare harness (matplotlib, Agg backend: no display needed)."""

from __future__ import annotations

import csv
import math
from collections.abc import Mapping, Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np

Summary = Mapping[str, Mapping[str, tuple[float, float, int]]]


def read_learning_curve(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """``(timesteps, episode_return)`` arrays of a ``learning_curve.csv`` (empty if absent)."""
    if not path.is_file():
        return np.zeros(0), np.zeros(0)
    with open(path, newline="") as f:
        rows = [(int(r["timesteps"]), float(r["episode_return"])) for r in csv.DictReader(f)]
    if not rows:
        return np.zeros(0), np.zeros(0)
    steps, returns = zip(*rows, strict=True)
    return np.asarray(steps), np.asarray(returns)


def _smooth(values: np.ndarray, window: int) -> np.ndarray:
    """Trailing moving average (the first points average what exists so far)."""
    cumsum = np.cumsum(values)
    out = cumsum.copy()
    out[window:] = cumsum[window:] - cumsum[:-window]
    counts = np.minimum(np.arange(1, values.size + 1), window)
    return out / counts


def plot_learning_curves(curves: Mapping[str, Mapping[int, Path]], out_path: Path, window: int = 20) -> Path:
    """Episode return against timesteps, one colour per algorithm, one line per seed.

    Args:
        curves: algorithm -> training seed -> ``learning_curve.csv``.
        out_path: the PNG to write.
        window: episodes in the trailing moving average.
    """
    fig, ax = plt.subplots(figsize=(7, 4.5))
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    plotted = False
    for i, (algo, seeds) in enumerate(curves.items()):
        labelled = False
        for _, path in sorted(seeds.items()):
            steps, returns = read_learning_curve(path)
            if steps.size == 0:
                continue
            label = None if labelled else algo
            ax.plot(steps, _smooth(returns, window), color=colours[i % len(colours)], alpha=0.8, label=label)
            labelled = plotted = True
    if not plotted:
        ax.text(0.5, 0.5, "no finished training episodes", ha="center", va="center", transform=ax.transAxes)
    else:
        ax.legend()
    ax.set_xlabel("timesteps")
    ax.set_ylabel(f"episode return (moving average, {window} episodes)")
    ax.set_title("Learning curves (one line per seed)")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(out_path, dpi=120)
    plt.close(fig)
    return out_path


def plot_metrics(
    summary: Summary, metrics: Sequence[str], best: Mapping[str, Sequence[str]], out_path: Path
) -> Path:
    """One bar chart per metric: mean per policy with its 95% CI as error bar; best bars hatched.

    Args:
        summary: policy -> metric -> ``(mean, ci95_halfwidth, n)``.
        metrics: the metrics to draw, in order.
        best: metric -> best policies (drawn hatched).
        out_path: the PNG to write.
    """
    policies = list(summary)
    ncols = min(3, max(len(metrics), 1))
    nrows = max(math.ceil(len(metrics) / ncols), 1)
    fig, axes = plt.subplots(nrows, ncols, figsize=(4.2 * ncols, 0.45 * len(policies) * nrows + 1.6 * nrows))
    axes = np.atleast_1d(axes).ravel()
    y = np.arange(len(policies))
    for ax, metric in zip(axes, metrics, strict=False):
        means = np.array([summary[p].get(metric, (np.nan, np.nan, 0))[0] for p in policies])
        cis = np.array([summary[p].get(metric, (np.nan, np.nan, 0))[1] for p in policies])
        bars = ax.barh(y, means, xerr=np.nan_to_num(cis), capsize=3, color="tab:blue", alpha=0.75)
        for bar, policy in zip(bars, policies, strict=True):
            if policy in best.get(metric, ()):
                bar.set_hatch("//")
                bar.set_color("tab:orange")
        ax.set_yticks(y, policies)
        ax.invert_yaxis()
        ax.set_title(metric)
        ax.grid(axis="x", alpha=0.3)
    for ax in axes[len(metrics) :]:
        ax.axis("off")
    fig.suptitle("Mean and 95% CI per policy (best hatched)")
    fig.tight_layout()
    fig.savefig(out_path, dpi=120)
    plt.close(fig)
    return out_path


def plot_v_tradeoff(
    v_values: Sequence[float],
    cost: Sequence[float],
    constraint: Sequence[float],
    out_path: str | Path,
    cost_label: str = "cost",
    constraint_label: str = "constraint",
    constraint_limit: float | None = None,
) -> Path:
    """The O(1/V) / O(V) trade-off of a Lyapunov drift-plus-penalty controller (Neely 2010).

    Left: cost and constraint metric against V (log axis); right: cost against the
    constraint metric, each point labelled with its V. Env-specific code calls this
    with a sweep of a ``lyapunov`` baseline's V.

    Args:
        v_values: the V of each run.
        cost: the penalty (time-average cost) of each run.
        constraint: the constrained time average (or virtual queue) of each run.
        out_path: the PNG to write.
        cost_label: axis label of ``cost``.
        constraint_label: axis label of ``constraint``.
        constraint_limit: drawn as a dashed line when given.

    Raises:
        ValueError: if the three sequences differ in length or are empty.
    """
    v = np.asarray(v_values, dtype=float)
    c = np.asarray(cost, dtype=float)
    q = np.asarray(constraint, dtype=float)
    if not (v.size == c.size == q.size) or v.size == 0:
        raise ValueError("plot_v_tradeoff: v_values, cost and constraint must be non-empty, of equal length")
    order = np.argsort(v)
    v, c, q = v[order], c[order], q[order]
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 4))
    left.plot(v, c, "o-", color="tab:blue", label=cost_label)
    left.set_xscale("log" if np.all(v > 0) else "linear")
    left.set_xlabel("V")
    left.set_ylabel(cost_label, color="tab:blue")
    twin = left.twinx()
    twin.plot(v, q, "s--", color="tab:red", label=constraint_label)
    twin.set_ylabel(constraint_label, color="tab:red")
    if constraint_limit is not None:
        twin.axhline(constraint_limit, color="tab:red", alpha=0.4, linestyle=":")
        right.axvline(constraint_limit, color="tab:red", alpha=0.4, linestyle=":")
    right.plot(q, c, "o-", color="tab:purple")
    for vi, qi, ci in zip(v, q, c, strict=True):
        right.annotate(f"V={vi:g}", (qi, ci), textcoords="offset points", xytext=(4, 4), fontsize=8)
    right.set_xlabel(constraint_label)
    right.set_ylabel(cost_label)
    right.grid(alpha=0.3)
    fig.suptitle("Lyapunov drift-plus-penalty: V trade-off")
    fig.tight_layout()
    out_path = Path(out_path)
    fig.savefig(out_path, dpi=120)
    plt.close(fig)
    return out_path
