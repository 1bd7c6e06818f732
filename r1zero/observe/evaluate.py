"""Evaluation: greedy pass@1, and mean@K / pass@K when sampling K answers per problem.

Used by the trainer (before, during and after training) and by ``r1zero eval`` / ``r1zero compare``,
which take their settings from the run a checkpoint belongs to (r1zero.observe.eval_settings) so
that they ask and score exactly what the run's own evaluation did: all three build theirs from a
config with ``build_evaluation``.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping

import torch

from r1zero.data.split import load_data
from r1zero.errors import need
from r1zero.model_setup import Generator
from r1zero.observe import metrics as metric_names
from r1zero.rewards.scoring import RewardScorer, evaluation_scorer
from r1zero.rollout.sampling import encode_prompts, generate
from r1zero.tasks import build_task


@torch.no_grad()
def evaluate(model, tokenizer, task, rows: list[dict], *, eos_ids: list[int], max_new_tokens: int,
             samples: int = 1, temperature: float = 1.0, top_p: float = 1.0, batch_size: int = 64,
             seed: int = 0, max_prompt_length: int | None = None, autocast_dtype=None,
             scorer: RewardScorer | None = None, no_think: bool = False) -> tuple[dict[str, Any], list[dict]]:
    """(summary, records). summary: accuracy (greedy pass@1), format_rate, mean_reward,
    mean_length, truncated_rate, n; with samples > 1 also mean@K and pass@K; with ``no_think``
    (and a task whose template has a think part) also accuracy_no_think and format_rate_no_think,
    the greedy answers with the thinking taken away (``no_think_pass``). ``scorer``: what scores
    (r1zero.rewards.scoring.evaluation_scorer(cfg, task)); default: the task's scheme."""
    scorer = scorer or RewardScorer(task)
    texts, ids = encode_prompts(task, tokenizer, rows, max_prompt_length)
    # The static cache (CUDA) at one length for every evaluation: one compiled shape.
    cache_len = (max_prompt_length or 0) + max_new_tokens
    gen = {"max_new_tokens": max_new_tokens, "eos_ids": eos_ids, "batch_size": batch_size,
           "autocast_dtype": autocast_dtype, "max_cache_len": cache_len}
    greedy = generate(model, tokenizer, ids, num_generations=1, temperature=0.0, **gen)
    scores = _score(scorer, greedy, rows, texts)
    n = len(rows)
    summary: dict[str, Any] = {
        metric_names.EVAL_ROWS: n,
        metric_names.ACCURACY: sum(scores.correct) / n,
        metric_names.FORMAT_RATE: sum(scores.formatted) / n,
        metric_names.EVAL_MEAN_REWARD: sum(scores.rewards) / n,
        metric_names.EVAL_MEAN_LENGTH: float(greedy.lengths.float().mean()),
        metric_names.EVAL_TRUNCATED: float(greedy.truncated.float().mean()),
    }
    records = [
        {"prompt": texts[i], "completion": greedy.completions[i], "reward": scores.rewards[i],
         "correct": scores.correct[i], "formatted": scores.formatted[i],
         "parts": {k: v[i] for k, v in scores.parts.items()}}
        for i in range(n)
    ]
    if no_think and task.no_think_prefill() is not None:
        summary.update(no_think_pass(model, tokenizer, task, scorer, rows, texts, records,
                                     max_prompt_length=max_prompt_length, seed=seed, **gen))
    if samples > 1:
        sampled = generate(model, tokenizer, ids, num_generations=samples, temperature=temperature, top_p=top_p,
                           seed=seed, **gen)
        s = _score(scorer, sampled, [ex for ex in rows for _ in range(samples)],
                   [t for t in texts for _ in range(samples)])
        per_problem = [s.correct[i * samples:(i + 1) * samples] for i in range(n)]
        summary[f"{metric_names.EVAL_MEAN_AT}{samples}"] = sum(sum(p) for p in per_problem) / (n * samples)
        summary[f"{metric_names.EVAL_PASS_AT}{samples}"] = sum(any(p) for p in per_problem) / n
    return summary, records


def no_think_pass(model, tokenizer, task, scorer: RewardScorer, rows: list[dict], texts: list[str],
                  records: list[dict], *, max_prompt_length: int | None, seed: int, **gen) -> dict[str, float]:
    """The evaluation asked again with the thinking taken away ("does the thinking matter?"): the same
    rows answered greedily with the think part closed empty and the answer opened in the prompt (``task.no_think_prefill()``; its tokens count toward
    ``max_prompt_length``). Each answer is scored as prefill + generated text, since the scheme
    judges the whole assistant turn; the records get ``completion_no_think`` (the generated text),
    ``reward_no_think``, ``correct_no_think`` and ``formatted_no_think``. Returns accuracy_no_think
    and format_rate_no_think."""
    prefill = task.no_think_prefill()
    _, ids = encode_prompts(task, tokenizer, rows, max_prompt_length, suffix=prefill)
    # Greedy: the key is unused, given so that this pass draws nothing from the global RNG.
    roll = generate(model, tokenizer, ids, num_generations=1, temperature=0.0, seed=seed, **gen)
    s = _score(scorer, roll, rows, texts, prefix=prefill)
    for i, rec in enumerate(records):
        rec.update(completion_no_think=roll.completions[i], reward_no_think=s.rewards[i], correct_no_think=s.correct[i],
                   formatted_no_think=s.formatted[i])
    n = len(rows)
    return {metric_names.ACCURACY_NO_THINK: sum(s.correct) / n, metric_names.FORMAT_RATE_NO_THINK: sum(s.formatted) / n}


