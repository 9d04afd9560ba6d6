"""The auxiliary speech CTC (losses.ctc) against a CTC written out by hand."""

import math

import pytest
import torch
from _vocab_util import KMEANS, tiny_vocab

from unified_lm.errors import ConfigError
from unified_lm.losses import LossConfig, build_loss
from unified_lm.losses.ctc import speech_ctc
from unified_lm.tasks import Role

P, T, S, PAD = Role.PROMPT, Role.TARGET, Role.SPEECH_INPUT, Role.PAD
TEXT_SIZE = 2  # text ids 0, 1; id 2 is the blank (<pad>); id 3 stands for <text_end>
# <asr> s s <speech_end> "0" <text_end>: two speech frames, a one-token transcript.
LABELS = torch.tensor([[5, 6, 7, 4, 0, 3]])
ROLES = torch.tensor([[P, S, S, P, T, T]])


def probs(row):
    e = [math.exp(x) for x in row[: TEXT_SIZE + 1]]
    return [x / sum(e) for x in e]


def test_matches_the_three_alignments_written_out():
    z = torch.randn(1, 6, 8, generator=torch.Generator().manual_seed(0))
    p1, p2 = probs(z[0, 1].tolist()), probs(z[0, 2].tolist())
    blank = TEXT_SIZE
    # "0" over two frames: 0 0 | 0 blank | blank 0; <text_end> is not a CTC target.
    likelihood = p1[0] * p2[0] + p1[0] * p2[blank] + p1[blank] * p2[0]
    assert speech_ctc(z, LABELS, ROLES, TEXT_SIZE).item() == pytest.approx(-math.log(likelihood), rel=1e-5)


def test_rows_without_speech_input_are_left_out():
    z = torch.randn(2, 6, 8, generator=torch.Generator().manual_seed(1))
    tts_labels = torch.tensor([[5, 0, 1, 3, 6, 7]])
    tts_roles = torch.tensor([[P, P, P, P, T, T]])  # speech is the output here: no CTC
    both = speech_ctc(z, torch.cat([LABELS, tts_labels]), torch.cat([ROLES, tts_roles]), TEXT_SIZE)
    assert both.item() == pytest.approx(speech_ctc(z[:1], LABELS, ROLES, TEXT_SIZE).item(), rel=1e-6)
    assert speech_ctc(z[1:], tts_labels, tts_roles, TEXT_SIZE).item() == 0.0


def test_padding_and_frame_order_do_not_change_the_value():
    z = torch.randn(1, 6, 8, generator=torch.Generator().manual_seed(2))
    padded = torch.cat([z, torch.randn(1, 3, 8)], dim=1)
    labels = torch.cat([LABELS, torch.full((1, 3), 2)], dim=1)
    roles = torch.cat([ROLES, torch.full((1, 3), int(PAD))], dim=1)
    assert speech_ctc(padded, labels, roles, TEXT_SIZE).item() == pytest.approx(
        speech_ctc(z, LABELS, ROLES, TEXT_SIZE).item(), rel=1e-6
    )
    swapped = z.clone()
    swapped[0, [1, 2]] = z[0, [2, 1]]
    p1, p2 = probs(z[0, 2].tolist()), probs(z[0, 1].tolist())
    expected = -math.log(p1[0] * p2[0] + p1[0] * p2[2] + p1[2] * p2[0])
    assert speech_ctc(swapped, LABELS, ROLES, TEXT_SIZE).item() == pytest.approx(expected, rel=1e-5)


def test_build_loss_adds_the_weighted_term_and_zero_weight_changes_nothing():
    vocab = tiny_vocab(speech=(KMEANS,))
    s, t = vocab.speech_start, vocab.text_size
    labels = torch.tensor([[vocab.task_id("asr"), s + 1, s + 2, s + 3, vocab.special_ids["<speech_end>"], 5, 7,
                            vocab.special_ids["<text_end>"]]])
    roles = torch.tensor([[P, S, S, S, P, T, T, T]])
    z = torch.randn(1, 8, len(vocab), generator=torch.Generator().manual_seed(3), requires_grad=True)
    plain = build_loss(LossConfig(name="mask"), vocab)(z, labels, roles)
    joint = build_loss(LossConfig(name="mask", ctc_weight=0.5), vocab)(z, labels, roles)
    ctc = speech_ctc(z, labels, roles, t)
    assert "ctc_speech" not in plain.parts
    assert joint.parts["ctc_speech"].item() == pytest.approx(ctc.item())
    assert joint.total.item() == pytest.approx(plain.total.item() + 0.5 * ctc.item(), rel=1e-6)
    joint.total.backward()
    assert z.grad[0, 1:4, : t + 1].abs().sum() > 0  # the speech positions' text logits learn


def test_a_negative_weight_is_refused():
    with pytest.raises(ConfigError, match="ctc_weight"):
        LossConfig(ctc_weight=-1.0)
