"""The sampler-mismatch correction (TRL's ``vllm_importance_sampling_*`` keys), the off-policy
sequence mask and the entropy quantile against TRL 1.16's own code, and by hand.

TRL computes the correction's weights in ``_generate_and_score_completions`` when it samples with
vLLM. Here its HF generation runs as it is and only the sampler's log-probs are added, as vLLM
would return them: the trainer's own log-probs of each completion plus a known gap (so that the
sampler and the trainer differ, as a bf16 sampler and fp32 weights do); TRL then builds the weights
with its code, and its ``_compute_loss`` applies them. The harness is tests/test_trl_parity.py's.
"""
import math

import pytest
import torch

from test_trl_parity import (MAX_COMPLETION, _batch, assert_loss_equals_trl_on_real_batch, grpo_trainers,
                             trl_loss_and_grad)
from test_trl_parity_objectives import random_batch

from r1zero.algorithms import policy_loss
from r1zero.algorithms.losses import high_entropy_mask, off_policy_mask, sampler_correction
from r1zero.config import ConfigError, TrainConfig
from r1zero.observe.metrics import loss_metrics
from r1zero.training.logprobs import completion_logprobs

# Each mode with bounds that the gap below crosses on both sides (a sequence sums its tokens' gaps).
BOUNDS = {"token_truncate": (0.8, 1.25), "token_mask": (0.8, 1.25), "sequence_truncate": (0.5, 2.0),
          "sequence_mask": (0.5, 2.0)}
GAP = 0.3  # std of the sampler's log-prob gap per token


def correction_keys(mode):
    lo, hi = BOUNDS[mode]
    return {"vllm_importance_sampling_correction": True, "vllm_importance_sampling_mode": mode,
            "vllm_importance_sampling_clip_min": lo, "vllm_importance_sampling_clip_max": hi}


@pytest.fixture(scope="module")
def trainers(tiny_qwen2, tmp_path_factory):
    return grpo_trainers(tiny_qwen2, tmp_path_factory)


def sampled_batch(tr, monkeypatch):
    """A batch TRL sampled, scored as TRL does under vLLM: ``sampling_per_token_logps`` are the
    trainer's log-probs of each completion plus a N(0, GAP) gap per token, and TRL's own code turns
    them into ``importance_sampling_ratio``."""
    generate = tr._generate

    def with_sampler_logprobs(prompts):
        monkeypatch.setattr(tr, "use_vllm", False)  # TRL's HF generation, as it is
        out = list(generate(prompts))
        monkeypatch.setattr(tr, "use_vllm", True)  # and the rest of the step as under vLLM
        g = torch.Generator().manual_seed(5)
        sampler = []
        for p, c in zip(out[0], out[1]):
            ids = torch.tensor([list(p) + list(c)])
            with torch.no_grad():
                lp, _ = completion_logprobs(tr.model, ids, torch.ones_like(ids), len(p), torch.ones(1, len(c)),
                                            temperature=0.9)
            sampler.append((lp[0] + GAP * torch.randn(len(c), generator=g)).tolist())
        out[4] = sampler
        return tuple(out)

    monkeypatch.setattr(tr, "_generate", with_sampler_logprobs)
    monkeypatch.setattr(tr, "use_vllm", True)
    return _batch(tr)


@pytest.mark.parametrize("mode", list(BOUNDS))
def test_correction_equals_trl_on_a_real_batch(mode, trainers, monkeypatch):
    """TRL's weights from its own code equal ``sampler_correction``'s; then the loss with them and
    every weight's gradient (grpo, beta 0.04: the KL term stays unweighted, as in TRL)."""
    tr = trainers("grpo", 0.04, **correction_keys(mode))
    inputs = sampled_batch(tr, monkeypatch)
    cm = inputs["completion_mask"]
    sampled = inputs["sampling_per_token_logps"]
    theirs = inputs["importance_sampling_ratio"]
    lo, hi = BOUNDS[mode]
    ours, metrics = sampler_correction(inputs["old_per_token_logps"], sampled, cm, mode, lo, hi)
    metrics = loss_metrics(metrics)
    assert ours.shape == theirs.shape == ((cm.shape[0], 1) if mode.startswith("sequence") else cm.shape)
    torch.testing.assert_close(ours, theirs, atol=1e-6, rtol=1e-6)
    # Not a trivial batch: some weights inside (not 1), some at a bound or 0.
    where = (cm.sum(-1, keepdim=True) > 0).float() if mode.startswith("sequence") else cm.float()
    inside = ((ours > lo) & (ours < hi)).float() * where
    assert inside.sum() > 0 and (inside * (ours - 1).abs()).max() > 0.01
    share = float(next(v for k, v in metrics.items() if k.endswith("_share")))
    assert 0 < share < 1

    def ours_loss(lp, old, adv, cm, ref):
        return policy_loss(lp, old, adv, cm, loss_type="grpo", epsilon=0.2, epsilon_high=0.28, ref_logprobs=ref,
                           beta=0.04, sampled_logprobs=sampled, **correction_keys(mode))[0]
    assert_loss_equals_trl_on_real_batch(tr, inputs, ours_loss)


