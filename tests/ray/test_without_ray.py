"""Without the ``ray`` extra: edgelam imports, and the Ray engines say how to install Ray."""

from __future__ import annotations

import importlib.util

import pytest

from edgelam.agents import ray_engine, rllib_engine
from edgelam.agents.cli import main

pytestmark = pytest.mark.skipif(importlib.util.find_spec("ray") is not None, reason="Ray is installed")

SPLIT = "edgelam/SplitInference-v0"
HINT = "pip install -e '.[ray]'"


def test_the_ray_engines_name_the_extra_to_install(tmp_path, capsys):
    assert main(["compare", SPLIT, "--engine", "ray", "--out", str(tmp_path / "c")]) == 2
    assert HINT in capsys.readouterr().err
    assert main(["train", SPLIT, "--engine", "rllib", "--out", str(tmp_path / "t")]) == 2
    assert HINT in capsys.readouterr().err
    with pytest.raises(ValueError, match="ray extra"):
        ray_engine.compare_ray(SPLIT, out_dir=tmp_path / "d")
    with pytest.raises(ValueError, match="ray extra"):
        rllib_engine.train_rllib(SPLIT, out_dir=tmp_path / "e")
    assert not (tmp_path / "c").exists() and not (tmp_path / "t").exists()
