"""The rollout engine: greedy output equals transformers' generate token for token; sampling is
the filtered softmax distribution and does not depend on the batch size."""
import pytest
import torch
from transformers.generation.logits_process import TemperatureLogitsWarper, TopKLogitsWarper, TopPLogitsWarper

from r1zero.models import eos_token_ids, load_model, load_tokenizer
from r1zero.rollout.baseline import hf_generate
from r1zero.rollout.sampling import generate, tokenize_prompts
from r1zero.rollout.engine import draw, filter_logits, row_keys, sample_next, token_logprobs

PROMPTS = ["What is 2 + 3?", "Hello there, how are you today my friend?", "Using the numbers [1, 2, 3], make 6."]


def _setup(path):
    tok = load_tokenizer(str(path))
    model = load_model(str(path), torch.device("cpu"))
    chat = [tok.apply_chat_template([{"role": "user", "content": p}], tokenize=False, add_generation_prompt=True)
            for p in PROMPTS]
    return tok, model, tokenize_prompts(tok, chat, False), eos_token_ids(tok, model)


def _assert_same(a, b):
    assert torch.equal(a.completion_ids, b.completion_ids)
    assert torch.equal(a.completion_mask, b.completion_mask)
    assert a.completions == b.completions


@pytest.mark.parametrize("family", ["tiny_qwen2", "tiny_llama"])
def test_greedy_equals_transformers_generate_tiny(family, request):
    tok, model, ids, eos = _setup(request.getfixturevalue(family))
    ref = hf_generate(model, tok, ids, num_generations=2, max_new_tokens=12, eos_ids=eos, temperature=0.0)
    for cache in ("dynamic", "static"):
        for bs in (None, 2):
            ours = generate(model, tok, ids, num_generations=2, max_new_tokens=12, eos_ids=eos, temperature=0.0,
                            batch_size=bs, cache=cache)
            _assert_same(ours, ref)


def test_greedy_stops_rows_early_like_generate(tiny_qwen2):
    """Rows that hit an EOS leave the decode batch; the others go on exactly as in generate."""
    tok, model, ids, eos = _setup(tiny_qwen2)
    with torch.no_grad():  # make EOS (id 2) likely but not certain, so rows finish at different steps
        model.lm_head.weight[2] = model.lm_head.weight[2] * 0 + model.lm_head.weight.mean(0) * 3
    ref = hf_generate(model, tok, ids, num_generations=1, max_new_tokens=16, eos_ids=eos, temperature=0.0)
    ours = generate(model, tok, ids, num_generations=1, max_new_tokens=16, eos_ids=eos, temperature=0.0)
    _assert_same(ours, ref)


def test_every_cache_ends_the_completions_at_the_last_eos(stopping_qwen2):
    """Rows that end at different steps (here 1 and 3 tokens, all before the limit): both caches give
    generate's ids, and the width is the longest completion, EOS included, with no all-padding
    column after it (the static cache records each row's EOS step in its own loop)."""
    tok = load_tokenizer(str(stopping_qwen2))
    model = load_model(str(stopping_qwen2), torch.device("cpu"))
    ids, eos = tokenize_prompts(tok, PROMPTS, False), eos_token_ids(tok, model)
    kw = dict(num_generations=4, max_new_tokens=48, eos_ids=eos, temperature=0.0)
    ref = hf_generate(model, tok, ids, **kw)
    assert ref.lengths.tolist() == [1] * 8 + [3] * 4 and not ref.truncated.any()
    for cache in ("dynamic", "static"):
        for bs in (None, 4):
            ours = generate(model, tok, ids, batch_size=bs, cache=cache, **kw)
            assert ours.completion_ids.shape == (12, 3), (cache, bs, ours.completion_ids.shape)
            assert bool(ours.completion_mask[:, -1].any())
            _assert_same(ours, ref)


def test_greedy_equals_transformers_generate_embedded():
    tok, model, ids, eos = _setup("embedded")
    ref = hf_generate(model, tok, ids[:2], num_generations=1, max_new_tokens=10, eos_ids=eos, temperature=0.0)
    ours = generate(model, tok, ids[:2], num_generations=1, max_new_tokens=10, eos_ids=eos, temperature=0.0)
    _assert_same(ours, ref)
    assert ref.lengths.min() >= 3  # real text, not an immediate EOS


