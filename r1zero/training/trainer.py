"""The training loop, one algorithm-agnostic step after another (``algorithm``: r1zero.algorithms).

One step, in order (each line names the module that does it):

1. data      ``prompts_per_step`` examples in a seeded order (r1zero.data.split: a fresh permutation
             per epoch, keyed by ``seed`` and the epoch; the position is part of every checkpoint).
             With ``dynamic_sampling`` (DAPO) groups whose rewards are all equal are dropped and more
             rounds are drawn and sampled (r1zero.training.sampling_rounds, which runs steps 1-4).
2. prompt    the task renders each example (r1zero.tasks) and the tokenizer encodes it; prompts
             longer than ``max_prompt_length`` are refused, never cut.
3. rollout   ``num_generations`` completions per prompt (r1zero.rollout.sampling), sampled with
             ``temperature``/``top_p``/``top_k``, stopping on every EOS id of the tokenizer and of
             the generation config. Each prompt is prefilled once for its G samples, finished rows
             leave the batch, and each sample's randomness is keyed by (seed, step, prompt index,
             sample index): a resumed run samples exactly what the uninterrupted run did, and
             ``sampling_batch_size`` changes memory, never the samples.
4. reward    the task's scheme plus the user's ``reward_funcs`` (r1zero.rewards.scoring) and DAPO's overlong
             punishment (``overlong_buffer_len``); a scorer that fails gives 0 for that sample and is counted.
5. advantage the algorithm's estimator on one typed batch (r1zero.algorithms.base.RolloutBatch),
             with pi_old's log-probs when it needs them and the reference model's (a frozen copy of
             the starting weights, loaded only when the algorithm's KL needs it; with
             ``ref_model_offload`` on the CPU between uses, r1zero.model_setup; with ``use_peft``
             the policy with its LoRA adapter disabled, r1zero.training.lora).
6. update    the one update loop (r1zero.training.update): passes x mini-batches x micro-batches,
             the algorithm's loss, one AdamW step per mini-batch, gradients clipped to
             ``max_grad_norm``, non-finite updates skipped (r1zero.training.guards); the learning
             rate follows ``lr_scheduler_type`` with linear warmup over ``warmup_ratio`` of the
             steps, one scheduler step per training step. Log-probs use temperature-scaled logits,
             in chunks, each group's prompt run once (r1zero.training.logprobs).
7. log       metrics.jsonl / tensorboard / wandb / swanlab (r1zero.observe), a share of the
             completions to samples.jsonl, evaluation every ``eval_steps``, checkpoints every
             ``save_steps`` (r1zero.training.checkpoint) with at most ``save_total_limit`` kept,
             the report every ``report_steps``.

Several processes (``torchrun``, r1zero.training.distributed): every rank draws the same prompts and
keeps an equal contiguous piece of each mini-batch (so its groups stay whole); samples are keyed by
the prompt's index in the global batch, so they do not depend on the process count; rewards are
gathered before advantages and metrics, and the estimators' batch statistics are global; rank 0
writes the files, every rank writes its optimizer shards into the checkpoint.

A logged loss of exactly 0 at the start is expected: the ratio is 1 and advantages are centred
in each group, so the per-sequence terms cancel while the gradient does not. A step where every
group had equal rewards has zero advantage and zero gradient: ``frac_reward_zero_std`` shows how
often that happens.
"""
from __future__ import annotations

import logging
import math
import time
from pathlib import Path
from typing import Any

import torch

