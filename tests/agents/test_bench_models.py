"""The model benchmark times both paths on the shipped models and reports their ratio."""

from __future__ import annotations

import pytest

from edgelam.agents.bench_models import bench_models


class _Clock:
    """A perf_counter that only the model forwards advance: each costs a known number of seconds."""

    def __init__(self) -> None:
        self.now = 100.0

    def perf_counter(self) -> float:
        return self.now


class _TimedModel:
    """The HF module, each forward charged ``cost`` s of the fake clock."""

    def __init__(self, model, clock: _Clock, cost: float) -> None:
        self._model, self._clock, self._cost = model, clock, cost
        self.forward = model.forward  # cache_argument reads its signature

    def __call__(self, *args, **kwargs):
        out = self._model(*args, **kwargs)
        self._clock.now += self._cost
        return out


class _TimedLM:
    """The edgelam wrapper, each ``logits`` call charged ``cost`` s; its ``model`` charged ``raw_cost``."""

    def __init__(self, lm, clock: _Clock, cost: float, raw_cost: float) -> None:
        self._lm, self._clock, self._cost = lm, clock, cost
        self.model = _TimedModel(lm.model, clock, raw_cost)

    def __getattr__(self, name):
        return getattr(self._lm, name)

    def logits(self, *args, **kwargs):
        out = self._lm.logits(*args, **kwargs)
        self._clock.now += self._cost
        return out


def test_bench_models_reports_both_paths(monkeypatch):
    from edgelam.agents import bench_models as module
    from edgelam.envs import lam

    # a fake clock: a wrapper forward "takes" 3 ms, a raw one 2 ms; the prompt's forward is not timed
    clock = _Clock()
    real_load = lam.load
    monkeypatch.setattr(lam, "load", lambda name: _TimedLM(real_load(name), clock, 3e-3, 2e-3))
    monkeypatch.setattr(module, "time", clock)
    (row,) = bench_models(names=("device",), tokens=4, context=8, repeats=3)
    assert row["model"] == "device" and row["layers"] == real_load("device").num_layers
    assert row["wrapper_s_per_token"] == pytest.approx(3e-3, rel=1e-9)
    assert row["raw_s_per_token"] == pytest.approx(2e-3, rel=1e-9)
    assert row["overhead"] == pytest.approx(1.5, rel=1e-9)
    # and on the real clock: both paths really decode, a token takes time
    monkeypatch.undo()
    (row,) = bench_models(names=("device",), tokens=4, context=8, repeats=1)
    assert 0 < row["wrapper_s_per_token"] < 1.0 and 0 < row["raw_s_per_token"] < 1.0
    assert row["overhead"] == pytest.approx(row["wrapper_s_per_token"] / row["raw_s_per_token"])


def test_bench_speculative_reports_measured_and_predicted_rates():
    from edgelam.agents.bench_models import bench_speculative

    res = bench_speculative(gammas=(0, 2), prompts=1, tokens=4)
    assert 0.0 < res["alpha"] < 1.0 and res["c"] > 0.0
    base, spec = res["rows"]
    assert base["gamma"] == 0 and base["predicted_tokens_per_s"] == base["tokens_per_s"] > 0
    # Leviathan et al. Theorem 3.8 from the measured alpha and c
    expected = base["tokens_per_s"] * (1 - res["alpha"] ** 3) / ((1 - res["alpha"]) * (2 * res["c"] + 1))
    assert spec["predicted_tokens_per_s"] == pytest.approx(expected)
