"""The GPU path's logic, run on the CPU: bf16 rollouts on both caches (the default on CUDA is the
static cache under bf16), the compiled decode step, its fallback, no EOS ids, a model vocabulary
larger than the tokenizer's, and finite left-padded bf16 log-probs (issue 13).

The compiled step is traced with the "aot_eager" backend (dynamo and AOTAutograd, the same graph
capture as on CUDA, about 2 s): inductor's CPU code generation took 47 s for the tiny model here.
.ci/run runs this file a second time against the lowest supported transformers (5.17)."""
import logging

import pytest
import torch
from torch._dynamo.exc import TorchRuntimeError
from torch._dynamo.testing import CompileCounterWithBackend
from transformers import Qwen2Config, Qwen2ForCausalLM

from r1zero.models import eos_token_ids, load_model, load_tokenizer
from r1zero.rollout.baseline import hf_generate
from r1zero.rollout.engine import generate_ids, static_caches
from r1zero.rollout.sampling import generate
from r1zero.rollout.weights import rollout_model
from r1zero.training.logprobs import completion_logprobs

from conftest import pack_rows

BF16 = torch.bfloat16
PROMPTS = [[5, 6, 7, 8], [9, 10], [11, 12, 13]]  # different widths: left padding in every batch


def _model(path):
    return load_model(str(path), torch.device("cpu"))


def _bf16_weights(model):
    """``model`` with bf16 parameters and its buffers as they were (the rotary inv_freq stays fp32,
    as in a model loaded with dtype=bfloat16)."""
    for p in model.parameters():
        p.data = p.data.to(BF16)
    return model.requires_grad_(False)


def _ids(model, **kw):
    args = dict(num_generations=2, max_new_tokens=8, eos_ids=[2, 0], pad_id=2, temperature=1.0, seed=3,
                autocast_dtype=BF16)
    args.update(kw)
    return generate_ids(model, PROMPTS, **args)


def test_bf16_rollouts_sample_on_both_caches_with_bf16_weights(tiny_qwen2):
    """transformers 5.17 stopped the static cache under bf16 autocast at the first prompt (fp32 keys,
    bf16 values, one buffer dtype). The rollout runs bf16 weights instead: both caches sample, and
    exactly what a model cast to bf16 samples without autocast."""
    model = _model(tiny_qwen2)
    cast = _bf16_weights(_model(tiny_qwen2))
    for temperature in (1.0, 0.0):
        dyn = _ids(model, cache="dynamic", temperature=temperature)
        static = _ids(model, cache="static", temperature=temperature)
        assert dyn.shape == (6, 8)
        assert torch.equal(dyn, _ids(cast, cache="dynamic", temperature=temperature, autocast_dtype=None))
        assert torch.equal(static, _ids(cast, cache="static", temperature=temperature, autocast_dtype=None))
    assert all(p.dtype == torch.float32 for p in model.parameters())  # the master weights stay fp32


def test_static_cache_is_bf16_and_reused_across_rollouts(tiny_qwen2):
    """One cache per shape, reset and reused (CUDA graphs record its addresses), K and V in bf16
    (under autocast the K cache was fp32: twice the memory)."""
    model = _model(tiny_qwen2)
    keys_before = set(model.state_dict())
    first = _ids(model, cache="static")
    twin, autocast = rollout_model(model, BF16)
    assert autocast is None and twin is not model
    caches = static_caches(twin)
    assert list(caches) == [(6, 256)]
    (pkv,) = caches.values()
    ptrs = [(layer.keys.data_ptr(), layer.values.data_ptr()) for layer in pkv.layers]
    assert {layer.keys.dtype for layer in pkv.layers} == {layer.values.dtype for layer in pkv.layers} == {BF16}
    assert torch.equal(_ids(model, cache="static"), first)  # the reset cache gives the same samples
    assert static_caches(twin)[(6, 256)] is pkv
    assert [(layer.keys.data_ptr(), layer.values.data_ptr()) for layer in pkv.layers] == ptrs
    assert set(model.state_dict()) == keys_before  # the copy and caches are not part of the model's state


def test_bf16_copy_follows_the_policy_after_an_update(tiny_qwen2):
    model = _model(tiny_qwen2)
    _ids(model, cache="static")
    twin = rollout_model(model, BF16)[0]
    addresses = [p.data_ptr() for p in twin.parameters()]
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    model(input_ids=torch.tensor([[5, 6, 7]]), labels=torch.tensor([[5, 6, 7]])).loss.backward()
    opt.step()
    after = _ids(model, cache="static")
    assert rollout_model(model, BF16)[0] is twin
    assert [p.data_ptr() for p in twin.parameters()] == addresses
    for (name, p), q in zip(model.named_parameters(), twin.parameters()):
        assert torch.equal(q, p.detach().to(BF16)), name
    cast = _model(tiny_qwen2)
    cast.load_state_dict(model.state_dict())
    assert torch.equal(after, _ids(_bf16_weights(cast), cache="static", autocast_dtype=None))


