"""The microservice catalog is profiled from real modules: FLOPs by hand count, shapes by forward pass."""

from __future__ import annotations

import itertools

import pytest
import torch

from edgelam.envs.microservice_routing.catalog import (
    IMAGE_SIZE,
    MEL_BINS,
    MEL_FRAMES,
    PIPELINES,
    _torch_modules,
    load_catalog,
    module_flops,
)


def test_linear_flops_equal_hand_count():
    layer = torch.nn.Linear(48, 20)
    flops, shape = module_flops(layer, (torch.randn(3, 7, 48),))
    assert flops == 2 * 48 * 20 * 3 * 7
    assert shape == (3, 7, 20)


def test_conv_flops_equal_hand_count():
    conv = torch.nn.Conv2d(3, 8, kernel_size=4, stride=4)
    flops, shape = module_flops(conv, (torch.randn(1, 3, 32, 32),))
    assert shape == (1, 8, 8, 8)
    assert flops == 2 * 3 * 4 * 4 * 8 * (8 * 8)
    conv1d = torch.nn.Conv1d(5, 6, kernel_size=3, stride=2, padding=1)
    flops, shape = module_flops(conv1d, (torch.randn(1, 5, 10),))
    assert shape == (1, 6, 5)
    assert flops == 2 * 5 * 3 * 6 * 5


def test_shipped_catalog_matches_real_encoder_forward():
    catalog = load_catalog()
    _, PatchEncoder, ConvAudioEncoder, _, _ = _torch_modules()
    image_stage = catalog["pipelines"]["image_captioning"][0]
    audio_stage = catalog["pipelines"]["speech_qa"][0]
    enc = PatchEncoder(catalog["pipelines"]["image_captioning"][0]["out_shape"][-1])
    flops, shape = module_flops(enc, (torch.randn(1, 3, IMAGE_SIZE, IMAGE_SIZE),))
    assert list(shape) == image_stage["out_shape"]
    assert flops == pytest.approx(image_stage["flops"], rel=1e-12)
    aud = ConvAudioEncoder(audio_stage["out_shape"][-1])
    flops, shape = module_flops(aud, (torch.randn(1, MEL_BINS, MEL_FRAMES),))
    assert list(shape) == audio_stage["out_shape"]
    assert flops == pytest.approx(audio_stage["flops"], rel=1e-12)
    # a stage's input is the previous stage's output
    for name, stages in catalog["pipelines"].items():
        assert [s["microservice"] for s in stages] == list(PIPELINES[name])
        for prev, nxt in itertools.pairwise(stages):
            assert nxt["in_bytes"] == prev["out_bytes"]


@pytest.mark.slow
def test_shipped_catalog_equals_fresh_profile():
    from edgelam.envs.microservice_routing.catalog import profile_catalog

    fresh = profile_catalog()
    shipped = load_catalog()
    assert fresh["microservices"] == shipped["microservices"]
    for name, stages in shipped["pipelines"].items():
        for a, b in zip(stages, fresh["pipelines"][name], strict=True):
            assert a["out_shape"] == b["out_shape"]
            assert a["flops"] == pytest.approx(b["flops"], rel=1e-9)
