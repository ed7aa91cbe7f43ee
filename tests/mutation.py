"""Mutation testing of envs/core, the dynamics modules and baselines/ with cosmic-ray (``make mutation``).

``python -m tests.mutation [--only NAME ...] [--work .mutation] [--json FILE] [--sample N [--seed S]]``
``python -m tests.mutation --recheck NAME SURVIVORS.txt [--work DIR]``

Each target is one library module and the fast tests that should catch its mutants.
The committed tree (``git archive HEAD``) is unpacked into ``--work``; the ``edgelam``
import namespace is pointed at that copy (``.pkg/edgelam/{envs,agents,baselines,configs}``
on ``PYTHONPATH``, found before the editable install), so cosmic-ray mutates files of the
copy, never the working tree. For each target cosmic-ray applies every mutation operator
at every site, one mutant at a time, and runs the target's tests with ``-x``: a mutant is
killed when they fail (or time out), survives when they pass. The score of a target is
killed / (killed + survived); survivors' diffs go to ``<work>/<name>.survivors.txt``.
``--sample N`` runs a uniform random sample of N of a target's mutants (seeded by ``--seed``, drawn
from the mutants left after the operator exclusions, in job-id order) and marks the rest skipped
("not sampled"): the score is then an estimate, reported with its Wilson 95% interval.

``--recheck`` replays the survivors' diffs of an earlier run (``<name>.survivors.txt``), one at
a time, on a fresh copy of HEAD against the target's tests as they are now: the "after" column of
docs/testing.md (a diff that no longer applies counts as surviving).

Not part of ``make test`` or CI: a target takes minutes to hours (mutants x test time).
The scores in docs/testing.md state the command and the targets that measured them.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import shlex
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# --noconftest: tests/conftest.py only pins torch threads (OMP_NUM_THREADS=1 is set here) and importing
# torch there would add a second to every mutant; no target's tests use a conftest fixture
PYTEST = "python -m pytest -x -q -p no:cacheprovider --noconftest"
# Binary-operator swaps into bitwise, shift, floor-division, modulo, power and matmul operators are left
# out: on this float code they nearly all raise TypeError or overflow at once (trivially killed) and
# they are 2/3 of cosmic-ray's mutants. So are swaps of a bitwise operator: here `|` is mostly the
# union of a type annotation, never evaluated under `from __future__ import annotations`, so each of
# its mutants is equivalent. The arithmetic swaps (+ - * /), comparisons, numbers, unary operators,
# booleans, decorators and the rest all run.
EXCLUDED_OPERATORS = [
    "core/ReplaceBinaryOperator_.*_(BitAnd|BitOr|BitXor|LShift|RShift|FloorDiv|Mod|Pow|MatMult)$",
    "core/ReplaceBinaryOperator_(BitAnd|BitOr|BitXor|LShift|RShift)_.*",
]

# name -> (package as reported, module, tests that should kill its mutants)
TARGETS: dict[str, tuple[str, str, str]] = {
    "core.queues": ("envs/core", "envs/core/queues.py", "tests/core/test_queues.py"),
    "core.hardware": ("envs/core", "envs/core/hardware.py", "tests/core/test_hardware.py"),
    "core.model_cards": ("envs/core", "envs/core/model_cards.py", "tests/core/test_hardware.py"),
    "core.load": ("envs/core", "envs/core/load.py", "tests/core/test_load.py"),
    "core.channel": (
        "envs/core",
        "envs/core/channel.py",
        "tests/core/test_channel.py tests/core/test_fading_trajectory.py",
    ),
    "split_inference.dynamics": (
        "dynamics",
        "envs/split_inference/dynamics.py",
        "tests/split_inference/test_dynamics.py tests/test_virtual_queues.py -k 'split or dynamics'",
    ),
    "spec_decode.dynamics": ("dynamics", "envs/spec_decode/dynamics.py", "tests/spec_decode -m 'not slow'"),
    "offload.dynamics": ("dynamics", "envs/offload/dynamics.py", "tests/offload -m 'not slow'"),
    "multi_user_offload.dynamics": (
        "dynamics",
        "envs/multi_user_offload/dynamics.py",
        "tests/multi_user_offload -m 'not slow'",
    ),
    "fedft.dynamics": ("dynamics", "envs/fedft/dynamics.py", "tests/fedft/test_fedft.py -m 'not slow'"),
    "microservice_routing.dynamics": (
        "dynamics",
        "envs/microservice_routing/dynamics.py",
        "tests/microservice_routing -m 'not slow'",
    ),
    "baselines.spec_decode": (
        "baselines",
        "baselines/spec_decode.py",
        "tests/spec_decode/test_spec_decode.py -m 'not slow'",
    ),
    "baselines.split_inference": ("baselines", "baselines/split_inference.py", "tests/split_inference -m 'not slow'"),
    "baselines.offload": ("baselines", "baselines/offload.py", "tests/offload -m 'not slow'"),
    "baselines.multi_user_offload": (
        "baselines",
        "baselines/multi_user_offload.py",
        "tests/multi_user_offload -m 'not slow'",
    ),
    "baselines.fedft": ("baselines", "baselines/fedft.py", "tests/fedft/test_fedft.py -m 'not slow'"),
}


def prepare(work: Path) -> None:
    """Unpack HEAD into ``work`` and point the ``edgelam`` namespace at it."""
    if work.exists():
        shutil.rmtree(work)
    work.mkdir(parents=True)
    archive = subprocess.run(["git", "archive", "HEAD"], cwd=ROOT, check=True, capture_output=True).stdout
    subprocess.run(["tar", "-x", "-C", str(work)], input=archive, check=True)
    pkg = work / ".pkg" / "edgelam"
    pkg.mkdir(parents=True)
    for folder in ("envs", "agents", "baselines", "configs"):
        (pkg / folder).symlink_to(Path("..", "..", folder))


def _env(work: Path) -> dict[str, str]:
    """The environment the tests run in: the copy first on the path, one thread, this interpreter's ``python``."""
    return {
        **os.environ,
        "PYTHONPATH": str(work / ".pkg"),
        "OMP_NUM_THREADS": "1",
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
    }


