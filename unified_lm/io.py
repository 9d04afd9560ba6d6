"""Atomic writes, JSONL reading with line-numbered errors, content hashes."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any, Iterable, Iterator, TypeVar

from .errors import ConfigError, DataError

T = TypeVar("T")

_umask = os.umask(0)
os.umask(_umask)
_UMASKED_MODE = 0o666 & ~_umask


@contextlib.contextmanager
def atomic_open(path: str | Path, mode: str = "w", encoding: str | None = "utf-8"):
    """Writes to a temp file beside ``path`` and renames it into place on success.

    A crash or exception leaves the previous file (or nothing) behind, never a torn one.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        kwargs = {} if "b" in mode else {"encoding": encoding}
        with open(tmp, mode, **kwargs) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, _UMASKED_MODE)  # mkstemp creates 0600; outputs are shared like any file
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def check_output_path(out: str | Path, *inputs: str | Path) -> None:
    """Fails before any work when writing ``out`` could not succeed (it is a directory) or
    would replace one of ``inputs``."""
    out = Path(out)
    if out.is_dir():
        raise ConfigError(f"{out}: the output path is a directory; give a file path")
    for path in inputs:
        if Path(path).exists() and out.resolve() == Path(path).resolve():
            raise ConfigError(f"{out}: the output path is also an input; the input would be overwritten")


def atomic_write_text(path: str | Path, text: str) -> None:
    with atomic_open(path, "w") as f:
        f.write(text)


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    with atomic_open(path, "wb") as f:
        f.write(data)


def dump_json_line(obj: dict[str, Any]) -> str:
    # Fixed separators and key order make outputs byte-identical across runs and shards.
    return json.dumps(obj, ensure_ascii=False, separators=(",", ":")) + "\n"


def write_jsonl(path: str | Path, records: Iterable[dict[str, Any]]) -> None:
    with atomic_open(path, "w") as f:
        for r in records:
            f.write(dump_json_line(r))


def iter_jsonl(path: str | Path) -> Iterator[tuple[int, dict[str, Any] | DataError]]:
    """Yields ``(line_number, record)``; a bad line yields a DataError instead of raising,
    so validators can report every bad line and batch jobs can skip them."""
    path = Path(path)
    if not path.is_file():
        raise DataError(path, "manifest not found")
    with open(path, "rb") as f:
        for lineno, raw in enumerate(f, start=1):
            if not raw.strip():
                continue
            try:
                text = raw.decode("utf-8")
            except UnicodeDecodeError as e:
                yield lineno, DataError(path, f"not valid UTF-8 ({e.reason} at byte {e.start})", lineno)
                continue
            try:
                obj = json.loads(text)
            except json.JSONDecodeError as e:
                yield lineno, DataError(path, f"not valid JSON: {e.msg}", lineno)
                continue
            if not isinstance(obj, dict):
                yield lineno, DataError(path, "a manifest line must be a JSON object", lineno)
                continue
            yield lineno, obj


def read_jsonl(path: str | Path) -> list[dict[str, Any]]:
    """Reads a whole JSONL file, raising on the first bad line."""
    return all_or_first_error(iter_jsonl(path))


def all_or_first_error(lines: Iterable[tuple[int, T | DataError]]) -> list[T]:
    """The records of a ``(line, record or DataError)`` reader, or its first DataError raised."""
    out = []
    for _, rec in lines:
        if isinstance(rec, DataError):
            raise rec
        out.append(rec)
    return out


def sha256_file(path: str | Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def sha256_json(obj: Any) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, separators=(",", ":")).encode()).hexdigest()
