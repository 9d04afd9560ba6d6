"""Checkpoint directories, one format per kind of model, each carrying what loading needs.

A decoder::

    ckpt/
      config.json, generation_config.json, model.safetensors   AutoModelForCausalLM.from_pretrained(ckpt)
      unified vocabulary files                                  UnifiedVocab.load(ckpt)
      train_config.yaml                                         the recipe config that produced it

A prefix LM is a decoder checkpoint plus ``prefix.safetensors`` (encoder, bridge,
projector, pre-net, heads, post-net) and ``chars.json`` (the CTC characters); a CTC
pre-trained encoder is ``encoder.safetensors``, ``train_config.yaml`` and ``chars.json``.
Loaders read only the config sections a model's shape needs (``model``, ``encoder``,
``mel``), so this module depends on no training recipe.

Directories are published atomically: written under a temporary name, then swapped in by
rename, so a crash leaves the previous checkpoint (or none), never a half-written one.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

import torch
from safetensors.torch import load_file, save_file
from transformers import AutoConfig, AutoModelForCausalLM, PreTrainedModel

from ..audio.mel import MelConfig
from ..config import from_dict, load_yaml, save_config
from ..errors import ConfigError
from ..vocab import CharVocab, UnifiedVocab

if TYPE_CHECKING:  # .prefix imports fairseq2 (~2 s): only prefix-LM and encoder loaders pay for it
    from .prefix import PrefixEncoder, PrefixLM

TRAIN_CONFIG_FILE = "train_config.yaml"
WEIGHT_FILES = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin")
PREFIX_WEIGHTS = "prefix.safetensors"
ENCODER_WEIGHTS = "encoder.safetensors"


def write_checkpoint(directory: str | Path, model: PreTrainedModel, vocab: UnifiedVocab, cfg: Any) -> None:
    """Writes model, vocabulary and config into ``directory`` (not atomic; see save_checkpoint)."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(directory, safe_serialization=True)
    vocab.save(directory)
    save_config(cfg, directory / TRAIN_CONFIG_FILE)


def save_checkpoint(directory: str | Path, model: PreTrainedModel, vocab: UnifiedVocab, cfg: Any) -> Path:
    """Writes a decoder checkpoint directory atomically; returns its path."""
    return publish(directory, lambda tmp: write_checkpoint(tmp, model, vocab, cfg))


def publish(directory: str | Path, write: Callable[[Path], None]) -> Path:
    """Runs ``write`` on a fresh staging directory beside ``directory``, then swaps it in."""
    directory = Path(directory)
    directory.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{directory.name}.", suffix=".tmp", dir=directory.parent))
    try:
        write(tmp)
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


def read_train_config(directory: str | Path) -> dict[str, Any]:
    """The recipe config a checkpoint was trained with, as a mapping (``train_config.yaml``)."""
    return load_yaml(Path(directory) / TRAIN_CONFIG_FILE)


def _require(directory: Path, *files: str) -> None:
    if not directory.is_dir():
        raise ConfigError(f"{directory}: checkpoint directory not found")
    missing = [f for f in files if not (directory / f).is_file()]
    if missing:
        raise ConfigError(f"{directory}: not a complete checkpoint; missing {', '.join(missing)}")


def load_checkpoint(directory: str | Path) -> tuple[PreTrainedModel, UnifiedVocab, dict[str, Any]]:
    """Loads ``(model in eval mode, vocab, train config mapping)`` from a decoder checkpoint.

    Fails before loading any weights if a file is missing or if the vocabulary saved beside
    the model does not have as many tokens as the model has embedding rows (the two come
    from different runs).
    """
    directory = Path(directory)
    _require(directory, "config.json", TRAIN_CONFIG_FILE)
    if not any((directory / f).is_file() for f in WEIGHT_FILES):
        raise ConfigError(f"{directory}: not a complete checkpoint; missing {' or '.join(WEIGHT_FILES)}")
    cfg = read_train_config(directory)
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


def load_decoder_weights(directory: str | Path, model: PreTrainedModel) -> None:
    """Copies the weights of the decoder checkpoint ``directory`` into ``model`` (same shape)."""
    model.load_state_dict(AutoModelForCausalLM.from_pretrained(directory).state_dict())


