"""The lean update: shared-prompt log-probs and gradients equal the row-by-row computation."""
import pytest
import torch

from r1zero.training import logprobs
from r1zero.training.logprobs import completion_logprobs, length_buckets, prompt_groups
from r1zero.models import load_model, load_tokenizer
from r1zero.rollout.sampling import tokenize_prompts
from conftest import pack_rows


def _batch(tok):
    """Two prompts of different lengths x 3 completions of different lengths (right-padded)."""
    prompts = tokenize_prompts(tok, ["Using the numbers [1, 2, 3], make 6.", "Hi"], False)
    comps = [" 1 + 2 + 3", " 6", " I think the answer is 3 * 2", " ok", " hello there friend", "!"]
    comps = [tok(c, add_special_tokens=False).input_ids + [tok.eos_token_id] for c in comps]
    return pack_rows(tok.pad_token_id, [prompts[i // 3] for i in range(6)], comps)


def test_prompt_groups_finds_runs():
    ids = torch.tensor([[0, 5], [0, 5], [7, 5], [7, 5], [7, 5], [0, 5]])
    mask = torch.tensor([[0, 1], [0, 1], [1, 1], [1, 1], [1, 1], [0, 1]])
    first, counts = prompt_groups(ids, mask)
    assert first.tolist() == [0, 2, 5] and counts.tolist() == [2, 3, 1]


def test_length_buckets_trade_padding_for_calls():
    widths = [9, 32, 10, 0, 31, 9, 12]
    # Free calls: the 4 buckets that pad least (31 beside 32 pads 1, 10 beside 9 and 9 would pad 2);
    # rows of width 0 run nowhere.
    assert length_buckets(widths, 4, 0) == [[4, 1], [6], [2], [0, 5]]
    # 32 positions a call: the two long rows, then the short ones (6 x 12 + 2 x 32 + 2 x 32 < 6 x 32).
    assert length_buckets(widths, 4, 32) == [[4, 1], [0, 5, 2, 6]]
    assert length_buckets(widths, 4, 1000) == [[0, 5, 2, 6, 4, 1]]  # dear calls: one bucket
    assert length_buckets(widths, 1, 0) == [[0, 5, 2, 6, 4, 1]]
    assert length_buckets([0, 0], 4, 0) == []


@pytest.mark.parametrize("bucket_cost", [logprobs.BUCKET_COST_POSITIONS, 0, "cuda path"])
def test_shared_prompt_logprobs_and_gradients_equal_unshared(tiny_qwen2, bucket_cost, monkeypatch):
    """With the completions in one batch (the default's call cost at these short rows), in buckets
    of rows of one width each (calls free), and as CUDA runs them (no widths: every row in batch
    order, no buckets made), values and gradients equal the unshared pass."""
    tok = load_tokenizer(str(tiny_qwen2))
    model = load_model(str(tiny_qwen2), torch.device("cpu"))
    ids, am, P, cm = _batch(tok)
    made = []
    monkeypatch.setattr(logprobs, "length_buckets", lambda *a: made.append(length_buckets(*a)) or made[-1])
    if bucket_cost == "cuda path":
        shared = logprobs._shared_prompt_hidden
        monkeypatch.setattr(logprobs, "_shared_prompt_hidden", lambda *a: shared(*a[:6], None, a[7]))
    else:
        monkeypatch.setattr(logprobs, "BUCKET_COST_POSITIONS", bucket_cost)
    adv = torch.tensor([1.0, -0.5, 0.3, -1.0, 0.7, 0.2]).unsqueeze(1)
    results = {}
    for share in (True, False):
        model.zero_grad(set_to_none=True)
        lp, ent = completion_logprobs(model, ids, am, P, cm, temperature=0.7, chunk_size=5, share_prompts=share)
        (-(lp * adv * cm).sum()).backward()
        grads = {n: p.grad.clone() for n, p in model.named_parameters()}
        results[share] = (lp.detach(), ent, grads)
    lp_s, ent_s, g_s = results[True]
    lp_u, ent_u, g_u = results[False]
    torch.testing.assert_close(lp_s, lp_u, atol=2e-5, rtol=1e-5)
    torch.testing.assert_close(ent_s, ent_u, atol=2e-5, rtol=1e-5)
    assert torch.all(lp_s[cm == 0] == 0) and torch.all(lp_s[cm == 1] < 0)
    # Every parameter, the embedding rows of the prompt tokens included (their gradient sums over the group).
    for name in g_u:
        torch.testing.assert_close(g_s[name], g_u[name], atol=1e-5, rtol=1e-4, msg=name)
    assert g_u["model.embed_tokens.weight"][ids[0, P - 1]].abs().sum() > 0
    # widths 8, 5, 11, 3, 6, 2: the 4 longest apart
    assert [len(b) for b in made] == {"cuda path": [], 0: [4]}.get(bucket_cost, [1]), made


def test_shared_prompt_single_token_completions(tiny_llama):
    """C == 1: only the prompt's last state predicts; no completion pass."""
    tok = load_tokenizer(str(tiny_llama))
    model = load_model(str(tiny_llama), torch.device("cpu"))
    ids, am, P, cm = _batch(tok)
    ids, am, cm = ids[:, :P + 1], am[:, :P + 1], cm[:, :1]
    with torch.no_grad():
        a, _ = completion_logprobs(model, ids, am, P, cm, share_prompts=True)
        b, _ = completion_logprobs(model, ids, am, P, cm, share_prompts=False)
    torch.testing.assert_close(a, b, atol=2e-5, rtol=1e-5)


def test_tied_embedding_sparse_lookup_gives_the_dense_gradient(tiny_qwen2, monkeypatch):
    """A plain embedding tied to the LM head is looked up with a sparse gradient (no vocabulary-sized
    zero fill per lookup); the weight's summed gradient is the dense one the dense lookup gives, and
    AdamW steps on it. An untied embedding keeps the dense lookup (its gradient alone would be sparse)."""
    from r1zero.training import logprobs

    tok = load_tokenizer(str(tiny_qwen2))
    model = load_model(str(tiny_qwen2), torch.device("cpu"))
    assert not logprobs.sparse_embedding_grad(model.model, model.lm_head)
    model.lm_head.weight = model.model.embed_tokens.weight  # tied, as SmolLM2 and Qwen2.5-0.5B are
    assert logprobs.sparse_embedding_grad(model.model, model.lm_head)
    model.double()
    ids, am, P, cm = _batch(tok)
    adv = torch.tensor([1.0, -0.5, 0.3, -1.0, 0.7, 0.2], dtype=torch.float64).unsqueeze(1)
    grads = {}
    for sparse in (False, True):  # sparse last: its gradients are the ones AdamW steps on
        monkeypatch.setattr(logprobs, "sparse_embedding_grad", lambda d, h, s=sparse: s)
        for share in (True, False):
            model.zero_grad(set_to_none=True)
            lp, _ = completion_logprobs(model, ids, am, P, cm, share_prompts=share)
            (-(lp * adv * cm).sum()).backward()
            grads[sparse, share] = {n: p.grad.clone() for n, p in model.named_parameters()}
    emb = "model.embed_tokens.weight"
    for share in (True, False):
        assert grads[True, share][emb].layout == torch.strided
        for name, g in grads[False, share].items():
            torch.testing.assert_close(grads[True, share][name], g, atol=1e-12, rtol=1e-10, msg=name)
    assert grads[True, True][emb][ids[0, P - 1]].abs().sum() > 0  # a prompt token's row (the lookup's share)
    torch.optim.AdamW(model.parameters(), lr=1e-3).step()  # the gradient AdamW gets is dense


def test_tied_weight_gradient_accumulates_in_place_over_micro_batches(tiny_qwen2, monkeypatch):
    """The tied embedding / LM head's gradient (sparse lookups) is added into ``.grad`` where it
    lands: over two micro-batches under bf16 autocast it equals the dense lookups' accumulated one,
    and the backward passes make one vocabulary x hidden tensor in all (the first ``.grad``), where
    autograd's out-of-place sums made several a micro-batch."""
    from torch.utils._python_dispatch import TorchDispatchMode

    tok = load_tokenizer(str(tiny_qwen2))
    model = load_model(str(tiny_qwen2), torch.device("cpu"))
    model.lm_head.weight = model.model.embed_tokens.weight
    weight = model.lm_head.weight
    ids, am, P, cm = _batch(tok)
    adv = torch.tensor([1.0, -0.5, 0.3, -1.0, 0.7, 0.2]).unsqueeze(1)

    class WeightSized(TorchDispatchMode):  # new float32 tensors the size of the weight (not views)
        made = 0

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            out = func(*args, **(kwargs or {}))
            if (isinstance(out, torch.Tensor) and out.shape == weight.shape and out.dtype == torch.float32
                    and out.layout == torch.strided and not out._is_view() and not func._schema.name.endswith("_")):
                WeightSized.made += 1
            return out

    grads, made = {}, {}
    for sparse in (False, True):
        monkeypatch.setattr(logprobs, "sparse_embedding_grad", lambda d, h, s=sparse: s)
        model.zero_grad(set_to_none=True)
        WeightSized.made = 0
        for rows in (slice(0, 3), slice(3, 6)):  # two micro-batches, one .grad
            with torch.autocast("cpu", dtype=torch.bfloat16):
                lp, _ = completion_logprobs(model, ids[rows], am[rows], P, cm[rows])
            with WeightSized():
                (-(lp.float() * adv[rows] * cm[rows]).sum()).backward()
        grads[sparse] = {n: p.grad.clone() for n, p in model.named_parameters()}
        made[sparse] = WeightSized.made
    for name, g in grads[False].items():
        torch.testing.assert_close(grads[True][name], g, msg=name)
    assert grads[True]["model.embed_tokens.weight"].dtype == torch.float32
    assert made[True] == 1 and made[False] >= 4, made
