"""The degraded condition: SNR and reverberation as configured, deterministic per seed and id."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import soundfile as sf
import torch

from unified_lm.audio import load_audio
from unified_lm.corpus.degrade import (
    DegradeConfig,
    add_noise_at_snr,
    degrade,
    degrade_manifest,
    pink_noise,
    reverberate,
    rms,
    room_impulse_response,
    utterance_generator,
    white_noise,
)
from unified_lm.errors import ConfigError, DataError

SR = 16000


def snr_db(signal: torch.Tensor, noise: torch.Tensor) -> float:
    return 10 * math.log10(signal.square().sum().item() / noise.square().sum().item())


def speechlike(seed: int, seconds: float = 1.0, level: float = 0.1) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    t = torch.arange(int(seconds * SR)) / SR
    tone = sum(torch.sin(2 * math.pi * f * t) / (h + 1) for h, f in enumerate((140.0, 280.0, 420.0, 900.0)))
    envelope = 0.5 + 0.5 * torch.sin(2 * math.pi * 3.0 * t)  # syllable-rate amplitude modulation
    return level * (tone * envelope + 0.05 * torch.randn(t.numel(), generator=g))


@pytest.mark.parametrize("snr", [0.0, 10.0, 25.0])
def test_noise_only_hits_the_target_snr(snr):
    wav = speechlike(0)
    out = degrade(wav, DegradeConfig(snr_db=snr, rt60=0.0), utterance_generator(0, "u1"))
    assert abs(snr_db(wav, out - wav) - snr) < 0.01


def test_reverberant_condition_keeps_level_and_snr_against_the_reverberant_speech():
    wav = speechlike(1)
    cfg = DegradeConfig(snr_db=12.0, rt60=0.3, drr_db=3.0)
    out = degrade(wav, cfg, utterance_generator(7, "u1"))
    # The documented draw order: impulse response first, then the noise.
    g = utterance_generator(7, "u1")
    reverberant = reverberate(wav, room_impulse_response(cfg.rt60, cfg.drr_db, SR, g))
    assert rms(reverberant) == pytest.approx(rms(wav), rel=1e-4)
    assert not torch.allclose(reverberant, wav, atol=1e-3)  # the room did something
    assert abs(snr_db(reverberant, out - reverberant) - cfg.snr_db) < 0.01


@pytest.mark.parametrize("rt60,drr", [(0.25, 0.0), (0.6, 6.0)])
def test_impulse_response_decays_60_db_in_rt60_with_the_set_drr(rt60, drr):
    rir = room_impulse_response(rt60, drr, SR, torch.Generator().manual_seed(0))
    assert rir[0] == 1.0
    tail = rir[1:]
    assert 10 * math.log10(1.0 / tail.square().sum().item()) == pytest.approx(drr, abs=1e-3)
    # Schroeder backward integration; fit the -5..-25 dB range (T20) and extrapolate to 60 dB.
    edc = torch.flip(torch.cumsum(torch.flip(tail.square(), [0]), 0), [0])
    edc_db = 10 * torch.log10(edc / edc[0])
    idx = torch.nonzero((edc_db <= -5) & (edc_db >= -25)).flatten().numpy()
    slope = np.polyfit(idx / SR, edc_db[idx].numpy(), 1)[0]  # dB per second
    assert -60.0 / slope == pytest.approx(rt60, rel=0.1)


def test_pink_noise_falls_about_3_db_per_octave():
    noise = pink_noise(SR * 4, torch.Generator().manual_seed(0))
    power = torch.fft.rfft(noise).abs().square()
    freqs = torch.fft.rfftfreq(noise.numel(), 1 / SR)
    low = power[(freqs >= 250) & (freqs < 500)].mean()
    high = power[(freqs >= 2000) & (freqs < 4000)].mean()
    assert 10 * math.log10(low / high) == pytest.approx(10 * math.log10(6000 / 750), abs=1.0)  # 1/f: ratio of band centres


def test_add_noise_at_snr_is_exact():
    wav, noise = speechlike(2), torch.randn(SR, generator=torch.Generator().manual_seed(3))
    out = add_noise_at_snr(wav, noise, 5.0)
    assert abs(snr_db(wav, out - wav) - 5.0) < 1e-3


def test_deterministic_per_seed_and_utterance():
    wav = speechlike(3)
    cfg = DegradeConfig(snr_db=10.0, rt60=0.2, noise="pink")
    a = degrade(wav, cfg, utterance_generator(0, "u1"))
    assert torch.equal(a, degrade(wav, cfg, utterance_generator(0, "u1")))
    assert not torch.allclose(a, degrade(wav, cfg, utterance_generator(0, "u2")))
    assert not torch.allclose(a, degrade(wav, cfg, utterance_generator(1, "u1")))


def test_loud_input_is_scaled_not_clipped():
    wav = speechlike(4, level=1.0)
    out = degrade(wav, DegradeConfig(snr_db=0.0, rt60=0.0), utterance_generator(0, "x"))
    unlimited = add_noise_at_snr(wav, white_noise(wav.numel(), utterance_generator(0, "x")), 0.0)
    assert unlimited.abs().max() > 1.0
    # One gain for the whole utterance (the SNR is kept), not clipping.
    torch.testing.assert_close(out, unlimited * (0.99 / unlimited.abs().max()))


@pytest.mark.parametrize(
    "bad, match",
    [({"noise": "brown"}, "unknown noise type 'brown'"), ({"rt60": -0.1}, "rt60"), ({"snr_db": math.inf}, "snr_db")],
)
def test_bad_settings_are_config_errors(bad, match):
    with pytest.raises(ConfigError, match=match):
        DegradeConfig(**bad).check()


def _manifest(tmp_path, n=3):
    rows = []
    for i in range(n):
        sf.write(tmp_path / f"c{i}.wav", speechlike(10 + i).numpy(), SR, subtype="PCM_16")
        subset = "seen_voice" if i % 2 == 0 else "heldout_voice"
        rows.append({"id": f"c{i}", "audio": f"c{i}.wav", "text": "hello there", "speaker": "s", "duration": 1.0, "subset": subset})
    path = tmp_path / "test.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_degrade_manifest_writes_a_paired_degraded_copy(tmp_path):
    src = _manifest(tmp_path)
    cfg = DegradeConfig(snr_db=8.0, rt60=0.0, seed=3)
    summary = degrade_manifest(src, tmp_path / "deg", cfg, progress=False)
    assert summary["utterances"] == summary["written"] == 3
    rows = [json.loads(line) for line in (tmp_path / "deg" / "test.jsonl").read_text().splitlines()]
    assert [r["id"] for r in rows] == ["c0", "c1", "c2"]
    assert {r["subset"] for r in rows} == {"degraded"}
    assert [r["source_subset"] for r in rows] == ["seen_voice", "heldout_voice", "seen_voice"]
    for r in rows:
        clean = load_audio(tmp_path / f"{r['id']}.wav")
        noisy = load_audio(tmp_path / "deg" / r["audio"])
        assert r["duration"] == pytest.approx(clean.numel() / SR)
        assert abs(snr_db(clean, noisy - clean) - 8.0) < 0.1  # 16-bit WAVs on both sides

    first = (tmp_path / "deg" / "wavs" / "c1.wav").read_bytes()
    again = degrade_manifest(src, tmp_path / "deg", cfg, progress=False)
    assert again["written"] == 0 and again["reused"] == 3  # a rerun keeps finished WAVs
    (tmp_path / "deg" / "wavs" / "c1.wav").unlink()
    assert degrade_manifest(src, tmp_path / "deg", cfg, progress=False)["written"] == 1
    assert (tmp_path / "deg" / "wavs" / "c1.wav").read_bytes() == first  # byte-identical re-render

    with pytest.raises(ConfigError, match="other settings"):
        degrade_manifest(src, tmp_path / "deg", DegradeConfig(snr_db=20.0), progress=False)


def test_degrade_manifest_names_the_bad_line(tmp_path):
    src = _manifest(tmp_path, n=2)
    (tmp_path / "c1.wav").write_bytes(b"not audio")
    with pytest.raises(DataError, match=r"test\.jsonl:2: utterance 'c1'"):
        degrade_manifest(src, tmp_path / "deg", DegradeConfig(), progress=False)
