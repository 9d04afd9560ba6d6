"""Batching token sequences, and the reference recipe's "time masking" augmentation."""

from __future__ import annotations

import torch

from .templates import Role, TokenSequence


def collate(seqs: list[TokenSequence], pad_id: int) -> dict[str, torch.Tensor]:
    """Right-pads a batch to its longest sequence (not to the block size, which is what made
    the reference recipe spend most of its compute on padding).

    Returns ``input_ids`` [B, T] (padding = ``pad_id``), ``roles`` [B, T] (padding = Role.PAD)
    and ``attention_mask`` [B, T] (1 on real tokens), all int64.
    """
    if not seqs:
        raise ValueError("cannot collate an empty batch")
    length = max(len(s) for s in seqs)
    input_ids = torch.full((len(seqs), length), pad_id, dtype=torch.long)
    roles = torch.full((len(seqs), length), int(Role.PAD), dtype=torch.long)
    attention_mask = torch.zeros((len(seqs), length), dtype=torch.long)
    for i, s in enumerate(seqs):
        if len(s.tokens) != len(s.roles):
            raise ValueError(f"sequence {i} ({s.task}) has {len(s.tokens)} tokens but {len(s.roles)} roles")
        input_ids[i, : len(s)] = torch.tensor(s.tokens, dtype=torch.long)
        roles[i, : len(s)] = torch.tensor(s.roles, dtype=torch.long)
        attention_mask[i, : len(s)] = 1
    return {"input_ids": input_ids, "roles": roles, "attention_mask": attention_mask}


def time_mask(
    input_ids: torch.Tensor, roles: torch.Tensor, p: float, pad_id: int, generator: torch.Generator
) -> torch.Tensor:
    """Returns a copy of ``input_ids`` where each input token, speech and text alike, is
    replaced by ``pad_id`` with probability ``p``; the labels (the unmasked ids) are untouched.

    Padding stays padding, and the first token (the task token) is never masked: without it
    the sequence no longer says which task it is. The draw uses ``generator`` (on its own
    device) so masking is reproducible whatever device the batch is on.
    """
    if not 0.0 <= p <= 1.0:
        raise ValueError(f"time-masking probability must be in [0, 1], got {p}")
    draw = torch.rand(input_ids.shape, generator=generator, device=generator.device).to(input_ids.device)
    mask = (draw < p) & (roles != Role.PAD)
    mask[:, 0] = False
    return input_ids.masked_fill(mask, pad_id)