# ---- prefix LM and CTC encoder ----------------------------------------------------------


def _tensors(module: torch.nn.Module, skip: str | None = None) -> dict[str, torch.Tensor]:
    return {k: v.detach().contiguous() for k, v in module.state_dict().items() if not (skip and k.startswith(skip))}


def write_prefix_checkpoint(directory: Path, model: PrefixLM, vocab: UnifiedVocab, chars: CharVocab, cfg: Any) -> None:
    write_checkpoint(directory, model.decoder, vocab, cfg)
    save_file(_tensors(model, skip="decoder."), str(directory / PREFIX_WEIGHTS))
    chars.save(directory)


def is_prefix_checkpoint(directory: str | Path) -> bool:
    """Whether ``directory`` is a prefix-LM checkpoint (a decoder checkpoint has no prefix weights)."""
    return (Path(directory) / PREFIX_WEIGHTS).is_file()


def load_prefix_checkpoint(directory: str | Path) -> tuple[PrefixLM, UnifiedVocab, CharVocab, dict[str, Any]]:
    """``(model in eval mode, vocab, chars, train config mapping)`` of a prefix-LM checkpoint."""
    directory = Path(directory)
    if (directory / "config.json").is_file() and not is_prefix_checkpoint(directory):
        raise ConfigError(
            f"{directory}: a discrete-token decoder checkpoint (no {PREFIX_WEIGHTS}), not a prefix-LM one; "
            "train one with `unified-lm train prefix`"
        )
    _require(directory, "config.json", TRAIN_CONFIG_FILE, PREFIX_WEIGHTS)
    from .prefix import PrefixLM, PrefixModelConfig

    cfg = read_train_config(directory)
    model_cfg = from_dict(PrefixModelConfig, cfg.get("model", {}), f"{directory / TRAIN_CONFIG_FILE}: model")
    model_cfg.encoder_init = None  # the encoder weights come from this checkpoint, not from where training started
    vocab, chars = UnifiedVocab.load(directory), CharVocab.load(directory)
    model = PrefixLM(model_cfg, AutoModelForCausalLM.from_pretrained(directory), len(chars))
    _load_prefix_weights(directory, model)
    return model.eval(), vocab, chars, cfg


def load_prefix_weights(directory: str | Path, model: PrefixLM) -> None:
    """Copies a prefix-LM checkpoint's weights, decoder included, into ``model``."""
    load_decoder_weights(directory, model.decoder)
    _load_prefix_weights(Path(directory), model)


def _load_prefix_weights(directory: Path, model: PrefixLM) -> None:
    missing, unexpected = model.load_state_dict(load_file(str(directory / PREFIX_WEIGHTS)), strict=False)
    missing = [k for k in missing if not k.startswith("decoder.")]
    if missing or unexpected:
        raise ConfigError(f"{directory / PREFIX_WEIGHTS}: does not match the model (missing {missing}, unexpected {unexpected})")


def write_encoder_checkpoint(directory: Path, encoder: PrefixEncoder, chars: CharVocab, cfg: Any) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    save_file(_tensors(encoder), str(directory / ENCODER_WEIGHTS))
    save_config(cfg, directory / TRAIN_CONFIG_FILE)
    chars.save(directory)


def load_encoder_checkpoint(directory: str | Path) -> tuple[PrefixEncoder, CharVocab, MelConfig]:
    """``(encoder in eval mode, its CTC characters, the mel front end it hears)``."""
    directory = Path(directory)
    from .prefix import EncoderConfig, PrefixEncoder

    _require(directory, ENCODER_WEIGHTS, TRAIN_CONFIG_FILE)
    cfg = read_train_config(directory)
    where = directory / TRAIN_CONFIG_FILE
    encoder_cfg = from_dict(EncoderConfig, cfg.get("encoder", {}), f"{where}: encoder")
    mel = from_dict(MelConfig, cfg.get("mel", {}), f"{where}: mel")
    chars = CharVocab.load(directory)
    encoder = PrefixEncoder(encoder_cfg, len(chars))
    encoder.load_state_dict(load_file(str(directory / ENCODER_WEIGHTS)))
    return encoder.eval(), chars, mel
