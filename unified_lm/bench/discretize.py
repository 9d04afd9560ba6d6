"""Discretization throughput, and faiss against scikit-learn for k-means assignment and fitting.

Three tables, printed and saved to ``out_dir`` (``discretize.md``, ``discretize.csv`` in long
form, ``discretize.json`` with the environment):

1. per tokenizer (a recipe, fitted here on the manifest, or a fitted directory): seconds of
   audio discretized per wall-clock second, for feature extraction, for assignment, and for
   both together (audio preloaded at 16 kHz, so file decoding is not counted);
2. per K: nearest-centroid assignment of 80-dim fbank frames of the manifest (cycled when
   it has fewer) with faiss ``IndexFlatL2`` and with ``MiniBatchKMeans.predict``, both given
   the same centroids, side by side with their ratio and how often they agree; once in
   one call over ``frames`` frames ("bulk"), once in one call per utterance, as a
   tokenizer runs;
3. per K in ``fit_ks`` (optional, slow: minutes per K): fitting on ``frames`` of those
   frames with each backend as a tokenizer recipe configures it (faiss ``niter`` 25;
   scikit-learn with the reference's MiniBatchKMeans settings), both on the same threads,
   with the mean squared distance to the nearest centroid each reaches (lower is better).

Tokenizers and faiss run on one thread, as ``apply_tokenizer`` runs them; scikit-learn on
its default OpenMP threads.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import platform
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from ..audio import SAMPLE_RATE, fbank
from ..discretize import fit_tokenizer, load_tokenizer
from ..discretize.base import single_threaded
from ..discretize.kmeans import FaissKMeans, SklearnKMeans, fit_kmeans, to_numpy
from ..discretize.source import iter_waveforms
from ..discretize.tokenizer_recipe import KMeansConfig
from ..errors import DataError
from ..io import atomic_write_text
from ..tokenizer_meta import META_FILE
from .tables import markdown_table, write_csv

REALTIME_GOAL = 100.0  # fbank k-means discretization, x real time on 2 cores
SPEEDUP_GOAL = 5.0  # faiss over scikit-learn assignment at the largest K
# scikit-learn's per-call overhead makes one-call-per-utterance assignment slow; this
# many frames give a stable rate in seconds rather than minutes.
UTTERANCE_MODE_FRAMES = 200_000


def run_discretize_bench(
    manifest: str | Path,
    out_dir: str | Path,
    tokenizers: list[str],
    frames: int = 1_000_000,
    ks: tuple[int, ...] = (500, 2000),
    fit_ks: tuple[int, ...] = (),
    progress: bool = True,
) -> dict:
    """Runs both benchmarks, prints the markdown tables and saves them; returns the results."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    env = _environment()
    wavs = [wav for _, _, wav in iter_waveforms(manifest, progress, desc="load audio")]
    if not wavs:
        raise DataError(manifest, "no utterances to benchmark")
    audio_seconds = sum(w.numel() for w in wavs) / SAMPLE_RATE
    with tempfile.TemporaryDirectory(dir=out_dir, prefix=".fit-") as scratch:
        throughput = [_time_tokenizer(spec, manifest, Path(scratch), wavs, progress) for spec in tokenizers]
    fbank_frames = _fbank_frames(wavs, frames)
    assignment = [row for k in ks for row in _time_assignment(fbank_frames, k)]
    fitting = [_time_fitting(fbank_frames, k) for k in fit_ks]
    results = {
        "manifest": str(manifest),
        "utterances": len(wavs),
        "audio_seconds": round(audio_seconds, 2),
        "frames": frames,
        "environment": env,
        "throughput": throughput,
        "assignment": assignment,
        "fitting": fitting,
    }
    markdown = _markdown(results)
    print(markdown)
    atomic_write_text(out_dir / "discretize.md", markdown)
    atomic_write_text(out_dir / "discretize.json", json.dumps(results, indent=2) + "\n")
    _write_csv(out_dir / "discretize.csv", results)
    return results


def _time_tokenizer(spec: str, manifest: str | Path, scratch: Path, wavs: list[torch.Tensor], progress: bool) -> dict:
    fit_seconds = None
    path = Path(spec)
    if not (path / META_FILE).is_file():  # a recipe: fit it on the benchmark manifest first
        start = time.perf_counter()
        fit_tokenizer(path, manifest, scratch / path.stem, progress=progress)
        fit_seconds = time.perf_counter() - start
        path = scratch / path.stem
    tok = load_tokenizer(path)
    with single_threaded():  # as apply_tokenizer runs it
        tok.encode(wavs[0])  # warm-up: lazy imports and first-call allocations are not throughput
        start = time.perf_counter()
        feats = [tok.extract_features(w) for w in tqdm(wavs, desc=f"{tok.meta.name}: features", disable=not progress)]
        feature_s = time.perf_counter() - start
        start = time.perf_counter()
        num_units = sum(len(tok.assign(f)) for f in feats)
        assign_s = time.perf_counter() - start

    audio_s = sum(w.numel() for w in wavs) / tok.sample_rate
    return {
        "tokenizer": tok.meta.name,
        "kind": tok.meta.kind,
        "num_units": tok.meta.num_units,
        "frames": sum(len(f) for f in feats),
        "units": num_units,
        "fit_seconds": None if fit_seconds is None else round(fit_seconds, 2),
        "feature_seconds": round(feature_s, 3),
        "assign_seconds": round(assign_s, 3),
        "feature_x_rt": round(audio_s / feature_s, 1),
        "assign_x_rt": round(audio_s / assign_s, 1),
        "total_x_rt": round(audio_s / (feature_s + assign_s), 1),
    }


