"""Smoke test of the benchmarks at toy size (a tiny random model): they run end to end, print
their tables and the machine-readable last line. Real measurements are in benchmarks/RESULTS.md."""
import json
import os
import re
import sys

import pytest
import torch

from conftest import REPO

sys.path.insert(0, str(REPO / "benchmarks"))


def test_grpo_throughput_toy(tiny_qwen2, capsys, tmp_path):
    import grpo_throughput

    grpo_throughput.main(["--preset", "cpu", "--model", str(tiny_qwen2), "--prompts", "2", "--generations", "2",
                          "--length", "6", "--micro", "2", "--steps", "1", "--warmup", "1",
                          "--json", str(tmp_path / "bench.json")])
    out = capsys.readouterr().out.strip().splitlines()
    m = re.fullmatch(r"speedup_vs_trl=(\d+\.\d+) memory_ratio=(\d+\.\d+)", out[-1])
    assert m, out[-1]
    # The cpu preset runs the fp32 pair, then the bf16 pair; the last line is the bf16 pair's.
    fp32, res = json.loads((tmp_path / "bench.json").read_text())
    assert (fp32["precision"], res["precision"]) == ("fp32", "bf16")
    assert sum(line.startswith(("fp32: speedup_vs_trl=", "bf16: speedup_vs_trl=")) for line in out) == 2
    r1, trl = res["r1zero"], res["trl"]
    # Each side ran in a process of its own (nothing process-wide carries over from one to the other).
    pids = fp32["pids"] + res["pids"]
    assert len(set(pids)) == 4 and os.getpid() not in pids
    for side in (r1, trl):  # each side trained the 2 x 2 samples of a step, in the time it reports
        assert side["samples/s"] * side["s/step"] == pytest.approx(4, rel=1e-9), side
        assert 0 < side["gen s/step"] < side["s/step"] and side["peak GiB"] > 0, side
        assert side["k faults/step"] >= 0, side  # the minor page faults of the measured steps
    # The last line is the ratio of the two sides' measurements, not an independent number.
    assert m.group(1) == f"{r1['samples/s'] / trl['samples/s']:.3f}"
    assert m.group(2) == f"{r1['peak GiB'] / trl['peak GiB']:.3f}"
    table = [line for line in out if line.startswith("|")]
    assert [line.split("|")[1].strip() for line in table[2:5]] == ["r1zero", "TRL", "r1zero/TRL"]
    assert [line.split("|")[1].strip() for line in table[7:10]] == ["r1zero", "TRL", "r1zero/TRL"]
    assert sum(line.startswith("floor: ") for line in out) == 2
    for pair in (fp32, res):  # the step's floor is the generation and update floors together
        f = pair["floor"]
        parts = sorted([f["generation floor fraction"], f["update floor fraction"]])
        assert 0 < parts[0] <= f["step floor fraction"] <= parts[1], f


def test_rollout_benchmark_toy(tiny_qwen2, capsys):
    import rollout

    rollout.main(["--model", str(tiny_qwen2), "--batches", "4", "--generations", "2", "--length", "6"])
    out = capsys.readouterr().out.strip().splitlines()
    m = re.fullmatch(r"greedy_identical=True speedup_at_4=(\d+\.\d+) floor_fraction_at_4=(\d+\.\d+)", out[-1])
    assert m, out[-1]
    assert "greedy outputs token-identical to transformers' generate: True" in "\n".join(out)
    # The floor fraction is the table's r1zero tok/s over its floor tok/s, not a separate number.
    row = next(line for line in out if line.startswith("|") and line.split("|")[2].strip() == "4")
    cells = [c.strip() for c in row.split("|")[1:-1]]
    assert float(cells[8]) == pytest.approx(float(cells[2]) / float(cells[7]), rel=0.02)
    assert 0 < float(m.group(2)) < 1
    # The bound of its own rollout (its products alone, at its row counts) and the fraction reached
    # (above 1 possible here: a tiny model's products time their calls' overhead, not arithmetic).
    assert float(cells[11]) == pytest.approx(float(cells[2]) / float(cells[10]), rel=0.02)
    assert float(cells[10]) > 0


