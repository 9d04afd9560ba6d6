"""Typed dataclass configs loaded from YAML, overridable from the command line.

Overrides use dotted keys with YAML values: ``optim.lr=1e-3 loss.name=sld``. Unknown keys
are errors, so a typo never silently falls back to a default; a ``Literal`` field accepts
only its listed values. Value checks live in each dataclass's ``__post_init__``, so a
config is checked wherever it is built: from YAML, from code, or from a checkpoint.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from pathlib import Path
from typing import Any, TypeVar

import yaml

from .errors import ConfigError

C = TypeVar("C")


# The recipes (tokenizers/, experiments/) ship inside the package; a clone links them at its
# top level, so the same relative path works in a clone, outside one, and after pip install.
PRESETS = Path(__file__).parent / "presets"


def find_config(path: str | Path) -> Path:
    """``path`` itself if it is a file; else, for a relative path such as
    ``tokenizers/ctc-km500.yaml``, the recipe of that name shipped with the package."""
    path = Path(path)
    if not path.is_file() and not path.is_absolute() and (PRESETS / path).is_file():
        return PRESETS / path
    return path


def load_yaml(path: str | Path) -> dict[str, Any]:
    path = find_config(path)
    if not path.is_file():
        raise ConfigError(f"{path}: config file not found")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except (yaml.YAMLError, UnicodeDecodeError) as e:
        raise ConfigError(f"{path}: not valid YAML: {e}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: top level must be a mapping, got {type(data).__name__}")
    return data


def apply_overrides(data: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Returns a copy of ``data`` with ``a.b=value`` overrides applied."""
    data = _deepcopy(data)
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"override {item!r} is not of the form key=value")
        key, raw = item.split("=", 1)
        value = yaml.safe_load(raw) if raw != "" else ""
        node = data
        parts = key.split(".")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ConfigError(f"override {item!r}: {part!r} is not a section")
        node[parts[-1]] = value
    return data


def from_dict(cls: type[C], data: dict[str, Any], where: str = "config") -> C:
    """Builds dataclass ``cls`` from a mapping, recursing into nested dataclasses."""
    if not isinstance(data, dict):
        raise ConfigError(f"{where}: expected a mapping, got {type(data).__name__}")
    fields = {f.name: f for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    unknown = sorted(set(data) - set(fields))
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) {unknown}; valid keys: {sorted(fields)}")
    hints = typing.get_type_hints(cls)
    kwargs = {}
    for name, value in data.items():
        default = fields[name].default_factory
        if isinstance(value, dict) and default is not dataclasses.MISSING and dataclasses.is_dataclass(hints[name]):
            # A section given in part keeps the rest of *this* config's default for it (a
            # recipe's own optim defaults, say), not the section class's defaults.
            value = _merge(hints[name], to_dict(default()), value)
        kwargs[name] = _convert(hints[name], value, f"{where}.{name}")
    try:
        return cls(**kwargs)
    except TypeError as e:
        raise ConfigError(f"{where}: {e}") from None


def load_config(cls: type[C], path: str | Path | None, overrides: list[str] | None = None) -> C:
    data = load_yaml(path) if path else {}
    data = apply_overrides(data, overrides or [])
    return from_dict(cls, data, where=str(path or "config"))


def to_dict(obj: Any) -> Any:
    if dataclasses.is_dataclass(obj):
        return {f.name: to_dict(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, (list, tuple)):
        return [to_dict(v) for v in obj]
    if isinstance(obj, dict):
        return {k: to_dict(v) for k, v in obj.items()}
    if isinstance(obj, Path):
        return str(obj)
    return obj


def save_config(obj: Any, path: str | Path) -> None:
    from .io import atomic_write_text

    atomic_write_text(path, yaml.safe_dump(to_dict(obj), sort_keys=False))


def describe(cls: type, prefix: str = "") -> list[str]:
    """``key: default`` for every leaf of dataclass ``cls`` (a ``--help`` listing)."""
    lines = []
    for key, value in to_dict(cls()).items():
        lines += _describe(value, f"{prefix}{key}")
    return lines


def _describe(value: Any, key: str) -> list[str]:
    if isinstance(value, dict) and value:
        return [line for k, v in value.items() for line in _describe(v, f"{key}.{k}")]
    return [f"{key}: {yaml.safe_dump(value, default_flow_style=True).strip().removesuffix('...').strip()}"]


def _convert(tp: Any, value: Any, where: str) -> Any:
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin is typing.Literal:
        if value not in args:
            raise ConfigError(f"{where}: must be one of {list(args)}, got {value!r}")
        return value
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        non_none = [a for a in args if a is not type(None)]
        return _convert(non_none[0], value, where) if len(non_none) == 1 else value
    if dataclasses.is_dataclass(tp):
        return from_dict(tp, value or {}, where)
    if origin in (list, tuple) and isinstance(value, (list, tuple)):
        inner = args[0] if args else Any
        return [_convert(inner, v, where) for v in value]
    if origin is dict and isinstance(value, dict):
        inner = args[1] if len(args) == 2 else Any
        return {k: _convert(inner, v, f"{where}.{k}") for k, v in value.items()}
    if tp is float and isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    if tp is float and isinstance(value, str):
        # YAML 1.1 reads "3e-3" (no dot) as a string; people write it that way.
        try:
            return float(value)
        except ValueError:
            pass
    if tp is Path and isinstance(value, str):
        return Path(value)
    if tp in (int, float, str, bool) and not isinstance(value, tp):
        raise ConfigError(f"{where}: expected {tp.__name__}, got {value!r}")
    return value


def _merge(cls: type, base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    """``over`` on top of ``base``, section by section; a mapping-valued field (a task
    mixture, say) is replaced whole, never merged key by key."""
    hints = typing.get_type_hints(cls)
    out = dict(base)
    for k, v in over.items():
        section = dataclasses.is_dataclass(hints.get(k)) and isinstance(v, dict) and isinstance(out.get(k), dict)
        out[k] = _merge(hints[k], out[k], v) if section else v
    return out


def _deepcopy(d: Any) -> Any:
    if isinstance(d, dict):
        return {k: _deepcopy(v) for k, v in d.items()}
    if isinstance(d, list):
        return [_deepcopy(v) for v in d]
    return d
