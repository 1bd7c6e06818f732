"""r1zero's GRPO and RLOO maths against TRL's own trainers (trl is part of the `test` extra).

TRL's code is called, not re-implemented: a GRPOTrainer / RLOOTrainer is built on a tiny random
Qwen2 with an in-memory dataset; advantages come from its ``_generate_and_score_completions``
(generation, reward, advantage), the loss from its ``_compute_loss``. The models are in eval mode
so TRL does not divide by a gradient-accumulation count (we compare one whole batch). TRL 1.16
multiplies the KL term by the ratio by default (DeepSeek-V3.2's ``use_bias_correction_kl``); r1zero
keeps the classic form (veRL, TRL before 1.x), so the comparison turns that option off.
"""
import copy

import pytest
import torch
from datasets import Dataset
from trl import GRPOConfig, GRPOTrainer, RLOOConfig, RLOOTrainer

from r1zero.algorithms import group_advantages, policy_loss
from r1zero.algorithms.reward_kl import token_rewards
from r1zero.algorithms.rloo import rloo_advantages
from r1zero.training.logprobs import completion_logprobs

G = 4
# Prompts of equal token length: no left padding, so TRL's forward (positions 0..L-1 whatever the
# mask) and ours (positions from the mask) see the same positions.
PROMPTS = ["hello there", "good morning"]
MAX_COMPLETION = 6


class Recorder:
    """A reward function that remembers what it returned (TRL only hands back advantages)."""
    __name__ = "recorder"

    def __init__(self):
        self.rewards: list[float] = []

    def __call__(self, completions, **kw):
        # Ties within groups and across them, so the stds matter.
        r = [float(len(c) % 3) for c in completions]
        self.rewards = r
        return r


def _args(cls, tmp_path, **kw):
    return cls(output_dir=str(tmp_path / "trl"), per_device_train_batch_size=len(PROMPTS) * G, num_generations=G,
               max_completion_length=MAX_COMPLETION, report_to="none", use_cpu=True, logging_steps=1, seed=0,
               temperature=0.9, bf16=False, model_init_kwargs={"dtype": "float32"}, **kw)  # TRL's default is bf16


def _trainer(cls, cfg_cls, model_dir, tmp_path, **kw):
    rec = Recorder()
    tr = cls(model=str(model_dir), reward_funcs=rec, args=_args(cfg_cls, tmp_path, **kw),
             train_dataset=Dataset.from_dict({"prompt": PROMPTS}))
    tr.model.eval()
    return tr, rec


def _batch(tr):
    torch.manual_seed(0)
    return tr._generate_and_score_completions([{"prompt": p} for p in PROMPTS for _ in range(G)])


@pytest.mark.parametrize("scale", ["group", "batch", "none"])
def test_grpo_advantages_equal_trl(scale, tiny_qwen2, tmp_path):
    tr, rec = _trainer(GRPOTrainer, GRPOConfig, tiny_qwen2, tmp_path, scale_rewards=scale)
    out = _batch(tr)
    rewards = torch.tensor(rec.rewards)
    assert len(set(rec.rewards)) > 1  # not a degenerate batch
    ours = group_advantages(rewards, G, scale=scale)
    torch.testing.assert_close(ours, out["advantages"].float(), atol=1e-6, rtol=0)


@pytest.mark.parametrize("normalize", [False, True])
def test_rloo_advantages_equal_trl(normalize, tiny_qwen2, tmp_path):
    tr, rec = _trainer(RLOOTrainer, RLOOConfig, tiny_qwen2, tmp_path, normalize_advantages=normalize, beta=0.0)
    out = _batch(tr)
    ours = rloo_advantages(torch.tensor(rec.rewards), G, normalize=normalize)
    torch.testing.assert_close(ours, out["advantages"].float(), atol=1e-6, rtol=0)


def test_rloo_advantages_with_kl_equal_trl(tiny_qwen2, tmp_path):
    """beta > 0: TRL's RLOO subtracts beta x the summed k1 KL (logp_old - logp_ref) from each reward
    before the leave-one-out baseline, as r1zero's rloo does with kl_coef (r1zero.algorithms.ppo). The policy is
    nudged away from TRL's reference before sampling, so the KL is not 0 (at the start it is)."""
    beta = 0.5
    tr, rec = _trainer(RLOOTrainer, RLOOConfig, tiny_qwen2, tmp_path, normalize_advantages=False, beta=beta)
    g = torch.Generator().manual_seed(3)
    with torch.no_grad():
        for p in tr.model.parameters():
            p.add_(torch.randn(p.shape, generator=g) * 0.05)
    out = _batch(tr)
    P = out["prompt_ids"].shape[1]
    ids = torch.cat([out["prompt_ids"], out["completion_ids"]], 1)
    am = torch.cat([out["prompt_mask"], out["completion_mask"]], 1)
    cm = out["completion_mask"]
    with torch.no_grad():  # r1zero's own log-prob pass (TRL samples at temperature 0.9: see _args)
        old, _ = completion_logprobs(tr.model, ids, am, P, cm, temperature=0.9)
        ref, _ = completion_logprobs(tr.ref_model, ids, am, P, cm, temperature=0.9)
    tok_r, kl = token_rewards(torch.tensor(rec.rewards), cm, old, ref, kl_coef=beta)
    seq_kl = kl.sum(-1)
    assert seq_kl.abs().max() > 0.5  # the KL term moves the rewards
    ours = rloo_advantages(tok_r.sum(-1), G)
    without_kl = rloo_advantages(torch.tensor(rec.rewards), G)
    assert (ours - without_kl).abs().max() > 0.05  # and the advantages: beta=0 would not pass below
    torch.testing.assert_close(ours, out["advantages"].float(), atol=1e-5, rtol=1e-5)


