"""Packaging, config, registry and atomic IO: the pieces every module leans on."""

import dataclasses
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Literal

import pytest

from unified_lm.config import apply_overrides, from_dict, load_config, save_config
from unified_lm.errors import ConfigError, DataError
from unified_lm.io import atomic_open, iter_jsonl, write_jsonl
from unified_lm.registry import Registry

ROOT = Path(__file__).resolve().parents[1]


def test_import_tokenizers_from_repo_root_is_hugging_face():
    # tokenizers/ holds recipes; it must never shadow the Hugging Face library.
    out = subprocess.run(
        [sys.executable, "-c", "import tokenizers, sys; print(tokenizers.__file__); print(hasattr(tokenizers, 'Tokenizer'))"],
        cwd=ROOT, capture_output=True, text=True, check=True,
    ).stdout.split()
    assert "site-packages" in out[0]
    assert out[1] == "True"
    assert not list((ROOT / "tokenizers").glob("*.py"))


def test_console_script_help_lists_commands():
    out = subprocess.run(
        [sys.executable, "-m", "unified_lm.cli", "--help"], capture_output=True, text=True, check=True
    ).stdout
    for cmd in ("corpus", "discretize", "train", "decode", "bench", "demo"):
        assert cmd in out


@dataclasses.dataclass
class _Optim:
    lr: float = 1e-3
    steps: int = 10


@dataclasses.dataclass
class _Cfg:
    name: str = "x"
    optim: _Optim = dataclasses.field(default_factory=_Optim)
    tags: list[str] = dataclasses.field(default_factory=list)


def test_config_yaml_and_overrides(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("name: run\noptim:\n  lr: 3\n")
    cfg = load_config(_Cfg, path, ["optim.steps=7", "tags=[a, b]"])
    assert cfg.name == "run" and cfg.optim.lr == 3.0 and isinstance(cfg.optim.lr, float)
    assert cfg.optim.steps == 7 and cfg.tags == ["a", "b"]
    save_config(cfg, tmp_path / "saved.yaml")
    assert load_config(_Cfg, tmp_path / "saved.yaml") == cfg
    # YAML 1.1 reads 3e-3 (no dot) as a string; a float field still takes it.
    assert load_config(_Cfg, path, ["optim.lr=3e-3"]).optim.lr == 0.003
    with pytest.raises(ConfigError, match="expected float"):
        load_config(_Cfg, path, ["optim.lr=fast"])


def test_config_unknown_key_and_bad_type_fail_fast():
    with pytest.raises(ConfigError, match="unknown key.*'lrr'"):
        from_dict(_Cfg, {"optim": {"lrr": 1}})
    with pytest.raises(ConfigError, match="expected int"):
        from_dict(_Cfg, {"optim": {"steps": "many"}})
    with pytest.raises(ConfigError, match="key=value"):
        apply_overrides({}, ["novalue"])


@dataclasses.dataclass
class _Recipe:
    optim: _Optim = dataclasses.field(default_factory=lambda: _Optim(lr=0.5, steps=3))
    mode: Literal["fast", "slow"] = "fast"


def test_a_section_given_in_part_keeps_the_configs_own_defaults_for_the_rest():
    # The recipe's default optim is lr=0.5, steps=3, not the section class's 1e-3 and 10.
    assert from_dict(_Recipe, {"optim": {"steps": 7}}).optim == _Optim(lr=0.5, steps=7)
    assert from_dict(_Recipe, {}).optim == _Optim(lr=0.5, steps=3)


def test_a_literal_field_takes_only_its_values():
    assert from_dict(_Recipe, {"mode": "slow"}).mode == "slow"
    with pytest.raises(ConfigError, match=r"mode: must be one of \['fast', 'slow'\], got 'medium'"):
        from_dict(_Recipe, {"mode": "medium"})


def test_registry_names_known_entries_on_miss():
    reg: Registry = Registry("loss")

    @reg.register("a")
    def a():
        return 1

    assert reg.get("a") is a and "a" in reg
    with pytest.raises(ConfigError, match="unknown loss 'b'; known: a"):
        reg.get("b")
    with pytest.raises(ValueError):
        reg.register("a")(a)


def test_atomic_open_leaves_nothing_on_failure(tmp_path):
    target = tmp_path / "out.jsonl"
    with pytest.raises(RuntimeError):
        with atomic_open(target) as f:
            f.write("half")
            raise RuntimeError("boom")
    assert list(tmp_path.iterdir()) == []
    write_jsonl(target, [{"a": 1}])
    assert target.read_text() == '{"a":1}\n'
    # Readable like a file made with open(): mkstemp's private 0600 must not leak through.
    umask = os.umask(0)
    os.umask(umask)
    assert target.stat().st_mode & 0o777 == 0o666 & ~umask


def test_iter_jsonl_reports_each_bad_line(tmp_path):
    path = tmp_path / "m.jsonl"
    path.write_bytes(b'{"id": "a"}\n\xff\xfe\n[1]\n{bad\n')
    recs = list(iter_jsonl(path))
    assert isinstance(recs[0][1], dict)
    errs = [r for _, r in recs if isinstance(r, DataError)]
    assert [e.line for e in errs] == [2, 3, 4]
    assert "UTF-8" in str(errs[0]) and "m.jsonl:2" in str(errs[0])
    assert "JSON object" in str(errs[1]) and "not valid JSON" in str(errs[2])


def test_packaged_recipes_are_found_from_outside_the_clone(tmp_path, monkeypatch):
    from unified_lm.config import PRESETS, find_config, load_yaml
    from unified_lm.discretize.tokenizer_recipe import load_recipe

    monkeypatch.chdir(tmp_path)  # no tokenizers/ or experiments/ here
    assert find_config("tokenizers/ctc-km500.yaml") == PRESETS / "tokenizers" / "ctc-km500.yaml"
    assert load_recipe("tokenizers/ctc-km500.yaml").name == "ctc-km500"
    assert load_yaml("experiments/asr_sld.yaml")["loss"]["name"] == "sld"
    (tmp_path / "tokenizers").mkdir()
    (tmp_path / "tokenizers" / "ctc-km500.yaml").write_text("name: mine\nkind: kmeans\nkmeans: {features: {type: fbank}, k: 4}\n")
    assert load_recipe("tokenizers/ctc-km500.yaml").name == "mine"  # a file of the user's own comes first
    with pytest.raises(ConfigError, match="tokenizers/nope.yaml: config file not found"):
        load_yaml("tokenizers/nope.yaml")


def test_a_mapping_field_given_in_a_section_replaces_the_default_whole():
    from unified_lm.recipes.configs import LMConfig

    from unified_lm.config import PRESETS

    overrides = ["tasks.mixture={speech_lm: 1.0, text_lm: 1.0}"]
    cfg = load_config(LMConfig, PRESETS / "experiments" / "asr_sld.yaml", overrides)
    assert cfg.tasks.mixture == {"speech_lm": 1.0, "text_lm": 1.0}  # asr is not merged back in
    assert cfg.tasks.max_text_tokens == 150  # while the section's other keys keep the recipe's values
