"""Train a unified speech-text decoder on a task mixture with a chosen input-speech loss.

    python -m unified_lm.train --config experiments/asr_sld.yaml [key=value ...]
    accelerate launch -m unified_lm.train --config experiments/asr_sld.yaml
    torchrun --nproc_per_node 2 -m unified_lm.train --config ...      # CPU too (gloo)

A run writes into ``out_dir``: ``config.yaml``, ``vocab/``, ``metrics.jsonl``, ``tb/``
(TensorBoard), ``last/`` (model + optimizer, scheduler, RNG and data position: rerunning
the same command resumes exactly where it stopped), ``best/`` (lowest dev WER) and
``summary.json``. Checkpoint directories load with ``AutoModelForCausalLM.from_pretrained``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import random
import shutil
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import torch
from accelerate import Accelerator
from accelerate.utils import gather_object, set_seed
from torch.utils.tensorboard import SummaryWriter
from tqdm import tqdm
from transformers import AutoModelForCausalLM, get_scheduler

from .config import load_config, load_yaml, save_config, to_dict
from .corpus.manifest import read_unit_manifest
from .data import BucketBatchSampler, UnitDataset, make_loader, read_checked_manifest
from .decode import transcribe
from .discretize.meta import TokenizerMeta
from .errors import ConfigError, DataError, UnifiedLMError
from .io import atomic_write_text, dump_json_line, iter_jsonl, write_jsonl
from .losses import LOSSES, LossConfig, build_loss
from .models import (
    ModelConfig,
    build_model,
    count_parameters,
    existing_checkpoint,
    max_positions,
    publish_dir,
    resolve_preset,
    save_checkpoint,
    write_checkpoint,
)
from .scoring import score_corpus
from .tasks import TaskConfig, time_mask
from .vocab import DEFAULT_TASKS, UnifiedVocab

logger = logging.getLogger("unified_lm.train")

SCHEDULES = {"linear": "linear", "cosine": "cosine", "constant": "constant_with_warmup"}
PRECISIONS = ("no", "bf16", "fp16")


@dataclass
class DataConfig:
    train: str = "runs/demo/units/train.jsonl"
    dev: str | None = "runs/demo/units/dev.jsonl"  # None: no evaluation, `best` is the final model
    tokenizer: str = "runs/demo/tok"  # the speech tokenizer directory (its meta.json)
    text_vocab_size: int = 1000  # BPE trained on the training transcripts ...
    text_tokenizer: str | None = None  # ... unless a local HF tokenizer dir is given (defaults to model.init_from)
    num_workers: int = 0


@dataclass
class OptimConfig:
    lr: float = 1e-3
    weight_decay: float = 0.1
    betas: list[float] = field(default_factory=lambda: [0.9, 0.98])
    warmup_steps: int = 200
    schedule: str = "cosine"  # linear | cosine | constant (all after linear warm-up)
    max_steps: int = 2000  # optimizer steps
    grad_accum: int = 1
    clip_norm: float = 1.0  # 0 disables clipping
    max_tokens: int = 4096  # padded tokens per batch per rank


@dataclass
class EvalConfig:
    every_steps: int = 500
    max_utts: int = 200  # the first N utterances of data.dev
    beam: int = 1
    batch_size: int = 32
    max_new_tokens: int | None = None  # None: tasks.max_text_tokens + 1


@dataclass
class CheckpointConfig:
    every_steps: int = 500  # out_dir/last; also written at every evaluation and at the end


@dataclass
class TrainConfig:
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    tasks: TaskConfig = field(default_factory=TaskConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    checkpoint: CheckpointConfig = field(default_factory=CheckpointConfig)
    time_mask: float = 0.0  # probability of replacing each input token by <pad> (labels untouched)
    precision: str = "no"  # no | bf16 | fp16; mixed precision is used on CUDA only
    log_every_steps: int = 10
    seed: int = 0
    out_dir: str = "runs/train"


@dataclass
class TrainerState:
    """Everything besides weights, optimizer and RNG that resuming needs (``last/trainer_state.json``)."""

    step: int = 0
    epoch: int = 0
    position: int = 0  # batches of `epoch` already consumed on each rank
    best_wer: float | None = None
    best_step: int | None = None
    evaluated_step: int | None = None  # the last step that was evaluated (or would have been, without a dev set)
    world_size: int = 1


# ---- set-up -----------------------------------------------------------------------------


def check_config(cfg: TrainConfig) -> None:
    """Fails fast, before any heavy work, on values no run can use."""
    LOSSES.get(cfg.loss.name)
    if cfg.optim.schedule not in SCHEDULES:
        raise ConfigError(f"optim.schedule: unknown schedule {cfg.optim.schedule!r}; known: {sorted(SCHEDULES)}")
    if cfg.precision not in PRECISIONS:
        raise ConfigError(f"precision: must be one of {PRECISIONS}, got {cfg.precision!r}")
    if not 0.0 <= cfg.time_mask < 1.0:
        raise ConfigError(f"time_mask: must be in [0, 1), got {cfg.time_mask}")
    for name in ("max_steps", "grad_accum", "max_tokens"):
        if getattr(cfg.optim, name) < 1:
            raise ConfigError(f"optim.{name}: must be >= 1")
    if not cfg.optim.lr > 0 or cfg.optim.weight_decay < 0:
        raise ConfigError(f"optim.lr must be > 0 and optim.weight_decay >= 0, got {cfg.optim.lr} and {cfg.optim.weight_decay}")
    if len(cfg.optim.betas) != 2:
        raise ConfigError(f"optim.betas: expected two values, got {cfg.optim.betas}")
    for section in ("eval", "checkpoint"):
        if getattr(cfg, section).every_steps < 1:
            raise ConfigError(f"{section}.every_steps: must be >= 1")
    if cfg.log_every_steps < 1:
        raise ConfigError("log_every_steps: must be >= 1")
    for what, path in (("data.train", cfg.data.train), ("data.dev", cfg.data.dev)):
        if path is not None and not Path(path).is_file():
            raise DataError(path, f"{what}: unit manifest not found")
    # Every rank checks what rank 0 alone will read: a failure there would leave the others waiting.
    TokenizerMeta.load(cfg.data.tokenizer)
    text_tokenizer = cfg.data.text_tokenizer or cfg.model.init_from
    if text_tokenizer and not Path(text_tokenizer).exists():
        raise DataError(text_tokenizer, "data.text_tokenizer / model.init_from: not found")
    if not cfg.model.init_from:
        resolve_preset(cfg.model)


def resolve_precision(requested: str) -> str:
    """``requested`` where the hardware runs it, else "no" (with a warning)."""
    if requested == "no":
        return "no"
    if not torch.cuda.is_available():
        logger.warning("precision=%s needs a CUDA device; training in fp32", requested)
        return "no"
    if requested == "bf16" and not torch.cuda.is_bf16_supported():
        logger.warning("this GPU has no bf16 support; training in fp32 (try precision=fp16)")
        return "no"
    return requested


def build_vocab(cfg: TrainConfig) -> UnifiedVocab:
    """The vocabulary a fresh run trains with: text BPE (or a local text tokenizer) + speech ranges."""
    speech = [TokenizerMeta.load(cfg.data.tokenizer)]
    tasks = (*DEFAULT_TASKS, *(t for t in cfg.tasks.mixture if t not in DEFAULT_TASKS))
    text_tokenizer = cfg.data.text_tokenizer or cfg.model.init_from
    if text_tokenizer:
        return UnifiedVocab.from_text_tokenizer(text_tokenizer, speech, tasks)
    texts = (r.text for r in read_unit_manifest(cfg.data.train))
    return UnifiedVocab.train(texts, speech, cfg.data.text_vocab_size, tasks)


def _prepare_vocab(cfg: TrainConfig, out: Path, accelerator: Accelerator, fresh: bool) -> UnifiedVocab:
    # Built once by the main process and read by all, so every rank has the same ids. A fresh
    # run builds it anew: one left by an earlier failed start may come from another config.
    vocab_dir = out / "vocab"
    if accelerator.is_main_process and (fresh or not (vocab_dir / "unified_vocab.json").is_file()):
        shutil.rmtree(vocab_dir, ignore_errors=True)
        build_vocab(cfg).save(vocab_dir)
    accelerator.wait_for_everyone()
    return UnifiedVocab.load(vocab_dir)


def _optimizer(model: torch.nn.Module, cfg: OptimConfig) -> torch.optim.AdamW:
    # nanoGPT's split: decay matrices, not biases, norms or 1-D gains.
    params = [p for p in model.parameters() if p.requires_grad]
    groups = [
        {"params": [p for p in params if p.dim() >= 2], "weight_decay": cfg.weight_decay},
        {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0},
    ]
    return torch.optim.AdamW(groups, lr=cfg.lr, betas=tuple(cfg.betas))


# Keys a resumed run may change (with a warning): what is logged, evaluated and saved, and
# where files are, since one path is spelled differently from another directory (the
# vocabulary's tokenizer hash still guards the units). Any other change is refused.
RESUMABLE_CHANGES = (
    "eval.", "checkpoint.", "log_every_steps", "out_dir",
    "data.num_workers", "data.train", "data.dev", "data.tokenizer", "data.text_tokenizer", "model.init_from",
)


def _check_same_config(cfg: TrainConfig, path: Path) -> None:
    """A run resumes only with the config its checkpoints were trained with (``config.yaml``
    stays as it is), up to the keys in ``RESUMABLE_CHANGES``."""
    if not path.is_file():
        return
    old, new = _flatten(load_yaml(path)), _flatten(to_dict(cfg))
    changed = sorted(k for k in old.keys() | new.keys() if old.get(k) != new.get(k))
    refused = [k for k in changed if not k.startswith(RESUMABLE_CHANGES)]
    if refused:
        raise ConfigError(
            f"{path.parent} was trained with another config ({', '.join(f'{k}: {old.get(k)!r} -> {new.get(k)!r}' for k in refused)}); "
            "rerun with the same settings to resume, or choose another out_dir"
        )
    if changed:
        logger.warning("resuming %s with a changed config: %s", path.parent, ", ".join(changed))


def _flatten(d: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in d.items():
        out.update(_flatten(v, f"{prefix}{k}.") if isinstance(v, dict) and v else {f"{prefix}{k}": v})
    return out


# ---- resumable state --------------------------------------------------------------------


def _step_seed(*keys: Any) -> int:
    """A seed that depends only on ``keys`` (str seeding of random.Random is stable across runs)."""
    return random.Random("/".join(map(str, keys))).getrandbits(63)


def _rng_state() -> dict[str, Any]:
    state = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict[str, Any]) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


@contextlib.contextmanager
def staged_last(out: Path, accelerator: Accelerator) -> Iterator[Path]:
    """Yields an empty staging directory holding every rank's RNG state, for the main
    process to fill; on exit it replaces ``out/last`` in one step, so a kill at any moment
    leaves the previous ``last`` or the new one, never half of one."""
    tmp = out / ".last.tmp"
    if accelerator.is_main_process:
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
    accelerator.wait_for_everyone()
    torch.save(_rng_state(), tmp / f"rng_state_{accelerator.process_index}.pt")
    yield tmp
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        publish_dir(tmp, out / "last")
    accelerator.wait_for_everyone()


def restore_rng(last: Path, world_size: int, accelerator: Accelerator) -> bool:
    """Restores this rank's RNG streams from ``last`` (written by ``staged_last``); False,
    restoring nothing, when ``last`` was saved by a run on another number of processes."""
    rng = last / f"rng_state_{accelerator.process_index}.pt"
    if world_size != accelerator.num_processes or not rng.is_file():
        return False
    _set_rng_state(torch.load(rng, weights_only=False))
    return True


def _save_last(out: Path, model, vocab, cfg, optimizer, scheduler, state: TrainerState, accelerator: Accelerator) -> None:
    with staged_last(out, accelerator) as tmp:
        if accelerator.is_main_process:
            write_checkpoint(tmp, accelerator.unwrap_model(model), vocab, cfg)
            torch.save(optimizer.state_dict(), tmp / "optimizer.pt")
            torch.save(scheduler.state_dict(), tmp / "scheduler.pt")
            if accelerator.scaler is not None:  # fp16 loss scale
                torch.save(accelerator.scaler.state_dict(), tmp / "scaler.pt")
            atomic_write_text(tmp / "trainer_state.json", json.dumps(asdict(state), indent=2) + "\n")


def _load_last(last: Path, optimizer, scheduler, accelerator: Accelerator) -> TrainerState:
    state = TrainerState(**json.loads((last / "trainer_state.json").read_text()))
    optimizer.load_state_dict(torch.load(last / "optimizer.pt", map_location="cpu", weights_only=False))
    scheduler.load_state_dict(torch.load(last / "scheduler.pt", weights_only=False))
    if accelerator.scaler is not None and (last / "scaler.pt").is_file():
        accelerator.scaler.load_state_dict(torch.load(last / "scaler.pt", weights_only=False))
    if not restore_rng(last, state.world_size, accelerator):
        logger.warning(
            "resuming a %d-process run on %d processes: data order and RNG streams change, so the run "
            "continues but will not match an uninterrupted one", state.world_size, accelerator.num_processes
        )
        state.position = 0
    state.world_size = accelerator.num_processes
    return state


class MetricsLog:
    """``metrics.jsonl`` + TensorBoard, main process only. On resume, drops what was logged
    after the checkpoint, so a resumed run's log reads like an uninterrupted one."""

    def __init__(self, out: Path, resume_step: int, enabled: bool):
        self.enabled = enabled
        self.path = out / "metrics.jsonl"
        if not enabled:
            return
        if self.path.is_file():
            kept = [r for _, r in iter_jsonl(self.path) if not isinstance(r, DataError) and r["step"] <= resume_step]
            write_jsonl(self.path, kept)
        self.tb = SummaryWriter(str(out / "tb"), purge_step=resume_step + 1)

    def log(self, record: dict[str, Any], prefix: str) -> None:
        if not self.enabled:
            return
        with open(self.path, "a", encoding="utf-8") as f:
            f.write(dump_json_line(record))
        for key, value in record.items():
            if key != "step" and isinstance(value, (int, float)):
                self.tb.add_scalar(f"{prefix}/{key}", value, record["step"])
        self.tb.flush()

    def close(self) -> None:
        if self.enabled:
            self.tb.close()


