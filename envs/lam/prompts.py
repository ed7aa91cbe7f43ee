"""Prompt sets for profiling: a user's JSONL file of texts, tokenized by each model's own tokenizer.

A prompt file holds one JSON object per line (blank lines are skipped)::

    {"prompt": "def add(a, b):\\n", "reference": "    return a + b\\n"}
    {"id": 7, "prompt": "The capital of France is", "reference": " Paris."}

``prompt`` and ``reference`` are non-empty strings (the reference is the continuation the
models are scored on, teacher-forced); ``id`` is an optional unique integer >= 0 (default: the
record's position). Any other key, a line that is not a JSON object or a missing/empty text
raises ``ValueError`` naming the file and the line.

Each model tokenizes the texts with its own tokenizer (:func:`tokenize_prompts`): the prompt with
the tokenizer's special tokens (a BOS where the tokenizer adds one), the reference without; the
prompt keeps its last ``max_prompt_tokens`` tokens and the reference its first
``max_reference_tokens``. The shipped held-out set (:func:`~edgelam.envs.lam.load_prompts`) is
already token ids of the shipped tokenizer: a model with that tokenizer (or a folder with none,
taken to share it) is fed those ids, any other model its own tokenization of the decoded texts.

Importing this module does not import torch; the tokenizers passed in are Hugging Face
tokenizers (``LM.tokenizer``).
"""

from __future__ import annotations

import functools
import hashlib
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from . import assets_dir, load_prompts

RECORD_KEYS = ("id", "prompt", "reference")
MAX_PROMPT_TOKENS = 512
MAX_REFERENCE_TOKENS = 32
PROMPTS_FILE = "prompts.jsonl"  # the copy of a user's prompt records inside a profile folder


def read_prompts(path: str | Path) -> list[dict[str, Any]]:
    """The records of a prompt JSONL file as ``{"id", "prompt", "reference", "line"}`` dicts.

    Raises:
        FileNotFoundError: the file does not exist.
        ValueError: a bad record (``FILE:LINE: what is wrong``), a duplicate id, or no record.
    """
    file = Path(path).expanduser()
    if not file.is_file():
        raise FileNotFoundError(f"prompt file {file} does not exist")
    records: list[dict[str, Any]] = []
    seen: dict[int, int] = {}
    try:
        lines = file.read_text(encoding="utf-8").splitlines()
    except UnicodeDecodeError as exc:
        raise ValueError(f"{file}: not UTF-8 text ({exc})") from None
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        where = f"{file}:{number}"
        try:
            rec = json.loads(line)
        except json.JSONDecodeError as exc:
            raise ValueError(f"{where}: not a JSON object ({exc.msg} at column {exc.colno})") from None
        if not isinstance(rec, dict):
            raise ValueError(f"{where}: expected a JSON object with 'prompt' and 'reference', got {type(rec).__name__}")
        unknown = sorted(set(rec) - set(RECORD_KEYS))
        if unknown:
            raise ValueError(f"{where}: unknown key(s) {unknown}; a record has {list(RECORD_KEYS)} ('id' optional)")
        for key in ("prompt", "reference"):
            text = rec.get(key)
            if not isinstance(text, str) or not text.strip():
                raise ValueError(f"{where}: '{key}' must be a non-empty string, got {text!r}")
        rid = rec.get("id", len(records))
        if isinstance(rid, bool) or not isinstance(rid, int) or rid < 0:
            raise ValueError(f"{where}: 'id' must be an integer >= 0, got {rid!r}")
        if rid in seen:
            raise ValueError(f"{where}: id {rid} repeats the id of line {seen[rid]}")
        seen[rid] = number
        records.append({"id": rid, "prompt": rec["prompt"], "reference": rec["reference"], "line": number})
    if not records:
        raise ValueError(f"{file}: no prompt records (one JSON object per line with 'prompt' and 'reference')")
    return records


def write_prompts(path: Path, records: Sequence[dict[str, Any]]) -> None:
    """Write ``records`` as a prompt file (``id``, ``prompt``, ``reference`` per line)."""
    lines = [json.dumps({k: rec[k] for k in RECORD_KEYS}, ensure_ascii=False) for rec in records]
    Path(path).write_text("\n".join(lines) + "\n", encoding="utf-8")


def tokenizer_sha256(tokenizer: Any, below: int | None = None) -> str:
    """SHA-256 of a tokenizer's vocabulary (token -> id): equal iff the ids mean the same tokens.

    ``below`` keeps only the ids under it: the ids a model with that many embedding rows can read
    and emit (a Qwen2 tokenizer class appends a pad token past a small model's embedding, say).
    """
    vocab = sorted((tok, idx) for tok, idx in tokenizer.get_vocab().items() if below is None or idx < below)
    return hashlib.sha256(json.dumps(vocab, ensure_ascii=False).encode()).hexdigest()


@functools.lru_cache(maxsize=1)
def shipped_tokenizer_sha256() -> str:
    """:func:`tokenizer_sha256` of the shipped tokenizer (``assets/tokenizer``)."""
    from transformers import AutoTokenizer

    return tokenizer_sha256(AutoTokenizer.from_pretrained(assets_dir() / "tokenizer", local_files_only=True))


def uses_shipped_ids(tokenizer: Any) -> bool:
    """Whether a model with this tokenizer (``None``: the folder has none) is fed the shipped token ids."""
    return tokenizer is None or tokenizer_sha256(tokenizer) == shipped_tokenizer_sha256()


