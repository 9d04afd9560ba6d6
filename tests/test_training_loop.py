"""The one training loop, on a toy task: an interrupted run resumes to the same metrics and
weights, a finished run trains no further, and exactly one function steps an optimizer."""

from __future__ import annotations

import dataclasses
import json
import re
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from accelerate import Accelerator
from torch import nn

import unified_lm
import unified_lm.training.loop as loop
from unified_lm.config import from_dict, to_dict
from unified_lm.errors import ConfigError
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


# ---- phases: freezing parts of the model, switching what is trained ----------------------


def _phased(out: Path, phases: list[dict], checkpoint_every: int = 4) -> TrainingConfig:
    cfg = to_dict(_config(out))
    cfg["phases"], cfg["checkpoint"]["every_steps"], cfg["eval"]["every_steps"] = phases, checkpoint_every, checkpoint_every
    return from_dict(TrainingConfig, cfg)


def _recorded_recipe(initial: list, stop_at_call: int | None = None) -> TrainingRecipe:
    """The toy recipe, recording the freshly built model's weights into ``initial``."""
    recipe = _recipe(stop_at_call)

    def setup(cfg, accelerator, resuming):
        task = recipe.setup(cfg, accelerator, resuming)
        initial.append({k: v.clone() for k, v in task.model.state_dict().items()})
        return task

    return TrainingRecipe("toy", TrainingConfig, setup, help="a toy task")


def test_a_frozen_part_is_unchanged_and_the_optimizer_holds_only_the_trained_parts(tmp_path):
    initial: list = []
    fit(_recorded_recipe(initial), _phased(tmp_path, [{"train": ["2"]}]))
    final = torch.load(tmp_path / "best" / "model.pt")
    torch.testing.assert_close(final["0.weight"], initial[0]["0.weight"], rtol=0, atol=0)
    torch.testing.assert_close(final["0.bias"], initial[0]["0.bias"], rtol=0, atol=0)
    assert not torch.equal(final["2.weight"], initial[0]["2.weight"])

    model = nn.Sequential(nn.Linear(4, 16), nn.Dropout(0.3), nn.Linear(16, 1))
    cfg = _phased(tmp_path / "x", [{"steps": 5, "train": ["2"]}, {"lr": 5e-4}])
    accelerator = Accelerator(cpu=True)
    _, optimizer, scheduler = loop._enter_phase(model, cfg, cfg.phase_at(0), accelerator)
    held = {id(p) for group in optimizer.param_groups for p in group["params"]}
    assert held == {id(p) for p in model[2].parameters()}
    assert not any(p.requires_grad for p in model[0].parameters())
    _, optimizer, scheduler = loop._enter_phase(model, cfg, cfg.phase_at(5), accelerator)
    assert {id(p) for group in optimizer.param_groups for p in group["params"]} == {id(p) for p in model.parameters()}
    assert scheduler.base_lrs == [5e-4, 5e-4]


def test_freeze_keeps_a_part_out_of_what_a_phase_trains(tmp_path):
    initial: list = []
    fit(_recorded_recipe(initial), _phased(tmp_path, [{"freeze": ["0"]}]))
    final = torch.load(tmp_path / "best" / "model.pt")
    assert torch.equal(final["0.weight"], initial[0]["0.weight"])
    assert not torch.equal(final["2.weight"], initial[0]["2.weight"])


def test_the_phase_switches_at_its_step_with_a_fresh_warm_up(tmp_path):
    initial: list = []
    fit(_recorded_recipe(initial), _phased(tmp_path, [{"steps": 6, "train": ["2"]}, {"lr": 5e-4}]))
    train = [r for r in _metrics(tmp_path) if "mse" in r]
    assert [r["phase"] for r in train] == [1] * 6 + [2] * 6
    # optim.warmup_steps is 2: each phase's first step runs at lr 0, its second at half its peak.
    assert train[6]["lr"] == 0.0 and train[7]["lr"] == pytest.approx(2.5e-4)
    assert train[1]["lr"] == pytest.approx(0.5e-3)
    final = torch.load(tmp_path / "best" / "model.pt")  # the last phase trained everything
    assert not torch.equal(final["0.weight"], initial[0]["0.weight"])


@pytest.mark.parametrize("switch, checkpoint_every", [(5, 4), (6, 3)], ids=["checkpoint-before-switch", "checkpoint-at-switch"])
def test_a_run_interrupted_after_the_switch_resumes_exactly(tmp_path, switch, checkpoint_every):
    phases = [{"steps": switch, "train": ["2"]}, {"lr": 5e-4}]
    whole, split = tmp_path / "whole", tmp_path / "split"
    fit(_recipe(), _phased(whole, phases, checkpoint_every))
    with pytest.raises(Interrupted):
        fit(_recipe(stop_at_call=8), _phased(split, phases, checkpoint_every))  # steps 1-7 done, in phase 2
    # Resumed from a checkpoint in phase 1 (step 4) or at the switch itself (step 6).
    assert json.loads((split / "last" / "trainer_state.json").read_text())["step"] == {5: 4, 6: 6}[switch]
    fit(_recipe(), _phased(split, phases, checkpoint_every))
    assert _metrics(split) == _metrics(whole)
    for a, b in zip(torch.load(whole / "best" / "model.pt").values(), torch.load(split / "best" / "model.pt").values()):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-6)


@pytest.mark.parametrize("phases, message", [
    ([{"steps": 5}, {"steps": 3}], "add up to optim.max_steps"),
    ([{"train": ["0"]}, {"steps": 3}], "every phase but the last needs steps"),
    ([{"steps": 12}, {}], "add up to optim.max_steps"),
    ([{"train": []}], "names no part"),
])
def test_phases_that_do_not_fit_are_refused(tmp_path, phases, message):
    with pytest.raises(ConfigError, match=message):
        _phased(tmp_path, phases)


