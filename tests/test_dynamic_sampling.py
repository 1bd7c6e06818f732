"""DAPO's dynamic sampling (``dynamic_sampling``, r1zero.training.sampling_rounds) on a tiny model.

The reward (tests/toy_rewards.py:vowel_share_odd_targets) is 0 for every completion of an
even-target prompt, so those groups have no spread and must be dropped; odd-target groups differ.
The runs are real ``r1zero train`` commands (one process, a resume, two processes under torchrun
with gloo); the model's EOS rows are scaled up so completions end at different lengths, which the
dapo loss check below needs.
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from conftest import REPO, launch_train
from safetensors.torch import load_file

from r1zero.config import TrainConfig
from r1zero.observe import metrics as metric_names
from r1zero.training import distributed as dist
from r1zero.training.trainer import Trainer

TOY = REPO / "tests" / "toy_rewards.py"
TIMING = ("time/", "tokens_per_second")


@pytest.fixture(scope="module")
def model(stopping_qwen2) -> Path:
    return stopping_qwen2


def recipe(model_dir: Path, out: Path, **extra) -> dict:
    r = dict(model_name_or_path=str(model_dir), task="countdown", template="base", reward="none",
             task_args={"train_size": 32, "test_size": 3}, prompts_per_step=4, num_generations=4,
             micro_batch_size=4, max_completion_length=12, learning_rate=1e-3, max_steps=2,
             save_steps=1, save_total_limit=None, eval_on_end=False, output_dir=str(out), report_to=["none"],
             log_completions_rate=1.0, disable_tqdm=True, seed=3, device="cpu", report_steps=0, top_k=20,
             loss_type="dapo", dynamic_sampling=True, max_sampling_rounds=3,
             reward_funcs=[f"{TOY}:vowel_share_odd_targets"])
    r.update(extra)
    return r


def launch(cfg: dict, procs: int = 1):
    return launch_train(cfg, procs)


def jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def weights(run: Path, step: int) -> dict[str, torch.Tensor]:
    return load_file(str(run / f"checkpoint-{step}" / "model.safetensors"))


def max_diff(a: dict, b: dict) -> float:
    return max(float((a[k].float() - b[k].float()).abs().max()) for k in a)


def close_rows(a: list[dict], b: list[dict], tol: float) -> None:
    assert len(a) == len(b)
    for x, y in zip(a, b):
        assert x.keys() == y.keys()
        for k, v in x.items():
            if not k.startswith(TIMING):
                assert y[k] == (pytest.approx(v, abs=tol) if isinstance(v, float) and tol else v), k  # tol 0: equal


@pytest.fixture(scope="module")
def full(model, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("ds") / "full"
    launch(recipe(model, out))
    return out


def test_constant_groups_never_reach_the_loss_and_the_step_keeps_its_groups(full):
    metrics, samples = jsonl(full / "metrics.jsonl"), jsonl(full / "samples.jsonl")
    assert sum(m[metric_names.DS_DROPPED] for m in metrics) > 0 and max(m[metric_names.DS_ROUNDS] for m in metrics) >= 2
    for m in metrics:
        assert m[metric_names.DS_SHORTFALL] == 0
        # frac_reward_zero_std describes every group sampled in the step: the dropped share.
        assert m[metric_names.ZERO_STD] == pytest.approx(m[metric_names.DS_DROPPED] / (4 * m[metric_names.DS_ROUNDS]))
    for step in (1, 2):
        rows = [s for s in samples if s["step"] == step]
        assert len(rows) == 16  # 4 groups of 4: log_completions_rate=1 logs every trained completion
        assert all(s["example"]["target"] % 2 == 1 for s in rows)  # no constant group was trained
        assert len({s["prompt"] for s in rows}) == 4
    # The loss saw exactly these rows: at step 1 (ratio 1, beta 0) the dapo loss is
    # -sum(A_i L_i) / sum(L_i) over the trained completions; a dropped group's tokens in the
    # normaliser would change it.
    rows = [s for s in samples if s["step"] == 1]
    assert len({s["length"] for s in rows}) > 2
    by_hand = -sum(s["advantage"] * s["length"] for s in rows) / sum(s["length"] for s in rows)
    assert metrics[0]["loss"] == pytest.approx(by_hand, abs=1e-6)
    assert abs(by_hand) > 1e-4
    # The data position advanced by every prompt drawn in the step's rounds.
    state = json.loads((full / "checkpoint-1" / "trainer_state.json").read_text())
    assert state["data_position"] == {"epoch": 0, "offset": 4 * metrics[0][metric_names.DS_ROUNDS]}


def test_resume_equals_the_uninterrupted_run(full, model, tmp_path):
    resumed = tmp_path / "resumed"
    resumed.mkdir()
    shutil.copytree(full / "checkpoint-1", resumed / "checkpoint-1")
    launch(recipe(model, resumed))
    # Bit for bit: the step's rounds, their draws and the data position all come back from the checkpoint.
    assert max_diff(weights(full, 2), weights(resumed, 2)) == 0.0
    close_rows(jsonl(full / "metrics.jsonl")[1:], jsonl(resumed / "metrics.jsonl"), 0.0)
    close_rows([s for s in jsonl(full / "samples.jsonl") if s["step"] == 2], jsonl(resumed / "samples.jsonl"), 0.0)


def test_rounds_sampled_together_make_the_same_steps(full, model, tmp_path):
    """sampling_rounds_per_batch=3: all three rounds in one batch. The steps equal one round at a time:
    same trained rows, same weights, same metrics, and the data position of the rounds used (a sampled
    round that was not needed is not counted)."""
    together = tmp_path / "together"
    launch(recipe(model, together, sampling_rounds_per_batch=3))
    assert max_diff(weights(full, 2), weights(together, 2)) <= 1e-6
    close_rows(jsonl(full / "metrics.jsonl"), jsonl(together / "metrics.jsonl"), 1e-6)
    close_rows(jsonl(full / "samples.jsonl"), jsonl(together / "samples.jsonl"), 1e-6)
    rounds = [m[metric_names.DS_ROUNDS] for m in jsonl(full / "metrics.jsonl")]
    assert min(rounds) < 3  # a step whose last round was sampled and not needed
    for step in (1, 2):
        state = json.loads((together / f"checkpoint-{step}" / "trainer_state.json").read_text())
        assert state["data_position"] == {"epoch": 0, "offset": 4 * sum(rounds[:step])}


def test_two_processes_equal_one_process(full, model, tmp_path):
    two = tmp_path / "two"
    launch(recipe(model, two), procs=2)
    start = load_file(str(model / "model.safetensors"))
    for step in (1, 2):
        assert max_diff(weights(full, step), weights(two, step)) < 1e-5
    assert max_diff(weights(full, 2), start) > 1e-3
    close_rows(jsonl(full / "metrics.jsonl"), jsonl(two / "metrics.jsonl"), 1e-5)
    close_rows(jsonl(full / "samples.jsonl"), jsonl(two / "samples.jsonl"), 1e-5)


def test_a_shortfall_is_logged_and_the_step_trains_on_what_it_has(model, tmp_path):
    """One round only: the step keeps the odd-target groups of its 4 prompts, trained in mini-batches
    of 2 prompts (a last, smaller one when the count is odd)."""
    out = tmp_path / "short"
    r = launch(recipe(model, out, max_sampling_rounds=1, max_steps=1, mini_batch_prompts=2))
    m = jsonl(out / "metrics.jsonl")[0]
    rows = jsonl(out / "samples.jsonl")
    kept = 4 - m[metric_names.DS_DROPPED]
    assert 0 < kept < 4 and m[metric_names.DS_ROUNDS] == 1
    assert m[metric_names.DS_SHORTFALL] == 4 - kept and len(rows) == 4 * kept
    assert all(s["example"]["target"] % 2 == 1 for s in rows)
    assert f"{kept} of 4 groups have a reward spread after 1 rounds; the step trains on {kept}" in r.stderr
    assert max_diff(weights(out, 1), load_file(str(model / "model.safetensors"))) > 0


def test_no_group_with_a_spread_means_no_update(model, tmp_path):
    tr = Trainer(TrainConfig(**recipe(model, tmp_path / "none", reward_funcs=[f"{TOY}:constant"], max_sampling_rounds=2,
                                      reward_timeout=0.0)))
    before = {k: v.clone() for k, v in tr.model.state_dict().items()}
    try:
        m, samples = tr.train_step()
    finally:
        tr.rewarder.close()
    assert m[metric_names.DS_ROUNDS] == 2 and m[metric_names.DS_DROPPED] == 8 and m[metric_names.DS_SHORTFALL] == 4 and samples == []
    assert "loss" not in m and m[metric_names.ZERO_STD] == 1.0
    assert all(torch.equal(before[k], v) for k, v in tr.model.state_dict().items())
    assert tr.pos.offset == 8  # both rounds' prompts were drawn


def test_a_shorter_last_mini_batch_is_split_evenly_over_processes():
    two = [dist.prompt_share(6, 4, dist.DistEnv(rank=r, world_size=2)) for r in (0, 1)]
    assert two == [[0, 1, 4], [2, 3, 5]]
    assert dist.prompt_share(8, 4, dist.DistEnv(rank=1, world_size=2)) == [2, 3, 6, 7]  # unchanged when whole
