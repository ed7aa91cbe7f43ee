"""``edgelam plot-episode``: a timeline figure of one episode of any policy.

:func:`record_episode` runs one episode (reset seed ``seed``) of a baseline or a saved
agent through the same policy resolution as :func:`edgelam.agents.evaluate.evaluate`
and keeps, per step, the action, the reward and every numeric ``info`` value (SI
units, as the envs report them; per agent for PettingZoo envs). :func:`plot_episode`
draws the decisions on top, then the physical metrics that vary during the episode,
each with its unit read from its name (``_s`` seconds, ``_j`` joules, ``_bps`` bit/s,
...), then the cumulative return.
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
from edgelam.envs.core.render import padded

# info keys that are not physical metrics of the step (indices, masks, labels)
_SKIP = frozenset({"prompt_index", "action_mask", "episode", "TimeLimit.truncated"})
MAX_PANELS = 8


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
    actions: list[np.ndarray] = field(default_factory=list)
    rewards: list[np.ndarray] = field(default_factory=list)
    info: dict[str, list[np.ndarray]] = field(default_factory=dict)
    directions: dict[str, str] = field(default_factory=dict)

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
    agents = trace.agents = tuple(env.possible_agents)

    def record(actions: dict, rewards: dict, infos: dict) -> None:
        values = {}
        for key in (k for k in infos[agents[0]] if k not in _SKIP):
            per_agent = [_numbers(infos[a].get(key)) for a in agents]
            if all(v is not None and v.size == 1 for v in per_agent):
                values[key] = np.concatenate(per_agent)
        action_row = np.concatenate([np.asarray(actions[a], dtype=np.float64).ravel() for a in agents])
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


def panel_keys(trace: EpisodeTrace) -> list[str]:
    """The info keys drawn: those that vary in the episode, the env's headline metrics first."""
    first = ["latency_s", "energy_j", *trace.directions, "virtual_queue"]
    varying = []
    for key in trace.info:
        values = trace.series(key)
        finite = values[np.isfinite(values)]
        if finite.size and np.ptp(finite) > 0:
            varying.append(key)
    ordered = [k for k in dict.fromkeys(first) if k in varying] + [k for k in varying if k not in first]
    return ordered[:MAX_PANELS]


def plot_episode(trace: EpisodeTrace, out_path: str | Path) -> Path:
    """Write the timeline PNG of ``trace``: decisions, the varying metrics with units, cumulative return."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    keys = panel_keys(trace)
    n = len(keys) + 2
    fig, axes = plt.subplots(n, 1, sharex=True, figsize=(8.0, 1.35 * n + 0.8), layout="constrained")
    t = np.arange(1, trace.steps + 1)
    actions = padded(trace.actions)
    labels = list(trace.agents) if trace.agents and actions.shape[1] == len(trace.agents) else [
        f"action[{j}]" for j in range(actions.shape[1])
    ]
    for j in range(actions.shape[1]):
        axes[0].step(t, actions[:, j], where="post", linewidth=1.1, label=labels[j] if actions.shape[1] > 1 else None)
    axes[0].set_title("decisions (the action of each step)", fontsize=9, loc="left")
    for ax, key in zip(axes[1:-1], keys, strict=True):
        values = trace.series(key)
        names = list(trace.agents) if trace.agents and values.shape[1] == len(trace.agents) else [
            f"[{j}]" for j in range(values.shape[1])
        ]
        shared = values.shape[1] > 1 and np.allclose(values, values[:, :1], equal_nan=True)
        if shared:
            values = values[:, :1]
        if key.endswith("_bps"):
            values = values * 1e-6
        for j in range(values.shape[1]):
            ax.plot(t, values[:, j], linewidth=1.1, label=None if values.shape[1] == 1 else names[j])
        direction = {"max": " (higher is better)", "min": " (lower is better)"}.get(trace.directions.get(key, ""), "")
        ax.set_title(key + direction, fontsize=9, loc="left")
        ax.set_ylabel(unit_of(key), fontsize=8)
    rewards = np.asarray(trace.rewards)
    cumulative = np.cumsum(rewards, axis=0)
    for j in range(cumulative.shape[1]):
        axes[-1].plot(t, cumulative[:, j], linewidth=1.1, label=None if cumulative.shape[1] == 1 else labels[j])
    axes[-1].set_title("cumulative reward", fontsize=9, loc="left")
    axes[-1].set_xlabel("step")
    for ax in axes:
        ax.grid(alpha=0.3)
        ax.tick_params(labelsize=7)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=6, loc="upper left", bbox_to_anchor=(1.0, 1.0), frameon=False)
    total = trace.episode_return
    agents = f" ({trace.agents[0]})" if trace.adversarial else (
        f", mean over {len(trace.agents)} agents" if trace.agents else ""
    )
    fig.suptitle(
        f"{trace.env_id} (scenario {trace.scenario}): {trace.policy}, reset seed {trace.seed}, "
        f"{trace.steps} steps, return {total:.4g}{agents}",
        fontsize=10,
    )
    out = Path(out_path)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out
