"""Shared fixtures of the prefix-LM tests: a tiny continuation corpus of tone
waveforms (no TTS needed) and tiny model/optimiser settings."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import soundfile as sf

SR = 16000
SENTENCES = [
    "the cat sat on the mat",
    "a dog ran in the park",
    "birds sing in the morning",
    "the sun is warm today",
    "we walk to the river",
    "she reads a long book",
]

TINY_ENCODER = {"dim": 32, "num_layers": 1, "num_heads": 2, "ffn_dim": 64, "conv_kernel": 7, "subsampling_channels": 8}
TINY_DECODER = {"preset": "tiny", "hidden_size": 32, "num_layers": 2, "num_heads": 2, "intermediate_size": 64}
TINY_SPECTROGRAM = {"reduction": 2, "postnet_channels": 16, "postnet_layers": 3}
# The shared sections of a three-step run (data.batch_size: 4 goes with each data section).
TINY_RUN = {"optim": {"max_steps": 3, "warmup_steps": 1}, "eval": {"every_steps": 3, "batch_size": 4}, "log_every_steps": 1}


def tone(text: str, seconds: float, seed: int) -> np.ndarray:
    """A waveform whose pitch depends on the text: enough structure for features."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(SR * seconds)) / SR
    f0 = 150 + 10 * (sum(map(ord, text)) % 20)
    wave = 0.3 * np.sin(2 * np.pi * f0 * t) + 0.1 * np.sin(2 * np.pi * 3 * f0 * t)
    return (wave + 0.01 * rng.standard_normal(t.size)).astype(np.float32)


def write_corpus(root: Path, splits: dict[str, int] | None = None) -> dict[str, Path]:
    """Continuation manifests like ``corpus synth --continuation`` writes: returns split -> path."""
    splits = splits or {"train": 6, "dev": 2, "test": 2}
    (root / "wav").mkdir(parents=True, exist_ok=True)
    paths = {}
    for split, n in splits.items():
        lines = []
        for i in range(n):
            text = SENTENCES[i % len(SENTENCES)]
            words = text.split()
            prompt, cont = " ".join(words[:3]), " ".join(words[3:])
            uid = f"{split}{i}"
            p, c = tone(prompt, 1.0, i), tone(cont, 0.4, i + 100)
            for name, wave in ((f"{uid}_prompt", p), (f"{uid}_cont", c), (uid, np.concatenate([p, c]))):
                sf.write(root / "wav" / f"{name}.wav", wave, SR)
            lines.append({
                "id": uid, "audio": f"wav/{uid}.wav", "text": text, "speaker": "s0", "duration": 1.4,
                "prompt_audio": f"wav/{uid}_prompt.wav", "prompt_text": prompt,
                "cont_audio": f"wav/{uid}_cont.wav", "cont_text": cont,
            })
        paths[split] = root / f"{split}.jsonl"
        paths[split].write_text("".join(json.dumps(x) + "\n" for x in lines))
    return paths

