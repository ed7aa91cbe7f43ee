"""What the ``edgelam`` subcommands share: ``--set`` / ``--hp`` parsing, lists, JSON output, env options."""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable, Sequence
from typing import Any

import yaml

from edgelam.agents.common import jsonable

# adds one subcommand (name, help text) to the parser, with its --json option
Command = Callable[[str, str], argparse.ArgumentParser]


def parse_sets(items: Sequence[str] | None, option: str = "--set") -> dict[str, Any]:
    """``["a.b=1", "c=true"]`` -> ``{"a.b": 1, "c": True}`` (values parsed as YAML).

    Raises:
        ValueError: on an item without ``=``, an empty key or a value YAML cannot parse.
    """
    out: dict[str, Any] = {}
    for item in items or ():
        key, sep, text = item.partition("=")
        key = key.strip()
        if not sep or not key or " " in key:
            raise ValueError(f"bad {option} {item!r}: expected key=value, e.g. channel.doppler_hz=50")
        try:
            out[key] = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            raise ValueError(f"bad {option} {item!r}: cannot parse the value: {exc}") from None
    return out


def csv_list(text: str, cast: type = str) -> list:
    """``"a, b"`` -> ``["a", "b"]`` (each item cast; empty items dropped)."""
    try:
        return [cast(x.strip()) for x in text.split(",") if x.strip()]
    except ValueError:
        raise ValueError(f"bad list {text!r}: expected comma-separated {cast.__name__} values") from None


def print_json(data: Any) -> None:
    """``data`` as indented JSON on stdout."""
    print(json.dumps(jsonable(data), indent=2))


def add_env_options(parser: argparse.ArgumentParser) -> None:
    """The env id and its ``--scenario`` / ``--set`` options."""
    parser.add_argument("env", help="env id, e.g. edgelam/SplitInference-v0 (see `edgelam list`)")
    parser.add_argument("--scenario", default="default", help="scenario name or YAML path (default: default)")
    parser.add_argument(
        "--set",
        action="append",
        metavar="KEY=VALUE",
        help="dotted scenario override, value read as YAML (repeatable), e.g. channel.doppler_hz=50",
    )
