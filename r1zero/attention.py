"""Attention on a CPU at the short lengths RL on a CPU runs: two matrix products, not the fused kernel.

torch's fused CPU attention (what transformers' ``sdpa`` calls) is built for long sequences; at the
lengths of a CPU run's prompts and completions (a hundred to a few hundred keys) its forward and
backward cost 2-3x two plain batched products and a softmax (benchmarks/cpu_attention.py, bf16,
SmolLM2's 9 query and 3 key/value heads, 2 cores: the products 2.4-3.1x faster at 116-256 keys,
1.1x at 512, 0.3-0.6x at 1,024). So r1zero registers one more attention kernel with transformers,
``r1zero_cpu``, and puts a model loaded on a CPU on it (``use_cpu_attention``). Per call:

* up to ``PRODUCTS_MAX_KEYS`` keys: scores = q k^T * scale, masked, a softmax in at least float32
  (float64 stays float64), times v. The query heads that share a key/value head are stacked into
  one product, so the keys are never repeated. A row whose keys are all masked (left padding)
  gets uniform weights, as transformers' eager attention gives it, never NaN.
* longer, or with anything this path does not do (a logit softcap, an attention bias or sinks,
  dropout, attention weights asked back): transformers' own ``sdpa`` function, unchanged.

The masks are sdpa's (``sdpa_mask``: boolean, True where a key is seen, or None when the pattern
is plain causal), so both branches read the same mask. Values equal ``sdpa``'s up to rounding
(tests/test_cpu_attention.py: logits of tiny Qwen2 and Llama models, and gradients).
"""
from __future__ import annotations

import torch

NAME = "r1zero_cpu"
PRODUCTS_MAX_KEYS = 512


def _fused(module, query, key, value, attention_mask, **kwargs):
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    return sdpa_attention_forward(module, query, key, value, attention_mask, **kwargs)


def _products_apply(module, query, key, value, attention_mask, dropout, kwargs) -> bool:
    extras = ("softcap", "position_bias", "s_aux", "sinks")
    return (key.shape[2] <= PRODUCTS_MAX_KEYS and not dropout and not kwargs.get("output_attentions")
            and all(kwargs.get(k) is None for k in extras)
            and (attention_mask is None or attention_mask.dtype == torch.bool))


def cpu_attention(module, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
                  attention_mask: torch.Tensor | None, dropout: float = 0.0, scaling: float | None = None,
                  is_causal: bool | None = None, **kwargs) -> tuple[torch.Tensor, None]:
    """transformers' attention-function interface: ``query`` (B, H, Lq, D), ``key``/``value``
    (B, Hkv, Lk, D), ``attention_mask`` (B or 1, 1, Lq, Lk) boolean or None; returns ((B, Lq, H, D), None)."""
    if not _products_apply(module, query, key, value, attention_mask, dropout, kwargs):
        return _fused(module, query, key, value, attention_mask, dropout=dropout, scaling=scaling,
                      is_causal=is_causal, **kwargs)
    B, H, Lq, D = query.shape
    Hkv, Lk = key.shape[1], key.shape[2]
    groups = H // Hkv
    scale = scaling if scaling is not None else D ** -0.5
    # (B, Hkv, groups * Lq, D): query head h reads key/value head h // groups (transformers' repeat_kv).
    q = query.reshape(B, Hkv, groups * Lq, D)
    scores = (torch.matmul(q, key.transpose(-1, -2)) * scale).view(B, Hkv, groups, Lq, Lk)
    causal = is_causal if is_causal is not None else getattr(module, "is_causal", True)
    if attention_mask is None and causal and Lq > 1:
        # sdpa_mask's None: causal, the queries being the last Lq of the Lk positions.
        attention_mask = torch.ones(Lq, Lk, dtype=torch.bool, device=query.device).tril(Lk - Lq)
    if attention_mask is not None:
        # An additive bias (its backward passes the gradient through; masked_fill's is one more pass).
        # The dtype's minimum, not -inf: a row with every key masked gets uniform weights, not NaN.
        bias = torch.zeros(attention_mask.shape, dtype=scores.dtype, device=scores.device)
        bias = bias.masked_fill_(~attention_mask, torch.finfo(scores.dtype).min)
        scores = scores + (bias.unsqueeze(2) if bias.dim() == 4 else bias)  # over the groups
    # The softmax in at least float32 (eager's), its weights back in the values' dtype for the product.
    probs = torch.softmax(scores, dim=-1, dtype=torch.promote_types(scores.dtype, torch.float32))
    probs = probs.to(value.dtype).view(B, Hkv, groups * Lq, Lk)
    out = torch.matmul(probs, value).view(B, H, Lq, D)
    return out.transpose(1, 2).contiguous(), None


def register() -> str:
    """``r1zero_cpu`` known to transformers (attention function and its mask); returns the name."""
    from transformers import AttentionInterface
    from transformers.masking_utils import AttentionMaskInterface, sdpa_mask

    AttentionInterface.register(NAME, cpu_attention)
    AttentionMaskInterface.register(NAME, sdpa_mask)
    return NAME


def use_cpu_attention(model, device: torch.device) -> str | None:
    """Put ``model`` on ``r1zero_cpu`` when it runs on a CPU with transformers' ``sdpa`` (a model that
    asked for another kernel keeps it); returns the kernel it now uses."""
    current = getattr(model.config, "_attn_implementation", None)
    if device.type == "cpu" and current == "sdpa":
        model.set_attn_implementation(register())
        return NAME
    return current
