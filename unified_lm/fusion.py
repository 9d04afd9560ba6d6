"""Shallow fusion: an external text LM's opinion added to the ASR decoder's at every step.

Beam search then ranks each next text token by

    log p_ASR(token | speech, text so far) + weight * log p_LM(token | text so far)

(Gulcehre et al. 2015; the usual way an end-to-end recognizer uses text it was never
trained to read). The LM is a decoder of this toolkit trained on text alone (``train
textlm``), with the ASR decoder's text tokenizer (``data.text_tokenizer``), so both score
the same ids: it reads ``<text_lm> text so far`` and its ``<text_end>`` scores the end of
the transcript. Text is cheap where transcribed speech is not: the LM learns the language
from as many sentences as one has, without taking a step from ASR training.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from transformers import DynamicCache, LogitsProcessor, PreTrainedModel

from .errors import ConfigError
from .models import load_checkpoint
from .vocab import UnifiedVocab


@dataclass
class TextLM:
    model: PreTrainedModel
    text_size: int  # its ids below this are text, the same as the ASR decoder's
    start_id: int  # <text_lm>: the LM's first token
    text_end_id: int
    weight: float
    source: str  # the checkpoint directory, as given

    @classmethod
    def load(
        cls, directory: str | Path, asr_vocab: UnifiedVocab, weight: float, device: torch.device | str = "cpu"
    ) -> "TextLM":
        """The text LM of ``directory`` on ``device``, checked to share ``asr_vocab``'s text
        ids (the ids after them may differ: the LM has no speech, the prefix LM other specials)."""
        if weight < 0:
            raise ConfigError(f"the text LM's weight must be >= 0, got {weight}")
        model, vocab, _ = load_checkpoint(directory)
        if vocab.text_tokenizer.to_str() != asr_vocab.text_tokenizer.to_str():
            raise ConfigError(
                f"{directory}: the text LM has another text tokenizer than the ASR decoder; train it with "
                "data.text_tokenizer=<the decoder's checkpoint> (or the decoder with the LM's)"
            )
        return cls(model.to(device), vocab.text_size, vocab.task_id("text_lm"), vocab.text_end_id, weight, str(directory))

    def describe(self) -> dict[str, str | float]:
        """What a scores file records of the fusion."""
        return {"lm": self.source, "lm_weight": self.weight}

    def processor(self, prompt_width: int, stop_id: int) -> "FusionProcessor":
        """For a search whose text starts after ``prompt_width`` ids and ends with ``stop_id``
        (``<text_end>`` in discrete ASR, ``<cont>`` in the prefix LM's)."""
        return FusionProcessor(self, prompt_width, stop_id)


class FusionProcessor(LogitsProcessor):
    """Adds ``weight * log p_LM`` to the scores of the text ids, and the LM's score of
    ``<text_end>`` to the search's stop id.

    One per ``generate`` call. The LM keeps a KV cache across its steps: each row's text is
    a row of the previous step's plus one token (beam search reorders the rows), so the
    cache is reordered to match and the LM reads one token a step.
    """

    def __init__(self, lm: TextLM, prompt_width: int, stop_id: int):
        self.lm, self.width, self.stop_id = lm, prompt_width, stop_id
        self.cache: DynamicCache | None = None
        self.rows: dict[tuple[int, ...], int] = {}  # last step's texts -> their cache row

    @torch.no_grad()
    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        lm, text = self.lm, input_ids[:, self.width :]
        # A finished row goes on with padding: its scores are unused, but the ids the LM
        # reads must be its own.
        text = text.masked_fill(text >= lm.text_size, lm.text_end_id)
        log_p = self._next_log_probs(text)
        scores = scores.clone()
        scores[:, : lm.text_size] += lm.weight * log_p[:, : lm.text_size].to(scores.dtype)
        scores[:, self.stop_id] += lm.weight * log_p[:, lm.text_end_id].to(scores.dtype)
        return scores

    def _next_log_probs(self, text: torch.Tensor) -> torch.Tensor:
        texts = [tuple(row) for row in text.tolist()]
        parents = [self.rows.get(t[:-1]) for t in texts] if texts[0] else []
        if self.cache is not None and parents and None not in parents:
            self.cache.reorder_cache(torch.tensor(parents, device=text.device))
            step_in = text[:, -1:]
        else:  # the first step (or rows not grown from the last ones): read the whole text
            start = torch.full((text.size(0), 1), self.lm.start_id, dtype=text.dtype, device=text.device)
            self.cache, step_in = DynamicCache(), torch.cat([start, text], dim=1)
        logits = self.lm.model(input_ids=step_in, past_key_values=self.cache, use_cache=True).logits
        self.rows = {t: i for i, t in enumerate(texts)}
        return logits[:, -1].float().log_softmax(-1)
