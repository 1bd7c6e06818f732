"""Generation alone: r1zero's rollout engine vs transformers' ``generate``, tokens/s by batch size.

Work in GRPO's shape: a batch of B rows is B / G prompts x G samples (Countdown prompts rendered by
r1zero's task), sampled at temperature 1, up to ``--length`` new tokens, stopping on every EOS id.
Tokens/s counts generated tokens up to and including EOS. Before timing, greedy outputs of both
are compared token for token (in fp32). Beside each engine's tokens/s, the fraction of the hardware
floor it reached: 2 x (the weights a token is multiplied by) FLOPs per generated token (attention's
score and value products left out, the prompt's prefill not credited) over the matrix-product rate
measured in the same run at the model's own shapes with the batch's row count, the faster of fp32
and bf16 (on a CPU without native bf16, fp32). That floor assumes all B rows in every step; the
engine drops a row once it finishes, and a product of few rows runs far below the rate of 64. So
two more columns give the bound of r1zero's own rollout: its weight products alone, run as its decode
step runs them (fused, packed) in the sampling dtype at the row count of each of its decode steps
(the rows still running), plus the prefill's (prompts x prompt width rows), as tokens/s, and the
fraction of it r1zero reached: what is left once every other operation of a step is free. Last line:
``greedy_identical=<bool> speedup_at_<B>=<ratio> floor_fraction_at_<B>=<r1zero's fraction>`` for
the largest batch.

    python benchmarks/rollout.py                      # CPU: embedded SmolLM2-135M, batches 8, 64
    python benchmarks/rollout.py --precision bf16     # the sampling copy in bf16 (the GPU default)
    python benchmarks/rollout.py --preset gpu         # random Qwen2.5-0.5B shape, batches 64, 512
    python benchmarks/rollout.py --precision bf16 --baseline-ref 828da49   # and the engine of 828da49

``--baseline-ref``: the engine of an earlier commit (its ``r1zero`` package from ``git archive``) and
this tree's are each timed in a fresh process (benchmarks/time_engine.py, one warm-up call each),
alternately, twice, on the same prompts and seeds; three more columns and ``vs_<ref>_at_<B>=`` on
the last line.
"""
from __future__ import annotations

import argparse
import io
import json
import logging
import os
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from common import Timer, floor_rates, flops_per_token, host_description, print_table, product_seconds  # noqa: E402

from r1zero.models import eos_token_ids, load_model, load_tokenizer, resolve_model_path  # noqa: E402
from r1zero.rollout.baseline import hf_generate  # noqa: E402
from r1zero.rollout.packed_linear import linear, pack  # noqa: E402
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


def rows_per_step(completion_mask: torch.Tensor, drops_rows: bool) -> list[int]:
    """The decode batch's row count at each step after the prefill (whose logits give token 0): step
    t (from 1) feeds token t - 1, so it runs the rows whose completion is longer than t tokens when
    finished rows leave the batch (the CPU engine), else every row until the longest ends."""
    lengths = completion_mask.sum(-1)
    steps = range(1, int(lengths.max()))
    return [int((lengths > t).sum()) for t in steps] if drops_rows else [len(lengths)] * len(steps)


def decode_product_seconds(cfg, rows: int, dtype: torch.dtype, repeats: int = 2) -> float:
    """Seconds of one decode step's weight products at ``rows`` rows as the lean step runs them
    (r1zero.rollout.lean_decode: q|k|v and gate|up as one product each, weights packed where
    oneDNN packs them), on random weights of the model's shapes; the best of ``repeats``."""
    h, heads, kv = cfg.hidden_size, cfg.num_attention_heads, cfg.num_key_value_heads
    d = getattr(cfg, "head_dim", None) or h // heads
    dev = "cuda" if torch.cuda.is_available() else "cpu"
    gen = torch.Generator().manual_seed(0)
    shapes = [((heads + 2 * kv) * d, h), (h, heads * d), (2 * cfg.intermediate_size, h), (h, cfg.intermediate_size)]
    weights = [pack(torch.randn(o, i, generator=gen).to(dev, dtype)) for o, i in shapes]
    head = pack(torch.randn(cfg.vocab_size, h, generator=gen).to(dev, dtype))
    inputs = [torch.randn(rows, i, generator=gen).to(dev, dtype) for _, i in shapes + [(0, h)]]
    best = float("inf")
    for _ in range(repeats + 1):  # the first pass warms up
        with Timer() as t:
            for _ in range(cfg.num_hidden_layers):
                for x, w in zip(inputs, weights):
                    linear(x, w)
            linear(inputs[-1], head)
        best = min(best, t.s)
    return best


