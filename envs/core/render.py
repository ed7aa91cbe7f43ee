"""Renderers shared by every env: ``render_mode="ansi"`` (one text line) and ``"rgb_array"`` (an image).

An env keeps a :class:`History` of its recent steps only when it was built with a render
mode, so rendering costs one ``is None`` test per step when it is off. ``"rgb_array"``
draws that history with matplotlib's Agg backend (no screen needed): one panel per
quantity of the env's ``render_panels`` against the step index, the decisions among
them, the current step and return in the title. ``gymnasium.wrappers.RecordVideo``
turns the frames into a video (it needs the ``video`` extra, moviepy).
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from typing import Any

import numpy as np
from gymnasium import logger

RENDER_MODES = ["ansi", "rgb_array"]
RENDER_FPS = 4
HISTORY_STEPS = 100  # steps an rgb_array frame shows
ACTION = "action"  # the key under which a history keeps the (flattened) action
LINESTYLES = ("-", "--", ":", "-.")  # of the successive lines of a panel


@dataclass(frozen=True)
class Panel:
    """One axes of an ``rgb_array`` frame.

    Attributes:
        title: what the panel shows, in the field's words.
        keys: info keys drawn on it (``"action"`` for the decision); an array value draws one
            line per entry (per device, per server, per agent).
        unit: unit of the drawn values after ``scale`` (``"Mbit/s"``).
        scale: factor from the SI value in ``info`` to the drawn one (1e-6 for bit/s -> Mbit/s).
        labels: legend names of the lines (one per key, or one per entry of a single array key).
        steps: draw as a staircase (decisions, counts) rather than a line.
    """

    title: str
    keys: tuple[str, ...]
    unit: str = ""
    scale: float = 1.0
    labels: tuple[str, ...] = ()
    steps: bool = False


def check_render_mode(render_mode: str | None, env_name: str) -> str | None:
    """``render_mode`` if it is None or one of :data:`RENDER_MODES`, else ``ValueError`` naming them."""
    if render_mode is not None and render_mode not in RENDER_MODES:
        raise ValueError(f"render_mode: {env_name} renders {RENDER_MODES} (or None), got {render_mode!r}")
    return render_mode


def _number(value: Any) -> np.ndarray | None:
    """A float array of a numeric info value (bools count as 0/1), None for text."""
    if isinstance(value, str):
        return None
    arr = np.asarray(value)
    return arr.astype(np.float64) if arr.dtype.kind in "biuf" else None


class History:
    """The last :data:`HISTORY_STEPS` steps of an episode: step index, reward and the rendered info values."""

    def __init__(self, keys: tuple[str, ...]) -> None:
        self.keys = keys
        self.clear()

    def clear(self) -> None:
        """Forget the episode (on reset)."""
        self.t = 0
        self.episode_return = 0.0
        self.steps: deque[int] = deque(maxlen=HISTORY_STEPS)
        self.values: dict[str, deque] = {k: deque(maxlen=HISTORY_STEPS) for k in self.keys}
        self.last: dict[str, Any] = {}

    def append(self, action: Any, reward: float, info: dict[str, Any]) -> None:
        """Record one step (``info`` holds the values of :attr:`keys`; the action is added under ``"action"``)."""
        self.t += 1
        self.episode_return += float(reward)
        self.steps.append(self.t)
        row = {**info, ACTION: action}
        self.last = {"reward": float(reward), **{k: row[k] for k in self.keys if k in row}}
        for k in self.keys:
            self.values[k].append(_number(row.get(k, np.nan)))


def padded(rows: list[np.ndarray]) -> np.ndarray:
    """(len(rows), widest) float array of ragged 1-D rows, NaN where a row is shorter."""
    width = max((len(r) for r in rows), default=0)
    out = np.full((len(rows), width), np.nan)
    for i, r in enumerate(rows):
        out[i, : len(r)] = r
    return out


def _fmt(value: Any) -> str:
    if isinstance(value, (str, bool, np.bool_)):
        return str(value)
    arr = np.asarray(value)
    if arr.ndim == 0:
        return f"{float(arr):.4g}"
    return "[" + " ".join(f"{float(x):.3g}" for x in arr.ravel()) + "]"


def ansi_frame(env_name: str, history: History) -> str:
    """One line: env, step, return, last reward and the last values of the rendered keys."""
    head = f"{env_name} t={history.t} return={history.episode_return:.4g}"
    if not history.last:
        return head + " (no step yet)"
    body = " ".join(f"{k}={_fmt(v)}" for k, v in history.last.items())
    return f"{head} | {body}"


def rgb_frame(
    env_name: str, history: History, panels: tuple[Panel, ...], entry_labels: tuple[str, ...] = ()
) -> np.ndarray:
    """An (H, W, 3) uint8 image of the recent history, one panel per :class:`Panel`.

    ``entry_labels`` name the lines of an array value as wide as it (the agents, devices or servers).
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(6.4, 1.25 * len(panels) + 0.6), dpi=100, layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(len(panels), 1, sharex=True, squeeze=False)[:, 0]
    fig.suptitle(f"{env_name}   step {history.t}   return {history.episode_return:.4g}", fontsize=10)
    steps = np.asarray(history.steps, dtype=np.float64)
    for ax, panel in zip(axes, panels, strict=True):
        lines: list[tuple[str, np.ndarray]] = []
        for key in panel.keys:
            rows = [np.atleast_1d(v) if v is not None else np.array([np.nan]) for v in history.values[key]]
            if not rows:
                continue
            data = padded(rows)
            width = data.shape[1]
            names = panel.labels if len(panel.keys) == 1 and len(panel.labels) == width else ()
            if not names and width > 1 and len(entry_labels) == width:
                names = entry_labels
            for j in range(width):
                name = names[j] if names else (key if width == 1 else f"{key}[{j}]")
                lines.append((name, data[:, j] * panel.scale))
        if len(panel.keys) > 1 and len(panel.labels) == len(lines):
            lines = [(label, y) for label, (_, y) in zip(panel.labels, lines, strict=True)]
        for j, (name, y) in enumerate(lines):
            # one line style after the other, so coinciding lines (proposed = accepted tokens) stay visible
            style = LINESTYLES[j % len(LINESTYLES)]
            if panel.steps:
                ax.step(steps, y, where="post", label=name, linewidth=1.2, linestyle=style)
            else:
                ax.plot(steps, y, label=name, linewidth=1.2, linestyle=style)
        ax.set_ylabel(panel.unit, fontsize=8)
        ax.set_title(panel.title, fontsize=9, loc="left")
        ax.tick_params(labelsize=7)
        ax.grid(alpha=0.3)
        if 1 < len(lines) <= 10:
            ax.legend(fontsize=6, loc="upper left", bbox_to_anchor=(1.0, 1.0), frameon=False)
    axes[-1].set_xlabel("step", fontsize=8)
    if len(steps):
        axes[-1].set_xlim(steps[0], max(steps[-1], steps[0] + 1))
    fig.canvas.draw()
    return np.asarray(fig.canvas.buffer_rgba())[:, :, :3].copy()


