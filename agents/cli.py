"""The ``edgelam`` command: list | train | evaluate | plot-episode | compare | bench | results | profile.

Every subcommand takes ``--json`` (machine-readable output on stdout, nothing
else there). ``--set key=value`` sets a dotted scenario key (the value is read as
YAML: ``--set channel.doppler_hz=50 --set energy.enabled=true``). User errors
(unknown env id, bad ``--set``, invalid scenario values, missing model or
profile files) print one line ``error: ...`` on stderr and exit with status 2.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import gymnasium as gym
import yaml
from rich.console import Console

from edgelam import baselines
from edgelam.agents import bench
from edgelam.agents import hyperparams as hp
from edgelam.agents.common import check_env_id, env_dir, is_adversarial, is_parallel, make_parallel
from edgelam.agents.compare import RARL_ITERATIONS, compare, format_cell, jsonable, rich_table
from edgelam.agents.evaluate import evaluate, summarize
from edgelam.agents.rarl import train_rarl
from edgelam.agents.train import train
from edgelam.envs import registration
from edgelam.envs.core.config import apply_overrides, scenario_names


class UsageError(ValueError):
    """A command line argparse rejects (reported like any other user error)."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # type: ignore[override]
        raise UsageError(message)


def parse_sets(items: Sequence[str] | None, option: str = "--set") -> dict[str, Any]:
    """``["a.b=1", "c=true"]`` -> ``{"a.b": 1, "c": True}`` (values parsed as YAML).

    Raises:
        ValueError: on an item without ``=``, an empty key or a value YAML cannot parse.
    """
    out: dict[str, Any] = {}
    for item in items or ():
        key, sep, text = item.partition("=")
        key = key.strip()
        if not sep or not key or " " in key:
            raise ValueError(f"bad {option} {item!r}: expected key=value, e.g. channel.doppler_hz=50")
        try:
            out[key] = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            raise ValueError(f"bad {option} {item!r}: cannot parse the value: {exc}") from None
    return out


def _csv(text: str, cast: type = str) -> list:
    try:
        return [cast(x.strip()) for x in text.split(",") if x.strip()]
    except ValueError:
        raise ValueError(f"bad list {text!r}: expected comma-separated {cast.__name__} values") from None


def _print_json(data: Any) -> None:
    print(json.dumps(jsonable(data), indent=2))


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
        _print_json(entries)
        return 0
    rows = [["id", "kind", "scenarios", "baselines", "steps"]]
    for e in entries:
        steps = str(e["episode_length"] or e["max_episode_steps"] or "-")
        rows.append([e["id"], e["kind"], ", ".join(e["scenarios"]) or "-", ", ".join(e["baselines"]), steps])
    Console().print(rich_table("edgelam environments", rows, left=4), crop=False)
    return 0


def cmd_train(args: argparse.Namespace) -> int:
    """Train one agent and save the run."""
    check_env_id(args.env)
    if args.timesteps is None:  # the entry of the env in configs/agents/hyperparams/<algo>.yml
        args.timesteps = hp.default_timesteps(args.env, "ppo" if args.algo == "rarl" else args.algo)
    folder = f"rllib_{args.algo}" if args.engine == "rllib" else args.algo
    out = args.out or Path("runs") / "train" / env_dir(args.env) / folder / f"seed_{args.seed}"
    if args.engine == "rllib":
        summary = _train_rllib(args, out)
    elif args.num_env_runners is not None or args.per_agent:
        raise ValueError("--num-env-runners and --per-agent need --engine rllib")
    elif args.algo == "rarl":
        summary = _train_rarl(args, out)
    else:
        summary = _train(args, out)
    if args.json:
        _print_json(summary)
    else:
        for key, value in summary.items():
            print(f"{key}: {value}")
    return 0


