"""The loss comparison: Loss Masking vs multimodal CE vs SLD, across discretizers and seeds.

    unified-lm bench losses --config experiments/loss_comparison.yaml [--jobs 2] [--cells 0/3] [key=value ...]
    run_loss_grid("experiments/loss_comparison.yaml", jobs=2)

One **cell** is one ``lm`` training run (the grid's base recipe, with the cell's loss and
seed) followed by decoding its best checkpoint on dev, test and the degraded test copy.
What cells share is done once, in ``shared/``: the corpus, a pre-trained speech encoder
(``encoder:``, CTC) or HuBERT (``hubert:``) and text LM (``textlm:``), each tokenizer and
its unit manifests, and per
tokenizer a speech-and-text LM (``speechlm:``) that its cells start from.
Cells are cached by the hash of their resolved config and resume after an interruption;
SLD's alpha is chosen on dev; ``--cells I/N`` splits the grid across machines. The output
layout, caching and alpha rules: docs/loss_comparison.md.
"""

from __future__ import annotations

import copy
import json
import logging
import math
import multiprocessing
import os
import re
import shutil
import statistics
import subprocess
import time
import traceback
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Sequence

import torch
from tqdm import tqdm

from ..config import from_dict, load_config, save_config, to_dict
from ..corpus.degrade import DegradeConfig, degrade_manifest
from ..corpus.manifest import read_audio_manifest
from ..errors import ConfigError, DataError
from ..io import atomic_write_text, iter_jsonl, read_jsonl, sha256_json, write_jsonl
from ..losses import LossConfig
from .report import BootstrapSettings, write_report

if TYPE_CHECKING:
    from ..recipes.configs import LMConfig

logger = logging.getLogger("unified_lm.bench")

RESULT_FILE = "result.json"
CELL_FILE = "cell.json"
# Keys of a metrics.jsonl training record that are bookkeeping, not loss parts.
NOT_LOSS_PARTS = frozenset({"step", "epoch", "tokens", "lr", "tokens_per_s"})


# ---- config -----------------------------------------------------------------------------


@dataclass
class SynthCorpusConfig:
    num_utts: int = 600
    seed: int = 0


@dataclass
class CorpusConfig:
    """Either ``synth`` (render the synthetic corpus) or the three audio manifests."""

    synth: SynthCorpusConfig | None = None
    train: str | None = None
    dev: str | None = None
    test: str | None = None
    # Speed factors of the training audio (1.0: the original). The reference recipe uses
    # [0.9, 1.0, 1.1]; the tokenizer is fitted on the original audio only.
    speed_perturb: list[float] = field(default_factory=lambda: [1.0])


@dataclass
class TokenizerEntry:
    recipe: str  # a recipe of tokenizers/
    overrides: list[str] = field(default_factory=list)  # e.g. ["kmeans.k=200", "name=fbank-km200"]


@dataclass
class TrainBaseConfig:
    recipe: str = "experiments/asr_sld.yaml"  # every cell starts from this training recipe ...
    overrides: list[str] = field(default_factory=list)  # ... with these overrides; loss, seed and paths are the cell's
    # The per-cell step budget (optim.max_steps), after the overrides; null keeps theirs.
    # A key of its own so the grid's scale is one override: train.max_steps=800.
    max_steps: int | None = None
    # A launcher for the training runs, e.g. [accelerate, launch, --multi_gpu, --num_processes, "8"];
    # empty: train in the grid's (or the job's) own process. How, not what: not part of a cell's hash.
    launch: list[str] = field(default_factory=list)


@dataclass
class EncoderStageConfig:
    """A speech encoder pre-trained once per grid (the ``ctc`` recipe) on the grid's training
    audio. Every ``ctc_encoder`` tokenizer that leaves ``kmeans.features.model_path`` unset
    gets this encoder's best checkpoint, so all of its cells share one encoder."""

    recipe: str = "experiments/prefix_ctc.yaml"
    overrides: list[str] = field(default_factory=list)  # data paths and out_dir are the grid's
    max_steps: int | None = None  # optim.max_steps, after the overrides; null keeps theirs


@dataclass
class HubertStageConfig:
    """A HuBERT pre-trained once per grid on the training audio (the ``hubert`` recipe),
    ``iterations`` times: the first on ``targets``' units, each next one on K-means units of
    the previous model's ``layer``. Every tokenizer with ``ssl`` features and no
    ``kmeans.features.model_path`` reads the last iteration's best checkpoint."""

    recipe: str = "experiments/hubert.yaml"
    overrides: list[str] = field(default_factory=list)  # data paths and out_dir are the grid's
    max_steps: int | None = None  # per iteration
    targets: str = "tokenizers/mfcc-km100.yaml"  # iteration 1's targets, fitted on the training audio ...
    target_overrides: list[str] = field(default_factory=list)  # ... with these overrides
    iterations: int = 2
    layer: int = 0  # of each iteration, for the next one's targets: iteration 1's best by PNMI (docs/ssl_units.md)
    k: int = 500


@dataclass
class TextLMStageConfig:
    """A text LM pre-trained once per grid (the ``textlm`` recipe, the GPT-2 analogue) on
    the grid's training transcripts plus ``num_sentences`` sentences of the built-in grammar
    (none of them a dev or test transcript). Every cell's decoder starts from it
    (``model.init_from``), its text BPE included."""

    recipe: str = "experiments/textlm.yaml"
    overrides: list[str] = field(default_factory=list)  # data paths and out_dir are the grid's
    max_steps: int | None = None
    num_sentences: int = 100_000  # 0: the training transcripts only
    sentence_seed: int = 1


@dataclass
class SpeechLMStageConfig:
    """A speech-and-text LM pre-trained once per tokenizer: the cells' own recipe on the tasks
    ``speech_lm`` and ``text_lm`` (the training units and the training transcripts, never
    paired), from the text LM when the grid has one. Every cell of that tokenizer starts from
    it, so each loss is compared as a fine-tuning loss on a decoder that already knows the
    units, as in SpeechGPT's modality-adaptation stage. No position of these tasks is input
    speech, so the losses under comparison agree here (the stage trains with ``mask``)."""

    mixture: dict[str, float] = field(default_factory=lambda: {"speech_lm": 1.0, "text_lm": 1.0})
    overrides: list[str] = field(default_factory=list)  # after the cells' train.overrides
    max_steps: int | None = None  # null: the cells' step budget

    def __post_init__(self):
        if not self.mixture or "asr" in self.mixture:
            raise ConfigError(f"speechlm.mixture: unpaired tasks only (speech_lm, text_lm), got {self.mixture}")


