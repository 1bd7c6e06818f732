"""cispo, sapo, luspo, vespo and ``use_bias_correction_kl`` against TRL 1.16's own ``_compute_loss``.

The harness is tests/test_trl_parity.py's (TRL's loss code on our tensors; a batch TRL sampled, the
policy nudged away from the sampler and the reference): for each objective x beta in {0, 0.04},
float64 random tensors within 1e-6 (value and gradient) and a real float32 batch within the bounds
the parity tests use (value 1e-4, every weight's gradient to a relative 1e-3). Each test also shows
that a 1% error would fail its comparison.
"""
import pytest
import torch

from test_trl_parity import (MAX_COMPLETION, _batch, random_batch, assert_loss_equals_trl_on_real_batch,
                             grpo_trainers, trl_loss_and_grad)

from r1zero.algorithms import policy_loss
from r1zero.config import ConfigError, TrainConfig
from r1zero.observe.metrics import loss_metrics

# TRL's GRPOConfig keys of each case; r1zero takes the same names (policy_loss's keyword arguments).
SETTINGS = {
    # A cap of 1.2 (ScaleRL's is 5.0) so that random ratios exceed it and the truncation is exercised.
    "cispo": {"epsilon_high": 1.2},
    "sapo": {"sapo_temperature_pos": 1.3, "sapo_temperature_neg": 0.9},
    "luspo": {"importance_sampling_level": "sequence"},
    "vespo": {"vespo_k_pos": 2.5, "vespo_lambda_pos": 3.5, "vespo_k_neg": 2.0, "vespo_lambda_neg": 1.5},
    # grpo with TRL's default KL form (the ratio times the KL term), token and sequence level.
    "grpo": {"use_bias_correction_kl": True},
    "gspo": {"use_bias_correction_kl": True, "importance_sampling_level": "sequence"},
}
CASES = [(name, beta) for name in SETTINGS for beta in (0.0, 0.04)]


def _loss_type(name):
    return "grpo" if name == "gspo" else name


@pytest.fixture(scope="module")
def trainers(tiny_qwen2, tmp_path_factory):
    return grpo_trainers(tiny_qwen2, tmp_path_factory)


def _trainer(trainers, name, beta):
    return trainers(_loss_type(name), beta, **SETTINGS[name])


def ours(name, beta, lp, old, adv, mask, ref):
    kw = {"epsilon": 0.2, "epsilon_high": 0.28, **SETTINGS[name]}
    return policy_loss(lp, old, adv, mask, loss_type=_loss_type(name), ref_logprobs=ref if beta > 0 else None,
                       beta=beta, kl_estimator="k3", max_completion_length=MAX_COMPLETION, **kw)


@pytest.mark.parametrize("name,beta", CASES)
def test_objective_equals_trl_on_random_tensors(name, beta, trainers, monkeypatch):
    tr = _trainer(trainers, name, beta)
    logps, old, ref, adv, mask = random_batch()
    theirs, g_theirs = trl_loss_and_grad(tr, monkeypatch, logps, old, ref, adv, mask, beta)
    loss, metrics = ours(name, beta, logps, old, adv, mask, ref)
    (g_ours,) = torch.autograd.grad(loss, logps)
    assert abs(float(loss) - float(theirs)) < 1e-6
    torch.testing.assert_close(g_ours, g_theirs, atol=1e-6, rtol=0)
    # A 1% error is far outside both bounds: the comparisons can fail.
    assert abs(1.01 * float(loss) - float(theirs)) > 1e-6
    assert not torch.allclose(1.01 * g_ours, g_theirs, atol=1e-6, rtol=0)
    # The objective is really another one than the classic grpo surrogate on these tensors (by 100x
    # the bound above at least; the bias-corrected KL term moves a 0.04-weighted term only).
    classic, _ = policy_loss(logps, old, adv, mask, loss_type="grpo", epsilon=0.2, epsilon_high=0.28,
                             ref_logprobs=ref if beta > 0 else None, beta=beta,
                             importance_sampling_level=SETTINGS[name].get("importance_sampling_level", "token"))
    if name not in ("grpo", "gspo") or beta > 0:
        assert abs(float(classic) - float(loss)) > 1e-4
    if name == "cispo":  # the cap was reached and is reported
        w = torch.exp(logps.detach() - old)
        hand = (((w > 1.2) & (adv.unsqueeze(1) > 0)).double() * mask).sum() / mask.sum()
        assert 0 < float(hand) and float(loss_metrics(metrics)["cispo_clip_ratio"]) == pytest.approx(float(hand), abs=1e-12)


@pytest.mark.parametrize("name,beta", CASES)
def test_objective_equals_trl_on_a_real_batch(name, beta, trainers):
    """A float32 batch TRL sampled from the tiny model (the bounds of tests/test_trl_parity.py; the
    gradient check fails a 1% error on every weight, as it asserts)."""
    tr = _trainer(trainers, name, beta)
    inputs = _batch(tr)
    assert bool(inputs["prompt_mask"].all())
    assert inputs["advantages"].abs().sum() > 0
    assert_loss_equals_trl_on_real_batch(
        tr, inputs, lambda lp, old, adv, cm, ref: ours(name, beta, lp, old, adv, cm, ref)[0])


def test_the_objective_keys_are_refused_out_of_range_or_with_another_loss():
    assert TrainConfig(loss_type="sapo", sapo_temperature_neg=2.0).sapo_temperature_neg == 2.0
    assert TrainConfig(loss_type="cispo", epsilon_high=5.0).loss_type == "cispo"
    bad = [
        (dict(sapo_temperature_pos=2.0), "'sapo_temperature_pos' applies to loss_type=sapo only"),
        (dict(loss_type="grpo", vespo_k_neg=1.0), "'vespo_k_neg' applies to loss_type=vespo only"),
        (dict(loss_type="sapo", sapo_temperature_neg=0.0), "'sapo_temperature_neg' must be a finite number > 0"),
        (dict(loss_type="vespo", vespo_k_pos=-1.0), "'vespo_k_pos' must be a finite number >= 0"),
        (dict(loss_type="vespo", vespo_lambda_pos=float("inf")), "'vespo_lambda_pos' must be a finite number > 0"),
        (dict(loss_type="cispo"), "'epsilon_high' is the cap of cispo's importance ratio"),
        (dict(loss_type="cispo", epsilon_high=0.28), "'epsilon_high' is the cap of cispo's importance ratio"),
        (dict(loss_type="vespo", importance_sampling_level="sequence"), "'importance_sampling_level' must be token"),
        (dict(loss_type="vespo", algorithm="ppo"), "'loss_type' vespo .* needs algorithm=grpo"),
        (dict(loss_type="vespo", algorithm="rloo"), "'loss_type' vespo .* needs algorithm=grpo"),
        (dict(loss_type="gmpo"), "'loss_type' must be"),
    ]
    for kw, message in bad:
        with pytest.raises(ConfigError, match=message):
            TrainConfig(**kw)
        try:
            TrainConfig(**kw)
        except ConfigError as e:
            assert "\n" not in str(e)
