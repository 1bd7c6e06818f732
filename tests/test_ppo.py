"""PPO-family maths against hand computations: GAE, REINFORCE++ returns, RLOO, the clipped value
loss, the adaptive KL controller, per-token rewards, and the config refusals."""
import pytest
import torch

from r1zero.algorithms.reinforce_pp import reinforce_pp_advantages
from r1zero.algorithms.reward_kl import KLController, token_rewards
from r1zero.algorithms.rloo import rloo_advantages
from r1zero.config import ConfigError, TrainConfig
from r1zero.algorithms.ppo import explained_variance, gae, value_loss

D = torch.float64


def test_gae_by_hand_with_padding():
    # Row 0: 3 tokens, values .5 .2 .1, reward 1 on the last; gamma .9, lam .8.
    #   t2: delta = 1 - .1 = .9                      A2 = .9
    #   t1: delta = .9*.1 - .2 = -.11                A1 = -.11 + .72*.9 = .538
    #   t0: delta = .9*.2 - .5 = -.32                A0 = -.32 + .72*.538 = .06736
    # Row 1: 2 tokens then padding (whose value 9 must not leak), reward 2 on token 1.
    #   t1: A1 = 2 - .4 = 1.6;  t0: delta = .9*.4 - .3 = .06, A0 = .06 + .72*1.6 = 1.212
    r = torch.tensor([[0, 0, 1.0], [0, 2.0, 0]], dtype=D)
    v = torch.tensor([[.5, .2, .1], [.3, .4, 9.0]], dtype=D)
    m = torch.tensor([[1, 1, 1], [1, 1, 0]], dtype=D)
    adv, ret = gae(r, v, m, gamma=0.9, lam=0.8)
    raw = torch.tensor([[.06736, .538, .9], [1.212, 1.6, 0]], dtype=D)
    torch.testing.assert_close((ret - v) * m, raw, atol=1e-12, rtol=0)
    sel = raw[m.bool()]
    torch.testing.assert_close(adv[m.bool()], (sel - sel.mean()) / torch.sqrt(sel.var() + 1e-8), atol=1e-12, rtol=0)
    assert adv[1, 2] == 0
    # gamma = lam = 1 (TinyZero): the return of every token is the outcome reward.
    _, ret1 = gae(r, v, m, 1.0, 1.0)
    torch.testing.assert_close(ret1 * m, torch.tensor([[1, 1, 1], [2, 2, 0]], dtype=D) * m)


def test_reinforce_pp_and_token_rewards():
    mask = torch.tensor([[1, 1, 1], [1, 0, 0]])
    old = torch.tensor([[-1.0, -2.0, -0.5], [-1.0, -3.0, -3.0]], dtype=D)
    ref = torch.tensor([[-1.5, -2.0, -0.25], [-0.5, 0.0, 0.0]], dtype=D)
    tok, kl = token_rewards(torch.tensor([1.0, 0.5]), mask, old, ref, kl_coef=0.1)
    # k1 KL = old - ref on completion tokens; reward on the last one.
    torch.testing.assert_close(kl, torch.tensor([[.5, 0, -.25], [-.5, 0, 0]], dtype=D).float())
    torch.testing.assert_close(tok, torch.tensor([[-.05, 0, 1.025], [.55, 0, 0]]))
    adv, ret = reinforce_pp_advantages(tok.double(), mask, gamma=0.5)
    # returns: row 0 t2 = 1.025, t1 = 0 + .5*1.025 = .5125, t0 = -.05 + .5*.5125 = .20625; row 1: .55
    torch.testing.assert_close(ret * mask, torch.tensor([[.20625, .5125, 1.025], [.55, 0, 0]], dtype=D), atol=1e-7, rtol=0)
    sel = torch.tensor([.20625, .5125, 1.025, .55], dtype=D)
    torch.testing.assert_close(adv[mask.bool()], (sel - sel.mean()) / torch.sqrt(sel.var() + 1e-8), atol=1e-6, rtol=0)


def test_rloo_by_hand():
    # Group [1, 0, 0.5]: baselines .25, .75, .5.
    torch.testing.assert_close(rloo_advantages(torch.tensor([1.0, 0.0, 0.5, 2, 2, 2]), 3),
                               torch.tensor([.75, -.75, 0, 0, 0, 0]))


def test_value_loss_clips_and_counts():
    v = torch.tensor([[1.0, 0.0, 3.0]], requires_grad=True)
    old = torch.tensor([[0.0, 0.0, 0.0]])
    ret = torch.tensor([[2.0, 1.0, 0.0]])
    m = torch.tensor([[1.0, 1.0, 0.0]])
    loss, frac = value_loss(v, old, ret, m, cliprange_value=0.5)
    # token 0: unclipped (1-2)^2 = 1, clipped (.5-2)^2 = 2.25 -> max 2.25 (clip bites); token 1: 1 and 1.
    assert loss.item() == pytest.approx(0.5 * (2.25 + 1) / 2)
    assert frac == pytest.approx(0.5)
    loss.backward()
    assert v.grad.tolist() == [[0.0, -0.5, 0.0]]  # the clipped token passes no gradient to V
    assert explained_variance(ret, ret, m) == 1.0


def test_adaptive_kl_controller():
    c = KLController("adaptive", 0.1, target=0.05, horizon=100)
    c.update(0.5, 10)  # error capped at +20%: x (1 + .2 * 10/100)
    assert c.value == pytest.approx(0.1 * 1.02)
    c.update(0.04, 10)  # error -.2: x (1 - .2 * .1)
    assert c.value == pytest.approx(0.1 * 1.02 * 0.98)
    f = KLController("fixed", 0.1)
    f.update(5.0, 100)
    assert f.value == 0.1


@pytest.mark.parametrize("kw,key", [
    (dict(algorithm="grpo", kl_coef=0.1), "kl_coef"),
    (dict(algorithm="grpo", entropy_coeff=-0.1), "entropy_coeff"),
    (dict(algorithm="rloo", critic_model_name_or_path="x"), "critic_model_name_or_path"),
    (dict(algorithm="rloo", num_generations=1, scale_rewards="none"), "num_generations"),
    (dict(algorithm="ppo", gamma=1.5), "gamma"),
    (dict(algorithm="ppo", cliprange_value=0.0), "cliprange_value"),
    (dict(algorithm="ppo", kl_ctl="pid"), "kl_ctl"),
])
def test_bad_algorithm_keys_are_refused(kw, key):
    with pytest.raises(ConfigError, match=key):
        TrainConfig(**kw)
    assert TrainConfig(algorithm="ppo", num_generations=1).algorithm == "ppo"  # no group std needed