# ---- the loop ---------------------------------------------------------------------------


def _batch_stream(dataset: UnitDataset, sampler: BucketBatchSampler, state: TrainerState, num_workers: int):
    """Endless batches from (state.epoch, state.position) on, keeping the two up to date."""
    while True:
        dataset.set_epoch(state.epoch)
        sampler.set_epoch(state.epoch, skip=state.position)
        for batch in make_loader(dataset, sampler, num_workers):
            state.position += 1
            yield batch
        state.epoch += 1
        state.position = 0


def _train_step(model, batches, optimizer, scheduler, loss_fn, vocab, cfg: TrainConfig, state, accelerator) -> dict:
    """One optimizer step over ``grad_accum`` micro-batches; returns rank-averaged losses and
    the real (non-pad) tokens seen by all ranks."""
    model.train()
    sums: dict[str, float] = {}
    tokens = 0
    for micro in range(cfg.optim.grad_accum):
        batch = {k: v.to(accelerator.device) for k, v in next(batches).items()}
        inputs = batch["input_ids"]
        if cfg.time_mask > 0:
            gen = torch.Generator().manual_seed(_step_seed(cfg.seed, accelerator.process_index, state.step, micro))
            inputs = time_mask(inputs, batch["roles"], cfg.time_mask, vocab.pad_id, gen)
        with accelerator.accumulate(model):
            # No attention mask: padding is on the right, so causal attention never lets a
            # real token see it, and SDPA keeps its fast causal path.
            logits = model(input_ids=inputs).logits
            out = loss_fn(logits, batch["input_ids"], batch["roles"])
            accelerator.backward(out.total)
            if accelerator.sync_gradients and cfg.optim.clip_norm > 0:
                accelerator.clip_grad_norm_(model.parameters(), cfg.optim.clip_norm)
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
        for name, value in {"loss": out.total.detach(), **out.parts}.items():
            sums[name] = sums.get(name, 0.0) + float(value) / cfg.optim.grad_accum
        tokens += int(batch["attention_mask"].sum())
    scheduler.step()
    names = sorted(sums)
    means = accelerator.reduce(torch.tensor([sums[n] for n in names], device=accelerator.device), "mean")
    total = accelerator.reduce(torch.tensor(tokens, device=accelerator.device), "sum")
    return {**dict(zip(names, means.tolist())), "tokens": int(total)}


