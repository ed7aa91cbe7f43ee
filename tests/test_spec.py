"""Env specs: everything an env id needs is derived from its ``EnvSpec``.

A toy env, defined here with its scenarios in a temporary folder and its baselines in a
temporary module, is registered from one spec and must pass every check of the
conformance suite that runs on the shipped Gymnasium ids; registration, the scenario
folder, the baselines, the episode length and the vector env must all come from its
spec. The shipped specs are checked against their envs.
"""

from __future__ import annotations

import dataclasses
import importlib
import itertools
import sys
from dataclasses import dataclass, field
from typing import ClassVar

import gymnasium as gym
import numpy as np
import pytest
from gymnasium import spaces

import edgelam.envs  # noqa: F401  (registers the ids)
import tests.test_conformance as conformance
from edgelam import baselines
from edgelam.agents.common import env_dir, is_parallel
from edgelam.envs import registration
from edgelam.envs.core import config as config_module
from edgelam.envs.core.actions import check_discrete
from edgelam.envs.core.config import bounds
from edgelam.envs.core.spec import EnvSpec
from tests.test_virtual_queues import CASES as BUDGET_CASES


@dataclass(frozen=True)
class ToyConfig:
    """Scenario of the toy env."""

    episode_length: int = field(default=1, metadata=bounds(1, 10_000))
    budget_j: float = field(default=0.5, metadata=bounds(0.0, 10.0))
    noise: float = field(default=0.1, metadata=bounds(0.0, 1.0))


TOY = EnvSpec(
    id="edgelam_test/ToyBudget-v0",
    kind="gymnasium",
    entry_point=f"{__name__}:ToyBudgetEnv",
    vector_entry_point=f"{__name__}:toy_vector_env",
    config=f"{__name__}:ToyConfig",
    scenario_dir="toy_folder",  # not the folder the id would give (toy_budget)
    baselines="edgelam_toy_budget_baselines",
    backends=("replay",),
    cost_keys=("virtual_queue",),
)
TOY_SCENARIOS = {
    "default": "episode_length: 6\nbudget_j: 0.4\nnoise: 0.1\n",
    "long": "episode_length: 40\nbudget_j: 0.6\nnoise: 0.2\n",
}
TOY_BASELINES = f"""
from edgelam import baselines


class Idle:
    def predict(self, observation, state=None, episode_start=None, deterministic=True):
        return 0, state


baselines.register({TOY.id!r}, "idle", lambda env: Idle())
"""


class ToyBudgetEnv(gym.Env):
    """Pick a transmit level 0..2 against a random channel gain; energy above the budget queues up.

    latency = 1 / (1 + level * gain) + noise * U(0, 1) s, energy = 0.5 * level J, virtual queue
    Z <- max(Z + energy - budget, 0); reward = -latency - Z. Truncated after ``episode_length``.
    """

    metadata: ClassVar[dict] = {"render_modes": []}

    def __init__(self, scenario: str = "default", backend: str = "replay", **overrides) -> None:
        if backend not in TOY.backends:
            raise ValueError(f"backend: {backend!r} is not one of {TOY.backends}")
        self.config: ToyConfig = TOY.load_config(scenario, overrides)
        self.observation_space = spaces.Box(0.0, 1.0, shape=(2,), dtype=np.float32)
        self.action_space = spaces.Discrete(3)

    def _obs(self) -> np.ndarray:
        return np.array([self._gain, self._t / self.config.episode_length], dtype=np.float32)

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        super().reset(seed=seed)
        self._t, self._queue, self._gain = 0, 0.0, float(self.np_random.uniform())
        return self._obs(), {}

    def step(self, action):
        level = check_discrete(action, self.action_space, "transmit level")
        cfg = self.config
        latency = 1.0 / (1.0 + level * self._gain) + cfg.noise * float(self.np_random.uniform())
        energy = 0.5 * level
        self._queue = max(self._queue + energy - cfg.budget_j, 0.0)
        self._t += 1
        self._gain = float(self.np_random.uniform())
        info = {"latency_s": latency, "energy_j": energy, "virtual_queue": self._queue}
        return self._obs(), float(-latency - self._queue), False, self._t >= cfg.episode_length, info


def toy_vector_env(num_envs: int, **kwargs) -> gym.vector.SyncVectorEnv:
    """The toy's vector entry point: ``num_envs`` copies in a SyncVectorEnv."""
    return gym.vector.SyncVectorEnv([lambda: ToyBudgetEnv(**kwargs) for _ in range(num_envs)])