def test_rollout_rows_per_step_follow_the_rows_still_running():
    import rollout

    # Completions of 3, 1, 4 and 4 tokens: the prefill gives token 0; step t feeds token t - 1.
    mask = torch.tensor([[1, 1, 1, 0], [1, 0, 0, 0], [1, 1, 1, 1], [1, 1, 1, 1]])
    assert rollout.rows_per_step(mask, drops_rows=True) == [3, 3, 2]
    assert rollout.rows_per_step(mask, drops_rows=False) == [4, 4, 4]


def test_rollout_benchmark_times_an_older_engine(tiny_qwen2, capsys):
    """--baseline-ref: the engine of a commit, unpacked by git archive, timed in its own process
    beside this tree's; the ratio is the two columns' ratio."""
    import rollout

    rollout.main(["--model", str(tiny_qwen2), "--batches", "4", "--generations", "2", "--length", "6",
                  "--baseline-ref", "HEAD"])
    out = capsys.readouterr().out.strip().splitlines()
    m = re.fullmatch(r"greedy_identical=True speedup_at_4=\d+\.\d+ floor_fraction_at_4=\d+\.\d+ "
                     r"vs_HEAD_at_4=(\d+\.\d+)", out[-1])
    assert m, out[-1]
    row = next(line for line in out if line.startswith("|") and line.split("|")[2].strip() == "4")
    old, new, ratio = (float(c) for c in row.split("|")[-4:-1])
    assert old > 0 and new > 0 and ratio == pytest.approx(new / old, rel=0.02)
    assert float(m.group(1)) == pytest.approx(ratio, rel=0.01)


def test_time_engine_refuses_a_shadowed_tree(tiny_qwen2, tmp_path):
    """The worker reports which package it timed: a tree without its own r1zero (the installed one
    would be timed in its place) is refused, not reported as that tree's speed."""
    import json

    import rollout

    job = dict(model=str(tiny_qwen2), prompts=[[1, 2, 3]], generations=2, length=3, eos=[], precision="fp32",
               repeats=1, warmups=0)
    (tmp_path / "job.json").write_text(json.dumps(job))
    assert rollout.time_engine(tmp_path / "job.json", rollout.REPO) > 0
    with pytest.raises(RuntimeError, match="not the package in"):
        rollout.time_engine(tmp_path / "job.json", tmp_path / "empty")


@pytest.mark.parametrize("fixture", ["tiny_qwen2", "tiny_llama"])
def test_matmul_flops_are_the_models_linear_weights(fixture, request):
    """The floor's FLOPs per token count every weight matrix of the model once (the LM head too)."""
    from common import flops_per_token
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(request.getfixturevalue(fixture))
    linear = sum(m.weight.numel() for m in model.modules() if isinstance(m, torch.nn.Linear))
    assert flops_per_token(model.config) == 2 * linear


def test_gpu_check_dry_run(capsys):
    """The GPU machine's check at tiny shapes on CPU: every correctness line passes, both tables print,
    and with trl installed (here, not on the GPU machine unless carried) its TRL row has a ratio."""
    import gpu_check

    assert gpu_check.main(["--dry-run"]) == 0
    out = capsys.readouterr().out.strip().splitlines()
    assert out[-1] == "gpu_check correctness=4/4", out[-1]
    checks = [line.split("|")[2].strip() for line in out if line.startswith("|  tiny") and "PASS" in line]
    assert checks == ["greedy fp32 = transformers generate", "left-padded bf16 log-probs finite",
                      "GRPO step: finite loss and grad norm", "resume: step 1 restored, step 2 trains"]
    assert any(re.match(r"\|\s+tiny \|\s+decode B=8 \|", line) for line in out)
    trl_row = next(line for line in out if "GRPO samples/s (baseline: TRL)" in line)
    assert re.fullmatch(r"\d+\.\d+", trl_row.split("|")[5].strip()), trl_row  # r1zero / TRL samples/s


