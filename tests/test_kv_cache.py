"""The rollout's reserved KV cache (r1zero.rollout.kv_cache): the same logits as transformers'
DynamicCache through prefill, the G-fold repeat, rows leaving and steps past the reservation, and
no copy of the cache per decode step."""
import pytest
import torch
from transformers import AutoModelForCausalLM, DynamicCache

from r1zero.rollout.hf import cache_kwarg
from r1zero.rollout.kv_cache import ReservedLayer, reserved_cache
from r1zero.rollout.layout import left_pad


def _run(model, cache, prompts, steps, drop_at):
    """Logits of a prefill, a 2-fold repeat and ``steps`` greedy decode steps; rows 0 and 3 leave at
    step ``drop_at``."""
    kw = cache_kwarg(model)
    ids, mask = left_pad(prompts, 0)
    pos = (mask.cumsum(-1) - 1).clamp(min=0)
    out = []
    with torch.no_grad():
        logits = model(input_ids=ids, attention_mask=mask, position_ids=pos, **{kw: cache}).logits[:, -1]
        cache.batch_repeat_interleave(2)
        logits, mask = logits.repeat_interleave(2, 0), mask.repeat_interleave(2, 0)
        for t in range(steps):
            out.append(logits)
            tok = logits.argmax(-1)
            if t == drop_at:
                keep = torch.tensor([i for i in range(len(tok)) if i not in (0, 3)])
                cache.batch_select_indices(keep)
                tok, mask = tok[keep], mask[keep]
            mask = torch.cat([mask, mask.new_ones(len(tok), 1)], 1)
            pos = mask.sum(-1, keepdim=True) - 1
            logits = model(input_ids=tok[:, None], attention_mask=mask, position_ids=pos, **{kw: cache}).logits[:, -1]
    return out


@pytest.mark.parametrize("family", ["tiny_qwen2", "tiny_llama"])
@pytest.mark.parametrize("capacity", [40, 12])  # 12: the prompt fits, the decode steps grow it
def test_reserved_cache_gives_the_dynamic_caches_logits(family, capacity, request):
    model = AutoModelForCausalLM.from_pretrained(request.getfixturevalue(family)).eval()
    prompts = [[5, 6, 7, 8, 9], [11, 12, 13], [20, 21, 22, 23, 24, 25, 26]]
    ref = _run(model, DynamicCache(config=model.config), prompts, steps=10, drop_at=4)
    cache = reserved_cache(model.config, capacity)
    assert all(isinstance(layer, ReservedLayer) for layer in cache.layers)
    ours = _run(model, cache, prompts, steps=10, drop_at=4)
    assert len(ours) == len(ref) == 10
    for a, b in zip(ours, ref):
        assert torch.equal(a, b)
    layer = cache.layers[0]
    assert layer.get_seq_length() == 7 + 10 and layer.keys.shape[0] == 4
    assert layer.capacity >= 17 and (capacity == 40) == (layer.capacity == 40)


def test_a_decode_step_writes_in_place(tiny_qwen2):
    """Within the reservation the buffers stay the same storage: no per-step copy of the cache."""
    model = AutoModelForCausalLM.from_pretrained(tiny_qwen2).eval()
    cache = reserved_cache(model.config, 32)
    kw = cache_kwarg(model)
    with torch.no_grad():
        model(input_ids=torch.tensor([[5, 6, 7]]), **{kw: cache})
        layer = cache.layers[0]
        storage = layer._k.data_ptr()
        for t in range(5):
            model(input_ids=torch.tensor([[8 + t]]), position_ids=torch.tensor([[3 + t]]), **{kw: cache})
        assert layer._k.data_ptr() == storage and layer.keys.data_ptr() == storage
        assert cache.get_seq_length() == 8
