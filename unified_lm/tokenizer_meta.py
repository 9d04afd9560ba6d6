"""The identity of a fitted speech tokenizer, as recorded in its directory (``meta.json``).

This is the contract between discretizers, unit manifests, the unified vocabulary and
checkpoints: units are always ints in ``[0, num_units)``; for multi-codebook codecs the
discretizer has already offset codebook ``c`` by ``c * codebook_size``, so
``num_units == codebooks * codebook_size`` and each codebook owns a contiguous range.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

from .errors import DataError

META_FILE = "meta.json"


@dataclass(frozen=True)
class TokenizerMeta:
    name: str  # recipe name, e.g. "fbank-km500"
    hash: str  # content hash of the fitted state; units carry it so mismatches are caught
    kind: str  # discretizer registry name: "kmeans", "encodec", ...
    num_units: int
    frame_rate: float  # frames per second before dedup
    codebooks: int = 1
    codebook_size: int | None = None  # defaults to num_units // codebooks

    @property
    def identity(self) -> dict[str, str]:
        """What a unit manifest line records under ``tokenizer``."""
        return {"name": self.name, "hash": self.hash}

    def save(self, tokdir: str | Path) -> None:
        from .io import atomic_write_text

        atomic_write_text(Path(tokdir) / META_FILE, json.dumps(asdict(self), indent=2) + "\n")

    @classmethod
    def load(cls, tokdir: str | Path) -> "TokenizerMeta":
        path = Path(tokdir) / META_FILE
        if not path.is_file():
            raise DataError(path, "not a tokenizer directory (meta.json missing); run `unified-lm discretize fit` first")
        try:
            return cls(**json.loads(path.read_text(encoding="utf-8")))
        except (json.JSONDecodeError, TypeError) as e:
            raise DataError(path, f"unreadable tokenizer metadata: {e}") from None
