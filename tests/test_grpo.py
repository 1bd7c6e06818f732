"""Tests for r1zero.algorithms.grpo against hand computations written in plain Python (math, loops)."""
from __future__ import annotations

import math

import pytest
import torch

from r1zero.algorithms import group_advantages, group_stats, kl_divergence, policy_loss
from r1zero.observe.metrics import loss_metrics

TOL = 1e-9
F64 = torch.float64


# ---------------------------------------------------------------- plain-Python references


def py_mean(xs):
    return sum(xs) / len(xs)


def py_std(xs):
    """Sample standard deviation with Bessel's correction."""
    m = py_mean(xs)
    return math.sqrt(sum((x - m) ** 2 for x in xs) / (len(xs) - 1))


def py_kl(logp, ref, estimator):
    if estimator == "k1":
        return logp - ref
    if estimator == "k2":
        return 0.5 * (logp - ref) ** 2
    x = ref - logp
    return math.exp(x) - x - 1


def py_kl_grad(logp, ref, estimator):
    """d KL / d logp."""
    if estimator == "k1":
        return 1.0
    if estimator == "k2":
        return logp - ref
    return 1.0 - math.exp(ref - logp)


def py_token_loss(lp, old, a, eps_lo, eps_hi):
    r = math.exp(lp - old)
    c = min(max(r, 1 - eps_lo), 1 + eps_hi)
    return -min(r * a, c * a)


def py_token_grad(lp, old, a, eps_lo, eps_hi):
    """d/d lp of -min(r*A, clip(r)*A); 0 where the clipped branch is the smaller one."""
    r = math.exp(lp - old)
    c = min(max(r, 1 - eps_lo), 1 + eps_hi)
    return -r * a if r * a <= c * a else 0.0


def py_policy_loss(lp, old, adv, mask, loss_type, eps_lo=0.2, eps_hi=None, ref=None, beta=0.0,
                   est="k3", max_len=None, total_tokens=None):
    eps_hi = eps_lo if eps_hi is None else eps_hi
    B, T = len(lp), len(lp[0])
    tok = [[0.0] * T for _ in range(B)]
    for i in range(B):
        for t in range(T):
            v = py_token_loss(lp[i][t], old[i][t], adv[i], eps_lo, eps_hi)
            if beta > 0:
                v += beta * py_kl(lp[i][t], ref[i][t], est)
            tok[i][t] = v * mask[i][t]
    seq_sums = [sum(row) for row in tok]
    lens = [sum(row) for row in mask]
    total = sum(seq_sums)
    if loss_type == "grpo":
        return sum(s / max(n, 1) for s, n in zip(seq_sums, lens)) / B
    if loss_type == "bnpo":
        return total / max(sum(lens), 1)
    if loss_type == "dr_grpo":
        return total / (B * (T if max_len is None else max_len))
    if loss_type == "dapo":
        return total / (sum(lens) if total_tokens is None else total_tokens)
    raise AssertionError(loss_type)


def py_policy_grad(lp, old, adv, mask, loss_type, eps_lo=0.2, eps_hi=None, ref=None, beta=0.0,
                   est="k3", max_len=None, total_tokens=None):
    eps_hi = eps_lo if eps_hi is None else eps_hi
    B, T = len(lp), len(lp[0])
    lens = [sum(row) for row in mask]
    grads = [[0.0] * T for _ in range(B)]
    for i in range(B):
        if loss_type == "grpo":
            norm = B * max(lens[i], 1)
        elif loss_type == "bnpo":
            norm = max(sum(lens), 1)
        elif loss_type == "dr_grpo":
            norm = B * (T if max_len is None else max_len)
        else:
            norm = sum(lens) if total_tokens is None else total_tokens
        for t in range(T):
            g = py_token_grad(lp[i][t], old[i][t], adv[i], eps_lo, eps_hi)
            if beta > 0:
                g += beta * py_kl_grad(lp[i][t], ref[i][t], est)
            grads[i][t] = g * mask[i][t] / norm
    return grads