def tokenize_prompts(
    tokenizer: Any,
    records: Sequence[dict[str, Any]],
    model: str,
    vocab_size: int,
    max_prompt_tokens: int = MAX_PROMPT_TOKENS,
    max_reference_tokens: int = MAX_REFERENCE_TOKENS,
    source: str = "",
) -> list[dict[str, Any]]:
    """``records`` with ``prompt_ids`` / ``reference_ids`` from ``tokenizer`` (see the module docstring).

    Args:
        tokenizer: the model's Hugging Face tokenizer.
        records: dicts with ``id``, ``prompt``, ``reference`` (and ``line`` for error messages).
        model: the model's name, for error messages.
        vocab_size: rows of the model's embedding; every id must be below it.
        max_prompt_tokens, max_reference_tokens: truncation (>= 1).
        source: the prompt file, for error messages.

    Raises:
        ValueError: a text that tokenizes to nothing, or ids outside the model's vocabulary
            (the tokenizer is not the model's).
    """
    if max_prompt_tokens < 1 or max_reference_tokens < 1:
        raise ValueError(
            f"max_prompt_tokens and max_reference_tokens must be >= 1, got {max_prompt_tokens}, {max_reference_tokens}"
        )
    out = []
    for rec in records:
        prompt = list(tokenizer(rec["prompt"], add_special_tokens=True)["input_ids"])[-max_prompt_tokens:]
        reference = list(tokenizer(rec["reference"], add_special_tokens=False)["input_ids"])[:max_reference_tokens]
        where = f"{source}:{rec['line']}" if source and "line" in rec else f"prompt id {rec['id']}"
        if not prompt or not reference:
            raise ValueError(f"{where}: model {model!r}'s tokenizer turns the prompt or the reference into no tokens")
        top = max(prompt + reference)
        if top >= vocab_size:
            raise ValueError(
                f"{where}: model {model!r}'s tokenizer gives id {top}, outside its {vocab_size}-token embedding; "
                "the folder's tokenizer is not the model's"
            )
        out.append({**rec, "prompt_ids": prompt, "reference_ids": reference})
    return out


def shipped_records(n_prompts: int | None = None) -> list[dict[str, Any]]:
    """The first ``n_prompts`` shipped held-out records (all when ``None``)."""
    records = load_prompts()
    return records if n_prompts is None else records[:n_prompts]


def profile_records(profile_dir: str | Path | None = None) -> list[dict[str, Any]]:
    """The prompt records a profile folder was recorded on, in its order (texts and, for the
    shipped set, the shipped ids); ``None``: the shipped profiles.

    Raises:
        ProfileError: a missing or edited ``prompts.jsonl`` copy (SHA-256 against the manifest).
    """
    from .replay import load_manifest, profiles_dir, sha256_file

    folder = Path(profile_dir) if profile_dir is not None else profiles_dir()
    manifest = load_manifest(folder)
    n = int(manifest.get("settings", {}).get("n_prompts", 0)) or None
    if PROMPTS_FILE not in manifest["files"]:
        return shipped_records(n)
    from .replay import _error

    path = folder / PROMPTS_FILE
    if not path.is_file():
        raise _error(folder, PROMPTS_FILE, "file is missing")
    if sha256_file(path) != manifest["files"][PROMPTS_FILE]:
        raise _error(folder, PROMPTS_FILE, "SHA-256 differs from manifest.json (corrupt or edited)")
    return read_prompts(path)


def model_records(
    lm: Any,
    records: Sequence[dict[str, Any]],
    shipped_set: bool,
    max_prompt_tokens: int = MAX_PROMPT_TOKENS,
    max_reference_tokens: int = MAX_REFERENCE_TOKENS,
    source: str = "",
) -> list[dict[str, Any]]:
    """The token ids model ``lm`` (an :class:`~edgelam.envs.lam.LM`) is fed for ``records``.

    The shipped set with the shipped tokenizer (or none): the shipped ids; otherwise the model's
    own tokenization of the texts.

    Raises:
        ValueError: a user prompt set and a folder without a tokenizer, or the errors of
            :func:`tokenize_prompts`.
    """
    if shipped_set and uses_shipped_ids(lm.tokenizer):
        return [dict(rec) for rec in records]
    if lm.tokenizer is None:
        raise ValueError(
            f"model {lm.name!r} ({lm.path}) has no tokenizer; a prompt file of texts needs one "
            "(tokenizer.json / tokenizer_config.json beside the weights)"
        )
    return tokenize_prompts(
        lm.tokenizer, records, lm.name, lm.vocab_size, max_prompt_tokens, max_reference_tokens, source
    )


def profile_tokens(lm: Any, profile_dir: str | Path | None = None) -> list[dict[str, Any]]:
    """The prompt records of a profile folder as model ``lm`` was fed them when profiled
    (``prompt_ids`` / ``reference_ids``), so a live backend runs exactly what replay recorded.
    """
    from .replay import load_manifest

    manifest = load_manifest(profile_dir)
    settings = manifest.get("settings", {})
    return model_records(
        lm,
        profile_records(profile_dir),
        PROMPTS_FILE not in manifest["files"],
        int(settings.get("max_prompt_tokens", MAX_PROMPT_TOKENS)),
        int(settings.get("max_reference_tokens", MAX_REFERENCE_TOKENS)),
    )
