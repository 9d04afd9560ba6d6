"""Data of the prefix LM: utterances as log-mel frames, and their packing
into the teacher-forced sequence of the prefix LM.

A continuation manifest is an audio manifest (``corpus synth --continuation``) whose lines
also carry ``prompt_audio``, ``prompt_text``, ``cont_audio`` and ``cont_text``: one
sentence split at a word boundary, both halves in the same voice. Each line becomes

    [prefix(prompt_audio)] <asr> prompt_text <cont> cont_text <spec> frames(cont_audio) <spec_end>

An ASR-only utterance (the whole ``audio`` and its ``text``) packs as
``[prefix] <asr> text <cont>``: the same model then learns to transcribe whole utterances.
"""

from __future__ import annotations

import functools
import logging
import math
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, NamedTuple, Sequence

import torch
from torch import Tensor
from tqdm import tqdm

from ..audio.mel import MelConfig, MelFrontend
from ..corpus.manifest import AudioRecord, iter_audio_manifest
from ..errors import DataError
from ..losses.spectrogram import IGNORE, SpectronTarget
from ..models.prefix import Kind, PackedBatch, PrefixEncoder
from ..vocab import CharVocab, UnifiedVocab

logger = logging.getLogger("unified_lm.prefix_lm")

CONTINUATION_FIELDS = ("prompt_audio", "prompt_text", "cont_audio", "cont_text")


@dataclass
class Utterance:
    id: str
    feats: Tensor  # [T, n_mels] log-mel of what the encoder hears
    text: str  # its transcript
    cont_text: str | None = None  # what follows, for continuation examples
    cont_frames: Tensor | None = None  # [N, n_mels] log-mel of the continuation
    subset: str | None = None


def _resolve(manifest: Path, audio: str) -> Path:
    p = Path(audio)
    return p if p.is_absolute() else manifest.parent / p


def _load_frames(
    frontend: MelFrontend,
    manifest: Path,
    audio: str,
    line: int,
    min_frames: int = 1,
    speed: float = 1.0,
    segment: tuple[float, float] | None = None,
) -> Tensor:
    path = _resolve(manifest, audio)
    try:
        frames = frontend.load(path, speed, segment)
    except DataError as e:  # it names the audio file; the user also needs the manifest line
        raise DataError(manifest, str(e), line) from None
    if frames.size(0) < min_frames:
        seconds = min_frames / frontend.cfg.frame_rate
        raise DataError(manifest, f"audio {path} is shorter than {seconds:.2f} s ({frames.size(0)} frames)", line)
    return frames


def _utterance(
    record: AudioRecord, manifest: Path, line: int, frontend: MelFrontend, mode: str, speed: float = 1.0
) -> Utterance:
    if mode == "asr":
        speed *= record.speed or 1.0  # the recipe's perturbation on top of the manifest's
        feats = _load_frames(frontend, manifest, record.audio, line, PrefixEncoder.MIN_FRAMES, speed, record.segment)
        return Utterance(record.id, feats, record.text, subset=record.subset)
    missing = [k for k in CONTINUATION_FIELDS if not record.extra.get(k)]
    if missing:
        raise DataError(
            manifest, f"utterance {record.id!r}: no {missing} (build the corpus with `corpus synth --continuation`)", line
        )
    x = record.extra
    return Utterance(
        record.id,
        _load_frames(frontend, manifest, x["prompt_audio"], line, PrefixEncoder.MIN_FRAMES),
        x["prompt_text"],
        cont_text=x["cont_text"],
        cont_frames=_load_frames(frontend, manifest, x["cont_audio"], line),
        subset=record.subset,
    )


def load_utterances(
    manifest: str | Path, frontend: MelFrontend, mode: str = "continuation", limit: int | None = None,
    speed: float = 1.0,
) -> list[Utterance]:
    """Reads a manifest into utterances: ``mode="continuation"`` (prompt + continuation)
    or ``"asr"`` (the whole ``audio`` and its ``text``, played ``speed`` times faster).
    Raises DataError on the first bad line.

    Results are cached per process, keyed by the manifest's path, size and modification
    time and the front end's settings: the ablation bench trains eight models on the same
    manifests, and decoding audio is most of the cost of reading them.
    """
    if mode not in ("continuation", "asr"):
        raise ValueError(f"mode must be 'continuation' or 'asr', got {mode!r}")
    if speed != 1.0 and mode != "asr":
        raise ValueError("speed perturbation is for whole utterances (mode='asr')")
    manifest = Path(manifest).resolve()
    if not manifest.is_file():
        raise DataError(manifest, "manifest not found")
    stat = manifest.stat()
    return list(_load_cached(manifest, stat.st_size, stat.st_mtime_ns, frontend.cfg, mode, limit, speed))


