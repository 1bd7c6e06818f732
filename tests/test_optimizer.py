"""r1zero.training.optim's AdamW: torch's fused kernel for plain CPU weights, stepping as torch's
for-loop AdamW does (the same state, resumable from a checkpoint the loop wrote)."""
import copy
from types import SimpleNamespace

import torch

from r1zero.rollout.weights import rollout_model
from r1zero.training.optim import _implementation, clip_and_step, make_optimizer

CFG = SimpleNamespace(adam_beta1=0.9, adam_beta2=0.99, adam_epsilon=1e-8, weight_decay=0.1, warmup_ratio=0.0,
                      lr_scheduler_type="constant")


def _model(seed=0):
    torch.manual_seed(seed)
    return torch.nn.Sequential(torch.nn.Embedding(50, 8), torch.nn.Linear(8, 8), torch.nn.LayerNorm(8))


def _grads(model, seed):
    g = torch.Generator().manual_seed(seed)
    for p in model.parameters():
        p.grad = torch.randn(p.shape, generator=g)


def test_cpu_weights_get_the_fused_kernel_and_step_as_the_loop():
    fused_model, loop_model = _model(), _model()
    fused, _ = make_optimizer(fused_model, CFG, 1e-2, 10)
    assert fused.param_groups[0]["fused"] is True
    loop = torch.optim.AdamW(loop_model.parameters(), lr=1e-2, betas=(0.9, 0.99), eps=1e-8, weight_decay=0.1,
                             foreach=False)
    start = [p.detach().clone() for p in fused_model.parameters()]
    for step in range(3):
        _grads(fused_model, step), _grads(loop_model, step)
        fused.step(), loop.step()
    for a, b in zip(fused_model.parameters(), loop_model.parameters()):
        torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-7)
    assert all(not torch.equal(a, s) for a, s in zip(fused_model.parameters(), start))
    # A loop optimizer's state (a checkpoint of an earlier version) loads and goes on stepping alike.
    resumed_model = _model()
    resumed_model.load_state_dict(loop_model.state_dict())
    resumed, _ = make_optimizer(resumed_model, CFG, 1e-2, 10)
    resumed.load_state_dict(copy.deepcopy(loop.state_dict()))  # loading shares tensors
    _grads(resumed_model, 9), _grads(loop_model, 9)
    resumed.step(), loop.step()
    for a, b in zip(resumed_model.parameters(), loop_model.parameters()):
        torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-7)


def test_other_weights_keep_torchs_default():
    assert _implementation([torch.nn.Parameter(torch.zeros(2, device="meta"))]) == {}
    assert _implementation([]) == {}


def test_a_fused_step_reaches_the_sampling_copy():
    """The bf16 sampling copy is refreshed by the weights' version counters, which torch's fused
    kernel leaves as they were; clip_and_step bumps them."""
    model = _model()
    optimizer, _ = make_optimizer(model, CFG, 1e-1, 10)
    twin, _ = rollout_model(model, torch.bfloat16)
    versions = [p._version for p in model.parameters()]
    _grads(model, 0)
    clip_and_step(model, optimizer, 1.0, lambda norm: True)
    assert all(p._version > v for p, v in zip(model.parameters(), versions))
    twin, _ = rollout_model(model, torch.bfloat16)
    for master, low in zip(model.parameters(), twin.parameters()):
        assert torch.equal(low, master.detach().to(torch.bfloat16))
