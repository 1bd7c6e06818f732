"""transformers' ``generate`` behind the signature of r1zero.rollout.sampling.generate, returning the
same ``Rollout``: the baseline the tests (greedy output token for token) and the benchmarks (speed)
compare r1zero's engine with. Training never runs it.
"""
from __future__ import annotations

import torch

from r1zero.rollout.layout import left_pad
from r1zero.rollout.sampling import Rollout, finish_rollout


@torch.no_grad()
def hf_generate(model, tokenizer, prompt_ids: list[list[int]], *, num_generations: int, max_new_tokens: int,
                eos_ids: list[int], temperature: float = 1.0, top_p: float = 1.0, top_k: int = 0,
                batch_size: int | None = None, seed: int | None = None, autocast_dtype=None) -> Rollout:
    """``num_generations`` completions per prompt by ``model.generate``, in batches of ``batch_size``
    rows (all at once by default); ``seed`` seeds a forked global RNG. Only ids the tokenizer has
    are sampled, as by the engine (a model's embedding may be padded beyond it)."""
    pad_id = tokenizer.pad_token_id
    device = next(model.parameters()).device
    rows = [ids for ids in prompt_ids for _ in range(num_generations)]
    ids, mask = left_pad(rows, pad_id)
    n = len(rows)
    batch_size = batch_size or n
    was_training = model.training
    model.eval()
    gen_kwargs = dict(max_new_tokens=max_new_tokens, eos_token_id=eos_ids, pad_token_id=pad_id,
                      use_cache=True)
    model_vocab = model.get_output_embeddings().weight.shape[0]
    if model_vocab > len(tokenizer):  # the same ids as the r1zero engine: only the tokenizer's
        gen_kwargs["suppress_tokens"] = list(range(len(tokenizer), model_vocab))
    if temperature > 0:
        gen_kwargs.update(do_sample=True, temperature=temperature, top_p=top_p, top_k=top_k or None)
    else:
        gen_kwargs.update(do_sample=False, temperature=None, top_p=None, top_k=None)
    outs = []
    devices = [device] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        if seed is not None:
            torch.manual_seed(seed)
        for start in range(0, n, batch_size):
            b_ids = ids[start:start + batch_size].to(device)
            b_mask = mask[start:start + batch_size].to(device)
            with torch.autocast(device.type, dtype=autocast_dtype, enabled=autocast_dtype is not None):
                out = model.generate(input_ids=b_ids, attention_mask=b_mask, **gen_kwargs)
            outs.append(out[:, ids.shape[1]:].cpu())
    if was_training:
        model.train()
    width = max(o.shape[1] for o in outs)
    completion_ids = torch.full((n, width), pad_id, dtype=torch.long)
    for start, o in zip(range(0, n, batch_size), outs):
        completion_ids[start:start + o.shape[0], :o.shape[1]] = o
    return finish_rollout(tokenizer, ids, mask, completion_ids, eos_ids, pad_id)
