"""Errors users see. Each names the file (and line) and the reason."""

from __future__ import annotations

from pathlib import Path


class UnifiedLMError(Exception):
    """Base class for every error the toolkit raises on purpose."""


class ConfigError(UnifiedLMError):
    """A recipe or command-line override that cannot be used."""


class DataError(UnifiedLMError):
    """Bad input data: names the file, the manifest line when known, and the reason."""

    def __init__(self, path: str | Path, reason: str, line: int | None = None):
        self.path = str(path)
        self.line = line
        self.reason = reason
        where = f"{self.path}:{line}" if line is not None else self.path
        super().__init__(f"{where}: {reason}")