CASES = [(loss_type, mode) for loss_type in ("grpo", "cispo", "vespo") for mode in BOUNDS
         if not (loss_type == "vespo" and mode.startswith("sequence"))]  # TRL's rule for vespo


@pytest.mark.parametrize("loss_type,mode", CASES)
def test_correction_loss_equals_trl_on_random_tensors(loss_type, mode, trainers, monkeypatch):
    """float64, beta 0.04: the weights (equal to TRL's, above) in TRL's ``_compute_loss``; vespo folds
    them into its sequence weight."""
    extra = {"epsilon_high": 1.2} if loss_type == "cispo" else {}
    tr = trainers(loss_type, 0.04, **extra, **correction_keys(mode))
    monkeypatch.setattr(tr, "use_vllm", True)
    logps, old, ref, adv, mask = random_batch()
    g = torch.Generator().manual_seed(9)
    sampled = old + GAP * torch.randn(old.shape, generator=g, dtype=torch.float64)
    lo, hi = BOUNDS[mode]
    weights, _ = sampler_correction(old, sampled, mask, mode, lo, hi)
    theirs, g_theirs = trl_loss_and_grad(tr, monkeypatch, logps, old, ref, adv, mask, 0.04,
                                         importance_sampling_ratio=weights, sampling_per_token_logps=sampled)
    kw = {"epsilon": 0.2, "epsilon_high": 0.28, **extra, **correction_keys(mode)}
    loss, _ = policy_loss(logps, old, adv, mask, loss_type=loss_type, ref_logprobs=ref, beta=0.04,
                          max_completion_length=MAX_COMPLETION, sampled_logprobs=sampled, **kw)
    (g_ours,) = torch.autograd.grad(loss, logps)
    assert abs(float(loss) - float(theirs)) < 1e-6
    torch.testing.assert_close(g_ours, g_theirs, atol=1e-6, rtol=0)
    assert not torch.allclose(1.01 * g_ours, g_theirs, atol=1e-6, rtol=0)  # a 1% error fails
    plain, _ = policy_loss(logps, old, adv, mask, loss_type=loss_type, ref_logprobs=ref, beta=0.04,
                           max_completion_length=MAX_COMPLETION, **{**kw, "vllm_importance_sampling_correction": False})
    assert abs(float(plain) - float(loss)) > 1e-4  # the correction changes this loss


def test_correction_changes_nothing_when_sampler_and_trainer_agree():
    logps, old, ref, adv, mask = random_batch()
    for mode in BOUNDS:
        weights, metrics = sampler_correction(old, old.clone(), mask, mode, *BOUNDS[mode])
        metrics = loss_metrics(metrics)
        assert bool((weights == 1).all())
        assert float(next(v for k, v in metrics.items() if k.endswith("_share"))) == 0
        for loss_type in ("grpo", "dapo", "cispo", "vespo"):
            if loss_type == "vespo" and mode.startswith("sequence"):
                continue
            kw = {"loss_type": loss_type, "epsilon_high": 1.2, "ref_logprobs": ref, "beta": 0.04}
            with_it, _ = policy_loss(logps, old, adv, mask, sampled_logprobs=old.clone(), **correction_keys(mode), **kw)
            without, _ = policy_loss(logps, old, adv, mask, **kw)
            g1, = torch.autograd.grad(with_it, logps)
            g2, = torch.autograd.grad(without, logps)
            assert float(with_it) == float(without) and torch.equal(g1, g2)


