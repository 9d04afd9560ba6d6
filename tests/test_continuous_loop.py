"""The continuous path's shared training loop: an interrupted run resumes exactly."""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from unified_lm.continuous.config import OptimConfig
from unified_lm.continuous.loop import Task, epoch_rng, fit
from unified_lm.losses import LossOutput

CFG = OptimConfig(max_steps=12, eval_every_steps=4, log_every_steps=1, warmup_steps=2, batch_size=8)


class Interrupted(Exception):
    """Stands in for a kill: the loop gets no chance to save anything."""


def _model() -> nn.Module:
    torch.manual_seed(0)
    # Dropout makes the result depend on the RNG stream, which resuming must restore.
    return nn.Sequential(nn.Linear(4, 16), nn.Dropout(0.3), nn.Linear(16, 1))


def _task(out, stop_at_call: int | None = None) -> Task:
    g = torch.Generator().manual_seed(1)
    data = [(torch.randn(8, 4, generator=g), torch.randn(8, 1, generator=g)) for _ in range(5)]
    calls = [0]

    def loss(model, batch, device):
        calls[0] += 1
        if calls[0] == stop_at_call:
            raise Interrupted
        x, y = batch
        mse = F.mse_loss(model(x), y)
        return LossOutput(mse, {"mse": mse.detach()})

    def epoch_batches(epoch):
        order = list(range(len(data)))
        epoch_rng(0, epoch).shuffle(order)
        return [data[i] for i in order]

    def evaluate(model):
        with torch.no_grad():
            return {"loss": float(sum(F.mse_loss(model(x), y) for x, y in data))}

    return Task(loss, epoch_batches, evaluate, save_best=lambda m: torch.save(m.state_dict(), out / "best.pt"))


def _metrics(out) -> list[dict]:
    return [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]


def test_a_run_interrupted_mid_epoch_resumes_to_the_same_metrics_and_weights(tmp_path):
    whole, split = tmp_path / "whole", tmp_path / "split"
    for d in (whole, split):
        d.mkdir()
    reference = fit(_model(), _task(whole), CFG, whole, seed=0, desc="t")

    # Five batches an epoch: the last checkpoint is at step 4 (epoch 0, position 4) and
    # the interruption comes at step 7, in the second epoch.
    with pytest.raises(Interrupted):
        fit(_model(), _task(split, stop_at_call=7), CFG, split, seed=0, desc="t")
    assert json.loads((split / "last" / "loop_state.json").read_text())["step"] == 4
    assert len(_metrics(split)) > 4 + 1  # steps 5 and 6 were logged before the interruption
    resumed = fit(_model(), _task(split), CFG, split, seed=0, desc="t")

    assert _metrics(split) == _metrics(whole)  # no duplicated or missing lines
    assert {k: v for k, v in resumed.items() if k not in ("session_seconds", "out_dir")} == {
        k: v for k, v in reference.items() if k not in ("session_seconds", "out_dir")
    }
    for a, b in zip(torch.load(whole / "best.pt").values(), torch.load(split / "best.pt").values()):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-6)


def test_rerunning_a_finished_run_trains_no_further(tmp_path):
    first = fit(_model(), _task(tmp_path), CFG, tmp_path, seed=0, desc="t")
    again = fit(_model(), _task(tmp_path, stop_at_call=1), CFG, tmp_path, seed=0, desc="t")
    assert again["steps"] == first["steps"] == CFG.max_steps
    assert again["best_dev"] == first["best_dev"]
