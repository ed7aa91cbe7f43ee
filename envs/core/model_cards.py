"""Model cards: shapes of real decoder-only LLMs (Llama/Qwen family) and their derived costs.

A card gives the architecture of a model so that a scenario can price a real-size
model (FLOPs, weight/KV/activation bytes) with the roofline model of
:mod:`edgelam.envs.core.hardware`. Cards ship in ``configs/model_cards.yaml`` (each
citing its Hugging Face ``config.json``); :meth:`ModelCard.from_hf_config` builds one
from any Hugging Face Llama/Qwen-style config, e.g. edgelam's own shipped models.

Conventions (per token, forward pass, one decoder layer):
    * Attention with grouped-query attention (Ainslie et al., EMNLP 2023): q and o
      projections d x (H hd), k and v projections d x (KV hd), optional q/k/v biases
      (Qwen2); SwiGLU MLP with three d x ffn matrices (Shazeer 2020, as in Llama,
      Touvron et al. 2023); two RMSNorm weight vectors of size d.
    * FLOPs: 2 per weight (one multiply-add) for every layer parameter, plus attention
      scores and values 4 n H hd for a token attending to n keys (Q K^T and A V, each
      2 n H hd: the convention of Chowdhery et al., PaLM, 2022, Appendix B; with
      H hd = d_model this is 4 n d_model). The LM head costs 2 d vocab per token.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np

from edgelam.envs.core.config import bounds, build, configs_dir, read_yaml

# the projections of a Llama/Qwen decoder layer a LoRA adapter can sit on
LORA_PROJECTIONS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


def _out(x: np.ndarray) -> np.ndarray | float:
    return x[()] if x.ndim == 0 else x


@dataclass(frozen=True)
class ModelCard:
    """Shape of a decoder-only transformer LLM.

    Attributes:
        name: card name (the YAML key).
        num_layers: number of decoder layers L.
        d_model: hidden size d.
        num_heads: query heads H.
        num_kv_heads: key/value heads KV (GQA; KV = H is multi-head attention).
        ffn_dim: SwiGLU intermediate size.
        vocab_size: vocabulary size V.
        tied_embeddings: whether the LM head shares the input embedding matrix.
        head_dim: per-head size hd (``None``: d_model / num_heads).
        qkv_bias: whether q, k, v projections carry biases (Qwen2 does).
        params_reported: parameter count reported by the model's authors (for checks).
        source: where the shape comes from (the HF ``config.json`` URL).
    """

    name: str
    num_layers: int = field(metadata=bounds(1, 1_000))
    d_model: int = field(metadata=bounds(1, 1_000_000))
    num_heads: int = field(metadata=bounds(1, 10_000))
    num_kv_heads: int = field(metadata=bounds(1, 10_000))
    ffn_dim: int = field(metadata=bounds(1, 10_000_000))
    vocab_size: int = field(metadata=bounds(1, 10_000_000))
    tied_embeddings: bool = False
    head_dim: int | None = field(default=None, metadata=bounds(1, 100_000))
    qkv_bias: bool = False
    params_reported: float | None = field(default=None, metadata=bounds(1.0, None))
    source: str = ""

    def validate(self) -> None:
        """Cross-field checks -> ``ValueError`` naming the key."""
        if self.head_dim is None and self.d_model % self.num_heads:
            raise ValueError(f"num_heads: d_model {self.d_model} is not divisible by num_heads {self.num_heads}")
        if self.num_heads % self.num_kv_heads:
            raise ValueError(f"num_kv_heads: num_heads {self.num_heads} is not a multiple of {self.num_kv_heads}")

    # -- shapes and parameter counts ----------------------------------------------------------------

    @property
    def head_size(self) -> int:
        """Per-head size hd."""
        return self.head_dim if self.head_dim is not None else self.d_model // self.num_heads

    @property
    def q_dim(self) -> int:
        """Width of the query projection H hd."""
        return self.num_heads * self.head_size

    @property
    def kv_dim(self) -> int:
        """Width of each of the key and value projections KV hd."""
        return self.num_kv_heads * self.head_size

    @property
    def attention_params_per_layer(self) -> int:
        """q, k, v, o weights (+ q/k/v biases): 2 d (H hd) + 2 d (KV hd) (+ H hd + 2 KV hd)."""
        weights = 2 * self.d_model * self.q_dim + 2 * self.d_model * self.kv_dim
        return weights + (self.q_dim + 2 * self.kv_dim if self.qkv_bias else 0)

    @property
    def mlp_params_per_layer(self) -> int:
        """SwiGLU gate, up and down matrices: 3 d ffn."""
        return 3 * self.d_model * self.ffn_dim

    @property
    def params_per_layer(self) -> int:
        """Attention + MLP + two RMSNorm vectors (2 d)."""
        return self.attention_params_per_layer + self.mlp_params_per_layer + 2 * self.d_model

    @property
    def embedding_params(self) -> int:
        """Input embedding V d."""
        return self.vocab_size * self.d_model

    @property
    def lm_head_params(self) -> int:
        """Parameters of the output projection V d (shared with the embedding when tied)."""
        return self.vocab_size * self.d_model

    @property
    def total_params(self) -> int:
        """L per-layer params + embedding + untied LM head + final norm d."""
        head = 0 if self.tied_embeddings else self.lm_head_params
        return self.num_layers * self.params_per_layer + self.embedding_params + head + self.d_model

    def lora_params(self, rank: int, targets: tuple[str, ...] = LORA_PROJECTIONS) -> int:
        """Parameters of a LoRA adapter of ``rank`` on the ``targets`` projections of every layer
        (Hu et al., ICLR 2022): A is r x in and B is out x r, so r (in + out) per projection."""
        if int(rank) != rank or rank < 1:
            raise ValueError(f"rank: need an integer >= 1, got {rank!r}")
        d, f, q, kv = self.d_model, self.ffn_dim, self.q_dim, self.kv_dim
        dims = {"q_proj": (d, q), "k_proj": (d, kv), "v_proj": (d, kv), "o_proj": (q, d),
                "gate_proj": (d, f), "up_proj": (d, f), "down_proj": (f, d)}
        unknown = [t for t in targets if t not in dims]
        if unknown or not targets:
            raise ValueError(f"targets: need names among {', '.join(dims)}, got {targets!r}")
        return self.num_layers * int(rank) * sum(dims[t][0] + dims[t][1] for t in targets)

    # -- FLOPs and bytes ------------------------------------------------------------------------------

    def flops_per_token(self, context_len: np.ndarray | float) -> np.ndarray | float:
        """Forward FLOPs of one token in one layer attending to ``context_len`` keys.

        2 params_per_layer + 4 context_len H hd (PaLM convention, module docstring).
        Vectorised over ``context_len``.
        """
        n = np.asarray(context_len, dtype=np.float64)
        if np.any(~(n >= 0)):
            raise ValueError(f"context_len: must be >= 0, got {context_len!r}")
        return _out(2.0 * self.params_per_layer + 4.0 * n * self.q_dim)

    @property
    def lm_head_flops_per_token(self) -> float:
        """LM head FLOPs per token: 2 d V."""
        return 2.0 * self.d_model * self.vocab_size

    def weight_bytes_per_layer(self, bits: np.ndarray | float = 16) -> np.ndarray | float:
        """Bytes of one layer's weights stored at ``bits`` bits per parameter."""
        return _out(self.params_per_layer * np.asarray(bits, dtype=np.float64) / 8.0)

    def lm_head_weight_bytes(self, bits: np.ndarray | float = 16) -> np.ndarray | float:
        """Bytes of the LM head matrix V d at ``bits`` bits per parameter."""
        return _out(self.lm_head_params * np.asarray(bits, dtype=np.float64) / 8.0)

    def total_weight_bytes(self, bits: np.ndarray | float = 16) -> np.ndarray | float:
        """Bytes of all weights (embedding, layers, head, norms) at ``bits`` bits."""
        return _out(self.total_params * np.asarray(bits, dtype=np.float64) / 8.0)

    def activation_bytes(self, tokens: np.ndarray | float, bits: np.ndarray | float = 16) -> np.ndarray | float:
        """Bytes of the hidden states of ``tokens`` tokens at ``bits`` bits: tokens d bits / 8."""
        t = np.asarray(tokens, dtype=np.float64)
        return _out(t * self.d_model * np.asarray(bits, dtype=np.float64) / 8.0)

    def kv_bytes_per_token_per_layer(self, bits: np.ndarray | float = 16) -> np.ndarray | float:
        """KV-cache bytes of one token in one layer: 2 KV hd bits / 8 (keys and values)."""
        return _out(2.0 * self.kv_dim * np.asarray(bits, dtype=np.float64) / 8.0)

    # -- construction from Hugging Face configs -----------------------------------------------------------

    @classmethod
    def from_hf_config(cls, config: Mapping[str, Any] | Any, name: str, source: str = "") -> ModelCard:
        """Card from a Hugging Face Llama/Qwen2-style config (a ``config.json`` dict or a
        ``transformers.PretrainedConfig``).

        Reads ``num_hidden_layers``, ``hidden_size``, ``num_attention_heads``,
        ``num_key_value_heads`` (default: heads), ``intermediate_size``, ``vocab_size``,
        ``tie_word_embeddings`` (default False), ``head_dim`` (optional) and
        ``attention_bias`` (Llama; Qwen2 always has q/k/v biases).

        Raises:
            ValueError: if a required key is missing or a value is invalid.
        """
        if not isinstance(config, Mapping):
            to_dict = getattr(config, "to_dict", None)
            if to_dict is None:
                raise ValueError(f"{name}: expected a config mapping or a transformers config, got {config!r}")
            config = to_dict()
        required = ("num_hidden_layers", "hidden_size", "num_attention_heads", "intermediate_size", "vocab_size")
        missing = [k for k in required if config.get(k) is None]
        if missing:
            raise ValueError(f"{name}: Hugging Face config lacks {', '.join(missing)}")
        qkv_bias = config.get("model_type") == "qwen2" or bool(config.get("attention_bias", False))
        data = {
            "name": name,
            "num_layers": config["num_hidden_layers"],
            "d_model": config["hidden_size"],
            "num_heads": config["num_attention_heads"],
            "num_kv_heads": config.get("num_key_value_heads") or config["num_attention_heads"],
            "ffn_dim": config["intermediate_size"],
            "vocab_size": config["vocab_size"],
            "tied_embeddings": bool(config.get("tie_word_embeddings", False)),
            "head_dim": config.get("head_dim"),
            "qkv_bias": qkv_bias,
            "source": source,
        }
        return build(cls, data, prefix=f"{name}.")

    @classmethod
    def from_hf_folder(cls, folder: Path | str, name: str | None = None) -> ModelCard:
        """Card from ``<folder>/config.json`` of a local Hugging Face model folder."""
        path = Path(folder) / "config.json"
        try:
            data = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError) as exc:
            raise ValueError(f"cannot read Hugging Face config {path}: {exc}") from None
        return cls.from_hf_config(data, name or Path(folder).name, source=str(path))


