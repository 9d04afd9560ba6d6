"""The small training loop shared by the continuous path's three trainings (prefix LM,
CTC encoder, text LM): AdamW with warm-up + decay, accelerate for devices and processes,
periodic dev evaluation that keeps the best model, ``metrics.jsonl`` + TensorBoard.

Each caller supplies what differs: how a batch becomes a loss, the batches of an epoch,
how to score the dev set (lower ``loss`` is better) and how to save the best model.

Every evaluation also writes ``out/last`` (weights, optimizer, scheduler, RNG streams and
the position in the epoch), so rerunning an interrupted command resumes where it stopped
and, on one process with a fixed seed, ends with the uninterrupted run's metrics.
"""

from __future__ import annotations

import json
import logging
import random
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import torch
from accelerate import Accelerator, DistributedDataParallelKwargs
from tqdm import tqdm
from transformers import get_scheduler

from ..errors import ConfigError
from ..io import atomic_write_text
from ..losses import LossOutput
from ..models import existing_checkpoint
from ..train import MetricsLog, restore_rng, staged_last
from .config import OptimConfig

logger = logging.getLogger("unified_lm.continuous")

SCHEDULES = {"linear": "linear", "cosine": "cosine", "constant": "constant_with_warmup"}


@dataclass
class Task:
    """What one training run plugs into ``fit``."""

    loss: Callable[[torch.nn.Module, Any, torch.device], LossOutput]  # (model, batch, device)
    epoch_batches: Callable[[int], Sequence[Any]]  # epoch -> its batches (same on every rank)
    evaluate: Callable[[torch.nn.Module], dict[str, float]]  # dev metrics, with "loss"
    save_best: Callable[[torch.nn.Module], None]


def optimizer_for(model: torch.nn.Module, cfg: OptimConfig) -> torch.optim.AdamW:
    # Decay matrices only, not biases, norms or 1-D gains (nanoGPT's split).
    params = [p for p in model.parameters() if p.requires_grad]
    groups = [
        {"params": [p for p in params if p.dim() >= 2], "weight_decay": cfg.weight_decay},
        {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0},
    ]
    return torch.optim.AdamW(groups, lr=cfg.lr, betas=tuple(cfg.betas))


@dataclass
class LoopState:
    """What resuming needs besides weights, optimizer, scheduler and RNG (``last/loop_state.json``)."""

    step: int = 0
    epoch: int = 0
    position: int = 0  # batches of ``epoch`` this rank has trained on
    best_loss: float | None = None
    best_step: int | None = None
    best_metrics: dict[str, float] = field(default_factory=dict)
    logged: dict[str, Any] = field(default_factory=dict)  # the last training log line
    world_size: int = 1


def _save_last(out: Path, model, optimizer, scheduler, state: LoopState, accelerator: Accelerator) -> None:
    with staged_last(out, accelerator) as tmp:
        if accelerator.is_main_process:
            torch.save(accelerator.unwrap_model(model).state_dict(), tmp / "model.pt")
            torch.save(optimizer.state_dict(), tmp / "optimizer.pt")
            torch.save(scheduler.state_dict(), tmp / "scheduler.pt")
            atomic_write_text(tmp / "loop_state.json", json.dumps(asdict(state), indent=2) + "\n")


def _load_last(last: Path, model, optimizer, scheduler, accelerator: Accelerator) -> LoopState:
    state = LoopState(**json.loads((last / "loop_state.json").read_text()))
    accelerator.unwrap_model(model).load_state_dict(torch.load(last / "model.pt", map_location="cpu"))
    optimizer.load_state_dict(torch.load(last / "optimizer.pt", map_location="cpu", weights_only=False))
    scheduler.load_state_dict(torch.load(last / "scheduler.pt", weights_only=False))
    if not restore_rng(last, state.world_size, accelerator):
        logger.warning(
            "resuming a %d-process run on %d processes: the rest of this epoch is skipped and the "
            "run will not match an uninterrupted one", state.world_size, accelerator.num_processes
        )
        state.epoch, state.position = state.epoch + 1, 0
    state.world_size = accelerator.num_processes
    return state


