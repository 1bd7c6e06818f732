"""The rollout engine: sampling G completions per prompt, shaped for GRPO.

What it does differently from transformers' ``generate`` (the models stay transformers' models):

- Each prompt is prefilled once; its KV cache is then repeated to its G sample rows, so the prompt
  costs one forward pass per group instead of G.
- A row that produced an EOS id leaves the decode batch (its cache rows are dropped), so finished
  completions stop costing compute. Stopping honours every EOS id. The finished rows are looked at
  every ``check_every`` steps (8 on CUDA, where each look is a host sync; 1 on the CPU) and dropped
  at once from the lean step's cache (it moves only the rows that fill their places), once a quarter
  of the batch has finished from transformers' (each drop copies the whole cache).
- On a CPU the engine keeps freed memory in the process (r1zero.host_memory, as the trainer does):
  a decode step's logits and sampler are tensors of rows x vocabulary (12.6 MB in float32 at 64 rows
  of a 49,152-token vocabulary), and glibc would otherwise map each afresh and fault its pages in,
  which took about a fifth of a 64-row rollout's time on the 2-core VM (issue 25).
- The dynamic cache decodes a Llama-family model (Llama, Mistral, Qwen2, Qwen3) in bf16 (the
  sampling copy), and in float32 on a CPU whose oneDNN runs float32 products, with a lean step of its
  own (r1zero.rollout.lean_decode: the same arithmetic, a fraction of the per-step overhead, the
  weights packed for oneDNN: r1zero.rollout.packed_linear, which says why float32 gains 2-5x per
  product on the 2-core AMD VM); other models, and float32 elsewhere, decode through the model's
  forward on a cache that reserves the prompt + completion positions up front and is written in
  place (r1zero.rollout.kv_cache), instead of transformers' copy of the whole cache at every step.
- Sampling (temperature, top-k, top-p, applied in transformers' order and with its tie rules) runs
  on the model's device, in one pass over the vocabulary when nothing is filtered (``draw``), and its
  randomness is counter-based: the uniform number that picks row r's token at step t is a hash of
  (seed, prompt index, sample index, t). What a row draws therefore depends neither on ``batch_size``
  nor on which other rows are still running (issue 6, distributed rollouts, needs exactly this), and
  the global RNG is never touched.
- Greedy decoding (temperature 0) is the plain argmax, token-identical to ``generate``.
- ``cache="static"``: a preallocated KV cache (transformers' StaticCache) so every decode step has
  the same shapes; on CUDA the decode step is compiled with ``torch.compile(mode="reduce-overhead")``
  (CUDA graphs). In that mode rows are not dropped (fixed shapes are the point); finished rows are
  fed padding and the loop ends when every row has finished, looked at every 8 steps (the decode
  loop has no other host sync: tokens stay on the device until the chunk ends). The shapes are
  bounded: every chunk has the same row count (a short last chunk is filled with finished copies of
  its last row) and the cache length is ``max_cache_len`` (the config's prompt + completion
  length) rounded up to 256. On CPU it runs eagerly unless ``compile=True`` (the tests compile it
  on CPU to run the GPU path's logic). One cache per (rows, length) is kept on the model and reset
  for the next rollout, so the CUDA graphs, which record buffer addresses, are recorded once.
- ``autocast_dtype``: the rollout runs a copy of the weights in that dtype
  (r1zero.rollout.weights), so compute, keys and values share one dtype.
- ``with_logprobs``: also the sampler's log-prob of each sampled token under the tempered,
  unfiltered distribution (what the trainer computes), so the trainer can log how far its own
  log-probs are from the sampler's (bf16 sampling is slightly off-policy).
"""
from __future__ import annotations

import contextlib
import logging
import sys

import torch
from transformers import DynamicCache, StaticCache

from r1zero.host_memory import keep_freed_memory
from r1zero.rollout.hf import cache_kwarg
from r1zero.rollout.kv_cache import reserved_cache
from r1zero.rollout.layout import left_pad, position_ids_from_mask
from r1zero.rollout.lean_decode import LeanDecoder, kept_rows, lean_support
from r1zero.rollout.packed_linear import packs_dtype
from r1zero.rollout.weights import rollout_model

