"""Audio loading (every bad-file case), features (shapes, rates, Kaldi parity), speed perturbation."""

import struct

import numpy as np
import pytest
import torch
import torchaudio.compliance.kaldi as kaldi
import torchaudio.functional as AF

from _discretize_util import speechlike, write_wav
from unified_lm.audio import (
    FRAME_RATE,
    audio_info,
    fbank,
    load_audio,
    log_mel_spectrogram,
    mfcc,
    num_frames,
    read_audio,
    speed_perturb,
)
from unified_lm.errors import ConfigError, DataError


@pytest.fixture
def wav16k():
    return torch.from_numpy(speechlike(1.0, 16000, seed=0))


def test_fbank_is_80_dim_at_100_frames_per_second(wav16k):
    feats = fbank(wav16k)
    assert FRAME_RATE == 100.0
    assert feats.shape == (num_frames(16000), 80) == (98, 80)  # Kaldi: 1 + (16000 - 400) // 160
    assert feats.dtype == torch.float32
    assert fbank(torch.cat([wav16k, wav16k])).shape[0] == 198  # 100 more frames per second


def test_fbank_matches_kaldi(wav16k):
    ours = fbank(wav16k)
    ref = kaldi.fbank(wav16k.unsqueeze(0) * 2**15, num_mel_bins=80, sample_frequency=16000, dither=0.0)
    # Bins with almost no energy (log < 0 on the int16 scale) differ by float rounding only.
    audible = ref > 0
    assert audible.float().mean() > 0.5
    assert torch.allclose(ours[audible], ref[audible], atol=0.05)
    assert (ours - ref).abs().mean() < 0.01


def test_mfcc_is_39_dim_with_deltas(wav16k):
    feats = mfcc(wav16k)
    assert feats.shape == (98, 39)
    base = feats[:, :13].T
    assert torch.allclose(feats[:, 13:26].T, AF.compute_deltas(base), atol=1e-5)
    assert mfcc(wav16k, deltas=False).shape == (98, 13)


def test_log_mel_spectrogram_shape(wav16k):
    assert log_mel_spectrogram(wav16k).shape == (101, 80)  # centred frames: 1 + 16000 // 160
    assert torch.isfinite(log_mel_spectrogram(torch.zeros(1600))).all()  # the floor keeps silence finite


def test_features_of_audio_shorter_than_a_window_are_empty():
    assert fbank(torch.zeros(399)).shape == (0, 80)
    assert mfcc(torch.zeros(100)).shape == (0, 39)


def test_load_resamples_8k_and_keeps_pitch(tmp_path):
    t = np.arange(8000) / 8000
    path = write_wav(tmp_path / "a.wav", (0.5 * np.sin(2 * np.pi * 440 * t)).astype(np.float32), 8000)
    wav = load_audio(path)
    assert wav.shape == (16000,) and wav.dtype == torch.float32 and wav.dim() == 1
    peak_hz = torch.fft.rfft(wav).abs().argmax().item() * 16000 / 16000
    assert abs(peak_hz - 440) <= 1


@pytest.mark.fault
def test_load_downmixes_stereo(tmp_path):
    x = speechlike(0.5, 16000, seed=1)
    path = write_wav(tmp_path / "s.wav", np.stack([x, 0.5 * x], axis=1), 16000, subtype="FLOAT")
    wav = load_audio(path)
    assert wav.shape == (8000,)
    assert torch.allclose(wav, torch.from_numpy(0.75 * x), atol=1e-6)


def test_load_flac_at_native_rate(tmp_path):
    x = speechlike(0.5, 16000, seed=2)
    wav, sr = read_audio(write_wav(tmp_path / "a.flac", x, 16000))
    assert sr == 16000 and wav.shape == (8000,)
    assert torch.allclose(wav, torch.from_numpy(x), atol=1e-4)  # 16-bit FLAC


def _good_wav(tmp_path) -> bytes:
    return write_wav(tmp_path / "good.wav", speechlike(0.5, 16000, seed=3), 16000).read_bytes()


def _with_rate(data: bytes, rate: int) -> bytes:
    b = bytearray(data)
    b[24:28] = struct.pack("<I", rate)  # the fmt chunk's sample rate field
    return bytes(b)


@pytest.mark.fault
@pytest.mark.parametrize(
    "make, reason",
    [
        (lambda tmp, good: None, "not found"),
        (lambda tmp, good: b"", "empty"),
        (lambda tmp, good: good[:20], "not a readable audio file"),  # header cut mid-fmt chunk
        (lambda tmp, good: good[: len(good) // 2], "truncated WAV"),
        (lambda tmp, good: b"RIFF but not really audio" * 10, "not a readable audio file"),
        (lambda tmp, good: _with_rate(good, 100), "invalid sample rate 100"),
        (lambda tmp, good: _with_rate(good, 0), "not a readable audio file"),
    ],
    ids=["missing", "empty-file", "truncated-header", "truncated-data", "garbage", "rate-100hz", "rate-0"],
)
def test_load_rejects_bad_files(tmp_path, make, reason):
    path = tmp_path / "bad.wav"
    data = make(tmp_path, _good_wav(tmp_path))
    if data is not None:
        path.write_bytes(data)
    with pytest.raises(DataError, match=reason) as e:
        load_audio(path)
    assert e.value.path == str(path)


@pytest.mark.fault
def test_load_names_a_directory_as_one(tmp_path):
    (tmp_path / "a.wav").mkdir()
    with pytest.raises(DataError, match="a.wav: is a directory, not an audio file"):
        load_audio(tmp_path / "a.wav")


@pytest.mark.fault
def test_load_rejects_zero_samples_and_nan(tmp_path):
    zero = write_wav(tmp_path / "zero.wav", np.zeros(0, np.float32), 16000)
    with pytest.raises(DataError, match="zero samples"):
        load_audio(zero)
    x = speechlike(0.25, 16000, seed=4)
    x[:] = np.nan
    with pytest.raises(DataError, match="4000 of 4000 samples are NaN or inf"):
        load_audio(write_wav(tmp_path / "nan.wav", x, 16000, subtype="FLOAT"))
    y = speechlike(0.25, 16000, seed=4)
    y[7] = np.inf
    with pytest.raises(DataError, match="1 of 4000"):
        load_audio(write_wav(tmp_path / "inf.wav", y, 16000, subtype="FLOAT"))


def test_audio_info_reads_header_only(tmp_path):
    path = write_wav(tmp_path / "a.wav", speechlike(0.5, 22050, seed=5), 22050)
    info = audio_info(path)
    assert (info.sample_rate, info.num_frames, info.channels) == (22050, 11025, 1)
    assert info.duration == pytest.approx(0.5)


def test_load_rejects_bad_target_rate(tmp_path):
    path = write_wav(tmp_path / "a.wav", speechlike(0.1, 16000, seed=6), 16000)
    with pytest.raises(ConfigError):
        load_audio(path, sample_rate=0)


def test_speed_perturbation_changes_length(wav16k):
    assert speed_perturb(wav16k, 1.0) is wav16k
    faster, slower = speed_perturb(wav16k, 1.1), speed_perturb(wav16k, 0.9)
    assert abs(faster.numel() - 16000 / 1.1) <= 2
    assert abs(slower.numel() - 16000 / 0.9) <= 2
    with pytest.raises(ConfigError):
        speed_perturb(wav16k, 0.0)
