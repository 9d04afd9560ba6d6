import pytest
import torch
from _lm_util import SENTENCES, make_records, make_tokenizer
from hypothesis import given, settings
from hypothesis import strategies as st

from unified_lm.unit_data import BucketBatchSampler, UnitDataset, make_loader
from unified_lm.errors import ConfigError, DataError
from unified_lm.io import write_jsonl
from unified_lm.tasks import TaskConfig
from unified_lm.tasks.templates import Role
from unified_lm.vocab import UnifiedVocab

lengths_st = st.lists(st.integers(1, 60), min_size=1, max_size=80)


@settings(max_examples=60, deadline=None)
@given(lengths=lengths_st, extra=st.integers(0, 200), seed=st.integers(0, 5), epoch=st.integers(0, 3))
def test_budget_respected_and_every_example_once(lengths, extra, seed, epoch):
    max_tokens = max(lengths) + extra
    sampler = BucketBatchSampler(lengths, max_tokens, seed=seed)
    sampler.set_epoch(epoch)
    batches = list(sampler)
    assert len(batches) == len(sampler)
    for b in batches:
        assert len(b) * max(lengths[i] for i in b) <= max_tokens
    assert sorted(i for b in batches for i in b) == list(range(len(lengths)))


@settings(max_examples=40, deadline=None)
@given(lengths=lengths_st, replicas=st.integers(1, 4), epoch=st.integers(0, 3))
def test_ranks_get_equal_batch_counts_and_cover_the_data(lengths, replicas, epoch):
    max_tokens = max(lengths) * 3
    per_rank = []
    for rank in range(replicas):
        sampler = BucketBatchSampler(lengths, max_tokens, seed=1, num_replicas=replicas, rank=rank)
        sampler.set_epoch(epoch)
        per_rank.append(list(sampler))
    assert len({len(b) for b in per_rank}) == 1
    assert len(per_rank[0]) == len(sampler)
    assert {i for batches in per_rank for b in batches for i in b} == set(range(len(lengths)))


def test_batches_are_deterministic_and_reshuffled_per_epoch():
    lengths = [(i * 7) % 23 + 1 for i in range(200)]

    def epoch_batches(seed, epoch):
        s = BucketBatchSampler(lengths, 64, seed=seed)
        s.set_epoch(epoch)
        return list(s)

    assert epoch_batches(0, 0) == epoch_batches(0, 0)
    assert epoch_batches(0, 0) != epoch_batches(0, 1)
    assert epoch_batches(0, 0) != epoch_batches(1, 0)


def test_batches_group_similar_lengths():
    lengths = [1, 50] * 20
    sampler = BucketBatchSampler(lengths, 100, seed=0)
    for b in sampler:
        assert len({lengths[i] for i in b}) == 1


def test_skip_resumes_mid_epoch():
    lengths = [(i * 5) % 17 + 1 for i in range(100)]
    sampler = BucketBatchSampler(lengths, 40, seed=3, num_replicas=2, rank=1)
    sampler.set_epoch(2)
    full = list(sampler)
    sampler.set_epoch(2, skip=3)
    assert list(sampler) == full[3:]


def test_example_longer_than_budget_is_a_config_error():
    with pytest.raises(ConfigError, match="max_tokens=10 is below the longest sequence"):
        BucketBatchSampler([3, 11], 10)


@pytest.fixture
def corpus(tmp_path):
    meta = make_tokenizer(tmp_path / "tok")
    write_jsonl(tmp_path / "units.jsonl", make_records(meta, SENTENCES))
    vocab = UnifiedVocab.train(SENTENCES, [meta], text_vocab_size=300)
    return tmp_path / "units.jsonl", vocab, meta


def test_dataset_task_draws_depend_on_seed_epoch_index(corpus):
    path, vocab, _ = corpus
    tasks = TaskConfig(mixture={"asr": 1.0, "tts": 1.0})
    a, b = UnitDataset(path, vocab, tasks, seed=0), UnitDataset(path, vocab, tasks, seed=0)

    def draws(ds, epoch):
        ds.set_epoch(epoch)
        return [ds[i].task for i in range(len(ds))]

    assert draws(a, 0) == draws(b, 0)
    assert any(draws(a, 0) != draws(a, e) for e in range(1, 6))
    # Lengths known before the draw bound every drawn sequence.
    for e in range(3):
        a.set_epoch(e)
        assert all(len(a[i]) <= a.lengths[i] for i in range(len(a)))


def test_loader_yields_right_padded_batches(corpus):
    path, vocab, _ = corpus
    ds = UnitDataset(path, vocab, TaskConfig())
    batches = list(make_loader(ds, BucketBatchSampler(ds.lengths, 60, seed=0)))
    assert sum(len(b["input_ids"]) for b in batches) == len(ds)
    for b in batches:
        assert b["input_ids"].numel() <= 60
        assert (b["input_ids"][b["attention_mask"] == 0] == vocab.pad_id).all()


def test_sentences_without_speech_follow_the_utterances_as_text_lm_sequences(corpus):
    path, vocab, _ = corpus
    texts = ["a dog ran home", "the sun is up"]
    ds = UnitDataset(path, vocab, TaskConfig(mixture={"asr": 1.0}), texts=texts)
    n = len(ds.records)
    assert len(ds) == n + 2 and len(ds.lengths) == n + 2
    assert all(ds[i].task == "asr" for i in range(n))
    first = ds[n]
    assert first.task == "text_lm" and len(first) == ds.lengths[n]
    target = [t for t, r in zip(first.tokens, first.roles) if r == Role.TARGET]
    assert target[-1] == vocab.text_end_id and vocab.decode_text(target[:-1]) == texts[0]
    batches = list(make_loader(ds, BucketBatchSampler(ds.lengths, 60, seed=0)))
    assert sum(len(b["input_ids"]) for b in batches) == n + 2


def test_worker_processes_build_the_same_batches(corpus, monkeypatch):
    import unified_lm.unit_data as unit_data

    path, vocab, _ = corpus
    ds = UnitDataset(path, vocab, TaskConfig())
    ds.set_epoch(3)  # the epoch travels to the workers with the dataset
    sampler = BucketBatchSampler(ds.lengths, 60, seed=0)
    alone, workers = list(make_loader(ds, sampler, 0)), list(make_loader(ds, sampler, 2))
    assert len(alone) == len(workers) > 1
    for a, b in zip(alone, workers):
        assert all(torch.equal(a[k], b[k]) for k in a)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert make_loader(ds, sampler).num_workers == 0 == unit_data.default_workers()  # CPUs only: none
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert unit_data.default_workers() >= 1


def test_tokenizer_mismatch_names_file_and_hashes(corpus, tmp_path):
    _, vocab, meta = corpus
    other = make_tokenizer(tmp_path / "other", hash_="0" * 16)
    write_jsonl(tmp_path / "other.jsonl", make_records(other, SENTENCES[:2]))
    with pytest.raises(DataError) as err:
        UnitDataset(tmp_path / "other.jsonl", vocab, TaskConfig())
    msg = str(err.value)
    assert "other.jsonl" in msg and "u000" in msg
    assert meta.hash in msg and "0" * 16 in msg


def test_out_of_range_units_are_a_data_error(corpus, tmp_path):
    _, vocab, meta = corpus
    [record] = make_records(meta, ["the cat"])
    record["units"].append(10_000)
    write_jsonl(tmp_path / "bad.jsonl", [record])
    with pytest.raises(DataError, match="bad.jsonl.*unit 10000 is outside"):
        UnitDataset(tmp_path / "bad.jsonl", vocab, TaskConfig())
