"""Spectron's ablations on the prefix LM, as one command and one table.

    unified-lm bench prefix-ablation --config experiments/prefix_ablation.yaml [--out DIR] [key=value ...]
    run_prefix_ablation("experiments/prefix_ablation.yaml", "runs/bench/prefix_ablation")

A continuation corpus, the two pre-trainings (CTC encoder, text-LM decoder), one prefix-LM
training per variant (``VARIANTS``), test metrics (teacher-forced ``cont_logppl`` and
``spec_l1``, ``prompt_wer``, and with a ``judge`` the WER of the vocoded continuations,
beside the judge's WER on the vocoded reference continuations) and the prefix length of
each bridge. Every step is skipped when its output exists, so an
interrupted bench resumes; it starts by printing the work left. Writes ``results.json``
and ``results.md``. The variants and metrics in full: docs/continuous.md.
"""

from __future__ import annotations

import copy
import json
import logging
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

import torch
from tqdm import tqdm

from ..audio.mel import MelConfig, MelFrontend
from ..config import from_dict, load_config, save_config
from ..corpus.manifest import AudioRecord, read_audio_manifest
from ..errors import ConfigError, DataError
from ..io import atomic_write_bytes, atomic_write_text, read_jsonl, write_jsonl
from ..losses.spectrogram import SpectronLoss
from ..models import load_encoder_checkpoint, load_prefix_checkpoint
from ..models.prefix import BridgeConfig, build_bridge
from ..models.prefix.model import utterance_norm
from ..prefix_lm.inference import evaluate_teacher_forced, generate_continuation, transcribe_prefix, wav_bytes
from ..prefix_lm.utterances import Packer, load_utterances
from ..recipes.configs import CTCEncoderConfig, PrefixLMConfig, TextLMConfig
from ..scoring import normalize_text, score_corpus
from ..train import train
from ..training import PhaseConfig
from .tables import markdown_table

logger = logging.getLogger("unified_lm.bench")

SPLITS = ("train", "dev", "test")


@dataclass
class AblationDataConfig:
    train: str | None = None  # continuation manifests; None: synthesize into OUT/corpus
    dev: str | None = None
    test: str | None = None
    synth_utts: int = 600
    synth_seed: int = 0
    # Text-only sentences from the corpus's sentence generator for the text-LM pre-training
    # (never a dev or test sentence): the text LM sees more text than the speech corpus holds.
    lm_sentences: int = 20000
    max_test_utts: int = 100


@dataclass
class JudgeConfig:
    """A discrete-token ASR model (``unified-lm train``) that transcribes the vocoded continuations."""

    checkpoint: str | None = None
    tokenizer: str | None = None  # the speech tokenizer that model was trained on
    max_utts: int = 50
    max_frames: int = 400  # longest continuation generated (100 frames a second)


@dataclass
class CostConfig:
    """Seconds per unit of work behind the time estimate printed at start (``estimate_seconds``).

    The defaults are CPU seconds measured single-threaded for the CPU preset's shapes
    (experiments/prefix_ablation.yaml) on the project's 2-core machine, so they bound the
    wall time of an idle 2-core machine from above; rescale them for other shapes or hardware.
    """

    synth_utt_s: float = 0.1  # rendering one continuation sentence (3 TTS calls), one process
    ctc_step_s: float = 0.5  # one CTC pre-training step
    textlm_step_s: float = 0.17  # one text-LM pre-training step
    prefix_step_s: float = 0.9  # one prefix-LM training step
    test_utt_s: float = 0.15  # teacher-forced scoring + prefix ASR of one test utterance
    judge_utt_s: float = 1.5  # generating (up to judge.max_frames), vocoding and judging one continuation


@dataclass
class AblationConfig:
    data: AblationDataConfig = field(default_factory=AblationDataConfig)
    ctc: CTCEncoderConfig = field(default_factory=CTCEncoderConfig)
    textlm: TextLMConfig = field(default_factory=TextLMConfig)
    # The full model's recipe; its encoder, mel and decoder shapes are taken from ctc and textlm.
    prefix: PrefixLMConfig = field(default_factory=PrefixLMConfig)
    variants: list[str] = field(
        default_factory=lambda: ["full", "no_text_ce", "no_deriv", "decoder_random", "encoder_random", "both_random"]
    )
    judge: JudgeConfig = field(default_factory=JudgeConfig)
    asr_batch_size: int = 16
    # Keep a pre-trained encoder as it is (SLAM-LLM), so the decoder learns to read it
    # instead of the decoder's gradients un-learning it; a random encoder always trains.
    freeze_pretrained_encoder: bool = False
    cost: CostConfig = field(default_factory=CostConfig)


