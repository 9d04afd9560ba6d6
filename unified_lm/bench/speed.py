"""Speed benchmark: length-bucketed vs block-padded training, and decoding with/without KV cache.

One run, same model and same data for each side of each comparison:

1. training throughput (forward + backward + AdamW, SLD loss) with length-bucketed
   token-budget batches (``max_tokens`` padded tokens per batch) against the reference
   recipe's batches, every example padded to a ``block_size``-token block
   (``max_tokens // block_size`` examples per batch, the same padded tokens per batch).
   "Real tokens/s" counts non-pad tokens only: that is the work that teaches the model;
2. greedy ASR decoding of ``decode_utts`` utterances, utterances/s with the KV cache and
   without it (every step recomputes the whole prefix).

Peak memory: on CUDA, torch's allocator peak per phase; on CPU, the peak resident set of a
fresh process per phase (``isolate``), minus what the process held before the phase began.
Results are printed and saved to ``out_dir``: ``speed.md``, ``speed.csv`` (long form) and
``speed.json`` (with the environment).
"""

from __future__ import annotations

import json
import os
import platform
import random
import resource
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass
from multiprocessing import get_context
from pathlib import Path

import torch
import torch.nn.functional as F
from torch.utils.flop_counter import FlopCounterMode
from tqdm import tqdm
from transformers import AutoModelForCausalLM

from ..corpus.manifest import read_unit_manifest
from ..decode import generate_batched
from ..errors import ConfigError
from ..io import atomic_write_text
from ..losses import LossConfig, build_loss
from ..models import ModelConfig, build_model, count_parameters
from ..tasks import Role, TaskConfig, asr_prompt, collate
from ..tokenizer_meta import TokenizerMeta
from ..training import optimizer_step
from ..unit_data import BucketBatchSampler, UnitDataset, read_checked_manifest
from ..vocab import UnifiedVocab
from .tables import markdown_table, write_csv

TRAIN_SPEEDUP_GOAL = 3.0
DECODE_SPEEDUP_GOAL = 5.0
WARMUP_STEPS = 2  # untimed: first calls pay for allocation and kernel selection
MAX_TEXT_TOKENS = 150  # the reference recipe's transcript cut


@dataclass(frozen=True)
class SpeedSetup:
    """What every phase process needs; phases rebuild everything from it, identically."""

    units_manifest: str
    model_dir: str  # model + vocabulary, saved once so every phase starts from the same weights
    steps: int
    max_tokens: int
    block_size: int
    decode_utts: int
    decode_batch_size: int
    max_new_tokens: int
    seed: int

    @property
    def tasks(self) -> TaskConfig:
        # Cut speech so every ASR sequence fits one block: both arms then see the same tokens.
        return TaskConfig(
            mixture={"asr": 1.0},
            max_text_tokens=MAX_TEXT_TOKENS,
            max_speech_tokens=self.block_size - MAX_TEXT_TOKENS - 3,
        )


def run_speed_bench(
    units_manifest: str | Path,
    tokenizer_dir: str | Path,
    out_dir: str | Path,
    preset: str = "small",
    steps: int = 10,
    max_tokens: int = 4096,
    block_size: int = 1024,
    decode_utts: int = 16,
    decode_batch_size: int = 16,
    max_new_tokens: int = 32,
    checkpoint: str | Path | None = None,
    isolate: bool | None = None,
    seed: int = 0,
) -> dict:
    """Runs the four phases, prints the markdown tables and saves them; returns the results.

    ``checkpoint`` benchmarks a trained model (its vocabulary must match ``tokenizer_dir``'s
    units); otherwise a random-init ``preset`` model whose greedy outputs run to
    ``max_new_tokens``. ``isolate`` (default: on CPU) runs each phase in a fresh process so
    its peak memory is its own.
    """
    if block_size <= MAX_TEXT_TOKENS + 3:
        raise ConfigError(f"block_size={block_size} leaves no room for speech after {MAX_TEXT_TOKENS} text tokens")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    if isolate is None:
        isolate = not torch.cuda.is_available()
    with tempfile.TemporaryDirectory(dir=out_dir, prefix=".model-") as scratch:
        if checkpoint:
            model_dir = Path(checkpoint)
        else:
            model_dir = _save_random_model(units_manifest, tokenizer_dir, preset, seed, Path(scratch))
        setup = SpeedSetup(
            str(units_manifest), str(model_dir), steps, max_tokens, block_size,
            decode_utts, decode_batch_size, max_new_tokens, seed,
        )
        phases = [("train", "bucketed"), ("train", "padded"), ("decode", "kv_cache"), ("decode", "no_cache")]
        run = _run_isolated if isolate else _run_phase
        rows = [run(setup, *p) for p in tqdm(phases, desc="speed bench", unit="phase")]
    train_b, train_p, dec_c, dec_n = rows
    results = {
        "model": str(checkpoint) if checkpoint else preset,
        "num_params": rows[0]["num_params"],
        "setup": asdict(setup) | {"model_dir": str(checkpoint) if checkpoint else None},
        "memory_isolated": isolate,
        "environment": _environment(),
        "rows": rows,
        "train_speedup": train_b["real_tokens_per_s"] / train_p["real_tokens_per_s"],
        "decode_speedup": dec_c["utts_per_s"] / dec_n["utts_per_s"],
    }
    markdown = _markdown(results)
    print(markdown)
    atomic_write_text(out_dir / "speed.md", markdown)
    atomic_write_text(out_dir / "speed.json", json.dumps(results, indent=2) + "\n")
    _write_csv(out_dir / "speed.csv", rows)
    return results


