"""The prefix LM: encoder, packing of the teacher-forced sequence, forward and decoding."""

import pytest
import torch
from _prefix_util import TINY_DECODER, TINY_ENCODER, TINY_SPECTROGRAM

from unified_lm.config import from_dict
from unified_lm.losses.spectrogram import IGNORE
from unified_lm.models.decoder import build_model
from unified_lm.models.prefix import (
    EncoderConfig,
    Kind,
    PackedBatch,
    PrefixEncoder,
    PrefixLM,
    PrefixModelConfig,
    SpecAugmentConfig,
)
from unified_lm.models.prefix.encoder import warp_frequencies
from unified_lm.prefix_lm.inference import generate_frames, transcribe_prefix
from unified_lm.prefix_lm.utterances import Packer, Utterance, frame_stats
from unified_lm.vocab import CharVocab, UnifiedVocab

TEXTS = ["hello world", "the cat sat on the mat", "a quick brown fox jumps"]


@pytest.fixture(scope="module")
def vocab():
    return UnifiedVocab.train(TEXTS * 5, [], 280)


@pytest.fixture(scope="module")
def chars():
    return CharVocab.build(TEXTS)


def utterances():
    g = torch.Generator().manual_seed(0)
    return [
        Utterance("a", torch.randn(50, 80, generator=g), "hello world", "the cat", torch.randn(5, 80, generator=g)),
        Utterance("b", torch.randn(30, 80, generator=g), "a quick brown fox"),  # ASR only
        Utterance("c", torch.randn(41, 80, generator=g), "the cat", "sat on the mat", torch.randn(8, 80, generator=g)),
    ]


def make_model(vocab, chars, bridge="conv"):
    bridge, _, mlp = bridge.partition("+")  # "conv+mlp": SLAM-LLM's two-layer projector
    cfg = from_dict(
        PrefixModelConfig,
        {
            "encoder": TINY_ENCODER,
            "bridge": {"name": bridge},
            "projector_hidden": 24 if mlp else 0,
            "decoder": TINY_DECODER,
            # No pre-net dropout at inference, so decoding is deterministic and comparable.
            "spectrogram": {**TINY_SPECTROGRAM, "prenet_dropout_at_inference": False},
        },
    )
    torch.manual_seed(0)
    model = PrefixLM(cfg, build_model(cfg.decoder, vocab), len(chars))
    model.frame_mean, model.frame_std = frame_stats(utterances())
    return model.eval()


def packer_for(model, vocab, chars):
    return Packer(vocab, chars, model.reduction, model.frame_mean, model.frame_std)