@dataclass
class GridLoss(LossConfig):
    """One row of the grid: a loss config, named by ``label`` (default: the loss name) so that
    two variants of one loss (the paper's sld and the released code's) can sit side by side."""

    label: str = ""
    # sld's alpha, chosen on dev among these (one first-seed cell each); null: the grid's
    # ``alpha_sweep`` for an sld entry, none for the others.
    alpha_sweep: list[float] | None = None

    @property
    def key(self) -> str:
        return self.label or self.name

    def loss_config(self) -> LossConfig:
        return LossConfig(**{f.name: getattr(self, f.name) for f in fields(LossConfig)})


@dataclass
class DecodeConfig:
    batch_size: int = 32
    beam: int = 1
    max_new_tokens: int = 200


@dataclass
class LossGridConfig:
    corpus: CorpusConfig = field(default_factory=CorpusConfig)
    tokenizers: list[TokenizerEntry] = field(default_factory=list)
    encoder: EncoderStageConfig | None = None  # pre-trained once, read by ctc_encoder tokenizers
    hubert: HubertStageConfig | None = None  # pre-trained once, read by ssl tokenizers
    textlm: TextLMStageConfig | None = None  # pre-trained once, the decoder every cell starts from
    speechlm: SpeechLMStageConfig | None = None  # pre-trained once per tokenizer, from the text LM if any
    losses: list[GridLoss] = field(default_factory=list)  # one entry per label (default: the loss name)
    baseline: str = "mask"  # the label of the loss the others are compared with
    seeds: list[int] = field(default_factory=lambda: [0, 1, 2])
    alpha_sweep: list[float] = field(default_factory=list)  # sld entries' alpha, chosen on dev; empty: the entry's own
    train: TrainBaseConfig = field(default_factory=TrainBaseConfig)
    decode: DecodeConfig = field(default_factory=DecodeConfig)
    degraded: DegradeConfig | None = field(default_factory=DegradeConfig)  # null: no degraded test set
    bootstrap: BootstrapSettings = field(default_factory=BootstrapSettings)
    keep_last_checkpoint: bool = False  # a finished cell keeps only train/best unless true
    plots: bool = True  # the report's PNG figures; false: tables only (quicker while a grid is in flight)
    # Seconds one training step takes in one job of this grid, measured on the machine; only
    # for the wall-time estimate printed at the start (null: the estimate counts steps only).
    estimate_step_seconds: float | None = None
    out_dir: str = "runs/bench/loss_comparison"


def _check_losses(cfg: LossGridConfig) -> None:
    """Rows with distinct labels, the baseline among them, seeds, and sld-only alpha sweeps."""
    labels = [loss.key for loss in cfg.losses]
    if not labels or len(set(labels)) != len(labels):
        raise ConfigError(f"losses: one entry per label (default: the loss name) is needed, got {labels}")
    if cfg.baseline not in labels:
        raise ConfigError(f"baseline {cfg.baseline!r} is not one of the losses {labels}")
    if not cfg.seeds or len(set(cfg.seeds)) != len(cfg.seeds):
        raise ConfigError(f"seeds: distinct seeds needed, got {cfg.seeds}")
    if cfg.alpha_sweep and not any(loss.name == "sld" for loss in cfg.losses):
        raise ConfigError("alpha_sweep: needs an sld entry in losses")
    for loss in cfg.losses:
        sweep = loss.alpha_sweep or []
        if sweep and loss.name != "sld":
            raise ConfigError(f"losses: {loss.key} has an alpha_sweep, but alpha is sld's")
        for where, values in (("alpha_sweep", cfg.alpha_sweep), (f"losses.{loss.key}.alpha_sweep", sweep)):
            if len(set(values)) != len(values) or any(a < 0 for a in values):
                raise ConfigError(f"{where}: distinct non-negative values needed, got {values}")


def check_grid(cfg: LossGridConfig) -> LMConfig:
    """Fails fast on a grid no run can use; returns the base training config."""
    c = cfg.corpus
    given = [p is not None for p in (c.train, c.dev, c.test)]
    if (c.synth is None and not all(given)) or (c.synth is not None and any(given)):
        raise ConfigError("corpus: give either synth: {num_utts, seed} or all of train, dev and test (audio manifests)")
    if not c.speed_perturb or any(f <= 0 for f in c.speed_perturb):
        raise ConfigError(f"corpus.speed_perturb: positive factors needed, got {c.speed_perturb}")
    if not cfg.tokenizers:
        raise ConfigError("tokenizers: at least one recipe is needed")
    _check_losses(cfg)
    if min(cfg.decode.batch_size, cfg.decode.beam, cfg.decode.max_new_tokens) < 1:
        raise ConfigError(f"decode: batch_size, beam and max_new_tokens must be >= 1, got {to_dict(cfg.decode)}")
    if not 0 < cfg.bootstrap.confidence < 1 or cfg.bootstrap.num_samples < 1:
        raise ConfigError(f"bootstrap: need 0 < confidence < 1 and num_samples >= 1, got {to_dict(cfg.bootstrap)}")
    if cfg.degraded is not None:
        cfg.degraded.check()
    stages = (("train", cfg.train), ("encoder", cfg.encoder), ("hubert", cfg.hubert), ("textlm", cfg.textlm),
              ("speechlm", cfg.speechlm))
    for where, steps in ((name, stage.max_steps) for name, stage in stages if stage is not None):
        if steps is not None and steps < 1:
            raise ConfigError(f"{where}.max_steps: must be >= 1, got {steps}")
    if cfg.hubert is not None and (cfg.hubert.iterations < 1 or cfg.hubert.k < 2):
        raise ConfigError(f"hubert: iterations >= 1 and k >= 2 needed, got {cfg.hubert.iterations}, {cfg.hubert.k}")
    if cfg.estimate_step_seconds is not None and cfg.estimate_step_seconds <= 0:
        raise ConfigError(f"estimate_step_seconds: must be > 0, got {cfg.estimate_step_seconds}")
    from ..recipes.configs import LMConfig

    if cfg.textlm is not None and cfg.textlm.num_sentences < 0:
        raise ConfigError(f"textlm.num_sentences: must be >= 0, got {cfg.textlm.num_sentences}")
    budget = [] if cfg.train.max_steps is None else [f"optim.max_steps={cfg.train.max_steps}"]
    base = load_config(LMConfig, cfg.train.recipe, [*cfg.train.overrides, *budget])
    if (cfg.textlm or cfg.speechlm) is not None and base.model.init_from:
        stage = "textlm" if cfg.textlm is not None else "speechlm"
        raise ConfigError(f"{stage}: the grid pre-trains the decoder's start; drop model.init_from from train.overrides")
    # Local weights the training reads are checked now, not when the first cell fails on them.
    for what, path in (("model.init_from", base.model.init_from), ("data.text_tokenizer", base.data.text_tokenizer)):
        if path and not Path(path).exists():
            raise DataError(path, f"train: {what} not found (a local checkpoint directory)")
    return base