def _save_random_model(units: str | Path, tokenizer_dir: str | Path, preset: str, seed: int, scratch: Path) -> Path:
    meta = TokenizerMeta.load(tokenizer_dir)
    texts = [r.text for r in read_unit_manifest(units)]
    vocab = UnifiedVocab.train(texts, [meta], text_vocab_size=1000)
    torch.manual_seed(seed)
    model = build_model(ModelConfig(preset=preset), vocab)
    model.save_pretrained(scratch)
    vocab.save(scratch)
    return scratch


def _run_isolated(setup: SpeedSetup, phase: str, setting: str) -> dict:
    # A fresh process per phase: ru_maxrss is a process-lifetime peak and cannot be reset.
    with ProcessPoolExecutor(max_workers=1, mp_context=get_context("spawn")) as pool:
        return pool.submit(_run_phase, setup, phase, setting).result()


def _run_phase(setup: SpeedSetup, phase: str, setting: str) -> dict:
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    model = AutoModelForCausalLM.from_pretrained(setup.model_dir).to(device)
    vocab = UnifiedVocab.load(setup.model_dir)
    if device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    before = _peak_mb(device)
    run = _train if phase == "train" else _decode
    measured = run(model, vocab, setup, setting, device)
    row = {"phase": phase, "setting": setting, "num_params": count_parameters(model), **measured}
    row["peak_memory_mb"] = _peak_mb(device)
    row["memory_growth_mb"] = row["peak_memory_mb"] - before
    return row


