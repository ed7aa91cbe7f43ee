"""Loading a causal LM and running it layer by layer.

:func:`load` returns an :class:`LM`, a thin wrapper over a Hugging Face Llama-style
``*ForCausalLM`` (``model.model.embed_tokens``, ``.layers``, ``.norm``, ``.rotary_emb`` and
``model.lm_head``; Llama, Mistral, Qwen2/3 and the shipped family all have this shape) that
exposes the pieces split inference and speculative decoding need:

``head(forward_layers(embed(ids), 0, L))`` equals the HF model's logits, and running
``[0, l)`` then ``[l, L)`` equals ``[0, L)``. A ``transformers.DynamicCache`` (:meth:`LM.new_cache`)
makes incremental decoding equal to a full recompute; rotary positions continue from the cache
length, and :func:`crop_cache` rolls it back.

Weights are loaded in float32 for execution, whatever their stored dtype; nothing is ever
downloaded (``local_files_only=True``). The wrapper builds plain causal masks: sliding-window
attention (Mistral-style configs) is not applied.
"""

from __future__ import annotations

import copy
import inspect
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
from torch import nn

from . import SHIPPED_MODELS, assets_dir, replay
from .quantize import payload_bytes

if TYPE_CHECKING:
    from transformers import DynamicCache

REBUILD_HINT = "rebuild the shipped family with `python -m edgelam.envs.lam.build_family`"
WEIGHT_FILES = (
    "model.safetensors",
    "model.safetensors.index.json",
    "pytorch_model.bin",
    "pytorch_model.bin.index.json",
)
SAFE_WEIGHT_FILES = WEIGHT_FILES[:2]  # the only ones load() reads (no unpickling)

_CACHE: dict[str, LM] = {}


def crop_cache(cache: DynamicCache, length: int) -> None:
    """Roll ``cache`` back to the first ``length`` tokens of every layer (speculative decoding
    after a rejection); layers holding ``length`` tokens or fewer are left as they are.

    Each layer is cropped by its own ``crop`` with the number of tokens to drop, negative: the
    only form transformers accepts since 5.20 (a layer with nothing to drop is not called).
    """
    if length < 0:
        raise ValueError(f"crop length must be >= 0, got {length}")
    for layer in cache.layers:
        excess = layer.get_seq_length() - length
        if excess > 0:
            layer.crop(-excess)


def cache_argument(module: nn.Module) -> str:
    """Name under which ``module.forward`` (an HF decoder layer or model) takes the KV cache.

    transformers 5.24 renamed ``past_key_values`` to ``cache`` (the old name warns until its
    removal in 5.40); the name is read from the signature, so the cache is never passed under a
    name the module would swallow into ``**kwargs`` and ignore.
    """
    params = inspect.signature(module.forward).parameters
    for name in ("cache", "past_key_values"):
        if name in params:
            return name
    raise ValueError(f"{type(module).__name__}.forward takes no KV cache (neither `cache` nor `past_key_values`)")


