"""Tables and plots of a loss-comparison grid: ``results.md``, ``results.csv``, PNG figures.

Input: the result of every finished cell (``run_cell``'s dict: tokenizer, loss, alpha,
seed, ``evals`` with per-utterance error counts, ``curves`` from ``metrics.jsonl``) and the
alpha sweep. Output, in the grid's directory:

- ``results.csv``: one row per (tokenizer, loss, evaluation set): WER and CER as mean and
  sample std over seeds, each seed's WER, and for every loss but the baseline the relative
  WER change against it with a two-level paired bootstrap interval
  (``bootstrap.hierarchical_bootstrap``: seeds resampled, then utterances, so the interval
  covers training noise as well as the test set's);
- ``results.md``: the same table, the alpha sweep and which alpha was used, notes (skipped
  tokenizers, pending cells), and the figures;
- ``wer.png`` (WER per loss, std bars), ``rel_change.png`` (relative change with its
  interval), ``alpha_sweep.png`` (dev WER against alpha), ``curves_<tokenizer>.png`` (the
  loss parts of every cell against training steps, one line per seed).

Figures are drawn with matplotlib's object API on the Agg canvas, so no display and no
global pyplot state are involved.
"""

from __future__ import annotations

import io
import math
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from ..io import atomic_open, atomic_write_text
from .bootstrap import hierarchical_bootstrap
from .tables import markdown_table, write_csv

# The loss parts in plotting order; any other part a loss logs follows them.
CURVE_ORDER = ("loss", "ce_text", "ce_speech", "kl_speech")
CSV_FIELDS = (
    "tokenizer", "loss", "alpha", "eval", "subset", "seeds", "num_utts",
    "wer_mean", "wer_std", "cer_mean", "cer_std", "seed_list", "wer_per_seed", "cer_per_seed",
    "baseline", "rel_wer_change", "ci_low", "ci_high", "p_better",
)  # fmt: skip


@dataclass(frozen=True)
class BootstrapSettings:
    num_samples: int = 2000
    confidence: float = 0.95
    seed: int = 0


@dataclass(frozen=True)
class EvalRow:
    """One evaluation set of the table: a decoded manifest, whole or one of its subsets."""

    eval: str
    subset: str | None = None

    @property
    def label(self) -> str:
        return self.eval if self.subset is None else f"{self.eval}/{self.subset}"


def eval_rows(results: Sequence[dict], skip: Sequence[str] = ("dev",)) -> list[EvalRow]:
    """Every evaluation set in ``results`` (first-seen order), then each of its subsets, unless
    the set holds a single subset (its row would repeat the whole set's)."""
    rows: list[EvalRow] = []
    for r in results:
        for name, ev in r["evals"].items():
            if name in skip or EvalRow(name) in rows:
                continue
            rows.append(EvalRow(name))
            subsets = sorted(set(ev["utterances"]["subset"]) - {None})
            if len(subsets) > 1:
                rows.extend(EvalRow(name, s) for s in subsets)
    return rows


def _ordered(values: Sequence[Any]) -> list[Any]:
    return list(dict.fromkeys(values))


def _rates(ev: dict, subset: str | None) -> tuple[float, float] | None:
    scores = ev if subset is None else ev["subsets"].get(subset)
    return None if scores is None else (scores["wer"], scores["cer"])


def _utterance_errors(ev: dict, subset: str | None) -> dict[str, tuple[float, float]]:
    """id -> (word errors, reference words) of the utterances in ``subset`` (all if None)."""
    u = ev["utterances"]
    return {
        uid: (err, ref)
        for uid, sub, err, ref in zip(u["id"], u["subset"], u["word_errors"], u["ref_words"])
        if subset is None or sub == subset
    }