@dataclass(frozen=True)
class Variant:
    description: str
    encoder_init: bool = True
    decoder_init: bool = True
    loss: dict[str, float] = field(default_factory=dict)


VARIANTS: dict[str, Variant] = {
    "full": Variant("CTC encoder + text-LM decoder, all losses"),
    "no_text_ce": Variant("without the text cross-entropy", loss={"w_text": 0.0}),
    "no_deriv": Variant("without the derivative loss", loss={"w_deriv": 0.0}),
    "decoder_random": Variant("decoder randomly initialised", decoder_init=False),
    "encoder_random": Variant("encoder randomly initialised", encoder_init=False),
    "both_random": Variant("neither encoder nor decoder pre-trained", encoder_init=False, decoder_init=False),
}


def _corpus(cfg: AblationConfig, out: Path) -> dict[str, str]:
    given = {s: getattr(cfg.data, s) for s in SPLITS}
    if all(given.values()):
        return given
    if any(given.values()):
        raise ConfigError(f"data: give all of {SPLITS} or none (to synthesize a corpus), got {given}")
    corpus = out / "corpus"
    if not (corpus / "test.jsonl").is_file():
        from ..corpus.synth import synthesize

        synthesize(corpus, num_utts=cfg.data.synth_utts, seed=cfg.data.synth_seed, continuation=True)
    return {s: str(corpus / f"{s}.jsonl") for s in SPLITS}


def _once(done: Path, run: Callable[[], Any]) -> None:
    if done.is_file():
        logger.info("%s exists, skipping", done)
        return
    run()


def lm_text(cfg: AblationConfig, data: dict[str, str], out: Path) -> Path:
    """``out/lm_text.txt``: generated sentences, minus every dev and test sentence."""
    from ..corpus.sentences import generate_sentences

    path = out / "lm_text.txt"
    if not path.is_file():
        held_out = {normalize_text(r.text) for s in ("dev", "test") for r in read_audio_manifest(data[s])}
        # Another seed than the corpus's, so these are mostly new sentences.
        sentences = generate_sentences(cfg.data.lm_sentences, seed=cfg.data.synth_seed + 1)
        atomic_write_text(path, "".join(t + "\n" for t in sentences if normalize_text(t) not in held_out))
    return path


def pretrain(cfg: AblationConfig, data: dict[str, str], out: Path) -> tuple[Path, Path]:
    """(CTC encoder dir, text-LM decoder dir), trained unless already there."""
    ctc = copy.deepcopy(cfg.ctc)
    ctc.data.train, ctc.data.dev, ctc.out_dir = data["train"], data["dev"], str(out / "pretrain_ctc")
    _once(Path(ctc.out_dir) / "summary.json", lambda: train(ctc))
    lm = copy.deepcopy(cfg.textlm)
    lm.data.train, lm.data.dev, lm.out_dir = data["train"], data["dev"], str(out / "pretrain_textlm")
    if cfg.data.lm_sentences:
        lm.data.text_files = [*lm.data.text_files, str(lm_text(cfg, data, out))]
    _once(Path(lm.out_dir) / "summary.json", lambda: train(lm))
    return Path(ctc.out_dir) / "best", Path(lm.out_dir) / "best"


def parse_variant(name: str) -> tuple[Variant, int | None]:
    """``"full"`` or ``"full@2"`` (the same variant trained with seed 2, to see the noise)."""
    base, _, seed = name.partition("@")
    if base not in VARIANTS or (seed and not seed.isdigit()):
        raise ConfigError(f"variants: unknown variant {name!r}; known: {list(VARIANTS)}, each optionally @SEED")
    return VARIANTS[base], int(seed) if seed else None


def variant_config(cfg: AblationConfig, name: str, data: dict[str, str], encoder: Path, decoder: Path, out: Path) -> PrefixLMConfig:
    v, seed = parse_variant(name)
    run = copy.deepcopy(cfg.prefix)
    run.data.train, run.data.dev, run.out_dir = data["train"], data["dev"], str(out / "runs" / name)
    if seed is not None:
        run.seed = seed
    run.data.vocab = str(decoder)  # every variant shares the text LM's ids
    # Random and pre-trained variants share one shape: the pre-training recipes'.
    run.model.encoder, run.mel = copy.deepcopy(cfg.ctc.encoder), cfg.ctc.mel
    run.model.decoder = copy.deepcopy(cfg.textlm.model)
    run.model.encoder_init = str(encoder) if v.encoder_init else None
    if v.encoder_init and cfg.freeze_pretrained_encoder:
        run.phases = [PhaseConfig(steps=p.steps, train=p.train, freeze=[*p.freeze, "encoder"], lr=p.lr)
                      for p in run.phases or [PhaseConfig()]]
    run.model.decoder.init_from = str(decoder) if v.decoder_init else None
    for key, value in v.loss.items():
        setattr(run.loss, key, value)
    return run


