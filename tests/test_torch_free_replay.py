"""The replay backend never imports torch (DESIGN.md, "The two backends"): for every id, in a fresh interpreter.

``sys.modules`` is shared by every test of a pytest session (the live tests import torch), so
each id is built, reset and stepped in its own subprocess, which reports what it imported.
"""

from __future__ import annotations

import subprocess
import sys

import pytest

from edgelam.envs import ENV_IDS

_PROBE = """
import sys

import gymnasium as gym
from gymnasium.vector.utils import batch_space

import edgelam.envs
from edgelam.envs import make_parallel
from edgelam.envs.core.vector import AgentRowsVectorEnv
from edgelam.envs.registration import find_spec, make_batched

env_id = sys.argv[1]
if env_id in gym.registry:
    env = gym.make(env_id)
    env.reset(seed=0)
    env.action_space.seed(0)
    for _ in range(5):
        env.step(env.action_space.sample())
else:
    env = make_parallel(env_id)
    env.reset(seed=0)
    for _ in range(5):
        env.step({agent: env.action_space(agent).sample() for agent in env.agents})
    if find_spec(env_id).batched_entry_point is not None:  # and its batched game, through the agent rows
        game = make_batched(env_id, num_games=3)
        if hasattr(game, "single_action_space"):
            rows = AgentRowsVectorEnv(game)
            rows.reset(seed=0)
            rows.action_space.seed(0)
            for _ in range(5):
                rows.step(rows.action_space.sample())
        else:  # agents with spaces of their own: a dict of each agent's (B, ...) actions
            game.reset(seed=0)
            batched = {agent: batch_space(game.action_space(agent), 3) for agent in game.possible_agents}
            for _ in range(5):
                game.step({agent: space.sample() for agent, space in batched.items()})
env.close()
print(sorted(name for name in sys.modules if name == "torch" or name.startswith("torch.")))
"""


@pytest.mark.parametrize("env_id", ENV_IDS)
def test_replay_backend_does_not_import_torch(env_id):
    done = subprocess.run([sys.executable, "-c", _PROBE, env_id], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().splitlines()[-1] == "[]", f"{env_id} imported torch:\n{done.stdout}"


def test_the_probe_sees_torch_when_it_is_imported():
    """The check is not vacuous: the same probe reports torch once a model-running API is used."""
    code = "import sys; from edgelam.envs.lam import load; print('torch' in sys.modules)"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "True"