def test_correction_clips_and_masks_the_rows_a_hand_computation_picks():
    """Two completions of 3 tokens (the second has 2): gaps old - sampled chosen by hand."""
    old = torch.zeros(2, 3, dtype=torch.float64)
    gap = torch.tensor([[0.5, -0.1, -0.4], [0.1, 0.2, 9.0]], dtype=torch.float64)  # the 9 is padding
    sampled = old - gap
    mask = torch.tensor([[1, 1, 1], [1, 1, 0]])
    e = math.exp
    # token level, bounds [0.8, 1.25]: e^0.5 = 1.65 > 1.25, e^-0.4 = 0.67 < 0.8; e^-0.1, e^0.1, e^0.2 inside.
    w, m = sampler_correction(old, sampled, mask, "token_truncate", 0.8, 1.25)
    want = torch.tensor([[1.25, e(-0.1), 0.8], [e(0.1), e(0.2), 1.0]], dtype=torch.float64)
    torch.testing.assert_close(w, want, atol=1e-12, rtol=0)
    assert float(loss_metrics(m)["sampling/importance_sampling_clipped_share"]) == pytest.approx(2 / 5)
    w, m = sampler_correction(old, sampled, mask, "token_mask", 0.8, 1.25)
    want[0, 0] = want[0, 2] = 0.0
    torch.testing.assert_close(w, want, atol=1e-12, rtol=0)
    assert float(loss_metrics(m)["sampling/importance_sampling_masked_share"]) == pytest.approx(2 / 5)
    # sequence level: sums 0.0 and 0.3 (padding ignored): e^0 = 1, e^0.3 = 1.35.
    w, m = sampler_correction(old, sampled, mask, "sequence_truncate", 0.8, 1.25)
    torch.testing.assert_close(w, torch.tensor([[1.0], [1.25]], dtype=torch.float64), atol=1e-12, rtol=0)
    assert float(loss_metrics(m)["sampling/importance_sampling_clipped_share"]) == pytest.approx(1 / 2)
    w, _ = sampler_correction(old, sampled, mask, "sequence_mask", 0.8, 1.25)
    torch.testing.assert_close(w, torch.tensor([[1.0], [0.0]], dtype=torch.float64), atol=1e-12, rtol=0)
    w, _ = sampler_correction(old, sampled, mask, "sequence_mask", None, 1.5)  # no lower bound, a higher cap
    torch.testing.assert_close(w, torch.tensor([[1.0], [e(0.3)]], dtype=torch.float64), atol=1e-12, rtol=0)


# ---- the off-policy sequence mask and the entropy quantile --------------------------------------

@pytest.mark.parametrize("beta", [0.0, 0.04])
def test_off_policy_mask_equals_trl_on_random_tensors(beta, trainers, monkeypatch):
    tr = trainers("grpo", beta, off_policy_mask_threshold=0.1)
    logps, old, ref, adv, mask = random_batch()
    g = torch.Generator().manual_seed(9)
    sampled = old + GAP * torch.randn(old.shape, generator=g, dtype=torch.float64)
    keep = off_policy_mask(adv.unsqueeze(1), logps, sampled, mask.double(), 0.1)
    assert 0 < float(keep.sum()) < keep.numel() and bool((keep[adv.unsqueeze(1) >= 0] == 1).all())
    theirs, g_theirs = trl_loss_and_grad(tr, monkeypatch, logps, old, ref, adv, mask, beta,
                                         sampling_per_token_logps=sampled)
    loss, metrics = policy_loss(logps, old, adv, mask, epsilon=0.2, epsilon_high=0.28, ref_logprobs=ref if beta else None,
                                beta=beta, sampled_logprobs=sampled, off_policy_mask_threshold=0.1)
    (g_ours,) = torch.autograd.grad(loss, logps)
    assert abs(float(loss) - float(theirs)) < 1e-6
    torch.testing.assert_close(g_ours, g_theirs, atol=1e-6, rtol=0)
    assert not torch.allclose(1.01 * g_ours, g_theirs, atol=1e-6, rtol=0)
    assert float(loss_metrics(metrics)["off_policy_masked_share"]) == pytest.approx(1 - float(keep.mean()))
    # By hand: the dropped rows are the negative-advantage ones whose mean (sampled - logps) > 0.1.
    drift = ((sampled - logps.detach()) * mask).sum(-1) / mask.sum(-1)
    assert (keep.squeeze(1) == 0).tolist() == ((adv < 0) & (drift > 0.1)).tolist()


@pytest.mark.parametrize("beta", [0.0, 0.04])
def test_top_entropy_quantile_equals_trl_on_random_tensors(beta, trainers, monkeypatch):
    tr = trainers("dapo", beta, top_entropy_quantile=0.3)
    logps, old, ref, adv, mask = random_batch()
    entropy = torch.rand(old.shape, generator=torch.Generator().manual_seed(4), dtype=torch.float64) * 3
    theirs, g_theirs = trl_loss_and_grad(tr, monkeypatch, logps, old, ref, adv, mask, beta, entropies=entropy)
    loss, metrics = policy_loss(logps, old, adv, mask, loss_type="dapo", epsilon=0.2, epsilon_high=0.28,
                                ref_logprobs=ref if beta else None, beta=beta, entropy=entropy,
                                top_entropy_quantile=0.3)
    (g_ours,) = torch.autograd.grad(loss, logps)
    assert abs(float(loss) - float(theirs)) < 1e-6
    torch.testing.assert_close(g_ours, g_theirs, atol=1e-6, rtol=0)
    assert not torch.allclose(1.01 * g_ours, g_theirs, atol=1e-6, rtol=0)
    # By hand: the kept tokens are the 30% of the 33 completion tokens with the highest entropy.
    values = sorted(entropy[mask.bool()].tolist(), reverse=True)
    keep = high_entropy_mask(entropy, mask.double(), 0.3)
    assert int(keep.sum()) == 10 and float(loss_metrics(metrics)["entropy_kept_share"]) == pytest.approx(10 / 33)
    assert sorted(entropy[keep.bool()].tolist(), reverse=True) == values[:10]
    if beta == 0:  # only the kept tokens carry a gradient
        assert bool((g_ours[~keep.bool()] == 0).all()) and bool((g_ours[keep.bool()] != 0).any())


