"""The small training loop shared by the continuous path's three trainings (prefix LM,
CTC encoder, text LM): AdamW with warm-up + decay, accelerate for devices and processes,
periodic dev evaluation that keeps the best model, ``metrics.jsonl`` + TensorBoard.

Each caller supplies what differs: how a batch becomes a loss, the batches of an epoch,
how to score the dev set (lower ``loss`` is better) and how to save the best model.
"""

from __future__ import annotations

import json
import logging
import random
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import torch
from accelerate import Accelerator, DistributedDataParallelKwargs
from accelerate.utils import set_seed
from tqdm import tqdm
from transformers import get_scheduler

from ..errors import ConfigError
from ..io import atomic_write_text
from ..losses import LossOutput
from ..train import MetricsLog
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


def fit(
    model: torch.nn.Module,
    task: Task,
    cfg: OptimConfig,
    out: Path,
    seed: int,
    desc: str,
    extra: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Trains ``model`` for ``cfg.max_steps`` steps; returns the summary written to
    ``out/summary.json``, with the caller's ``extra`` facts (data sizes, vocabulary) in it:
    the file is what a resumed bench reads back, so it must hold everything the run returns."""
    if cfg.schedule not in SCHEDULES:
        raise ConfigError(f"optim.schedule: unknown schedule {cfg.schedule!r}; known: {sorted(SCHEDULES)}")
    # Some heads get no gradient in some configurations (the CTC head without CTC loss).
    accelerator = Accelerator(
        cpu=not torch.cuda.is_available(), kwargs_handlers=[DistributedDataParallelKwargs(find_unused_parameters=True)]
    )
    set_seed(seed)
    optimizer = optimizer_for(model, cfg)
    scheduler = get_scheduler(
        SCHEDULES[cfg.schedule], optimizer, num_warmup_steps=cfg.warmup_steps, num_training_steps=cfg.max_steps
    )
    model, optimizer = accelerator.prepare(model, optimizer)
    main = accelerator.is_main_process
    metrics = MetricsLog(out, 0, main)
    best: dict[str, Any] = {"loss": None, "step": None, "metrics": {}}
    step, epoch, logged = 0, 0, {}
    started = time.perf_counter()

    def evaluate() -> None:
        unwrapped = accelerator.unwrap_model(model)
        # A fixed seed for the dev pass (pre-net dropout stays on at inference) that leaves
        # the training RNG streams untouched.
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            scores = task.evaluate(unwrapped)
        metrics.log({"step": step, **scores}, "dev")
        if best["loss"] is None or scores["loss"] < best["loss"]:
            best.update(loss=scores["loss"], step=step, metrics=scores)
            if main:
                task.save_best(unwrapped)
        bar.write(f"{desc} step {step}: dev " + ", ".join(f"{k} {v:.4f}" for k, v in scores.items()))

    bar = tqdm(total=cfg.max_steps, desc=desc, unit="step", disable=not main)
    while step < cfg.max_steps:
        epoch_batches = task.epoch_batches(epoch)
        if not epoch_batches:
            raise ConfigError(f"{desc}: no training batches")
        for batch in epoch_batches[accelerator.process_index :: accelerator.num_processes]:
            model.train()
            result = task.loss(model, batch, accelerator.device)
            accelerator.backward(result.total)
            if cfg.clip_norm > 0:
                accelerator.clip_grad_norm_(model.parameters(), cfg.clip_norm)
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
            step += 1
            bar.update(1)
            loss = result.total.item()
            bar.set_postfix(loss=f"{loss:.3f}")
            if step % cfg.log_every_steps == 0 or step == cfg.max_steps:
                logged = {"step": step, "epoch": epoch, "loss": loss, "lr": scheduler.get_last_lr()[0]}
                logged.update({k: float(v) for k, v in result.parts.items()})
                metrics.log(logged, "train")
            if step % cfg.eval_every_steps == 0 or step == cfg.max_steps:
                evaluate()
            if step == cfg.max_steps:
                break
        epoch += 1
    bar.close()
    metrics.close()
    summary = {
        "out_dir": str(out),
        "steps": step,
        "epochs": epoch,
        "num_params": sum(p.numel() for p in accelerator.unwrap_model(model).parameters()),
        "best_dev_loss": best["loss"],
        "best_step": best["step"],
        "best_dev": best["metrics"],
        "last_train": {k: v for k, v in logged.items() if k != "step"},
        "seconds": round(time.perf_counter() - started, 1),
        **(extra or {}),
    }
    if main:
        atomic_write_text(out / "summary.json", json.dumps(summary, indent=2) + "\n")
    accelerator.wait_for_everyone()
    return summary


def epoch_rng(seed: int, epoch: int) -> random.Random:
    """The shuffling RNG of one epoch: the same on every rank and on every rerun."""
    return random.Random(f"{seed}/{epoch}")
