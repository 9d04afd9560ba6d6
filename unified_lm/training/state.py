"""What a run keeps in ``out_dir/last`` to resume exactly, and the rules for resuming.

``last/`` holds the recipe's model checkpoint (loadable like ``best/``), ``optimizer.pt``,
``scheduler.pt``, ``scaler.pt`` (fp16), one ``rng_state_<rank>.pt`` per process and
``trainer_state.json``. It is replaced in one step, so a kill at any moment leaves the
previous ``last`` or the new one, never half of one.
"""

from __future__ import annotations

import contextlib
import json
import logging
import random
import shutil
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import torch
from accelerate import Accelerator

from ..config import load_yaml, to_dict
from ..errors import ConfigError
from ..io import atomic_write_text
from ..models import publish_dir

logger = logging.getLogger("unified_lm.training")

STATE_FILE = "trainer_state.json"

# Keys a resumed run may change (with a warning): what is logged, evaluated and saved, how
# fast steps run, and where files are, since one path is spelled differently from another
# directory (the vocabulary's tokenizer hash still guards the units). Any other change is refused.
RESUMABLE_CHANGES = (
    "eval.", "checkpoint.", "speed.", "log_every_steps", "out_dir",
    "data.num_workers", "data.train", "data.dev", "data.tokenizer", "data.text_tokenizer", "data.text_files",
    "data.vocab", "model.init_from", "model.encoder_init", "model.decoder.init_from",
)


@dataclass
class TrainState:
    """Everything besides weights, optimizer and RNG that resuming needs (``last/trainer_state.json``)."""

    step: int = 0
    epoch: int = 0
    position: int = 0  # batches of ``epoch`` already consumed on each rank
    best: float | None = None  # the best dev score so far (lower is better)
    best_step: int | None = None
    best_scores: dict[str, float] = field(default_factory=dict)
    evaluated_step: int | None = None  # the last step evaluated (or that would have been, without a dev set)
    logged: dict[str, Any] = field(default_factory=dict)  # the last training log line
    world_size: int = 1


def check_same_config(cfg: Any, path: Path) -> None:
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
    process to fill; on exit it replaces ``out/last`` in one step."""
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


def bare(accelerator: Accelerator, model: torch.nn.Module) -> torch.nn.Module:
    """The model itself: without DDP's wrapper and without torch.compile's (whose state_dict
    keys would carry an ``_orig_mod.`` prefix into every checkpoint)."""
    return accelerator.unwrap_model(model, keep_torch_compile=False)


def save_last(out: Path, save_model, model, optimizer, scheduler, state: TrainState, accelerator: Accelerator) -> None:
    with staged_last(out, accelerator) as tmp:
        if accelerator.is_main_process:
            save_model(tmp, bare(accelerator, model))
            torch.save(optimizer.state_dict(), tmp / "optimizer.pt")
            torch.save(scheduler.state_dict(), tmp / "scheduler.pt")
            if accelerator.scaler is not None:  # fp16 loss scale
                torch.save(accelerator.scaler.state_dict(), tmp / "scaler.pt")
            atomic_write_text(tmp / STATE_FILE, json.dumps(asdict(state), indent=2) + "\n")


def load_last(last: Path, load_model, model, optimizer, scheduler, accelerator: Accelerator) -> TrainState:
    """Restores weights, optimizer, scheduler, loss scale and this rank's RNG streams."""
    state = TrainState(**json.loads((last / STATE_FILE).read_text()))
    load_model(last, bare(accelerator, model))
    optimizer.load_state_dict(torch.load(last / "optimizer.pt", map_location="cpu", weights_only=False))
    scheduler.load_state_dict(torch.load(last / "scheduler.pt", weights_only=False))
    if accelerator.scaler is not None and (last / "scaler.pt").is_file():
        accelerator.scaler.load_state_dict(torch.load(last / "scaler.pt", weights_only=False))
    rng = last / f"rng_state_{accelerator.process_index}.pt"
    if state.world_size == accelerator.num_processes and rng.is_file():
        _set_rng_state(torch.load(rng, weights_only=False))
    else:
        logger.warning(
            "resuming a %d-process run on %d processes: the epoch restarts and RNG streams change, so the "
            "run continues but will not match an uninterrupted one", state.world_size, accelerator.num_processes
        )
        state.position = 0
    state.world_size = accelerator.num_processes
    return state