class LM:
    """A causal LM run layer by layer (see the module docstring).

    Attributes:
        name: shipped name (``device``/``edge``/``cloud``), folder name, or a derived name
            (``cloud:early_exit:2``).
        model: the underlying HF ``*ForCausalLM`` (float32, eval mode, weights frozen).
        tokenizer: the HF tokenizer of the folder (``None`` if the folder has none).
        num_layers: decoder layers this wrapper runs (fewer than the HF model for an early exit).
        hidden_size, vocab_size: model shapes.
        path: the folder it was loaded from (``None`` for derived models).

    Token ids may be a list, a 1-D ``(T,)`` or 2-D ``(B, T)`` tensor/array; hidden states are
    always ``(B, T, hidden_size)`` and logits ``(B, T, vocab_size)``.
    """

    def __init__(
        self,
        model: nn.Module,
        tokenizer=None,
        name: str = "model",
        num_layers: int | None = None,
        path: Path | None = None,
    ) -> None:
        base = getattr(model, "model", None)
        missing = [
            attr
            for obj, attr in (
                (model, "lm_head"),
                (base, "embed_tokens"),
                (base, "layers"),
                (base, "norm"),
                (base, "rotary_emb"),
            )
            if obj is None or not hasattr(obj, attr)
        ]
        if missing:
            raise ValueError(
                f"{name}: not a Llama-style causal LM (needs model.embed_tokens, model.layers, model.norm, "
                f"model.rotary_emb and lm_head; missing {missing}); got {type(model).__name__}"
            )
        total = len(base.layers)
        num_layers = total if num_layers is None else num_layers
        if not 1 <= num_layers <= total:
            raise ValueError(f"num_layers must be in [1, {total}], got {num_layers}")
        self.model = model
        self.tokenizer = tokenizer
        self.name = name
        self.path = path
        self.config = model.config
        self.num_layers = num_layers
        self.hidden_size = int(model.config.hidden_size)
        self.vocab_size = int(model.lm_head.weight.shape[0])
        self._embed_tokens = base.embed_tokens
        self._layers = list(base.layers)[:num_layers]
        self._norm = base.norm
        self._rotary = base.rotary_emb
        self._lm_head = model.lm_head
        self._cache_arg = cache_argument(self._layers[0])
        self._derived: dict[str, LM] = {}

    def __repr__(self) -> str:
        return f"LM({self.name!r}, layers={self.num_layers}, d={self.hidden_size}, vocab={self.vocab_size})"

    @property
    def device(self) -> torch.device:
        return self._lm_head.weight.device

    def new_cache(self) -> DynamicCache:
        """An empty ``transformers.DynamicCache`` for incremental decoding with this model.

        Built without the config, so every layer keeps all its tokens: a sliding-window config
        would make the cache drop tokens that the wrapper's plain causal mask still attends to.
        Each layer keeps its own length, so a split run may fill layers ``[0, l)`` and ``[l, L)``
        from two calls.
        """
        from transformers import DynamicCache

        return DynamicCache()

    def cached_tokens(self, cache: DynamicCache) -> int:
        """Tokens ``cache`` holds for this model's first layer."""
        return cache.get_seq_length(self._layer_idx(0))

    def as_ids(self, ids) -> torch.Tensor:
        """Token ids as a ``(B, T)`` int64 tensor on the model's device."""
        t = torch.as_tensor(np.asarray(ids) if not isinstance(ids, torch.Tensor) else ids, dtype=torch.long)
        if t.ndim == 1:
            t = t.unsqueeze(0)
        if t.ndim != 2:
            raise ValueError(f"token ids must be 1-D or 2-D, got shape {tuple(t.shape)}")
        if t.numel() and (int(t.min()) < 0 or int(t.max()) >= self.vocab_size):
            raise ValueError(
                f"token ids must be in [0, {self.vocab_size}), got [{int(t.min())}, {int(t.max())}]"
            )
        return t.to(self.device)

    def embed(self, ids) -> torch.Tensor:
        """Token embeddings ``(B, T, d)`` (the hidden state entering layer 0)."""
        return self._embed_tokens(self.as_ids(ids))

    def forward_layers(
        self,
        h: torch.Tensor,
        start: int,
        end: int,
        cache: DynamicCache | None = None,
        positions: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Run decoder layers ``[start, end)`` on hidden states ``h`` ``(B, T, d)``.

        Args:
            h: hidden states entering layer ``start``.
            start, end: layer range, ``0 <= start <= end <= num_layers``.
            cache: KV cache; the ``T`` new tokens attend to what layer ``start`` already holds
                and are appended to it.
            positions: rotary positions ``(T,)`` or ``(B, T)``; default continues from the
                cache length of layer ``start`` (``0..T-1`` without a cache).
        """
        if not 0 <= start <= end <= self.num_layers:
            raise ValueError(
                f"layer range must satisfy 0 <= start <= end <= {self.num_layers}, got [{start}, {end})"
            )
        if h.ndim != 3 or h.shape[-1] != self.hidden_size:
            raise ValueError(f"hidden states must be (B, T, {self.hidden_size}), got {tuple(h.shape)}")
        if start == end:
            return h
        batch, seq_len = h.shape[:2]
        past = cache.get_seq_length(self._layer_idx(start)) if cache is not None else 0
        if positions is None:
            positions = torch.arange(past, past + seq_len, device=h.device)
        positions = torch.as_tensor(positions, device=h.device, dtype=torch.long)
        if positions.ndim == 1:
            positions = positions.unsqueeze(0)
        positions = positions.expand(batch, seq_len)
        position_embeddings = self._rotary(h, positions)
        mask = self._attention_mask(seq_len, past, h.dtype, h.device)
        for layer in self._layers[start:end]:
            out = layer(
                h,
                attention_mask=mask,
                position_ids=positions,
                use_cache=cache is not None,
                position_embeddings=position_embeddings,
                **{self._cache_arg: cache},
            )
            h = out[0] if isinstance(out, tuple) else out
        return h

    def head(self, h: torch.Tensor) -> torch.Tensor:
        """Final norm + LM head: logits ``(B, T, vocab)`` from the last layer's hidden states."""
        return self._lm_head(self._norm(h))

    def logits(self, ids, cache: DynamicCache | None = None, last: int | None = None) -> torch.Tensor:
        """Logits ``(B, T, vocab)`` of ``ids`` through all layers (appending to ``cache``).

        ``last=k`` applies the head to the last ``k`` positions only (``(B, k, vocab)``).
        """
        h = self.forward_layers(self.embed(ids), 0, self.num_layers, cache=cache)
        if last is not None:
            h = h[:, -last:]
        return self.head(h)

    def _layer_idx(self, i: int) -> int:
        return int(getattr(self._layers[i].self_attn, "layer_idx", i))

    def _attention_mask(self, seq_len: int, past: int, dtype: torch.dtype, device) -> torch.Tensor | None:
        """Additive causal mask ``(1, 1, T, past + T)``; ``None`` where attention needs none.

        A single new token attends to everything cached; SDPA applies causality itself when
        nothing is cached. Every other case (eager attention, several new tokens after a
        cache: speculative verification) gets an explicit mask.
        """
        if seq_len == 1:
            return None
        if past == 0 and getattr(self.config, "_attn_implementation", "eager") == "sdpa":
            return None
        kv = past + seq_len
        allowed = (
            torch.arange(kv, device=device)[None, :] <= (past + torch.arange(seq_len, device=device))[:, None]
        )
        mask = torch.zeros(seq_len, kv, dtype=dtype, device=device)
        mask.masked_fill_(~allowed, torch.finfo(dtype).min)
        return mask[None, None]

    def layer_flops(self, seq_len: int, context_len: int = 0) -> np.ndarray:
        """Matmul FLOPs per decoder layer, shape ``(num_layers,)``, from the real weight shapes.

        ``seq_len`` new tokens attending causally to ``context_len`` cached tokens plus
        themselves (prefill: ``context_len=0``; one decoded token: ``seq_len=1``). Counts
        ``2 * in * out`` per token for every linear layer and ``4 * head_dim * heads`` per
        (query, key) pair for scores and weighted values; norms, RoPE and activations are
        neglected (< 1%).
        """
        if seq_len < 0 or context_len < 0:
            raise ValueError(f"seq_len and context_len must be >= 0, got {seq_len}, {context_len}")
        pairs = seq_len * context_len + seq_len * (seq_len + 1) // 2
        out = np.zeros(self.num_layers)
        for i, layer in enumerate(self._layers):
            linear = sum(m.in_features * m.out_features for m in layer.modules() if isinstance(m, nn.Linear))
            attn = layer.self_attn
            heads = int(getattr(attn, "num_heads", None) or self.config.num_attention_heads)
            out[i] = 2.0 * seq_len * linear + 4.0 * pairs * heads * attn.head_dim
        return out

    def head_flops(self, seq_len: int) -> float:
        """Matmul FLOPs of the LM head for ``seq_len`` tokens."""
        return 2.0 * seq_len * self.hidden_size * self.vocab_size

    def activation_bytes(self, seq_len: int, bits: int, scheme: str = "per_token") -> int:
        """Bytes sent when splitting after a layer: ``seq_len`` hidden states at ``bits`` bits.

        Includes the fp16 scale per token (``per_token``) or per channel (``per_channel``)
        that 4/8-bit quantisation transmits with the codes; see :func:`.quantize.payload_bytes`.
        """
        return payload_bytes(seq_len, self.hidden_size, bits, scheme)

    @property
    def num_params(self) -> int:
        """Distinct parameters of the layers this wrapper runs, embeddings and head (tied counted once)."""
        params = {
            id(p): p
            for m in [self._embed_tokens, *self._layers, self._norm, self._lm_head]
            for p in m.parameters()
        }
        return sum(p.numel() for p in params.values())

    @property
    def param_bytes(self) -> int:
        """Bytes of :attr:`num_params` at 16 bits per weight (the shipped fp16 storage)."""
        return 2 * self.num_params

    def layer_param_bytes(self, bits: int = 16) -> np.ndarray:
        """Bytes of each decoder layer's weights at ``bits`` per weight, shape ``(num_layers,)``."""
        return np.array([sum(p.numel() for p in layer.parameters()) * bits / 8 for layer in self._layers])

    def truncated(self, num_layers: int) -> LM:
        """Early-exit view: the first ``num_layers`` layers, then this model's final norm and head.

        Shares the weights (no copy); use its own cache (:meth:`new_cache`).
        """
        key = f"early_exit:{num_layers}"
        if key not in self._derived:
            if not 1 <= num_layers < self.num_layers:
                raise ValueError(f"early exit needs 1 <= k < {self.num_layers}, got {num_layers}")
            self._derived[key] = LM(self.model, self.tokenizer, f"{self.name}:{key}", num_layers, None)
        return self._derived[key]

    def fake_quantized(self, bits: int = 8) -> LM:
        """Copy whose linear weights (decoder layers and head) are symmetric per-output-channel
        ``bits``-bit fake-quantised: ``W = round(W / s) * s``, ``s = max|W_row| / (2^(bits-1) - 1)``.
        Tied embeddings share the head's quantised weight.
        """
        key = f"int{bits}"
        if key not in self._derived:
            if not 2 <= bits <= 16:
                raise ValueError(f"weight bits must be in [2, 16], got {bits}")
            model = copy.deepcopy(self.model)
            qmax = 2 ** (bits - 1) - 1
            with torch.no_grad():
                for module in model.modules():
                    if isinstance(module, nn.Linear):
                        w = module.weight
                        scale = w.abs().amax(dim=1, keepdim=True).clamp_min(1e-12) / qmax
                        w.copy_(torch.round(w / scale).clamp(-qmax, qmax) * scale)
            self._derived[key] = LM(model, self.tokenizer, f"{self.name}:{key}", self.num_layers, None)
        return self._derived[key]


def resolve_path(name_or_path: str | Path) -> Path:
    """Folder of a shipped model name or a local HF folder; raises if it has no weights."""
    name = str(name_or_path)
    if name in SHIPPED_MODELS:
        path = assets_dir() / "models" / name
        for fname in ("config.json", "model.safetensors"):
            if not (path / fname).exists():
                raise FileNotFoundError(f"shipped model {name!r} is missing {path / fname}; {REBUILD_HINT}")
        return path
    path = Path(name_or_path).expanduser()
    if not path.is_dir():
        raise FileNotFoundError(
            f"{name!r} is neither a shipped model ({'|'.join(SHIPPED_MODELS)}) nor a local Hugging Face "
            "model folder (models are never downloaded)"
        )
    if not (path / "config.json").exists():
        raise FileNotFoundError(f"{path} has no config.json: not a Hugging Face model folder")
    if not any((path / f).exists() for f in WEIGHT_FILES):
        raise FileNotFoundError(f"{path} has no weights (expected one of {', '.join(WEIGHT_FILES)})")
    if not any((path / f).exists() for f in SAFE_WEIGHT_FILES):
        raise ValueError(
            f"{path} holds only pickle weights (pytorch_model.bin); edgelam loads safetensors only, since "
            "unpickling a file can run arbitrary code. If you trust the folder, convert it once: "
            "python -c \"from transformers import AutoModelForCausalLM as M; "
            f"M.from_pretrained('{path}').save_pretrained('{path}-safetensors')\" and load that folder"
        )
    return path.resolve()


def torch_device(device: str | torch.device = "cpu") -> torch.device:
    """``device`` as a ``torch.device`` after checking it can run here (``cpu``, ``cuda``, ``cuda:1`` ...).

    Raises:
        ValueError: an unknown device string, or CUDA asked for where torch sees no GPU.
    """
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError) as exc:
        raise ValueError(f"device: {device!r} is not a torch device (use cpu or cuda): {exc}") from None
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(
                f"device: {device!r} asked for, but torch {torch.__version__} sees no CUDA GPU; use --device cpu"
            )
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise ValueError(f"device: {device!r}, but only {torch.cuda.device_count()} CUDA device(s) exist")
    elif dev.type != "cpu":
        raise ValueError(f"device: {device!r} is not supported (use cpu or cuda)")
    return dev


