"""Score N generated completions (default 100,000) with every built-in scorer and time each call.

    python3 benchmarks/score_fuzz.py [--n 100000] [--seed 0]

The completions come from tests/adversarial_corpus.py's generated_completions: honest countdown and
GSM8K answers, mutated adversarial cases, and one in a thousand megabyte-long texts. Each completion
is scored by every scorer in its SCORERS; one call is one timing. Prints a table per scorer and per kind
of completion, then, as its last line, exactly:

    p99_ms=<x> max_ms=<y> exceptions=<n>

over all calls, in CPU time of the scoring thread (``time.thread_time``): what a call costs,
without the time the process spends waiting for a core on a shared machine. The wall-clock
figures, which do include that wait, are printed on the line before. The garbage collector stays
on (a collection inside a call counts against it), and nothing is repeated or discarded: the max
is the slowest single call.
"""
from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO), str(REPO / "tests")]  # the corpus is test code, kept out of the package

from adversarial_corpus import generated_completions, scorers  # noqa: E402


def percentile(sorted_values: list[float], q: float) -> float:
    if not sorted_values:
        return math.nan
    i = min(len(sorted_values) - 1, max(0, math.ceil(q * len(sorted_values)) - 1))
    return sorted_values[i]


def run(n: int, seed: int = 0) -> dict:
    sc = scorers()
    by_scorer: dict[str, list[float]] = {label: [] for label, _, _ in sc}
    by_kind: dict[str, list[float]] = {}
    wall: list[float] = []
    exceptions: list[str] = []
    cpu_clock, wall_clock = time.thread_time, time.perf_counter
    for kind, text, cd_example, gsm_example in generated_completions(n, seed):
        times = by_kind.setdefault(kind, [])
        for label, task, _ in sc:
            example = cd_example if task.name == "countdown" else gsm_example
            w0 = wall_clock()
            t0 = cpu_clock()
            try:
                task.score(text, example)
            except Exception as e:  # counted, never expected
                exceptions.append(f"{label}: {type(e).__name__}: {e}"[:200])
            dt = cpu_clock() - t0
            wall.append(wall_clock() - w0)
            by_scorer[label].append(dt)
            times.append(dt)
    return {"by_scorer": by_scorer, "by_kind": by_kind, "exceptions": exceptions, "wall": wall}


def table(groups: dict[str, list[float]], title: str) -> str:
    lines = [f"{title + ' (CPU time)':<34} {'calls':>8} {'mean_us':>9} {'p50_us':>8} {'p99_us':>8} {'max_ms':>8}"]
    for name, values in groups.items():
        v = sorted(values)
        lines.append(f"{name:<34} {len(v):>8} {sum(v) / max(len(v), 1) * 1e6:>9.1f} {percentile(v, 0.5) * 1e6:>8.1f} "
                     f"{percentile(v, 0.99) * 1e6:>8.1f} {v[-1] * 1e3 if v else math.nan:>8.3f}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--n", type=int, default=100_000, help="completions to generate and score")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    t0 = time.perf_counter()
    result = run(args.n, args.seed)
    wall = time.perf_counter() - t0
    every = sorted(t for v in result["by_scorer"].values() for t in v)
    print(f"{args.n} completions x {len(result['by_scorer'])} scorers = {len(every)} calls in {wall:.1f} s")
    print(table(result["by_scorer"], "scorer"))
    print(table(result["by_kind"], "completion kind"))
    for e in result["exceptions"][:10]:
        print("exception:", e)
    w = sorted(result["wall"])
    print(f"wall clock: p99_ms={percentile(w, 0.99) * 1e3:.4f} max_ms={w[-1] * 1e3:.4f} "
          f"calls_over_10ms={sum(x >= 0.010 for x in w)}")
    print(f"p99_ms={percentile(every, 0.99) * 1e3:.4f} max_ms={every[-1] * 1e3:.4f} "
          f"exceptions={len(result['exceptions'])}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
