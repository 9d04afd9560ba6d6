"""The one training loop: every recipe (``unified_lm.recipes``) runs through ``fit``.

A recipe turns its config into a ``Task`` (model, batches, loss, dev evaluation and
checkpoint format); ``fit`` does the rest the same way for all of them: AdamW with
warm-up and decay, gradient accumulation, clipping, mixed precision, data-parallel
processes through accelerate, logging with throughput, dev evaluation that keeps the
best model, and ``out_dir/last`` from which rerunning the same command resumes exactly.

A run writes into ``out_dir``: ``config.yaml``, ``metrics.jsonl``, ``tb/``, ``last/``,
``best/`` (the lowest dev score; the latest model without a dev set) and ``summary.json``.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, NamedTuple, Sequence

import torch
from accelerate import Accelerator, DistributedDataParallelKwargs
from accelerate.utils import DistributedType, is_compiled_module, set_seed
from torch import nn
from tqdm import tqdm
from transformers import get_scheduler

from ..config import from_dict, save_config, to_dict
from ..errors import ConfigError, UnifiedLMError
from ..io import atomic_write_text
from ..losses import LossOutput
from ..models import count_parameters, existing_checkpoint, publish
from .metrics import MetricsLog
from .sections import OptimConfig, Phase, TrainingConfig
from .state import STATE_FILE, TrainState, bare, check_same_config, load_last, save_last

logger = logging.getLogger("unified_lm.training")

SCHEDULES = {"linear": "linear", "cosine": "cosine", "constant": "constant_with_warmup"}


class Micro(NamedTuple):
    """Where a loss is computed: what a recipe needs to seed per-step randomness."""

    device: torch.device
    rank: int
    step: int  # the optimizer step being taken (0-based)
    index: int  # the micro-batch within it


@dataclass
class Task:
    """What a recipe hands the loop."""

    model: nn.Module
    epoch_batches: Callable[[int, int], Iterable[Any]]  # (epoch, skip): this rank's batches of the epoch, after `skip`
    batches_per_epoch: int  # on each rank
    loss: Callable[[nn.Module, Any, Micro], LossOutput]
    save: Callable[[Path, nn.Module], None]  # writes a loadable checkpoint into a new directory (best/, last/)
    load: Callable[[Path, nn.Module], None]  # reads such a checkpoint's weights back into the model
    evaluate: Callable[[nn.Module], dict[str, float]] | None = None  # dev scores; None: best/ is the latest model
    metric: str = "loss"  # the score of `evaluate` that selects best/ (lower is better)
    size: Callable[[Any], int] = lambda batch: 0  # what throughput counts in a batch ...
    unit: str = "tokens"  # ... and its name
    facts: dict[str, Any] = field(default_factory=dict)  # for summary.json (data sizes, vocabulary)


@dataclass(frozen=True)
class TrainingRecipe:
    """A training stage: its config class and the function that builds its ``Task``."""

    name: str
    config: type[TrainingConfig]
    setup: Callable[[Any, Accelerator, bool], Task]  # (config, accelerator, resuming) -> Task
    help: str
    find_unused_parameters: bool = False  # for DDP: some heads get no gradient in some configurations
    # Fills in settings that come from input files (a pre-trained part's shape) before the
    # config is compared with a resumed run's or saved.
    resolve: Callable[[Any], None] | None = None


def adamw(model: nn.Module, cfg: OptimConfig, lr: float | None = None) -> torch.optim.AdamW:
    """AdamW over the parameters that require gradients (the trained phase's)."""
    # nanoGPT's split: decay matrices, not biases, norms or 1-D gains.
    params = [p for p in model.parameters() if p.requires_grad]
    groups = [
        {"params": [p for p in params if p.dim() >= 2], "weight_decay": cfg.weight_decay},
        {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0},
    ]
    return torch.optim.AdamW(groups, lr=cfg.lr if lr is None else lr, betas=tuple(cfg.betas))


def train_only(model: nn.Module, parts: Sequence[str], frozen: Sequence[str] = ()) -> int:
    """Freezes every parameter outside ``parts`` or inside ``frozen`` (child-module names
    or dotted name prefixes; "all": everything) and returns how many stay trainable."""
    def within(name: str, group: Sequence[str]) -> bool:
        return "all" in group or any(name == p or name.startswith(p + ".") for p in group)

    # A module without parameters (the ctc bridge) is a valid part that trains nothing.
    names = [name for name, _ in model.named_parameters()] + [name for name, _ in model.named_modules()]
    unknown = [p for p in (*parts, *frozen) if not any(within(n, [p]) for n in names)]
    if unknown:
        children = ", ".join(name for name, _ in model.named_children())
        raise ConfigError(f"phases: {unknown} name no part of the model; its parts: {children}")
    trained = 0
    for name, param in model.named_parameters():
        param.requires_grad_(within(name, parts) and not within(name, frozen))
        trained += param.numel() if param.requires_grad else 0
    return trained


def enable_gradient_checkpointing(model: nn.Module) -> list[str]:
    """Turns on activation recomputation in every Hugging Face model inside ``model`` (the
    outermost ones); returns their names ("" for the model itself)."""
    from transformers import PreTrainedModel

    found: list[str] = []
    for name, module in model.named_modules():
        if isinstance(module, PreTrainedModel) and not any(name.startswith(f + ".") or not f for f in found):
            if not module.supports_gradient_checkpointing:
                raise ConfigError(f"speed.gradient_checkpointing: {type(module).__name__} does not support it")
            # Non-reentrant: works with frozen inputs (phases) and keeps dropout's RNG.
            module.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
            found.append(name)
    if not found:
        raise ConfigError(f"speed.gradient_checkpointing: {type(model).__name__} holds no Hugging Face model to apply it to")
    logger.info("gradient checkpointing in %s", ", ".join(n or type(model).__name__ for n in found))
    return found


def optimizer_step(optimizer, params, clip_norm: float, accelerator: Accelerator | None = None) -> None:
    """The one place an optimizer steps: clip the gradients (``clip_norm`` > 0), step, clear
    them. The loop, the speed bench and the CTC probe all update weights through it."""
    if clip_norm > 0:
        (accelerator.clip_grad_norm_ if accelerator is not None else nn.utils.clip_grad_norm_)(params, clip_norm)
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)