# ---------------------------------------------------------------- fixture batch
# B=3 sequences, T=4, lengths 4, 2, 3 (unequal). eps=0.2, eps_high=0.28.
# log-ratios chosen so that ratios leave the clip range on both sides:
#   seq0 (A=+1.5): 0.4 -> r=1.49 > 1.28 (high clipped); -0.5 -> r=0.61 < 0.8 but A>0 (not clipped)
#   seq1 (A=-0.7): -0.5 -> r=0.61 < 0.8 and A<0 (low clipped); 0.3 -> r=1.35 > 1.28 but A<0 (not)
#   seq2 (A=+0.3): 0.25 -> r=1.284 > 1.28 (high clipped); -0.25 -> r=0.78 < 0.8, A>0 (not)
# padding positions hold large log-ratios that must be ignored.
EPS, EPS_HIGH = 0.2, 0.28
OLD = [[-1.0, -2.0, -0.5, -1.2], [-0.3, -1.1, -2.2, -0.9], [-1.7, -0.6, -1.4, -0.8]]
LOG_RATIO = [[0.0, 0.4, -0.5, 0.1], [-0.5, 0.3, 5.0, -4.0], [0.25, -0.25, 0.05, 3.0]]
LP = [[o + d for o, d in zip(ro, rd)] for ro, rd in zip(OLD, LOG_RATIO)]
REF_DELTA = [[0.3, -0.2, 0.5, -0.4], [0.1, -0.6, 0.7, 0.2], [-0.35, 0.45, 0.15, -0.25]]
REF = [[lp - d for lp, d in zip(rl, rd)] for rl, rd in zip(LP, REF_DELTA)]
ADV = [1.5, -0.7, 0.3]
MASK = [[1, 1, 1, 1], [1, 1, 0, 0], [1, 1, 1, 0]]
N_TOKENS = 9


def t64(x, grad=False):
    return torch.tensor(x, dtype=F64, requires_grad=grad)


def run_loss(loss_type, beta=0.0, est="k3", with_ref=None, mask=None, **kw):
    lp = t64(LP, grad=True)
    ref = t64(REF) if (with_ref if with_ref is not None else beta > 0) else None
    loss, metrics = policy_loss(
        lp, t64(OLD), t64(ADV), t64(MASK) if mask is None else mask, loss_type=loss_type,
        epsilon=EPS, epsilon_high=EPS_HIGH, ref_logprobs=ref, beta=beta, kl_estimator=est, **kw,
    )
    return lp, loss, loss_metrics(metrics)


# ---------------------------------------------------------------- group_advantages

REWARDS = [1.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 0.0]


def test_group_advantages_group_scale():
    adv = group_advantages(torch.tensor(REWARDS, dtype=F64), 4, scale="group")
    expected = []
    for g in range(2):
        grp = REWARDS[4 * g: 4 * g + 4]
        m, s = py_mean(grp), py_std(grp)
        expected += [(r - m) / (s + 1e-4) for r in grp]
    assert adv.dtype == F64
    assert expected[4:] == [0.0] * 4  # zero-std group -> zero advantages
    assert adv.tolist() == pytest.approx(expected, abs=TOL)
    assert adv[4:].tolist() == [0.0] * 4
    # by hand: std of [1,0,0,1] = sqrt(1/3)
    assert adv[0].item() == pytest.approx(0.5 / (math.sqrt(1 / 3) + 1e-4), abs=TOL)


def test_group_advantages_batch_scale():
    adv = group_advantages(torch.tensor(REWARDS, dtype=F64), 4, scale="batch")
    s = py_std(REWARDS)
    assert s == pytest.approx(math.sqrt(1.5 / 7), abs=1e-15)
    expected = []
    for g in range(2):
        grp = REWARDS[4 * g: 4 * g + 4]
        m = py_mean(grp)
        expected += [(r - m) / (s + 1e-4) for r in grp]
    assert adv.tolist() == pytest.approx(expected, abs=TOL)


def test_group_advantages_none_scale_and_bool_aliases():
    r = torch.tensor([3.0, 1.0, 2.0, 5.0, 5.0, 8.0], dtype=F64)
    adv = group_advantages(r, 3, scale="none")
    assert adv.tolist() == pytest.approx([1.0, -1.0, 0.0, -1.0, -1.0, 2.0], abs=TOL)
    assert torch.equal(group_advantages(r, 3, scale=False), adv)
    assert torch.equal(group_advantages(r, 3, scale=True), group_advantages(r, 3, scale="group"))