def test_a_phase_naming_no_part_of_the_model_is_refused_with_the_parts(tmp_path):
    with pytest.raises(ConfigError, match=r"\['decoder'\] name no part of the model; its parts: 0, 1, 2"):
        fit(_recipe(), _phased(tmp_path / "run", [{"steps": 4}, {"train": ["decoder"]}]))
    assert not (tmp_path / "run").exists()  # refused before anything was written


def test_precision_follows_the_launcher_unless_the_recipe_sets_it(monkeypatch, caplog):
    monkeypatch.delenv("ACCELERATE_MIXED_PRECISION", raising=False)
    assert loop.resolve_precision(None) == "no"  # neither says: fp32
    monkeypatch.setenv("ACCELERATE_MIXED_PRECISION", "fp16")  # as `accelerate launch --mixed_precision fp16` sets it
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert loop.resolve_precision(None) == "fp16"
    assert not caplog.records
    assert loop.resolve_precision("no") == "no"
    assert "precision=no in the recipe overrides the launcher's --mixed_precision fp16" in caplog.text
    assert from_dict(TrainingConfig, {}).precision is None


# ---- speed settings -----------------------------------------------------------------------


def test_a_compiled_run_learns_the_same_and_saves_plain_weights_and_resumes_without_compiling(tmp_path):
    plain = fit(_recipe(), _config(tmp_path / "plain"))
    cfg = _config(tmp_path / "compiled")
    cfg.speed.compile = "eager"  # torch.compile's tracing without code generation: quick, same numbers
    recipe, kinds = _recipe(stop_at_call=7), set()

    def setup(*args):
        task = recipe.setup(*args)
        loss = task.loss
        task.loss = lambda model, batch, where: kinds.add(type(model).__name__) or loss(model, batch, where)
        return task

    with pytest.raises(Interrupted):
        fit(dataclasses.replace(recipe, setup=setup), cfg)
    assert kinds == {"OptimizedModule"}  # the loop trained the compiled model
    saved = torch.load(tmp_path / "compiled" / "last" / "model.pt")
    assert list(saved) == ["0.weight", "0.bias", "2.weight", "2.bias"]  # no _orig_mod. prefix
    resumed = fit(_recipe(), _config(tmp_path / "compiled"))  # speed settings may change on resume
    assert resumed["best_dev_loss"] == plain["best_dev_loss"]
    assert _metrics(tmp_path / "compiled") == _metrics(tmp_path / "plain")


def _hf_recipe(model_factory) -> TrainingRecipe:
    data = [torch.randint(0, 32, (4, 12), generator=torch.Generator().manual_seed(i)) for i in range(3)]

    def loss(model, batch, where):
        out = model(input_ids=batch, labels=batch).loss
        return LossOutput(out, {})

    def setup(cfg, accelerator, resuming):
        model = model_factory()
        return Task(model=model, epoch_batches=lambda epoch, skip: data[skip:], batches_per_epoch=len(data), loss=loss,
                    save=lambda d, m: torch.save(m.state_dict(), d / "model.pt"),
                    load=lambda d, m: m.load_state_dict(torch.load(d / "model.pt")))  # fmt: skip

    return TrainingRecipe("hf", TrainingConfig, setup, help="a tiny HF model")


def _tiny_llama():
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=32, hidden_size=16, intermediate_size=32, num_hidden_layers=2,
                         num_attention_heads=2, attention_dropout=0.2)  # fmt: skip
    return LlamaForCausalLM(config)


def test_gradient_checkpointing_recomputes_in_every_hf_model_and_learns_the_same(tmp_path):
    class Wrapper(nn.Module):  # like the prefix LM: an HF decoder inside our own module
        def __init__(self):
            super().__init__()
            self.decoder = _tiny_llama()

        def forward(self, **kw):
            return self.decoder(**kw)

    assert loop.enable_gradient_checkpointing(wrapped := Wrapper()) == ["decoder"]
    assert wrapped.decoder.is_gradient_checkpointing
    runs = {}
    for on in (False, True):
        cfg = _config(tmp_path / f"ckpt-{on}")
        cfg.speed.gradient_checkpointing = on
        runs[on] = fit(_hf_recipe(Wrapper), cfg)["last_train"]["loss"]
    # Recomputation replays dropout with the same RNG state: the same steps, the same loss.
    assert runs[True] == pytest.approx(runs[False], rel=1e-5)
    with pytest.raises(ConfigError, match="holds no Hugging Face model"):
        loop.enable_gradient_checkpointing(nn.Linear(2, 2))


def test_fsdp_and_deepspeed_are_refused_with_what_to_use_instead(tmp_path, monkeypatch):
    from accelerate.utils import DistributedType

    monkeypatch.setattr(Accelerator, "distributed_type", property(lambda self: DistributedType.FSDP))
    with pytest.raises(ConfigError, match="FSDP is not supported.*data parallelism"):
        fit(_recipe(), _config(tmp_path / "run"))
    assert not (tmp_path / "run").exists()



def test_compiling_follows_the_launcher_unless_the_recipe_sets_it(monkeypatch):
    monkeypatch.delenv("ACCELERATE_DYNAMO_BACKEND", raising=False)
    assert loop.resolve_compile(None) is None
    monkeypatch.setenv("ACCELERATE_DYNAMO_BACKEND", "INDUCTOR")  # as `accelerate launch --dynamo_backend inductor` sets it
    assert loop.resolve_compile(None) == "inductor"
    assert loop.resolve_compile("eager") == "eager"
    monkeypatch.setenv("ACCELERATE_DYNAMO_BACKEND", "NO")
    assert loop.resolve_compile(None) is None
