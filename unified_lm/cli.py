"""The `unified-lm` command line.

Each subcommand is a thin adapter over a library function; heavy imports happen inside
the handler so `unified-lm --help` stays instant. Errors the toolkit raises on purpose
(bad data, bad config) print one clear line and exit 2, never a traceback.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from .errors import ConfigError, UnifiedLMError
from .logs import setup_logging


def _print_summary(summary: dict) -> None:
    print(json.dumps(summary, indent=2, ensure_ascii=False, default=str))


# ---- corpus -----------------------------------------------------------------------------


def cmd_corpus_synth(args: argparse.Namespace) -> int:
    from .corpus.synth import synthesize

    summary = synthesize(
        args.out,
        num_utts=args.num_utts,
        seed=args.seed,
        text_file=args.text_file,
        jobs=args.jobs,
        continuation=args.continuation,
        heldout_voice=args.heldout_voice,
    )
    _print_summary(summary)
    return 0


def cmd_corpus_text(args: argparse.Namespace) -> int:
    from .corpus.sentences import write_text_corpus

    excluded = write_text_corpus(args.out, args.num_sentences, args.seed, args.exclude)
    print(f"{args.out}: {args.num_sentences} sentences, none of the {excluded} excluded transcripts among them")
    return 0


def cmd_corpus_import(args: argparse.Namespace) -> int:
    from .corpus.importers import ImportOptions, import_corpus

    opts = ImportOptions(tuple(args.parts), args.lowercase, args.sample_rate, args.jobs)
    counts = import_corpus(args.format, args.source, args.out, opts)
    for split, n in counts.items():
        print(f"{args.out / (split + '.jsonl')}: {n} utterances")
    return 0


def cmd_corpus_validate(args: argparse.Namespace) -> int:
    from .corpus.validate import validate_manifest

    status = 0
    for manifest in args.manifests:
        errors = validate_manifest(manifest, check_audio=not args.no_audio)
        for err in errors:
            print(err, file=sys.stderr)
        print(f"{manifest}: {'OK' if not errors else f'{len(errors)} bad line(s)'}")
        status = status or (1 if errors else 0)
    return status


# ---- discretize -------------------------------------------------------------------------


def _check_shard_args(args: argparse.Namespace) -> None:
    if (args.shard is None) != (args.nshards is None):
        raise UnifiedLMError("--shard and --nshards go together")


def cmd_discretize_fit(args: argparse.Namespace) -> int:
    from dataclasses import asdict

    from .discretize import fit_tokenizer

    meta = fit_tokenizer(
        args.recipe, args.manifest, args.out, overrides=args.overrides, skip_bad=args.skip_bad, features=args.features
    )
    _print_summary({"tokenizer": str(args.out), **asdict(meta)})
    return 0


def cmd_discretize_apply(args: argparse.Namespace) -> int:
    from .discretize import apply_tokenizer

    _check_shard_args(args)
    summary = apply_tokenizer(
        args.tokenizer,
        args.manifest,
        args.out,
        shard=args.shard,
        nshards=args.nshards,
        skip_bad=args.skip_bad,
        device=args.device,
        features=args.features,
    )
    _print_summary(summary)
    return 0


def cmd_discretize_dump(args: argparse.Namespace) -> int:
    from .discretize import dump_features

    _check_shard_args(args)
    summary = dump_features(
        args.recipe, args.manifest, args.out, overrides=args.overrides, shard=args.shard or 0,
        nshards=args.nshards or 1, device=args.device, skip_bad=args.skip_bad,
    )  # fmt: skip
    _print_summary(summary)
    return 0


def cmd_discretize_merge(args: argparse.Namespace) -> int:
    from .discretize import merge_shards

    print(merge_shards(args.out, args.nshards))
    return 0


# ---- train / decode ---------------------------------------------------------------------


def cmd_decode(args: argparse.Namespace) -> int:
    # The checkpoint decides the input: a discrete-token decoder reads units, a prefix LM
    # (continuous path) or a CTC-trained encoder hears the audio itself.
    from .models import ENCODER_WEIGHTS, is_prefix_checkpoint

    if (args.checkpoint / ENCODER_WEIGHTS).is_file():
        if args.lm is not None:
            raise ConfigError(f"{args.checkpoint}: --lm fuses a text LM into a decoder, and a CTC encoder has none")
        if args.manifest is None:
            raise ConfigError(f"{args.checkpoint}: a CTC encoder transcribes audio: give the audio manifest with --manifest")
        from .prefix_lm.inference import decode_ctc_asr

        scores = decode_ctc_asr(args.checkpoint, args.manifest, args.out, batch_size=args.batch_size)
    elif is_prefix_checkpoint(args.checkpoint):
        if args.manifest is None:
            raise ConfigError(
                f"{args.checkpoint}: a prefix-LM (continuous) checkpoint transcribes audio: "
                "give the audio manifest with --manifest, not a unit manifest with --units"
            )
        from .prefix_lm.inference import decode_prefix_asr

        scores = decode_prefix_asr(
            args.checkpoint,
            args.manifest,
            args.out,
            batch_size=args.batch_size,
            beam=args.beam,
            max_new_tokens=args.max_new_tokens,
            lm=args.lm,
            lm_weight=args.lm_weight,
        )
    else:
        if args.units is None:
            raise ConfigError(
                f"{args.checkpoint}: a discrete-token checkpoint reads units: turn the audio manifest into "
                "a unit manifest with `unified-lm discretize apply` and give it with --units"
            )
        from .decode import decode

        scores = decode(
            args.checkpoint,
            args.units,
            args.out,
            batch_size=args.batch_size,
            beam=args.beam,
            max_new_tokens=args.max_new_tokens,
            task=args.task,
            use_cache=not args.no_cache,
            lm=args.lm,
            lm_weight=args.lm_weight,
        )
    _print_summary(scores)
    return 0


def cmd_continue(args: argparse.Namespace) -> int:
    from .prefix_lm.inference import continue_speech

    result = continue_speech(
        args.checkpoint, args.audio, args.out, max_frames=args.max_frames, reference=args.reference, seed=args.seed
    )
    _print_summary(result)
    return 0


# ---- bench ------------------------------------------------------------------------------


def cmd_bench_discretize(args: argparse.Namespace) -> int:
    from .bench.discretize import run_discretize_bench

    run_discretize_bench(
        args.manifest, args.out, tokenizers=args.tokenizers, frames=args.frames, ks=tuple(args.ks), fit_ks=tuple(args.fit_ks)
    )
    return 0


def cmd_bench_peer(args: argparse.Namespace) -> int:
    from .bench.peer import run_peer
    from .demo import print_score_table

    print_score_table(run_peer(args.manifest, args.out, jobs=args.jobs))
    return 0


def cmd_bench_speed(args: argparse.Namespace) -> int:
    from .bench.speed import run_speed_bench

    run_speed_bench(args.units, args.tokenizer, args.out, preset=args.preset)
    return 0


def cmd_bench_ssl_features(args: argparse.Namespace) -> int:
    from .bench.ssl_features import run_ssl_features_bench

    run_ssl_features_bench(
        args.manifest, args.out, model=args.model, layer=args.layer, utterances=args.utterances, device=args.device
    )
    return 0


def cmd_bench_unit_purity(args: argparse.Namespace) -> int:
    from .bench.unit_purity import run_unit_purity

    run_unit_purity(args.encoder, args.manifest, args.out, tokenizers=args.tokenizer, hubert=args.hubert, k=args.k,
                    max_utts=args.max_utts)
    return 0


def cmd_bench_data_memory(args: argparse.Namespace) -> int:
    from .bench.data_memory import run_data_memory_bench

    run_data_memory_bench(args.out, records=args.records, mean_units=args.units, list_records=args.list_records)
    return 0


def cmd_bench_prefix_ablation(args: argparse.Namespace) -> int:
    from .bench.prefix_ablation import run_prefix_ablation

    run_prefix_ablation(args.config, args.out, overrides=args.overrides)
    report = args.out / "results.md"
    print(report.read_text(encoding="utf-8"), end="")
    print(f"report: {report}")
    return 0


def _markdown_section(markdown: str, title: str) -> str:
    """The ``## title`` section of a markdown text (its heading and table lines), or ""."""
    lines = markdown.splitlines()
    if f"## {title}" not in lines:
        return ""
    start = lines.index(f"## {title}")
    end = next((i for i in range(start + 1, len(lines)) if lines[i].startswith("## ")), len(lines))
    return "\n".join([lines[start], *(line for line in lines[start + 1 : end] if line.startswith("|"))])


