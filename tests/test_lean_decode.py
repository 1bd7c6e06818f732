"""The lean decode step (r1zero.rollout.lean_decode) computes what transformers' forward computes:
logits against the model's own forward step by step (left padding, a prompt repeated to its
samples, rows leaving, the cache growing past a block), greedy output against ``generate``, the
weights re-read after an update, and the models it turns away decode through transformers."""
import pytest
import torch
from transformers import DynamicCache

from r1zero.models import eos_token_ids, load_model, load_tokenizer
from r1zero.rollout.baseline import hf_generate
from r1zero.rollout.engine import lean_decoder
from r1zero.rollout.hf import cache_kwarg
from r1zero.rollout.kv_cache import reserved_cache
from r1zero.rollout.layout import left_pad
from r1zero.rollout.lean_decode import LeanDecoder, kept_rows, lean_support
from r1zero.rollout.sampling import generate, tokenize_prompts
from r1zero.training.logprobs import completion_logprobs

FAMILIES = ["tiny_qwen2", "tiny_llama", "tiny_qwen3"]
PROMPTS = [[5, 17, 300, 42], [9, 1000], [77, 78, 79, 80, 81, 82, 83]]  # different widths: left padding


def _reference_and_lean(model, steps: int, repeats: int, drop_at: int | None = None):
    """Feed the same tokens to transformers' forward (on a reserved cache) and to the lean step;
    returns the largest logit difference over the steps, and the logits' largest magnitude."""
    ids, mask = left_pad(PROMPTS, 0)
    pos = (mask.cumsum(-1) - 1).clamp(min=0)
    ref_cache = reserved_cache(model.config, ids.shape[1] + steps)
    pre = DynamicCache(config=model.config)
    kw = cache_kwarg(model)  # transformers 5.17 knows only past_key_values
    with torch.no_grad():
        logits = model(input_ids=ids, attention_mask=mask, position_ids=pos, use_cache=True, **{kw: ref_cache}).logits
        model(input_ids=ids, attention_mask=mask, position_ids=pos, use_cache=True, **{kw: pre})
    ref_cache.batch_repeat_interleave(repeats)
    lean = LeanDecoder(model)
    lean.start(pre, mask, repeats, steps)
    mask = mask.repeat_interleave(repeats, 0)
    tok = logits[:, -1].argmax(-1).repeat_interleave(repeats, 0)
    worst = scale = 0.0
    for t in range(steps):
        if t == drop_at:  # rows 0 and 2 leave, as finished rows do: the last two rows move into their places
            keep = kept_rows(torch.tensor([r in (0, 2) for r in range(len(tok))]))
            assert keep.tolist() == [5, 1, 4, 3]
            ref_cache.batch_select_indices(keep)
            lean.keep(keep)
            mask, tok = mask[keep], tok[keep]
        mask = torch.cat([mask, mask.new_ones(len(mask), 1)], 1)
        with torch.no_grad():
            ref = model(input_ids=tok[:, None], attention_mask=mask, position_ids=mask.sum(-1, keepdim=True) - 1,
                        use_cache=True, **{kw: ref_cache}).logits[:, -1]
        ours = lean.step(tok)
        assert torch.isfinite(ours).all(), t  # (max() below would pass over a NaN)
        worst = max(worst, (ours.float() - ref.float()).abs().max().item())
        scale = max(scale, ref.abs().max().item())
        tok = ref.argmax(-1)
    return worst, scale


@pytest.mark.parametrize("family", FAMILIES)
def test_lean_step_logits_equal_transformers_forward(family, request):
    """fp32: every step's logits within rounding of the model's forward, through a row drop (rows moved
    out of order) and to the cache's last position."""
    model = load_model(str(request.getfixturevalue(family)), torch.device("cpu")).eval()
    assert lean_support(model) is None
    worst, scale = _reference_and_lean(model, steps=69, repeats=2, drop_at=7)
    assert scale > 0.1
    assert worst < 1e-4 * max(1.0, scale), (worst, scale)


def test_the_cache_positions_still_to_fill_are_zeroed(tiny_llama, monkeypatch):
    """The cache is allocated without zeroing its prompt part. Memory the allocator reuses (the engine
    keeps freed memory in the process) can hold a NaN, which a -inf bias does not hide: allocated as
    all NaN, the cache still gives the logits of a fresh one."""
    model = load_model(str(tiny_llama), torch.device("cpu")).eval()
    fresh, _ = _reference_and_lean(model, steps=6, repeats=2)
    monkeypatch.setattr(torch.Tensor, "new_empty", lambda self, size, **kw: torch.full(
        size, float("nan"), dtype=self.dtype, device=self.device))
    reused, _ = _reference_and_lean(model, steps=6, repeats=2)
    assert reused == fresh


