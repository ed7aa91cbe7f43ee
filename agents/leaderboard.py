"""The suite's leaderboard: every results entry's numbers in ``docs/leaderboard.json``, and their check.

``edgelam results`` writes, beside ``docs/results.md``, one record per env entry of
``configs/agents/results.yaml`` (:func:`record`): its scenario, test split (first reset seed and
episodes), cost limit, what its hindsight is, and for every policy its kind, mean return, normalised
score, episode cost and violation rate, each with its 95% CI. :func:`summary_table` is the table
across envs at the top of the page: per env the best online baseline, the best RL agent and their
scores, and the hindsight gap (1 - the best online score); the references (random, hindsight and the
per-step ``oracle``, which reads the true state) are left out of the ranking.

``edgelam results --check ENV:POLICY`` (:func:`check`) re-evaluates one entry, a baseline or the
saved agent of every training seed, on the same test episodes through the same compare job, and
confirms that its mean return lies within the 95% CI the leaderboard records (CompilerGym's
validated leaderboard). Agents are re-evaluated from their run folders under ``--out`` (what
``edgelam results`` trained there); nothing is retrained.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from edgelam.agents.common import COST_KEY, VIOLATION_KEY, env_name
from edgelam.agents.compare import CompareResult, CompareSettings, format_cell, hindsight_kind, plan_compare, run_job
from edgelam.agents.compare.plan import eval_overrides
from edgelam.agents.metrics import HINDSIGHT_POLICY, RANDOM_POLICY, SCORE_KEY, per_seed_means

LEADERBOARD = Path("docs") / "leaderboard.json"
_COLUMNS = ("return", SCORE_KEY, COST_KEY, VIOLATION_KEY)
# policies that are references, not contenders: the leaderboard ranks the others. ``oracle`` (SplitInference,
# Offload, SpecDecode) reads the env's true current state (channel, acceptances) instead of the observation:
# a per-step perfect-information reference, not an online policy
REFERENCES = (RANDOM_POLICY, HINDSIGHT_POLICY, "oracle")


def record(settings: CompareSettings, res: CompareResult) -> dict[str, Any]:
    """The leaderboard record of one env entry's compare."""
    policies = {}
    for policy, stats_of in res.summary.items():
        policies[policy] = {"kind": res.kinds[policy]}
        for column in _COLUMNS:
            if column in stats_of:
                mean, ci, n = stats_of[column]
                policies[policy][column] = {"mean": mean, "ci95": None if math.isnan(ci) else ci, "n": n}
    return {
        "env_id": settings.env_id,
        "scenario": str(settings.scenario),
        "env_kwargs": dict(settings.env_kwargs or {}),
        "split": settings.split,
        "test_overrides": eval_overrides(settings.env_id, settings.scenario, None, settings.split),
        "eval_seed": settings.eval_seed,
        "episodes": settings.episodes,
        "cost_limit": res.cost_limit,
        "cost_unit": res.cost_unit,
        "hindsight": hindsight_kind(res.summary),
        "policies": policies,
        "paired": [{k: v[k] for k in ("policy", "other", "verdict", "p_value")} for v in res.paired],
    }


def write(records: Sequence[Mapping[str, Any]], path: Path = LEADERBOARD) -> Path:
    """Write the records (one per env) as JSON; an env already in the file and not in ``records`` is kept."""
    old = load(path) if path.is_file() else {}
    merged = {**old, **{r["env_id"]: dict(r) for r in records}}
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(merged, indent=2, default=float) + "\n")
    return path


