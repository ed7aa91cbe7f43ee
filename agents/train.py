"""Training of SB3 agents on any registered env, with checkpoints and resume.

A run folder (``out_dir``) holds::

    meta.json            settings, algorithm, timesteps done, wall time, finished flag (parallel ids:
                         parameter_sharing, "batched" or "supersuit")
    model.zip            the final model            (written when training ends)
    vecnormalize.pkl     VecNormalize statistics    (when the settings normalise)
    checkpoints/         model_<steps>_steps.zip (+ model_vecnormalize_<steps>_steps.pkl)
    learning_curve.csv   timesteps,episode_return,episode_length (one row per finished episode)
    tb/<algo>_1/         TensorBoard event files

Gymnasium ids train one agent; PettingZoo parallel ids train one policy shared by
every agent (:mod:`edgelam.agents.marl`). Resume restarts from the latest
checkpoint (or the final model) and trains to the requested total; it continues
the learning rate schedule and the VecNormalize statistics, but not the replay
buffer of off-policy algorithms, nor the exact random streams: a resumed run is
a valid run, not bit-identical to an uninterrupted one.
"""

from __future__ import annotations

import csv
import io
import json
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import gymnasium as gym
from stable_baselines3.common.base_class import BaseAlgorithm
from stable_baselines3.common.callbacks import BaseCallback, CheckpointCallback
from stable_baselines3.common.utils import set_random_seed
from stable_baselines3.common.vec_env import VecEnv, VecNormalize

from edgelam.agents import hyperparams as hp
from edgelam.agents.common import check_env_id, is_parallel, torch_threads
from edgelam.agents.marl import has_batched_game
from edgelam.agents.policies import NormalizedPolicy, load_vecnormalize, vecnormalize_path
from edgelam.agents.runs import (
    CHECKPOINTS,
    CURVE_HEADER,
    LEARNING_CURVE,
    MODEL,
    VECNORMALIZE,
    Resume,
    truncate_curve,
    write_meta,
)
from edgelam.agents.train_env import make_train_env
from edgelam.agents.trainers import TrainedRun, TrainSettings, train_run
from edgelam.baselines import Policy


@dataclass
class TrainResult(TrainedRun):
    """What :func:`train` produced (the fields of :class:`~edgelam.agents.trainers.TrainedRun`, then these).

    Attributes:
        model: the trained SB3 model (observations it expects are normalised when
            ``vecnormalize_path`` is set; :meth:`policy` applies that).
        model_path: ``out_dir/model.zip``.
        vecnormalize_path: ``out_dir/vecnormalize.pkl`` or ``None``.
        resumed_from: timesteps of the checkpoint training resumed from (0: fresh).
    """

    model: BaseAlgorithm
    model_path: Path
    vecnormalize_path: Path | None
    resumed_from: int

    def policy(self) -> Policy:
        """The model behind its saved observation normalisation (what evaluation should call)."""
        if self.vecnormalize_path is None:
            return self.model
        return NormalizedPolicy(self.model, load_vecnormalize(self.vecnormalize_path))

    def summary(self) -> dict[str, Any]:
        """The run's numbers and files, as ``edgelam train`` prints them."""
        return {
            "env_id": self.env_id,
            "algo": self.algo,
            "seed": self.seed,
            "out_dir": self.out_dir,
            "model": self.model_path,
            "vecnormalize": self.vecnormalize_path,
            "num_timesteps": self.num_timesteps,
            "resumed_from": self.resumed_from,
            "wall_time_s": self.wall_time_s,
            "learning_curve": self.learning_curve,
            "tensorboard": self.out_dir / "tb",
        }


class LearningCurveCallback(BaseCallback):
    """Appends ``timesteps,episode_return,episode_length`` (then ``columns``) for every finished episode.

    Reads the ``episode`` entry that ``Monitor`` / ``VecMonitor`` put into ``info``; each name of
    ``columns`` is a further key of that entry (a trainer's env wrapper adds it). Rows are flushed
    as they come, so an interrupted run keeps its curve.
    """

    def __init__(self, path: Path, columns: Sequence[str] = ()) -> None:
        super().__init__()
        self.path = path
        self.columns = tuple(columns)
        self._file: io.TextIOWrapper | None = None
        self._writer: Any = None

    def _on_training_start(self) -> None:
        new = not self.path.is_file()
        self._file = open(self.path, "a", newline="")
        self._writer = csv.writer(self._file)
        if new:
            self._writer.writerow((*CURVE_HEADER, *self.columns))

    def _on_step(self) -> bool:
        wrote = False
        for info in self.locals.get("infos", ()):
            episode = info.get("episode")
            if episode is not None:
                extra = (float(episode[c]) for c in self.columns)
                self._writer.writerow((self.num_timesteps, float(episode["r"]), int(episode["l"]), *extra))
                wrote = True
        if wrote:
            self._file.flush()
        return True

    def close(self) -> None:
        """Close the CSV file (idempotent)."""
        if self._file is not None:
            self._file.close()
            self._file = None

    def _on_training_end(self) -> None:
        self.close()


