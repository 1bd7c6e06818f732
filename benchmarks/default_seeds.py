"""Is the embedded default's learning robust? Run it for several seeds and thread counts.

    python benchmarks/default_seeds.py --seeds 0 1 2 3 4 --threads 1 2
    python benchmarks/default_seeds.py --seeds 0 --threads 2 dynamic_sampling=true max_sampling_rounds=3
    python benchmarks/default_seeds.py --config configs/other.yaml --seeds 0 1 --threads 1 max_steps=4

Each (seed, threads) pair is one ``python -m r1zero train`` subprocess, run one after the other
(never two at once: they would share the cores and change each other's timing), with
``OMP_NUM_THREADS`` set to the thread count (which changes the floating-point arithmetic as
another machine would), ``seed=N``, its own ``output_dir`` under ``--out`` and ``PYTHONPATH`` set
to this repository. Extra ``key=value`` arguments are passed through as config overrides.

Afterwards each run's ``metrics.jsonl`` and ``eval_results.jsonl`` are read and a table is printed:
seed, threads, wall minutes, greedy eval accuracy and format rate before (the ``eval_on_start``
evaluation) and after training, the training reward of the first and last step, and the share of
zero-std groups (``frac_reward_zero_std``, groups whose rewards are all equal, averaged over the
steps). A recipe with a think part (e.g. configs/sums-smollm2-think.yaml) adds the accuracy with the
thinking taken away before and after, and the think part's mean length in tokens at the first step,
its minimum over the steps and at the last step. The last line is

    learned=<runs whose accuracy after reaches 0.5>/<runs> median_accuracy=<...> max_minutes=<...>

and for a recipe with a think part also ``median_thinking_gap=<accuracy after minus no-think
accuracy after> median_think_last=<think tokens at the last step>``.

A run that failed (non-zero exit) counts as not learned and shows its exit status in the table.
"""
from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
from r1zero.observe.metrics import ACCURACY_NO_THINK as NO_THINK, THINK_MEAN_LENGTH as THINK_LENGTH  # noqa: E402
from r1zero.observe.tracking import read_jsonl as _read_jsonl  # noqa: E402

DEFAULT_CONFIG = "configs/countdown-smollm2-cpu.yaml"
LEARNED_AT = 0.5


def read_jsonl(path: Path) -> list[dict]:
    # A killed run can leave a half-written last line: skip it (r1zero's own reader).
    return _read_jsonl(path, skip_broken=True)


def summarize(run_dir: Path) -> dict:
    """The table's numbers of one finished run folder (None where the run did not write them)."""
    train = [r for r in read_jsonl(run_dir / "metrics.jsonl") if "reward" in r]
    evals = read_jsonl(run_dir / "eval_results.jsonl")
    before = next((e for e in evals if e.get("step") == 0), None)
    after = evals[-1] if evals and evals[-1].get("step", 0) > 0 else None
    zero = [r["frac_reward_zero_std"] for r in train if "frac_reward_zero_std" in r]
    think = [r[THINK_LENGTH] for r in train if THINK_LENGTH in r]
    return {
        "acc_before": before.get("accuracy") if before else None,
        "fmt_before": before.get("format_rate") if before else None,
        "acc_after": after.get("accuracy") if after else None,
        "fmt_after": after.get("format_rate") if after else None,
        "reward_first": train[0]["reward"] if train else None,
        "reward_last": train[-1]["reward"] if train else None,
        "zero_std": sum(zero) / len(zero) if zero else None,
        "steps": len(train),
        # A recipe with a think part (r1zero.tasks.Task.think_style): its length per step and the
        # evaluation with the thinking taken away.
        "think_first": think[0] if think else None,
        "think_min": min(think) if think else None,
        "think_last": think[-1] if think else None,
        "no_think_before": before.get(NO_THINK) if before else None,
        "no_think_after": after.get(NO_THINK) if after else None,
    }


