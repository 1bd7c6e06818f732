"""PPO (critic + GAE), RLOO and REINFORCE++ through the whole loop on tiny random models: PPO runs
2 steps and a resume from the step-1 checkpoint in a new process must give the same policy, critic
and metrics as the uninterrupted run (the GRPO integration test's check); RLOO and REINFORCE++ run
one step each; PPO raises the toy reward the GRPO learning test uses."""
import json
import shutil

import torch
from conftest import REPO
from safetensors.torch import load_file
from test_train_integration import base_recipe, run_train, step_metrics

from r1zero.config import TrainConfig
from r1zero.training.trainer import Trainer

PPO = dict(algorithm="ppo", num_generations=1, prompts_per_step=2, mini_batch_prompts=1, num_iterations=2,
           kl_coef=0.05, kl_ctl="adaptive", kl_target=0.01, kl_horizon=100, critic_learning_rate=1e-3,
           entropy_coeff=0.01, gamma=1.0, lam=0.95, scale_rewards="none", eval_on_start=False, eval_on_end=False)


def test_ppo_two_steps_then_resume_equals_uninterrupted(tiny_qwen2, tmp_path, monkeypatch):
    # MKL's CPU matmuls may round differently with the memory alignment of their inputs, which
    # differs between processes (1 ulp seen in the critic's values); strict CNR mode makes them
    # reproducible, so the bit-for-bit comparison below tests our resume, not the allocator.
    monkeypatch.setenv("MKL_CBWR", "AUTO,STRICT")
    full = tmp_path / "full"
    run_train(base_recipe(tiny_qwen2, full, **PPO), tmp_path, "full")
    ck1, ck2 = full / "checkpoint-1", full / "checkpoint-2"
    for name in ("critic/config.json", "critic/model.safetensors", "trainer_state.pt"):
        assert (ck2 / name).is_file(), name
    heavy = torch.load(ck2 / "trainer_state.pt", weights_only=False)
    assert {"critic_optimizer", "critic_scheduler"} <= set(heavy)
    from transformers import AutoModelForTokenClassification

    critic = AutoModelForTokenClassification.from_pretrained(ck2 / "critic")
    assert critic.config.num_labels == 1 and critic.config.model_type == "qwen2"

    rows = [m for m in step_metrics(full) if "reward" in m]
    assert [m["step"] for m in rows] == [1, 2]
    for key in ("critic/value_loss", "critic/explained_variance", "critic/value_clip_frac", "critic/grad_norm",
                "returns/mean", "returns/std", "advantages/mean", "advantages/std", "kl_coef", "kl_penalty",
                "loss", "grad_norm", "entropy", "clip_ratio/region_mean"):
        assert key in rows[0], key
    assert abs(rows[0]["advantages/mean"]) < 1e-5 and abs(rows[0]["advantages/std"] - 1) < 0.05  # whitened
    # Step 1 samples with the starting policy = reference: zero KL, so the adaptive coefficient
    # shrinks by the controller's 20% cap x 2 samples / horizon 100.
    assert rows[0]["kl_penalty"] == 0.0 and rows[0]["kl_coef"] == 0.05
    assert abs(rows[1]["kl_coef"] - 0.05 * (1 - 0.2 * 2 / 100)) < 1e-12
    assert json.loads((ck2 / "trainer_state.json").read_text())["algorithm"]["kl_coef"] != 0.05

    resumed = tmp_path / "resumed"
    resumed.mkdir()
    shutil.copytree(ck1, resumed / "checkpoint-1")
    for name in ("metrics.jsonl", "samples.jsonl"):
        shutil.copy(full / name, resumed / name)
    run_train(base_recipe(tiny_qwen2, resumed, **PPO), tmp_path, "resumed")
    for sub in ("model.safetensors", "critic/model.safetensors"):
        a, b = load_file(ck2 / sub), load_file(resumed / "checkpoint-2" / sub)
        assert a.keys() == b.keys()
        for k in a:
            assert torch.equal(a[k], b[k]), (sub, k)
        start = load_file(ck1 / sub)
        assert any(not torch.equal(a[k], start[k]) for k in a), sub  # step 2 changed policy and critic
    assert step_metrics(resumed) == step_metrics(full)


