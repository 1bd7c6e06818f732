"""A collapsed run (every group with equal rewards, so no learning signal) says so in one line, in
its log and in its report, naming the likely cause."""
from __future__ import annotations

import logging

from conftest import REPO

from r1zero.config import TrainConfig
from r1zero.observe.metrics import collapse_message, collapses
from r1zero.training.trainer import Trainer

TOY = REPO / "tests" / "toy_rewards.py"


def config(model, out, reward_fn: str, **kw) -> TrainConfig:
    base = dict(model_name_or_path=str(model), task="countdown", reward="none", template="base",
                task_args={"train_size": 16, "test_size": 2}, prompts_per_step=2, num_generations=2,
                micro_batch_size=4, max_completion_length=4, max_steps=3, eval_on_start=False,
                eval_on_end=False, output_dir=str(out), report_to=["none"], disable_tqdm=True, device="cpu",
                reward_funcs=[f"{TOY}:{reward_fn}"], collapse_steps=2, report_steps=0, save_total_limit=1)
    base.update(kw)
    return TrainConfig(**base)


def test_a_collapsed_run_warns_in_its_log_and_its_report(tiny_qwen2, tmp_path, caplog):
    out = tmp_path / "collapsed"
    with caplog.at_level(logging.WARNING, logger="r1zero"):
        result = Trainer(config(tiny_qwen2, out, "constant")).train()
    lines = [r.getMessage() for r in caplog.records if "reward collapse" in r.getMessage()]
    # Steps 1-3 all have zero spread: said once, when the stretch reaches collapse_steps=2.
    assert lines == [
        "reward collapse: every group had equal rewards at steps 1-2 (2 steps in a row), so there was no learning "
        "signal; likely cause: every completion of a prompt scored the same (mean reward 1.000): the completions "
        "collapsed onto one answer, often the prompt's own example; raise num_generations or temperature, lower "
        "learning_rate, or change the template"]
    page = (out / "report.html").read_text(encoding="utf-8")
    assert result["report"] and "reward collapse: every group had equal rewards at steps 1-3 (3 steps in a row)" in page


def test_a_learning_run_does_not_warn(tiny_qwen2, tmp_path, caplog):
    out = tmp_path / "fine"
    with caplog.at_level(logging.WARNING, logger="r1zero"):
        Trainer(config(tiny_qwen2, out, "vowel_share", max_steps=2)).train()
    assert not [r for r in caplog.records if "reward collapse" in r.getMessage()]
    assert "reward collapse" not in (out / "report.html").read_text(encoding="utf-8")


def test_the_likely_cause_follows_the_rewards():
    rows = [{"step": s, "frac_reward_zero_std": 1.0, "reward": 0.0, "accuracy": 0.0} for s in (4, 5, 6)]
    assert "every completion scored 0: the task is too hard" in collapse_message(rows)
    solved = [{**r, "reward": 1.0, "accuracy": 1.0} for r in rows]
    assert collapse_message(solved) == ("task solved: every completion was correct at steps 4-6 (3 steps in a row), "
                                        "so there is no learning signal left; make the task harder (task_args) or "
                                        "stop here")
    # Only stretches of at least `steps` rows count; a row with spread ends a stretch.
    mixed = rows[:2] + [{"step": 7, "frac_reward_zero_std": 0.5}] + rows[2:]
    assert collapses(mixed, 2) == [collapse_message(rows[:2])] and collapses(mixed, 3) == [] and collapses(rows, 0) == []
