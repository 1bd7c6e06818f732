"""r1zero.attention's CPU kernel computes what transformers' sdpa computes: logits of tiny Qwen2,
Llama and Qwen3 models (grouped heads, left padding, a cached decode step) and gradients, in
float32; a float64 model with a fully padded row stays finite; past PRODUCTS_MAX_KEYS keys (and
for what the products do not do) it hands the call to sdpa itself; models loaded on a CPU use it."""
import pytest
import torch
from transformers import DynamicCache

from r1zero import attention
from r1zero.models import load_model
from r1zero.rollout.hf import cache_kwarg
from r1zero.rollout.layout import left_pad, position_ids_from_mask

FAMILIES = ["tiny_qwen2", "tiny_llama", "tiny_qwen3"]
PROMPTS = [[5, 17, 300, 42, 8, 9], [9, 1000], [77, 78, 79, 80, 81, 82, 83]]  # left padding of 1 and 5


def _batch():
    ids, mask = left_pad(PROMPTS, 0)
    return ids, mask, position_ids_from_mask(mask)


def _logits_and_step(model, ids, mask, pos):
    """Full-sequence logits (real positions only), then one cached decode step's logits."""
    cache = DynamicCache(config=model.config)
    kw = cache_kwarg(model)
    full = model(input_ids=ids, attention_mask=mask, position_ids=pos, use_cache=True, **{kw: cache}).logits
    nxt = full[:, -1].argmax(-1, keepdim=True)
    step = model(input_ids=nxt, attention_mask=torch.cat([mask, torch.ones_like(nxt)], 1),
                 position_ids=pos[:, -1:] + 1, use_cache=True, **{kw: cache}).logits
    return full[mask.bool()], step


@pytest.mark.parametrize("family", FAMILIES)
def test_logits_and_gradients_equal_sdpa(family, request):
    model = load_model(str(request.getfixturevalue(family)), torch.device("cpu"))
    assert model.config._attn_implementation == attention.NAME  # load_model on a CPU chose it
    ids, mask, pos = _batch()
    results = {}
    for kernel in ("sdpa", attention.NAME):
        model.set_attn_implementation(kernel)
        model.zero_grad()
        full, step = _logits_and_step(model, ids, mask, pos)
        (full.logsumexp(-1).sum() + step.logsumexp(-1).sum()).backward()
        grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
        results[kernel] = (full.detach(), step.detach(), grads)
    (f0, s0, g0), (f1, s1, g1) = results["sdpa"], results[attention.NAME]
    torch.testing.assert_close(f1, f0, rtol=0, atol=2e-5)
    torch.testing.assert_close(s1, s0, rtol=0, atol=2e-5)
    assert g0.keys() == g1.keys() and len(g0) > 10
    for name in g0:
        torch.testing.assert_close(g1[name], g0[name], rtol=1e-4, atol=1e-5, msg=name)


def test_float64_with_a_fully_padded_row_stays_finite(tiny_qwen2):
    """transformers' eager attention gives NaN here (its softmax in float32 turns float64's mask
    minimum into -inf); the padded rows' outputs would then spread NaN through every row."""
    model = load_model(str(tiny_qwen2), torch.device("cpu")).double()
    ids, mask, pos = _batch()
    full, step = _logits_and_step(model, ids, mask, pos)
    model.set_attn_implementation("sdpa")
    full_ref, step_ref = _logits_and_step(model, ids, mask, pos)
    assert torch.isfinite(full).all() and torch.isfinite(step).all()
    torch.testing.assert_close(full, full_ref, rtol=0, atol=1e-10)
    torch.testing.assert_close(step, step_ref, rtol=0, atol=1e-10)


def test_long_keys_and_extras_go_to_sdpa(tiny_llama, monkeypatch):
    model = load_model(str(tiny_llama), torch.device("cpu"))
    ids, mask, pos = _batch()
    calls = []
    fused = attention._fused
    monkeypatch.setattr(attention, "_fused", lambda *a, **kw: calls.append(a[2].shape[2]) or fused(*a, **kw))
    with torch.no_grad():
        _logits_and_step(model, ids, mask, pos)
        assert calls == []  # 7 and 8 keys: the products
        monkeypatch.setattr(attention, "PRODUCTS_MAX_KEYS", 7)
        mine = _logits_and_step(model, ids, mask, pos)
        n_layers = model.config.num_hidden_layers
        assert calls == [8] * n_layers  # only the decode step (8 keys) went to sdpa
        model.set_attn_implementation("sdpa")
        ref = _logits_and_step(model, ids, mask, pos)
    torch.testing.assert_close(mine[1], ref[1], rtol=0, atol=2e-5)
    q = torch.zeros(1, 4, 2, 8)
    kv = torch.zeros(1, 2, 2, 8)
    module = model.model.layers[0].self_attn
    assert not attention._products_apply(module, q, kv, kv, None, 0.0, {"softcap": 30.0})
    assert not attention._products_apply(module, q, kv, kv, None, 0.1, {})
    assert not attention._products_apply(module, q, kv, kv, torch.zeros(1, 1, 2, 2), 0.0, {})  # a float mask
    assert attention._products_apply(module, q, kv, kv, None, 0.0, {"softcap": None})


def test_cuda_and_other_kernels_are_left_alone(tiny_qwen2):
    model = load_model(str(tiny_qwen2), torch.device("cpu"))
    model.set_attn_implementation("eager")
    assert attention.use_cpu_attention(model, torch.device("cpu")) == "eager"
    model.set_attn_implementation("sdpa")
    assert attention.use_cpu_attention(model, torch.device("cuda")) == "sdpa"
    assert model.config._attn_implementation == "sdpa"
