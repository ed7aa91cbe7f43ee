"""Hindsight of edgelam/SplitInference-v0: the exact optimum of one episode, by per-request enumeration.

Why per-request enumeration is exact. A request's reward ``-(w_L latency + w_E energy + w_Q
quality_loss)`` (:func:`~edgelam.envs.split_inference.dynamics.price` in the compiled step) reads
only the action, the pending slot's exogenous column (rate, edge load, prompt) and the episode's
ergodic rate; the energy virtual queue, the only state an action changes, enters the observation
and ``info``, never the reward. The exogenous blocks (:class:`~edgelam.envs.split_inference.dynamics.Exogenous`)
draw a fixed number of random numbers per block whatever the actions. So the return is a sum of
per-request terms over a trace the actions do not change, and its maximum is the sum of the
per-request maxima: every (split layer, bits) action is tried on each request and the best one
kept. ``tests/split_inference/test_hindsight.py`` checks both facts (the same per-request rewards
after different histories) and the optimum against every action sequence of a toy episode.

How the trace is replayed. A copy of the env's :class:`~edgelam.envs.split_inference.dynamics.State`
and of its generator is stepped with :func:`~edgelam.envs.split_inference.dynamics.advance`, the
env's own step, so it draws the blocks the env will draw. Before each request, a batch of ``A``
users, one per action, all holding that request (its exogenous column, the same reals), is served
by the same compiled step; the best reward is kept, the copy is advanced with that action, and
the reward the copy paid must equal the batch's (else the solver gives up, see below).

Solver failure (any exception in the enumeration) falls back to the ``oracle`` baseline played on
a :func:`~edgelam.baselines.hindsight.fork` of the env (kind ``planner``, ``fallback=True``, the
reason in ``solver``), and if that fails too, to the device-only split.
"""

from __future__ import annotations

import copy
from typing import Any

import numpy as np

from edgelam.baselines.hindsight import Plan, fork, rollout
from edgelam.envs.split_inference.dynamics import BITS, BLOCK, SLOT, State, advance

SOLVER = "per-request enumeration of every (split layer, bits) on the replayed trace"


def action_grid(num_layers: int) -> np.ndarray:
    """(A, 2) int64 every action [split layer, bits index], split layer major (A = 3 (L + 1))."""
    layers, bits = np.meshgrid(np.arange(num_layers + 1), np.arange(len(BITS)), indexing="ij")
    return np.stack([layers.ravel(), bits.ravel()], axis=1).astype(np.int64)


def solve(env: Any, action_set: np.ndarray | None = None) -> Plan:
    """The hindsight plan of the episode ``env`` is in, from its current request on (module docstring).

    Args:
        env: a SplitInference-v0 env (or its wrapper) right after ``reset``.
        action_set: (A, 2) int64 actions to choose from (default: all, :func:`action_grid`); a
            subset makes the plan the optimum over that subset (the brute-force test's toy).

    Raises:
        ValueError: ``backend="live"``: its quality is a real split execution inside ``step()``,
            and the enumeration would run (L + 1) x 3 of them per request (75 with the default
            card); the replay backend's quality is the same execution, recorded.
    """
    env = getattr(env, "unwrapped", env)
    if env.backend != "replay":
        raise ValueError(
            f"hindsight (SplitInference-v0): backend={env.backend!r} is not supported: every request would "
            "need a real split execution of each of its (L + 1) x 3 actions; use backend='replay', whose "
            "quality is the same execution recorded by `edgelam profile`"
        )
    grid = action_grid(env.num_layers) if action_set is None else np.asarray(action_set, dtype=np.int64)
    try:
        return _enumerate(env, grid)
    except Exception as exc:  # any solver failure falls back, flagged (module docstring)
        return _fallback(env, f"{SOLVER} failed ({exc!r})")


def _enumerate(env: Any, grid: np.ndarray) -> Plan:
    params = env.params
    state: State = env.state.copy()
    rng = copy.deepcopy(env.np_random)
    steps = env.config.episode_length - int(state.step[0])
    if grid.ndim != 2 or grid.shape[1] != 2 or len(grid) == 0:
        raise ValueError(f"action_set: expected (A, 2) actions, got shape {grid.shape}")
    # one user per action, each holding the pending request at slot 0 of its own block: serving it moves to
    # slot 1 < BLOCK, so the batch never draws (the generator it gets is never used)
    n = len(grid)
    trial = State(np.repeat(state.ints, n, axis=0), np.repeat(state.reals, n, axis=0), np.zeros((5, BLOCK, n)),
                  state.exo)
    unused = np.random.default_rng(0)
    actions: list[np.ndarray] = []
    value = 0.0
    for _ in range(steps):
        trial.ints[:] = state.ints[0]
        trial.ints[:, SLOT] = 0
        trial.reals[:] = state.reals[0]
        trial.block[:, 0, :] = state.block[:, int(state.ints[0, SLOT]), 0][:, None]
        rewards = advance(params, trial, grid, unused)[0].reward
        best = int(np.argmax(rewards))
        action = grid[best].copy()
        paid = float(advance(params, state, action[None], rng)[0].reward[0])
        if paid != float(rewards[best]):
            raise RuntimeError(f"the replayed step paid {paid}, the enumeration priced {float(rewards[best])}")
        actions.append(action)
        value += paid
    return Plan(actions, value, "exact", SOLVER)


def _fallback(env: Any, reason: str) -> Plan:
    try:
        from edgelam.baselines.split_inference import _Search  # the oracle; imported here: that module imports this

        sim = fork(env)
        oracle = _Search(sim, oracle=True)
        actions, value, done = [], 0.0, False
        while not done:
            action, _ = oracle.predict(None)
            _, reward, terminated, truncated, _ = sim.step(action)
            actions.append(action)
            value += float(reward)
            done = terminated or truncated
        return Plan(actions, value, "planner", f"per-request oracle on a fork; {reason}", fallback=True)
    except Exception as exc:
        steps = env.config.episode_length - int(env.state.step[0])
        actions = [np.array([env.num_layers, len(BITS) - 1], dtype=np.int64)] * steps
        value, _ = rollout(env, actions)
        return Plan(actions, value, "planner", f"device only; {reason}; the oracle failed too ({exc!r})",
                    fallback=True)
