"""Weights packed once for oneDNN (r1zero.rollout.packed_linear): bf16 products equal F.linear's
bit for bit at the decode's row counts, float32 ones are float32 arithmetic (within rounding of a
float64 product, as MKL's are), the lean step packs its weights and computes the logits it computed
unpacked, and an update re-packs them."""
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
ONEDNN_FP32 = packed_linear._cpu_fp32_supported()
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


@pytest.mark.parametrize("rows", [1, 16, 64, 300])
def test_packed_float32_product_is_float32_arithmetic(rows):
    """Not MKL's bit for bit (another summation order), but as close to the float64 product: no
    reduced-precision mode (a bf16 product would be about 1e-2 off here)."""
    torch.manual_seed(rows)
    w, b = torch.randn(384, 576) * 0.05, torch.randn(384)
    x = torch.randn(rows, 576)
    p = pack(w)
    assert p.is_mkldnn == ONEDNN_FP32
    exact = F.linear(x.double(), w.double(), b.double())
    mkl = (F.linear(x, w, b).double() - exact).abs().max().item()
    ours = (linear(x, p, b).double() - exact).abs().max().item()
    assert ours <= 4 * mkl + 1e-6, (ours, mkl)


def test_only_bf16_and_float32_cpu_weights_are_packed():
    assert packs(torch.randn(8, 4)) == ONEDNN_FP32 and packs(torch.randn(8, 4).bfloat16()) == ONEDNN_BF16
    for w in (torch.randn(8, 4).half(), torch.randn(8).bfloat16(), torch.randn(8)):
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


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32])
def test_lean_step_packs_its_weights_and_computes_the_same_logits(tiny_llama, monkeypatch, dtype):
    """bf16: the logits of plain weights bit for bit; float32: to rounding (oneDNN's sums, not MKL's)."""
    model = load_model(str(tiny_llama), torch.device("cpu")).eval().to(dtype)
    packed = _lean_logits(model)
    lean = LeanDecoder(model)
    lean.refresh()
    onednn = ONEDNN_BF16 if dtype == torch.bfloat16 else ONEDNN_FP32
    kinds = {w.is_mkldnn for layer in lean.layers for w in (layer.qkv_w, layer.o_w, layer.gu_w, layer.down_w)}
    assert kinds == {onednn} and lean.head_w.is_mkldnn == onednn
    monkeypatch.setattr(lean_decode, "pack", lambda w: w)  # the same step on plain weights
    plain = _lean_logits(model)
    if dtype == torch.bfloat16:
        assert torch.equal(packed, plain)
    else:
        torch.testing.assert_close(packed, plain, rtol=0, atol=1e-5)


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