def run_one(seed: int, threads: int, args, overrides: list[str]) -> dict:
    out = Path(args.out) / f"seed{seed}-threads{threads}"
    env = dict(os.environ)
    env["OMP_NUM_THREADS"] = str(threads)
    env["PYTHONPATH"] = str(REPO) + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    cmd = [sys.executable, "-m", "r1zero", "train", "--config", args.config,
           *overrides, f"seed={seed}", f"output_dir={out}"]
    print(f"# seed={seed} threads={threads}: OMP_NUM_THREADS={threads} {' '.join(cmd[1:])}", flush=True)
    log_path = Path(args.out) / f"seed{seed}-threads{threads}.log"
    log_path.parent.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    with open(log_path, "w") as log:
        rc = subprocess.run(cmd, env=env, cwd=REPO, stdout=log, stderr=subprocess.STDOUT).returncode
    minutes = (time.perf_counter() - t0) / 60
    row = {"seed": seed, "threads": threads, "minutes": minutes, "rc": rc, **summarize(out)}
    print(f"#   exit {rc} after {minutes:.1f} min, log {log_path}", flush=True)
    return row


def fmt(x, spec=".3f") -> str:
    return "-" if x is None else format(x, spec)


def thinks(rows: list[dict]) -> bool:
    """Whether the runs' recipe has a think part (any run logged its length or a no-think accuracy)."""
    return any(r["think_last"] is not None or r["no_think_after"] is not None for r in rows)


def table(rows: list[dict]) -> str:
    head = ["seed", "threads", "minutes", "acc_before", "acc_after", "fmt_before", "fmt_after",
            "reward_first", "reward_last", "zero_std"]
    think_head = ["no_think_before", "no_think_after", "think_first", "think_min", "think_last"]
    head += (think_head if thinks(rows) else []) + ["steps", "rc"]
    lines = [" | ".join(head), " | ".join("---" for _ in head)]
    for r in rows:
        cells = [str(r["seed"]), str(r["threads"]), fmt(r["minutes"], ".1f"),
                 fmt(r["acc_before"]), fmt(r["acc_after"]), fmt(r["fmt_before"]), fmt(r["fmt_after"]),
                 fmt(r["reward_first"]), fmt(r["reward_last"]), fmt(r["zero_std"], ".2f")]
        if thinks(rows):
            cells += [fmt(r["no_think_before"]), fmt(r["no_think_after"]),
                      *(fmt(r[k], ".1f") for k in ("think_first", "think_min", "think_last"))]
        lines.append(" | ".join(cells + [str(r["steps"]), str(r["rc"])]))
    return "\n".join("| " + line + " |" for line in lines)


def last_line(rows: list[dict]) -> str:
    ok = [r for r in rows if r["rc"] == 0]
    accs = [r["acc_after"] if (r in ok and r["acc_after"] is not None) else 0.0 for r in rows]
    learned = sum(a >= LEARNED_AT for a in accs)
    median = statistics.median(accs) if accs else 0.0
    max_minutes = max((r["minutes"] for r in rows), default=0.0)
    line = f"learned={learned}/{len(rows)} median_accuracy={median:.3f} max_minutes={max_minutes:.1f}"
    if thinks(rows):
        # What the thinking is worth at the end: accuracy with it minus accuracy without (0 for a failed run).
        gaps = [(r["acc_after"] or 0.0) - (r["no_think_after"] or 0.0) if r in ok else 0.0 for r in rows]
        think = [r["think_last"] or 0.0 if r in ok else 0.0 for r in rows]
        line += f" median_thinking_gap={statistics.median(gaps):.3f} median_think_last={statistics.median(think):.1f}"
    return line


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    p.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    p.add_argument("--config", default=DEFAULT_CONFIG, help=f"recipe (default: {DEFAULT_CONFIG}, the embedded default)")
    p.add_argument("--out", default="runs/default-seeds", help="folder of the runs' output_dirs and logs")
    p.add_argument("overrides", nargs="*", help="key=value config overrides passed to every run")
    args = p.parse_args(argv)
    bad = [o for o in args.overrides if "=" not in o]
    if bad:
        p.error(f"overrides must be key=value: {bad}")
    if any(o.split("=", 1)[0] in ("seed", "output_dir") for o in args.overrides):
        p.error("seed and output_dir are set per run; use --seeds and --out")
    rows = [run_one(seed, threads, args, args.overrides) for seed in args.seeds for threads in args.threads]
    print(f"config: {args.config} {' '.join(args.overrides)}".rstrip())
    print(table(rows))
    print(last_line(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
