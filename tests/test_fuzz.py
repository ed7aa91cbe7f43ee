"""Property-based fuzzing (Hypothesis) of every registered env id, replay backend.

* Scenario overrides: valid ones are drawn from the ``bounds`` / ``choices`` metadata of the
  scenario dataclasses (walked field by field, on a random shipped scenario); the env must
  build, or reject a cross-field combination with ``ValueError``, and a short random
  rollout must keep rewards, observations and the physical metrics in ``info`` finite.
  Invalid ones (out of range, not finite, not an allowed choice, wrong type, unknown key,
  unknown catalog name) must raise ``ValueError`` naming the key.
* Action sequences: any sequence of in-space actions keeps observations finite and inside
  the observation space, rewards finite.

Runs derandomized (same examples every run, so CI is stable); set
``EDGELAM_FUZZ_RANDOM=1`` to explore new examples and ``EDGELAM_FUZZ_SCALE=10`` for ten
times as many.
"""

from __future__ import annotations

import dataclasses
import math
import os
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass
from functools import cache
from typing import Any, Union

import gymnasium as gym
import numpy as np
import pytest
from gymnasium import spaces
from hypothesis import HealthCheck, given, note, reject, settings
from hypothesis import strategies as st

import edgelam.envs  # noqa: F401  (registers the ids)
from edgelam.envs.core.hardware import load_hardware_catalog
from edgelam.envs.core.model_cards import load_model_cards
from edgelam.envs.lam import SHIPPED_MODELS
from edgelam.envs.registration import ENV_IDS, GYM_ENVS, find_spec, make_parallel

IDS = sorted(ENV_IDS)
ROLLOUT_STEPS = 12  # random steps after each valid scenario override
OPEN_HIGH = 1e12  # upper end drawn for a field bounded below only
# str fields whose value must name an entry of a catalog
CARD_FIELDS = ("model_card", "target_card", "backbone_card", "card")
HARDWARE_FIELDS = ("device_hw", "edge_hw", "hardware")
MODEL_FIELDS = ("executed_model",)
# keyword arguments of gym.make and of the env constructors: never scenario keys
RESERVED = frozenset({"id", "scenario", "backend", "render_mode", "max_episode_steps", "autoreset",
                      "apply_api_compatibility", "disable_env_checker", "kwargs"})
# ValueError messages of the per-field checks of edgelam.envs.core.config (not cross-field ones)
PER_FIELD_ERRORS = ("is out of range (allowed", "is not allowed (allowed", "unknown config key", ": expected a")

_SCALE = float(os.environ.get("EDGELAM_FUZZ_SCALE", "1"))
_RANDOM = os.environ.get("EDGELAM_FUZZ_RANDOM", "") not in ("", "0")


def fuzz(max_examples: int) -> settings:
    """Hypothesis settings of this module (no deadline: env construction varies with the scenario)."""
    return settings(
        max_examples=max(1, int(max_examples * _SCALE)),
        deadline=None,
        derandomize=not _RANDOM,
        database=None if not _RANDOM else settings.default.database,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
        print_blob=True,
    )


# -- building and stepping -----------------------------------------------------------------------


def make(env_id: str, **kwargs: Any):
    """Gymnasium env through ``gym.make``, PettingZoo env through ``make_parallel`` (replay backend)."""
    if env_id in GYM_ENVS:
        return gym.make(env_id, **kwargs)
    return make_parallel(env_id, **kwargs)


def check_finite_info(info: Mapping[str, Any], where: str) -> None:
    """Every number in ``info`` (scalars and arrays) is finite."""
    for key, value in info.items():
        if isinstance(value, (bool, np.bool_, str)) or value is None:
            continue
        arr = np.asarray(value)
        if arr.dtype.kind in "fiuc":
            assert np.all(np.isfinite(arr)), f"{where}: info[{key!r}] = {value!r} is not finite"


def check_obs(space: spaces.Space, obs: Any, where: str) -> None:
    """``obs`` is finite and inside ``space``."""
    flat = spaces.flatten(space, obs) if not isinstance(space, spaces.Box) else np.asarray(obs)
    assert np.all(np.isfinite(flat)), f"{where}: observation not finite: {obs!r}"
    if not space.contains(obs):
        arr = np.asarray(flat)
        if isinstance(space, spaces.Box):
            bad = np.flatnonzero((arr < space.low.ravel()) | (arr > space.high.ravel()))
            detail = f"entries {bad.tolist()} = {arr[bad].tolist()} outside [{space.low.ravel()[bad].tolist()}, " \
                     f"{space.high.ravel()[bad].tolist()}]"
        else:
            detail = repr(obs)
        raise AssertionError(f"{where}: observation outside {space}: {detail}")


