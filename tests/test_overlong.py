"""DAPO's overlong punishment (``overlong_buffer_len``, ``overlong_penalty_factor``) and reward
functions that ask for the rollout's ``completion_length`` and ``truncated``."""
from __future__ import annotations

import pytest
from conftest import REPO
from trl.rewards import get_soft_overlong_punishment

from r1zero.config import ConfigError, TrainConfig
from r1zero.rewards.overlong import overlong_penalty
from r1zero.sandbox.functions import rollout_args
from r1zero.rewards.scoring import RewardScorer
from r1zero.training.trainer import Trainer

TOY = REPO / "tests" / "toy_rewards.py"


def test_overlong_penalty_at_inside_and_beyond_the_buffer():
    # L = 20, buffer 8: no penalty up to 12 tokens, then (12 - length) / 8, -1 at 20 and beyond.
    L, B = 20, 8
    by_hand = {0: 0.0, 5: 0.0, 12: 0.0, 13: -1 / 8, 16: -4 / 8, 19: -7 / 8, 20: -1.0, 21: -1.0, 40: -1.0}
    for length, value in by_hand.items():
        assert overlong_penalty(length, L, B) == value, length
        assert overlong_penalty(length, L, B, factor=0.5) == value * 0.5, length
    # TRL's own function agrees (factor 1).
    trl = get_soft_overlong_punishment(max_completion_len=L, soft_punish_cache=B)
    assert trl([[1] * n for n in by_hand]) == list(by_hand.values())
    assert overlong_penalty(20, L, 0) == 0.0  # off


def test_reward_model_adds_the_overlong_part():
    rm = RewardScorer(None, [f"{TOY}:vowel_share"], overlong=(10, 4, 2.0))
    s = rm(["ab", "ab", "ab"], [{}] * 3, lengths=[6, 8, 10], truncated=[False, False, True])
    assert s.parts["overlong"] == [0.0, -1.0, -2.0]
    assert s.rewards == [0.5, -0.5, -1.5]


def test_reward_functions_get_the_rollout_facts_they_name(tmp_path):
    def named(completion, completion_length, truncated=None, **kw):
        return 0.0

    def catch_all(completion, **kw):
        return 0.0

    assert rollout_args(named) == ("completion_length", "truncated") and rollout_args(catch_all) == ()


@pytest.mark.parametrize("timeout", [0.0, 5.0])  # in-process and in the worker process
def test_a_reward_function_receives_completion_length_and_truncated_through_the_trainer(stopping_qwen2, tmp_path,
                                                                                        timeout):
    """One training step on a tiny model: the function's value is completion_length + 1000 x
    truncated, and samples.jsonl holds the rollout's own length and truncation of each completion;
    the overlong part is DAPO's formula on the same lengths."""
    cfg = TrainConfig(model_name_or_path=str(stopping_qwen2), task="countdown", template="base", reward="none",
                      task_args={"train_size": 8, "test_size": 2}, prompts_per_step=2, num_generations=4,
                      max_completion_length=8, max_steps=1, output_dir=str(tmp_path / "run"), report_to=["none"],
                      log_completions_rate=1.0, disable_tqdm=True, seed=1, eval_on_end=False, device="cpu",
                      reward_funcs=[f"{TOY}:length_and_truncation"], reward_timeout=timeout,
                      overlong_buffer_len=4, overlong_penalty_factor=0.5, top_k=20)
    tr = Trainer(cfg)
    try:
        m, samples = tr.train_step()
    finally:
        tr.rewarder.close()
    assert len(samples) == 8
    for s in samples:
        assert s["parts"]["length_and_truncation"] == s["length"] + (1000.0 if s["truncated"] else 0.0)
        assert s["parts"]["overlong"] == overlong_penalty(s["length"], 8, 4, 0.5)
        assert s["reward"] == pytest.approx(s["parts"]["length_and_truncation"] + s["parts"]["overlong"])
    # Completions stopped early, inside the buffer and at the limit (truncated) are all there.
    assert any(s["truncated"] for s in samples) and any(s["length"] <= 4 for s in samples)
    assert any(4 < s["length"] < 8 or (s["length"] == 8 and not s["truncated"]) for s in samples)
    assert m["reward/overlong"] == pytest.approx(sum(s["parts"]["overlong"] for s in samples) / 8)


def test_new_keys_are_refused_out_of_range():
    for kw, key in [(dict(overlong_buffer_len=-1), "overlong_buffer_len"),
                    (dict(overlong_buffer_len=256, max_completion_length=256), "overlong_buffer_len"),
                    (dict(overlong_penalty_factor=0.0), "overlong_penalty_factor"),
                    (dict(overlong_penalty_factor=float("inf")), "overlong_penalty_factor"),
                    (dict(max_sampling_rounds=0), "max_sampling_rounds"),
                    (dict(dynamic_sampling=True, num_generations=1, scale_rewards="none"), "dynamic_sampling"),
                    (dict(importance_sampling_level="sequence", algorithm="rloo"), "importance_sampling_level")]:
        with pytest.raises(ConfigError) as e:
            TrainConfig(**kw)
        msg = str(e.value)
        assert f"'{key}'" in msg and "\n" not in msg, msg
