"""Live backend of EdgeModelCache-v0: the model that serves a request really runs on its held-out window."""

from __future__ import annotations

import numpy as np


class LiveToolboxQuality:
    """Teacher-forced top-1 accuracy of real runs of the toolbox's models on the requests' windows.

    Calls :func:`edgelam.envs.lam.toolbox.window_top1` -- the function that records the shipped
    per-window profile the replay backend reads -- on one model and one window. Each model is built
    on first use (:func:`~edgelam.envs.lam.toolbox.toolbox_model`: a shipped general model, or ``edge``
    with a task's shipped LoRA adapter) and kept.

    Args:
        tables: the scenario's :class:`~edgelam.envs.model_cache.dynamics.Tables` (its models and the
            held-out window each column of ``top1`` is).
        tasks: the scenario's tasks (``config.requests.tasks``).
    """

    def __init__(self, tables, tasks: tuple[str, ...]) -> None:
        from edgelam.envs.lam.toolbox import load_heldout

        self.names = tables.names
        heldout = load_heldout()
        window_task = np.repeat(np.arange(len(tables.win_count)), tables.win_count)
        self.windows = np.stack([heldout[tasks[j]][i] for j, i in zip(window_task, tables.window_index, strict=True)])
        self._models: dict[int, object] = {}
        self.runs = 0  # real model executions so far

    def top1(self, model: int, window: int) -> float:
        """Top-1 accuracy of catalogue model ``model`` on scenario window ``window``."""
        from edgelam.envs.lam.toolbox import toolbox_model, window_top1

        if model not in self._models:
            self._models[model] = toolbox_model(self.names[model]).model
        self.runs += 1
        return float(window_top1(self._models[model], self.windows[window : window + 1])[0])

    def serving_top1(self, action: int, window: int) -> float:
        """The quality of ``action`` (``serve * (M + 1) + op``) on ``window``: its serving model's top-1
        accuracy, the ``cloud`` model's for a forwarded request."""
        m = len(self.names)
        serve = action // (m + 1)
        return self.top1(m - 1 if serve == m else serve, window)
