"""SSL feature extraction, side by side: the model's whole stack one utterance at a time
(what ``ssl`` features did before) against the stack cut at the clustered layer, one at a
time and in padded batches (what they do now).

    unified-lm bench ssl-features --manifest data/synth/dev.jsonl [--model DIR] [--layer 6] [--device cuda]

Without ``--model`` a random-init HuBERT of Base size (12 layers, 768 wide, group-norm
feature extractor) is built in a temporary folder: speed does not depend on the weights.
On the CPU, one thread, as ``discretize apply`` runs (parallelism comes from shards); on a
GPU (``--device cuda``) a fourth path runs the padded batches in float16. Every path's
features are checked against the first's. Results: ``ssl_features.md`` and ``.json`` in ``--out``.
"""

from __future__ import annotations

import json
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

from ..discretize.base import in_batches, resolve_device, single_threaded
from ..discretize.extractors import SslFeatures
from ..discretize.source import iter_waveforms
from ..io import atomic_write_text
from .tables import markdown_table

SPEEDUP_GOAL = 3.0  # batched vs the old per-utterance path, CPU (issue: real corpora at scale)


def random_hubert_base(path: Path) -> Path:
    from transformers import HubertConfig, HubertModel

    torch.manual_seed(0)
    HubertModel(HubertConfig()).save_pretrained(path)  # the defaults are HuBERT Base's shape
    return path


def _timed(fn, wavs) -> tuple[float, list[torch.Tensor]]:
    start = time.perf_counter()
    out = fn(wavs)
    return time.perf_counter() - start, out


def run_ssl_features_bench(
    manifest: str | Path, out_dir: str | Path, model: str | Path | None = None, layer: int = 6, utterances: int = 24,
    device: str = "cpu",
) -> dict[str, Any]:
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    wavs = [w for _, (_, _, w) in zip(range(utterances), iter_waveforms(manifest, progress=False))]
    audio_s = sum(w.numel() for w in wavs) / 16000
    device = resolve_device(device, explicit=True)
    with tempfile.TemporaryDirectory() as tmp, single_threaded():
        path = Path(model) if model else random_hubert_base(Path(tmp) / "hubert-base")
        from transformers import AutoModel

        full = AutoModel.from_pretrained(path).eval().to(device)

        def features(dtype: str = "float32") -> SslFeatures:
            return SslFeatures(SslFeatures.Config(model_path=str(path), layer=layer, dtype=dtype, device=device))

        cut, padded = features(), features()
        padded.pad_batches = True  # what a GPU does; on a CPU the default is one at a time

        def whole_stack(ws):
            with torch.inference_mode():
                return [full(w[None].to(device), output_hidden_states=True).hidden_states[layer][0].cpu() for w in ws]

        def batched(extractor):
            return lambda ws: [f for b in in_batches(ws) for f in extractor.batch(b)]

        paths = {
            "whole stack, one utterance at a time (before)": whole_stack,
            f"layers 1-{layer} only, one at a time (now, on a CPU)": lambda ws: [cut(w) for w in ws],
            f"layers 1-{layer} only, padded batches of up to 60 s (now, on a GPU)": batched(padded),
        }
        if device.startswith("cuda"):
            paths[f"layers 1-{layer} only, padded batches, float16 (kmeans.features.dtype)"] = batched(features("float16"))
        whole_stack(wavs[:1])  # untimed: first calls allocate
        results = {}
        for name, fn in paths.items():
            seconds, feats = _timed(fn, wavs)
            results[name] = {"seconds": seconds, "feats": feats}
    reference = results[next(iter(paths))]["feats"]
    rows = []
    for name, r in results.items():
        diff = max(float((a - b).abs().max()) for a, b in zip(r["feats"], reference))
        speedup = results[next(iter(paths))]["seconds"] / r["seconds"]
        rows.append([name, f"{r['seconds']:.2f}", f"{audio_s / r['seconds']:.1f}", f"{speedup:.2f}x", f"{diff:.1e}"])
    before, now = (results[name]["seconds"] for name in list(paths)[:2])
    speedup = before / now  # the CPU's default path
    report = "\n".join([
        f"# SSL features: {len(wavs)} utterances ({audio_s:.0f} s of audio), layer {layer} of "
        f"{full.config.num_hidden_layers}, {'random-init HuBERT Base' if model is None else model}, "
        f"{'1 CPU thread' if device == 'cpu' else device}", "",
        *markdown_table(["path", "seconds", "x real time", "speed-up", "max |diff| vs before"], rows), "",
        f"The CPU's path now vs before: {speedup:.2f}x (goal {SPEEDUP_GOAL:g}x: {'met' if speedup >= SPEEDUP_GOAL else 'MISSED'}).",
        f"Command: `unified-lm bench ssl-features --manifest {manifest} --layer {layer} --utterances {utterances}"
        f"{'' if device == 'cpu' else ' --device ' + device}`", "",
    ])  # fmt: skip
    atomic_write_text(out_dir / "ssl_features.md", report)
    summary = {name: r["seconds"] for name, r in results.items()}
    atomic_write_text(out_dir / "ssl_features.json", json.dumps({"seconds": summary, "audio_s": audio_s, "layer": layer}, indent=2))
    print(report)
    return {"speedup": speedup, "seconds": summary}
