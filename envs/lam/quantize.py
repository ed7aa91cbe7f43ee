"""Activation quantisation for split inference, and bit errors on the transmitted codes.

Supported precisions (``bits``):

* 16: IEEE fp16 cast; the transmitted codes are the fp16 bit patterns (``int16``).
* 8 and 4: symmetric uniform absmax quantisation, ``q = clamp(round(h / s), -Q, Q)`` with
  ``Q = 2^(bits-1) - 1`` (127 or 7) and ``s = max|h| / Q`` taken per token (``per_token``:
  over the hidden dimension, the default) or per channel (``per_channel``: over the tokens
  of the message). The scale travels as fp16 (2 bytes per token or per channel) and is
  assumed to arrive intact (side information under strong coding); codes are two's
  complement ``bits``-bit words (``int8`` tensors).

:func:`quantize` returns the dequantised tensor (what the receiver computes with);
:func:`encode` / :func:`decode` expose the codes and :func:`bit_errors` flips their bits
independently at a bit error rate. Non-finite values, possible only after bit errors hit
an fp16 exponent, decode to 0.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:  # torch is imported by the functions that touch tensors: payload_bytes and BITS need none
    import torch

BITS = (4, 8, 16)
SCHEMES = ("per_token", "per_channel")
_FP16_MIN_NORMAL = 2.0**-14


@dataclass(frozen=True)
class Encoded:
    """A quantised message.

    Attributes:
        codes: integer codes, same shape as the input ``(..., T, d)``; ``int16`` fp16 bit
            patterns for 16 bits, ``int8`` values in ``[-Q, Q]`` for 8 and 4 bits.
        scale: fp16 scales ``(..., T, 1)`` (per token) or ``(..., 1, d)`` (per channel);
            ``None`` for 16 bits.
        bits: 4, 8 or 16.
        dtype: dtype the receiver decodes into.
    """

    codes: torch.Tensor
    scale: torch.Tensor | None
    bits: int
    dtype: torch.dtype


def _check(bits: int, scheme: str) -> None:
    if bits not in BITS:
        raise ValueError(f"bits must be one of {BITS}, got {bits!r}")
    if scheme not in SCHEMES:
        raise ValueError(f"scheme must be one of {SCHEMES}, got {scheme!r}")


def encode(h: torch.Tensor, bits: int, scheme: str = "per_token") -> Encoded:
    """Quantise ``h`` ``(..., T, d)`` into codes and scales (see the module docstring)."""
    import torch

    _check(bits, scheme)
    if bits == 16:
        return Encoded(h.detach().to(torch.float16).view(torch.int16), None, 16, h.dtype)
    qmax = 2 ** (bits - 1) - 1
    x = h.detach().float()
    absmax = x.abs().amax(dim=-1 if scheme == "per_token" else -2, keepdim=True)
    scale = (absmax / qmax).clamp_min(_FP16_MIN_NORMAL).to(torch.float16)
    codes = torch.round(x / scale.float()).clamp_(-qmax, qmax).to(torch.int8)
    return Encoded(codes, scale, bits, h.dtype)


def decode(enc: Encoded) -> torch.Tensor:
    """Dequantise an :class:`Encoded` message (non-finite values become 0)."""
    import torch

    if enc.bits == 16:
        x = enc.codes.view(torch.float16).to(enc.dtype)
    else:
        x = (enc.codes.float() * enc.scale.float()).to(enc.dtype)
    return torch.nan_to_num(x, nan=0.0, posinf=0.0, neginf=0.0)


def quantize(h: torch.Tensor, bits: int, scheme: str = "per_token") -> torch.Tensor:
    """Quantise and dequantise ``h`` at ``bits`` in {4, 8, 16}; raises ``ValueError`` otherwise."""
    return decode(encode(h, bits, scheme))


def bit_errors(
    codes: torch.Tensor,
    ber: float,
    generator: torch.Generator | np.random.Generator | None = None,
    bits: int | None = None,
) -> torch.Tensor:
    """Flip each of the low ``bits`` bits of every code independently with probability ``ber``.

    Args:
        codes: integer codes (``int8`` or ``int16``; two's complement ``bits``-bit words).
        ber: bit error rate in [0, 1].
        generator: seeded ``torch.Generator`` or ``numpy.random.Generator`` (``None``: torch's
            global generator).
        bits: word length; default the dtype's width (8 for ``int8``, 16 for ``int16``); pass
            4 for 4-bit codes.

    Returns:
        A new tensor of the same dtype and shape (``codes`` itself when ``ber == 0``).
    """
    import torch

    width = {torch.int8: 8, torch.int16: 16, torch.int32: 32}.get(codes.dtype)
    if width is None:
        raise ValueError(f"codes must be an int8/int16/int32 tensor, got {codes.dtype}")
    bits = width if bits is None else bits
    if not 1 <= bits <= min(width, 16):
        raise ValueError(f"bits must be in [1, {min(width, 16)}] for {codes.dtype} codes, got {bits}")
    if not 0.0 <= ber <= 1.0:
        raise ValueError(f"ber must be in [0, 1], got {ber}")
    if ber == 0.0:
        return codes
    shape = (*codes.shape, bits)
    if isinstance(generator, np.random.Generator):
        flips = torch.from_numpy(generator.random(shape) < ber)
    else:
        flips = torch.rand(shape, generator=generator) < ber
    weights = 2 ** torch.arange(bits, dtype=torch.int32)
    mask = (flips.to(torch.int32) * weights).sum(-1).to(codes.device)
    word = (codes.to(torch.int32) & ((1 << bits) - 1)) ^ mask
    signed = word - ((word >> (bits - 1)) & 1) * (1 << bits)
    return signed.to(codes.dtype)


def transmit(
    h: torch.Tensor,
    bits: int,
    ber: float = 0.0,
    generator: torch.Generator | np.random.Generator | None = None,
    scheme: str = "per_token",
) -> torch.Tensor:
    """What the receiver reconstructs: quantise, flip code bits at ``ber``, dequantise."""
    enc = encode(h, bits, scheme)
    if ber > 0.0:
        enc = Encoded(bit_errors(enc.codes, ber, generator, bits), enc.scale, enc.bits, enc.dtype)
    return decode(enc)


def payload_bytes(num_tokens: int, hidden_size: int, bits: int, scheme: str = "per_token") -> int:
    """Bytes of a quantised ``(num_tokens, hidden_size)`` message: codes plus fp16 scales.

    ``ceil(num_tokens * hidden_size * bits / 8)`` plus ``2 * num_tokens`` (per token) or
    ``2 * hidden_size`` (per channel) for 4 and 8 bits; no scales for 16 bits.
    """
    _check(bits, scheme)
    code_bytes = -(-num_tokens * hidden_size * bits // 8)
    if bits == 16 or num_tokens == 0:
        return code_bytes
    return code_bytes + 2 * (num_tokens if scheme == "per_token" else hidden_size)