def load(name_or_path: str | Path, fresh: bool = False, device: str | torch.device = "cpu") -> LM:
    """Load a shipped model (``device``, ``edge``, ``cloud``) or a local HF causal-LM folder.

    Models are cached per resolved folder and device; every caller shares the same weights. Pass
    ``fresh=True`` for a private copy (e.g. before attaching and training LoRA adapters).
    ``device`` (``cpu`` or ``cuda[:i]``) is where the float32 weights live and run.

    Raises:
        FileNotFoundError: unknown name, missing folder or missing weight file (the message
            says which file and, for shipped models, how to rebuild them).
        ValueError: the folder is not a Llama-style causal LM, or holds only pickle weights
            (``pytorch_model.bin``; the message says how to convert them to safetensors),
            or ``device`` cannot run here.
    """
    path = resolve_path(name_or_path)
    dev = torch_device(device)
    key = str(path) if dev.type == "cpu" else f"{path}@{dev}"
    if not fresh and key in _CACHE:
        return _CACHE[key]
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from transformers.utils import logging as hf_logging

    name = str(name_or_path) if str(name_or_path) in SHIPPED_MODELS else path.name
    bars = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        model = AutoModelForCausalLM.from_pretrained(
            path, local_files_only=True, dtype=torch.float32, use_safetensors=True, trust_remote_code=False
        )
        try:
            tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True, trust_remote_code=False)
        except (OSError, ValueError):
            tokenizer = None
    finally:
        if bars:
            hf_logging.enable_progress_bar()
    model.eval()
    model.requires_grad_(False)
    if dev.type != "cpu":
        model.to(dev)
    lm = LM(model, tokenizer, name, path=path)
    if not fresh:
        _CACHE[key] = lm
    return lm