def test_compiled_static_decode_equals_eager_and_compiles_once(tiny_qwen2):
    model = _model(tiny_qwen2)
    eager = _ids(model, cache="static", temperature=0.0, compile=False)
    counter = CompileCounterWithBackend("aot_eager")
    compiled_model = _model(tiny_qwen2)
    for _ in range(2):
        assert torch.equal(_ids(compiled_model, cache="static", temperature=0.0, compile=counter), eager)
    # One graph for the whole decode step, traced once: the second rollout reuses it.
    assert counter.frame_count == 1


def _flaky_backend(calls):
    """A backend whose first compiled step runs (the cache writes happen) and then fails, as a
    partial failure would; later calls never come (the engine falls back to eager)."""
    def backend(gm, example_inputs):
        def run(*args):
            out = gm(*args)
            calls.append(1)
            if len(calls) == 1:
                raise TorchRuntimeError("injected failure after the step wrote the cache")
            return out
        return run
    return backend


def test_failed_compiled_step_falls_back_with_the_cache_restored(tiny_qwen2, caplog):
    model = _model(tiny_qwen2)
    eager = _ids(model, cache="static", temperature=0.0, compile=False)
    calls = []
    with caplog.at_level(logging.WARNING, logger="r1zero"):
        out = _ids(_model(tiny_qwen2), cache="static", temperature=0.0, compile=_flaky_backend(calls))
    assert calls == [1]
    assert "compiled decode step failed (injected failure" in caplog.text
    # transformers writes at each layer's own counter: without putting it back, the eager retry
    # writes one slot late and every later token differs.
    assert torch.equal(out, eager)


def test_out_of_memory_in_the_compiled_step_is_not_swallowed(tiny_qwen2):
    def backend(gm, example_inputs):
        def run(*args):
            raise torch.OutOfMemoryError("CUDA out of memory (injected)")
        return run
    with pytest.raises(torch.OutOfMemoryError, match="injected"):
        _ids(_model(tiny_qwen2), cache="static", compile=backend)


def test_no_eos_ids_decode_to_the_full_length(tiny_qwen2):
    model = _model(tiny_qwen2)
    for compile_step in (False, "aot_eager"):
        static = _ids(model, cache="static", eos_ids=[], compile=compile_step)
        assert static.shape == (6, 8) and (static != 2).any()
    # transformers' forward on either cache samples the same rows; the lean step (the dynamic cache's
    # default for this family, its own bf16 rounding) decodes to the full length too.
    assert torch.equal(_ids(model, cache="dynamic", eos_ids=[], lean=False), static)
    lean = _ids(model, cache="dynamic", eos_ids=[])
    assert lean.shape == (6, 8) and (lean != 2).all()


def test_model_vocabulary_larger_than_the_tokenizer_samples_only_tokenizer_ids(tiny_qwen2):
    """Qwen2.5 pads its embedding to 151,936 rows for 151,665 tokens. Ids beyond the tokenizer
    would vanish from the scored text but stay in the trained tokens: they are never sampled."""
    tok = load_tokenizer(str(tiny_qwen2))
    V = len(tok)
    torch.manual_seed(0)
    model = Qwen2ForCausalLM(Qwen2Config(vocab_size=V + 64, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                         num_attention_heads=4, num_key_value_heads=2, tie_word_embeddings=False))
    with torch.no_grad():
        model.lm_head.weight[V:] *= 50  # the padding rows dominate, as an untrained head's may
    model.eval()
    uncapped = generate_ids(model, PROMPTS, num_generations=2, max_new_tokens=6, eos_ids=[], pad_id=2, seed=1)
    assert (uncapped >= V).float().mean() > 0.5  # the setup samples them when nothing stops it
    for cache in ("dynamic", "static"):
        roll = generate(model, tok, PROMPTS, num_generations=2, max_new_tokens=6, eos_ids=eos_token_ids(tok, model),
                        seed=1, cache=cache, autocast_dtype=BF16)
        assert int(roll.completion_ids.max()) < V
        assert roll.completions == tok.batch_decode(roll.completion_ids, skip_special_tokens=True)


