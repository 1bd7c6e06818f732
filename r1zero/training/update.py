"""The one update loop every algorithm runs: passes x mini-batches x micro-batches.

For ``num_iterations`` passes, this process's rollouts are cut into mini-batches of
``mini_batch_prompts`` prompts (whole groups; under torchrun each process holds an equal piece of
every mini-batch), one optimizer update each, accumulated over micro-batches of
``micro_batch_size`` rows. Each micro-batch's loss comes from the algorithm
(r1zero.algorithms.base.Algorithm.policy_loss), normalised by r1zero.algorithms.losses.aggregate
with the mini-batch's rows and tokens over all processes (a ``Normaliser``), so that the accumulated
gradient is the gradient of the whole mini-batch's loss:

* ``grpo`` and ``dr_grpo`` are means over sequences, so a micro-batch of ``b`` of the mini-batch's
  ``B`` rows weighs ``b / B``: the accumulated gradient equals the whole mini-batch's exactly.
* ``dapo`` divides every micro-batch's token-loss sum by the mini-batch's token count over all
  processes: exact as well.
* ``bnpo`` divides by the micro-batch's own token count (as veRL's micro-batches do), then weighs
  it ``b / B``: each micro-batch is a token mean, and the mini-batch loss is the row-weighted mean
  of those, which equals the whole mini-batch's token mean only when micro-batches hold equal
  token counts. That is the intended behaviour, as in TRL (its per-device batch, divided by the
  accumulation steps) and veRL (token-mean ``agg_loss`` per micro-batch), so
  ``micro_batch_size`` changes a bnpo update (tests/test_microbatch.py checks exactly
  this rule); use ``dapo`` for a token mean that does not depend on the micro-batch size.
* the other loss types use one of these reductions or luspo's per-sequence token sum, weighed
  like ``grpo`` (r1zero.algorithms.losses.REDUCTIONS).

The gradient reduction of DDP / FSDP2 averages over processes, so each process back-propagates
world_size x its share, and reduces gradients once per mini-batch (after its last micro-batch).
Then the gradients are clipped to ``max_grad_norm`` and the step is taken unless the loss or the
norm is not finite (r1zero.training.guards: the update is skipped, weights and AdamW state untouched).
pi_old is the policy that sampled: when there is a single update per step (and the algorithm does
not need it for its advantages) its log-probs equal the current ones, so they are the current
log-probs detached and no extra forward pass is spent.
"""
from __future__ import annotations

from typing import Any

import torch

from r1zero.algorithms.losses import Normaliser
from r1zero.observe import metrics as metric_names
from r1zero.observe.metrics import loss_metrics
from r1zero.training import distributed as dist
from r1zero.training.callbacks import NO_CALLBACKS, CallbackList
from r1zero.training.optim import clip_and_step