log = logging.getLogger("r1zero")

_M32 = 0xFFFFFFFF


def _mix32(x):
    """A 32-bit integer hash (two multiply-xorshift rounds); works on ints and int64 tensors.

    Values stay below 2**32 and the multiplier below 2**27, so int64 products never overflow.
    """
    x = (((x >> 16) ^ x) * 0x45D9F3B) & _M32
    x = (((x >> 16) ^ x) * 0x45D9F3B) & _M32
    return (x >> 16) ^ x


def row_keys(seed: int, prompt_index: list[int], sample_index: list[int]) -> torch.Tensor:
    """One 32-bit key per row from (seed, prompt index in the step, sample index)."""
    s = _mix32(_mix32(seed & _M32) ^ ((seed >> 32) & _M32))
    keys = [_mix32(_mix32(s ^ (p & _M32)) ^ (g & _M32)) for p, g in zip(prompt_index, sample_index)]
    return torch.tensor(keys, dtype=torch.long)


def row_uniforms(keys: torch.Tensor, t: int) -> torch.Tensor:
    """Uniform numbers in (0, 1), float64, one per row, for decode step ``t``."""
    step_key = _mix32((t * 0x9E3779B1 + 0x7F4A7C15) & _M32)
    x = _mix32(_mix32(keys ^ step_key) ^ 0x2545F491)
    return (x.double() + 0.5) / 4294967296.0


def _top_k_applies(top_k: int, vocab: int) -> bool:
    """Whether top-k removes anything from a ``vocab``-wide distribution (0, or k >= vocab: nothing)."""
    return 0 < top_k < vocab


