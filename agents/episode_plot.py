"""``edgelam plot-episode``: a timeline figure of one episode of any policy.

:func:`record_episode` runs one episode (reset seed ``seed``) of a baseline or a saved
agent through the same policy resolution as :func:`edgelam.agents.evaluate.evaluate`
and keeps, per step, the action, the reward and every numeric ``info`` value (SI
units, as the envs report them; per agent for PettingZoo envs). :func:`plot_episode`
draws the decisions on top, then the physical metrics that vary during the episode,
each with its unit read from its name (``_s`` seconds, ``_j`` joules, ``_bps`` bit/s,
...) or, for a name that states none (``virtual_queue``, ``loss``), from the env's
``metadata["info_units"]``, then the cumulative return.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from stable_baselines3.common.utils import set_random_seed

from edgelam.agents.common import (
    is_adversarial,
    is_parallel,
    make_env,
    make_parallel,
    metric_directions,
)
from edgelam.agents.evaluate import play_episode
from edgelam.agents.marl import _agent_policies, play_parallel_episode
from edgelam.agents.plots import unit_of
from edgelam.agents.policies import PolicySpec, resolve_policy
from edgelam.envs.core.render import LINESTYLES, padded

# info keys that are not physical metrics of the step (indices, masks, labels)
_SKIP = frozenset({"prompt_index", "action_mask", "episode", "TimeLimit.truncated"})
MAX_PANELS = 8
MAX_SPLIT_ACTION = 3  # a Gymnasium action of at most this many entries gets one decision panel per entry
MAX_LINES = 2  # a panel of more lines (agents, devices, servers, action entries) is drawn as a heatmap


@dataclass
class EpisodeTrace:
    """One recorded episode: per step the flat action, the reward and the numeric info values.

    For a PettingZoo env every entry holds one value per agent (``agents`` names them).
    """

    env_id: str
    policy: str
    seed: int
    scenario: str
    agents: tuple[str, ...] = ()
    action_widths: tuple[int, ...] = ()  # PettingZoo: entries of each agent's action in an actions row
    actions: list[np.ndarray] = field(default_factory=list)
    rewards: list[np.ndarray] = field(default_factory=list)
    info: dict[str, list[np.ndarray]] = field(default_factory=dict)
    directions: dict[str, str] = field(default_factory=dict)
    units: dict[str, str] = field(default_factory=dict)  # the env's metadata["info_units"]

    @property
    def steps(self) -> int:
        """Number of steps."""
        return len(self.rewards)

    @property
    def adversarial(self) -> bool:
        """Agents [protagonist, "adversary"] (a zero-sum game: the protagonist's return is the one reported)."""
        return is_adversarial(self.agents)

    @property
    def episode_return(self) -> float:
        """Sum of the rewards; PettingZoo: mean over agents of each one's sum (the protagonist's if adversarial)."""
        sums = np.asarray(self.rewards).sum(axis=0)
        return float(sums[0] if self.adversarial else sums.mean())

    def series(self, key: str) -> np.ndarray:
        """(steps, width) values of an info key (NaN where a step did not report it)."""
        return padded(self.info[key])

    def add(self, action: np.ndarray, reward: np.ndarray, info: Mapping[str, np.ndarray]) -> None:
        """Append one step (every key present so far gets NaN if the step lacks it)."""
        t = self.steps
        self.actions.append(action)
        self.rewards.append(reward)
        for key, value in info.items():
            self.info.setdefault(key, [np.array([np.nan])] * t).append(value)
        for rows in self.info.values():
            if len(rows) == t:
                rows.append(np.array([np.nan]))


def _numbers(value: Any) -> np.ndarray | None:
    """A flat float array of a numeric info value (bools as 0/1, small arrays kept), None otherwise."""
    if isinstance(value, (str, bytes, dict)) or value is None:
        return None
    arr = np.asarray(value)
    if arr.dtype.kind not in "biuf" or arr.size == 0 or arr.size > 64:
        return None
    return arr.astype(np.float64).ravel()


def _gym_episode(trace: EpisodeTrace, spec: PolicySpec, env_kwargs: Mapping[str, Any] | None,
                 deterministic: bool) -> None:
    env = make_env(trace.env_id, trace.scenario, env_kwargs)
    trace.directions = metric_directions(env.metadata)
    trace.units = dict(env.metadata.get("info_units", {}) or {})

    def record(action: Any, reward: float, info: dict) -> None:
        values = {k: v for k, v in ((k, _numbers(v)) for k, v in info.items() if k not in _SKIP) if v is not None}
        trace.add(np.asarray(action, dtype=np.float64).ravel(), np.array([float(reward)]), values)

    play_episode(env, resolve_policy(spec, env, trace.seed), trace.seed, deterministic, record)
    env.close()


def _parallel_episode(
    trace: EpisodeTrace, spec: PolicySpec | Mapping[str, PolicySpec], env_kwargs: Mapping[str, Any] | None,
    deterministic: bool,
) -> None:
    env = make_parallel(trace.env_id, trace.scenario, env_kwargs)
    trace.directions = metric_directions(env.metadata)
    trace.units = dict(env.metadata.get("info_units", {}) or {})
    agents = trace.agents = tuple(env.possible_agents)

    def record(actions: dict, rewards: dict, infos: dict) -> None:
        values = {}
        for key in (k for k in infos[agents[0]] if k not in _SKIP):
            per_agent = [_numbers(infos[a].get(key)) for a in agents]
            if all(v is not None and v.size == 1 for v in per_agent):
                values[key] = np.concatenate(per_agent)
        per_agent_actions = [np.asarray(actions[a], dtype=np.float64).ravel() for a in agents]
        trace.action_widths = tuple(len(a) for a in per_agent_actions)
        action_row = np.concatenate(per_agent_actions)
        trace.add(action_row, np.array([float(rewards[a]) for a in agents]), values)

    play_parallel_episode(env, _agent_policies(spec, env, trace.seed), trace.seed, deterministic, record)
    env.close()


def record_episode(
    policy: PolicySpec | Mapping[str, PolicySpec],
    env_id: str,
    seed: int = 0,
    scenario: str = "default",
    env_kwargs: Mapping[str, Any] | None = None,
    deterministic: bool = True,
) -> EpisodeTrace:
    """Run one episode of ``policy`` (baseline name, saved agent path, or object with ``predict``;
    for a PettingZoo env also a mapping agent -> policy).

    The episode is the one :func:`edgelam.agents.evaluate.evaluate` plays first with the same ``seed``.
    """
    set_random_seed(seed)
    if isinstance(policy, Mapping):
        name = ", ".join(f"{a}: {p}" for a, p in policy.items())
    else:
        name = policy if isinstance(policy, (str, Path)) else type(policy).__name__
    trace = EpisodeTrace(env_id=env_id, policy=str(name), seed=seed, scenario=str(scenario))
    if is_parallel(env_id):
        _parallel_episode(trace, policy, env_kwargs, deterministic)
    else:
        _gym_episode(trace, policy, env_kwargs, deterministic)
    if trace.steps == 0:
        raise ValueError(f"{env_id}: the episode ended before its first step")
    return trace


def decision_panels(trace: EpisodeTrace) -> list[tuple[str, np.ndarray, list[str]]]:
    """The decision panels: (title, (steps, lines) values, line labels).

    A Gymnasium action of up to :data:`MAX_SPLIT_ACTION` entries gets one panel per entry (their
    scales differ: a split layer and a precision index), a wider one a single panel. PettingZoo:
    agents with actions of one width share a panel per entry (one line per agent); agents with
    different actions (a router and its adversary) get one panel each.
    """
    actions = padded(trace.actions)
    widths = trace.action_widths or (actions.shape[1],)
    if not trace.agents:
        if actions.shape[1] == 1:
            return [("decision (the action of each step)", actions, [""])]
        if actions.shape[1] <= MAX_SPLIT_ACTION:
            constant = [j for j in range(actions.shape[1]) if np.ptp(actions[:, j]) == 0]
            varying = [j for j in range(actions.shape[1]) if j not in constant] or [0]
            note = "".join(f"; action[{j}] = {actions[0, j]:g} at every step" for j in constant if j not in varying)
            return [(f"decision: action[{j}]{note if i == 0 else ''}", actions[:, j:j + 1], [""])
                    for i, j in enumerate(varying)]
        return [("decisions (the action of each step)", actions, [f"action[{j}]" for j in range(actions.shape[1])])]
    agents = list(trace.agents)
    if len(set(widths)) == 1:
        width = widths[0]
        per_agent = actions.reshape(len(actions), len(agents), width)
        if width == 1:
            return [("decision of each agent", per_agent[:, :, 0], agents)]
        if width <= MAX_SPLIT_ACTION:
            return [(f"decision: action[{j}] of each agent", per_agent[:, :, j], agents) for j in range(width)]
    panels = []
    start = 0
    for agent, width in zip(agents, widths, strict=True):
        block = actions[:, start:start + width]
        start += width
        labels = [""] if width == 1 else [f"action[{j}]" for j in range(width)]
        panels.append((f"decision of {agent}", block, labels))
    return panels


def _repeats_a_decision(values: np.ndarray, decisions: list[np.ndarray]) -> bool:
    """Whether an info series is one of the decision panels' values (``split_layer`` = ``action[0]``)."""
    for block in decisions:
        if block.shape == values.shape and np.allclose(block, values, equal_nan=True):
            return True
        if values.shape[1] == 1 and any(np.allclose(block[:, j], values[:, 0], equal_nan=True)
                                        for j in range(block.shape[1])):
            return True
    return False


def panel_keys(trace: EpisodeTrace) -> list[str]:
    """The info keys drawn: those that vary in the episode and do not repeat a decision, the env's
    headline metrics first."""
    first = ["latency_s", "energy_j", *trace.directions, "virtual_queue"]
    decisions = [values for _, values, _ in decision_panels(trace)]
    varying = []
    for key in trace.info:
        values = trace.series(key)
        finite = values[np.isfinite(values)]
        if finite.size and np.ptp(finite) > 0 and not _repeats_a_decision(values, decisions):
            varying.append(key)
    ordered = [k for k in dict.fromkeys(first) if k in varying] + [k for k in varying if k not in first]
    return ordered[:MAX_PANELS]


def readable_scale(values: np.ndarray) -> int:
    """The power of ten (a multiple of 3 above 1) to draw ``values`` in, so tick labels need no offset."""
    finite = np.abs(values[np.isfinite(values)])
    top = float(finite.max()) if finite.size else 0.0
    if top == 0.0 or 1e-2 <= top < 1e5:
        return 0
    exponent = int(np.floor(np.log10(top)))
    return exponent if exponent < 0 else 3 * (exponent // 3)


def draw_panel(
    fig: Any, ax: Any, t: np.ndarray, values: np.ndarray, labels: list[str], unit: str, steps: bool,
    max_lines: int | None = MAX_LINES,
) -> bool:
    """Draw ``values`` (steps, lines) on ``ax``; returns whether it was drawn as a heatmap.

    More than ``max_lines`` lines (agents, devices, entries of an action) become a heatmap with one
    row each and a colour bar. Ticks are readable: no offset text, a power of ten moved into the
    unit, integer ticks for integer data, a near-constant series drawn flat in a band of +-1%.
    """
    from matplotlib.ticker import MaxNLocator, ScalarFormatter

    exponent = readable_scale(values)
    if exponent:
        values = values / 10.0**exponent
        unit = f"$10^{{{exponent}}}$ {unit}".strip()
    finite = values[np.isfinite(values)]
    # integer ticks for small counts and indices (a tier, a server, a number of participants)
    integers = finite.size > 0 and bool(np.all(finite == np.round(finite))) and np.ptp(finite) <= 10
    n = values.shape[1]
    if max_lines is not None and n > max_lines:
        edges = np.append(t, t[-1] + 1) - 0.5
        mesh = ax.pcolormesh(edges, np.arange(n + 1) - 0.5, values.T, cmap="viridis", shading="flat")
        ax.set_yticks(np.arange(n), labels=[label or f"[{j}]" for j, label in enumerate(labels[:n])], fontsize=6)
        ax.invert_yaxis()
        bar = fig.colorbar(mesh, ax=ax, pad=0.01, aspect=12)
        bar.ax.tick_params(labelsize=6)
        bar.set_label(unit, fontsize=7)
        if integers:
            bar.ax.yaxis.set_major_locator(MaxNLocator(nbins=5, integer=True))
        return True
    for j in range(n):
        label = labels[j] if n > 1 and j < len(labels) and labels[j] else None
        style = LINESTYLES[j % len(LINESTYLES)]
        if steps:
            ax.step(t, values[:, j], where="post", linewidth=1.2, linestyle=style, label=label)
        else:
            ax.plot(t, values[:, j], linewidth=1.2, linestyle=style, label=label)
    formatter = ScalarFormatter(useOffset=False)
    formatter.set_scientific(False)
    ax.yaxis.set_major_formatter(formatter)
    if integers:
        ax.yaxis.set_major_locator(MaxNLocator(nbins=5, integer=True))
    if finite.size and integers and np.ptp(finite) == 0:  # one index all episode: its neighbours as ticks
        centre = float(finite[0])
        ax.set_ylim(centre - 1, centre + 1)
        ax.set_yticks([centre - 1, centre, centre + 1])
    elif finite.size:
        centre = float(np.mean(finite))
        if abs(centre) > 0 and np.ptp(finite) < 1e-3 * abs(centre):
            ax.set_ylim(centre - 0.01 * abs(centre), centre + 0.01 * abs(centre))
    ax.set_ylabel(unit, fontsize=8)
    ax.grid(alpha=0.3)
    return False


def plot_episode(trace: EpisodeTrace, out_path: str | Path) -> Path:
    """Write the timeline PNG of ``trace``: decisions, the varying metrics with units, cumulative return."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    keys = panel_keys(trace)
    decisions = decision_panels(trace)
    n = len(decisions) + len(keys) + 1
    fig, axes = plt.subplots(n, 1, sharex=True, figsize=(8.0, 1.35 * n + 1.0), layout="constrained")
    axes = np.atleast_1d(axes)
    t = np.arange(1, trace.steps + 1)
    for ax, (title, values, labels) in zip(axes, decisions, strict=False):
        draw_panel(fig, ax, t, values, labels, "", steps=True)
        ax.set_title(title, fontsize=9, loc="left")
    for ax, key in zip(axes[len(decisions):-1], keys, strict=True):
        values = trace.series(key)
        names = list(trace.agents) if trace.agents and values.shape[1] == len(trace.agents) else [
            f"[{j}]" for j in range(values.shape[1])
        ]
        shared = values.shape[1] > 1 and np.allclose(values, values[:, :1], equal_nan=True)
        if shared:
            values = values[:, :1]
        if key.endswith("_bps"):
            values = values * 1e-6
        draw_panel(fig, ax, t, values, names, trace.units.get(key) or unit_of(key), steps=False)
        direction = {"max": " (higher is better)", "min": " (lower is better)"}.get(trace.directions.get(key, ""), "")
        ax.set_title(key + direction, fontsize=9, loc="left")
    rewards = np.asarray(trace.rewards)
    cumulative = np.cumsum(rewards, axis=0)
    agents = list(trace.agents) if trace.agents and cumulative.shape[1] == len(trace.agents) else [""]
    draw_panel(fig, axes[-1], t, cumulative, agents, "", steps=False, max_lines=None)
    axes[-1].set_title("cumulative reward", fontsize=9, loc="left")
    axes[-1].set_xlabel("step")
    for ax in axes:
        ax.tick_params(labelsize=7)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=6, loc="upper left", bbox_to_anchor=(1.0, 1.0), frameon=False)
    total = trace.episode_return
    whose = f" ({trace.agents[0]})" if trace.adversarial else (
        f", mean over {len(trace.agents)} agents" if trace.agents else ""
    )
    fig.suptitle(
        f"{trace.env_id}, scenario {trace.scenario}\n{trace.policy}, reset seed {trace.seed}: "
        f"{trace.steps} steps, return {total:.4g}{whose}",
        fontsize=10,
    )
    out = Path(out_path)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out
