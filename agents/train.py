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
import re
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import gymnasium as gym
from gymnasium.envs.registration import load_env_creator
from stable_baselines3.common.base_class import BaseAlgorithm
from stable_baselines3.common.callbacks import BaseCallback, CheckpointCallback
from stable_baselines3.common.env_util import make_vec_env
from stable_baselines3.common.utils import set_random_seed
from stable_baselines3.common.vec_env import DummyVecEnv, VecEnv, VecNormalize

from edgelam.agents import hyperparams as hp
from edgelam.agents.common import (
    check_env_id,
    env_kwargs_for,
    is_parallel,
    make_env,
    torch_threads,
    with_action_masks,
)
from edgelam.agents.marl import has_batched_game, shared_vec_env
from edgelam.agents.policies import (
    META,
    MODEL,
    VECNORMALIZE,
    NormalizedPolicy,
    load_vecnormalize,
    read_meta,
    vecnormalize_path,
)
from edgelam.agents.vec import SB3VectorAdapter
from edgelam.baselines import Policy

CHECKPOINTS = "checkpoints"
LEARNING_CURVE = "learning_curve.csv"
_CURVE_HEADER = ("timesteps", "episode_return", "episode_length")
_CHECKPOINT = re.compile(r"^model_(\d+)_steps\.zip$")

# action spaces each algorithm handles
_SPACES: dict[str, tuple[type[gym.Space], ...]] = {
    "ppo": (gym.spaces.Discrete, gym.spaces.MultiDiscrete, gym.spaces.MultiBinary, gym.spaces.Box),
    "a2c": (gym.spaces.Discrete, gym.spaces.MultiDiscrete, gym.spaces.MultiBinary, gym.spaces.Box),
    "maskable_ppo": (gym.spaces.Discrete, gym.spaces.MultiDiscrete, gym.spaces.MultiBinary),
    "dqn": (gym.spaces.Discrete,),
    "sac": (gym.spaces.Box,),
    "td3": (gym.spaces.Box,),
}


@dataclass
class TrainResult:
    """What :func:`train` produced.

    Attributes:
        model: the trained SB3 model (observations it expects are normalised when
            ``vecnormalize_path`` is set; :meth:`policy` applies that).
        out_dir: the run folder.
        model_path: ``out_dir/model.zip``.
        vecnormalize_path: ``out_dir/vecnormalize.pkl`` or ``None``.
        algo: algorithm name.
        seed: training seed.
        num_timesteps: environment steps trained in total (a rollout may overshoot
            the requested total).
        resumed_from: timesteps of the checkpoint training resumed from (0: fresh).
        wall_time_s: training wall time over all sessions of the run.
        learning_curve: ``out_dir/learning_curve.csv``.
    """

    model: BaseAlgorithm
    out_dir: Path
    model_path: Path
    vecnormalize_path: Path | None
    algo: str
    seed: int
    num_timesteps: int
    resumed_from: int
    wall_time_s: float
    learning_curve: Path

    def policy(self) -> Policy:
        """The model behind its saved observation normalisation (what evaluation should call)."""
        if self.vecnormalize_path is None:
            return self.model
        return NormalizedPolicy(self.model, load_vecnormalize(self.vecnormalize_path))


class LearningCurveCallback(BaseCallback):
    """Appends ``timesteps,episode_return,episode_length`` for every finished episode.

    Reads the ``episode`` entry that ``Monitor`` / ``VecMonitor`` put into ``info``.
    Rows are flushed as they come, so an interrupted run keeps its curve.
    """

    def __init__(self, path: Path) -> None:
        super().__init__()
        self.path = path
        self._file: io.TextIOWrapper | None = None
        self._writer: Any = None

    def _on_training_start(self) -> None:
        new = not self.path.is_file()
        self._file = open(self.path, "a", newline="")
        self._writer = csv.writer(self._file)
        if new:
            self._writer.writerow(_CURVE_HEADER)

    def _on_step(self) -> bool:
        wrote = False
        for info in self.locals.get("infos", ()):
            episode = info.get("episode")
            if episode is not None:
                self._writer.writerow((self.num_timesteps, float(episode["r"]), int(episode["l"])))
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


def _write_meta(out_dir: Path, meta: Mapping[str, Any]) -> None:
    tmp = out_dir / (META + ".tmp")
    tmp.write_text(json.dumps(meta, indent=2) + "\n")
    tmp.replace(out_dir / META)


