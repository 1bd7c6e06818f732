"""use_adaptive_entropy (Skywork-OR1, TRL 1.16's keys and rules) against hand computations: the
coefficient's walk, the bonus it applies to a loss, and one training step through the update loop."""
from types import SimpleNamespace

import pytest
import torch

from test_microbatch import assert_same, run_one_update

from r1zero.algorithms import get_algorithm
from r1zero.algorithms.entropy import EntropyCoefficient
from r1zero.algorithms.losses import Normaliser
from r1zero.config import ConfigError, TrainConfig


def keys(**kw):
    base = dict(use_adaptive_entropy=True, entropy_coeff=0.2, entropy_target=1.0, entropy_coef_delta=0.1,
                entropy_coef_min=0.05, entropy_coef_max=0.25)
    return SimpleNamespace(**{**base, **kw})


def test_the_coefficient_walks_as_a_hand_computation_says():
    c = EntropyCoefficient(keys())
    assert c.enabled and c.applied() == 0.0  # nothing measured yet: no bonus
    # entropy, coefficient after the update, coefficient the next update applies
    walk = [(0.5, 0.25, 0.25),   # <= target: up by 0.1, capped at 0.25; applied (0.5 <= 1.0)
            (2.0, 0.15, 0.0),    # above: down; not applied while the entropy is high
            (1.0, 0.25, 0.25),   # equal counts as low: up, applied
            (3.0, 0.15, 0.0),
            (3.0, 0.05, 0.0),
            (3.0, 0.05, 0.0)]    # floored at entropy_coef_min
    for entropy, coef, applied in walk:
        # two micro-batches of 3 and 1 tokens whose token mean is ``entropy``, summed over "processes"
        c.observe(torch.tensor(entropy * 3), torch.tensor(3.0))
        c.observe(torch.tensor(entropy * 1), torch.tensor(1.0))
        c.step(lambda values: values)
        assert c.coef == pytest.approx(coef) and c.applied() == pytest.approx(applied)
    assert c.state() == {"entropy_coef": pytest.approx(0.05), "last_entropy": 3.0}
    again = EntropyCoefficient(keys())
    again.restore(c.state())
    assert again.coef == pytest.approx(0.05) and again.last_entropy == 3.0
    fixed = EntropyCoefficient(keys(use_adaptive_entropy=False))
    fixed.observe(torch.tensor(0.0), torch.tensor(1.0))
    fixed.step(lambda values: values)
    assert fixed.applied() == 0.2 and fixed.state() == {}


def test_the_bonus_in_the_loss_follows_the_coefficient():
    """GRPO's policy_loss: the first update carries no bonus; after a low-entropy update the
    coefficient (0.2 + 0.1, capped at 0.25) times the per-sequence mean entropy is subtracted."""
    cfg = TrainConfig(use_adaptive_entropy=True, entropy_coeff=0.2, entropy_target=1.0, entropy_coef_delta=0.1,
                      entropy_coef_min=0.05, entropy_coef_max=0.25)
    algo = get_algorithm("grpo")(cfg, SimpleNamespace(all_sum=lambda values: values))
    g = torch.Generator().manual_seed(0)
    lp = -torch.rand(2, 3, generator=g, dtype=torch.float64)
    ent = torch.tensor([[0.2, 0.4, 0.9], [0.6, 0.0, 0.0]], dtype=torch.float64)
    mask = torch.tensor([[1.0, 1.0, 1.0], [1.0, 0.0, 0.0]], dtype=torch.float64)
    adv = torch.tensor([1.0, -1.0], dtype=torch.float64)
    plain = TrainConfig()
    no_bonus, _ = get_algorithm("grpo")(plain, None).policy_loss(lp, ent, lp, None, adv, mask, Normaliser())
    first, _ = algo.policy_loss(lp, ent, lp, None, adv, mask, Normaliser())
    assert float(first) == float(no_bonus)
    algo.entropy_coef.step(algo.ctx.all_sum)  # the update's mean entropy: (0.2 + 0.4 + 0.9 + 0.6) / 4 = 0.525
    assert algo.entropy_coef.last_entropy == pytest.approx(0.525) and algo.entropy_coef.coef == pytest.approx(0.25)
    second, _ = algo.policy_loss(lp, ent, lp, None, adv, mask, Normaliser())
    per_sequence = ((0.2 + 0.4 + 0.9) / 3 + 0.6) / 2  # grpo's reduction of the entropy
    assert float(second) == pytest.approx(float(no_bonus) - 0.25 * per_sequence, abs=1e-12)


def test_one_training_step_moves_the_coefficient(eos_rich_model, tmp_path):
    """Through the update loop: the first update's gradient has no bonus (equal to a run without
    the key), and the logged coefficient is the start plus one step (the entropy of a random tiny
    model, about ln(vocab), is below a target of 100)."""
    plain, *_ = run_one_update(eos_rich_model, tmp_path / "plain")
    grads, metrics, *_ = run_one_update(eos_rich_model, tmp_path / "adaptive", use_adaptive_entropy=True,
                                        entropy_coeff=0.01, entropy_target=100.0, entropy_coef_delta=0.02)
    assert metrics["entropy_coef"] == pytest.approx(0.03)
    assert_same(grads, plain, "first adaptive update against no bonus")
    _, metrics, *_ = run_one_update(eos_rich_model, tmp_path / "high", use_adaptive_entropy=True,
                                       entropy_coeff=0.01, entropy_target=0.001, entropy_coef_delta=0.02)
    assert metrics["entropy_coef"] == pytest.approx(0.0)  # above the target: down, floored at 0


def test_the_adaptive_keys_are_refused_alone_or_out_of_range():
    for kw, message in [
        (dict(entropy_target=1.0), "'entropy_target' has no effect without use_adaptive_entropy"),
        (dict(entropy_coef_max=0.5), "'entropy_coef_max' has no effect without use_adaptive_entropy"),
        (dict(use_adaptive_entropy=True, entropy_coef_delta=0.0), "'entropy_coef_delta' must be > 0"),
        (dict(use_adaptive_entropy=True, entropy_target=-1.0), "'entropy_target' must be a finite number >= 0"),
        (dict(use_adaptive_entropy=True, entropy_coef_min=2.0), "'entropy_coef_min' must be at most entropy_coef_max"),
    ]:
        with pytest.raises(ConfigError, match=message) as e:
            TrainConfig(**kw)
        assert "\n" not in str(e.value)