def test_masks_equal_trl_on_a_real_batch(trainers, monkeypatch):
    """Both masks together on a sampled float32 batch (the sampler's log-probs from the gap above,
    the entropies from each side's own forward pass)."""
    keys = {"off_policy_mask_threshold": 0.05, "top_entropy_quantile": 0.5}
    tr = trainers("grpo", 0.04, **keys)
    inputs = sampled_batch(tr, monkeypatch)
    monkeypatch.setattr(tr, "use_vllm", False)  # no correction here: only the masks
    sampled = inputs["sampling_per_token_logps"]

    def ours(lp, old, adv, cm, ref, ent):
        return policy_loss(lp, old, adv, cm, epsilon=0.2, epsilon_high=0.28, ref_logprobs=ref, beta=0.04,
                           sampled_logprobs=sampled, entropy=ent, **keys)[0]
    assert_loss_equals_trl_on_real_batch(tr, inputs, ours, with_entropy=True)


def test_the_correction_and_mask_keys_are_refused_out_of_range_or_alone():
    ok = TrainConfig(vllm_importance_sampling_correction=True, vllm_importance_sampling_mode="token_mask",
                     vllm_importance_sampling_clip_min=0.5, vllm_importance_sampling_clip_max=None)
    assert ok.vllm_importance_sampling_mode == "token_mask"
    assert TrainConfig(algorithm="ppo", vllm_importance_sampling_correction=True).vllm_importance_sampling_correction
    bad = [
        (dict(vllm_importance_sampling_mode="token_mask"), "'vllm_importance_sampling_mode' has no effect without"),
        (dict(vllm_importance_sampling_clip_max=2.0), "'vllm_importance_sampling_clip_max' has no effect without"),
        (dict(vllm_importance_sampling_correction=True, vllm_importance_sampling_mode="token"),
         "'vllm_importance_sampling_mode' must be"),
        (dict(vllm_importance_sampling_correction=True, vllm_importance_sampling_clip_max=None,
              vllm_importance_sampling_mode="sequence_truncate"), "must be set with a \\*_truncate mode"),
        (dict(vllm_importance_sampling_correction=True, vllm_importance_sampling_clip_min=3.0),
         "'vllm_importance_sampling_clip_min' must be below"),
        (dict(vllm_importance_sampling_correction=True, vllm_importance_sampling_clip_max=0.0),
         "'vllm_importance_sampling_clip_max' must be a ratio > 0"),
        (dict(vllm_importance_sampling_correction=True, loss_type="vespo"),
         "'vllm_importance_sampling_mode' must be token_truncate or token_mask with loss_type=vespo"),
        (dict(off_policy_mask_threshold=-0.1), "'off_policy_mask_threshold' must be a KL >= 0"),
        (dict(top_entropy_quantile=1.2), "'top_entropy_quantile' must be in \\[0, 1\\]"),
    ]
    for kw, message in bad:
        with pytest.raises(ConfigError, match=message) as e:
            TrainConfig(**kw)
        assert "\n" not in str(e.value)


def test_the_update_loop_corrects_with_the_samplers_logprobs(eos_rich_model, tmp_path):
    """Through a training step: the sampler's log-probs (r1zero's engine) reach the loss. The
    sampler runs the same float weights here, so every weight is about 1: nothing is clipped, and
    the gradient is the plain one; with bounds [2, 3] every completion is masked, and no gradient is left."""
    from test_microbatch import assert_same, run_one_update

    plain, *_ = run_one_update(eos_rich_model, tmp_path / "plain")
    grads, metrics, *_ = run_one_update(eos_rich_model, tmp_path / "on", vllm_importance_sampling_correction=True)
    assert metrics["sampling/importance_sampling_masked_share"] == 0.0
    assert metrics["sampling/importance_sampling_ratio/mean"] == pytest.approx(1.0, abs=1e-4)
    assert_same(grads, plain, "correction with equal log-probs")
    grads, metrics, *_ = run_one_update(eos_rich_model, tmp_path / "all", vllm_importance_sampling_correction=True,
                                        vllm_importance_sampling_clip_min=2.0)
    assert metrics["sampling/importance_sampling_masked_share"] == 1.0
    assert max(float(g.abs().max()) for g in grads.values()) == 0.0
