"""``unified-lm bench losses``: arguments to ``run_loss_grid``, and what the command prints."""

from __future__ import annotations

import functools
import json
from pathlib import Path

import pytest

from _bench_util import REPO, FakeRunner, grid_config, make_audio_corpus
from unified_lm import cli
from unified_lm.bench import losses

FBANK_ONLY = [{"recipe": str(REPO / "tokenizers/fbank-km500.yaml"), "overrides": ["kmeans.k=8", "name=fbank-km8"]}]


def _fake_grid(calls: list, summary: dict):
    def run_loss_grid(config, overrides=(), jobs=1, cells=None):
        calls.append({"config": config, "overrides": list(overrides), "jobs": jobs, "cells": cells})
        out = Path(summary["out_dir"])
        out.mkdir(parents=True, exist_ok=True)
        (out / "results.md").write_text(
            "# title\n\n- header\n\n## WER and CER per cell\n\nprose\n\n| tokenizer | loss |\n|---|---|\n| km | mask |\n\n"
            "## SLD alpha, chosen on dev\n\n| tokenizer | alpha |\n"
        )
        return summary

    return run_loss_grid


def test_arguments_reach_run_loss_grid_and_the_command_prints_the_table(tmp_path, monkeypatch, capsys):
    out = tmp_path / "null"  # a name YAML would read as None: --out must keep it a path
    summary = {
        "out_dir": str(out),
        "cells": {"total": 18, "done": 5, "ran": ["a", "b"], "failed": ["c"], "pending": ["c", "d"]},
        "alpha": {"km": {"chosen": None, "dev_wer": {0.1: None}}, "km2": {"chosen": 0.05, "dev_wer": {0.05: 0.2}}},
        "notes": ["encodec-24k skipped"],
    }
    calls: list = []
    monkeypatch.setattr(losses, "run_loss_grid", _fake_grid(calls, summary))
    argv = ["bench", "losses", "--config", "g.yaml", "--jobs", "2", "--cells", "1/3", "--out", str(out), "train.max_steps=5"]
    assert cli.main(argv) == 1  # a cell failed
    assert calls == [
        {"config": Path("g.yaml"), "overrides": ["train.max_steps=5", f"out_dir={json.dumps(str(out))}"], "jobs": 2, "cells": "1/3"}
    ]
    printed = capsys.readouterr().out
    # The main table only: its heading and rows, not the prose or the next section.
    assert printed.startswith("## WER and CER per cell\n| tokenizer | loss |\n|---|---|\n| km | mask |\n")
    assert "prose" not in printed and "alpha |" not in printed
    assert "cells: 5 of 18 done; this run: 2 ran, 1 failed; 2 pending" in printed
    assert "alpha for km: not chosen yet" in printed and "alpha for km2: 0.05 (lowest dev WER)" in printed
    assert "note: encodec-24k skipped" in printed and printed.rstrip().endswith(f"report: {out / 'results.md'}")

    summary["cells"]["failed"] = []
    assert cli.main(["bench", "losses", "--config", "g.yaml"]) == 0
    assert calls[-1] == {"config": Path("g.yaml"), "overrides": [], "jobs": 1, "cells": None}


def test_the_command_runs_a_grid_into_out(tmp_path, monkeypatch, capsys):
    corpus = make_audio_corpus(tmp_path / "corpus")
    config = grid_config(tmp_path / "grid.yaml", corpus, tmp_path / "config-out", tokenizers=FBANK_ONLY, seeds=[0])
    # The real grid with fake training: cells score by loss (see FakeRunner).
    monkeypatch.setattr(losses, "run_loss_grid", functools.partial(losses.run_loss_grid, runner=FakeRunner(), progress=False))
    out = tmp_path / "elsewhere"
    assert cli.main(["bench", "losses", "--config", str(config), "--out", str(out), "estimate_step_seconds=1"]) == 0
    printed = capsys.readouterr().out
    assert (out / "results.md").is_file() and not (tmp_path / "config-out").exists()
    assert "| fbank-km8 | sld (α=0.1) | test | 4 | 1 |" in printed
    assert "| fbank-km8 | mask | degraded | 4 | 1 |" in printed
    assert "cells: 3 of 3 done; this run: 4 ran, 0 failed; 0 pending" in printed  # + the losing sweep cell
    assert "alpha for fbank-km8/sld: 0.1 (lowest dev WER)" in printed
    assert f"report: {out / 'results.md'}" in printed


def test_a_bad_slice_is_one_error_line(tmp_path, capsys):
    corpus = {s: tmp_path / f"{s}.jsonl" for s in ("train", "dev", "test")}
    config = grid_config(tmp_path / "grid.yaml", corpus, tmp_path / "out")
    assert cli.main(["bench", "losses", "--config", str(config), "--cells", "3/3"]) == 2
    assert "unified-lm: error: cells: expected I/N with 0 <= I < N" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()  # failed before any work


def test_an_unknown_override_is_one_error_line(tmp_path, capsys):
    corpus = {s: tmp_path / f"{s}.jsonl" for s in ("train", "dev", "test")}
    config = grid_config(tmp_path / "grid.yaml", corpus, tmp_path / "out")
    assert cli.main(["bench", "losses", "--config", str(config), "train.max_stepz=3"]) == 2
    assert "unknown key(s) ['max_stepz']" in capsys.readouterr().err


@pytest.mark.parametrize("jobs", ["0", "x"])
def test_jobs_must_be_a_positive_count(tmp_path, capsys, jobs):
    corpus = {s: tmp_path / f"{s}.jsonl" for s in ("train", "dev", "test")}
    config = grid_config(tmp_path / "grid.yaml", corpus, tmp_path / "out")
    if jobs == "x":
        with pytest.raises(SystemExit):  # argparse: not an int
            cli.main(["bench", "losses", "--config", str(config), "--jobs", jobs])
    else:
        assert cli.main(["bench", "losses", "--config", str(config), "--jobs", jobs]) == 2
        assert "jobs must be >= 1" in capsys.readouterr().err