def _peak_mb(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def _train_batches(dataset: UnitDataset, setup: SpeedSetup, setting: str) -> list[list[int]]:
    if setting == "bucketed":
        return list(BucketBatchSampler(dataset.lengths, setup.max_tokens, seed=setup.seed))
    order = list(range(len(dataset)))
    random.Random(setup.seed).shuffle(order)
    per_batch = max(1, setup.max_tokens // setup.block_size)
    return [order[i : i + per_batch] for i in range(0, len(order), per_batch)]


def _train(model, vocab: UnifiedVocab, setup: SpeedSetup, setting: str, device: torch.device) -> dict:
    dataset = UnitDataset(setup.units_manifest, vocab, setup.tasks, seed=setup.seed)
    batches = _train_batches(dataset, setup, setting)
    loss_fn = build_loss(LossConfig(name="sld"), vocab)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    model.train()
    real = padded = flops = 0
    seconds = 0.0
    for step in range(WARMUP_STEPS + setup.steps):
        batch = collate([dataset[i] for i in batches[step % len(batches)]], vocab.pad_id)
        if setting == "padded":
            fill = {"input_ids": vocab.pad_id, "roles": int(Role.PAD), "attention_mask": 0}
            batch = {k: F.pad(v, (0, setup.block_size - v.shape[1]), value=fill[k]) for k, v in batch.items()}
        batch = {k: v.to(device) for k, v in batch.items()}
        _sync(device)
        start = time.perf_counter()
        out = loss_fn(model(input_ids=batch["input_ids"]).logits, batch["input_ids"], batch["roles"])
        out.total.backward()
        optimizer_step(optimizer, model.parameters(), clip_norm=0.0)
        _sync(device)
        if step >= WARMUP_STEPS:
            seconds += time.perf_counter() - start
            real += int(batch["attention_mask"].sum())
            padded += batch["input_ids"].numel()
            flops += _step_flops(model, loss_fn, batch)
    peak = matmul_peak_flops(device)
    return {
        "steps": setup.steps,
        "seconds": seconds,
        "real_tokens_per_s": real / seconds,
        "padded_tokens_per_s": padded / seconds,
        "padding_fraction": 1 - real / padded,
        "achieved_gflops": flops / seconds / 1e9,
        "matmul_peak_gflops": peak / 1e9,
        "peak_fraction": flops / seconds / peak,
    }


def _step_flops(model, loss_fn, batch: dict) -> int:
    """The floating-point operations of one forward + backward on ``batch``, counted by torch
    (matrix products and attention, padding included), outside the timed region."""
    with FlopCounterMode(display=False) as counter:
        loss_fn(model(input_ids=batch["input_ids"]).logits, batch["input_ids"], batch["roles"]).total.backward()
    model.zero_grad(set_to_none=True)
    return counter.get_total_flops()


def matmul_peak_flops(device: torch.device, n: int = 2048, repeats: int = 10) -> float:
    """FLOP/s of a large fp32 matrix product on ``device`` with this process's threads:
    the ceiling a training step's matrix work is measured against, taken in the same run."""
    a, b = torch.randn(n, n, device=device), torch.randn(n, n, device=device)
    a @ b  # warm-up
    _sync(device)
    start = time.perf_counter()
    for _ in range(repeats):
        a @ b
    _sync(device)
    return 2 * n**3 * repeats / (time.perf_counter() - start)


def _decode(model, vocab: UnifiedVocab, setup: SpeedSetup, setting: str, device: torch.device) -> dict:
    records = read_checked_manifest(setup.units_manifest, vocab)[: setup.decode_utts]
    prompts = [asr_prompt(r, vocab, setup.tasks) for r in records]
    kwargs = dict(
        stop_id=vocab.text_end_id, pad_id=vocab.pad_id, allowed=[*range(vocab.text_size), vocab.text_end_id],
        vocab_size=len(vocab), max_new_tokens=setup.max_new_tokens, use_cache=setting == "kv_cache",
    )
    generate_batched(model, prompts[: setup.decode_batch_size], setup.decode_batch_size, **kwargs)  # warm-up
    _sync(device)
    start = time.perf_counter()
    outputs = generate_batched(model, prompts, setup.decode_batch_size, **kwargs)
    _sync(device)
    seconds = time.perf_counter() - start
    generated = sum(len(o) for o in outputs)
    return {
        "utts": len(records),
        "seconds": seconds,
        "utts_per_s": len(records) / seconds,
        "generated_tokens_per_s": generated / seconds,
        "mean_new_tokens": generated / len(records),
    }


def _environment() -> dict:
    return {
        "cuda": torch.cuda.is_available(),
        "device": torch.cuda.get_device_name() if torch.cuda.is_available() else platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        # Other work on the machine slows every number here; the load says how much there was.
        "load_average_1m": round(os.getloadavg()[0], 2),
        "torch": torch.__version__,
    }


def _markdown(r: dict) -> str:
    s = r["setup"]
    train_b, train_p, dec_c, dec_n = r["rows"]
    env = r["environment"]
    mem = "peak memory MB (growth)"
    lines = [
        f"# Speed: {r['model']} ({r['num_params'] / 1e6:.1f}M params) on {env['device']}, "
        f"{env['torch_threads']} threads, load {env['load_average_1m']}",
        "",
        f"## Training, {s['steps']} timed steps (SLD loss, AdamW)",
        "",
    ]
    settings = {
        "bucketed": f"length-bucketed, max_tokens={s['max_tokens']}",
        "padded": f"padded to {s['block_size']}-token blocks, {max(1, s['max_tokens'] // s['block_size'])} per batch",
    }
    lines += markdown_table(
        ["batching", "real tokens/s", "padded tokens/s", "padding", "GFLOP/s (of fp32 matmul peak)", mem],
        [(settings[row["setting"]], f"{row['real_tokens_per_s']:.0f}", f"{row['padded_tokens_per_s']:.0f}",
          f"{100 * row['padding_fraction']:.0f}%",
          f"{row['achieved_gflops']:.1f} of {row['matmul_peak_gflops']:.1f} ({100 * row['peak_fraction']:.0f}%)",
          f"{row['peak_memory_mb']:.0f} ({row['memory_growth_mb']:+.0f})") for row in (train_b, train_p)],
    )
    lines += [
        "",
        f"Speed-up in real tokens/s: **{r['train_speedup']:.1f}x** (goal >= {TRAIN_SPEEDUP_GOAL:.0f}x)",
        "",
        f"## Greedy ASR decoding, {dec_c['utts']} utterances, batch {s['decode_batch_size']}, "
        f"at most {s['max_new_tokens']} new tokens",
        "",
    ]
    lines += markdown_table(
        ["KV cache", "utterances/s", "generated tokens/s", "mean new tokens", mem],
        [(name, f"{row['utts_per_s']:.2f}", f"{row['generated_tokens_per_s']:.0f}", f"{row['mean_new_tokens']:.1f}",
          f"{row['peak_memory_mb']:.0f} ({row['memory_growth_mb']:+.0f})") for row, name in ((dec_c, "on"), (dec_n, "off"))],
    )
    lines += ["", f"Speed-up in utterances/s: **{r['decode_speedup']:.1f}x** (goal >= {DECODE_SPEEDUP_GOAL:.0f}x)"]
    if not r["memory_isolated"] and not env["cuda"]:
        lines += ["", "Memory: all phases ran in one process, so CPU peaks are cumulative."]
    return "\n".join(lines) + "\n"


def _write_csv(path: Path, rows: list[dict]) -> None:
    # Long form (phase, setting, metric, value): easy to plot.
    long = [(r["phase"], r["setting"], k, v) for r in rows for k, v in r.items() if k not in ("phase", "setting")]
    write_csv(path, ["phase", "setting", "metric", "value"], long)