class Renderer:
    """What an env shell holds to render: its name, panels, mode and the history (None when off)."""

    def __init__(
        self, env_name: str, render_mode: str | None, panels: tuple[Panel, ...], entry_labels: tuple[str, ...] = ()
    ) -> None:
        self.env_name = env_name
        self.entry_labels = entry_labels
        self.render_mode = check_render_mode(render_mode, env_name)
        self.panels = panels
        keys = tuple(dict.fromkeys(k for p in panels for k in p.keys))
        self.history = History(keys) if render_mode is not None else None

    def render(self) -> str | np.ndarray | None:
        """The frame of the env's render mode (Gymnasium's ``render()``)."""
        if self.history is None:
            logger.warn(f"{self.env_name}: render() without a render_mode; build it with render_mode='rgb_array' "
                        "or 'ansi'")
            return None
        if self.render_mode == "ansi":
            return ansi_frame(self.env_name, self.history)
        return rgb_frame(self.env_name, self.history, self.panels, self.entry_labels)


def merge_agents(
    actions: dict[str, Any], infos: dict[str, dict], agents: list[str], shared: tuple[str, ...] = ()
) -> tuple[np.ndarray, dict]:
    """(action per agent, info of one value per agent) of a parallel step, for its :class:`History`.

    Each panel then draws one line per agent; the ``shared`` keys (the same for every
    agent: the global loss, the round latency) keep the first agent's single value.
    """
    action = np.stack([np.asarray(actions[a], dtype=np.float64).ravel() for a in agents])
    merged: dict[str, Any] = {}
    for key in infos[agents[0]]:
        if key in shared:
            merged[key] = infos[agents[0]][key]
            continue
        nums = [_number(infos[a].get(key)) for a in agents]
        if all(n is not None and n.ndim == 0 for n in nums):
            merged[key] = np.asarray(nums)
    return (action[:, 0] if action.shape[1] == 1 else action), merged
