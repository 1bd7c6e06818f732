"""Per-token log-probabilities of completion tokens, computed in chunks.

Full-vocabulary logits for a whole batch (batch x length x vocab: 151,936 columns for Qwen) are the
largest tensor of an RL step. We run the transformer body once, keep only the hidden states of the
positions that predict completion tokens, and push those through the LM head a chunk at a time. With
gradients on, each chunk is checkpointed: its logits are recomputed in the backward pass instead of
being kept, so peak memory holds one chunk of logits, not all of them.

GRPO's G completions of a prompt share that prompt. Consecutive rows with the same prompt are run
as one: the prompt goes through the model once (with gradients when they are on) to build its KV
cache, the cache is repeated to the group's rows (``repeat_interleave`` keeps the autograd graph,
so the prompt's gradient sums over the group), and only the completion tokens are run on top of
it. The prompt's tokens thus cost one forward and one backward per group instead of G; values and
gradients equal the unshared computation (tests/test_lean_update.py).

Logits are divided by the sampling temperature before the softmax (a known trap: the samples came
from the tempered distribution, so their log-probs must too).
"""
from __future__ import annotations

import contextlib
import copy

import torch
import torch.nn.functional as F
from torch.utils.checkpoint import checkpoint
from transformers import DynamicCache

from r1zero.model_setup import ReferencePlacement, load_reference
from r1zero.rollout.hf import cache_kwarg
from r1zero.rollout.layout import position_ids_from_mask, trim_padding
from r1zero.training import distributed as dist
from r1zero.training import lora
from r1zero.training.token_logprobs import GradInPlace, at_least_fp32, sliced_target_logprobs, target_logprobs


def _chunk_logprobs(hidden: torch.Tensor, targets: torch.Tensor, weight: torch.Tensor,
                    bias: torch.Tensor | None, temperature: float, softcap: float | None,
                    entropy_grad: bool = False):
    logits = F.linear(hidden, weight, bias)
    if not (softcap or entropy_grad):
        return sliced_target_logprobs(logits, targets, temperature)
    logits = at_least_fp32(logits)
    if softcap:
        logits = torch.tanh(logits / softcap) * softcap
    return target_logprobs(logits, targets, temperature, entropy_grad)


