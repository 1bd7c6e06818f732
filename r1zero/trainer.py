"""The training loop (GRPO by default; PPO, REINFORCE++ and RLOO below).

One step, in order (each line names the module that does it):

1. data      ``prompts_per_step`` examples in a seeded order (a fresh permutation per epoch, keyed by
             ``seed`` and the epoch; the position is part of every checkpoint).
2. prompt    the task renders each example (r1zero.tasks) and the tokenizer encodes it; prompts
             longer than ``max_prompt_length`` are refused, never cut.
3. rollout   ``num_generations`` completions per prompt (r1zero.rollout), sampled with
             ``temperature``/``top_p``/``top_k``, stopping on every EOS id of the tokenizer and of
             the generation config; the draw is seeded by (seed, step), so a resumed run samples
             exactly what the uninterrupted run did. The engine (r1zero.rollout_engine) prefills
             each prompt once for its G samples, drops finished rows, and keys each sample's
             randomness by (seed, step, prompt index, sample index): ``generation_batch_size``
             changes memory, never the samples.
4. reward    the task's scheme plus the user's ``reward_funcs`` (r1zero.rewards); a scorer that
             fails gives 0 for that sample and is counted.
5. advantage reward minus its group's mean, divided by the group std (Bessel) + 1e-4, the batch
             std, or nothing (``scale_rewards``); one advantage for every token of a completion
             (r1zero.grpo.group_advantages).
6. update    for ``num_iterations`` passes, the step's rollouts are cut into mini-batches of
             ``mini_batch_prompts`` prompts (whole groups), one AdamW update each, accumulated over
             micro-batches of ``per_device_train_batch_size`` sequences. Per token: ratio =
             pi/pi_old, clipped to [1 - epsilon, 1 + epsilon_high], loss = -min(ratio*A,
             clip(ratio)*A) + beta * KL(pi || pi_ref) with the k1/k2/k3 estimator; reduced by
             ``loss_type`` (r1zero.grpo.policy_loss). Micro-batch losses are scaled so that the
             accumulated gradient equals the gradient of the whole mini-batch's loss (dapo divides
             by the mini-batch's token count directly). pi_old is the policy that sampled: when
             there is a single update per step its log-probs equal the current ones, so they are
             the current log-probs detached and no extra forward pass is spent; otherwise they are
             computed once, without gradients, before the first update. The reference model (a
             frozen copy of the starting weights) is loaded only when ``beta > 0``. Log-probs use
             temperature-scaled logits and are computed in chunks (r1zero.logprobs), each group's
             prompt run once for its G completions (shared KV cache, same values and gradients);
             ``ref_model_offload`` keeps the reference weights on the CPU between uses. Gradients
             are clipped to ``max_grad_norm``; the learning rate follows ``lr_scheduler_type``
             with linear warmup over ``warmup_ratio`` of the steps, one scheduler step per training
             step.
7. log       metrics.jsonl / tensorboard / wandb / swanlab (r1zero.tracking), a share of the
             completions to samples.jsonl, evaluation every ``eval_steps``, checkpoints every
             ``save_steps`` (r1zero.checkpoint) with at most ``save_total_limit`` kept.

Several processes (``torchrun``, r1zero.distributed): every rank draws the same prompts and keeps an
equal contiguous piece of each mini-batch (so its groups stay whole); samples are keyed by the
prompt's index in the global batch, so they do not depend on the process count; rewards are
gathered before the advantages and metrics; each rank back-propagates world_size x its share of the
global loss (dapo: over the global token count) and DDP or FSDP2 averages the gradients; rank 0
writes the files, every rank writes its optimizer shards into the checkpoint.

Other algorithms (``algorithm``; r1zero.ppo runs their update, steps 5-6, with the same clipped
loss, now per token; PPO epochs and mini-batches are ``num_iterations`` and ``mini_batch_prompts``):

ppo          a critic (the policy's architecture + scalar value head, from
             ``critic_model_name_or_path``, default the policy's model) values the state before each
             completion token; per-token rewards are the outcome reward on the last token minus
             ``kl_coef`` x k1 KL (logp_old - logp_ref, fixed or adaptive ``kl_ctl``) on every token;
             GAE (``gamma``, ``lam``) gives advantages, whitened over the batch's tokens, and returns;
             the critic regresses on the returns (value loss clipped by ``cliprange_value``, its own
             AdamW at ``critic_learning_rate``; alone for the first ``critic_warmup_steps`` steps).
             The critic and its optimizer are saved in every checkpoint (``critic/``).
reinforce_pp REINFORCE++: the same per-token rewards, summed to the end of each completion with
             ``gamma``, whitened over the batch's tokens; no critic.
rloo         leave-one-out: reward minus kl_coef x summed k1 KL, minus the mean of the other
             completions of the same prompt (TRL's RLOO baseline).
All three subtract ``entropy_coeff`` x the mean token entropy from the loss, and always compute
pi_old with an extra forward pass (the reward KL needs it before the update).

A logged loss of exactly 0 at the start is expected: the ratio is 1 and advantages are centred
in each group, so the per-sequence terms cancel while the gradient does not. A step where every
group had equal rewards has zero advantage and zero gradient: ``frac_reward_zero_std`` shows how
often that happens.
"""
from __future__ import annotations

