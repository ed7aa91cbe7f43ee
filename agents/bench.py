"""Throughput of the envs: steps per second on random actions (``edgelam bench``).

Actions are sampled before the clock starts and only ``step()`` calls are timed
(resets are not). Per env:

* ``steps_per_s`` / ``mean_step_s``: one env through ``gym.make`` with its default
  wrappers (PettingZoo parallel envs: one ``step`` of all agents counts as one step);
* ``vector_steps_per_s``: env-steps per second (batch x calls) of
  ``gym.make_vec(id, num_envs, vectorization_mode="vector_entry_point")`` (at least
  :data:`VECTOR_CALLS` timed calls, their autoresets included, after :data:`WARMUP_CALLS`
  untimed ones) when the
  env registers a ``vector_entry_point``; for a PettingZoo env with a batched parallel
  game (``batched_entry_point``), agent-steps per second (games x agents x calls) of
  ``num_envs`` games (``vector_unit`` says which);
* ``agents``: for a PettingZoo env whose spec names its ``agents_key``, agent-steps per
  second of the PettingZoo env itself at N = 4, 64 and 1,024 agents (one ``step`` of
  N agents is N agent-steps; about ``agent_steps`` timed at each N, at least
  :data:`AGENT_MIN_STEPS` joint steps, after :data:`WARMUP_CALLS` untimed ones);
* ``live_mean_step_s``: mean step time of ``backend="live"`` (the real model runs
  inside ``step``) over a few steps, for envs that accept ``backend=``;
* ``ratio_vs_mobile_env``: ``steps_per_s`` over mobile-env's
  ``mobile-small-central-v0`` measured in the same run, when mobile-env is installed.

Training speed is in :mod:`edgelam.agents.bench_marl` (``edgelam bench --marl-train``).
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import time
from collections.abc import Sequence
from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium.vector.utils import batch_space

from edgelam.agents.common import is_parallel, make_env, make_parallel, markdown_table, parallel_factory
from edgelam.agents.compare import machine_info
from edgelam.envs import registration

MOBILE_ENV_ID = "mobile-small-central-v0"
AGENT_COUNTS = (4, 64, 1024)  # agents of a PettingZoo env whose spec has an agents_key
AGENT_STEPS = 40_000  # agent-steps timed at each agent count (at least AGENT_MIN_STEPS joint steps)
AGENT_MIN_STEPS = 100  # joint steps timed at least, at each agent count (after WARMUP_CALLS untimed ones)
VECTOR_CALLS = 200  # at least this many timed calls of a vector env or batched game (51,200 env-steps at B = 256)
WARMUP_CALLS = 5  # untimed calls first (the first calls load compiled kernels and fill caches)


def _time_gym(env: gym.Env, steps: int, seed: int) -> float:
    """Seconds spent in ``step`` over ``steps`` pre-sampled random actions."""
    env.action_space.seed(seed)
    actions = [env.action_space.sample() for _ in range(steps)]
    env.reset(seed=seed)
    total = 0.0
    for action in actions:
        began = time.perf_counter()
        _, _, terminated, truncated, _ = env.step(action)
        total += time.perf_counter() - began
        if terminated or truncated:
            env.reset()
    return total


def _time_parallel(env: Any, steps: int, seed: int, warmup: int = 0) -> float:
    """Seconds spent in a parallel env's ``step`` over ``steps`` pre-sampled joint actions (after ``warmup``
    untimed ones)."""
    for i, agent in enumerate(env.possible_agents):
        env.action_space(agent).seed(seed + i)
    actions = [{a: env.action_space(a).sample() for a in env.possible_agents} for _ in range(steps + warmup)]
    env.reset(seed=seed)
    total = 0.0
    for i, joint in enumerate(actions):
        joint = {a: joint[a] for a in env.agents}
        began = time.perf_counter()
        env.step(joint)
        if i >= warmup:
            total += time.perf_counter() - began
        if not env.agents:
            env.reset()
    return total


def _time_batched(env: Any, actions: Sequence[Any]) -> float:
    """Seconds spent in ``env.step`` (a vector env or a batched game, which reset themselves) over ``actions``
    after the first :data:`WARMUP_CALLS`, which are stepped untimed."""
    total = 0.0
    for i, action in enumerate(actions):
        began = time.perf_counter()
        env.step(action)
        if i >= WARMUP_CALLS:
            total += time.perf_counter() - began
    env.close()
    return total


def _vector_steps_per_s(env_id: str, num_envs: int, steps: int, seed: int) -> float:
    """Env-steps per second of the registered vector env."""
    venv = gym.make_vec(env_id, num_envs=num_envs, vectorization_mode="vector_entry_point")
    calls = max(steps // num_envs, VECTOR_CALLS)
    venv.action_space.seed(seed)
    actions = [venv.action_space.sample() for _ in range(calls + WARMUP_CALLS)]
    venv.reset(seed=seed)
    return calls * num_envs / _time_batched(venv, actions)


def _batched_agent_steps_per_s(env_id: str, num_games: int, steps: int, seed: int) -> float:
    """Agent-steps per second of the env's batched parallel game of ``num_games`` games."""
    game = registration.make_batched(env_id, num_games=num_games)
    calls = max(steps // num_games, VECTOR_CALLS)
    n = calls + WARMUP_CALLS
    space = getattr(game, "single_action_space", None)  # a game whose agents share one space (Discrete or Box)
    if isinstance(space, gym.spaces.Box):  # uniform in the box, one (B, N, *shape) array per step
        rng = np.random.default_rng(seed)
        size = (n, num_games, game.num_agents, *space.shape)
        actions = rng.uniform(space.low, space.high, size=size).astype(space.dtype)
    elif space is not None:
        rng = np.random.default_rng(seed)
        actions = rng.integers(space.start, space.start + space.n, size=(n, num_games, game.num_agents))
    else:  # agents with spaces of their own (RobustRouting's router and adversary): a dict of arrays per step
        batched = {a: batch_space(game.action_space(a), num_games) for a in game.possible_agents}
        for i, agent_space in enumerate(batched.values()):
            agent_space.seed(seed + i)
        actions = [{a: agent_space.sample() for a, agent_space in batched.items()} for _ in range(n)]
    game.reset(seed=seed)
    return calls * num_games * game.num_agents / _time_batched(game, actions)


def bench_agents(env_id: str, counts: Sequence[int] = AGENT_COUNTS, agent_steps: int = AGENT_STEPS,
                 seed: int = 0) -> list[dict[str, Any]]:
    """Agent-steps per second of a PettingZoo env at each number of agents (its spec's ``agents_key``)."""
    key = registration.find_spec(env_id).agents_key
    out = []
    for n in counts:
        env = make_parallel(env_id, env_kwargs={key: n})
        steps = max(agent_steps // n, AGENT_MIN_STEPS)
        total = _time_parallel(env, steps, seed, WARMUP_CALLS)
        env.close()
        out.append({"num_agents": n, "steps": steps, "agent_steps_per_s": steps * n / total})
    return out


def _live_step_s(env_id: str, steps: int, seed: int) -> tuple[float | None, str]:
    """Mean step time with ``backend="live"``, or ``None`` and why not."""
    try:
        if is_parallel(env_id):
            env = parallel_factory(env_id)(backend="live")
        else:
            env = gym.make(env_id, backend="live")
    except TypeError:
        return None, "the env takes no backend= argument"
    except (ValueError, FileNotFoundError) as exc:
        return None, f"backend='live' unavailable: {exc}"
    total = _time_parallel(env, steps, seed) if is_parallel(env_id) else _time_gym(env, steps, seed)
    env.close()
    return total / steps, f"mean over {steps} steps"


def bench_env(
    env_id: str,
    steps: int = 10_000,
    num_envs: int = 256,
    live_steps: int = 5,
    seed: int = 0,
    agent_counts: Sequence[int] = AGENT_COUNTS,
    agent_steps: int = AGENT_STEPS,
) -> dict[str, Any]:
    """Measure one env (keys in the module docstring)."""
    parallel = is_parallel(env_id)
    if parallel:
        env = make_parallel(env_id)
        total = _time_parallel(env, steps, seed)
    else:
        env = make_env(env_id)
        total = _time_gym(env, steps, seed)
    env.close()
    out: dict[str, Any] = {
        "env_id": env_id,
        "kind": "pettingzoo" if parallel else "gymnasium",
        "steps": steps,
        "steps_per_s": steps / total,
        "mean_step_s": total / steps,
        "vector_num_envs": None,
        "vector_steps_per_s": None,
    }
    spec = None if parallel else gym.spec(env_id)
    if spec is not None and spec.vector_entry_point is not None:
        out["vector_num_envs"] = num_envs
        out["vector_steps_per_s"] = _vector_steps_per_s(env_id, num_envs, steps, seed)
        out["vector_unit"] = "env-steps/s"
    edgelam_spec = registration.find_spec(env_id)
    if parallel and edgelam_spec is not None and edgelam_spec.batched_entry_point is not None:
        out["vector_num_envs"] = num_envs
        out["vector_steps_per_s"] = _batched_agent_steps_per_s(env_id, num_envs, steps, seed)
        out["vector_unit"] = "agent-steps/s"
    if parallel and edgelam_spec is not None and edgelam_spec.agents_key is not None and agent_counts:
        out["agents"] = bench_agents(env_id, agent_counts, agent_steps, seed)
    if live_steps > 0:
        out["live_mean_step_s"], out["live_note"] = _live_step_s(env_id, live_steps, seed)
    return out


def bench_mobile_env(steps: int = 10_000, seed: int = 0) -> dict[str, Any]:
    """mobile-env's ``mobile-small-central-v0`` measured the same way, or why it was not."""
    if importlib.util.find_spec("mobile_env") is None:
        return {"env_id": MOBILE_ENV_ID, "installed": False, "note": "mobile-env is not installed"}
    import mobile_env  # noqa: F401  (registers its ids)

    env = gym.make(MOBILE_ENV_ID)  # the same default wrappers as the edgelam envs, timed by the same loop
    total = _time_gym(env, steps, seed)
    env.close()
    return {
        "env_id": MOBILE_ENV_ID,
        "installed": True,
        "version": importlib.metadata.version("mobile-env"),
        "steps": steps,
        "steps_per_s": steps / total,
        "mean_step_s": total / steps,
    }


def bench(
    env_ids: Sequence[str] | None = None,
    steps: int = 10_000,
    num_envs: int = 256,
    live_steps: int = 5,
    seed: int = 0,
    agent_counts: Sequence[int] = AGENT_COUNTS,
    agent_steps: int = AGENT_STEPS,
) -> dict[str, Any]:
    """Benchmark envs (default: every registered edgelam id) and mobile-env as a reference.

    Returns:
        ``{"envs": [per-env dict], "mobile_env": dict, "machine": dict}``; each env
        dict has ``ratio_vs_mobile_env`` when mobile-env was measured.
    """
    ids = list(env_ids) if env_ids else [*registration.GYM_ENVS, *registration.PARALLEL_ENVS]
    results = [bench_env(i, steps, num_envs, live_steps, seed, agent_counts, agent_steps) for i in ids]
    mobile = bench_mobile_env(steps, seed)
    for result in results:
        if mobile["installed"]:
            result["ratio_vs_mobile_env"] = result["steps_per_s"] / mobile["steps_per_s"]
    return {"envs": results, "mobile_env": mobile, "machine": machine_info()}


def fmt(value: float | None, scale: float = 1.0, spec: str = ".3g") -> str:
    """``value * scale`` in ``spec``, or ``"-"`` for ``None`` (a cell of the tables)."""
    return "-" if value is None else format(value * scale, spec)


def rows(result: dict[str, Any]) -> list[list[str]]:
    """The benchmark as table rows (header first), shared by the terminal and Markdown output."""
    header = ["env", "kind", "steps/s", "mean step (µs)", "vector env-steps/s", "live step (ms)"]
    header.append("x mobile-env")
    out = [header]
    for r in result["envs"]:
        batch = f" (x{r['vector_num_envs']})" if r["vector_num_envs"] else ""
        if r.get("vector_unit") == "agent-steps/s":
            batch = f" agent-steps (x{r['vector_num_envs']} games)"
        out.append(
            [
                r["env_id"],
                r["kind"],
                fmt(r["steps_per_s"], spec=",.0f"),
                fmt(r["mean_step_s"], 1e6, ".3g"),
                fmt(r["vector_steps_per_s"], spec=",.0f") + batch,
                fmt(r.get("live_mean_step_s"), 1e3, ".3g"),
                fmt(r.get("ratio_vs_mobile_env"), spec=".3g"),
            ]
        )
    mobile = result["mobile_env"]
    if mobile["installed"]:
        speed, step = fmt(mobile["steps_per_s"], spec=",.0f"), fmt(mobile["mean_step_s"], 1e6, ".3g")
        out.append([mobile["env_id"], "gymnasium", speed, step, "-", "-", "1"])
    return out


def agent_rows(result: dict[str, Any]) -> list[list[str]]:
    """Agent-steps/s of the PettingZoo envs at each number of agents (header first); [] when none was measured."""
    measured = [r for r in result["envs"] if r.get("agents")]
    if not measured:
        return []
    counts = sorted({a["num_agents"] for r in measured for a in r["agents"]})
    out = [["env", *(f"N = {n:,} agent-steps/s" for n in counts)]]
    for r in measured:
        by_n = {a["num_agents"]: a["agent_steps_per_s"] for a in r["agents"]}
        out.append([r["env_id"], *(fmt(by_n.get(n), spec=",.0f") for n in counts)])
    return out


def _live_line(r: dict[str, Any]) -> str:
    """One line of the live-backend section: the measured step time with its unit, or why there is none."""
    step_s = r.get("live_mean_step_s")
    if step_s is None:
        return f"- {r['env_id']}: no live figure ({r['live_note']})"
    return f"- {r['env_id']}: {step_s * 1e3:.3g} ms per step ({r['live_note']})"


def to_markdown(result: dict[str, Any]) -> str:
    """A Markdown page of the benchmark: table, mobile-env status, machine."""
    table = rows(result)
    lines = [
        "# edgelam environment throughput",
        "",
        "Random pre-sampled actions; only `step()` is timed. Written by `edgelam bench`.",
        "",
        *markdown_table(table),
        "",
    ]
    mobile = result["mobile_env"]
    if not mobile["installed"]:
        lines += [f"mobile-env ({mobile['env_id']}): {mobile['note']}; no ratio reported.", ""]
    else:
        lines += [f"x mobile-env: steps/s over mobile-env {mobile['version']} ({mobile['env_id']}), same run.", ""]
    scaling = agent_rows(result)
    if scaling:
        lines += [
            "## Agents per PettingZoo env",
            "",
            "Agent-steps per second of the PettingZoo env itself (one `step()` of N agents is N agent-steps).",
            "",
            *markdown_table(scaling),
            "",
        ]
    notes = [_live_line(r) for r in result["envs"] if "live_note" in r]
    if notes:
        lines += [
            "## Live backend",
            "",
            "Mean `step()` time with `backend=\"live\"`: the real model runs inside the step where the env has one.",
            "",
            *notes,
            "",
        ]
    lines += ["## Machine", "", *(f"- {k}: {v}" for k, v in result["machine"].items()), ""]
    return "\n".join(lines)