def resolve_precision(requested: str | None) -> str:
    """The recipe's ``precision`` if set, else the launcher's (``accelerate launch
    --mixed_precision``, or its config file), else "no"; where the hardware runs it."""
    launcher = os.environ.get("ACCELERATE_MIXED_PRECISION")  # what accelerate launch passes on
    if requested is None:
        requested = launcher or "no"
    elif launcher and launcher != requested:
        logger.warning("precision=%s in the recipe overrides the launcher's --mixed_precision %s", requested, launcher)
    if requested == "no":
        return "no"
    if not torch.cuda.is_available():
        logger.warning("precision=%s needs a CUDA device; training in fp32", requested)
        return "no"
    if requested == "bf16" and not torch.cuda.is_bf16_supported():
        logger.warning("this GPU has no bf16 support; training in fp32 (try precision=fp16)")
        return "no"
    return requested


def resolve_compile(requested: str | None) -> str | None:
    """The torch.compile backend: the recipe's ``speed.compile`` if set, else the launcher's
    (``accelerate launch --dynamo_backend``), else none."""
    if requested is not None:
        return requested
    launcher = os.environ.get("ACCELERATE_DYNAMO_BACKEND", "no").lower()
    return None if launcher == "no" else launcher


def fit(recipe: TrainingRecipe, cfg: TrainingConfig) -> dict[str, Any]:
    """Trains (or resumes) the run ``cfg.out_dir``; returns the summary also written to
    ``out_dir/summary.json``."""
    accelerator = Accelerator(
        gradient_accumulation_steps=cfg.optim.grad_accum,
        mixed_precision=resolve_precision(cfg.precision),
        cpu=not torch.cuda.is_available(),
        kwargs_handlers=[DistributedDataParallelKwargs(find_unused_parameters=recipe.find_unused_parameters)],
    )
    if accelerator.distributed_type in (DistributedType.FSDP, DistributedType.DEEPSPEED):
        raise ConfigError(
            f"{accelerator.distributed_type.value} is not supported: the loop saves whole models and the "
            "largest preset (GPT-2 medium) fits one GPU; launch with data parallelism (multi_gpu) instead"
        )
    out, main = Path(cfg.out_dir), accelerator.is_main_process
    if recipe.resolve is not None:
        recipe.resolve(cfg)
    cfg = from_dict(type(cfg), to_dict(cfg))  # checked again: code may have changed it since it was built
    last = existing_checkpoint(out / "last", marker=STATE_FILE)
    if last:
        check_same_config(cfg, out / "config.yaml")
    task = _start(recipe, cfg, accelerator, out, resuming=last is not None)
    state = TrainState(world_size=accelerator.num_processes)
    # A checkpoint holds the optimizer of the phase its step starts (see the switch below).
    start_step = json.loads((last / STATE_FILE).read_text())["step"] if last else 0
    model, optimizer, scheduler = _enter_phase(task.model, cfg, cfg.phase_at(start_step), accelerator)
    if last:
        state = load_last(last, task.load, model, optimizer, scheduler, accelerator)
        if state.step >= cfg.optim.max_steps and state.evaluated_step == state.step and (out / "summary.json").is_file():
            logger.info("%s already finished at step %d; raise optim.max_steps to train on", out, state.step)
            accelerator.end_training()
            return json.loads((out / "summary.json").read_text())
        logger.info("resuming from %s at step %d", last, state.step)
    metrics = MetricsLog(out, state.step, main)

    def save() -> None:
        save_last(out, task.save, model, optimizer, scheduler, state, accelerator)

    batches = _stream(task, state)
    bar = tqdm(total=cfg.optim.max_steps, initial=state.step, desc=recipe.name, unit="step", disable=not main)
    started = tick = time.perf_counter()
    size_since = session_size = 0
    while state.step < cfg.optim.max_steps:
        lr = scheduler.get_last_lr()[0]
        result, size = _train_step(model, batches, optimizer, scheduler, task, cfg, state, accelerator)
        state.step += 1
        if cfg.phase_at(state.step) != cfg.phase_at(state.step - 1):
            # Switch before anything is saved, so that last/ at this step holds the new
            # phase's fresh optimizer and scheduler, and a resume here starts the phase.
            model, optimizer, scheduler = _enter_phase(model, cfg, cfg.phase_at(state.step), accelerator)
        size_since, session_size = size_since + size, session_size + size
        bar.update(1)
        bar.set_postfix(loss=f"{result['loss']:.3f}", lr=f"{lr:.2e}")
        if state.step % cfg.log_every_steps == 0 or state.step == cfg.optim.max_steps:
            now = time.perf_counter()
            phase = {"phase": cfg.phase_at(state.step - 1).index + 1} if cfg.phases else {}
            state.logged = {"step": state.step, "epoch": state.epoch, **phase, **result, "lr": lr,
                            f"{task.unit}_per_s": size_since / (now - tick)}
            metrics.log(state.logged, "train")
            tick, size_since = now, 0
        if state.step % cfg.eval.every_steps == 0:
            _evaluate(task, model, cfg, state, metrics, bar, accelerator, out)
            save()
        elif state.step % cfg.checkpoint.every_steps == 0:
            save()
    bar.close()
    if state.evaluated_step != state.step:
        _evaluate(task, model, cfg, state, metrics, bar, accelerator, out)
        save()
    metrics.close()
    summary = _summary(task, state, accelerator, out, time.perf_counter() - started, session_size)
    if main:
        atomic_write_text(out / "summary.json", json.dumps(summary, indent=2) + "\n")
    accelerator.wait_for_everyone()
    accelerator.end_training()
    return summary


