"""Configs of the continuous path: prefix-LM training, CTC encoder pre-training, text-LM pre-training."""

from __future__ import annotations

from dataclasses import dataclass, field

from ..errors import ConfigError
from ..losses.spectrogram import SpectronLossConfig
from ..models.decoder import ModelConfig
from ..models.prefix import EncoderConfig, PrefixModelConfig
from .features import MelConfig


@dataclass
class OptimConfig:
    lr: float = 1e-3
    weight_decay: float = 0.01
    betas: list[float] = field(default_factory=lambda: [0.9, 0.98])
    warmup_steps: int = 100
    schedule: str = "cosine"  # linear | cosine | constant (after linear warm-up)
    max_steps: int = 1000
    batch_size: int = 16
    clip_norm: float = 1.0  # 0 disables clipping
    eval_every_steps: int = 200
    log_every_steps: int = 10

    def __post_init__(self):
        for name in ("max_steps", "batch_size", "eval_every_steps", "log_every_steps"):
            if getattr(self, name) < 1:
                raise ConfigError(f"optim.{name} must be >= 1, got {getattr(self, name)}")


@dataclass
class PrefixDataConfig:
    train: str = "runs/prefix/corpus/train.jsonl"  # a continuation manifest (corpus synth --continuation)
    dev: str | None = "runs/prefix/corpus/dev.jsonl"
    max_dev_utts: int = 200
    # Also train ASR on whole utterances (``audio``/``text``): the prefix model then
    # transcribes full utterances, not only the first half of a sentence.
    full_utterance_asr: bool = True
    # A saved UnifiedVocab for a decoder trained from scratch (with model.decoder.init_from
    # the decoder's own is used); default: a BPE trained on the training texts.
    vocab: str | None = None
    text_vocab_size: int = 1000


@dataclass
class PrefixTrainConfig:
    data: PrefixDataConfig = field(default_factory=PrefixDataConfig)
    mel: MelConfig = field(default_factory=MelConfig)
    model: PrefixModelConfig = field(default_factory=PrefixModelConfig)
    loss: SpectronLossConfig = field(default_factory=SpectronLossConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    seed: int = 0
    out_dir: str = "runs/prefix"

    def check(self) -> None:
        """Fails fast on combinations no run can use."""
        if self.mel.n_mels != self.model.encoder.n_mels:
            raise ConfigError(f"mel.n_mels ({self.mel.n_mels}) and model.encoder.n_mels ({self.model.encoder.n_mels}) differ")
        if self.model.bridge.name == "ctc" and self.loss.w_ctc == 0 and not self.model.encoder_init:
            raise ConfigError(
                "model.bridge.name=ctc needs a trained CTC head: set loss.w_ctc > 0 or model.encoder_init "
                "(a CTC pre-trained encoder)"
            )


@dataclass
class CTCDataConfig:
    train: str = "runs/prefix/corpus/train.jsonl"  # any audio manifest: audio + text
    dev: str | None = "runs/prefix/corpus/dev.jsonl"
    max_dev_utts: int = 200
    # Speed perturbation (Ko et al. 2015): every training utterance also at these speeds,
    # which moves pitch and tempo together, so the encoder hears more voices than it has.
    speed_perturb: list[float] = field(default_factory=lambda: [1.0])

    def __post_init__(self):
        if not self.speed_perturb or any(f <= 0 for f in self.speed_perturb):
            raise ConfigError(f"data.speed_perturb: positive speed factors, got {self.speed_perturb}")


@dataclass
class CTCPretrainConfig:
    data: CTCDataConfig = field(default_factory=CTCDataConfig)
    mel: MelConfig = field(default_factory=MelConfig)
    encoder: EncoderConfig = field(default_factory=EncoderConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    seed: int = 0
    out_dir: str = "runs/prefix_ctc"


@dataclass
class TextLMDataConfig:
    train: str = "runs/prefix/corpus/train.jsonl"  # transcripts (``text``) of an audio manifest
    dev: str | None = "runs/prefix/corpus/dev.jsonl"
    # More text, one sentence a line, beside the transcripts: a text LM is worth
    # pre-training when text is more plentiful than transcribed speech.
    text_files: list[str] = field(default_factory=list)
    text_vocab_size: int = 1000


@dataclass
class TextLMConfig:
    data: TextLMDataConfig = field(default_factory=TextLMDataConfig)
    decoder: ModelConfig = field(default_factory=lambda: ModelConfig(preset="tiny"))
    optim: OptimConfig = field(default_factory=OptimConfig)
    seed: int = 0
    out_dir: str = "runs/prefix_textlm"
