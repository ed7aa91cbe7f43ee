"""The core kernels compiled by numba, for simulators written once in scalar form and looped over B.

An env whose step is event-driven (a few branches per row, lazily drawn randomness) is
cheapest as one loop over its batch compiled by numba: the same compiled code runs the
single env (B = 1) and the vector env (B). Such a loop calls the core kernels through
this module, which compiles the functions of :mod:`edgelam.envs.core.queues`,
:mod:`~edgelam.envs.core.load` and :mod:`~edgelam.envs.core.channel` themselves (their
plain-number paths: a compiled loop passes numbers), so the physics stays written once,
in ``envs/core``. Compiled ``math.log2``, ``exp`` and ``**`` are libm's, as Python's
``math`` module: they equal the Python-float paths bit for bit, while numpy's vectorised
ones may differ from them in the last bit.

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

import llvmlite.binding
import numba
from numba.extending import get_cython_function_address

from edgelam.envs.core import channel, load, queues

# a kernel library: compiled on first call, cached beside its source for the next process
njit = numba.njit(cache=True, nogil=True)
# the same, with numpy's error model: a float division by 0 gives inf / nan instead of Python's ZeroDivisionError.
# The results of every other division are the same IEEE numbers; without the check before each division the
# compiled loop pipelines (SpecDecode's round: 2x). For kernels whose divisors cannot be 0.
njit_numpy_errors = numba.njit(cache=True, nogil=True, error_model="numpy")


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


def compiled(fn: Callable[..., Any], **names: Any) -> Callable[..., Any]:
    """``fn`` (a core kernel of plain numbers) compiled as it is, its module's globals ``names`` replaced
    by compiled equivalents (scipy's special functions, which numba cannot call by themselves)."""
    scope = dict(fn.__globals__)
    scope.update(names)
    copy = types.FunctionType(fn.__code__, scope, fn.__name__, fn.__defaults__, fn.__closure__)
    copy.__doc__ = fn.__doc__
    return numba.njit(nogil=True)(copy)


# scipy.special.exp1 of a double, called from compiled code by its C symbol (scipy's cython_special
# exports the very function the ufunc runs, so the numbers are scipy's); a symbol, not a pointer
# baked into the code, so the kernels that call it can be cached
llvmlite.binding.add_symbol(
    "edgelam_scipy_exp1", get_cython_function_address("scipy.special.cython_special", "__pyx_fuse_1exp1")
)
_exp1_double = numba.types.ExternalFunction("edgelam_scipy_exp1", numba.types.float64(numba.types.float64,
                                                                                     numba.types.intc))


@numba.njit(nogil=True)
def exp1(x: float) -> float:
    """Exponential integral E1(x) of a double (scipy.special.exp1), for compiled code."""
    return _exp1_double(x, 0)


fcfs_finish_s = number_path(queues.fcfs_finish_s)
fcfs_wait_s = number_path(queues.fcfs_wait_s)
virtual_queue_step = number_path(queues.virtual_queue_step)
processor_sharing_time_s = compiled(queues.processor_sharing_time_s)
lindley_interval = compiled(queues.lindley_interval)
ar1_load_step = number_path(load.ar1_load_step)
rate_from_snr_bps = number_path(channel.rate_from_snr_bps)
transfer_time_one_s = compiled(channel.transfer_time_one_s)
ergodic_rate_one_bps = compiled(channel.ergodic_rate_one_bps, exp1=exp1)

__all__ = [
    "ar1_load_step", "compiled", "ergodic_rate_one_bps", "exp1", "fcfs_finish_s", "fcfs_wait_s", "lindley_interval",
    "njit", "njit_numpy_errors", "number_path", "processor_sharing_time_s", "rate_from_snr_bps",
    "transfer_time_one_s", "virtual_queue_step",
]
