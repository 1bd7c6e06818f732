"""The whole GRPO loop on tiny random Qwen2 and Llama models: 2 steps, then a resume from the
step-1 checkpoint in a new process must give the same weights and metrics as the uninterrupted run."""
import json
import shutil
import subprocess
import sys

import pytest
import torch
from conftest import REPO
import yaml
from safetensors.torch import load_file

TIMING = ("time/", "tokens_per_second")


def run_train(recipe: dict, tmp_path, name: str, *overrides: str) -> subprocess.CompletedProcess:
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(recipe))
    r = subprocess.run([sys.executable, "-m", "r1zero", "train", "--config", str(path), *overrides],
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    return r


def base_recipe(model_dir, out, **extra) -> dict:
    recipe = dict(
        model_name_or_path=str(model_dir), task="countdown", template="base", reward="tinyzero",
        task_args={"train_size": 32, "test_size": 4}, prompts_per_step=2, num_generations=4,
        micro_batch_size=3, max_prompt_length=256, max_completion_length=12,
        learning_rate=1e-3, max_steps=2, save_steps=1, save_total_limit=None, eval_limit=4,
        eval_on_start=True, eval_on_end=True, output_dir=str(out), report_to=["tensorboard"],
        log_completions_rate=0.5, disable_tqdm=True, seed=3,
        # Random tiny models never solve Countdown; a continuous reward gives every group a spread.
        reward_funcs=[f"{REPO / 'tests' / 'toy_rewards.py'}:vowel_share"])
    recipe.update(extra)
    return recipe


def step_metrics(out):
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    return [{k: v for k, v in r.items() if not k.startswith(TIMING)} for r in rows]


FAMILIES = {
    # Qwen2: KL to a reference, two passes and two mini-batches per step (old log-probs computed).
    "qwen2": dict(beta=0.05, kl_estimator="k3", num_iterations=2, mini_batch_prompts=1, loss_type="grpo"),
    # Llama: no reference model, one update per step (old log-probs = current, detached).
    "llama": dict(beta=0.0, loss_type="dapo", epsilon_high=0.28, lr_scheduler_type="cosine", warmup_ratio=0.5),
}


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_two_steps_then_resume_equals_uninterrupted(family, request, tmp_path):
    model_dir = request.getfixturevalue(f"tiny_{family}")
    full = tmp_path / "full"
    run_train(base_recipe(model_dir, full, **FAMILIES[family]), tmp_path, "full")

    # Everything the user was promised is in the run folder.
    for name in ("config.yaml", "metrics.jsonl", "samples.jsonl", "eval_results.jsonl", "eval/step-0.jsonl",
                 "eval/step-2.jsonl", "checkpoint-1", "checkpoint-2"):
        assert (full / name).exists(), name
    assert list((full / "tensorboard").glob("events.out.tfevents.*"))
    ck = full / "checkpoint-2"
    for name in ("config.json", "model.safetensors", "tokenizer.json", "trainer_state.json", "trainer_state.pt"):
        assert (ck / name).is_file(), name
    assert json.loads((ck / "trainer_state.json").read_text())["step"] == 2
    from transformers import AutoModelForCausalLM

    reloaded = AutoModelForCausalLM.from_pretrained(ck)
    assert reloaded.config.model_type == family

    metrics = step_metrics(full)
    train_rows = [m for m in metrics if "reward" in m]
    assert [m["step"] for m in train_rows] == [1, 2]
    for key in ("reward", "reward/answer", "reward/vowel_share", "accuracy", "format_rate", "completions/mean_length",
                "completions/max_length", "completions/clipped_ratio", "frac_reward_zero_std", "entropy",
                "clip_ratio/region_mean", "learning_rate", "grad_norm", "loss",
                "sampling/sampling_logp_difference/mean"):
        assert key in train_rows[0], key
    # fp32 sampling and training: the sampler's log-probs are the trainer's (bf16: tests/test_gpu_paths_on_cpu.py).
    assert all(m["sampling/sampling_logp_difference/mean"] < 1e-4 for m in train_rows)
    if FAMILIES[family]["beta"] > 0:
        assert "kl" in train_rows[0] and train_rows[1]["kl"] > 0  # policy moved away from the reference
    samples = [json.loads(line) for line in (full / "samples.jsonl").read_text().splitlines()]
    assert {s["step"] for s in samples} == {1, 2} and len(samples) == 8  # half of 8 completions per step
    assert {"prompt", "completion", "reward", "parts"} <= set(samples[0])

    # Resume in a new process from checkpoint-1 (the later checkpoint and log lines are gone).
    resumed = tmp_path / "resumed"
    resumed.mkdir()
    shutil.copytree(full / "checkpoint-1", resumed / "checkpoint-1")
    for name in ("metrics.jsonl", "samples.jsonl", "eval_results.jsonl"):
        shutil.copy(full / name, resumed / name)
    run_train(base_recipe(model_dir, resumed, **FAMILIES[family]), tmp_path, "resumed")

    a = load_file(full / "checkpoint-2" / "model.safetensors")
    b = load_file(resumed / "checkpoint-2" / "model.safetensors")
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k
    start = load_file(full / "checkpoint-1" / "model.safetensors")
    assert any(not torch.equal(a[k], start[k]) for k in a)  # step 2 did change the weights
    assert step_metrics(resumed) == step_metrics(full)
    assert (resumed / "samples.jsonl").read_text() == (full / "samples.jsonl").read_text()
