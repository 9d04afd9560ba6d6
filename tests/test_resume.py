"""Exact resume after ``kill -9``, for every recipe: a run killed by SIGKILL mid-training
and rerun with the same command ends with the metrics and weights of an uninterrupted run.

The kill is real: the training process sends itself SIGKILL at the start of a chosen step,
so nothing (no handler, no ``finally``) gets to save anything.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import torch
from _lm_util import TINY_RECIPE, make_corpus
from _prefix_util import TINY_DECODER, TINY_ENCODER, TINY_SPECTROGRAM, write_corpus
from safetensors.torch import load_file

from unified_lm.io import read_jsonl

STEPS = ["optim.max_steps=6", "optim.warmup_steps=1", "checkpoint.every_steps=2", "eval.every_steps=3",
         "log_every_steps=1"]
KILL_AT_STEP = 5  # steps 1-5 are trained and logged, the last checkpoint is step 4's: step 5 is lost

# Runs `python -m unified_lm.train`; with KILL_AT set, it sends itself SIGKILL when the
# loop has finished KILL_AT steps and is about to take the next.
RUNNER = """
import os, signal, sys
import unified_lm.training.loop as loop
kill_at = int(os.environ.get("KILL_AT", "-1"))
real = loop._train_step
def step(*args, **kwargs):
    if args[6].step == kill_at:
        os.kill(os.getpid(), signal.SIGKILL)
    return real(*args, **kwargs)
loop._train_step = step
from unified_lm.train import main
sys.exit(main(sys.argv[1:]))
"""


def _train(argv: list[str], kill_at: int | None = None) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": ""}
    if kill_at is not None:
        env["KILL_AT"] = str(kill_at)
    return subprocess.run([sys.executable, "-c", RUNNER, *argv], env=env, capture_output=True, text=True, timeout=300)


def _recipe_argv(recipe: str, tmp_path) -> list[str]:
    if recipe == "lm":
        corpus = make_corpus(tmp_path / "data")
        return ["lm", "--config", str(TINY_RECIPE), f"data.train={corpus['train']}", f"data.dev={corpus['dev']}",
                f"data.tokenizer={corpus['tok']}", "data.max_tokens=64", "time_mask=0.2"]
    if recipe == "hubert":
        from test_hubert import hubert_argv

        return hubert_argv(tmp_path)
    corpus = write_corpus(tmp_path / "data")
    recipe, phases = recipe.split("+") if "+" in recipe else (recipe, None)
    config = tmp_path / f"{recipe}.yaml"
    data = {"train": str(corpus["train"]), "dev": str(corpus["dev"]), "batch_size": 2}
    sections = {
        "ctc": {"data": data, "encoder": TINY_ENCODER},
        "textlm": {"data": {**data, "text_vocab_size": 280}, "model": TINY_DECODER},
        "prefix": {"data": {**data, "text_vocab_size": 280},
                   "model": {"encoder": TINY_ENCODER, "decoder": TINY_DECODER, "spectrogram": TINY_SPECTROGRAM}},
    }[recipe]
    if phases:  # the bridge alone for 5 steps, then everything: resuming from step 4 crosses the switch
        sections["phases"] = [{"steps": 5, "train": ["bridge", "projector"]}, {"lr": 5e-4}]
    config.write_text(json.dumps(sections))  # JSON is YAML
    return [recipe, "--config", str(config)]


def _weights(best) -> dict[str, torch.Tensor]:
    return {f"{p.name}/{k}": v for p in sorted(best.glob("*.safetensors")) for k, v in load_file(p).items()}


def _comparable(run) -> list[dict]:
    # Wall-clock throughput is the only thing allowed to differ between two runs.
    return [{k: v for k, v in r.items() if not k.endswith("_per_s")} for r in read_jsonl(run / "metrics.jsonl")]


@pytest.mark.fault
@pytest.mark.parametrize("recipe", ["lm", "ctc", "textlm", "prefix", "prefix+phases", "hubert"])
def test_a_run_killed_with_sigkill_resumes_exactly(recipe, tmp_path):
    argv = _recipe_argv(recipe, tmp_path)
    whole, killed = tmp_path / "whole", tmp_path / "killed"
    done = _train([*argv, *STEPS, f"out_dir={whole}"])
    assert done.returncode == 0, done.stderr[-3000:]

    crash = _train([*argv, *STEPS, f"out_dir={killed}"], kill_at=KILL_AT_STEP)
    assert crash.returncode == -9, crash.stderr[-3000:]
    assert json.loads((killed / "last" / "trainer_state.json").read_text())["step"] == 4
    assert max(r["step"] for r in read_jsonl(killed / "metrics.jsonl")) == KILL_AT_STEP  # dropped on resume
    resumed = _train([*argv, *STEPS, f"out_dir={killed}"])
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "resuming from" in resumed.stderr

    a, b = _comparable(whole), _comparable(killed)
    assert [r["step"] for r in a] == [r["step"] for r in b]
    for ra, rb in zip(a, b):
        assert ra.keys() == rb.keys()
        for key in ra:
            assert rb[key] == pytest.approx(ra[key], abs=1e-5), (ra["step"], key)
    wa, wb = _weights(whole / "best"), _weights(killed / "best")
    assert wa.keys() == wb.keys() and wa
    for name in wa:
        torch.testing.assert_close(wa[name], wb[name], rtol=0, atol=1e-6, msg=name)