def _train(args: argparse.Namespace, out: Path) -> dict[str, Any]:
    result = train(
        args.env,
        args.algo,
        timesteps=args.timesteps,
        seed=args.seed,
        out_dir=out,
        scenario=args.scenario,
        env_kwargs=parse_sets(args.set),
        n_envs=args.n_envs,
        hyperparams=apply_overrides({}, parse_sets(args.hp, "--hp")),
        progress=args.progress and not args.json,
        resume=args.resume,
        vectorized=args.vector,
    )
    return {
        "env_id": args.env,
        "algo": result.algo,
        "seed": result.seed,
        "out_dir": result.out_dir,
        "model": result.model_path,
        "vecnormalize": result.vecnormalize_path,
        "num_timesteps": result.num_timesteps,
        "resumed_from": result.resumed_from,
        "wall_time_s": result.wall_time_s,
        "learning_curve": result.learning_curve,
        "tensorboard": result.out_dir / "tb",
    }


def _train_rllib(args: argparse.Namespace, out: Path) -> dict[str, Any]:
    from edgelam.agents.rllib_engine import train_rllib

    if args.resume or args.n_envs is not None:
        raise ValueError("--engine rllib takes neither --resume nor --n-envs (use --num-env-runners)")
    result = train_rllib(
        args.env,
        args.algo,
        timesteps=args.timesteps,
        seed=args.seed,
        out_dir=out,
        scenario=args.scenario,
        env_kwargs=parse_sets(args.set),
        num_env_runners=args.num_env_runners or 0,
        per_agent=args.per_agent,
        hyperparams=apply_overrides({}, parse_sets(args.hp, "--hp")),
        address=args.address,
    )
    return result.summary()


