"""The built-in default pipeline behind `make demo`.

synthesize a corpus -> pre-train a small CTC encoder on the training transcripts -> fit a
unit tokenizer on its character posteriors (ctc-posterior-km500) -> discretize
train/dev/test -> train the `tiny` decoder on ASR with the SLD loss -> pre-train a text LM
on generated sentences (none a dev or test transcript) with the decoder's text tokenizer ->
decode test (beam 4) without and with the LM fused in -> print WER/CER per subset (all,
seen voices, the held-out voice), beside PocketSphinx's on the same audio with ``--peer``
(always with ``--full``). ``--full`` synthesizes 10,000 utterances and spends 2-4x the steps.

Every step is skipped when its output already exists, so a rerun after an interruption
picks up where it stopped: each step is atomic or resumes from its last checkpoint.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path

from .config import PRESETS
from .errors import ConfigError

SPLITS = ("train", "dev", "test")


@dataclass(frozen=True)
class DemoScale:
    num_utts: int
    max_steps: int
    eval_every: int
    tokenizer: str  # a recipe in tokenizers/
    tokenizer_overrides: tuple[str, ...] = ()
    ctc_steps: int = 0  # > 0: pre-train the CTC encoder that a ctc_encoder tokenizer reads
    ctc_overrides: tuple[str, ...] = ()  # the encoder's settings beyond experiments/prefix_ctc.yaml
    train_overrides: tuple[str, ...] = ()
    beam: int = 1  # decoding the test set
    # > 0: pre-train a text LM (the decoder's text tokenizer) on this many generated
    # sentences, none a dev or test transcript, and fuse it into decoding the test set.
    text_lm_steps: int = 0
    text_sentences: int = 100_000
    lm_weight: float = 0.3


# Timings and scores of both: docs/benchmarks.md. Both read units clustered from the CTC
# head's character posteriors of a small encoder pre-trained on the training transcripts.
# The `tiny` decoder learns to read them faster per CPU-second than `small` does, and
# faster again writing characters (a 300-token text vocabulary, which byte-level BPE
# leaves nearly all characters) than 1,000 BPE pieces; beam search (4) then takes ~10
# points of WER off greedy decoding. What the budget buys most is encoder steps (its CER
# falls from 38% at 800 steps to 30% at 2,000) and sentences: 6,000 utterances instead of
# 3,000 take 6 points of WER off the same test set at the same steps (the decoder stops
# memorising its transcripts).
_TINY_DECODER = ("model.preset=tiny", "optim.lr=3e-3", "optim.warmup_steps=100", "data.text_vocab_size=300")
_ENCODER = ("optim.lr=4e-3",)
_TEXT_LM = ("model.preset=tiny", "optim.lr=3e-3")
# A text LM on 100,000 generated sentences, fused into the beam search, takes 6-9 points
# of WER off the same decoder; the longer it trains the more (dev perplexity 3.6 / 2.6 /
# 2.4 per token at 500 / 1,500 / 4,000 steps). The quick demo's text LM stops short of where
# it would still gain (600 steps buy 2.0 points of WER, 1,000 bought 4.0, 400 bought 0.1),
# to finish within 20 minutes of a fresh clone, install included (about 18); its decoder's
# 2,500 steps put greedy decoding, issue #14's measure, below PocketSphinx (52.9% against
# 53.4%; 2,300 steps: 54.0%).
QUICK = DemoScale(num_utts=6000, max_steps=2500, eval_every=500, tokenizer="ctc-posterior-km500.yaml",
                  ctc_steps=2000, ctc_overrides=_ENCODER, train_overrides=_TINY_DECODER, beam=4,
                  text_lm_steps=600, lm_weight=0.3)
FULL = DemoScale(num_utts=10000, max_steps=5000, eval_every=500, tokenizer="ctc-posterior-km500.yaml",
                 ctc_steps=5000, ctc_overrides=_ENCODER, train_overrides=_TINY_DECODER, beam=4,
                 text_lm_steps=4000, lm_weight=0.4)


def _recipe(folder: str, name: str) -> Path:
    path = PRESETS / folder / name
    if not path.is_file():
        raise ConfigError(f"{path}: recipe not found (is the package installed whole?)")
    return path


def _step(title: str, done: bool) -> float:
    print(f"\n== {title}{' (done, skipped)' if done else ''}", flush=True)
    return time.perf_counter()


def run_demo(
    out: str | Path, scale: DemoScale = QUICK, overrides: list[str] | None = None, seed: int = 0, peer: bool = False
) -> dict:
    from .corpus.synth import synthesize
    from .decode import decode
    from .discretize import apply_tokenizer, fit_tokenizer
    from .train import main as train_main

    out = Path(out)
    corpus, encoder, tok, units, run = out / "corpus", out / "ctc-encoder", out / "tok", out / "units", out / "asr_sld"
    text_lm = out / "text-lm"
    titles = [f"synthesize {scale.num_utts} utterances"]
    if scale.ctc_steps:
        titles.append(f"pre-train the CTC encoder ({scale.ctc_steps} steps)")
    titles += [f"fit the {Path(scale.tokenizer).stem} tokenizer", "discretize train/dev/test",
               "train the decoder on ASR with SLD"]
    if scale.text_lm_steps:
        titles.append(f"pre-train a text LM on {scale.text_sentences} sentences ({scale.text_lm_steps} steps)")
    titles.append(f"decode test (beam {scale.beam}{', with the text LM' if scale.text_lm_steps else ''})")
    numbered = iter(f"{i}/{len(titles)} {t}" for i, t in enumerate(titles, 1))
    timings: dict[str, float] = {}

    t = _step(next(numbered), (corpus / "test.jsonl").is_file())
    if not (corpus / "test.jsonl").is_file():
        synthesize(corpus, num_utts=scale.num_utts, seed=seed)
    timings["synthesize"] = time.perf_counter() - t

    tokenizer_overrides = list(scale.tokenizer_overrides)
    if scale.ctc_steps:
        t = _step(next(numbered), (encoder / "summary.json").is_file())
        if not (encoder / "summary.json").is_file():
            _run(train_main, [
                "ctc", "--config", str(_recipe("experiments", "prefix_ctc.yaml")),
                f"data.train={corpus / 'train.jsonl'}", f"data.dev={corpus / 'dev.jsonl'}", f"out_dir={encoder}",
                f"optim.max_steps={scale.ctc_steps}", f"eval.every_steps={max(scale.ctc_steps // 3, 1)}",
                f"seed={seed}", *scale.ctc_overrides,
            ])
        timings["ctc_encoder"] = time.perf_counter() - t
        tokenizer_overrides.append(f"kmeans.features.model_path={encoder / 'best'}")

    t = _step(next(numbered), (tok / "meta.json").is_file())
    if not (tok / "meta.json").is_file():
        fit_tokenizer(_recipe("tokenizers", scale.tokenizer), corpus / "train.jsonl", tok, overrides=tokenizer_overrides)
    timings["fit"] = time.perf_counter() - t

    t = _step(next(numbered), all((units / f"{s}.jsonl").is_file() for s in SPLITS))
    for split in SPLITS:
        if not (units / f"{split}.jsonl").is_file():
            apply_tokenizer(tok, corpus / f"{split}.jsonl", units / f"{split}.jsonl")
    timings["discretize"] = time.perf_counter() - t
    _print_unit_stats(units / "train.jsonl")

    t = _step(next(numbered), (run / "summary.json").is_file())
    if not (run / "summary.json").is_file():
        _run(train_main, [
            "--config", str(_recipe("experiments", "asr_sld.yaml")),
            f"data.train={units / 'train.jsonl'}", f"data.dev={units / 'dev.jsonl'}", f"data.tokenizer={tok}",
            f"out_dir={run}", f"optim.max_steps={scale.max_steps}", f"eval.every_steps={scale.eval_every}",
            f"seed={seed}", *scale.train_overrides, *(overrides or []),
        ])
    timings["train"] = time.perf_counter() - t

    fusion: dict = {}
    if scale.text_lm_steps:
        t = _step(next(numbered), (text_lm / "summary.json").is_file())
        if not (text_lm / "summary.json").is_file():
            _train_text_lm(scale, corpus, run / "best", text_lm, seed)
        timings["text_lm"] = time.perf_counter() - t
        fusion = {"lm": text_lm / "best", "lm_weight": scale.lm_weight}

    t = _step(next(numbered), False)
    if fusion:  # the same decoder without the LM, to show what the LM buys
        print_score_table(decode(run / "best", units / "test.jsonl", run / "test.no-lm.hyp.jsonl", beam=scale.beam),
                          title=f"without the text LM (beam {scale.beam})")
    scores = decode(run / "best", units / "test.jsonl", run / "test.hyp.jsonl", beam=scale.beam, **fusion)
    timings["decode"] = time.perf_counter() - t

    print_score_table(scores, title=f"with the text LM (weight {scale.lm_weight})" if fusion else None)
    peer_scores = _peer_scores(corpus / "test.jsonl", out / "peer" / "test.hyp.jsonl", run_it=peer)
    if peer_scores is not None:
        print_score_table(peer_scores, title="PocketSphinx on the same audio")
    print("timings (s): " + ", ".join(f"{k} {v:.0f}" for k, v in timings.items()))
    return {"scores": scores, "peer": peer_scores, "timings": timings}


def _train_text_lm(scale: DemoScale, corpus: Path, decoder: Path, out: Path, seed: int) -> None:
    """Generated sentences (never a dev or test transcript) -> a `tiny` text LM that
    shares the decoder's text tokenizer, so the two can be fused."""
    from .corpus.sentences import write_text_corpus
    from .train import main as train_main

    text = out.parent / "text" / f"sentences-{scale.text_sentences}.txt"
    if not text.is_file():
        write_text_corpus(text, scale.text_sentences, seed + 1, [corpus / "dev.jsonl", corpus / "test.jsonl"])
    _run(train_main, [
        "textlm", "--config", str(_recipe("experiments", "textlm.yaml")),
        f"data.train={corpus / 'train.jsonl'}", f"data.dev={corpus / 'dev.jsonl'}", f"data.text_files=[{text}]",
        f"data.text_tokenizer={decoder}", f"out_dir={out}", f"optim.max_steps={scale.text_lm_steps}",
        f"eval.every_steps={max(scale.text_lm_steps // 3, 1)}", f"seed={seed}", *_TEXT_LM,
    ])