def filter_logits(logits: torch.Tensor, temperature: float, top_k: int, top_p: float) -> torch.Tensor:
    """Temperature, then top-k, then top-p, as transformers' logits warpers do (same order, same
    ties: top-k keeps every token tied with the k-th; top-p keeps the smallest set whose mass
    exceeds ``top_p``, at least one token)."""
    logits = logits.float()
    if temperature != 1.0:  # x / 1.0 is x: the copy is skipped, not the arithmetic changed
        logits = logits / temperature
    if _top_k_applies(top_k, logits.shape[-1]):
        kth = torch.topk(logits, top_k, dim=-1).values[..., -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if top_p < 1.0:
        sorted_logits, order = torch.sort(logits, descending=False, dim=-1)
        cum = sorted_logits.softmax(-1).cumsum(-1)
        remove_sorted = cum <= (1 - top_p)
        remove_sorted[..., -1] = False
        remove = remove_sorted.scatter(-1, order, remove_sorted)
        logits = logits.masked_fill(remove, float("-inf"))
    return logits


def sample_next(logits: torch.Tensor, keys: torch.Tensor | None, t: int, *, temperature: float, top_k: int,
                top_p: float) -> torch.Tensor:
    """Next token per row: argmax when greedy, else inverse-CDF sampling with the row's counter-based
    uniform (exactly the filtered softmax distribution)."""
    if temperature <= 0:
        return logits.argmax(-1)
    probs = filter_logits(logits, temperature, top_k, top_p).softmax(-1)
    cdf = probs.cumsum(-1)
    u = row_uniforms(keys, t).to(logits.device)
    target = (u * cdf[:, -1].double()).to(cdf.dtype).unsqueeze(-1)
    tok = torch.searchsorted(cdf, target, right=True).squeeze(-1)
    return tok.clamp_(max=logits.shape[-1] - 1)


def draw(logits: torch.Tensor, keys: torch.Tensor | None, t: int, *, temperature: float, top_k: int,
         top_p: float, with_logprobs: bool) -> tuple[torch.Tensor, torch.Tensor | None]:
    """``sample_next``'s token per row and, when asked and sampling, ``token_logprobs`` at it.

    Unfiltered sampling (no top-k, no top-p: the default) takes one pass over the vocabulary where
    the two functions took three: the tempered logits less their maximum, exponentiated once, serve
    as both the unnormalised CDF the uniform is scaled onto and the log-sum-exp. The same inverse-CDF
    draw of the same counter-based uniform; only the rounding of the CDF differs from normalising it
    first, which moves a draw only when the uniform lands within float32 rounding of a boundary.
    Measured at 64 rows x 49,152 in bf16 on the 2-core VM, freed memory kept (as the engine keeps it on
    a CPU): 2.9-3.7 ms a step for the two, 2.1-2.6 for this.
    """
    filtered = _top_k_applies(top_k, logits.shape[-1]) or top_p < 1.0  # filter_logits' own rules
    if temperature <= 0 or filtered:
        tok = sample_next(logits, keys, t, temperature=temperature, top_k=top_k, top_p=top_p)
        lp = token_logprobs(logits, tok, temperature) if with_logprobs and temperature > 0 else None
        return tok, lp
    logits = logits.float() if logits.dtype == torch.float64 else logits  # float32 throughout, as the two
    if temperature != 1.0:
        x = logits.float() / temperature
        shifted = x.sub_(x.amax(-1, keepdim=True))
    else:  # a 16-bit x is promoted to float32 in the subtraction itself, exactly as .float() would
        shifted = logits - logits.amax(-1, keepdim=True).float()
    cdf = shifted.exp()
    total = cdf.sum(-1)
    cdf = cdf.cumsum_(-1)
    u = row_uniforms(keys, t).to(logits.device)
    target = (u * cdf[:, -1].double()).to(cdf.dtype).unsqueeze(-1)
    tok = torch.searchsorted(cdf, target, right=True).squeeze(-1).clamp_(max=logits.shape[-1] - 1)
    lp = shifted.gather(-1, tok.unsqueeze(-1)).squeeze(-1) - total.log() if with_logprobs else None
    return tok, lp


_COMPILED_ATTR = "_r1zero_compiled_decode"
_CACHES_ATTR = "_r1zero_static_caches"
_LEAN_ATTR = "_r1zero_lean_decoder"
_MAX_CACHES = 4  # shapes kept per model; each holds rows x length x layers of K and V


def _decode_fn(model, compile_step: bool | str):
    """The decode-step forward: compiled (once per model; CUDA graphs on CUDA) or the model itself.
    Anything but a bool is the torch.compile backend (the tests trace the step with "aot_eager" on CPU:
    inductor's code generation takes about 50 s there)."""
    if not compile_step:
        return model
    fn = model.__dict__.get(_COMPILED_ATTR)
    if fn is None:
        if not isinstance(compile_step, bool):
            fn = torch.compile(model, backend=compile_step, fullgraph=False, dynamic=False)
        else:
            # reduce-overhead is CUDA graphs; on CPU the plain inductor compile of the same step.
            mode = "reduce-overhead" if next(model.parameters()).device.type == "cuda" else None
            fn = torch.compile(model, mode=mode, fullgraph=False, dynamic=False)
        # Kept on the model itself (not registered as a submodule, so state_dict is unchanged).
        object.__setattr__(model, _COMPILED_ATTR, fn)
    return fn


def token_logprobs(logits: torch.Tensor, tok: torch.Tensor, temperature: float) -> torch.Tensor:
    """log softmax(logits / temperature) at ``tok``, float32: the trainer's formula
    (r1zero.training.logprobs), without top-k/top-p."""
    x = logits.float() if temperature == 1.0 else logits.float() / temperature
    return x.gather(-1, tok.unsqueeze(-1)).squeeze(-1) - torch.logsumexp(x, dim=-1)


class _Tokens:
    """A chunk's sampled tokens, kept on the model's device until the chunk ends (no host sync per
    step): ids (n, T), the sampler's log-probs (n, T) when asked, and the step of each row's EOS
    (T while it has none; -1 for a filler row, ``finish_filler``)."""

    def __init__(self, n: int, T: int, pad_id: int, device, with_logprobs: bool):
        self.pad_id, self.T = pad_id, T
        self.ids = torch.full((n, T), pad_id, dtype=torch.long, device=device)
        self.logprobs = torch.zeros((n, T), dtype=torch.float32, device=device) if with_logprobs else None
        self.finish_at = torch.full((n,), T, dtype=torch.long, device=device)
        self.steps = 0

    @property
    def finished(self) -> torch.Tensor:
        """(n,) bool: the rows that have produced an EOS (or are fillers)."""
        return self.finish_at < self.T

    def finish_filler(self, n_real: int) -> None:
        """Rows from ``n_real`` on only fill the chunk to its fixed size: finished from the start."""
        self.finish_at[n_real:] = -1

    def put(self, t: int, tok: torch.Tensor, logprobs: torch.Tensor | None, eos: torch.Tensor,
            rows: torch.Tensor | None = None) -> torch.Tensor:
        """Record step ``t``'s tokens of ``rows`` (device indices; None: every row) and their
        log-probs (None: not kept); a row that has finished gets padding. Returns the tokens as
        recorded (the next step's input)."""
        where = slice(None) if rows is None else rows
        finish_at = self.finish_at[where]
        done = finish_at < self.T  # the rule of ``finished``, on these rows only
        tok = torch.where(done, torch.full_like(tok, self.pad_id), tok)
        new_eos = torch.isin(tok, eos) & ~done
        self.ids[where, t] = tok
        if self.logprobs is not None and logprobs is not None:
            self.logprobs[where, t] = logprobs  # a finished row's is cut off with its tokens (finish_rollout)
        self.finish_at[where] = torch.where(new_eos, t, finish_at)
        self.steps = t + 1
        return tok

    def write(self, out: torch.Tensor, out_lp: torch.Tensor | None, rows: torch.Tensor, n_real: int) -> int:
        """Copy the first ``n_real`` rows into ``out``/``out_lp`` at ``rows``; returns the chunk's
        width (its last EOS + 1, or every step run when a row has none)."""
        if self.steps == 0:
            return 0
        width = min(self.steps, int(self.finish_at[:n_real].max()) + 1)
        out[rows, :width] = self.ids[:n_real, :width].cpu()
        if out_lp is not None and self.logprobs is not None:
            out_lp[rows, :width] = self.logprobs[:n_real, :width].cpu()
        return width


@contextlib.contextmanager
def eval_mode(model):
    """``model`` in eval mode (no dropout) for the block, then back in training mode if it was."""
    was_training = model.training
    model.eval()
    try:
        yield model
    finally:
        if was_training:
            model.train()


def _device_and_lean(model, lean: bool | None) -> tuple[torch.device, bool]:
    """The rollout's device, and whether the lean step decodes: ``lean``, or where it measured faster
    (16-bit weights, and float32 ones oneDNN runs: r1zero.rollout.packed_linear). On a CPU, freed
    memory is kept in the process from here on (the module docstring says why)."""
    weight = next(model.parameters())
    if weight.device.type == "cpu":
        keep_freed_memory()
    if lean is None:
        lean = weight.dtype in (torch.bfloat16, torch.float16) or packs_dtype(weight.dtype, weight.device)
    return weight.device, lean


@torch.no_grad()
def generate_ids(model, prompt_ids: list[list[int]], *, num_generations: int, max_new_tokens: int,
                 eos_ids: list[int], pad_id: int, temperature: float = 1.0, top_p: float = 1.0, top_k: int = 0,
                 batch_size: int | None = None, seed: int = 0, autocast_dtype=None,
                 cache: str = "dynamic", prompt_index: list[int] | None = None,
                 compile: bool | str | None = None, vocab_size: int | None = None,
                 max_cache_len: int | None = None, check_every: int | None = None,
                 with_logprobs: bool = False, lean: bool | None = None):
    """Completion ids (N, C) for N = len(prompt_ids) * num_generations rows (groups contiguous), on
    CPU, padded with ``pad_id`` after each row's EOS; C is at most ``max_new_tokens``. With
    ``with_logprobs``: (ids, log-probs (N, C) float32, 0 after EOS and when greedy).

    ``batch_size`` bounds the rows decoded together (whole groups: at least one prompt's G rows).
    ``prompt_index``: each prompt's index in the sampling key (default its position here); under
    torchrun a rank passes the prompts' positions in the global batch, so every process count
    draws the same samples. ``compile``: compile the static cache's decode step (default: on CUDA; a string: that
    torch.compile backend). ``vocab_size``: only ids below it are sampled (the tokenizer's size when
    the model's embedding is padded beyond it, as Qwen2.5's 151,936 rows for 151,665 tokens: an id
    the tokenizer lacks would vanish from the scored text but stay in the trained tokens).
    ``max_cache_len``: the static cache's length at least (prompt + completion length of the run,
    so every step has one shape). ``check_every``: steps between looks at the finished rows
    (default: 8 on CUDA and for the static cache, 1 for the dynamic cache on other devices).
    ``lean``: decode the dynamic cache with r1zero.rollout.lean_decode (None: with 16-bit weights, and
    float32 ones on a CPU that packs them, where it measured faster; True: whenever it covers the
    model, as the tests do).
    """
    G = num_generations
    model, autocast_dtype = rollout_model(model, autocast_dtype)
    device, lean = _device_and_lean(model, lean)
    compile_step = device.type == "cuda" if compile is None else compile
    n_prompts = len(prompt_ids)
    key_index = list(range(n_prompts)) if prompt_index is None else list(prompt_index)
    per_chunk = n_prompts if not batch_size else max(1, min(n_prompts, batch_size // G))
    out = torch.full((n_prompts * G, max(max_new_tokens, 0)), pad_id, dtype=torch.long)
    out_lp = torch.zeros(out.shape, dtype=torch.float32) if with_logprobs else None
    eos = torch.tensor(sorted(set(eos_ids)), dtype=torch.long, device=device)
    # The counter-based uniforms are made where the logits are (float64: not on MPS): no copy per step.
    key_device = device if device.type in ("cuda", "cpu") else torch.device("cpu")
    if check_every is None:
        check_every = 8 if device.type == "cuda" or cache == "static" else 1
    autocast = torch.autocast(device.type, dtype=autocast_dtype) if autocast_dtype else contextlib.nullcontext()
    width = 0
    with eval_mode(model):
        with autocast:
            for p0 in range(0, n_prompts, per_chunk):
                chunk = list(range(p0, min(n_prompts, p0 + per_chunk)))
                keys = row_keys(seed, [key_index[p] for p in chunk for _ in range(G)],
                                [g for _ in chunk for g in range(G)]).to(key_device)
                rows = torch.arange(p0 * G, (p0 + len(chunk)) * G)
                buf = _Tokens(per_chunk * G if cache == "static" else len(rows), max(max_new_tokens, 0), pad_id,
                              device, with_logprobs)
                args = (model, [prompt_ids[p] for p in chunk], G, max_new_tokens, eos, temperature, top_p, top_k,
                        keys, buf, device, vocab_size, check_every)
                if cache == "static":
                    _decode_static(*args, compile_step=compile_step, max_cache_len=max_cache_len)
                else:
                    _decode_dynamic(*args, lean=lean and autocast_dtype is None)  # autocast: sharded
                width = max(width, buf.write(out, out_lp, rows, len(rows)))
    return (out[:, :width], out_lp[:, :width]) if with_logprobs else out[:, :width]


class _TransformersSteps:
    """Decode steps through the model's own forward, on a reserved cache (r1zero.rollout.kv_cache):
    the path for every model ``lean_support`` turns away."""

    def __init__(self, model, pkv, mask: torch.Tensor, repeats: int):
        pkv.batch_repeat_interleave(repeats)
        self.model, self.pkv, self.kw = model, pkv, cache_kwarg(model)
        self.mask = mask.repeat_interleave(repeats, 0)

    def keep(self, rows: torch.Tensor) -> None:
        self.pkv.batch_select_indices(rows)
        self.mask = self.mask[rows]

    def step(self, tokens: torch.Tensor) -> torch.Tensor:
        self.mask = torch.cat([self.mask, self.mask.new_ones(self.mask.shape[0], 1)], dim=1)
        pos = self.mask.sum(-1, keepdim=True) - 1
        return self.model(input_ids=tokens.unsqueeze(-1), attention_mask=self.mask, position_ids=pos,
                          use_cache=True, **{self.kw: self.pkv}).logits[:, -1]


def lean_decoder(model) -> LeanDecoder | None:
    """``model``'s lean decode step (kept on the model), or None when ``lean_support`` turns it away.
    Asked at every rollout: a module swapped since the last (an adapter, a cast) changes the answer."""
    if lean_support(model) is not None:
        return None
    dec = model.__dict__.get(_LEAN_ATTR)
    if dec is None:
        dec = LeanDecoder(model)
        object.__setattr__(model, _LEAN_ATTR, dec)
    return dec


def _decode_dynamic(model, prompts, G, max_new_tokens, eos, temperature, top_p, top_k, keys, buf: _Tokens,
                    device, vocab: int | None, check_every: int, *, lean: bool) -> None:
    ids, mask = left_pad(prompts, buf.pad_id, device)
    capacity = ids.shape[1] + max_new_tokens
    decoder = lean_decoder(model) if lean else None
    # The lean step's cache is its own, filled from a plain prefill cache; transformers' forward
    # decodes on one reserved up front (written in place, not grown by copies).
    pkv = DynamicCache(config=model.config) if decoder is not None else reserved_cache(model.config, capacity)
    pos = position_ids_from_mask(mask)
    logits = model(input_ids=ids, attention_mask=mask, position_ids=pos, use_cache=True, logits_to_keep=1,
                   **{cache_kwarg(model): pkv}).logits[:, -1, :vocab]
    # One prefill per prompt, shared by its G samples.
    if decoder is not None:
        decoder.start(pkv, mask, G, max_new_tokens)
        steps = decoder
    else:
        steps = _TransformersSteps(model, pkv, mask, G)
    logits = logits.repeat_interleave(G, 0)
    active = torch.arange(buf.ids.shape[0], device=device)  # rows of the chunk still in the decode batch
    # Finished rows leave once this share of the batch has finished. The lean cache moves only the rows
    # that fill finished ones' places (a few MB each at 64 rows: about 0.3 ms a drop on the 2-core VM),
    # so it drops at once; transformers' cache copies itself whole at every drop, so it waits for a
    # quarter (measured at 64 rows when the lean cache copied too: 167-193 tok/s dropping at every
    # finished row against 239-334 at a quarter).
    drop_share = 0.0 if decoder is not None else 0.25
    for t in range(max_new_tokens):
        tok, lp = draw(logits, keys[active.to(keys.device)], t, temperature=temperature, top_k=top_k, top_p=top_p,
                       with_logprobs=buf.logprobs is not None)
        tok = buf.put(t, tok, lp, eos, active)
        if t == max_new_tokens - 1:
            break
        if (t + 1) % check_every == 0:
            done = buf.finished[active]
            n_done = int(done.sum())
            if n_done == len(active):
                break
            if n_done and n_done >= drop_share * len(active):
                keep = kept_rows(done)
                # Finished rows leave the batch: their cache rows are dropped, not computed on.
                steps.keep(keep)
                active, tok = active[keep], tok[keep]
        logits = steps.step(tok)[:, :vocab]
    if decoder is not None:
        decoder.finish()  # (after an error, the next rollout's start replaces the cache)


def _static_cache(model, n: int, max_len: int) -> StaticCache:
    """The model's cache for (n rows, max_len positions), reset; made on first use (bounded set)."""
    caches = model.__dict__.get(_CACHES_ATTR)
    if caches is None:
        caches = {}
        object.__setattr__(model, _CACHES_ATTR, caches)
    pkv = caches.pop((n, max_len), None)
    if pkv is None:
        while len(caches) >= _MAX_CACHES:
            caches.pop(next(iter(caches)))  # the least recently used shape
        pkv = StaticCache(config=model.config, max_cache_len=max_len)
    else:
        pkv.reset()
    caches[(n, max_len)] = pkv
    return pkv


def _set_position(pkv: StaticCache, position: int) -> None:
    # transformers writes each layer at its own counter (cumulative_length), not at cache_position:
    # after a failed step some layers have advanced and some not; put every layer back.
    for layer in pkv.layers:
        if getattr(layer, "is_initialized", False):
            layer.cumulative_length.fill_(position)


def _decode_static(model, prompts, G, max_new_tokens, eos, temperature, top_p, top_k, keys, buf: _Tokens,
                   device, vocab: int | None, check_every: int, *, compile_step: bool | str = False,
                   max_cache_len: int | None = None) -> None:
    ids, mask = left_pad(prompts, buf.pad_id, device)
    P = ids.shape[1]
    n = buf.ids.shape[0]  # the chunk's fixed row count; rows past the real ones are finished copies
    n_real = len(prompts) * G
    kw = cache_kwarg(model)
    # Cache length rounded up to a multiple of 256 (at least the run's prompt + completion length):
    # the compiled decode step sees one shape per (rows, length), not one per prompt width.
    max_len = -(-max(P + max_new_tokens, max_cache_len or 0) // 256) * 256
    # Each row's prompt: G rows per prompt, then copies of the last row up to the fixed count.
    src = torch.arange(len(prompts), device=device).repeat_interleave(G)
    src = torch.cat([src, src[-1:].expand(n - n_real)])
    buf.finish_filler(n_real)
    # Prefill the unique prompts in a dynamic cache, then copy it, G times repeated, into a static
    # cache of the full batch: the decode step then always sees the same shapes.
    pkv_p = DynamicCache(config=model.config)
    pos = position_ids_from_mask(mask)
    logits = model(input_ids=ids, attention_mask=mask, position_ids=pos, use_cache=True, logits_to_keep=1,
                   **{kw: pkv_p}).logits[:, -1, :vocab].index_select(0, src)
    pkv = _static_cache(model, n, max_len)
    for li, layer in enumerate(pkv_p.layers):
        pkv.update(layer.keys.index_select(0, src), layer.values.index_select(0, src), li,
                   {"cache_position": torch.arange(P, device=device)})
    full_mask = torch.zeros((n, max_len), dtype=torch.long, device=device)
    full_mask[:, :P] = mask.index_select(0, src)
    prompt_len = full_mask[:, :P].sum(-1, keepdim=True)
    # The filler rows' keys: any will do, their samples are replaced by padding.
    keys = torch.cat([keys, keys[-1:].expand(n - n_real)])
    # The step's cache position, advanced in place (a new tensor per step would be a host copy; a
    # slice of one tensor a new storage offset, which the compiled step would specialise on).
    cache_position = torch.full((1,), P, dtype=torch.long, device=device)
    decode = _decode_fn(model, compile_step)
    for t in range(max_new_tokens):
        tok, lp = draw(logits, keys, t, temperature=temperature, top_k=top_k, top_p=top_p,
                       with_logprobs=buf.logprobs is not None)
        tok = buf.put(t, tok, lp, eos)
        if t == max_new_tokens - 1 or ((t + 1) % check_every == 0 and bool(buf.finished.all())):
            break
        full_mask[:, P + t] = 1
        step_kw = dict(input_ids=tok.unsqueeze(-1), attention_mask=full_mask, position_ids=prompt_len + t,
                       cache_position=cache_position, use_cache=True, **{kw: pkv})
        try:
            logits = decode(**step_kw).logits[:, -1, :vocab]
        except Exception as e:  # noqa: BLE001
            # A compiler failure must not end a training run: decode eagerly. Only compiler errors (torch._dynamo's,
            # looked up, not imported: ~1 s of start-up); an out-of-memory or CUDA error is the run's to see.
            exc = sys.modules.get("torch._dynamo.exc")
            if decode is model or exc is None or not isinstance(e, exc.TorchDynamoException):
                raise
            log.warning("compiled decode step failed (%s); decoding eagerly", str(e).splitlines()[0][:200])
            decode = model
            object.__setattr__(model, _COMPILED_ATTR, model)
            _set_position(pkv, P + t)
            logits = model(**step_kw).logits[:, -1, :vocab]
        if decode is not model and device.type == "cuda":
            logits = logits.clone()  # CUDA-graph outputs are overwritten by the next replay
        cache_position += 1


def static_caches(model) -> dict:
    """{(rows, length): StaticCache} that ``model``'s static-cache rollouts reuse (after
    ``rollout_model``: the copy that sampled)."""
    return model.__dict__.get(_CACHES_ATTR, {})
