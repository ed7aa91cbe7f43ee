"""``edgelam train | evaluate | plot-episode``: train one agent, evaluate or plot a policy."""

from __future__ import annotations

import argparse
from functools import partial
from pathlib import Path

from rich.console import Console

from edgelam.agents.cli_args import Command, add_env_options, parse_sets, print_json
from edgelam.agents.common import check_env_id, env_dir, is_adversarial, is_parallel, make_parallel
from edgelam.agents.compare import format_cell, rich_table
from edgelam.agents.evaluate import evaluate, score, summarize
from edgelam.agents.metrics import SCORE_KEY
from edgelam.agents.trainers import RARL_ITERATIONS, TrainSettings, default_timesteps, train_run, trainer_for
from edgelam.envs.core.config import apply_overrides


def cmd_train(args: argparse.Namespace) -> int:
    """Train one agent and save the run (through the algorithm's trainer, or RLlib's with ``--engine rllib``)."""
    check_env_id(args.env)
    rllib = args.engine == "rllib"
    trainer = trainer_for(args.algo, "rllib" if rllib else None)
    if args.timesteps is None:  # the entry of the env in configs/agents/hyperparams/<algo>.yml
        args.timesteps = default_timesteps(trainer, args.env)
    folder = f"rllib_{args.algo}" if rllib else args.algo
    out = args.out or Path("runs") / "train" / env_dir(args.env) / folder / f"seed_{args.seed}"
    if not rllib and (args.num_env_runners is not None or args.per_agent):
        raise ValueError("--num-env-runners and --per-agent need --engine rllib")
    run = TrainSettings(
        env_id=args.env,
        algo=args.algo,
        timesteps=args.timesteps,
        seed=args.seed,
        out_dir=out,
        scenario=args.scenario,
        env_kwargs=parse_sets(args.set),
        hyperparams=apply_overrides({}, parse_sets(args.hp, "--hp")),
        resume=args.resume,
        n_envs=args.n_envs,
        vectorized=args.vector,
        iterations=args.iterations,
        num_env_runners=args.num_env_runners,
        per_agent=args.per_agent,
        address=args.address,
    )
    summary = train_run(trainer, run, progress=args.progress and not args.json).summary()
    if args.json:
        print_json(summary)
    else:
        for key, value in summary.items():
            print(f"{key}: {value}")
    return 0


def _with_adversary(env_id: str, policy: str, adversary: str) -> str | dict[str, str]:
    """On an adversarial env (agents [protagonist, "adversary"]), {protagonist: policy, adversary: adversary}."""
    if not is_parallel(env_id):
        return policy
    agents = list(make_parallel(env_id).possible_agents)
    if is_adversarial(agents):
        return {agents[0]: policy, "adversary": adversary}
    return policy


def cmd_evaluate(args: argparse.Namespace) -> int:
    """Evaluate a baseline or a saved agent."""
    check_env_id(args.env)
    rows = evaluate(
        _with_adversary(args.env, args.policy, args.adversary),
        args.env,
        episodes=args.episodes,
        seed=args.seed,
        scenario=args.scenario,
        env_kwargs=parse_sets(args.set),
        deterministic=not args.stochastic,
    )
    summary = summarize(rows)
    if args.score:
        wrap = partial(_with_adversary, args.env, adversary=args.adversary)
        summary = {"return": summary["return"],
                   SCORE_KEY: score(rows, args.env, args.seed, args.scenario, parse_sets(args.set), wrap), **summary}
    if args.json:
        print_json(
            {
                "env_id": args.env,
                "policy": args.policy,
                "seed": args.seed,
                "summary": {m: {"mean": v[0], "ci95": v[1], "n": v[2]} for m, v in summary.items()},
                "episodes": rows,
            }
        )
        return 0
    rows = [["metric", "mean ± 95% CI"], *([m, format_cell(v[0], v[1])] for m, v in summary.items())]
    console = Console()
    console.print(rich_table(f"{args.policy} on {args.env}", rows, left=1), crop=False)
    console.print(f"{args.episodes} episodes, reset seeds {args.seed}..{args.seed + args.episodes - 1}")
    return 0


