"""The one training loop, on a toy task: an interrupted run resumes to the same metrics and
weights, a finished run trains no further, and exactly one function steps an optimizer."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import unified_lm
from unified_lm.config import from_dict
from unified_lm.losses import LossOutput
from unified_lm.recipes.batching import epoch_rng
from unified_lm.training import Task, TrainingConfig, TrainingRecipe, fit


class Interrupted(Exception):
    """Stands in for a kill: the loop gets no chance to save anything."""


def _config(out: Path) -> TrainingConfig:
    return from_dict(TrainingConfig, {
        "optim": {"max_steps": 12, "warmup_steps": 2}, "eval": {"every_steps": 4},
        "checkpoint": {"every_steps": 4}, "log_every_steps": 1, "out_dir": str(out),
    })


def _recipe(stop_at_call: int | None = None) -> TrainingRecipe:
    g = torch.Generator().manual_seed(1)
    data = [(torch.randn(8, 4, generator=g), torch.randn(8, 1, generator=g)) for _ in range(5)]
    calls = [0]

    def loss(model, batch, where):
        calls[0] += 1
        if calls[0] == stop_at_call:
            raise Interrupted
        x, y = batch
        mse = F.mse_loss(model(x), y)
        return LossOutput(mse, {"mse": mse.detach()})

    def epoch_batches(epoch, skip):
        order = list(range(len(data)))
        epoch_rng(0, epoch).shuffle(order)
        return [data[i] for i in order][skip:]

    def evaluate(model):
        with torch.no_grad():
            return {"loss": float(sum(F.mse_loss(model(x), y) for x, y in data))}

    def setup(cfg, accelerator, resuming):
        # Dropout makes the result depend on the RNG stream, which resuming must restore.
        model = nn.Sequential(nn.Linear(4, 16), nn.Dropout(0.3), nn.Linear(16, 1))
        return Task(
            model=model, epoch_batches=epoch_batches, batches_per_epoch=len(data), loss=loss,
            save=lambda d, m: torch.save(m.state_dict(), d / "model.pt"),
            load=lambda d, m: m.load_state_dict(torch.load(d / "model.pt")),
            evaluate=evaluate,
        )

    return TrainingRecipe("toy", TrainingConfig, setup, help="a toy task")


def _metrics(out) -> list[dict]:
    return [{k: v for k, v in json.loads(line).items() if k != "tokens_per_s"} for line in (out / "metrics.jsonl").read_text().splitlines()]


def test_a_run_interrupted_mid_epoch_resumes_to_the_same_metrics_and_weights(tmp_path):
    whole, split = tmp_path / "whole", tmp_path / "split"
    reference = fit(_recipe(), _config(whole))
    # Five batches an epoch: the last checkpoint is at step 4 (epoch 0, position 4) and
    # the interruption comes at step 7, in the second epoch.
    with pytest.raises(Interrupted):
        fit(_recipe(stop_at_call=7), _config(split))
    assert json.loads((split / "last" / "trainer_state.json").read_text())["step"] == 4
    assert len(_metrics(split)) > 4 + 1  # steps 5 and 6 were logged before the interruption
    resumed = fit(_recipe(), _config(split))

    assert _metrics(split) == _metrics(whole)  # no duplicated or missing lines
    ignore = ("session_seconds", "session_tokens_per_s", "out_dir", "last_train")
    assert {k: v for k, v in resumed.items() if k not in ignore} == {k: v for k, v in reference.items() if k not in ignore}
    for a, b in zip(torch.load(whole / "best" / "model.pt").values(), torch.load(split / "best" / "model.pt").values()):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-6)


def test_rerunning_a_finished_run_trains_no_further(tmp_path):
    first = fit(_recipe(), _config(tmp_path))
    again = fit(_recipe(stop_at_call=1), _config(tmp_path))
    assert again["steps"] == first["steps"] == 12
    assert again["best_dev"] == first["best_dev"]


def test_exactly_one_function_steps_an_optimizer():
    package = Path(unified_lm.__file__).parent
    callers = [
        f"{path.relative_to(package)}:{n}"
        for path in sorted(package.rglob("*.py"))
        for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1)
        if re.search(r"\b(optimizer|opt|optim)\.step\(\)", line)
    ]
    assert len(callers) == 1 and callers[0].startswith("training/loop.py:"), callers
