"""Every id has a `hindsight`, and on the easy tier's test episodes it is at least every other policy.

Where hindsight is exact or a bound, its value on an episode is at least the return of every other
registered baseline on the same episode (the same reset seed, the tier's test shift applied). A
planner promises nothing against the others (an online policy may beat it): there the test asks
only that it does better than uniform random on average. The per-env files
(`tests/<env>/test_hindsight.py`) check the exact claims by brute force on toy instances.
"""

from __future__ import annotations

import pytest

from edgelam import baselines
from edgelam.agents.cli_train import _with_adversary
from edgelam.agents.common import TEST_SEED
from edgelam.agents.compare.plan import eval_overrides
from edgelam.agents.evaluate import evaluate
from edgelam.envs import registration

IDS = [spec.id for spec in registration.SPECS]
EPISODES = 2
TIER = "easy"


def test_every_id_has_hindsight():
    missing = [env_id for env_id in IDS if "hindsight" not in baselines.available(env_id)]
    assert not missing


@pytest.mark.slow
@pytest.mark.parametrize("env_id", IDS)
def test_hindsight_is_at_least_every_other_baseline_on_the_easy_test_episodes(env_id):
    overrides = eval_overrides(env_id, TIER, None, "test")

    # hindsight_value is a value of the rows' ``return``: of a parallel env, the mean over its agents (for the
    # zero-sum RobustRouting-v0 exactly 0 whatever the agents do, so every baseline must return exactly 0 there)

    def run(name):
        return evaluate(_with_adversary(env_id, name, "random"), env_id, EPISODES, TEST_SEED, TIER, overrides)

    best = run("hindsight")
    kinds = {("exact" if r["hindsight_exact"] else "bound" if r["hindsight_bound"] else "planner") for r in best}
    assert len(kinds) == 1
    kind = kinds.pop()
    values = [r["hindsight_value"] for r in best]
    if kind == "exact":
        assert [r["return"] for r in best] == pytest.approx(values, rel=1e-9, abs=1e-9)
    if kind in ("exact", "bound"):
        assert all(r["return"] <= v + 1e-9 * max(1.0, abs(v)) for r, v in zip(best, values, strict=True))
    if kind == "planner":
        rand = run("random")
        assert sum(values) > sum(r["return"] for r in rand)
        return
    for name in baselines.available(env_id):
        if name == "hindsight":
            continue
        try:
            rows = run(name)
        except ValueError:  # a baseline that does not apply to the tier (a budget it has not got)
            continue
        for row, value in zip(rows, values, strict=True):
            assert row["return"] <= value + 1e-9 * max(1.0, abs(value)), (name, row["seed"], kind)
