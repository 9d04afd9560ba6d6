"""mask / ce / sld against hand-computed values on a V=8 vocabulary with speech range [4, 8)."""

import math

import pytest
import torch
from _vocab_util import ENCODEC, KMEANS, tiny_vocab

from unified_lm.config import from_dict
from unified_lm.errors import ConfigError
from unified_lm.losses import LOSSES, LossConfig, build_loss
from unified_lm.tasks import Role

P, T, S, PAD = Role.PROMPT, Role.TARGET, Role.SPEECH_INPUT, Role.PAD
RANGES = [(4, 8)]
# One ASR-like row: <task> s5 s6 <sep> t1 t2; after the shift, positions 0-1 predict speech
# inputs, 3-4 predict the transcript, 2 predicts the separator (a prompt token, no loss).
LABELS = torch.tensor([[0, 5, 6, 3, 1, 2]])
ROLES = torch.tensor([[P, S, S, P, T, T]])


def loss(name, ranges=RANGES, **cfg):
    return LOSSES.get(name)(LossConfig(name=name, **cfg), ranges)


def logits(seed=0, shape=(1, 6, 8)):
    return torch.randn(shape, generator=torch.Generator().manual_seed(seed))


def log_softmax(row):
    m = max(row)
    lse = m + math.log(sum(math.exp(x - m) for x in row))
    return [x - lse for x in row]


def ref_kl(z, target, eps=0.1, temperature=1.0, softmax_target=False):
    """T^2 * KL(q' || softmax(z / T)) over one speech range, written out in plain floats."""
    k = len(z)
    q = [(1 - eps) * (i == target) + eps / k for i in range(k)]
    if softmax_target:
        q = [math.exp(x) for x in log_softmax([x / temperature for x in q])]
    log_p = log_softmax([x / temperature for x in z])
    return temperature**2 * sum(qi * (math.log(qi) - lp) for qi, lp in zip(q, log_p) if qi > 0)


def test_uniform_logits_give_the_hand_computed_values():
    z = torch.zeros(1, 6, 8)
    log8 = math.log(8)
    # KL(q' || uniform over 4) = 0.925 ln(0.925 * 4) + 3 * 0.025 ln(0.025 * 4)
    kl = 0.925 * math.log(3.7) + 0.075 * math.log(0.1)
    assert kl == pytest.approx(1.037514, abs=1e-6)
    assert loss("mask")(z, LABELS, ROLES).total.item() == pytest.approx(log8)
    assert loss("ce")(z, LABELS, ROLES).total.item() == pytest.approx(2 * log8)
    out = loss("sld")(z, LABELS, ROLES)
    assert out.total.item() == pytest.approx(2 * log8 + 0.008 * kl)
    assert out.parts["kl_speech"].item() == pytest.approx(kl)
    batchmean = loss("sld", kl_reduction="batchmean")(z, LABELS, ROLES)
    assert batchmean.parts["kl_speech"].item() == pytest.approx(2 * kl)  # two speech tokens, one utterance


def test_each_loss_matches_a_plain_float_reference():
    z = logits(1)
    rows = z[0].tolist()
    ce = [-log_softmax(rows[t])[LABELS[0, t + 1]] for t in range(5)]
    ce_text = (ce[3] + ce[4]) / 2
    ce_speech = (ce[0] + ce[1]) / 2
    kl = (ref_kl(rows[0][4:], 5 - 4) + ref_kl(rows[1][4:], 6 - 4)) / 2
    cfg = dict(w_text=0.7, w_speech=0.3, alpha=0.5)

    assert loss("mask", **cfg)(z, LABELS, ROLES).total.item() == pytest.approx(0.7 * ce_text, rel=1e-5)
    out = loss("ce", **cfg)(z, LABELS, ROLES)
    assert out.total.item() == pytest.approx(0.7 * ce_text + 0.3 * ce_speech, rel=1e-5)
    assert set(out.parts) == {"ce_text", "ce_speech"}
    out = loss("sld", **cfg)(z, LABELS, ROLES)
    assert out.total.item() == pytest.approx(0.7 * ce_text + 0.3 * ce_speech + 0.5 * kl, rel=1e-5)
    assert {k: v.item() for k, v in out.parts.items()} == pytest.approx(
        {"ce_text": ce_text, "ce_speech": ce_speech, "kl_speech": kl}, rel=1e-5
    )
    assert not any(v.requires_grad for v in out.parts.values())


