"""RobustRouting-v0: zero-sum rewards, bounded adversary, RARL-compatible agents."""

from __future__ import annotations

import numpy as np
import pytest

from edgelam.envs.registration import make_parallel

ENV_ID = "edgelam/RobustRouting-v0"


def test_agents_and_zero_sum():
    env = make_parallel(ENV_ID)
    assert env.possible_agents == ["router", "adversary"]
    env.reset(seed=0)
    for _ in range(50):
        actions = {"router": 0, "adversary": env.action_space("adversary").sample()}
        _obs, rewards, _, _, infos = env.step(actions)
        assert rewards["adversary"] == -rewards["router"]
        assert isinstance(infos["router"]["latency_s"], float)


def test_adversary_rate_within_budget():
    env = make_parallel(ENV_ID)
    env.reset(seed=0)
    budget = env.config.adversary.rate_budget
    base = env.config.demand.arrival_rate_hz
    p = env.num_pipelines
    for sign in (1.0, -1.0):
        a = np.zeros(env.action_space("adversary").shape, dtype=np.float32)
        a[p] = 5.0 * sign  # clipped to [-1, 1]
        _, _, _, _, infos = env.step({"router": 0, "adversary": a})
        assert infos["router"]["arrival_rate_hz"] == pytest.approx(base * (1 + sign * budget))


def test_adversary_can_hurt_the_greedy_router():
    from edgelam import baselines

    def run(push: float) -> float:
        env = make_parallel(ENV_ID)
        router = baselines.make("greedy", env)
        obs, _ = env.reset(seed=1)
        total = 0.0
        a = np.full(env.action_space("adversary").shape, push, dtype=np.float32)
        while env.agents:
            r, _ = router.predict(obs["router"])
            obs, rewards, _, _, _ = env.step({"router": r, "adversary": a})
            total += rewards["router"]
        return total

    assert run(1.0) < run(-1.0)


def test_migration_rejected():
    with pytest.raises(ValueError, match="migration"):
        make_parallel(ENV_ID, **{"migration.enabled": True})