def cmd_plot_episode(args: argparse.Namespace) -> int:
    """Plot one episode: decisions, physical metrics in SI units, cumulative reward."""
    from edgelam.agents.episode_plot import panel_keys, plot_episode, record_episode

    check_env_id(args.env)
    trace = record_episode(
        _with_adversary(args.env, args.policy, args.adversary),
        args.env,
        seed=args.seed,
        scenario=args.scenario,
        env_kwargs=parse_sets(args.set),
        deterministic=not args.stochastic,
    )
    path = plot_episode(trace, args.out)
    summary = {"out": str(path), "steps": trace.steps, "return": trace.episode_return, "metrics": panel_keys(trace)}
    if args.json:
        print_json({"env_id": args.env, "policy": args.policy, "seed": args.seed, **summary})
    else:
        metrics = ", ".join(summary["metrics"])
        print(f"wrote {path}: {trace.steps} steps, return {trace.episode_return:.4g}, metrics {metrics}")
    return 0


def add_train(command: Command) -> None:
    """The ``train`` subcommand."""
    p = command("train", "train an SB3 agent (checkpoints, TensorBoard, learning curve)")
    add_env_options(p)
    p.add_argument(
        "--algo",
        default="ppo",
        help="ppo | a2c | dqn | sac | td3 | maskable_ppo | ppo_lagrangian (envs with a budget) | rarl "
        "(adversarial parallel envs) (default: ppo)",
    )
    p.add_argument(
        "--timesteps",
        type=int,
        help="total env steps (default: n_timesteps of the env's entry in configs/agents/hyperparams/<algo>.yml)",
    )
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=Path, help="run folder (default: runs/train/<env>/<algo>/seed_<seed>)")
    p.add_argument("--n-envs", type=int, help="vectorised env copies (default: from configs/agents)")
    p.add_argument(
        "--vector",
        action="store_true",
        help="train on the env's batched vector env (its vector_entry_point) through SB3VectorAdapter; "
        "rarl: each side on the env's batched game",
    )
    p.add_argument(
        "--hp",
        action="append",
        metavar="KEY=VALUE",
        help="hyperparameter override (repeatable), e.g. n_steps=512 or policy_kwargs.net_arch=[32,32]",
    )
    p.add_argument("--resume", action="store_true", help="continue the run in --out up to --timesteps")
    p.add_argument(
        "--iterations",
        type=int,
        default=RARL_ITERATIONS,
        help=f"rarl: protagonist/adversary phase pairs; the phases share --timesteps (default: {RARL_ITERATIONS})",
    )
    p.add_argument("--progress", action="store_true", help="show a progress bar")
    p.add_argument(
        "--engine",
        choices=("sb3", "rllib"),
        default="sb3",
        help="sb3 (default) or rllib: Ray RLlib training (algo ppo; needs the ray extra)",
    )
    p.add_argument(
        "--num-env-runners", type=int, help="rllib: remote env runners sampling in parallel (default: 0, in-process)"
    )
    p.add_argument("--per-agent", action="store_true", help="rllib, PettingZoo envs: one policy per agent")
    p.add_argument("--address", help="rllib: Ray cluster to join (default: a local Ray instance)")
    p.set_defaults(func=cmd_train)


def add_evaluate(command: Command) -> None:
    """The ``evaluate`` subcommand."""
    p = command("evaluate", "evaluate a baseline or a saved agent through the common loop")
    add_env_options(p)
    p.add_argument("--policy", required=True, help="baseline name or path to a model.zip / run folder")
    p.add_argument("--episodes", type=int, default=10)
    p.add_argument("--seed", type=int, default=0, help="episode i resets with seed + i (default: 0)")
    p.add_argument("--stochastic", action="store_true", help="sample actions instead of deterministic ones")
    p.add_argument(
        "--adversary", default="random", help="adversarial envs: the adversary's policy (default: random)"
    )
    p.add_argument(
        "--score", action="store_true",
        help="also the normalised score (return - random) / (hindsight - random), random and hindsight "
        "evaluated on the same episodes",
    )
    p.set_defaults(func=cmd_evaluate)


def add_plot_episode(command: Command) -> None:
    """The ``plot-episode`` subcommand."""
    p = command("plot-episode", "a timeline figure of one episode of a baseline or a saved agent")
    add_env_options(p)
    p.add_argument("--policy", required=True, help="baseline name or path to a model.zip / run folder")
    p.add_argument("--seed", type=int, default=0, help="reset seed of the episode (default: 0)")
    p.add_argument("--out", type=Path, required=True, help="the PNG to write")
    p.add_argument("--stochastic", action="store_true", help="sample actions instead of deterministic ones")
    p.add_argument(
        "--adversary", default="random", help="adversarial envs: the adversary's policy (default: random)"
    )
    p.set_defaults(func=cmd_plot_episode)