def products_bound(cfg, prompt_ids: list[list[int]], completion_mask: torch.Tensor, dtype: torch.dtype,
                   drops_rows: bool) -> float:
    """Seconds a rollout's weight products alone take at its own row counts: the prefill of the
    prompts (prompts x width rows, left-padded, through transformers' forward: the model's separate
    products) and each decode step's running rows (the lean step's products), each count timed once."""
    steps = rows_per_step(completion_mask, drops_rows)
    seconds = {r: decode_product_seconds(cfg, r, dtype) for r in set(steps)}
    prefill = product_seconds(cfg, len(prompt_ids) * max(map(len, prompt_ids)), dtype, repeats=2, inner=1)
    return prefill + sum(seconds[r] for r in steps)


def checkout_engine(ref: str, dest: Path) -> Path:
    """The ``r1zero`` package of commit ``ref`` (``git archive``), unpacked under ``dest``."""
    dest.mkdir(parents=True)
    tar = subprocess.run(["git", "-C", str(REPO), "archive", "--format=tar", ref, "r1zero"], check=True,
                         capture_output=True).stdout
    with tarfile.open(fileobj=io.BytesIO(tar)) as t:
        t.extractall(dest, **({"filter": "data"} if hasattr(tarfile, "data_filter") else {}))  # 3.10.12+
    return dest


def time_engine(job_path: Path, tree: Path) -> float:
    """tokens/s of the engine in ``tree`` (its ``r1zero`` package first on the path) on the job."""
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(tree), os.environ.get("PYTHONPATH", "")]))
    out = subprocess.run([sys.executable, str(Path(__file__).parent / "time_engine.py"), str(job_path)], env=env,
                         check=True, capture_output=True, text=True).stdout
    result = json.loads(out.strip().splitlines()[-1])
    if not result["package"].startswith(str(tree)):  # the other tree's package would time the wrong engine
        raise RuntimeError(f"timed {result['package']}, not the package in {tree}")
    return result["tokens_per_s"]


