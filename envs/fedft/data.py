"""Non-IID federated data of the FedFT envs: tokenised CPython test-suite code grouped by package.

The fine-tuning task is a domain shift the shipped models never saw: the shipped family was
pretrained on the non-test stdlib (:func:`edgelam.envs.lam.build_family.corpus_files` skips
``test``/``tests``/``idle_test`` folders), and the devices fine-tune it on the stdlib's *test
suites*. The shipped ``partition.npz`` holds, per topic (the tests of a group of stdlib
packages, :data:`TOPICS`), a pool of training sequences and a few validation sequences, as
token ids of the shipped tokenizer. Training and validation sequences come from disjoint
files (per topic, files in order of ``crc32(path)`` go to validation until it holds
``VAL_FILE_TOKENS`` tokens, the rest to training), so validation measures
generalisation within the topic. The envs read only this file; they never touch the
machine's standard library.

Rebuild (same stdlib, tokenizer and seed -> same file)::

    python -m edgelam.envs.fedft.data
"""

from __future__ import annotations

import argparse
import sysconfig
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

PARTITION_FILE = Path(__file__).resolve().parent / "partition.npz"
SEQ_LEN = 64
TRAIN_SEQS = 256  # per topic
VAL_SEQS = 16  # per topic
MAX_FILE_BYTES = 300_000
TEST_DIRS = ("test", "tests", "idle_test")
VAL_FILE_TOKENS = 4 * VAL_SEQS * SEQ_LEN

# topic -> stdlib packages whose tests it holds ("<root>:a-l" = tests of other modules named a..l)
TOPICS: dict[str, tuple[str, ...]] = {
    "gui": ("idlelib", "tkinter", "turtledemo", "curses"),
    "packaging": ("distutils", "lib2to3", "ensurepip", "venv", "importlib"),
    "concurrency": ("asyncio", "multiprocessing", "concurrent"),
    "email": ("email",),
    "web": ("http", "urllib", "html", "xml", "xmlrpc", "wsgiref", "json"),
    "testing": ("unittest", "logging", "ctypes"),
    "core_a_l": ("<root>:a-l",),
    "core_m_z": ("<root>:m-z",),
}


@dataclass(frozen=True)
class Partition:
    """Token ids of the shipped partition.

    Attributes:
        topics: topic names, (G,).
        train: training sequences, (G, TRAIN_SEQS, SEQ_LEN) uint16.
        val: validation sequences, (G, VAL_SEQS, SEQ_LEN) uint16.
    """

    topics: tuple[str, ...]
    train: np.ndarray
    val: np.ndarray


def load_partition(path: Path | str | None = None) -> Partition:
    """Load ``partition.npz`` (the shipped one by default).

    Raises:
        FileNotFoundError: the file is missing (the message says how to rebuild it).
    """
    path = PARTITION_FILE if path is None else Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path} is missing; rebuild with `python -m edgelam.envs.fedft.data`")
    with np.load(path) as z:
        return Partition(tuple(str(t) for t in z["topics"]), z["train"].copy(), z["val"].copy())


def test_files(stdlib: Path) -> list[Path]:
    """Sorted ``.py`` files of the stdlib's test folders (none of them in the pretraining corpus)."""
    out = []
    for path in sorted(stdlib.rglob("*.py")):
        parts = path.relative_to(stdlib).parts
        if "site-packages" in parts or not any(p in TEST_DIRS for p in parts[:-1]):
            continue
        if path.stat().st_size <= MAX_FILE_BYTES:
            out.append(path)
    return out


def topic_of(rel: Path) -> str:
    """Topic of a test file: its package (``email/...``, ``test/test_email/...``), else its name's first letter."""
    if rel.parts[0] != "test":
        name = rel.parts[0]
    else:
        name = rel.parts[1].removesuffix(".py").removeprefix("_").removeprefix("test_")
    for topic, members in TOPICS.items():
        if any(name.startswith(m) for m in members if not m.startswith("<")):
            return topic
    return "core_a_l" if name[:1].lower() <= "l" else "core_m_z"


def build_partition(stdlib: Path, seed: int = 0) -> Partition:
    """Tokenise the stdlib corpus of the shipped family into the per-topic pools."""
    from transformers import PreTrainedTokenizerFast

    from edgelam.envs.lam import assets_dir
    from edgelam.envs.lam.build_family import EOS

    tokenizer = PreTrainedTokenizerFast.from_pretrained(assets_dir() / "tokenizer")
    eos = tokenizer.convert_tokens_to_ids(EOS)
    files: dict[str, list[tuple[int, list[int]]]] = {t: [] for t in TOPICS}
    for path in test_files(stdlib):
        rel = path.relative_to(stdlib)
        ids = tokenizer(path.read_text(encoding="utf-8", errors="replace"))["input_ids"]
        files[topic_of(rel)].append((zlib.crc32(str(rel).encode()), [*ids, eos]))
    streams: dict[str, dict[str, list[int]]] = {t: {"train": [], "val": []} for t in TOPICS}
    for topic, docs in files.items():
        for _, ids in sorted(docs, key=lambda d: d[0]):
            split = "val" if len(streams[topic]["val"]) < VAL_FILE_TOKENS else "train"
            streams[topic][split].extend(ids)
    rng = np.random.default_rng(seed)
    train, val = [], []
    for topic in TOPICS:
        for split, count, out in (("train", TRAIN_SEQS, train), ("val", VAL_SEQS, val)):
            ids = np.asarray(streams[topic][split], dtype=np.uint16)
            seqs = ids[: len(ids) // SEQ_LEN * SEQ_LEN].reshape(-1, SEQ_LEN)
            if len(seqs) < count:
                raise ValueError(f"topic {topic!r} has only {len(seqs)} {split} sequences, need {count}")
            out.append(seqs[np.sort(rng.choice(len(seqs), size=count, replace=False))])
    return Partition(tuple(TOPICS), np.stack(train), np.stack(val))


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--stdlib", type=Path, default=Path(sysconfig.get_paths()["stdlib"]))
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, default=PARTITION_FILE)
    args = ap.parse_args(argv)
    part = build_partition(args.stdlib, args.seed)
    np.savez_compressed(args.out, topics=np.asarray(part.topics), train=part.train, val=part.val)
    print(f"wrote {args.out}: {len(part.topics)} topics, train {part.train.shape}, val {part.val.shape}")


if __name__ == "__main__":
    main()
