"""``edgelam compare | results | tune``: agents against the baselines, the results page, hyperparameter studies."""

from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path

from rich.console import Console

from edgelam.agents.cli_args import Command, add_env_options, csv_list, parse_sets, print_json
from edgelam.agents.common import TEST_SEED, check_env_id, env_dir
from edgelam.agents.compare import CompareSettings, compare


def cmd_compare(args: argparse.Namespace) -> int:
    """Train agents over seeds and compare them with the baselines."""
    check_env_id(args.env)
    out = args.out or Path("runs") / "compare" / env_dir(args.env)
    settings = CompareSettings(
        args.env,
        scenario=args.scenario,
        algos=csv_list(args.algos) if args.algos is not None else None,
        seeds=csv_list(args.seeds, int) if args.seeds else None,
        timesteps=args.timesteps,
        baselines=csv_list(args.baselines) if args.baselines is not None else None,
        episodes=args.episodes,
        out_dir=out,
        quick=args.quick,
        env_kwargs=parse_sets(args.set),
        eval_seed=args.eval_seed,
        eval_adversary=args.eval_adversary,
        vectorized=args.vector,
    )
    progress = not args.json and not args.no_progress
    console = Console(stderr=True) if args.json else None
    if args.engine == "ray":
        from edgelam.agents.ray_engine import compare_ray

        result = compare_ray(
            settings,
            progress=progress,
            console=console,
            address=args.address,
            workers=args.workers,
            max_failures=args.max_failures,
        )
    elif args.address is not None or args.workers is not None:
        raise ValueError("--address and --workers need --engine ray")
    else:
        result = compare(settings, progress=progress, console=console)
    if args.json:
        print(result.files["results.json"].read_text(), end="")
    if result.failed:
        jobs = ", ".join(f["job"] for f in result.failed)
        print(f"error: {len(result.failed)} jobs failed ({jobs}); see {out / 'report.md'}", file=sys.stderr)
        return 1
    return 0


def cmd_results(args: argparse.Namespace) -> int:
    """Run the compare of every env in configs/agents/results.yaml and write docs/results.md."""
    from edgelam.agents.results import run_results

    if args.check:
        from edgelam.agents.results import check_entry

        checked = check_entry(args.check, out_dir=args.out, doc=args.doc)
        if args.json:
            print_json(checked)
        else:
            rec, got = checked["recorded"], checked["measured"]
            verdict = "confirmed" if checked["ok"] else "NOT confirmed"
            same = " (identical)" if checked["identical"] else ""
            print(
                f"{checked['entry']}: recorded {rec['mean']:.6g} ± {rec.get('ci95')} over {rec['n']} episodes, "
                f"re-evaluated {got['mean']:.6g}{same}: {verdict}"
            )
        return 0 if checked["ok"] else 1
    doc = run_results(only=args.only, out_dir=args.out, doc=args.doc)
    if args.json:
        print_json({"doc": str(doc)})
    else:
        print(f"wrote {doc}")
    return 0


def _fixes_a_violation(result) -> bool:
    """A constrained study's feasible best where the entry as it stands breaks the limit: written at any return."""
    c = result.constraint
    return c is not None and c["feasible"] and (c.get("untuned_violation") or 0.0) > c["max_violation"]


def cmd_tune(args: argparse.Namespace) -> int:
    """Optuna study of one algorithm's hyperparameters on one env; --write puts the best into the file."""
    from edgelam.agents.tune import TuneSettings, held_out_gain, tune
    from edgelam.agents.tune_write import write_best

    settings = TuneSettings(
        env_id=args.env,
        algo=args.algo,
        trials=args.trials,
        minutes=args.minutes,
        timesteps=args.timesteps,
        evaluations=args.evaluations,
        episodes=args.episodes,
        test_episodes=args.test_episodes,
        seed=args.seed,
        scenario=args.scenario,
        env_kwargs=parse_sets(args.set),
        out=args.out,
    )
    if args.engine == "ray":
        from edgelam.agents.tune_ray import tune_ray

        result = tune_ray(settings, workers=args.workers, address=args.address)
    else:
        result = tune(settings, log=(lambda m: print(m, file=sys.stderr)) if args.json else print)
    result.test = held_out_gain(result, settings)
    written = None
    why_not = None
    if result.constraint is not None and not result.constraint["feasible"]:
        why_not = "no trial kept the cost limit (see study.json's constraint)"
    elif result.gain <= 0 and not _fixes_a_violation(result):
        why_not = f"no trial beat the entry as it stands (gain {result.gain:.4g})"
    if args.write and why_not:
        print(f"not written: {why_not}", file=sys.stderr)
    elif args.write:
        command = " ".join(["edgelam tune", *(sys.argv[2:] if sys.argv[1:2] == ["tune"] else [args.env])])
        written = write_best(result, command, settings=settings)
    summary = {**dataclasses.asdict(result), "gain": result.gain, "written": str(written) if written else None}
    summary["study"] = str(summary.pop("folder"))
    if args.json:
        print_json(summary)
    else:
        for key in ("best", "untuned", "gain", "test", "best_params", "complete", "pruned", "study", "written"):
            print(f"{key}: {summary[key]}")
    return 0