def test_default_seeds_toy(tiny_llama, capsys, tmp_path):
    """Two toy runs (seeds 0 1, one thread) of the default recipe on a tiny model: one table row
    each, read from the runs' own files, and the learned= last line."""
    import default_seeds

    default_seeds.main(["--seeds", "0", "1", "--threads", "1", "--out", str(tmp_path / "runs"),
                        f"model_name_or_path={tiny_llama}", "max_steps=1", "eval_limit=2", "report_to=[none]"])
    out = capsys.readouterr().out.strip().splitlines()
    m = re.fullmatch(r"learned=(\d+)/2 median_accuracy=(\d+\.\d{3}) max_minutes=(\d+\.\d)", out[-1])
    assert m, out[-1]
    rows = [[c.strip() for c in line.strip("|").split("|")] for line in out if line.startswith("| ")][2:]
    assert [(r[0], r[1], r[-2], r[-1]) for r in rows] == [("0", "1", "1", "0"), ("1", "1", "1", "0")]
    for seed, r in zip((0, 1), rows):
        evals = [json.loads(x) for x in (tmp_path / "runs" / f"seed{seed}-threads1" / "eval_results.jsonl").read_text().splitlines()]
        assert r[3] == f"{evals[-1]['accuracy']:.3f}" and r[5] == f"{evals[0]['format_rate']:.3f}"
    assert int(m.group(1)) == sum(float(r[4]) >= 0.5 for r in rows)


def test_default_seeds_think_columns(tmp_path):
    """A thinking recipe's runs (hand-made run folders): the no-think accuracies and think lengths
    are read from the run's files into the table, and the last line gives the thinking gap."""
    import default_seeds

    def run(name, think, acc_after, no_think_after):
        d = tmp_path / name
        d.mkdir()
        steps = [{"step": i + 1, "reward": 0.5, "frac_reward_zero_std": 0.0, "think/mean_length": t} for i, t in enumerate(think)]
        (d / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in steps))
        evals = [{"step": 0, "accuracy": 0.1, "format_rate": 0.9, "accuracy_no_think": 0.05},
                 {"step": len(think), "accuracy": acc_after, "format_rate": 1.0, "accuracy_no_think": no_think_after}]
        (d / "eval_results.jsonl").write_text("".join(json.dumps(r) + "\n" for r in evals))
        return {"seed": 0, "threads": 2, "minutes": 30.0, "rc": 0, **default_seeds.summarize(d)}

    rows = [run("a", [24.0, 19.5, 26.0], 0.625, 0.0), run("b", [30.0, 12.0, 14.5], 0.5, 0.25),
            run("c", [20.0, 20.0, 21.0], 0.75, 0.125)]
    assert (rows[1]["think_first"], rows[1]["think_min"], rows[1]["think_last"]) == (30.0, 12.0, 14.5)
    lines = default_seeds.table(rows).splitlines()
    head = [c.strip() for c in lines[0].strip("|").split("|")]
    assert head[10:15] == ["no_think_before", "no_think_after", "think_first", "think_min", "think_last"]
    assert [c.strip() for c in lines[3].strip("|").split("|")][10:15] == ["0.050", "0.250", "30.0", "12.0", "14.5"]
    # gaps 0.625, 0.25, 0.625 -> median 0.625; last think lengths 26, 14.5, 21 -> median 21
    assert default_seeds.last_line(rows) == ("learned=3/3 median_accuracy=0.625 max_minutes=30.0 "
                                             "median_thinking_gap=0.625 median_think_last=21.0")
    plain = [{**r, "think_first": None, "think_min": None, "think_last": None, "no_think_before": None,
              "no_think_after": None} for r in rows]
    assert "think" not in default_seeds.table(plain) and "gap" not in default_seeds.last_line(plain)