import contextlib
import logging
import math
import random
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from r1zero import checkpoint as ckpt
from r1zero import distributed as dist
from r1zero import faults
from r1zero.config import ConfigError, TrainConfig, save_config
from r1zero.data import DataError, has_split
from r1zero.evaluate import evaluate
from r1zero.guards import RunHealth, check_output_dir
from r1zero.grpo import group_advantages, group_stats, policy_loss
from r1zero.logprobs import CompletionLogprobs
from r1zero.models import choose_device, eos_token_ids, load_model, load_tokenizer, use_bf16
from r1zero.ppo import PPOFamily
from r1zero.rewards import BatchScores, RewardModel
from r1zero.rollout import Rollout, encode_prompts, generate
from r1zero.tasks import Task, TaskError, get_task
from r1zero.tracking import Tracker, check_trackers

log = logging.getLogger("r1zero")


# ---------------------------------------------------------------------------------------------
# Data: train/test rows and a resumable, seeded order.

def build_task(cfg: TrainConfig) -> Task:
    return get_task(cfg.task, reward=None if cfg.reward == "none" else cfg.reward, template=cfg.template,
                    **cfg.task_args)


def load_data(task: Task, cfg: TrainConfig) -> tuple[list[dict], list[dict]]:
    """(train rows, test rows) as the config's split rules say (see the dataset_* / *_size keys)."""
    src = cfg.dataset_name
    rows = task.load_split(cfg.dataset_train_split, source=src, config=cfg.dataset_config)
    if not rows:  # said now: the test-split arithmetic below would blame test_size
        raise DataError(f"dataset_name: {src or 'the generated data'} has no rows for split "
                        f"'{cfg.dataset_train_split}'; give a file with rows or check dataset_train_split")
    test: list[dict] | None = None
    if src is None or has_split(src, cfg.dataset_test_split, cfg.dataset_config):
        try:
            test = task.load_split(cfg.dataset_test_split, source=src, config=cfg.dataset_config)
        except DataError:
            test = None  # e.g. a hub dataset with only a train split: cut test rows from it below
    if cfg.data_shuffle_seed is not None:
        rows = rows[:]
        random.Random(cfg.data_shuffle_seed).shuffle(rows)
    if cfg.data_max_rows is not None:
        rows = rows[:cfg.data_max_rows]
    if test is None:
        n_test = 1024 if cfg.test_size is None else _count(cfg.test_size, len(rows))
        n_train = cfg.train_size or len(rows) - n_test
        if n_train < 1:
            raise DataError(f"dataset_name: {len(rows)} rows leave no train rows after {n_test} test rows; lower test_size")
        test = rows[n_train:n_train + n_test]
        rows = rows[:n_train]
    else:
        if cfg.train_size is not None:
            rows = rows[:cfg.train_size]
        if cfg.test_size is not None:
            test = test[:_count(cfg.test_size, len(test))]
    if not rows:
        raise DataError(f"dataset_name: no train rows in {src or 'the generated data'}; check the file and dataset_train_split")
    return rows, test


def _count(size: float, n: int) -> int:
    """A row count from ``test_size``: a fraction (< 1) of ``n`` rows, or a number of rows."""
    return int(n * size) if size < 1 else int(size)


@dataclass
class DataPosition:
    epoch: int = 0
    offset: int = 0


def draw_batch(n_rows: int, pos: DataPosition, k: int, seed: int) -> tuple[list[int], DataPosition]:
    """Indices of the next ``k`` rows; each epoch is a fresh permutation keyed by (seed, epoch)."""
    out: list[int] = []
    epoch, offset = pos.epoch, pos.offset
    while len(out) < k:
        perm = list(range(n_rows))
        random.Random(seed * 100_003 + epoch).shuffle(perm)
        take = min(k - len(out), n_rows - offset)
        out.extend(perm[offset:offset + take])
        offset += take
        if offset >= n_rows:
            epoch, offset = epoch + 1, 0
    return out, DataPosition(epoch, offset)


# ---------------------------------------------------------------------------------------------
# Optimisation pieces.

def make_scheduler(optimizer, kind: str, total_steps: int, warmup_steps: int):
    def factor(step: int) -> float:
        if warmup_steps and step < warmup_steps:
            return (step + 1) / (warmup_steps + 1)
        if kind in ("constant", "constant_with_warmup"):
            return 1.0
        progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
        progress = min(max(progress, 0.0), 1.0)
        if kind == "linear":
            return 1.0 - progress
        return 0.5 * (1.0 + math.cos(math.pi * progress))  # cosine

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def make_optimizer(model, cfg: TrainConfig, lr: float, total_steps: int):
    """AdamW over ``model``'s trainable weights (the config's betas, eps, decay) and its schedule."""
    optimizer = torch.optim.AdamW(
        [p for p in model.parameters() if p.requires_grad], lr=lr,
        betas=(cfg.adam_beta1, cfg.adam_beta2), eps=cfg.adam_epsilon, weight_decay=cfg.weight_decay)
    warmup = int(round(cfg.warmup_ratio * total_steps))
    return optimizer, make_scheduler(optimizer, cfg.lr_scheduler_type, total_steps, warmup)


