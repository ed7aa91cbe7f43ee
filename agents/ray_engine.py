"""The Ray engine of ``compare``: every job of the harness is one Ray Tune trial.

:func:`compare_ray` plans a compare exactly as :func:`edgelam.agents.compare.compare`
does (:func:`~edgelam.agents.compare.plan_compare`), runs each job, one per
(algorithm, seed) and one per baseline, as a Tune trial that calls the same
:func:`~edgelam.agents.compare.run_job`, gathers the results in the plan's order and
writes the same files with :func:`~edgelam.agents.compare.finish_compare`. Same
seeds, same numbers as the local engine.

* Retries: a trial that raises is retried ``max_failures`` times (``FailureConfig``);
  one that still fails is listed under ``failed`` in ``results.json`` and in the
  report ("Failed jobs") with its error and number of attempts, and
  :attr:`CompareResult.failed` is not empty; the other
  policies are reported as usual.
* Resume: the Tune experiment lives in ``out_dir/tune/compare-<digest of the jobs>``;
  rerunning the same compare restores it (``Tuner.restore``): finished trials are
  not run again, unfinished and failed ones are restarted, and a restarted
  agent job resumes its training run from the run folder's checkpoints.
* Cluster: with ``address`` the driver joins a running cluster (``ray start --head``
  on one node, ``ray start --address=<head>:6379`` on the others). Trials write the
  run folders under the driver's working directory, so on several nodes that
  directory and ``out_dir`` must be on a filesystem every node mounts at the same
  path (NFS), as Ray Tune's own ``storage_path`` must be.

Ray is an optional dependency (``pip install -e '.[ray]'``); it is imported when
called, so ``import edgelam`` works without it.
"""

from __future__ import annotations

import base64
import contextlib
import dataclasses
import hashlib
import json
import os
import pickle
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import ModuleType
from typing import Any

from rich.console import Console

from edgelam.agents.common import jsonable
from edgelam.agents.compare import (
    CompareJob,
    ComparePlan,
    CompareResult,
    CompareSettings,
    JobResult,
    compare_settings,
    finish_compare,
    plan_compare,
    run_job,
)

RAY_EXTRA = "install the ray extra: pip install -e '.[ray]'"
# the reported metric that carries a trial's JobResult (pickled, base64)
RESULT_KEY = "job_result"
EXPERIMENT_DIR = "tune"


def require_ray() -> ModuleType:
    """The ``ray`` module, or a ``ValueError`` saying how to install it."""
    try:
        import ray
    except ImportError as exc:
        raise ValueError(f"this needs Ray ({exc}); {RAY_EXTRA}") from None
    return ray


def init_ray(address: str | None = None, num_cpus: int | None = None, quiet: bool = False) -> bool:
    """Start a local Ray instance, or join the cluster at ``address``, unless Ray is already up.

    Args:
        address: a cluster address (``"auto"``, ``"<head-ip>:6379"``, ``"ray://..."``);
            ``None`` starts a local instance.
        num_cpus: CPUs of a local instance (default: all of the machine's).
        quiet: do not forward the workers' output to this process.

    Returns:
        Whether this call started or joined Ray (the caller then shuts it down).

    Raises:
        ValueError: if Ray is not installed, or ``num_cpus`` is given with ``address``.
    """
    ray = require_ray()
    if ray.is_initialized():
        return False
    if address is not None:
        if num_cpus is not None:
            raise ValueError("num_cpus applies to a local Ray instance, not to a cluster at --address")
        ray.init(address=address, log_to_driver=not quiet)
    else:
        if num_cpus is not None and num_cpus < 1:
            raise ValueError(f"num_cpus must be >= 1, got {num_cpus}")
        ray.init(num_cpus=num_cpus, include_dashboard=False, log_to_driver=not quiet)
    return True


def encode_result(result: JobResult) -> str:
    """A job result as text a Tune metric can carry, exact (pickled, base64)."""
    return base64.b64encode(pickle.dumps(result)).decode("ascii")


def decode_result(text: str) -> JobResult:
    """The inverse of :func:`encode_result`."""
    result = pickle.loads(base64.b64decode(text.encode("ascii")))
    if not isinstance(result, JobResult):
        raise ValueError(f"a trial reported {type(result).__name__}, not a JobResult")
    return result


def _trial(config: Mapping[str, Any], jobs: Mapping[str, CompareJob], workdir: str) -> None:
    """One Tune trial: run the job named ``config["job"]`` from the driver's working directory."""
    from ray import tune

    if not os.path.isdir(workdir):
        raise ValueError(
            f"the driver's working directory {workdir} is not on this node: run the compare from a "
            "folder every node mounts at the same path"
        )
    os.chdir(workdir)
    result = run_job(jobs[config["job"]], progress=False, console=Console(stderr=True))
    tune.report({"job": result.key, RESULT_KEY: encode_result(result)})


def experiment_name(jobs: Sequence[CompareJob]) -> str:
    """``compare-<digest>``: the same jobs give the same Tune experiment (hence resume)."""
    text = json.dumps(jsonable([dataclasses.asdict(job) for job in jobs]), sort_keys=True, default=str)
    return "compare-" + hashlib.sha256(text.encode()).hexdigest()[:12]