def _enter_phase(model: nn.Module, cfg: TrainingConfig, phase: Phase, accelerator: Accelerator):
    """Freezes what ``phase`` does not train; returns the (prepared) model, a new AdamW over
    the trained parameters only, and a scheduler that warms up and decays over the phase."""
    module = bare(accelerator, model)
    trained = train_only(module, phase.train, phase.freeze)
    if cfg.phases:
        logger.info("phase %d of %d, steps %d-%d: training %s%s (%s of %s parameters) at lr %.2e", phase.index + 1,
                    len(cfg.phases), phase.start + 1, phase.end, ", ".join(phase.train),
                    f" but {', '.join(phase.freeze)}" if phase.freeze else "", f"{trained:,}",
                    f"{count_parameters(module):,}", phase.lr)
    optimizer = adamw(module, cfg.optim, phase.lr)
    length = phase.end - phase.start
    scheduler = get_scheduler(
        SCHEDULES[cfg.optim.schedule], optimizer,
        num_warmup_steps=min(cfg.optim.warmup_steps, length), num_training_steps=length,
    )
    # DDP wraps only the parameters that require gradients: drop the previous phase's
    # wrapper and optimizer and prepare again. The scheduler is not prepared: accelerate
    # would step it once per process per step.
    accelerator.free_memory()
    model, optimizer = accelerator.prepare(module, optimizer)
    # Compiled here rather than by accelerate, whose backend is fixed for the whole process
    # by the first Accelerator (a grid trains several stages in one process).
    backend = resolve_compile(cfg.speed.compile)
    if backend is not None and not is_compiled_module(model):
        model = torch.compile(model, backend=backend)
    return model, optimizer, scheduler