class MetricSums:
    """Sums (``add``) and token-weighted means (``add_weighted``) over an update's micro-batches,
    combined over processes by ``finish``. A value may be a 0-d tensor on the device: it is read
    (one host sync for all of them) in ``finish``, after every backward pass has been queued, so the
    micro-batch loop never waits for the device."""

    def __init__(self):
        # Until ``finish``: every value added, in order (floats or device tensors); then their sums.
        self.sums: dict[str, Any] = {}
        self.weighted: dict[str, Any] = {}  # key -> (numerators, denominators), then [sum, sum]

    def add(self, key: str, value) -> None:
        self.sums.setdefault(key, []).append(value)

    def add_weighted(self, key: str, value, weight: float) -> None:
        self.add_ratio(key, value * weight, weight)

    def add_ratio(self, key: str, numerator, denominator) -> None:
        """``means()[key]`` is the sum of the numerators over the sum of the denominators."""
        numerators, denominators = self.weighted.setdefault(key, ([], []))
        numerators.append(numerator)
        denominators.append(denominator)

    def _read(self) -> None:
        """Every value to a float (tensors: one transfer per device), summed in the order added."""
        parts = [*self.sums.values(), *(part for pair in self.weighted.values() for part in pair)]
        by_device: dict[Any, list] = {}
        for t in (v for part in parts for v in part if isinstance(v, torch.Tensor)):
            by_device.setdefault(t.device, []).append(t)
        read = {id(t): f for ts in by_device.values()
                for t, f in zip(ts, torch.stack([t.detach().reshape(()).double() for t in ts]).tolist())}

        def total(part) -> float:
            acc = 0.0
            for v in part:
                acc += read[id(v)] if isinstance(v, torch.Tensor) else float(v)
            return acc

        self.sums = {k: total(part) for k, part in self.sums.items()}
        self.weighted = {k: [total(num), total(den)] for k, (num, den) in self.weighted.items()}

    def total(self, key: str) -> float:
        return self.sums.get(key, 0.0)

    def finish(self, env) -> None:
        """Everything read off the device and summed over processes (the same keys on every process:
        the same settings)."""
        self._read()
        s_keys, w_keys = sorted(self.sums), sorted(self.weighted)
        flat = dist.all_sum([*(self.sums[k] for k in s_keys), *(v for k in w_keys for v in self.weighted[k])], env)
        self.sums = dict(zip(s_keys, flat[:len(s_keys)]))
        rest = flat[len(s_keys):]
        self.weighted = {k: [rest[2 * i], rest[2 * i + 1]] for i, k in enumerate(w_keys)}

    def means(self) -> dict[str, float]:
        return {k: v / max(w, 1.0) for k, (v, w) in self.weighted.items()}


def mini_batch_rows(cfg, world_size: int) -> int:
    """Rows of one mini-batch on this process."""
    return (cfg.mini_batch_prompts or cfg.prompts_per_step) // world_size * cfg.num_generations


def need_old_logprobs(algo, cfg, n_rows: int, world_size: int) -> bool:
    """Whether pi_old takes its own pass: the algorithm reads it, or the weights move before its last use."""
    return algo.always_old_logprobs or cfg.num_iterations > 1 or n_rows > mini_batch_rows(cfg, world_size)


def _micro_batch_inputs(batch, rows: list[int], logprobs: torch.Tensor, passes, with_sampled: bool):
    """The rows' pi_old log-probs (the current ones detached when there is no separate pass), the
    reference's and the sampler's (each None when absent; the sampler's also when not wanted), on the device."""
    old = passes.to_device(batch.old_logprobs[rows]) if batch.old_logprobs is not None else logprobs.detach()
    ref = passes.to_device(batch.ref_logprobs[rows]) if batch.ref_logprobs is not None else None
    sampled = (passes.to_device(batch.sampled_logprobs[rows])
               if batch.sampled_logprobs is not None and with_sampled else None)
    return old, ref, sampled


def _add_micro_batch(acc: MetricSums, loss, entropy, stats, mask, dev_mask, old, sampled, first_pass: bool) -> None:
    """A micro-batch's loss, token entropy and loss statistics (r1zero.algorithms.stats.LossStats),
    kept on the device (read once, after the update): no host sync here."""
    tok = float(mask.sum())  # the mask lives on the CPU
    acc.add(metric_names.LOSS, loss.detach())
    acc.add_ratio(metric_names.ENTROPY, (entropy.detach() * dev_mask).sum(), tok)
    for k, v in loss_metrics(stats).items():
        acc.add_weighted(k, v, tok)
    if first_pass and sampled is not None:
        # pi_old's log-probs as the trainer computes them against the sampler's own.
        gap = (old - sampled).abs() * dev_mask
        acc.add_ratio(metric_names.SAMPLING_LOGP_DIFF, gap.sum(), tok)


