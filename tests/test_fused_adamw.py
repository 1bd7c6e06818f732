"""The optimizer is torch's fused AdamW where it applies (r1zero.training.optim.fused_applies): the
same updates as the per-tensor AdamW (torch's default on a CPU, and what a checkpoint written before
fused was used holds) to float32 rounding, and such a checkpoint's state continues in the fused one."""
import copy

import torch

from r1zero.config import TrainConfig
from r1zero.training.optim import apply_settings, fused_applies, make_optimizer, settings


def _model():
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Embedding(50, 16), torch.nn.Linear(16, 32), torch.nn.LayerNorm(32))


def _reference(model, cfg):
    return torch.optim.AdamW(model.parameters(), lr=cfg.learning_rate, betas=(cfg.adam_beta1, cfg.adam_beta2),
                             eps=cfg.adam_epsilon, weight_decay=cfg.weight_decay, foreach=False)


def _steps(model, optimizer, grads):
    for step_grads in grads:
        for p, g in zip(model.parameters(), step_grads):
            p.grad = g.clone()
        optimizer.step()


def _grads(model, n, seed):
    gen = torch.Generator().manual_seed(seed)
    return [[torch.randn(p.shape, generator=gen) for p in model.parameters()] for _ in range(n)]


def _close(a, b):
    for p, q in zip(a.parameters(), b.parameters()):
        torch.testing.assert_close(p, q, rtol=1e-6, atol=1e-7)


def test_fused_on_cpu_matches_the_per_tensor_adamw(tmp_path):
    cfg = TrainConfig(output_dir=str(tmp_path), learning_rate=1e-2, weight_decay=0.1)
    ours, ref = _model(), _model()
    opt, _ = make_optimizer(ours, cfg, cfg.learning_rate, 10)
    assert opt.defaults["fused"] is True
    grads = _grads(ours, 5, seed=1)
    _steps(ours, opt, grads)
    _steps(ref, _reference(ref, cfg), grads)
    moved = max(float((p - q).abs().max()) for p, q in zip(ours.parameters(), _model().parameters()))
    assert moved > 1e-3  # five steps of lr 1e-2 moved the weights: the comparison below means something
    _close(ours, ref)


def test_a_per_tensor_checkpoint_continues_fused(tmp_path):
    """A run resumed from a checkpoint saved by the per-tensor AdamW: its moments and step count
    carry over into the fused optimizer, which then updates as the per-tensor one would have."""
    cfg = TrainConfig(output_dir=str(tmp_path), learning_rate=1e-2)
    before = _model()
    old = _reference(before, cfg)
    _steps(before, old, _grads(before, 3, seed=2))
    saved = copy.deepcopy(old.state_dict())
    resumed, cont = copy.deepcopy(before), copy.deepcopy(before)
    opt, sched = make_optimizer(resumed, cfg, cfg.learning_rate, 10)
    kept = settings(opt, sched)  # as r1zero.training.checkpoint loads a run's states
    opt.load_state_dict(copy.deepcopy(saved))  # a copy each: loading keeps the given moment tensors
    apply_settings(opt, sched, kept)
    assert opt.param_groups[0]["fused"] is True  # the saved groups said None
    ref = _reference(cont, cfg)
    ref.load_state_dict(copy.deepcopy(saved))
    later = _grads(before, 2, seed=3)
    _steps(resumed, opt, later)
    _steps(cont, ref, later)
    _close(resumed, cont)
    assert int(opt.state_dict()["state"][0]["step"]) == 5


def test_fused_applies_only_to_float_tensors_on_cpu_or_cuda():
    assert fused_applies(list(_model().parameters()))
    assert not fused_applies([])
    assert not fused_applies([torch.nn.Parameter(torch.zeros(2, device="meta"))])
    assert not fused_applies([torch.nn.Parameter(torch.zeros(2, dtype=torch.long), requires_grad=False)])


def test_the_sampler_sees_every_fused_step(tmp_path):
    """The bf16 copy the rollout samples with is refreshed when the weights' version counters change
    (r1zero.rollout.weights); a fused step writes the weights without bumping them, so make_optimizer's
    optimizer bumps them itself. Without that a run samples its first policy forever (a default run
    did: reward 0.04-0.11 for 28 steps)."""
    from r1zero.rollout.weights import rollout_model

    cfg = TrainConfig(output_dir=str(tmp_path), learning_rate=1e-2)
    model = _model()
    opt, _ = make_optimizer(model, cfg, cfg.learning_rate, 10)
    for grads in _grads(model, 2, seed=4):
        twin, _ = rollout_model(model, torch.bfloat16)
        before = [p.detach().clone() for p in twin.parameters()]
        _steps(model, opt, [grads])
        twin, _ = rollout_model(model, torch.bfloat16)
        for master, low, old in zip(model.parameters(), twin.parameters(), before):
            assert torch.equal(low, master.detach().to(torch.bfloat16))
        assert any(not torch.equal(low, old) for low, old in zip(twin.parameters(), before))
