"""unified-lm: discrete-token unified speech-text decoder-only language models."""

__version__ = "0.1.0"
