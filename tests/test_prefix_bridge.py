"""Bridges between the encoder and the decoder: none, conv, CTC compression."""

import pytest
import torch

from unified_lm.errors import ConfigError
from unified_lm.models.prefix import BridgeConfig, build_bridge, ctc_compress

B = 0  # CTC blank


def frame_values(*lengths, dim=2):
    """States whose every feature is the frame index (so averages are easy to read), zero on padding."""
    t = max(lengths)
    states = torch.arange(t, dtype=torch.float).view(1, t, 1).repeat(len(lengths), 1, dim)
    for i, n in enumerate(lengths):
        states[i, n:] = 0
    return states, torch.tensor(lengths)


def test_ctc_compression_drops_blanks_and_averages_runs():
    states, lengths = frame_values(9)
    # frames:          0  1  2  3  4  5  6  7  8
    labels = torch.tensor([[B, 1, 1, B, 2, 2, B, 2, 1]])
    out, out_lengths = ctc_compress(states, lengths, labels)
    # Runs: {1,2} of "1", {4,5} of "2", {7} of "2" (a blank in between starts a new one), {8} of "1".
    assert out_lengths.tolist() == [4]
    assert out[0, :, 0].tolist() == [1.5, 4.5, 7.0, 8.0]

    first, _ = ctc_compress(states, lengths, labels, average_runs=False)
    assert first[0, :, 0].tolist() == [1.0, 4.0, 7.0, 8.0]


def test_ctc_compression_of_a_padded_batch_ignores_padding_labels():
    states, lengths = frame_values(6, 4)
    labels = torch.tensor([[3, 3, 3, B, B, 1], [B, 2, 2, 1, 5, 5]])  # row 2: frames 4, 5 are padding
    out, out_lengths = ctc_compress(states, lengths, labels)
    assert out_lengths.tolist() == [2, 2]
    assert out[0, :, 0].tolist() == [1.0, 5.0]
    assert out[1, :, 0].tolist() == [1.5, 3.0]


def test_all_blank_utterance_keeps_its_mean_frame():
    states, lengths = frame_values(4, 2)
    labels = torch.tensor([[B, B, B, B], [1, 1, 0, 0]])
    out, out_lengths = ctc_compress(states, lengths, labels)
    assert out_lengths.tolist() == [1, 1]
    assert out[0, 0, 0].item() == pytest.approx(1.5)  # mean of frames 0..3
    assert out[1, 0, 0].item() == pytest.approx(0.5)


def test_ctc_compression_passes_gradients_to_kept_frames_only():
    states, lengths = frame_values(5)
    states.requires_grad_(True)
    out, _ = ctc_compress(states, lengths, torch.tensor([[B, 4, 4, B, 7]]))
    out.sum().backward()
    assert states.grad[0, :, 0].tolist() == [0.0, 0.5, 0.5, 0.0, 1.0]


def test_ctc_bridge_reads_labels_from_the_argmax_of_the_logits():
    states, lengths = frame_values(6)
    labels = torch.tensor([[B, 2, 2, B, 1, B]])
    logits = torch.nn.functional.one_hot(labels, 4).float() * 5
    out, out_lengths = build_bridge(BridgeConfig("ctc"), 2)(states, lengths, logits)
    assert out_lengths.tolist() == [2]
    assert out[0, :, 0].tolist() == [1.5, 4.0]


@pytest.mark.parametrize("layers, lengths, expected", [(2, [17, 9, 4], [4, 2, 1]), (1, [17, 9, 1], [8, 4, 1])])
def test_conv_bridge_shortens_by_two_per_layer(layers, lengths, expected):
    bridge = build_bridge(BridgeConfig("conv", conv_layers=layers), 8)
    states = torch.randn(len(lengths), max(lengths), 8)
    out, out_lengths = bridge(states, torch.tensor(lengths), None)
    assert out_lengths.tolist() == expected
    assert out.shape == (len(lengths), max(expected), 8)
    for i, n in enumerate(expected):
        assert torch.all(out[i, n:] == 0)  # padding stays zero


def test_conv_bridge_output_does_not_depend_on_padding():
    torch.manual_seed(0)
    bridge = build_bridge(BridgeConfig("conv"), 8)
    short = torch.randn(1, 9, 8)
    batch = torch.randn(2, 17, 8) * 100  # garbage after frame 9 of row 1
    batch[1, :9] = short[0]
    alone, n = bridge(short, torch.tensor([9]), None)
    together, lengths = bridge(batch, torch.tensor([17, 9]), None)
    assert lengths[1] == n[0]
    torch.testing.assert_close(together[1, : int(n[0])], alone[0])


def test_none_bridge_is_the_identity():
    states, lengths = frame_values(5, 3)
    out, out_lengths = build_bridge(BridgeConfig("none"), 2)(states, lengths, None)
    assert out is states and out_lengths is lengths


def test_unknown_bridge_names_the_known_ones():
    with pytest.raises(ConfigError, match="conv, ctc, none"):
        build_bridge(BridgeConfig("transformer"), 8)
