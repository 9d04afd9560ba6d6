"""The loss-comparison grid: shared steps, cell caching and resume, slices, alpha choice, jobs.

Cells run through ``FakeRunner`` (no training); the shared steps are real (a tiny tone
corpus, k=8 tokenizers). ``test_loss_presets.py`` runs one cell of real training and decoding.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import yaml

from _bench_util import REPO, FakeRunner, calls, grid_config, make_audio_corpus
from _prefix_util import TINY_ENCODER
from unified_lm.bench.losses import (
    LossGridConfig,
    PreparedTokenizer,
    check_grid,
    make_cell,
    parse_slice,
    prepare_data,
    read_curves,
    run_loss_grid,
)
from unified_lm.config import load_config
from unified_lm.errors import ConfigError, DataError
from unified_lm.io import read_jsonl

TOKS = ("fbank-km8", "mfcc-km8")


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    """A corpus and a grid directory whose shared steps are done: ``(corpus, shared dir, notes)``."""
    root = tmp_path_factory.mktemp("bench_losses")
    corpus = make_audio_corpus(root / "corpus")
    cfg = load_config(LossGridConfig, grid_config(root / "grid.yaml", corpus, root / "out"))
    check_grid(cfg)
    toks, notes = prepare_data(cfg, root / "out", progress=False)
    return corpus, root / "out" / "shared", toks, notes


def _grid(tmp_path: Path, prepared, name: str = "grid", **sections) -> tuple[Path, Path]:
    corpus, shared, _, _ = prepared
    out = tmp_path / name
    shutil.copytree(shared, out / "shared")  # the shared steps are reused, not redone
    return grid_config(tmp_path / f"{name}.yaml", corpus, out, **sections), out


def test_shared_steps_fit_each_tokenizer_and_skip_encodec_without_weights(prepared):
    corpus, shared, toks, notes = prepared
    assert [t.name for t in toks] == list(TOKS)
    assert notes == [
        "encodec-24k skipped: no local model weights configured "
        f"({REPO / 'tokenizers/encodec-24k.yaml'} needs encodec.checkpoint=...)"
    ]
    test_ids = [r["id"] for r in read_jsonl(corpus["test"])]
    for tok in toks:
        assert json.loads((tok.tokdir / "meta.json").read_text())["num_units"] == 8
        assert set(tok.units) == {"train", "dev", "test", "degraded"}
        degraded = read_jsonl(tok.units["degraded"])
        assert [r["id"] for r in degraded] == test_ids  # paired with the clean test set
        assert {r["subset"] for r in degraded} == {"degraded"}
        assert {r["subset"] for r in read_jsonl(tok.units["test"])} == {"seen_voice", "heldout_voice"}


def test_interrupted_grid_resumes_and_a_finished_grid_only_reports(tmp_path, prepared):
    config, out = _grid(tmp_path, prepared)
    meta = next((out / "shared" / "tok").glob("fbank-km8-*/meta.json"))
    meta_mtime = meta.stat().st_mtime_ns
    with pytest.raises(KeyboardInterrupt):
        run_loss_grid(config, runner=FakeRunner(interrupt_after=5), progress=False)
    first = calls(out)
    assert len(first) == 5 and len(list(out.glob("cells/*/result.json"))) == 5

    summary = run_loss_grid(config, runner=FakeRunner(), progress=False)
    second = calls(out)[5:]
    # 2 tokenizers x (mask, ce: 2 seeds; the sweep: 2 alphas) = 12, then the seed-1 sld cell of each;
    # the seed-0 sld cell is the chosen alpha's sweep cell.
    assert len(second) == 14 - 5 and not set(first) & set(second)
    assert len(set(first + second)) == 14 == len(list(out.glob("cells/*/result.json")))
    assert summary["cells"]["total"] == summary["cells"]["done"] == 12
    assert summary["cells"]["failed"] == [] and summary["cells"]["pending"] == []
    assert len(summary["cells"]["ran"]) == 9
    for tok in TOKS:
        assert summary["alpha"][f"{tok}/sld"] == {"chosen": 0.1, "dev_wer": {0.01: pytest.approx(1 / 3), 0.1: pytest.approx(1 / 6)}}
        assert len(list(out.glob(f"cells/{tok}.sld.seed0.*"))) == 2  # one dir per swept alpha
    assert meta.stat().st_mtime_ns == meta_mtime  # the tokenizer was not refitted

    (out / "results.md").unlink()
    # Any cell run would raise; the figures do not change what a cell is.
    again = run_loss_grid(config, ["plots=true"], runner=FakeRunner(interrupt_after=0), progress=False)
    assert again["cells"]["ran"] == [] and again["cells"]["done"] == 12
    assert {Path(f).name for f in again["files"]} == {
        "results.csv", "results.md", "wer.png", "rel_change.png", "alpha_sweep.png", "curves_fbank-km8.png", "curves_mfcc-km8.png"
    }
    md = (out / "results.md").read_text()
    assert "fbank-km8/sld: alpha = 0.1 (lowest dev WER of the sweep, seed 0)" in md
    assert "| mfcc-km8 | sld (α=0.1) | test | 4 | 2 |" in md
    assert "encodec-24k skipped" in md
    # The sld cells' fake errors are (2 + seed) against mask's (3 + seed) per utterance.
    sld = next(r for r in again_rows(out) if r["tokenizer"] == "fbank-km8" and r["loss"] == "sld" and r["subset"] == "all")
    assert float(sld["rel_wer_change"]) == pytest.approx(5 / 7 - 1)


def again_rows(out: Path) -> list[dict]:
    import csv

    with open(out / "results.csv") as f:
        return [r for r in csv.DictReader(f) if r["eval"] == "test"]


def test_slices_split_the_grid_and_their_cells_merge(tmp_path, prepared):
    config_a, a = _grid(tmp_path, prepared, "a")
    config_b, b = _grid(tmp_path, prepared, "b")
    part_a = run_loss_grid(config_a, cells="0/2", runner=FakeRunner(), progress=False)
    part_b = run_loss_grid(config_b, cells="1/2", runner=FakeRunner(), progress=False)
    assert len(calls(a)) == len(calls(b)) == 6  # phase 1 split in two; no sweep complete on either
    assert not set(calls(a)) & set(calls(b))
    assert part_a["alpha"]["fbank-km8/sld"]["chosen"] is None and len(part_a["cells"]["pending"]) > 0
    assert "alpha not chosen yet" in (a / "results.md").read_text()

    for cell in (b / "cells").iterdir():  # machine b's results, copied over
        shutil.copytree(cell, a / "cells" / cell.name)
    run_loss_grid(config_a, cells="0/2", runner=FakeRunner(), progress=False)
    run_loss_grid(config_a, cells="1/2", runner=FakeRunner(), progress=False)
    merged = run_loss_grid(config_a, runner=FakeRunner(interrupt_after=0), progress=False)
    assert merged["cells"]["done"] == 12 and merged["cells"]["pending"] == []
    everything = calls(a) + calls(b)
    assert len(everything) == len(set(everything)) == 14  # every cell ran exactly once, somewhere


def test_jobs_run_cells_in_worker_processes(tmp_path, prepared):
    config, out = _grid(
        tmp_path, prepared,
        tokenizers=[{"recipe": str(REPO / "tokenizers/fbank-km500.yaml"), "overrides": ["kmeans.k=8", "name=fbank-km8"]}],
        losses=[{"name": "mask"}, {"name": "sld", "alpha": 0.5}], alpha_sweep=[],
    )  # fmt: skip
    summary = run_loss_grid(config, jobs=2, runner=FakeRunner(), progress=False)
    assert len(calls(out)) == 4 and summary["cells"]["done"] == 4
    result = json.loads(next(out.glob("cells/fbank-km8.sld.seed1.*/result.json")).read_text())
    assert result["alpha"] == 0.5  # without a sweep, the sld entry's own alpha


FBANK_ONLY = [{"recipe": str(REPO / "tokenizers/fbank-km500.yaml"), "overrides": ["kmeans.k=8", "name=fbank-km8"]}]


def test_two_variants_of_one_loss_each_choose_their_alpha(tmp_path, prepared):
    paper = {"name": "sld", "label": "sld", "kl_reduction": "token_mean", "alpha_sweep": [0.01, 0.1]}
    released = {"name": "sld", "label": "sld-released", "kl_target": "softmax_of_smoothed", "kl_reduction": "batchmean",
                "alpha_sweep": [0.1, 0.5]}  # fmt: skip
    config, out = _grid(tmp_path, prepared, tokenizers=FBANK_ONLY, alpha_sweep=[], losses=[{"name": "mask"}, paper, released])
    summary = run_loss_grid(config, runner=FakeRunner(), progress=False)
    # mask x 2 seeds, two sweeps of 2 alphas (their winners are the seed-0 cells), each variant's seed 1.
    assert len(calls(out)) == 8 and summary["cells"]["done"] == 6
    assert summary["alpha"]["fbank-km8/sld"]["chosen"] == 0.1
    assert summary["alpha"]["fbank-km8/sld-released"]["chosen"] == 0.5  # FakeRunner's dev winner for it
    cell = json.loads(next(out.glob("cells/fbank-km8.sld-released.seed1.*/cell.json")).read_text())
    loss = cell["spec"]["train"]["loss"]
    assert (loss["kl_target"], loss["kl_reduction"], loss["alpha"]) == ("softmax_of_smoothed", "batchmean", 0.5)
    assert "label" not in loss and "alpha_sweep" not in loss  # the training sees a plain loss config
    md = (out / "results.md").read_text()
    assert "| fbank-km8 | sld-released (α=0.5) | test | 4 | 2 |" in md and "| fbank-km8 | sld (α=0.1) | test |" in md
    assert "`sld-released` (sld: KL target softmax_of_smoothed, batchmean" in md
    rows = {(r["loss"], r["eval"], r["subset"]): r for r in again_rows(out)}
    assert rows[("sld-released", "test", "all")]["wer_per_seed"] == "0.333333;0.5"  # 2 and 3 errors in 6 words
    assert rows[("sld-released", "test", "all")]["seed_list"] == "0;1"


def _prepare_again_trains_nothing(cfg: LossGridConfig, out: Path, monkeypatch) -> list:
    """The shared steps rerun with training and fitting refused: everything is found done."""
    import unified_lm.discretize
    import unified_lm.train

    def refuse(*args, **kwargs):
        raise AssertionError("a shared stage ran twice")

    monkeypatch.setattr(unified_lm.train, "train", refuse)
    monkeypatch.setattr(unified_lm.discretize, "fit_tokenizer", refuse)
    return prepare_data(cfg, out, progress=False)[0]


def test_the_grid_encoder_is_trained_once_and_read_by_the_ctc_tokenizer(tmp_path, monkeypatch):
    corpus = make_audio_corpus(tmp_path / "corpus")
    tiny = [f"encoder.{k}={v}" for k, v in TINY_ENCODER.items()]
    encoder = {"recipe": str(REPO / "experiments/prefix_ctc.yaml"), "max_steps": 2,
               "overrides": [*tiny, "data.batch_size=2", "eval.every_steps=2", "eval.max_utts=2"]}  # fmt: skip
    ctc_tok = [{"recipe": str(REPO / "tokenizers/ctc-posterior-km500.yaml"), "overrides": ["kmeans.k=4", "name=ctc-km4"]}]
    config = grid_config(tmp_path / "g.yaml", corpus, tmp_path / "out", tokenizers=ctc_tok, encoder=encoder, degraded=None)
    cfg = load_config(LossGridConfig, config)
    check_grid(cfg)
    toks, _ = prepare_data(cfg, tmp_path / "out", progress=False)
    (enc,) = (tmp_path / "out/shared").glob("encoder-*")
    assert (enc / "best").is_dir() and json.loads((enc / "summary.json").read_text())["steps"] == 2
    # The tokenizer read this encoder; its identity holds the encoder's hash, not a path.
    fitted = yaml.safe_load((toks[0].tokdir / "recipe.yaml").read_text())
    assert fitted["kmeans"]["features"]["model_path"] == str(enc / "best")
    assert toks[0].recipe["kmeans"]["features"]["model_path"] == enc.name
    assert all(p.is_file() for p in toks[0].units.values())
    again = _prepare_again_trains_nothing(cfg, tmp_path / "out", monkeypatch)
    assert again[0].tokdir == toks[0].tokdir and again[0].units == toks[0].units
    # Another encoder is another stage, and another tokenizer on top of it.
    other = load_config(LossGridConfig, config, ["encoder.max_steps=3"])
    with pytest.raises(AssertionError, match="ran twice"):
        prepare_data(other, tmp_path / "out", progress=False)


def test_the_grid_hubert_iterates_once_and_is_read_by_ssl_tokenizers(tmp_path, monkeypatch):
    from test_hubert import TINY_HUBERT

    corpus = make_audio_corpus(tmp_path / "corpus")
    tiny = [f"model.{k}={json.dumps(v)}" for k, v in TINY_HUBERT.items()]
    hubert = {"max_steps": 2, "layer": 1, "k": 4, "target_overrides": ["kmeans.k=8"],  # the tiny corpus has few frames
              "overrides": [*tiny, "data.batch_size=2", "eval.every_steps=2", "eval.max_utts=2"]}  # fmt: skip
    hubert_tok = [{"recipe": str(REPO / "tokenizers/hubert-km500.yaml"),
                   "overrides": ["kmeans.k=4", "kmeans.features.layer=1", "name=hub-km4"]}]
    config = grid_config(tmp_path / "g.yaml", corpus, tmp_path / "out", tokenizers=hubert_tok, hubert=hubert,
                         degraded=None)
    cfg = load_config(LossGridConfig, config)
    check_grid(cfg)
    toks, _ = prepare_data(cfg, tmp_path / "out", progress=False)
    shared = tmp_path / "out/shared"
    (first,), (second,) = shared.glob("hubert1-*"), shared.glob("hubert2-*")
    # Iteration 2 predicts K=4 units of iteration 1's layer 1; the tokenizer reads iteration 2.
    targets2 = json.loads((second / "best/hubert_targets.json").read_text())
    assert targets2["name"] == "hubert1-targets" and targets2["num_units"] == 4 and targets2["frame_rate"] == 50.0
    fitted2 = yaml.safe_load((Path(targets2["tokenizer"]) / "recipe.yaml").read_text())
    assert fitted2["kmeans"]["features"]["model_path"] == str(first / "best") and fitted2["post"]["dedup"] is False
    assert toks[0].recipe["kmeans"]["features"]["model_path"] == second.name
    assert all(p.is_file() for p in toks[0].units.values())
    assert _prepare_again_trains_nothing(cfg, tmp_path / "out", monkeypatch)[0].tokdir == toks[0].tokdir
    # Without a hubert: stage an ssl tokenizer needs its model path, and is skipped with the reason.
    bare = load_config(LossGridConfig, config, ["hubert=null"])
    with pytest.raises(ConfigError, match="hub-km4 skipped: .*model_path=... or a hubert: stage"):
        prepare_data(bare, tmp_path / "out", progress=False)


class StartRecorder(FakeRunner):
    """A FakeRunner that keeps each cell's (tokenizer, model.init_from)."""

    def __init__(self):
        super().__init__()
        self.starts: list[tuple[str, str | None]] = []

    def __call__(self, cell):
        self.starts.append((cell.tokenizer, cell.train["model"]["init_from"]))
        return super().__call__(cell)