def check_reward(reward: Any, where: str) -> None:
    assert isinstance(reward, float) and math.isfinite(reward), f"{where}: reward {reward!r}"


def rollout_gym(env: gym.Env, seed: int, actions: list | None, steps: int) -> None:
    """Reset with ``seed`` and step ``actions`` (or ``steps`` seeded random ones); check every output."""
    obs, info = env.reset(seed=seed)
    check_obs(env.observation_space, obs, "reset")
    check_finite_info(info, "reset")
    if actions is None:
        env.action_space.seed(seed)
        actions = [env.action_space.sample() for _ in range(steps)]
    for t, action in enumerate(actions):
        obs, reward, terminated, truncated, info = env.step(action)
        where = f"step {t} (action {action!r})"
        check_obs(env.observation_space, obs, where)
        check_reward(reward, where)
        check_finite_info(info, where)
        if terminated or truncated:
            obs, info = env.reset()
            check_obs(env.observation_space, obs, f"reset after step {t}")


def rollout_parallel(env: Any, seed: int, actions: list | None, steps: int) -> None:
    """The PettingZoo version of :func:`rollout_gym` (joint actions over ``possible_agents``)."""
    obs, infos = env.reset(seed=seed)
    for agent, o in obs.items():
        check_obs(env.observation_space(agent), o, f"reset, {agent}")
    if actions is None:
        for i, agent in enumerate(env.possible_agents):
            env.action_space(agent).seed(seed + i)
        actions = [{a: env.action_space(a).sample() for a in env.possible_agents} for _ in range(steps)]
    for t, joint in enumerate(actions):
        obs, rewards, _, _, infos = env.step({a: joint[a] for a in env.agents})
        for agent in obs:
            where = f"step {t}, {agent} (action {joint[agent]!r})"
            check_obs(env.observation_space(agent), obs[agent], where)
            check_reward(rewards[agent], where)
            check_finite_info(infos[agent], where)
        if not env.agents:
            obs, _ = env.reset()
            for agent, o in obs.items():
                check_obs(env.observation_space(agent), o, f"reset after step {t}, {agent}")


def rollout(env_id: str, env: Any, seed: int, actions: list | None = None, steps: int = ROLLOUT_STEPS) -> None:
    try:
        if env_id in GYM_ENVS:
            rollout_gym(env, seed, actions, steps)
        else:
            rollout_parallel(env, seed, actions, steps)
    finally:
        env.close()


# -- the scenario dataclasses as leaves with their metadata --------------------------------------


@dataclass(frozen=True)
class Leaf:
    """One non-dataclass field of a scenario dataclass, by its dotted override key."""

    key: str
    tp: Any  # the field type with ``| None`` removed
    optional: bool
    meta: Mapping[str, Any]
    default: Any  # its value in the env's default scenario

    @property
    def name(self) -> str:
        return self.key.rsplit(".", 1)[-1]


def _leaves(cls: type, value: Any, prefix: str = "") -> list[Leaf]:
    hints = typing.get_type_hints(cls)
    out: list[Leaf] = []
    for f in dataclasses.fields(cls):
        if not f.init:
            continue
        tp, optional = hints[f.name], False
        if typing.get_origin(tp) in (Union, types.UnionType):
            args = [a for a in typing.get_args(tp) if a is not type(None)]
            optional, tp = len(args) < len(typing.get_args(tp)), args[0]
        v = getattr(value, f.name)
        if dataclasses.is_dataclass(tp):
            out += _leaves(tp, v if v is not None else tp(), f"{prefix}{f.name}.")
        else:
            out.append(Leaf(f"{prefix}{f.name}", tp, optional, f.metadata, v))
    return out


def _sections(cls: type, prefix: str = "") -> dict[str, frozenset[str]]:
    """Dotted section prefix ("" = top level) -> the field names allowed there."""
    hints = typing.get_type_hints(cls)
    out = {prefix: frozenset(f.name for f in dataclasses.fields(cls) if f.init)}
    for f in dataclasses.fields(cls):
        tp = hints[f.name]
        if typing.get_origin(tp) in (Union, types.UnionType):
            tp = next(a for a in typing.get_args(tp) if a is not type(None))
        if dataclasses.is_dataclass(tp):
            out.update(_sections(tp, f"{prefix}{f.name}."))
    return out