@pytest.fixture
def toy(tmp_path, monkeypatch):
    """``TOY`` registered from its spec, with its scenarios and baselines module in ``tmp_path``."""
    folder = tmp_path / "configs" / "scenarios" / TOY.scenario_dir
    folder.mkdir(parents=True)
    for name, text in TOY_SCENARIOS.items():
        (folder / f"{name}.yaml").write_text(text)
    monkeypatch.setattr(config_module, "configs_dir", lambda: tmp_path / "configs")
    (tmp_path / f"{TOY.baselines}.py").write_text(TOY_BASELINES)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setattr(baselines, "_REGISTRY", dict(baselines._REGISTRY))
    for table in ("GYM_ENVS", "PARALLEL_ENVS", "_BY_ID"):
        monkeypatch.setattr(registration, table, dict(getattr(registration, table)))
    monkeypatch.setattr(registration, "ENV_IDS", list(registration.ENV_IDS))
    registration.register(TOY)
    yield TOY
    gym.registry.pop(TOY.id, None)
    sys.modules.pop(TOY.baselines, None)


def _conformance_cases() -> list:
    """Every test of tests/test_conformance.py parametrised over its Gymnasium ids, with its other parameters."""
    cases = []
    for name, check in sorted(vars(conformance).items()):
        marks = [m for m in getattr(check, "pytestmark", []) if m.name == "parametrize"]
        if not name.startswith("test_") or not any(
            m.args[0] == "env_id" and list(m.args[1]) == conformance.GYM_IDS for m in marks
        ):
            continue
        combos: list[dict] = [{}]
        for m in marks:
            if m.args[0] == "env_id":
                continue
            names = m.args[0] if isinstance(m.args[0], (list, tuple)) else [n.strip() for n in m.args[0].split(",")]
            values = [v if len(names) > 1 else (v,) for v in m.args[1]]
            combos = [{**c, **dict(zip(names, v, strict=True))} for c, v in itertools.product(combos, values)]
        cases += [pytest.param(check, kwargs, id=f"{name}-{i}") for i, kwargs in enumerate(combos)]
    return cases


CONFORMANCE_CASES = _conformance_cases()


def test_the_conformance_checks_are_found():
    names = {case.values[0].__name__ for case in CONFORMANCE_CASES}
    assert {
        "test_gymnasium_check_env_no_warnings",
        "test_sb3_check_env_no_warnings",
        "test_same_seed_same_trajectory",
        "test_bad_config_raises_value_error",
    } <= names


@pytest.mark.parametrize(("check", "kwargs"), CONFORMANCE_CASES)
def test_toy_env_registered_from_its_spec_passes_the_conformance_suite(toy, check, kwargs):
    check(toy.id, **kwargs)


def test_toy_registration_comes_from_its_spec(toy):
    registered = gym.spec(toy.id)
    assert registered.entry_point == toy.entry_point
    assert registered.vector_entry_point == toy.vector_entry_point
    assert registered.max_episode_steps is None and registered.kwargs == {}
    assert registration.find_spec(toy.id) is toy and toy.id in registration.ENV_IDS
    assert registration.GYM_ENVS[toy.id] == (toy.entry_point, toy.vector_entry_point)
    assert not is_parallel(toy.id)
    registration.register(toy)  # the same spec again: nothing changes
    with pytest.raises(ValueError, match="another spec"):
        registration.register(dataclasses.replace(toy, scenario_dir="elsewhere"))


def test_toy_folder_baselines_and_scenarios_come_from_its_spec(toy):
    assert env_dir(toy.id) == "toy_folder"
    assert toy.scenarios() == ["default", "long"]
    assert baselines.available(toy.id) == ["random", "idle"]
    env = gym.make(toy.id)
    assert baselines.make("idle", env).predict(None)[0] == 0
    assert type(env.unwrapped.config) is toy.config_class


def _length(env: gym.Env) -> int:
    env.reset(seed=0)
    for t in range(1, 1000):
        _, _, terminated, truncated, info = env.step(env.action_space.sample())
        assert set(TOY.cost_keys) <= set(info)
        if terminated or truncated:
            return t
    raise AssertionError("no episode end in 1000 steps")


def test_toy_episode_length_is_the_scenarios_not_a_registered_limit(toy):
    assert toy.episode_length() == 6 and toy.episode_length("long") == 40
    assert _length(gym.make(toy.id)) == 6
    assert _length(gym.make(toy.id, scenario="long")) == 40
    assert _length(gym.make(toy.id, episode_length=9)) == 9  # a registered max_episode_steps=6 would cut it