def test_group_advantages_dtypes():
    a = group_advantages(REWARDS, 4)  # python list
    assert a.dtype == torch.float32
    assert a.tolist() == pytest.approx([0.5 / (math.sqrt(1 / 3) + 1e-4) * s for s in (1, -1, -1, 1)] + [0.0] * 4,
                                       abs=1e-6)
    assert group_advantages(torch.tensor([1, 0, 1, 1]), 2).dtype == torch.float32  # int tensor
    assert group_advantages(torch.tensor(REWARDS), 4).dtype == torch.float32
    assert group_advantages(torch.tensor(REWARDS, dtype=F64), 4).dtype == F64
    assert group_advantages([1, 0], 2, scale="none").tolist() == [0.5, -0.5]


def test_group_advantages_validation():
    with pytest.raises(ValueError, match="multiple of group_size"):
        group_advantages([1.0] * 7, 4)
    with pytest.raises(ValueError, match="group_size >= 2"):
        group_advantages([1.0, 0.0], 1, scale="group")
    with pytest.raises(ValueError, match="group_size >= 2"):
        group_advantages([1.0, 0.0], 1, scale=True)
    with pytest.raises(ValueError, match="scale"):
        group_advantages([1.0, 0.0], 2, scale="token")
    with pytest.raises(ValueError):
        group_advantages(torch.zeros(2, 2), 2)
    with pytest.raises(ValueError):
        group_advantages([1.0, 0.0], 0)
    # group_size 1 without scaling is allowed: every advantage is 0
    assert group_advantages([1.0, 0.0], 1, scale="none").tolist() == [0.0, 0.0]


def test_group_stats():
    stats = group_stats(torch.tensor([1.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 0.0, 1.0, 1.0, 1.0, 1.0]), 4)
    assert stats.frac_reward_zero_std == pytest.approx(2 / 3, abs=TOL)
    assert stats.reward_std == pytest.approx(math.sqrt(1 / 3) / 3, abs=1e-7)
    assert stats.reward_mean == pytest.approx(6 / 12, abs=TOL)
    assert all(isinstance(v, float) for v in stats)
    with pytest.raises(ValueError):
        group_stats([1.0, 2.0, 3.0], 2)


# ---------------------------------------------------------------- kl_divergence


@pytest.mark.parametrize("est", ["k1", "k2", "k3"])
def test_kl_estimators(est):
    logp = [-1.0, -0.2, -3.0, -0.7]
    ref = [-1.5, -0.9, -2.0, -0.7]
    out = kl_divergence(t64(logp), t64(ref), est)
    expected = [py_kl(a, b, est) for a, b in zip(logp, ref)]
    assert out.tolist() == pytest.approx(expected, abs=TOL)
    assert out[3].item() == 0.0  # identical policies


def test_kl_known_numbers():
    lp, ref = t64([-1.0]), t64([-1.5])  # logp - ref = 0.5
    assert kl_divergence(lp, ref, "k1").item() == pytest.approx(0.5, abs=TOL)
    assert kl_divergence(lp, ref, "k2").item() == pytest.approx(0.125, abs=TOL)
    assert kl_divergence(lp, ref, "k3").item() == pytest.approx(math.exp(-0.5) - 0.5, abs=TOL)
    assert kl_divergence(t64([-2.0]), t64([-1.0]), "k3").item() == pytest.approx(math.e - 2, abs=TOL)
    assert kl_divergence(lp, ref).item() == kl_divergence(lp, ref, "k3").item()  # default
    with pytest.raises(ValueError, match="estimator"):
        kl_divergence(lp, ref, "k4")


# ---------------------------------------------------------------- policy_loss values

LOSS_TYPES = ["grpo", "bnpo", "dr_grpo", "dapo"]
KL_CASES = [(0.0, "k3"), (0.04, "k1"), (0.04, "k2"), (0.1, "k3")]