def _jsonable(value: Any) -> Any:
    return json.loads(json.dumps(value, default=str))


def train(
    env_id: str,
    algo: str = "ppo",
    timesteps: int = 100_000,
    seed: int = 0,
    out_dir: str | Path = "runs/train",
    scenario: str = "default",
    env_kwargs: Mapping[str, Any] | None = None,
    n_envs: int | None = None,
    hyperparams: Mapping[str, Any] | None = None,
    progress: bool = False,
    resume: bool = False,
    checkpoint_freq: int | None = None,
    threads: int = 1,
    vectorized: bool = False,
    callbacks: Sequence[BaseCallback] = (),
) -> TrainResult:
    """Train ``algo`` on ``env_id`` for ``timesteps`` env steps and save the run in ``out_dir``.

    Args:
        env_id: a Gymnasium id or an edgelam parallel id (parameter sharing).
        algo: ``ppo``, ``a2c``, ``dqn`` (Discrete), ``sac`` / ``td3`` (Box) or
            ``maskable_ppo`` (env with ``action_masks()`` or an ``action_mask`` in
            info / observation).
        timesteps: total env steps of the run (all vectorised copies together).
        seed: seeds Python, NumPy, torch, the envs (copy ``i`` gets ``seed + i``)
            and the action spaces: same seed, same trained policy.
        out_dir: the run folder (layout in the module docstring).
        scenario: scenario name or YAML path.
        env_kwargs: dotted scenario overrides passed to the env constructor.
        n_envs: vectorised env copies; overrides the hyperparameter file.
        hyperparams: overrides of the env's entry in ``configs/agents/hyperparams/<algo>.yml``
            (or its ``default``).
        progress: show SB3's progress bar.
        resume: continue the run in ``out_dir`` from its latest checkpoint up to
            ``timesteps``; a finished run with enough timesteps is loaded, not retrained.
        checkpoint_freq: env steps between checkpoints (default: a fifth of ``timesteps``,
            at least 1000).
        threads: torch CPU threads while learning (one is fastest for small MLPs on
            a busy machine; the thread count can change results in the last bits).
        vectorized: train on the env's batched vector env (``vector_entry_point``,
            :class:`~edgelam.agents.vec.SB3VectorAdapter`) instead of ``n_envs``
            single envs in a ``DummyVecEnv``; recorded in ``meta.json`` when set.
        callbacks: SB3 callbacks called while learning, after the run's own (checkpoints,
            learning curve); one returning ``False`` ends the run early (``edgelam tune``'s pruning).

    Raises:
        ValueError: on an unknown algorithm or hyperparameter, an action space the
            algorithm does not handle, a run already in ``out_dir`` without
            ``resume``, or a resumed run whose settings differ.
    """
    run = TrainSettings(
        env_id,
        algo,
        timesteps,
        seed,
        Path(out_dir),
        scenario,
        dict(env_kwargs or {}),
        hyperparams,
        resume=resume,
        n_envs=n_envs,
        vectorized=vectorized,
        threads=threads,
        checkpoint_freq=checkpoint_freq,
    )
    return cast(TrainResult, train_run(SB3Trainer(algo, callbacks), run, progress))


