"""The Spectron loss against hand-computed values."""

import math

import pytest
import torch

from unified_lm.errors import ConfigError
from unified_lm.losses import LOSSES
from unified_lm.losses.spectrogram import (
    IGNORE,
    SpectronLoss,
    SpectronLossConfig,
    SpectronPrediction,
    SpectronTarget,
    regression_terms,
)


def frames_case():
    """pred - target = [[1, 2], [3, 5]] on two real frames, plus a masked frame of junk."""
    target = torch.tensor([[[0.5, -1.0], [2.0, 0.0], [0.0, 0.0]]])
    pred = target + torch.tensor([[[1.0, 2.0], [3.0, 5.0], [100.0, -100.0]]])
    mask = torch.tensor([[True, True, False]])
    return pred, target, mask


def test_regression_terms_match_hand_computed_values():
    t = regression_terms(*frames_case())
    # err = [[1, 2], [3, 5]]; time differences [[2, 3]]; frequency differences [[1], [2]].
    expected = {
        "l1": (1 + 2 + 3 + 5) / 4,
        "l2": (1 + 4 + 9 + 25) / 4,
        "dt_l1": (2 + 3) / 2,
        "dt_l2": (4 + 9) / 2,
        "df_l1": (1 + 2) / 2,
        "df_l2": (1 + 4) / 2,
    }
    assert {k: round(float(v), 6) for k, v in t.items()} == expected


def test_derivative_loss_ignores_a_constant_offset():
    target = torch.randn(2, 5, 4)
    mask = torch.ones(2, 5, dtype=torch.bool)
    t = regression_terms(target + 0.7, target, mask)
    assert float(t["l1"]) == pytest.approx(0.7)
    assert all(float(t[k]) == pytest.approx(0.0, abs=1e-6) for k in ("dt_l1", "dt_l2", "df_l1", "df_l2"))


def make_batch(pred_frames, target_frames, mask):
    # Two text targets: ids 1 and 2 over a 3-token vocabulary, logits giving p = 1/2 and 1/3.
    logits = torch.tensor([[[0.0, math.log(2.0), 0.0], [0.0, 0.0, 0.0], [0.0, 0.0, 0.0]]])
    pred = SpectronPrediction(
        text_logits=logits,
        frames=pred_frames,
        frames_post=target_frames.clone(),  # a perfect post-net
        stop_logits=torch.tensor([[0.0, 0.0, 0.0]]),
        ctc_logits=torch.zeros(1, 4, 3),
        ctc_lengths=torch.tensor([4]),
    )
    target = SpectronTarget(
        text_labels=torch.tensor([[1, 2, IGNORE]]),
        continuation=torch.tensor([[False, True, False]]),
        frames=target_frames,
        frame_mask=mask,
        stop=torch.tensor([[0.0, 0.0, 1.0]]),
        stop_mask=torch.tensor([[True, True, True]]),
        chars=torch.tensor([[1, 2]]),
        char_lengths=torch.tensor([2]),
    )
    return pred, target


def test_total_is_the_weighted_sum_of_hand_computed_terms():
    pred_frames, target_frames, mask = frames_case()
    cfg = SpectronLossConfig(w_text=2.0, w_l1=1.0, w_l2=0.5, w_deriv=0.25, w_stop=3.0, stop_pos_weight=4.0)
    out = SpectronLoss(cfg)(*make_batch(pred_frames, target_frames, mask))

    ce = (math.log(2) + math.log(3)) / 2  # p(1) = 2 / (1 + 2 + 1), p(2) = 1 / 3
    recon = 2.75 + 0.5 * 9.75
    deriv = (2.5 + 1.5) + 0.5 * (6.5 + 2.5)
    stop = (2 * math.log(2) + 4.0 * math.log(2)) / 3  # BCE(0 logit) = log 2; the positive weighs 4
    assert float(out.parts["ce_text"]) == pytest.approx(ce, rel=1e-5)
    assert float(out.parts["ce_continuation"]) == pytest.approx(math.log(3), rel=1e-5)
    assert float(out.parts["recon"]) == pytest.approx(recon)
    assert float(out.parts["deriv"]) == pytest.approx(deriv)
    assert float(out.parts["post_recon"]) == pytest.approx(0.0)
    assert float(out.parts["stop"]) == pytest.approx(stop, rel=1e-5)
    assert float(out.total) == pytest.approx(2.0 * ce + recon + 0.25 * deriv + 3.0 * stop, rel=1e-5)


def test_ablation_weights_remove_their_terms():
    pred, target = make_batch(*frames_case())
    full = SpectronLoss(SpectronLossConfig())(pred, target)
    no_deriv = SpectronLoss(SpectronLossConfig(w_deriv=0.0))(pred, target)
    no_text = SpectronLoss(SpectronLossConfig(w_text=0.0))(pred, target)
    assert float(full.total - no_deriv.total) == pytest.approx(float(full.parts["deriv"] + full.parts["post_deriv"]))
    assert float(full.total - no_text.total) == pytest.approx(float(full.parts["ce_text"]))


def test_ctc_term_only_with_weight():
    pred, target = make_batch(*frames_case())
    assert float(SpectronLoss(SpectronLossConfig())(pred, target).parts["ctc"]) == 0.0
    with_ctc = SpectronLoss(SpectronLossConfig(w_ctc=1.0))(pred, target)
    # Uniform log-probs over 3 classes, 4 frames, target "1 2": -log(paths * 3^-4).
    paths = 15  # b* 1+ b* 2+ b* in 4 frames: 2 spare frames over 5 slots, C(6, 2)
    assert float(with_ctc.parts["ctc"]) == pytest.approx((4 * math.log(3) - math.log(paths)) / 2, rel=1e-5)


def test_registered_in_the_shared_registry():
    assert "spectron" in LOSSES
    assert isinstance(LOSSES.get("spectron")(SpectronLossConfig(), []), SpectronLoss)


def test_discrete_trainer_cannot_build_spectron_but_keeps_its_losses():
    from unified_lm.losses import LossConfig, build_loss
    from unified_lm.vocab import UnifiedVocab

    # Importing the package alone registers both kinds.
    assert {"mask", "ce", "sld", "spectron"} <= set(LOSSES.names())
    vocab = UnifiedVocab.train(["a few words of text"] * 4, [], 280)
    with pytest.raises(ConfigError, match="prefix"):
        build_loss(LossConfig(name="spectron"), vocab)
    assert callable(build_loss(LossConfig(name="sld"), vocab))


def test_negative_weight_is_a_config_error():
    with pytest.raises(ConfigError, match="w_deriv"):
        SpectronLossConfig(w_deriv=-1.0)
