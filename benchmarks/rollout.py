"""Generation alone: r1zero's rollout engine vs transformers' ``generate``, tokens/s by batch size.

Work in GRPO's shape: a batch of B rows is B / G prompts x G samples (Countdown prompts rendered by
r1zero's task), sampled at temperature 1, up to ``--length`` new tokens, stopping on every EOS id.
Tokens/s counts generated tokens up to and including EOS. Before timing, greedy outputs of both
are compared token for token. Last line: ``greedy_identical=<bool> speedup_at_<B>=<ratio>`` for the
largest batch.

    python benchmarks/rollout.py                      # CPU: embedded SmolLM2-135M, batches 8, 64
    python benchmarks/rollout.py --preset gpu         # random Qwen2.5-0.5B shape, batches 64, 512
"""
from __future__ import annotations

import argparse
import logging
import os
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from common import Timer, host_description, print_table  # noqa: E402

from r1zero.models import eos_token_ids, load_model, load_tokenizer, resolve_model_path  # noqa: E402
from r1zero.rollout.baseline import hf_generate  # noqa: E402
from r1zero.rollout.sampling import encode_prompts, generate  # noqa: E402
from r1zero.tasks import get_task  # noqa: E402

PRESETS = {
    "cpu": dict(model="embedded", batches=[8, 64], generations=8, length=64, fixed_length=False),
    # Fixed length: a random model's EOS would make the two sides do different work.
    "gpu": dict(model="qwen2.5-0.5b", batches=[64, 512], generations=8, length=256, fixed_length=True),
}


def prompts_for(tok, n: int) -> list[list[int]]:
    task = get_task("countdown", reward="shaped", template="chat-answer", min_numbers=2, max_numbers=2,
                    max_number=20, operators="+", train_size=max(n, 1), test_size=1)
    rows = task.load_split("train")[:n]
    return encode_prompts(task, tok, rows)[1]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--preset", choices=sorted(PRESETS), default="cpu")
    ap.add_argument("--model", help="a local model folder instead of the preset's")
    ap.add_argument("--batches", type=int, nargs="+")
    ap.add_argument("--generations", type=int)
    ap.add_argument("--length", type=int)
    ap.add_argument("--repeats", type=int, default=1, help="timed runs per cell (best is kept)")
    a = ap.parse_args(argv)
    logging.getLogger("transformers").setLevel(logging.ERROR)
    spec = dict(PRESETS[a.preset])
    for k in ("model", "batches", "generations", "length"):
        if getattr(a, k) is not None:
            spec[k] = getattr(a, k)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    autocast = torch.bfloat16 if device.type == "cuda" else None
    print(f"host: {host_description()}; preset {a.preset}; {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}; "
          f"load {os.getloadavg()[0]:.2f}", flush=True)
    with tempfile.TemporaryDirectory(prefix="r1zero-rollout-") as tmp:
        path = spec["model"]
        if path.startswith("qwen2.5"):
            from grpo_throughput import make_random_model

            path = make_random_model(path, "embedded", Path(tmp) / path)
        else:
            path = resolve_model_path(path)
        tok = load_tokenizer(path)
        model = load_model(path, device)
        eos = eos_token_ids(tok, model)
        stop = [] if spec["fixed_length"] else eos
        G, L = spec["generations"], spec["length"]

        # Token identity first: greedy, one row per prompt, both engines.
        check = prompts_for(tok, 8)
        kw = dict(num_generations=1, max_new_tokens=min(L, 32), eos_ids=eos, temperature=0.0, autocast_dtype=autocast)
        ref = hf_generate(model, tok, check, **kw)
        ours = generate(model, tok, check, **kw)
        identical = torch.equal(ref.completion_ids, ours.completion_ids)
        print(f"greedy outputs token-identical to transformers' generate: {identical} "
              f"({ref.completion_mask.sum().item()} tokens, 8 prompts)", flush=True)

        rows = []
        speed = {}
        for B in spec["batches"]:
            ids = prompts_for(tok, max(1, B // G))
            cell = {}
            for engine, sample in (("r1zero", generate), ("hf", hf_generate)):
                best = None
                for r in range(a.repeats + (1 if device.type == "cuda" else 0)):  # GPU: one warm-up (graph capture)
                    with Timer() as t:
                        out = sample(model, tok, ids, num_generations=G, max_new_tokens=L, eos_ids=stop,
                                     temperature=1.0, seed=r, autocast_dtype=autocast)
                    tps = float(out.completion_mask.sum()) / t.s
                    if device.type == "cuda" and r == 0 and a.repeats > 0:
                        continue
                    best = tps if best is None else max(best, tps)
                cell[engine] = best
            speed[B] = cell["r1zero"] / cell["hf"]
            rows.append([f"{len(ids)} x {G}", B, cell["r1zero"], cell["hf"], speed[B]])
            print(f"batch {B}: r1zero {cell['r1zero']:.1f} tok/s, generate {cell['hf']:.1f} tok/s", flush=True)
        print_table(f"{Path(path).name}: generated tokens/s, sampling (T=1), up to {L} new tokens"
                    f"{' (fixed length)' if spec['fixed_length'] else ', stop on EOS'}",
                    ["prompts x G", "batch", "r1zero tok/s", "generate tok/s", "ratio"], rows)
    B = spec["batches"][-1]
    print(f"greedy_identical={identical} speedup_at_{B}={speed[B]:.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
