"""Tiny audio corpora and tiny models for the audio / discretize / validate tests."""

from __future__ import annotations

import json
import shutil
import subprocess
import warnings
from pathlib import Path

import numpy as np
import soundfile as sf

ROOT = Path(__file__).resolve().parents[1]
RECIPES = ROOT / "tokenizers"


def speechlike(seconds: float, sr: int, seed: int) -> np.ndarray:
    """Segments of harmonic tones and noise: enough spectral variety for k-means to split."""
    rng = np.random.default_rng(seed)
    out = []
    n_total = int(seconds * sr)
    while sum(len(x) for x in out) < n_total:
        n = int(rng.uniform(0.05, 0.15) * sr)
        t = np.arange(n) / sr
        if rng.random() < 0.25:
            seg = rng.normal(0, 0.1, n)
        else:
            f0 = rng.uniform(90, 250)
            seg = sum(rng.uniform(0.05, 0.3) * np.sin(2 * np.pi * f0 * h * t) for h in range(1, 6))
        out.append(seg * rng.uniform(0.2, 1.0))
    return np.concatenate(out)[:n_total].astype(np.float32)


def write_wav(path: Path, data: np.ndarray, sr: int = 16000, subtype: str | None = None) -> Path:
    sf.write(str(path), data, sr, subtype=subtype)
    return path


def write_manifest(path: Path, rows: list[dict | str | bytes]) -> Path:
    """Rows are records (dumped as JSON), raw text lines, or raw bytes (for bad encodings)."""
    with open(path, "wb") as f:
        for row in rows:
            if isinstance(row, dict):
                row = json.dumps(row)
            f.write((row.encode("utf-8") if isinstance(row, str) else row) + b"\n")
    return path


def record(uid: str, audio: str, seconds: float, text: str | None = None, **extra) -> dict:
    text = text or f"text of {uid}"
    return {"id": uid, "audio": audio, "text": text, "speaker": "spk" + uid[-1], "duration": seconds, **extra}


def make_corpus(root: Path, num_utts: int = 8, seconds: float = 1.0, seed: int = 0) -> Path:
    """``num_utts`` speech-like utterances at 16 kHz (one at 22.05 kHz, one stereo)."""
    root.mkdir(parents=True, exist_ok=True)
    rows = []
    for i in range(num_utts):
        sr = 22050 if i == 1 else 16000
        data = speechlike(seconds, sr, seed + i)
        if i == 2:
            data = np.stack([data, 0.5 * data], axis=1)
        write_wav(root / f"u{i}.wav", data, sr)
        rows.append(record(f"u{i}", f"u{i}.wav", seconds, subset="train", sample_rate=sr))
    return write_manifest(root / "train.jsonl", rows)


def espeak_corpus(root: Path, sentences: list[str]) -> Path:
    """Real (synthetic) speech from espeak-ng, which the Makefile installs."""
    if not shutil.which("espeak-ng"):
        raise RuntimeError("espeak-ng is not installed (make system-deps)")
    root.mkdir(parents=True, exist_ok=True)
    rows = []
    for i, text in enumerate(sentences):
        wav = root / f"e{i}.wav"
        subprocess.run(["espeak-ng", "-w", str(wav), text], check=True, capture_output=True)
        info = sf.info(str(wav))
        rows.append(record(f"e{i}", wav.name, info.duration, text=text))
    return write_manifest(root / "speech.jsonl", rows)


def tiny_encodec_checkpoint(path: Path, bins: int = 64, n_q: int = 4, dimension: int = 16, n_filters: int = 2) -> dict:
    """A random-init EnCodec with small dims saved as a state dict; returns the recipe
    overrides that describe its architecture."""
    import torch
    from encodec.model import EncodecModel
    from encodec.modules import SEANetDecoder, SEANetEncoder
    from encodec.quantization import ResidualVectorQuantizer

    torch.manual_seed(0)
    arch = dict(channels=1, dimension=dimension, n_filters=n_filters, ratios=[8, 5, 4, 2], lstm=0, causal=True)
    # kmeans_init=False: random codebooks (with k-means init they start all-zero until trained).
    quantizer = ResidualVectorQuantizer(dimension=dimension, n_q=n_q, bins=bins, kmeans_init=False)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # encodec uses torch's deprecated weight_norm
        model = EncodecModel(SEANetEncoder(**arch), SEANetDecoder(**arch), quantizer, [1.5, 3.0], 24000, 1)
    torch.save(model.state_dict(), path)
    return {
        "encodec.checkpoint": str(path),
        "encodec.dimension": dimension,
        "encodec.n_filters": n_filters,
        "encodec.lstm": 0,
        "encodec.n_q": n_q,
        "encodec.bins": bins,
        "encodec.target_bandwidths": "[1.5, 3.0]",
    }


def tiny_hubert(path: Path, large_style: bool = False, layers: int = 2) -> Path:
    """A random-init HuBERT; ``large_style``: HuBERT-Large's layer-norm feature extractor and
    pre-LN ("stable layer norm") encoder instead of Base's group norm and post-LN."""
    import torch
    from transformers import HubertConfig, HubertModel

    torch.manual_seed(0)
    config = HubertConfig(
        hidden_size=16,
        num_hidden_layers=layers,
        num_attention_heads=2,
        intermediate_size=32,
        conv_dim=(8,) * 7,
        num_conv_pos_embeddings=16,
        num_conv_pos_embedding_groups=2,
        **({"feat_extract_norm": "layer", "do_stable_layer_norm": True, "conv_bias": True} if large_style else {}),
    )
    HubertModel(config).save_pretrained(path)
    return path


def overrides(d: dict) -> list[str]:
    return [f"{k}={v}" for k, v in d.items()]