@functools.lru_cache(maxsize=8)
def _load_cached(
    manifest: Path, size: int, mtime_ns: int, mel: MelConfig, mode: str, limit: int | None, speed: float
) -> tuple[Utterance, ...]:
    frontend = MelFrontend(mel)
    out = []
    desc = f"features {manifest.name}" + (f" x{speed}" if speed != 1.0 else "")
    for line, record in tqdm(iter_audio_manifest(manifest), desc=desc, unit="utt", leave=False):
        if isinstance(record, DataError):
            raise record
        out.append(_utterance(record, manifest, line, frontend, mode, speed))
        if limit is not None and len(out) >= limit:
            break
    if not out:
        raise DataError(manifest, "the manifest is empty")
    return tuple(out)


def dev_or_head(
    dev: str | Path | None, frontend: MelFrontend, train: Sequence[Utterance], limit: int, mode: str = "asr"
) -> list[Utterance]:
    """The first ``limit`` utterances of the ``dev`` manifest; without one, the first
    training utterances stand in (and a warning says so)."""
    if dev:
        return load_utterances(dev, frontend, mode=mode, limit=limit)
    logger.warning("no data.dev: model selection uses the first %d training utterances", limit)
    return list(train[:limit])


def frame_stats(utts: Sequence[Utterance]) -> tuple[Tensor, Tensor]:
    """Per-mel-bin mean and standard deviation of all continuation frames (0 and 1 when
    there are none: an ASR-only model never predicts frames)."""
    continuations = [u.cont_frames for u in utts if u.cont_frames is not None]
    if not continuations:
        n_mels = utts[0].feats.size(1) if utts else 1
        return torch.zeros(n_mels), torch.ones(n_mels)
    frames = torch.cat(continuations)
    return frames.mean(0), frames.std(0).clamp(min=1e-3)


class Suffix(NamedTuple):
    """One utterance's suffix ``<asr> .. <cont> [.. <spec> f_1 .. f_M <spec_end>]``."""

    tokens: list[int]  # pad id on frame positions
    kinds: list[int]  # Kind of each position
    labels: list[int]  # the text id position s must predict; IGNORE before frames, <spec_end>, nothing
    continuation: list[bool]  # labels that belong to the continuation text (and <spec>)
    spec_start: int  # index of <spec>; 0 without continuation
    steps: int  # M, frame positions (r frames each)


