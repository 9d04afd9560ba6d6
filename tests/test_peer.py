"""`unified-lm bench peer`: PocketSphinx from its wheel on a synthesized manifest, scored as
`decode` scores (rows per utterance, per-subset WER/CER)."""

import json

import pytest

from unified_lm.bench.peer import peer_available, run_peer
from unified_lm.cli import main
from unified_lm.corpus.synth import synthesize
from unified_lm.decode import scores_path
from unified_lm.io import read_jsonl

pytestmark = pytest.mark.skipif(not peer_available(), reason="the peer extra is not installed (pip install -e '.[peer]')")


@pytest.fixture(scope="module")
def test_manifest(tmp_path_factory):
    out = tmp_path_factory.mktemp("synth")
    synthesize(out, num_utts=40, seed=5, jobs=2, progress=False)  # 2 test sentences, each in 2 voices
    return out / "test.jsonl"


def test_peer_transcribes_and_scores_per_subset(test_manifest, tmp_path):
    scores = run_peer(test_manifest, tmp_path / "peer.hyp.jsonl", jobs=2)
    rows = read_jsonl(tmp_path / "peer.hyp.jsonl")
    refs = read_jsonl(test_manifest)
    assert [r["id"] for r in rows] == [r["id"] for r in refs]  # order kept across the worker processes
    assert set(scores["subsets"]) == {"seen_voice", "heldout_voice"}
    assert all(r["hyp"] for r in rows)  # it heard something in every utterance
    assert scores["cer"] < 0.6  # a recognizer that reads this speech, not a stub
    assert json.loads(scores_path(tmp_path / "peer.hyp.jsonl").read_text())["wer"] == scores["wer"]


def test_cli_peer_prints_the_table(test_manifest, tmp_path, capsys):
    assert main(["bench", "peer", "--manifest", str(test_manifest), "--out", str(tmp_path / "p.jsonl"), "--jobs", "1"]) == 0
    out = capsys.readouterr().out
    assert "heldout_voice" in out and "seen_voice" in out