def test_lora_memory_toy(tiny_qwen2, capsys, tmp_path):
    """The LoRA benchmark at toy size: its three update rows (each in its own process), the computed
    Qwen2.5-3B table and the sampling table print, and the last line is the first model's ratios."""
    import lora_memory

    lora_memory.main(["--models", str(tiny_qwen2), "--rows", "1", "--tokens", "16", "--steps", "1", "--warmup", "1",
                      "--sampling", "--sampling-length", "4", "--sampling-rounds", "1",
                      "--json", str(tmp_path / "bench.json")])
    out = capsys.readouterr().out.strip().splitlines()
    m = re.fullmatch(r"update_memory_ratio=(\d+\.\d+) update_time_ratio=(\d+\.\d+)", out[-1])
    assert m, out[-1]
    res = json.loads((tmp_path / "bench.json").read_text())
    full, lora, all_linear = res["update"]
    assert [r["mode"] for r in res["update"]] == ["full", "lora", "lora all-linear"]
    assert full["trainable"] == full["params"]
    # peft's default for Qwen2 (q_proj, v_proj) at r=16 on the tiny model (hidden 32, 2 KV heads of 8): 2 layers.
    assert lora["trainable"] == 2 * 16 * ((32 + 32) + (32 + 16))
    assert lora["trainable"] < all_linear["trainable"] < full["trainable"]
    assert all(r["update_peak"] > 0 and r["s_update"] > 0 for r in res["update"])
    assert m.group(1) == f"{full['update_peak'] / lora['update_peak']:.3f}"
    assert m.group(2) == f"{full['s_update'] / lora['s_update']:.3f}"
    # Qwen2.5-3B, computed: 36 layers x r 16 x ((2048 + 2048) + (2048 + 256)) adapter weights.
    c_full, c_lora, _ = res["computed_3b"]
    assert c_lora["trainable"] == 36 * 16 * (4096 + 2304)
    assert c_full["grads"] == 4 * c_full["params"] and c_lora["adam"] == 8 * c_lora["trainable"]
    titles = [line for line in out if line.startswith(("Update:", "Qwen2.5-3B", "Sampling"))]
    assert len(titles) == 3


def test_gpu_check_names_the_wheels_when_trl_is_missing(monkeypatch, tmp_path):
    """The GPU machine has no trl or datasets: the TRL side is one row saying so and how to carry them."""
    import importlib.util

    import gpu_check

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name in ("trl", "datasets") else real(name, *a))
    (row,) = gpu_check.trl_pair("tiny", tmp_path, gpu_check.PLAN["dry"], torch.device("cpu"), tmp_path)
    assert row[1] == ("GRPO vs TRL: skipped (trl, datasets not importable; carry them as wheels: "
                      "python benchmarks/trl_wheels.py)")


def test_optimizer_step_toy(tiny_qwen2, capsys):
    """The AdamW benchmark on a tiny model's shapes: the weights it steps are the model's, its table
    has the three kinds, and the last line is the fused step's ratio and floor fraction."""
    import optimizer_step
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(tiny_qwen2)
    assert optimizer_step.weight_shapes(str(tiny_qwen2)) == [tuple(p.shape) for p in model.parameters()]
    assert optimizer_step.main(["--model", str(tiny_qwen2), "--steps", "2", "--rounds", "1"]) == 0
    out = capsys.readouterr().out.strip().splitlines()
    assert re.fullmatch(r"fused_speedup=(\d+\.\d\d)-\1 fused_floor_fraction=(\d+\.\d\d)-\2", out[-1]), out[-1]
    assert [line.split("|")[1].strip() for line in out if line.startswith("| ")] == ["kind", "per-tensor", "foreach",
                                                                                   "fused"]