def _paired_arrays(base_runs: list[dict], sys_runs: list[dict]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``[runs, utts]`` error arrays of both systems and the reference lengths, over the
    utterances every run decoded, in one order."""
    ids = sorted(set.intersection(*(set(r) for r in base_runs + sys_runs)))
    base = np.array([[r[i][0] for i in ids] for r in base_runs], dtype=np.float64)
    sys_ = np.array([[r[i][0] for i in ids] for r in sys_runs], dtype=np.float64)
    ref = np.array([base_runs[0][i][1] for i in ids], dtype=np.float64)
    return base, sys_, ref


def _mean_std(values: list[float]) -> tuple[float, float]:
    # Sample std (ddof=1): the spread of a new seed's result; undefined for one seed.
    if not values:
        return math.nan, math.nan
    return float(np.mean(values)), float(np.std(values, ddof=1)) if len(values) > 1 else math.nan


def summarize(
    results: Sequence[dict], baseline: str = "mask", bootstrap: BootstrapSettings = BootstrapSettings()
) -> list[dict[str, Any]]:
    """The table: one row per (tokenizer, loss, evaluation row), as written to results.csv."""
    groups: dict[tuple[str, str], list[dict]] = defaultdict(list)
    for r in results:
        groups[(r["tokenizer"], r["loss"])].append(r)
    for runs in groups.values():
        runs.sort(key=lambda r: r["seed"])
    tokenizers = _ordered(r["tokenizer"] for r in results)
    losses = _ordered(r["loss"] for r in results)
    table = []
    for tok in tokenizers:
        for loss in losses:
            runs = groups.get((tok, loss))
            if not runs:
                continue
            for row in eval_rows(runs):
                table.append(_table_row(tok, loss, runs, row, groups.get((tok, baseline), []), baseline, bootstrap))
    return [t for t in table if t is not None]


def _table_row(tok, loss, runs, row: EvalRow, base_runs, baseline, bootstrap: BootstrapSettings) -> dict | None:
    runs = [r for r in runs if row.eval in r["evals"] and _rates(r["evals"][row.eval], row.subset)]
    if not runs:
        return None
    rates = [_rates(r["evals"][row.eval], row.subset) for r in runs]
    wer_mean, wer_std = _mean_std([w for w, _ in rates])
    cer_mean, cer_std = _mean_std([c for _, c in rates])
    errors = [_utterance_errors(r["evals"][row.eval], row.subset) for r in runs]
    out = {
        "tokenizer": tok,
        "loss": loss,
        "alpha": runs[0].get("alpha"),
        "eval": row.eval,
        "subset": row.subset or "all",
        "seeds": len(runs),
        "num_utts": len(errors[0]),
        "wer_mean": wer_mean,
        "wer_std": wer_std,
        "cer_mean": cer_mean,
        "cer_std": cer_std,
        # Per seed, ';'-joined: the table's spread comes from these.
        "seed_list": ";".join(str(r["seed"]) for r in runs),
        "wer_per_seed": ";".join(f"{w:.6g}" for w, _ in rates),
        "cer_per_seed": ";".join(f"{c:.6g}" for _, c in rates),
        "baseline": None,
        "rel_wer_change": None,
        "ci_low": None,
        "ci_high": None,
        "p_better": None,
    }
    base_runs = [r for r in base_runs if row.eval in r["evals"]]
    if loss == baseline or not base_runs:
        return out
    base_errors = [_utterance_errors(r["evals"][row.eval], row.subset) for r in base_runs]
    base, sys_, ref = _paired_arrays(base_errors, errors)
    if ref.size == 0:
        return out
    b = hierarchical_bootstrap(base, sys_, ref, bootstrap.num_samples, bootstrap.confidence, bootstrap.seed)
    out.update(baseline=baseline, rel_wer_change=b.rel_change, ci_low=b.ci_low, ci_high=b.ci_high, p_better=b.p_better)
    return out


# ---- writing ----------------------------------------------------------------------------


def write_report(
    out_dir: str | Path,
    results: Sequence[dict],
    *,
    baseline: str = "mask",
    sweep: dict[str, dict] | None = None,
    notes: Sequence[str] = (),
    header: Sequence[str] = (),
    bootstrap: BootstrapSettings = BootstrapSettings(),
    plots: bool = True,
) -> dict[str, Any]:
    """Writes results.md, results.csv and (``plots``) the PNGs into ``out_dir``; returns
    ``{rows, files, markdown}``.

    ``results`` are the main grid's cell results (sweep-only cells excluded); ``sweep`` maps
    a tokenizer to ``{seed, dev_wer: {alpha: WER or None}, dev_cer: {...}, chosen}``;
    ``header`` lines open results.md (the grid's settings), ``notes`` close it.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    rows = summarize(results, baseline, bootstrap)
    files = [out / "results.csv", out / "results.md"]
    _write_csv(files[0], rows)
    figures = {}
    if rows and plots:
        figures["wer.png"] = _wer_figure(rows)
        if any(r["rel_wer_change"] is not None for r in rows):
            figures["rel_change.png"] = _rel_change_figure(rows, baseline, bootstrap.confidence)
    if plots and sweep and any(v is not None for s in sweep.values() for v in s["dev_wer"].values()):
        figures["alpha_sweep.png"] = _sweep_figure(sweep)
    for tok in _ordered(r["tokenizer"] for r in results) if plots else []:
        fig = _curves_figure([r for r in results if r["tokenizer"] == tok], tok)
        if fig is not None:
            figures[f"curves_{tok}.png"] = fig
    for name, fig in figures.items():
        _save_png(fig, out / name)
        files.append(out / name)
    md = _markdown(rows, baseline, sweep or {}, notes, header, bootstrap, list(figures))
    atomic_write_text(files[1], md)
    return {"rows": rows, "files": [str(f) for f in files], "markdown": md}


def _write_csv(path: Path, rows: list[dict]) -> None:
    # None and NaN (x != x) are left empty.
    write_csv(path, CSV_FIELDS, ([("" if r[k] is None or r[k] != r[k] else r[k]) for k in CSV_FIELDS] for r in rows))


def _pct(x: float | None, digits: int = 2) -> str:
    return "–" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{100 * x:.{digits}f}"


def _mean_pm_std(mean: float, std: float) -> str:
    return _pct(mean) if math.isnan(std) else f"{_pct(mean)} ± {_pct(std)}"


def _change(r: dict) -> str:
    if r["rel_wer_change"] is None or math.isnan(r["rel_wer_change"]):
        return "–"
    return f"{100 * r['rel_wer_change']:+.1f}% [{100 * r['ci_low']:+.1f}, {100 * r['ci_high']:+.1f}]"


def _markdown(rows, baseline, sweep, notes, header, bootstrap: BootstrapSettings, figures: list[str]) -> str:
    conf = f"{100 * bootstrap.confidence:.0f}%"
    lines = ["# Input-speech losses: mask vs ce vs sld", "", *header, ""]
    lines += [
        "## WER and CER per cell",
        "",
        f"Mean ± sample std over seeds, in %. The relative WER change is against `{baseline}` "
        f"with a {conf} two-level paired-bootstrap interval ({bootstrap.num_samples} resamples: the "
        "training seeds drawn with replacement, the same seed positions for both losses, each "
        "utterance's errors averaged over the drawn seeds, then the utterances drawn, the same for "
        "both), so the interval covers seed-to-seed noise as well as the test set's; P(better) is "
        f"the share of resamples where the loss beats `{baseline}`. Per-seed numbers: results.csv.",
        "",
        *markdown_table(["tokenizer", "loss", "eval", "utts", "seeds", "WER %", "CER %",
                         f"WER change vs {baseline} [{conf} CI]", "P(better)"], [], align="lllrrrrrr"),
    ]
    for r in rows:
        loss = r["loss"] if r["alpha"] is None else f"{r['loss']} (α={r['alpha']:g})"
        subset = r["eval"] if r["subset"] == "all" else f"{r['eval']}/{r['subset']}"
        p = "–" if r["p_better"] is None else f"{r['p_better']:.2f}"
        lines.append(
            f"| {r['tokenizer']} | {loss} | {subset} | {r['num_utts']} | {r['seeds']} | "
            f"{_mean_pm_std(r['wer_mean'], r['wer_std'])} | {_mean_pm_std(r['cer_mean'], r['cer_std'])} | {_change(r)} | {p} |"
        )
    if not rows:
        lines.append("| (no finished cells yet) | | | | | | | | |")
    lines += ["", *_sweep_markdown(sweep)]
    if figures:
        lines += ["## Figures", ""] + [f"![{name}]({name})" for name in figures] + [""]
    if notes:
        lines += ["## Notes", ""] + [f"- {n}" for n in notes] + [""]
    return "\n".join(lines)


def _sweep_markdown(sweep: dict[str, dict]) -> list[str]:
    if not sweep:
        return []
    lines = [
        "## SLD alpha, chosen on dev",
        "",
        "Each alpha of a sweep trains one cell of that sld entry (first seed); the alpha with the "
        "lowest WER on the full dev set is used for every seed of its cells above. Test sets play no part.",
        "",
        *markdown_table(["tokenizer/loss", "alpha", "dev WER %", "dev CER %", "used"], [], align="lrrrc"),
    ]
    for tok, s in sweep.items():
        for alpha, wer in s["dev_wer"].items():
            cer = s.get("dev_cer", {}).get(alpha)
            used = "✓" if s["chosen"] is not None and float(alpha) == s["chosen"] else ""
            pending = "(pending)" if wer is None else _pct(wer)
            lines.append(f"| {tok} | {float(alpha):g} | {pending} | {_pct(cer)} | {used} |")
    lines.append("")
    for tok, s in sweep.items():
        if s["chosen"] is None:
            lines.append(f"- {tok}: alpha not chosen yet (sweep cells pending); its seeded sld cells wait for it.")
        else:
            lines.append(f"- {tok}: alpha = {s['chosen']:g} (lowest dev WER of the sweep, seed {s['seed']}).{_informative(s)}")
    return lines + [""]


def _informative(s: dict) -> str:
    """What the sweep's dev WERs tell apart, against twice the sample std of dev WER over the
    seeds of the chosen alpha's cells: the whole range, then the winner's lead over the next."""
    wers = sorted(w for w in s["dev_wer"].values() if w is not None)
    std = s.get("dev_seed_std")
    if std is None or len(wers) < 2 or std != std:
        return ""
    spread, lead, noise = wers[-1] - wers[0], wers[1] - wers[0], 2 * std
    pts = f"{100 * std:.2f} points of dev seed std at the chosen alpha"
    if spread <= noise:
        return f" The sweep's dev WERs span {100 * spread:.2f} points, within seed noise ({pts}): any of its alphas would do."
    if lead <= noise:
        return (
            f" The sweep spans {100 * spread:.2f} points, more than twice the {pts}, but the chosen alpha leads "
            f"the next by {100 * lead:.2f}: the choice between those two is within seed noise."
        )
    return f" The chosen alpha leads the next by {100 * lead:.2f} points, more than twice the {pts}: informative."


# ---- figures ----------------------------------------------------------------------------


def _save_png(fig: Figure, path: Path) -> None:
    FigureCanvasAgg(fig)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100)
    with atomic_open(path, "wb") as f:
        f.write(buf.getvalue())


def _grouped(rows: list[dict]) -> tuple[list[str], list[str], dict]:
    """Eval labels, losses, and {(eval label, loss): [rows, one per tokenizer]}."""
    evals = _ordered(r["eval"] if r["subset"] == "all" else f"{r['eval']}/{r['subset']}" for r in rows)
    losses = _ordered(r["loss"] for r in rows)
    by: dict[tuple[str, str], list[dict]] = defaultdict(list)
    for r in rows:
        by[(r["eval"] if r["subset"] == "all" else f"{r['eval']}/{r['subset']}", r["loss"])].append(r)
    return evals, losses, by


def _wer_figure(rows: list[dict]) -> Figure:
    evals, losses, by = _grouped(rows)
    tokenizers = _ordered(r["tokenizer"] for r in rows)
    fig = Figure(figsize=(4.2 * len(evals), 3.6))
    axes = fig.subplots(1, len(evals), squeeze=False)[0]
    width = 0.8 / len(losses)
    for ax, ev in zip(axes, evals):
        x = np.arange(len(tokenizers))
        for j, loss in enumerate(losses):
            rs = {r["tokenizer"]: r for r in by.get((ev, loss), [])}
            means = [100 * rs[t]["wer_mean"] if t in rs else np.nan for t in tokenizers]
            stds = [100 * rs[t]["wer_std"] if t in rs and not math.isnan(rs[t]["wer_std"]) else 0.0 for t in tokenizers]
            ax.bar(x + (j - (len(losses) - 1) / 2) * width, means, width, yerr=stds, capsize=3, label=loss)
        ax.set_xticks(x, tokenizers)
        ax.set_title(ev)
        ax.set_ylabel("WER % (mean ± std over seeds)")
    axes[0].legend()
    fig.tight_layout()
    return fig


def _rel_change_figure(rows: list[dict], baseline: str, confidence: float) -> Figure:
    rows = [r for r in rows if r["rel_wer_change"] is not None and not math.isnan(r["rel_wer_change"])]
    evals, losses, by = _grouped(rows)
    tokenizers = _ordered(r["tokenizer"] for r in rows)
    fig = Figure(figsize=(4.2 * len(evals), 3.6))
    axes = fig.subplots(1, len(evals), squeeze=False)[0]
    step = 0.6 / max(len(losses), 1)
    for ax, ev in zip(axes, evals):
        for j, loss in enumerate(losses):
            rs = {r["tokenizer"]: r for r in by.get((ev, loss), [])}
            xs = [i + (j - (len(losses) - 1) / 2) * step for i, t in enumerate(tokenizers) if t in rs]
            pts = [rs[t] for t in tokenizers if t in rs]
            y = np.array([100 * r["rel_wer_change"] for r in pts])
            err = np.array([[y_ - 100 * r["ci_low"], 100 * r["ci_high"] - y_] for y_, r in zip(y, pts)]).T.reshape(2, -1)
            ax.errorbar(xs, y, yerr=err, fmt="o", capsize=4, label=loss)
        ax.axhline(0.0, color="grey", lw=0.8)
        ax.set_xticks(range(len(tokenizers)), tokenizers)
        ax.set_title(ev)
        ax.set_ylabel(f"WER change vs {baseline}, % ({100 * confidence:.0f}% CI)")
    axes[0].legend()
    fig.tight_layout()
    return fig


def _sweep_figure(sweep: dict[str, dict]) -> Figure:
    fig = Figure(figsize=(4.5, 3.4))
    ax = fig.subplots()
    for tok, s in sweep.items():
        pts = sorted((float(a), w) for a, w in s["dev_wer"].items() if w is not None)
        if not pts:
            continue
        ax.plot([a for a, _ in pts], [100 * w for _, w in pts], "o-", label=tok)
        if s["chosen"] is not None:
            chosen = dict(pts).get(s["chosen"])
            if chosen is not None:
                ax.plot([s["chosen"]], [100 * chosen], "k*", ms=12)
    ax.set_xscale("log")
    ax.set_xlabel("alpha (sld)")
    ax.set_ylabel("dev WER %")
    ax.set_title("alpha sweep (★ used)")
    ax.legend()
    fig.tight_layout()
    return fig


def _curve_parts(results: Sequence[dict]) -> list[str]:
    found = _ordered(k for r in results for k in r.get("curves", {}).get("train", {}) if k != "step")
    return [p for p in CURVE_ORDER if p in found] + [p for p in found if p not in CURVE_ORDER]


def _curves_figure(results: Sequence[dict], tokenizer: str) -> Figure | None:
    """Rows: losses; columns: loss parts, then dev WER; one line per seed."""
    parts = _curve_parts(results)
    has_dev = any(r.get("curves", {}).get("dev", {}).get("step") for r in results)
    columns = parts + (["dev_wer"] if has_dev else [])
    if not columns:
        return None
    losses = _ordered(r["loss"] for r in results)
    fig = Figure(figsize=(3.3 * len(columns), 2.6 * len(losses)))
    axes = fig.subplots(len(losses), len(columns), squeeze=False)
    for i, loss in enumerate(losses):
        for r in sorted((r for r in results if r["loss"] == loss), key=lambda r: r["seed"]):
            curves = r.get("curves", {})
            for j, col in enumerate(columns):
                source = curves.get("dev", {}) if col == "dev_wer" else curves.get("train", {})
                if col in source:
                    style = "o-" if col == "dev_wer" else "-"
                    axes[i, j].plot(source["step"], source[col], style, lw=1, ms=3, label=f"seed {r['seed']}")
        for j, col in enumerate(columns):
            ax = axes[i, j]
            if not ax.lines:
                ax.text(0.5, 0.5, f"not logged by {loss}", ha="center", va="center", transform=ax.transAxes, fontsize=8)
                ax.set_xticks([])
                ax.set_yticks([])
            ax.set_title(f"{loss}: {col}", fontsize=9)
            ax.tick_params(labelsize=7)
            if i == len(losses) - 1:
                ax.set_xlabel("step", fontsize=8)
        if axes[i, 0].get_legend_handles_labels()[0]:
            axes[i, 0].legend(fontsize=7)
    fig.suptitle(f"{tokenizer}: loss parts per cell (unweighted) and dev WER")
    fig.tight_layout()
    return fig
