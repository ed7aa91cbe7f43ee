"""The ``edgelam`` command: list | train | evaluate | plot-episode | compare | bench | results | profile.

Every subcommand takes ``--json`` (machine-readable output on stdout, nothing
else there). ``--set key=value`` sets a dotted scenario key (the value is read as
YAML: ``--set channel.doppler_hz=50 --set energy.enabled=true``). User errors
(unknown env id, bad ``--set``, invalid scenario values, missing model or
profile files) print one line ``error: ...`` on stderr and exit with status 2.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import gymnasium as gym
from rich.console import Console

from edgelam import baselines
from edgelam.agents import cli_bench, cli_compare, cli_train
from edgelam.agents.cli_args import print_json
from edgelam.agents.common import env_dir, is_parallel
from edgelam.agents.compare import rich_table
from edgelam.envs import registration
from edgelam.envs.core.config import scenario_names


class UsageError(ValueError):
    """A command line argparse rejects (reported like any other user error)."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # type: ignore[override]
        raise UsageError(message)


def _env_ids() -> list[str]:
    return [*registration.GYM_ENVS, *registration.PARALLEL_ENVS]


def cmd_list(args: argparse.Namespace) -> int:
    """Every registered env id with its kind, scenarios, baselines and episode length, read from its spec."""
    entries = []
    for env_id in _env_ids():
        env_spec = registration.find_spec(env_id)
        gym_spec = None if is_parallel(env_id) else gym.spec(env_id)
        entries.append(
            {
                "id": env_id,
                "kind": "pettingzoo" if is_parallel(env_id) else "gymnasium",
                "scenarios": scenario_names(env_dir(env_id)),
                "baselines": baselines.available(env_id),
                "episode_length": env_spec.episode_length() if env_spec else None,
                "max_episode_steps": gym_spec.max_episode_steps if gym_spec else None,
                "vector_env": bool(gym_spec and gym_spec.vector_entry_point),
                "batched_game": bool(env_spec and env_spec.batched_entry_point),
                "backends": list(env_spec.backends) if env_spec else [],
                "cost_keys": list(env_spec.cost_keys) if env_spec else [],
            }
        )
    if args.json:
        print_json(entries)
        return 0
    rows = [["id", "kind", "scenarios", "baselines", "steps"]]
    for e in entries:
        steps = str(e["episode_length"] or e["max_episode_steps"] or "-")
        rows.append([e["id"], e["kind"], ", ".join(e["scenarios"]) or "-", ", ".join(e["baselines"]), steps])
    Console().print(rich_table("edgelam environments", rows, left=4), crop=False)
    return 0


def cmd_profile(args: argparse.Namespace) -> int:
    """Run the real model and record the replay files of the envs."""
    try:
        from edgelam.envs.lam import run_profile
    except ImportError as exc:
        raise ValueError(f"profiling is not available: {exc}") from None
    extra: dict[str, Any] = {"log": lambda message: print(message, file=sys.stderr)} if args.json else {}
    n_prompts, prompt_file = _profile_prompts(args.prompts, args.n_prompts)
    if args.models is not None:
        extra["models"] = args.models
    if prompt_file is not None:
        extra["prompts"] = prompt_file
    if args.drafts is not None:
        extra["drafts"] = [] if args.drafts == ["none"] else args.drafts
    if args.device != "cpu":
        extra["device"] = args.device
    if args.no_resume:
        extra["resume"] = False
    if args.threads is not None:
        import torch

        torch.set_num_threads(args.threads)
    paths = run_profile(out_dir=args.out, n_prompts=n_prompts, quick=args.quick, **extra)
    if args.json:
        print_json({"files": [str(p) for p in paths]})
    else:
        for path in paths:
            print(path)
    return 0


def _profile_prompts(prompts: str | None, n_prompts: int | None) -> tuple[int | None, Path | None]:
    """``edgelam profile``'s ``--prompts`` (a JSONL file, or a count of the shipped prompts) and
    ``--n-prompts`` as ``(n_prompts, prompt file)``.

    Raises:
        ValueError: a count given twice, or a count below 1.
    """
    if prompts is not None and prompts.isdigit() and not Path(prompts).exists():
        if n_prompts is not None:
            raise ValueError(f"--prompts {prompts} is a count of the shipped prompts; give it or --n-prompts, not both")
        return int(prompts), None
    if n_prompts is not None and n_prompts < 1:
        raise ValueError(f"--n-prompts must be >= 1, got {n_prompts}")
    if prompts is None:
        return (300 if n_prompts is None else n_prompts), None
    return n_prompts, Path(prompts)


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``edgelam``."""
    parser = _Parser(
        prog="edgelam",
        description="Resource management of large AI models at the edge: envs, agents, baselines.",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def command(name: str, help_text: str) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help_text, description=help_text)
        p.add_argument("--json", action="store_true", help="machine-readable output on stdout")
        return p

    p = command("list", "list every env id with its kind, scenarios and baselines")
    p.set_defaults(func=cmd_list)

    cli_train.add_train(command)
    cli_train.add_evaluate(command)
    cli_train.add_plot_episode(command)
    cli_compare.add_compare(command)
    cli_bench.add_bench(command)
    cli_compare.add_results(command)
    cli_compare.add_tune(command)
    p = command("profile", "run the real model and record the replay files")
    p.add_argument("--out", type=Path, help="output folder (default: the package's profiles)")
    p.add_argument(
        "--models",
        nargs="+",
        metavar="MODEL",
        help="shipped names (device edge cloud) or local Hugging Face folders, smallest to largest; the last is "
        "the executed and target model (default: device edge cloud)",
    )
    p.add_argument(
        "--prompts",
        metavar="FILE.jsonl",
        help="prompt file, one JSON object per line with 'prompt' and 'reference' texts, tokenized by each "
        "model's own tokenizer (default: the 300 shipped held-out prompts; a number N: the first N of them)",
    )
    p.add_argument("--n-prompts", type=int, help="profile only the first N prompts")
    p.add_argument(
        "--drafts",
        nargs="+",
        metavar="MODEL",
        help="the models profiled as speculative drafts of the last one (default: all the others; 'none': only "
        "its early exit and int8); each must share its tokenizer",
    )
    p.add_argument("--device", default="cpu", help="where the models run: cpu (default) or cuda[:i]")
    p.add_argument(
        "--no-resume", action="store_true", help="start afresh instead of resuming an unfinished run in --out"
    )
    p.add_argument("--threads", type=int, help="torch CPU threads (default: torch's; 1 on a shared machine)")
    p.add_argument("--quick", action="store_true", help="a short profile")
    p.set_defaults(func=cmd_profile)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``edgelam`` with ``argv`` (default: ``sys.argv[1:]``); returns the exit status."""
    try:
        args = build_parser().parse_args(argv)
        return args.func(args)
    except (ValueError, FileNotFoundError, FileExistsError, gym.error.Error) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(
            "interrupted: finished runs and checkpoints are kept; rerun the same command to resume",
            file=sys.stderr,
        )
        return 130


if __name__ == "__main__":
    sys.exit(main())