def _peer_scores(manifest: Path, out: Path, run_it: bool) -> dict | None:
    """PocketSphinx's scores on the test audio (computed once, then read back), or None
    when it was not asked for or is not installed (an optional extra)."""
    from .bench.peer import peer_available, run_peer
    from .decode import scores_path

    if scores_path(out).is_file():
        return json.loads(scores_path(out).read_text())
    if not run_it:
        print("\n(add --peer for PocketSphinx's row on the same audio: a few more minutes)")
        return None
    if not peer_available():
        print("\n(PocketSphinx is not installed: `.venv/bin/pip install -e '.[peer]'` adds its row on the same audio)")
        return None
    print("\n== PocketSphinx on the same test audio (once; cached)", flush=True)
    return run_peer(manifest, out, jobs=2)


def _run(main, argv: list[str]) -> None:
    """Runs a training entry point in-process; its non-zero status ends the demo."""
    status = main(argv)
    if status:
        raise SystemExit(status)


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


def print_score_table(scores: dict, title: str | None = None) -> None:
    """Prints `subset | utts | WER | CER` from a decode() score dict."""
    rows = [("all", scores)] + sorted(scores.get("subsets", {}).items())
    print(f"\n{title}" if title else "")
    print(f"{'subset':<16}{'utts':>6}{'WER %':>9}{'CER %':>9}")
    for name, s in rows:
        print(f"{name:<16}{s['num_utts']:>6}{100 * s['wer']:>9.2f}{100 * s['cer']:>9.2f}")
