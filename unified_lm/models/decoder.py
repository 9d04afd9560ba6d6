"""The decoder-only LM: a Hugging Face causal LM built from a preset or a local checkpoint.

Presets are sized for the unified vocabulary of a CPU experiment (~1-2k rows):

    tiny         ~1M params   tests
    small        ~6M params   CPU experiments, the demo
    base         ~25M params  longer CPU runs
    gpt2-medium  ~300M params + the vocabulary: the SLD paper's decoder shape, for GPU runs

``init_from`` instead loads a local pretrained causal LM (any architecture
``AutoModelForCausalLM`` knows) and grows its embeddings and output layer to the unified
vocabulary. The text ids of that vocabulary must be the checkpoint's own, so build it with
``UnifiedVocab.from_text_tokenizer(init_from, ...)``.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Iterator

import torch
from transformers import (
    AutoModelForCausalLM,
    GPT2Config,
    LlamaConfig,
    PretrainedConfig,
    PreTrainedModel,
)

from ..errors import ConfigError
from ..registry import Registry

if TYPE_CHECKING:
    from ..vocab import UnifiedVocab


@dataclass
class ModelConfig:
    preset: str = "small"
    init_from: str | None = None  # local pretrained causal-LM directory; the preset is then ignored
    # Overrides of the preset's shape; None keeps the preset's value.
    hidden_size: int | None = None
    num_layers: int | None = None
    num_heads: int | None = None
    intermediate_size: int | None = None
    max_positions: int | None = None
    dropout: float | None = None
    # Hugging Face's attention kernel: "sdpa" (PyTorch's fused attention, flash or
    # memory-efficient where the GPU has them), "flash_attention_2" (the flash-attn package,
    # fp16/bf16 on a GPU), "eager"; null: transformers' default (sdpa).
    attn_implementation: str | None = None

    def __post_init__(self):
        if self.init_from is None and self.preset not in PRESETS:
            raise ConfigError(f"model.preset: unknown preset {self.preset!r}; known: {sorted(PRESETS)}")


@dataclass(frozen=True)
class Preset:
    arch: str  # key into ARCHITECTURES
    hidden_size: int
    num_layers: int
    num_heads: int
    intermediate_size: int
    max_positions: int
    dropout: float


PRESETS: dict[str, Preset] = {
    #                       arch   hidden layers heads  ffn  positions dropout
    "tiny":        Preset("llama",  128,    4,    4,   384,  2048,     0.1),
    "small":       Preset("llama",  256,    6,    4,  1024,  2048,     0.1),
    "base":        Preset("llama",  512,    8,    8,  1408,  2048,     0.1),
    # GPT-2 medium's shape (the SLD paper's decoder); its 1024 positions are the reference block size.
    "gpt2-medium": Preset("gpt2",  1024,   24,   16,  4096,  1024,     0.1),
}  # fmt: skip

# arch name -> builder(preset, vocab_size, special ids) -> a transformers config
ARCHITECTURES: Registry[Callable[..., PretrainedConfig]] = Registry("model architecture")


@ARCHITECTURES.register("llama")
def llama_config(p: Preset, vocab_size: int, pad_id: int, eos_id: int) -> LlamaConfig:
    # Llama has no residual dropout; `dropout` regularises attention only.
    return LlamaConfig(
        vocab_size=vocab_size,
        hidden_size=p.hidden_size,
        intermediate_size=p.intermediate_size,
        num_hidden_layers=p.num_layers,
        num_attention_heads=p.num_heads,
        max_position_embeddings=p.max_positions,
        attention_dropout=p.dropout,
        tie_word_embeddings=True,  # halves the parameters a small model spends on the vocabulary
        pad_token_id=pad_id,
        eos_token_id=eos_id,
        bos_token_id=None,  # sequences start with a task token, never a BOS
    )


@ARCHITECTURES.register("gpt2")
def gpt2_config(p: Preset, vocab_size: int, pad_id: int, eos_id: int) -> GPT2Config:
    return GPT2Config(
        vocab_size=vocab_size,
        n_embd=p.hidden_size,
        n_layer=p.num_layers,
        n_head=p.num_heads,
        n_inner=p.intermediate_size,
        n_positions=p.max_positions,
        resid_pdrop=p.dropout,
        embd_pdrop=p.dropout,
        attn_pdrop=p.dropout,
        pad_token_id=pad_id,
        eos_token_id=eos_id,
        bos_token_id=None,
    )




def resolve_preset(cfg: ModelConfig) -> Preset:
    """The preset named by ``cfg`` with its shape overrides applied."""
    if cfg.preset not in PRESETS:
        raise ConfigError(f"model.preset: unknown preset {cfg.preset!r}; known: {sorted(PRESETS)}")
    overrides = {
        "hidden_size": cfg.hidden_size,
        "num_layers": cfg.num_layers,
        "num_heads": cfg.num_heads,
        "intermediate_size": cfg.intermediate_size,
        "max_positions": cfg.max_positions,
        "dropout": cfg.dropout,
    }
    preset = replace(PRESETS[cfg.preset], **{k: v for k, v in overrides.items() if v is not None})
    if preset.hidden_size % preset.num_heads:
        raise ConfigError(f"model: hidden_size {preset.hidden_size} is not divisible by num_heads {preset.num_heads}")
    return preset


def build_model(cfg: ModelConfig, vocab: "UnifiedVocab") -> PreTrainedModel:
    """A causal LM over ``vocab``: random-init from a preset, or grown from ``cfg.init_from``."""
    if cfg.init_from:
        return _from_pretrained(Path(cfg.init_from), vocab, cfg.attn_implementation)
    preset = resolve_preset(cfg)
    config = ARCHITECTURES.get(preset.arch)(preset, len(vocab), vocab.pad_id, vocab.text_end_id)
    with _attention_errors(cfg.attn_implementation):
        return AutoModelForCausalLM.from_config(config, attn_implementation=cfg.attn_implementation)


@contextlib.contextmanager
def _attention_errors(attn_implementation: str | None) -> Iterator[None]:
    """transformers' refusal of an attention kernel (not installed, no GPU) as a ConfigError."""
    try:
        yield
    except (ImportError, ValueError) as e:
        if attn_implementation is None:
            raise
        raise ConfigError(f"model.attn_implementation={attn_implementation}: {str(e).splitlines()[0]}") from None