def test_toy_vector_env_comes_from_its_spec(toy):
    venv = gym.make_vec(toy.id, num_envs=3, vectorization_mode="vector_entry_point", scenario="long")
    obs, _ = venv.reset(seed=1)
    assert obs.shape == (3, 2)
    _, rewards, _, _, infos = venv.step(np.array([0, 1, 2]))
    assert rewards.shape == (3,) and infos["virtual_queue"].shape == (3,)
    venv.close()


@pytest.mark.parametrize("spec", registration.SPECS, ids=lambda s: s.id)
def test_shipped_spec_matches_its_env(spec):
    assert registration.find_spec(spec.id) is spec
    assert spec.scenario_dir and "default" in spec.scenarios()
    assert spec.episode_length() >= 1
    if spec.kind == "gymnasium":
        registered = gym.spec(spec.id)
        assert (registered.entry_point, registered.vector_entry_point) == (spec.entry_point, spec.vector_entry_point)
        assert registered.max_episode_steps is None and spec.id not in registration.PARALLEL_ENVS
        env = gym.make(spec.id).unwrapped
    else:
        assert spec.id not in gym.registry and registration.PARALLEL_ENVS[spec.id] == spec.entry_point
        env = registration.make_parallel(spec.id)
    assert type(env.config) is spec.config_class
    assert env.config.episode_length == spec.episode_length()
    env.close()
    module = importlib.import_module(spec.entry_point.partition(":")[0])
    assert tuple(module.BACKENDS) == spec.backends
    assert len(baselines.available(spec.id)) > 1, "the spec's baselines module registers nothing for the id"


@pytest.mark.parametrize("spec", [s for s in registration.SPECS if s.batched_entry_point], ids=lambda s: s.id)
def test_batched_game_comes_from_its_spec_and_plays_the_parallel_envs_game(spec):
    env = registration.make_parallel(spec.id)
    game = registration.make_batched(spec.id, num_games=3)
    assert type(game).__name__ == spec.batched_entry_point.rpartition(":")[2] and game.num_games == 3
    assert game.possible_agents == env.possible_agents and game.config == env.config
    for agent in env.possible_agents:
        assert game.observation_space(agent) == env.observation_space(agent)
        assert game.action_space(agent) == env.action_space(agent)
    agent = env.possible_agents[0]
    if hasattr(game, "single_action_space"):  # agents of one space: their rows are one vector env
        assert game.single_observation_space == env.observation_space(agent)
        assert game.single_action_space == env.action_space(agent)
    else:  # agents with spaces of their own (a router and an adversary)
        assert any(env.action_space(a) != env.action_space(agent) for a in env.possible_agents)
    env.close()
    if spec.agents_key is not None:  # the key sets the number of agents
        assert len(registration.make_parallel(spec.id, **{spec.agents_key: 7}).possible_agents) == 7


def test_batched_entry_point_is_for_parallel_specs_only():
    with pytest.raises(ValueError, match="batched_entry_point"):
        dataclasses.replace(TOY, batched_entry_point="pkg.module:Game")
    with pytest.raises(ValueError, match="agents_key"):
        dataclasses.replace(TOY, agents_key="num_users")
    with pytest.raises(ValueError, match="has no batched parallel game"):
        registration.make_batched(TOY.id)


def test_registration_lists_each_spec_once_in_order():
    ids = [s.id for s in registration.SPECS]
    assert len(ids) == len(set(ids))
    gym_ids = [s.id for s in registration.SPECS if s.kind == "gymnasium"]
    parallel_ids = [s.id for s in registration.SPECS if s.kind == "pettingzoo"]
    assert registration.ENV_IDS == gym_ids + parallel_ids
    # the agents tests add toy ids to these dicts at run time; every spec's id is in its kind's dict
    assert all(i in registration.GYM_ENVS for i in gym_ids)
    assert all(i in registration.PARALLEL_ENVS for i in parallel_ids)


@pytest.mark.parametrize("case", sorted(BUDGET_CASES))
def test_cost_keys_are_in_info_when_a_budget_is_set(case):
    c = BUDGET_CASES[case]
    spec = registration.find_spec(c.env_id)
    env = gym.make(c.env_id, **c.overrides)
    env.reset(seed=0)
    _, _, _, _, info = env.step(env.action_space.sample())
    env.close()
    assert spec.cost_keys and set(spec.cost_keys) <= set(info)