def _summary(task: Task, state: TrainState, accelerator: Accelerator, out: Path, seconds: float, size: int) -> dict[str, Any]:
    return {
        "out_dir": str(out),
        "steps": state.step,
        "epochs": state.epoch + state.position / max(task.batches_per_epoch, 1),
        "num_params": count_parameters(bare(accelerator, task.model)),
        "world_size": accelerator.num_processes,
        f"best_dev_{task.metric}": state.best,
        "best_step": state.best_step,
        "best_dev": state.best_scores,
        "last_train": {k: v for k, v in state.logged.items() if k != "step"},
        "session_seconds": round(seconds, 1),  # this run, not the ones it resumed
        f"session_{task.unit}_per_s": size / seconds if seconds > 0 else None,
        **task.facts,
    }


def _start(recipe: TrainingRecipe, cfg: TrainingConfig, accelerator: Accelerator, out: Path, resuming: bool) -> Task:
    """Seeds, then builds the task; a fresh start that fails removes what it wrote, so
    nothing is left that a later start could pick up."""
    main = accelerator.is_main_process
    before = set(out.iterdir()) if out.is_dir() else None
    if main:
        out.mkdir(parents=True, exist_ok=True)
    set_seed(cfg.seed)
    try:
        task = recipe.setup(cfg, accelerator, resuming)
        for phase in cfg.resolved_phases():  # every phase names parts of this model
            train_only(task.model, phase.train, phase.freeze)
        if cfg.speed.gradient_checkpointing:
            enable_gradient_checkpointing(task.model)
    except UnifiedLMError:
        if main and not resuming:
            for path in set(out.iterdir()) - (before or set()):
                shutil.rmtree(path) if path.is_dir() else path.unlink()
            if before is None:
                out.rmdir()
        raise
    if main and not resuming:
        save_config(cfg, out / "config.yaml")
    return task


def _stream(task: Task, state: TrainState) -> Iterator[Any]:
    """Endless batches from (state.epoch, state.position) on, keeping the two up to date."""
    while True:
        for batch in task.epoch_batches(state.epoch, state.position):
            state.position += 1
            yield batch
        if state.position == 0:
            raise ConfigError("no training batches: the training data is empty")
        state.epoch, state.position = state.epoch + 1, 0


def _train_step(model, batches, optimizer, scheduler, task: Task, cfg: TrainingConfig, state: TrainState, accelerator) -> tuple[dict, int]:
    """One optimizer step over ``grad_accum`` micro-batches; returns the rank-averaged
    losses and the size (tokens, frames) all ranks trained on."""
    model.train()
    sums: dict[str, float] = {}
    size = 0
    for index in range(cfg.optim.grad_accum):
        batch = next(batches)
        with accelerator.accumulate(model):
            out = task.loss(model, batch, Micro(accelerator.device, accelerator.process_index, state.step, index))
            accelerator.backward(out.total)
            # Between accumulation boundaries the prepared optimizer skips its step; clip only at one.
            clip = cfg.optim.clip_norm if accelerator.sync_gradients else 0.0
            optimizer_step(optimizer, model.parameters(), clip, accelerator)
        for name, value in {"loss": out.total.detach(), **out.parts}.items():
            sums[name] = sums.get(name, 0.0) + float(value) / cfg.optim.grad_accum
        size += task.size(batch)
    scheduler.step()
    names = sorted(sums)
    means = accelerator.reduce(torch.tensor([sums[n] for n in names], device=accelerator.device), "mean")
    total = accelerator.reduce(torch.tensor(size, device=accelerator.device), "sum")
    return dict(zip(names, means.tolist())), int(total)


def _evaluate(task: Task, model, cfg: TrainingConfig, state: TrainState, metrics: MetricsLog, bar, accelerator, out: Path) -> None:
    """Scores the dev set and publishes ``best/`` when the score improved."""
    state.evaluated_step = state.step
    unwrapped = bare(accelerator, model)
    improved = True  # without a dev set, best/ is the latest model
    if task.evaluate is not None:
        # A fixed seed for the dev pass (the prefix LM's pre-net dropout stays on at
        # inference) that leaves the training RNG streams as they were.
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(cfg.seed)
            scores = {f"dev_{k}": v for k, v in task.evaluate(unwrapped).items()}
        metrics.log({"step": state.step, **scores}, "dev")
        score = scores[f"dev_{task.metric}"]
        improved = state.best is None or score < state.best
        if improved:
            state.best, state.best_step, state.best_scores = score, state.step, scores
        if accelerator.is_main_process:
            bar.write(f"step {state.step}: " + ", ".join(f"{k} {v:.4g}" for k, v in scores.items())
                      + f" (best dev_{task.metric} {state.best:.4g} at step {state.best_step})")
    if improved and accelerator.is_main_process:
        publish(out / "best", lambda tmp: task.save(tmp, unwrapped))