def _from_pretrained(path: Path, vocab: "UnifiedVocab", attn_implementation: str | None = None) -> PreTrainedModel:
    if not (path / "config.json").is_file():
        raise ConfigError(f"model.init_from: {path} is not a causal-LM checkpoint directory (no config.json)")
    with _attention_errors(attn_implementation):
        model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32, attn_implementation=attn_implementation)
    old_rows = model.get_input_embeddings().num_embeddings
    if vocab.text_size > old_rows:
        raise ConfigError(
            f"model.init_from: {path} has {old_rows} embedding rows but the vocabulary has "
            f"{vocab.text_size} text tokens; build the vocabulary with UnifiedVocab.from_text_tokenizer({str(path)!r})"
        )
    _check_specials_kept(path, vocab)
    resize_embeddings(model, len(vocab))
    model.config.pad_token_id = vocab.pad_id
    model.config.eos_token_id = vocab.text_end_id
    model.generation_config.pad_token_id = vocab.pad_id
    model.generation_config.eos_token_id = vocab.text_end_id
    return model


def _check_specials_kept(path: Path, vocab: "UnifiedVocab") -> None:
    """A checkpoint of this toolkit (a text LM, say) has trained rows for its special tokens:
    they must keep their ids in the new vocabulary, or they would start from the wrong rows."""
    from ..vocab import VOCAB_FILE, UnifiedVocab

    if not (path / VOCAB_FILE).is_file():
        return
    old = UnifiedVocab.load(path).special_ids
    moved = sorted(t for t, i in old.items() if vocab.special_ids.get(t) != i)
    if moved:
        raise ConfigError(
            f"model.init_from: special tokens {moved} of {path} would change ids in the new vocabulary "
            "(a different task list?); train with the same tasks.mixture names as that checkpoint"
        )


@torch.no_grad()
def resize_embeddings(model: PreTrainedModel, num_rows: int) -> None:
    """Resizes input embeddings and output layer to ``num_rows``.

    New rows are drawn per dimension from N(mean, std) of the existing rows, so new tokens
    start at the scale the pretrained layers expect (zeros or the default init would make
    their logits stand out). Existing rows are kept as they are.
    """
    old_rows = model.get_input_embeddings().num_embeddings
    # transformers does the structural part (tied weights, config.vocab_size); we do the init.
    model.resize_token_embeddings(num_rows, mean_resizing=False)
    if num_rows <= old_rows:
        return
    layers = [model.get_input_embeddings().weight]
    output = model.get_output_embeddings()
    if output is not None and output.weight.data_ptr() != layers[0].data_ptr():
        layers.append(output.weight)
    for weight in layers:
        old = weight[:old_rows]
        mean, std = old.mean(dim=0), old.std(dim=0)
        weight[old_rows:] = mean + std * torch.randn(num_rows - old_rows, weight.shape[1], dtype=weight.dtype)
    if output is not None and getattr(output, "bias", None) is not None:
        output.bias[old_rows:] = output.bias[:old_rows].mean()


def max_positions(model: PreTrainedModel) -> int | None:
    """The longest sequence the model was built for (None if its config does not say)."""
    cfg = model.config
    return getattr(cfg, "max_position_embeddings", None) or getattr(cfg, "n_positions", None)


def count_parameters(model: torch.nn.Module) -> int:
    """Unique parameters (tied embeddings counted once)."""
    return sum(p.numel() for p in model.parameters())


@contextlib.contextmanager
def eval_mode(model: torch.nn.Module) -> Iterator[torch.nn.Module]:
    """Puts ``model`` in eval mode for the block and restores its previous mode after it,
    also when the block raises (so a failed evaluation never leaves training without dropout)."""
    was_training = model.training
    model.eval()
    try:
        yield model
    finally:
        model.train(was_training)
