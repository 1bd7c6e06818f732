"""RLOO and REINFORCE++ learn: a tiny random model's mean reward on the toy reward of the GRPO
learning test (tests/test_learning.py: share of vowels among the letters it writes) rises clearly
within 8 steps (RLOO from 0.37 to 0.63, REINFORCE++ from 0.38 to 0.51). With the advantages
negated (r1zero/algorithms/reward_kl.py, rloo.py, reinforce_pp.py) the reward does not rise (RLOO stays at 0.37, REINFORCE++ falls to 0.21), so
these fail on a sign flip, unlike the one-step tests in test_ppo_train.py that only see weights move."""
import json

import pytest
from conftest import REPO

from r1zero.config import TrainConfig
from r1zero.training.trainer import Trainer

ALGOS = {
    "rloo": dict(algorithm="rloo", num_generations=8, prompts_per_step=4),
    # REINFORCE++ has no groups; its whitening over the batch is the baseline.
    "reinforce_pp": dict(algorithm="reinforce_pp", num_generations=1, prompts_per_step=32, scale_rewards="none"),
}


def _rewards(model_dir, out, algo, reward):
    cfg = TrainConfig(
        model_name_or_path=str(model_dir), task="countdown", template="base", reward="none",
        reward_funcs=[f"{REPO / 'tests' / 'toy_rewards.py'}:{reward}"], reward_timeout=0.0,
        task_args={"train_size": 256, "test_size": 8}, max_completion_length=8, micro_batch_size=64,
        learning_rate=0.3, max_steps=8, output_dir=str(out), report_to=["none"], eval_on_end=False,
        disable_tqdm=True, log_completions_rate=0.0, seed=0, **ALGOS[algo])
    Trainer(cfg).train()
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert len(rows) == 8
    return [r["reward"] for r in rows]


@pytest.mark.parametrize("algo", sorted(ALGOS))
def test_mean_reward_rises(algo, tiny_qwen2, tmp_path):
    up = _rewards(tiny_qwen2, tmp_path / "run", algo, "vowel_share")
    assert sum(up[-3:]) / 3 > sum(up[:2]) / 2 + 0.1, up
