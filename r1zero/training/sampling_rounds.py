"""Drawing a step's prompts and sampling them, with DAPO's dynamic sampling (``dynamic_sampling``).

Plain: one draw of ``prompts_per_step`` prompts; each rank samples and scores its share
(r1zero.training.distributed.prompt_share) and trains on it.

Dynamic sampling (Yu et al., 2025, DAPO; veRL's ``filter_groups``): a group whose rewards are all
equal (the raw reward, before any advantage) has zero advantage and no gradient, so it is dropped.
While fewer than ``prompts_per_step`` groups with a spread are kept and fewer than
``max_sampling_rounds`` rounds were drawn, another round of ``prompts_per_step`` prompts is drawn
(the data position advances by every prompt drawn, so a resume continues exactly where the
uninterrupted run did) and sampled. Round r's prompts take sampling keys ``r * prompts_per_step +
i``, so every prompt of a step has its own key, and a round's samples do not depend on the number
of processes. The kept groups in draw order (round, then position) make the step's batch; those
beyond ``prompts_per_step`` are not trained on (veRL does the same) and are counted as surplus.
When the rounds run out first, the step trains on the groups it has, rounded down to a multiple of
the process count so every rank holds an equal share (the last mini-batch is then a smaller one),
and logs the shortfall; with none left, the step makes no update. Rewards are gathered on every
rank, so every rank keeps the same groups and draws the same number of rounds. Each kept group is
then handed to the rank that trains it (an all-gather of the round's rollouts).

``sampling_rounds_per_batch`` (k > 1): k rounds' prompts are drawn and sampled in one batch (k x
the rows per decode step: where decoding is overhead-bound, as on a CPU, a step of more rows costs
less than its share of the rows; and a round that is not needed costs its rows), then scored and
judged one round at a time exactly as above. A round that turns out not to be needed is thrown
away unscored, and the data position is the one after the last round used, so the step, its
metrics and the next step's prompts are those of one round at a time: the rows keep their
sampling keys (round r, prompt i: ``r * prompts_per_step + i``), which is all the counter-based
sampler draws from. What can differ is the last bit of a logit (a matrix product
of more rows may sum in another order), which a near tie can turn into another token.

The step's metrics describe every completion sampled in the rounds used; ``samples.jsonl`` and the
loss see only the trained groups. ``max_steps`` (or ``num_train_epochs``, which counts steps of
``prompts_per_step`` prompts) still counts steps, so extra rounds move through the data faster.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Callable

import torch

from r1zero.data.split import DataPosition, draw_batch
from r1zero.observe import metrics as metric_names
from r1zero.rewards.scoring import BatchScores
from r1zero.rollout.sampling import Rollout
from r1zero.training import distributed as dist
from r1zero.training.samples import StepSamples

log = logging.getLogger("r1zero")

# (data rows of this rank's prompts, their sampling keys) -> (prompts, examples, rollout)
SampleFn = Callable[[list[int], list[int]], tuple[list[str], list[dict], Rollout]]
# (prompts, examples, rollout) -> their scores
ScoreFn = Callable[[list[str], list[dict], Rollout], BatchScores]


@dataclass
class SampledRound:
    prompts: list[str]        # this rank's share of the round's prompts
    examples: list[dict]
    rollout: Rollout          # their G rows each
    pos: DataPosition         # the data position after the round's draw


@dataclass
class StepDraw:
    my_prompts: list[int]     # this rank's prompts, by index in the trained batch
    my_rollout: Rollout       # this rank's rows of the trained batch
    samples: StepSamples      # the trained batch, every rank's rows in global order
    all_sampled: StepSamples  # every completion sampled in the step (all rounds): metrics and reward health
    pos: DataPosition         # the data position after every draw of the step
    metrics: dict


def sample_rounds(cfg, share: list[int], pos: DataPosition, n_rows: int, pad_id: int, first: int, k: int,
                  sample: SampleFn) -> list[SampledRound]:
    """Rounds ``first`` .. ``first + k - 1``: drawn one after the other from ``pos``, sampled in one batch."""
    P, G = cfg.prompts_per_step, cfg.num_generations
    draws = []
    for _ in range(k):
        idx, pos = draw_batch(n_rows, pos, P, cfg.seed)
        draws.append((idx, pos))
    prompts, examples, rollout = sample([idx[i] for idx, _ in draws for i in share],
                                        [(first + j) * P + i for j in range(k) for i in share])
    if k == 1:
        return [SampledRound(prompts, examples, rollout, draws[0][1])]
    n = len(share)
    return [SampledRound(prompts[j * n:(j + 1) * n], examples[j * n:(j + 1) * n],
                         merge_rows([(rollout, list(range(j * n * G, (j + 1) * n * G)))], pad_id), draws[j][1])
            for j in range(k)]


def draw_step(cfg, env: dist.DistEnv, pos: DataPosition, n_rows: int, pad_id: int,
              sample: SampleFn, score: ScoreFn) -> StepDraw:
    """The step's prompts, sampled and scored (see the module docstring)."""
    P, G = cfg.prompts_per_step, cfg.num_generations
    mini = cfg.mini_batch_prompts or P
    share = dist.prompt_share(P, mini, env)
    rounds: list[tuple[StepSamples, list]] = []
    kept: list[tuple[int, int]] = []  # (round, prompt) of every group with a spread, in draw order
    n_rounds = cfg.max_sampling_rounds if cfg.dynamic_sampling else 1
    sampled: list[SampledRound] = []  # rounds sampled ahead and not yet scored
    for r in range(n_rounds):
        if not sampled:
            k = min(cfg.sampling_rounds_per_batch, n_rounds - r)  # 1 without dynamic sampling (n_rounds 1)
            sampled = sample_rounds(cfg, share, pos, n_rows, pad_id, r, k, sample)
        this = sampled.pop(0)
        prompts, examples, rollout, pos = this.prompts, this.examples, this.rollout, this.pos
        scores = score(prompts, examples, rollout)
        samples = StepSamples.gather(share, prompts, examples, rollout, scores, env)
        if not cfg.dynamic_sampling:
            return StepDraw(my_prompts=share, my_rollout=rollout, samples=samples, all_sampled=samples, pos=pos, metrics={})
        rounds.append((samples, dist.gather((share, rollout), env)))
        rewards = torch.tensor(samples.scores.rewards, dtype=torch.float64).view(P, G)
        kept += [(r, int(i)) for i in torch.nonzero(rewards.amax(1) != rewards.amin(1)).flatten()]
        if len(kept) >= P:
            break
    n = min(len(kept), P)
    if n < P:
        n -= n % env.world_size
    chosen = kept[:n]
    if n < P and env.is_main:
        log.warning("dynamic sampling: %d of %d groups have a reward spread after %d rounds; the step trains on %d",
                    len(kept), P, len(rounds), n)
    all_sampled = select_with_errors([s for s, _ in rounds], [(r, i) for r in range(len(rounds)) for i in range(P)], G)
    metrics = {metric_names.DS_ROUNDS: len(rounds), metric_names.DS_DROPPED: len(rounds) * P - len(kept),
               metric_names.DS_SHORTFALL: P - n, metric_names.DS_SURPLUS: len(kept) - n}
    my_prompts = dist.prompt_share(n, mini, env)
    if chosen == [(0, i) for i in range(P)]:  # nothing dropped in round 1: what the plain step trains
        return StepDraw(my_prompts=my_prompts, my_rollout=rounds[0][1][env.rank][1], samples=rounds[0][0],
                        all_sampled=all_sampled, pos=pos, metrics=metrics)
    pieces = []
    for f in my_prompts:
        r, i = chosen[f]
        for rank_share, rollout in rounds[r][1]:
            if i in rank_share:
                j = rank_share.index(i)
                pieces.append((rollout, list(range(j * G, (j + 1) * G))))
    return StepDraw(my_prompts=my_prompts, my_rollout=merge_rows(pieces, pad_id),
                    samples=select([s for s, _ in rounds], chosen, G), all_sampled=all_sampled, pos=pos, metrics=metrics)


