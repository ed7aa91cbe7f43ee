"""Scenario config validation: unknown keys, wrong types, out-of-range values, dotted overrides."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pytest

from edgelam.envs.core.config import (
    apply_overrides,
    bounds,
    build,
    choices,
    load_scenario,
    read_yaml,
    to_dict,
)


@dataclass(frozen=True)
class Inner:
    doppler_hz: float = field(default=5.0, metadata=bounds(0.0, 2000.0))
    model: str = field(default="UMi", metadata=choices("UMi", "UMa"))


@dataclass(frozen=True)
class Outer:
    episode_length: int = field(default=10, metadata=bounds(1, 100))
    weights: tuple[float, ...] = field(default=(1.0, 2.0), metadata=bounds(0.0, None, length=2))
    budget_j: float | None = field(default=None, metadata=bounds(0.0, None))
    flag: bool = False
    channel: Inner = field(default_factory=Inner)


def test_build_defaults_and_values():
    cfg = build(Outer, {"episode_length": 5, "channel": {"doppler_hz": 50}})
    assert (
        cfg.episode_length == 5
        and cfg.channel.doppler_hz == 50.0
        and isinstance(cfg.channel.doppler_hz, float)
    )
    assert cfg.channel.model == "UMi" and cfg.budget_j is None


@pytest.mark.parametrize(
    ("data", "match"),
    [
        ({"episode_lenght": 5}, "unknown config key 'episode_lenght'"),
        ({"channel": {"doppler": 1}}, r"unknown config key 'channel\.doppler'"),
        ({"episode_length": 0}, r"episode_length: 0 is out of range \(allowed: \[1, 100\]\)"),
        ({"episode_length": 2.5}, "episode_length: expected an int"),
        ({"episode_length": True}, "episode_length: expected an int"),
        ({"channel": {"doppler_hz": "fast"}}, "channel.doppler_hz: expected a number"),
        ({"channel": {"doppler_hz": float("nan")}}, "channel.doppler_hz: expected a finite number"),
        ({"channel": {"model": "RMa"}}, r"channel\.model: 'RMa' is not allowed \(allowed: 'UMi', 'UMa'\)"),
        ({"channel": 3}, "channel: expected a mapping"),
        ({"weights": [1.0]}, "weights: expected 2 values"),
        ({"weights": [1.0, -1.0]}, r"weights\[1\]: -1.0 is out of range"),
        ({"budget_j": -1}, "budget_j: -1.0 is out of range"),
        ({"flag": "yes"}, "flag: expected a bool"),
    ],
)
def test_build_rejects_bad_input(data, match):
    with pytest.raises(ValueError, match=match):
        build(Outer, data)


def test_overrides_are_validated_like_yaml():
    data = apply_overrides({"channel": {"doppler_hz": 5}}, {"channel.doppler_hz": 60, "episode_length": 7})
    cfg = build(Outer, data)
    assert cfg.channel.doppler_hz == 60.0 and cfg.episode_length == 7
    with pytest.raises(ValueError, match=r"unknown config key 'channel\.speed'"):
        build(Outer, apply_overrides({}, {"channel.speed": 1}))
    with pytest.raises(ValueError, match="is not a section"):
        apply_overrides({"episode_length": 3}, {"episode_length.x": 1})
    with pytest.raises(ValueError, match="bad override key"):
        apply_overrides({}, {"channel..x": 1})


def test_round_trip_to_dict():
    cfg = build(Outer, {"weights": [3, 4]})
    assert build(Outer, to_dict(cfg)) == cfg


def test_yaml_errors(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("a: [1, 2\n")
    with pytest.raises(ValueError, match="bad YAML"):
        read_yaml(bad)
    lst = tmp_path / "list.yaml"
    lst.write_text("- 1\n- 2\n")
    with pytest.raises(ValueError, match="expected a YAML mapping"):
        read_yaml(lst)
    with pytest.raises(ValueError, match="does not exist"):
        load_scenario(Outer, "split_inference", tmp_path / "missing.yaml")
    good = tmp_path / "good.yaml"
    good.write_text("episode_length: 4\nchannel: {model: UMa}\n")
    cfg = load_scenario(Outer, "split_inference", good, {"channel.doppler_hz": 9})
    assert (cfg.episode_length, cfg.channel.model, cfg.channel.doppler_hz) == (4, "UMa", 9.0)


def test_unknown_scenario_name_lists_shipped():
    with pytest.raises(ValueError, match="unknown scenario 'nope'"):
        load_scenario(Outer, "split_inference", "nope")


@pytest.mark.parametrize(
    ("key", "value", "want"),
    [
        ("episode_length", np.int64(50), 50),
        ("episode_length", np.int32(7), 7),
        ("episode_length", np.uint8(9), 9),
        ("episode_length", np.float32(12.0), 12),
        ("channel.doppler_hz", np.float32(1.5), 1.5),
        ("channel.doppler_hz", np.int64(60), 60.0),
        ("channel.doppler_hz", np.float64(2.5), 2.5),
        ("flag", np.bool_(True), True),
        ("weights", np.arange(2, dtype=np.float32), (0.0, 1.0)),
    ],
)
def test_numpy_scalars_are_accepted_as_python_values(key, value, want):
    """What np.arange sweeps and Box.sample() produce builds like the Python number."""
    cfg = build(Outer, apply_overrides({}, {key: value}))
    got = cfg
    for part in key.split("."):
        got = getattr(got, part)
    assert got == want and type(got) is type(want), (got, type(got))


@pytest.mark.parametrize(
    ("key", "value", "match"),
    [
        ("episode_length", np.bool_(True), "episode_length: expected an int"),
        ("episode_length", np.float32(2.5), "episode_length: expected an int"),
        ("channel.doppler_hz", np.bool_(False), "channel.doppler_hz: expected a number"),
        ("channel.doppler_hz", np.float32("nan"), "channel.doppler_hz: expected a finite number"),
        ("flag", np.int64(1), "flag: expected a bool"),
        ("episode_length", np.int64(500), r"episode_length: 500 is out of range"),
    ],
)
def test_numpy_values_are_still_checked(key, value, match):
    with pytest.raises(ValueError, match=match):
        build(Outer, apply_overrides({}, {key: value}))


def test_gym_make_takes_numpy_overrides():
    import gymnasium as gym

    import edgelam.envs  # noqa: F401

    env = gym.make("edgelam/Offload-v0", episode_length=np.int64(50), **{"channel.tx_power_w": np.float32(0.1)})
    assert env.unwrapped.config.episode_length == 50
    assert env.unwrapped.config.channel.tx_power_w == pytest.approx(0.1)


@pytest.mark.parametrize("text", ["", "# only a comment\n", "{}\n", "null\n"])
def test_an_empty_scenario_file_is_refused(tmp_path, text):
    """An empty file would build the config class's own defaults, which are not scenario `default`."""
    empty = tmp_path / "empty.yaml"
    empty.write_text(text)
    with pytest.raises(ValueError, match=r"empty\.yaml: the scenario is empty"):
        load_scenario(Outer, "split_inference", empty)
    import gymnasium as gym

    import edgelam.envs  # noqa: F401

    with pytest.raises(ValueError, match="the scenario is empty"):
        gym.make("edgelam/SplitInference-v0", scenario=str(empty))
