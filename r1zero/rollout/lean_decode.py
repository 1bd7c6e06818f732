"""A lean decode step for the Llama family (Llama, Mistral, Qwen2, Qwen3): the same arithmetic as
transformers' forward for one new token per row, without its per-call machinery.

Why: at decode time a 135M model's step is not arithmetic-bound. Profiled on a 2-core CPU at 64 rows
in bf16 (issue 25), transformers' step spent about half its time outside the weight products: the
fused CPU attention kernel (about 1.8 ms a layer for one query row, grouped-query heads expanded),
an autocast cast and a copy per weight, mask building, per-module Python. This step makes, per layer,
one product for q, k and v together and one for gate and up together (the weights concatenated once
per policy version), a rotary embedding on q and k at once, an in-place cache write, and attention
as two batched products over a key cache stored transposed (so the score product reads it without a
copy), with scores and softmax in float32. On a CPU the bf16 and float32 weights are also rearranged
once per policy version into oneDNN's layout (r1zero.rollout.packed_linear: in bf16 the same
products, a decode step at 1 row 36 -> 27 ms, at 64 rows 120 -> 109 ms; in float32 oneDNN's
products instead of MKL's, 2-5x faster each on the 2-core AMD VM).

What stays transformers': the embedding, norms' weights, rotary tables (the model's own
``rotary_emb``, so every rope scaling type is covered), the prefill (one call, its K and V copied
into this cache), and the formulas: RMSNorm in float32 then cast (as ``LlamaRMSNorm``), rotate-half
rope, softmax(q k^T * scale + mask) v, silu(gate) * up. In float32 the logits equal transformers' to
rounding; greedy output is token-identical to ``generate`` (tests/test_lean_decode.py).

Supported when ``lean_support`` says so: one of those classes as transformers defines it, plain
``nn.Linear`` projections (a LoRA-wrapped model decodes through transformers), silu, no sliding
window, every weight in one dtype (no autocast). Anything else decodes through transformers' forward.

The cache: K as (layers, rows, kv heads, head dim, capacity), V as (layers, rows, kv heads,
capacity, head dim), capacity being the prompt's width plus the completion length, allocated once per
rollout and filled up to ``length``; a bias (rows, capacity), 0 for a real position and -inf for a
prompt's left padding and the positions not yet filled; each row's next position. Attention reads the
whole capacity: a product over a view of the filled part would copy it first (a strided operand), and
the products cost their batch count more than their width (at 64 rows, 192 positions took what 150
did, issue 25). Dropping finished rows moves, in place, only the kept rows that fill finished rows'
places (``kept_rows``). Before, every drop and every growth by a block of positions made a new cache
of a few hundred MB, paged in afresh: on the 2-core VM 0.3-0.5 s of a 64-row rollout of 3.5 s.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from r1zero.rollout.packed_linear import linear, pack

SUPPORTED = ("LlamaForCausalLM", "MistralForCausalLM", "Qwen2ForCausalLM", "Qwen3ForCausalLM")


def lean_support(model) -> str | None:
    """None when ``model`` can decode with ``LeanDecoder``, else why not (one phrase)."""
    cls = type(model)
    if cls.__name__ not in SUPPORTED or not cls.__module__.startswith("transformers.models."):
        return f"{cls.__name__} is not one of {', '.join(SUPPORTED)}"
    cfg = model.config
    if getattr(cfg, "hidden_act", "silu") != "silu":
        return f"hidden_act {cfg.hidden_act}"
    if getattr(cfg, "pretraining_tp", 1) != 1:
        return "pretraining_tp > 1"
    if any(t != "full_attention" for t in (getattr(cfg, "layer_types", None) or [])) or (
            getattr(cfg, "sliding_window", None) and getattr(cfg, "use_sliding_window", True)):
        return "sliding-window attention"
    for layer in model.model.layers:
        a, m = layer.self_attn, layer.mlp
        for lin in (a.q_proj, a.k_proj, a.v_proj, a.o_proj, m.gate_proj, m.up_proj, m.down_proj):
            if type(lin) is not torch.nn.Linear:
                return f"{type(lin).__name__} projections"
    if type(model.lm_head) is not torch.nn.Linear:
        return f"{type(model.lm_head).__name__} head"
    dtypes = {p.dtype for p in model.parameters() if p.is_floating_point()}
    if len(dtypes) != 1:
        return "weights in several dtypes"
    return None


def _cat(tensors):
    return None if tensors[0] is None else torch.cat([t.detach() for t in tensors])


class _Layer:
    """One decoder layer's weights as the step uses them (q|k|v and gate|up concatenated; bf16 ones
    on a CPU rearranged for oneDNN once, r1zero.rollout.packed_linear)."""

    def __init__(self, layer):
        a, m = layer.self_attn, layer.mlp
        self.qkv_w = pack(_cat([a.q_proj.weight, a.k_proj.weight, a.v_proj.weight]))
        self.qkv_b = _cat([a.q_proj.bias, a.k_proj.bias, a.v_proj.bias])
        self.o_w, self.o_b = pack(a.o_proj.weight), a.o_proj.bias
        self.gu_w = pack(_cat([m.gate_proj.weight, m.up_proj.weight]))
        self.gu_b = _cat([m.gate_proj.bias, m.up_proj.bias])
        self.down_w, self.down_b = pack(m.down_proj.weight), m.down_proj.bias
        self.in_norm = layer.input_layernorm
        self.post_norm = layer.post_attention_layernorm
        self.q_norm = getattr(a, "q_norm", None)  # Qwen3: RMSNorm over each head before rope
        self.k_norm = getattr(a, "k_norm", None)


def _rms(x: torch.Tensor, norm) -> torch.Tensor:
    """``LlamaRMSNorm``: normalised in float32, cast back, then scaled by the weight."""
    y = F.rms_norm(x.float(), (x.shape[-1],), eps=norm.variance_epsilon)
    return norm.weight * y.to(x.dtype)


def _signed_sin(sin: torch.Tensor) -> torch.Tensor:
    """sin with its first half negated: rotate-half's minus sign moved onto the table, once a step."""
    half = sin.shape[-1] // 2
    return torch.cat((-sin[..., :half], sin[..., half:]), dim=-1)


