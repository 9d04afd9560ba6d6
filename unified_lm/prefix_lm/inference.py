"""Inference with a prefix LM: speech continuation and prefix ASR.

Continuation decodes, after the prefix of the spoken prompt and ``<asr>``: the transcript
greedily until ``<cont>``, the continuation text greedily until ``<spec>``, then log-mel
frames autoregressively (each step's ``r`` frames fed back through the pre-net) until the
stop logit says ``<spec_end>`` or ``max_frames``; then the post-net, then Griffin-Lim.

Text decoding is ``generate`` on ``inputs_embeds`` with the KV cache, restricted with
``suppress_tokens`` to text tokens and the one token that ends the part, as in
``unified_lm.decode``.
"""

from __future__ import annotations

import io
import json
import time
from pathlib import Path
from typing import Any, Sequence

import soundfile as sf
import torch
from torch import Tensor
from tqdm import tqdm
from transformers import GenerationConfig, LogitsProcessorList

from ..audio.mel import MelConfig, MelFrontend
from ..config import from_dict
from ..decode import check_decode_args, write_decoded
from ..errors import ConfigError, DataError
from ..fusion import TextLM
from ..io import atomic_write_bytes, atomic_write_text
from ..losses.spectrogram import IGNORE, SpectronLoss
from ..models import eval_mode, load_encoder_checkpoint, load_prefix_checkpoint
from ..models.prefix import PrefixEncoder, PrefixLM
from ..models.prefix.model import utterance_norm
from ..scoring import asr_rows
from ..vocab import CharVocab, UnifiedVocab
from .utterances import Packer, Utterance, batches, load_utterances


def _device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


@torch.no_grad()
def generate_text(
    model: PrefixLM,
    vocab: UnifiedVocab,
    prompts: Sequence[Tensor],
    stop_id: int,
    max_new_tokens: int,
    beam: int = 1,
    fusion: TextLM | None = None,
) -> list[list[int]]:
    """Greedy (``beam`` 1) or beam-search text after each prompt (embeddings [T_i, dim])
    until ``stop_id``; returns the new ids without the stop token. ``fusion``: a text LM's
    scores added to the model's."""
    width = max(p.size(0) for p in prompts)
    embeds = prompts[0].new_zeros(len(prompts), width, prompts[0].size(1))
    mask = torch.zeros(len(prompts), width, dtype=torch.long, device=embeds.device)
    for i, p in enumerate(prompts):  # left padding: every row's next token is at the end
        embeds[i, width - p.size(0) :] = p
        mask[i, width - p.size(0) :] = 1
    allowed = {*range(vocab.text_size), stop_id}
    config = GenerationConfig(
        max_new_tokens=max_new_tokens,
        do_sample=False,
        num_beams=beam,
        eos_token_id=stop_id,
        pad_token_id=vocab.pad_id,
        suppress_tokens=[i for i in range(len(vocab)) if i not in allowed],
    )
    # With only inputs_embeds, a decoder-only model returns (and its logits processors
    # see) the new tokens alone: the text starts at position 0.
    processors = LogitsProcessorList([fusion.processor(0, stop_id)] if fusion else [])
    out = model.decoder.generate(
        inputs_embeds=embeds, attention_mask=mask, generation_config=config, logits_processor=processors
    )
    results = []
    for row in out.tolist():
        if stop_id in row:
            row = row[: row.index(stop_id)]
        results.append([t for t in row if t != vocab.pad_id])
    return results


def _prefixes(model: PrefixLM, feats: Sequence[Tensor]) -> list[Tensor]:
    device = next(model.parameters()).device
    padded = torch.nn.utils.rnn.pad_sequence(list(feats), batch_first=True).to(device)
    lengths = torch.tensor([f.size(0) for f in feats], device=device)
    prefix, prefix_lengths, _, _ = model.encode(padded, lengths)
    return [prefix[i, :n] for i, n in enumerate(prefix_lengths.tolist())]


def _with_tokens(model: PrefixLM, prefix: Tensor, ids: Sequence[int]) -> Tensor:
    return torch.cat([prefix, model.embed_tokens(torch.tensor(ids, device=prefix.device))])


