"""The discretization benchmark runs end to end on tiny data and writes its tables."""

import csv

from _discretize_util import ROOT, make_corpus
from unified_lm.bench.discretize import run_discretize_bench
from unified_lm.discretize import fit_tokenizer


def test_bench_writes_tables_for_recipes_and_fitted_dirs(tmp_path, capsys):
    corpus = make_corpus(tmp_path / "corpus", num_utts=4, seconds=1.0)
    small = ["kmeans.k=8", "kmeans.sample_fraction=1.0"]
    fitted = tmp_path / "mfcc-tok"
    fit_tokenizer(ROOT / "tokenizers" / "mfcc-km100.yaml", corpus, fitted, overrides=small, progress=False)
    recipe = tmp_path / "fbank-small.yaml"
    recipe.write_text((ROOT / "tokenizers" / "fbank-km500.yaml").read_text().replace("k: 500", "k: 8"))

    out = tmp_path / "bench"
    results = run_discretize_bench(
        corpus, out, [str(recipe), str(fitted)], frames=3000, ks=(8, 32), fit_ks=(2, 8), progress=False
    )

    assert [t["tokenizer"] for t in results["throughput"]] == ["fbank-km500", "mfcc-km100"]
    fbank_row, mfcc_row = results["throughput"]
    assert fbank_row["fit_seconds"] is not None and mfcc_row["fit_seconds"] is None  # fitted dir reused
    assert fbank_row["frames"] == 4 * 98 and fbank_row["units"] == 4 * 98
    assert all(t["total_x_rt"] > 0 for t in results["throughput"])
    modes = [(a["k"], a["mode"], a["calls"]) for a in results["assignment"]]
    # per utterance: 3000 frames in calls of 98 (one 1-second utterance each), the last cut short
    assert modes == [(8, "bulk", 1), (8, "per utterance", 31), (32, "bulk", 1), (32, "per utterance", 31)]
    for a in results["assignment"]:
        assert a["frames"] == 3000 and a["agreement"] > 0.999  # same centroids, same nearest
    two, eight = results["fitting"]
    assert (two["k"], eight["k"]) == (2, 8) and eight["frames"] == 3000 and eight["distinct_frames"] == 4 * 98
    assert eight["faiss_seconds"] > 0 and eight["sklearn_seconds"] > 0
    # Both fits are real k-means: below the frames' spread around one centre, lower with more centres.
    for name in ("faiss", "sklearn"):
        assert 0 < eight[f"{name}_mse"] < two[f"{name}_mse"] < two["one_centroid_mse"]
    md = (out / "discretize.md").read_text()
    assert "| fbank-km500 | kmeans | 8 |" in md and "faiss / scikit-learn" in md and "## k-means fitting" in md
    assert md in capsys.readouterr().out
    rows = list(csv.DictReader(open(out / "discretize.csv")))
    assert {"section", "name", "metric", "value"} == set(rows[0])
    assert {r["section"] for r in rows} == {"throughput", "assignment", "fitting"}
    assert (out / "discretize.json").is_file()
    assert not [p for p in out.iterdir() if p.name.startswith(".")]  # the scratch fit is gone


def test_data_memory_bench_measures_both_sides_and_keeps_no_manifest(tmp_path):
    from unified_lm.bench.data_memory import run_data_memory_bench

    out = run_data_memory_bench(tmp_path, records=3000, mean_units=175, list_records=1000)
    kinds = [(r["kind"], r["records"]) for r in out["results"]]
    assert kinds == [("list", 1000), ("packed", 1000), ("packed", 3000)]
    assert all(r["units"] > 100 * r["records"] for r in out["results"])
    assert out["ratio"] > 3  # lists of Python ints cost several times the packed array
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data_memory.json", "data_memory.md"]