class Packer:
    """Turns utterances into ``(PackedBatch, SpectronTarget)`` for the prefix LM."""

    def __init__(self, vocab: UnifiedVocab, chars: CharVocab, reduction: int, frame_mean: Tensor, frame_std: Tensor):
        self.vocab = vocab
        self.chars = chars
        self.reduction = reduction
        self.frame_mean, self.frame_std = frame_mean, frame_std
        self.asr, self.cont, self.spec, self.spec_end = (vocab.task_id(t) for t in ("asr", "cont", "spec", "spec_end"))

    def suffix(self, utt: Utterance) -> Suffix:
        tokens = [self.asr, *self.vocab.encode_text(utt.text), self.cont]
        n_text = len(tokens)
        if utt.cont_frames is None:
            labels = tokens[1:] + [IGNORE]
            return Suffix(tokens, [Kind.TOKEN] * n_text, labels, [False] * n_text, 0, 0)
        tokens += [*self.vocab.encode_text(utt.cont_text or ""), self.spec]
        spec_start = len(tokens) - 1
        steps = math.ceil(utt.cont_frames.size(0) / self.reduction)
        labels = tokens[1:] + [IGNORE] * (steps + 2)  # <spec>, f_1 .. f_M, <spec_end> predict no text
        continuation = [n_text - 1 <= s < spec_start for s in range(spec_start + steps + 2)]
        tokens += [self.vocab.pad_id] * steps + [self.spec_end]
        kinds = [Kind.TOKEN] * (spec_start + 1) + [Kind.FRAME] * steps + [Kind.TOKEN]
        return Suffix(tokens, kinds, labels, continuation, spec_start, steps)

    def collate(self, utts: Sequence[Utterance]) -> tuple[PackedBatch, SpectronTarget]:
        b = len(utts)
        r, n_mels = self.reduction, utts[0].feats.size(1)
        suffixes = [self.suffix(u) for u in utts]
        s_max = max(len(s.tokens) for s in suffixes)
        m_max = max(s.steps for s in suffixes)
        t_max = max(u.feats.size(0) for u in utts)
        chars = [self.chars.encode(u.text) for u in utts]

        feats = torch.zeros(b, t_max, n_mels)
        tokens = torch.full((b, s_max), self.vocab.pad_id, dtype=torch.long)
        kinds = torch.full((b, s_max), int(Kind.PAD), dtype=torch.long)
        labels = torch.full((b, s_max), IGNORE, dtype=torch.long)
        continuation = torch.zeros(b, s_max, dtype=torch.bool)
        frames = torch.zeros(b, m_max * r, n_mels)
        frame_mask = torch.zeros(b, m_max * r, dtype=torch.bool)
        stop = torch.zeros(b, m_max + 1)
        stop_mask = torch.zeros(b, m_max + 1, dtype=torch.bool)
        char_ids = torch.zeros(b, max(max(len(c) for c in chars), 1), dtype=torch.long)
        for i, (u, s) in enumerate(zip(utts, suffixes)):
            feats[i, : u.feats.size(0)] = u.feats
            n = len(s.tokens)
            tokens[i, :n], kinds[i, :n] = torch.tensor(s.tokens), torch.tensor(s.kinds)
            labels[i, :n], continuation[i, :n] = torch.tensor(s.labels), torch.tensor(s.continuation)
            char_ids[i, : len(chars[i])] = torch.tensor(chars[i], dtype=torch.long)
            if s.steps:
                n_frames = u.cont_frames.size(0)
                frames[i, :n_frames] = (u.cont_frames - self.frame_mean) / self.frame_std
                frame_mask[i, :n_frames] = True
                stop[i, s.steps] = 1.0
                stop_mask[i, : s.steps + 1] = True
        batch = PackedBatch(
            feats=feats,
            feat_lengths=torch.tensor([u.feats.size(0) for u in utts]),
            tokens=tokens,
            kinds=kinds,
            suffix_lengths=torch.tensor([len(s.tokens) for s in suffixes]),
            # f_j reads the frames f_j stands for: the r frames predicted one position earlier.
            frame_inputs=frames.view(b, m_max, r * n_mels),
            spec_start=torch.tensor([s.spec_start for s in suffixes]),
            frame_steps=torch.tensor([s.steps for s in suffixes]),
        )
        target = SpectronTarget(
            text_labels=labels,
            continuation=continuation,
            frames=frames,
            frame_mask=frame_mask,
            stop=stop,
            stop_mask=stop_mask,
            chars=char_ids,
            char_lengths=torch.tensor([len(c) for c in chars]),
        )
        return batch, target


def batches(
    utts: Sequence[Any], batch_size: int, rng: random.Random | None = None,
    length: Callable[[Any], int] = lambda u: u.feats.size(0),
) -> list[list[Any]]:
    """Batches of ``batch_size``; shuffled when ``rng`` is given, else in manifest order.

    Shuffled batches are drawn from pools of 50 batches sorted by ``length``, so one batch
    holds utterances of similar length and little padding.
    """
    order = list(range(len(utts)))
    if rng is None:
        return [[utts[i] for i in order[k : k + batch_size]] for k in range(0, len(order), batch_size)]
    rng.shuffle(order)
    pool = 50 * batch_size
    out = []
    for k in range(0, len(order), pool):
        chunk = sorted(order[k : k + pool], key=lambda i: length(utts[i]))
        out += [[utts[i] for i in chunk[j : j + batch_size]] for j in range(0, len(chunk), batch_size)]
    rng.shuffle(out)
    return out