@torch.no_grad()
def transcribe_prefix(
    model: PrefixLM,
    vocab: UnifiedVocab,
    feats: Sequence[Tensor],
    batch_size: int = 16,
    max_new_tokens: int = 200,
    beam: int = 1,
    prefix_lengths: list[int] | None = None,
    fusion: TextLM | None = None,
) -> list[str]:
    """Prefix ASR: ``[prefix] <asr>`` -> text until ``<cont>``, for log-mel ``feats``.
    Each utterance's prefix length is appended to ``prefix_lengths`` when given;
    ``fusion``: shallow fusion with a text LM."""
    model.eval()
    asr, cont = vocab.task_id("asr"), vocab.task_id("cont")
    hyps = []
    for k in tqdm(range(0, len(feats), batch_size), desc="prefix asr", unit="batch", leave=False):
        prefixes = _prefixes(model, feats[k : k + batch_size])
        if prefix_lengths is not None:
            prefix_lengths += [p.size(0) for p in prefixes]
        prompts = [_with_tokens(model, p, [asr]) for p in prefixes]
        ids = generate_text(model, vocab, prompts, cont, max_new_tokens, beam, fusion)
        hyps += [vocab.decode_text(x) for x in ids]
    return hyps


@torch.no_grad()
def generate_frames(model: PrefixLM, prompt: Tensor, max_frames: int) -> tuple[Tensor, bool]:
    """Autoregressive frames after ``prompt`` (embeddings [T, dim] ending with ``<spec>``):
    ``(normalised frames [N, n_mels] before the post-net, whether the stop logit fired)``."""
    out = model.backbone(prompt.unsqueeze(0), use_cache=True)
    steps: list[Tensor] = []
    for _ in range(max(1, -(-max_frames // model.reduction))):
        frames, stop_logit = model.predict_frames(out.last_hidden_state[:, -1])
        # At least one step: a continuation that stops at once has nothing to vocode.
        if steps and torch.sigmoid(stop_logit).item() > 0.5:
            return torch.cat(steps)[:max_frames], True
        steps.append(frames[0])
        out = model.backbone(
            model.embed_frames(frames.flatten(1)).unsqueeze(1), past_key_values=out.past_key_values, use_cache=True
        )
    return torch.cat(steps)[:max_frames], False


@torch.no_grad()
def generate_continuation(
    model: PrefixLM, vocab: UnifiedVocab, feats: Tensor, max_frames: int = 1000, max_text_tokens: int = 200
) -> dict[str, Any]:
    """Transcript, continuation text and continuation log-mel [N, n_mels] of one prompt."""
    model.eval()
    asr, cont, spec = (vocab.task_id(t) for t in ("asr", "cont", "spec"))
    prefix = _prefixes(model, [feats])[0]
    transcript = generate_text(model, vocab, [_with_tokens(model, prefix, [asr])], cont, max_text_tokens)[0]
    head = [asr, *transcript, cont]
    continuation = generate_text(model, vocab, [_with_tokens(model, prefix, head)], spec, max_text_tokens)[0]
    frames, stopped = generate_frames(model, _with_tokens(model, prefix, [*head, *continuation, spec]), max_frames)
    mask = torch.ones(1, frames.size(0), dtype=torch.bool, device=frames.device)
    post = model.postnet(frames.unsqueeze(0), mask)[0]
    return {
        "transcript": vocab.decode_text(transcript),
        "continuation": vocab.decode_text(continuation),
        "log_mel": model.denormalize_frames(post).cpu(),
        "stopped": stopped,
    }


def wav_bytes(wave: Tensor, sample_rate: int) -> bytes:
    peak = float(wave.abs().max()) if wave.numel() else 0.0
    if peak > 0.99:  # Griffin-Lim does not bound its output
        wave = wave * (0.99 / peak)
    buf = io.BytesIO()
    sf.write(buf, wave.numpy(), sample_rate, format="WAV", subtype="PCM_16")
    return buf.getvalue()


def spectrogram_png(panels: Sequence[tuple[str, Tensor]], frame_rate: float) -> bytes:
    """One row per ``(title, log-mel [N, n_mels])`` panel, on a shared colour scale."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    lo = min(float(x.min()) for _, x in panels)
    hi = max(float(x.max()) for _, x in panels)
    # One time axis for all panels, so predicted and reference durations compare at a glance.
    fig, axes = plt.subplots(len(panels), 1, figsize=(10, 3 * len(panels)), squeeze=False, sharex=True)
    for ax, (title, x) in zip(axes[:, 0], panels):
        if len(title) > 110:  # a runaway continuation would run off the figure
            title = title[:107] + "..."
        ax.imshow(x.T.numpy(), origin="lower", aspect="auto", vmin=lo, vmax=hi, extent=(0, x.size(0) / frame_rate, 0, x.size(1)))
        ax.set_title(title, fontsize=9)
        ax.set_ylabel("mel bin")
    axes[-1, 0].set_xlabel("seconds")
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100)
    plt.close(fig)
    return buf.getvalue()


@torch.no_grad()
def evaluate_teacher_forced(
    model: PrefixLM, packer: Packer, loss_fn: SpectronLoss, utts: Sequence[Utterance], batch_size: int
) -> dict[str, float]:
    """Teacher-forced dev/test metrics, pooled over tokens and frames (not averaged over batches).

    ``loss``: the training objective (per utterance); ``text_ce``: nats per text target;
    ``cont_logppl``: nats per continuation-text token (``<spec>`` included), Spectron's
    ablation metric; ``spec_l1``: mean absolute error of the post-net frames in log-mel
    units (natural log of mel power).
    """
    with eval_mode(model):
        device = next(model.parameters()).device
        sums = dict.fromkeys(("loss", "text_nll", "text_n", "cont_nll", "cont_n", "l1", "l1_n", "utts"), 0.0)
        for group in batches(utts, batch_size):
            packed, target = packer.collate(group)
            packed, target = packed.to(device), target.to(device)
            pred = model(packed)
            sums["loss"] += float(loss_fn(pred, target).total) * len(group)
            sums["utts"] += len(group)
            nll = torch.nn.functional.cross_entropy(
                pred.text_logits.float().transpose(1, 2), target.text_labels, ignore_index=IGNORE, reduction="none"
            )
            has_text = target.text_labels != IGNORE
            sums["text_nll"] += float(nll[has_text].sum())
            sums["text_n"] += int(has_text.sum())
            cont = has_text & target.continuation
            sums["cont_nll"] += float(nll[cont].sum())
            sums["cont_n"] += int(cont.sum())
            err = (pred.frames_post - target.frames) * model.frame_std  # normalised -> log-mel units
            sums["l1"] += float(err.abs()[target.frame_mask].sum())
            sums["l1_n"] += int(target.frame_mask.sum()) * err.size(-1)
    scores = {"loss": sums["loss"] / max(sums["utts"], 1), "text_ce": sums["text_nll"] / max(sums["text_n"], 1)}
    if sums["cont_n"]:  # dev utterances with continuations (not an ASR-only run's)
        scores["cont_logppl"] = sums["cont_nll"] / sums["cont_n"]
        scores["spec_l1"] = sums["l1"] / max(sums["l1_n"], 1)
    return scores


def continue_speech(
    checkpoint: str | Path,
    audio_path: str | Path,
    out_dir: str | Path,
    max_frames: int = 1000,
    reference: str | Path | None = None,
    seed: int = 0,
) -> dict[str, Any]:
    """Continues the spoken prompt ``audio_path`` with a prefix-LM checkpoint.

    Writes into ``out_dir``: ``continuation.wav`` (Griffin-Lim), ``continuation.png`` (the
    predicted log-mel, above the ``reference`` continuation's when one is given) and
    ``result.json``, which this returns: ``{transcript, continuation, frames, seconds,
    stopped, wav, png, ...}``. ``max_frames`` bounds the continuation (100 frames a second);
    ``seed`` fixes the pre-net dropout, which stays on at inference.
    """
    if max_frames < 1:
        raise ConfigError(f"continue: max_frames must be >= 1, got {max_frames}")
    model, vocab, _, cfg = load_prefix_checkpoint(checkpoint)
    model.to(_device())
    mel = mel_config(cfg, checkpoint)
    frontend = MelFrontend(mel)
    prompt = frontend.load(audio_path)
    if prompt.size(0) < PrefixEncoder.MIN_FRAMES:
        raise DataError(audio_path, f"too short a prompt: {prompt.size(0)} frames, the encoder needs {PrefixEncoder.MIN_FRAMES}")
    torch.manual_seed(seed)
    start = time.perf_counter()
    result = generate_continuation(model, vocab, prompt.to(_device()), max_frames=max_frames)
    log_mel = result.pop("log_mel")
    wave = frontend.to_wave(log_mel)
    out = Path(out_dir)
    panels = [(f"predicted: {result['continuation']!r}", log_mel)]
    if reference is not None:
        panels.append((f"reference: {Path(reference).name}", frontend.load(reference)))
    atomic_write_bytes(out / "continuation.wav", wav_bytes(wave, mel.sample_rate))
    atomic_write_bytes(out / "continuation.png", spectrogram_png(panels, mel.frame_rate))
    result.update(
        checkpoint=str(checkpoint),
        prompt=str(audio_path),
        reference=str(reference) if reference is not None else None,
        frames=log_mel.size(0),
        seconds=round(log_mel.size(0) / mel.frame_rate, 3),
        wall_seconds=round(time.perf_counter() - start, 3),
        wav=str(out / "continuation.wav"),
        png=str(out / "continuation.png"),
    )
    atomic_write_text(out / "result.json", json.dumps(result, indent=2, ensure_ascii=False) + "\n")
    return result


def decode_prefix_asr(
    checkpoint: str | Path,
    audio_manifest: str | Path,
    out: str | Path,
    batch_size: int = 16,
    max_new_tokens: int = 200,
    beam: int = 1,
    lm: str | Path | None = None,
    lm_weight: float = 0.3,
) -> dict[str, Any]:
    """Transcribes every utterance (``audio``) of an audio manifest from the prefix alone and
    scores it with ``score_corpus`` against ``text``; ``lm``: a text LM fused in with
    ``lm_weight`` (``unified_lm.fusion``).

    Writes ``{id, ref, hyp, subset, errors, ref_words, char_errors, ref_chars}`` per line to
    ``out`` and the scores beside it (``x.hyp.jsonl`` -> ``x.hyp.scores.json``), the same
    files as the discrete ``decode``; returns the scores.
    """
    check_decode_args(out, audio_manifest, batch_size, beam, max_new_tokens)
    require_audio_manifest(audio_manifest)
    model, vocab, _, cfg = load_prefix_checkpoint(checkpoint)
    model.to(_device())
    fusion = TextLM.load(lm, vocab, lm_weight, _device()) if lm is not None else None
    frontend = MelFrontend(mel_config(cfg, checkpoint))
    utts = load_utterances(audio_manifest, frontend, mode="asr")
    start = time.perf_counter()
    lengths: list[int] = []
    hyps = transcribe_prefix(model, vocab, [u.feats for u in utts], batch_size, max_new_tokens, beam, lengths, fusion)
    rows, scores = asr_rows(utts, hyps)
    # How long a prefix the bridge hands the decoder: vectors per second of audio.
    seconds = sum(u.feats.size(0) for u in utts) / frontend.cfg.frame_rate
    scores["prefix_per_s"] = round(sum(lengths) / seconds, 2) if seconds else None
    if fusion:
        scores.update(fusion.describe())
    return write_decoded(out, rows, scores, "prefix_asr", checkpoint, audio_manifest, beam, time.perf_counter() - start)


@torch.no_grad()
def transcribe_ctc(encoder: PrefixEncoder, chars: CharVocab, feats: Sequence[Tensor], batch_size: int = 16) -> list[str]:
    """Greedy CTC read-out of a CTC-trained encoder: collapse repeats, drop blanks."""
    encoder.eval()
    hyps = []
    for k in tqdm(range(0, len(feats), batch_size), desc="ctc asr", unit="batch", leave=False):
        group = [f.to(_device()) for f in feats[k : k + batch_size]]
        lengths = torch.tensor([f.size(0) for f in group], device=_device())
        padded = torch.nn.utils.rnn.pad_sequence(group, batch_first=True)
        states, out_lengths = encoder(utterance_norm(padded, lengths), lengths)
        best = encoder.ctc_logits(states).argmax(-1)
        hyps += [chars.decode_ctc(row[:n].tolist()) for row, n in zip(best, out_lengths.tolist())]
    return hyps


def decode_ctc_asr(checkpoint: str | Path, audio_manifest: str | Path, out: str | Path, batch_size: int = 16) -> dict[str, Any]:
    """Transcribes an audio manifest with a CTC-trained encoder (the ``ctc`` recipe's
    ``best/``) and scores it like ``decode``: how well the encoder hears, per voice,
    before any unit or decoder is involved."""
    check_decode_args(out, audio_manifest, batch_size, 1, 1)
    require_audio_manifest(audio_manifest)
    encoder, chars, mel = load_encoder_checkpoint(checkpoint)
    encoder.to(_device())
    utts = load_utterances(audio_manifest, MelFrontend(mel), mode="asr")
    start = time.perf_counter()
    rows, scores = asr_rows(utts, transcribe_ctc(encoder, chars, [u.feats for u in utts], batch_size))
    return write_decoded(out, rows, scores, "ctc_asr", checkpoint, audio_manifest, 1, time.perf_counter() - start)


def mel_config(train_config: dict[str, Any], checkpoint: str | Path) -> MelConfig:
    """The mel front end a prefix-LM checkpoint was trained with."""
    return from_dict(MelConfig, train_config.get("mel") or {}, f"{checkpoint}: mel")


def require_audio_manifest(path: str | Path) -> None:
    """Fails with a pointer when ``path`` is a unit manifest: a prefix LM hears audio, and
    units carry none of it (the mistake of passing the discrete path's input)."""
    path = Path(path)
    if not path.is_file():
        raise DataError(path, "manifest not found")
    with open(path, encoding="utf-8") as f:
        for number, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                first = json.loads(line)
            except json.JSONDecodeError:
                return  # load_utterances reports it with its reason
            if isinstance(first, dict) and "units" in first and "audio" not in first:
                raise DataError(
                    path,
                    "a unit manifest (units, no audio): a prefix-LM checkpoint transcribes audio; "
                    "give the audio manifest the units were made from (--manifest)",
                    number,
                )
            return
