"""The core kernels compiled by numba, for simulators written once in scalar form and looped over B.

An env whose step is event-driven (a few branches per row, lazily drawn randomness) is
cheapest as one loop over its batch compiled by numba: the same compiled code runs the
single env (B = 1) and the vector env (B). Such a loop calls the core kernels through
this module, which compiles the functions of :mod:`edgelam.envs.core.queues` themselves
(their plain-number paths: a compiled loop passes numbers), so the physics stays
written once, in ``envs/core``.

Compiled code does the same IEEE double operations as the Python it is compiled
from (no fast-math), so its numbers equal the plain-Python path's bit for bit.

Kernels decorated with :data:`njit` are cached beside their source; numba checks only
that file's time stamp, so after changing a kernel of ``queues.py`` that a cached kernel
calls, touch the caller's file (or delete its ``__pycache__``) to recompile it.
"""

from __future__ import annotations

import types
from collections.abc import Callable
from typing import Any

import numba

from edgelam.envs.core import queues

# a kernel library: compiled on first call, cached beside its source for the next process
njit = numba.njit(cache=True, nogil=True)


def number_path(fn: Callable[..., Any]) -> Callable[..., Any]:
    """``fn`` (a core kernel testing ``isinstance(x, _ndarray)``) compiled for plain numbers.

    numba cannot type the ndarray class the kernels test their argument against; the
    compiled copy tests against ``complex`` instead, which a compiled loop never passes,
    so it always takes the kernel's plain-number path (the same source lines).
    """
    scope = dict(fn.__globals__)
    scope["_ndarray"] = complex
    copy = types.FunctionType(fn.__code__, scope, fn.__name__, fn.__defaults__, fn.__closure__)
    copy.__doc__ = fn.__doc__
    return numba.njit(nogil=True)(copy)


fcfs_finish_s = number_path(queues.fcfs_finish_s)
fcfs_wait_s = number_path(queues.fcfs_wait_s)
virtual_queue_step = number_path(queues.virtual_queue_step)

__all__ = ["fcfs_finish_s", "fcfs_wait_s", "njit", "number_path", "virtual_queue_step"]