def test_lean_step_in_bf16_is_as_close_to_fp32_as_transformers(tiny_qwen2):
    """bf16 weights: the lean step's distance from the fp32 logits is of the order of transformers'
    own bf16 forward's (scores and softmax in fp32; the products in bf16 as transformers' are)."""
    path = str(tiny_qwen2)
    m32 = load_model(path, torch.device("cpu")).eval()
    m16 = load_model(path, torch.device("cpu")).eval().to(torch.bfloat16)
    ids, mask = left_pad(PROMPTS, 0)
    pos = (mask.cumsum(-1) - 1).clamp(min=0)
    tokens = torch.tensor([[11, 12, 13, 14, 15, 16]] * len(PROMPTS))
    full_mask = torch.cat([mask, torch.ones_like(tokens)], 1)
    with torch.no_grad():  # the fp32 and bf16 references: the whole sequence in one forward
        ref32 = m32(input_ids=torch.cat([ids, tokens], 1), attention_mask=full_mask,
                    position_ids=(full_mask.cumsum(-1) - 1).clamp(min=0)).logits[:, ids.shape[1]:].float()
        ref16 = m16(input_ids=torch.cat([ids, tokens], 1), attention_mask=full_mask,
                    position_ids=(full_mask.cumsum(-1) - 1).clamp(min=0)).logits[:, ids.shape[1]:].float()
        pre = DynamicCache(config=m16.config)
        m16(input_ids=ids, attention_mask=mask, position_ids=pos, use_cache=True, **{cache_kwarg(m16): pre})
    lean = LeanDecoder(m16)
    lean.start(pre, mask, 1, tokens.shape[1])
    ours = torch.stack([lean.step(tokens[:, t]).float() for t in range(tokens.shape[1])], 1)
    err_ours = (ours[:, 1:] - ref32[:, 1:]).abs().max().item()
    err_hf = (ref16[:, 1:] - ref32[:, 1:]).abs().max().item()
    assert 0 < err_ours <= 2 * err_hf + 1e-3, (err_ours, err_hf)


@pytest.mark.parametrize("family", FAMILIES)
def test_lean_greedy_equals_transformers_generate(family, request):
    """Through the engine, with the lean step and without, greedy rows equal generate's (fp32)."""
    path = str(request.getfixturevalue(family))
    tok, model = load_tokenizer(path), load_model(path, torch.device("cpu"))
    assert lean_decoder(model) is not None
    chat = ["What is 2 + 3?", "Hello there, how are you today my friend?", "Using [1, 2, 3], make 6."]
    ids, eos = tokenize_prompts(tok, chat, False), eos_token_ids(tok, model)
    kw = dict(num_generations=2, max_new_tokens=40, eos_ids=eos, temperature=0.0)
    ref = hf_generate(model, tok, ids, **kw)
    for lean in (True, False):
        ours = generate(model, tok, ids, lean=lean, **kw)
        assert torch.equal(ours.completion_ids, ref.completion_ids), lean


def test_lean_rereads_weights_after_an_update(tiny_llama):
    """The concatenated weights are copies: after an in-place change of the model (what an optimizer
    step is), the lean step samples from the new weights, as transformers' forward does."""
    path = str(tiny_llama)
    tok, model = load_tokenizer(path), load_model(path, torch.device("cpu"))
    ids, eos = tokenize_prompts(tok, ["What is 2 + 3?", "Count to five."], False), eos_token_ids(tok, model)
    kw = dict(num_generations=4, max_new_tokens=16, eos_ids=eos, temperature=1.0, seed=3)
    before = generate(model, tok, ids, lean=True, **kw)
    with torch.no_grad():
        for layer in model.model.layers:
            layer.self_attn.q_proj.weight.mul_(3.0)
            layer.mlp.up_proj.weight.add_(0.05)
    after = generate(model, tok, ids, lean=True, **kw)
    assert not torch.equal(after.completion_ids, before.completion_ids)
    # The sampler's log-probs are the changed model's (its forward over the sampled rows). Rows are
    # not compared token for token: a random model's next-token distribution is nearly flat, so a
    # rounding difference between two attention kernels changes which token a draw lands on.
    with torch.no_grad():
        forward, _ = completion_logprobs(model, after.input_ids, after.attention_mask, after.prompt_ids.shape[1],
                                         after.completion_mask)
    m = after.completion_mask.bool()
    torch.testing.assert_close(after.sampled_logprobs[m], forward[m], rtol=0, atol=1e-4)


def test_models_it_does_not_cover_decode_through_transformers(tiny_qwen2):
    """A wrapped projection (as LoRA makes), a sliding window, mixed dtypes: lean_support names why,
    and the engine samples through the model's forward (the same rows)."""
    path = str(tiny_qwen2)
    tok, model = load_tokenizer(path), load_model(path, torch.device("cpu"))

    class Wrapped(torch.nn.Linear):
        pass

    attn = model.model.layers[0].self_attn
    wrapped = Wrapped(attn.q_proj.in_features, attn.q_proj.out_features, bias=True)
    wrapped.load_state_dict(attn.q_proj.state_dict())
    ids, eos = tokenize_prompts(tok, ["What is 2 + 3?"], False), eos_token_ids(tok, model)
    kw = dict(num_generations=3, max_new_tokens=12, eos_ids=eos, temperature=1.0, seed=1)
    plain = generate(model, tok, ids, **kw)
    attn.q_proj = wrapped
    assert lean_support(model) == "Wrapped projections"
    assert lean_decoder(model) is None
    assert torch.equal(generate(model, tok, ids, lean=False, **kw).completion_ids, plain.completion_ids)
    model.model.layers[1].input_layernorm.weight.data = model.model.layers[1].input_layernorm.weight.data.double()
    attn.q_proj = torch.nn.Linear(wrapped.in_features, wrapped.out_features)
    assert lean_support(model) == "weights in several dtypes"
    model.model.layers[1].input_layernorm.weight.data = model.model.layers[1].input_layernorm.weight.data.float()
    model.config.layer_types = ["sliding_attention", "full_attention"]
    assert lean_support(model) == "sliding-window attention"