def evaluate(model, vocab: UnifiedVocab, records: list, cfg: TrainConfig, accelerator: Accelerator) -> dict:
    """Greedy (or beam) dev WER/CER; each rank decodes a shard, every rank gets the same scores."""
    shard = records[accelerator.process_index :: accelerator.num_processes]
    hyps = transcribe(
        accelerator.unwrap_model(model),
        vocab,
        shard,
        cfg.tasks,
        batch_size=cfg.eval.batch_size,
        beam=cfg.eval.beam,
        max_new_tokens=cfg.eval.max_new_tokens or cfg.tasks.max_text_tokens + 1,
    )
    triples = gather_object([(r.text, h, r.subset) for r, h in zip(shard, hyps)])
    refs, hyps, subsets = zip(*triples)
    scores = score_corpus(refs, hyps, subsets)
    return {
        "dev_wer": scores["wer"],
        "dev_cer": scores["cer"],
        "dev_utts": scores["num_utts"],
        **{f"dev_wer_{name}": s["wer"] for name, s in scores["subsets"].items()},
    }


def train(cfg: TrainConfig) -> dict[str, Any]:
    """Trains (or resumes) the run ``cfg.out_dir``; returns the summary also written to
    ``out_dir/summary.json``."""
    check_config(cfg)
    accelerator = Accelerator(
        gradient_accumulation_steps=cfg.optim.grad_accum,
        mixed_precision=resolve_precision(cfg.precision),
        cpu=not torch.cuda.is_available(),
    )
    main = accelerator.is_main_process
    out = Path(cfg.out_dir)
    last = existing_checkpoint(out / "last")
    if last:
        _check_same_config(cfg, out / "config.yaml")
    elif main:
        out.mkdir(parents=True, exist_ok=True)
    try:
        vocab = _prepare_vocab(cfg, out, accelerator, fresh=not last)
        loss_fn = build_loss(cfg.loss, vocab)
        dataset = UnitDataset(cfg.data.train, vocab, cfg.tasks, seed=cfg.seed)
        dev = read_checked_manifest(cfg.data.dev, vocab)[: cfg.eval.max_utts] if cfg.data.dev else []
        sampler = BucketBatchSampler(
            dataset.lengths, cfg.optim.max_tokens, seed=cfg.seed,
            num_replicas=accelerator.num_processes, rank=accelerator.process_index,
        )
    except UnifiedLMError:
        if main and not last:  # a start that fails leaves nothing a later start could pick up
            shutil.rmtree(out / "vocab", ignore_errors=True)
            with contextlib.suppress(OSError):
                out.rmdir()
        raise
    if main and not last:
        save_config(cfg, out / "config.yaml")

    set_seed(cfg.seed)
    model = AutoModelForCausalLM.from_pretrained(last) if last else build_model(cfg.model, vocab)
    if model.get_input_embeddings().num_embeddings != len(vocab):
        raise ConfigError(f"{last}: the model's embeddings do not match the vocabulary in {out / 'vocab'}")
    limit = max_positions(model)
    if limit is not None and max(dataset.lengths) > limit:
        raise ConfigError(
            f"{cfg.data.train}: the longest sequence has {max(dataset.lengths)} tokens but the model has "
            f"{limit} positions; cut speech with tasks.max_speech_tokens"
        )
    optimizer = _optimizer(model, cfg.optim)
    scheduler = get_scheduler(
        SCHEDULES[cfg.optim.schedule], optimizer,
        num_warmup_steps=cfg.optim.warmup_steps, num_training_steps=cfg.optim.max_steps,
    )
    # The scheduler is not prepared: accelerate would step it once per process per step.
    model, optimizer = accelerator.prepare(model, optimizer)
    state = TrainerState(world_size=accelerator.num_processes)
    if last:
        state = _load_last(last, optimizer, scheduler, accelerator)
        if state.step >= cfg.optim.max_steps and state.evaluated_step == state.step and (out / "summary.json").is_file():
            logger.info("%s already finished at step %d; raise optim.max_steps to train on", out, state.step)
            accelerator.end_training()
            return json.loads((out / "summary.json").read_text())
        logger.info("resuming from %s at step %d", last, state.step)
    metrics = MetricsLog(out, state.step, main)

    batches = _batch_stream(dataset, sampler, state, cfg.data.num_workers)
    bar = tqdm(total=cfg.optim.max_steps, initial=state.step, desc="train", unit="step", disable=not main)
    started = tick = time.perf_counter()
    tokens_since = session_tokens = 0
    logged: dict[str, Any] = {}

    def eval_and_checkpoint() -> None:
        state.evaluated_step = state.step
        if dev:
            with torch.random.fork_rng(devices=[]):  # decoding leaves the training streams as they were
                scores = evaluate(model, vocab, dev, cfg, accelerator)
            improved = state.best_wer is None or scores["dev_wer"] < state.best_wer
            if improved:
                state.best_wer, state.best_step = scores["dev_wer"], state.step
            metrics.log({"step": state.step, **scores}, "dev")
            if main:
                bar.write(f"step {state.step}: dev WER {100 * scores['dev_wer']:.2f}% (best {100 * state.best_wer:.2f}%)")
        else:
            improved = True  # without a dev set, `best` is the latest model
        if improved and main:
            save_checkpoint(out / "best", accelerator.unwrap_model(model), vocab, cfg)
        _save_last(out, model, vocab, cfg, optimizer, scheduler, state, accelerator)

    while state.step < cfg.optim.max_steps:
        lr = scheduler.get_last_lr()[0]
        result = _train_step(model, batches, optimizer, scheduler, loss_fn, vocab, cfg, state, accelerator)
        state.step += 1
        tokens_since += result["tokens"]
        session_tokens += result["tokens"]
        bar.update(1)
        bar.set_postfix(loss=f"{result['loss']:.3f}", lr=f"{lr:.2e}")
        if state.step % cfg.log_every_steps == 0 or state.step == cfg.optim.max_steps:
            now = time.perf_counter()
            throughput = tokens_since / (now - tick)
            logged = {"step": state.step, "epoch": state.epoch, **result, "lr": lr, "tokens_per_s": throughput}
            metrics.log(logged, "train")
            bar.set_postfix(loss=f"{result['loss']:.3f}", lr=f"{lr:.2e}", tok_s=f"{logged['tokens_per_s']:.0f}")
            tick, tokens_since = now, 0
        if state.step % cfg.eval.every_steps == 0:
            eval_and_checkpoint()
        elif state.step % cfg.checkpoint.every_steps == 0:
            _save_last(out, model, vocab, cfg, optimizer, scheduler, state, accelerator)
    bar.close()
    if state.evaluated_step != state.step:
        eval_and_checkpoint()
    metrics.close()

    seconds = time.perf_counter() - started
    summary = {
        "out_dir": str(out),
        "steps": state.step,
        "epochs": state.epoch + state.position / max(len(sampler), 1),
        "num_params": count_parameters(accelerator.unwrap_model(model)),
        "vocab_size": len(vocab),
        "world_size": accelerator.num_processes,
        "best_dev_wer": state.best_wer,
        "best_step": state.best_step,
        "last_train": {k: v for k, v in logged.items() if k != "step"},
        "session_seconds": round(seconds, 1),
        "session_tokens_per_s": session_tokens / seconds if seconds > 0 else None,
    }
    if main:
        atomic_write_text(out / "summary.json", json.dumps(summary, indent=2) + "\n")
    accelerator.wait_for_everyone()
    accelerator.end_training()
    return summary


def main(argv: list[str] | None = None) -> int:
    """``python -m unified_lm.train --config X.yaml [key=value ...]``; returns the exit status."""
    parser = argparse.ArgumentParser(prog="python -m unified_lm.train", description=__doc__.splitlines()[0])
    parser.add_argument("--config", required=True, help="a recipe, e.g. experiments/asr_sld.yaml")
    parser.add_argument("overrides", nargs="*", help="config overrides, e.g. optim.lr=3e-4 loss.name=mask")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        train(load_config(TrainConfig, args.config, args.overrides))
    except UnifiedLMError as e:
        print(f"unified_lm.train: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:  # as `unified-lm train` does: out/last holds the last checkpoint
        print("unified_lm.train: interrupted; rerun the same command to resume", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