CASES = [(lt, beta) for lt in ("grpo", "bnpo", "dr_grpo", "dapo") for beta in (0.0, 0.04)]


def grpo_trainers(model_dir, tmp_path_factory):
    """``get(loss_type, beta, **kw)``: one TRL GRPOTrainer per setting, built once (epsilon 0.2 / 0.28
    and the classic KL term unless ``kw`` says otherwise)."""
    made = {}

    def get(loss_type, beta, **kw):
        key = (loss_type, beta, tuple(sorted(kw.items())))
        if key not in made:
            args = {"epsilon": 0.2, "epsilon_high": 0.28, "use_bias_correction_kl": False, **kw}
            made[key] = _trainer(GRPOTrainer, GRPOConfig, model_dir, tmp_path_factory.mktemp("trl"),
                                 loss_type=loss_type, beta=beta, **args)[0]
        return made[key]
    return get


@pytest.fixture(scope="module")
def trainers(tiny_qwen2, tmp_path_factory):
    """One TRL GRPOTrainer per (loss_type, beta), built once for both loss tests."""
    return grpo_trainers(tiny_qwen2, tmp_path_factory)


def random_batch(seed=7, token_noise=0.2):
    """float64 (B, T) tensors: ragged masks, ratios inside and outside the clip ranges (per token and
    per sequence: pi_old is pi plus a per-sequence shift and ``token_noise`` per token), advantages
    of both signs."""
    g = torch.Generator().manual_seed(seed)
    B, T = 8, MAX_COMPLETION
    lengths = torch.tensor([6, 1, 4, 6, 3, 2, 5, 6])
    mask = (torch.arange(T).unsqueeze(0) < lengths.unsqueeze(1)).long()
    logps = (-torch.rand(B, T, generator=g, dtype=torch.float64) * 3).requires_grad_(True)
    old = logps.detach() + torch.randn(B, 1, generator=g, dtype=torch.float64) * 0.3 \
        + torch.randn(B, T, generator=g, dtype=torch.float64) * token_noise
    ref = logps.detach() + torch.randn(B, T, generator=g, dtype=torch.float64) * 0.2
    adv = torch.randn(B, generator=g, dtype=torch.float64)
    return logps, old, ref, adv, mask


def trl_loss_and_grad(tr, monkeypatch, logps, old, ref, adv, mask, beta, entropies=None, **extra):
    """(TRL's ``_compute_loss``, its gradient w.r.t. ``logps``) on these (B, T) tensors: TRL's loss code
    on our tensors, its log-prob forward replaced by the tensor under test (and its entropies by
    ``entropies``, zeros by default). ``extra``: more inputs of TRL's batch (the sampler's log-probs,
    the importance-sampling ratio)."""
    B, T = logps.shape
    entropies = torch.zeros(B, T, dtype=logps.dtype) if entropies is None else entropies
    monkeypatch.setattr(tr, "_get_per_token_logps_and_entropies", lambda *a, **k: (logps, entropies, None))
    inputs = {"prompt_ids": torch.ones(B, 2, dtype=torch.long), "prompt_mask": torch.ones(B, 2, dtype=torch.long),
              "completion_ids": torch.ones(B, T, dtype=torch.long), "completion_mask": mask, "advantages": adv,
              "old_per_token_logps": old, "num_items_in_batch": mask.sum()}
    if beta > 0:
        inputs["ref_per_token_logps"] = ref
    inputs.update(extra)
    theirs = tr._compute_loss(tr.model, inputs)
    (g_theirs,) = torch.autograd.grad(theirs, logps)
    return theirs, g_theirs