def load(path: Path = LEADERBOARD) -> dict[str, dict[str, Any]]:
    """env id -> its record, from a leaderboard file."""
    try:
        data = json.loads(Path(path).read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise ValueError(f"cannot read the leaderboard {path}: {exc}") from None
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected an object env id -> record")
    return data


def _best(policies: Mapping[str, Mapping[str, Any]], kind: str, metric: str) -> tuple[str, Mapping[str, Any]] | None:
    """The policy of ``kind`` (not a reference) with the highest mean ``metric``."""
    rows = [(p, v) for p, v in policies.items() if v["kind"] == kind and p not in REFERENCES and metric in v]
    return max(rows, key=lambda pv: pv[1][metric]["mean"]) if rows else None


def _cell(entry: Mapping[str, Any] | None) -> str:
    if entry is None:
        return "-"
    ci = entry.get("ci95")
    return format_cell(entry["mean"], math.nan if ci is None else ci)


_INVERSE = {"beats": "loses to", "loses to": "beats", "ties": "ties"}


def verdict(r: Mapping[str, Any], policy: str, other: str) -> tuple[str, float] | None:
    """The paired verdict "``policy`` <verdict> ``other``" on the return and its p-value, from record ``r``
    (``None`` where the record holds no paired test of the two)."""
    for v in r.get("paired", ()):
        if (v["policy"], v["other"]) == (policy, other):
            return v["verdict"], float(v["p_value"])
        if (v["policy"], v["other"]) == (other, policy):
            return _INVERSE[v["verdict"]], float(v["p_value"])
    return None


_Best = tuple[str, Mapping[str, Any]] | None


def best_pair(r: Mapping[str, Any]) -> tuple[str, _Best, _Best]:
    """The ranking metric of record ``r`` (the score where it has one, else the return), and its best
    online baseline and best RL agent, each ``(name, entry)`` or ``None``."""
    policies = r["policies"]
    metric = SCORE_KEY if any(SCORE_KEY in v for v in policies.values()) else "return"
    return metric, _best(policies, "baseline", metric), _best(policies, "agent", metric)


def agent_tally(records: Sequence[Mapping[str, Any]]) -> dict[str, list[str]]:
    """verdict -> the envs where the best RL agent has it against the best online baseline (paired test);
    ``"-"``: no agent, or no paired test in the record."""
    out: dict[str, list[str]] = {"beats": [], "ties": [], "loses to": [], "-": []}
    for r in records:
        _, base, agent = best_pair(r)
        v = verdict(r, agent[0], base[0]) if base and agent else None
        out[v[0] if v else "-"].append(r["env_id"].split("/")[-1])
    return out


def summary_table(records: Sequence[Mapping[str, Any]]) -> list[list[str]]:
    """The table across envs: header, then per env the best online baseline and RL agent by score.

    Ranked by the normalised score where the env has one (hindsight known), by the return otherwise.
    The hindsight gap is 1 - the best online baseline's score: the headroom left above it. The
    references (:data:`REFERENCES`) are not ranked. "agent vs baseline" is the paired test on the
    return of the best agent against the best baseline (:func:`verdict`), ``-`` where the record has none.
    """
    table = [["env", "scenario", "hindsight", "best baseline", "its score", "best agent", "its score",
              "agent vs baseline", "hindsight gap"]]
    for r in records:
        metric, base, agent = best_pair(r)
        gap, paired = "-", None
        if base is not None and agent is not None:
            paired = verdict(r, agent[0], base[0])
        if base is not None and metric == SCORE_KEY:
            gap = f"{1.0 - base[1][SCORE_KEY]['mean']:.3g}"
        table.append([
            r["env_id"].split("/")[-1], f"`{r['scenario']}`", r.get("hindsight") or "none",
            base[0] if base else "-", _cell(base[1].get(SCORE_KEY)) if base else "-",
            agent[0] if agent else "-", _cell(agent[1].get(SCORE_KEY)) if agent else "-",
            f"{paired[0]} (p = {paired[1]:.2g})" if paired else "-", gap,
        ])
    return table


def check(entry: str, settings: Sequence[CompareSettings], out_dir: str | Path = "runs/results",
          path: Path = LEADERBOARD) -> dict[str, Any]:
    """Re-evaluate leaderboard entry ``ENV:POLICY`` on its test episodes; is its mean in the recorded CI?

    Args:
        entry: ``"<env id>:<policy>"``, e.g. ``"edgelam/Offload-v0:greedy"`` or ``"edgelam/Offload-v0:ppo"``.
        settings: the compare settings of every results entry (``configs/agents/results.yaml``).
        out_dir: the folder ``edgelam results`` trained its agents in (``<out_dir>/<env>/runs/``).
        path: the leaderboard file.

    Returns:
        ``{"entry", "recorded": {mean, ci95, n}, "measured": {mean, n}, "difference", "identical", "ok"}``:
        ``ok`` when |measured - recorded| <= the recorded CI half-width (or the two are equal when the
        record has no CI); ``identical`` when the re-evaluation gives the same mean to 1e-9.

    Raises:
        ValueError: a malformed entry, an env or policy not on the leaderboard, or an agent whose
            saved runs are missing (run ``edgelam results --only ENV`` first).
    """
    env_id, sep, policy = entry.rpartition(":")
    if not sep or not env_id or not policy:
        raise ValueError(f"results --check: {entry!r} is not ENV:POLICY, e.g. edgelam/Offload-v0:greedy")
    board = load(path)
    if env_id not in board:
        raise ValueError(f"results --check: {env_id} is not on the leaderboard {path} (has: {', '.join(board)})")
    rec = board[env_id]
    if policy not in rec["policies"]:
        raise ValueError(f"results --check: {env_id} has no entry {policy!r} (has: {', '.join(rec['policies'])})")
    found = [s for s in settings if s.env_id == env_id]
    if not found:
        raise ValueError(f"results --check: {env_id} is not in the results settings")
    s = replace(found[0], out_dir=Path(out_dir) / env_name(env_id), episodes=rec["episodes"],
                eval_seed=rec["eval_seed"], scenario=rec["scenario"], env_kwargs=rec.get("env_kwargs") or None,
                split=rec.get("split", "test"))
    jobs = [j for j in plan_compare(s).jobs if j.name == policy]
    if not jobs:
        raise ValueError(f"results --check: {policy!r} is not planned for {env_id} by its results settings")
    rows = []
    for job in jobs:
        if job.kind == "agent" and not (Path(job.run_dir) / "model.zip").is_file():
            raise ValueError(f"results --check: no saved agent in {job.run_dir}; run `edgelam results --only "
                             f"{env_id}` (with --out {out_dir}) first")
        rows += run_job(job).rows
    measured = per_seed_means(rows, policy, "return")
    mean = float(np.mean(list(measured.values())))
    recorded = rec["policies"][policy]["return"]
    diff = mean - recorded["mean"]
    ci = recorded.get("ci95")
    ok = abs(diff) <= (ci if ci is not None else 1e-9 * max(1.0, abs(recorded["mean"])))
    return {"entry": entry, "recorded": recorded, "measured": {"mean": mean, "n": len(measured)},
            "difference": diff, "identical": abs(diff) <= 1e-9 * max(1.0, abs(recorded["mean"])), "ok": bool(ok)}