def test_smoothed_kl_is_label_smoothed_ce_over_speech_minus_the_entropy_of_q():
    z = logits(2)
    eps, k = 0.1, 4
    q = torch.full((k,), eps / k)
    q[1] += 1 - eps  # target 5 -> class 1 of [4, 8)
    one_position = torch.tensor([[P, S, P, P, PAD, PAD]])
    kl = loss("sld", eps=eps)(z, LABELS, one_position).parts["kl_speech"]
    ls_ce = torch.nn.functional.cross_entropy(z[0, :1, 4:8], torch.tensor([1]), label_smoothing=eps)
    entropy = -(q * q.log()).sum()
    assert kl.item() == pytest.approx((ls_ce - entropy).item(), rel=1e-5)


def test_only_the_speech_range_enters_the_kl():
    z = logits(3)
    changed = z.clone()
    changed[..., :4] += 5 * logits(4)[..., :4]
    before = loss("sld")(z, LABELS, ROLES).parts
    after = loss("sld")(changed, LABELS, ROLES).parts
    assert after["kl_speech"].item() == pytest.approx(before["kl_speech"].item())
    assert after["ce_speech"].item() != pytest.approx(before["ce_speech"].item())  # CE uses the full vocabulary

    z.requires_grad_(True)
    loss("sld", w_text=0.0, w_speech=0.0, alpha=1.0)(z, LABELS, ROLES).total.backward()
    assert (z.grad[0, :2, :4] == 0).all() and (z.grad[0, :2, 4:] != 0).all()


def test_each_target_uses_the_softmax_of_its_own_codebook_range():
    z = logits(5)
    rows = z[0].tolist()
    ranges = [(4, 6), (6, 8)]  # target 5 -> codebook 0 (K=2), target 6 -> codebook 1 (K=2)
    expected = (ref_kl(rows[0][4:6], 1) + ref_kl(rows[1][6:8], 0)) / 2
    assert loss("sld", ranges=ranges)(z, LABELS, ROLES).parts["kl_speech"].item() == pytest.approx(expected, rel=1e-5)


def test_temperature_scales_logits_and_multiplies_by_t_squared():
    z = logits(6)
    rows = z[0].tolist()
    expected = (ref_kl(rows[0][4:], 1, temperature=2.0) + ref_kl(rows[1][4:], 2, temperature=2.0)) / 2
    got = loss("sld", temperature=2.0)(z, LABELS, ROLES).parts["kl_speech"].item()
    assert got == pytest.approx(expected, rel=1e-5)
    assert got != pytest.approx(loss("sld")(z, LABELS, ROLES).parts["kl_speech"].item())


def test_softmax_of_smoothed_target_is_the_released_code_quirk():
    z = logits(7)
    rows = z[0].tolist()
    expected = (ref_kl(rows[0][4:], 1, softmax_target=True) + ref_kl(rows[1][4:], 2, softmax_target=True)) / 2
    got = loss("sld", kl_target="softmax_of_smoothed")(z, LABELS, ROLES).parts["kl_speech"].item()
    assert got == pytest.approx(expected, rel=1e-5)


def test_batchmean_divides_the_sum_by_the_batch_size_token_mean_by_the_speech_tokens():
    z = logits(8, shape=(2, 6, 8))
    labels = torch.cat([LABELS, torch.tensor([[0, 7, 4, 3, 1, 2]])])
    roles = torch.cat([ROLES, torch.tensor([[P, S, S, P, T, PAD]])])
    token_mean = loss("sld")(z, labels, roles).parts["kl_speech"].item()
    batchmean = loss("sld", kl_reduction="batchmean")(z, labels, roles).parts["kl_speech"].item()
    # 4 speech targets over 2 utterances: sum / 2 vs sum / 4.
    assert batchmean == pytest.approx(2 * token_mean, rel=1e-6)