class SB3Trainer:
    """The :class:`~edgelam.agents.trainers.Trainer` of SB3's algorithms (what :func:`train` runs).

    Args:
        algo: a key of :data:`edgelam.agents.hyperparams.ALGOS`.
        callbacks: SB3 callbacks called while learning, after the run's own.

    Raises:
        ValueError: on an unknown algorithm.
    """

    adversarial = False
    final = MODEL
    curve_columns: tuple[str, ...] = ()  # keys of info["episode"] the learning curve adds (wrap_env's)

    def __init__(self, algo: str, callbacks: Sequence[BaseCallback] = ()) -> None:
        self.algo_cls = hp.algo_class(algo)
        self.algo = algo
        self.hyperparams_algo = algo
        self.callbacks = tuple(callbacks)

    def params(self, run: TrainSettings) -> dict[str, Any]:
        """The run's hyperparameters: the env's entry, the overrides, ``n_envs``."""
        params = hp.resolve(run.env_id, self.algo, run.hyperparams)
        params.pop("n_timesteps", None)  # the file's default budget; this run's is ``timesteps``
        if run.n_envs is not None:
            params = hp.validate(self.algo, {**params, "n_envs": run.n_envs})
        return params

    def settings(self, run: TrainSettings) -> dict[str, Any]:
        """Env, algorithm, seed, scenario and the resolved hyperparameters (``vectorized`` when set)."""
        check_env_id(run.env_id)
        return _jsonable(
            {
                "env_id": run.env_id,
                "algo": self.algo,
                "seed": run.seed,
                "scenario": str(run.scenario),
                "env_kwargs": dict(run.env_kwargs),
                "hyperparams": self.params(run),
                **({"vectorized": True} if run.vectorized else {}),
            }
        )

    def budget(self, run: TrainSettings) -> int:
        """The run's timesteps."""
        return run.timesteps

    def wrap_env(self, venv: VecEnv, run: TrainSettings, start: Resume) -> tuple[VecEnv, Sequence[BaseCallback]]:
        """The training env under VecNormalize, and callbacks that go with it (here: ``venv`` as is, none).

        A subclass wraps the monitored env here (``edgelam.agents.lagrangian`` shapes the reward).
        """
        return venv, ()

    def load(self, run: TrainSettings, start: Resume) -> TrainResult:
        """The finished model in the folder."""
        out_dir = Path(run.out_dir)
        model = self.algo_cls.load(start.checkpoint, device="cpu")
        stats = out_dir / VECNORMALIZE
        return TrainResult(
            env_id=run.env_id,
            algo=self.algo,
            seed=run.seed,
            out_dir=out_dir,
            num_timesteps=model.num_timesteps,
            wall_time_s=start.wall_time_s,
            learning_curve=out_dir / LEARNING_CURVE,
            reused=True,
            model=model,
            model_path=out_dir / MODEL,
            vecnormalize_path=stats if stats.is_file() else None,
            resumed_from=start.steps,
        )

    def fit(self, run: TrainSettings, start: Resume, progress: bool) -> TrainResult:
        """Train from the latest checkpoint (or from scratch) to ``run.timesteps``; save model, statistics, meta."""
        algo, env_id, env_kwargs, timesteps, seed = self.algo, run.env_id, run.env_kwargs, run.timesteps, run.seed
        params = self.params(run)
        settings = self.settings(run)
        out_dir = Path(run.out_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
        curve_path = out_dir / LEARNING_CURVE
        previous_wall = start.wall_time_s
        if start.meta is not None:
            truncate_curve(curve_path, start.steps)
        run_seed = seed + start.steps
        set_random_seed(run_seed)
        venv = make_train_env(env_id, algo, run.scenario, env_kwargs, params["n_envs"], run_seed, run.vectorized)
        venv, env_callbacks = self.wrap_env(venv, run, start)
        norm_kwargs = hp.normalize_kwargs(params)
        if norm_kwargs is not None:
            stats_path = vecnormalize_path(start.checkpoint) if start.checkpoint else None
            if stats_path is not None:
                venv = VecNormalize.load(str(stats_path), venv)
                venv.training = True
            else:
                venv = VecNormalize(venv, **norm_kwargs)
        kwargs = hp.sb3_kwargs(params)
        kwargs.setdefault("device", "cpu")
        tb_dir = str(out_dir / "tb")
        if start.checkpoint is None:
            if not params.get("policy"):
                dict_obs = isinstance(venv.observation_space, gym.spaces.Dict)
                kwargs["policy"] = "MultiInputPolicy" if dict_obs else "MlpPolicy"
            else:
                kwargs["policy"] = params["policy"]
            model = self.algo_cls(env=venv, seed=seed, tensorboard_log=tb_dir, verbose=0, **kwargs)
        else:
            model = self.algo_cls.load(start.checkpoint, env=venv, device=kwargs["device"], tensorboard_log=tb_dir)
        model.set_random_seed(run_seed)

        if is_parallel(env_id):  # recorded, not compared on resume: both simulators play the same game
            recorded = {"parameter_sharing": "batched" if has_batched_game(env_id, env_kwargs) else "supersuit"}
        else:
            recorded = {}
        running = {**settings, **recorded, "timesteps": timesteps, "finished": False, "wall_time_s": previous_wall}
        write_meta(out_dir, running)
        checkpoints = CheckpointCallback(
            save_freq=max((run.checkpoint_freq or max(timesteps // 5, 1000)) // params["n_envs"], 1),
            save_path=str(out_dir / CHECKPOINTS),
            name_prefix="model",
            save_vecnormalize=True,
        )
        curve = LearningCurveCallback(curve_path, self.curve_columns)
        began = time.perf_counter()
        try:
            with torch_threads(run.threads):
                model.learn(
                    total_timesteps=max(timesteps - start.steps, 1),
                    callback=[checkpoints, curve, *env_callbacks, *self.callbacks],
                    tb_log_name=algo,
                    reset_num_timesteps=start.checkpoint is None,
                    progress_bar=progress,
                )
        finally:
            curve.close()
        wall = previous_wall + time.perf_counter() - began

        model.save(out_dir / MODEL)
        stats = None
        if isinstance(venv, VecNormalize):
            stats = out_dir / VECNORMALIZE
            venv.save(str(stats))
        venv.close()
        write_meta(
            out_dir,
            {
                **settings,
                **recorded,
                "timesteps": timesteps,
                "num_timesteps": int(model.num_timesteps),
                "finished": True,
                "wall_time_s": wall,
            },
        )
        return TrainResult(
            env_id=env_id,
            algo=algo,
            seed=seed,
            out_dir=out_dir,
            num_timesteps=int(model.num_timesteps),
            wall_time_s=wall,
            learning_curve=curve_path,
            reused=False,
            model=model,
            model_path=out_dir / MODEL,
            vecnormalize_path=stats,
            resumed_from=start.steps,
        )
