"""Sampling completions: G per prompt, in batches, with r1zero's rollout engine
(r1zero.rollout.engine; transformers' ``generate`` behind the same signature, the baseline it is
compared with, is r1zero.rollout.baseline).

Prompts are left-padded so every completion starts at the same column; generate builds position
ids from the attention mask, and so does our log-prob pass (r1zero.training.logprobs), so padding never
shifts a position. Generation stops on every EOS id of the tokenizer and of the model's generation
config. A completion keeps its EOS token (the model must learn to stop) and nothing after it.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from r1zero.rollout.engine import generate_ids
from r1zero.rollout.layout import left_pad


@dataclass
class Rollout:
    """One batch of sampled completions; row i belongs to prompt i // num_generations."""

    prompt_ids: torch.Tensor        # (N, P) left-padded
    prompt_mask: torch.Tensor       # (N, P)
    completion_ids: torch.Tensor    # (N, C) right-padded
    completion_mask: torch.Tensor   # (N, C) 1 for tokens up to and including EOS
    truncated: torch.Tensor         # (N,) bool: no EOS within max_completion_length
    completions: list[str]          # decoded text (no special tokens, no EOS)
    # (N, C) float32: the sampler's log-prob of each completion token (tempered, unfiltered), 0 after
    # EOS; None from transformers' generate and for greedy decoding.
    sampled_logprobs: torch.Tensor | None = None

    @property
    def input_ids(self) -> torch.Tensor:
        return torch.cat([self.prompt_ids, self.completion_ids], dim=1)

    @property
    def attention_mask(self) -> torch.Tensor:
        return torch.cat([self.prompt_mask, self.completion_mask], dim=1)

    @property
    def lengths(self) -> torch.Tensor:
        return self.completion_mask.sum(-1)

    @property
    def completion_id_lists(self) -> list[list[int]]:
        """Each completion's sampled token ids up to and including its EOS (TRL's ``completion_ids``)."""
        return [row[:int(n)].tolist() for row, n in zip(self.completion_ids, self.lengths)]

    def select(self, rows) -> "Rollout":
        return Rollout(self.prompt_ids[rows], self.prompt_mask[rows], self.completion_ids[rows],
                       self.completion_mask[rows], self.truncated[rows], [self.completions[i] for i in rows],
                       None if self.sampled_logprobs is None else self.sampled_logprobs[rows])


def tokenize_prompts(tokenizer, prompts: list[str], add_special_tokens: bool) -> list[list[int]]:
    return [tokenizer(p, add_special_tokens=add_special_tokens).input_ids for p in prompts]