@pytest.mark.parametrize("loss_type,beta", CASES)
def test_policy_loss_equals_trl_on_random_tensors(loss_type, beta, trainers, monkeypatch):
    """float64 tensors with ratios inside and outside the clip range and ragged masks."""
    tr = trainers(loss_type, beta)
    g = torch.Generator().manual_seed(7)
    B, T = 6, MAX_COMPLETION
    lengths = torch.tensor([6, 1, 4, 6, 3, 2])
    mask = (torch.arange(T).unsqueeze(0) < lengths.unsqueeze(1)).long()
    logps = (-torch.rand(B, T, generator=g, dtype=torch.float64) * 3).requires_grad_(True)
    old = logps.detach() + torch.randn(B, T, generator=g, dtype=torch.float64) * 0.3
    ref = logps.detach() + torch.randn(B, T, generator=g, dtype=torch.float64) * 0.2
    adv = torch.randn(B, generator=g, dtype=torch.float64)
    theirs, g_theirs = trl_loss_and_grad(tr, monkeypatch, logps, old, ref, adv, mask, beta)
    ours, _ = policy_loss(logps, old, adv, mask, loss_type=loss_type, epsilon=0.2, epsilon_high=0.28,
                          ref_logprobs=ref if beta > 0 else None, beta=beta, kl_estimator="k3",
                          max_completion_length=MAX_COMPLETION)
    (g_ours,) = torch.autograd.grad(ours, logps)
    assert abs(float(ours) - float(theirs)) < 1e-6
    torch.testing.assert_close(g_ours, g_theirs, atol=1e-6, rtol=0)
    assert g_ours.abs().sum() > 0


def _grad_close(a, b):
    """Within 1e-3 of each entry, or of 1e-6 x the tensor's largest entry (entries near 0)."""
    return bool(torch.allclose(a, b, rtol=1e-3, atol=1e-6 * float(b.abs().max())))


def assert_same_gradients(mine, theirs) -> None:
    """Every weight's gradient of ``mine`` equals ``theirs``'s, relative to each entry (and to the
    tensor's largest entry for entries near 0): most entries are below 1e-4, where an absolute 1e-4
    would let 10% errors through. The measured difference is float32 rounding (about 3e-8
    absolute); a 1% error must fail, and the check says so for every tensor."""
    n = 0
    for (name, a), (_, b) in zip(mine.named_parameters(), theirs.named_parameters()):
        if b.grad is None:
            assert a.grad is None or a.grad.abs().max() == 0, name
            continue
        assert _grad_close(a.grad, b.grad), f"{name}: max diff {float((a.grad - b.grad).abs().max()):.3e}"
        if b.grad.abs().max() > 0:
            assert not _grad_close(a.grad, b.grad * 1.01), name
        n += 1
    assert n > 10


def assert_loss_equals_trl_on_real_batch(tr, inputs, ours, with_entropy=False) -> None:
    """TRL's ``_compute_loss`` on ``inputs`` (a batch TRL sampled) against ``ours(logprobs, old,
    advantages, completion_mask, ref)`` (``with_entropy``: and the token entropies), a loss tensor:
    the policy is first nudged away from the sampler and the reference, so ratios and the KL are not
    trivially 1 and 0; the values within 1e-4 and every weight's gradient (assert_same_gradients).
    The trainer's model is restored."""
    model = tr.model
    P = inputs["prompt_ids"].shape[1]
    ids = torch.cat([inputs["prompt_ids"], inputs["completion_ids"]], 1)
    am = torch.cat([inputs["prompt_mask"], inputs["completion_mask"]], 1)
    cm = inputs["completion_mask"]
    with torch.no_grad():
        old_state = {k: v.clone() for k, v in model.state_dict().items()}
        old, _ = completion_logprobs(model, ids, am, P, cm, temperature=0.9)
        g = torch.Generator().manual_seed(1)
        for p in model.parameters():
            p.add_(torch.randn(p.shape, generator=g) * 0.02)
    inputs = dict(inputs, old_per_token_logps=old)
    try:
        mine = copy.deepcopy(model)
        model.zero_grad()
        theirs = tr._compute_loss(model, inputs)
        theirs.backward()
        lp, ent = completion_logprobs(mine, ids, am, P, cm, temperature=0.9)
        extra = [ent] if with_entropy else []
        loss = ours(lp, old, inputs["advantages"], cm, inputs.get("ref_per_token_logps"), *extra)
        loss.backward()
        assert abs(float(loss) - float(theirs)) < 1e-4
        assert_same_gradients(mine, model)
    finally:
        model.load_state_dict(old_state)
        model.zero_grad()


@pytest.mark.parametrize("loss_type,beta", CASES)
def test_policy_loss_equals_trl_on_a_real_batch(loss_type, beta, trainers):
    """A batch TRL sampled from the tiny model; the policy is then nudged away from the sampler and
    the reference, so ratios and the KL are not trivially 1 and 0. Values and every weight's gradient."""
    tr = trainers(loss_type, beta)
    inputs = _batch(tr)
    assert bool(inputs["prompt_mask"].all())  # see PROMPTS
    assert inputs["advantages"].abs().sum() > 0
    assert_loss_equals_trl_on_real_batch(tr, inputs, lambda lp, old, adv, cm, ref: policy_loss(
        lp, old, adv, cm, loss_type=loss_type, epsilon=0.2, epsilon_high=0.28, ref_logprobs=ref, beta=beta,
        kl_estimator="k3", max_completion_length=MAX_COMPLETION)[0])
