"""Fake cell results for the loss-grid report and runner tests: the schema of ``run_cell``."""

from __future__ import annotations

import json
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np
import soundfile as sf
import yaml

CHARS_PER_WORD = 5


def fake_eval(ids: Sequence[str], subsets: Sequence[str | None], errors: Sequence[int], refs: Sequence[int]) -> dict:
    """An ``evals[name]`` entry: corpus and subset rates pooled from the per-utterance counts
    (character counts are the word counts times CHARS_PER_WORD)."""

    def rates(idx: list[int]) -> dict:
        e, r = sum(errors[i] for i in idx), sum(refs[i] for i in idx)
        return {"wer": e / r, "cer": e / r, "num_utts": len(idx)}

    everyone = list(range(len(ids)))
    names = sorted({s for s in subsets if s is not None})
    return {
        **rates(everyone),
        "subsets": {n: rates([i for i in everyone if subsets[i] == n]) for n in names},
        "utterances": {
            "id": list(ids),
            "subset": list(subsets),
            "word_errors": list(errors),
            "ref_words": list(refs),
            "char_errors": [CHARS_PER_WORD * e for e in errors],
            "ref_chars": [CHARS_PER_WORD * r for r in refs],
        },
    }


def fake_result(tokenizer: str, loss: str, seed: int, evals: dict, alpha: float | None = None, steps: int = 4) -> dict:
    parts = ["ce_text"] + (["ce_speech"] if loss != "mask" else []) + (["kl_speech"] if loss == "sld" else [])
    train_curve = {"step": list(range(1, steps + 1)), "loss": [3.0 / s for s in range(1, steps + 1)]}
    train_curve.update({p: [2.0 / s + seed for s in range(1, steps + 1)] for p in parts})
    return {
        "key": f"{tokenizer}/{loss}/seed{seed}",
        "hash": "0" * 64,
        "tokenizer": tokenizer,
        "loss": loss,
        "alpha": alpha,
        "seed": seed,
        "train": {"steps": steps},
        "evals": evals,
        "curves": {"train": train_curve, "dev": {"step": [steps], "dev_wer": [evals["dev"]["wer"]]}},
        "seconds": 0.0,
    }


# ---- a tiny audio corpus and a fake cell runner for the grid tests ----------------------

REPO = Path(__file__).resolve().parents[1]
SR = 16000
WORDS = ["red", "green", "blue", "cat", "dog", "runs", "sits", "fast", "slow", "home"]


def tone_wav(path: Path, seed: int, seconds: float = 0.4) -> None:
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * SR)) / SR
    pitch = rng.uniform(100, 300)
    wav = sum(rng.uniform(0.05, 0.2) * np.sin(2 * np.pi * pitch * h * t) for h in range(1, 5))
    sf.write(path, (wav + rng.normal(0, 0.01, t.size)).astype(np.float32), SR, subtype="PCM_16")


def make_audio_corpus(root: Path, sizes: dict[str, int] | None = None) -> dict[str, Path]:
    """train/dev/test audio manifests of short tone WAVs; test lines carry seen/heldout subsets."""
    sizes = sizes or {"train": 6, "dev": 2, "test": 4}
    root.mkdir(parents=True, exist_ok=True)
    manifests = {}
    for split, n in sizes.items():
        rows = []
        for i in range(n):
            uid = f"{split}{i}"
            tone_wav(root / f"{uid}.wav", seed=zlib.crc32(uid.encode()))
            text = " ".join(WORDS[(i + k) % len(WORDS)] for k in range(3))
            row = {"id": uid, "audio": f"{uid}.wav", "text": text, "speaker": f"s{i % 2}", "duration": 0.4}
            if split == "test":
                row["subset"] = "seen_voice" if i % 2 == 0 else "heldout_voice"
            rows.append(row)
        manifests[split] = root / f"{split}.jsonl"
        manifests[split].write_text("".join(json.dumps(r) + "\n" for r in rows))
    return manifests


def grid_config(path: Path, manifests: dict[str, Path], out_dir: Path, **sections) -> Path:
    """A loss-grid YAML over ``manifests``: fbank and mfcc k-means with k=8, EnCodec without
    weights, no figures (they cost seconds; one test turns them on)."""
    cfg = {
        "corpus": {k: str(v) for k, v in manifests.items()},
        "tokenizers": [
            {"recipe": str(REPO / "tokenizers/fbank-km500.yaml"), "overrides": ["kmeans.k=8", "name=fbank-km8"]},
            {"recipe": str(REPO / "tokenizers/mfcc-km100.yaml"), "overrides": ["kmeans.k=8", "name=mfcc-km8"]},
            {"recipe": str(REPO / "tokenizers/encodec-24k.yaml")},
        ],
        "losses": [{"name": "mask"}, {"name": "ce"}, {"name": "sld"}],
        "seeds": [0, 1],
        "alpha_sweep": [0.01, 0.1],
        "train": {"recipe": str(REPO / "experiments/tiny_test.yaml"), "overrides": ["optim.max_steps=3"]},
        "degraded": {"snr_db": 10.0, "rt60": 0.2},
        "bootstrap": {"num_samples": 100},
        "plots": False,
        "out_dir": str(out_dir),
    }
    cfg.update(sections)
    path.write_text(yaml.safe_dump(cfg))
    return path


def calls(out_dir: Path) -> list[str]:
    """Cell directories a FakeRunner ran in ``out_dir``, in order (one line per call)."""
    log = out_dir / "calls.txt"
    return log.read_text().split() if log.is_file() else []


DEV_BEST_ALPHA = {"sld-released": 0.5}


@dataclass
class FakeRunner:
    """Stands in for ``run_cell``: no training; errors follow the loss, seed and alpha.

    Dev errors make alpha 0.1 the sweep's winner (``DEV_BEST_ALPHA`` for the losses it names). Every call is appended to
    ``<out_dir>/calls.txt`` (works across the grid's worker processes).
    """

    interrupt_after: int | None = None  # raise KeyboardInterrupt on later calls (a Ctrl-C)
    fail_keys: tuple[str, ...] = ()
    made: int = field(default=0, repr=False)

    def __call__(self, cell) -> dict:
        from unified_lm.corpus.manifest import read_unit_manifest

        self.made += 1
        if self.interrupt_after is not None and self.made > self.interrupt_after:
            raise KeyboardInterrupt
        out_dir = Path(cell.dir).parents[1]
        with open(out_dir / "calls.txt", "a") as f:
            f.write(Path(cell.dir).name + "\n")
        if cell.key in self.fail_keys:
            raise ValueError(f"fake failure of {cell.key}")
        evals = {}
        for name, manifest in cell.evals.items():
            recs = read_unit_manifest(manifest)
            if name == "dev":
                errors = [1 if cell.alpha == DEV_BEST_ALPHA.get(cell.loss, 0.1) else 2] * len(recs)
            else:
                errors = [{"mask": 3, "ce": 3}.get(cell.loss, 2) + cell.seed] * len(recs)
            evals[name] = fake_eval([r.id for r in recs], [r.subset for r in recs], errors, [len(r.text.split()) * 2 for r in recs])
        return fake_result(cell.tokenizer, cell.loss, cell.seed, evals, alpha=cell.alpha)
