"""Gradient accumulation leaves an update unchanged: the gradient of ONE update, captured at the
optimizer's step, is the same for micro_batch_size 1, 2, 4 and the whole mini-batch
(8 rows), for every loss_type that promises it (grpo, dr_grpo, dapo), and equals a hand computation
from the same rollout; bnpo follows its documented per-micro-batch rule (r1zero/grpo.py).

The update runs through ``Trainer(cfg).train_step()`` (one whole step: rollout, rewards,
advantages, update, metrics); the test only reaches the model and optimizer the trainer owns
(``trainer.model``, ``trainer.optimizer``), casts the model to float64 (measured agreement: about
1e-8 of the largest entry, the models' float32 norms and rotary embeddings), and hooks the optimizer's step (torch's ``register_step_pre_hook``) to copy
the accumulated gradients. AdamW would hide a gradient scale error in the weights; the gradients
cannot. The rollout is recorded by wrapping r1zero.rollout.sampling.generate (the real function runs), so
the hand computation sees exactly the tokens the trainer trained on.

Hand computation: the update is the first one of its step, so pi_old = pi (ratio 1, no clipping)
and each sequence i contributes S_i = grad of sum_t(-A_i * logp_it) (A_i by hand from the logged
rewards), with T_i its token count; then
  grpo     (1/n) sum_i S_i / T_i
  dr_grpo  sum_i S_i / (n * max_completion_length)
  dapo     sum_i S_i / sum_i T_i
  bnpo     sum over micro-batches m of (|m| / n) * sum_{i in m} S_i / sum_{i in m} T_i
and the whole mini-batch's r1zero.algorithms.grpo.policy_loss gives the same gradient for the first three.
"""
import copy

import pytest
import torch
from conftest import REPO, RolloutRecorder

from r1zero.config import TrainConfig
from r1zero.algorithms import policy_loss
from r1zero.training.logprobs import completion_logprobs
from r1zero.training.trainer import Trainer

G, PROMPTS, MAX_C = 2, 4, 8
N = G * PROMPTS
SIZES = (1, 2, 4, N)


def run_one_update(model_dir, out, **extra):
    """One training step of one update: (gradients at the optimizer step, the step's metrics, its
    samples (every completion), its rollout, the starting model). ``train_step`` is the whole step
    (rollout, rewards, advantages, update, metrics); ``train()`` would add a checkpoint and the
    report's plots, 3 s per run of nothing this test looks at."""
    cfg = TrainConfig(
        model_name_or_path=str(model_dir), task="countdown", template="base", reward="none",
        reward_funcs=[f"{REPO / 'tests' / 'toy_rewards.py'}:vowel_share"], reward_timeout=0.0,
        task_args={"train_size": 16, "test_size": 4}, prompts_per_step=PROMPTS, num_generations=G,
        max_completion_length=MAX_C, learning_rate=1e-3, max_steps=1, max_grad_norm=0.0,
        output_dir=str(out), report_to=["none"], eval_on_end=False, disable_tqdm=True,
        log_completions_rate=1.0, seed=11, **extra)
    with pytest.MonkeyPatch.context() as mp:
        rec = RolloutRecorder(mp)
        tr = Trainer(cfg)
        tr.model.double()  # in place: the optimizer keeps the same parameter objects
        start = copy.deepcopy(tr.model)
        params = [p for p in tr.model.parameters() if p.requires_grad]
        names = [n for n, p in tr.model.named_parameters() if p.requires_grad]
        grads = []
        tr.optimizer.register_step_pre_hook(
            lambda opt, args, kwargs: grads.append({n: p.grad.detach().clone() for n, p in zip(names, params)
                                                    if p.grad is not None}))
        metrics, samples = tr.train_step()
        tr.rewarder.close()
    assert len(grads) == 1, f"{len(grads)} optimizer steps in one step of one update"
    assert len(samples) == N and len(rec.rollouts) == 1
    return grads[0], metrics, samples, rec.rollouts[0], start


def per_sequence_pieces(model, roll, samples):
    """(S_i gradients as dicts, T_i token counts, advantages) computed from scratch, row by row."""
    rewards = torch.tensor([s["reward"] for s in samples], dtype=torch.float64).view(PROMPTS, G)
    # The trainer's default scale_rewards="group": minus the group mean, over the group std (Bessel) + 1e-4.
    adv = ((rewards - rewards.mean(1, keepdim=True)) / (rewards.std(1, keepdim=True) + 1e-4)).reshape(-1)
    logged = torch.tensor([s["advantage"] for s in samples], dtype=torch.float64)
    torch.testing.assert_close(logged, adv, atol=1e-6, rtol=0)
    assert adv.abs().min() > 0.1  # every group has a spread: every row carries gradient
    # From here the logged values: the trainer computes advantages in float32, and float32 rounding
    # (1e-8 relative) is not what this test measures.
    adv = logged
    ids, am, cm = roll.input_ids, roll.attention_mask, roll.completion_mask
    P = roll.prompt_ids.shape[1]
    S, T = [], []
    for i in range(N):
        model.zero_grad(set_to_none=True)
        lp, _ = completion_logprobs(model, ids[i:i + 1], am[i:i + 1], P, cm[i:i + 1], share_prompts=False)
        assert lp.dtype == torch.float64
        (-(adv[i] * lp * cm[i:i + 1]).sum()).backward()
        S.append({n: p.grad.detach().clone() for n, p in model.named_parameters() if p.grad is not None})
        T.append(float(cm[i].sum()))
    return S, T, adv


