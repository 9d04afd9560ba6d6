"""Logging for the command line: the toolkit's own progress lines and everyone's warnings.

Libraries' INFO lines (fairseq2 listing its file-system protocols, faiss probing CPU
features on every import) say nothing to a user and stay quiet.
"""

from __future__ import annotations

import logging


def setup_logging() -> None:
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("unified_lm").setLevel(logging.INFO)
