"""The learning-rate schedule equals transformers' schedulers (what TRL, and so the Datawhale and
GSM8K reference recipes, train with): the same factor at every step for linear, cosine and
constant_with_warmup, with transformers' warmup step count; and the trainer logs exactly that
schedule, one scheduler step per training step."""
import json
import math

import pytest
import torch
from transformers import get_scheduler

from conftest import REPO
from r1zero.config import TrainConfig
from r1zero.training.optim import make_optimizer
from r1zero.training.trainer import Trainer


def _lrs(optimizer, scheduler, steps):
    out = []
    for _ in range(steps):
        out.append(scheduler.get_last_lr()[0])
        optimizer.step()
        scheduler.step()
    return out


@pytest.mark.parametrize("kind", ["linear", "cosine", "constant_with_warmup"])
@pytest.mark.parametrize("steps,ratio", [(10, 0.0), (10, 0.25), (7, 0.1), (450, 0.03), (3, 0.5)])
def test_schedule_equals_transformers(kind, steps, ratio, tmp_path):
    cfg = TrainConfig(output_dir=str(tmp_path), lr_scheduler_type=kind, warmup_ratio=ratio, learning_rate=2e-3)
    ours_opt, ours = make_optimizer(torch.nn.Linear(2, 2), cfg, cfg.learning_rate, steps)
    ref_opt = torch.optim.AdamW(torch.nn.Linear(2, 2).parameters(), lr=cfg.learning_rate)
    warmup = math.ceil(steps * ratio)  # transformers.TrainingArguments.get_warmup_steps
    ref = get_scheduler(kind, ref_opt, num_warmup_steps=warmup, num_training_steps=steps)
    a, b = _lrs(ours_opt, ours, steps), _lrs(ref_opt, ref, steps)
    assert a == pytest.approx(b, rel=1e-12, abs=1e-18)
    if warmup:
        assert a[0] == 0.0 and a[warmup] == pytest.approx(cfg.learning_rate)  # warmup ends at the full rate


def test_trainer_logs_the_schedule(tiny_llama, tmp_path):
    steps = 4
    cfg = TrainConfig(
        model_name_or_path=str(tiny_llama), task="countdown", template="base", reward="none",
        reward_funcs=[f"{REPO / 'tests' / 'toy_rewards.py'}:vowel_share"], reward_timeout=0.0,
        task_args={"train_size": 16, "test_size": 2}, prompts_per_step=1, num_generations=2,
        max_completion_length=2, learning_rate=1e-3, lr_scheduler_type="cosine", warmup_ratio=0.25,
        max_steps=steps, output_dir=str(tmp_path / "run"), report_to=["none"], eval_on_end=False,
        disable_tqdm=True, log_completions_rate=0.0, report_steps=0)
    Trainer(cfg).train()
    logged = [json.loads(x)["learning_rate"] for x in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    opt = torch.optim.AdamW(torch.nn.Linear(2, 2).parameters(), lr=1e-3)
    want = _lrs(opt, get_scheduler("cosine", opt, num_warmup_steps=1, num_training_steps=steps), steps)
    assert logged == pytest.approx(want, rel=1e-12, abs=1e-18)
    assert logged[0] == 0.0 and logged[1] == pytest.approx(1e-3)
