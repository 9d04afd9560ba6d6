"""Task templates (asr, tts, speech_lm, text_lm), the task mixture, batching and time masking."""

from .batch import collate, time_mask
from .mixture import TaskMixture
from .templates import TASKS, Role, TaskConfig, TokenSequence, asr_prompt, speech_ids, text_ids

__all__ = [
    "TASKS",
    "Role",
    "TaskConfig",
    "TaskMixture",
    "TokenSequence",
    "asr_prompt",
    "collate",
    "speech_ids",
    "text_ids",
    "time_mask",
]