def add_compare(command: Command) -> None:
    """The ``compare`` subcommand."""
    p = command("compare", "train agents over seeds and compare them with every baseline")
    add_env_options(p)
    p.add_argument(
        "--algos", help="comma-separated algorithms (default: ppo; adversarial envs: rarl; empty: baselines only)"
    )
    p.add_argument("--seeds", help="comma-separated training seeds (default: 0,1,2; --quick: 0,1)")
    p.add_argument("--timesteps", type=int, help="env steps per run (default: 100000; --quick: 20000)")
    p.add_argument("--episodes", type=int, help="evaluation episodes (default: 30; --quick: 10)")
    p.add_argument("--baselines", help="comma-separated baselines (default: all available)")
    p.add_argument("--quick", action="store_true", help="a setting that finishes in minutes on 2 cores")
    p.add_argument("--out", type=Path, help="output folder (default: runs/compare/<env>); rerun to resume")
    p.add_argument("--eval-seed", type=int, default=TEST_SEED, help="seed of the first evaluation episode")
    p.add_argument(
        "--eval-adversary",
        default="random",
        help="adversarial envs: the adversary policies are evaluated against (baseline name or saved policy)",
    )
    p.add_argument(
        "--vector",
        action="store_true",
        help="train the agents on the env's batched vector env (as train --vector; "
        "rarl: each side on its batched game)",
    )
    p.add_argument("--no-progress", action="store_true", help="no progress bars or status lines")
    p.add_argument(
        "--engine",
        choices=("local", "ray"),
        default="local",
        help="local (default: this process) or ray: one Ray Tune trial per job (needs the ray extra)",
    )
    p.add_argument("--address", help="ray: cluster to join, e.g. auto or <head-ip>:6379 (default: a local instance)")
    p.add_argument("--workers", type=int, help="ray: trials at once (default: as many as the CPUs allow)")
    p.add_argument("--max-failures", type=int, default=2, help="ray: retries of a failing trial (default: 2)")
    p.set_defaults(func=cmd_compare)


def add_results(command: Command) -> None:
    """The ``results`` subcommand."""
    p = command("results", "run the compare of every env in configs/agents/results.yaml, write docs/results.md")
    p.add_argument("--only", nargs="*", metavar="ENV", help="only these env ids")
    p.add_argument("--out", type=Path, default=Path("runs/results"), help="raw compare folders (resumable)")
    p.add_argument("--doc", type=Path, default=Path("docs/results.md"), help="the Markdown page to write")
    p.add_argument(
        "--check",
        metavar="ENV:POLICY",
        help="re-evaluate one leaderboard entry (docs/leaderboard.json beside --doc) on its test "
        "episodes and confirm its mean return within the recorded 95%% CI (exit 1 if not)",
    )
    p.set_defaults(func=cmd_results)


# the algorithms edgelam tune has a search space for (edgelam.agents.tune_space.SAMPLERS; not imported here: optuna)
TUNE_ALGOS = ("ppo", "maskable_ppo", "a2c", "sac", "td3", "dqn", "ppo_lagrangian", "rarl")


def add_tune(command: Command) -> None:
    """The ``tune`` subcommand."""
    p = command("tune", "Optuna study (TPE, median pruner) of an algorithm's hyperparameters on one env")
    add_env_options(p)
    p.add_argument(
        "--algo",
        default="ppo",
        choices=TUNE_ALGOS,
        help=f"{' | '.join(TUNE_ALGOS)} (default: ppo); ppo_lagrangian's best keeps the cost limit "
        "(docs/agents.md), rarl's goes to rarl.yml",
    )
    p.add_argument("--trials", type=int, default=20, help="trials of the study (default: 20)")
    p.add_argument("--minutes", type=float, default=20.0, help="wall-time limit of the study (default: 20)")
    p.add_argument("--timesteps", type=int, help="env steps per trial (default: the entry's n_timesteps)")
    p.add_argument("--evaluations", type=int, default=4, help="validation points per trial, for pruning (default: 4)")
    p.add_argument("--episodes", type=int, default=10, help="validation episodes per evaluation (default: 10)")
    p.add_argument(
        "--test-episodes",
        type=int,
        default=30,
        help="test-split episodes (seeds 10000+i) the best trial and the untuned entry are compared on "
        "once the study ends (default: 30)",
    )
    p.add_argument("--seed", type=int, default=0, help="sampler and training seed (default: 0)")
    p.add_argument("--out", type=Path, help="study folder, resumable (default: runs/tune/<env>/<algo>)")
    p.add_argument(
        "--write",
        action="store_true",
        help="write the best trial into configs/agents/hyperparams/<algo>.yml, the study beside it",
    )
    p.add_argument(
        "--engine",
        choices=("local", "ray"),
        default="local",
        help="local (default) or ray: the trials through Ray Tune's Optuna search (needs the ray extra)",
    )
    p.add_argument("--workers", type=int, default=1, help="ray: trials at once (default: 1)")
    p.add_argument("--address", help="ray: Ray cluster to join (default: a local Ray instance)")
    p.set_defaults(func=cmd_tune)