def test_sampling_independent_of_batch_size_and_cache(tiny_qwen2):
    tok, model, ids, eos = _setup(tiny_qwen2)
    kw = dict(num_generations=4, max_new_tokens=10, eos_ids=eos, temperature=0.9, top_p=0.95, top_k=50, seed=7)
    full = generate(model, tok, ids, **kw)
    for bs, cache in ((4, "dynamic"), (8, "dynamic"), (None, "static")):
        _assert_same(generate(model, tok, ids, batch_size=bs, cache=cache, **kw), full)
    # A prompt's samples are its own: the same prompt at the same index draws the same, alone or not.
    alone = generate(model, tok, ids[:1], **kw)
    assert torch.equal(alone.completion_ids, full.completion_ids[:4, :alone.completion_ids.shape[1]])
    # Samples of a group differ, another seed draws differently.
    assert len(set(full.completions[:4])) > 1
    assert not torch.equal(generate(model, tok, ids, **{**kw, "seed": 8}).completion_ids, full.completion_ids)


def test_filters_match_transformers_warpers():
    torch.manual_seed(0)
    logits = torch.randn(6, 50)
    logits[:, 10] = logits[:, 11]  # ties at the cut
    for temp, k, p in ((0.7, 0, 1.0), (1.0, 5, 1.0), (1.3, 0, 0.8), (0.9, 20, 0.5)):
        ref = TemperatureLogitsWarper(temp)(None, logits.clone())
        if k:
            ref = TopKLogitsWarper(k)(None, ref)
        if p < 1:
            ref = TopPLogitsWarper(p)(None, ref)
        torch.testing.assert_close(filter_logits(logits, temp, k, p), ref)


def test_sampling_follows_the_filtered_distribution():
    n = 20000
    logits = torch.log(torch.tensor([0.5, 0.3, 0.15, 0.05])).repeat(n, 1)
    keys = row_keys(3, list(range(n)), [0] * n)
    counts = torch.bincount(sample_next(logits, keys, 0, temperature=1.0, top_k=0, top_p=1.0), minlength=4)
    torch.testing.assert_close(counts.float() / n, torch.tensor([0.5, 0.3, 0.15, 0.05]), atol=0.012, rtol=0)
    # top_k=2 renormalises over the two best: 0.625 / 0.375; other steps draw other numbers.
    counts = torch.bincount(sample_next(logits, keys, 5, temperature=1.0, top_k=2, top_p=1.0), minlength=4)
    torch.testing.assert_close(counts.float() / n, torch.tensor([0.625, 0.375, 0.0, 0.0]), atol=0.012, rtol=0)
    a = sample_next(logits, keys, 1, temperature=1.0, top_k=0, top_p=1.0)
    b = sample_next(logits, keys, 2, temperature=1.0, top_k=0, top_p=1.0)
    assert (a != b).float().mean() > 0.3


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("temperature", [1.0, 0.7])
def test_draw_is_sample_next_and_token_logprobs_in_one_pass(dtype, temperature):
    """The one-pass sampler draws the tokens of the two-pass one (the same uniforms on a CDF rounded
    differently: a draw moves only at a rounding boundary) and returns the log-probs token_logprobs
    gives; it follows the distribution; a filtered draw is sample_next's exactly."""
    g = torch.Generator().manual_seed(0)
    logits = (torch.randn(256, 5000, generator=g) * 3).to(dtype)
    keys = row_keys(11, list(range(256)), [0] * 256)
    same = 0
    for t in range(4):
        tok, lp = draw(logits, keys, t, temperature=temperature, top_k=0, top_p=1.0, with_logprobs=True)
        same += int((tok == sample_next(logits, keys, t, temperature=temperature, top_k=0, top_p=1.0)).sum())
        torch.testing.assert_close(lp, token_logprobs(logits, tok, temperature), rtol=0, atol=2e-5)
        assert draw(logits, keys, t, temperature=temperature, top_k=0, top_p=1.0, with_logprobs=False)[1] is None
    assert same >= 4 * 256 - 2
    for k, p in ((50, 1.0), (0, 0.9)):
        tok, lp = draw(logits, keys, 0, temperature=temperature, top_k=k, top_p=p, with_logprobs=True)
        assert torch.equal(tok, sample_next(logits, keys, 0, temperature=temperature, top_k=k, top_p=p))
        assert torch.equal(lp, token_logprobs(logits, tok, temperature))
    n = 20000
    probs = torch.log(torch.tensor([0.5, 0.3, 0.15, 0.05])).repeat(n, 1).to(dtype)
    tok, _ = draw(probs, row_keys(3, list(range(n)), [0] * n), 0, temperature=1.0, top_k=0, top_p=1.0,
                  with_logprobs=False)
    torch.testing.assert_close(torch.bincount(tok, minlength=4).float() / n,
                               torch.tensor([0.5, 0.3, 0.15, 0.05]), atol=0.012, rtol=0)