def score_variant(checkpoint: Path, test: str, max_utts: int, asr_batch_size: int) -> dict[str, float]:
    model, vocab, chars, saved = load_prefix_checkpoint(checkpoint)
    cfg = from_dict(PrefixLMConfig, saved, f"{checkpoint}: train config")
    utts = load_utterances(test, MelFrontend(cfg.mel), limit=max_utts)
    packer = Packer(vocab, chars, cfg.model.spectrogram.reduction, model.frame_mean, model.frame_std)
    torch.manual_seed(0)  # the pre-net's inference dropout
    scores = evaluate_teacher_forced(model, packer, SpectronLoss(cfg.loss), utts, cfg.eval.batch_size)
    hyps = transcribe_prefix(model, vocab, [u.feats for u in utts], asr_batch_size)
    scores["prompt_wer"] = score_corpus([u.text for u in utts], hyps)["wer"]
    return scores


def judge_wer(checkpoint: Path, test: str, judge: JudgeConfig, out: Path) -> dict[str, float | int]:
    """WER of the judge on vocoded free-running continuations (see the module docstring).

    The audio is discretized and decoded once and the one set of hypotheses scored against
    both references. A continuation too short for the judge's tokenizer to give a single
    unit (one that stopped after a frame or two) is scored as an empty hypothesis: the
    judge hears nothing, and every reference word counts as a deletion.
    """
    model, vocab, _, saved = load_prefix_checkpoint(checkpoint)
    cfg = from_dict(PrefixLMConfig, saved, f"{checkpoint}: train config")
    frontend = MelFrontend(cfg.mel)
    utts = load_utterances(test, frontend, limit=judge.max_utts)
    written: list[str] = []

    def continuations():  # lazily: each is vocoded before the next is generated, one RNG stream
        for u in utts:
            result = generate_continuation(model, vocab, u.feats, max_frames=judge.max_frames)
            written.append(result["continuation"])
            yield result["log_mel"]

    torch.manual_seed(0)
    heard = judge_vocoded(judge, frontend, utts, continuations(), out)
    hyps = [heard.get(u.id, "") for u in utts]
    write_jsonl(
        out / "judge.jsonl",
        [{"id": u.id, "ref": u.cont_text or "", "written": w, "hyp": h, "too_short": u.id not in heard}
         for u, w, h in zip(utts, written, hyps)],
    )
    return {
        "judge_wer_self": score_corpus(written, hyps)["wer"],
        "judge_wer_ref": score_corpus([u.cont_text or "" for u in utts], hyps)["wer"],
        "judge_too_short": sum(u.id not in heard for u in utts),
    }


def judge_control(test: str, judge: JudgeConfig, mel: MelConfig, out: Path) -> dict[str, float | int]:
    """The judge on the reference continuations' own log-mel, vocoded as the generated ones
    are: the WER of a continuation that said the reference's words, which every
    ``judge_wer_ref`` is read against (Griffin-Lim and the judge's own errors included)."""
    frontend = MelFrontend(mel)
    utts = load_utterances(test, frontend, limit=judge.max_utts)
    torch.manual_seed(0)  # Griffin-Lim's random initial phase
    heard = judge_vocoded(judge, frontend, utts, [u.cont_frames for u in utts], out)
    refs = [u.cont_text or "" for u in utts]
    return {
        "judge_wer_ref": score_corpus(refs, [heard.get(u.id, "") for u in utts])["wer"],
        "judge_too_short": sum(u.id not in heard for u in utts),
        "utts": len(utts),
    }


def judge_vocoded(judge: JudgeConfig, frontend: MelFrontend, utts: Sequence, log_mels: Iterable[torch.Tensor], out: Path) -> dict[str, str]:
    """Griffin-Lim of each log-mel into ``out/wav``, then the judge's transcripts (``id ->
    text``; the ones too short for its tokenizer are left out)."""
    records = []
    for u, log_mel in zip(tqdm(utts, desc="judge: vocode", unit="utt", leave=False), log_mels):
        wave = frontend.to_wave(log_mel)
        atomic_write_bytes(out / "wav" / f"{u.id}.wav", wav_bytes(wave, frontend.cfg.sample_rate))
        # A manifest text may not be empty; the scores use the real references.
        records.append(
            AudioRecord(u.id, f"wav/{u.id}.wav", u.cont_text or "-", "generated", wave.numel() / frontend.cfg.sample_rate).to_json()
        )
    write_jsonl(out / "vocoded_ref.jsonl", records)
    return judge_transcripts(judge, out / "vocoded_ref.jsonl", out)


