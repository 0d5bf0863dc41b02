"""Collators: right-padded SFT batches, concatenated pair batches, left-padded prompts.

Every batch is a dict of tensors. ``completion_mask`` marks the tokens that carry loss;
``attention_mask`` marks real tokens. Pair batches stack chosen rows first and rejected
rows second, so one forward pass scores both (the concatenated forward of DPO/RM).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from prefopt.data.tokenize import Encoded


def _pad(rows: Sequence[Sequence[int]], value: int, left: bool = False) -> torch.Tensor:
    width = max(len(r) for r in rows)
    out = torch.full((len(rows), width), value, dtype=torch.long)
    for i, r in enumerate(rows):
        if len(r) == 0:
            continue
        if left:
            out[i, width - len(r):] = torch.tensor(r, dtype=torch.long)
        else:
            out[i, : len(r)] = torch.tensor(r, dtype=torch.long)
    return out


def collate_sft(examples: Sequence[Encoded], pad_id: int) -> dict[str, torch.Tensor]:
    """(B, T) input_ids / attention_mask / completion_mask, right-padded."""
    ids = [e.input_ids for e in examples]
    return {
        "input_ids": _pad(ids, pad_id),
        "attention_mask": _pad([[1] * len(r) for r in ids], 0),
        "completion_mask": _pad([e.completion_mask for e in examples], 0),
    }


def collate_pairs(chosen: Sequence[Encoded], rejected: Sequence[Encoded], pad_id: int,
                  label: Sequence[float] | None = None,
                  margin: Sequence[float] | None = None) -> dict[str, torch.Tensor]:
    """(2B, T): rows 0..B-1 are the chosen completions, rows B..2B-1 the rejected ones."""
    batch = collate_sft([*chosen, *rejected], pad_id)
    n = len(chosen)
    batch["label"] = torch.tensor(label if label is not None else [1.0] * n, dtype=torch.float)
    batch["margin"] = torch.tensor(margin if margin is not None else [0.0] * n,
                                   dtype=torch.float)
    return batch


def collate_prompts(prompt_ids: Sequence[Sequence[int]], pad_id: int) -> dict[str, torch.Tensor]:
    """(B, P) left-padded prompts for generation: every prompt ends at the last column."""
    return {
        "input_ids": _pad(prompt_ids, pad_id, left=True),
        "attention_mask": _pad([[1] * len(r) for r in prompt_ids], 0, left=True),
    }