def side_by_side(job: dict, old_tree: Path, job_path: Path, rounds: int = 2) -> tuple[float, float]:
    """(old, this tree's) best tokens/s, timed alternately ``rounds`` times each in fresh processes."""
    job_path.write_text(json.dumps(job))
    old = new = 0.0
    for _ in range(rounds):
        old = max(old, time_engine(job_path, old_tree))
        new = max(new, time_engine(job_path, REPO))
    return old, new


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--preset", choices=sorted(PRESETS), default="cpu")
    ap.add_argument("--model", help="a local model folder instead of the preset's")
    ap.add_argument("--batches", type=int, nargs="+")
    ap.add_argument("--generations", type=int)
    ap.add_argument("--length", type=int)
    ap.add_argument("--repeats", type=int, default=1, help="timed runs per cell (best is kept)")
    ap.add_argument("--baseline-ref", help="also time the engine of this git commit (e.g. 828da49) beside this "
                    "tree's, each in its own process (benchmarks/time_engine.py), alternating, same prompts and seeds")
    ap.add_argument("--precision", choices=["fp32", "bf16"],
                    help="the sampling weights' dtype (default: bf16 on a GPU, fp32 on a CPU)")
    a = ap.parse_args(argv)
    logging.getLogger("transformers").setLevel(logging.ERROR)
    spec = dict(PRESETS[a.preset])
    for k in ("model", "batches", "generations", "length"):
        if getattr(a, k) is not None:
            spec[k] = getattr(a, k)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    precision = a.precision or ("bf16" if device.type == "cuda" else "fp32")
    autocast = torch.bfloat16 if precision == "bf16" else None
    print(f"host: {host_description()}; preset {a.preset}; {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}; "
          f"load {os.getloadavg()[0]:.2f}; sampling in {precision}", flush=True)
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
        kw = dict(num_generations=1, max_new_tokens=min(L, 32), eos_ids=eos, temperature=0.0)
        ref = hf_generate(model, tok, check, **kw)
        ours = generate(model, tok, check, **kw)
        identical = torch.equal(ref.completion_ids, ours.completion_ids)
        print(f"greedy outputs token-identical to transformers' generate: {identical} "
              f"({ref.completion_mask.sum().item()} tokens, 8 prompts)", flush=True)

        rows = []
        speed, floor, vs_ref = {}, {}, {}
        old_tree = checkout_engine(a.baseline_ref, Path(tmp) / "ref") if a.baseline_ref else None
        token_flops = flops_per_token(model.config)
        for B in spec["batches"]:
            ids = prompts_for(tok, max(1, B // G))
            cell, kept = {}, {}
            for engine, sample in (("r1zero", generate), ("hf", hf_generate)):
                best = None
                for r in range(a.repeats + (1 if device.type == "cuda" else 0)):  # GPU: one warm-up (graph capture)
                    with Timer() as t:
                        out = sample(model, tok, ids, num_generations=G, max_new_tokens=L, eos_ids=stop,
                                     temperature=1.0, seed=r, autocast_dtype=autocast)
                    tps = float(out.completion_mask.sum()) / t.s
                    if device.type == "cuda" and r == 0 and a.repeats > 0:
                        continue
                    if best is None or tps > best:
                        best, kept[engine] = tps, out.completion_mask
                cell[engine] = best
            speed[B] = cell["r1zero"] / cell["hf"]
            rates = floor_rates(model.config, B)
            floor_tps = rates["best"] / token_flops  # tokens/s if every FLOP ran at the matmul rate
            floor[B] = cell["r1zero"] / floor_tps
            mask = kept["r1zero"]
            bound_tps = float(mask.sum()) / products_bound(model.config, ids, mask, autocast or torch.float32,
                                                           drops_rows=device.type == "cpu")
            rows.append([f"{len(ids)} x {G}", B, cell["r1zero"], cell["hf"], speed[B], rates["fp32"] / 1e9,
                         rates["bf16"] / 1e9, floor_tps, floor[B], cell["hf"] / floor_tps, bound_tps,
                         cell["r1zero"] / bound_tps])
            if old_tree:
                job = dict(model=path, prompts=ids, generations=G, length=L, eos=stop, precision=precision,
                           repeats=a.repeats)
                old, new = side_by_side(job, old_tree, Path(tmp) / f"job{B}.json")
                vs_ref[B] = new / old
                rows[-1] += [old, new, vs_ref[B]]
                print(f"batch {B}: {a.baseline_ref}'s engine {old:.1f} tok/s, this tree's {new:.1f} tok/s "
                      f"(each in its own process)", flush=True)
            print(f"batch {B}: r1zero {cell['r1zero']:.1f} tok/s, generate {cell['hf']:.1f} tok/s, "
                  f"floor {floor_tps:.0f} tok/s, its products alone at its row counts {bound_tps:.0f} tok/s", flush=True)
        print_table(f"{Path(path).name}: generated tokens/s, sampling (T=1) in {precision}, up to {L} new tokens"
                    f"{' (fixed length)' if spec['fixed_length'] else ', stop on EOS'}; floor: "
                    f"{token_flops / 1e6:.0f} MFLOP per token at the faster matmul rate",
                    ["prompts x G", "batch", "r1zero tok/s", "generate tok/s", "ratio", "fp32 GFLOP/s",
                     "bf16 GFLOP/s", "floor tok/s", "r1zero floor fraction", "generate floor fraction",
                     "products-only tok/s", "r1zero fraction of it"]
                    + ([f"{a.baseline_ref} tok/s", "this tree tok/s", f"vs {a.baseline_ref}"] if old_tree else []), rows)
    B = spec["batches"][-1]
    print(f"greedy_identical={identical} speedup_at_{B}={speed[B]:.3f} floor_fraction_at_{B}={floor[B]:.3f}"
          + (f" vs_{a.baseline_ref}_at_{B}={vs_ref[B]:.3f}" if old_tree else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
