"""The loss-grid report on a fake grid: files, and table values that follow from the inputs."""

from __future__ import annotations

import csv
import math

import pytest
from matplotlib.image import imread

from _bench_util import fake_eval, fake_result
from unified_lm.bench.report import BootstrapSettings, EvalRow, eval_rows, summarize, write_report

IDS = ["t0", "t1", "t2", "t3"]
SUBSETS = ["seen_voice", "seen_voice", "heldout_voice", "heldout_voice"]
REFS = [10, 10, 10, 10]
# Word errors per utterance, by (loss, seed). sld has exactly half of mask's errors at
# every seed, ce exactly mask's.
ERRORS = {
    ("mask", 0): [2, 2, 2, 2],
    ("mask", 1): [4, 4, 4, 4],
    ("ce", 0): [2, 2, 2, 2],
    ("ce", 1): [4, 4, 4, 4],
    ("sld", 0): [1, 1, 1, 1],
    ("sld", 1): [2, 2, 2, 2],
}
BOOT = BootstrapSettings(num_samples=200)


def grid() -> list[dict]:
    results = []
    for tok in ("fbank-km500", "mfcc-km100"):
        for (loss, seed), errors in ERRORS.items():
            evals = {
                "dev": fake_eval(["d0", "d1"], [None, None], [1, 1], [10, 10]),
                "test": fake_eval(IDS, SUBSETS, errors, REFS),
                "degraded": fake_eval(IDS, ["degraded"] * 4, [2 * e for e in errors], REFS),
            }
            results.append(fake_result(tok, loss, seed, evals, alpha=0.05 if loss == "sld" else None))
    return results


def _row(rows, tok, loss, eval_, subset="all"):
    (row,) = [r for r in rows if (r["tokenizer"], r["loss"], r["eval"], r["subset"]) == (tok, loss, eval_, subset)]
    return row


def test_eval_rows_split_test_by_subset_but_not_single_subset_sets():
    assert eval_rows(grid()[:1]) == [
        EvalRow("test"), EvalRow("test", "heldout_voice"), EvalRow("test", "seen_voice"), EvalRow("degraded")
    ]


def test_table_values_follow_from_the_fake_cells():
    rows = summarize(grid(), baseline="mask", bootstrap=BOOT)
    assert len(rows) == 2 * 3 * 4  # tokenizers x losses x eval rows
    mask = _row(rows, "fbank-km500", "mask", "test")
    assert mask["seeds"] == 2 and mask["num_utts"] == 4
    assert mask["wer_mean"] == pytest.approx(0.3)  # seeds at 20% and 40%
    assert mask["wer_std"] == pytest.approx(math.sqrt(0.02))  # sample std of (0.2, 0.4)
    assert mask["rel_wer_change"] is None  # the baseline is not compared with itself

    sld = _row(rows, "fbank-km500", "sld", "test")
    assert sld["alpha"] == 0.05 and sld["wer_mean"] == pytest.approx(0.15)
    assert sld["rel_wer_change"] == pytest.approx(-0.5)
    assert sld["ci_low"] == pytest.approx(-0.5) and sld["ci_high"] == pytest.approx(-0.5)
    assert sld["p_better"] == 1.0

    ce = _row(rows, "mfcc-km100", "ce", "test", "heldout_voice")
    assert ce["num_utts"] == 2
    assert ce["rel_wer_change"] == 0.0 and ce["ci_low"] == ce["ci_high"] == 0.0

    degraded = _row(rows, "fbank-km500", "sld", "degraded")
    assert degraded["wer_mean"] == pytest.approx(0.3) and degraded["rel_wer_change"] == pytest.approx(-0.5)


def test_unequal_seed_counts_pool_by_seed_average():
    results = [r for r in grid() if not (r["loss"] == "sld" and r["seed"] == 1)]
    sld = _row(summarize(results, bootstrap=BOOT), "fbank-km500", "sld", "test")
    # sld seed 0 (1 error/utt) against mask's seed average (3 errors/utt).
    assert sld["seeds"] == 1 and math.isnan(sld["wer_std"])
    assert sld["rel_wer_change"] == pytest.approx(1 / 3 - 1)