def _train_rarl(args: argparse.Namespace, out: Path) -> dict[str, Any]:
    if not is_parallel(args.env):
        raise ValueError(f"rarl needs a 2-agent PettingZoo env [protagonist, adversary]; {args.env} is Gymnasium")
    if args.resume or args.n_envs is not None:
        raise ValueError("rarl runs take neither --resume nor --n-envs (set n_envs with --hp)")
    steps = max(args.timesteps // (2 * args.iterations), 1)
    result = train_rarl(
        args.env,
        iterations=args.iterations,
        protagonist_steps=steps,
        adversary_steps=steps,
        seed=args.seed,
        out_dir=out,
        scenario=args.scenario,
        env_kwargs=parse_sets(args.set),
        hyperparams=apply_overrides({}, parse_sets(args.hp, "--hp")),
        progress=args.progress and not args.json,
        batched=args.vector,
    )
    return {
        "env_id": args.env,
        "algo": "rarl",
        "seed": args.seed,
        "out_dir": result.out_dir,
        "models": {agent: result.out_dir / agent / "model.zip" for agent in result.policies},
        "history": result.history,
    }


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
    if args.json:
        _print_json(
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
        _print_json({"env_id": args.env, "policy": args.policy, "seed": args.seed, **summary})
    else:
        metrics = ", ".join(summary["metrics"])
        print(f"wrote {path}: {trace.steps} steps, return {trace.episode_return:.4g}, metrics {metrics}")
    return 0


def cmd_compare(args: argparse.Namespace) -> int:
    """Train agents over seeds and compare them with the baselines."""
    check_env_id(args.env)
    out = args.out or Path("runs") / "compare" / env_dir(args.env)
    engine_kwargs: dict[str, Any] = {}
    run_compare = compare
    if args.engine == "ray":
        from edgelam.agents.ray_engine import compare_ray

        run_compare = compare_ray
        engine_kwargs = {"address": args.address, "workers": args.workers, "max_failures": args.max_failures}
    elif args.address is not None or args.workers is not None:
        raise ValueError("--address and --workers need --engine ray")
    result = run_compare(
        args.env,
        scenario=args.scenario,
        algos=_csv(args.algos) if args.algos is not None else None,
        seeds=_csv(args.seeds, int) if args.seeds else None,
        timesteps=args.timesteps,
        baselines=_csv(args.baselines) if args.baselines is not None else None,
        episodes=args.episodes,
        out_dir=out,
        quick=args.quick,
        env_kwargs=parse_sets(args.set),
        progress=not args.json and not args.no_progress,
        eval_seed=args.eval_seed,
        eval_adversary=args.eval_adversary,
        console=Console(stderr=True) if args.json else None,
        **engine_kwargs,
    )
    if args.json:
        print(result.files["results.json"].read_text(), end="")
    if result.failed:
        jobs = ", ".join(f["job"] for f in result.failed)
        print(f"error: {len(result.failed)} jobs failed ({jobs}); see {out / 'report.md'}", file=sys.stderr)
        return 1
    return 0


def cmd_bench(args: argparse.Namespace) -> int:
    """Steps per second of the envs on random actions (``--models``: decode time of the shipped models)."""
    if args.speculative:
        from edgelam.agents.bench_models import bench_speculative

        spec = bench_speculative()
        if args.json:
            _print_json(spec)
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
            _print_json(model_rows)
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
        marl = bench.bench_marl_train(timesteps=args.marl_timesteps, hyperparams={} if args.marl_env_settings else None)
        if args.json:
            _print_json(marl)
            return 0
        title = (
            f"parameter-sharing PPO, {marl['timesteps']:,} timesteps over {marl['agent_rows']} agent rows "
            f"(fastest of {len(marl['runs']['batched'])} alternating runs each, same run)"
        )
        Console().print(rich_table(title, bench.marl_rows(marl)), crop=False)
        return 0
    for env_id in args.envs:
        check_env_id(env_id)
    result = bench.bench(args.envs, steps=args.steps, num_envs=args.num_envs, live_steps=args.live_steps)
    if args.markdown:
        path = Path(args.markdown)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(bench.to_markdown(result))
    if args.json:
        _print_json(result)
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


def cmd_results(args: argparse.Namespace) -> int:
    from edgelam.agents.results import run_results

    doc = run_results(only=args.only, out_dir=args.out, doc=args.doc)
    if args.json:
        _print_json({"doc": str(doc)})
    else:
        print(f"wrote {doc}")
    return 0


def cmd_tune(args: argparse.Namespace) -> int:
    """Optuna study of one algorithm's hyperparameters on one env; --write puts the best into the file."""
    from edgelam.agents.tune import TuneSettings, tune, write_best

    settings = TuneSettings(
        env_id=args.env, algo=args.algo, trials=args.trials, minutes=args.minutes, timesteps=args.timesteps,
        evaluations=args.evaluations, episodes=args.episodes, seed=args.seed, scenario=args.scenario,
        env_kwargs=parse_sets(args.set), out=args.out,
    )
    if args.engine == "ray":
        from edgelam.agents.tune_ray import tune_ray

        result = tune_ray(settings, workers=args.workers, address=args.address)
    else:
        result = tune(settings, log=(lambda m: print(m, file=sys.stderr)) if args.json else print)
    written = None
    if args.write and result.gain <= 0:
        print(f"not written: no trial beat the entry as it stands (gain {result.gain:.4g})", file=sys.stderr)
    elif args.write:
        command = " ".join(["edgelam tune", *(sys.argv[2:] if sys.argv[1:2] == ["tune"] else [args.env])])
        written = write_best(result, command)
    summary = {**dataclasses.asdict(result), "gain": result.gain, "written": str(written) if written else None}
    summary["study"] = str(summary.pop("folder"))
    if args.json:
        _print_json(summary)
    else:
        for key in ("best", "untuned", "gain", "best_params", "complete", "pruned", "study", "written"):
            print(f"{key}: {summary[key]}")
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
        _print_json({"files": [str(p) for p in paths]})
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


def _add_env_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("env", help="env id, e.g. edgelam/SplitInference-v0 (see `edgelam list`)")
    parser.add_argument("--scenario", default="default", help="scenario name or YAML path (default: default)")
    parser.add_argument(
        "--set",
        action="append",
        metavar="KEY=VALUE",
        help="dotted scenario override, value read as YAML (repeatable), e.g. channel.doppler_hz=50",
    )


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

    p = command("train", "train an SB3 agent (checkpoints, TensorBoard, learning curve)")
    _add_env_options(p)
    p.add_argument(
        "--algo",
        default="ppo",
        help="ppo | a2c | dqn | sac | td3 | maskable_ppo | rarl (adversarial parallel envs) (default: ppo)",
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

    p = command("evaluate", "evaluate a baseline or a saved agent through the common loop")
    _add_env_options(p)
    p.add_argument("--policy", required=True, help="baseline name or path to a model.zip / run folder")
    p.add_argument("--episodes", type=int, default=10)
    p.add_argument("--seed", type=int, default=0, help="episode i resets with seed + i (default: 0)")
    p.add_argument("--stochastic", action="store_true", help="sample actions instead of deterministic ones")
    p.add_argument(
        "--adversary", default="random", help="adversarial envs: the adversary's policy (default: random)"
    )
    p.set_defaults(func=cmd_evaluate)

    p = command("plot-episode", "a timeline figure of one episode of a baseline or a saved agent")
    _add_env_options(p)
    p.add_argument("--policy", required=True, help="baseline name or path to a model.zip / run folder")
    p.add_argument("--seed", type=int, default=0, help="reset seed of the episode (default: 0)")
    p.add_argument("--out", type=Path, required=True, help="the PNG to write")
    p.add_argument("--stochastic", action="store_true", help="sample actions instead of deterministic ones")
    p.add_argument(
        "--adversary", default="random", help="adversarial envs: the adversary's policy (default: random)"
    )
    p.set_defaults(func=cmd_plot_episode)

    p = command("compare", "train agents over seeds and compare them with every baseline")
    _add_env_options(p)
    p.add_argument(
        "--algos", help="comma-separated algorithms (default: ppo; adversarial envs: rarl; empty: baselines only)"
    )
    p.add_argument("--seeds", help="comma-separated training seeds (default: 0,1,2; --quick: 0,1)")
    p.add_argument("--timesteps", type=int, help="env steps per run (default: 100000; --quick: 20000)")
    p.add_argument("--episodes", type=int, help="evaluation episodes (default: 30; --quick: 10)")
    p.add_argument("--baselines", help="comma-separated baselines (default: all available)")
    p.add_argument("--quick", action="store_true", help="a setting that finishes in minutes on 2 cores")
    p.add_argument("--out", type=Path, help="output folder (default: runs/compare/<env>); rerun to resume")
    p.add_argument("--eval-seed", type=int, default=10_000, help="seed of the first evaluation episode")
    p.add_argument(
        "--eval-adversary",
        default="random",
        help="adversarial envs: the adversary policies are evaluated against (baseline name or saved policy)",
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
        help=f"instead: parameter-sharing PPO training steps/s of {bench.MARL_ENV_ID} on its batched game vs "
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

    p = command("results", "run the compare of every env in configs/agents/results.yaml, write docs/results.md")
    p.add_argument("--only", nargs="*", metavar="ENV", help="only these env ids")
    p.add_argument("--out", type=Path, default=Path("runs/results"), help="raw compare folders (resumable)")
    p.add_argument("--doc", type=Path, default=Path("docs/results.md"), help="the Markdown page to write")
    p.set_defaults(func=cmd_results)

    p = command("tune", "Optuna study (TPE, median pruner) of an algorithm's hyperparameters on one env")
    _add_env_options(p)
    p.add_argument("--algo", default="ppo", help="ppo | a2c | dqn | sac | td3 | maskable_ppo (default: ppo)")
    p.add_argument("--trials", type=int, default=20, help="trials of the study (default: 20)")
    p.add_argument("--minutes", type=float, default=20.0, help="wall-time limit of the study (default: 20)")
    p.add_argument("--timesteps", type=int, help="env steps per trial (default: the entry's n_timesteps)")
    p.add_argument("--evaluations", type=int, default=4, help="validation points per trial, for pruning (default: 4)")
    p.add_argument("--episodes", type=int, default=10, help="validation episodes per evaluation (default: 10)")
    p.add_argument("--seed", type=int, default=0, help="sampler and training seed (default: 0)")
    p.add_argument("--out", type=Path, help="study folder, resumable (default: runs/tune/<env>/<algo>)")
    p.add_argument("--write", action="store_true",
                   help="write the best trial into configs/agents/hyperparams/<algo>.yml, the study beside it")
    p.add_argument("--engine", choices=("local", "ray"), default="local",
                   help="local (default) or ray: the trials through Ray Tune's Optuna search (needs the ray extra)")
    p.add_argument("--workers", type=int, default=1, help="ray: trials at once (default: 1)")
    p.add_argument("--address", help="ray: Ray cluster to join (default: a local Ray instance)")
    p.set_defaults(func=cmd_tune)

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
