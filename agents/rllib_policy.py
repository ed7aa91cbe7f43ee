"""A policy trained by RLlib behind SB3's ``predict``, and the loading of an RLlib run folder.

:class:`RLlibPolicy` wraps one RLModule with ``predict(obs, state, episode_start,
deterministic)``, so :func:`edgelam.agents.evaluate.evaluate` runs it through the same
loop as SB3 models and baselines (``deterministic=True``: the mode of the action
distribution, what RLlib does with ``explore=False``; Box actions are unsquashed and
clipped to the space as RLlib's env runners do). Runs are written by
:func:`edgelam.agents.rllib_engine.train_rllib`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import torch

from edgelam.agents.common import is_parallel
from edgelam.agents.ray_engine import require_ray
from edgelam.agents.runs import read_meta

CHECKPOINT = "checkpoint"
SHARED_MODULE = "shared"
SINGLE_MODULE = "default_policy"
# where an RLModule lives inside an Algorithm checkpoint
_MODULE_PATH = ("learner_group", "learner", "rl_module")


class RLlibPolicy:
    """An RLlib RLModule behind SB3's ``predict`` (what every edgelam evaluation loop calls).

    Args:
        module: a trained RLModule (``forward_inference`` / ``forward_exploration``).
        action_space: the action space of the agent it acts for.
    """

    def __init__(self, module: Any, action_space: gym.Space) -> None:
        self.module = module
        self.action_space = action_space

    def predict(
        self,
        observation: Any,
        state: Any = None,
        episode_start: np.ndarray | None = None,
        deterministic: bool = True,
    ) -> tuple[np.ndarray, Any]:
        """The module's action for one observation (the distribution's mode when deterministic)."""
        from ray.rllib.utils.spaces.space_utils import unsquash_action

        obs = torch.as_tensor(np.asarray(observation, dtype=np.float32)[None])
        with torch.no_grad():
            if deterministic:
                out = self.module.forward_inference({"obs": obs})
                dist_cls = self.module.get_inference_action_dist_cls()
            else:
                out = self.module.forward_exploration({"obs": obs})
                dist_cls = self.module.get_exploration_action_dist_cls()
            dist = dist_cls.from_logits(out["action_dist_inputs"])
            if deterministic:
                dist = dist.to_deterministic()
            action = dist.sample()[0].numpy()
        return unsquash_action(action, self.action_space), state


def is_rllib_run(folder: str | Path) -> bool:
    """Whether ``folder`` holds a run written by :func:`train_rllib`."""
    meta = read_meta(Path(folder)) if Path(folder).is_dir() else None
    return bool(meta and meta.get("engine") == "rllib")


def load_rllib_policy(folder: str | Path) -> RLlibPolicy | dict[str, RLlibPolicy]:
    """The policy of a run written by :func:`train_rllib`, ready for ``evaluate``.

    Returns:
        One :class:`RLlibPolicy` for a Gymnasium env or a shared policy (every agent
        uses it), else agent -> :class:`RLlibPolicy` (per-agent policies).

    Raises:
        ValueError: if the folder holds no RLlib run, or Ray is not installed.
    """
    folder = Path(folder)
    if not is_rllib_run(folder):
        raise ValueError(f"no RLlib run in {folder} (no meta.json with engine 'rllib')")
    require_ray()
    from ray.rllib.core.rl_module.rl_module import RLModule

    meta = read_meta(folder)
    modules: dict[str, str] = meta["modules"]
    root = folder / CHECKPOINT
    for part in _MODULE_PATH:
        root = root / part
    loaded = {m: RLModule.from_checkpoint(str((root / m).resolve())) for m in set(modules.values())}
    for module in loaded.values():
        module.eval()
    if not is_parallel(meta["env_id"]):
        module = loaded[SINGLE_MODULE]
        return RLlibPolicy(module, module.action_space)
    policies = {agent: RLlibPolicy(loaded[m], loaded[m].action_space) for agent, m in modules.items()}
    if len(loaded) == 1:
        return next(iter(policies.values()))
    return policies