from r1zero.algorithms import RolloutBatch, UpdateContext, configured_algorithm, group_stats
from r1zero.config import ConfigError, TrainConfig, save_config
from r1zero.config import identity
from r1zero.data.files import DataError, write_jsonl
from r1zero.data.split import DataPosition, load_data
from r1zero.model_setup import Generator, load_policy
from r1zero.models import autocast_dtype, choose_device, eos_token_ids, load_tokenizer, synchronize
from r1zero.observe import metrics as metric_names
from r1zero.observe import report
from r1zero.observe.evaluate import build_evaluation, format_summary, merge_summaries
from r1zero.observe.metrics import CollapseWatch, step_metrics, think_metrics
from r1zero.observe.tracking import NullTracker, Tracker, check_trackers
from r1zero.sandbox.calls import TrainerState
from r1zero.rewards.scoring import BatchScores, training_scorer
from r1zero.rollout.sampling import Rollout, encode_prompts, generate
from r1zero.tasks import TaskError, build_task
from r1zero.training import checkpoint as ckpt
from r1zero.training import distributed as dist
from r1zero.training.callbacks import Callback, CallbackList
from r1zero.training.guards import RunHealth, check_output_dir
from r1zero.host_memory import keep_freed_memory
from r1zero.training.logprobs import CompletionLogprobs, ForwardPasses, Reference
from r1zero.training import lora, optim
from r1zero.training.run_lock import take_lock
from r1zero.training.samples import gather_rows, rollout_batch, sample_rows
from r1zero.training.sampling_rounds import draw_step
from r1zero.training.strategy import RunStrategy
from r1zero.training.update import need_old_logprobs, run_update

log = logging.getLogger("r1zero")