def parse_slice(cells: str | None) -> tuple[int, int]:
    """``"I/N"`` -> (I, N) with 0 <= I < N; None -> (0, 1), the whole grid."""
    if cells is None:
        return 0, 1
    m = re.fullmatch(r"\s*(\d+)\s*/\s*(\d+)\s*", cells)
    if not m or not 0 <= int(m.group(1)) < int(m.group(2)):
        raise ConfigError(f"cells: expected I/N with 0 <= I < N (e.g. 0/3), got {cells!r}")
    return int(m.group(1)), int(m.group(2))


# ---- shared data ------------------------------------------------------------------------


@dataclass
class PreparedTokenizer:
    name: str
    recipe: dict[str, Any]  # the recipe spelled out (what the tokenizer's cells hash)
    tokdir: Path
    units: dict[str, Path]  # train, dev, test[, degraded]
    init_from: str | None = None  # its cells' start: the grid's speech LM for this tokenizer


def _short(obj: Any) -> str:
    return sha256_json(obj)[:12]


def _corpus_spec(c: CorpusConfig) -> dict[str, Any]:
    if c.synth is not None:
        return {"synth": to_dict(c.synth)}
    return {"train": c.train, "dev": c.dev, "test": c.test}


def corpus_manifests(c: CorpusConfig, shared: Path, progress: bool = True) -> dict[str, Path]:
    """train/dev/test audio manifests: the given ones, or the synthetic corpus (rendered once)."""
    if c.synth is None:
        given = {"train": Path(c.train), "dev": Path(c.dev), "test": Path(c.test)}
        for split, path in given.items():
            if not path.is_file():
                raise DataError(path, f"corpus.{split}: audio manifest not found")
        return given
    corpus = shared / f"corpus-{_short(_corpus_spec(c))}"
    if not (corpus / "corpus.json").is_file():
        from ..corpus.synth import synthesize

        synthesize(corpus, num_utts=c.synth.num_utts, seed=c.synth.seed, progress=progress)
    return {split: corpus / f"{split}.jsonl" for split in ("train", "dev", "test")}


def speed_perturbed(train: Path, factors: Sequence[float], out_dir: Path) -> Path:
    """``train`` plus, for each speed factor != 1, its utterances again with ``speed`` set
    (ids suffixed ``-sp<factor>``), as one manifest over the same audio files: every reader
    perturbs on load, so no copy of the audio is written."""
    if list(factors) == [1.0]:
        return train
    combined = out_dir / "train.jsonl"
    if combined.is_file():
        return combined
    rows = []
    for factor in sorted(factors, key=lambda f: f != 1.0):  # the originals first
        for rec in read_audio_manifest(train):
            # The audio stays where it is; its path becomes relative to the new manifest.
            row = {**rec.to_json(), "audio": os.path.relpath(rec.audio_path(train).resolve(), out_dir.resolve())}
            if factor != 1.0:
                row.update(id=f"{rec.id}-sp{factor:g}", speed=factor * (rec.speed or 1.0))
            rows.append(row)
    write_jsonl(combined, rows)
    return combined


def _unset_checkpoint(recipe: Any) -> tuple[str, str] | None:
    """(the override a recipe needs for its local model weights, the kind of model), when not given."""
    if recipe.kind == "encodec" and not recipe.encodec.checkpoint:
        return "encodec.checkpoint", "encodec"
    features = recipe.kmeans.features if recipe.kind == "kmeans" else {}
    if features.get("type") in ("ssl", "ctc_encoder") and not features["model_path"]:
        return "kmeans.features.model_path", features["type"]
    return None


@dataclass(frozen=True)
class Pretrained:
    best: Path  # the checkpoint later steps read
    key: str  # "<stage>-<hash of its resolved config and data>": its path-free identity


# Directory-name prefixes of the grid's decoder stages (``pretrain``), by which a hash knows an init_from.
DECODER_STAGES = ("textlm-", "speechlm-")


def _stage_name(init: str | None) -> str | None:
    """The grid's own stage an ``init_from`` points at, by its directory name (path-free), else the path."""
    if init and Path(init).parent.name.startswith(DECODER_STAGES):
        return Path(init).parent.name
    return init


def pretrain(
    cfg: LossGridConfig, name: str, recipe: str, recipe_file: str, overrides: list[str], identity: dict, shared: Path
) -> Pretrained:
    """Trains the shared stage ``name`` of the grid (``encoder``, ``hubert1``.., ``textlm``, ``speechlm``)
    with ``recipe`` once (resuming a killed run) in ``shared/<name>-<hash>``, the hash
    covering its resolved config but its paths, the corpus and ``identity``."""
    from ..recipes import get_recipe
    from ..train import train

    stage_cfg = load_config(get_recipe(recipe).config, recipe_file, overrides)
    spec = _without_speed(to_dict(stage_cfg))
    for path in ("train", "dev", "text_files", "tokenizer", "targets"):
        spec["data"].pop(path, None)
    spec.pop("out_dir")
    if "model" in spec and "init_from" in spec["model"]:
        spec["model"]["init_from"] = _stage_name(spec["model"]["init_from"])
    key = f"{name}-{_short({'corpus': _corpus_spec(cfg.corpus), name: spec, **identity})}"
    stage_cfg.out_dir = str(shared / key)
    if not (Path(stage_cfg.out_dir) / "summary.json").is_file():
        train(stage_cfg)
    return Pretrained(Path(stage_cfg.out_dir) / "best", key)


