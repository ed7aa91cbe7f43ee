"""The :class:`Trainer` protocol: one algorithm family that trains a run folder, and the registry of them.

Every way edgelam trains an agent (SB3's algorithms, :mod:`edgelam.agents.train`; RARL,
:mod:`edgelam.agents.rarl`; RLlib, :mod:`edgelam.agents.rllib_engine`) is a Trainer: it
says what a run's ``meta.json`` must match (:meth:`Trainer.settings`), trains from where
:func:`~edgelam.agents.runs.open_run` says (:meth:`Trainer.fit`) and loads a finished run
(:meth:`Trainer.load`); :func:`train_run` is the one path from settings to a trained run,
for ``edgelam train``, ``compare`` and ``tune`` alike.

Adding an algorithm is one Trainer class and its hyperparameters
(``configs/agents/hyperparams/<algo>.yml``): register the class in :data:`TRAINERS`
under the algorithm's name (``"module:Class"``, imported when used) and every command
trains it.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from edgelam.agents import hyperparams as hp
from edgelam.agents.runs import Resume, open_run

# RARL: (protagonist phase, adversary phase) pairs of a run, unless set
RARL_ITERATIONS = 4

# algorithm -> its Trainer class ("module:Class"); every class is built as Class(algo)
TRAINERS: dict[str, str] = {
    **{algo: "edgelam.agents.train:SB3Trainer" for algo in hp.ALGOS},
    "rarl": "edgelam.agents.rarl:RarlTrainer",
    "ppo_lagrangian": "edgelam.agents.lagrangian:LagrangianTrainer",
}
# engine -> the Trainer class of every algorithm it trains (the default engine is TRAINERS')
ENGINES: dict[str, str] = {"rllib": "edgelam.agents.rllib_engine:RLlibTrainer"}


@dataclass(frozen=True)
class TrainSettings:
    """What one training run is: env, algorithm, budget, folder, and how it trains.

    Attributes:
        env_id: a Gymnasium id or an edgelam parallel id.
        algo: the algorithm (a key of :data:`TRAINERS`).
        timesteps: total env steps of the run.
        seed: the run's seed.
        out_dir: the run folder (layout in :mod:`edgelam.agents.runs`).
        scenario: scenario name or YAML path.
        env_kwargs: dotted scenario overrides.
        hyperparams: overrides of the env's entry in ``configs/agents/hyperparams/<algo>.yml``.
        resume: continue the run in ``out_dir`` (a finished one is loaded, not retrained).
        n_envs: SB3: vectorised env copies, overriding the hyperparameter file.
        vectorized: train on the env's batched vector env (RARL: each side on its batched game).
        iterations: RARL: protagonist/adversary phase pairs sharing ``timesteps``.
        threads: torch CPU threads while learning.
        checkpoint_freq: SB3: env steps between checkpoints (default: a fifth of ``timesteps``).
        num_env_runners: RLlib: remote env runners (``None``: 0, sampling in this process).
        per_agent: RLlib, parallel envs: one policy per agent.
        address: RLlib: the Ray cluster to join.
        max_iterations: RLlib: stop after this many iterations.
    """

    env_id: str
    algo: str = "ppo"
    timesteps: int = 100_000
    seed: int = 0
    out_dir: Path = Path("runs/train")
    scenario: str = "default"
    env_kwargs: Mapping[str, Any] = field(default_factory=dict)
    hyperparams: Mapping[str, Any] | None = None
    resume: bool = False
    n_envs: int | None = None
    vectorized: bool = False
    iterations: int = RARL_ITERATIONS
    threads: int = 1
    checkpoint_freq: int | None = None
    num_env_runners: int | None = None
    per_agent: bool = False
    address: str | None = None
    max_iterations: int | None = None


@dataclass
class TrainedRun:
    """What a trainer produced (each trainer's result adds its own fields).

    Attributes:
        env_id: the env id.
        algo: the algorithm.
        seed: the run's seed.
        out_dir: the run folder.
        num_timesteps: env steps trained in total.
        wall_time_s: training wall time over all sessions of the run.
        learning_curve: the run's ``learning_curve.csv``.
        reused: the run was finished in its folder and loaded, not trained.
    """

    env_id: str
    algo: str
    seed: int
    out_dir: Path
    num_timesteps: int
    wall_time_s: float
    learning_curve: Path
    reused: bool

    def policy_path(self) -> Path:
        """The folder that loads as the trained policy (:func:`edgelam.agents.policies.load_policy`)."""
        return self.out_dir

    def summary(self) -> dict[str, Any]:
        """The run's numbers and files, as ``edgelam train`` prints them."""
        return {
            "env_id": self.env_id,
            "algo": self.algo,
            "seed": self.seed,
            "out_dir": self.out_dir,
            "num_timesteps": self.num_timesteps,
            "wall_time_s": self.wall_time_s,
            "learning_curve": self.learning_curve,
        }


class Trainer(Protocol):
    """An algorithm family that trains run folders.

    Attributes:
        hyperparams_algo: whose ``configs/agents/hyperparams/<algo>.yml`` it reads.
        adversarial: it trains the protagonist of a [protagonist, ``"adversary"``] game
            (compare runs it on those envs, and only it).
        final: the file of a finished run in its folder.
    """

    hyperparams_algo: str
    adversarial: bool
    final: str

    def settings(self, run: TrainSettings) -> dict[str, Any]:
        """What ``meta.json`` records of the run and a rerun must match (``ValueError`` on bad settings)."""
        ...

    def budget(self, run: TrainSettings) -> int:
        """Env steps a finished run needs to be reused for ``run``."""
        ...

    def fit(self, run: TrainSettings, start: Resume, progress: bool) -> TrainedRun:
        """Train from ``start`` (a checkpoint, or from scratch) and write the run folder."""
        ...

    def load(self, run: TrainSettings, start: Resume) -> TrainedRun:
        """The finished run ``start`` found in the folder."""
        ...


def _load(entry: str) -> Any:
    """The Trainer class of a ``"module:Class"`` entry."""
    module, _, attr = entry.partition(":")
    return getattr(importlib.import_module(module), attr)


def trainer_for(algo: str, engine: str | None = None) -> Trainer:
    """The trainer of ``algo`` (on ``engine``: a key of :data:`ENGINES`; default: :data:`TRAINERS`').

    Raises:
        ValueError: on an unknown algorithm or engine (the engine's trainer checks its algorithms).
    """
    if engine is not None:
        if engine not in ENGINES:
            raise ValueError(f"unknown engine {engine!r} (engines: {', '.join(ENGINES)})")
        return _load(ENGINES[engine])(algo)
    if algo not in TRAINERS:
        raise ValueError(f"unknown algorithm {algo!r} (allowed: {', '.join(TRAINERS)})")
    return _load(TRAINERS[algo])(algo)


def default_timesteps(trainer: Trainer, env_id: str) -> int:
    """The training budget of ``env_id`` without one given: the trainer's ``default_timesteps(env_id)``
    where it has one (a trainer with its own hyperparameter format), else the ``n_timesteps`` of the
    env's entry in ``configs/agents/hyperparams/<trainer.hyperparams_algo>.yml``."""
    own = getattr(trainer, "default_timesteps", None)
    return int(own(env_id)) if callable(own) else hp.default_timesteps(env_id, trainer.hyperparams_algo)


def is_adversarial_algo(algo: str) -> bool:
    """Whether ``algo`` trains the protagonist of an adversarial game (an unknown name: no)."""
    return algo in TRAINERS and bool(_load(TRAINERS[algo]).adversarial)


def train_run(
    trainer: Trainer, run: TrainSettings, progress: bool = False, log: Callable[[str], None] | None = None
) -> TrainedRun:
    """Train ``run`` with ``trainer``, or reuse the finished run in its folder, or resume an interrupted one.

    The one resume logic (:func:`~edgelam.agents.runs.open_run`) decides; ``log`` gets one line
    saying which before any training.

    Raises:
        ValueError: as the trainer, or a folder holding a run with other settings (or any run
            without ``run.resume``).
    """
    settings = trainer.settings(run)
    start = open_run(Path(run.out_dir), settings, trainer.budget(run), run.resume, trainer.final)
    if log is not None:
        log(f"{'reusing' if start.reuse else 'training'} {run.algo} seed {run.seed} -> {run.out_dir}")
    return trainer.load(run, start) if start.reuse else trainer.fit(run, start, progress)