def cmd_bench_losses(args: argparse.Namespace) -> int:
    from .bench import losses

    overrides = list(args.overrides)
    if args.out is not None:
        # JSON-quoted: overrides are read as YAML, and a directory named "1" or "null" stays a path.
        overrides.append(f"out_dir={json.dumps(str(args.out))}")
    summary = losses.run_loss_grid(args.config, overrides, jobs=args.jobs, cells=args.cells)
    report = Path(summary["out_dir"]) / "results.md"
    print(_markdown_section(report.read_text(encoding="utf-8"), "WER and CER per cell"))
    cells = summary["cells"]
    print(
        f"\ncells: {cells['done']} of {cells['total']} done; this run: {len(cells['ran'])} ran, "
        f"{len(cells['failed'])} failed; {len(cells['pending'])} pending"
    )
    for tok, sweep in summary["alpha"].items():
        chosen = "not chosen yet (sweep pending)" if sweep["chosen"] is None else f"{sweep['chosen']:g} (lowest dev WER)"
        print(f"alpha for {tok}: {chosen}")
    for note in summary["notes"]:
        print(f"note: {note}")
    print(f"report: {report}")
    # A failed cell makes the command fail (scripts notice); pending cells of other slices do not.
    return 1 if cells["failed"] else 0


# ---- demo -------------------------------------------------------------------------------


