"""A tiny random-initialised Hugging Face family with its own tokenizer: ``edgelam profile`` end to end in seconds.

``python -m edgelam.envs.lam.tiny_family --out DIR`` writes ``DIR/tiny-llama-s``,
``DIR/tiny-qwen2-m`` and ``DIR/tiny-llama-l`` (Llama and Qwen2 configs, 2-4 layers, hidden
32-64, random weights saved as safetensors), each with a byte-level BPE tokenizer freshly
trained by the ``tokenizers`` package on the shipped held-out prompt texts (wrapped as a
``transformers.PreTrainedTokenizerFast`` and saved beside the weights), and ``DIR/prompts.jsonl``,
the first ``--n-prompts`` shipped held-out records as ``prompt`` / ``reference`` texts.

The folders are shaped like any downloaded model folder (``config.json``, ``model.safetensors``,
``tokenizer.json``), so they exercise the path a user's own models take: loading with
safetensors only, each model tokenizing the texts itself, profiling, replay files. Their weights are
random, so their numbers say nothing about any real model; they are for trying the tools and for
the tests, never for results.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from . import load_prompts
from .prompts import write_prompts

# (folder name, architecture, layers, hidden size): smallest to largest
FAMILY = (("tiny-llama-s", "llama", 2, 32), ("tiny-qwen2-m", "qwen2", 2, 48), ("tiny-llama-l", "llama", 4, 64))
SPECIAL_TOKENS = ("<unk>", "<s>", "</s>")


def shipped_texts() -> list[str]:
    """Prompt and reference texts of the shipped held-out set (the tokenizer's training corpus)."""
    return [text for rec in load_prompts() for text in (rec["prompt"], rec["reference"])]


def train_tokenizer(texts: Sequence[str], vocab_size: int = 512) -> Any:
    """A byte-level BPE tokenizer trained on ``texts`` by the ``tokenizers`` package, adding a BOS
    ``<s>`` to every encoded prompt, as a ``transformers.PreTrainedTokenizerFast``."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    if vocab_size < 300:
        raise ValueError(f"vocab_size must be >= 300 (256 bytes, special tokens and merges), got {vocab_size}")
    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=list(SPECIAL_TOKENS),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(texts, trainer=trainer)
    bos = [("<s>", tok.token_to_id("<s>"))]
    tok.post_processor = processors.TemplateProcessing(single="<s> $A", special_tokens=bos)
    return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>", unk_token="<unk>")


def random_model(architecture: str, vocab_size: int, layers: int, hidden: int, seed: int) -> Any:
    """A random-initialised ``LlamaForCausalLM`` or ``Qwen2ForCausalLM`` (4 query heads, 2 KV heads, tied head)."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM, Qwen2Config, Qwen2ForCausalLM

    classes = {"llama": (LlamaConfig, LlamaForCausalLM), "qwen2": (Qwen2Config, Qwen2ForCausalLM)}
    if architecture not in classes:
        raise ValueError(f"architecture must be one of {sorted(classes)}, got {architecture!r}")
    config_cls, model_cls = classes[architecture]
    torch.manual_seed(seed)
    config = config_cls(
        vocab_size=vocab_size,
        hidden_size=hidden,
        intermediate_size=2 * hidden,
        num_hidden_layers=layers,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=1024,
        tie_word_embeddings=True,
        bos_token_id=1,
        eos_token_id=2,
    )
    return model_cls(config).eval()


def build_tiny_family(
    out: str | Path,
    seed: int = 0,
    vocab_size: int = 512,
    family: Sequence[tuple[str, str, int, int]] = FAMILY,
    tokenizer: Any = None,
) -> list[Path]:
    """Write the model folders of ``family`` (name, architecture, layers, hidden) into ``out``.

    Every model gets the same ``tokenizer`` (default: :func:`train_tokenizer` on :func:`shipped_texts`
    with ``vocab_size``); model ``i`` is initialised from seed ``seed + i``. Returns the folders.
    """
    from transformers.utils import logging as hf_logging

    out = Path(out)
    hf_logging.disable_progress_bar()
    tok = tokenizer if tokenizer is not None else train_tokenizer(shipped_texts(), vocab_size)
    folders = []
    for i, (name, arch, layers, hidden) in enumerate(family):
        folder = out / name
        random_model(arch, len(tok), layers, hidden, seed + i).save_pretrained(folder, safe_serialization=True)
        tok.save_pretrained(folder)
        folders.append(folder)
    return folders


def write_demo_prompts(path: str | Path, n_prompts: int = 100) -> Path:
    """The first ``n_prompts`` shipped held-out records as a prompt file of texts (:mod:`.prompts`)."""
    records = load_prompts()[:n_prompts]
    write_prompts(Path(path), [{"id": r["id"], "prompt": r["prompt"], "reference": r["reference"]} for r in records])
    return Path(path)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description="Write a tiny random-initialised HF family and a prompt file.")
    ap.add_argument("--out", type=Path, required=True, help="folder for the model folders and prompts.jsonl")
    ap.add_argument("--n-prompts", type=int, default=100, help="records in prompts.jsonl (default: 100)")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    for folder in build_tiny_family(args.out, args.seed):
        print(folder)
    print(write_demo_prompts(args.out / "prompts.jsonl", args.n_prompts))


if __name__ == "__main__":
    main()