def _rerun_trains_nothing(config: Path, monkeypatch, stage: str) -> None:
    import unified_lm.train

    def refuse(*args, **kwargs):
        raise AssertionError(f"the {stage} was trained twice")

    monkeypatch.setattr(unified_lm.train, "train", refuse)
    assert run_loss_grid(config, runner=StartRecorder(), progress=False)["cells"]["ran"] == []


def test_the_grid_text_lm_is_trained_once_and_starts_every_cell(tmp_path, prepared, monkeypatch):
    import unified_lm.corpus.sentences

    corpus = prepared[0]
    textlm = {"recipe": str(REPO / "experiments/textlm.yaml"), "max_steps": 2, "num_sentences": 40,
              "overrides": ["data.text_vocab_size=300", "data.batch_size=4", "eval.every_steps=2"]}  # fmt: skip
    config, out = _grid(tmp_path, prepared, tokenizers=FBANK_ONLY, losses=[{"name": "mask"}], alpha_sweep=[], seeds=[0],
                        textlm=textlm)  # fmt: skip
    excluded = []
    write = unified_lm.corpus.sentences.write_text_corpus

    def spy(path, n, seed, exclude_manifests=()):
        excluded.extend(exclude_manifests)
        return write(path, n, seed, exclude_manifests)

    monkeypatch.setattr(unified_lm.corpus.sentences, "write_text_corpus", spy)
    recorder = StartRecorder()
    run_loss_grid(config, runner=recorder, progress=False)
    (lm,) = (out / "shared").glob("textlm-*")
    assert json.loads((lm / "summary.json").read_text())["steps"] == 2
    (text,) = (out / "shared").glob("text-*.txt")
    assert len(text.read_text().splitlines()) == 40
    assert sorted(map(str, excluded)) == sorted(map(str, [corpus["dev"], corpus["test"]]))  # never a dev/test sentence
    assert [init for _, init in recorder.starts] == [str(lm / "best")]  # the cell's decoder starts from it ...
    cell = json.loads(next(out.glob("cells/fbank-km8.mask.seed0.*/cell.json")).read_text())
    assert cell["spec"]["train"]["model"]["init_from"] == lm.name  # ... and is identified by its hash, not its path

    _rerun_trains_nothing(config, monkeypatch, "text LM")
    with pytest.raises(ConfigError, match="drop model.init_from"):
        run_loss_grid(config, ["train.overrides=[model.init_from=somewhere]"], runner=StartRecorder(), progress=False)


