"""Tiny fake unit corpora and configs for the model / data / train / decode tests.

No discretizer is needed: a tokenizer directory is just its ``meta.json``, and each word
of a transcript is "spoken" as a fixed run of units, so ASR on these records is learnable.
"""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from unified_lm.config import load_config
from unified_lm.io import write_jsonl
from unified_lm.tokenizer_meta import TokenizerMeta

REPO = Path(__file__).resolve().parents[1]
TINY_RECIPE = REPO / "experiments" / "tiny_test.yaml"
NUM_UNITS = 48

SENTENCES = [
    "the cat sat",
    "a dog ran home",
    "birds fly south",
    "we read books",
    "the sun is hot",
    "cold rain fell",
]


def make_tokenizer(directory: Path, name: str = "fake-km48", hash_: str = "f" * 16) -> TokenizerMeta:
    meta = TokenizerMeta(name=name, hash=hash_, kind="kmeans", num_units=NUM_UNITS, frame_rate=50.0)
    meta.save(directory)
    return meta


def word_units(word: str) -> list[int]:
    rng = random.Random(word)
    return [rng.randrange(NUM_UNITS) for _ in range(3)]


def make_records(meta: TokenizerMeta, sentences: list[str], subset: str = "seen_voice", prefix: str = "u") -> list[dict]:
    return [
        {
            "id": f"{prefix}{i:03d}",
            "text": text,
            "speaker": "spk0",
            "units": [u for w in text.split() for u in word_units(w)],
            "tokenizer": meta.identity,
            "subset": subset,
        }
        for i, text in enumerate(sentences)
    ]


def make_corpus(root: Path, sentences: list[str] = SENTENCES) -> dict[str, Path]:
    """``root/tok`` (meta.json), ``root/train.jsonl`` and ``root/dev.jsonl`` (the same utterances,
    in two subsets, so an overfitted model can be scored on them)."""
    meta = make_tokenizer(root / "tok")
    write_jsonl(root / "train.jsonl", make_records(meta, sentences))
    half = len(sentences) // 2
    dev = make_records(meta, sentences[:half], "seen_voice", "d")
    dev += make_records(meta, sentences[half:], "heldout_voice", "h")
    write_jsonl(root / "dev.jsonl", dev)
    return {"tok": root / "tok", "train": root / "train.jsonl", "dev": root / "dev.jsonl"}


def tiny_config(root: Path, corpus: dict[str, Path], *overrides: str):
    from unified_lm.recipes.configs import LMConfig

    return load_config(
        LMConfig,
        TINY_RECIPE,
        [
            f"data.train={corpus['train']}",
            f"data.dev={corpus['dev']}",
            f"data.tokenizer={corpus['tok']}",
            f"out_dir={root / 'run'}",
            *overrides,
        ],
    )


@pytest.fixture(scope="session")
def trained_run(tmp_path_factory):
    """A tiny model overfitted on SENTENCES: ``(corpus paths, run dir, train summary)``.

    Imported by several test modules; the run lives at a fixed place under the session's
    base temp dir, so a second module finds it finished and training only reloads it.
    """
    from unified_lm.train import train

    root = tmp_path_factory.getbasetemp() / "lm_trained"
    corpus = make_corpus(root)
    steps = ("optim.max_steps=60", "eval.every_steps=30", "checkpoint.every_steps=30", "log_every_steps=5")
    cfg = tiny_config(root, corpus, *steps)
    summary = train(cfg)
    return corpus, root / "run", summary