@pytest.mark.parametrize("loss_type", LOSS_TYPES)
@pytest.mark.parametrize("beta,est", KL_CASES)
def test_policy_loss_values_and_grads(loss_type, beta, est):
    lp, loss, metrics = run_loss(loss_type, beta=beta, est=est)
    expected = py_policy_loss(LP, OLD, ADV, MASK, loss_type, EPS, EPS_HIGH, REF, beta, est)
    assert loss.item() == pytest.approx(expected, abs=TOL)
    loss.backward()
    g = py_policy_grad(LP, OLD, ADV, MASK, loss_type, EPS, EPS_HIGH, REF, beta, est)
    assert lp.grad.tolist() == [pytest.approx(row, abs=TOL) for row in g]
    assert lp.grad[1, 2:].tolist() == [0.0, 0.0] and lp.grad[2, 3].item() == 0.0  # padding


def test_policy_loss_reductions_differ_by_hand():
    """Spot-check the normalisers against each other with the same per-token sum."""
    total = py_policy_loss(LP, OLD, ADV, MASK, "dr_grpo", EPS, EPS_HIGH, max_len=1) * 3  # raw sum
    assert run_loss("bnpo")[1].item() == pytest.approx(total / N_TOKENS, abs=TOL)
    assert run_loss("dapo")[1].item() == pytest.approx(total / N_TOKENS, abs=TOL)
    assert run_loss("dr_grpo")[1].item() == pytest.approx(total / (3 * 4), abs=TOL)
    assert run_loss("dr_grpo", max_completion_length=8)[1].item() == pytest.approx(total / (3 * 8), abs=TOL)
    assert run_loss("dapo", total_tokens=20)[1].item() == pytest.approx(total / 20, abs=TOL)
    assert run_loss("grpo")[1].item() != pytest.approx(total / N_TOKENS, abs=1e-6)  # length weighting


def test_policy_loss_single_token_hand_values():
    """One token per case, the clipped surrogate by hand."""
    def one(log_ratio, a, eps=0.2, eps_high=None):
        loss, m = policy_loss(t64([[log_ratio]]), t64([[0.0]]), t64([a]), t64([[1.0]]),
                              epsilon=eps, epsilon_high=eps_high)
        return loss.item(), loss_metrics(m)

    assert one(0.4, 2.0)[0] == pytest.approx(-1.2 * 2.0, abs=TOL)  # high clipped: -(1+eps)*A
    assert one(0.4, 2.0, eps_high=0.5)[0] == pytest.approx(-math.exp(0.4) * 2.0, abs=TOL)  # inside 1.5
    assert one(-0.5, -1.0)[0] == pytest.approx(0.8 * 1.0, abs=TOL)  # low clipped: -(1-eps)*A
    assert one(-0.5, 1.0)[0] == pytest.approx(-math.exp(-0.5), abs=TOL)  # pessimistic: unclipped
    assert one(0.4, -1.0)[0] == pytest.approx(math.exp(0.4), abs=TOL)  # pessimistic: unclipped
    assert one(0.4, 2.0)[1]["clip_ratio/high_mean"] == 1.0
    assert one(-0.5, -1.0)[1]["clip_ratio/low_mean"] == 1.0
    assert one(0.4, -1.0)[1]["clip_ratio/region_mean"] == 0.0
    # zero advantage: nothing is clipped (the loss is 0 either way)
    assert one(-0.5, 0.0)[1]["clip_ratio/region_mean"] == 0.0
    assert one(0.4, 0.0)[1]["clip_ratio/region_mean"] == 0.0