def _check_unmutated(name: str, work: Path, env: dict[str, str]) -> list[str]:
    """The target's test command, after checking that it passes on the unmutated copy (otherwise every
    mutant would count as killed)."""
    command = shlex.split(f"{PYTEST} {TARGETS[name][2]}")
    baseline = subprocess.run(command, cwd=work, env=env, capture_output=True, text=True)
    if baseline.returncode != 0:
        raise RuntimeError(f"{name}: the tests fail without any mutation:\n{baseline.stdout[-2000:]}")
    return command


NOT_SAMPLED = "not sampled"


def wilson_interval(successes: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """Wilson score interval of a binomial proportion (95% at z = 1.96); (nan, nan) for n = 0."""
    if n == 0:
        return float("nan"), float("nan")
    p = successes / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return max(0.0, centre - half), min(1.0, centre + half)


def keep_sample(session: Path, size: int, seed: int) -> tuple[int, int]:
    """Mark all but a seeded uniform sample of ``size`` pending mutants of ``session`` skipped ("not sampled").

    Returns (pending before, kept)."""
    from cosmic_ray.work_db import use_db
    from cosmic_ray.work_item import WorkerOutcome, WorkResult

    with use_db(str(session)) as db:
        pending = sorted(item.job_id for item in db.pending_work_items)
        kept = set(random.Random(seed).sample(pending, min(size, len(pending))))
        for job_id in pending:
            if job_id not in kept:
                db.set_result(job_id, WorkResult(worker_outcome=WorkerOutcome.SKIPPED, output=NOT_SAMPLED))
    return len(pending), len(kept)


def run_target(name: str, work: Path, timeout_s: float, sample: int | None = None, seed: int = 0) -> dict:
    """Init and exec one cosmic-ray session (on a seeded sample of ``sample`` mutants if given); count its outcomes."""
    package, module, tests = TARGETS[name]
    config = work / f"{name}.toml"
    session = work / f"{name}.sqlite"
    config.write_text(
        "[cosmic-ray]\n"
        f"module-path = {json.dumps(module)}\n"
        f"timeout = {timeout_s}\n"
        "excluded-modules = []\n"
        f"test-command = {json.dumps(f'{PYTEST} {tests}')}\n"
        "\n[cosmic-ray.distributor]\n"
        'name = "local"\n'
        "\n[cosmic-ray.filters.operators-filter]\n"
        f"exclude-operators = {json.dumps(EXCLUDED_OPERATORS)}\n"
    )
    env = _env(work)
    began = time.perf_counter()
    _check_unmutated(name, work, env)
    subprocess.run(["cosmic-ray", "init", str(config), str(session)], cwd=work, env=env, check=True)
    subprocess.run(["cr-filter-operators", str(session), str(config)], cwd=work, env=env, check=True)
    population = None
    if sample is not None:
        population, _ = keep_sample(session, sample, seed)
    subprocess.run(["cosmic-ray", "exec", str(config), str(session)], cwd=work, env=env, check=True)
    dump = subprocess.run(["cosmic-ray", "dump", str(session)], cwd=work, env=env, check=True,
                          capture_output=True, text=True).stdout
    counts = {"killed": 0, "survived": 0, "timeout": 0, "excluded": 0, "not_sampled": 0, "other": 0}
    survivors = []
    for line in dump.splitlines():
        item, result = json.loads(line)
        if result is None:
            counts["other"] += 1
            continue
        if result.get("worker_outcome") == "skipped":
            counts["not_sampled" if result.get("output") == NOT_SAMPLED else "excluded"] += 1
        elif result.get("worker_outcome") == "abnormal":
            counts["timeout"] += 1
        elif result.get("test_outcome") == "killed":
            counts["killed"] += 1
        elif result.get("test_outcome") == "survived":
            counts["survived"] += 1
            survivors.append(result.get("diff") or json.dumps(item))
        else:
            counts["other"] += 1
    (work / f"{name}.survivors.txt").write_text("\n".join(survivors))
    caught = counts["killed"] + counts["timeout"]
    total = caught + counts["survived"]
    low, high = wilson_interval(caught, total)
    return {
        "target": name,
        "package": package,
        "module": module,
        "tests": tests,
        **counts,
        "mutants": total,
        "score": caught / total if total else float("nan"),
        "score_ci95": [low, high] if sample is not None else None,
        "population": population if sample is not None else total,
        "seed": seed if sample is not None else None,
        "wall_time_s": time.perf_counter() - began,
    }


def recheck(name: str, survivors: Path, work: Path, timeout_s: float = 120.0) -> dict:
    """Apply each diff of ``survivors`` to a copy of HEAD in ``work`` and run ``name``'s tests; count the kills
    (a run past ``timeout_s`` counts as killed, as in cosmic-ray's sessions). The diffs still alive are
    written to ``work/<name>.survivors.txt``."""
    module = TARGETS[name][1]
    prepare(work)
    env = _env(work)
    command = _check_unmutated(name, work, env)
    diffs = [d for d in survivors.read_text().split("--- mutation diff ---") if d.strip()]
    source = (work / module).read_text()
    counts = {"killed": 0, "survived": 0, "not_applied": 0}
    alive: list[str] = []
    for diff in diffs:
        body = diff.strip("\n") + "\n"
        applied = subprocess.run(["patch", "-p1", "-s", "-f"], input=body, text=True, cwd=work, capture_output=True)
        added = [line[1:] for line in body.splitlines() if line.startswith("+") and not line.startswith("+++")]
        if applied.returncode != 0 or not all(a in (work / module).read_text() for a in added):
            counts["not_applied"] += 1
            counts["survived"] += 1
            alive.append(diff)
        else:
            try:
                run = subprocess.run(command, cwd=work, env=env, capture_output=True, timeout=timeout_s)
                killed = run.returncode != 0
            except subprocess.TimeoutExpired:
                killed = True
            counts["killed" if killed else "survived"] += 1
            if not killed:
                alive.append(diff)
        (work / module).write_text(source)
    (work / f"{name}.survivors.txt").write_text("".join(f"--- mutation diff ---{d}" for d in alive))
    return {"target": name, "survivors": len(diffs), **counts}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", nargs="+", choices=sorted(TARGETS), help="targets to run (default: all)")
    parser.add_argument("--work", default=".mutation", help="work folder (replaced)")
    parser.add_argument("--timeout", type=float, default=120.0, help="seconds per mutant before it counts as killed")
    parser.add_argument("--json", help="write the results here")
    parser.add_argument("--sample", type=int, help="run a seeded uniform sample of this many mutants per target")
    parser.add_argument("--seed", type=int, default=0, help="seed of --sample")
    parser.add_argument("--recheck", nargs=2, metavar=("NAME", "SURVIVORS"),
                        help="replay a target's survivors' diffs against its tests as they are now")
    args = parser.parse_args(argv)
    work = Path(args.work).resolve()
    if args.sample is not None and args.sample < 1:
        parser.error(f"--sample must be a positive number of mutants, got {args.sample}")
    if args.recheck:
        name, survivors = args.recheck
        if name not in TARGETS:
            parser.error(f"--recheck: unknown target {name!r}")
        out = recheck(name, Path(survivors).resolve(), work, args.timeout)
        print(f"{name}: {out['survivors']} survivors replayed: {out['killed']} killed, {out['survived']} survive "
              f"({out['not_applied']} of them no longer apply)")
        return 0
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, check=True, capture_output=True,
                            text=True).stdout.strip()
    prepare(work)
    results = []
    for name in args.only or TARGETS:
        results.append({**run_target(name, work, args.timeout, args.sample, args.seed), "commit": commit})
        if args.json:  # after each target, so a long run's finished targets are on disk
            Path(args.json).write_text(json.dumps(results, indent=2) + "\n")
    print(f"commit {commit}")
    print(f"{'target':32} {'of':>6} {'mutants':>8} {'killed':>7} {'timeout':>8} {'survived':>9} {'score':>7}  95% CI")
    for r in results:
        ci = "" if r["score_ci95"] is None else f"  {r['score_ci95'][0]:.1%} - {r['score_ci95'][1]:.1%}"
        print(f"{r['target']:32} {r['population']:6d} {r['mutants']:8d} {r['killed']:7d} {r['timeout']:8d} "
              f"{r['survived']:9d} {r['score']:7.1%}{ci}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
