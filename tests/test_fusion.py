"""Shallow fusion of a text LM (``train textlm`` with the decoder's text tokenizer) into ASR decoding."""

import json

import pytest
import torch
from _lm_util import SENTENCES, trained_run  # noqa: F401

from unified_lm.cli import main as cli_main
from unified_lm.config import from_dict
from unified_lm.decode import decode, generate, transcribe
from unified_lm.errors import ConfigError
from unified_lm.fusion import TextLM
from unified_lm.io import read_jsonl, write_jsonl
from unified_lm.models import load_checkpoint
from unified_lm.tasks import TaskConfig
from unified_lm.train import main as train_main
from unified_lm.unit_data import read_checked_manifest

TINY = {"preset": "tiny", "hidden_size": 32, "num_layers": 2, "num_heads": 2, "intermediate_size": 64}
TEXTS = ["the dog sat", "a cat ran home", "birds read books", "we fly south", "the rain is hot"]


def _train_text_lm(root, text_tokenizer=None, vocab_size=280):
    write_jsonl(root / "train.jsonl", [{"id": f"t{i}", "audio": "x.wav", "text": t, "speaker": "s", "duration": 1.0} for i, t in enumerate(SENTENCES)])
    (root / "more.txt").write_text("\n".join(TEXTS) + "\n")
    data = {"train": str(root / "train.jsonl"), "dev": None, "text_files": [str(root / "more.txt")],
            "batch_size": 4, "text_vocab_size": vocab_size}
    if text_tokenizer:
        data["text_tokenizer"] = str(text_tokenizer)
    config = {"data": data, "model": TINY, "optim": {"max_steps": 40, "warmup_steps": 2, "lr": 3e-3},
              "eval": {"every_steps": 40}, "log_every_steps": 10, "out_dir": str(root / "run")}
    (root / "textlm.yaml").write_text(json.dumps(config))
    assert train_main(["textlm", "--config", str(root / "textlm.yaml")]) == 0
    return root / "run" / "best"


@pytest.fixture(scope="module")
def fused(trained_run, tmp_path_factory):  # noqa: F811
    corpus, run, _ = trained_run
    lm_dir = _train_text_lm(tmp_path_factory.mktemp("textlm"), text_tokenizer=run / "best")
    model, vocab, cfg = load_checkpoint(run / "best")
    records = read_checked_manifest(corpus["dev"], vocab)
    return model, vocab, from_dict(TaskConfig, cfg["tasks"]), records, lm_dir


def test_the_text_lm_takes_the_decoders_text_tokenizer(fused):
    model, vocab, _, _, lm_dir = fused
    _, lm_vocab, _ = load_checkpoint(lm_dir)
    assert lm_vocab.text_tokenizer.to_str() == vocab.text_tokenizer.to_str()
    assert lm_vocab.text_end_id == vocab.text_end_id and len(lm_vocab) < len(vocab)  # no speech rows


def test_weight_zero_changes_nothing(fused):
    model, vocab, tasks, records, lm_dir = fused
    lm = TextLM.load(lm_dir, vocab, weight=0.0)
    for beam in (1, 3):
        plain = transcribe(model, vocab, records, tasks, batch_size=4, beam=beam)
        assert transcribe(model, vocab, records, tasks, batch_size=4, beam=beam, fusion=lm) == plain


def test_the_processor_adds_the_weighted_lm_log_probs_of_text_tokens(fused):
    model, vocab, _, _, lm_dir = fused
    lm = TextLM.load(lm_dir, vocab, weight=0.5)
    width, text = 7, [[3, 5], [4, 4]]
    input_ids = torch.tensor([[vocab.pad_id] * width + t for t in text])
    scores = torch.randn(2, len(vocab))
    scores[:, vocab.pad_id] = -float("inf")
    fused_scores = lm.processor(width, vocab.text_end_id)(input_ids, scores)
    log_p = lm.model(input_ids=torch.tensor([[lm.start_id, *t] for t in text])).logits[:, -1].log_softmax(-1)
    n, end = vocab.text_size, vocab.text_end_id
    torch.testing.assert_close(fused_scores[:, :n], scores[:, :n] + 0.5 * log_p[:, :n])
    torch.testing.assert_close(fused_scores[:, end], scores[:, end] + 0.5 * log_p[:, end])
    others = [i for i in range(n, len(vocab)) if i != end]
    assert torch.equal(fused_scores[:, others], scores[:, others])  # specials and speech untouched
    assert fused_scores[:, vocab.pad_id].eq(-float("inf")).all()  # a suppressed id stays suppressed
    # Another stop id (the prefix LM's <cont>) gets the LM's <text_end> score.
    cont = vocab.task_id("cont") if "cont" in vocab.tasks else vocab.special_ids["<cont>"]
    to_cont = lm.processor(width, cont)(input_ids, scores)
    torch.testing.assert_close(to_cont[:, cont], scores[:, cont] + 0.5 * log_p[:, end])
    assert torch.equal(to_cont[:, end], scores[:, end])


