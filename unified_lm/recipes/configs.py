"""The config of each training recipe: the shared sections of ``training.sections`` plus
the recipe's own data, model and loss sections, all checked when built."""

from __future__ import annotations

from dataclasses import dataclass, field

from ..audio.mel import MelConfig
from ..errors import ConfigError
from ..losses import LossConfig
from ..losses.spectrogram import SpectronLossConfig
from ..models import ModelConfig
from ..models.hubert import HubertSize
from ..models.prefix import EncoderConfig, PrefixModelConfig
from ..tasks import TaskConfig
from ..training.sections import EvalConfig, OptimConfig, TrainingConfig

# ---- lm: the unified speech-text decoder on a task mixture ------------------------------


@dataclass
class LMDataConfig:
    train: str = "runs/demo/units/train.jsonl"
    dev: str | None = "runs/demo/units/dev.jsonl"  # None: no evaluation, `best` is the final model
    tokenizer: str = "runs/demo/tok"  # the speech tokenizer directory (its meta.json)
    text_vocab_size: int = 1000  # BPE trained on the training transcripts ...
    text_tokenizer: str | None = None  # ... unless a local HF tokenizer dir is given (defaults to model.init_from)
    # DataLoader worker processes; null: 4 on a machine with a GPU (batches are built while
    # it computes), 0 on CPUs only (workers would take the cores the model trains on).
    num_workers: int | None = None
    max_tokens: int = 4096  # padded tokens per batch per rank
    # Sentences without speech (one a line), each trained on as a text_lm sequence every
    # epoch beside the utterances (new text for the decoder's language model; the text
    # vocabulary stays the transcripts').
    text_files: list[str] = field(default_factory=list)

    def __post_init__(self):
        if self.max_tokens < 1:
            raise ConfigError(f"data.max_tokens: must be >= 1, got {self.max_tokens}")


@dataclass
class AsrEvalConfig(EvalConfig):
    beam: int = 1
    max_new_tokens: int | None = None  # None: tasks.max_text_tokens + 1

    def __post_init__(self):
        super().__post_init__()
        if self.beam < 1 or (self.max_new_tokens is not None and self.max_new_tokens < 1):
            raise ConfigError(f"eval.beam and eval.max_new_tokens: must be >= 1, got {self.beam}, {self.max_new_tokens}")