def test_the_grid_speech_lm_is_trained_once_per_tokenizer_on_unpaired_tasks(tmp_path, prepared, monkeypatch):
    config, out = _grid(tmp_path, prepared, losses=[{"name": "mask"}, {"name": "ce"}], alpha_sweep=[], seeds=[0],
                        speechlm={"max_steps": 2})  # fmt: skip
    recorder = StartRecorder()
    run_loss_grid(config, runner=recorder, progress=False)
    starts: dict[str, set] = {}
    for tok, init in recorder.starts:
        starts.setdefault(tok, set()).add(init)
    stages = sorted((out / "shared").glob("speechlm-*"))
    assert len(stages) == 2  # one per tokenizer: its units
    for stage in stages:
        trained = yaml.safe_load((stage / "config.yaml").read_text())
        assert trained["tasks"]["mixture"] == {"speech_lm": 1.0, "text_lm": 1.0}  # never asr: no pair is seen
        assert json.loads((stage / "summary.json").read_text())["steps"] == 2
    by_tok = {yaml.safe_load((s / "config.yaml").read_text())["data"]["tokenizer"]: s for s in stages}
    for tok, inits in starts.items():  # mask and ce of a tokenizer start from its own stage
        (tokdir,) = [t for t in by_tok if Path(t).name.startswith(tok)]
        assert inits == {str(by_tok[tokdir] / "best")}
    cell = json.loads(next(out.glob("cells/fbank-km8.ce.seed0.*/cell.json")).read_text())
    assert cell["spec"]["train"]["model"]["init_from"].startswith("speechlm-")  # its hash, not its path

    _rerun_trains_nothing(config, monkeypatch, "speech LM")
    with pytest.raises(ConfigError, match="unpaired tasks only"):
        run_loss_grid(config, ["speechlm.mixture={asr: 1.0}"], runner=StartRecorder(), progress=False)