def _rope(x: torch.Tensor, cos: torch.Tensor, signed_sin: torch.Tensor) -> torch.Tensor:
    """Rotate-half rotary embedding of x (rows, heads, head dim) at cos/sin (rows, 1, head dim), with
    ``signed_sin`` from ``_signed_sin``: rotate_half(x) * sin = cat(-x2, x1) * sin, and
    roll(x) * signed_sin = cat(x2 * -sin1, x1 * sin2) holds the same products (a sign flip is exact),
    made by one op where rotate_half took four."""
    return x * cos + x.roll(x.shape[-1] // 2, -1) * signed_sin


class LeanDecoder:
    """The decode step of one model (see the module docstring). ``refresh`` re-reads the weights
    when the model's parameters changed (an update, a load), since the concatenated ones are copies."""

    def __init__(self, model):
        self.model = model
        cfg = model.config
        self.n_heads = cfg.num_attention_heads
        self.n_kv = cfg.num_key_value_heads
        self.head_dim = getattr(cfg, "head_dim", None) or cfg.hidden_size // cfg.num_attention_heads
        self.scale = self.head_dim ** -0.5
        self._signature = None  # the weights are read by the first ``start``

    def refresh(self) -> None:
        sig = tuple((p._version, p.data_ptr()) for p in self.model.parameters())
        if sig == self._signature:
            return
        with torch.no_grad():
            self.layers = [_Layer(layer) for layer in self.model.model.layers]
            head = self.model.lm_head
            self.head_w, self.head_b = pack(head.weight), head.bias
        self._signature = sig

    # The cache --------------------------------------------------------------------------------
    def start(self, prefill_cache, mask: torch.Tensor, repeats: int, new_tokens: int) -> None:
        """Take the prefill's K and V (transformers' cache of ``mask.shape`` rows), each prompt
        repeated ``repeats`` times, with room for ``new_tokens`` more positions."""
        self.refresh()
        prompts, width = mask.shape
        n, capacity = prompts * repeats, width + max(new_tokens, 1)
        first = prefill_cache.layers[0].keys
        shape = (len(self.layers), n, self.n_kv)
        self.k = first.new_empty(shape + (self.head_dim, capacity))
        self.v = first.new_empty(shape + (capacity, self.head_dim))
        # The positions to be filled are zeroed: the products read them (with a bias of -inf), and reused
        # memory may hold a NaN, which no bias hides.
        self.k[..., width:].zero_()
        self.v[:, :, :, width:].zero_()
        for i, layer in enumerate(prefill_cache.layers):  # each prompt's rows written from it, no repeated copy
            self.k[i, ..., :width].view(prompts, repeats, self.n_kv, self.head_dim, width).copy_(
                layer.keys.transpose(-1, -2).unsqueeze(1))
            self.v[i, :, :, :width].view(prompts, repeats, self.n_kv, width, self.head_dim).copy_(
                layer.values.unsqueeze(1))
        # The prompt's padding and the positions not filled yet: -inf (a softmax weight of exactly 0).
        self.bias = torch.full((n, capacity), float("-inf"), dtype=torch.float32, device=mask.device)
        self.bias[:, :width].masked_fill_(mask.repeat_interleave(repeats, 0) != 0, 0.0)
        self.position = mask.sum(-1).repeat_interleave(repeats)  # each row's next position (real tokens only)
        self.length = width

    def keep(self, rows: torch.Tensor) -> None:
        """Only ``rows`` stay in the batch, row ``rows[j]`` moving to place j in place. Moves are
        copies of one row each, so they must not overwrite a row still to move: every ``rows[j]`` is
        j or at least ``len(rows)`` (``kept_rows`` orders them so, moving only the rows that fill the
        places of finished ones)."""
        for j, r in enumerate(rows.tolist()):
            if j != r:
                self.k[:, j].copy_(self.k[:, r])
                self.v[:, j].copy_(self.v[:, r])
        self.bias, self.position = self.bias[rows], self.position[rows]


    def finish(self) -> None:
        """The rollout is over: the cache's memory goes back."""
        self.k = self.v = self.bias = None

    # The step ---------------------------------------------------------------------------------
    @torch.no_grad()
    def step(self, tokens: torch.Tensor) -> torch.Tensor:
        """Logits (rows, vocab) after feeding ``tokens`` (rows,) at each row's next position."""
        model, inner = self.model, self.model.model
        n, H, Hk, d = tokens.shape[0], self.n_heads, self.n_kv, self.head_dim
        g, L, A = H // Hk, self.length + 1, self.bias.shape[1]
        if L > A:
            raise ValueError(f"the cache holds {A} positions; start() was asked for fewer new tokens")
        self.bias[:, L - 1] = 0.0
        x = inner.embed_tokens(tokens)
        cos, sin = inner.rotary_emb(x, self.position.unsqueeze(-1))  # (rows, 1, head dim)
        sin = _signed_sin(sin)
        bias = self.bias[:, None]
        # The rows in use are the first n of the allocation (``keep``); each layer's block of them is contiguous.
        k_rows, v_rows = self.k[:, :n], self.v[:, :n]
        k_new, v_new = k_rows[..., L - 1], v_rows[..., L - 1, :]  # (layers, rows, kv heads, head dim) views
        # Every layer's cache as the products read it, (layers, rows x kv heads, ...): views, made once a step.
        keys, values = k_rows.view(-1, n * Hk, d, A), v_rows.view(-1, n * Hk, A, d)
        for i, w in enumerate(self.layers):
            h = _rms(x, w.in_norm)
            qkv = linear(h, w.qkv_w, w.qkv_b)
            if w.q_norm is None:  # q and k rotated together: they are adjacent in qkv
                qk = _rope(qkv[:, :(H + Hk) * d].view(n, H + Hk, d), cos, sin)
                q, k = qk[:, :H], qk[:, H:]
            else:  # Qwen3: each normalised with its own weight first
                q, k = qkv[:, :H * d].view(n, H, d), qkv[:, H * d:(H + Hk) * d].view(n, Hk, d)
                q, k = _rope(_rms(q, w.q_norm), cos, sin), _rope(_rms(k, w.k_norm), cos, sin)
            k_new[i].copy_(k)
            v_new[i].copy_(qkv[:, (H + Hk) * d:].view(n, Hk, d))
            q = q.reshape(n * Hk, g, d)
            # Over every allocated position (contiguous, so the products copy nothing); the ones
            # not yet filled have a bias of -inf.
            # bias + scale x scores in one op, in float32 (the 16-bit scores promoted in the kernel).
            scores = torch.add(bias, torch.bmm(q, keys[i]).view(n, H, A), alpha=self.scale)
            probs = scores.softmax(-1).to(x.dtype).view(n * Hk, g, A)
            out = torch.bmm(probs, values[i]).view(n, H * d)
            x = x + linear(out, w.o_w, w.o_b)
            gate, up = linear(_rms(x, w.post_norm), w.gu_w, w.gu_b).chunk(2, dim=-1)
            x = x + linear(F.silu(gate) * up, w.down_w, w.down_b)
        self.length = L
        self.position = self.position + 1
        return linear(_rms(x, inner.norm), self.head_w, self.head_b)


def kept_rows(done: torch.Tensor) -> torch.Tensor:
    """The rows to keep when ``done`` (rows,) have finished, in the order ``LeanDecoder.keep`` moves
    the fewest rows by: a kept row below the kept count stays where it is, and the kept rows above
    it fill the places of finished ones, last first."""
    kept = (~done).nonzero().squeeze(-1)
    m = len(kept)
    order = torch.arange(m, device=done.device)
    holes = done[:m].nonzero().squeeze(-1)  # finished rows among the first m: filled from above
    order[holes] = kept[kept >= m].flip(0)[:len(holes)]
    return order