def test_policy_loss_clip_metrics():
    _, _, m = run_loss("grpo", with_ref=True)
    assert m["clip_ratio/low_mean"] == pytest.approx(1 / N_TOKENS, abs=TOL)
    assert m["clip_ratio/high_mean"] == pytest.approx(2 / N_TOKENS, abs=TOL)
    assert m["clip_ratio/region_mean"] == pytest.approx(3 / N_TOKENS, abs=TOL)
    ratios = [math.exp(LOG_RATIO[i][t]) for i in range(3) for t in range(4) if MASK[i][t]]
    assert m["ratio_mean"] == pytest.approx(sum(ratios) / N_TOKENS, abs=TOL)
    kls = [py_kl(LP[i][t], REF[i][t], "k3") for i in range(3) for t in range(4) if MASK[i][t]]
    assert m["kl"] == pytest.approx(sum(kls) / N_TOKENS, abs=TOL)  # reported though beta == 0
    # 0-d tensors, detached: the update loop reads them after backward, so none makes the host wait.
    assert all(isinstance(v, torch.Tensor) and v.dim() == 0 and not v.requires_grad for v in m.values())
    # with epsilon_high == epsilon (upper bound 1.2) the same two tokens (1.49, 1.284) are high clipped
    m2 = loss_metrics(policy_loss(t64(LP), t64(OLD), t64(ADV), t64(MASK), epsilon=0.2)[1])
    assert m2["clip_ratio/high_mean"] == pytest.approx(2 / N_TOKENS, abs=TOL)
    # a wide upper clip removes the high clipping
    m3 = loss_metrics(policy_loss(t64(LP), t64(OLD), t64(ADV), t64(MASK), epsilon=0.2, epsilon_high=0.5)[1])
    assert m3["clip_ratio/high_mean"] == 0.0
    assert m3["clip_ratio/low_mean"] == pytest.approx(1 / N_TOKENS, abs=TOL)


@pytest.mark.parametrize("est", ["k1", "k2", "k3"])
def test_kl_metric_uses_estimator(est):
    _, _, m = run_loss("bnpo", beta=0.0, est=est, with_ref=True)
    kls = [py_kl(LP[i][t], REF[i][t], est) for i in range(3) for t in range(4) if MASK[i][t]]
    assert m["kl"] == pytest.approx(sum(kls) / N_TOKENS, abs=TOL)
    _, _, m_noref = run_loss("bnpo")
    assert "kl" not in m_noref


def test_beta_zero_with_ref_does_not_change_loss():
    assert run_loss("grpo", with_ref=True)[1].item() == run_loss("grpo")[1].item()


def test_bool_mask_matches_float_mask():
    a = run_loss("grpo", beta=0.1)[1].item()
    b = run_loss("grpo", beta=0.1, mask=torch.tensor(MASK, dtype=torch.bool))[1].item()
    assert a == pytest.approx(b, abs=TOL)


def test_policy_loss_validation():
    lp, old, adv, mask = t64(LP), t64(OLD), t64(ADV), t64(MASK)
    with pytest.raises(ValueError, match="ref_logprobs"):
        policy_loss(lp, old, adv, mask, beta=0.1)
    with pytest.raises(ValueError, match="loss_type"):
        policy_loss(lp, old, adv, mask, loss_type="ppo")
    with pytest.raises(ValueError, match="estimator"):
        policy_loss(lp, old, adv, mask, ref_logprobs=t64(REF), beta=0.1, kl_estimator="k9")


def test_gradient_flows_to_logprobs_only():
    lp, old, ref, adv = t64(LP, True), t64(OLD, True), t64(REF, True), t64(ADV, True)
    loss, _ = policy_loss(lp, old, adv, t64(MASK), ref_logprobs=ref, beta=0.1, epsilon_high=EPS_HIGH)
    loss.backward()
    assert lp.grad is not None and lp.grad.abs().sum() > 0
    assert old.grad is None and ref.grad is None and adv.grad is None


def test_gradient_hand_case_explicit():
    """grpo, one sequence of 2 tokens (second padded), k3 with beta: d/dlp by hand."""
    lp = t64([[-1.0, -2.0]], grad=True)
    old, ref = t64([[-1.1, -2.0]]), t64([[-0.8, 0.0]])
    loss, _ = policy_loss(lp, old, t64([2.0]), t64([[1.0, 0.0]]), ref_logprobs=ref, beta=0.5)
    loss.backward()
    r = math.exp(0.1)  # 1.105, inside [0.8, 1.2]
    # d/dlp [-r*A] = -r*A ; d/dlp k3 = 1 - exp(ref - lp)
    expected = -r * 2.0 + 0.5 * (1 - math.exp(-0.8 + 1.0))
    assert lp.grad.tolist() == [[pytest.approx(expected, abs=TOL), 0.0]]
    assert loss.item() == pytest.approx(-r * 2.0 + 0.5 * (math.exp(0.2) - 0.2 - 1), abs=TOL)


