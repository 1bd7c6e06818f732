"""GRPO throughput: r1zero vs TRL's GRPOTrainer on the same work, one after the other, each in a process of its own.

Same model weights, prompts (Countdown, rendered by r1zero's task), reward (r1zero's scorer),
generations per prompt, completion length, micro-batch size, loss (``grpo``, beta 0, one update
per step), number of steps and precision; gradient checkpointing off on both sides (TRL 1.x turns
it on by default, which trades speed for memory). ``--precision`` runs the pair in fp32, in bf16
(``bf16=True`` on both sides: TRL's default, autocast over fp32 weights; r1zero's precision
policy: fp32 master weights, the update under autocast, sampling on a bf16 copy), or both pairs
one after the other (the cpu preset's default; the gpu preset's is bf16). Prints a table per pair
(samples/s, generated tokens/s, update tokens/s, s/step, peak memory, page faults a step) over the
measured steps after the warm-up ones (``WINDOW``: 3 after 3 on the cpu preset), a line
``<precision>: speedup_vs_trl=... memory_ratio=...`` per pair, and on its last line that of the
last pair, ``speedup_vs_trl=<r1zero samples/s / TRL's> memory_ratio=<r1zero peak / TRL's>``.

    python benchmarks/grpo_throughput.py --preset cpu      # SmolLM2-135M, 4 x 4 x 64 tokens, fp32 and bf16
    python benchmarks/grpo_throughput.py --preset gpu      # random Qwen2.5-0.5B / 3B shapes, bf16

Each side runs in a fresh Python process (this script with ``--side``), so nothing one side sets
for the whole process (r1zero's allocator setting on a CPU, r1zero.host_memory; thread
counts; warmed-up kernels) carries over to the other, and each side's peak memory is its own.

Update tokens are the real (unpadded) prompt + completion tokens of a step's sequences, so both
sides are credited for the same work however they compute it. The ``gpu`` preset fixes the
completion length (EOS is never sampled: min_new_tokens on TRL's side, no stop ids on ours).
After each pair, a ``floor:`` line gives the fraction of the hardware floor r1zero reached
(``measured_floor``): generation (2 x the weights per generated token), update (6 x) and the whole
step, over the model's own matrix products timed in fp32 and bf16 in the same run.
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import resource
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from common import QWEN_SHAPES, PeakMemory, Timer, floor_rates, flops_per_token, host_description, print_table, sync  # noqa: E402

from r1zero.config import TrainConfig  # noqa: E402
from r1zero.training.trainer import Trainer, build_task, load_data  # noqa: E402

PRESETS = {
    "cpu": [dict(name="SmolLM2-135M-Instruct", model="embedded", prompts=4, generations=4, length=64,
                 micro=8, fixed_length=False)],
    # Micro-batches sized so TRL's full-vocabulary logits (micro x length x 151,936) fit in 80 GB.
    "gpu": [dict(name="Qwen2.5-0.5B shape", model="qwen2.5-0.5b", prompts=64, generations=8, length=512,
                 micro=16, fixed_length=True),
            dict(name="Qwen2.5-3B shape", model="qwen2.5-3b", prompts=16, generations=8, length=1024,
                 micro=8, fixed_length=True)],
}


@dataclass
class SideResult:
    side: str
    step_s: list = field(default_factory=list)
    gen_s: list = field(default_factory=list)
    gen_tokens: list = field(default_factory=list)
    update_tokens: list = field(default_factory=list)
    faults: list = field(default_factory=list)  # minor page faults a step
    samples: int = 0
    peak: int = 0
    pid: int = 0  # the process it ran in

    def row(self) -> dict:
        t = sum(self.step_s)
        upd = sum(s - g for s, g in zip(self.step_s, self.gen_s))
        return {"samples/s": self.samples * len(self.step_s) / t, "gen tok/s": sum(self.gen_tokens) / sum(self.gen_s),
                "update tok/s": sum(self.update_tokens) / max(upd, 1e-9), "s/step": t / len(self.step_s),
                "gen s/step": sum(self.gen_s) / len(self.gen_s), "peak GiB": self.peak / 2**30,
                "k faults/step": sum(self.faults) / len(self.faults) / 1e3}


# Warm-up and measured steps per preset, unless given. On the CPU a process's heap grows over its first
# steps, every new page faulted in: r1zero's side page-faulted 771k, 160k, 74k and 17k times in steps
# 1-4, then about none (135M model in bf16, 2-core VM; TRL's process unmaps its large blocks and
# faults again every step). Measuring from step 4 times the steady state a long run lives in, on
# both sides; three measured steps average over completion lengths.
WINDOW = {"cpu": (3, 3), "gpu": (1, 2)}


def minor_faults() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt


def make_random_model(shape: str, tokenizer_src: str, out: Path) -> str:
    """A random-initialised model with a Qwen2.5 shape, saved with a (smaller-vocabulary) tokenizer."""
    from transformers import Qwen2Config, Qwen2ForCausalLM

    from r1zero.models import load_tokenizer

    tok = load_tokenizer(tokenizer_src)
    cfg = Qwen2Config(**QWEN_SHAPES[shape], max_position_embeddings=32768, rope_theta=1e6,
                      bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id)
    torch.manual_seed(0)
    with torch.device("cuda" if torch.cuda.is_available() else "cpu"):
        model = Qwen2ForCausalLM(cfg)
    model.save_pretrained(out)
    tok.save_pretrained(out)
    del model
    return str(out)


def r1zero_config(spec: dict, model: str, out: str, steps: int, bf16: bool) -> TrainConfig:
    return TrainConfig(bf16=bf16,
        model_name_or_path=model, task="countdown", template=spec.get("template", "chat-answer"), reward="shaped",
        task_args={"min_numbers": 2, "max_numbers": 2, "max_number": 20, "operators": "+",
                   "train_size": spec["prompts"], "test_size": 1},
        prompts_per_step=spec["prompts"], num_generations=spec["generations"],
        max_completion_length=spec["length"], micro_batch_size=spec["micro"], max_prompt_length=512,
        temperature=1.0, learning_rate=1e-6, beta=0.0, loss_type="grpo", max_steps=steps, output_dir=out,
        report_to=["none"], eval_on_end=False, disable_tqdm=True, log_completions_rate=0.0, seed=0,
        ref_model_offload=False)


def run_r1zero(spec: dict, model: str, warmup: int, steps: int, tmp: str, bf16: bool) -> SideResult:
    res = SideResult("r1zero")
    cfg = r1zero_config(spec, model, os.path.join(tmp, "r1zero"), warmup + steps, bf16)
    with PeakMemory() as mem:
        trainer = Trainer(cfg)
        if spec["fixed_length"]:
            trainer.eos_ids = []  # never stop: every completion has the full length (same work as TRL)
        G = cfg.num_generations
        from r1zero.rollout.sampling import encode_prompts

        for i in range(warmup + steps):
            faults = minor_faults()
            with Timer() as t:
                m, _ = trainer.train_step()
            faults = minor_faults() - faults
            print(f"r1zero step {i + 1}: {t.s:.1f} s (generate {m['time/generate']:.1f} s, "
                  f"mean length {m['completions/mean_length']:.1f})", flush=True)
            if i < warmup:
                continue
            n = cfg.prompts_per_step * G
            gen_tokens = m["completions/mean_length"] * n
            # Prompt tokens of this step's rows (the same prompts every step: prompts_per_step = all rows).
            _, ids = encode_prompts(trainer.task, trainer.tokenizer, trainer.train_rows)
            res.step_s.append(t.s)
            res.faults.append(faults)
            res.gen_s.append(m["time/generate"])
            res.gen_tokens.append(gen_tokens)
            res.update_tokens.append(gen_tokens + G * sum(len(x) for x in ids))
            res.samples = n
        del trainer
    res.peak = mem.peak
    return res


def run_trl(spec: dict, model_path: str, warmup: int, steps: int, tmp: str, bf16: bool) -> SideResult:
    from datasets import Dataset
    from transformers import TrainerCallback
    from trl import GRPOConfig, GRPOTrainer

    from r1zero.models import load_model, load_tokenizer
    from r1zero.rollout.sampling import encode_prompts

    res = SideResult("TRL")
    cfg = r1zero_config(spec, model_path, os.path.join(tmp, "trl"), warmup + steps, bf16)
    task = build_task(cfg)
    rows, _ = load_data(task, cfg)
    with PeakMemory() as mem:
        tok = load_tokenizer(model_path)
        texts, ids = encode_prompts(task, tok, rows)
        prompt_tokens = sum(len(x) for x in ids)
        data = Dataset.from_list([{"prompt": t, "nums": r["nums"], "target": r["target"]} for t, r in zip(texts, rows)])

        def countdown_reward(prompts, completions, nums, target, **kw):
            return [task.score(c, {"nums": n, "target": t}).reward for c, n, t in zip(completions, nums, target)]

        device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
        model = load_model(model_path, device)
        G, n = spec["generations"], spec["prompts"] * spec["generations"]
        gen_kwargs = {"min_new_tokens": spec["length"]} if spec["fixed_length"] else None
        args = GRPOConfig(
            output_dir=os.path.join(tmp, "trl"), per_device_train_batch_size=spec["micro"],
            gradient_accumulation_steps=n // spec["micro"], num_generations=G, max_completion_length=spec["length"],
            temperature=1.0, learning_rate=1e-6, beta=0.0, loss_type="grpo", max_steps=warmup + steps,
            logging_steps=1, report_to="none", save_strategy="no", use_cpu=device.type == "cpu",
            bf16=bf16, gradient_checkpointing=False, disable_dropout=True, seed=0,
            remove_unused_columns=False, dataloader_pin_memory=False, generation_kwargs=gen_kwargs,
            disable_tqdm=True)
        trainer = GRPOTrainer(model=model, reward_funcs=[countdown_reward], args=args, train_dataset=data,
                              processing_class=tok)
        gen_clock = {"s": 0.0, "tokens": 0}
        inner = trainer._generate_single_turn

        def timed_generate(*a, **kw):
            sync()
            t0 = time.perf_counter()
            out = inner(*a, **kw)
            sync()
            gen_clock["s"] += time.perf_counter() - t0
            gen_clock["tokens"] += sum(len(c) for c in out[0])
            return out

        trainer._generate_single_turn = timed_generate

        class Clock(TrainerCallback):
            def on_step_begin(self, args, state, control, **kw):
                sync()
                self.t0, self.faults = time.perf_counter(), minor_faults()
                gen_clock["s"], gen_clock["tokens"] = 0.0, 0

            def on_step_end(self, args, state, control, **kw):
                sync()
                print(f"TRL step {state.global_step}: {time.perf_counter() - self.t0:.1f} s (generate "
                      f"{gen_clock['s']:.1f} s, mean length {gen_clock['tokens'] / n:.1f})", flush=True)
                if state.global_step > warmup:
                    res.step_s.append(time.perf_counter() - self.t0)
                    res.faults.append(minor_faults() - self.faults)
                    res.gen_s.append(gen_clock["s"])
                    res.gen_tokens.append(gen_clock["tokens"])
                    res.update_tokens.append(gen_clock["tokens"] + G * prompt_tokens)

        trainer.add_callback(Clock())
        trainer.train()
        res.samples = n
        del trainer, model
    res.peak = mem.peak
    return res


def measured_floor(spec: dict, model_path: str, r1: SideResult) -> dict:
    """Fractions of the matrix-product floor reached by r1zero, measured on this machine in this run.

    FLOPs: 2 x the weights a token is multiplied by per generated token (attention's score and value
    products left out; the prompt's prefill not credited), 6 x per update token (forward and
    backward). Rate: the model's own matrix products at the step's row count (all the rows for
    decode, a micro-batch's tokens for the update), timed in fp32 and bf16; the faster of the two
    is the floor (bf16 on a CPU with AVX512-BF16 or AMX, fp32 on one without native bf16)."""
    from transformers import AutoConfig

    cfg = AutoConfig.from_pretrained(model_path)
    token_flops = flops_per_token(cfg)
    n_rows = spec["prompts"] * spec["generations"]
    tokens = sum(r1.update_tokens) / len(r1.update_tokens)
    update_rows = min(4096, int(spec["micro"] * tokens / n_rows))
    decode_rate, update_rate = floor_rates(cfg, n_rows), floor_rates(cfg, update_rows)
    gen_floor = sum(r1.gen_tokens) / len(r1.gen_tokens) * token_flops / decode_rate["best"]  # seconds per step
    update_floor = 3 * token_flops * tokens / update_rate["best"]
    gen_s = sum(r1.gen_s) / len(r1.gen_s)
    step_s = sum(r1.step_s) / len(r1.step_s)
    return {"decode GFLOP/s fp32": decode_rate["fp32"] / 1e9, "decode GFLOP/s bf16": decode_rate["bf16"] / 1e9,
            "update GFLOP/s fp32": update_rate["fp32"] / 1e9, "update GFLOP/s bf16": update_rate["bf16"] / 1e9,
            "generation floor fraction": gen_floor / gen_s, "update floor fraction": update_floor / (step_s - gen_s),
            "step floor fraction": (gen_floor + update_floor) / step_s}


def run_side(side: str, spec: dict, model: str, warmup: int, steps: int, tmp: str, precision: str) -> SideResult:
    """One side's run in a fresh process (``--side``), its SideResult read back from a JSON file."""
    job = Path(tmp) / f"{side}-{precision}.json"
    job.write_text(json.dumps({"side": side, "spec": spec, "model": model, "warmup": warmup, "steps": steps,
                               "tmp": tmp, "bf16": precision == "bf16"}))
    subprocess.run([sys.executable, __file__, "--side", str(job)], check=True)
    return SideResult(**json.loads(job.read_text())["result"])


def side_main(job_path: str) -> int:
    """``--side JOB``: run the side the JSON job names and write its SideResult into the job file."""
    job = json.loads(Path(job_path).read_text())
    logging.getLogger("transformers").setLevel(logging.ERROR)
    run = run_r1zero if job["side"] == "r1zero" else run_trl
    result = run(job["spec"], job["model"], job["warmup"], job["steps"], job["tmp"], job["bf16"])
    result.pid = os.getpid()
    Path(job_path).write_text(json.dumps({**job, "result": asdict(result)}))
    return 0


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--side"]:
        return side_main(argv[1])
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--preset", choices=sorted(PRESETS), default="cpu")
    ap.add_argument("--model", help="override the preset's model (a local folder; used by the smoke test)")
    ap.add_argument("--prompts", type=int)
    ap.add_argument("--generations", type=int)
    ap.add_argument("--length", type=int, help="max completion length")
    ap.add_argument("--micro", type=int, help="micro-batch size (sequences) on both sides")
    ap.add_argument("--steps", type=int, help="measured steps (default: the preset's, WINDOW)")
    ap.add_argument("--warmup", type=int, help="warm-up steps, not measured (default: the preset's, WINDOW)")
    ap.add_argument("--only", choices=["0.5b", "3b"], help="gpu preset: run one of the two shapes")
    ap.add_argument("--precision", choices=["fp32", "bf16", "both"],
                    help="the pair's precision (default: both for the cpu preset, bf16 for gpu)")
    ap.add_argument("--json", help="also write the results here")
    a = ap.parse_args(argv)
    a.warmup = WINDOW[a.preset][0] if a.warmup is None else a.warmup
    a.steps = WINDOW[a.preset][1] if a.steps is None else a.steps
    logging.getLogger("transformers").setLevel(logging.ERROR)
    specs = [dict(s) for s in PRESETS[a.preset]]
    if a.only:
        specs = [s for s in specs if a.only in s["model"]]
    for s in specs:
        for k in ("prompts", "generations", "length", "micro", "model"):
            if getattr(a, k) is not None:
                s[k] = getattr(a, k)
    print(f"host: {host_description()}; preset {a.preset}; {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}; "
          f"load {os.getloadavg()[0]:.2f}", flush=True)
    precision = a.precision or ("both" if a.preset == "cpu" else "bf16")
    precisions = ["fp32", "bf16"] if precision == "both" else [precision]
    results = []
    with tempfile.TemporaryDirectory(prefix="r1zero-bench-") as tmp:
        for spec in specs:
            model = spec["model"]
            if model in QWEN_SHAPES:
                model = make_random_model(model, "embedded", Path(tmp) / model)
            elif model == "embedded":
                from r1zero.models import resolve_model_path

                model = resolve_model_path("embedded")
            for precision in precisions:
                r1, trl = (run_side(side, spec, model, a.warmup, a.steps, tmp, precision) for side in ("r1zero", "TRL"))
                rr, tr = r1.row(), trl.row()
                header = ["side"] + list(rr)
                ratio = [rr[k] / tr[k] if tr[k] else float("nan") for k in rr]
                name = spec["name"] if spec["model"] in (PRESETS[a.preset][0]["model"], "qwen2.5-3b") else Path(model).name
                print_table(f"{name}, {precision}: {spec['prompts']} prompts x {spec['generations']} generations x "
                            f"{spec['length']} tokens, micro-batch {spec['micro']}, {a.steps} steps after {a.warmup} "
                            f"warm-up", header, [["r1zero"] + list(rr.values()), ["TRL"] + list(tr.values()),
                                                 ["r1zero/TRL"] + ratio])
                floor = measured_floor(spec, model, r1)
                print("floor: " + ", ".join(f"{k}={v:.3g}" for k, v in floor.items()))
                results.append({"spec": spec, "precision": precision, "r1zero": rr, "trl": tr, "floor": floor,
                                "pids": [r1.pid, trl.pid]})
                print(f"{precision}: {ratio_line(results[-1])}", flush=True)
    if a.json:
        Path(a.json).write_text(json.dumps(results, indent=1))
    print(ratio_line(results[-1] if len(specs) == 1 else results[0]))
    return 0


def ratio_line(result: dict) -> str:
    r1, trl = result["r1zero"], result["trl"]
    return (f"speedup_vs_trl={r1['samples/s'] / trl['samples/s']:.3f} "
            f"memory_ratio={r1['peak GiB'] / trl['peak GiB']:.3f}")


if __name__ == "__main__":
    sys.exit(main())