def test_the_plan_counts_the_trainings_left_on_each_slice_and_estimates_their_time(tmp_path, prepared):
    config, out = _grid(tmp_path, prepared, estimate_step_seconds=600.0)
    # Per tokenizer: mask and ce x 2 seeds, 2 sweep cells, the seed-1 sld cell = 7 trainings of 3 steps.
    # Slice 0 holds the even positions of phase 1 (6 cells); the seed-1 sld keys are at odd positions.
    first = run_loss_grid(config, cells="0/2", jobs=2, runner=FakeRunner(), progress=False)["plan"]
    assert "= 14 trainings of 3 steps; 6 to run here (18 steps), ~1.5 h of training in 2 job(s) at 600 s/step" in first
    # Slice 1: its 6 phase-1 cells and both seed-1 sld cells, still waiting for their alpha.
    second = run_loss_grid(config, cells="1/2", runner=FakeRunner(), progress=False)
    assert "8 to run here (24 steps), ~4.0 h of training in 1 job(s)" in second["plan"]
    assert len(second["cells"]["ran"]) == 8
    done = run_loss_grid(config, runner=FakeRunner(interrupt_after=0), progress=False)["plan"]
    assert done.endswith("= 14 trainings of 3 steps; 0 to run here (0 steps)")


def test_a_failing_cell_is_logged_and_retried_alone(tmp_path, prepared):
    config, out = _grid(tmp_path, prepared)
    summary = run_loss_grid(config, runner=FakeRunner(fail_keys=("mfcc-km8/ce/seed1",)), progress=False)
    assert summary["cells"]["failed"] == ["mfcc-km8/ce/seed1"]
    assert summary["cells"]["done"] == 11 and summary["cells"]["pending"] == ["mfcc-km8/ce/seed1"]
    assert "fake failure" in next(out.glob("cells/mfcc-km8.ce.seed1.*/error.txt")).read_text()
    assert "failed this run" in (out / "results.md").read_text()
    before = len(calls(out))
    assert run_loss_grid(config, runner=FakeRunner(), progress=False)["cells"]["ran"] == ["mfcc-km8/ce/seed1"]
    assert len(calls(out)) == before + 1


