"""The compare's table: which metrics it shows, the best cells, and the table as rich, Markdown and text.

Which way is better comes from the env's ``metadata["metric_directions"]`` over
:data:`edgelam.agents.common.DEFAULT_DIRECTIONS`; metrics with no direction are not marked.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

from rich.table import Table

from edgelam.agents.common import COST_KEY, VIOLATION_KEY, markdown_table
from edgelam.agents.metrics import SCORE_KEY, verdict_sentence

# columns of the printed table besides the return: not per-agent, not the episode length
_HIDDEN = frozenset({"length"})
# metric columns of the headline table besides the return (it fits in 160 columns; the rest is in the CSV/JSON)
MAX_TABLE_METRICS = 5


def format_cell(mean: float, ci95: float) -> str:
    """How a table cell shows a mean and its CI half-width (``"12.3 ± 0.45"``)."""
    if not math.isfinite(ci95):
        return f"{mean:.4g}"
    return f"{mean:.4g} ± {ci95:.2g}"


def best_policies(
    summary: Mapping[str, Mapping[str, tuple[float, float, int]]], metric: str, direction: str
) -> list[str]:
    """Policies whose mean of ``metric`` is the best in ``direction`` (all of them on a tie)."""
    means = {p: s[metric][0] for p, s in summary.items() if metric in s and math.isfinite(s[metric][0])}
    if not means:
        return []
    target = max(means.values()) if direction == "max" else min(means.values())
    return [p for p, m in means.items() if m == target]


def _policy_dependent(summary: Mapping[str, Mapping[str, Any]], metric: str) -> bool:
    """Whether the policies' means of ``metric`` differ (exogenous ones, like the SNR, are the same for all)."""
    means = [float(s[metric][0]) for s in summary.values() if metric in s]
    if len(means) < 2:
        return bool(means)
    spread = max(means) - min(means)
    return spread > 1e-9 * max(1.0, max(abs(m) for m in means))


def table_metrics(
    summary: Mapping[str, Mapping[str, Any]],
    directions: Mapping[str, str] | None = None,
    cost_keys: Sequence[str] = (),
    max_metrics: int = MAX_TABLE_METRICS,
) -> list[str]:
    """The headline table's columns: the return and, where the episodes have them, the normalised
    score (``score``: random 0, hindsight 1), the episode cost and the violation rate (``cost``,
    ``cost_violation``); then the env's key metrics (those with a
    direction), then its budget keys, each only where the policies differ in it, at most
    ``max_metrics`` of them. Every metric stays in results.csv/json."""
    present = list(dict.fromkeys(m for metrics in summary.values() for m in metrics if m not in _HIDDEN))
    present = [m for m in present if "/" not in m]
    directions = directions or {}
    beside = [m for m in (SCORE_KEY, COST_KEY, VIOLATION_KEY) if m in present]
    keyed = [m for m in present if m not in ("return", *beside) and direction_of(directions, m) is not None]
    costs = [m for m in present if m in cost_keys and m not in keyed]
    chosen = [m for m in [*keyed, *costs] if _policy_dependent(summary, m)]
    return ["return", *beside, *chosen[:max_metrics]]


def tradeoff_pair(metrics: Sequence[str]) -> tuple[str, str] | None:
    """The two metrics of the trade-off scatter: latency against energy where both are headline metrics,
    else the first two headline metrics besides the return."""
    if "latency_s" in metrics and "energy_j" in metrics:
        return "latency_s", "energy_j"
    rest = [m for m in metrics if m != "return"]
    return (rest[0], rest[1]) if len(rest) >= 2 else None


def direction_of(directions: Mapping[str, str], metric: str) -> str | None:
    """Which way ``metric`` is better (a per-agent ``x/<agent>`` metric: as ``x``), or ``None``."""
    return directions.get(metric, directions.get(metric.split("/")[0]))


def _header(metric: str, directions: Mapping[str, str]) -> str:
    arrow = {"max": " ↑", "min": " ↓"}.get(direction_of(directions, metric) or "", "")
    return metric + arrow


def table_text(
    summary: Mapping[str, Mapping[str, tuple[float, float, int]]],
    kinds: Mapping[str, str],
    metrics: Sequence[str],
    directions: Mapping[str, str],
    best: Mapping[str, Sequence[str]],
) -> list[list[str]]:
    """The table as text rows: header, then one row per policy (best cells end in ``" *"``)."""
    table = [["policy", "kind", *(_header(m, directions) for m in metrics)]]
    for policy, stats_of in summary.items():
        row = [policy, kinds[policy]]
        for metric in metrics:
            if metric not in stats_of:
                row.append("-")
                continue
            mean, ci, _ = stats_of[metric]
            cell = format_cell(mean, ci)
            row.append(cell + " *" if policy in best.get(metric, ()) else cell)
        table.append(row)
    return table


def rich_table(title: str, rows: Sequence[Sequence[str]], left: int = 2) -> Table:
    """A rich table of text rows (header first) that never wraps or squeezes a cell.

    The table is as wide as its cells need, wider than the terminal if need be (print
    it with ``crop=False``); the first ``left`` columns are left-aligned, the others
    right-aligned; cells ending in ``" *"`` (best values) are bold.
    """
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    table = Table(title=title, width=sum(widths) + 3 * len(widths) + 1)
    for i, name in enumerate(rows[0]):
        table.add_column(name, justify="left" if i < left else "right", no_wrap=True)
    for row in rows[1:]:
        table.add_row(*(f"[bold]{c}[/bold]" if c.endswith(" *") else c for c in row))
    return table


def markdown_report_table(table: Sequence[Sequence[str]]) -> str:
    """The report's table, a column's best cell (``... *``) in bold."""
    bold = [[f"**{c.removesuffix(' *')}** *" if c.endswith(" *") else c for c in row] for row in table[1:]]
    return "\n".join(markdown_table([table[0], *bold]))


def paired_lines(paired: Sequence[Mapping[str, Any]], kinds: Mapping[str, str]) -> list[str]:
    """One sentence per policy: what it beats, ties and loses to by the paired test (agents first).

    An agent is set against every other policy, a baseline against the baselines after it
    (its verdicts against the agents are on the agents' lines).
    """
    agents = [p for p, k in kinds.items() if k == "agent"]
    names = list(kinds)
    lines = [verdict_sentence(paired, p) for p in agents]
    for i, policy in enumerate(names):
        if kinds[policy] == "agent":
            continue
        later = [e for e in paired if e["policy"] == policy and e["other"] in names[i + 1 :]]
        if later:
            lines.append(verdict_sentence(later, policy))
    return [f"- {line}" for line in lines]