@pytest.fixture(scope="module")
def reference(eos_rich_model, tmp_path_factory):
    """The rollout every run samples (it does not depend on the loss or the micro-batch size) and
    its hand-computed pieces."""
    _, _, samples, roll, start = run_one_update(eos_rich_model, tmp_path_factory.mktemp("ref"))
    lengths = roll.completion_mask.sum(-1)
    assert len(set(lengths.tolist())) >= 3, lengths  # the loss types differ only on ragged lengths
    S, T, adv = per_sequence_pieces(start, roll, samples)
    assert [s["length"] for s in samples] == T
    return roll, start, S, T, adv


def combine(S, weights):
    out = {}
    for s, w in zip(S, weights):
        for n, g in s.items():
            out[n] = out.get(n, 0) + w * g
    return out


def expected_gradient(loss_type, S, T, micro):
    if loss_type == "grpo":
        return combine(S, [1 / (N * t) for t in T])
    if loss_type == "dr_grpo":
        return combine(S, [1 / (N * MAX_C)] * N)
    if loss_type == "dapo":
        return combine(S, [1 / sum(T)] * N)
    # bnpo: each micro-batch's token mean, weighted by the micro-batch's share of the mini-batch rows.
    w = []
    for s in range(0, N, micro):
        m = range(s, min(N, s + micro))
        w += [(len(m) / N) / sum(T[i] for i in m)] * len(m)
    return combine(S, w)


def assert_same(got, want, what):
    assert got.keys() == want.keys(), what
    scale = max(float(g.abs().max()) for g in want.values())
    worst = max(float((got[n] - want[n]).abs().max()) for n in want)
    print(f"{what}: max difference {worst:.3e} of largest entry {scale:.3e}")
    assert worst <= 1e-6 * scale, f"{what}: max difference {worst:.3e} (largest entry {scale:.3e})"


def _norm(grads):
    return float(torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g) for g in grads.values()])))


@pytest.mark.parametrize("loss_type", ["grpo", "bnpo", "dr_grpo", "dapo"])
def test_one_update_gradient_per_micro_batch_size(loss_type, eos_rich_model, reference, tmp_path):
    roll, start, S, T, adv = reference
    # The whole mini-batch through r1zero.algorithms.grpo.policy_loss, as one batch (bnpo: the whole-batch rule).
    whole = copy.deepcopy(start)
    P = roll.prompt_ids.shape[1]
    lp, _ = completion_logprobs(whole, roll.input_ids, roll.attention_mask, P, roll.completion_mask)
    loss, _ = policy_loss(lp, lp.detach(), adv, roll.completion_mask, loss_type=loss_type,
                          max_completion_length=MAX_C)
    loss.backward()
    whole_grad = {n: p.grad for n, p in whole.named_parameters() if p.grad is not None}
    assert_same(whole_grad, expected_gradient(loss_type, S, T, N), f"{loss_type}: policy_loss vs hand")
    for mb in SIZES:
        grads, metrics, _, run_roll, _ = run_one_update(eos_rich_model, tmp_path / f"mb{mb}", loss_type=loss_type,
                                                        micro_batch_size=mb)
        assert torch.equal(run_roll.completion_ids, roll.completion_ids)  # sampling ignores loss and micro-batches
        want = expected_gradient(loss_type, S, T, mb)
        assert_same(grads, want, f"{loss_type}, micro_batch_size={mb}")
        # The logged norm is the norm of the gradient that was applied, and of the hand computation's.
        norm_applied, norm_hand = _norm(grads), _norm(want)
        assert abs(metrics["grad_norm"] - norm_applied) <= 1e-12 * norm_applied, (mb, metrics["grad_norm"], norm_applied)
        assert abs(metrics["grad_norm"] - norm_hand) <= 1e-6 * norm_hand, (mb, metrics["grad_norm"], norm_hand)
    if loss_type == "bnpo":  # the documented rule is not size-invariant: per-sequence at 1, token mean at N
        a, b = expected_gradient("bnpo", S, T, 1), expected_gradient("bnpo", S, T, N)
        assert max(float((a[n] - b[n]).abs().max()) for n in a) > 1e-3 * max(float(g.abs().max()) for g in b.values())