def _budget(steps: int | None) -> list[str]:
    return [] if steps is None else [f"optim.max_steps={steps}"]


def pretrain_encoder(cfg: LossGridConfig, audio: dict[str, Path], shared: Path) -> Pretrained:
    """The grid's speech encoder (``encoder:``), trained on the training audio."""
    stage = cfg.encoder
    data = [f"data.train={audio['train']}", f"data.dev={audio['dev']}"]
    return pretrain(cfg, "encoder", "ctc", stage.recipe, [*stage.overrides, *_budget(stage.max_steps), *data], {}, shared)


def pretrain_hubert(cfg: LossGridConfig, audio: dict[str, Path], shared: Path, progress: bool = True) -> Pretrained:
    """The grid's HuBERT (``hubert:``): its iterations, each on the targets of the one before."""
    from ..discretize import fit_tokenizer

    stage = cfg.hubert
    data = [f"data.train={audio['train']}", f"data.dev={audio['dev']}"]
    model = None
    for iteration in range(1, stage.iterations + 1):
        if model is None:
            targets, fit_overrides, named = stage.targets, stage.target_overrides, stage.target_overrides
        else:  # K-means of the previous model's layer, named by its key, not its path: the grid stays movable
            targets = "tokenizers/hubert-km500.yaml"
            fit_overrides, named = ([f"kmeans.features.model_path={ref}", f"kmeans.features.layer={stage.layer}",
                                     f"kmeans.k={stage.k}", "post.dedup=false", f"name=hubert{iteration - 1}-targets"]
                                    for ref in (model.best, model.key))
        spec = {"recipe": targets, "overrides": named, "corpus": _corpus_spec(cfg.corpus)}
        tokdir = shared / "tok" / f"hubert-targets{iteration}-{_short(spec)}"
        if not (tokdir / "meta.json").is_file():
            fit_tokenizer(targets, audio["train"], tokdir, fit_overrides, progress=progress)
        overrides = [*stage.overrides, *_budget(stage.max_steps), *data, f"data.targets={tokdir}"]
        model = pretrain(cfg, f"hubert{iteration}", "hubert", stage.recipe, overrides, {"targets": tokdir.name}, shared)
    return model


def pretrain_text_lm(cfg: LossGridConfig, audio: dict[str, Path], shared: Path) -> Pretrained:
    """The grid's text LM (``textlm:``): the training transcripts plus generated sentences,
    written once with every dev and test transcript excluded."""
    from ..corpus.sentences import write_text_corpus

    stage = cfg.textlm
    data = [f"data.train={audio['train']}", f"data.dev={audio['dev']}", "data.text_files=[]"]
    if stage.num_sentences:
        text = shared / f"text-{_short({'corpus': _corpus_spec(cfg.corpus), 'n': stage.num_sentences, 'seed': stage.sentence_seed})}.txt"
        if not text.is_file():
            write_text_corpus(text, stage.num_sentences, stage.sentence_seed, [audio["dev"], audio["test"]])
        data[-1] = f"data.text_files=[{json.dumps(str(text))}]"
    identity = {"sentences": stage.num_sentences, "sentence_seed": stage.sentence_seed}
    overrides = [*stage.overrides, *_budget(stage.max_steps), *data]
    return pretrain(cfg, "textlm", "textlm", stage.recipe, overrides, identity, shared)


def pretrain_speech_lm(cfg: LossGridConfig, base: LMConfig, tok: PreparedTokenizer, shared: Path) -> Pretrained:
    """The grid's speech-and-text LM for ``tok`` (``speechlm:``): the cells' recipe on
    unpaired tasks over ``tok``'s training units and transcripts, from ``base``'s start."""
    stage = cfg.speechlm
    steps = stage.max_steps or base.optim.max_steps
    overrides = [
        *cfg.train.overrides, f"tasks.mixture={json.dumps(stage.mixture)}", "loss.name=mask", *stage.overrides,
        f"optim.max_steps={steps}", f"eval.every_steps={steps}",  # dev ASR means nothing here: the last step is kept
        f"data.train={tok.units['train']}", f"data.dev={tok.units['dev']}", f"data.tokenizer={tok.tokdir}",
    ]  # fmt: skip
    if base.model.init_from:
        overrides.append(f"model.init_from={base.model.init_from}")
    return pretrain(cfg, "speechlm", "lm", cfg.train.recipe, overrides, {"tokenizer": tok.tokdir.name}, shared)


