"""The search spaces of ``edgelam tune``: one sampler per algorithm (:data:`SAMPLERS`).

rl-zoo3's ``hyperparams_opt.py`` is the reference, with discounts down to 0.8 because several
edgelam envs are nearly myopic, and networks no larger than 256 x 256 for two CPU cores. A sampler
takes the Optuna trial and the entry's ``n_envs`` and returns the keys that replace the entry's
(:func:`edgelam.agents.tune.run_trial`); :mod:`edgelam.agents.tune_ray` runs the same samplers
define-by-run inside Ray Tune.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import optuna

NET_ARCHS = {"small": [64, 64], "medium": [128, 128], "large": [256, 256]}


def _common(trial: optuna.Trial) -> dict[str, Any]:
    return {
        "gamma": 1.0 - trial.suggest_float("one_minus_gamma", 1e-3, 0.2, log=True),
        "learning_rate": trial.suggest_float("learning_rate", 1e-5, 3e-3, log=True),
        "policy_kwargs": {
            "net_arch": NET_ARCHS[trial.suggest_categorical("net_arch", list(NET_ARCHS))],
            "activation_fn": trial.suggest_categorical("activation_fn", ["tanh", "relu"]),
        },
    }


def sample_ppo(trial: optuna.Trial, n_envs: int) -> dict[str, Any]:
    """PPO (and MaskablePPO): rollout, minibatch, epochs, discounts, step size, entropy, clip, network."""
    n_steps = trial.suggest_categorical("n_steps", [16, 32, 64, 128, 256, 512])
    batch = trial.suggest_categorical("batch_size", [64, 128, 256, 512, 1024])
    return {
        "n_steps": n_steps,
        "batch_size": min(batch, n_steps * n_envs),  # a minibatch no larger than the rollout
        "n_epochs": trial.suggest_categorical("n_epochs", [1, 4, 10, 20]),
        "gae_lambda": trial.suggest_categorical("gae_lambda", [0.8, 0.9, 0.95, 0.98, 1.0]),
        "ent_coef": trial.suggest_float("ent_coef", 1e-8, 0.1, log=True),
        "clip_range": trial.suggest_categorical("clip_range", [0.1, 0.2, 0.3]),
        **_common(trial),
    }


def sample_a2c(trial: optuna.Trial, n_envs: int) -> dict[str, Any]:
    """A2C: rollout, discounts, step size, entropy, network."""
    return {
        "n_steps": trial.suggest_categorical("n_steps", [5, 8, 16, 32, 64]),
        "gae_lambda": trial.suggest_categorical("gae_lambda", [0.8, 0.9, 0.95, 1.0]),
        "ent_coef": trial.suggest_float("ent_coef", 1e-8, 0.1, log=True),
        **_common(trial),
    }


def _off_policy(trial: optuna.Trial) -> dict[str, Any]:
    train_freq = trial.suggest_categorical("train_freq", [1, 4, 8])
    params = _common(trial)
    del params["policy_kwargs"]["activation_fn"]  # rl-zoo3 keeps the default activation off-policy
    return {
        "batch_size": trial.suggest_categorical("batch_size", [64, 128, 256, 512]),
        "buffer_size": trial.suggest_categorical("buffer_size", [10_000, 100_000, 1_000_000]),
        "learning_starts": trial.suggest_categorical("learning_starts", [100, 1000, 5000]),
        "train_freq": train_freq,
        "gradient_steps": train_freq,  # one gradient step per env step, as rl-zoo3
        **params,
    }


def sample_sac(trial: optuna.Trial, n_envs: int) -> dict[str, Any]:
    """SAC: replay, update rate, soft target rate, discount, step size, network."""
    return {**_off_policy(trial), "tau": trial.suggest_categorical("tau", [0.005, 0.01, 0.02])}


def sample_td3(trial: optuna.Trial, n_envs: int) -> dict[str, Any]:
    """TD3: replay, update rate, soft target rate, discount, step size, network."""
    return {**_off_policy(trial), "tau": trial.suggest_categorical("tau", [0.005, 0.01, 0.02])}


def sample_dqn(trial: optuna.Trial, n_envs: int) -> dict[str, Any]:
    """DQN: replay, exploration, target updates, discount, step size, network."""
    return {
        **_off_policy(trial),
        "exploration_fraction": trial.suggest_float("exploration_fraction", 0.05, 0.5),
        "exploration_final_eps": trial.suggest_float("exploration_final_eps", 0.0, 0.2),
        "target_update_interval": trial.suggest_categorical("target_update_interval", [100, 1000, 5000]),
    }


def sample_ppo_lagrangian(trial: optuna.Trial, n_envs: int) -> dict[str, Any]:
    """PPO-Lagrangian: PPO's space plus the dual step size and the constraint tightening (``lambda_optimizer``
    and ``lagrangian_multiplier_init`` stay the file's)."""
    return {
        **sample_ppo(trial, n_envs),
        "lambda_lr": trial.suggest_float("lambda_lr", 0.01, 0.5, log=True),
        "cost_limit_margin": trial.suggest_categorical("cost_limit_margin", [0.1, 0.2, 0.3, 0.4, 0.5]),
    }


def sample_rarl(trial: optuna.Trial, n_envs: int) -> dict[str, Any]:
    """RARL: PPO's space, shared by the protagonist and the adversary (the phase pairs stay
    :data:`~edgelam.agents.trainers.RARL_ITERATIONS`, as compare trains them)."""
    return sample_ppo(trial, n_envs)


SAMPLERS: dict[str, Callable[[optuna.Trial, int], dict[str, Any]]] = {
    "ppo": sample_ppo,
    "maskable_ppo": sample_ppo,
    "a2c": sample_a2c,
    "sac": sample_sac,
    "td3": sample_td3,
    "dqn": sample_dqn,
    "ppo_lagrangian": sample_ppo_lagrangian,
    "rarl": sample_rarl,
}
