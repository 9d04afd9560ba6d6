"""What the units of a CTC-encoder tokenizer still say, with no training at all.

Each unit is read as the character its centroid stands for: the CTC head's most likely
character at the centroid (for ``posteriors`` features the centroid is itself a
square-rooted posterior, so its largest entry). Repeats and blanks collapse as in greedy
CTC decoding, and the result is scored against the transcripts. Beside the encoder's own
greedy CER it shows how much the clustering lost; a decoder can hardly do better than
the content its units carry.

    python -m unified_lm.bench.unit_readout --tokenizer runs/tok --units runs/units/dev.jsonl --max-utts 100
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import torch

from ..corpus.manifest import read_unit_manifest
from ..discretize import load_tokenizer
from ..discretize.extractors import CtcEncoderFeatures
from ..discretize.tokenizer import SpeechTokenizer
from ..errors import ConfigError
from ..scoring import score_corpus


def unit_characters(tok: SpeechTokenizer, tokdir: Path) -> list[int]:
    """The CTC label (0 = blank) each unit's centroid stands for."""
    features = getattr(tok.quantizer, "features", None)
    if not isinstance(features, CtcEncoderFeatures) or tok.subwords is not None:
        raise ConfigError(f"{tokdir}: a read-out needs k-means units of ctc_encoder features (no unit BPE)")
    centroids = torch.from_numpy(tok.quantizer.kmeans.centroids).float()
    if features.cfg.posteriors:
        return centroids.argmax(-1).tolist()
    if features.layer != features.encoder.cfg.num_layers:
        raise ConfigError(f"{tokdir}: block {features.layer} is below the CTC head; read-outs need the last block")
    with torch.no_grad():
        return features.encoder.ctc_logits(centroids).argmax(-1).tolist()


def unit_readout(tokdir: str | Path, units_manifest: str | Path, max_utts: int | None = None) -> dict[str, Any]:
    """CER/WER (overall and per subset) of the units of ``units_manifest`` read as characters."""
    from ..models import load_encoder_checkpoint

    tok = load_tokenizer(tokdir)
    labels = unit_characters(tok, Path(tokdir))
    _, chars, _ = load_encoder_checkpoint(tok.quantizer.features.path)
    records = read_unit_manifest(units_manifest)[:max_utts]
    hyps = [chars.decode_ctc([labels[u] for u in r.units]) for r in records]
    scores = score_corpus([r.text for r in records], hyps, [r.subset for r in records])
    scores.pop("utterances")
    return scores


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m unified_lm.bench.unit_readout", description=__doc__.splitlines()[0])
    p.add_argument("--tokenizer", required=True, type=Path, help="a fitted ctc_encoder k-means tokenizer")
    p.add_argument("--units", required=True, type=Path, help="a unit manifest it wrote")
    p.add_argument("--max-utts", type=int, help="only the first N utterances")
    args = p.parse_args(argv)
    s = unit_readout(args.tokenizer, args.units, args.max_utts)
    print(f"{s['num_utts']} utterances: read-out CER {100 * s['cer']:.1f}%, WER {100 * s['wer']:.1f}%")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