# ---- cell identity ----------------------------------------------------------------------


def _cell(tmp_path, *overrides, out="out", loss="sld", seed=0, alpha=None, recipe_k=8):
    corpus = {s: tmp_path / f"{s}.jsonl" for s in ("train", "dev", "test")}
    cfg = load_config(LossGridConfig, grid_config(tmp_path / "g.yaml", corpus, tmp_path / out), list(overrides))
    base = check_grid(cfg)
    tok = PreparedTokenizer(
        "fbank-km8", {"name": "fbank-km8", "kmeans": {"k": recipe_k}}, tmp_path / out / "tok",
        {s: tmp_path / out / f"{s}.jsonl" for s in ("train", "dev", "test", "degraded")},
    )  # fmt: skip
    entry = next(x for x in cfg.losses if x.name == loss)
    return make_cell(cfg, base, tok, entry, seed, tmp_path / out, alpha=alpha)


def test_cell_hash_is_stable_and_sensitive(tmp_path):
    ref = _cell(tmp_path)
    assert ref.hash == _cell(tmp_path).hash
    # Paths, the order of the grid's lists, and how training is launched do not matter ...
    moved = _cell(tmp_path, out="elsewhere")
    assert moved.hash == ref.hash and Path(moved.dir).name == Path(ref.dir).name
    assert moved.train["out_dir"] != ref.train["out_dir"]
    assert _cell(tmp_path, "losses=[{name: ce}, {name: sld}, {name: mask}]").hash == ref.hash
    assert _cell(tmp_path, "train.launch=[accelerate, launch]").hash == ref.hash
    assert _cell(tmp_path, "seeds=[0, 1, 2]").hash == ref.hash
    # ... everything that changes what is trained, decoded or on which data does.
    changed = [
        _cell(tmp_path, seed=1),
        _cell(tmp_path, alpha=0.05),
        _cell(tmp_path, loss="ce"),
        _cell(tmp_path, recipe_k=16),
        _cell(tmp_path, "train.overrides=[optim.max_steps=4]"),
        _cell(tmp_path, "decode.beam=2"),
        _cell(tmp_path, "degraded.snr_db=5"),
        _cell(tmp_path, "corpus.speed_perturb=[0.9, 1.0]"),
        _cell(tmp_path, "losses=[{name: mask}, {name: ce}, {name: sld, eps: 0.2}]"),
    ]
    hashes = [c.hash for c in changed]
    assert ref.hash not in hashes and len(set(hashes)) == len(hashes)
    assert ref.key == "fbank-km8/sld/seed0"
    # The step budget's own key resolves to the same training as the override it stands for, and wins over it.
    assert _cell(tmp_path, "train.max_steps=4").hash == changed[4].hash
    budget = _cell(tmp_path, "train.max_steps=5", "train.overrides=[optim.max_steps=4]")
    assert budget.train["optim"]["max_steps"] == 5


