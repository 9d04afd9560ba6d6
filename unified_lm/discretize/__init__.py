"""Speech discretizers: recipes in ``tokenizers/`` -> fitted tokenizer dirs -> unit manifests.

    meta = fit_tokenizer("tokenizers/fbank-km500.yaml", "data/train.jsonl", "runs/tok")
    apply_tokenizer("runs/tok", "data/train.jsonl", "runs/units/train.jsonl")
    # Model features computed once, read by both (fairseq's dump_hubert_feature step):
    dump_features("tokenizers/ssl-km.yaml", "data/train.jsonl", "runs/feats/train")
    fit_tokenizer("tokenizers/ssl-km.yaml", "data/train.jsonl", "runs/tok", features="runs/feats/train")
    units, durations = load_tokenizer("runs/tok").encode(wav_16k)
"""

from ..tokenizer_meta import TokenizerMeta
from . import codec, kmeans  # noqa: F401  (importing the kinds registers them in DISCRETIZERS)
from .apply import apply_tokenizer, merge_shards, shard_path
from .base import DISCRETIZERS
from .dump import FeatureDump, dump_features
from .extractors import FEATURES
from .kmeans import KMEANS_BACKENDS
from .tokenizer import SpeechTokenizer, fit_tokenizer, load_tokenizer
from .tokenizer_recipe import TokenizerRecipe, load_recipe

__all__ = [
    "DISCRETIZERS",
    "FeatureDump",
    "FEATURES",
    "KMEANS_BACKENDS",
    "TokenizerRecipe",
    "SpeechTokenizer",
    "TokenizerMeta",
    "apply_tokenizer",
    "dump_features",
    "fit_tokenizer",
    "load_recipe",
    "load_tokenizer",
    "merge_shards",
    "shard_path",
]