@cache
def env_info(env_id: str) -> tuple[list[Leaf], dict[str, frozenset[str]], list[str]]:
    """(leaves, sections, shipped scenarios that build on the replay backend) of an env."""
    env = make(env_id)
    cfg = env.unwrapped.config
    env.close()
    return _leaves(type(cfg), cfg), _sections(type(cfg)), [s for s in find_spec(env_id).scenarios()
                                                           if _builds_on_replay(env_id, s)]


def _builds_on_replay(env_id: str, scenario: str) -> bool:
    """False for a shipped scenario that needs another backend (it says so with a ValueError)."""
    try:
        make(env_id, scenario=scenario).close()
    except ValueError:
        return False
    return True


def _catalog(leaf: Leaf) -> tuple[str, ...] | None:
    if leaf.tp is not str or "choices" in leaf.meta:
        return None
    if leaf.name in CARD_FIELDS:
        return tuple(load_model_cards())
    if leaf.name in HARDWARE_FIELDS:
        return tuple(load_hardware_catalog())
    if leaf.name in MODEL_FIELDS:
        return SHIPPED_MODELS
    return None


def _bounds(meta: Mapping[str, Any]) -> tuple[float | None, float | None]:
    return meta.get("bounds", (None, None))


def _scalar_valid(tp: Any, meta: Mapping[str, Any]) -> st.SearchStrategy | None:
    if "choices" in meta:
        return st.sampled_from(meta["choices"])
    if tp is bool:
        return st.booleans()
    low, high = _bounds(meta)
    if tp is int and "bounds" in meta:
        low = -(10**6) if low is None else low
        return st.integers(low, 10**6 if high is None else high)
    if tp is float and "bounds" in meta:
        low = -OPEN_HIGH if low is None else low
        return st.floats(low, OPEN_HIGH if high is None else high, allow_nan=False, allow_infinity=False)
    return None


def valid_strategy(leaf: Leaf) -> st.SearchStrategy | None:
    """In-range values of one field from its metadata (None: the field is kept at its scenario value)."""
    if typing.get_origin(leaf.tp) is tuple:
        elem = typing.get_args(leaf.tp)[0]
        inner = _scalar_valid(elem, leaf.meta)
        if inner is None:
            return None
        n = leaf.meta.get("length", len(leaf.default))
        values = st.lists(inner, min_size=n, max_size=n)
        if "length" in leaf.meta and n == 2:
            values = values.map(sorted)  # a (min, max) range
        return values
    catalog = _catalog(leaf)
    strategy = st.sampled_from(catalog) if catalog else _scalar_valid(leaf.tp, leaf.meta)
    if strategy is not None and leaf.optional:
        strategy = st.none() | strategy
    return strategy


@st.composite
def valid_overrides(draw, env_id: str) -> tuple[str, dict[str, Any]]:
    leaves, _, scenarios = env_info(env_id)
    drawable = [leaf for leaf in leaves if valid_strategy(leaf) is not None]
    chosen = draw(st.lists(st.sampled_from(drawable), min_size=1, max_size=6, unique_by=lambda leaf: leaf.key))
    return draw(st.sampled_from(scenarios)), {leaf.key: draw(valid_strategy(leaf)) for leaf in chosen}