@dataclass
class LMConfig(TrainingConfig):
    eval: AsrEvalConfig = field(default_factory=AsrEvalConfig)
    data: LMDataConfig = field(default_factory=LMDataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    tasks: TaskConfig = field(default_factory=TaskConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    time_mask: float = 0.0  # probability of replacing each input token by <pad> (labels untouched)

    def __post_init__(self):
        super().__post_init__()
        if not 0.0 <= self.time_mask < 1.0:
            raise ConfigError(f"time_mask: must be in [0, 1), got {self.time_mask}")


# ---- the prefix LM and its two pre-training stages --------------------------------------


@dataclass
class SmallStageConfig(TrainingConfig):
    """The shared defaults of the three stages below: short runs, light weight decay."""

    optim: OptimConfig = field(default_factory=lambda: OptimConfig(weight_decay=0.01, warmup_steps=100, max_steps=1000))
    eval: EvalConfig = field(default_factory=lambda: EvalConfig(every_steps=200, batch_size=16))


def _check_mels(mel: MelConfig, encoder: EncoderConfig, where: str) -> None:
    if mel.n_mels != encoder.n_mels:
        raise ConfigError(f"mel.n_mels ({mel.n_mels}) and {where}.n_mels ({encoder.n_mels}) differ")


@dataclass
class AudioDataConfig:
    train: str = "runs/prefix/corpus/train.jsonl"  # an audio manifest: audio + text
    dev: str | None = "runs/prefix/corpus/dev.jsonl"  # None: the first eval.max_utts training utterances
    batch_size: int = 16

    def __post_init__(self):
        if self.batch_size < 1:
            raise ConfigError(f"data.batch_size: must be >= 1, got {self.batch_size}")


@dataclass
class CTCDataConfig(AudioDataConfig):
    # Speed perturbation (Ko et al. 2015): every training utterance also at these speeds,
    # which moves pitch and tempo together, so the encoder hears more voices than it has.
    speed_perturb: list[float] = field(default_factory=lambda: [1.0])

    def __post_init__(self):
        super().__post_init__()
        if not self.speed_perturb or any(f <= 0 for f in self.speed_perturb):
            raise ConfigError(f"data.speed_perturb: positive speed factors, got {self.speed_perturb}")


@dataclass
class CTCEncoderConfig(SmallStageConfig):
    """CTC pre-training of the speech encoder on the transcripts' characters."""

    data: CTCDataConfig = field(default_factory=CTCDataConfig)
    mel: MelConfig = field(default_factory=MelConfig)
    encoder: EncoderConfig = field(default_factory=EncoderConfig)
    out_dir: str = "runs/prefix_ctc"

    def __post_init__(self):
        super().__post_init__()
        _check_mels(self.mel, self.encoder, "encoder")


@dataclass
class TextDataConfig(AudioDataConfig):
    # More text, one sentence a line, beside the transcripts: a text LM is worth
    # pre-training when text is more plentiful than transcribed speech.
    text_files: list[str] = field(default_factory=list)
    text_vocab_size: int = 1000  # BPE trained on all of the text ...
    text_tokenizer: str | None = None  # ... unless a local HF tokenizer dir is given (an ASR decoder's, say)


@dataclass
class TextLMConfig(SmallStageConfig):
    """Text-LM pre-training of a decoder (the GPT-2 analogue)."""

    data: TextDataConfig = field(default_factory=TextDataConfig)
    model: ModelConfig = field(default_factory=lambda: ModelConfig(preset="tiny"))
    out_dir: str = "runs/prefix_textlm"


@dataclass
class PrefixDataConfig(AudioDataConfig):
    # A continuation manifest (corpus synth --continuation). Also train ASR on whole
    # utterances (``audio``/``text``): the model then transcribes full utterances too.
    full_utterance_asr: bool = True
    # False: no continuation examples, ASR on whole utterances only; then any audio
    # manifest will do (the discrete path's corpus, say) and the spectrogram head idles.
    continuation: bool = True
    # A saved UnifiedVocab for a decoder trained from scratch (with model.decoder.init_from
    # the decoder's own is used); default: a BPE trained on the training texts.
    vocab: str | None = None
    text_vocab_size: int = 1000

    def __post_init__(self):
        super().__post_init__()
        if not (self.continuation or self.full_utterance_asr):
            raise ConfigError("data.continuation and data.full_utterance_asr are both false: nothing to train on")


@dataclass
class PrefixLMConfig(SmallStageConfig):
    """Spectron training of the prefix LM: speech encoder prefix -> decoder -> text and frames."""

    data: PrefixDataConfig = field(default_factory=PrefixDataConfig)
    mel: MelConfig = field(default_factory=MelConfig)
    model: PrefixModelConfig = field(default_factory=PrefixModelConfig)
    loss: SpectronLossConfig = field(default_factory=SpectronLossConfig)
    out_dir: str = "runs/prefix"

    def __post_init__(self):
        super().__post_init__()
        _check_mels(self.mel, self.model.encoder, "model.encoder")
        if self.model.bridge.name == "ctc" and self.loss.w_ctc == 0 and not self.model.encoder_init:
            raise ConfigError(
                "model.bridge.name=ctc needs a trained CTC head: set loss.w_ctc > 0 or model.encoder_init "
                "(a CTC pre-trained encoder)"
            )


# ---- hubert: masked prediction of a tokenizer's units (HuBERT pre-training) -------------


@dataclass
class HubertDataConfig(AudioDataConfig):
    # A fitted tokenizer directory (`discretize fit`): its frame-level units, before dedup
    # and subwords, are the targets. Iteration 1: mfcc-km100; iteration 2: ssl-km over
    # iteration 1's best/.
    targets: str | None = None
    max_seconds: float = 15.0  # a batch is cropped to its shortest utterance, and to this
    batch_size: int = 8

    def __post_init__(self):
        super().__post_init__()
        if not self.max_seconds > 0:
            raise ConfigError(f"data.max_seconds: must be > 0, got {self.max_seconds}")


@dataclass
class SpanMaskConfig:
    """HuBERT-Base's masking: spans of ``length`` frames start at ``prob / length`` of the frames."""

    prob: float = 0.8
    length: int = 10

    def __post_init__(self):
        if not 0 < self.prob <= 1 or self.length < 1:
            raise ConfigError(f"mask: prob in (0, 1] and length >= 1, got {self.prob}, {self.length}")


@dataclass
class HubertPretrainConfig(SmallStageConfig):
    """HuBERT-style pre-training of a small speech encoder on the corpus's own audio."""

    optim: OptimConfig = field(default_factory=lambda: OptimConfig(lr=1e-3, weight_decay=0.01, warmup_steps=200,
                                                                   max_steps=2000))
    data: HubertDataConfig = field(default_factory=HubertDataConfig)
    model: HubertSize = field(default_factory=HubertSize)
    mask: SpanMaskConfig = field(default_factory=SpanMaskConfig)
    out_dir: str = "runs/hubert"
