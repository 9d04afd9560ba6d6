"""Tokenizer recipes: the typed form of a YAML file in ``tokenizers/``.

A recipe names its discretizer ``kind`` and carries that kind's section (``kmeans:`` or
``encodec:``) plus the unit post-processing shared by all kinds (``post:``)::

    name: fbank-km500
    kind: kmeans
    kmeans: {features: {type: fbank, cmn: true}, k: 500}
    post: {dedup: false, subwords: null, subword_vocab_size: null}
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from ..config import apply_overrides, from_dict, load_yaml
from ..errors import ConfigError
from .extractors import normalized_spec


@dataclass
class SklearnKMeansConfig:
    """MiniBatchKMeans settings of the reference recipe (fairseq ``learn_kmeans.py`` as the
    SLD recipe ran it: batches of 10000 frames, reassignment ratio 0.01)."""

    batch_size: int = 10000
    reassignment_ratio: float = 0.01
    max_iter: int = 100
    n_init: int = 20
    max_no_improvement: int = 100
    tol: float = 0.0
    init: str = "k-means++"


@dataclass
class KMeansConfig:
    # {"type": <feature extractor name>, ...that extractor's options}; see features.py.
    features: dict[str, Any] = field(default_factory=lambda: {"type": "fbank"})
    k: int = 500
    backend: str = "faiss"  # "faiss" or "sklearn"; both fit and assign with the same centroids
    # Frames used for fitting: each frame is kept with this probability, then at most
    # max_frames of those (a uniform sample), so memory stays bounded on any corpus.
    sample_fraction: float = 0.1
    max_frames: int = 1_000_000
    seed: int = 0
    niter: int = 25  # faiss k-means iterations
    sklearn: SklearnKMeansConfig = field(default_factory=SklearnKMeansConfig)

    def check(self) -> None:
        """Checks the values and spells out the feature options in full."""
        if self.k < 2:
            raise ConfigError(f"kmeans.k must be at least 2, got {self.k}")
        if not 0.0 < self.sample_fraction <= 1.0:
            raise ConfigError(f"kmeans.sample_fraction must be in (0, 1], got {self.sample_fraction}")
        if self.max_frames < self.k:
            raise ConfigError(f"kmeans.max_frames ({self.max_frames}) must be at least kmeans.k ({self.k})")
        if "type" not in self.features:
            raise ConfigError("kmeans.features needs a 'type' (fbank, mfcc or ssl)")
        # Spelled out in full, so a saved recipe (and its hash) never depends on defaults.
        self.features = normalized_spec(self.features)


@dataclass
class EncodecConfig:
    """An EnCodec model and how its codes become units.

    The architecture fields default to the published 24 kHz model; they are configurable so
    that a small model (tests) or another checkpoint loads through the same recipe.
    """

    # A local state dict, e.g. encodec_24khz-d7cc33bc.th (the encodec package's own
    # EncodecModel.encodec_model_24khz() downloads it at run time, which cannot work offline),
    # or a Hugging Face EncodecModel directory, whose config then replaces the fields below.
    checkpoint: str | None = None
    device: str = "cpu"  # where the codec runs; not part of the tokenizer's identity
    bandwidth: float = 1.5  # kbps; 1.5/3/6/12/24 -> 2/4/8/16/32 codebooks for the 24 kHz model
    keep_codebooks: int | None = None  # keep only the first n codebooks of that bandwidth
    sample_rate: int = 24000
    channels: int = 1
    target_bandwidths: list[float] = field(default_factory=lambda: [1.5, 3.0, 6.0, 12.0, 24.0])
    dimension: int = 128
    n_filters: int = 32
    ratios: list[int] = field(default_factory=lambda: [8, 5, 4, 2])
    n_residual_layers: int = 1
    lstm: int = 2
    causal: bool = True
    norm: str = "weight_norm"
    n_q: int = 32
    bins: int = 1024
    normalize: bool = False

    def check(self) -> None:
        if self.bandwidth not in self.target_bandwidths:
            raise ConfigError(f"encodec.bandwidth {self.bandwidth} is not one of {self.target_bandwidths}")
        if self.keep_codebooks is not None and self.keep_codebooks < 1:
            raise ConfigError(f"encodec.keep_codebooks must be at least 1, got {self.keep_codebooks}")


@dataclass
class PostConfig:
    dedup: bool = False  # collapse runs of one unit; the run lengths become `durations`
    # A subword model of `subword_vocab_size` pieces over unit strings; the pieces then are the
    # units. "unigram": SentencePiece, as the reference recipe; "bpe": HF tokenizers' BPE.
    subwords: Literal["unigram", "bpe"] | None = None
    subword_vocab_size: int | None = None
    max_piece_units: int | None = 16  # the longest piece, in units (SentencePiece's default, the reference's)

    def check(self) -> None:
        if (self.subwords is None) != (self.subword_vocab_size is None):
            raise ConfigError("post.subwords and post.subword_vocab_size go together (both set, or both null)")
        if self.subword_vocab_size is not None and self.subword_vocab_size < 1:
            raise ConfigError(f"post.subword_vocab_size must be positive, got {self.subword_vocab_size}")
        if self.max_piece_units is not None and self.max_piece_units < 1:
            raise ConfigError(f"post.max_piece_units must be positive, got {self.max_piece_units}")


@dataclass
class TokenizerRecipe:
    name: str
    kind: str  # the discretizer registry name; its section below must be set
    kmeans: KMeansConfig | None = None
    encodec: EncodecConfig | None = None
    post: PostConfig = field(default_factory=PostConfig)

    @property
    def section(self) -> Any:
        """The kind's own config (``self.kmeans`` for kind ``kmeans``)."""
        return getattr(self, self.kind)

    def check(self) -> None:
        sections = [f.name for f in dataclasses.fields(self) if f.name not in ("name", "kind", "post")]
        if self.kind not in sections:
            raise ConfigError(f"unknown discretizer kind {self.kind!r}; known: {', '.join(sections)}")
        if self.section is None:
            raise ConfigError(f"kind {self.kind!r} needs a '{self.kind}:' section")
        extra = [s for s in sections if s != self.kind and getattr(self, s) is not None]
        if extra:
            raise ConfigError(f"section(s) {extra} do not apply to kind {self.kind!r}")
        self.section.check()
        self.post.check()