def judge_transcripts(judge: JudgeConfig, manifest: Path, out: Path) -> dict[str, str]:
    """``id -> the judge's transcript`` of every utterance of ``manifest`` the judge's
    tokenizer could discretize; the ones it rejected (too short) are left out."""
    from ..decode import decode
    from ..discretize import apply_tokenizer
    from ..discretize.apply import rejects_path

    units = out / "units.jsonl"
    try:
        apply_tokenizer(judge.tokenizer, manifest, units, skip_bad=True, progress=False)
    except DataError:
        # Raised when not one line could be discretized: then every line is in the rejects.
        rejects = rejects_path(units)
        if rejects.is_file() and len(read_jsonl(rejects)) == len(read_jsonl(manifest)):
            return {}
        raise
    decode(judge.checkpoint, units, out / "judge.hyp.jsonl")
    return {row["id"]: row["hyp"] for row in read_jsonl(out / "judge.hyp.jsonl")}


@torch.no_grad()
def bridge_lengths(encoder_dir: Path, test: str, max_utts: int) -> dict[str, float]:
    """Mean prefix length per utterance for each bridge, on the test prompts."""
    encoder, _, mel = load_encoder_checkpoint(encoder_dir)
    utts = load_utterances(test, MelFrontend(mel), limit=max_utts)
    sums = {"input_frames": 0.0, "none": 0.0, "conv": 0.0, "ctc": 0.0}
    bridges = {name: build_bridge(BridgeConfig(name), encoder.cfg.dim) for name in ("none", "conv", "ctc")}
    for u in utts:
        feats, lengths = u.feats.unsqueeze(0), torch.tensor([u.feats.size(0)])
        states, enc_lengths = encoder(utterance_norm(feats, lengths), lengths)
        logits = encoder.ctc_logits(states)
        sums["input_frames"] += u.feats.size(0)
        for name, bridge in bridges.items():
            sums[name] += float(bridge(states, enc_lengths, logits)[1][0])
    means = {k: v / len(utts) for k, v in sums.items()}
    return {**means, **{f"reduction_{k}": means["input_frames"] / means[k] for k in bridges}}


def estimate_seconds(cfg: AblationConfig, out: Path) -> dict[str, float]:
    """Seconds of work left per stage at the ``cfg.cost`` rates; a finished stage (its
    output exists, so a rerun skips it) costs nothing."""
    c = cfg.cost

    def left(done: Path, seconds: float) -> float:
        return 0.0 if done.is_file() else seconds

    synth = 0.0 if cfg.data.train else left(out / "corpus" / "test.jsonl", cfg.data.synth_utts * c.synth_utt_s)
    stages = {
        "synthesize": synth,
        "pretrain_ctc": left(out / "pretrain_ctc" / "summary.json", cfg.ctc.optim.max_steps * c.ctc_step_s),
        "pretrain_textlm": left(out / "pretrain_textlm" / "summary.json", cfg.textlm.optim.max_steps * c.textlm_step_s),
    }
    score = cfg.data.max_test_utts * c.test_utt_s + (cfg.judge.max_utts * c.judge_utt_s if cfg.judge.checkpoint else 0.0)
    for name in cfg.variants:
        run = out / "runs" / name
        stages[name] = left(run / "summary.json", cfg.prefix.optim.max_steps * c.prefix_step_s) + left(
            run / "test_metrics.json", score
        )
    return stages


def print_estimate(cfg: AblationConfig, out: Path) -> float:
    """Prints (to stderr) and returns the estimated minutes of work left."""
    stages = estimate_seconds(cfg, out)
    total = sum(stages.values()) / 60
    if total == 0:
        message = "nothing left to train or score (every stage's output exists)"
    else:
        parts = ", ".join(f"{k} {v / 60:.1f}" for k, v in stages.items() if v > 0)
        note = "; a GPU is available, so expect much less" if torch.cuda.is_available() else ""
        message = (
            f"about {total:.0f} min of work left ({parts} min), at the cost.* rates "
            f"(CPU seconds, one thread; 2 idle cores do better){note}"
        )
    print(f"prefix ablation: {message}", file=sys.stderr, flush=True)
    return total