def _error_text(error: BaseException) -> str:
    """The last line of an error (Tune wraps the trial's exception and its traceback)."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    return lines[-1] if lines else type(error).__name__


def _attempts(trial_dir: str | None) -> int | None:
    """How many times a failed trial ran: Tune logs each failure as ``Failure # <n>`` in ``error.txt``."""
    path = Path(trial_dir or "") / "error.txt"
    if not trial_dir or not path.is_file():
        return None
    return sum(1 for line in path.read_text().splitlines() if line.startswith("Failure # "))


def _fit(
    tune: ModuleType,
    plan: ComparePlan,
    console: Console,
    address: str | None,
    workers: int | None,
    max_failures: int,
    cpus_per_trial: float,
    progress: bool,
) -> Any:
    """Run (or restore and finish) the Tune experiment of a plan; its ResultGrid (Ray shut down if started here)."""
    started = init_ray(address, quiet=not progress)
    try:
        jobs = {job.key: job for job in plan.jobs}
        trainable = tune.with_resources(
            tune.with_parameters(_trial, jobs=jobs, workdir=os.getcwd()), {"cpu": cpus_per_trial}
        )
        storage = (plan.out_dir / EXPERIMENT_DIR).resolve()
        name = experiment_name(plan.jobs)
        path = storage / name
        if tune.Tuner.can_restore(str(path)):
            if progress:
                console.log(f"resuming the Tune experiment {path}")
            tuner = tune.Tuner.restore(str(path), trainable=trainable, restart_errored=True)
        else:
            tuner = tune.Tuner(
                trainable,
                param_space={"job": tune.grid_search(list(jobs))},
                tune_config=tune.TuneConfig(max_concurrent_trials=workers),
                run_config=tune.RunConfig(
                    name=name,
                    storage_path=str(storage),
                    failure_config=tune.FailureConfig(max_failures=max_failures),
                    verbose=1 if progress else 0,
                ),
            )
        grid = tuner.fit()
    finally:
        if started:
            require_ray().shutdown()
    return grid


def compare_ray(
    settings: CompareSettings | str,
    *,
    progress: bool = True,
    console: Console | None = None,
    address: str | None = None,
    workers: int | None = None,
    max_failures: int = 2,
    cpus_per_trial: float = 1.0,
    **fields: Any,
) -> CompareResult:
    """:func:`edgelam.agents.compare.compare` with each job as a Ray Tune trial.

    ``settings``, ``progress``, ``console`` and ``fields`` are those of ``compare`` (``progress``
    also shows Tune's status table and the workers' output). Then:

    Args:
        address: Ray cluster to join; ``None`` starts a local instance (shut down at
            the end) unless Ray is already initialised in this process.
        workers: trials run at once (default: as many as the CPUs allow).
        max_failures: retries of a failing trial before it is reported as failed.
        cpus_per_trial: CPUs Tune reserves for each trial.

    Returns:
        The result of :func:`~edgelam.agents.compare.finish_compare`; ``failed`` lists
        the jobs that failed after their retries.

    Raises:
        ValueError: as ``compare`` (before any trial runs), if Ray is missing, or on a
            bad ``workers`` / ``max_failures`` / ``cpus_per_trial``.
    """
    began = time.perf_counter()
    require_ray()
    if workers is not None and workers < 1:
        raise ValueError(f"workers must be >= 1, got {workers}")
    if max_failures < 0:
        raise ValueError(f"max_failures must be >= 0, got {max_failures}")
    if cpus_per_trial <= 0:
        raise ValueError(f"cpus_per_trial must be > 0, got {cpus_per_trial}")
    plan = plan_compare(compare_settings(settings, fields))
    plan.out_dir.mkdir(parents=True, exist_ok=True)
    console = console or Console()
    from ray import tune

    # Tune prints its experiment box and status tables to stdout: keep stdout for results (--json)
    with contextlib.redirect_stdout(sys.stderr):
        grid = _fit(tune, plan, console, address, workers, max_failures, cpus_per_trial, progress)
    jobs = {job.key: job for job in plan.jobs}

    done: dict[str, JobResult] = {}
    failed: list[dict[str, Any]] = []
    for result in grid:
        key = result.config["job"]
        if result.error is None and RESULT_KEY in (result.metrics or {}):
            done[key] = decode_result(result.metrics[RESULT_KEY])
        else:
            error = _error_text(result.error) if result.error is not None else "no result reported"
            failed.append({"job": key, "error": error, "attempts": _attempts(result.path), "trial_dir": result.path})
    failed.sort(key=lambda f: list(jobs).index(f["job"]))
    results = [done[key] for key in jobs if key in done]
    if failed:
        listed = "; ".join(f"{f['job']}: {f['error']}" for f in failed)
        console.log(f"{len(failed)} of {len(jobs)} jobs failed (each after {max_failures} retries): {listed}")
    return finish_compare(plan, results, began, console, failed)
