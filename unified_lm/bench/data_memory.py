"""Memory of the training data: a unit manifest held as records of Python lists (what
``read_unit_manifest`` returns) against ``PackedUnits`` (what training holds), side by side.

    unified-lm bench data-memory [--records 1000000] [--units 175] [--list-records 200000]

The manifest is synthetic, shaped like the reference recipe's LibriSpeech data: ``--units``
units an utterance on average (HuBERT's 50 units/s over 12.3 s, then 6,000 unit subwords of
~3.5 units each: ~175), unit ids below 6,000, ~180-character transcripts. Each side is
loaded in a fresh process and measured as the growth of its resident set. The list side
is measured at ``--list-records`` (it needs ~13 KiB a record) and scaled linearly to
``--records``; the table says which numbers are scaled. Results: ``data_memory.md`` and
``data_memory.json`` in ``--out``.
"""

from __future__ import annotations

import gc
import json
import platform
import random
import tempfile
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from pathlib import Path
from typing import Any

from ..io import atomic_write_text, dump_json_line
from .tables import markdown_table

GOAL_GIB, GOAL_RECORDS = 1.0, 1_000_000  # per rank (issue: real corpora at scale)
WORDS = "the of and to a in that he was it his is with as for had you not be her on at by which".split()


def write_synthetic_manifest(path: Path, records: int, mean_units: int, seed: int = 0) -> None:
    rng = random.Random(seed)
    tokenizer = {"name": "hubert-large-l23-km2000-sp6000", "hash": "0123456789ab"}
    with open(path, "w", encoding="utf-8") as f:
        for i in range(records):
            n = max(1, int(rng.gauss(mean_units, mean_units / 3)))
            text = " ".join(rng.choice(WORDS) for _ in range(45))[:180]
            units = [rng.randrange(6000) for _ in range(n)]
            f.write(dump_json_line({"id": f"utt{i:08d}", "text": text, "speaker": f"spk{i % 2000}", "units": units, "tokenizer": tokenizer}))


def _rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * 4096  # resident pages


def _measure(kind: str, manifest: str, limit: int) -> dict[str, Any]:
    """Runs in a fresh process: loads ``limit`` records one way, returns the RSS growth."""
    import itertools

    from ..corpus.manifest import iter_unit_manifest
    from ..unit_data import PackedUnits

    gc.collect()
    before = _rss_bytes()
    records = itertools.islice(iter_unit_manifest(manifest), limit)
    held = list(records) if kind == "list" else PackedUnits(records)
    gc.collect()
    grown = _rss_bytes() - before
    units = sum(len(r.units) for r in held) if kind == "list" else int(held.offsets[-1])
    return {"kind": kind, "records": len(held), "units": units, "rss_bytes": grown}


def run_data_memory_bench(out_dir: str | Path, records: int = 1_000_000, mean_units: int = 175, list_records: int = 200_000) -> dict:
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    runs = [("list", min(list_records, records)), ("packed", min(list_records, records)), ("packed", records)]
    results = []
    with tempfile.TemporaryDirectory(dir=out_dir) as tmp:  # ~1 GB for 1M records: not kept
        manifest = Path(tmp) / "synthetic.jsonl"
        print(f"writing {records:,} synthetic records ...", flush=True)
        write_synthetic_manifest(manifest, records, mean_units)
        for kind, n in runs:
            with ProcessPoolExecutor(1, mp_context=get_context("spawn")) as pool:
                results.append(pool.submit(_measure, kind, str(manifest), n).result())
            print(f"{kind} x {n:,}: {results[-1]['rss_bytes'] / 2**20:.0f} MiB", flush=True)
    rows = []
    for r in results:
        per = r["rss_bytes"] / r["records"]
        at_target = per * records
        scaled = r["records"] != records
        rows.append([
            "records of Python lists" if r["kind"] == "list" else "PackedUnits",
            f"{r['records']:,}", f"{r['units'] / r['records']:.0f}", f"{per:,.0f}",
            f"{at_target / 2**30:.2f}{' (scaled)' if scaled else ''}",
        ])  # fmt: skip
    list_per = results[0]["rss_bytes"] / results[0]["records"]
    packed_per = results[1]["rss_bytes"] / results[1]["records"]
    packed_total = results[2]["rss_bytes"] / 2**30
    at_goal = results[2]["rss_bytes"] / results[2]["records"] * GOAL_RECORDS / 2**30
    header = ["held as", "records loaded", "units/record", "bytes/record", f"GiB for {records:,} records"]
    report = "\n".join([
        f"# Training-data memory: {records:,} unit records of ~{mean_units} units, one rank", "",
        *markdown_table(header, rows), "",
        f"Packed vs lists at {results[0]['records']:,} records: {list_per / packed_per:.1f}x less resident memory; "
        f"{records:,} records packed: {packed_total:.2f} GiB; at {GOAL_RECORDS:,} records {at_goal:.2f} GiB "
        f"(goal: at most {GOAL_GIB:g} GiB per rank: {'met' if at_goal <= GOAL_GIB else 'MISSED'}).",
        f"Command: `unified-lm bench data-memory --records {records} --units {mean_units} --list-records {list_records}`; "
        f"{platform.python_implementation()} {platform.python_version()}.", "",
    ])  # fmt: skip
    atomic_write_text(out_dir / "data_memory.md", report)
    atomic_write_text(out_dir / "data_memory.json", json.dumps({"results": results, "records": records, "mean_units": mean_units}, indent=2))
    print(report)
    return {"results": results, "packed_gib": packed_total, "ratio": list_per / packed_per}