def test_missing_local_weights_of_the_training_fail_the_check(tmp_path):
    corpus = {s: tmp_path / f"{s}.jsonl" for s in ("train", "dev", "test")}
    config = grid_config(tmp_path / "g.yaml", corpus, tmp_path / "out")
    missing = tmp_path / "no-gpt2"
    with pytest.raises(DataError, match=f"{missing}: train: model.init_from not found"):
        run_loss_grid(config, [f"train.overrides=[model.init_from={missing}]"], runner=FakeRunner(interrupt_after=0))
    with pytest.raises(ConfigError, match="train.max_steps: must be >= 1"):
        run_loss_grid(config, ["train.max_steps=0"], runner=FakeRunner(interrupt_after=0))


def test_slices_parse():
    assert parse_slice(None) == (0, 1)
    assert parse_slice("2/3") == (2, 3)
    for bad in ("3/3", "1", "a/b", "-1/2"):
        with pytest.raises(ConfigError, match="I/N"):
            parse_slice(bad)


@pytest.mark.parametrize(
    "sections, match",
    [
        ({"corpus": {"synth": {"num_utts": 10}, "train": "x.jsonl"}}, "either synth"),
        ({"corpus": {"train": "x.jsonl"}}, "either synth"),
        ({"baseline": "ce", "losses": [{"name": "mask"}, {"name": "sld"}]}, "baseline 'ce'"),
        ({"losses": [{"name": "mask"}, {"name": "mask"}]}, "one entry per label"),
        ({"losses": [{"name": "mask"}, {"name": "sld"}, {"name": "sld"}]}, "one entry per label"),
        ({"losses": [{"name": "mask", "alpha_sweep": [0.1]}], "alpha_sweep": []}, "alpha is sld's"),
        ({"losses": [{"name": "mask"}, {"name": "sld", "alpha_sweep": [0.1, 0.1]}]}, "distinct non-negative"),
        ({"encoder": {"max_steps": 0}}, "encoder.max_steps"),
        ({"losses": [{"name": "mask"}, {"name": "l2"}]}, "unknown loss 'l2'"),
        ({"losses": [{"name": "mask"}, {"name": "ce"}]}, "alpha_sweep: needs an sld entry"),
        ({"seeds": []}, "distinct seeds"),
        ({"degraded": {"noise": "brown"}}, "unknown noise type"),
        ({"train": {"overrides": ["optim.nope=1"]}}, "unknown key"),
    ],
)
def test_bad_grids_fail_before_any_work(tmp_path, sections, match):
    corpus = {s: tmp_path / f"{s}.jsonl" for s in ("train", "dev", "test")}
    config = grid_config(tmp_path / "g.yaml", corpus, tmp_path / "out", **sections)
    with pytest.raises(ConfigError, match=match):
        run_loss_grid(config, runner=FakeRunner(interrupt_after=0), progress=False)
    assert not (tmp_path / "out" / "shared").exists()


def test_read_curves_keeps_parts_and_dev_wer_and_skips_a_torn_line(tmp_path):
    metrics = tmp_path / "metrics.jsonl"
    lines = [
        {"step": 1, "epoch": 0, "loss": 5.0, "ce_text": 4.0, "tokens": 10, "lr": 0.1, "tokens_per_s": 3.0},
        {"step": 2, "epoch": 0, "loss": 4.0, "ce_text": 3.0, "ce_speech": 6.0, "tokens": 10, "lr": 0.1, "tokens_per_s": 3.0},
        {"step": 2, "dev_wer": 0.5, "dev_cer": 0.3, "dev_utts": 2},
    ]
    metrics.write_text("".join(json.dumps(x) + "\n" for x in lines) + '{"step": 3, "lo')
    curves = read_curves(metrics)
    assert curves["dev"] == {"step": [2], "dev_wer": [0.5]}
    train = curves["train"]
    assert set(train) == {"step", "loss", "ce_text", "ce_speech"}
    assert train["step"] == [1, 2] and train["ce_text"] == [4.0, 3.0]
    assert train["ce_speech"][1] == 6.0 and train["ce_speech"][0] != train["ce_speech"][0]  # NaN before it appears