def _update_metrics(algo, acc: MetricSums, grad_norms: list[float], updates: int, trained: bool) -> dict[str, float]:
    """The update's metrics from the sums over processes: the algorithm's first (``end_update``),
    then the policy's loss and gradient norm per optimizer update, then the token means."""
    out = algo.end_update(acc)
    if trained:
        out.update({metric_names.LOSS: acc.total(metric_names.LOSS) / updates, metric_names.GRAD_NORM: sum(grad_norms) / len(grad_norms)})
        if algo.entropy_coef.adaptive:
            out[metric_names.ENTROPY_COEF] = algo.entropy_coef.coef  # for the next update (TRL's metric)
    out.update(acc.means())
    return out


def run_update(*, algo, batch, advantages, policy, model, optimizer, passes, health, env, cfg, step: int,
               steps_done: int, callbacks: CallbackList = NO_CALLBACKS) -> dict[str, float]:
    """Train on one step's rollouts (this process's rows of ``batch``); returns the step's update
    metrics, summed over processes: loss, grad_norm, entropy, the loss's clip/ratio/kl token means,
    and whatever the algorithm adds (``end_update``). ``callbacks.on_optimizer_step`` follows each step."""
    W = env.world_size
    n = len(batch)
    mini_rows = mini_batch_rows(cfg, W)
    starts = range(0, n, mini_rows)
    # Each mini-batch's token count over all processes (the dapo normaliser): one all-reduce per step.
    mini_tokens_all = dist.all_sum([batch.loss_mask[m0:m0 + mini_rows].sum() for m0 in starts], env)
    train_policy = algo.updates_policy(steps_done)
    entropy_grad = algo.entropy_coef.enabled
    mb = cfg.micro_batch_size
    # top_entropy_quantile's quantile is over the micro-batch on every process (as TRL gathers it).
    gather_all = (lambda t: torch.cat([x.to(t.device) for x in dist.gather(t.cpu(), env)])) if env.enabled else None
    # The sampler's log-probs: the mismatch metric's (first pass), and the correction's and the
    # off-policy mask's on every pass.
    reads_sampled = cfg.vllm_importance_sampling_correction or cfg.off_policy_mask_threshold is not None
    acc = MetricSums()
    grad_norms: list[float] = []
    updates = 0
    for it in range(cfg.num_iterations):
        for m0, mini_tokens in zip(starts, mini_tokens_all):
            rows = list(range(m0, min(n, m0 + mini_rows)))
            optimizer.zero_grad(set_to_none=True)
            algo.start_mini_batch()
            for s in range(0, len(rows), mb):
                r = rows[s:s + mb]
                last = s + mb >= len(rows)
                if train_policy:
                    mask = batch.loss_mask[r]
                    with dist.grad_sync(policy, last):  # reduced once per mini-batch, after its last micro-batch
                        lp, ent = passes.logprobs(policy, batch, r, entropy_grad=entropy_grad)
                        dev_mask = passes.to_device(mask)
                        old, ref, sampled = _micro_batch_inputs(batch, r, lp, passes, it == 0 or reads_sampled)
                        loss, stats = algo.policy_loss(lp, ent, old, ref, passes.to_device(advantages[r]), dev_mask,
                                                       Normaliser(cfg.max_completion_length, mini_tokens,
                                                                  len(rows) * W, gather_all), sampled)
                        (loss * W).backward()
                    health.note_loss(loss.detach())
                    _add_micro_batch(acc, loss, ent, stats, mask, dev_mask, old, sampled, it == 0)
                algo.after_micro_batch(batch, r, mini_tokens, last, acc)
            if train_policy:
                grad_norms.append(clip_and_step(model, optimizer, cfg.max_grad_norm,
                                                lambda gn: health.update_ok(gn, step)))
                algo.entropy_coef.step(lambda values: dist.all_sum(values, env))  # use_adaptive_entropy
                callbacks.on_optimizer_step(step)  # weights moved, step unsaved
            algo.end_mini_batch(acc)
            updates += 1
    optimizer.zero_grad(set_to_none=True)
    acc.finish(env)
    return _update_metrics(algo, acc, grad_norms, updates, train_policy)
