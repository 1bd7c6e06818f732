"""bf16 weights packed once for oneDNN (r1zero.rollout.packed_linear): the products equal F.linear's
bit for bit at the decode's row counts, the lean step packs its weights and computes the logits
it computed unpacked, and an update re-packs them."""
import pytest
import torch
import torch.nn.functional as F
from transformers import DynamicCache

from r1zero.models import load_model
from r1zero.rollout import lean_decode, packed_linear
from r1zero.rollout.hf import cache_kwarg
from r1zero.rollout.layout import left_pad
from r1zero.rollout.lean_decode import LeanDecoder
from r1zero.rollout.packed_linear import linear, pack, packs

ONEDNN_BF16 = packed_linear._cpu_bf16_supported()
PROMPTS = [[5, 17, 300, 42], [9, 1000], [77, 78, 79, 80, 81]]


@pytest.mark.parametrize("rows", [1, 7, 64, 300])
def test_packed_product_equals_linear_bit_for_bit(rows):
    torch.manual_seed(rows)
    w, b = torch.randn(192, 96).bfloat16(), torch.randn(192).bfloat16()
    x = torch.randn(rows, 96).bfloat16()
    p = pack(w)
    assert p.is_mkldnn == ONEDNN_BF16  # rearranged exactly where oneDNN runs bf16 products
    assert torch.equal(linear(x, p), F.linear(x, w))
    assert torch.equal(linear(x, p, b), F.linear(x, w, b))


def test_only_bf16_cpu_weights_are_packed():
    for w in (torch.randn(8, 4), torch.randn(8, 4).half(), torch.randn(8).bfloat16()):
        assert not packs(w) and pack(w) is w
        x = torch.randn(3, 4, dtype=w.dtype) if w.dim() == 2 else None
        if x is not None:
            assert torch.equal(linear(x, pack(w)), F.linear(x, w))


def _lean_logits(model, steps: int = 5) -> torch.Tensor:
    ids, mask = left_pad(PROMPTS, 0)
    pre = DynamicCache(config=model.config)
    with torch.no_grad():
        model(input_ids=ids, attention_mask=mask, position_ids=(mask.cumsum(-1) - 1).clamp(min=0), use_cache=True,
              **{cache_kwarg(model): pre})
    lean = LeanDecoder(model)
    lean.start(pre, mask, 2, steps)
    tokens = torch.arange(len(PROMPTS) * 2) + 11
    out = []
    for _ in range(steps):
        out.append(lean.step(tokens))
        tokens = out[-1].argmax(-1)
    return torch.stack(out)


def test_lean_step_packs_its_weights_and_computes_the_same_logits(tiny_llama, monkeypatch):
    model = load_model(str(tiny_llama), torch.device("cpu")).eval().to(torch.bfloat16)
    packed = _lean_logits(model)
    lean = LeanDecoder(model)
    lean.refresh()
    kinds = {w.is_mkldnn for layer in lean.layers for w in (layer.qkv_w, layer.o_w, layer.gu_w, layer.down_w)}
    assert kinds == {ONEDNN_BF16} and lean.head_w.is_mkldnn == ONEDNN_BF16
    monkeypatch.setattr(lean_decode, "pack", lambda w: w)  # the same step on plain weights
    plain = _lean_logits(model)
    assert torch.equal(packed, plain)


def test_an_update_repacks_the_weights(tiny_llama):
    """The packed weights are copies: an in-place change of the model (an optimizer step) reaches
    the next step's logits, as on plain weights."""
    model = load_model(str(tiny_llama), torch.device("cpu")).eval().to(torch.bfloat16)
    lean = LeanDecoder(model)
    lean.refresh()
    before = lean.layers[0].down_w
    with torch.no_grad():
        model.model.layers[0].mlp.down_proj.weight.mul_(2.0)
        model.lm_head.weight.add_(0.01)
    lean.refresh()
    assert lean.layers[0].down_w is not before
    x = torch.randn(3, model.config.intermediate_size).bfloat16()
    assert torch.equal(linear(x, lean.layers[0].down_w), F.linear(x, model.model.layers[0].mlp.down_proj.weight))
    h = torch.randn(3, model.config.hidden_size).bfloat16()
    assert torch.equal(linear(h, lean.head_w), F.linear(h, model.lm_head.weight))
