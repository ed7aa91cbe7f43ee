"""Real-model runtime: the shipped model family and everything edgelam does with a real model.

Importing it does not import torch: the replay files (:mod:`.replay`) are read with numpy, and the
model-running part of the API below (models, quantisation, split execution, speculative sampling,
LoRA, profiling) imports torch on first use. transformers is imported by :func:`load` on first use.

Public API:

* Assets: :func:`assets_dir`, :func:`load_prompts`, :func:`family_card`, ``SHIPPED_MODELS``.
* Models (:mod:`.model`): :func:`load`, :func:`load_profiled` (a profile's model by its name there),
  :class:`LM`, :func:`crop_cache`, :func:`weights_sha256`
  (KV caches are ``transformers.DynamicCache`` objects from :meth:`LM.new_cache`).
* Activation quantisation (:mod:`.quantize`): :func:`quantize`, :func:`encode`, :func:`decode`,
  :func:`bit_errors`, :func:`transmit`, :func:`payload_bytes`.
* Split execution (:mod:`.split`): :func:`split_quality`, :func:`split_quality_grid`.
* Speculative sampling (:mod:`.speculative`): :func:`speculative_generate`, :func:`speculative_round`,
  :func:`target_sample`, :func:`make_draft`, :func:`acceptance_probability`, :class:`RoundStats`.
* LoRA (:mod:`.lora`): :func:`attach_lora`, :func:`lora_state`, :func:`load_lora_state`,
  :func:`average_lora_states`, :func:`lora_bytes`, :func:`train_lora_steps`.
* Replay files (:mod:`.replay`, :mod:`.profile`): :func:`load_profile`, :func:`load_manifest`,
  :class:`ProfileError`, :func:`profiles_dir`, :func:`run_profile`; the models a profile was
  recorded with: :func:`.replay.profile_models`, :func:`.replay.executed_model`.
* Prompt sets (:mod:`.prompts`, torch-free): a user's JSONL of texts (:func:`.prompts.read_prompts`),
  each model's own tokenization of a profile's prompts (:func:`.prompts.profile_tokens`).
* :mod:`.tiny_family`: a tiny random-initialised Llama/Qwen2 family with a freshly trained tokenizer,
  for trying ``edgelam profile --models ... --prompts ...`` and for the tests.
"""

from __future__ import annotations

import importlib
import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

SHIPPED_MODELS = ("device", "edge", "cloud")


def assets_dir() -> Path:
    """Folder of the shipped assets (models, tokenizer, held-out tokens and prompts, model card)."""
    return Path(__file__).resolve().parent / "assets"


def load_prompts() -> list[dict]:
    """The held-out prompt set (300 records).

    Each record has ``id``, ``prompt_ids`` (32–128 token ids), ``reference_ids`` (the next
    32 token ids of the same held-out file), and the decoded ``prompt`` / ``reference`` texts.
    """
    path = assets_dir() / "prompts.jsonl"
    if not path.exists():
        raise FileNotFoundError(f"{path} is missing; rebuild with `python -m edgelam.envs.lam.build_family`")
    with path.open() as fh:
        return [json.loads(line) for line in fh if line.strip()]


def family_card() -> dict:
    """The model card ``family.json`` of the shipped family (corpus, tokenizer, per-model losses)."""
    path = assets_dir() / "family.json"
    if not path.exists():
        raise FileNotFoundError(f"{path} is missing; rebuild with `python -m edgelam.envs.lam.build_family`")
    return json.loads(path.read_text())


from .quantize import Encoded, bit_errors, decode, encode, payload_bytes, quantize, transmit  # noqa: E402
from .replay import FORMAT_VERSION, ProfileError, load_manifest, load_profile, profiles_dir  # noqa: E402

# name -> submodule: the submodules that import torch at import time are imported on first use of one of
# their names (PEP 562), so the replay backend, which only reads profiles (:mod:`.replay`, numpy), never
# imports torch. :mod:`.quantize` imports torch inside its tensor functions, so it loads eagerly, which
# also keeps the name ``quantize`` bound to the function rather than to the submodule of the same name.
_LAZY: dict[str, str] = {
    **dict.fromkeys(
        ("attach_lora", "average_lora_states", "load_lora_state", "lora_bytes", "lora_state", "train_lora_steps"),
        "lora",
    ),
    **dict.fromkeys(("LM", "crop_cache", "load", "load_profiled", "weights_sha256"), "model"),
    **dict.fromkeys(
        (
            "RoundStats",
            "acceptance_probability",
            "make_draft",
            "speculative_generate",
            "speculative_round",
            "target_sample",
        ),
        "speculative",
    ),
    **dict.fromkeys(("split_quality", "split_quality_grid"), "split"),
}
_SUBMODULES = frozenset(
    ("build_family", "card", "lora", "model", "profile", "prompts", "speculative", "split", "tiny_family")
)

if TYPE_CHECKING:
    from .lora import (
        attach_lora,
        average_lora_states,
        load_lora_state,
        lora_bytes,
        lora_state,
        train_lora_steps,
    )
    from .model import LM, crop_cache, load, load_profiled, weights_sha256
    from .speculative import (
        RoundStats,
        acceptance_probability,
        make_draft,
        speculative_generate,
        speculative_round,
        target_sample,
    )
    from .split import split_quality, split_quality_grid


def __getattr__(name: str) -> Any:
    """Import the torch-backed part of the public API (and the torch-backed submodules) on first use."""
    if name in _LAZY:
        value = getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
        globals()[name] = value
        return value
    if name in _SUBMODULES:
        return importlib.import_module(f".{name}", __name__)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted({*globals(), *_LAZY, *_SUBMODULES})


def run_profile(*args, **kwargs):
    """Profile the real models into replay files; see :func:`.profile.run_profile`."""
    from .profile import run_profile as _run_profile

    return _run_profile(*args, **kwargs)


__all__ = [
    "FORMAT_VERSION",
    "LM",
    "SHIPPED_MODELS",
    "Encoded",
    "ProfileError",
    "RoundStats",
    "acceptance_probability",
    "assets_dir",
    "attach_lora",
    "average_lora_states",
    "bit_errors",
    "crop_cache",
    "decode",
    "encode",
    "family_card",
    "load",
    "load_lora_state",
    "load_manifest",
    "load_profile",
    "load_profiled",
    "load_prompts",
    "lora_bytes",
    "lora_state",
    "make_draft",
    "payload_bytes",
    "profiles_dir",
    "quantize",
    "run_profile",
    "speculative_generate",
    "speculative_round",
    "split_quality",
    "split_quality_grid",
    "target_sample",
    "train_lora_steps",
    "transmit",
    "weights_sha256",
]