def fit(
    model: torch.nn.Module,
    task: Task,
    cfg: OptimConfig,
    out: Path,
    seed: int,
    desc: str,
    extra: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Trains ``model`` for ``cfg.max_steps`` steps, resuming from ``out/last`` if an earlier
    run left one; returns the summary written to ``out/summary.json``, with the caller's
    ``extra`` facts (data sizes, vocabulary) in it: the file is what a resumed bench reads
    back, so it must hold everything the run returns."""
    if cfg.schedule not in SCHEDULES:
        raise ConfigError(f"optim.schedule: unknown schedule {cfg.schedule!r}; known: {sorted(SCHEDULES)}")
    # Some heads get no gradient in some configurations (the CTC head without CTC loss).
    accelerator = Accelerator(
        cpu=not torch.cuda.is_available(), kwargs_handlers=[DistributedDataParallelKwargs(find_unused_parameters=True)]
    )
    optimizer = optimizer_for(model, cfg)
    scheduler = get_scheduler(
        SCHEDULES[cfg.schedule], optimizer, num_warmup_steps=cfg.warmup_steps, num_training_steps=cfg.max_steps
    )
    model, optimizer = accelerator.prepare(model, optimizer)
    main = accelerator.is_main_process
    state = LoopState(world_size=accelerator.num_processes)
    last = existing_checkpoint(out / "last", marker="loop_state.json")
    if last:
        state = _load_last(last, model, optimizer, scheduler, accelerator)
        logger.info("%s: resuming from %s at step %d", desc, last, state.step)
    metrics = MetricsLog(out, state.step, main)
    started = time.perf_counter()

    def evaluate() -> None:
        unwrapped = accelerator.unwrap_model(model)
        # A fixed seed for the dev pass (pre-net dropout stays on at inference) that leaves
        # the training RNG streams untouched.
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            scores = task.evaluate(unwrapped)
        metrics.log({"step": state.step, **scores}, "dev")
        if state.best_loss is None or scores["loss"] < state.best_loss:
            state.best_loss, state.best_step, state.best_metrics = scores["loss"], state.step, scores
            if main:
                task.save_best(unwrapped)
        bar.write(f"{desc} step {state.step}: dev " + ", ".join(f"{k} {v:.4f}" for k, v in scores.items()))
        _save_last(out, model, optimizer, scheduler, state, accelerator)

    bar = tqdm(total=cfg.max_steps, initial=min(state.step, cfg.max_steps), desc=desc, unit="step", disable=not main)
    while state.step < cfg.max_steps:
        epoch_batches = task.epoch_batches(state.epoch)
        if not epoch_batches:
            raise ConfigError(f"{desc}: no training batches")
        mine = epoch_batches[accelerator.process_index :: accelerator.num_processes]
        for batch in mine[state.position :]:
            model.train()
            result = task.loss(model, batch, accelerator.device)
            accelerator.backward(result.total)
            if cfg.clip_norm > 0:
                accelerator.clip_grad_norm_(model.parameters(), cfg.clip_norm)
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
            state.step += 1
            state.position += 1
            bar.update(1)
            loss = result.total.item()
            bar.set_postfix(loss=f"{loss:.3f}")
            if state.step % cfg.log_every_steps == 0 or state.step == cfg.max_steps:
                state.logged = {"step": state.step, "epoch": state.epoch, "loss": loss, "lr": scheduler.get_last_lr()[0]}
                state.logged.update({k: float(v) for k, v in result.parts.items()})
                metrics.log(state.logged, "train")
            if state.step % cfg.eval_every_steps == 0 or state.step == cfg.max_steps:
                evaluate()
            if state.step == cfg.max_steps:
                break
        else:
            state.epoch, state.position = state.epoch + 1, 0
    bar.close()
    metrics.close()
    summary = {
        "out_dir": str(out),
        "steps": state.step,
        "epochs": state.epoch,
        "num_params": sum(p.numel() for p in accelerator.unwrap_model(model).parameters()),
        "best_dev_loss": state.best_loss,
        "best_step": state.best_step,
        "best_dev": state.best_metrics,
        "last_train": {k: v for k, v in state.logged.items() if k != "step"},
        "session_seconds": round(time.perf_counter() - started, 1),  # this run, not the ones it resumed
        **(extra or {}),
    }
    if main:
        atomic_write_text(out / "summary.json", json.dumps(summary, indent=2) + "\n")
    accelerator.wait_for_everyone()
    return summary


def epoch_rng(seed: int, epoch: int) -> random.Random:
    """The shuffling RNG of one epoch: the same on every rank and on every rerun."""
    return random.Random(f"{seed}/{epoch}")