# ---------------------------------------------------------------- dapo gradient accumulation


def test_dapo_micro_batches_sum_to_full_batch():
    full_lp, full, _ = run_loss("dapo")
    full.backward()
    total = 0.0
    grads = []
    for sl in (slice(0, 2), slice(2, 3)):
        lp = t64([LP[i] for i in range(3)][sl], grad=True)
        mask = t64(MASK[sl])
        loss, _ = policy_loss(lp, t64(OLD[sl]), t64(ADV[sl]), mask, loss_type="dapo",
                              epsilon=EPS, epsilon_high=EPS_HIGH, total_tokens=N_TOKENS)
        loss.backward()
        total += loss.item()
        grads.append(lp.grad)
    assert total == pytest.approx(full.item(), abs=TOL)
    assert torch.cat(grads).tolist() == [pytest.approx(row, abs=TOL) for row in full_lp.grad.tolist()]
    # bnpo normalises per micro-batch, so it does NOT have this property here
    bnpo_parts = sum(
        policy_loss(t64(LP[sl]), t64(OLD[sl]), t64(ADV[sl]), t64(MASK[sl]), loss_type="bnpo",
                    epsilon=EPS, epsilon_high=EPS_HIGH)[0].item()
        for sl in (slice(0, 2), slice(2, 3))
    )
    assert bnpo_parts != pytest.approx(run_loss("bnpo")[1].item(), abs=1e-6)


def test_dapo_total_tokens_as_tensor():
    a = run_loss("dapo", total_tokens=torch.tensor(12))[1].item()
    b = run_loss("dapo", total_tokens=12)[1].item()
    assert a == pytest.approx(b, abs=TOL)
    assert a == pytest.approx(run_loss("dapo")[1].item() * N_TOKENS / 12, abs=TOL)


# ---------------------------------------------------------------- the zero-loss trap


@pytest.mark.parametrize("loss_type", LOSS_TYPES)
def test_loss_zero_at_start_but_gradient_nonzero(loss_type):
    rewards = [1.0, 0.0, 1.0, 1.0, 0.0, 1.0, 0.0, 0.0]
    adv = group_advantages(torch.tensor(rewards, dtype=F64), 4)
    B, T = 8, 5
    old = torch.linspace(-3.0, -0.1, B * T, dtype=F64).reshape(B, T)
    lp = old.clone().requires_grad_(True)
    mask = torch.ones(B, T, dtype=F64)
    loss, m = policy_loss(lp, old, adv, mask, loss_type=loss_type, ref_logprobs=old.clone(), beta=0.04)
    assert abs(loss.item()) < 1e-12
    m = loss_metrics(m)
    assert m["ratio_mean"] == pytest.approx(1.0, abs=TOL)
    assert m["kl"] == 0.0 and m["clip_ratio/region_mean"] == 0.0
    loss.backward()
    assert lp.grad.abs().max().item() > 1e-3
    if loss_type == "grpo":  # d/dlp = -A_i / (B * T) on every token
        for i in range(B):
            assert lp.grad[i].tolist() == pytest.approx([-adv[i].item() / (B * T)] * T, abs=TOL)


def test_grpo_zero_at_start_with_unequal_lengths_too():
    adv = group_advantages(torch.tensor([1.0, 0.0, 0.0], dtype=F64), 3)
    old = t64([[-1.0, -2.0, -0.5], [-0.3, -1.1, -2.2], [-1.7, -0.6, -1.4]])
    mask = t64([[1, 1, 1], [1, 0, 0], [1, 1, 0]])
    loss, _ = policy_loss(old.clone(), old, adv, mask, loss_type="grpo")
    assert abs(loss.item()) < 1e-12
    loss_bnpo, _ = policy_loss(old.clone(), old, adv, mask, loss_type="bnpo")
    assert abs(loss_bnpo.item()) > 1e-3  # token-level normalisation is not zero with unequal lengths
