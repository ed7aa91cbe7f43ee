"""The documentation's figures: one ``rgb_array`` frame and one ``plot-episode`` figure per env id.

``python -m edgelam.agents.docs_figures [--out docs/figures] [--only ENV ...]`` (``make figures``)
plays, for every registered spec, one episode of :func:`figure_policy` on the env's benchmark
scenario (its entry in ``configs/agents/results.yaml``, the setting ``docs/results.md`` reports;
``default`` for an env without one) from reset seed :data:`SEED` (the first evaluation episode
of ``edgelam compare`` and ``edgelam results``), and writes

* ``<out>/<scenario_dir>/frame.png``: ``env.render()`` in ``rgb_array`` mode after the last
  step (the last :data:`~edgelam.envs.core.render.HISTORY_STEPS` steps);
* ``<out>/<scenario_dir>/episode.png``: the timeline of ``edgelam plot-episode`` of that episode;
* ``<out>/<scenario_dir>/figures.json``: which episode they show (env, scenario, policy, seed, steps,
  return, the command of each figure), read by the docs pages for their captions.

Everything it reads (specs, baselines, scenarios, profiles, the model family) comes from the
package as installed, so rerunning it after a retraining or a new profile redraws the figures
with no change here. The docs pages (:mod:`edgelam.agents.docs_site`) show the two files with the
episode ``figures.json`` names.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from stable_baselines3.common.utils import set_random_seed

from edgelam import baselines
from edgelam.agents.common import is_adversarial, make_env, make_parallel
from edgelam.agents.episode_plot import plot_episode, record_episode
from edgelam.agents.evaluate import play_episode
from edgelam.agents.marl import _agent_policies, play_parallel_episode
from edgelam.agents.policies import resolve_policy
from edgelam.envs.core.render import HISTORY_STEPS
from edgelam.envs.core.spec import EnvSpec
from edgelam.envs.registration import SPECS

SEED = 10_000  # the reset seed of the first evaluation episode of `edgelam compare` (--eval-seed)
DEFAULT_OUT = Path(__file__).resolve().parent.parent / "docs" / "figures"
FRAME = "frame.png"
EPISODE = "episode.png"
SETTING = "figures.json"
# the first of these that applies to the env's scenario draws its figures: the budget-aware controller
# where there is one (its virtual queue is in the figure), else the per-step optimiser, else the static rule
FIGURE_POLICIES: tuple[str, ...] = ("lyapunov", "leviathan", "greedy", "neurosurgeon", "equal")
ADVERSARY = "random"  # the adversary of an adversarial env, as `edgelam results` evaluates against


@dataclass(frozen=True)
class FigureSetting:
    """What one env's figures show: the policy (an adversarial env: its protagonist's), scenario and seed."""

    env_id: str
    scenario: str
    policy: str
    seed: int = SEED
    adversary: str | None = None


def figure_policy(env_id: str, scenario: str = "default") -> str:
    """The baseline the figures of ``env_id`` show: the first of :data:`FIGURE_POLICIES` that applies.

    A baseline that does not apply to the scenario (a Lyapunov controller without a budget to keep)
    raises ``ValueError`` when it is built, as ``edgelam compare`` skips it; ``random`` when none applies.
    """
    names = baselines.available(env_id)
    parallel = next(s for s in SPECS if s.id == env_id).kind == "pettingzoo"
    env: Any = make_parallel(env_id, scenario) if parallel else make_env(env_id, scenario)
    try:
        for name in (p for p in FIGURE_POLICIES if p in names):
            try:
                resolve_policy(name, env, SEED)
            except ValueError:
                continue
            return name
    finally:
        env.close()
    return "random"


def benchmark_scenario(env_id: str) -> str:
    """The scenario of ``env_id``'s entry in ``configs/agents/results.yaml`` (``default`` without one)."""
    from edgelam.agents.results import load_entries

    return next((e.scenario for e in load_entries() if e.env == env_id), "default")


