"""Recipe ``hubert``: HuBERT-style pre-training of a small speech encoder on the corpus's audio.

    unified-lm train hubert --config experiments/hubert.yaml data.targets=runs/tok-mfcc [key=value ...]

The targets are the frame-level units of a fitted tokenizer (``data.targets``): MFCC
k-means for iteration 1, k-means over a layer of iteration 1's model for iteration 2, as
in the paper. Each batch is cropped to its shortest utterance (fairseq's HuBERT does the
same, so no frame is padding), spans are masked, and the loss is the cross-entropy of the
targets at masked frames. ``best/`` (lowest dev loss) is a ``transformers`` HubertModel
directory: ``tokenizers/ssl-km.yaml`` with ``kmeans.features.model_path=OUT/best`` clusters
its layers.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import torch
import torch.nn.functional as F
from accelerate import Accelerator

from ..audio import SAMPLE_RATE
from ..config import save_config
from ..discretize import load_tokenizer
from ..discretize.source import iter_waveforms
from ..discretize.tokenizer import SpeechTokenizer
from ..errors import ConfigError, DataError
from ..io import atomic_open
from ..losses import LossOutput
from ..models import eval_mode
from ..models.checkpoint import TRAIN_CONFIG_FILE
from ..models.hubert import HubertPretrainModel, load_hubert, save_hubert, span_mask
from ..prefix_lm.utterances import batches
from ..training import Micro, Task, TrainingRecipe
from .batching import epoch_rng, per_rank, shard, step_seed
from .configs import HubertPretrainConfig

logger = logging.getLogger("unified_lm.training")


@dataclass
class Clip:
    id: str
    wav: torch.Tensor  # [S] 16 kHz, float16 (half the memory; 11-bit mantissa is ~66 dB SNR)
    targets: torch.Tensor  # [N] frame-level units at the target tokenizer's frame rate


def load_clips(
    manifest: str, tok: SpeechTokenizer, cache: Path, min_samples: int, limit: int | None = None
) -> list[Clip]:
    """The manifest's utterances with their target units; the units are computed once and
    cached in ``cache`` (keyed by the manifest's size and time and the tokenizer's hash)."""
    stat = Path(manifest).stat()
    key = {"manifest": str(manifest), "size": stat.st_size, "mtime_ns": stat.st_mtime_ns, "tokenizer": tok.meta.hash,
           "limit": limit, "min_samples": min_samples}
    cached = torch.load(cache, weights_only=True) if cache.is_file() else None
    units = cached["units"] if cached is not None and cached["key"] == key else None
    desc = Path(manifest).name + (" targets" if units is None else "")
    clips = []
    for i, (_, rec, wav) in enumerate(iter_waveforms(manifest, desc=desc)):
        if limit is not None and i >= limit:
            break
        if wav.numel() < min_samples:
            logger.warning("%s: utterance %r is shorter than one frame; left out", manifest, rec.id)
            continue
        target = units[len(clips)] if units is not None else torch.from_numpy(tok.frame_units(wav))
        clips.append(Clip(rec.id, wav.reshape(-1).half(), target.long()))
    if not clips:
        raise DataError(manifest, "no utterance long enough for one frame")
    if units is None:
        cache.parent.mkdir(parents=True, exist_ok=True)
        with atomic_open(cache, "wb") as f:
            torch.save({"key": key, "units": [c.targets.int() for c in clips]}, f)
    return clips


def crop_samples(clips: Sequence[Clip], cfg: HubertPretrainConfig) -> int:
    """How long a batch's crops are: its shortest utterance, at most ``data.max_seconds``."""
    return min(min(c.wav.numel() for c in clips), int(cfg.data.max_seconds * SAMPLE_RATE))