def test_left_padded_bf16_logprobs_are_finite_and_near_fp32(tiny_qwen2):
    """Fully padded query rows are where bf16 attention on CUDA can give NaN (the CPU math backend
    gives 0, so this cannot fail here); the values must also stay near fp32's."""
    model = _model(tiny_qwen2)
    prompts = [PROMPTS[0], PROMPTS[0], PROMPTS[1], PROMPTS[2]]  # a shared-prompt group and lone prompts
    comps = [[20, 21, 22], [23, 24], [25, 26, 27], [28]]
    ids, am, pw, cm = pack_rows(2, prompts, comps)
    ref, _ = completion_logprobs(model, ids, am, pw, cm)
    for share in (True, False):
        with torch.no_grad(), torch.autocast("cpu", dtype=BF16):
            lp, ent = completion_logprobs(model, ids, am, pw, cm, share_prompts=share)
        assert torch.isfinite(lp).all() and torch.isfinite(ent).all()
        assert lp.dtype == torch.float32
        assert (lp[cm == 0] == 0).all()
        torch.testing.assert_close(lp[cm == 1], ref.detach()[cm == 1], atol=0.05, rtol=0.01)


def test_larger_vocabulary_greedy_equals_generate_over_the_tokenizer_ids(tiny_qwen2):
    tok = load_tokenizer(str(tiny_qwen2))
    V = len(tok)
    torch.manual_seed(1)
    model = Qwen2ForCausalLM(Qwen2Config(vocab_size=V + 64, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                         num_attention_heads=4, num_key_value_heads=2, tie_word_embeddings=False))
    with torch.no_grad():
        model.lm_head.weight[V:] *= 50
    model.eval()
    kw = dict(num_generations=1, max_new_tokens=6, eos_ids=eos_token_ids(tok, model), temperature=0.0)
    ref = hf_generate(model, tok, PROMPTS, **kw)
    assert int(ref.completion_ids.max()) < V
    for cache in ("dynamic", "static"):
        assert torch.equal(generate(model, tok, PROMPTS, cache=cache, **kw).completion_ids, ref.completion_ids)