def load_recipe(path: str | Path, overrides: list[str] | tuple[str, ...] = ()) -> TokenizerRecipe:
    """Reads a recipe, applies ``a.b=value`` overrides and checks it; errors name the file."""
    data = apply_overrides(_migrate(load_yaml(path)), list(overrides))
    recipe = from_dict(TokenizerRecipe, data, str(path))
    try:
        recipe.check()
    except ConfigError as e:
        raise ConfigError(f"{path}: {e}") from None
    return recipe


def _migrate(data: dict[str, Any]) -> dict[str, Any]:
    """Tokenizer directories fitted before ``post.subwords`` existed saved ``post.bpe_vocab_size``:
    they keep loading, as the uncapped BPE they were."""
    post = data.get("post")
    if isinstance(post, dict) and "bpe_vocab_size" in post:
        size = post.pop("bpe_vocab_size")
        if size is not None:
            post.update(subwords="bpe", subword_vocab_size=size, max_piece_units=None)
    return data


def absolute_model_paths(rec: TokenizerRecipe) -> None:
    """Names the recipe's model (``kmeans.features.model_path``, ``encodec.checkpoint``) by an
    absolute path, so a saved recipe (a tokenizer, a feature dump) works from any directory."""
    def absolute(path: str | None) -> str | None:
        return str(Path(path).expanduser().resolve()) if path else path

    if rec.kind == "kmeans" and "model_path" in rec.kmeans.features:
        rec.kmeans.features["model_path"] = absolute(rec.kmeans.features["model_path"])
    elif rec.kind == "encodec":
        rec.encodec.checkpoint = absolute(rec.encodec.checkpoint)
