"""Log-mel spectrograms of the prefix LM (its encoder's input and its predicted frames), and their way back to a waveform.

The same front end feeds the encoder and gives the continuation frames the decoder learns
to predict, so its parameters travel in the checkpoint: the vocoder must invert exactly
the transform that made the training targets.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
import torchaudio
from torch import Tensor

from .augment import speed_perturb
from .features import log_mel_spectrogram
from .load import Segment, load_audio


@dataclass(frozen=True)
class MelConfig:
    sample_rate: int = 16000
    n_fft: int = 400  # 25 ms windows
    hop_length: int = 160  # 10 ms: 100 frames per second
    n_mels: int = 80
    log_floor: float = 1e-5  # log(mel power + floor): bounded for silence
    griffin_lim_iters: int = 32

    @property
    def frame_rate(self) -> float:
        return self.sample_rate / self.hop_length


class MelFrontend:
    """Waveform <-> log-mel frames [T, n_mels].

    The forward transform is the shared ``audio.log_mel_spectrogram``; the inverse uses the
    same filterbank (torchaudio's defaults: HTK mel scale, no normalisation, up to Nyquist).
    """

    def __init__(self, cfg: MelConfig):
        self.cfg = cfg
        # gelsd (SVD) copes with the rank-deficient filterbank: with 80 mels over a 400-point
        # FFT the lowest filters fall between FFT bins and are empty. A CPU-only driver.
        self.inverse_mel = torchaudio.transforms.InverseMelScale(
            n_stft=cfg.n_fft // 2 + 1, n_mels=cfg.n_mels, sample_rate=cfg.sample_rate, driver="gelsd"
        )
        self.griffin_lim = torchaudio.transforms.GriffinLim(
            n_fft=cfg.n_fft, n_iter=cfg.griffin_lim_iters, hop_length=cfg.hop_length, power=2.0
        )

    def __call__(self, wave: Tensor) -> Tensor:
        """``wave`` [samples] at ``cfg.sample_rate`` -> log-mel [frames, n_mels]."""
        c = self.cfg
        with torch.no_grad():
            return log_mel_spectrogram(wave.float(), c.sample_rate, c.n_mels, c.n_fft, c.hop_length, c.log_floor)

    def load(self, path: str | Path, speed: float = 1.0, segment: Segment | None = None) -> Tensor:
        """Log-mel frames of an audio file (or its ``segment``), resampled to the configured
        rate and played ``speed`` times faster (speed perturbation: tempo and pitch together)."""
        wav = load_audio(path, sample_rate=self.cfg.sample_rate, segment=segment)
        return self(speed_perturb(wav, speed, self.cfg.sample_rate))

    def to_wave(self, log_mel: Tensor) -> Tensor:
        """Griffin-Lim: log-mel [frames, n_mels] -> waveform [samples].

        The mel filterbank is not invertible; InverseMelScale finds the least-squares linear
        spectrogram, and Griffin-Lim a phase for it. Robotic but dependency-free: a neural
        vocoder trained on these features does better where one is available.
        """
        c = self.cfg
        frames = log_mel.size(0)
        if frames == 0:
            return torch.zeros(0)
        with torch.no_grad():
            power = (log_mel.detach().float().cpu().exp() - c.log_floor).clamp(min=0.0).T
            # Griffin-Lim's STFT reflect-pads n_fft // 2 samples on each side, which needs a
            # longer signal than a few frames give (a continuation that stopped at once):
            # pad with silence, then cut the result back to the frames' own duration.
            missing = self.min_frames - frames
            if missing > 0:
                power = torch.nn.functional.pad(power, (0, missing))
            return self.griffin_lim(self.inverse_mel(power))[: frames * c.hop_length]

    @property
    def min_frames(self) -> int:
        """Fewest frames Griffin-Lim takes: the ISTFT of N frames is (N - 1) * hop samples,
        and the STFT's reflect padding needs more than n_fft // 2 of them."""
        return self.cfg.n_fft // (2 * self.cfg.hop_length) + 2