def prepare_data(cfg: LossGridConfig, out: Path, progress: bool = True) -> tuple[list[PreparedTokenizer], list[str]]:
    """Every shared step, each skipped when done: corpus, speed perturbation, degraded test,
    the encoder, tokenizers and their unit manifests. Returns the usable tokenizers and notes
    on the rest."""
    from ..discretize import apply_tokenizer, fit_tokenizer, load_recipe

    shared = out / "shared"
    corpus_key = _corpus_spec(cfg.corpus)
    audio = corpus_manifests(cfg.corpus, shared, progress)
    models = {"ctc_encoder": pretrain_encoder(cfg, audio, shared) if cfg.encoder is not None else None,
              "ssl": pretrain_hubert(cfg, audio, shared, progress) if cfg.hubert is not None else None}
    # "on_load": the perturbed utterances are read at their speed, not copied (the units differ
    # by the copies' 16-bit rounding, so the key tells them apart).
    speed_dir = shared / f"speed-{_short({'corpus': corpus_key, 'factors': cfg.corpus.speed_perturb, 'on_load': True})}"
    evals = {"train": speed_perturbed(audio["train"], cfg.corpus.speed_perturb, speed_dir)}
    evals.update(dev=audio["dev"], test=audio["test"])
    if cfg.degraded is not None:
        degraded_dir = shared / f"degraded-{_short({'corpus': corpus_key, 'degraded': to_dict(cfg.degraded)})}"
        if not (degraded_dir / audio["test"].name).is_file():
            degrade_manifest(audio["test"], degraded_dir, cfg.degraded, progress=progress)
        evals["degraded"] = degraded_dir / audio["test"].name

    prepared, notes = [], []
    for entry in cfg.tokenizers:
        recipe = load_recipe(entry.recipe, entry.overrides)
        missing, kind = _unset_checkpoint(recipe) or (None, None)
        model = models.get(kind)  # the grid's own model of the kind the recipe reads
        if model is not None:
            entry = replace(entry, overrides=[*entry.overrides, f"{missing}={model.best}"])
            recipe, missing = load_recipe(entry.recipe, entry.overrides), None
        if missing:
            stage = {"ctc_encoder": " or an encoder: stage", "ssl": " or a hubert: stage"}.get(kind, "")
            note = f"{recipe.name} skipped: no local model weights configured ({entry.recipe} needs {missing}=...{stage})"
            logger.warning(note)
            notes.append(note)
            continue
        if any(p.name == recipe.name for p in prepared):
            raise ConfigError(f"tokenizers: two entries are named {recipe.name!r}; rename one with a name=... override")
        spec = to_dict(recipe)
        if model is not None:  # the model's hash, not its path: cells stay movable
            spec["kmeans"]["features"]["model_path"] = model.key
        tokdir = shared / "tok" / f"{recipe.name}-{_short({'corpus': corpus_key, 'recipe': spec})}"
        if not (tokdir / "meta.json").is_file():
            fit_tokenizer(entry.recipe, audio["train"], tokdir, entry.overrides, progress=progress)
        data_key = _short({"tok": tokdir.name, "speed": speed_dir.name, "degraded": to_dict(cfg.degraded)})
        units_dir = shared / "units" / f"{recipe.name}-{data_key}"
        units = {}
        for split, manifest in evals.items():
            units[split] = units_dir / f"{split}.jsonl"
            if not units[split].is_file():
                apply_tokenizer(tokdir, manifest, units[split], progress=progress)
        prepared.append(PreparedTokenizer(recipe.name, spec, tokdir, units))
    if not prepared:
        raise ConfigError("tokenizers: none can run here (" + "; ".join(notes) + ")")
    return prepared, notes


# ---- cells ------------------------------------------------------------------------------


@dataclass(eq=False)
class Cell:
    """One training run and its decoding; everything a (possibly separate) process needs."""

    key: str  # e.g. "fbank-km500/sld/seed1", or "fbank-km500/sld/alpha=0.05/seed0" in the sweep
    tokenizer: str
    loss: str
    alpha: float | None  # sld's alpha, None for the other losses
    seed: int
    sweep: bool  # an alpha-sweep cell (it may also be the first seed's sld cell: same hash, same dir)
    spec: dict[str, Any]  # what the hash covers: the resolved config without paths
    train: dict[str, Any]  # the LMConfig, paths included
    evals: dict[str, str]  # evaluation name -> unit manifest
    decode: dict[str, Any]
    launch: list[str]
    dir: str

    @property
    def hash(self) -> str:
        return sha256_json(self.spec)

    @property
    def result_path(self) -> Path:
        return Path(self.dir) / RESULT_FILE


def cell_hash_spec(train_cfg: LMConfig, tok: PreparedTokenizer, cfg: LossGridConfig) -> dict[str, Any]:
    """The resolved config a cell is identified by. Paths are left out: they follow from the
    rest, and leaving them out lets results move between directories and machines."""
    train = _without_speed(to_dict(train_cfg))
    for key in ("train", "dev", "tokenizer"):
        train["data"].pop(key)
    train.pop("out_dir")
    train["model"]["init_from"] = _stage_name(train["model"].get("init_from"))  # the grid's stage: its hash
    data = {
        "corpus": _corpus_spec(cfg.corpus),
        "speed_perturb": cfg.corpus.speed_perturb,
        "degraded": to_dict(cfg.degraded),
        "tokenizer": tok.recipe,
    }
    return {"data": data, "train": train, "decode": to_dict(cfg.decode)}


def _without_speed(spec: dict[str, Any]) -> dict[str, Any]:
    """A training config's dict without the settings that change how fast it runs but not
    what it learns (``speed``, loader workers): a cached stage or cell serves either way."""
    spec.pop("speed", None)
    spec.get("data", {}).pop("num_workers", None)
    return spec


def _slug(key: str) -> str:
    return re.sub(r"[^A-Za-z0-9._=-]+", "_", key.replace("/", "."))


def make_cell(
    cfg: LossGridConfig, base: LMConfig, tok: PreparedTokenizer, loss: GridLoss, seed: int, out: Path,
    alpha: float | None = None, sweep: bool = False,
) -> Cell:
    train = copy.deepcopy(base)
    if tok.init_from:
        train.model.init_from = tok.init_from
    train.loss = loss.loss_config() if alpha is None else replace(loss.loss_config(), alpha=alpha)
    train.seed = seed
    spec = cell_hash_spec(train, tok, cfg)
    name = f"{tok.name}/{loss.key}/seed{seed}"
    key = f"{tok.name}/{loss.key}/alpha={alpha:g}/seed{seed}" if sweep else name
    # Named without the sweep's alpha: the chosen alpha's sweep cell is the seeded cell.
    cell_dir = out / "cells" / f"{_slug(name)}.{sha256_json(spec)[:12]}"
    train.data.train, train.data.dev, train.data.tokenizer = str(tok.units["train"]), str(tok.units["dev"]), str(tok.tokdir)
    train.out_dir = str(cell_dir / "train")
    return Cell(
        key=key,
        tokenizer=tok.name,
        loss=loss.key,
        alpha=train.loss.alpha if loss.name == "sld" else None,
        seed=seed,
        sweep=sweep,
        spec=spec,
        train=to_dict(train),
        evals={name: str(path) for name, path in tok.units.items() if name != "train"},
        decode=to_dict(cfg.decode),
        launch=list(cfg.train.launch),
        dir=str(cell_dir),
    )


def read_result(cell: Cell) -> dict[str, Any] | None:
    return json.loads(cell.result_path.read_text()) if cell.result_path.is_file() else None