def _latest(out_dir: Path, meta: Mapping[str, Any] | None) -> tuple[Path, int] | None:
    """The saved model with the most timesteps: a checkpoint, or the final model."""
    found: list[tuple[int, Path]] = []
    for path in (out_dir / CHECKPOINTS).glob("model_*_steps.zip"):
        match = _CHECKPOINT.match(path.name)
        if match:
            found.append((int(match.group(1)), path))
    if meta and meta.get("finished") and (out_dir / MODEL).is_file():
        found.append((int(meta["num_timesteps"]), out_dir / MODEL))
    if not found:
        return None
    steps, path = max(found, key=lambda item: item[0])
    return path, steps


def _truncate_curve(path: Path, steps: int) -> None:
    """Drop learning-curve rows logged after the checkpoint a run resumes from."""
    if not path.is_file():
        return
    with open(path, newline="") as f:
        rows = list(csv.reader(f))
    kept = [rows[0], *(r for r in rows[1:] if r and int(r[0]) <= steps)] if rows else [_CURVE_HEADER]
    with open(path, "w", newline="") as f:
        csv.writer(f).writerows(kept)


def make_train_env(
    env_id: str,
    algo: str,
    scenario: str,
    env_kwargs: Mapping[str, Any] | None,
    n_envs: int,
    seed: int,
    vectorized: bool = False,
) -> VecEnv:
    """The monitored vector env an algorithm trains on (before VecNormalize).

    Gymnasium ids: ``make_vec_env`` over ``n_envs`` copies in a ``DummyVecEnv``
    (MaskablePPO gets ``action_masks()``); with ``vectorized``, the env's batched
    ``vector_entry_point`` env of ``n_envs`` copies behind :class:`SB3VectorAdapter`;
    parallel ids: :func:`~edgelam.agents.marl.shared_vec_env` (``n_envs`` games of the
    env's batched parallel game where it has one, else SuperSuit over ``n_envs`` copies;
    ``vectorized`` asks for the batched game).

    Raises:
        ValueError: if the algorithm does not handle the env's action space (or is
            ``maskable_ppo`` on a parallel env), or ``vectorized`` is asked of an env
            without a ``vector_entry_point``, or with ``maskable_ppo`` of one whose vector
            env has no ``action_masks()``.
    """
    if vectorized and not (is_parallel(env_id) and has_batched_game(env_id, env_kwargs)):
        spec = None if is_parallel(env_id) else gym.spec(env_id)
        if spec is None or spec.vector_entry_point is None:
            raise ValueError(
                f"vectorized: {env_id} has no batched vector env (needs a registered vector_entry_point)"
            )
        creator = spec.vector_entry_point
        if isinstance(creator, str):
            creator = load_env_creator(creator)
        if algo == "maskable_ppo" and not callable(getattr(creator, "action_masks", None)):
            raise ValueError(
                f"vectorized: maskable_ppo needs action_masks() of the vector env; {env_id}'s vector env has none"
            )
        kwargs = env_kwargs_for(scenario, env_kwargs)
        try:
            batched = gym.make_vec(env_id, num_envs=n_envs, vectorization_mode="vector_entry_point", **kwargs)
        except TypeError as exc:
            raise ValueError(f"{env_id}: bad arguments {kwargs}: {exc}") from exc
        venv: VecEnv = SB3VectorAdapter(batched)
        venv.seed(seed)
        venv.action_space.seed(seed)
    elif is_parallel(env_id):
        if algo == "maskable_ppo":
            raise ValueError("maskable_ppo is not supported with parameter sharing (parallel envs)")
        venv = shared_vec_env(env_id, n_envs, seed, scenario, env_kwargs)
    else:

        def env_fn() -> gym.Env:
            env = make_env(env_id, scenario, env_kwargs)
            return with_action_masks(env) if algo == "maskable_ppo" else env

        venv = make_vec_env(env_fn, n_envs=n_envs, seed=seed, vec_env_cls=DummyVecEnv)
    if not isinstance(venv.action_space, _SPACES[algo]):
        venv.close()
        allowed = ", ".join(s.__name__ for s in _SPACES[algo])
        raise ValueError(f"{algo} needs a {allowed} action space; {env_id} has {venv.action_space}")
    return venv


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
    check_env_id(env_id)
    algo_cls = hp.algo_class(algo)
    params = hp.resolve(env_id, algo, hyperparams)
    params.pop("n_timesteps", None)  # the file's default budget; this run's is ``timesteps``
    if n_envs is not None:
        params = hp.validate(algo, {**params, "n_envs": n_envs})
    out_dir = Path(out_dir)
    settings = _jsonable(
        {
            "env_id": env_id,
            "algo": algo,
            "seed": seed,
            "scenario": str(scenario),
            "env_kwargs": dict(env_kwargs or {}),
            "hyperparams": params,
            **({"vectorized": True} if vectorized else {}),
        }
    )
    meta = read_meta(out_dir)
    start: tuple[Path, int] | None = None
    if meta is not None:
        if not resume:
            raise ValueError(f"{out_dir} already holds a run; pass resume=True (--resume) or another out_dir")
        changed = sorted(k for k in {*settings, "vectorized"} if meta.get(k) != settings.get(k))
        if changed:
            raise ValueError(
                f"{out_dir} holds a run with other settings ({', '.join(changed)}); use another out_dir"
            )
        start = _latest(out_dir, meta)
    out_dir.mkdir(parents=True, exist_ok=True)
    curve_path = out_dir / LEARNING_CURVE
    previous_wall = float(meta.get("wall_time_s", 0.0)) if meta else 0.0
    start_steps = start[1] if start else 0

    if start is not None and meta.get("finished") and start_steps >= timesteps:
        model = algo_cls.load(start[0], device="cpu")
        stats = out_dir / VECNORMALIZE
        return TrainResult(
            model=model,
            out_dir=out_dir,
            model_path=out_dir / MODEL,
            vecnormalize_path=stats if stats.is_file() else None,
            algo=algo,
            seed=seed,
            num_timesteps=model.num_timesteps,
            resumed_from=start_steps,
            wall_time_s=previous_wall,
            learning_curve=curve_path,
        )

    if meta is not None:
        _truncate_curve(curve_path, start_steps)
    run_seed = seed + start_steps
    set_random_seed(run_seed)
    venv = make_train_env(env_id, algo, scenario, env_kwargs, params["n_envs"], run_seed, vectorized)
    norm_kwargs = hp.normalize_kwargs(params)
    if norm_kwargs is not None:
        stats_path = vecnormalize_path(start[0]) if start else None
        if stats_path is not None:
            venv = VecNormalize.load(str(stats_path), venv)
            venv.training = True
        else:
            venv = VecNormalize(venv, **norm_kwargs)
    kwargs = hp.sb3_kwargs(params)
    kwargs.setdefault("device", "cpu")
    tb_dir = str(out_dir / "tb")
    if start is None:
        if not params.get("policy"):
            dict_obs = isinstance(venv.observation_space, gym.spaces.Dict)
            kwargs["policy"] = "MultiInputPolicy" if dict_obs else "MlpPolicy"
        else:
            kwargs["policy"] = params["policy"]
        model = algo_cls(env=venv, seed=seed, tensorboard_log=tb_dir, verbose=0, **kwargs)
    else:
        model = algo_cls.load(start[0], env=venv, device=kwargs["device"], tensorboard_log=tb_dir)
    model.set_random_seed(run_seed)

    if is_parallel(env_id):  # recorded, not compared on resume: both simulators play the same game
        recorded = {"parameter_sharing": "batched" if has_batched_game(env_id, env_kwargs) else "supersuit"}
    else:
        recorded = {}
    running = {**settings, **recorded, "timesteps": timesteps, "finished": False, "wall_time_s": previous_wall}
    _write_meta(out_dir, running)
    checkpoints = CheckpointCallback(
        save_freq=max((checkpoint_freq or max(timesteps // 5, 1000)) // params["n_envs"], 1),
        save_path=str(out_dir / CHECKPOINTS),
        name_prefix="model",
        save_vecnormalize=True,
    )
    curve = LearningCurveCallback(curve_path)
    began = time.perf_counter()
    try:
        with torch_threads(threads):
            model.learn(
                total_timesteps=max(timesteps - start_steps, 1),
                callback=[checkpoints, curve, *callbacks],
                tb_log_name=algo,
                reset_num_timesteps=start is None,
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
    _write_meta(
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
        model=model,
        out_dir=out_dir,
        model_path=out_dir / MODEL,
        vecnormalize_path=stats,
        algo=algo,
        seed=seed,
        num_timesteps=int(model.num_timesteps),
        resumed_from=start_steps,
        wall_time_s=wall,
        learning_curve=curve_path,
    )
