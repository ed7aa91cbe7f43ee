"""Checks of actions against their space: the value in Python numbers, or a ``ValueError`` that names both.

Every env checks its action with these before using it (STYLE principle 6: an action
outside the space raises ``ValueError``), so that ``env.step("edge")`` says
``action 'edge' is not in Discrete(3) (0 device, 1 edge, 2 cloud): expected one integer``
instead of a numpy conversion error from deep inside the step. The common cases (a
Python or numpy integer, an integer array of the right shape) take a fast path.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from gymnasium import spaces


def _fail(who: str, action: Any, space: spaces.Space, meaning: str, why: str) -> ValueError:
    what = f"{space} ({meaning})" if meaning else str(space)
    return ValueError(f"{who} {action!r} is not in {what}: {why}")


def _integers(action: Any) -> np.ndarray | None:
    """``action`` as an int64 array when it holds integers only (integral floats count), else None."""
    if isinstance(action, (str, bytes, dict)) or action is None:
        return None
    try:
        arr = np.asarray(action)
    except (TypeError, ValueError):
        return None
    if arr.dtype.kind in "iu":
        return arr.astype(np.int64)
    if arr.dtype.kind == "f" and np.all(np.isfinite(arr)) and np.all(np.mod(arr, 1.0) == 0.0):
        return arr.astype(np.int64)
    return None


def check_discrete(action: Any, space: spaces.Discrete, meaning: str = "", who: str = "action") -> int:
    """The integer of a ``Discrete(n)`` action (a number, or an array of one element).

    Args:
        action: what the agent passed to ``step``.
        space: the action space.
        meaning: what the values mean, for the message (``"0 device, 1 edge, 2 cloud"``).
        who: how the message names the action (``"action of user_0"``).
    """
    n, start = int(space.n), int(space.start)
    if isinstance(action, (int, np.integer)) and not isinstance(action, (bool, np.bool_)):
        a = int(action)
    else:
        arr = _integers(action)
        if arr is None or arr.size != 1 or arr.ndim > 1 or isinstance(action, (bool, np.bool_)):
            raise _fail(who, action, space, meaning, "expected one integer")
        a = int(arr.reshape(()))
    if not start <= a < start + n:
        raise _fail(who, action, space, meaning, f"expected an integer in {start}..{start + n - 1}")
    return a


def check_multi_discrete(
    action: Any, space: spaces.MultiDiscrete, meaning: str = "", who: str = "action"
) -> tuple[int, ...]:
    """The integers of a 1-D ``MultiDiscrete(nvec)`` action."""
    nvec = space.nvec
    if type(action) is np.ndarray and action.shape == nvec.shape and action.dtype.kind in "iu":  # the common case
        values = action.tolist()
    else:
        arr = _integers(action)
        if arr is None or arr.shape != nvec.shape:
            raise _fail(who, action, space, meaning, f"expected {len(nvec)} integers")
        values = arr.tolist()
    for v, n in zip(values, nvec.tolist(), strict=True):
        if not 0 <= v < n:
            ranges = ", ".join(f"0..{m - 1}" for m in nvec.tolist())
            raise _fail(who, action, space, meaning, f"expected integers in {ranges}")
    return tuple(values)


class DiscreteAction:
    """:func:`check_discrete` bound to one space, with a fast path for a plain in-range ``int``
    or ``np.int64`` (the env's hot path: bounds kept as Python ints)."""

    __slots__ = ("high", "low", "meaning", "space", "who")

    def __init__(self, space: spaces.Discrete, meaning: str = "", who: str = "action") -> None:
        self.space, self.meaning, self.who = space, meaning, who
        self.low = int(space.start)
        self.high = self.low + int(space.n)

    def __call__(self, action: Any) -> int:
        t = type(action)
        if (t is int or t is np.int64) and self.low <= action < self.high:
            return int(action)
        return check_discrete(action, self.space, self.meaning, self.who)


class MultiDiscreteAction:
    """:func:`check_multi_discrete` bound to one 1-D space, with a fast path for an integer array."""

    __slots__ = ("meaning", "nvec", "shape", "space", "who")

    def __init__(self, space: spaces.MultiDiscrete, meaning: str = "", who: str = "action") -> None:
        self.space, self.meaning, self.who = space, meaning, who
        self.nvec = tuple(int(n) for n in space.nvec.tolist())
        self.shape = space.nvec.shape

    def __call__(self, action: Any) -> tuple[int, ...]:
        if type(action) is np.ndarray and action.shape == self.shape and action.dtype.kind in "iu":
            values = action.tolist()
            if all(0 <= v < n for v, n in zip(values, self.nvec, strict=True)):
                return tuple(values)
        return check_multi_discrete(action, self.space, self.meaning, self.who)


def check_box(
    action: Any, space: spaces.Box, meaning: str = "", who: str = "action", within_bounds: bool = True
) -> np.ndarray:
    """A float64 copy of a ``Box`` action: the right shape, finite numbers (within the bounds unless told not)."""
    if isinstance(action, (str, bytes, dict)) or action is None:
        raise _fail(who, action, space, meaning, f"expected numbers of shape {space.shape}")
    try:
        arr = np.asarray(action)
    except (TypeError, ValueError):
        raise _fail(who, action, space, meaning, f"expected numbers of shape {space.shape}") from None
    if arr.shape != space.shape or arr.dtype.kind not in "fiu":
        raise _fail(who, action, space, meaning, f"expected numbers of shape {space.shape}")
    a = arr.astype(np.float64)
    if not np.all(np.isfinite(a)):
        raise _fail(who, action, space, meaning, "expected finite numbers")
    if within_bounds and (np.any(a < space.low) or np.any(a > space.high)):
        raise _fail(who, action, space, meaning, "expected values within the bounds")
    return a


def check_batch_integers(actions: Any, space: spaces.MultiDiscrete | spaces.Box, meaning: str = "") -> np.ndarray:
    """The int64 array of a vector env's batched integer actions.

    ``space`` is the batched space (``batch_space`` of a Discrete is a MultiDiscrete, of a
    MultiDiscrete an integer Box).
    """
    a = actions if type(actions) is np.ndarray else _integers(actions)
    if a is None or a.shape != space.shape or a.dtype.kind not in "iu":
        raise _fail("actions", actions, space, meaning, f"expected integers of shape {space.shape}")
    a = a.astype(np.int64, copy=False)
    low, high = (0, space.nvec - 1) if isinstance(space, spaces.MultiDiscrete) else (space.low, space.high)
    if (a < low).any() or (a > high).any():
        raise _fail("actions", actions, space, meaning, "expected integers within the space's bounds")
    return a