def test_write_report_files_and_contents(tmp_path):
    sweep = {
        "fbank-km500": {"seed": 0, "dev_wer": {0.008: 0.12, 0.05: 0.10, 0.2: 0.11}, "dev_cer": {}, "chosen": 0.05},
        "mfcc-km100": {"seed": 0, "dev_wer": {0.008: 0.3, 0.05: None, 0.2: 0.2}, "dev_cer": {}, "chosen": None},
    }
    out = write_report(
        tmp_path, grid(), sweep=sweep, notes=["encodec-24k skipped: no local model weights"],
        header=["- every cell: 300 steps"], bootstrap=BOOT,
    )  # fmt: skip
    names = {p.split("/")[-1] for p in out["files"]}
    assert names == {
        "results.csv", "results.md", "wer.png", "rel_change.png", "alpha_sweep.png",
        "curves_fbank-km500.png", "curves_mfcc-km100.png",
    }  # fmt: skip
    for name in names - {"results.csv", "results.md"}:
        assert imread(tmp_path / name).shape[0] > 100  # a real, readable PNG

    with open(tmp_path / "results.csv") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 24
    sld = next(r for r in rows if (r["tokenizer"], r["loss"], r["eval"], r["subset"]) == ("mfcc-km100", "sld", "test", "all"))
    assert float(sld["wer_mean"]) == pytest.approx(0.15) and float(sld["rel_wer_change"]) == pytest.approx(-0.5)
    assert sld["baseline"] == "mask" and sld["alpha"] == "0.05"

    md = (tmp_path / "results.md").read_text()
    assert "| fbank-km500 | sld (α=0.05) | test | 4 | 2 | 15.00 ± 7.07 | 15.00 ± 7.07 | -50.0% [-50.0, -50.0] | 1.00 |" in md
    assert "| fbank-km500 | mask | test/heldout_voice | 2 | 2 | 30.00 ± 14.14 |" in md
    assert "| fbank-km500 | 0.05 | 10.00 | – | ✓ |" in md  # the sweep, with the alpha used
    assert "fbank-km500: alpha = 0.05 (lowest dev WER of the sweep, seed 0)" in md
    assert "mfcc-km100: alpha not chosen yet" in md and "(pending)" in md
    assert "- encodec-24k skipped" in md and "- every cell: 300 steps" in md
    assert "![curves_fbank-km500.png](curves_fbank-km500.png)" in md


def test_report_of_an_empty_grid_still_writes_its_tables(tmp_path):
    out = write_report(tmp_path, [], bootstrap=BOOT)
    assert out["rows"] == []
    assert "(no finished cells yet)" in (tmp_path / "results.md").read_text()
    assert (tmp_path / "results.csv").read_text().startswith("tokenizer,loss,alpha,eval,subset")


def test_without_baseline_cells_there_is_no_interval():
    rows = summarize([r for r in grid() if r["loss"] != "mask"], bootstrap=BOOT)
    assert rows and all(r["rel_wer_change"] is None for r in rows)


@pytest.mark.parametrize(
    ("dev_wer", "seed_std", "verdict"),
    [
        ({0.1: 0.30, 0.5: 0.31, 2.0: 0.305}, 0.01, "within seed noise (1.00 points"),  # range 1 <= 2 x 1
        ({0.1: 0.30, 0.5: 0.31, 2.0: 0.40}, 0.01, "the choice between those two is within seed noise"),
        ({0.1: 0.30, 0.5: 0.35, 2.0: 0.40}, 0.01, "leads the next by 5.00 points, more than twice"),
        ({0.1: 0.30, 0.5: 0.35}, None, None),  # one seed: no verdict
    ],
)
def test_the_sweep_says_what_its_dev_wers_tell_apart_from_seed_noise(tmp_path, dev_wer, seed_std, verdict):
    chosen = min(dev_wer, key=dev_wer.get)
    sweep = {"km/sld": {"seed": 0, "dev_wer": dev_wer, "dev_cer": {}, "chosen": chosen, "dev_seed_std": seed_std}}
    write_report(tmp_path, grid(), sweep=sweep, bootstrap=BOOT, plots=False)
    line = next(x for x in (tmp_path / "results.md").read_text().splitlines() if x.startswith("- km/sld: alpha = 0.1"))
    assert (verdict in line) if verdict else line.endswith("(lowest dev WER of the sweep, seed 0).")
