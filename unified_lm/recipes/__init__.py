"""Training recipes: each is a config class and a ``setup`` that builds the loop's ``Task``.

    lm      the unified speech-text decoder on a task mixture (recipes/lm.py)
    ctc     CTC pre-training of the speech encoder (recipes/ctc_encoder.py)
    textlm  a decoder pre-trained on text alone (recipes/text_lm.py)
    prefix  the prefix LM of the continuous path (recipes/prefix.py)
    hubert  HuBERT-style masked-prediction pre-training of a speech encoder (recipes/hubert.py)

Recipe modules are imported on first use: the prefix LM's pull in fairseq2, which the
``lm`` recipe never needs.
"""

from __future__ import annotations

import importlib

from ..errors import ConfigError
from ..training import TrainingRecipe

_MODULES = {"lm": "lm", "ctc": "ctc_encoder", "textlm": "text_lm", "prefix": "prefix", "hubert": "hubert"}
NAMES = tuple(_MODULES)


def get_recipe(name: str) -> TrainingRecipe:
    if name not in _MODULES:
        raise ConfigError(f"unknown training recipe {name!r}; known: {', '.join(NAMES)}")
    return importlib.import_module(f".{_MODULES[name]}", __name__).RECIPE


def recipe_for(cfg: object) -> TrainingRecipe:
    """The recipe whose config class ``cfg`` is an instance of."""
    from . import configs

    by_class = {configs.LMConfig: "lm", configs.CTCEncoderConfig: "ctc", configs.TextLMConfig: "textlm",
                configs.PrefixLMConfig: "prefix", configs.HubertPretrainConfig: "hubert"}
    if type(cfg) not in by_class:
        raise ConfigError(f"no training recipe takes a {type(cfg).__name__}")
    return get_recipe(by_class[type(cfg)])
