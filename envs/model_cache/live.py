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
        names: the catalogue's models (:func:`edgelam.envs.model_cache.config.model_names`), the
            index a step's serving model is given by.
        tasks: the scenario's tasks; ``window_index[w]`` is window w's index in its task's held-out set.
    """

    def __init__(self, names: tuple[str, ...], tasks: tuple[str, ...], window_task: np.ndarray,
                 window_index: np.ndarray) -> None:
        from edgelam.envs.lam.toolbox import load_heldout

        self.names = names
        heldout = load_heldout()
        self.windows = np.stack([heldout[tasks[j]][i] for j, i in zip(window_task, window_index, strict=True)])
        self._models: dict[int, object] = {}
        self.runs = 0  # real model executions so far

    def top1(self, model: int, window: int) -> float:
        """Top-1 accuracy of catalogue model ``model`` on scenario window ``window``."""
        from edgelam.envs.lam.toolbox import toolbox_model, window_top1

        if model not in self._models:
            self._models[model] = toolbox_model(self.names[model]).model
        self.runs += 1
        return float(window_top1(self._models[model], self.windows[window : window + 1])[0])
