"""Times one version of r1zero's rollout engine, in its own process: the version is whichever
``r1zero`` package is first on PYTHONPATH (``benchmarks/rollout.py --baseline-ref`` puts a
``git archive`` of an older commit there, and the current tree for the side-by-side run).

Reads a JSON job (model folder, tokenized prompts, G, length, stop ids, precision, repeats) from the
file named by its one argument and prints one JSON line: the best tokens/s over the repeats and the
package it timed. It imports only what every version since 828da49 has (``load_model``,
``load_tokenizer``, ``sampling.generate`` with ``autocast_dtype``), and never this repository's
other benchmark modules, so the older tree is not shadowed.
"""
from __future__ import annotations

import json
import logging
import sys
import time

import torch


def main(job_path: str) -> int:
    job = json.loads(open(job_path).read())
    logging.getLogger("transformers").setLevel(logging.ERROR)
    import r1zero
    from r1zero.models import load_model, load_tokenizer
    from r1zero.rollout.sampling import generate

    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    tok = load_tokenizer(job["model"])
    model = load_model(job["model"], device)
    autocast = torch.bfloat16 if job["precision"] == "bf16" else None
    best = 0.0
    warmups = job.get("warmups", 1)
    for r in range(warmups + job["repeats"]):  # the first call builds the bf16 copy (and compiles)
        t0 = time.perf_counter()
        out = generate(model, tok, job["prompts"], num_generations=job["generations"],
                       max_new_tokens=job["length"], eos_ids=job["eos"], temperature=1.0, seed=r,
                       autocast_dtype=autocast)
        if device.type == "cuda":
            torch.cuda.synchronize()
        tps = float(out.completion_mask.sum()) / (time.perf_counter() - t0)
        if r >= warmups:
            best = max(best, tps)
    print(json.dumps({"tokens_per_s": best, "package": r1zero.__file__}))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