def cmd_demo(args: argparse.Namespace) -> int:
    from dataclasses import replace

    from .demo import FULL, QUICK, run_demo

    out = args.out or Path("runs/demo-full" if args.full else "runs/demo")
    scale = FULL if args.full else QUICK
    if args.num_utts is not None:
        if args.num_utts < 10:
            raise ConfigError(f"--num-utts: at least 10 utterances, got {args.num_utts}")
        scale = replace(scale, num_utts=args.num_utts)
    run_demo(out, scale, overrides=args.overrides, peer=args.peer or args.full)
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="unified-lm", description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="command", required=True)

    corpus = sub.add_parser("corpus", help="build and check audio manifests").add_subparsers(dest="sub", required=True)
    s = corpus.add_parser("synth", help="render the synthetic multi-voice corpus with system TTS engines")
    s.add_argument("--out", required=True, type=Path)
    s.add_argument("--num-utts", type=int, default=3000)
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--text-file", type=Path, help="one sentence a line, instead of the built-in generator")
    s.add_argument("--jobs", type=int, help="parallel TTS processes (default: all cores)")
    s.add_argument("--continuation", action="store_true", help="also render prompt/continuation pairs")
    s.add_argument("--heldout-voice", help="the voice kept out of train/dev for the test subset (default: flite-awb)")
    s.set_defaults(fn=cmd_corpus_synth)
    s = corpus.add_parser("text", help="generate sentences for text-LM pre-training, held apart from dev/test")
    s.add_argument("--out", required=True, type=Path, help="a text file, one sentence a line")
    s.add_argument("--num-sentences", type=int, default=100_000)
    s.add_argument("--seed", type=int, default=1, help="use another seed than the audio corpus's")
    s.add_argument("--exclude", nargs="*", type=Path, default=[], metavar="MANIFEST",
                   help="audio manifests whose transcripts must not appear (the dev and test sets)")
    s.set_defaults(fn=cmd_corpus_text)
    s = corpus.add_parser("import", help="a real corpus (LibriSpeech, Kaldi, lhotse, HF datasets) into manifests",
                          description="Writes OUT/<split>.jsonl for each split of SOURCE (docs/usage.md).")
    s.add_argument("format", choices=["librispeech", "kaldi", "lhotse", "hf"],
                   help="librispeech: a LibriSpeech-layout tree; kaldi: a data dir; lhotse: its manifests "
                        "(a folder or one cuts file); hf: a local Hugging Face dataset (parquet or save_to_disk)")
    s.add_argument("source", type=Path)
    s.add_argument("--out", required=True, type=Path, help="folder for the manifests (and any embedded audio)")
    s.add_argument("--parts", nargs="*", default=[], metavar="SPLIT", help="only these splits (default: all found)")
    s.add_argument("--lowercase", action="store_true", help="lower-case the transcripts (LibriSpeech's are upper case)")
    s.add_argument("--sample-rate", type=int, default=16000, help="kaldi: the audio's rate, which a data dir does not record")
    s.add_argument("--jobs", type=int, default=1, help="parallel workers reading audio headers")
    s.set_defaults(fn=cmd_corpus_import)
    s = corpus.add_parser("validate", help="check manifests and report every bad line")
    s.add_argument("manifests", nargs="+", type=Path)
    s.add_argument("--no-audio", action="store_true", help="check fields only, do not open audio")
    s.set_defaults(fn=cmd_corpus_validate)

    disc = sub.add_parser("discretize", help="fit, dump features for, and apply speech tokenizers").add_subparsers(dest="sub", required=True)
    s = disc.add_parser("fit", help="fit a tokenizer from a recipe in tokenizers/")
    s.add_argument("--recipe", required=True, type=Path)
    s.add_argument("--manifest", required=True, type=Path)
    s.add_argument("--out", required=True, type=Path)
    s.add_argument("--skip-bad", action="store_true", help="leave out (and log) lines whose audio cannot be read")
    s.add_argument("--features", type=Path, help="a `discretize dump` of the recipe's features on this manifest, "
                   "read instead of the audio")
    s.add_argument("overrides", nargs="*", help="recipe overrides, key=value")
    s.set_defaults(fn=cmd_discretize_fit)
    s = disc.add_parser("dump", help="compute a recipe's frame features once (sharded, resumable) for fit and apply")
    s.add_argument("--recipe", required=True, type=Path)
    s.add_argument("--manifest", required=True, type=Path)
    s.add_argument("--out", required=True, type=Path, help="the dump directory (shared by all shards)")
    s.add_argument("--shard", type=int)
    s.add_argument("--nshards", type=int)
    s.add_argument("--skip-bad", action="store_true", help="leave out (and log) lines whose audio cannot be read")
    s.add_argument("--device", help="where model features run (cpu, cuda, cuda:1; 'cuda' under a launcher: "
                   "cuda:$LOCAL_RANK); default: the recipe's")
    s.add_argument("overrides", nargs="*", help="recipe overrides, key=value")
    s.set_defaults(fn=cmd_discretize_dump)
    s = disc.add_parser("apply", help="turn a manifest's audio into units (resumable)")
    s.add_argument("--tokenizer", required=True, type=Path)
    s.add_argument("--manifest", required=True, type=Path)
    s.add_argument("--out", required=True, type=Path)
    s.add_argument("--shard", type=int)
    s.add_argument("--nshards", type=int)
    s.add_argument("--skip-bad", action="store_true", help="skip bad lines, write them to OUT.rejects.jsonl")
    s.add_argument("--device", help="where model features run (cpu, cuda, cuda:1; 'cuda' under a launcher: "
                   "cuda:$LOCAL_RANK); default: where the tokenizer was fitted, else the CPU")
    s.add_argument("--features", type=Path, help="a `discretize dump` of the tokenizer's features on this manifest, "
                   "read instead of the audio")
    s.set_defaults(fn=cmd_discretize_apply)
    s = disc.add_parser("merge", help="merge the shards of a sharded apply into OUT")
    s.add_argument("--out", required=True, type=Path)
    s.add_argument("--nshards", required=True, type=int)
    s.set_defaults(fn=cmd_discretize_merge)

    # Parsed by unified_lm.train (see main): `unified-lm train RECIPE --help` lists the recipe's keys.
    sub.add_parser("train", add_help=False, help="train a recipe: lm, ctc, textlm or prefix (python -m unified_lm.train)")

    s = sub.add_parser(
        "decode", help="decode a unit manifest (or, for a prefix LM or CTC encoder, an audio manifest) and score WER/CER"
    )
    s.add_argument("--checkpoint", required=True, type=Path)
    source = s.add_mutually_exclusive_group(required=True)
    source.add_argument("--units", type=Path, help="a unit manifest, for a discrete-token checkpoint")
    source.add_argument("--manifest", type=Path, help="an audio manifest, for a prefix-LM or CTC-encoder checkpoint")
    s.add_argument("--out", required=True, type=Path)
    s.add_argument("--batch-size", type=int, default=16)
    s.add_argument("--beam", type=int, default=1)
    s.add_argument("--max-new-tokens", type=int, default=200)
    s.add_argument("--task", choices=["asr", "tts"], default="asr", help="discrete path: asr scores WER/CER, tts the unit error rate")
    s.add_argument("--no-cache", action="store_true", help="discrete path: recompute the whole prefix each step (for comparison)")
    s.add_argument("--lm", type=Path, help="a text LM checkpoint (train textlm, with the decoder's text tokenizer) to fuse into the search")
    s.add_argument("--lm-weight", type=float, default=0.3, help="the text LM's weight in shallow fusion (with --lm)")
    s.set_defaults(fn=cmd_decode)

    s = sub.add_parser(
        "continue", help="continue a spoken prompt with a prefix LM: transcript, text, spectrogram PNG, WAV"
    )
    s.add_argument(
        "--checkpoint", required=True, type=Path, help="a prefix-LM checkpoint (unified-lm train prefix)"
    )
    s.add_argument("--audio", required=True, type=Path, help="the spoken prompt")
    s.add_argument("--out", required=True, type=Path)
    s.add_argument("--reference", type=Path, help="the true continuation's audio, drawn beside the prediction")
    s.add_argument("--max-frames", type=int, default=1000, help="longest continuation, in 10 ms frames")
    s.add_argument("--seed", type=int, default=0, help="seeds the pre-net dropout, which stays on at inference")
    s.set_defaults(fn=cmd_continue)

    bench = sub.add_parser("bench", help="benchmarks that print and save tables").add_subparsers(dest="sub", required=True)
    s = bench.add_parser("discretize", help="discretization throughput; faiss vs scikit-learn assignment and fitting")
    s.add_argument("--manifest", required=True, type=Path)
    s.add_argument("--out", type=Path, default=Path("runs/bench/discretize"))
    s.add_argument("--tokenizers", nargs="*", default=["tokenizers/fbank-km500.yaml", "tokenizers/mfcc-km100.yaml"])
    s.add_argument("--frames", type=int, default=1_000_000)
    s.add_argument("--ks", type=int, nargs="*", default=[500, 2000], help="K values of the assignment table")
    s.add_argument("--fit-ks", type=int, nargs="*", default=[], help="K values to fit with both backends (minutes each)")
    s.set_defaults(fn=cmd_bench_discretize)
    s = bench.add_parser("peer", help="PocketSphinx (pip install -e '.[peer]') on an audio manifest, scored as decode scores")
    s.add_argument("--manifest", required=True, type=Path, help="an audio manifest (id, audio, text, subset)")
    s.add_argument("--out", required=True, type=Path, help="hypotheses JSONL; scores go beside it (*.scores.json)")
    s.add_argument("--jobs", type=int, default=2, help="decoding processes")
    s.set_defaults(fn=cmd_bench_peer)
    s = bench.add_parser("speed", help="training tokens/s (bucketed vs padded) and decoding (KV cache on/off)")
    s.add_argument("--units", required=True, type=Path)
    s.add_argument("--tokenizer", required=True, type=Path)
    s.add_argument("--out", type=Path, default=Path("runs/bench/speed"))
    s.add_argument("--preset", default="small")
    s.set_defaults(fn=cmd_bench_speed)
    s = bench.add_parser("ssl-features", help="SSL features: whole stack per utterance vs cut at the layer, batched")
    s.add_argument("--manifest", required=True, type=Path)
    s.add_argument("--model", type=Path, help="a local HuBERT/WavLM directory (default: random-init HuBERT Base)")
    s.add_argument("--layer", type=int, default=6)
    s.add_argument("--utterances", type=int, default=24)
    s.add_argument("--out", type=Path, default=Path("runs/bench/ssl_features"))
    s.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N (on a GPU, a float16 row is added)")
    s.set_defaults(fn=cmd_bench_ssl_features)
    s = bench.add_parser("unit-purity", help="PNMI and purity of units against CTC-aligned characters; HuBERT layers")
    s.add_argument("--encoder", required=True, type=Path, help="a CTC encoder (unified-lm train ctc; its best/)")
    s.add_argument("--manifest", required=True, type=Path, help="an audio manifest with transcripts (dev)")
    s.add_argument("--tokenizer", type=Path, action="append", default=[], help="a fitted tokenizer (repeatable)")
    s.add_argument("--hubert", type=Path, help="a HuBERT directory: every layer clustered with k-means on the manifest")
    s.add_argument("--k", type=int, default=100, help="clusters per HuBERT layer")
    s.add_argument("--max-utts", type=int, default=150)
    s.add_argument("--out", type=Path, default=Path("runs/bench/unit_purity"))
    s.set_defaults(fn=cmd_bench_unit_purity)
    s = bench.add_parser("data-memory", help="resident memory of the training data: packed units vs lists")
    s.add_argument("--records", type=int, default=1_000_000)
    s.add_argument("--units", type=int, default=175, help="mean units per record")
    s.add_argument("--list-records", type=int, default=200_000, help="records the list side loads (scaled up)")
    s.add_argument("--out", type=Path, default=Path("runs/bench/data_memory"))
    s.set_defaults(fn=cmd_bench_data_memory)
    s = bench.add_parser("prefix-ablation", help="Spectron's ablations on the continuous path (resumable)")
    s.add_argument("--config", required=True, type=Path, help="e.g. experiments/prefix_ablation.yaml")
    s.add_argument("--out", type=Path, default=Path("runs/bench/prefix_ablation"))
    s.add_argument("overrides", nargs="*", help="config overrides, key=value (e.g. prefix.optim.max_steps=200)")
    s.set_defaults(fn=cmd_bench_prefix_ablation)
    s = bench.add_parser(
        "losses", help="mask vs ce vs sld over tokenizers and seeds: train, decode, report (cached, resumable)"
    )
    s.add_argument("--config", required=True, type=Path, help="a grid, e.g. experiments/loss_comparison.yaml")
    s.add_argument("--out", type=Path, help="the grid's directory (default: the config's out_dir)")
    s.add_argument("--jobs", type=int, default=1, help="cells trained side by side in worker processes")
    s.add_argument("--cells", metavar="I/N", help="only this machine's share: cells whose position is I modulo N")
    s.add_argument("overrides", nargs="*", help="grid overrides, key=value (e.g. train.max_steps=800)")
    s.set_defaults(fn=cmd_bench_losses)

    s = sub.add_parser("demo", help="synthesize, discretize, train, decode and print a WER table")
    s.add_argument("--out", type=Path, help="default: runs/demo (runs/demo-full with --full)")
    s.add_argument("--full", action="store_true", help="the longer, better-scoring run: 10,000 utterances, 2-2.5x the steps, PocketSphinx scored beside it")
    s.add_argument("--peer", action="store_true", help="also score PocketSphinx on the same test audio (on with --full)")
    s.add_argument("--num-utts", type=int, help="corpus size at the same steps (default: 6,000; 10,000 with --full)")
    s.add_argument("overrides", nargs="*", help="training overrides, key=value")
    s.set_defaults(fn=cmd_demo)
    return p


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["train"]:
        from .train import main as train_main

        return train_main(argv[1:], prog="unified-lm train")
    args = build_parser().parse_args(argv)
    setup_logging()
    try:
        return args.fn(args)
    except UnifiedLMError as e:
        print(f"unified-lm: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("unified-lm: interrupted; rerun the same command to resume", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
