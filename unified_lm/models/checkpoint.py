"""Checkpoint directories: a Hugging Face model dir that also carries its vocabulary and config.

    ckpt/
      config.json, generation_config.json, model.safetensors   AutoModelForCausalLM.from_pretrained(ckpt)
      unified vocabulary files                                  UnifiedVocab.load(ckpt)
      train_config.yaml                                         the TrainConfig that produced it

Directories are published atomically: written under a temporary name, then swapped in by
rename, so a crash leaves the previous checkpoint (or none), never a half-written one.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

from transformers import AutoConfig, AutoModelForCausalLM, PreTrainedModel

from ..config import load_config, save_config
from ..errors import ConfigError

if TYPE_CHECKING:
    from ..train import TrainConfig
    from ..vocab import UnifiedVocab

TRAIN_CONFIG_FILE = "train_config.yaml"
WEIGHT_FILES = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin")


def write_checkpoint(directory: str | Path, model: PreTrainedModel, vocab: "UnifiedVocab", cfg: Any) -> None:
    """Writes model, vocabulary and config into ``directory`` (not atomic; see save_checkpoint)."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(directory, safe_serialization=True)
    vocab.save(directory)
    save_config(cfg, directory / TRAIN_CONFIG_FILE)


def save_checkpoint(directory: str | Path, model: PreTrainedModel, vocab: "UnifiedVocab", cfg: Any) -> Path:
    """Writes a checkpoint directory atomically; returns its path."""
    directory = Path(directory)
    directory.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{directory.name}.", suffix=".tmp", dir=directory.parent))
    try:
        write_checkpoint(tmp, model, vocab, cfg)
        publish_dir(tmp, directory)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return directory


def publish_dir(tmp: Path, final: Path) -> None:
    """Moves the finished directory ``tmp`` to ``final``, replacing any previous one.

    A directory cannot be replaced by one rename, so the old one is first moved aside to
    ``<final>.old``; a crash between the two renames leaves it there, and
    ``existing_checkpoint`` finds it.
    """
    old = final.with_name(final.name + ".old")
    shutil.rmtree(old, ignore_errors=True)
    if final.exists():
        final.rename(old)
    tmp.rename(final)
    shutil.rmtree(old, ignore_errors=True)


def existing_checkpoint(final: str | Path, marker: str = "config.json") -> Path | None:
    """``final`` if it holds ``marker``, else the copy a crash in ``publish_dir`` left aside, else None."""
    final = Path(final)
    for candidate in (final, final.with_name(final.name + ".old")):
        if (candidate / marker).is_file():
            return candidate
    return None


def load_checkpoint(directory: str | Path) -> tuple[PreTrainedModel, "UnifiedVocab", "TrainConfig"]:
    """Loads ``(model, vocab, train config)`` from a checkpoint directory, model in eval mode.

    Fails before loading any weights if a file is missing or if the vocabulary saved beside
    the model does not have as many tokens as the model has embedding rows (the two come
    from different runs).
    """
    from ..train import TrainConfig  # train imports models; import lazily to avoid a cycle
    from ..vocab import UnifiedVocab

    directory = Path(directory)
    if not directory.is_dir():
        raise ConfigError(f"{directory}: checkpoint directory not found")
    missing = [f for f in ("config.json", TRAIN_CONFIG_FILE) if not (directory / f).is_file()]
    if not any((directory / f).is_file() for f in WEIGHT_FILES):
        missing.append(" or ".join(WEIGHT_FILES))
    if missing:
        raise ConfigError(f"{directory}: not a complete checkpoint; missing {', '.join(missing)}")
    cfg = load_config(TrainConfig, directory / TRAIN_CONFIG_FILE)
    vocab = UnifiedVocab.load(directory)
    rows = AutoConfig.from_pretrained(directory).vocab_size
    if rows != len(vocab):
        raise ConfigError(
            f"{directory}: the model has {rows} embedding rows but the vocabulary saved with it has "
            f"{len(vocab)} tokens; the model and vocabulary come from different runs"
        )
    model = AutoModelForCausalLM.from_pretrained(directory)
    model.eval()
    return model, vocab, cfg
