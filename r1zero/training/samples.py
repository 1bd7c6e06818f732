"""A step's samples: every completion with its scores, gathered from every process, this process's
RolloutBatch of them, and the share of them written to samples.jsonl."""
from __future__ import annotations

import random
from dataclasses import dataclass

import torch

from r1zero.algorithms.base import RolloutBatch
from r1zero.rewards.scoring import BatchScores
from r1zero.rollout.sampling import Rollout
from r1zero.training import distributed as dist


@dataclass
class StepSamples:
    """Every completion of a step, in the global batch's order (row i belongs to prompt i // G).
    Under torchrun each rank's share is gathered, so every rank holds the whole step."""

    prompts: list[str]        # one per prompt
    examples: list[dict]      # one per prompt
    completions: list[str]
    lengths: torch.Tensor     # (N,) completion tokens, EOS included
    truncated: torch.Tensor   # (N,) bool
    scores: BatchScores

    @classmethod
    def gather(cls, my_prompts: list[int], prompts, examples, rollout: Rollout, scores: BatchScores,
               env: dist.DistEnv) -> "StepSamples":
        """The whole step from every rank's share; ``my_prompts`` holds the global indices of this rank's
        prompts (in one process: all of them, in order, and nothing is communicated)."""
        local = dict(index=my_prompts, prompts=prompts, examples=examples, completions=rollout.completions,
                     lengths=rollout.lengths.tolist(), truncated=rollout.truncated.tolist(), scores=scores)
        shares = dist.gather(local, env)
        G = len(rollout.completions) // max(len(my_prompts), 1)
        # (rank, position in its share) of every prompt, in global order, then of every completion.
        where = [rp for _, rp in sorted((p, (r, i)) for r, sh in enumerate(shares) for i, p in enumerate(sh["index"]))]
        rows = [(r, i * G + g) for r, i in where for g in range(G)]

        def per_prompt(key):
            return [shares[r][key][i] for r, i in where]

        def per_row(get):
            return [get(shares[r])[j] for r, j in rows]

        merged = BatchScores.concat([sh["scores"] for sh in shares], rows)
        merged.add_errors([sh["scores"] for sh in shares])
        return cls(per_prompt("prompts"), per_prompt("examples"), per_row(lambda sh: sh["completions"]),
                   torch.tensor(per_row(lambda sh: sh["lengths"])),
                   torch.tensor(per_row(lambda sh: sh["truncated"]), dtype=torch.bool), merged)


def rollout_batch(cfg, rollout: Rollout, rewards: torch.Tensor, rows: torch.Tensor) -> RolloutBatch:
    """This process's RolloutBatch: the rollout ``rollout`` of its rows, which sit at ``rows`` of the
    step's ``rewards`` (every process's, in the step's order). The loss counts each completion's tokens
    up to its EOS, none of a truncated one with ``mask_truncated_completions``."""
    loss_mask = rollout.completion_mask.float()
    if cfg.mask_truncated_completions:
        loss_mask = loss_mask * (~rollout.truncated).float().unsqueeze(1)
    return RolloutBatch(input_ids=rollout.input_ids, attention_mask=rollout.attention_mask,
                        prompt_width=rollout.prompt_ids.shape[1], completion_mask=rollout.completion_mask,
                        loss_mask=loss_mask, rewards=rewards[rows], global_rewards=rewards, global_rows=rows,
                        group_size=cfg.num_generations, sampled_logprobs=rollout.sampled_logprobs)


def sample_rows(cfg, step: int, batch: StepSamples, advantages) -> list[dict]:
    """The ``log_completions_rate`` share of the step's completions (a seeded pick) for samples.jsonl."""
    n = len(batch.completions)
    rate = cfg.log_completions_rate
    if rate <= 0 or n == 0:  # n == 0: a dynamic-sampling step with no group left to train
        return []
    k = max(1, round(rate * n))
    picked = sorted(random.Random(cfg.seed * 7919 + step).sample(range(n), k))
    G = cfg.num_generations
    scores = batch.scores
    return [{"step": step, "prompt": batch.prompts[i // G], "completion": batch.completions[i],
             "reward": scores.rewards[i], "advantage": float(advantages[i]),
             "correct": scores.correct[i], "formatted": scores.formatted[i],
             "truncated": bool(batch.truncated[i]), "length": int(batch.lengths[i]),
             "parts": {name: vals[i] for name, vals in scores.parts.items()},
             "example": {k: v for k, v in batch.examples[i // G].items() if isinstance(v, (int, float, str, list))}}
            for i in picked]


def gather_rows(values: torch.Tensor, rows: torch.Tensor, n: int, env: dist.DistEnv) -> list[float]:
    """(n,) per-row numbers of the whole step from every process's ``values`` at its global ``rows``."""
    out = [0.0] * n
    for r, v in dist.gather((rows.tolist(), values.tolist()), env):
        for i, x in zip(r, v):
            out[i] = x
    return out
