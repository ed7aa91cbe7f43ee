"""The runtime on transformers' current cache API: ``DynamicCache`` objects passed under the name
the installed version takes, never a legacy tuple and never a deprecated argument; and the pytest
``filterwarnings`` of pyproject.toml really turn a deprecated call into an error."""

from __future__ import annotations

import logging
import warnings

import pytest
import torch
from transformers import Cache, DynamicCache

from edgelam.envs.lam import crop_cache, speculative_generate
from edgelam.envs.lam.model import cache_argument

from . import perturbed, tiny_lm


@pytest.fixture
def layer_calls():
    """``spy(lm)`` records the keyword arguments of every decoder-layer call of ``lm``."""
    calls: list[dict] = []
    handles = []

    def spy(lm):
        for layer in lm.model.model.layers:
            handles.append(
                layer.register_forward_pre_hook(lambda _m, _a, kwargs: calls.append(dict(kwargs)), with_kwargs=True)
            )

    yield spy, calls
    for handle in handles:
        handle.remove()


@pytest.fixture
def transformers_log():
    """Messages transformers logs at WARNING and above (its deprecation notices for cache names)."""
    records: list[str] = []
    handler = logging.Handler(logging.WARNING)
    handler.emit = lambda record: records.append(record.getMessage())
    logger = logging.getLogger("transformers")
    logger.addHandler(handler)
    logging.Logger.warning_once.cache_clear()  # transformers' warning_once: emit again in this test
    yield records
    logger.removeHandler(handler)


@torch.no_grad()
def test_layers_get_a_dynamic_cache_under_the_name_transformers_takes(layer_calls):
    spy, calls = layer_calls
    target = tiny_lm(0)
    draft = perturbed(target, 0.05, seed=1)
    spy(target)
    spy(draft)
    name = cache_argument(target.model.model.layers[0])
    with warnings.catch_warnings():
        warnings.simplefilter("error", FutureWarning)
        warnings.simplefilter("error", DeprecationWarning)
        speculative_generate(target, draft, list(range(5, 17)), 12, gamma=3, temperature=1.0, seed=0)
        target.logits(list(range(3, 9)), target.new_cache())
        target.logits(list(range(3, 9)))
    assert len(calls) > 20
    for kwargs in calls:
        assert name in kwargs
        assert kwargs[name] is None or isinstance(kwargs[name], DynamicCache), type(kwargs[name])
        assert not any(isinstance(v, tuple) and k != "position_embeddings" for k, v in kwargs.items())
        if name == "cache":
            assert "past_key_values" not in kwargs
    assert any(isinstance(kwargs[name], DynamicCache) for kwargs in calls)


@torch.no_grad()
def test_raw_bench_decode_passes_a_cache_object_and_logs_no_deprecation(transformers_log):
    from edgelam.agents.bench_models import _decode_raw

    lm = tiny_lm(2)
    seen = []
    handle = lm.model.register_forward_pre_hook(lambda _m, _a, kwargs: seen.append(dict(kwargs)), with_kwargs=True)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", FutureWarning)
            _decode_raw(lm.model, torch.arange(1, 9)[None], tokens=3)
    finally:
        handle.remove()
    name = cache_argument(lm.model)
    assert len(seen) == 4
    assert all(isinstance(kwargs[name], Cache) for kwargs in seen)
    assert len({id(kwargs[name]) for kwargs in seen}) == 1  # one cache, filled in place
    assert seen[0][name].get_seq_length() == 8 + 3
    assert not [m for m in transformers_log if "deprecated" in m], transformers_log


@torch.no_grad()
def test_crop_cache_keeps_the_first_tokens_of_every_layer():
    lm = tiny_lm(3, layers=3)
    cache = lm.new_cache()
    h = lm.forward_layers(lm.embed(list(range(10))), 0, 1, cache)  # layer 0: 10 tokens
    lm.forward_layers(h[:, :4], 1, 3, cache, positions=torch.arange(4))  # layers 1, 2: 4 tokens
    crop_cache(cache, 6)
    assert [cache.get_seq_length(i) for i in range(3)] == [6, 4, 4]
    crop_cache(cache, 4)
    assert [cache.get_seq_length(i) for i in range(3)] == [4, 4, 4]
    crop_cache(cache, 0)
    assert [cache.get_seq_length(i) for i in range(3)] == [0, 0, 0]
    with pytest.raises(ValueError, match="crop length"):
        crop_cache(cache, -1)


def _old_call_warns(call) -> bool:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        call()
    return any(issubclass(w.category, FutureWarning) and "past_key_values" in str(w.message) for w in caught)


@torch.no_grad()
@pytest.mark.parametrize("caller", ["decoder_layer", "whole_model", "edgelam_module"])
def test_pyproject_filters_turn_the_deprecated_cache_argument_into_an_error(caller):
    """Passes the cache under its old name once, as each kind of caller would, and expects the
    ``filterwarnings`` of pyproject.toml (active in every test) to raise the FutureWarning."""
    lm = tiny_lm(4)
    ids = torch.arange(1, 6)[None]
    h = lm.embed(ids)
    position_embeddings = lm._rotary(h, torch.arange(5)[None])
    layer = lm.model.model.layers[0]
    if caller == "decoder_layer":  # attributed to transformers.modeling_layers

        def call():
            layer(h, past_key_values=DynamicCache(), use_cache=True, position_embeddings=position_embeddings)

    elif caller == "whole_model":  # attributed to torch.nn.modules.module (Module.__call__)

        def call():
            lm.model(input_ids=ids, past_key_values=DynamicCache(), use_cache=True)

    else:  # a direct call from a module named edgelam.*: attributed to that module, or to the
        # `kernels` wrapper that newer transformers put around attention forwards
        code = compile("attn.forward(h, position_embeddings=pe, past_key_values=DynamicCache())", "probe", "exec")
        scope = {"__name__": "edgelam.envs.lam.probe", "DynamicCache": DynamicCache}
        scope.update(attn=layer.self_attn, h=h, pe=position_embeddings)

        def call():
            exec(code, scope)

    if not _old_call_warns(call):
        pytest.skip("this transformers does not deprecate `past_key_values`: nothing to catch")
    with pytest.raises(FutureWarning, match="past_key_values"):
        call()