def _train(cfg: LMConfig, launch: list[str], cell_dir: Path) -> dict[str, Any]:
    if not launch:
        from ..train import train

        return train(cfg)
    # A launcher (accelerate, torchrun) starts its own processes: hand them the config as a file.
    config_file = cell_dir / "train_config.yaml"
    save_config(cfg, config_file)
    cmd = [*launch, "-m", "unified_lm.train", "--config", str(config_file)]
    logger.info("launching: %s", " ".join(cmd))
    subprocess.run(cmd, check=True)
    return json.loads((Path(cfg.out_dir) / "summary.json").read_text())


def _eval(checkpoint: Path, manifest: str, hyp: Path, settings: dict[str, Any]) -> dict[str, Any]:
    """Decodes one evaluation set (reusing finished hypotheses); scores plus per-utterance counts."""
    from ..decode import decode, scores_path

    if hyp.is_file() and scores_path(hyp).is_file():
        scores = json.loads(scores_path(hyp).read_text())
    else:
        scores = decode(checkpoint, manifest, hyp, **settings)
    rows = read_jsonl(hyp)
    columns = ("id", "subset", "word_errors", "ref_words", "char_errors", "ref_chars")
    sources = ("id", "subset", "errors", "ref_words", "char_errors", "ref_chars")
    return {
        "wer": scores["wer"],
        "cer": scores["cer"],
        "num_utts": scores["num_utts"],
        "subsets": {name: {k: s[k] for k in ("wer", "cer", "num_utts")} for name, s in scores["subsets"].items()},
        # Columnar: the bootstrap needs every utterance's counts, and the report reads only results.
        "utterances": {col: [r.get(src) for r in rows] for col, src in zip(columns, sources)},
    }


def read_curves(metrics: Path) -> dict[str, dict[str, list]]:
    """Training loss parts and dev WER against steps, from a run's ``metrics.jsonl``."""
    train: dict[str, list] = {"step": []}
    dev: dict[str, list] = {"step": [], "dev_wer": []}
    if not metrics.is_file():
        return {"train": train, "dev": dev}
    for _, rec in iter_jsonl(metrics):
        if isinstance(rec, DataError):
            continue  # a torn last line of a killed run: the curve is for reading, not scoring
        if "loss" in rec:
            parts = {k: v for k, v in rec.items() if k not in NOT_LOSS_PARTS}
            n = len(train["step"])
            for k in parts.keys() - train.keys():
                train[k] = [math.nan] * n  # a part that appears late (e.g. no speech in early batches)
            train["step"].append(rec["step"])
            for k in train.keys() - {"step"}:
                train[k].append(parts.get(k, math.nan))
        elif "dev_wer" in rec:
            dev["step"].append(rec["step"])
            dev["dev_wer"].append(rec["dev_wer"])
    return {"train": train, "dev": dev}


def run_cell(cell: Cell) -> dict[str, Any]:
    """Trains the cell (resuming a killed run), decodes dev/test/degraded with the best
    checkpoint; returns the result that ``run_loss_grid`` writes to ``result.json``."""
    from ..recipes.configs import LMConfig

    start = time.perf_counter()
    cfg = from_dict(LMConfig, cell.train, where=f"cell {cell.key}")
    summary = _train(cfg, cell.launch, Path(cell.dir))
    best = Path(cfg.out_dir) / "best"
    evals = {
        name: _eval(best, manifest, Path(cell.dir) / f"{name}.hyp.jsonl", cell.decode) for name, manifest in cell.evals.items()
    }
    return {
        "key": cell.key,
        "hash": cell.hash,
        "tokenizer": cell.tokenizer,
        "loss": cell.loss,
        "alpha": cell.alpha,
        "seed": cell.seed,
        "train": {k: summary.get(k) for k in ("steps", "epochs", "num_params", "best_dev_wer", "best_step", "session_seconds")},
        "evals": evals,
        "curves": read_curves(Path(cfg.out_dir) / "metrics.jsonl"),
        "seconds": round(time.perf_counter() - start, 1),
    }


CellRunner = Callable[[Cell], dict]


def _limit_threads(threads: int) -> None:
    import torch

    torch.set_num_threads(threads)


def _finish(cell: Cell, result: dict[str, Any], keep_last: bool) -> None:
    atomic_write_text(cell.result_path, json.dumps(result, ensure_ascii=False) + "\n")
    if not keep_last:
        # Only after the result exists: without `last`, a rerun would train from scratch.
        for name in ("last", "last.old"):
            shutil.rmtree(Path(cell.train["out_dir"]) / name, ignore_errors=True)


def _failed(cell: Cell, error: BaseException) -> None:
    text = "".join(traceback.format_exception(error))
    atomic_write_text(Path(cell.dir) / "error.txt", text)
    logger.error("cell %s failed (see %s): %s", cell.key, Path(cell.dir) / "error.txt", error)


