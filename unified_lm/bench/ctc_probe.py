"""How learnable is a speech representation? A small bidirectional CTC probe.

Trains the same small Transformer encoder with CTC to characters on either discrete units
(a unit manifest) or continuous frame features (an audio manifest, 80-dim fbank with
per-utterance mean normalisation, two frames stacked so both inputs run at ~50 per
second), for a fixed number of steps, and prints dev CER/WER. Side by side, it
separates "the units lost the content" from "the decoder-only setup is slow to learn":
the probe has no language model, no causal mask and no alignment to learn.

    python -m unified_lm.bench.ctc_probe --train units/train.jsonl --dev units/dev.jsonl
    python -m unified_lm.bench.ctc_probe --train corpus/train.jsonl --dev corpus/dev.jsonl --fbank

A diagnostic, not a recipe: one seed, greedy CTC decoding, characters of the lower-cased
normalised transcript.
"""

from __future__ import annotations

import argparse
import random
import time
from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F
from tqdm import tqdm

from ..models import eval_mode
from ..scoring import normalize_text, score_corpus
from ..training import optimizer_step

FBANK_STACK = 2  # 100 frames/s -> 50 per second, the rate of collapsed fbank units


@dataclass
class Example:
    inputs: torch.Tensor  # [T] unit ids, or [T, D] features
    text: str


def load_units(path: str, limit: int | None = None, upsample: int = 1) -> list[Example]:
    """``upsample``: each unit repeated that many times. CTC needs at least one input per
    character (more with repeats): collapsed units at 25 frames/s can be fewer than the
    characters, and an utterance CTC cannot align teaches the probe nothing."""
    from ..corpus.manifest import read_unit_manifest

    return [Example((torch.tensor(r.units) + 1).repeat_interleave(upsample), normalize_text(r.text))
            for r in read_unit_manifest(path)[:limit]]


def load_fbank(path: str, limit: int | None = None) -> list[Example]:
    from ..corpus.manifest import read_audio_manifest
    from ..discretize.extractors import build_features

    fbank = build_features({"type": "fbank", "num_mel_bins": 80, "cmn": True})
    out = []
    for r in tqdm(read_audio_manifest(path)[:limit], desc=f"fbank {path}", unit="utt"):
        f = fbank(r.load(path))
        n = f.shape[0] // FBANK_STACK * FBANK_STACK
        out.append(Example(f[:n].reshape(n // FBANK_STACK, -1), normalize_text(r.text)))
    return out


class Probe(nn.Module):
    def __init__(self, input_dim: int | None, num_units: int, num_chars: int, dim: int = 128, layers: int = 3):
        super().__init__()
        self.embed = nn.Embedding(num_units + 1, dim) if input_dim is None else nn.Linear(input_dim, dim)
        self.pos = nn.Embedding(4096, dim)
        layer = nn.TransformerEncoderLayer(dim, 4, 3 * dim, 0.1, batch_first=True, norm_first=True)
        self.encoder = nn.TransformerEncoder(layer, layers, enable_nested_tensor=False)
        self.out = nn.Linear(dim, num_chars + 1)  # index 0 is the blank

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        h = self.embed(x) + self.pos(torch.arange(x.shape[1]))[None]
        return self.out(self.encoder(h, src_key_padding_mask=~mask)).log_softmax(-1)


def pad(batch: list[Example]) -> tuple[torch.Tensor, torch.Tensor]:
    length = max(len(e.inputs) for e in batch)
    x = torch.zeros((len(batch), length, *batch[0].inputs.shape[1:]), dtype=batch[0].inputs.dtype)
    mask = torch.zeros(len(batch), length, dtype=torch.bool)
    for i, e in enumerate(batch):
        x[i, : len(e.inputs)], mask[i, : len(e.inputs)] = e.inputs, True
    return x, mask


def evaluate(model: Probe, dev: list[Example], chars: list[str]) -> tuple[float, float]:
    hyps = []
    with eval_mode(model), torch.no_grad():
        for i in range(0, len(dev), 25):
            x, mask = pad(dev[i : i + 25])
            for best, n in zip(model(x, mask).argmax(-1), mask.sum(1)):
                ids = torch.unique_consecutive(best[:n]).tolist()
                hyps.append("".join(chars[j - 1] for j in ids if j))
    scores = score_corpus([e.text for e in dev], hyps)
    return scores["wer"], scores["cer"]


def run(train: list[Example], dev: list[Example], steps: int, batch_size: int = 16, lr: float = 2e-3, seed: int = 0):
    """Trains the probe; returns [(step, seconds, dev WER, dev CER)] every steps // 4."""
    torch.manual_seed(seed)
    rng = random.Random(seed)
    chars = sorted({c for e in train for c in e.text})
    index = {c: i + 1 for i, c in enumerate(chars)}
    units = train[0].inputs.dim() == 1
    num_units = max(int(e.inputs.max()) for e in train + dev) if units else 0
    model = Probe(None if units else train[0].inputs.shape[1], num_units, len(chars))
    opt = torch.optim.AdamW(model.parameters(), lr, weight_decay=0.01)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, lr, total_steps=steps, pct_start=0.1)
    rows, start = [], time.perf_counter()
    for step in tqdm(range(1, steps + 1), desc="ctc probe", unit="step"):
        batch = rng.sample(train, min(batch_size, len(train)))
        x, mask = pad(batch)
        targets = [torch.tensor([index[c] for c in e.text if c in index]) for e in batch]
        loss = F.ctc_loss(model(x, mask).transpose(0, 1), torch.cat(targets), mask.sum(1),
                          torch.tensor([len(t) for t in targets]), zero_infinity=True)
        loss.backward()
        optimizer_step(opt, model.parameters(), clip_norm=1.0)
        sched.step()
        if step % max(steps // 4, 1) == 0 or step == steps:
            wer, cer = evaluate(model, dev, chars)
            rows.append((step, time.perf_counter() - start, wer, cer))
            tqdm.write(f"step {step}: dev WER {100 * wer:.1f}%  CER {100 * cer:.1f}%")
    return rows


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--train", required=True, help="unit manifest, or audio manifest with --fbank")
    parser.add_argument("--dev", required=True)
    parser.add_argument("--fbank", action="store_true", help="the manifests are audio manifests: probe fbank frames")
    parser.add_argument("--steps", type=int, default=800)
    parser.add_argument("--max-dev", type=int, default=100, help="first N dev utterances")
    parser.add_argument("--upsample", type=int, default=1,
                        help="repeat each unit N times (2 for collapsed units at 25 frames/s: room for CTC)")
    args = parser.parse_args(argv)
    if args.upsample < 1:
        parser.error(f"--upsample: at least 1, got {args.upsample}")
    if args.fbank:
        run(load_fbank(args.train), load_fbank(args.dev, args.max_dev), args.steps)
    else:
        run(load_units(args.train, upsample=args.upsample), load_units(args.dev, args.max_dev, args.upsample), args.steps)


if __name__ == "__main__":
    main()