def test_gpu_process_group_has_a_cpu_backend_for_offloaded_shards(tmp_path):
    # fsdp_cpu_offload reduces CPU tensors (clip_grad_norm_, the full-state export): NCCL alone
    # cannot, so on GPUs the group is "cpu:gloo,cuda:nccl". The same multi-backend form, CPU part
    # only, runs here: a collective on a CPU tensor goes through the gloo half.
    import subprocess
    import sys

    from r1zero.training.distributed import process_group_backend

    assert process_group_backend(True) == "cpu:gloo,cuda:nccl" and process_group_backend(False) == "gloo"
    code = (
        "import torch, torch.distributed as d\n"
        f"d.init_process_group('cpu:gloo', init_method='file://{tmp_path}/pg', rank=0, world_size=1)\n"
        "from r1zero.training import distributed as D\n"
        "t = torch.ones(3); d.all_reduce(t); print(d.get_backend(), D._comm_device(), t.tolist())\n"
        # Torn down before exit: gloo's threads left running at exit abort the process (rc -6), seen once
        # on a loaded machine.
        "d.destroy_process_group()\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["cpu:gloo", "cpu", "[1.0,", "1.0,", "1.0]"]


# ---- bounded shapes, no host sync per decode step, the sampler's log-probs ----------------------


class HostReads:
    """Counts r1zero's reads of tensor values by the host (``bool``/``int``/``float``, ``.item()``,
    ``.tolist()``, ``.cpu()``) from the functions in ``where``: on CUDA each one waits for the queued
    work (the CPU's stand-in for ``torch.cuda.set_sync_debug_mode``). transformers' own reads are
    not counted (its SDPA mask check reads a padded 2-D mask once per forward, in its generate too)."""

    METHODS = ("__bool__", "__int__", "__float__", "item", "tolist", "cpu")

    def __init__(self, monkeypatch, where: str):
        import sys

        self.count = 0
        for name in self.METHODS:
            real = getattr(torch.Tensor, name)

            def counted(t, *a, _real=real, **k):
                if where in sys._getframe(1).f_code.co_filename:
                    self.count += 1
                return _real(t, *a, **k)
            monkeypatch.setattr(torch.Tensor, name, counted)


def _eos_rich(eos_rich_model):
    tok = load_tokenizer(str(eos_rich_model))
    model = _model(eos_rich_model)
    return tok, model, eos_token_ids(tok, model)


@pytest.mark.parametrize("cache", ["static", "dynamic"])
def test_decode_loop_reads_the_device_once_per_check_not_per_step(tiny_qwen2, monkeypatch, cache):
    """On CUDA every host read of a tensor waits for the device; the decode loop looked at its
    tokens and finished rows every step (``.cpu()`` twice and ``bool()`` per step: 72 reads for
    24 steps). Now the tokens stay on the device and the finished rows are looked at every 8 steps."""
    model = _model(tiny_qwen2)
    kw = dict(cache=cache, eos_ids=[], max_new_tokens=24, compile=False, check_every=8, autocast_dtype=None)
    _ids(model, **kw)  # warm: the first call sets up what later calls reuse
    reads = HostReads(monkeypatch, "r1zero/rollout/")
    out = _ids(model, **kw)
    monkeypatch.undo()
    assert out.shape == (6, 24)
    assert reads.count <= 24 // 8 + 4, reads.count  # one look per 8 steps, the final copy and width


def test_deferred_drops_of_finished_rows_sample_the_same(eos_rich_model):
    """CUDA's policy (look every 8 steps, drop finished rows once a quarter of the batch has
    finished, feed the others padding meanwhile) samples what the CPU's (every step, at once) does."""
    tok, model, eos = _eos_rich(eos_rich_model)
    ids = [tok(p).input_ids for p in ("Count to ten:", "3 + 4 =", "Once upon a time")]
    kw = dict(num_generations=4, max_new_tokens=24, eos_ids=eos, pad_id=tok.pad_token_id, temperature=1.0, seed=11)
    every_step = generate_ids(model, ids, cache="dynamic", check_every=1, **kw)
    lengths = (every_step != tok.pad_token_id).sum(-1)
    assert lengths.min() < 8 and lengths.max() > 16  # rows finish at different steps
    for check in (3, 8):
        assert torch.equal(generate_ids(model, ids, cache="dynamic", check_every=check, **kw), every_step)
    assert torch.equal(generate_ids(model, ids, cache="static", **kw), every_step)


def test_static_chunks_have_one_row_count_and_one_cache_length(tiny_qwen2):
    """A short last chunk, an evaluation batch and another prompt width used to be new shapes for
    the compiled step (and past dynamo's recompile limit it silently runs eagerly): the last chunk
    is filled with finished copies of its last row, and the cache length comes from the run's
    prompt + completion length."""
    model = _model(tiny_qwen2)
    eager = _ids(model, cache="dynamic", temperature=0.0, autocast_dtype=None)
    counter = CompileCounterWithBackend("aot_eager")
    compiled = _model(tiny_qwen2)
    # 3 prompts in chunks of 2: the second chunk has one prompt, filled up to 2.
    out = _ids(compiled, cache="static", temperature=0.0, autocast_dtype=None, batch_size=4, compile=counter,
               max_cache_len=300)
    assert torch.equal(out, eager)
    long_prompt = [[5 + (i % 40) for i in range(280)]]  # 280 + 8 tokens: past the first 256 bucket
    generate_ids(compiled, long_prompt, num_generations=4, max_new_tokens=8, eos_ids=[2], pad_id=2, temperature=0.0,
                 cache="static", compile=counter, max_cache_len=300)
    assert list(static_caches(compiled)) == [(4, 512)]
    assert counter.frame_count == 1  # one graph for every chunk and both prompt widths


@pytest.mark.parametrize("cache", ["dynamic", "static"])
def test_sampler_logprobs_are_the_trainers_in_fp32_and_near_them_in_bf16(tiny_qwen2, cache):
    """The rollout returns its log-prob of every sampled token (tempered, unfiltered: the trainer's
    formula); the trainer logs how far its own are from them (sampling/sampling_logp_difference)."""
    tok = load_tokenizer(str(tiny_qwen2))
    model = _model(tiny_qwen2)
    kw = dict(num_generations=2, max_new_tokens=8, eos_ids=eos_token_ids(tok, model), temperature=0.7, top_k=20,
              seed=3, cache=cache)
    for dtype, tol in ((None, 1e-5), (BF16, 0.05)):
        roll = generate(model, tok, PROMPTS, autocast_dtype=dtype, **kw)
        assert roll.sampled_logprobs.shape == roll.completion_ids.shape
        assert (roll.sampled_logprobs[roll.completion_mask == 0] == 0).all()
        with torch.no_grad():
            trained, _ = completion_logprobs(model, roll.input_ids, roll.attention_mask, roll.prompt_ids.shape[1],
                                             roll.completion_mask, temperature=0.7)
        gap = (trained - roll.sampled_logprobs).abs()[roll.completion_mask == 1]
        assert gap.max() < tol, (dtype, gap.max())
        if dtype is BF16:
            assert gap.max() > 0  # bf16 sampling is slightly off-policy: the metric has something to show
    assert generate(model, tok, PROMPTS, **{**kw, "temperature": 0.0}).sampled_logprobs is None
