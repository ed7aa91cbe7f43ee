"""Helpers shared by training, evaluation and the CLI: env ids, env construction, metrics.

Every edgelam env id is either a Gymnasium id (``gym.make``) or a PettingZoo
parallel id listed in :data:`edgelam.envs.registration.PARALLEL_ENVS`; the
functions here hide the difference so that an env joins the agent side by
registering, nothing else.

Metric conventions an env declares in its ``metadata``:

* ``metadata["info_sums"]``: ``info`` keys whose episode value is the sum over
  steps (totals such as ``energy_j`` or ``tokens``); every other numeric key is
  averaged over the episode's steps. ``cost`` (Safety-Gymnasium's per-step cost,
  :data:`COST_KEY`) is always summed: its episode value is the episode cost.
* ``metadata["info_team"]`` (parallel envs): ``info`` keys every agent reports with
  the same, team-level value (a round's total energy, a shared queue); an episode
  counts them once, not once per agent.
* ``metadata["metric_directions"]``: metric -> ``"max"`` or ``"min"`` (which way
  is better); it overrides :data:`DEFAULT_DIRECTIONS`.
"""

from __future__ import annotations

import contextlib
import importlib
import math
import re
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import torch
from pettingzoo import ParallelEnv

import edgelam.envs  # noqa: F401  (registers every env id)
from edgelam.envs import registration

# reset seed of the first evaluation episode of compare and results (episode i: TEST_SEED + i), the test
# split; tuning validates on other seeds (edgelam.agents.tune.VALIDATION_SEED) and never sees these
TEST_SEED = 10_000
# info key of the per-step cost (Safety-Gymnasium's convention); its episode sum is held to the spec's cost_limit
COST_KEY = "cost"
# row key: 1.0 when the episode's cost is above the scenario's cost_limit, else 0.0
VIOLATION_KEY = "cost_violation"

# metric -> "max" | "min" when the env's metadata does not say
DEFAULT_DIRECTIONS: dict[str, str] = {
    "return": "max",
    "latency_s": "min",
    "energy_j": "min",
    "slo_violated": "min",
    "loss": "min",
    "quality": "max",
    "accepted_tokens": "max",
    "tokens": "max",
    COST_KEY: "min",
    VIOLATION_KEY: "min",
}

# info keys written by wrappers and vector envs, never physical metrics
_WRAPPER_INFO_KEYS = frozenset(
    {"episode", "terminal_observation", "TimeLimit.truncated", "action_mask", "final_info", "final_obs"}
)

ParallelFactory = Callable[..., ParallelEnv]

# constructor keywords of every edgelam env that are not scenario overrides
_CONSTRUCTOR_KEYS = frozenset({"backend", "render_mode"})


def markdown_table(table: Sequence[Sequence[str]]) -> list[str]:
    """The lines of a Markdown table: ``table[0]`` is the header, the other rows follow it."""
    header, *rows = table
    return [
        "| " + " | ".join(header) + " |",
        "|" + "---|" * len(header),
        *("| " + " | ".join(r) + " |" for r in rows),
    ]


def jsonable(value: Any) -> Any:
    """A JSON-ready copy: NaN/inf -> ``None``, tuples -> lists, numpy scalars and paths -> python."""
    if isinstance(value, Mapping):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    if isinstance(value, (np.floating, float)):
        return float(value) if math.isfinite(value) else None
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, Path):
        return str(value)
    return value


def env_name(env_id: str) -> str:
    """Name of an env id without namespace and version (``edgelam/Offload-v0`` -> ``Offload``)."""
    name = env_id.rsplit("/", 1)[-1]
    return re.sub(r"-v\d+$", "", name)


def snake_case(name: str) -> str:
    """CamelCase -> snake_case, keeping acronyms together (``FedFTPower`` -> ``fed_ft_power``)."""
    name = re.sub(r"([A-Z]+)([A-Z][a-z])", r"\1_\2", name)
    name = re.sub(r"([a-z\d])([A-Z])", r"\1_\2", name)
    return name.replace("-", "_").lower()


