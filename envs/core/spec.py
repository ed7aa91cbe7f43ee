"""What edgelam knows about one env id: its :class:`EnvSpec`.

Each env package holds a ``spec.py`` whose ``SPECS`` lists the specs of its ids (one,
or two for FedFT), and :data:`edgelam.envs.registration.SPEC_MODULES` lists those
modules. Registration, ``edgelam.baselines.available``, the CLI (``edgelam list``,
the run folders) and the conformance and fuzz tests read the specs; no other table is
keyed by env id or scenario folder.

A spec names code by ``"module:attribute"`` strings, as Gymnasium's entry points do,
so that building the list of specs imports no env, no config and no torch.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from edgelam.envs.core.config import load_scenario, scenario_names, scenario_test_overrides

Kind = Literal["gymnasium", "pettingzoo"]
KINDS: tuple[str, ...] = ("gymnasium", "pettingzoo")


def load_attribute(path: str) -> Any:
    """The object that ``"package.module:attribute"`` names (imported on call)."""
    module, sep, attribute = path.partition(":")
    if not sep or not module or not attribute:
        raise ValueError(f"{path!r} is not of the form 'package.module:attribute'")
    return getattr(importlib.import_module(module), attribute)


@dataclass(frozen=True)
class EnvSpec:
    """One env id and everything derived from it.

    Attributes:
        id: the public id, ``namespace/Name-vN``.
        kind: ``"gymnasium"`` (registered with ``gymnasium.register``) or ``"pettingzoo"``
            (a parallel env, built by ``edgelam.envs.make_parallel``).
        entry_point: ``"module:attribute"`` of the env class (Gymnasium) or of the factory
            returning a ``ParallelEnv`` (PettingZoo).
        config: ``"module:Class"`` of the scenario dataclass.
        scenario_dir: the folder of the env's scenarios under ``configs/scenarios/``; also
            names its run folders.
        baselines: module that registers the env's baselines on import, or ``None``.
        vector_entry_point: ``"module:attribute"`` of the batched vector env, or ``None``
            (Gymnasium ids).
        batched_entry_point: ``"module:attribute"`` of the batched parallel game, B games of
            N agents in arrays (PettingZoo ids; built by ``edgelam.envs.registration.make_batched``
            with ``num_games=``), or ``None``.
        agents_key: the scenario key that sets the number of agents of a PettingZoo env
            (``num_users``), or ``None`` where the agents are fixed; ``edgelam bench`` scales it.
        backends: the values the constructor takes for ``backend=``, the default first.
        cost_keys: ``info`` keys of the env's long-term budget (its virtual queue), reported
            when the scenario sets a budget; empty for an env without one. Such an env also
            reports the budgeted quantity of each step in ``info["cost"]`` (Safety-Gymnasium's
            convention), and :meth:`cost_limit` gives its per-episode limit.

    The id is registered without ``max_episode_steps``: each env truncates itself after
    its scenario's ``episode_length``, so an ``episode_length`` override is the episode
    length. :meth:`episode_length` reads it from a scenario.
    """

    id: str
    kind: Kind
    entry_point: str
    config: str
    scenario_dir: str
    baselines: str | None = None
    vector_entry_point: str | None = None
    batched_entry_point: str | None = None
    agents_key: str | None = None
    backends: tuple[str, ...] = ("replay", "live")
    cost_keys: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"EnvSpec {self.id}: kind {self.kind!r} is not one of {KINDS}")
        if "/" not in self.id or "-v" not in self.id.rsplit("/", 1)[1]:
            raise ValueError(f"EnvSpec {self.id!r}: an id is 'namespace/Name-vN'")
        for name in ("entry_point", "config", "vector_entry_point", "batched_entry_point"):
            value = getattr(self, name)
            if value is not None and ":" not in value:
                raise ValueError(f"EnvSpec {self.id}: {name} {value!r} is not 'package.module:attribute'")
        if self.kind == "pettingzoo" and self.vector_entry_point is not None:
            raise ValueError(f"EnvSpec {self.id}: a PettingZoo spec has no Gymnasium vector_entry_point")
        if self.kind == "gymnasium" and (self.batched_entry_point is not None or self.agents_key is not None):
            raise ValueError(f"EnvSpec {self.id}: a Gymnasium spec has no batched_entry_point (use vector_entry_point) "
                             f"and no agents_key")
        if not self.scenario_dir or Path(self.scenario_dir).name != self.scenario_dir:
            raise ValueError(f"EnvSpec {self.id}: scenario_dir {self.scenario_dir!r} is not one folder name")
        if not self.backends:
            raise ValueError(f"EnvSpec {self.id}: backends is empty")

    @property
    def config_class(self) -> type:
        """The scenario dataclass (its module is imported on first use)."""
        return load_attribute(self.config)

    def load_config(self, scenario: str | Path = "default", overrides: dict[str, Any] | None = None) -> Any:
        """Scenario ``scenario`` (a shipped name or a YAML path) with dotted ``overrides``, validated."""
        return load_scenario(self.config_class, self.scenario_dir, scenario, overrides)

    def scenarios(self) -> list[str]:
        """Names of the shipped scenarios (``configs/scenarios/<scenario_dir>/*.yaml``)."""
        return scenario_names(self.scenario_dir)

    def episode_length(self, scenario: str | Path = "default") -> int:
        """Steps after which the env truncates, as scenario ``scenario`` sets it."""
        return int(self.load_config(scenario).episode_length)

    def test_overrides(self, scenario: str | Path = "default") -> dict[str, Any]:
        """The dotted overrides that shift scenario ``scenario``'s test split (its YAML's ``test`` block).

        Empty where the scenario has none: its test split differs from training by the seeds only.
        """
        return scenario_test_overrides(self.scenario_dir, scenario)

    def cost_limit(self, scenario: str | Path = "default", **overrides: Any) -> float | None:
        """The per-episode cost limit of scenario ``scenario`` with dotted ``overrides``, or ``None``.

        Safety-Gymnasium's convention: an episode keeps the env's long-term budget when the sum
        of its ``info["cost"]`` is at most this limit. The limit is the budget b of the env's
        virtual queue Z <- max(Z + cost - b, 0) summed over a full episode (b x
        ``episode_length`` for a budget per step; the env's class docstring says how a budget
        per token or per task adds up), in the cost's unit (J, or USD for a cloud-spend
        budget); the scenario config's ``cost_limit()`` computes it from its own values.
        ``None`` where there is no budget: an env without ``cost_keys`` and a scenario that
        disables its budget (an unset budget, or MicroserviceRouting-v0 without migration).
        An episode cut short (an empty battery, a vector env's ``max_episode_steps``) is held
        to the same limit.
        """
        if not self.cost_keys:
            return None
        limit = self.load_config(scenario, overrides).cost_limit()
        return None if limit is None else float(limit)