def _not_a_float(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return True
    return False


def _wrong_type(leaf: Leaf) -> st.SearchStrategy:
    origin = typing.get_origin(leaf.tp)
    if origin is tuple:
        return st.sampled_from([5, 2.5, "range", True, {"a": 1}])
    if origin is dict:
        return st.sampled_from([5, "hosts", [1, 2]])
    if leaf.tp is bool:
        return st.sampled_from([0, 1, "yes", 1.5, [True]])
    if leaf.tp is int:
        return st.sampled_from(["three", 1.5, True, [1], {"a": 1}])
    if leaf.tp is float:
        return st.text(max_size=8).filter(_not_a_float) | st.sampled_from([True, [1.0], {"a": 1}])
    return st.sampled_from([5, 2.5, True, ["a"], {"a": 1}])  # str


def _out_of_range(tp: Any, low: float | None, high: float | None) -> st.SearchStrategy:
    options = []
    if tp is int:
        if low is not None:
            options.append(st.integers(max_value=math.ceil(low) - 1))
        if high is not None:
            options.append(st.integers(min_value=math.floor(high) + 1))
    else:
        finite = {"allow_nan": False, "allow_infinity": False}
        if low is not None:
            options.append(st.floats(max_value=low, exclude_max=True, **finite).filter(lambda x: x < low))
        if high is not None:
            options.append(st.floats(min_value=high, exclude_min=True, **finite).filter(lambda x: x > high))
    return st.one_of(options)


def invalid_cases(leaves: list[Leaf], sections: dict[str, frozenset[str]]) -> st.SearchStrategy:
    """(kind, override key, value, text the ValueError must contain) for one bad override."""
    cases: list[st.SearchStrategy] = []
    for leaf in leaves:
        key = leaf.key
        cases.append(st.tuples(st.just("wrong type"), st.just(key), _wrong_type(leaf), st.just(key)))
        is_tuple = typing.get_origin(leaf.tp) is tuple
        elem = typing.get_args(leaf.tp)[0] if is_tuple else leaf.tp
        low, high = _bounds(leaf.meta)
        if elem in (int, float) and "choices" not in leaf.meta and (low is not None or high is not None):
            bad = _out_of_range(elem, low, high)
            if is_tuple:
                n = leaf.meta.get("length", len(leaf.default))
                good = st.just(list(leaf.default))
                bad = st.tuples(good, st.integers(0, n - 1), bad).map(lambda t: [*t[0][: t[1]], t[2], *t[0][t[1] + 1:]])
            cases.append(st.tuples(st.just("out of range"), st.just(key), bad, st.just(key)))
        if elem is float and not is_tuple and "choices" not in leaf.meta:
            cases.append(st.tuples(st.just("not finite"), st.just(key),
                                   st.sampled_from([math.nan, math.inf, -math.inf]), st.just(key)))
        if "choices" in leaf.meta and not is_tuple:
            allowed = leaf.meta["choices"]
            if leaf.tp is str:
                bad = st.text(min_size=1, max_size=10).filter(lambda s, a=allowed: s not in a)
            elif leaf.tp is int:
                bad = st.integers().filter(lambda v, a=allowed: v not in a)
            else:
                bad = st.floats(allow_nan=False, allow_infinity=False).filter(lambda v, a=allowed: v not in a)
            cases.append(st.tuples(st.just("not a choice"), st.just(key), bad, st.just(key)))
        catalog = _catalog(leaf)
        if catalog:
            bad = st.text(min_size=1, max_size=12).filter(lambda s, c=catalog: s not in c)
            cases.append(st.tuples(st.just("unknown name"), st.just(key), bad, st.just(key)))
    identifiers = st.from_regex(r"[a-z][a-z_]{0,11}", fullmatch=True)
    for prefix, names in sections.items():
        taken = names | RESERVED if not prefix else names
        unknown = identifiers.filter(lambda s, n=taken: s not in n).map(lambda s, p=prefix: f"{p}{s}")
        cases.append(st.tuples(st.just("unknown key"), unknown, st.integers(), unknown).map(
            lambda t: (t[0], t[1], t[2], t[1])))
        if prefix:
            section = prefix.rstrip(".")
            cases.append(st.tuples(st.just("section not a mapping"), st.just(section),
                                   st.sampled_from([5, "x", [1, 2]]), st.just(section)))
    return st.one_of(cases)


# -- the tests ------------------------------------------------------------------------------------


@pytest.mark.parametrize("env_id", IDS)
def test_metadata_covers_the_scenario(env_id):
    """The generators draw most fields: a scenario whose fields lose their metadata is noticed."""
    leaves, _, scenarios = env_info(env_id)
    drawn = [leaf.key for leaf in leaves if valid_strategy(leaf) is not None]
    assert scenarios and len(drawn) >= 0.6 * len(leaves), f"only {drawn} of {[x.key for x in leaves]}"


@pytest.mark.parametrize("env_id", IDS)
def test_valid_overrides_build_and_stay_finite(env_id):
    @fuzz(200)
    @given(case=valid_overrides(env_id), seed=st.integers(0, 2**31 - 1))
    def check(case, seed):
        scenario, overrides = case
        note(f"scenario={scenario!r} overrides={overrides!r}")
        try:
            env = make(env_id, scenario=scenario, **overrides)
        except ValueError as exc:
            # in-range values may still break a cross-field rule; never a per-field check
            assert not any(p in str(exc) for p in PER_FIELD_ERRORS), f"in-range override rejected: {exc}"
            reject()
        rollout(env_id, env, seed)

    check()


@pytest.mark.parametrize("env_id", IDS)
def test_invalid_overrides_raise_value_error_naming_the_key(env_id):
    leaves, sections, _ = env_info(env_id)

    @fuzz(200)
    @given(case=invalid_cases(leaves, sections))
    def check(case):
        kind, key, value, named = case
        note(f"{kind}: {key}={value!r}")
        with pytest.raises(ValueError) as excinfo:
            make(env_id, **{key: value}).close()
        assert named in str(excinfo.value), f"{kind} {key}={value!r}: message {excinfo.value} does not name it"

    check()


# what fuzzing found, kept as fixed cases: (env id, scenario, overrides)
FINDINGS = [
    # SplitInference-v0: zero transmit power gave an infinite latency and a NaN virtual queue
    ("edgelam/SplitInference-v0", "congested_edge", {"episode_length": 1, "channel.tx_power_w": 0.0}),
    ("edgelam/SplitInference-v0", "default", {"channel.tx_power_w": 0.0}),
]


@pytest.mark.parametrize(("env_id", "scenario", "overrides"), FINDINGS)
def test_fuzz_findings_stay_fixed(env_id, scenario, overrides):
    rollout(env_id, make(env_id, scenario=scenario, **overrides), seed=0, steps=50)


def space_strategy(space: spaces.Space) -> st.SearchStrategy:
    """Every element of a Gymnasium space, boundary values included (shrinks toward ``low``)."""
    if isinstance(space, spaces.Discrete):
        return st.integers(int(space.start), int(space.start + space.n - 1)).map(np.int64)
    if isinstance(space, spaces.MultiDiscrete):
        pairs = zip(space.nvec.ravel(), space.start.ravel(), strict=True)
        parts = [st.integers(int(s), int(s + n - 1)) for n, s in pairs]
        return st.tuples(*parts).map(lambda t: np.asarray(t, dtype=space.dtype).reshape(space.shape))
    if isinstance(space, spaces.MultiBinary):
        return st.lists(st.integers(0, 1), min_size=space.n, max_size=space.n).map(
            lambda v: np.asarray(v, dtype=space.dtype).reshape(space.shape))
    if isinstance(space, spaces.Box) and space.is_bounded():
        low, high = space.low.astype(np.float64).ravel(), space.high.astype(np.float64).ravel()
        # a mix of exact bounds, the middle and anything in between, per element
        unit = st.sampled_from([0.0, 1.0, 0.5]) | st.floats(0.0, 1.0)
        return st.lists(unit, min_size=low.size, max_size=low.size).map(
            lambda u: np.clip(low + np.asarray(u) * (high - low), low, high).astype(space.dtype).reshape(space.shape))
    if isinstance(space, spaces.Dict):
        return st.fixed_dictionaries({k: space_strategy(s) for k, s in space.spaces.items()})
    if isinstance(space, spaces.Tuple):
        return st.tuples(*(space_strategy(s) for s in space.spaces))
    raise NotImplementedError(f"no fuzz strategy for {space}: add one here")


@cache
def action_strategy(env_id: str, scenario: str) -> st.SearchStrategy:
    env = make(env_id, scenario=scenario)
    if env_id in GYM_ENVS:
        strategy = space_strategy(env.action_space)
    else:
        strategy = st.fixed_dictionaries({a: space_strategy(env.action_space(a)) for a in env.possible_agents})
    env.close()
    return strategy


@pytest.mark.parametrize("env_id", IDS)
def test_any_action_sequence_keeps_observations_in_space(env_id):
    scenarios = env_info(env_id)[2]

    episodes = st.sampled_from(scenarios).flatmap(
        lambda s: st.tuples(st.just(s), st.lists(action_strategy(env_id, s), min_size=1, max_size=60)))

    @fuzz(120)
    @given(episode=episodes, seed=st.integers(0, 2**31 - 1))
    def check(episode, seed):
        scenario, actions = episode
        env = make(env_id, scenario=scenario)
        if env_id not in GYM_ENVS:
            assert all(env.action_space(a).contains(joint[a]) for joint in actions for a in joint)
        else:
            assert all(env.action_space.contains(a) for a in actions)
        rollout(env_id, env, seed, actions)

    check()