def variants_table(results: dict[str, dict[str, Any]], columns: Sequence[str]) -> str:
    rows = [[name, *(f"{row[c]:.3f}" if isinstance(row.get(c), float) else str(row.get(c, "-")) for c in columns)]
            for name, row in results.items()]
    return "\n".join(markdown_table(["variant", *columns], rows, align="l" * (len(columns) + 1))) + "\n"


def run_prefix_ablation(config_path: str | Path, out_dir: str | Path, overrides: list[str] | None = None) -> dict[str, Any]:
    """Runs the ablation grid of ``config_path`` into ``out_dir``; returns
    ``{variants: {name: metrics}, bridges: {...}, table: markdown}``."""
    cfg = load_config(AblationConfig, config_path, overrides)
    for name in cfg.variants:
        parse_variant(name)
    if bool(cfg.judge.checkpoint) != bool(cfg.judge.tokenizer):
        raise ConfigError("judge: give both checkpoint and tokenizer, or neither")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    save_config(cfg, out / "config.yaml")
    print_estimate(cfg, out)
    data = _corpus(cfg, out)
    encoder, decoder = pretrain(cfg, data, out)

    results: dict[str, dict[str, Any]] = {}
    for name in cfg.variants:
        run = variant_config(cfg, name, data, encoder, decoder, out)
        _once(Path(run.out_dir) / "summary.json", lambda: train(run))
        best = Path(run.out_dir) / "best"
        metrics_file = Path(run.out_dir) / "test_metrics.json"
        if not metrics_file.is_file():
            metrics = score_variant(best, data["test"], cfg.data.max_test_utts, cfg.asr_batch_size)
            if cfg.judge.checkpoint:
                metrics.update(judge_wer(best, data["test"], cfg.judge, Path(run.out_dir) / "judge"))
            atomic_write_text(metrics_file, json.dumps(metrics, indent=2) + "\n")
        results[name] = {"description": parse_variant(name)[0].description, **json.loads(metrics_file.read_text())}

    columns = ["cont_logppl", "spec_l1", "text_ce", "prompt_wer"]
    control, control_md = None, ""
    if cfg.judge.checkpoint:
        columns += ["judge_wer_self", "judge_wer_ref", "judge_too_short"]
        control_file = out / "judge_control" / "scores.json"
        _once(control_file, lambda: atomic_write_text(control_file, json.dumps(
            judge_control(data["test"], cfg.judge, cfg.ctc.mel, control_file.parent), indent=2) + "\n"))
        control = json.loads(control_file.read_text())
        control_md = (
            f"\nJudge control: the judge on the reference continuations' own log-mel, vocoded the same way "
            f"(the same {control['utts']} test utterances): {100 * control['judge_wer_ref']:.1f}% WER "
            f"({control['judge_too_short']} too short).\n"
        )
    summary = {
        "variants": results,
        "bridges": bridge_lengths(encoder, data["test"], cfg.data.max_test_utts),
        "table": variants_table(results, columns),
        "judge_control": control,
    }
    atomic_write_text(out / "results.json", json.dumps(summary, indent=2) + "\n")
    b = summary["bridges"]
    bridges_md = (
        f"\nPrefix length per test prompt ({b['input_frames']:.0f} log-mel frames on average): "
        f"none {b['none']:.1f}, conv {b['conv']:.1f}, ctc {b['ctc']:.1f} "
        f"(x{b['reduction_none']:.0f}, x{b['reduction_conv']:.0f}, x{b['reduction_ctc']:.0f} shorter than the input).\n"
    )
    atomic_write_text(out / "results.md", summary["table"] + seed_spread(results, columns) + control_md + bridges_md)
    return summary


def seed_spread(results: dict[str, dict[str, Any]], columns: Sequence[str]) -> str:
    """One line per variant trained with several seeds: the range of each metric, the
    noise against which the other rows' differences are read."""
    def fmt(value: float) -> str:
        return str(value) if isinstance(value, int) else f"{value:.3f}"

    lines = []
    for base, variant in VARIANTS.items():
        rows = [r for name, r in results.items() if parse_variant(name)[0] is variant]
        if len(rows) > 1:
            ranges = ", ".join(
                f"{c} {fmt(min(r[c] for r in rows))}-{fmt(max(r[c] for r in rows))}"
                for c in columns if all(isinstance(r.get(c), (int, float)) for r in rows)
            )
            lines.append(f"\n{base} over {len(rows)} seeds: {ranges}.\n")
    return "".join(lines)
