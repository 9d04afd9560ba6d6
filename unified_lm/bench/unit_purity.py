"""What frame units keep of the characters, with no training: the HuBERT paper's phone
purity and PNMI (Hsu et al. 2021, Sec. IV-B), with characters for phones.

A CTC encoder (``unified-lm train ctc``) aligns each utterance's transcript to its audio
(Viterbi forced alignment, 25 frames/s); a frame takes the character emitted at or before
it, and frames before the first or after the last character are silence. Units at any
frame rate are read at the aligned frame of their start time. Then, over all frames:

- PNMI: I(char; unit) / H(char), the share of the character's uncertainty a unit removes;
- char purity: how often a unit's most frequent character is right;
- cluster purity: how often a character's most frequent unit is right.

``--hubert`` also clusters every layer of a HuBERT directory (k-means on the manifest's own
frames): the layer with the highest PNMI is the one its iteration-2 targets and its
tokenizer use (docs/ssl_units.md).

    unified-lm bench unit-purity --encoder runs/ctc-encoder/best --manifest corpus/dev.jsonl \
        --tokenizer runs/tok-fbank --hubert runs/hubert1/best --k 100
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path
from typing import Iterable

import numpy as np
import torch
from tqdm import tqdm

from ..discretize import load_tokenizer
from ..discretize.source import iter_waveforms
from ..io import atomic_write_text
from .tables import markdown_table

CHAR_RATE = 25.0  # frames/s of the CTC encoder's alignment


def frame_characters(path: np.ndarray) -> np.ndarray:
    """A CTC alignment path (0 = blank) -> one character id per frame (0 = silence)."""
    labels = np.zeros_like(path)
    emitted = np.flatnonzero(path)
    if emitted.size:
        span = path[emitted[0] : emitted[-1] + 1]
        index = np.maximum.accumulate(np.where(span > 0, np.arange(span.size), 0))
        labels[emitted[0] : emitted[-1] + 1] = span[index]
    return labels


def align_characters(encoder_dir: str | Path, manifest: str | Path, max_utts: int | None) -> list[tuple[torch.Tensor, np.ndarray]]:
    """``(waveform, per-frame characters)`` of the manifest's utterances the encoder can align."""
    from torchaudio.functional import forced_align

    from ..audio.mel import MelFrontend
    from ..models import load_encoder_checkpoint
    from ..recipes.ctc_encoder import CTCModel

    encoder, chars, mel = load_encoder_checkpoint(encoder_dir)
    model, frontend, out = CTCModel(encoder).eval(), MelFrontend(mel), []
    for i, (_, rec, wav) in enumerate(iter_waveforms(manifest, desc="alignments")):
        if max_utts is not None and i >= max_utts:
            break
        feats = frontend(wav.reshape(-1))
        target = chars.encode(rec.text)
        if feats.size(0) < encoder.MIN_FRAMES or not target:
            continue
        with torch.no_grad():
            log_probs, lengths = model(feats.unsqueeze(0), torch.tensor([feats.size(0)]))
        try:
            with warnings.catch_warnings():  # deprecated in torchaudio 2.9, which the stack pins
                warnings.simplefilter("ignore")
                path, _ = forced_align(log_probs[:, : int(lengths[0])], torch.tensor([target]), blank=0)
        except RuntimeError:  # fewer frames than the transcript needs
            continue
        out.append((wav, frame_characters(path[0].numpy())))
    return out


def purity(units: Iterable[np.ndarray], labels: Iterable[np.ndarray], rate: float) -> dict[str, float]:
    """PNMI, char purity and cluster purity of ``units`` (at ``rate`` frames/s) against
    per-frame characters at 25 frames/s, utterance by utterance."""
    pairs = []
    for u, c in zip(units, labels):
        at = np.minimum((np.arange(len(u)) * CHAR_RATE / rate).astype(np.int64), len(c) - 1)
        pairs.append(np.stack([np.asarray(u, dtype=np.int64), c[at]]))
    u, c = np.concatenate(pairs, axis=1)
    joint = np.zeros((u.max() + 1, c.max() + 1))
    np.add.at(joint, (u, c), 1)
    joint /= joint.sum()
    pu, pc = joint.sum(1, keepdims=True), joint.sum(0, keepdims=True)
    nz = joint > 0
    mi = float((joint[nz] * np.log(joint[nz] / (pu @ pc)[nz])).sum())
    h_char = float(-(pc[pc > 0] * np.log(pc[pc > 0])).sum())
    return {"pnmi": mi / h_char, "char_purity": float(joint.max(1).sum()), "cluster_purity": float(joint.max(0).sum()),
            "frames": int(u.size), "units_used": int((pu > 0).sum())}


def _layer_units(model_dir: Path, layer: int, wavs: list[torch.Tensor], k: int) -> tuple[list[np.ndarray], float]:
    from ..discretize.extractors import SslFeatures
    from ..discretize.kmeans import FaissKMeans
    from ..discretize.tokenizer_recipe import KMeansConfig

    features = SslFeatures(SslFeatures.Config(model_path=str(model_dir), layer=layer))
    feats = [features(w).numpy() for w in wavs]
    kmeans = FaissKMeans.fit(np.concatenate(feats), KMeansConfig(k=k, sample_fraction=1.0, max_frames=10**7))
    return [kmeans.assign(f) for f in feats], features.frame_rate


def run_unit_purity(encoder: Path, manifest: Path, out: Path, tokenizers: list[Path] = (), hubert: Path | None = None,
                    k: int = 100, max_utts: int | None = 150) -> list[dict]:
    """Prints and saves (``out/results.{json,md}``) one row per tokenizer and HuBERT layer."""
    aligned = align_characters(encoder, manifest, max_utts)
    wavs, labels = [w for w, _ in aligned], [c for _, c in aligned]
    rows = []

    def add(name: str, units: list[np.ndarray], rate: float) -> None:
        rows.append({"units": name, "frame_rate": rate, **purity(units, labels, rate)})

    for tokdir in tokenizers:
        tok = load_tokenizer(tokdir, device="cpu")
        units = [tok.frame_units(w) for w in tqdm(wavs, desc=tok.meta.name)]
        add(f"{tok.meta.name} ({tokdir.name})", units, tok.meta.frame_rate)
    if hubert is not None:
        layers = json.loads((hubert / "config.json").read_text())["num_hidden_layers"]
        run = hubert.parent.name if hubert.name in ("best", "last") else hubert.name  # a run's out_dir/best
        for layer in tqdm(range(layers + 1), desc="layers"):
            add(f"{run} layer {layer}, k-means {k}", *_layer_units(hubert, layer, wavs, k))
    header = ["units", "frames/s", "PNMI", "char purity", "cluster purity", "units used"]
    table = markdown_table(header, [[r["units"], f"{r['frame_rate']:g}", f"{r['pnmi']:.3f}", f"{r['char_purity']:.3f}",
                                     f"{r['cluster_purity']:.3f}", r["units_used"]] for r in rows])
    lines = [f"{len(aligned)} utterances of {manifest}, {rows[0]['frames'] if rows else 0} frames of the first row", "",
             *table]
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out / "results.json", json.dumps(rows, indent=2) + "\n")
    atomic_write_text(out / "results.md", "\n".join(lines) + "\n")
    print("\n".join(lines))
    return rows
