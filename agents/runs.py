"""The run folder every trainer writes, and the one resume logic over it.

Every :class:`~edgelam.agents.trainers.Trainer` (SB3, RARL, RLlib) trains into one layout::

    meta.json            the run's settings (compared on resume), timesteps done, wall time, finished flag
    checkpoints/         model_<steps>_steps.zip (+ model_vecnormalize_<steps>_steps.pkl), where the trainer saves them
    learning_curve.csv   timesteps,episode_return,episode_length
    <final file>         the trained model (SB3: model.zip; RARL: history.json beside one folder per agent;
                         RLlib: checkpoint/)

:func:`open_run` decides what a training call does with its folder: a folder whose
``meta.json`` matches the settings and holds a finished run with enough timesteps is
reused; otherwise the run trains from its latest checkpoint, or from scratch.
"""

from __future__ import annotations

import csv
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

META = "meta.json"
MODEL = "model.zip"
VECNORMALIZE = "vecnormalize.pkl"
CHECKPOINTS = "checkpoints"
LEARNING_CURVE = "learning_curve.csv"
HISTORY = "history.json"  # RARL's phases, RLlib's iterations
CURVE_HEADER = ("timesteps", "episode_return", "episode_length")
CHECKPOINT_NAME = re.compile(r"^model_(\d+)_steps\.zip$")
# settings a meta.json records only when set: a run without one is compared as unset
FLAGS = ("vectorized",)


def read_meta(folder: Path) -> dict[str, Any] | None:
    """The ``meta.json`` of a run folder, or ``None``."""
    path = Path(folder) / META
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise ValueError(f"{path}: bad JSON: {exc}") from None


def write_meta(folder: Path, meta: Mapping[str, Any]) -> None:
    """Write ``meta.json`` atomically (a run interrupted mid-write keeps the previous one)."""
    tmp = folder / (META + ".tmp")
    tmp.write_text(json.dumps(meta, indent=2, default=str) + "\n")
    tmp.replace(folder / META)


def is_finished(folder: Path, meta: Mapping[str, Any], final: str) -> bool:
    """Whether the run in ``folder`` has ended: its ``finished`` flag, else (a meta.json written
    only when the run ends, as RARL's) whether its final file exists."""
    return bool(meta.get("finished", (folder / final).exists()))


def latest_checkpoint(folder: Path, meta: Mapping[str, Any] | None, final: str = MODEL) -> tuple[Path, int] | None:
    """The saved model with the most timesteps: a checkpoint, or the final file of a finished run."""
    found: list[tuple[int, Path]] = []
    for path in (folder / CHECKPOINTS).glob("model_*_steps.zip"):
        match = CHECKPOINT_NAME.match(path.name)
        if match:
            found.append((int(match.group(1)), path))
    if meta and is_finished(folder, meta, final) and (folder / final).exists():
        found.append((int(meta["num_timesteps"]), folder / final))
    if not found:
        return None
    steps, path = max(found, key=lambda item: item[0])
    return path, steps


@dataclass(frozen=True)
class Resume:
    """What a run folder holds for a training call (see :func:`open_run`).

    Attributes:
        meta: the folder's ``meta.json`` (``None``: a fresh folder).
        checkpoint: the saved model training restarts from (``None``: from scratch).
        steps: timesteps of ``checkpoint`` (0 from scratch).
        reuse: the folder holds a finished run with enough timesteps: load it, train nothing.
    """

    meta: dict[str, Any] | None = None
    checkpoint: Path | None = None
    steps: int = 0
    reuse: bool = False

    @property
    def wall_time_s(self) -> float:
        """Training wall time of the sessions before this one."""
        return float(self.meta.get("wall_time_s", 0.0)) if self.meta else 0.0


def open_run(
    folder: Path,
    settings: Mapping[str, Any],
    timesteps: int,
    resume: bool = True,
    final: str = MODEL,
) -> Resume:
    """The one resume logic: what a training call of ``settings`` does with the run in ``folder``.

    Args:
        folder: the run folder.
        settings: what ``meta.json`` records of the run and a rerun must match.
        timesteps: the timesteps a finished run needs to be reused.
        resume: whether a folder holding a run may be continued (else it is refused).
        final: the file of a finished run (the model it is reused from).

    Returns:
        A fresh :class:`Resume` for a folder without ``meta.json``; else the latest checkpoint
        (:func:`latest_checkpoint`), reused when the run is finished with at least ``timesteps``.

    Raises:
        ValueError: if the folder holds a run and ``resume`` is false, or its run has other settings.
    """
    meta = read_meta(folder)
    if meta is None:
        return Resume()
    if not resume:
        raise ValueError(f"{folder} already holds a run; pass resume=True (--resume) or another out_dir")
    changed = sorted(k for k in {*settings, *FLAGS} if meta.get(k) != settings.get(k))
    if changed:
        raise ValueError(f"{folder} holds a run with other settings ({', '.join(changed)}); use another out_dir")
    start = latest_checkpoint(folder, meta, final)
    if start is None:
        return Resume(meta)
    reuse = is_finished(folder, meta, final) and start[1] >= timesteps
    return Resume(meta, start[0], start[1], reuse)


def truncate_curve(path: Path, steps: int) -> None:
    """Drop learning-curve rows logged after the checkpoint a run resumes from."""
    if not path.is_file():
        return
    with open(path, newline="") as f:
        rows = list(csv.reader(f))
    kept = [rows[0], *(r for r in rows[1:] if r and int(r[0]) <= steps)] if rows else [CURVE_HEADER]
    with open(path, "w", newline="") as f:
        csv.writer(f).writerows(kept)
