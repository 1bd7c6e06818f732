"""Which thinking task suits the embedded model? The untrained model on candidate tasks and prompts.

    python benchmarks/think_candidates.py                      # every candidate below
    python benchmarks/think_candidates.py --only cd2-4op-example --problems 16 --samples 8

For each candidate (a task setting and a think template), ``--problems`` training problems are
asked ``--samples`` times at temperature 1, as a training step would sample them, twice: with the
thinking (the prompt ends with "<think>") and with the thinking taken away (the task's
``no_think_prefill``: the think part closed empty and the answer opened). A table gives, for each,
the completions in the format (a closed think part, then an answer), the right ones, and the mean
think length in tokens; then the greedy answers' accuracy both ways. What a recipe needs from the
untrained model is a format rate high enough that a step's groups have a spread of rewards, and a
gap between thinking and not that training can widen.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from r1zero.model_setup import load_generator  # noqa: E402
from r1zero.models import EMBEDDED_MODEL  # noqa: E402
from r1zero.observe.metrics import THINK_MEAN_LENGTH, think_metrics  # noqa: E402
from r1zero.rollout.sampling import encode_prompts, generate  # noqa: E402
from r1zero.tasks import get_task  # noqa: E402

# name -> (task, task_args, template). Countdown: TinyZero's search-and-verify in miniature (the
# operator must be found and checked); sums: one small addition per written step.
CD2 = {"min_numbers": 2, "max_numbers": 2, "max_number": 20, "operators": "+-*/"}
CANDIDATES = {
    "countdown-2x20-4op": ("countdown", CD2, "chat-think"),
    "countdown-2x20-4op-example": ("countdown", CD2, "chat-think-example"),
    "countdown-3x20-pm-example": ("countdown", {"min_numbers": 3, "max_numbers": 3, "max_number": 20, "operators": "+-"},
                                  "chat-think-example"),
    "sums-3x9": ("sums", {"min_terms": 3, "max_terms": 3, "max_number": 9}, "chat-think"),
    "sums-3x9-example": ("sums", {"min_terms": 3, "max_terms": 3, "max_number": 9}, "chat-think-example"),
    "sums-4x9-example": ("sums", {"min_terms": 4, "max_terms": 4, "max_number": 9}, "chat-think-example"),
    "sums-2x20-example": ("sums", {"min_terms": 2, "max_terms": 2, "max_number": 20}, "chat-think-example"),
    "sums-5x9-example": ("sums", {"min_terms": 5, "max_terms": 5, "max_number": 9}, "chat-think-example"),
    "sums-3x12-example": ("sums", {"min_terms": 3, "max_terms": 3, "max_number": 12}, "chat-think-example"),
    "sums-3x15-example": ("sums", {"min_terms": 3, "max_terms": 3, "max_number": 15}, "chat-think-example"),
    "sums-3x20": ("sums", {"min_terms": 3, "max_terms": 3, "max_number": 20}, "chat-think"),
    "sums-3x20-example": ("sums", {"min_terms": 3, "max_terms": 3, "max_number": 20}, "chat-think-example"),
    "sums-4x20-example": ("sums", {"min_terms": 4, "max_terms": 4, "max_number": 20}, "chat-think-example"),
}


def ask(gen, task, rows, prefill: str, *, samples: int, max_new_tokens: int, temperature: float, seed: int):
    """(formatted, right, mean think tokens, n) of ``samples`` answers to each row's prompt + ``prefill``."""
    _, ids = encode_prompts(task, gen.tokenizer, rows, suffix=prefill)
    roll = generate(gen.model, gen.tokenizer, ids, num_generations=samples, max_new_tokens=max_new_tokens,
                    eos_ids=gen.eos_ids, temperature=temperature, seed=seed, autocast_dtype=gen.autocast_dtype)
    examples = [r for r in rows for _ in range(samples)]
    scores = [task.score(prefill + c, ex) for c, ex in zip(roll.completions, examples)]
    think_length = think_metrics(task, gen.tokenizer, [prefill + c for c in roll.completions])[THINK_MEAN_LENGTH]
    return (sum(s.formatted for s in scores), sum(s.correct for s in scores), think_length,
            len(scores), roll.completions)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--only", nargs="*", default=None, help=f"candidates to run (default all: {', '.join(CANDIDATES)})")
    p.add_argument("--problems", type=int, default=16)
    p.add_argument("--samples", type=int, default=8)
    p.add_argument("--max-new-tokens", type=int, default=96)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--show", type=int, default=3, help="completions printed per candidate")
    args = p.parse_args(argv)
    gen = load_generator(EMBEDDED_MODEL, "cpu")
    head = ("candidate | template | think: formatted | think: right | think tokens | no-think: formatted | "
            "no-think: right | greedy acc think | greedy acc no-think | seconds")
    lines = []
    for name in args.only or CANDIDATES:
        task_name, task_args, template = CANDIDATES[name]
        task = get_task(task_name, reward="think", template=template, **task_args, train_size=args.problems, test_size=8)
        rows = task.load_split("train")[: args.problems]
        t0 = time.perf_counter()
        f, r, tl, n, comps = ask(gen, task, rows, "", samples=args.samples, max_new_tokens=args.max_new_tokens,
                                 temperature=1.0, seed=args.seed)
        nf, nr, _, _, _ = ask(gen, task, rows, task.no_think_prefill(), samples=args.samples, max_new_tokens=24,
                              temperature=1.0, seed=args.seed)
        _, gr, _, gn, _ = ask(gen, task, rows, "", samples=1, max_new_tokens=args.max_new_tokens, temperature=0.0, seed=0)
        _, gnr, _, _, _ = ask(gen, task, rows, task.no_think_prefill(), samples=1, max_new_tokens=24, temperature=0.0, seed=0)
        secs = time.perf_counter() - t0
        for c in comps[: args.show]:
            print(f"# {name}: {c!r}", flush=True)
        line = (f"{name} | {template} | {f}/{n} | {r}/{n} | {tl:.1f} | {nf}/{n} | {nr}/{n} | {gr}/{gn} | {gnr}/{gn} | "
                f"{secs:.0f}")
        print(line, flush=True)
        lines.append(line)
    print(f"task_args: {'; '.join(f'{k}={CANDIDATES[k][0]} {CANDIDATES[k][1]}' for k in (args.only or CANDIDATES))}")
    print(f"{args.problems} train problems x {args.samples} samples at temperature 1, think up to "
          f"{args.max_new_tokens} tokens, no-think up to 24; greedy: 1 answer per problem")
    print("| " + head + " |")
    print("| " + " | ".join("---" for _ in head.split(" | ")) + " |")
    for line in lines:
        print("| " + line + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