def run_cells(
    cells: Sequence[Cell], runner: CellRunner = run_cell, jobs: int = 1, keep_last: bool = False, progress: bool = True
) -> dict[str, list[str]]:
    """Runs every cell without a result, ``jobs`` at a time; a failing cell is logged (its
    traceback in ``error.txt``) and the others go on. Returns ``{ran, failed}`` keys."""
    todo = [c for c in cells if not c.result_path.is_file()]
    ran: list[str] = []
    failed: list[str] = []
    for c in todo:
        atomic_write_text(Path(c.dir) / CELL_FILE, json.dumps({"key": c.key, "hash": c.hash, "spec": c.spec}, indent=2) + "\n")
    bar = tqdm(total=len(todo), desc="cells", unit="cell", disable=not progress or not todo)

    def settle(cell: Cell, result: dict | None, error: BaseException | None) -> None:
        if error is None:
            _finish(cell, result, keep_last)
            ran.append(cell.key)
        else:
            _failed(cell, error)
            failed.append(cell.key)
        bar.update(1)

    if jobs <= 1:
        for cell in todo:
            try:
                result = runner(cell)
            except Exception as e:
                settle(cell, None, e)
            else:
                settle(cell, result, None)
    elif todo:
        # spawn: fresh interpreters, so no torch / OpenMP state is forked mid-flight.
        threads = max(1, (os.cpu_count() or 1) // jobs)
        pool = ProcessPoolExecutor(
            max_workers=jobs, mp_context=multiprocessing.get_context("spawn"), initializer=_limit_threads, initargs=(threads,)
        )
        try:
            futures = {pool.submit(runner, cell): cell for cell in todo}
            for fut in as_completed(futures):
                error = fut.exception()
                settle(futures[fut], None if error else fut.result(), error)
        except BaseException:
            # Ctrl-C must not wait for the running cells; they resume from `last` next time.
            pool.shutdown(wait=False, cancel_futures=True)
            raise
        pool.shutdown()
    bar.close()
    return {"ran": ran, "failed": failed}


# ---- the grid ---------------------------------------------------------------------------


def alpha_sweep(cfg: LossGridConfig, loss: GridLoss) -> list[float]:
    """The alphas ``loss`` chooses among on dev: its own sweep, else the grid's for sld; [] : none."""
    if loss.alpha_sweep is not None:
        return loss.alpha_sweep
    return cfg.alpha_sweep if loss.name == "sld" else []


def _swept(cfg: LossGridConfig) -> list[GridLoss]:
    return [loss for loss in cfg.losses if alpha_sweep(cfg, loss)]


def first_phase(cfg: LossGridConfig, base: LMConfig, toks: list[PreparedTokenizer], out: Path) -> list[Cell]:
    """Cells that need nothing else: every (tokenizer, loss, seed) but the swept losses', and the sweeps."""
    cells = []
    for tok in toks:
        for loss in cfg.losses:
            sweep = alpha_sweep(cfg, loss)
            if not sweep:
                cells += [make_cell(cfg, base, tok, loss, seed, out) for seed in cfg.seeds]
            cells += [make_cell(cfg, base, tok, loss, cfg.seeds[0], out, alpha=a, sweep=True) for a in sweep]
    return cells


def second_phase_keys(cfg: LossGridConfig, toks: list[PreparedTokenizer]) -> list[str]:
    """Keys of the swept losses' seeded cells, known before their alpha is."""
    return [f"{tok.name}/{loss.key}/seed{seed}" for tok in toks for loss in _swept(cfg) for seed in cfg.seeds]


def choose_alpha(sweep_cells: list[Cell]) -> tuple[float | None, dict[float, dict | None]]:
    """(the alpha with the lowest dev WER, or None while a sweep cell is pending; per-alpha dev scores)."""
    scores: dict[float, dict | None] = {}
    for cell in sweep_cells:
        result = read_result(cell)
        scores[cell.alpha] = None if result is None else result["evals"]["dev"]
    if any(s is None for s in scores.values()):
        return None, scores
    # min() keeps the first of equal WERs: ties go to the earlier alpha of the sweep.
    return min(scores, key=lambda a: scores[a]["wer"]), scores


def second_phase(
    cfg: LossGridConfig, base: LMConfig, toks: list[PreparedTokenizer], phase1: list[Cell], out: Path
) -> tuple[list[Cell], dict[str, dict], list[str]]:
    """The seeded cells of every (tokenizer, swept loss) whose sweep is done (its alpha chosen
    on dev), the sweeps' report (keyed ``tokenizer/loss``), and the keys of the seeded cells
    still waiting for their alpha."""
    cells: list[Cell] = []
    report: dict[str, dict] = {}
    waiting: list[str] = []
    for tok in toks:
        for loss in _swept(cfg):
            alpha, scores = choose_alpha([c for c in phase1 if c.tokenizer == tok.name and c.loss == loss.key and c.sweep])
            report[f"{tok.name}/{loss.key}"] = {
                "seed": cfg.seeds[0],
                "dev_wer": {a: None if s is None else s["wer"] for a, s in scores.items()},
                "dev_cer": {a: None if s is None else s["cer"] for a, s in scores.items()},
                "chosen": alpha,
            }
            if alpha is None:
                waiting += [f"{tok.name}/{loss.key}/seed{seed}" for seed in cfg.seeds]
            else:
                cells += [make_cell(cfg, base, tok, loss, seed, out, alpha=alpha) for seed in cfg.seeds]
    return cells, report, waiting


def estimate(
    cfg: LossGridConfig, base: LMConfig, toks: list[PreparedTokenizer], phase1: list[Cell],
    here: Callable[[str], bool], jobs: int,
) -> str:
    """One line: the trainings of the grid, those this run has left (``here``: the keys of this
    slice), times the step budget; with ``estimate_step_seconds``, the wall time in ``jobs``."""
    phase2, _, waiting = second_phase(cfg, base, toks, phase1, Path(cfg.out_dir))
    # The first seed's sld cell is the chosen alpha's sweep cell, not a training of its own.
    waiting = [k for k in waiting if not k.endswith(f"/seed{cfg.seeds[0]}")]
    cells = phase1 + phase2
    planned = len({c.dir for c in cells}) + len(waiting)
    todo = len({c.dir for c in cells if here(c.key) and not c.result_path.is_file()}) + sum(map(here, waiting))
    steps = base.optim.max_steps
    line = (
        f"loss grid: {len(toks)} tokenizer(s) x {len(cfg.losses)} losses x {len(cfg.seeds)} seeds"
        + "".join(f" + {loss.key} alpha sweep {alpha_sweep(cfg, loss)}" for loss in _swept(cfg))
        + f" = {planned} trainings of {steps} steps; {todo} to run here ({todo * steps} steps)"
    )
    if cfg.estimate_step_seconds and todo:
        minutes = math.ceil(todo / jobs) * steps * cfg.estimate_step_seconds / 60
        took = f"{minutes:.0f} min" if minutes < 90 else f"{minutes / 60:.1f} h"
        line += (
            f", ~{took} of training in {jobs} job(s) at {cfg.estimate_step_seconds:g} s/step"
            " (estimate_step_seconds; data preparation and decoding come on top)"
        )
    return line


def _say(line: str, progress: bool) -> None:
    # With progress bars on, the line is for the person watching them; otherwise for the log.
    if progress:
        tqdm.write(line)
    else:
        logger.info(line)


def _describe_loss(loss: GridLoss) -> str:
    if loss.name != "sld":
        return f"`{loss.key}`"
    return f"`{loss.key}` (sld: KL target {loss.kl_target}, {loss.kl_reduction}, eps {loss.eps:g}, T {loss.temperature:g})"


def _header(cfg: LossGridConfig, base: LMConfig, toks: list[PreparedTokenizer], done: int, total: int) -> list[str]:
    corpus = (
        f"synthetic, {cfg.corpus.synth.num_utts} sentences, seed {cfg.corpus.synth.seed}"
        if cfg.corpus.synth
        else f"{cfg.corpus.train} / {cfg.corpus.dev} / {cfg.corpus.test}"
    )
    model = base.model.init_from or f"preset {base.model.preset}"
    degraded = "none" if cfg.degraded is None else (
        f"{cfg.degraded.noise} noise at {cfg.degraded.snr_db:g} dB SNR, RT60 {cfg.degraded.rt60:g} s, DRR {cfg.degraded.drr_db:g} dB"
    )
    stages = [
        f"- shared {name}: `{stage.recipe}` {' '.join(stage.overrides)}, {stage.max_steps or 'its'} steps"
        for name, stage in (("encoder", cfg.encoder), ("text LM", cfg.textlm)) if stage is not None
    ]  # fmt: skip
    if cfg.speechlm is not None:
        steps = cfg.speechlm.max_steps or base.optim.max_steps
        stages.append(
            f"- shared speech LM (one per tokenizer, every cell's start): tasks {cfg.speechlm.mixture}, "
            f"{' '.join(cfg.speechlm.overrides)} {steps} steps"
        )
    return [
        f"- corpus: {corpus}; training speed factors {cfg.corpus.speed_perturb}",
        *stages,
        f"- tokenizers: {', '.join(t.name for t in toks)}",
        f"- losses: {', '.join(_describe_loss(loss) for loss in cfg.losses)} (baseline `{cfg.baseline}`); seeds {cfg.seeds}",
        f"- every cell: `{cfg.train.recipe}` {' '.join(cfg.train.overrides)}; model {model}, "
        f"{base.optim.max_steps} steps, time mask {base.time_mask:g}",
        f"- decoding: beam {cfg.decode.beam}, best checkpoint (dev WER); degraded test: {degraded}",
        f"- cells finished: {done} of {total}",
    ]


def run_loss_grid(
    config_path: str | Path,
    overrides: Sequence[str] = (),
    jobs: int = 1,
    cells: str | None = None,
    *,
    runner: CellRunner = run_cell,
    progress: bool = True,
) -> dict[str, Any]:
    """Runs (or resumes) the grid of ``config_path`` and writes its report; see the module docstring.

    ``cells="I/N"`` runs only this machine's share; ``runner`` replaces ``run_cell``
    (tests). Returns ``{out_dir, cells: {total, done, ran, failed, pending}, alpha, notes, plan, files}``,
    ``plan`` being the line printed before the first cell (``estimate``)."""
    cfg = load_config(LossGridConfig, config_path, list(overrides))
    base = check_grid(cfg)
    if jobs < 1:
        raise ConfigError(f"jobs must be >= 1, got {jobs}")
    part, parts = parse_slice(cells)
    out = Path(cfg.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    save_config(cfg, out / "grid.yaml")
    toks, notes = prepare_data(cfg, out, progress)
    if cfg.textlm is not None:
        base.model.init_from = str(pretrain_text_lm(cfg, corpus_manifests(cfg.corpus, out / "shared", progress), out / "shared").best)
    if cfg.speechlm is not None:
        toks = [replace(t, init_from=str(pretrain_speech_lm(cfg, base, t, out / "shared").best)) for t in toks]

    phase1 = first_phase(cfg, base, toks, out)
    order = {key: i for i, key in enumerate([c.key for c in phase1] + second_phase_keys(cfg, toks))}

    def here(key: str) -> bool:
        return order[key] % parts == part

    def mine(selected: list[Cell]) -> list[Cell]:
        return [c for c in selected if here(c.key)]

    plan = estimate(cfg, base, toks, phase1, here, jobs)
    _say(plan, progress)
    stats = run_cells(mine(phase1), runner, jobs, cfg.keep_last_checkpoint, progress)

    main = [c for c in phase1 if not c.sweep]
    phase2, sweep_report, pending = second_phase(cfg, base, toks, phase1, out)
    if phase2:
        more = run_cells(mine(phase2), runner, jobs, cfg.keep_last_checkpoint, progress)
        stats = {k: stats[k] + more[k] for k in stats}
        main += phase2

    results = [(c, read_result(c)) for c in main]
    done = [{**r, "tokenizer": c.tokenizer, "loss": c.loss, "alpha": c.alpha, "seed": c.seed} for c, r in results if r]
    for key, s in sweep_report.items():  # the seed noise the sweep's spread is read against
        dev = [r["evals"]["dev"]["wer"] for r in done if f"{r['tokenizer']}/{r['loss']}" == key and "dev" in r["evals"]]
        s["dev_seed_std"] = statistics.stdev(dev) if len(dev) > 1 else None
    pending += [c.key for c, r in results if r is None]
    total = len(toks) * len(cfg.losses) * len(cfg.seeds)
    if pending:
        notes.append(f"{len(pending)} cell(s) pending: {', '.join(sorted(pending))}")
    if stats["failed"]:
        notes.append(f"{len(stats['failed'])} cell(s) failed this run (see their error.txt): {', '.join(stats['failed'])}")
    known = {Path(c.dir).name for c in phase1 + main}
    stale = [d for d in (out / "cells").iterdir() if d.is_dir() and d.name not in known] if (out / "cells").is_dir() else []
    if stale:
        notes.append(f"{len(stale)} other cell director(ies) in cells/ belong to other configurations and are not reported")
    report = write_report(
        out, done,
        baseline=cfg.baseline, sweep=sweep_report or None, notes=notes,
        header=_header(cfg, base, toks, len(done), total), bootstrap=cfg.bootstrap, plots=cfg.plots,
    )  # fmt: skip
    return {
        "out_dir": str(out),
        "cells": {"total": total, "done": len(done), **stats, "pending": sorted(pending)},
        "alpha": {tok: {"chosen": s["chosen"], "dev_wer": s["dev_wer"]} for tok, s in sweep_report.items()},
        "notes": notes,
        "plan": plan,
        "files": report["files"],
    }
