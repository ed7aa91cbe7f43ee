"""``edgelam bench``: steps per second of the envs, decode time of the shipped models, MARL training speed."""

from __future__ import annotations

import argparse
from pathlib import Path

from rich.console import Console

from edgelam.agents import bench, bench_marl
from edgelam.agents.cli_args import Command, print_json
from edgelam.agents.common import check_env_id
from edgelam.agents.compare import rich_table


def cmd_bench(args: argparse.Namespace) -> int:
    """Steps per second of the envs on random actions (``--models``: decode time of the shipped models)."""
    if args.speculative:
        from edgelam.agents.bench_models import bench_speculative

        spec = bench_speculative()
        if args.json:
            print_json(spec)
            return 0
        header = ["gamma", "measured tokens/s", "predicted tokens/s"]
        cells = [
            [str(r["gamma"]), f"{r['tokens_per_s']:.1f}", f"{r['predicted_tokens_per_s']:.1f}"] for r in spec["rows"]
        ]
        title = (
            f"live speculative decoding, {spec['target']} target, {spec['draft']} draft, T={spec['temperature']}: "
            f"alpha={spec['alpha']:.3f}, c={spec['c']:.3f}"
        )
        Console().print(rich_table(title, [header, *cells]), crop=False)
        return 0
    if args.models:
        from edgelam.agents.bench_models import bench_models

        model_rows = bench_models()
        if args.json:
            print_json(model_rows)
            return 0
        header = ["model", "layers", "params", "wrapper ms/token", "raw torch ms/token", "overhead"]
        cells = [
            [
                r["model"],
                str(r["layers"]),
                f"{r['parameters'] / 1e6:.2f} M",
                f"{r['wrapper_s_per_token'] * 1e3:.2f}",
                f"{r['raw_s_per_token'] * 1e3:.2f}",
                f"{r['overhead']:.2f}x",
            ]
            for r in model_rows
        ]
        Console().print(rich_table("decode with a KV cache, batch 1, 64-token prompt", [header, *cells]), crop=False)
        return 0
    if args.marl_train:
        hyperparams = {} if args.marl_env_settings else None
        marl = bench_marl.bench_marl_train(timesteps=args.marl_timesteps, hyperparams=hyperparams)
        if args.json:
            print_json(marl)
            return 0
        title = (
            f"parameter-sharing PPO, {marl['timesteps']:,} timesteps over {marl['agent_rows']} agent rows "
            f"(fastest of {len(marl['runs']['batched'])} alternating runs each, same run)"
        )
        Console().print(rich_table(title, bench_marl.marl_rows(marl)), crop=False)
        return 0
    for env_id in args.envs:
        check_env_id(env_id)
    result = bench.bench(args.envs, steps=args.steps, num_envs=args.num_envs, live_steps=args.live_steps)
    if args.markdown:
        path = Path(args.markdown)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(bench.to_markdown(result))
    if args.json:
        print_json(result)
        return 0
    console = Console()
    title = "edgelam bench (random pre-sampled actions; step time only)"
    console.print(rich_table(title, bench.rows(result)), crop=False)
    scaling = bench.agent_rows(result)
    if scaling:
        console.print(rich_table("PettingZoo envs: agent-steps/s at N agents", scaling), crop=False)
    if not result["mobile_env"]["installed"]:
        console.print(f"{result['mobile_env']['env_id']}: {result['mobile_env']['note']}")
    if args.markdown:
        console.print(f"written: {args.markdown}")
    return 0


def add_bench(command: Command) -> None:
    """The ``bench`` subcommand."""
    p = command("bench", "steps per second of the envs on random actions")
    p.add_argument("envs", nargs="*", help="env ids (default: every registered edgelam id)")
    p.add_argument("--steps", type=int, default=10_000, help="timed steps per env (default: 10000)")
    p.add_argument("--num-envs", type=int, default=256, help="batch of the vector env (default: 256)")
    p.add_argument("--live-steps", type=int, default=5, help="steps timed with backend='live' (0: skip)")
    p.add_argument("--markdown", metavar="PATH", help="also write the results as a Markdown page")
    p.add_argument(
        "--models", action="store_true", help="instead: decode time per token of the shipped models, wrapper vs raw"
    )
    p.add_argument(
        "--speculative",
        action="store_true",
        help="instead: live speculative decoding tokens/s per gamma (cloud target, device draft) vs theory",
    )
    p.add_argument(
        "--marl-train",
        action="store_true",
        help=f"instead: parameter-sharing PPO training steps/s of {bench_marl.MARL_ENV_ID} on its batched game vs "
        "through SuperSuit, in the same run",
    )
    p.add_argument(
        "--marl-timesteps", type=int, default=65_536, help="--marl-train: timesteps per run (default: 65536)"
    )
    p.add_argument(
        "--marl-env-settings",
        action="store_true",
        help="--marl-train: the env's PPO settings from configs/agents (default: 64 games, 4096-sample minibatches)",
    )
    p.set_defaults(func=cmd_bench)
