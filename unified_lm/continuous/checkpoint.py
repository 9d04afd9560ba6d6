"""Checkpoint directories of the continuous path.

A prefix-LM checkpoint is a decoder checkpoint (``unified_lm.models.checkpoint``: loadable
with ``AutoModelForCausalLM``, vocabulary beside it) plus the rest of the model::

    ckpt/
      config.json, model.safetensors, ...   the decoder
      unified_vocab.json, text_tokenizer.json
      train_config.yaml                     the PrefixTrainConfig (mel front end, model shape)
      prefix.safetensors                    encoder, bridge, projector, pre-net, heads, post-net
      chars.json                            the CTC characters

A CTC pre-trained encoder directory holds ``encoder.safetensors``, ``train_config.yaml``
(the CTCPretrainConfig) and ``chars.json``. Both are published atomically.
"""

from __future__ import annotations

import logging
import shutil
import tempfile
from pathlib import Path
from typing import Callable

from safetensors.torch import load_file, save_file
from transformers import AutoModelForCausalLM

from ..config import load_config, save_config
from ..errors import ConfigError
from ..models.checkpoint import TRAIN_CONFIG_FILE, publish_dir, write_checkpoint
from ..models.prefix import PrefixEncoder, PrefixLM
from ..vocab import UnifiedVocab
from .config import CTCPretrainConfig, PrefixTrainConfig
from .data import CharVocab

logger = logging.getLogger("unified_lm.continuous")

PREFIX_WEIGHTS = "prefix.safetensors"
ENCODER_WEIGHTS = "encoder.safetensors"


def _publish(directory: Path, write: Callable[[Path], None]) -> Path:
    directory.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{directory.name}.", suffix=".tmp", dir=directory.parent))
    try:
        write(tmp)
        publish_dir(tmp, directory)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return directory


def _require(directory: Path, *files: str) -> None:
    missing = [f for f in files if not (directory / f).is_file()]
    if missing:
        raise ConfigError(f"{directory}: not a complete checkpoint; missing {', '.join(missing)}")


def save_prefix_checkpoint(
    directory: str | Path, model: PrefixLM, vocab: UnifiedVocab, chars: CharVocab, cfg: PrefixTrainConfig
) -> Path:
    def write(tmp: Path) -> None:
        write_checkpoint(tmp, model.decoder, vocab, cfg)
        rest = {k: v.detach().contiguous() for k, v in model.state_dict().items() if not k.startswith("decoder.")}
        save_file(rest, str(tmp / PREFIX_WEIGHTS))
        chars.save(tmp)

    return _publish(Path(directory), write)


def is_prefix_checkpoint(directory: str | Path) -> bool:
    """Whether ``directory`` is a prefix-LM checkpoint (a decoder checkpoint has no prefix weights)."""
    return (Path(directory) / PREFIX_WEIGHTS).is_file()


def load_prefix_checkpoint(directory: str | Path) -> tuple[PrefixLM, UnifiedVocab, CharVocab, PrefixTrainConfig]:
    """``(model in eval mode, vocab, chars, config)`` of a prefix-LM checkpoint."""
    directory = Path(directory)
    if (directory / "config.json").is_file() and not is_prefix_checkpoint(directory):
        raise ConfigError(
            f"{directory}: a discrete-token decoder checkpoint (no {PREFIX_WEIGHTS}), not a prefix-LM one; "
            "train one with python -m unified_lm.continuous.train"
        )
    _require(directory, "config.json", TRAIN_CONFIG_FILE, PREFIX_WEIGHTS)
    cfg = load_config(PrefixTrainConfig, directory / TRAIN_CONFIG_FILE)
    vocab = UnifiedVocab.load(directory)
    chars = CharVocab.load(directory)
    decoder = AutoModelForCausalLM.from_pretrained(directory)
    # The encoder weights come from this checkpoint, not from where training started.
    cfg.model.encoder_init = None
    model = PrefixLM(cfg.model, decoder, len(chars))
    missing, unexpected = model.load_state_dict(load_file(str(directory / PREFIX_WEIGHTS)), strict=False)
    missing = [k for k in missing if not k.startswith("decoder.")]
    if missing or unexpected:
        raise ConfigError(f"{directory / PREFIX_WEIGHTS}: does not match the model (missing {missing}, unexpected {unexpected})")
    return model.eval(), vocab, chars, cfg


def save_encoder_checkpoint(directory: str | Path, encoder: PrefixEncoder, chars: CharVocab, cfg: CTCPretrainConfig) -> Path:
    def write(tmp: Path) -> None:
        save_file({k: v.detach().contiguous() for k, v in encoder.state_dict().items()}, str(tmp / ENCODER_WEIGHTS))
        save_config(cfg, tmp / TRAIN_CONFIG_FILE)
        chars.save(tmp)

    return _publish(Path(directory), write)


def load_encoder_checkpoint(directory: str | Path) -> tuple[PrefixEncoder, CharVocab, CTCPretrainConfig]:
    directory = Path(directory)
    _require(directory, ENCODER_WEIGHTS, TRAIN_CONFIG_FILE)
    cfg = load_config(CTCPretrainConfig, directory / TRAIN_CONFIG_FILE)
    chars = CharVocab.load(directory)
    encoder = PrefixEncoder(cfg.encoder, len(chars))
    encoder.load_state_dict(load_file(str(directory / ENCODER_WEIGHTS)))
    return encoder.eval(), chars, cfg
