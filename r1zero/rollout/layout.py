"""The row layout every pass shares: ``[left-padded prompt (width P) | right-padded completion (width C)]``.

Prompts are left-padded so every completion starts at column P; positions are counted over real
tokens only, so padding never shifts one (generation, log-probs and values all use
``position_ids_from_mask``). ``trim_padding`` drops the columns that are padding in every row of a
micro-batch: the values are unchanged, the compute is not spent.
"""
from __future__ import annotations

import torch


def left_pad(seqs: list[list[int]], pad_id: int, device=None) -> tuple[torch.Tensor, torch.Tensor]:
    """(ids, attention mask) with every row right-aligned, so all completions start at one column."""
    width = max(len(s) for s in seqs)
    ids = torch.full((len(seqs), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(seqs), width), dtype=torch.long)
    for i, s in enumerate(seqs):
        if s:
            ids[i, width - len(s):] = torch.tensor(s, dtype=torch.long)
            mask[i, width - len(s):] = 1
    return (ids, mask) if device is None else (ids.to(device), mask.to(device))


def position_ids_from_mask(attention_mask: torch.Tensor) -> torch.Tensor:
    """Positions counted over real tokens only, so left padding does not shift them."""
    return (attention_mask.long().cumsum(-1) - 1).clamp(min=0)


def trim_padding(input_ids, attention_mask, completion_mask, prompt_width):
    """(ids, mask, completion mask, prompt width) without the all-padding columns of these rows:
    the prompt's leading ones and the completion's trailing ones (at least one completion column)."""
    prompt_mask = attention_mask[:, :prompt_width]
    lead = int((prompt_mask.sum(0) == 0).long().cumprod(0).sum())  # all-pad columns on the left
    c_len = int(completion_mask.sum(-1).max()) if completion_mask.numel() else 0
    end = prompt_width + max(c_len, 1)
    return (input_ids[:, lead:end], attention_mask[:, lead:end], completion_mask[:, :max(c_len, 1)],
            prompt_width - lead)
