"""Task templates, the task mixture, batching and time masking."""

import random
from collections import Counter

import pytest
import torch
from _vocab_util import ENCODEC, KMEANS, record, tiny_vocab

from unified_lm.config import from_dict
from unified_lm.errors import ConfigError
from unified_lm.tasks import TASKS, Role, TaskConfig, TaskMixture, TokenSequence, asr_prompt, collate, time_mask

VOCAB = tiny_vocab(speech=(KMEANS, ENCODEC))
CFG = TaskConfig()
P, T, S, PAD = Role.PROMPT, Role.TARGET, Role.SPEECH_INPUT, Role.PAD


def _speech(units, meta=KMEANS):
    return VOCAB.encode_units(units, meta.identity)


def test_registry_holds_the_four_tasks():
    assert {"asr", "speech_lm", "text_lm", "tts"} <= set(TASKS.names())


def test_asr_template_tokens_and_roles():
    rec = record(text="hello world", units=[1, 2, 3])
    seq = TASKS.get("asr")(rec, VOCAB, CFG)
    text = VOCAB.encode_text("hello world")
    assert seq.task == "asr"
    assert seq.tokens == [VOCAB.task_id("asr"), *_speech([1, 2, 3]), VOCAB.speech_end_id, *text, VOCAB.text_end_id]
    assert seq.roles == [P, S, S, S, P, *[T] * len(text), T]
    assert seq.tokens[: len(seq) - len(text) - 1] == asr_prompt(rec, VOCAB, CFG)


def test_tts_template_tokens_and_roles():
    seq = TASKS.get("tts")(record(text="hello", units=[4, 5]), VOCAB, CFG)
    text = VOCAB.encode_text("hello")
    assert seq.tokens == [VOCAB.task_id("tts"), *text, VOCAB.text_end_id, *_speech([4, 5]), VOCAB.speech_end_id]
    assert seq.roles == [P, *[P] * len(text), P, T, T, T]


def test_lm_templates_tokens_and_roles():
    rec = record(text="the cat", units=[0, 9])
    speech = TASKS.get("speech_lm")(rec, VOCAB, CFG)
    assert speech.tokens == [VOCAB.task_id("speech_lm"), *_speech([0, 9]), VOCAB.speech_end_id]
    assert speech.roles == [P, T, T, T]
    text = TASKS.get("text_lm")(rec, VOCAB, CFG)
    assert text.tokens == [VOCAB.task_id("text_lm"), *VOCAB.encode_text("the cat"), VOCAB.text_end_id]
    assert text.roles == [P] + [T] * (len(text) - 1)


def test_transcripts_are_cut_to_max_text_tokens():
    rec = record(text="the cat sat on the mat " * 20)
    assert len(VOCAB.encode_text(rec.text)) > 10
    seq = TASKS.get("asr")(rec, VOCAB, TaskConfig(max_text_tokens=10))
    assert seq.roles.count(T) == 10 + 1  # + <text_end>
    assert seq.tokens[-1] == VOCAB.text_end_id


def test_speech_is_cut_at_frame_boundaries():
    units = [0, 4, 1, 5, 2, 6, 3, 7]  # 4 EnCodec frames of 2 codebooks
    seq = TASKS.get("speech_lm")(record(units=units, meta=ENCODEC), VOCAB, TaskConfig(max_speech_tokens=5))
    assert seq.tokens[1:-1] == _speech([0, 4, 1, 5], ENCODEC)


def test_units_of_an_unknown_tokenizer_name_the_utterance():
    rec = record(id="spk1-007")
    rec.tokenizer = {"name": KMEANS.name, "hash": "stale"}
    with pytest.raises(ConfigError, match=r"utterance 'spk1-007'.*expects hash a1b2"):
        TASKS.get("asr")(rec, VOCAB, CFG)
    with pytest.raises(ValueError, match=r"utterance 'bad'.*unit 10 is outside"):
        TASKS.get("asr")(record(id="bad", units=[10]), VOCAB, CFG)


def test_task_config_loads_from_a_recipe_mapping():
    cfg = from_dict(TaskConfig, {"mixture": {"asr": 3, "tts": 1}, "max_text_tokens": 20})
    assert cfg.mixture == {"asr": 3.0, "tts": 1.0} and cfg.max_speech_tokens is None