def test_prompt_padding_and_last_positions_contribute_nothing():
    z = logits(9).requires_grad_(True)
    roles = torch.tensor([[P, S, S, P, T, PAD]])
    out = loss("sld")(z, LABELS, roles)
    out.total.backward()
    # Position 2 predicts a prompt token, 4 a padding token, 5 predicts nothing.
    assert (z.grad[0, [2, 4, 5]] == 0).all()
    assert (z.grad[0, [0, 1, 3]] != 0).any(dim=-1).all()
    noisy = z.detach().clone()
    noisy[0, [2, 4, 5]] = 100 * logits(10)[0, [2, 4, 5]]
    assert loss("sld")(noisy, LABELS, roles).total.item() == pytest.approx(out.total.item())


def test_mask_loss_sends_no_gradient_to_input_speech():
    z = logits(11).requires_grad_(True)
    loss("mask")(z, LABELS, ROLES).total.backward()
    assert (z.grad[0, :3] == 0).all() and (z.grad[0, 3:5] != 0).all()
    z.grad = None
    loss("ce")(z, LABELS, ROLES).total.backward()
    assert (z.grad[0, :2] != 0).all()


def test_logit_at_t_predicts_token_t_plus_one():
    z = torch.full((1, 6, 8), -20.0)
    for t in range(5):
        z[0, t, LABELS[0, t + 1]] = 20.0
    assert loss("sld")(z, LABELS, ROLES).parts["ce_text"].item() < 1e-6
    assert loss("ce")(z, LABELS, ROLES).total.item() < 1e-6
    unshifted = torch.full((1, 6, 8), -20.0)
    unshifted[0, torch.arange(6), LABELS[0]] = 20.0
    assert loss("ce")(unshifted, LABELS, ROLES).total.item() > 10


def test_kinds_absent_from_the_batch_give_zero_not_nan():
    z = logits(12).requires_grad_(True)
    text_only = torch.tensor([[P, T, T, T, T, PAD]])
    out = loss("sld")(z, LABELS, text_only)
    assert out.parts["ce_speech"].item() == 0 and out.parts["kl_speech"].item() == 0
    assert torch.isfinite(out.total)
    nothing = loss("sld")(z, LABELS, torch.full((1, 6), int(PAD)))
    assert nothing.total.item() == 0
    nothing.total.backward()  # still part of the graph, so a step on such a batch is harmless
    assert torch.isfinite(z.grad).all()


def test_half_precision_logits_are_scored_in_float32():
    z = logits(13)
    full = loss("sld")(z, LABELS, ROLES).total
    half = loss("sld")(z.bfloat16(), LABELS, ROLES).total
    assert half.dtype == torch.float32
    assert half.item() == pytest.approx(full.item(), rel=2e-2)


def test_build_loss_binds_the_vocabulary_speech_ranges():
    vocab = tiny_vocab(speech=(KMEANS, ENCODEC))
    z = logits(14, shape=(1, 4, len(vocab)))
    s = vocab.speech_start
    labels = torch.tensor([[vocab.task_id("asr"), s + 3, s + 10, s + 17]])  # km, codebook 0, codebook 1
    roles = torch.tensor([[P, S, S, S]])
    got = build_loss(LossConfig(), vocab)(z, labels, roles).parts["kl_speech"].item()
    rows = z[0].tolist()
    expected = (ref_kl(rows[0][s : s + 10], 3) + ref_kl(rows[1][s + 10 : s + 14], 0) + ref_kl(rows[2][s + 14 :], 3)) / 3
    assert got == pytest.approx(expected, rel=1e-5)
    with pytest.raises(ConfigError, match="known: ce, mask, sld"):
        build_loss(LossConfig(name="focal"), vocab)


@pytest.mark.parametrize(
    "data, match",
    [({"kl_target": "softmax"}, "kl_target"), ({"kl_reduction": "sum"}, "kl_reduction"),
     ({"eps": 1.5}, "eps"), ({"temperature": 0}, "temperature")],
)
def test_bad_loss_configs_are_refused(data, match):
    with pytest.raises(ConfigError, match=match):
        from_dict(LossConfig, data)


def test_eps_zero_makes_the_kl_plain_ce_over_the_speech_range():
    z = logits(15)
    got = loss("sld", eps=0.0)(z, LABELS, ROLES).parts["kl_speech"].item()
    expected = torch.nn.functional.cross_entropy(z[0, :2, 4:], torch.tensor([1, 2])).item()
    assert got == pytest.approx(expected, rel=1e-5)