def _masked(S, keep):
    return [s if k else {n: torch.zeros_like(g) for n, g in s.items()} for s, k in zip(S, keep)]


def test_truncated_completions_get_no_loss_when_masked(eos_rich_model, reference, tmp_path):
    """mask_truncated_completions (DAPO): a completion that hit max_completion_length adds nothing to
    the gradient, and its tokens leave the token counts (dapo's normaliser); grpo still averages
    over all sequences of the mini-batch, as TRL does (a masked row's mean is 0)."""
    roll, start, S, T, adv = reference
    keep = [not t for t in roll.truncated.tolist()]
    assert 0 < sum(keep) < N, keep
    kept_tokens = sum(t for t, k in zip(T, keep) if k)
    want = {"grpo": combine(_masked(S, keep), [1 / (N * t) for t in T]),
            "dapo": combine(_masked(S, keep), [1 / kept_tokens] * N)}
    for loss_type, expected in want.items():
        grads, *_ = run_one_update(eos_rich_model, tmp_path / loss_type, loss_type=loss_type,
                                   micro_batch_size=2, mask_truncated_completions=True)
        assert_same(grads, expected, f"{loss_type}, truncated masked")
        unmasked = expected_gradient(loss_type, S, T, N)
        scale = max(float(g.abs().max()) for g in expected.values())
        assert max(float((unmasked[n] - expected[n]).abs().max()) for n in expected) > 1e-2 * scale  # masking matters


def test_gradient_checkpointing_update_equals_the_plain_one(eos_rich_model, reference, tmp_path):
    """gradient_checkpointing recomputes activations and runs every row in full (no shared prompt
    cache, r1zero.training.logprobs): the same gradient, by hand, at two micro-batch sizes."""
    roll, start, S, T, adv = reference
    for mb in (2, N):
        grads, metrics, *_ = run_one_update(eos_rich_model, tmp_path / f"gc{mb}", loss_type="grpo",
                                            micro_batch_size=mb, gradient_checkpointing=True)
        assert_same(grads, expected_gradient("grpo", S, T, mb), f"gradient checkpointing, micro-batch {mb}")


def _hand_entropy_gradient(model, roll):
    """grad of the grpo-reduced mean token entropy, (1/n) sum_i (1/T_i) sum_t H_it, from full
    logits of each row run alone (no padding, no r1zero.training.logprobs): H = -sum_v p_v log p_v."""
    model.zero_grad(set_to_none=True)
    P = roll.prompt_ids.shape[1]
    total, tokens = 0.0, 0.0
    for i in range(N):
        prompt = roll.prompt_ids[i][roll.prompt_mask[i].bool()]
        T_i = int(roll.completion_mask[i].sum())
        ids = torch.cat([prompt, roll.completion_ids[i, :T_i]]).unsqueeze(0)
        logits = model(input_ids=ids).logits[0, len(prompt) - 1:len(prompt) - 1 + T_i].double()  # temperature 1
        logp = torch.log_softmax(logits, -1)
        H = -(logp.exp() * logp).sum(-1)
        total = total + H.sum() / T_i / N
        tokens += float(H.sum())
    total.backward()
    assert P > 0
    return {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}, tokens


def test_entropy_bonus_gradient_equals_a_hand_computation(eos_rich_model, reference, tmp_path):
    """entropy_coeff (every algorithm; r1zero.algorithms.base.Algorithm.policy_loss) subtracts c x the mean token entropy,
    reduced like the loss (grpo: per sequence, then over sequences). The rollout does not depend on
    it, so the update's gradient with c minus the one without is exactly -c x grad(entropy term)."""
    roll, start, S, T, adv = reference
    # Large, because a random model's entropy is nearly flat: with c = 0.05 the bonus would be 1e-4
    # of the policy gradient and drown in its rounding (the difference of two runs is measured).
    c = 20.0
    runs = {}
    for coeff in (0.0, c):
        runs[coeff] = run_one_update(eos_rich_model, tmp_path / f"ent{coeff}", algorithm="rloo", entropy_coeff=coeff,
                                     micro_batch_size=2)
        assert torch.equal(runs[coeff][3].completion_ids, roll.completion_ids)
    bonus = {n: runs[c][0][n] - runs[0.0][0][n] for n in runs[c][0]}
    hand, entropy_sum = _hand_entropy_gradient(copy.deepcopy(start), roll)
    assert_same(bonus, {n: -c * g for n, g in hand.items()}, "entropy bonus gradient")
    # The logged entropy is the token mean over the step.
    assert runs[c][1]["entropy"] == pytest.approx(entropy_sum / sum(T), rel=1e-6)
