"""Rollout and log-probs on a real tokenizer: left padding, position ids, EOS handling, chunking."""
import torch

from r1zero.rollout.layout import left_pad, position_ids_from_mask
from r1zero.training.logprobs import completion_logprobs
from r1zero.models import eos_token_ids, load_model, load_tokenizer
from r1zero.rollout.sampling import completion_mask_from_ids, generate, tokenize_prompts
from conftest import pack_rows


def naive_logprobs(model, ids, temperature):
    """One unpadded sequence, full logits: the reference."""
    with torch.no_grad():
        logits = model(input_ids=ids.unsqueeze(0)).logits[0, :-1].float() / temperature
    return torch.log_softmax(logits, -1).gather(-1, ids[1:].unsqueeze(-1)).squeeze(-1)


def test_left_pad_and_positions():
    ids, mask = left_pad([[5, 6, 7], [8]], pad_id=0)
    assert ids.tolist() == [[5, 6, 7], [0, 0, 8]]
    assert mask.tolist() == [[1, 1, 1], [0, 0, 1]]
    assert position_ids_from_mask(mask).tolist() == [[0, 1, 2], [0, 0, 0]]


def test_completion_mask_keeps_eos_and_drops_after():
    comp = torch.tensor([[11, 12, 2, 2, 2], [11, 0, 13, 14, 15], [11, 12, 13, 14, 15]])
    mask, truncated = completion_mask_from_ids(comp, eos_ids=[2, 0])
    assert mask.tolist() == [[1, 1, 1, 0, 0], [1, 1, 0, 0, 0], [1, 1, 1, 1, 1]]
    assert truncated.tolist() == [False, False, True]


def test_eos_ids_from_tokenizer_and_generation_config(tiny_qwen2):
    tok = load_tokenizer(str(tiny_qwen2))
    model = load_model(str(tiny_qwen2), torch.device("cpu"))
    # <|im_end|> from the tokenizer, <|endoftext|> (0) only from the generation config.
    assert eos_token_ids(tok, model) == [2, 0]


def test_chunked_padded_logprobs_equal_unpadded_full_logits(tiny_llama):
    tok = load_tokenizer(str(tiny_llama))
    model = load_model(str(tiny_llama), torch.device("cpu"))
    prompts = ["Using the numbers [1, 2, 3], make 6.", "Hi"]
    prompt_ids = tokenize_prompts(tok, prompts, add_special_tokens=False)
    completions = [tok("Sure: 1 + 2 + 3", add_special_tokens=False).input_ids + [tok.eos_token_id],
                   tok(" ok", add_special_tokens=False).input_ids + [tok.eos_token_id]]
    ids, am, P, c_mask = pack_rows(tok.pad_token_id, prompt_ids, completions)
    for chunk in (1, 3, 1000):
        lp, ent = completion_logprobs(model, ids, am, P, c_mask, temperature=0.7, chunk_size=chunk)
        for i in range(2):
            full = torch.tensor(prompt_ids[i] + completions[i])
            ref = naive_logprobs(model, full, 0.7)[len(prompt_ids[i]) - 1:]
            n = len(completions[i])
            torch.testing.assert_close(lp[i, :n], ref, atol=1e-5, rtol=1e-5)
            assert torch.all(lp[i, n:] == 0) and torch.all(ent[i, n:] == 0)
            assert torch.all(ent[i, :n] > 0)


def test_chunked_gradients_equal_full_logits_gradients(tiny_qwen2):
    tok = load_tokenizer(str(tiny_qwen2))
    model = load_model(str(tiny_qwen2), torch.device("cpu"))
    ids = torch.tensor([tok("a b c d e f g", add_special_tokens=False).input_ids])
    am = torch.ones_like(ids)
    cm = torch.ones((1, ids.shape[1] - 3), dtype=torch.long)
    lp, _ = completion_logprobs(model, ids, am, 3, cm, temperature=1.0, chunk_size=2)
    lp.sum().backward()
    g_chunk = model.lm_head.weight.grad.clone()
    model.zero_grad()
    logits = model(input_ids=ids).logits[0, 2:-1]
    ref = torch.log_softmax(logits, -1).gather(-1, ids[0, 3:].unsqueeze(-1)).sum()
    ref.backward()
    torch.testing.assert_close(g_chunk, model.lm_head.weight.grad, atol=1e-6, rtol=1e-5)


def test_generate_groups_padding_and_eos(tiny_qwen2):
    tok = load_tokenizer(str(tiny_qwen2))
    model = load_model(str(tiny_qwen2), torch.device("cpu"))
    eos = eos_token_ids(tok, model)
    prompt_ids = tokenize_prompts(tok, ["What is 2 + 3?", "Hello there, how are you today my friend?"], False)
    r = generate(model, tok, prompt_ids, num_generations=3, max_new_tokens=8, eos_ids=eos, temperature=1.0, seed=1,
                 batch_size=4)
    assert r.completion_ids.shape[0] == 6 and len(r.completions) == 6
    # Rows 0-2 share prompt 0, left-padded to the longer prompt.
    for i in range(3):
        assert r.prompt_mask[i].sum() == len(prompt_ids[0])
        assert r.prompt_ids[i, -len(prompt_ids[0]):].tolist() == prompt_ids[0]
    for i in range(6):
        n = int(r.completion_mask[i].sum())
        row = r.completion_ids[i].tolist()
        if r.truncated[i]:
            assert n == 8 and not any(t in eos for t in row)
        else:
            assert row[n - 1] in eos and not any(t in eos for t in row[:n - 1])
        assert all(t == tok.pad_token_id for t in row[n:])
        text_ids = row[:n - (0 if r.truncated[i] else 1)]
        assert r.completions[i] == tok.decode(text_ids, skip_special_tokens=True)
    # Same seed, same samples; the global RNG is untouched.
    state = torch.get_rng_state()
    r2 = generate(model, tok, prompt_ids, num_generations=3, max_new_tokens=8, eos_ids=eos, temperature=1.0, seed=1,
                  batch_size=4)
    assert torch.equal(r.completion_ids, r2.completion_ids)
    assert torch.equal(state, torch.get_rng_state())


def test_generation_stops_on_generation_config_eos(tiny_qwen2):
    """A model that always emits <|endoftext|> (id 0, an EOS only in the generation config) stops at once."""
    tok = load_tokenizer(str(tiny_qwen2))
    model = load_model(str(tiny_qwen2), torch.device("cpu"))
    with torch.no_grad():
        model.lm_head.weight.zero_()
        model.lm_head.weight[0] = 1.0  # every logit favours token 0
        model.lm_head.weight[0] *= 100
    prompt_ids = tokenize_prompts(tok, ["x"], False)
    r = generate(model, tok, prompt_ids, num_generations=2, max_new_tokens=10, eos_ids=eos_token_ids(tok, model),
                 temperature=0.0)
    assert r.completion_mask.sum(-1).tolist() == [1, 1]
    assert r.truncated.tolist() == [False, False]
    assert r.completions == ["", ""]