@dataclass
class _Frames:
    x: np.ndarray  # [frames, 80] fbank frames, the corpus cycled if it is shorter
    distinct: int  # leading rows that are not repeats
    lengths: np.ndarray  # frames per utterance along x (cycled too); sums to len(x)


def _fbank_frames(wavs: list[torch.Tensor], frames: int) -> _Frames:
    feats = []
    for w in wavs:
        f = fbank(w)
        feats.append(to_numpy(f - f.mean(dim=0)))
        if sum(len(f) for f in feats) >= frames:
            break
    real = np.concatenate(feats)
    reps = -(-frames // len(real))
    lengths = np.tile([len(f) for f in feats], reps)
    lengths = lengths[: np.searchsorted(np.cumsum(lengths), frames) + 1]
    lengths[-1] -= lengths.sum() - frames
    return _Frames(np.resize(real, (frames, real.shape[1])), min(len(real), frames), lengths)


def _time_assignment(frames: _Frames, k: int) -> list[dict]:
    """faiss and scikit-learn on the same centroids, in one call over all frames ("bulk")
    and in one call per utterance, as a tokenizer runs (``UTTERANCE_MODE_FRAMES`` only)."""
    # Assignment cost depends on K, dim and the number of frames only; the centroids come
    # from a quick k-means on a sample so that, like a real tokenizer's, they are well
    # separated (centroids picked from raw frames include near-duplicates, whose
    # rounding-level ties would make "agreement" measure float noise).
    rng = np.random.default_rng(0)
    sample = frames.x[rng.choice(frames.distinct, min(frames.distinct, 20 * k), replace=False)]
    with single_threaded():
        centroids = fit_kmeans(sample, KMeansConfig(k=k, niter=5)).centroids
    backends = {"faiss": FaissKMeans.from_centroids(centroids), "sklearn": SklearnKMeans.from_centroids(centroids)}
    # Each backend as it runs by default: faiss on one thread, as the tokenizer runs it
    # (see single_threaded), scikit-learn on its own OpenMP threads (all cores).
    threading = {"faiss": single_threaded, "sklearn": contextlib.nullcontext}
    for name, km in backends.items():
        with threading[name]():
            km.assign(frames.x[:1000])  # warm-up
    utt_calls = np.cumsum(frames.lengths)
    utt_calls = utt_calls[utt_calls <= UTTERANCE_MODE_FRAMES]
    modes = {
        "bulk": [frames.x],
        "per utterance": np.split(frames.x[: utt_calls[-1]], utt_calls[:-1]),
    }
    rows = []
    for mode, calls in modes.items():
        labels, seconds = {}, {}
        for name, km in backends.items():
            with threading[name]():
                start = time.perf_counter()
                labels[name] = np.concatenate([km.assign(c) for c in calls])
                seconds[name] = time.perf_counter() - start
        n = len(labels["faiss"])
        rows.append({
            "k": k,
            "mode": mode,
            "frames": n,
            "calls": len(calls),
            "faiss_frames_per_s": round(n / seconds["faiss"]),
            "sklearn_frames_per_s": round(n / seconds["sklearn"]),
            "faiss_over_sklearn": round(seconds["sklearn"] / seconds["faiss"], 2),
            "agreement": round(float(np.mean(labels["faiss"] == labels["sklearn"])), 5),
        })
    return rows


def _time_fitting(frames: _Frames, k: int) -> dict:
    """Fits K centroids with each backend on all ``frames`` (the way ``discretize fit``
    calls it), and scores both on the same frames."""
    cfg = KMeansConfig(k=k)
    row = {"k": k, "frames": len(frames.x), "distinct_frames": frames.distinct,
           "one_centroid_mse": round(float(((frames.x - frames.x.mean(axis=0)) ** 2).sum(axis=1).mean()), 4)}  # fmt: skip
    for name in ("faiss", "sklearn"):
        start = time.perf_counter()
        km = fit_kmeans(frames.x, dataclasses.replace(cfg, backend=name))
        row[f"{name}_seconds"] = round(time.perf_counter() - start, 3)
        # Scored with one exact search for both, so the score does not depend on the backend.
        dist, _ = FaissKMeans.from_centroids(km.centroids).index.search(frames.x, 1)  # squared L2
        row[f"{name}_mse"] = round(float(dist.mean()), 4)
    row["faiss_over_sklearn"] = round(row["sklearn_seconds"] / row["faiss_seconds"], 2)
    return row


def _environment() -> dict:
    import faiss
    import sklearn

    return {
        "cpu": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "omp_num_threads": os.environ.get("OMP_NUM_THREADS", "unset: all cores"),
        # Other work on the machine slows every number here; the load says how much there was.
        "load_average_1m": round(os.getloadavg()[0], 2),
        "faiss": faiss.__version__,
        "sklearn": sklearn.__version__,
        "torch": torch.__version__,
    }


def _markdown(r: dict) -> str:
    env = r["environment"]
    lines = [
        "# Discretization benchmark",
        "",
        f"Manifest `{r['manifest']}`: {r['utterances']} utterances, {r['audio_seconds']} s of audio. "
        f"{env['cpu_count']} CPUs; load average {env['load_average_1m']} at start (other work on the "
        "machine slows every number). Tokenizers and faiss run on one thread, as `discretize apply` "
        "does (parallelism comes from shards); scikit-learn uses its default OpenMP threads "
        f"(OMP_NUM_THREADS={env['omp_num_threads']}).",
        "",
        "## Throughput (seconds of audio per wall-clock second)",
        "",
    ]
    lines += markdown_table(
        ["tokenizer", "kind", "units", "fit s", "features x RT", "assign x RT", "total x RT"],
        [(t["tokenizer"], t["kind"], t["num_units"], "-" if t["fit_seconds"] is None else f"{t['fit_seconds']:.1f}",
          f"{t['feature_x_rt']:.0f}", f"{t['assign_x_rt']:.0f}", f"{t['total_x_rt']:.0f}") for t in r["throughput"]],
        align="llrrrrr",
    )
    lines += [
        "",
        f"## k-means assignment: 80-dim fbank frames, same centroids ({r['frames']:,} frames in bulk)",
        "",
    ]
    lines += markdown_table(
        ["K", "mode", "frames", "calls", "faiss frames/s", "scikit-learn frames/s", "faiss / scikit-learn", "agreement"],
        [(a["k"], a["mode"], f"{a['frames']:,}", f"{a['calls']:,}", f"{a['faiss_frames_per_s']:,}",
          f"{a['sklearn_frames_per_s']:,}", f"{a['faiss_over_sklearn']:.2f}x", f"{a['agreement']:.2%}") for a in r["assignment"]],
        align="rlrrrrrr",
    )
    if r["fitting"]:
        lines += [
            "",
            "## k-means fitting: the same 80-dim fbank frames, as `discretize fit` runs each backend",
            "",
        ]
        lines += markdown_table(
            ["K", "frames (distinct)", "faiss s", "scikit-learn s", "faiss / scikit-learn", "faiss MSE", "scikit-learn MSE"],
            [(f["k"], f"{f['frames']:,} ({f['distinct_frames']:,})", f"{f['faiss_seconds']:.1f}", f"{f['sklearn_seconds']:.1f}",
              f"{f['faiss_over_sklearn']:.2f}x", f"{f['faiss_mse']:.3f}", f"{f['sklearn_mse']:.3f}") for f in r["fitting"]],
            align="rrrrrrr",
        )
    lines += ["", "## Goals", ""] + _goal_lines(r) + [""]
    return "\n".join(lines)


def _goal_lines(r: dict) -> list[str]:
    lines = []
    fbank_rows = [t for t in r["throughput"] if t["tokenizer"].startswith("fbank")]
    for t in fbank_rows:
        met = "met" if t["total_x_rt"] >= REALTIME_GOAL else "NOT met"
        lines.append(f"- {t['tokenizer']} >= {REALTIME_GOAL:.0f}x real time: {met} ({t['total_x_rt']:.0f}x)")
    if r["assignment"]:
        top = max(a["k"] for a in r["assignment"])
        for a in (a for a in r["assignment"] if a["k"] == top):
            met = "met" if a["faiss_over_sklearn"] >= SPEEDUP_GOAL else "NOT met"
            ratio = a["faiss_over_sklearn"]
            lines.append(f"- faiss >= {SPEEDUP_GOAL:.0f}x scikit-learn at K={top}, {a['mode']}: {met} ({ratio:.2f}x)")
    return lines


def _write_csv(path: Path, r: dict) -> None:
    # Long form (section, name, metric, value): one file for both tables, easy to plot.
    rows = []
    for t in r["throughput"]:
        rows += [("throughput", t["tokenizer"], k, v) for k, v in t.items() if k not in ("tokenizer",)]
    for a in r["assignment"]:
        rows += [("assignment", f"K={a['k']} {a['mode']}", k, v) for k, v in a.items() if k not in ("k", "mode")]
    for f in r["fitting"]:
        rows += [("fitting", f"K={f['k']}", k, v) for k, v in f.items() if k != "k"]
    write_csv(path, ["section", "name", "metric", "value"], rows)
