"""Split execution quality against the full run."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from edgelam.envs.lam import load, load_prompts, split_quality, split_quality_grid

from . import largest_shipped

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def lm():
    return load(largest_shipped())


@pytest.fixture(scope="module")
def grids(lm):
    prompts = load_prompts()[:8]
    return [split_quality_grid(lm, p["prompt_ids"], p["reference_ids"]) for p in prompts]


def test_grid_shapes_and_ends_equal_full_run(lm, grids):
    L = lm.num_layers
    for g in grids:
        assert g["top1_agreement"].shape == (L + 1, 3) and list(g["bits"]) == [4, 8, 16]
        for end in (0, L):
            assert np.all(g["top1_agreement"][end] == 1.0) and np.all(g["kl_nats"][end] == 0.0)
            assert np.all(g["ref_accuracy"][end] == g["ref_accuracy_full"])


def test_sixteen_bits_agrees_with_the_full_run(grids):
    agreement = np.stack([g["top1_agreement"][:, 2] for g in grids])  # (prompts, L+1)
    assert agreement.mean(0).min() >= 0.99
    assert np.stack([g["kl_nats"][:, 2] for g in grids]).max() < 1e-3


def test_quality_is_monotone_in_bits_on_average(grids):
    inner = slice(1, -1)
    top1 = np.mean([g["top1_agreement"][inner] for g in grids], axis=(0, 1))  # per bits [4, 8, 16]
    kl = np.mean([g["kl_nats"][inner] for g in grids], axis=(0, 1))
    assert top1[2] >= top1[1] >= top1[0]
    assert kl[2] <= kl[1] <= kl[0] and kl[0] > 0
    assert top1[0] < 1.0  # 4 bits really loses something


def test_single_split_matches_the_grid(lm, grids):
    p = load_prompts()[0]
    for layer, b in ((1, 4), (lm.num_layers // 2, 8), (lm.num_layers - 1, 16)):
        single = split_quality(lm, p["prompt_ids"], p["reference_ids"], layer, b)
        j = [4, 8, 16].index(b)
        assert single["top1_agreement"] == pytest.approx(grids[0]["top1_agreement"][layer, j], abs=1e-9)
        assert single["kl_nats"] == pytest.approx(grids[0]["kl_nats"][layer, j], rel=1e-6, abs=1e-9)
        assert single["ref_accuracy_full"] == pytest.approx(float(grids[0]["ref_accuracy_full"]))


def test_bit_errors_hurt_and_are_seeded(lm):
    p = load_prompts()[1]
    args = (lm, p["prompt_ids"], p["reference_ids"], lm.num_layers // 2, 8)
    clean = split_quality(*args)
    noisy = split_quality(*args, ber=1e-2, seed=3)
    assert noisy == split_quality(*args, ber=1e-2, seed=3)
    assert noisy["kl_nats"] > clean["kl_nats"]
    assert split_quality(lm, p["prompt_ids"], p["reference_ids"], 0, 4, ber=0.5, seed=0)["kl_nats"] == 0.0


def test_bad_split_inputs(lm):
    p = load_prompts()[0]
    with pytest.raises(ValueError, match="split_layer"):
        split_quality(lm, p["prompt_ids"], p["reference_ids"], lm.num_layers + 1, 8)
    with pytest.raises(ValueError, match="bits"):
        split_quality(lm, p["prompt_ids"], p["reference_ids"], 1, 6)
    with pytest.raises(ValueError, match="non-empty"):
        split_quality(lm, p["prompt_ids"], [], 1, 8)