def clip_and_step(model, optimizer, max_grad_norm: float, allow) -> float:
    """Clip the gradients to ``max_grad_norm`` (when > 0), step only if ``allow(grad_norm)`` (a
    non-finite update is skipped: r1zero.guards), and return the norm before clipping."""
    params = [p for p in model.parameters() if p.grad is not None]
    # max_norm=inf clips nothing (the factor is clamped to 1) and still returns the norm; with
    # FSDP the gradients are sharded and the norm comes back sharded too, made whole here.
    gn = torch.nn.utils.clip_grad_norm_(params, max_grad_norm if max_grad_norm > 0 else math.inf)
    if hasattr(gn, "full_tensor"):
        gn = gn.full_tensor()
    if allow(gn):
        optimizer.step()
    return float(gn)


def _trim(input_ids, attention_mask, completion_mask, prompt_width):
    """Drop columns that are padding in every row of a micro-batch (saves compute, same values)."""
    prompt_mask = attention_mask[:, :prompt_width]
    lead = int((prompt_mask.sum(0) == 0).long().cumprod(0).sum())  # all-pad columns on the left
    c_len = int(completion_mask.sum(-1).max()) if completion_mask.numel() else 0
    end = prompt_width + max(c_len, 1)
    return (input_ids[:, lead:end], attention_mask[:, lead:end], completion_mask[:, :max(c_len, 1)],
            prompt_width - lead)


# ---------------------------------------------------------------------------------------------

def check_distributed(cfg: TrainConfig, env: dist.DistEnv) -> None:
    """What torchrun needs of a config (r1zero.distributed), refused before any model loads."""
    if not env.enabled:
        return
    if cfg.algorithm != "grpo":
        raise ConfigError(f"config: 'algorithm' {cfg.algorithm} runs in one process only; use algorithm=grpo under "
                          "torchrun or run without torchrun")
    mini = cfg.mini_batch_prompts or cfg.prompts_per_step
    key = "mini_batch_prompts" if cfg.mini_batch_prompts else "prompts_per_step"
    if mini % env.world_size:
        raise ConfigError(f"config: '{key}' ({mini}) must be divisible by the {env.world_size} processes; "
                          f"use a multiple of {env.world_size}")


def check_resume_world_size(path: Path, env: dist.DistEnv) -> None:
    """A checkpoint resumes under the process count that saved it: the optimizer state is stored per
    layout (one file in one process, every rank's shards under torchrun) and each rank's random
    state is not saved, so another count would not continue the run exactly. Refused before any
    model loads."""
    if not (Path(path) / ckpt.STATE_JSON).is_file():
        raise ConfigError(f"resume_from_checkpoint: {path} has no {ckpt.STATE_JSON}; give a checkpoint-N folder "
                          "that r1zero wrote")
    saved = int(ckpt.load_state_json(path).get("world_size", 1))  # checkpoints without it: one process
    if saved != env.world_size:
        how = "without torchrun" if saved == 1 else f"under torchrun --nproc_per_node {saved} (or the same total over nodes)"
        raise ConfigError(f"resume_from_checkpoint: {path} was saved by {saved} process(es) and this run has "
                          f"{env.world_size}; resume it {how}, or start a new output_dir")


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
    def gather(cls, mine: list[int], prompts, examples, roll: Rollout, scores: BatchScores,
               env: dist.DistEnv) -> "StepSamples":
        """The whole step from every rank's share; ``mine`` holds the global indices of this rank's
        prompts (in one process: all of them, in order, and nothing is communicated)."""
        local = dict(index=mine, prompts=prompts, examples=examples, completions=roll.completions,
                     lengths=roll.lengths.tolist(), truncated=roll.truncated.tolist(), scores=scores)
        shares = dist.gather(local, env)
        G = len(roll.completions) // max(len(mine), 1)
        # (rank, position in its share) of every prompt, in global order, then of every completion.
        where = [rp for _, rp in sorted((p, (r, i)) for r, sh in enumerate(shares) for i, p in enumerate(sh["index"]))]
        rows = [(r, i * G + g) for r, i in where for g in range(G)]

        def per_prompt(key):
            return [shares[r][key][i] for r, i in where]

        def per_row(get):
            return [get(shares[r])[j] for r, j in rows]

        names = dict.fromkeys(k for sh in shares for k in sh["scores"].parts)
        n = len(rows)
        merged = BatchScores(per_row(lambda sh: sh["scores"].rewards), per_row(lambda sh: sh["scores"].correct),
                             per_row(lambda sh: sh["scores"].formatted),
                             {k: per_row(lambda sh, k=k: sh["scores"].parts.get(k, [0.0] * n)) for k in names})
        for sh in shares:
            for k, v in sh["scores"].errors.items():
                merged.errors[k] = merged.errors.get(k, 0) + v
            for k, v in sh["scores"].error_reasons.items():
                merged.error_reasons.setdefault(k, v)
        return cls(per_prompt("prompts"), per_prompt("examples"), per_row(lambda sh: sh["completions"]),
                   torch.tensor(per_row(lambda sh: sh["lengths"])),
                   torch.tensor(per_row(lambda sh: sh["truncated"]), dtype=torch.bool), merged)