# -- catalog -----------------------------------------------------------------------------------------------


def _shipped_models_dir() -> Path:
    return Path(str(resources.files("edgelam.envs.lam"))) / "assets" / "models"


def file_stamp(path: Path) -> tuple[int, int] | None:
    """(mtime in ns, size) of ``path``, a cache key part so an edited catalog is parsed again; ``None`` if absent."""
    try:
        st = path.stat()
    except OSError:
        return None
    return st.st_mtime_ns, st.st_size


@functools.lru_cache(maxsize=8)
def _load_cards(path: str, stamp: tuple[int, int] | None) -> dict[str, ModelCard]:
    """Parse a card file; ``stamp`` (:func:`file_stamp`) is only part of the cache key."""
    data = read_yaml(path)
    if not data:
        raise ValueError(f"{path}: no model cards")
    cards = {}
    for key, entry in data.items():
        if not isinstance(entry, Mapping):
            raise ValueError(f"{key}: expected a mapping of ModelCard fields, got {entry!r}")
        if "name" in entry:
            raise ValueError(f"unknown config key '{key}.name' (the card's name is its YAML key)")
        cards[str(key)] = build(ModelCard, {**entry, "name": str(key)}, prefix=f"{key}.")
    return cards


def load_model_cards(path: Path | str | None = None) -> dict[str, ModelCard]:
    """Model cards by name from ``path`` (default: the shipped ``configs/model_cards.yaml``).

    Parsed once per file version (cached on path, mtime and size); each call returns a fresh dict.

    Raises:
        ValueError: for bad YAML, an unknown key or a bad value, naming ``<card>.<key>``.
    """
    file = Path(path) if path is not None else configs_dir() / "model_cards.yaml"
    return dict(_load_cards(str(file), file_stamp(file)))