def _one_step(model_dir, out, **extra):
    cfg = TrainConfig(**base_recipe(model_dir, out, max_steps=1, save_steps=0, eval_on_start=False, eval_on_end=False,
                                    report_to=["none"], **extra))
    tr = Trainer(cfg)
    start = {k: v.clone() for k, v in tr.model.state_dict().items()}
    tr.train()
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [1]
    assert any(not torch.equal(start[k], v) for k, v in tr.model.state_dict().items())
    return rows[0], tr


def test_rloo_and_reinforce_pp_one_step(tiny_llama, tmp_path):
    row, tr = _one_step(tiny_llama, tmp_path / "rloo", algorithm="rloo", kl_coef=0.01)
    assert tr.reference.model is not None and getattr(tr.algo, "critic", None) is None
    assert abs(row["advantages/mean"]) < 1e-6  # leave-one-out advantages sum to 0 per group (no KL yet)
    row, tr = _one_step(tiny_llama, tmp_path / "rpp", algorithm="reinforce_pp", kl_coef=0.01, gamma=0.99)
    assert abs(row["advantages/mean"]) < 1e-5 and abs(row["advantages/std"] - 1) < 0.05
    assert "returns/mean" in row and "critic/value_loss" not in row


def test_ppo_raises_mean_reward(tiny_qwen2, tmp_path):
    """The GRPO learning test's task and model (tests/test_learning.py), trained with PPO."""
    cfg = TrainConfig(
        model_name_or_path=str(tiny_qwen2), task="countdown", template="base", reward="none",
        reward_funcs=[f"{REPO / 'tests' / 'toy_rewards.py'}:vowel_share"], algorithm="ppo",
        task_args={"train_size": 256, "test_size": 8}, prompts_per_step=32, num_generations=1,
        max_completion_length=8, micro_batch_size=64, learning_rate=0.3, critic_learning_rate=1e-2,
        lam=1.0, scale_rewards="none", max_steps=10, output_dir=str(tmp_path / "run"), report_to=["none"],
        eval_on_end=False, disable_tqdm=True, log_completions_rate=0.0, seed=0)
    Trainer(cfg).train()
    rewards = [json.loads(line)["reward"] for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert len(rewards) == 10
    assert sum(rewards[-3:]) / 3 > sum(rewards[:2]) / 2 + 0.1, rewards


def test_ppo_critic_regresses_onto_the_gae_returns(tiny_qwen2, tmp_path, monkeypatch):
    """One step, one mini-batch, one PPO epoch: the critic's first update starts at V = V_old, so its
    loss is veRL's 0.5 x token mean of (V_old - R)^2 with R the GAE returns of this step's rollout
    (not 0, as regressing onto its own old values would give), and the update moves its values
    toward those returns."""
    seen = []
    real_learn = Trainer._learn

    def record(self, batch, step):  # records the step's batch, then learns as always
        seen.append(batch)
        return real_learn(self, batch, step)

    monkeypatch.setattr(Trainer, "_learn", record)
    cfg = TrainConfig(**base_recipe(tiny_qwen2, tmp_path / "run", **{
        **PPO, "num_iterations": 1, "mini_batch_prompts": 2, "micro_batch_size": 2, "max_steps": 1,
        "save_steps": 0, "report_to": ["none"], "weight_decay": 0.0, "critic_learning_rate": 1e-2}))
    tr = Trainer(cfg)
    metrics, _ = tr.train_step()
    batch, algo = seen[0], tr.algo
    mask = batch.loss_mask.double()
    old, returns = algo.values.double(), algo.returns.double()
    assert float(((returns - old).abs() * mask).max()) > 0.1  # the returns are not the old values
    want = 0.5 * float((((old - returns) ** 2) * mask).sum() / mask.sum())
    assert abs(metrics["critic/value_loss"] - want) <= 1e-6 * want, (metrics["critic/value_loss"], want)
    with torch.no_grad():
        new = algo.ctx.passes.frozen_values(algo.module, batch).double()
    mse = lambda v: float((((v - returns) ** 2) * mask).sum() / mask.sum())  # noqa: E731
    assert mse(new) < 0.9 * mse(old), (mse(old), mse(new))