def test_the_lm_cache_follows_the_beams_reordering(fused):
    """Scores with the LM's KV cache across steps (rows reordered and duplicated, as beam
    search does) equal those of reading each text whole."""
    _, vocab, _, _, lm_dir = fused
    lm = TextLM.load(lm_dir, vocab, weight=1.0)
    texts = [[[], [], []], [[5], [7], [5]], [[7, 4], [5, 6], [5, 6]], [[5, 6, 9], [7, 4, 3], [5, 6, 9]]]
    cached = lm.processor(2, vocab.text_end_id)
    for step in texts:
        ids = torch.tensor([[vocab.pad_id] * 2 + t for t in step]).reshape(3, -1)
        scores = torch.zeros(3, len(vocab))
        whole = lm.processor(2, vocab.text_end_id)(ids, scores)  # a fresh processor reads it all
        torch.testing.assert_close(cached(ids, scores), whole, rtol=1e-4, atol=1e-5)
    assert cached.cache.get_seq_length() == 4  # <text_lm> + three tokens, one a step


def test_a_heavy_lm_writes_its_own_sentence(fused):
    """With the LM weighted 1000 times the decoder, every utterance gets the LM's own greedy
    sentence: the fused scores reach the search."""
    model, vocab, tasks, records, lm_dir = fused
    lm = TextLM.load(lm_dir, vocab, weight=1000.0)
    own = generate(lm.model, [[lm.start_id]], stop_id=vocab.text_end_id, pad_id=vocab.pad_id,
                   allowed=[*range(vocab.text_size), vocab.text_end_id], vocab_size=lm.model.config.vocab_size,
                   max_new_tokens=20)[0]
    hyps = transcribe(model, vocab, records, tasks, batch_size=4, max_new_tokens=20, fusion=lm)
    assert hyps == [vocab.decode_text(own)] * len(records)
    assert hyps != [r.text for r in records]


def test_decode_records_the_lm_and_cli_passes_it(fused, trained_run, tmp_path, capsys):  # noqa: F811
    corpus, run, _ = trained_run
    lm_dir = fused[-1]
    scores = decode(run / "best", corpus["dev"], tmp_path / "a.jsonl", beam=2, lm=lm_dir, lm_weight=0.2)
    assert scores["lm"] == str(lm_dir) and scores["lm_weight"] == 0.2
    assert cli_main(["decode", "--checkpoint", str(run / "best"), "--units", str(corpus["dev"]), "--out",
                     str(tmp_path / "b.jsonl"), "--beam", "2", "--lm", str(lm_dir), "--lm-weight", "0.2"]) == 0
    assert [r["hyp"] for r in read_jsonl(tmp_path / "b.jsonl")] == [r["hyp"] for r in read_jsonl(tmp_path / "a.jsonl")]


def test_lm_with_another_tokenizer_or_task_is_refused(fused, trained_run, tmp_path):  # noqa: F811
    corpus, run, _ = trained_run
    _, vocab, _, _, lm_dir = fused
    own_bpe = _train_text_lm(tmp_path / "own", vocab_size=270)
    with pytest.raises(ConfigError, match="another text tokenizer than the ASR decoder; train it with data.text_tokenizer"):
        TextLM.load(own_bpe, vocab, weight=0.3)
    with pytest.raises(ConfigError, match="fuses into ASR only, not tts"):
        decode(run / "best", corpus["dev"], tmp_path / "x.jsonl", task="tts", lm=lm_dir)
    with pytest.raises(ConfigError, match="weight must be >= 0"):
        TextLM.load(lm_dir, vocab, weight=-1)
    assert not (tmp_path / "x.jsonl").exists()


def test_cli_refuses_an_lm_for_a_ctc_encoder(tmp_path, capsys):
    from unified_lm.models import ENCODER_WEIGHTS

    (tmp_path / "enc").mkdir()
    (tmp_path / "enc" / ENCODER_WEIGHTS).write_bytes(b"")
    assert cli_main(["decode", "--checkpoint", str(tmp_path / "enc"), "--manifest", str(tmp_path / "a.jsonl"),
                     "--out", str(tmp_path / "o.jsonl"), "--lm", str(tmp_path / "lm")]) == 2
    assert "--lm fuses a text LM into a decoder, and a CTC encoder has none" in capsys.readouterr().err
