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

# unit of an info key, from its suffix (edgelam's names carry their SI unit); rates are drawn in Mbit/s
_UNITS = (
    ("_bps", "Mbit/s"),
    ("_hz", "Hz"),
    ("_db", "dB"),
    ("_usd", "USD"),
    ("_bytes", "B"),
    ("_bits", "bit"),
    ("_s", "s"),
    ("_j", "J"),
    ("_w", "W"),
    ("_m", "m"),
)


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


def binned_curve(steps: np.ndarray, returns: np.ndarray, bins: int = 60) -> tuple[np.ndarray, np.ndarray]:
    """Mean episode return per equal-width bin of env-steps, at each bin's centre (empty bins dropped).

    Several episodes that end at one timestep (parallel envs) fall into one bin, so the
    curve has one value per x: no vertical jumps. The bin width is ``max(steps) / bins``.
    """
    if steps.size == 0:
        return steps.astype(float), returns
    top = float(steps.max())
    edges = np.linspace(0.0, top if top > 0 else 1.0, bins + 1)
    idx = np.clip(np.searchsorted(edges, steps, side="right") - 1, 0, bins - 1)
    counts = np.bincount(idx, minlength=bins)
    sums = np.bincount(idx, weights=returns, minlength=bins)
    keep = counts > 0
    centres = 0.5 * (edges[:-1] + edges[1:])
    return centres[keep], sums[keep] / counts[keep]


def _merge_close(values: Mapping[str, float], tol: float) -> list[tuple[float, list[str]]]:
    """Names whose values lie within ``tol`` of their group's first, merged under one label (largest first)."""
    groups: list[tuple[float, list[str]]] = []
    for name, value in sorted(values.items(), key=lambda kv: -kv[1]):
        if groups and abs(groups[-1][0] - value) <= tol:
            groups[-1][1].append(name)
        else:
            groups.append((value, [name]))
    return groups


def plot_learning_curves(
    curves: Mapping[str, Mapping[int, Path]],
    out_path: Path,
    references: Mapping[str, float] | None = None,
    bins: int = 60,
) -> Path:
    """Training episode return against env-steps, one colour per algorithm, one line per seed.

    Args:
        curves: algorithm -> training seed -> ``learning_curve.csv``.
        out_path: the PNG to write.
        references: baseline name -> its mean evaluation return, drawn as labelled dashed lines.
        bins: env-step bins the episodes are averaged in (:func:`binned_curve`).
    """
    fig, ax = plt.subplots(figsize=(7.5, 4.5), layout="constrained")
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    plotted = False
    for i, (algo, seeds) in enumerate(curves.items()):
        labelled = False
        for _, path in sorted(seeds.items()):
            x, y = binned_curve(*read_learning_curve(path), bins=bins)
            if x.size == 0:
                continue
            ax.plot(x, y, color=colours[i % len(colours)], alpha=0.85, label=None if labelled else algo)
            labelled = plotted = True
    if references:
        values = np.array(list(references.values()), dtype=float)
        span = float(np.ptp(values)) or 1.0
        for value, names in _merge_close(references, 0.02 * span):
            ax.axhline(value, color="0.45", linestyle="--", linewidth=0.8)
            ax.annotate(", ".join(names), (1.0, value), xycoords=("axes fraction", "data"), xytext=(3, 0),
                        textcoords="offset points", va="center", fontsize=7, color="0.3")
    if not plotted:
        ax.text(0.5, 0.5, "no finished training episodes", ha="center", va="center", transform=ax.transAxes)
    else:
        ax.legend(loc="lower right", fontsize=8)
    ax.set_xlabel("env-steps")
    ax.set_ylabel(f"training episode return (mean per {bins}-th of the run)")
    ax.set_title("Learning curves (one line per seed); dashed: baselines' evaluation return", fontsize=10)
    ax.grid(alpha=0.3)
    fig.savefig(out_path, dpi=120)
    plt.close(fig)
    return out_path


def unit_of(key: str) -> str:
    """The unit an info key is drawn in, from its name (``latency_s`` -> ``s``; ``_bps`` in Mbit/s), or ``""``."""
    for suffix, unit in _UNITS:
        if key.endswith(suffix):
            return unit
    return ""