def test_encoder_subsamples_4x_and_ignores_padding():
    torch.manual_seed(0)
    encoder = PrefixEncoder(EncoderConfig(**TINY_ENCODER), num_chars=10).eval()
    feats = torch.randn(2, 50, 80)
    feats[1, 23:] = 1e3  # padding junk
    out, lengths = encoder(feats, torch.tensor([50, 23]))
    assert lengths.tolist() == [((50 - 1) // 2 - 1) // 2, ((23 - 1) // 2 - 1) // 2] == [11, 5]
    assert out.shape == (2, 11, TINY_ENCODER["dim"])
    alone, _ = encoder(feats[1:, :23], torch.tensor([23]))
    torch.testing.assert_close(out[1, :5], alone[0], atol=1e-5, rtol=1e-4)
    assert torch.all(out[1, 5:] == 0)
    with pytest.raises(ValueError, match="at least 7"):
        encoder(torch.randn(1, 6, 80), torch.tensor([6]))


def test_specaugment_masks_only_in_training():
    encoder = PrefixEncoder(EncoderConfig(**TINY_ENCODER), num_chars=10)
    feats = torch.ones(4, 200, 80)
    encoder.train()
    assert (encoder.specaugment(feats) == 0).any()
    encoder.eval()
    assert torch.equal(encoder.specaugment(feats), feats)


def test_frequency_warp_stretches_each_utterance_by_its_factor():
    feats = torch.arange(10.0).expand(2, 3, 10)  # every frame: bin f holds f
    warped = warp_frequencies(feats, torch.tensor([1.0, 2.0]))
    assert torch.equal(warped[0], feats[0])  # factor 1: unchanged
    assert torch.allclose(warped[1], feats[1] / 2)  # factor 2: bin f takes bin f/2's value
    squeezed = warp_frequencies(feats, torch.tensor([0.5, 0.5]))
    assert squeezed[0, 0].tolist() == [0, 2, 4, 6, 8, 9, 9, 9, 9, 9]  # beyond the top bin: the top bin


def test_frequency_warp_runs_in_training_only():
    warp_only = SpecAugmentConfig(num_freq_masks=0, num_time_masks=0, freq_warp=0.2)
    cfg = EncoderConfig(**TINY_ENCODER, specaugment=warp_only)
    encoder = PrefixEncoder(cfg, num_chars=10)
    feats = torch.arange(80.0).expand(4, 50, 80)
    encoder.train()
    assert not torch.equal(encoder.specaugment(feats), feats)
    encoder.eval()
    assert torch.equal(encoder.specaugment(feats), feats)


def test_packed_sequence_layout(vocab, chars):
    model = make_model(vocab, chars)
    packer = packer_for(model, vocab, chars)
    utts = utterances()
    batch, target = packer.collate(utts)
    asr, cont, spec, spec_end = (vocab.task_id(t) for t in ("asr", "cont", "spec", "spec_end"))

    # Row 0: <asr> hello world <cont> the cat <spec> f1 f2 f3 <spec_end> (5 frames, r = 2 -> 3 steps).
    t_ids, c_ids = vocab.encode_text("hello world"), vocab.encode_text("the cat")
    a = len(t_ids)
    spec_at = 1 + a + 1 + len(c_ids)
    expected = [asr, *t_ids, cont, *c_ids, spec, vocab.pad_id, vocab.pad_id, vocab.pad_id, spec_end]
    n = len(expected)
    assert batch.tokens[0, :n].tolist() == expected
    assert batch.kinds[0, :n].tolist() == [Kind.TOKEN] * (spec_at + 1) + [Kind.FRAME] * 3 + [Kind.TOKEN]
    assert batch.kinds[0, n:].eq(Kind.PAD).all()
    assert batch.spec_start[0] == spec_at and batch.frame_steps[0] == 3 and batch.suffix_lengths[0] == n
    # Position s predicts element s+1: text up to <spec>, nothing after.
    assert target.text_labels[0, :spec_at].tolist() == expected[1 : spec_at + 1]
    assert target.text_labels[0, spec_at:].eq(IGNORE).all()
    # The continuation targets: its text and <spec>.
    assert target.continuation[0].nonzero().flatten().tolist() == list(range(a + 1, spec_at))
    # Frames: 5 real frames of 6 slots; stop after the third step.
    assert target.frame_mask[0].tolist() == [True] * 5 + [False] * (target.frames.size(1) - 5)
    assert target.stop[0].tolist()[:4] == [0.0, 0.0, 0.0, 1.0] and target.stop_mask[0].sum() == 4
    normalised = (utts[0].cont_frames - model.frame_mean) / model.frame_std
    torch.testing.assert_close(batch.frame_inputs[0, 0], normalised[:2].flatten())
    torch.testing.assert_close(target.frames[0, :5], normalised)

    # Row 1 (ASR only): <asr> text <cont>, no frames, no stop.
    b_ids = vocab.encode_text("a quick brown fox")
    assert batch.tokens[1, : len(b_ids) + 2].tolist() == [asr, *b_ids, cont]
    assert batch.frame_steps[1] == 0 and not target.stop_mask[1].any() and not target.continuation[1].any()
    assert target.chars[1, : target.char_lengths[1]].tolist() == chars.encode("a quick brown fox")


@pytest.mark.parametrize("bridge", ["none", "conv", "ctc", "conv+mlp"])
def test_batched_forward_matches_each_utterance_alone(vocab, chars, bridge):
    model = make_model(vocab, chars, bridge)
    assert isinstance(model.projector, torch.nn.Sequential) == bridge.endswith("+mlp")
    packer = packer_for(model, vocab, chars)
    utts = utterances()
    with torch.no_grad():
        batch, target = packer.collate(utts)
        together = model(batch)
        assert together.text_logits.shape == (3, batch.tokens.size(1), len(vocab))
        assert together.frames.shape == together.frames_post.shape == target.frames.shape
        assert together.stop_logits.shape == target.stop.shape
        for i, u in enumerate(utts):
            one_batch, one_target = packer.collate([u])
            alone = model(one_batch)
            n = int(one_batch.suffix_lengths[0])
            torch.testing.assert_close(together.text_logits[i, :n], alone.text_logits[0], atol=1e-4, rtol=1e-4)
            f = int(one_target.frame_mask.sum())
            torch.testing.assert_close(together.frames_post[i, :f], alone.frames_post[0, :f], atol=1e-4, rtol=1e-4)


def test_incremental_frames_match_teacher_forcing(vocab, chars):
    """Frames decoded one step at a time with the KV cache, fed back as inputs of a
    teacher-forced pass, must be predicted again: cache, positions and packing agree."""
    model = make_model(vocab, chars)
    feats = torch.randn(40, 80)
    asr, cont, spec = (vocab.task_id(t) for t in ("asr", "cont", "spec"))
    tokens = [asr, *vocab.encode_text("hello"), cont, *vocab.encode_text("world"), spec]
    with torch.no_grad():
        prefix, n, _, _ = model.encode(feats.unsqueeze(0), torch.tensor([40]))
        prompt = torch.cat([prefix[0, : int(n[0])], model.embed_tokens(torch.tensor(tokens))])
        frames, _ = generate_frames(model, prompt, max_frames=6)
        steps = frames.size(0) // model.reduction
        batch = PackedBatch(
            feats=feats.unsqueeze(0),
            feat_lengths=torch.tensor([40]),
            tokens=torch.tensor([tokens + [vocab.pad_id] * steps + [vocab.task_id("spec_end")]]),
            kinds=torch.tensor([[Kind.TOKEN] * len(tokens) + [Kind.FRAME] * steps + [Kind.TOKEN]]),
            suffix_lengths=torch.tensor([len(tokens) + steps + 1]),
            frame_inputs=frames.reshape(1, steps, -1),
            spec_start=torch.tensor([len(tokens) - 1]),
            frame_steps=torch.tensor([steps]),
        )
        teacher_forced = model(batch).frames[0]
    assert frames.shape == (6, 80)
    torch.testing.assert_close(teacher_forced, frames, atol=1e-4, rtol=1e-4)


def test_batched_prefix_asr_matches_one_at_a_time(vocab, chars):
    model = make_model(vocab, chars)
    feats = [torch.randn(60, 80), torch.randn(23, 80), torch.randn(41, 80)]
    batched = transcribe_prefix(model, vocab, feats, batch_size=3, max_new_tokens=6)
    single = [transcribe_prefix(model, vocab, [f], batch_size=1, max_new_tokens=6)[0] for f in feats]
    assert batched == single