class _NoTracker:
    """What ranks other than 0 log: nothing (rank 0 logs the gathered step)."""

    def log(self, *a, **k): pass
    def log_eval(self, *a, **k): pass
    def log_samples(self, *a, **k): pass
    def close(self): pass


class Trainer:
    """Builds everything from a TrainConfig and runs GRPO; see the module docstring. ``env`` is the
    process's place under torchrun (r1zero.distributed; default: the initialised process group,
    or one process)."""

    def __init__(self, cfg: TrainConfig, env: dist.DistEnv | None = None):
        self.cfg = cfg
        self.env = env or dist.current()
        self.out = Path(cfg.output_dir)
        # Everything that can be refused is checked before a model is loaded or a file written.
        check_distributed(cfg, self.env)
        check_trackers(cfg.report_to)
        check_output_dir(cfg.output_dir)
        self.task = build_task(cfg)
        self.rewarder = RewardModel(None if cfg.reward == "none" else self.task, cfg.reward_funcs, cfg.reward_weights,
                                    timeout=cfg.reward_timeout)
        self.health = RunHealth(cfg.max_skipped_updates, cfg.max_failed_reward_steps)  # r1zero.guards
        self.train_rows, self.test_rows = load_data(self.task, cfg)
        self.resume_from = self._find_resume()
        if self.resume_from:
            check_resume_world_size(self.resume_from, self.env)
        self.device = dist.device_for(self.env, choose_device(cfg.device))
        if self.env.enabled and cfg.fsdp_cpu_offload and self.device.type != "cuda":
            raise ConfigError("config: 'fsdp_cpu_offload' moves shards from GPU to CPU memory; on device "
                              f"{self.device.type} the weights are in CPU memory already: remove it")
        self.bf16 = use_bf16(cfg.bf16, self.device)
        self.autocast_dtype = torch.bfloat16 if self.bf16 else None
        self.tokenizer = load_tokenizer(cfg.tokenizer_name_or_path or cfg.model_name_or_path, cfg.trust_remote_code)
        # Prompts that do not fit are refused now, not at step 500: the first 256 train rows (all
        # rows would cost minutes on a 300k-row set); a longer one further in stops the run when its
        # step draws it (train_step), after the checkpoints before it.
        encode_prompts(self.task, self.tokenizer, self.train_rows[:256] + self.test_rows[:64], cfg.max_prompt_length)
        self.max_steps = cfg.max_steps if cfg.max_steps > 0 else max(
            1, math.ceil(cfg.num_train_epochs * len(self.train_rows) / cfg.prompts_per_step))

        policy_src = str(self.resume_from) if self.resume_from else cfg.model_name_or_path
        torch.manual_seed(cfg.seed)
        self.model = load_model(policy_src, self.device, trust_remote_code=cfg.trust_remote_code)
        if cfg.gradient_checkpointing:
            self.model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        # What the update calls: one forward per micro-batch, replicated (DDP) or sharded (FSDP2)
        # under torchrun (r1zero.distributed), the plain module in one process.
        self.policy = dist.wrap(CompletionLogprobs(self.model), cfg.distributed, self.env,
                                cpu_offload=cfg.fsdp_cpu_offload)
        self.sharded = bool(dist.fsdp_modules(self.policy))
        self.ref_model = self.ref_policy = None
        if cfg.beta > 0 or (cfg.algorithm != "grpo" and cfg.kl_coef > 0):  # always the starting model, also after a resume
            # Offloaded: kept on the CPU and moved in per use; sharded: FSDP's CPU offload does it.
            ref_device = torch.device("cpu") if cfg.ref_model_offload and not self.sharded else self.device
            self.ref_model = load_model(cfg.model_name_or_path, ref_device, trust_remote_code=cfg.trust_remote_code,
                                        trainable=False)
            self.ref_policy = dist.wrap(CompletionLogprobs(self.ref_model), cfg.distributed, self.env, trainable=False,
                                        cpu_offload=self.device.type == "cuda" and (cfg.fsdp_cpu_offload
                                                                                    or cfg.ref_model_offload))
        self.eos_ids = eos_token_ids(self.tokenizer, self.model)
        faults.watch(self)  # a crash-test hook; nothing unless R1ZERO_PAUSE_AT is set
        # After wrapping: FSDP2 has replaced the parameters with their shards.
        self.optimizer, self.scheduler = make_optimizer(self.model, cfg, cfg.learning_rate, self.max_steps)
        # ppo / rloo / reinforce_pp: critic, KL controller and their update loop (r1zero.ppo).
        self.algo = PPOFamily(self) if cfg.algorithm != "grpo" else None
        self.step = 0
        self.pos = DataPosition()
        if self.resume_from:
            self._restore(self.resume_from)

    # ---- resume ---------------------------------------------------------------------------------
    def _find_resume(self) -> Path | None:
        r = self.cfg.resume_from_checkpoint
        if r is None:
            if ckpt.list_checkpoints(self.out):
                raise ConfigError(f"output_dir: {self.out} already holds checkpoints; use resume_from_checkpoint=auto "
                                  "to continue or choose another output_dir")
            return None
        if r == "auto":
            return ckpt.latest_checkpoint(self.out)
        return Path(r)

    def _restore(self, path: Path) -> None:
        state, heavy = ckpt.load_state(path)
        self.step = int(state["step"])
        self.pos = DataPosition(**state["data_position"])
        if heavy is not None:
            if "optimizer" in heavy:
                self.optimizer.load_state_dict(heavy["optimizer"])
            else:  # saved under torchrun: every rank's part, in torch.distributed.checkpoint format
                dist.load_optimizer(self.policy, self.optimizer, path / ckpt.OPTIMIZER_DIR)
            self.scheduler.load_state_dict(heavy["scheduler"])
            random.setstate(heavy["python_rng"])
            torch.set_rng_state(heavy["torch_rng"])
            if torch.cuda.is_available() and heavy.get("cuda_rng") is not None:
                torch.cuda.set_rng_state_all(heavy["cuda_rng"])
        else:
            log.warning("checkpoint %s has no optimizer state: optimizer restarts, schedule continues", path)
            for _ in range(self.step):
                self.scheduler.step()
        if self.algo is not None:
            self.algo.restore(state, heavy, self.step)
        log.info("resumed from %s at step %d", path, self.step)

    def save(self) -> Path:
        """Write checkpoint-<step>. Under torchrun every rank takes part (rank 0 makes the folder,
        every rank writes its optimizer shards, rank 0 writes the rest and renames it into place)."""
        state = {"step": self.step, "data_position": vars(self.pos), "max_steps": self.max_steps,
                 "model_name_or_path": self.cfg.model_name_or_path, "world_size": self.env.world_size}
        heavy = None
        if self.cfg.save_optimizer_state:
            heavy = {"scheduler": self.scheduler.state_dict(),
                     "python_rng": random.getstate(), "torch_rng": torch.get_rng_state(),
                     "cuda_rng": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None}
            if not self.env.enabled:
                heavy["optimizer"] = self.optimizer.state_dict()
        if self.algo is not None:
            state["algorithm"] = self.algo.light_state()
            if heavy is not None:
                heavy.update(self.algo.heavy_state())
        tmp = None
        if self.env.enabled:
            tmp = Path(dist.broadcast(str(ckpt.new_tmp(self.out, self.step)) if self.env.is_main else None, self.env))
            if heavy is not None:
                dist.save_optimizer(self.policy, self.optimizer, tmp / ckpt.OPTIMIZER_DIR)
        weights = dist.full_state_dict(self.model)  # the gathered shards under FSDP (every rank calls it)
        final = self.out / f"checkpoint-{self.step}"
        if self.env.is_main:
            final = ckpt.save_checkpoint(self.out, self.step, self.model, self.tokenizer, state,
                                         heavy_state=heavy, total_limit=self.cfg.save_total_limit,
                                         extra_models=self.algo.extra_models() if self.algo is not None else None,
                                         model_state_dict=weights, tmp=tmp)
        dist.barrier(self.env)  # nobody goes on (or resumes) before the checkpoint is in place
        return final

    # ---- pieces of a step -----------------------------------------------------------------------
    def _autocast(self):
        if self.autocast_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self.autocast_dtype)

    def _logprobs(self, policy, input_ids, attention_mask, completion_mask, prompt_width, entropy_grad=False):
        """Log-probs and entropies (B, C) of a micro-batch; ``policy`` is ``self.policy`` or
        ``self.ref_policy`` (r1zero.logprobs.CompletionLogprobs, wrapped under torchrun)."""
        ids, am, cm, pw = _trim(input_ids, attention_mask, completion_mask, prompt_width)
        with self._autocast():
            lp, ent = policy(ids.to(self.device), am.to(self.device), pw, cm.to(self.device),
                             temperature=self.cfg.temperature, chunk_size=self.cfg.logprob_chunk_size,
                             entropy_grad=entropy_grad)
        # Back to the full completion width, so callers index one shape.
        C = completion_mask.shape[1]
        pad = C - lp.shape[1]
        if pad:
            lp = torch.nn.functional.pad(lp, (0, pad))
            ent = torch.nn.functional.pad(ent, (0, pad))
        return lp, ent

    def _ref_logprobs(self, roll: Rollout) -> torch.Tensor:
        """Reference log-probs (no gradients); with ``ref_model_offload`` the weights visit the device
        only for this pass."""
        if not self.cfg.ref_model_offload or self.sharded:  # FSDP offloads by itself
            return self._frozen_logprobs(self.ref_policy, roll)
        self.ref_model.to(self.device)
        try:
            return self._frozen_logprobs(self.ref_policy, roll)
        finally:
            self.ref_model.to("cpu")

    @torch.no_grad()
    def _frozen_logprobs(self, policy, roll: Rollout) -> torch.Tensor:
        out = []
        mb = self.cfg.per_device_train_batch_size
        ids, am, cm, P = roll.input_ids, roll.attention_mask, roll.completion_mask, roll.prompt_ids.shape[1]
        for s in range(0, ids.shape[0], mb):
            lp, _ = self._logprobs(policy, ids[s:s + mb], am[s:s + mb], cm[s:s + mb], P)
            out.append(lp.cpu())
        return torch.cat(out)

    def _update(self, roll: Rollout, advantages: torch.Tensor, loss_mask: torch.Tensor) -> dict[str, float]:
        """The policy update on this rank's rollouts. Under torchrun each rank holds an equal piece
        of every mini-batch (r1zero.distributed.prompt_share) and back-propagates world_size x its
        share of the mini-batch's loss, since the gradient reduction averages over ranks: a mean
        loss's share is its local mean / world_size; dapo's is the local token-loss sum over the
        global token count. Metrics are summed over ranks before they are returned."""
        cfg = self.cfg
        G = cfg.num_generations
        W = self.env.world_size
        n = roll.completion_ids.shape[0]
        mini_rows = (cfg.mini_batch_prompts or cfg.prompts_per_step) // W * G
        n_minis = math.ceil(n / mini_rows)
        need_old = cfg.num_iterations > 1 or n_minis > 1
        old_all = self._frozen_logprobs(self.policy, roll) if need_old else None
        ref_all = self._ref_logprobs(roll) if self.ref_model is not None else None
        ids_all, am_all, P = roll.input_ids, roll.attention_mask, roll.prompt_ids.shape[1]
        sums: dict[str, float] = {}
        counts: dict[str, float] = {}
        tokens_total = 0.0
        ent_sum = 0.0
        grad_norms = []
        mb = cfg.per_device_train_batch_size
        starts = range(0, n, mini_rows)
        # Each mini-batch's token count over all ranks (the dapo normaliser): one all-reduce per step.
        mini_tokens_all = dist.all_sum([loss_mask[m0:m0 + mini_rows].sum() for m0 in starts], self.env)
        for _ in range(cfg.num_iterations):
            for m0, mini_tokens in zip(starts, mini_tokens_all):
                rows = list(range(m0, min(n, m0 + mini_rows)))
                self.optimizer.zero_grad(set_to_none=True)
                for s in range(0, len(rows), mb):
                    r = rows[s:s + mb]
                    cm = loss_mask[r]
                    # Gradients are reduced over ranks once per mini-batch, after its last micro-batch.
                    with dist.grad_sync(self.policy, s + mb >= len(rows)):
                        lp, ent = self._logprobs(self.policy, ids_all[r], am_all[r], roll.completion_mask[r], P)
                        dev_mask = cm.to(lp.device)
                        old = old_all[r].to(lp.device) if old_all is not None else lp.detach()
                        ref = ref_all[r].to(lp.device) if ref_all is not None else None
                        loss, metrics = policy_loss(
                            lp, old, advantages[r].to(lp.device), dev_mask, loss_type=cfg.loss_type,
                            epsilon=cfg.epsilon, epsilon_high=cfg.epsilon_high, ref_logprobs=ref, beta=cfg.beta,
                            kl_estimator=cfg.kl_estimator, max_completion_length=cfg.max_completion_length,
                            total_tokens=mini_tokens)
                        if cfg.loss_type != "dapo":
                            loss = loss * (len(r) / (len(rows) * W))  # mean over the mini-batch, not the micro-batch
                        (loss * W).backward()
                    self.health.note_loss(loss.detach())
                    tok = float(cm.sum())
                    tokens_total += tok
                    ent_sum += float((ent * dev_mask).sum())
                    sums["loss"] = sums.get("loss", 0.0) + float(loss.detach())
                    for k, v in metrics.items():
                        sums[k] = sums.get(k, 0.0) + v * tok
                        counts[k] = counts.get(k, 0.0) + tok
                grad_norms.append(clip_and_step(self.model, self.optimizer, cfg.max_grad_norm,
                                                lambda gn: self.health.update_ok(gn, self.step + 1)))
                faults.reached("optimizer", self.step + 1)  # crash tests kill here: weights moved, step unsaved
        self.optimizer.zero_grad(set_to_none=True)
        updates = cfg.num_iterations * n_minis
        keys = sorted(counts)  # the same keys on every rank: the same loss settings
        total = dist.all_sum([sums.pop("loss", 0.0), ent_sum, tokens_total, *(sums[k] for k in keys),
                              *(counts[k] for k in keys)], self.env)
        out = {"loss": total[0] / updates, "grad_norm": sum(grad_norms) / len(grad_norms),
               "entropy": total[1] / max(total[2], 1.0)}
        for i, k in enumerate(keys):
            out[k] = total[3 + i] / max(total[3 + len(keys) + i], 1.0)
        return out

    def _sample_rows(self, step: int, batch: StepSamples, advantages) -> list[dict]:
        n = len(batch.completions)
        rate = self.cfg.log_completions_rate
        if rate <= 0:
            return []
        k = max(1, round(rate * n))
        picked = sorted(random.Random(self.cfg.seed * 7919 + step).sample(range(n), k))
        G = self.cfg.num_generations
        scores = batch.scores
        return [{"step": step, "prompt": batch.prompts[i // G], "completion": batch.completions[i],
                 "reward": scores.rewards[i], "advantage": float(advantages[i]),
                 "correct": scores.correct[i], "formatted": scores.formatted[i],
                 "truncated": bool(batch.truncated[i]), "length": int(batch.lengths[i]),
                 "parts": {name: vals[i] for name, vals in scores.parts.items()},
                 "example": {k: v for k, v in batch.examples[i // G].items() if isinstance(v, (int, float, str, list))}}
                for i in picked]

    def train_step(self) -> tuple[dict[str, Any], list[dict]]:
        cfg = self.cfg
        step = self.step + 1
        t0 = time.perf_counter()
        idx, next_pos = draw_batch(len(self.train_rows), self.pos, cfg.prompts_per_step, cfg.seed)
        # This rank's prompts (all of them in one process), by their index in the global batch.
        mine = dist.prompt_share(len(idx), cfg.mini_batch_prompts or cfg.prompts_per_step, self.env)
        examples = [self.train_rows[idx[i]] for i in mine]
        prompts, prompt_ids = encode_prompts(self.task, self.tokenizer, examples, cfg.max_prompt_length)
        with dist.full_weights(self.policy):  # FSDP: whole weights, no communication while decoding
            roll = generate(self.model, self.tokenizer, prompt_ids, num_generations=cfg.num_generations,
                            max_new_tokens=cfg.max_completion_length, eos_ids=self.eos_ids,
                            temperature=cfg.temperature, top_p=cfg.top_p, top_k=cfg.top_k,
                            batch_size=cfg.generation_batch_size, seed=cfg.seed * 1_000_003 + step,
                            autocast_dtype=self.autocast_dtype, prompt_index=mine,
                            cache="dynamic" if self.sharded else "auto")
        t_gen = time.perf_counter() - t0
        G = cfg.num_generations
        group_examples = [ex for ex in examples for _ in range(G)]
        scores = self.rewarder(roll.completions, group_examples, [p for p in prompts for _ in range(G)])
        # The whole step on every rank: advantages (batch scaling included) and metrics see all of it.
        batch = StepSamples.gather(mine, prompts, examples, roll, scores, self.env)
        rewards = torch.tensor(batch.scores.rewards, dtype=torch.float32)
        loss_mask = roll.completion_mask.float()
        if cfg.mask_truncated_completions:
            loss_mask = loss_mask * (~roll.truncated).float().unsqueeze(1)
        t1 = time.perf_counter()
        if self.algo is None:
            advantages = group_advantages(rewards, G, scale=cfg.scale)
            local = torch.tensor([i * G + g for i in mine for g in range(G)])
            upd = self._update(roll, advantages[local], loss_mask)
        else:  # the advantages need this step's log-probs (KL) and values: made inside (r1zero.ppo); one process
            advantages, upd = self.algo.update(roll, rewards, loss_mask)
        t_upd = time.perf_counter() - t1
        lr = self.scheduler.get_last_lr()[0]
        self.scheduler.step()
        self.step, self.pos = step, next_pos

        scores = batch.scores
        n = len(scores.rewards)
        lengths = batch.lengths.float()
        gen_tokens = float(lengths.sum())
        correct = torch.tensor(scores.correct, dtype=torch.float32)
        formatted = torch.tensor(scores.formatted, dtype=torch.float32)
        stats = group_stats(rewards, G)
        m: dict[str, Any] = {
            "reward": stats["reward_mean"], "reward_std": stats["reward_std"],
            **{f"reward/{k}": sum(v) / n for k, v in scores.parts.items()},
            "accuracy": float(correct.mean()), "format_rate": float(formatted.mean()),
            # The three outcomes users plot on Countdown; they sum to 1.
            "outcome/bad_format": float(((1 - formatted) * (1 - correct)).mean()),
            "outcome/wrong": float((formatted * (1 - correct)).mean()),
            "outcome/correct": float(correct.mean()),
            "completions/mean_length": float(lengths.mean()), "completions/max_length": float(lengths.max()),
            "completions/min_length": float(lengths.min()),
            "completions/p90_length": float(torch.quantile(lengths, 0.9)),
            "completions/clipped_ratio": float(batch.truncated.float().mean()),
            "frac_reward_zero_std": stats["frac_reward_zero_std"],
            **upd, "learning_rate": lr, "epoch": self.pos.epoch + self.pos.offset / len(self.train_rows),
            "time/step": time.perf_counter() - t0, "time/generate": t_gen, "time/update": t_upd,
            "tokens_per_second": gen_tokens / max(dist.all_sum([t_gen], self.env)[0] / self.env.world_size, 1e-9),
        }
        for name, count in scores.errors.items():
            m[f"reward_errors/{name}"] = count
        m.update(self.health.end_step(step, n, scores))
        return m, self._sample_rows(step, batch, advantages)

    def run_eval(self) -> dict[str, Any]:
        cfg = self.cfg
        rows = self.test_rows[:cfg.eval_limit] if cfg.eval_limit else self.test_rows
        if not rows:
            return {}
        mine = rows[dist.row_share(len(rows), self.env)]  # under torchrun each rank evaluates a share
        summary, records = {"n": 0}, []
        with dist.full_weights(self.policy):
            if mine:
                summary, records = evaluate(
                    self.model, self.tokenizer, self.task, mine, eos_ids=self.eos_ids,
                    max_new_tokens=cfg.eval_max_completion_length or cfg.max_completion_length,
                    batch_size=cfg.generation_batch_size or 64, max_prompt_length=cfg.max_prompt_length,
                    autocast_dtype=self.autocast_dtype)
        self.model.train()
        if self.env.enabled:
            parts = dist.gather((summary, records), self.env)
            summary, records = merge_summaries([p[0] for p in parts]), [r for p in parts for r in p[1]]
        if not self.env.is_main:
            return summary
        eval_dir = self.out / "eval"
        eval_dir.mkdir(parents=True, exist_ok=True)
        from r1zero.data import write_jsonl

        write_jsonl(records, eval_dir / f"step-{self.step}.jsonl")
        return summary

    # ---- the loop -------------------------------------------------------------------------------
    def train(self) -> dict[str, Any]:
        cfg = self.cfg
        main = self.env.is_main  # under torchrun rank 0 writes the run's files; every rank trains
        if main:
            self.out.mkdir(parents=True, exist_ok=True)
            save_config(cfg, self.out / "config.yaml")
            self._report(info=True)
            tracker = Tracker(self.out, cfg.report_to, cfg.run_name or self.out.name, cfg.to_dict(), resume_step=self.step)
        else:
            tracker = _NoTracker()
        result: dict[str, Any] = {"output_dir": str(self.out)}
        try:
            if cfg.eval_on_start and self.step == 0:
                result["eval_start"] = ev = self.run_eval()
                tracker.log_eval(ev, 0)
                log.info("eval before training: %s", _fmt(ev))
            from tqdm.auto import tqdm

            bar = tqdm(total=self.max_steps, initial=self.step, disable=cfg.disable_tqdm or not main, desc="grpo",
                       unit="step")
            last: dict[str, Any] = {}
            while self.step < self.max_steps:
                metrics, samples = self.train_step()
                last = metrics
                if self.step % cfg.logging_steps == 0 or self.step == self.max_steps:
                    tracker.log(metrics, self.step)
                tracker.log_samples(samples)
                self.health.raise_if_stopped()  # after logging, so the failing step is in the metrics
                if main and cfg.report_steps and self.step % cfg.report_steps == 0 and self.step < self.max_steps:
                    self._report(live=True)
                bar.update(1)
                bar.set_postfix(reward=f"{metrics['reward']:.3f}", acc=f"{metrics['accuracy']:.2f}",
                                len=f"{metrics['completions/mean_length']:.0f}")
                if cfg.eval_steps and self.step % cfg.eval_steps == 0 and self.step < self.max_steps:
                    tracker.log_eval(self.run_eval(), self.step)
                if cfg.save_steps and self.step % cfg.save_steps == 0 and self.step < self.max_steps:
                    self.save()
            bar.close()
            result["checkpoint"] = str(self.save())
            if cfg.eval_on_end:
                result["eval_end"] = ev = self.run_eval()
                tracker.log_eval(ev, self.step)
                log.info("eval after training: %s", _fmt(ev))
            result["last_metrics"] = last
            result["report"] = self._report() if main else None
        finally:
            tracker.close()
            self.rewarder.close()
        return result

    def _report(self, live: bool = False, info: bool = False) -> str | None:
        """Write run_info.json (info) or rebuild report.html (r1zero.report); a failure only warns:
        a plot must never cost a training run."""
        try:
            from r1zero import report

            if info:
                report.write_run_info(self.out, self.device)
                return None
            return str(report.build_report(self.out, live=live).html)
        except Exception as e:  # noqa: BLE001
            log.warning("report not written: %s: %s", type(e).__name__, e)
            return None


def merge_summaries(summaries: list[dict[str, Any]]) -> dict[str, Any]:
    """One evaluation summary from the ranks' (each a mean over its ``n`` rows): n-weighted means."""
    n = sum(s.get("n", 0) for s in summaries)
    out: dict[str, Any] = {"n": n}
    for key in (k for s in summaries if s.get("n") for k in s):
        if key != "n" and key not in out:
            out[key] = sum(s[key] * s["n"] for s in summaries if s.get("n")) / max(n, 1)
    return out


def _fmt(ev: dict) -> str:
    return ", ".join(f"{k}={v:.3f}" if isinstance(v, float) else f"{k}={v}" for k, v in ev.items())


def train(cfg: TrainConfig) -> dict[str, Any]:
    return Trainer(cfg).train()


__all__ = ["Trainer", "train", "load_data", "draw_batch", "make_scheduler", "ConfigError", "DataError", "TaskError"]