class Trainer:
    """Builds everything from a TrainConfig and trains; see the module docstring. ``env`` is the
    process's place under torchrun (default: the initialised process group, or one process).
    r1zero.trl gives ``data`` (train and test rows) and ``reward_callables`` (reward_funcs entries
    given as objects that a worker cannot import) in memory instead of by name. ``callbacks`` are called
    at the loop's named points (r1zero.training.callbacks)."""

    def __init__(self, cfg: TrainConfig, env: dist.DistEnv | None = None, *,
                 data: tuple[list[dict], list[dict]] | None = None, reward_callables: dict | None = None,
                 callbacks: list[Callback] | None = None):
        self.cfg, self.callbacks = cfg, CallbackList(callbacks or ())
        self.env = env or dist.current()
        self.out = Path(cfg.output_dir)
        # Everything that can be refused is checked before a model is loaded or a file written.
        algorithm = configured_algorithm(cfg)
        dist.check_config(cfg, self.env)
        check_trackers(cfg.report_to)
        check_output_dir(cfg.output_dir)
        self.task = build_task(cfg)
        self.rewarder = training_scorer(cfg, self.task, callables=reward_callables)
        self.health = RunHealth(cfg.max_skipped_updates, cfg.max_failed_reward_steps)
        self.train_rows, test_rows = load_data(self.task, cfg, data)
        self.evaluation = build_evaluation(cfg, self.task, test_rows, callables=reward_callables)
        self._find_resume()
        self.device = dist.device_for(self.env, choose_device(cfg.device))
        if self.device.type == "cpu":
            keep_freed_memory()  # large CPU tensors reuse pages (r1zero.host_memory)
        if self.env.enabled and cfg.fsdp_cpu_offload and self.device.type != "cuda":
            raise ConfigError("config: 'fsdp_cpu_offload' moves shards from GPU to CPU memory; on device "
                              f"{self.device.type} the weights are in CPU memory already: remove it")
        self.autocast_dtype = autocast_dtype(cfg.bf16, self.device)
        self.tokenizer = load_tokenizer(cfg.model_name_or_path, cfg.trust_remote_code, tokenizer=cfg.tokenizer_name_or_path)
        lora.check(cfg, self.resume_from)  # LoRA modules the model lacks, a checkpoint of the other kind
        # Prompts that do not fit are refused now, not at step 500: the first 256 train rows (all
        # rows would cost minutes on a 300k-row set); a longer one further in stops the run when its
        # step draws it (train_step), after the checkpoints before it.
        encode_prompts(self.task, self.tokenizer, self.train_rows[:256] + test_rows[:64], cfg.max_prompt_length)
        self.max_steps = cfg.max_steps if cfg.max_steps > 0 else max(
            1, math.ceil(cfg.num_train_epochs * len(self.train_rows) / cfg.prompts_per_step))
        self.finished = ckpt.run_finished(self.out, self.resume_from, self.resumed_step, self.max_steps,
                                          final_eval=cfg.eval_on_end and bool(test_rows))
        # From here the run writes into output_dir (every refusal above leaves it as it was).
        self.lock = take_lock(self.out, self.env)
        if self.finished:  # nothing left to do: no model is loaded (train() says so)
            return

        self._load_models(algorithm.uses_reference(cfg))
        # After wrapping: FSDP2 has replaced the parameters with their shards.
        self.optimizer, self.scheduler = optim.make_optimizer(self.model, cfg, cfg.learning_rate, self.max_steps)
        self.passes = ForwardPasses(self.device, self.autocast_dtype, cfg.temperature, cfg.logprob_chunk_size,
                                    cfg.micro_batch_size)
        self.strategy = RunStrategy(cfg, self.env, self.max_steps)  # how the algorithm trains a model of its own
        self.algo = algorithm(cfg, UpdateContext(self.device, self.strategy, self.passes, self.max_steps, self.resume_from))
        self.collapse = CollapseWatch(cfg.collapse_steps)
        self.step = 0
        self.pos = DataPosition()
        if self.resume_from:
            self._restore(self.resume_from)

    def _find_resume(self) -> None:
        """The checkpoint the run resumes from (None: it starts), its step, and the config changes of
        the resume (r1zero.config.identity.check_resume refuses those allow_config_change does not name)."""
        self.resume_from = ckpt.find_resume(self.cfg.resume_from_checkpoint, self.out)
        self.config_changes: dict = {}
        self.resumed_step = 0
        if self.resume_from:
            ckpt.check_resume_world_size(self.resume_from, self.env.world_size)
            self.resumed_step = int(ckpt.load_state_json(self.resume_from)["step"])
            self.config_changes = identity.check_resume(self.cfg, self.out, self.resume_from, self.resumed_step)

    def _load_models(self, uses_reference: bool) -> None:
        """The policy (r1zero.model_setup), with ``use_peft`` its adapter, wrapped for the update, and
        the reference model when the algorithm's KL needs one (r1zero.training.logprobs.Reference)."""
        cfg = self.cfg
        self.model = load_policy(cfg, self.device, self.resume_from)
        self.adapter = lora.attach(self.model, cfg, self.resume_from) if cfg.use_peft else None
        if cfg.gradient_checkpointing:
            self.model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        # What the update calls: one forward per micro-batch, replicated (DDP) or sharded (FSDP2)
        # under torchrun, the plain module in one process.
        self.policy = dist.wrap(CompletionLogprobs(self.model), cfg.distributed, self.env,
                                cpu_offload=cfg.fsdp_cpu_offload, param_dtype=self.autocast_dtype)
        self.sharded = bool(dist.fsdp_modules(self.policy))
        self.reference = Reference.build(cfg, self.env, self.policy, self.adapter, self.device, self.autocast_dtype,
                                         self.sharded) if uses_reference else None
        self.eos_ids = eos_token_ids(self.tokenizer, self.model)

    # ---- checkpoints ----------------------------------------------------------------------------
    def _restore(self, path: Path) -> None:
        state, tensor_state = ckpt.load_state(path)
        self.step = int(state["step"])
        self.pos = DataPosition(**state["data_position"])
        if tensor_state is not None:
            config = optim.settings(self.optimizer, self.scheduler)
            if "optimizer" in tensor_state:
                self.optimizer.load_state_dict(tensor_state["optimizer"])
            else:  # saved under torchrun: every rank's part, in torch.distributed.checkpoint format
                dist.load_optimizer(self.policy, self.optimizer, path / ckpt.OPTIMIZER_DIR)
            self.scheduler.load_state_dict(tensor_state["scheduler"])
            optim.apply_settings(self.optimizer, self.scheduler, config)  # a learning rate changed on resume applies
            ckpt.restore_rng(tensor_state)
        else:
            log.warning("checkpoint %s has no optimizer state: optimizer restarts, schedule continues", path)
            for _ in range(self.step):
                self.scheduler.step()
        self.algo.restore(state.get("algorithm", {}), tensor_state, self.step)
        log.info("resumed from %s at step %d", path, self.step)

    def save(self) -> Path:
        """Write checkpoint-<step>. Under torchrun every rank takes part (rank 0 makes the folder,
        every rank writes its optimizer shards, rank 0 writes the rest and renames it into place)."""
        state = {"step": self.step, "data_position": vars(self.pos), "max_steps": self.max_steps,
                 "model_name_or_path": self.cfg.model_name_or_path, "world_size": self.env.world_size}
        if self.algo.state():
            state["algorithm"] = self.algo.state()
        tensor_state = None
        if self.cfg.save_optimizer_state:
            tensor_state = {"scheduler": self.scheduler.state_dict(), **ckpt.rng_state(), **self.algo.tensor_state()}
            if not self.env.enabled:
                tensor_state["optimizer"] = self.optimizer.state_dict()
        tmp = None
        if self.env.enabled:
            tmp = Path(dist.broadcast(str(ckpt.new_tmp(self.out, self.step)) if self.env.is_main else None, self.env))
            if tensor_state is not None:
                dist.save_optimizer(self.policy, self.optimizer, tmp / ckpt.OPTIMIZER_DIR)
                self.strategy.save_sharded(tmp)  # the algorithm's own models' (PPO's critic)
        # Gathered shards under FSDP (every rank takes part), None otherwise.
        weights, extra = dist.full_state_dict(self.model), self.algo.extra_models()
        final = self.out / f"checkpoint-{self.step}"
        if self.env.is_main:
            # LoRA: the adapter, and in the run's last checkpoint also the merged model.
            model = self.model if self.adapter is None else self.adapter.writer(merged=self.step >= self.max_steps)
            final = ckpt.save_checkpoint(self.out, self.step, model, self.tokenizer, state, tensor_state=tensor_state,
                                         total_limit=self.cfg.save_total_limit, extra_models=extra,
                                         model_state_dict=weights, tmp=tmp, callbacks=self.callbacks)
        dist.barrier(self.env)  # nobody goes on (or resumes) before the checkpoint is in place
        return final

    # ---- one step -------------------------------------------------------------------------------
    def _sampler(self):
        """What rollouts and evaluations run: the policy, or with LoRA its merged copy (r1zero.training.lora)."""
        return self.model if self.adapter is None else self.adapter.sampler(self.autocast_dtype)

    def _rollout(self, step: int, rows: list[int], prompt_index: list[int], t_gen: list[float]):
        """This rank's prompts (data ``rows``, sampling keys ``prompt_index``) encoded and sampled."""
        cfg, G = self.cfg, self.cfg.num_generations
        examples = [self.train_rows[i] for i in rows]
        prompts, prompt_ids = encode_prompts(self.task, self.tokenizer, examples, cfg.max_prompt_length)
        t0 = time.perf_counter()
        with dist.full_weights(self.policy):  # FSDP: whole weights, no communication while decoding
            rollout = generate(self._sampler(), self.tokenizer, prompt_ids, num_generations=G,
                            max_new_tokens=cfg.max_completion_length, eos_ids=self.eos_ids,
                            temperature=cfg.temperature, top_p=cfg.top_p, top_k=cfg.top_k,
                            batch_size=cfg.sampling_batch_size, seed=cfg.seed * 1_000_003 + step,
                            autocast_dtype=self.autocast_dtype, prompt_index=prompt_index,
                            cache="dynamic" if self.sharded else "auto",
                            max_cache_len=(cfg.max_prompt_length or 0) + cfg.max_completion_length)
        synchronize(self.device)  # timings measure the work, not its queueing
        t_gen.append(time.perf_counter() - t0)
        return prompts, examples, rollout

    def _score(self, step: int, prompts: list[str], examples: list[dict], rollout: Rollout) -> BatchScores:
        """The rewards of a rollout of this rank's prompts."""
        G = self.cfg.num_generations
        return self.rewarder(rollout.completions, [ex for ex in examples for _ in range(G)],
                             [p for p in prompts for _ in range(G)], rollout.lengths.tolist(), rollout.truncated.tolist(),
                             rollout.completion_id_lists, TrainerState(step - 1, self.max_steps))

    def _learn(self, batch: RolloutBatch, step: int):
        """(advantages, algorithm metrics, update metrics) of this rank's rows: pi_old and reference passes,
        the algorithm's advantages, the update loop."""
        if need_old_logprobs(self.algo, self.cfg, len(batch), self.env.world_size):
            batch.old_logprobs = self.passes.frozen_logprobs(self.policy, batch)
        if self.reference is not None:
            batch.ref_logprobs = self.reference.logprobs(self.passes, batch)
        advantages, algo_metrics = self.algo.advantages(batch)
        update = run_update(algo=self.algo, batch=batch, advantages=advantages, policy=self.policy, model=self.model,
                            optimizer=self.optimizer, passes=self.passes, health=self.health, env=self.env,
                            cfg=self.cfg, step=step, steps_done=self.step, callbacks=self.callbacks)
        return advantages, algo_metrics, update

    def train_step(self) -> tuple[dict[str, Any], list[dict]]:
        cfg, G = self.cfg, self.cfg.num_generations
        step = self.step + 1
        t0, t_gen = time.perf_counter(), []
        # The step's prompts (more rounds with dynamic_sampling), sampled and scored; `my_prompts` holds
        # this rank's prompts (all of them in one process) by their index in the trained batch.
        step_draw = draw_step(cfg, self.env, self.pos, len(self.train_rows), self.tokenizer.pad_token_id,
                              lambda rows, index: self._rollout(step, rows, index, t_gen),
                              lambda prompts, examples, rollout: self._score(step, prompts, examples, rollout))
        samples, my_prompts, all_sampled = step_draw.samples, step_draw.my_prompts, step_draw.all_sampled
        t_gen = sum(t_gen)
        # The whole step on every rank: advantages (batch statistics included) and metrics see all of it.
        rewards = torch.tensor(samples.scores.rewards, dtype=torch.float32)
        rows = torch.tensor([i * G + g for i in my_prompts for g in range(G)], dtype=torch.long)
        batch = rollout_batch(cfg, step_draw.my_rollout, rewards, rows)
        t1 = time.perf_counter()
        # No rows: dynamic sampling found no group with a reward spread; the step makes no update.
        advantages, algo_metrics, update = self._learn(batch, step) if len(batch) else (torch.zeros(0), {}, {})
        synchronize(self.device)
        t_upd = time.perf_counter() - t1
        lr = self.scheduler.get_last_lr()[0]
        self.scheduler.step()
        self.step, self.pos = step, step_draw.pos

        n = len(all_sampled.scores.rewards)
        metrics: dict[str, Any] = {
            **step_metrics(all_sampled.scores, all_sampled.lengths, all_sampled.truncated,
                           group_stats(torch.tensor(all_sampled.scores.rewards, dtype=torch.float32), G)),
            **think_metrics(self.task, self.tokenizer, all_sampled.completions),  # {} without a think part
            **step_draw.metrics, **algo_metrics, **update, metric_names.LEARNING_RATE: lr,
            metric_names.EPOCH: self.pos.epoch + self.pos.offset / len(self.train_rows),
            metric_names.TIME_STEP: time.perf_counter() - t0, metric_names.TIME_GENERATE: t_gen,
            metric_names.TIME_UPDATE: t_upd,
            metric_names.TOKENS_PER_SECOND: float(all_sampled.lengths.float().sum()) / max(
                dist.all_sum([t_gen], self.env)[0] / self.env.world_size, 1e-9),
        }
        metrics.update(self.health.end_step(step, n, all_sampled.scores))
        if (collapse := self.collapse.add(step, metrics)) is not None:
            log.warning(collapse)
        seq_adv = gather_rows(self.algo.sequence_advantages(advantages, batch.loss_mask), rows, len(rewards), self.env)
        return metrics, sample_rows(cfg, step, samples, seq_adv)

    def run_eval(self) -> dict[str, Any]:
        rows = self.evaluation.rows
        if not rows:
            return {}
        my_rows = rows[dist.row_share(len(rows), self.env)]  # under torchrun each rank evaluates a share
        summary, records = {metric_names.EVAL_ROWS: 0}, []
        with dist.full_weights(self.policy):
            if my_rows:
                sampler = Generator(self._sampler(), self.tokenizer, self.eos_ids, self.device, self.autocast_dtype)
                summary, records = self.evaluation.run(sampler, my_rows)
        self.model.train()
        if self.env.enabled:
            parts = dist.gather((summary, records), self.env)
            summary, records = merge_summaries([p[0] for p in parts]), [r for p in parts for r in p[1]]
        if self.env.is_main:
            write_jsonl(records, self.out / "eval" / f"step-{self.step}.jsonl")
        return summary

    # ---- the loop -------------------------------------------------------------------------------
    def train(self) -> dict[str, Any]:
        cfg = self.cfg
        if self.finished:
            if self.env.is_main:
                ckpt.prune_checkpoints(self.out, None)  # only the hidden leftovers of a killed save
            self._close()
            return {"output_dir": str(self.out), "finished": self.resumed_step, "checkpoint": str(self.resume_from)}
        main = self.env.is_main  # under torchrun rank 0 writes the run's files; every rank trains
        if main:
            self.out.mkdir(parents=True, exist_ok=True)
            # config.yaml says what the run does: the same keys, or those identity.check_resume let change.
            identity.record_changes(self.out, self.step, self.config_changes, cfg)
            save_config(cfg, self.out / identity.CONFIG)
            report.refresh(self.out, device=self.device)
            tracker = Tracker(self.out, cfg.report_to, cfg.run_name or self.out.name, cfg.to_dict(), resume_step=self.step,
                              on_log=self.callbacks.on_log)
        else:
            tracker = NullTracker()
        result: dict[str, Any] = {"output_dir": str(self.out)}
        try:
            self.callbacks.on_train_begin(self)
            if cfg.eval_on_start and self.step == 0:
                result["eval_start"] = ev = self.run_eval()
                tracker.log_eval(ev, 0)
                log.info("eval before training: %s", format_summary(ev))
            from tqdm.auto import tqdm

            bar = tqdm(total=self.max_steps, initial=self.step, disable=cfg.disable_tqdm or not main,
                       desc=cfg.algorithm, unit="step")
            last: dict[str, Any] = {}
            while self.step < self.max_steps:
                metrics, samples = self.train_step()
                last = metrics
                if self.step % cfg.logging_steps == 0 or self.step == self.max_steps:
                    tracker.log(metrics, self.step)
                tracker.log_samples(samples)
                self.health.raise_if_stopped()  # after logging, so the failing step is in the metrics
                if main and cfg.report_steps and self.step % cfg.report_steps == 0 and self.step < self.max_steps:
                    report.refresh(self.out, live=True)
                bar.update(1)
                bar.set_postfix(reward=f"{metrics[metric_names.REWARD]:.3f}", acc=f"{metrics[metric_names.ACCURACY]:.2f}",
                                len=f"{metrics[metric_names.MEAN_LENGTH]:.0f}")
                if cfg.eval_steps and self.step % cfg.eval_steps == 0 and self.step < self.max_steps:
                    tracker.log_eval(self.run_eval(), self.step)
                if cfg.save_steps and self.step % cfg.save_steps == 0 and self.step < self.max_steps:
                    self.save()
                self.callbacks.on_step_end(self.step, metrics)
            bar.close()
            # Resumed at the last step (killed during the final evaluation): the checkpoint is there.
            done = self.step == self.resumed_step and ckpt.own_checkpoint(self.out, self.resume_from)
            result["checkpoint"] = str(self.resume_from if done else self.save())
            if cfg.eval_on_end:
                result["eval_end"] = ev = self.run_eval()
                tracker.log_eval(ev, self.step)
                log.info("eval after training: %s", format_summary(ev))
            result["last_metrics"] = last
            result["report"] = report.refresh(self.out) if main else None
        finally:
            tracker.close()
            self._close()
        return result

    def _close(self) -> None:
        """End the reward workers and release output_dir."""
        self.rewarder.close()
        self.evaluation.close()
        self.lock.release()


__all__ = ["Trainer", "ConfigError", "DataError", "TaskError"]