def select_with_errors(parts: list[StepSamples], picks: list[tuple[int, int]], G: int) -> StepSamples:
    """``select``, and the parts' reward-error counts summed (every group drawn, for the reward health check)."""
    selected = select(parts, picks, G)
    selected.scores.add_errors([s.scores for s in parts])
    return selected


def select(parts: list[StepSamples], picks: list[tuple[int, int]], G: int) -> StepSamples:
    """The groups ``picks`` ((part, prompt) pairs) of ``parts`` as one StepSamples, in that order,
    without the parts' reward-error counts (``select_with_errors`` sums them)."""
    rows = [(r, i * G + g) for r, i in picks for g in range(G)]

    def per_row(get):
        return [get(parts[r])[j] for r, j in rows]

    scores = BatchScores.concat([s.scores for s in parts], rows)
    return StepSamples([parts[r].prompts[i] for r, i in picks], [parts[r].examples[i] for r, i in picks],
                       per_row(lambda s: s.completions),
                       torch.tensor(per_row(lambda s: s.lengths.tolist()), dtype=torch.long),
                       torch.tensor(per_row(lambda s: s.truncated.tolist()), dtype=torch.bool), scores)


def merge_rows(pieces: list[tuple[Rollout, list[int]]], pad_id: int) -> Rollout:
    """One Rollout of the given rows of several rollouts, re-padded to the widest prompt (left) and
    completion (right) among them."""
    rows = [(rollout, j) for rollout, js in pieces for j in js]
    P = max((int(rollout.prompt_mask[j].sum()) for rollout, j in rows), default=0)
    C = max((int(rollout.completion_mask[j].sum()) for rollout, j in rows), default=0)
    n = len(rows)
    p_ids, p_mask = torch.full((n, P), pad_id, dtype=torch.long), torch.zeros((n, P), dtype=torch.long)
    c_ids, c_mask = torch.full((n, C), pad_id, dtype=torch.long), torch.zeros((n, C), dtype=torch.long)
    with_lp = bool(rows) and all(rollout.sampled_logprobs is not None for rollout, _ in rows)
    c_lp = torch.zeros((n, C), dtype=torch.float32) if with_lp else None
    for k, (rollout, j) in enumerate(rows):
        w = min(P, rollout.prompt_ids.shape[1])
        if w:
            p_ids[k, P - w:], p_mask[k, P - w:] = rollout.prompt_ids[j, -w:], rollout.prompt_mask[j, -w:]
        w = min(C, rollout.completion_ids.shape[1])
        c_ids[k, :w], c_mask[k, :w] = rollout.completion_ids[j, :w], rollout.completion_mask[j, :w]
        if with_lp:
            c_lp[k, :w] = rollout.sampled_logprobs[j, :w]
    truncated = torch.tensor([bool(rollout.truncated[j]) for rollout, j in rows], dtype=torch.bool)
    return Rollout(p_ids, p_mask, c_ids, c_mask, truncated, [rollout.completions[j] for rollout, j in rows], c_lp)
