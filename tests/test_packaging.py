"""The install maps envs/, agents/, baselines/, configs/ into the one namespace ``edgelam``."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import tomllib

ROOT = Path(__file__).resolve().parents[1]
MAPPED = {
    "envs": "edgelam.envs",
    "agents": "edgelam.agents",
    "baselines": "edgelam.baselines",
    "configs": "edgelam.configs",
}


def test_every_package_folder_is_listed_in_pyproject():
    listed = set(tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"])
    found = set()
    for folder, name in MAPPED.items():
        for init in (ROOT / folder).rglob("__init__.py"):
            rel = init.parent.relative_to(ROOT / folder)
            found.add(".".join([name, *rel.parts]))
    assert found == listed


def test_no_bare_top_level_modules_are_importable_outside_the_repo(tmp_path):
    code = "import importlib.util as u; print([m for m in ('envs','agents','baselines','configs') if u.find_spec(m)])"
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, check=True
    )
    assert out.stdout.strip() == "[]"


@pytest.mark.parametrize("module", sorted(MAPPED.values()))
def test_namespace_imports(module):
    __import__(module)