def test_mixture_samples_tasks_with_their_weights():
    mix = TaskMixture(TaskConfig(mixture={"asr": 3.0, "tts": 1.0, "text_lm": 0.0}), VOCAB)
    assert mix.probabilities() == {"asr": 0.75, "tts": 0.25}
    rng = random.Random(0)
    counts = Counter(mix.sample(record(), rng).task for _ in range(2000))
    assert set(counts) == {"asr", "tts"}
    assert 0.70 < counts["asr"] / 2000 < 0.80

    def draws(seed):
        rng = random.Random(seed)
        return [mix.sample(record(), rng).task for _ in range(50)]

    assert draws(1) == draws(1) != draws(2)


@pytest.mark.parametrize(
    "cfg, match",
    [
        (TaskConfig(mixture={"asr": 1.0, "translate": 1.0}), "unknown task 'translate'"),
        (TaskConfig(mixture={}), "empty"),
        (TaskConfig(mixture={"asr": 0.0}), "positive weight"),
        (TaskConfig(mixture={"asr": -1.0}), ">= 0"),
        (TaskConfig(max_speech_tokens=0), "max_speech_tokens"),
    ],
)
def test_bad_mixtures_are_refused(cfg, match):
    with pytest.raises(ConfigError, match=match):
        TaskMixture(cfg, VOCAB)


def test_mixture_refuses_a_task_the_vocabulary_has_no_token_for():
    with pytest.raises(ConfigError, match="<tts>"):
        TaskMixture(TaskConfig(mixture={"tts": 1.0}), tiny_vocab(tasks=("asr",)))


def test_collate_right_pads_with_pad_roles_and_mask():
    a = TokenSequence([5, 6, 7], [P, S, T])
    b = TokenSequence([8], [P])
    batch = collate([a, b], pad_id=99)
    assert batch["input_ids"].tolist() == [[5, 6, 7], [8, 99, 99]]
    assert batch["roles"].tolist() == [[P, S, T], [P, PAD, PAD]]
    assert batch["attention_mask"].tolist() == [[1, 1, 1], [1, 0, 0]]
    assert all(t.dtype == torch.long for t in batch.values())
    with pytest.raises(ValueError, match="2 tokens but 1 roles"):
        collate([TokenSequence([1, 2], [P])], pad_id=0)


def _batch():
    seqs = [TASKS.get("asr")(record(text="the cat sat on the mat", units=list(range(10)) * 5), VOCAB, CFG),
            TASKS.get("text_lm")(record(text="hello"), VOCAB, CFG)]
    return collate(seqs, VOCAB.pad_id)


def test_time_mask_extremes_keep_task_token_and_padding():
    batch = _batch()
    ids, roles = batch["input_ids"], batch["roles"]
    before = ids.clone()
    none = time_mask(ids, roles, 0.0, VOCAB.pad_id, torch.Generator().manual_seed(0))
    assert torch.equal(none, ids)
    full = time_mask(ids, roles, 1.0, VOCAB.pad_id, torch.Generator().manual_seed(0))
    assert torch.equal(full[:, 0], ids[:, 0])  # task tokens survive
    assert (full[:, 1:] == VOCAB.pad_id).all()
    assert torch.equal(ids, before)  # a copy: the labels stay the unmasked ids


def test_time_mask_rate_and_reproducibility():
    batch = _batch()
    ids, roles = batch["input_ids"], batch["roles"]
    masked = time_mask(ids, roles, 0.3, VOCAB.pad_id, torch.Generator().manual_seed(1))
    maskable = roles != PAD
    maskable[:, 0] = False
    changed = (masked != ids) & maskable
    rate = changed.sum().item() / maskable.sum().item()
    assert 0.15 < rate < 0.45
    assert torch.equal(masked[~maskable], ids[~maskable])
    again = time_mask(ids, roles, 0.3, VOCAB.pad_id, torch.Generator().manual_seed(1))
    assert torch.equal(masked, again)
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        time_mask(ids, roles, 1.5, VOCAB.pad_id, torch.Generator())
