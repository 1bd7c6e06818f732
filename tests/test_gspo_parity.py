"""GSPO (``importance_sampling_level: sequence``) against TRL 1.16's own ``GRPOTrainer._compute_loss``.

As tests/test_trl_parity.py does for the token level: TRL's code is called on a GRPOTrainer built
with ``importance_sampling_level="sequence"`` for every loss_type TRL defines with it (grpo, bnpo,
dr_grpo, dapo), with and without the KL term, on float64 random tensors (ragged masks, ratios
inside and outside the clip range) and on a float32 batch TRL sampled from a tiny model; values
and gradients. TRL 1.16's default ``use_bias_correction_kl`` is turned off (r1zero keeps the classic
KL term, see test_trl_parity.py).
"""

import pytest
import torch
from datasets import Dataset
from trl import GRPOConfig, GRPOTrainer

from test_trl_parity import assert_loss_equals_trl_on_real_batch, random_batch, trl_loss_and_grad

from r1zero.algorithms import policy_loss
from r1zero.config import ConfigError, TrainConfig
from r1zero.observe.metrics import loss_metrics

G = 4
PROMPTS = ["hello there", "good morning"]  # equal token lengths: no left padding (see test_trl_parity.py)
MAX_COMPLETION = 6
CASES = [(lt, beta) for lt in ("grpo", "bnpo", "dr_grpo", "dapo") for beta in (0.0, 0.04)]


def _reward(completions, **kw):
    return [float(len(c) % 3) for c in completions]


@pytest.fixture(scope="module")
def trainers(tiny_qwen2, tmp_path_factory):
    made = {}

    def get(loss_type, beta):
        if (loss_type, beta) not in made:
            args = GRPOConfig(output_dir=str(tmp_path_factory.mktemp("trl")), per_device_train_batch_size=len(PROMPTS) * G,
                              num_generations=G, max_completion_length=MAX_COMPLETION, report_to="none", use_cpu=True,
                              logging_steps=1, seed=0, temperature=0.9, bf16=False,
                              model_init_kwargs={"dtype": "float32"}, loss_type=loss_type, beta=beta, epsilon=0.2,
                              epsilon_high=0.28, use_bias_correction_kl=False, importance_sampling_level="sequence")
            tr = GRPOTrainer(model=str(tiny_qwen2), reward_funcs=_reward, args=args,
                             train_dataset=Dataset.from_dict({"prompt": PROMPTS}))
            tr.model.eval()  # no gradient-accumulation division: one whole batch is compared
            made[(loss_type, beta)] = tr
        return made[(loss_type, beta)]
    return get


def _ours(lp, old, adv, mask, loss_type, beta, ref, level="sequence"):
    return policy_loss(lp, old, adv, mask, loss_type=loss_type, epsilon=0.2, epsilon_high=0.28,
                       ref_logprobs=ref if beta > 0 else None, beta=beta, kl_estimator="k3",
                       max_completion_length=MAX_COMPLETION, importance_sampling_level=level)


@pytest.mark.parametrize("loss_type,beta", CASES)
def test_sequence_level_loss_equals_trl_on_random_tensors(loss_type, beta, trainers, monkeypatch):
    tr = trainers(loss_type, beta)
    # Sequence log-ratios spread around 0 by up to ~0.5: some completions inside the clip range
    # [0.8, 1.28], some below and above it.
    logps, old, ref, adv, mask = random_batch(seed=11, token_noise=0.1)
    seq_ratio = torch.exp(((logps.detach() - old) * mask).sum(-1) / mask.sum(-1))
    assert (seq_ratio < 0.8).any() and (seq_ratio > 1.28).any() and ((seq_ratio > 0.8) & (seq_ratio < 1.28)).any()
    theirs, g_theirs = trl_loss_and_grad(tr, monkeypatch, logps, old, ref, adv, mask, beta)
    ours, metrics = _ours(logps, old, adv, mask, loss_type, beta, ref)
    metrics = loss_metrics(metrics)
    (g_ours,) = torch.autograd.grad(ours, logps)
    assert abs(float(ours) - float(theirs)) < 1e-6
    torch.testing.assert_close(g_ours, g_theirs, atol=1e-6, rtol=0)
    assert g_ours.abs().sum() > 0
    # The sequence level is really another objective than the token level on these tensors.
    token, _ = _ours(logps, old, adv, mask, loss_type, beta, ref, level="token")
    assert abs(float(token) - float(ours)) > 1e-3
    # Clip metrics are shares of completions (TRL's sequence-level reading).
    low = ((seq_ratio < 0.8) & (adv < 0)).double().mean()
    assert metrics["clip_ratio/low_mean"] == pytest.approx(float(low), abs=1e-12)
    assert metrics["ratio_mean"] == pytest.approx(float(seq_ratio.mean()), abs=1e-12)


@pytest.mark.parametrize("loss_type,beta", CASES)
def test_sequence_level_loss_equals_trl_on_a_real_batch(loss_type, beta, trainers):
    """A batch TRL sampled (float32); the policy is nudged away from the sampler and the reference,
    so ratios and the KL are not trivially 1 and 0. Values within 1e-4 and every weight's gradient
    within a relative 1e-3 (a 1% error fails, checked below)."""
    tr = trainers(loss_type, beta)
    torch.manual_seed(0)
    inputs = tr._generate_and_score_completions([{"prompt": p} for p in PROMPTS for _ in range(G)])
    assert bool(inputs["prompt_mask"].all())
    assert inputs["advantages"].abs().sum() > 0
    assert_loss_equals_trl_on_real_batch(
        tr, inputs, lambda lp, old, adv, cm, ref: _ours(lp, old, adv, cm, loss_type, beta, ref)[0])


def test_sequence_level_is_refused_where_advantages_are_per_token():
    for algo in ("ppo", "rloo", "reinforce_pp"):
        with pytest.raises(ConfigError, match="'importance_sampling_level' 'sequence' .*needs algorithm=grpo"):
            TrainConfig(algorithm=algo, importance_sampling_level="sequence")
    with pytest.raises(ConfigError, match="importance_sampling_level"):
        TrainConfig(importance_sampling_level="seq")
    assert TrainConfig(importance_sampling_level="sequence", loss_type="dr_grpo").importance_sampling_level == "sequence"