def figure_setting(spec: EnvSpec) -> FigureSetting:
    """The episode the figures of ``spec`` show."""
    adversary = None
    if spec.kind == "pettingzoo" and is_adversarial(tuple(make_parallel(spec.id).possible_agents)):
        adversary = ADVERSARY
    scenario = benchmark_scenario(spec.id)
    return FigureSetting(spec.id, scenario, figure_policy(spec.id, scenario), adversary=adversary)


def _policy_arg(setting: FigureSetting, agents: Sequence[str] = ()) -> str | dict[str, str]:
    if setting.adversary is None:
        return setting.policy
    return {agents[0]: setting.policy, "adversary": setting.adversary}


def render_frame(setting: FigureSetting) -> np.ndarray:
    """The ``rgb_array`` frame after the last step of the episode of ``setting`` (H, W, 3 uint8)."""
    set_random_seed(setting.seed)
    render = {"render_mode": "rgb_array"}
    spec = next(s for s in SPECS if s.id == setting.env_id)
    if spec.kind == "pettingzoo":
        env: Any = make_parallel(spec.id, setting.scenario, render)
        policies = _agent_policies(_policy_arg(setting, env.possible_agents), env, setting.seed)
        play_parallel_episode(env, policies, setting.seed, True, lambda *_: None)
    else:
        env = make_env(spec.id, setting.scenario, render)
        play_episode(env, resolve_policy(setting.policy, env, setting.seed), setting.seed, True, lambda *_: None)
    frame = env.render()
    env.close()
    if not isinstance(frame, np.ndarray) or frame.ndim != 3:
        raise ValueError(f"{spec.id}: render() in rgb_array mode returned {type(frame).__name__}")
    return frame


def plot_command(setting: FigureSetting, out: str | Path) -> str:
    """The ``edgelam plot-episode`` command line that draws the episode figure of ``setting``."""
    command = f"edgelam plot-episode {setting.env_id} --scenario {setting.scenario} --policy {setting.policy}"
    if setting.adversary is not None:
        command += f" --adversary {setting.adversary}"
    return f"{command} --seed {setting.seed} --out {out}"


def write_figures(spec: EnvSpec, out_dir: str | Path = DEFAULT_OUT) -> tuple[Path, Path, Path]:
    """Write ``frame.png``, ``episode.png`` and ``figures.json`` of ``spec`` under ``out_dir/<scenario_dir>/``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    setting = figure_setting(spec)
    folder = Path(out_dir) / spec.scenario_dir
    folder.mkdir(parents=True, exist_ok=True)
    frame_path = folder / FRAME
    plt.imsave(frame_path, render_frame(setting))
    agents: Sequence[str] = ()
    if setting.adversary is not None:
        agents = make_parallel(spec.id).possible_agents
    trace = record_episode(_policy_arg(setting, agents), spec.id, seed=setting.seed, scenario=setting.scenario)
    episode_path = plot_episode(trace, folder / EPISODE)
    record = {
        **dataclasses.asdict(setting),
        "steps": trace.steps,
        "return": trace.episode_return,
        "frame_steps": min(trace.steps, HISTORY_STEPS),
        "command": f"python -m edgelam.agents.docs_figures --only {spec.id}",
        "plot_command": plot_command(setting, Path("docs") / "figures" / spec.scenario_dir / EPISODE),
    }
    setting_path = folder / SETTING
    setting_path.write_text(json.dumps(record, indent=2) + "\n")
    return frame_path, episode_path, setting_path


def main(argv: Sequence[str] | None = None) -> int:
    """Write the figures of every spec (or of ``--only`` ids); prints one line per file."""
    parser = argparse.ArgumentParser(prog="python -m edgelam.agents.docs_figures", description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help=f"figure folder (default: {DEFAULT_OUT})")
    parser.add_argument("--only", nargs="*", metavar="ENV", help="only these env ids")
    args = parser.parse_args(argv)
    known = [s.id for s in SPECS]
    unknown = sorted(set(args.only or ()) - set(known))
    if unknown:
        parser.error(f"unknown env ids {unknown} (registered: {', '.join(known)})")
    for spec in SPECS:
        if args.only and spec.id not in args.only:
            continue
        for path in write_figures(spec, args.out):
            print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