def completion_mask_from_ids(completion_ids: torch.Tensor, eos_ids: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
    """(mask, truncated): mask is 1 up to and including the first EOS; rows with no EOS keep all."""
    is_eos = torch.isin(completion_ids, torch.tensor(eos_ids, device=completion_ids.device))
    C = completion_ids.shape[1]
    has_eos = is_eos.any(-1)
    first = torch.where(has_eos, is_eos.float().argmax(-1), torch.full_like(has_eos, C, dtype=torch.long))
    cols = torch.arange(C, device=completion_ids.device).unsqueeze(0)
    mask = (cols <= first.unsqueeze(1)).long()
    mask[~has_eos] = 1
    return mask, ~has_eos


@torch.no_grad()
def generate(model, tokenizer, prompt_ids: list[list[int]], *, num_generations: int, max_new_tokens: int,
             eos_ids: list[int], temperature: float = 1.0, top_p: float = 1.0, top_k: int = 0,
             batch_size: int | None = None, seed: int | None = None, autocast_dtype=None,
             cache: str = "auto", prompt_index: list[int] | None = None,
             max_cache_len: int | None = None, lean: bool | None = None) -> Rollout:
    """Sample ``num_generations`` completions for each tokenized prompt (groups stay contiguous).

    ``temperature == 0`` means greedy decoding. ``seed`` makes the draw reproducible without
    touching the global random state (the trainer seeds each step, so a resumed run draws the same
    samples as an uninterrupted one). The engine is r1zero.rollout.engine (shared prompt prefill,
    finished rows leave the batch, counter-based sampling keyed by (seed, prompt index, sample
    index), so samples do not depend on ``batch_size``); its greedy output is transformers'
    ``generate``'s (r1zero.rollout.baseline) token for token.
    ``cache``: "dynamic", "static" (fixed shapes, CUDA graphs on GPU) or "auto" (static on CUDA).
    ``prompt_index``: the prompts' indices in the sampling key (r1zero.rollout.engine.generate_ids).
    ``max_cache_len``: the static cache's length at least (the run's prompt + completion length).
    ``lean``: the dynamic cache decodes with r1zero.rollout.lean_decode (generate_ids says when by default).
    The sampler's log-probs come back too when sampling (``Rollout.sampled_logprobs``). Only ids
    the tokenizer has are sampled (a model's embedding may be padded beyond it).
    """
    pad_id = tokenizer.pad_token_id
    device = next(model.parameters()).device
    ids, mask = left_pad([p for p in prompt_ids for _ in range(num_generations)], pad_id)
    if seed is None:  # unseeded: draw the key from the global RNG, as generate would
        seed = int(torch.randint(0, 2**62, (1,)))
    if cache == "auto":
        cache = "static" if device.type == "cuda" else "dynamic"
    sampled = temperature > 0
    result = generate_ids(
        model, prompt_ids, num_generations=num_generations, max_new_tokens=max_new_tokens, eos_ids=eos_ids,
        pad_id=pad_id, temperature=temperature, top_p=top_p, top_k=top_k, batch_size=batch_size, seed=seed,
        autocast_dtype=autocast_dtype, cache=cache, prompt_index=prompt_index, vocab_size=len(tokenizer),
        max_cache_len=max_cache_len, with_logprobs=sampled, lean=lean)
    completion_ids, logprobs = result if sampled else (result, None)
    return finish_rollout(tokenizer, ids, mask, completion_ids, eos_ids, pad_id, logprobs)


def finish_rollout(tokenizer, ids, mask, completion_ids, eos_ids, pad_id, logprobs=None) -> Rollout:
    """The Rollout of sampled ``completion_ids``: cut after each row's first EOS, padded, decoded."""
    n = completion_ids.shape[0]
    cmask, truncated = completion_mask_from_ids(completion_ids, eos_ids)
    completion_ids = completion_ids.masked_fill(cmask == 0, pad_id)
    if logprobs is not None:
        logprobs = logprobs.masked_fill(cmask == 0, 0.0)
    # Text for the scorers: everything before EOS, special tokens dropped.
    text_lens = cmask.sum(-1) - (~truncated).long()
    completions = tokenizer.batch_decode([completion_ids[i, :int(text_lens[i])].tolist() for i in range(n)],
                                         skip_special_tokens=True)
    return Rollout(ids, mask, completion_ids, cmask, truncated, completions, logprobs)


class PromptTooLong(ValueError):
    pass


def encode_prompts(task, tokenizer, examples, max_prompt_length: int | None = None,
                   suffix: str = "") -> tuple[list[str], list[list[int]]]:
    """Render each example with the task's template and tokenize it.

    Chat-rendered prompts already hold their special tokens, so nothing is added; raw-text
    templates get the tokenizer's usual BOS (none for Qwen). A prompt longer than
    ``max_prompt_length`` is refused, not silently cut (a cut prompt is a different problem).
    ``suffix`` is appended to each rendered prompt before it is tokenized, and counts toward
    ``max_prompt_length`` (the no-think evaluation's prefill, Task.no_think_prefill); the texts
    returned are the rendered prompts without it.
    """
    texts = [task.render_prompt(ex, tokenizer) for ex in examples]
    ids = tokenize_prompts(tokenizer, [t + suffix for t in texts], add_special_tokens=not task.prompt_is_chat)
    if max_prompt_length is not None:
        for i, seq in enumerate(ids):
            if len(seq) > max_prompt_length:
                raise PromptTooLong(
                    f"max_prompt_length: a prompt has {len(seq)} tokens (> {max_prompt_length})"
                    f"{f' with {suffix!r} appended' if suffix else ''}; "
                    f"raise max_prompt_length or shorten the data (first words: {texts[i][:60]!r})"
                )
    return texts, ids
