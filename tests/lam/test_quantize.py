"""Activation quantisation and bit errors on the transmitted codes."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from edgelam.envs.lam import bit_errors, decode, encode, payload_bytes, quantize, transmit


def _h(seed: int = 0, shape=(2, 50, 64)) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    h = torch.randn(shape, generator=gen)
    h[..., 3] *= 20  # an outlier channel, as real residual streams have
    return h


def test_fp16_is_a_cast():
    h = _h()
    assert torch.equal(quantize(h, 16), h.half().float())
    enc = encode(h, 16)
    assert enc.codes.dtype == torch.int16 and enc.scale is None


@pytest.mark.parametrize("bits", [4, 8])
@pytest.mark.parametrize("scheme", ["per_token", "per_channel"])
def test_symmetric_absmax_error_bound(bits, scheme):
    h = _h()
    enc = encode(h, bits, scheme)
    qmax = 2 ** (bits - 1) - 1
    assert enc.codes.dtype == torch.int8 and int(enc.codes.abs().max()) == qmax
    axis = -1 if scheme == "per_token" else -2
    assert enc.scale.dtype == torch.float16
    assert enc.scale.shape == (h.abs().amax(axis, keepdim=True)).shape
    err = (quantize(h, bits, scheme) - h).abs()
    assert torch.all(err <= enc.scale.float() / 2 + 1e-6)
    assert torch.equal(decode(enc), quantize(h, bits, scheme))


def test_error_shrinks_with_bits_and_zero_rows_survive():
    h = _h()
    errors = [float((quantize(h, b) - h).pow(2).mean()) for b in (4, 8, 16)]
    assert errors[0] > errors[1] > errors[2] > 0
    z = torch.zeros(1, 3, 8)
    assert torch.equal(quantize(z, 4), z) and torch.equal(quantize(z, 8), z)


def test_bad_bits_or_scheme_raise():
    for bits in (2, 3, 32):
        with pytest.raises(ValueError, match="bits must be one of"):
            quantize(_h(), bits)
    with pytest.raises(ValueError, match="scheme"):
        quantize(_h(), 8, scheme="per_tensor")


def _bit_count(x: torch.Tensor, bits: int) -> int:
    x = x.to(torch.int64) & ((1 << bits) - 1)
    return int(sum(((x >> k) & 1).sum() for k in range(bits)))


@pytest.mark.parametrize("bits", [4, 8, 16])
def test_bit_errors_flip_at_the_bit_error_rate(bits):
    enc = encode(_h(shape=(400, 64)), bits)
    codes = enc.codes
    assert bit_errors(codes, 0.0, torch.Generator().manual_seed(0), bits) is codes
    flipped = bit_errors(codes, 0.05, torch.Generator().manual_seed(1), bits)
    again = bit_errors(codes, 0.05, torch.Generator().manual_seed(1), bits)
    assert torch.equal(flipped, again) and flipped.dtype == codes.dtype
    n_bits = codes.numel() * bits
    rate = _bit_count(flipped ^ codes, bits) / n_bits
    assert rate == pytest.approx(0.05, abs=4 * np.sqrt(0.05 * 0.95 / n_bits))
    if bits == 4:  # words stay 4-bit two's complement
        assert int(flipped.min()) >= -8 and int(flipped.max()) <= 7
    all_flipped = bit_errors(codes, 1.0, torch.Generator().manual_seed(2), bits)
    assert _bit_count(all_flipped ^ codes, bits) == n_bits


def test_numpy_generator_and_errors():
    codes = encode(_h(), 8).codes
    a = bit_errors(codes, 0.1, np.random.default_rng(5))
    assert torch.equal(a, bit_errors(codes, 0.1, np.random.default_rng(5)))
    assert not torch.equal(a, bit_errors(codes, 0.1, np.random.default_rng(6)))
    with pytest.raises(ValueError, match="ber"):
        bit_errors(codes, 1.5)
    with pytest.raises(ValueError, match="int8/int16"):
        bit_errors(codes.float(), 0.1)


def test_transmit_degrades_with_ber_and_stays_finite():
    h = _h()
    clean = transmit(h, 16, 0.0)
    assert torch.equal(clean, quantize(h, 16))
    for bits in (4, 8, 16):
        noisy = [transmit(h, bits, ber, torch.Generator().manual_seed(0)) for ber in (1e-3, 1e-2)]
        assert all(torch.isfinite(x).all() for x in noisy)
        mse = [float((x - h).pow(2).mean()) for x in noisy]
        assert mse[1] > mse[0] > float((quantize(h, bits) - h).pow(2).mean())


def test_payload_bytes():
    assert payload_bytes(10, 64, 16) == 1280
    assert payload_bytes(10, 64, 8) == 640 + 20
    assert payload_bytes(10, 64, 4) == 320 + 20
    assert payload_bytes(10, 64, 8, "per_channel") == 640 + 128
    assert payload_bytes(1, 3, 4) == 2 + 2  # codes round up to whole bytes