def weights_sha256(name_or_path: str | Path) -> str:
    """SHA-256 over the weight files of a shipped name or local folder (:func:`.replay.weights_sha256`)."""
    return replay.weights_sha256(resolve_path(name_or_path))


def profiled_source(name: str, profile_dir: str | Path | None = None) -> str | Path:
    """What :func:`load` takes for model ``name`` of a profile folder (``None``: the shipped profiles):
    the folder its manifest records, or the name of a shipped model in its shipped folder (so a
    missing shipped model says how to rebuild it).

    Raises:
        ValueError: ``name`` is not one of the profile's models (the message lists them; derived
            drafts such as ``early_exit:2`` and ``int8`` come from :func:`.speculative.make_draft`).
        ProfileError: a missing or unreadable manifest.
    """
    models = replay.profile_models(profile_dir)
    if name not in models:
        where = profile_dir if profile_dir is not None else "the shipped profiles"
        raise ValueError(f"{name!r} is not a model of the profile in {where} (models: {', '.join(models)})")
    if name in SHIPPED_MODELS and Path(models[name]) == assets_dir() / "models" / name:
        return name
    return models[name]


def load_profiled(name: str, profile_dir: str | Path | None = None, device: str | torch.device = "cpu") -> LM:
    """Model ``name`` of a profile folder, loaded from :func:`profiled_source`: what a live backend
    runs for a ``profile_dir`` (``None``: the shipped profiles, whose models are the shipped family).

    Raises:
        ValueError, ProfileError: as :func:`profiled_source`.
    """
    return load(profiled_source(name, profile_dir), device=device)