def env_dir(env_id: str) -> str:
    """Folder name of an env under ``configs/scenarios`` (and of its runs).

    The ``scenario_dir`` of the env's spec (``edgelam/FedFTPower-v0`` -> ``fed_ft_power``);
    for an id without a spec (a plain Gymnasium id, a test env) derived from the id
    (``lab/MyTask-v1`` -> ``my_task``).
    """
    spec = registration.find_spec(env_id)
    return spec.scenario_dir if spec is not None else snake_case(env_name(env_id))


def is_parallel(env_id: str) -> bool:
    """Whether ``env_id`` names a PettingZoo parallel env."""
    return env_id in registration.PARALLEL_ENVS


def is_adversarial(agents: Sequence[str] | None) -> bool:
    """Whether a parallel env's agents are [protagonist, "adversary"] (a zero-sum game, trained by RARL)."""
    return agents is not None and len(agents) == 2 and agents[1] == "adversary"


def check_env_id(env_id: str) -> None:
    """Raise ``ValueError`` unless ``env_id`` is a Gymnasium or edgelam parallel id."""
    if is_parallel(env_id) or env_id in gym.registry:
        return
    known = ", ".join(registration.ENV_IDS) or "none"
    raise ValueError(f"unknown env id {env_id!r} (edgelam ids: {known}; or any registered Gymnasium id)")


def env_kwargs_for(scenario: str, env_kwargs: Mapping[str, Any] | None) -> dict[str, Any]:
    """Constructor kwargs: ``env_kwargs`` plus ``scenario`` when it is not ``"default"``.

    ``"default"`` is left out so that envs without scenarios (CartPole, test envs)
    take the same call; every edgelam env defaults to its ``"default"`` scenario.
    """
    kwargs = dict(env_kwargs or {})
    if scenario != "default":
        kwargs["scenario"] = scenario
    return kwargs


def make_env(env_id: str, scenario: str = "default", env_kwargs: Mapping[str, Any] | None = None) -> gym.Env:
    """``gym.make(env_id, scenario=..., **env_kwargs)`` with user errors as ``ValueError``."""
    check_env_id(env_id)
    kwargs = env_kwargs_for(scenario, env_kwargs)
    try:
        return gym.make(env_id, **kwargs)
    except TypeError as exc:
        raise ValueError(f"{env_id}: bad arguments {kwargs}: {exc}") from exc


def parallel_factory(env_id: str) -> ParallelFactory:
    """The factory registered for a parallel env id (``"module:function"`` or a callable)."""
    entry: str | ParallelFactory = registration.PARALLEL_ENVS[env_id]
    if callable(entry):
        return entry
    module, _, attr = entry.partition(":")
    return getattr(importlib.import_module(module), attr)


def make_parallel(
    env: str | ParallelFactory, scenario: str = "default", env_kwargs: Mapping[str, Any] | None = None
) -> ParallelEnv:
    """Build a PettingZoo parallel env from a registered id or a factory."""
    if isinstance(env, str):
        check_env_id(env)
        factory = parallel_factory(env)
    else:
        factory = env
    kwargs = env_kwargs_for(scenario, env_kwargs)
    try:
        return factory(**kwargs)
    except TypeError as exc:
        raise ValueError(f"{env}: bad arguments {kwargs}: {exc}") from exc


def metric_directions(metadata: Mapping[str, Any]) -> dict[str, str]:
    """:data:`DEFAULT_DIRECTIONS` updated with the env's ``metadata["metric_directions"]``."""
    directions = dict(DEFAULT_DIRECTIONS)
    declared = metadata.get("metric_directions", {}) or {}
    for metric, direction in declared.items():
        if direction not in ("max", "min"):
            raise ValueError(f"metric_directions[{metric!r}] must be 'max' or 'min', got {direction!r}")
        directions[metric] = direction
    return directions


def info_sums(metadata: Mapping[str, Any]) -> frozenset[str]:
    """Info keys summed over an episode (``metadata["info_sums"]`` and :data:`COST_KEY`); others are averaged."""
    return frozenset(metadata.get("info_sums", ()) or ()) | {COST_KEY}


def info_team(metadata: Mapping[str, Any]) -> frozenset[str]:
    """Info keys of a parallel env that every agent reports with the team's value (``metadata["info_team"]``)."""
    return frozenset(metadata.get("info_team", ()) or ())