def prompt_groups(prompt_ids: torch.Tensor, prompt_mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(first row of each run of identical consecutive prompts, run lengths)."""
    same = torch.zeros(prompt_ids.shape[0], dtype=torch.bool, device=prompt_ids.device)
    if prompt_ids.shape[0] > 1:
        same[1:] = (prompt_ids[1:] == prompt_ids[:-1]).all(-1) & (prompt_mask[1:] == prompt_mask[:-1]).all(-1)
    first = (~same).nonzero().squeeze(-1)
    ends = torch.cat([first[1:], first.new_tensor([prompt_ids.shape[0]])])
    return first, ends - first


def token_plan(input_ids: torch.Tensor, attention_mask: torch.Tensor, prompt_width: int,
               completion_mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """(rows, columns) of the completion tokens that count, in row-major order, and the prompt
    groups (first row of each run of identical prompts, run lengths): what the pass selects by.
    Made from the CPU copy of a micro-batch (ForwardPasses), it costs the device no sync; made on the
    device, each of its ``nonzero`` calls waits for the device."""
    rows, cols = completion_mask.bool().nonzero(as_tuple=True)
    if prompt_width > 0:
        first, counts = prompt_groups(input_ids[:, :prompt_width], attention_mask[:, :prompt_width])
    else:
        first = counts = torch.zeros(0, dtype=torch.long, device=input_ids.device)
    return rows, cols, first, counts


def _recomputes_activations(model) -> bool:
    # transformers 5 renamed is_gradient_checkpointing (deprecated) to is_activation_checkpointing.
    name = "is_activation_checkpointing" if hasattr(type(model), "is_activation_checkpointing") else "is_gradient_checkpointing"
    return bool(getattr(model, name, False))


def sparse_embedding_grad(decoder, head) -> bool:
    """Whether the token embeddings are looked up with a sparse gradient (``_token_inputs``).

    The dense backward of an embedding fills a vocabulary x hidden gradient with zeros and adds it to
    the weight's, for every lookup (two per micro-batch with shared prompts): on a CPU that was 1-1.5
    s of an 8 s update of SmolLM2 (49,152 x 576). The sparse one holds only the rows looked up, which
    autograd adds into the dense gradient the LM head gives the same tensor. So only a plain
    ``nn.Embedding`` (a subclass may scale or wrap it) whose trained weight is the head's: the
    summed gradient is then dense, as AdamW needs. Not under torchrun, whose gradient reduction
    keeps the layout it has always had."""
    emb = decoder.get_input_embeddings()
    return (type(emb) is torch.nn.Embedding and emb.weight.requires_grad and emb.weight is head.weight
            and emb.max_norm is None and not dist.current().enabled)


def _token_inputs(decoder, ids: torch.Tensor, sparse: bool) -> dict:
    """The decoder's token input: ``ids``, or with ``sparse`` their embeddings (same values)."""
    if not (sparse and torch.is_grad_enabled()):
        return {"input_ids": ids}
    emb = decoder.get_input_embeddings()
    weight = GradInPlace.apply(emb.weight, emb.weight.dtype)
    return {"inputs_embeds": F.embedding(ids, weight, emb.padding_idx, sparse=True)}


# What one more decoder call costs, in completion positions: a bucket pays off when it saves more
# padded positions than this (``length_buckets``). Measured on the 2-core CPU with the 135M model in
# bf16: a forward call of 1 row x 1 position took 52 ms (every weight read once), and a position
# about 0.5 ms more forward, about twice that backward. On one update of the embedded default (32
# rows, widths 5-32) the forward and backward took 2.6-2.8 s in one batch and 2.3-2.5 s in buckets,
# with a cost of 32 or 100 alike. On CUDA a call's kernel launches are dear and positions cheap:
# not measured there, so CUDA keeps one bucket (and makes no host sync for the widths).
BUCKET_COST_POSITIONS = 64
MAX_BUCKETS = 4


def length_buckets(widths: list[int], max_buckets: int, cost: int) -> list[list[int]]:
    """Rows (indices into ``widths``) grouped into at most ``max_buckets`` buckets of similar width,
    minimising the positions computed (each bucket's rows x its widest row) plus ``cost`` per bucket;
    rows of width 0 are left out. Widest bucket first; rows in each bucket by width, ties by index."""
    order = sorted((w, i) for i, w in enumerate(widths) if w > 0)
    n = len(order)
    if n == 0:
        return []
    inf = float("inf")
    # best[k][j]: least cost of the first j rows (by width) in k buckets; cut[k][j]: where the last begins.
    best = [[inf] * (n + 1) for _ in range(max_buckets + 1)]
    cut = [[0] * (n + 1) for _ in range(max_buckets + 1)]
    best[0][0] = 0
    for k in range(1, max_buckets + 1):
        for j in range(1, n + 1):
            for i in range(j):
                c = best[k - 1][i] + (j - i) * order[j - 1][0] + cost
                if c < best[k][j]:
                    best[k][j], cut[k][j] = c, i
    k = min(range(1, max_buckets + 1), key=lambda k: best[k][n])
    buckets, j = [], n
    while k > 0:
        i = cut[k][j]
        buckets.append([idx for _, idx in order[i:j]])
        j, k = i, k - 1
    return buckets


def _prompt_cache_for(cache: DynamicCache, groups: torch.Tensor) -> DynamicCache:
    """A cache holding the prompt K/V of ``cache`` (one row per prompt group) for rows of these
    groups: an index_select per layer, so the autograd graph reaches the prompts' pass."""
    rows_cache = copy.copy(cache)
    rows_cache.layers = []
    for layer in cache.layers:
        one = copy.copy(layer)
        one.keys, one.values = layer.keys.index_select(0, groups), layer.values.index_select(0, groups)
        rows_cache.layers.append(one)
    return rows_cache


def _shared_prompt_hidden(decoder, input_ids, attention_mask, prompt_width, first, counts, widths, sparse: bool):
    """Hidden states (B, C, H) at the positions predicting completion tokens, each prompt run once;
    ``widths`` (B,): the positions each row needs (its last counted completion token + 1; the states
    beyond are zeros), or None: every row runs all C (one bucket); ``sparse``: sparse_embedding_grad.

    The completions run in buckets of rows of similar width (``length_buckets``), each padded only to
    its widest row: a batch padded to its longest completion (32 tokens where most rows end after
    10-15 in the embedded default) spent most of the pass on padding. A row's states do not depend on
    the rows beside it, so the buckets change nothing but the batch shapes."""
    P = prompt_width
    B, C = input_ids.shape[0], input_ids.shape[1] - P
    p_ids, p_mask = input_ids[first, :P], attention_mask[first, :P]
    cache = DynamicCache()
    kw = cache_kwarg(decoder)
    out = decoder(**_token_inputs(decoder, p_ids, sparse), attention_mask=p_mask, position_ids=position_ids_from_mask(p_mask),
                  use_cache=True, **{kw: cache})
    # Each row's prompt group, as one index built once: repeat_interleave with a count tensor on the GPU
    # waits for the device to learn its output size; with ``output_size`` it does not.
    group = torch.repeat_interleave(torch.arange(len(first), device=input_ids.device), counts, output_size=B)
    h_last = out.last_hidden_state[:, -1:].index_select(0, group)  # predicts each first completion token
    if C == 1:
        return h_last
    # None: one bucket of every row in batch order (CUDA), run as the rows stand: no gather, no reorder.
    buckets = [None] if widths is None else length_buckets(widths, MAX_BUCKETS, BUCKET_COST_POSITIONS)
    prompt_len = attention_mask[:, :P].sum(-1, keepdim=True)
    pieces, order = [], []
    for rows in buckets:
        w = C if rows is None else max(widths[r] for r in rows)
        if w <= 1:
            continue
        sel = slice(None) if rows is None else torch.tensor(rows, device=input_ids.device)
        pos = prompt_len[sel] + torch.arange(w - 1, device=input_ids.device).unsqueeze(0)
        h = decoder(**_token_inputs(decoder, input_ids[sel, P:P + w - 1], sparse),
                    attention_mask=attention_mask[sel, :P + w - 1], position_ids=pos, use_cache=True,
                    **{kw: _prompt_cache_for(cache, group[sel])}).last_hidden_state
        pieces.append(F.pad(h, (0, 0, 0, C - w)) if w < C else h)
        order += range(B) if rows is None else rows
    if not pieces:
        return F.pad(h_last, (0, 0, 0, C - 1))
    if order == list(range(B)):
        return torch.cat([h_last, pieces[0]], dim=1)
    # Rows no bucket ran (a width of 0 or 1) get zeros; then back to the batch's row order.
    ran = set(order)
    rest = [r for r in range(B) if r not in ran]
    if rest:
        pieces.append(h_last.new_zeros(len(rest), C - 1, h_last.shape[-1]))
        order += rest
    inverse = torch.empty(B, dtype=torch.long)
    inverse[torch.tensor(order)] = torch.arange(B)
    tail = torch.cat(pieces).index_select(0, inverse.to(input_ids.device))
    return torch.cat([h_last, tail], dim=1)


def _chunked_head_logprobs(hidden: torch.Tensor, targets: torch.Tensor, weight: torch.Tensor,
                           bias: torch.Tensor | None, temperature: float, softcap: float | None, chunk_size: int,
                           entropy_grad: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """(log-probs, entropies) (N,) of ``targets`` from the hidden states (N, H) through the LM head
    ``weight``/``bias``, ``chunk_size`` rows at a time; with gradients on, each chunk is checkpointed
    (its logits recomputed in the backward pass, not kept)."""
    pieces_lp, pieces_ent = [], []
    for start in range(0, hidden.shape[0], chunk_size):
        h = hidden[start:start + chunk_size]
        t = targets[start:start + chunk_size]
        if torch.is_grad_enabled():
            lp, ent = checkpoint(_chunk_logprobs, h, t, weight, bias, temperature, softcap, entropy_grad,
                                 use_reentrant=False)
        else:
            lp, ent = _chunk_logprobs(h, t, weight, bias, temperature, softcap)
        pieces_lp.append(lp)
        pieces_ent.append(ent)
    flat_lp = torch.cat(pieces_lp) if pieces_lp else at_least_fp32(hidden.new_zeros(0))
    flat_ent = torch.cat(pieces_ent) if pieces_ent else at_least_fp32(hidden.new_zeros(0))
    return flat_lp, flat_ent


def _full_logits_logprobs(model, input_ids: torch.Tensor, attention_mask: torch.Tensor, position_ids: torch.Tensor,
                          prompt_width: int, temperature: float,
                          entropy_grad: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """(log-probs, entropies) (B, C) of every completion position from the model's full logits: for a
    model whose LM head cannot be run apart from its body."""
    logits = model(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids,
                   use_cache=False).logits[:, prompt_width - 1:-1]
    return target_logprobs(at_least_fp32(logits), input_ids[:, prompt_width:], temperature, entropy_grad)


def completion_logprobs(model, input_ids: torch.Tensor, attention_mask: torch.Tensor, prompt_width: int,
                        completion_mask: torch.Tensor, *, temperature: float = 1.0,
                        chunk_size: int = 1024, entropy_grad: bool = False,
                        share_prompts: bool = True, plan=None) -> tuple[torch.Tensor, torch.Tensor]:
    """Log-probs (B, C) and entropies (B, C) of the completion tokens.

    ``input_ids`` is ``[left-padded prompt (width P) | completion (width C)]``; ``attention_mask``
    covers both; ``completion_mask`` (B, C) marks the tokens that count (up to and including EOS).
    Masked-out positions get 0. Gradients flow when grad mode is on; to the entropies only with
    ``entropy_grad`` (an entropy bonus in the loss), otherwise they are detached. ``share_prompts``:
    run each run of identical consecutive prompts once (module docstring); off, or when the model
    recomputes activations (gradient checkpointing keeps no cache), every row runs in full.
    ``plan``: ``token_plan`` of these rows on this device (default: made here).
    """
    B, L = input_ids.shape
    C = L - prompt_width
    position_ids = position_ids_from_mask(attention_mask)
    head = model.get_output_embeddings()
    decoder = model.get_decoder() if hasattr(model, "get_decoder") else None
    softcap = getattr(model.config, "final_logit_softcapping", None)
    rows, cols, first, counts = plan if plan is not None else token_plan(input_ids, attention_mask, prompt_width,
                                                                          completion_mask)
    targets = input_ids[rows, prompt_width + cols]  # (N,) the completion tokens that count, row-major

    # A Linear head, or peft's wrapper of one (lora_modules_to_save: [lm_head]), whose .weight/.bias
    # are the trained copy's (the original's with the adapter disabled).
    linear_head = isinstance(head, torch.nn.Linear) or isinstance(getattr(head, "original_module", None), torch.nn.Linear)
    if decoder is not None and decoder is not model and linear_head:
        sparse = sparse_embedding_grad(decoder, head)
        if (share_prompts and prompt_width > 0 and len(first) < B
                and not _recomputes_activations(model)):
            # Buckets on the CPU only (BUCKET_COST_POSITIONS); there the plan is already on the host.
            widths = (torch.zeros(B, dtype=torch.long).scatter_reduce_(0, rows, cols + 1, "amax").tolist()
                      if input_ids.device.type == "cpu" else None)
            hidden = _shared_prompt_hidden(decoder, input_ids, attention_mask, prompt_width, first, counts, widths,
                                           sparse)[rows, cols]
        else:
            # Only the states that predict completion tokens: positions P-1 .. L-2.
            hidden = decoder(**_token_inputs(decoder, input_ids[:, :-1], sparse), attention_mask=attention_mask[:, :-1],
                             position_ids=position_ids[:, :-1], use_cache=False).last_hidden_state
            hidden = hidden[rows, prompt_width - 1 + cols]  # (N, H)
        weight = head.weight
        if sparse and torch.is_grad_enabled():  # its gradients added into .grad in place (GradInPlace)
            device = weight.device.type
            weight = GradInPlace.apply(weight, torch.get_autocast_dtype(device) if torch.is_autocast_enabled(device)
                                       else weight.dtype)
        flat_lp, flat_ent = _chunked_head_logprobs(hidden, targets, weight, head.bias, temperature, softcap,
                                                   chunk_size, entropy_grad)
    else:
        # Models without a separable head: full logits for this micro-batch only.
        lp_all, ent_all = _full_logits_logprobs(model, input_ids, attention_mask, position_ids, prompt_width,
                                                temperature, entropy_grad)
        flat_lp, flat_ent = lp_all[rows, cols], ent_all[rows, cols]

    logprobs = torch.zeros(B, C, dtype=flat_lp.dtype, device=input_ids.device)
    entropy = torch.zeros(B, C, dtype=flat_lp.dtype, device=input_ids.device)
    logprobs = logprobs.index_put((rows, cols), flat_lp)
    entropy = entropy.index_put((rows, cols), flat_ent if entropy_grad else flat_ent.detach())
    return logprobs, entropy


class CompletionLogprobs(torch.nn.Module):
    """``completion_logprobs`` of the model it holds, as a module's forward.

    One forward per micro-batch is what DDP and FSDP2 wrap: DDP expects one forward per backward,
    and FSDP2 gathers the root's weights (embeddings, final norm, LM head) around its root module's
    forward; the shared-prompt path calls the decoder twice and the head directly, so the root must
    be this module, not the Hugging Face model (r1zero.training.distributed).
    """

    def __init__(self, model: torch.nn.Module):
        super().__init__()
        self.model = model

    def forward(self, input_ids, attention_mask, prompt_width: int, completion_mask, *, temperature: float = 1.0,
                chunk_size: int = 1024, entropy_grad: bool = False, plan=None):
        return completion_logprobs(self.model, input_ids, attention_mask, prompt_width, completion_mask,
                                   temperature=temperature, chunk_size=chunk_size, entropy_grad=entropy_grad,
                                   plan=plan)


class ForwardPasses:
    """The forward passes of an update over rows of a RolloutBatch (r1zero.algorithms.base): trimmed
    of all-padding columns (r1zero.rollout.layout), on the run's device, under its autocast, and
    padded back to the batch's completion width so every caller indexes one shape. ``module`` is
    a CompletionLogprobs (policy, reference) or PPO's CompletionValues, wrapped under torchrun."""

    def __init__(self, device: torch.device, autocast_dtype, temperature: float, chunk_size: int,
                 micro_batch_size: int):
        self.device, self.autocast_dtype = device, autocast_dtype
        self.temperature, self.chunk_size, self.micro_batch_size = temperature, chunk_size, micro_batch_size

    def autocast(self):
        if self.autocast_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self.autocast_dtype)

    def to_device(self, t: torch.Tensor) -> torch.Tensor:
        """``t`` on the run's device; from the host, a copy that does not wait for the device's queued work."""
        return t.to(self.device, non_blocking=True)

    def _run(self, module, batch, rows, plan: bool = False, **kwargs):
        """``module`` on the rows' micro-batch, trimmed on the CPU; ``plan``: also the log-prob pass's
        token plan, made on the CPU (no device sync)."""
        ids, am, cm, pw = trim_padding(batch.input_ids[rows], batch.attention_mask[rows], batch.completion_mask[rows],
                                       batch.prompt_width)
        if plan:
            kwargs["plan"] = tuple(self.to_device(t) for t in token_plan(ids, am, pw, cm))
        with self.autocast():
            out = module(self.to_device(ids), self.to_device(am), pw, self.to_device(cm), **kwargs)
        C = batch.completion_mask.shape[1]

        def full_width(t):
            pad = C - t.shape[1]
            return torch.nn.functional.pad(t, (0, pad)) if pad else t

        return tuple(full_width(t) for t in out) if isinstance(out, tuple) else full_width(out)

    def logprobs(self, module, batch, rows, entropy_grad: bool = False):
        """(log-probs, entropies), each (len(rows), C)."""
        return self._run(module, batch, rows, plan=True, temperature=self.temperature, chunk_size=self.chunk_size,
                         entropy_grad=entropy_grad)

    def values(self, module, batch, rows):
        """(len(rows), C) critic values."""
        return self._run(module, batch, rows)

    def frozen_logprobs(self, module, batch) -> torch.Tensor:
        """(N, C) log-probs of every row without gradients, on the CPU, a micro-batch at a time."""
        return self._frozen(lambda rows: self.logprobs(module, batch, rows)[0], len(batch))

    def frozen_values(self, module, batch) -> torch.Tensor:
        """(N, C) critic values of every row without gradients, on the CPU, a micro-batch at a time."""
        return self._frozen(lambda rows: self.values(module, batch, rows), len(batch))

    @torch.no_grad()
    def _frozen(self, forward, n: int) -> torch.Tensor:
        """``forward(rows)`` of rows 0..n-1, a micro-batch (a slice of rows) at a time, concatenated on the CPU."""
        mb = self.micro_batch_size
        out = []
        for s in range(0, n, mb):
            rows = slice(s, s + mb)
            out.append(forward(rows).cpu())
        return torch.cat(out)


@contextlib.contextmanager
def on_device(model, device: torch.device):
    """``model`` (an offloaded reference kept in CPU memory; None: nothing to move) on ``device`` for
    the block, back in CPU memory after it."""
    if model is None:
        yield
        return
    model.to(device)
    try:
        yield
    finally:
        model.to("cpu")


class Reference:
    """The reference model's log-probs (the KL term's): the frozen starting model (``model``) where its
    placement keeps it (r1zero.model_setup.ReferencePlacement; ``moved``: visiting the run's device for
    each pass), or with LoRA the policy with its adapter disabled (r1zero.training.lora.reference).
    ``module``: what the pass runs, a CompletionLogprobs (wrapped under torchrun)."""

    def __init__(self, module, model=None, moved: bool = False, adapter: lora.LoraPolicy | None = None):
        self.module, self.model, self.moved, self.adapter = module, model, moved, adapter

    @classmethod
    def build(cls, cfg, env: dist.DistEnv, policy, adapter: lora.LoraPolicy | None, device: torch.device,
              autocast_dtype, sharded: bool) -> Reference:
        """The reference of a run whose (wrapped) ``policy`` is ``sharded`` or not: with LoRA the
        policy's base weights, else the starting model loaded and wrapped where its placement says."""
        if adapter is not None:
            return cls(policy, adapter=adapter)
        placement = ReferencePlacement.of(cfg, device, sharded)
        model = load_reference(cfg, placement)
        module = dist.wrap(CompletionLogprobs(model), cfg.distributed, env, trainable=False, param_dtype=autocast_dtype,
                           cpu_offload=placement.fsdp_cpu_offload)
        return cls(module, model, placement.moved)

    def logprobs(self, passes: ForwardPasses, batch) -> torch.Tensor:
        """(N, C) reference log-probs of every row of ``batch``, on the CPU (ForwardPasses.frozen)."""
        with lora.reference(self.adapter), on_device(self.model if self.moved else None, passes.device):
            return passes.frozen_logprobs(self.module, batch)