def plot_metrics(
    summary: Summary,
    metrics: Sequence[str],
    best: Mapping[str, Sequence[str]],
    out_path: Path,
    directions: Mapping[str, str] | None = None,
) -> Path:
    """One bar chart per metric: mean per policy with its 95% CI as error bar; best bars hatched.

    Args:
        summary: policy -> metric -> ``(mean, ci95_halfwidth, n)``.
        metrics: the metrics to draw, in order (the headline table's: policy-dependent ones).
        best: metric -> best policies (drawn hatched).
        out_path: the PNG to write.
        directions: metric -> ``"max"``/``"min"`` (an arrow in the panel title).
    """
    directions = directions or {}
    policies = list(summary)
    ncols = min(3, max(len(metrics), 1))
    nrows = max(math.ceil(len(metrics) / ncols), 1)
    fig, axes = plt.subplots(
        nrows, ncols, figsize=(4.2 * ncols, 0.3 * len(policies) * nrows + 1.4 * nrows + 0.5), layout="constrained"
    )
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
        ax.set_yticks(y, policies, fontsize=8)
        ax.invert_yaxis()
        arrow = {"max": " ↑", "min": " ↓"}.get(directions.get(metric, ""), "")
        unit = unit_of(metric)
        ax.set_title(metric + arrow, fontsize=9)
        ax.set_xlabel(unit, fontsize=8)
        ax.tick_params(axis="x", labelsize=7)
        ax.grid(axis="x", alpha=0.3)
    for ax in axes[len(metrics) :]:
        ax.axis("off")
    fig.suptitle("Mean and 95% CI per policy (best hatched)", fontsize=10)
    fig.savefig(out_path, dpi=120)
    plt.close(fig)
    return out_path


def plot_tradeoff(
    summary: Summary, x_metric: str, y_metric: str, out_path: Path, kinds: Mapping[str, str] | None = None
) -> Path:
    """A trade-off scatter: one point per policy at its means of two metrics, with 95% CI error bars.

    Args:
        summary: policy -> metric -> ``(mean, ci95_halfwidth, n)``.
        x_metric, y_metric: the two metrics (e.g. ``latency_s`` and ``energy_j``).
        out_path: the PNG to write.
        kinds: policy -> ``"agent"``/``"baseline"`` (agents drawn as squares).

    Raises:
        ValueError: if no policy has both metrics.
    """
    points = [(p, s[x_metric], s[y_metric]) for p, s in summary.items() if x_metric in s and y_metric in s]
    if not points:
        raise ValueError(f"plot_tradeoff: no policy reports both {x_metric} and {y_metric}")
    kinds = kinds or {}
    fig, ax = plt.subplots(figsize=(6.5, 4.8), layout="constrained")
    xs = np.array([p[1][0] for p in points])
    ys = np.array([p[2][0] for p in points])
    tol_x, tol_y = 0.01 * (float(np.ptp(xs)) or 1.0), 0.01 * (float(np.ptp(ys)) or 1.0)
    labels: list[tuple[float, float, list[str]]] = []  # policies at (nearly) one point share one label
    for name, (xm, xc, _), (ym, yc, _) in points:
        marker = "s" if kinds.get(name) == "agent" else "o"
        ax.errorbar(xm, ym, xerr=xc, yerr=yc, fmt=marker, capsize=3, markersize=6)
        for lx, ly, names in labels:
            if abs(lx - xm) <= tol_x and abs(ly - ym) <= tol_y:
                names.append(name)
                break
        else:
            labels.append((xm, ym, [name]))
    for lx, ly, names in labels:
        ax.annotate(", ".join(names), (lx, ly), textcoords="offset points", xytext=(5, 4), fontsize=8)
    ax.set_xlabel(f"{x_metric} ({unit_of(x_metric)})" if unit_of(x_metric) else x_metric)
    ax.set_ylabel(f"{y_metric} ({unit_of(y_metric)})" if unit_of(y_metric) else y_metric)
    ax.set_title(f"{y_metric} against {x_metric}: mean and 95% CI per policy (agents square)", fontsize=10)
    ax.grid(alpha=0.3)
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
