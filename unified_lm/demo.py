"""The built-in default pipeline behind `make demo`.

synthesize a corpus -> fit fbank-km500 (repeated units collapsed) -> discretize
train/dev/test -> train the `small` decoder on ASR with the SLD loss -> decode test ->
print WER/CER per subset (all, seen voices, the held-out voice).

Every step is skipped when its output already exists, so a rerun after an interruption
picks up where it stopped (each step is itself atomic or resumable).
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path

from .errors import ConfigError

REPO = Path(__file__).resolve().parents[1]
SPLITS = ("train", "dev", "test")


@dataclass(frozen=True)
class DemoScale:
    num_utts: int
    max_steps: int
    eval_every: int


# The quick scale finishes in under 15 minutes on 2 cores; `--full` is the better-scoring
# run (about 30 minutes of training). Timings and scores: docs/benchmarks.md.
QUICK = DemoScale(num_utts=3000, max_steps=500, eval_every=500)
FULL = DemoScale(num_utts=3000, max_steps=1500, eval_every=500)
# Collapsing repeats halves the sequences (~300 -> ~155 units an utterance on the default
# corpus), so each training step covers twice the utterances.
TOKENIZER_OVERRIDES = ["post.dedup=true"]


def _recipe(folder: str, name: str) -> Path:
    path = REPO / folder / name
    if not path.is_file():
        raise ConfigError(f"{path}: recipe not found (the demo runs from a checkout of the repository)")
    return path


def _step(title: str, done: bool) -> float:
    print(f"\n== {title}{' (done, skipped)' if done else ''}", flush=True)
    return time.perf_counter()


def run_demo(out: str | Path, full: bool = False, overrides: list[str] | None = None, seed: int = 0) -> dict:
    from .corpus.synth import synthesize
    from .decode import decode
    from .discretize import apply_tokenizer, fit_tokenizer
    from .train import main as train_main

    out = Path(out)
    scale = FULL if full else QUICK
    corpus, tok, units, run = out / "corpus", out / "tok", out / "units", out / "asr_sld"
    timings: dict[str, float] = {}

    t = _step(f"1/5 synthesize {scale.num_utts} utterances", (corpus / "test.jsonl").is_file())
    if not (corpus / "test.jsonl").is_file():
        synthesize(corpus, num_utts=scale.num_utts, seed=seed)
    timings["synthesize"] = time.perf_counter() - t

    t = _step("2/5 fit the fbank-km500 tokenizer", (tok / "meta.json").is_file())
    if not (tok / "meta.json").is_file():
        fit_tokenizer(_recipe("tokenizers", "fbank-km500.yaml"), corpus / "train.jsonl", tok, overrides=TOKENIZER_OVERRIDES)
    timings["fit"] = time.perf_counter() - t

    t = _step("3/5 discretize train/dev/test", all((units / f"{s}.jsonl").is_file() for s in SPLITS))
    for split in SPLITS:
        if not (units / f"{split}.jsonl").is_file():
            apply_tokenizer(tok, corpus / f"{split}.jsonl", units / f"{split}.jsonl")
    timings["discretize"] = time.perf_counter() - t
    _print_unit_stats(units / "train.jsonl")

    t = _step("4/5 train the small decoder on ASR with SLD", (run / "summary.json").is_file())
    if not (run / "summary.json").is_file():
        status = train_main([
            "--config", str(_recipe("experiments", "asr_sld.yaml")),
            f"data.train={units / 'train.jsonl'}", f"data.dev={units / 'dev.jsonl'}", f"data.tokenizer={tok}",
            f"out_dir={run}", f"optim.max_steps={scale.max_steps}", f"eval.every_steps={scale.eval_every}",
            *(overrides or []),
        ])
        if status:
            raise SystemExit(status)
    timings["train"] = time.perf_counter() - t

    t = _step("5/5 decode test", False)
    scores = decode(run / "best", units / "test.jsonl", run / "test.hyp.jsonl")
    timings["decode"] = time.perf_counter() - t

    print_score_table(scores)
    print("timings (s): " + ", ".join(f"{k} {v:.0f}" for k, v in timings.items()))
    return {"scores": scores, "timings": timings}


def _print_unit_stats(manifest: Path) -> None:
    n_utts = n_units = 0
    seen: set[int] = set()
    with open(manifest, encoding="utf-8") as f:
        for line in f:
            units = json.loads(line)["units"]
            n_utts += 1
            n_units += len(units)
            seen.update(units)
    print(f"   {n_utts} utterances, {n_units / max(n_utts, 1):.0f} units each on average, {len(seen)} distinct units used")


def print_score_table(scores: dict) -> None:
    """Prints `subset | utts | WER | CER` from a decode() score dict."""
    rows = [("all", scores)] + sorted(scores.get("subsets", {}).items())
    print(f"\n{'subset':<16}{'utts':>6}{'WER %':>9}{'CER %':>9}")
    for name, s in rows:
        print(f"{name:<16}{s['num_utts']:>6}{100 * s['wer']:>9.2f}{100 * s['cer']:>9.2f}")