def cost_limit(
    env_id: str | ParallelFactory, scenario: str = "default", env_kwargs: Mapping[str, Any] | None = None
) -> float | None:
    """The per-episode limit of ``info["cost"]``: the spec's ``cost_limit(scenario, **overrides)``.

    ``env_kwargs`` minus the constructor's ``backend`` / ``render_mode`` are the overrides.
    ``None`` where the scenario has no budget, and for an id without an edgelam spec or a factory.
    """
    spec = registration.find_spec(env_id) if isinstance(env_id, str) else None
    if spec is None:
        return None
    overrides = {k: v for k, v in (env_kwargs or {}).items() if k not in _CONSTRUCTOR_KEYS}
    return spec.cost_limit(scenario, **overrides)


def with_cost_violation(row: dict[str, float], limit: float | None) -> dict[str, float]:
    """``row`` with :data:`VIOLATION_KEY` (1.0 if its ``cost`` is above ``limit``, else 0.0) where there is a limit."""
    if limit is not None and COST_KEY in row:
        row[VIOLATION_KEY] = float(row[COST_KEY] > limit)
    return row


def numeric_info(info: Mapping[str, Any]) -> dict[str, float]:
    """The scalar numeric entries of a step's ``info`` (bools as 0/1); others are skipped."""
    out: dict[str, float] = {}
    for key, value in info.items():
        if key in _WRAPPER_INFO_KEYS:
            continue
        if isinstance(value, (bool, int, float, np.bool_, np.integer, np.floating)):
            out[key] = float(value)
        elif isinstance(value, np.ndarray) and value.ndim == 0 and np.issubdtype(value.dtype, np.number):
            out[key] = float(value)
    return out


def action_mask(env: gym.Env | None, observation: Any, info: Mapping[str, Any]) -> np.ndarray | None:
    """The current action mask: ``env.action_masks()``, else ``info`` or the observation's ``action_mask``."""
    if env is not None:
        try:
            return np.asarray(env.get_wrapper_attr("action_masks")(), dtype=bool)
        except AttributeError:
            pass
    if "action_mask" in info:
        return np.asarray(info["action_mask"], dtype=bool)
    if isinstance(observation, Mapping) and "action_mask" in observation:
        return np.asarray(observation["action_mask"], dtype=bool)
    return None


class InfoActionMasks(gym.Wrapper):
    """Exposes ``action_masks()`` (what sb3-contrib's MaskablePPO calls) for an env
    that publishes its mask in ``info["action_mask"]`` or ``obs["action_mask"]``."""

    def __init__(self, env: gym.Env) -> None:
        super().__init__(env)
        self._mask: np.ndarray | None = None

    def _update(self, observation: Any, info: Mapping[str, Any]) -> None:
        mask = action_mask(None, observation, info)
        if mask is not None:
            self._mask = mask
        elif self._mask is None:
            raise ValueError(
                f"{self.spec.id if self.spec else self.env}: no action mask "
                "(neither action_masks(), info['action_mask'] nor obs['action_mask'])"
            )

    def reset(self, **kwargs: Any) -> tuple[Any, dict]:
        """Reset and read the mask."""
        observation, info = self.env.reset(**kwargs)
        self._mask = None
        self._update(observation, info)
        return observation, info

    def step(self, action: Any) -> tuple[Any, float, bool, bool, dict]:
        """Step and read the mask."""
        observation, reward, terminated, truncated, info = self.env.step(action)
        self._update(observation, info)
        return observation, reward, terminated, truncated, info

    def action_masks(self) -> np.ndarray:
        """The mask of the current state (bool, flat over the action dimensions)."""
        if self._mask is None:
            raise ValueError("action_masks() called before reset()")
        return self._mask


def with_action_masks(env: gym.Env) -> gym.Env:
    """``env`` if it has ``action_masks()``, else wrapped in :class:`InfoActionMasks`."""
    try:
        env.get_wrapper_attr("action_masks")
    except AttributeError:
        return InfoActionMasks(env)
    return env


@contextlib.contextmanager
def torch_threads(n: int) -> Iterator[None]:
    """Run the block with ``n`` torch CPU threads (small MLPs are fastest on one)."""
    previous = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(previous)
