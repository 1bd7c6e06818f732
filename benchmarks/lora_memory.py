"""LoRA vs full fine-tuning: memory and time of the update, and merged vs unmerged sampling.

The update table measures what one optimizer update costs: the forward pass (r1zero's chunked
log-probs), the GRPO loss, the backward pass, gradient clipping and the AdamW step, on a fixed batch
of ``--rows`` x ``--tokens`` random tokens (the first half prompt, the second half completion), fp32
weights on the CPU. Each row runs in a fresh Python process, so nothing one row allocated is
counted in another: ``weights`` is the resident set's growth while the model (and adapter) loads,
``update peak`` the growth from there to the highest resident set over the warm-up and measured
updates (gradients, AdamW state, activations; Linux's VmHWM, reset after the load), ``s/update``
the mean wall time of the measured updates. "full" is the baseline: every weight trains. "lora"
takes peft's default targets for the architecture (q_proj, v_proj) and "lora all-linear" every
linear layer but the head, both at r=16, alpha=32 (TRL's defaults).

The Qwen2.5-3B table is computed, not measured: parameter counts from the model built on the meta
device with the adapter injected by peft, and 4 bytes per fp32 weight, 4 per gradient, 8 per
AdamW state (r1zero keeps fp32 master weights; activations and the bf16 sampling copy, the same
for both, are left out).

The sampling table (``--sampling``) decodes the same prompts with the policy as peft leaves it (the
adapter computed at every decode step) and with r1zero's merged copy (r1zero.training.lora), rounds
interleaved, median seconds per rollout.

    python benchmarks/lora_memory.py --sampling              # the table in benchmarks/RESULTS.md
    python benchmarks/lora_memory.py --models PATH --rows 1 --tokens 16 --steps 1 --warmup 1

The last line is ``update_memory_ratio=<full / lora update peak> update_time_ratio=<full / lora s>``
of the first model.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
import warnings
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from common import QWEN_SHAPES, host_description, print_table, read_vm  # noqa: E402

MODES = {"full": None, "lora": "default", "lora all-linear": "all-linear"}
LABELS = {"embedded": "SmolLM2-135M", "qwen2.5-0.5b": "Qwen2.5-0.5B shape"}


def lora_cfg(targets: str, r: int):
    from r1zero.config import TrainConfig

    return TrainConfig(use_peft=True, lora_r=r, lora_alpha=2 * r,
                       lora_target_modules=None if targets == "default" else [targets])


def build_model(name: str, device: torch.device = torch.device("cpu")):
    """The embedded model (from the local cache), a random model of a Qwen2.5 shape, or a folder."""
    from r1zero.models import EMBEDDED_MODEL, load_model

    if name in QWEN_SHAPES:
        from transformers import Qwen2Config, Qwen2ForCausalLM

        torch.manual_seed(0)
        model = Qwen2ForCausalLM(Qwen2Config(**QWEN_SHAPES[name], max_position_embeddings=32768))
        model.train()
        return model
    return load_model(EMBEDDED_MODEL if name == "embedded" else name, device)


# ---- one row, in its own process ------------------------------------------------------------------

def worker(model_name: str, mode: str, rows: int, tokens: int, warmup: int, steps: int, r: int) -> dict:
    from r1zero.algorithms.losses import policy_loss
    from r1zero.training import lora
    from r1zero.training.logprobs import CompletionLogprobs, ForwardPasses
    from r1zero.training.optim import clip_and_step, make_optimizer

    torch.manual_seed(0)
    rss0 = read_vm("VmRSS")
    model = build_model(model_name)
    # A loaded checkpoint's weights can be mmapped from its file: resident only once touched, and
    # copied on the first write (a full fine-tune's first AdamW step). Private memory from the start,
    # so that `weights` counts them and `update peak` holds only what the update adds.
    with torch.no_grad():
        for p in model.parameters():
            p.data = p.data.clone()
    if MODES[mode] is not None:
        lora.attach(model, lora_cfg(MODES[mode], r))
    rss_model = read_vm("VmRSS")
    with open("/proc/self/clear_refs", "w") as f:  # VmHWM from here on
        f.write("5")
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    cfg = lora_cfg("default", r)  # AdamW's settings only (learning rate, betas, decay)
    optimizer, _ = make_optimizer(model, cfg, 1e-6, warmup + steps)
    P = tokens // 2
    vocab = model.get_input_embeddings().weight.shape[0]
    g = torch.Generator().manual_seed(0)

    class Batch:  # the fields ForwardPasses reads of a RolloutBatch
        input_ids = torch.randint(0, vocab, (rows, tokens), generator=g)
        attention_mask = torch.ones(rows, tokens, dtype=torch.long)
        completion_mask = torch.ones(rows, tokens - P, dtype=torch.long)
        prompt_width = P

    passes = ForwardPasses(torch.device("cpu"), None, 1.0, 1024, rows)
    policy = CompletionLogprobs(model)
    adv = torch.linspace(-1, 1, rows)
    mask = Batch.completion_mask.float()
    times = []
    for i in range(warmup + steps):
        t0 = time.perf_counter()
        optimizer.zero_grad(set_to_none=True)
        lp, _ = passes.logprobs(policy, Batch, list(range(rows)))
        loss, _ = policy_loss(lp, lp.detach(), adv, mask, loss_type="grpo", epsilon=0.2)
        loss.backward()
        clip_and_step(model, optimizer, 1.0, lambda gn: True)
        if i >= warmup:
            times.append(time.perf_counter() - t0)
    return {"model": model_name, "mode": mode, "trainable": trainable,
            "params": sum(p.numel() for p in model.parameters()),
            "weights": rss_model - rss0, "update_peak": read_vm("VmHWM") - rss_model,
            "s_update": sum(times) / len(times)}


def run_row(model_name: str, mode: str, args) -> dict:
    cmd = [sys.executable, __file__, "--worker", model_name, mode, "--rows", str(args.rows), "--tokens",
           str(args.tokens), "--warmup", str(args.warmup), "--steps", str(args.steps), "--lora-r", str(args.lora_r)]
    r = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "PYTHONWARNINGS": "ignore"})
    if r.returncode != 0:
        raise RuntimeError(f"row {model_name} / {mode} failed:\n{r.stderr[-3000:]}")
    return json.loads(r.stdout.strip().splitlines()[-1])


# ---- computed: the 3B shape -------------------------------------------------------------------------

def computed_rows(shape: str, r: int) -> list[dict]:
    from transformers import Qwen2Config, Qwen2ForCausalLM

    from r1zero.training import lora

    out = []
    for mode, targets in MODES.items():
        with torch.device("meta"):
            model = Qwen2ForCausalLM(Qwen2Config(**QWEN_SHAPES[shape]))
            if targets is not None:
                lora.attach(model, lora_cfg(targets, r))
        total = sum(p.numel() for p in model.parameters())
        train = sum(p.numel() for p in model.parameters() if p.requires_grad)
        # fp32 weights (frozen and trained), fp32 gradients and two fp32 AdamW moments of the trained ones.
        out.append({"mode": mode, "params": total, "trainable": train, "weights": 4 * total,
                    "grads": 4 * train, "adam": 8 * train})
    return out


# ---- sampling: merged vs unmerged ----------------------------------------------------------------

def sampling_rows(model_name: str, r: int, prompts: int, generations: int, length: int, rounds: int) -> list[list]:
    from r1zero.models import EMBEDDED_MODEL, load_tokenizer
    from r1zero.rollout.sampling import generate
    from r1zero.training import lora

    tok = load_tokenizer(EMBEDDED_MODEL if model_name == "embedded" else model_name)
    ids = [tok(f"Using the numbers {i} and {i + 3}, make {2 * i + 3}. Answer:").input_ids for i in range(prompts)]
    rows = []
    for targets in ("default", "all-linear"):
        model = build_model(model_name)
        pol = lora.attach(model, lora_cfg(targets, r))
        with torch.no_grad():  # a trained-looking adapter: B != 0, so nothing is skipped
            for p in model.parameters():
                if p.requires_grad:
                    p.normal_(0, 0.02, generator=torch.Generator().manual_seed(p.numel()))
        for dtype in (None, torch.bfloat16):
            secs: dict[str, list[float]] = {"unmerged": [], "merged": []}
            for i in range(rounds + 1):  # round 0 warms up (and builds the copies)
                for name in secs:
                    # Unmerged: the policy itself (under bf16, r1zero.rollout.weights' bf16 copy of it).
                    m = model if name == "unmerged" else pol.sampler(dtype)
                    t0 = time.perf_counter()
                    generate(m, tok, ids, num_generations=generations, max_new_tokens=length, eos_ids=[],
                             temperature=1.0, seed=i, autocast_dtype=dtype)
                    if i:
                        secs[name].append(time.perf_counter() - t0)
            un, me = statistics.median(secs["unmerged"]), statistics.median(secs["merged"])
            rows.append([f"lora {targets}" if targets != "default" else "lora", "bf16" if dtype else "fp32",
                         un, me, un / me])
    return rows


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", nargs="+", default=["embedded", "qwen2.5-0.5b"])
    ap.add_argument("--rows", type=int, default=2)
    ap.add_argument("--tokens", type=int, default=128)
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--steps", type=int, default=3)
    ap.add_argument("--lora-r", type=int, default=16)
    ap.add_argument("--sampling", action="store_true", help="also time merged vs unmerged sampling (first model)")
    ap.add_argument("--sampling-length", type=int, default=32)
    ap.add_argument("--sampling-rounds", type=int, default=3)
    ap.add_argument("--json", help="write every measured row here")
    ap.add_argument("--worker", nargs=2, metavar=("MODEL", "MODE"), help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    warnings.filterwarnings("ignore", category=FutureWarning)  # peft on transformers 5's renamed attributes
    if args.worker:
        print(json.dumps(worker(*args.worker, args.rows, args.tokens, args.warmup, args.steps, args.lora_r)))
        return

    print(f"# {host_description()}, {time.strftime('%Y-%m-%d')}, {torch.get_num_threads()} threads; "
          f"update on {args.rows} x {args.tokens} tokens, fp32, r={args.lora_r}")
    gib = 2**30
    measured, table = [], []
    for name in args.models:
        res = {mode: run_row(name, mode, args) for mode in MODES}
        measured += res.values()
        full = res["full"]
        for mode, x in res.items():
            table.append([LABELS.get(name, Path(name).name), mode, f"{x['trainable']:,}",
                          x["weights"] / gib, x["update_peak"] / gib, x["s_update"],
                          full["update_peak"] / max(x["update_peak"], 1), full["s_update"] / x["s_update"]])
    print_table("Update: forward + backward + clip + AdamW step (measured, a fresh process per row)",
                ["model", "run", "trainable", "weights GiB", "update peak GiB", "s/update", "full/this memory",
                 "full/this time"], table)

    comp = computed_rows("qwen2.5-3b", args.lora_r)
    full_b = comp[0]["weights"] + comp[0]["grads"] + comp[0]["adam"]
    print_table("Qwen2.5-3B shape (computed: fp32 weights 4 B, gradients 4 B, AdamW 8 B per parameter)",
                ["run", "params", "trainable", "weights GB", "grads GB", "AdamW GB", "total GB", "full/this"],
                [[c["mode"], f"{c['params']:,}", f"{c['trainable']:,}", c["weights"] / 1e9,
                  c["grads"] / 1e9, c["adam"] / 1e9, (c["weights"] + c["grads"] + c["adam"]) / 1e9,
                  full_b / (c["weights"] + c["grads"] + c["adam"])] for c in comp])

    if args.sampling:
        rows = sampling_rows(args.models[0], args.lora_r, 4, 4, args.sampling_length, args.sampling_rounds)
        print_table(f"Sampling {LABELS.get(args.models[0], args.models[0])}: 4 prompts x 4 samples x "
                    f"{args.sampling_length} tokens, median s of {args.sampling_rounds} interleaved rounds",
                    ["run", "dtype", "unmerged s", "merged s", "unmerged/merged"], rows)
    if args.json:
        Path(args.json).write_text(json.dumps({"update": measured, "computed_3b": comp}, indent=2))
    first = measured[:len(MODES)]
    print(f"update_memory_ratio={first[0]['update_peak'] / max(first[1]['update_peak'], 1):.3f} "
          f"update_time_ratio={first[0]['s_update'] / first[1]['s_update']:.3f}")


if __name__ == "__main__":
    main()