def crop_and_mask(clips: Sequence[Clip], cfg: HubertPretrainConfig, rate: float, gen: torch.Generator) -> dict:
    """The batch's waveforms cropped to ``crop_samples`` (at a random whole frame in each),
    their targets at the model's 50 frames/s, and the span masks."""
    samples = crop_samples(clips, cfg)
    frames, hop = cfg.model.num_frames(samples), cfg.model.hop
    wavs, targets = [], []
    for c in clips:
        start = int(torch.randint((c.wav.numel() - samples) // hop + 1, (), generator=gen)) * hop
        wavs.append(c.wav[start : start + samples].float())
        # Target frame of model frame i: the one at its start time (fairseq's label_rate ratio).
        at = ((start + hop * torch.arange(frames)) * rate / SAMPLE_RATE).long().clamp(max=c.targets.numel() - 1)
        targets.append(c.targets[at])
    mask = span_mask(len(clips), frames, cfg.mask.prob, cfg.mask.length, gen)
    return {"wavs": torch.stack(wavs), "targets": torch.stack(targets), "mask": mask}


def masked_loss(model: HubertPretrainModel, batch: dict, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """(mean cross-entropy over masked frames, number of them right)."""
    mask = batch["mask"].to(device)
    logits = model(batch["wavs"].to(device), mask).float()
    targets = batch["targets"].to(device)[mask]
    return F.cross_entropy(logits, targets), (logits.argmax(-1) == targets).sum()


@torch.no_grad()
def evaluate(model: HubertPretrainModel, dev: Sequence[Clip], cfg: HubertPretrainConfig, rate: float) -> dict:
    """Dev masked cross-entropy and accuracy, with the same masks at every evaluation."""
    gen = torch.Generator().manual_seed(step_seed(cfg.seed, "dev"))
    device = next(model.parameters()).device
    ordered = sorted(dev, key=lambda c: c.wav.numel())  # similar lengths together: little is cropped
    total = correct = masked = 0.0
    with eval_mode(model):
        for group in batches(ordered, cfg.eval.batch_size):
            batch = crop_and_mask(group, cfg, rate, gen)
            n = int(batch["mask"].sum())
            loss, right = masked_loss(model, batch, device)
            total, correct, masked = total + float(loss) * n, correct + int(right), masked + n
    return {"loss": total / masked, "acc": correct / masked}


def setup(cfg: HubertPretrainConfig, accelerator: Accelerator, resuming: bool) -> Task:
    if not cfg.data.targets:
        raise ConfigError("data.targets: a fitted tokenizer directory whose units the model predicts (e.g. mfcc-km100)")
    tok = load_tokenizer(cfg.data.targets, device="cpu")
    rate, num_targets = tok.meta.frame_rate, tok.quantizer.num_units
    cache = Path(cfg.out_dir) / "targets"
    with accelerator.main_process_first():  # the first rank computes and caches, the others read
        one_frame = cfg.model.receptive_field  # samples
        train = load_clips(cfg.data.train, tok, cache / "train.pt", one_frame)
        dev = (load_clips(cfg.data.dev, tok, cache / "dev.pt", one_frame, cfg.eval.max_utts) if cfg.data.dev
               else train[: cfg.eval.max_utts])
    if not cfg.data.dev:
        logger.warning("no data.dev: model selection uses the first %d training utterances", len(dev))
    model = HubertPretrainModel(cfg.model, num_targets)
    identity = {"tokenizer": str(cfg.data.targets), "name": tok.meta.name, "hash": tok.meta.hash,
                "num_units": num_targets, "frame_rate": rate}
    bs = cfg.data.batch_size

    def loss(m, group: Sequence[Clip], where: Micro) -> LossOutput:
        gen = torch.Generator().manual_seed(step_seed(cfg.seed, where.rank, where.step, where.index))
        batch = crop_and_mask(group, cfg, rate, gen)
        value, right = masked_loss(m, batch, where.device)
        return LossOutput(value, {"masked_ce": value.detach(), "masked_acc": right.detach() / batch["mask"].sum()})

    def save(directory: Path, m: HubertPretrainModel) -> None:
        save_hubert(directory, m, identity)
        save_config(cfg, directory / TRAIN_CONFIG_FILE)

    return Task(
        model=model,
        epoch_batches=lambda epoch, skip: shard(
            batches(train, bs, epoch_rng(cfg.seed, epoch), length=lambda c: c.wav.numel()), accelerator, skip,
            lambda g: g,
        ),
        batches_per_epoch=per_rank(len(batches(train, bs)), accelerator),
        loss=loss,
        save=save,
        load=lambda directory, m: load_hubert(directory, m),
        evaluate=lambda m: evaluate(m, dev, cfg, rate),
        size=lambda group: len(group) * cfg.model.num_frames(crop_samples(group, cfg)),
        unit="frames",
        facts={"train_utts": len(train), "dev_utts": len(dev), "num_targets": num_targets, "target_rate": rate,
               "train_hours": round(sum(c.wav.numel() for c in train) / SAMPLE_RATE / 3600, 3)},
    )


RECIPE = TrainingRecipe("hubert", HubertPretrainConfig, setup,
                        help="HuBERT-style masked-prediction pre-training of a speech encoder")
