"""The log-prob paths of r1zero/training/logprobs.py agree: with gradient checkpointing on (activations
recomputed in the backward pass; every row run in full, since a checkpointed model keeps no KV
cache to share) the values, entropies and every weight's gradient equal the plain path's, in
float64 (the models run their norms and rotary embeddings in float32, so agreement is to about
1e-7 of the largest entry, not 1e-15), for the log-prob loss and an entropy term (entropy_grad)."""
import pytest
import torch
from conftest import pack_rows

from r1zero.training import logprobs, token_logprobs
from r1zero.training.logprobs import completion_logprobs
from r1zero.models import load_model, load_tokenizer
from r1zero.rollout.sampling import tokenize_prompts


def _batch(tok):
    prompts = tokenize_prompts(tok, ["Using the numbers [1, 2, 3], make 6.", "Hi"], False)
    comps = [" 1 + 2 + 3", " 6", " I think the answer is 3 * 2", " ok", " hello there friend", "!"]
    comps = [tok(c, add_special_tokens=False).input_ids + [tok.eos_token_id] for c in comps]
    return pack_rows(tok.pad_token_id, [prompts[i // 3] for i in range(6)], comps)


def _run(model, batch, checkpointing, calls):
    if checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    else:
        model.gradient_checkpointing_disable()
    ids, am, P, cm = batch
    adv = torch.tensor([1.0, -0.5, 0.3, -1.0, 0.7, 0.2], dtype=torch.float64).unsqueeze(1)
    model.zero_grad(set_to_none=True)
    lp, ent = completion_logprobs(model, ids, am, P, cm, temperature=0.7, chunk_size=5, entropy_grad=True)
    calls.append("backward")
    (-(lp * adv * cm).sum() - 0.3 * (ent * cm).sum()).backward()
    return lp.detach(), ent.detach(), {n: p.grad.clone() for n, p in model.named_parameters()}


def test_gradient_checkpointing_logprobs_and_gradients_equal_the_plain_path(tiny_llama):
    tok = load_tokenizer(str(tiny_llama))
    model = load_model(str(tiny_llama), torch.device("cpu")).double()  # train mode: checkpointing is active
    batch = _batch(tok)
    calls_c, calls_p = [], []
    layer = model.model.layers[0].mlp  # inside the checkpointed forward (hooks on the layer itself run outside it)
    hook = layer.register_forward_pre_hook(lambda m, a: (calls_c if model.is_gradient_checkpointing else calls_p)
                                           .append("layer"))
    lp_c, ent_c, g_c = _run(model, batch, True, calls_c)
    lp_p, ent_p, g_p = _run(model, batch, False, calls_p)
    hook.remove()
    # The paths really differ: checkpointed, the layer runs once over the full rows and again in the
    # backward pass; plain, it runs twice before it (shared prompt, then completions) and not after.
    assert calls_c == ["layer", "backward", "layer"] and calls_p == ["layer", "layer", "backward"], (calls_c, calls_p)
    assert lp_c.dtype == torch.float64
    torch.testing.assert_close(lp_c, lp_p, atol=1e-10, rtol=0)
    torch.testing.assert_close(ent_c, ent_p, atol=1e-10, rtol=0)
    for name in g_p:
        scale = float(g_p[name].abs().max())
        assert scale > 0, name
        assert float((g_c[name] - g_p[name]).abs().max()) <= 1e-6 * scale, name


class _WrappedHead(torch.nn.Module):
    """An LM head that is not a torch Linear (as some architectures' are): completion_logprobs cannot
    push chunks of hidden states through it, so it takes the full-logits path."""

    def __init__(self, linear: torch.nn.Linear):
        super().__init__()
        self.linear = linear

    def forward(self, hidden):
        return self.linear(hidden)


def test_full_logits_path_equals_the_chunked_path_and_the_tempered_softmax(tiny_qwen2):
    """The path for heads that are not a Linear: its log-probs and entropies equal the chunked
    path's and log_softmax(logits / temperature) at the completion tokens, for temperatures other
    than 1 (the samples come from the tempered distribution, so their log-probs must too)."""
    tok = load_tokenizer(str(tiny_qwen2))
    model = load_model(str(tiny_qwen2), torch.device("cpu"), trainable=False).double()
    ids, am, P, cm = _batch(tok)
    with torch.no_grad():
        logits = model(input_ids=ids, attention_mask=am, position_ids=(am.cumsum(-1) - 1).clamp(min=0),
                       use_cache=False).logits[:, P - 1:-1]
        chunked = {t: completion_logprobs(model, ids, am, P, cm, temperature=t, chunk_size=5) for t in (0.6, 1.3)}
        model.lm_head = _WrappedHead(model.lm_head)
        full = {t: completion_logprobs(model, ids, am, P, cm, temperature=t) for t in (0.6, 1.3)}
    for t in (0.6, 1.3):
        logp_all = torch.log_softmax(logits / t, dim=-1)
        want = logp_all.gather(-1, ids[:, P:].unsqueeze(-1)).squeeze(-1) * cm
        want_ent = -(logp_all.exp() * logp_all).sum(-1) * cm
        torch.testing.assert_close(full[t][0], want, atol=1e-10, rtol=0)
        torch.testing.assert_close(full[t][1] * cm, want_ent, atol=1e-10, rtol=0)
        torch.testing.assert_close(full[t][0], chunked[t][0], atol=1e-10, rtol=0)
        torch.testing.assert_close(full[t][1], chunked[t][1], atol=1e-10, rtol=0)
    assert (full[0.6][0] - full[1.3][0]).abs().max() > 0.01  # the temperature matters at these values


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32, torch.float64])
@pytest.mark.parametrize("temperature", [1.0, 0.7])
def test_sliced_target_logprobs_equal_autograd_bit_for_bit_with_one_new_tensor(dtype, temperature, monkeypatch):
    """The log-prob path without an entropy gradient (``sliced_target_logprobs``, a few rows at a time)
    gives the very values, entropies and logit gradients of the autograd formulas, over slices that
    split the rows unevenly; forward and backward make one new tensor of the logits' size (the
    gradient), where autograd's formulas make one per step."""
    from torch.utils._python_dispatch import TorchDispatchMode

    monkeypatch.setattr(token_logprobs, "CPU_SLICE_ELEMENTS", 3 * 1000)  # 3 rows a slice: 37 = 12 x 3 + 1
    torch.manual_seed(0)
    logits = (torch.randn(37, 1000) * 3).to(dtype)
    targets = torch.randint(0, 1000, (37,))
    g = torch.randn(37, dtype=torch.float64 if dtype == torch.float64 else torch.float32)

    class LogitSized(TorchDispatchMode):  # new memory of the logits' size (not a view or alias of an input)
        made = 0

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            out = func(*args, **(kwargs or {}))
            inputs = {a.untyped_storage().data_ptr() for a in args if isinstance(a, torch.Tensor)}
            if (isinstance(out, torch.Tensor) and out.numel() == logits.numel()
                    and out.untyped_storage().data_ptr() not in inputs):
                LogitSized.made += 1
            return out

    results = {}
    for name, fn in (("sliced", lambda x: token_logprobs.sliced_target_logprobs(x, targets, temperature)),
                     ("autograd", lambda x: token_logprobs.target_logprobs(token_logprobs.at_least_fp32(x), targets,
                                                                            temperature, False))):
        x = logits.clone().requires_grad_()
        LogitSized.made = 0
        with LogitSized():
            lp, ent = fn(x)
            (lp * g).sum().backward()
        results[name] = (lp, ent, x.grad, LogitSized.made)
    (lp, ent, grad, made), (lp0, ent0, grad0, made0) = results["sliced"], results["autograd"]
    assert lp.dtype == lp0.dtype and grad.dtype == dtype
    assert torch.equal(lp, lp0) and torch.equal(ent, ent0) and torch.equal(grad, grad0)
    assert not ent.requires_grad
    assert made == 1 and made0 >= 4, (made, made0)


def test_a_checkpointed_chunk_does_not_recompute_the_entropy_in_its_backward():
    """The entropy (a softmax over the chunk, only logged without entropy_grad) is computed after the
    log-prob's function, so the checkpoint's recompute stops before it: no softmax in the backward."""
    from torch.utils._python_dispatch import TorchDispatchMode
    from torch.utils.checkpoint import checkpoint

    torch.manual_seed(0)
    hidden, weight = torch.randn(50, 16, requires_grad=True), torch.randn(3000, 16, requires_grad=True)
    targets = torch.randint(0, 3000, (50,))
    lp, ent = checkpoint(logprobs._chunk_logprobs, hidden, targets, weight, None, 0.7, None, False, use_reentrant=False)

    class Softmaxes(TorchDispatchMode):
        seen = 0

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            Softmaxes.seen += "softmax" in func._schema.name
            return func(*args, **(kwargs or {}))

    with Softmaxes():
        lp.sum().backward()
    assert Softmaxes.seen == 0 and weight.grad.abs().sum() > 0 and ent.isfinite().all()
