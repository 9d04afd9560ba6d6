"""Audio front end: checked loading and resampling, frame features, augmentation."""

from .augment import SPEED_FACTORS, speed_perturb
from .features import FRAME_RATE, fbank, log_mel_spectrogram, mean_normalize, mfcc, num_frames
from .load import SAMPLE_RATE, AudioInfo, audio_info, load_audio, read_audio, resample

__all__ = [
    "FRAME_RATE",
    "SAMPLE_RATE",
    "SPEED_FACTORS",
    "AudioInfo",
    "audio_info",
    "fbank",
    "load_audio",
    "log_mel_spectrogram",
    "mean_normalize",
    "mfcc",
    "num_frames",
    "read_audio",
    "resample",
    "speed_perturb",
]