def _score(scorer: RewardScorer, roll, examples: list[dict], prompts: list[str], prefix: str = ""):
    """The rollout's completions scored as training scores them (no trainer_state: not training).
    ``prefix``: text at the end of each prompt that the scorer sees as the completion's start (the
    no-think prefill: the model wrote none of it, but the scheme judges the whole assistant turn)."""
    return scorer([prefix + c for c in roll.completions], examples, prompts, roll.lengths.tolist(),
                  roll.truncated.tolist(), roll.completion_id_lists)


@dataclass
class Evaluation:
    """What an evaluation asks, how it scores and how long it generates, from a config: the task, its
    held-out rows (the first ``limit`` of them are asked; None or 0: all) and the scorer the run's
    evaluation scores with (r1zero.rewards.scoring.evaluation_scorer). ``no_think``: also ask with
    the thinking taken away (``no_think_pass``; only for a task whose template has a think part)."""

    task: Any  # r1zero.tasks.Task
    scorer: RewardScorer
    test_rows: list[dict]
    limit: int | None
    max_new_tokens: int
    batch_size: int
    max_prompt_length: int | None
    no_think: bool = False

    @property
    def rows(self) -> list[dict]:
        return self.test_rows[:self.limit] if self.limit else self.test_rows

    def check_prompts(self, tokenizer) -> None:
        """Refuse a prompt of the asked rows that does not fit ``max_prompt_length`` (before a model loads),
        with the no-think prefill too when that pass runs."""
        encode_prompts(self.task, tokenizer, self.rows, self.max_prompt_length)
        if self.no_think:
            encode_prompts(self.task, tokenizer, self.rows, self.max_prompt_length, suffix=self.task.no_think_prefill())

    def run(self, gen: Generator, rows: list[dict] | None = None, *, samples: int = 1, temperature: float = 1.0,
            top_p: float = 1.0, seed: int = 0) -> tuple[dict[str, Any], list[dict]]:
        """``evaluate`` of ``gen`` on ``rows`` (default: the asked rows) with this evaluation's settings."""
        return evaluate(gen.model, gen.tokenizer, self.task, self.rows if rows is None else rows, eos_ids=gen.eos_ids,
                        max_new_tokens=self.max_new_tokens, samples=samples, temperature=temperature, top_p=top_p,
                        batch_size=self.batch_size, seed=seed, max_prompt_length=self.max_prompt_length,
                        autocast_dtype=gen.autocast_dtype, scorer=self.scorer, no_think=self.no_think)

    def close(self) -> None:
        """End the scorer's reward workers."""
        self.scorer.close()


def build_evaluation(cfg, task=None, test_rows: list[dict] | None = None, *, limit: int | None = None,
                     callables: Mapping[str, Any] | None = None) -> Evaluation:
    """The Evaluation a config (r1zero.config.TrainConfig) asks for: its task (default: built from
    ``cfg``), the held-out rows (default: loaded as the run's data split cuts them), the first
    ``limit`` of them (default: ``eval_limit``), scored as the run's evaluation scores (``callables``:
    reward functions given as objects, r1zero.trl) and generated as long as it generates; asked again
    without the thinking as ``eval_no_think`` says (refused, in one line, for a template without a
    think part)."""
    task = build_task(cfg) if task is None else task
    no_think = no_think_setting(cfg, task)
    scorer = evaluation_scorer(cfg, task, callables=callables)
    if test_rows is None:
        _, test_rows = load_data(task, cfg)
    return Evaluation(task, scorer, test_rows, cfg.eval_limit if limit is None else limit,
                      cfg.eval_max_completion_length or cfg.max_completion_length, cfg.sampling_batch_size or 64,
                      cfg.max_prompt_length, no_think)


def no_think_setting(cfg, task) -> bool:
    """``eval_no_think`` for ``task``: None (auto) is on when its template has a think part; true
    for a template without one is refused (there is no thinking to take away)."""
    has_think = task.no_think_prefill() is not None
    need(not cfg.eval_no_think or has_think, "eval_no_think",
         f"is true, but template '{task.template}' of task '{task.name}' has no think part to take away; "
         "remove it, or use a template whose completions think in <think> </think> (countdown: chat-think)")
    return has_think if cfg.eval_no_think is None else cfg.eval_no_think


def merge_summaries(summaries: list[dict[str, Any]]) -> dict[str, Any]:
    """One evaluation summary from several processes' (each a mean over its ``n`` rows): n-weighted means."""
    n = sum(s.get(metric_names.EVAL_ROWS, 0) for s in summaries)
    out: dict[str, Any] = {metric_names.EVAL_ROWS: n}
    for key in (k for s in summaries if s.get(metric_names.EVAL_ROWS) for k in s):
        if key != metric_names.EVAL_ROWS and key not in out:
            out[key] = sum(s[key] * s[metric_names.EVAL_ROWS] for s in summaries if s.get(metric_names.EVAL_ROWS)) / max(n, 1)
    return out


def format_summary(summary: dict) -> str:
    return ", ".join(f"{k}={v:.3f}" if isinstance(v, float) else f"{k}={v}" for k, v in summary.items())
