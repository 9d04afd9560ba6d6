"""``metrics.jsonl`` + TensorBoard, written by the main process."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from torch.utils.tensorboard import SummaryWriter

from ..errors import DataError
from ..io import dump_json_line, iter_jsonl, write_jsonl


class MetricsLog:
    """On resume, drops what was logged after the checkpoint, so a resumed run's log reads
    like an uninterrupted one."""

    def __init__(self, out: Path, resume_step: int, enabled: bool):
        self.enabled = enabled
        self.path = out / "metrics.jsonl"
        if not enabled:
            return
        if self.path.is_file():
            kept = [r for _, r in iter_jsonl(self.path) if not isinstance(r, DataError) and r["step"] <= resume_step]
            write_jsonl(self.path, kept)
        self.tb = SummaryWriter(str(out / "tb"), purge_step=resume_step + 1)

    def log(self, record: dict[str, Any], prefix: str) -> None:
        if not self.enabled:
            return
        with open(self.path, "a", encoding="utf-8") as f:
            f.write(dump_json_line(record))
        for key, value in record.items():
            if key != "step" and isinstance(value, (int, float)):
                self.tb.add_scalar(f"{prefix}/{key}", value, record["step"])
        self.tb.flush()

    def close(self) -> None:
        if self.enabled:
            self.tb.close()