def get_model_card(name: str, path: Path | str | None = None) -> ModelCard:
    """The card ``name`` from the catalog, else a shipped edgelam model of that name
    (``edgelam/envs/lam/assets/models/<name>/config.json``), else a local HF model folder.

    Raises:
        ValueError: if ``name`` is none of these (the message lists the card names).
    """
    cards = load_model_cards(path)
    if name in cards:
        return cards[name]
    shipped = _shipped_models_dir() / name
    if (shipped / "config.json").is_file():
        return ModelCard.from_hf_folder(shipped, name)
    if (Path(name) / "config.json").is_file():
        return ModelCard.from_hf_folder(name)
    raise ValueError(f"unknown model card {name!r} (cards: {', '.join(cards)}; or a shipped model / HF folder)")


# -- `model_card: auto`: the card of the model that really executes ------------------------------------------

AUTO_CARD = "auto"
LLAMA_STYLE_TYPES = ("llama", "mistral", "qwen2", "qwen3")  # the shapes ModelCard counts (SwiGLU, GQA, RMSNorm)


def safetensors_param_count(folder: Path | str) -> int:
    """Parameters stored in a Hugging Face folder's safetensors weights, from the file headers only
    (no tensor is read; no torch). A tied LM head stored beside the embedding is counted once.

    Raises:
        ValueError: no ``model.safetensors`` (or sharded index), or a header that cannot be parsed.
    """
    folder = Path(folder)
    index = folder / "model.safetensors.index.json"
    try:
        if index.is_file():
            files = sorted(set(json.loads(index.read_text())["weight_map"].values()))
        elif (folder / "model.safetensors").is_file():
            files = ["model.safetensors"]
        else:
            raise ValueError(f"{folder} has no safetensors weights (model.safetensors or its index)")
        shapes: dict[str, list[int]] = {}
        for fname in files:
            with (folder / fname).open("rb") as fh:
                size = int.from_bytes(fh.read(8), "little")
                header = json.loads(fh.read(size))
            shapes.update({k: v["shape"] for k, v in header.items() if k != "__metadata__"})
    except (OSError, KeyError, TypeError, json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ValueError(f"cannot read the safetensors headers of {folder}: {exc}") from None
    counts = {k: int(np.prod(v, dtype=np.int64)) for k, v in shapes.items()}
    config = json.loads((folder / "config.json").read_text()) if (folder / "config.json").is_file() else {}
    tied = bool(config.get("tie_word_embeddings", False))
    if tied and "lm_head.weight" in counts and "model.embed_tokens.weight" in counts:
        counts.pop("lm_head.weight")
    return sum(counts.values())


def auto_model_card(folder: Path | str, name: str | None = None, rtol: float = 0.01) -> ModelCard:
    """Card of an executed Hugging Face model from its own ``config.json`` (``model_card: auto``).

    Layers, hidden size, heads, KV heads, intermediate size and vocabulary come from the config
    (:meth:`ModelCard.from_hf_config`); ``params_reported`` is the parameter count of the stored
    weights (:func:`safetensors_param_count`), which must match the card's own count within
    ``rtol``, so a model the card's shape model does not describe is refused rather than mispriced.

    Args:
        folder: the model folder (a shipped name resolves to its folder).
        name: card name (default: the folder's name).
        rtol: allowed relative difference of the two parameter counts (Qwen3's per-head q/k
            norms, which the card does not count, are well below 1%).

    Raises:
        ValueError: a missing or unreadable config, an architecture other than
            :data:`LLAMA_STYLE_TYPES`, a non-SwiGLU MLP, or parameter counts that disagree.
    """
    path = Path(folder)
    if not (path / "config.json").is_file() and (_shipped_models_dir() / str(folder) / "config.json").is_file():
        path = _shipped_models_dir() / str(folder)
    label = name or path.name
    try:
        config = json.loads((path / "config.json").read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise ValueError(f"model_card: auto: cannot read {path / 'config.json'}: {exc}") from None
    model_type = config.get("model_type")
    if model_type not in LLAMA_STYLE_TYPES:
        raise ValueError(
            f"model_card: auto: {label} is a {model_type!r} model; auto cards price Llama-style decoders "
            f"({', '.join(LLAMA_STYLE_TYPES)}); name a card from configs/model_cards.yaml instead"
        )
    act = config.get("hidden_act", "silu")
    if act not in ("silu", "swish"):
        raise ValueError(f"model_card: auto: {label} has hidden_act {act!r}; the card counts a SwiGLU (silu) MLP")
    card = ModelCard.from_hf_config(config, label, source=str(path / "config.json"))
    stored = safetensors_param_count(path)
    if abs(stored - card.total_params) > rtol * card.total_params:
        raise ValueError(
            f"model_card: auto: {label}'s weights hold {stored:,} parameters, its config's shape "
            f"{card.total_params:,}; the card would misprice it, name a card from configs/model_cards.yaml instead"
        )
    return build(ModelCard, {**card.__dict__, "params_reported": float(stored)}, prefix=f"{label}.")


def resolve_model_card(name: str, profile_dir: Path | str | None = None, path: Path | str | None = None) -> ModelCard:
    """The card a scenario names: ``auto`` is the executed model's own (:func:`auto_model_card`) --
    the model a profile folder executed (``profile_dir``; ``None``: the shipped profiles), or the
    folder ``path`` -- and any other name is :func:`get_model_card`'s.

    Raises:
        ValueError: as :func:`get_model_card` and :func:`auto_model_card`; a profile's problems as
            ``ProfileError`` (a ``ValueError``).
    """
    if name != AUTO_CARD:
        return get_model_card(name)
    if path is not None:
        return auto_model_card(path)
    from edgelam.envs.lam.replay import executed_model

    model, folder = executed_model(profile_dir)
    return auto_model_card(folder, model)
