"""Training options through the whole loop on the tiny random Qwen2 (Trainer(cfg).train() or the
`r1zero train` command), each checked against what the run wrote: ``logging_steps``,
``eval_steps``, ``num_train_epochs``, PPO's ``critic_warmup_steps``, a built-in reward scheme
together with weighted user rewards (``reward_weights``), a built-in scorer that raises, a prompt
too long for ``max_prompt_length`` beyond the rows checked at the start, and a resume under another
process count."""
import json
import os
import shutil
import subprocess
import sys

import pytest
import torch
import yaml
from conftest import REPO
from safetensors.torch import load_file
from toy_rewards import vowel_share

from r1zero import cli
from r1zero.config import TrainConfig
from r1zero.tasks import get_task
from r1zero.tasks.countdown import CountdownTask
from r1zero.data.split import DataPosition, draw_batch, load_data
from r1zero.training.trainer import Trainer

TOY = REPO / "tests" / "toy_rewards.py"


def config(model_dir, out, **extra) -> dict:
    c = dict(model_name_or_path=str(model_dir), task="countdown", template="base", reward="tinyzero",
             task_args={"train_size": 16, "test_size": 4}, prompts_per_step=2, num_generations=4,
             micro_batch_size=8, max_prompt_length=256, max_completion_length=8,
             learning_rate=1e-2, max_steps=3, save_steps=0, eval_on_end=False, output_dir=str(out),
             report_to=["none"], log_completions_rate=1.0, disable_tqdm=True, seed=5, reward_timeout=0.0)
    c.update(extra)
    return c


def jsonl(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


# ---- one run for logging_steps, eval_steps, scheme + weighted user reward, a raising scorer --------

WEIGHT = 0.5


def odd_length_raises(real):
    """The built-in Countdown scorer, made to raise on completions of odd length (as a scorer bug
    would on some texts); it scores the others for real."""
    def score(self, completion, example):
        if len(completion) % 2:
            raise RuntimeError("scorer bug")
        return real(self, completion, example)
    return score


@pytest.fixture(scope="module")
def logged_run(tiny_qwen2, tmp_path_factory):
    out = tmp_path_factory.mktemp("logged") / "run"
    # max_steps from num_train_epochs: ceil(1.5 epochs x 6 rows / 2 prompts per step) = 5 steps.
    cfg = TrainConfig(**config(tiny_qwen2, out, max_steps=-1, num_train_epochs=1.5,
                               task_args={"train_size": 6, "test_size": 2}, logging_steps=2, eval_steps=2,
                               eval_limit=2, eval_on_end=True, reward_funcs=[f"{TOY}:vowel_share"],
                               reward_weights=[WEIGHT]))
    real = CountdownTask.score
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(CountdownTask, "score", odd_length_raises(real))
        tr = Trainer(cfg)
        result = tr.train()
    return out, result, real, load_data(tr.task, cfg)[0]


def test_logging_steps_writes_every_nth_step_and_the_last(logged_run):
    out, *_ = logged_run
    train_rows = [r for r in jsonl(out / "metrics.jsonl") if "reward" in r]
    assert [r["step"] for r in train_rows] == [2, 4, 5]
    # A logged line holds its own step's numbers (not a mean since the last line): its reward is the
    # mean over that step's samples, all of which are in samples.jsonl (log_completions_rate=1).
    samples = jsonl(out / "samples.jsonl")
    assert sorted({s["step"] for s in samples}) == [1, 2, 3, 4, 5]
    for r in train_rows:
        mine = [s["reward"] for s in samples if s["step"] == r["step"]]
        assert len(mine) == 8
        assert r["reward"] == pytest.approx(sum(mine) / 8, abs=1e-6)


def test_eval_steps_evaluates_every_nth_step_and_at_the_end(logged_run):
    out, result, *_ = logged_run
    evals = jsonl(out / "eval_results.jsonl")
    assert [e["step"] for e in evals] == [2, 4, 5]  # every 2 steps, and eval_on_end at step 5
    assert all(e["n"] == 2 for e in evals)
    assert sorted(p.name for p in (out / "eval").iterdir()) == ["step-2.jsonl", "step-4.jsonl", "step-5.jsonl"]
    assert [r["step"] for r in jsonl(out / "metrics.jsonl") if "eval/accuracy" in r] == [2, 4, 5]
    assert result["eval_end"] == {k: v for k, v in evals[-1].items() if k != "step"}


def test_scheme_plus_weighted_user_reward_and_a_raising_scorer(logged_run):
    """Each sample's reward is the Countdown scheme's (0 where it raised) plus 0.5 x vowel_share,
    recomputed here with the real scorer; failures are counted per step and the run went on."""
    out, _, real, _ = logged_run
    task = get_task("countdown", reward="tinyzero", template="base")
    samples = jsonl(out / "samples.jsonl")
    raised = 0
    for s in samples:
        v = vowel_share(s["completion"])
        assert s["parts"]["vowel_share"] == v
        if len(s["completion"]) % 2:
            raised += 1
            scheme = 0.0
            assert s["parts"].keys() == {"vowel_share"} or all(
                s["parts"][k] == 0.0 for k in s["parts"] if k != "vowel_share")
            assert not s["correct"] and not s["formatted"]
        else:
            scheme = real(task, s["completion"], s["example"]).reward
        assert s["reward"] == pytest.approx(scheme + WEIGHT * v, abs=1e-12), s
    assert 0 < raised < len(samples)  # both kinds happened
    rows = {r["step"]: r for r in jsonl(out / "metrics.jsonl") if "reward" in r}
    for step, r in rows.items():
        mine = [s for s in samples if s["step"] == step]
        assert r.get("reward_errors/countdown", 0) == sum(len(s["completion"]) % 2 for s in mine)
        assert r["reward/vowel_share"] == pytest.approx(sum(vowel_share(s["completion"]) for s in mine) / 8, abs=1e-12)
    assert max(rows) == 5  # the run went on to the end


# ---- num_train_epochs (the same run) ----------------------------------------------------------------

def test_num_train_epochs_sets_the_steps_and_each_epoch_sees_every_row_once(logged_run):
    out, _, _, train_rows = logged_run
    samples = jsonl(out / "samples.jsonl")
    assert sorted({s["step"] for s in samples}) == [1, 2, 3, 4, 5]  # ceil(1.5 x 6 / 2) steps
    assert [r["epoch"] for r in jsonl(out / "metrics.jsonl") if "reward" in r] == pytest.approx([2 / 3, 1 + 1 / 3,
                                                                                                1 + 2 / 3])
    key = [json.dumps({"nums": r["nums"], "target": r["target"]}) for r in train_rows]
    seen = {}
    for s in samples:
        ex = json.dumps({"nums": s["example"]["nums"], "target": s["example"]["target"]})
        if ex not in seen.setdefault(s["step"], []):
            seen[s["step"]].append(ex)
    assert all(len(v) == 2 for v in seen.values())
    first, second = seen[1] + seen[2] + seen[3], seen[4] + seen[5]
    assert sorted(first) == sorted(key)  # epoch 1: every row once
    assert len(set(second)) == 4 and set(second) <= set(key)  # half of epoch 2: 4 other rows
    assert first != key  # in a shuffled order


# ---- PPO critic warmup -------------------------------------------------------------------------------

def test_critic_warmup_updates_only_the_critic(tiny_qwen2, tmp_path):
    out = tmp_path / "run"
    cfg = config(tiny_qwen2, out, algorithm="ppo", num_generations=1, critic_warmup_steps=1, max_steps=2,
                 save_steps=1, kl_coef=0.0, critic_learning_rate=1e-2, scale_rewards="none",
                 reward_funcs=[f"{TOY}:vowel_share"], weight_decay=0.01)
    Trainer(TrainConfig(**cfg)).train()
    start = load_file(tiny_qwen2 / "model.safetensors")

    def changed(a, b, prefix=""):
        return [k for k in a if k.startswith(prefix) and not torch.equal(a[k], b[k])]

    p1, p2 = load_file(out / "checkpoint-1" / "model.safetensors"), load_file(out / "checkpoint-2" / "model.safetensors")
    c1 = load_file(out / "checkpoint-1" / "critic" / "model.safetensors")
    assert changed(p1, start) == []  # step 1: the policy waits, bit for bit
    assert changed(p2, start)  # step 2: the policy moves
    # The critic's backbone started as the policy's (same names): it moved during the warmup step.
    backbone = {k: v for k, v in c1.items() if k.startswith("model.")}
    assert backbone and changed(backbone, start)
    rows = [r for r in jsonl(out / "metrics.jsonl") if "reward" in r]
    assert "grad_norm" not in rows[0] and "critic/grad_norm" in rows[0]
    assert "grad_norm" in rows[1] and "critic/grad_norm" in rows[1]
    # weight_decay reaches both AdamWs (the TinyZero PPO recipe's 0.01 is veRL's, for actor and critic).
    heavy = torch.load(out / "checkpoint-2" / "trainer_state.pt", weights_only=False)
    assert [g["weight_decay"] for k in ("optimizer", "critic_optimizer") for g in heavy[k]["param_groups"]] == [0.01] * 2


def test_tinyzero_recipes_use_verl_weight_decay():
    from r1zero.config import load_config

    names = ("countdown-tinyzero-grpo", "countdown-tinyzero-ppo")
    assert [load_config(str(REPO / "configs" / f"{n}.yaml")).weight_decay for n in names] == [0.01] * 2


# ---- a too-long prompt beyond the rows checked at the start -----------------------------------------

def test_a_long_prompt_after_the_first_256_rows_stops_the_run_when_drawn(tiny_qwen2, tmp_path, capsys):
    """The start checks the first 256 train rows; a longer prompt further in is refused, never cut,
    when its step draws it: the run stops with the one-line message (exit status 2) and the steps
    before it are saved, so a resume with a larger max_prompt_length goes on from there."""
    rows = [{"nums": [3 + i % 50, 7, 11], "target": 21} for i in range(302)]
    long_row = 299  # a train row (the last 2 rows are the test split), after the first 256
    rows[long_row] = {"nums": list(range(1, 121)), "target": 98}
    data = tmp_path / "data.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    # A seed whose order draws the long row at step 2 (of 2 prompts each).
    seed = next(s for s in range(10_000) if long_row in draw_batch(300, DataPosition(), 4, s)[0][2:])
    out = tmp_path / "run"
    cfg = config(tiny_qwen2, out, task_args={}, dataset_name=str(data), test_size=2, seed=seed, max_steps=2,
                 save_steps=1, num_generations=2)
    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump(cfg))
    capsys.readouterr()
    assert cli.main(["train", "--config", str(path)]) == 2
    err = [line for line in capsys.readouterr().err.splitlines() if line.startswith("r1zero: error:")]
    assert len(err) == 1 and "max_prompt_length: a prompt has" in err[0] and "(> 256)" in err[0], err
    assert "raise max_prompt_length" in err[0]
    assert [r["step"] for r in jsonl(out / "metrics.jsonl") if "reward" in r] == [1]
    assert sorted(p.name for p in out.glob("checkpoint-*")) == ["checkpoint-1"]


# ---- resuming under another number of processes -----------------------------------------------------

def test_resume_under_another_process_count_is_refused(logged_run, tmp_path):
    """The one-process run above saved checkpoint-5; a resume of it under torchrun with 2 processes
    is refused with one line and changes nothing."""
    src, *_ = logged_run
    out = tmp_path / "run"
    out.mkdir()
    shutil.copytree(src / "checkpoint-5", out / "checkpoint-5")
    assert json.loads((out / "checkpoint-5" / "trainer_state.json").read_text())["world_size"] == 1
    cfg = yaml.safe_load((src / "config.yaml").read_text())
    cfg.update(output_dir=str(out), resume_from_checkpoint="auto", max_steps=6, device="cpu")
    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump(cfg))
    before = sorted((str(p.relative_to(out)), p.stat().st_mtime_ns) for p in out.rglob("*"))
    r = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                        "-m", "r1zero", "train", "--config", str(path)], capture_output=True, text=True, timeout=600,
                       env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert r.returncode != 0
    err = [line for line in r.stderr.splitlines() if line.startswith("r1zero: error:")]
    want = (f"r1zero: error: resume_from_checkpoint: {out / 'checkpoint-5'} was saved by 1 process(es) and this "
            "run has 2; resume it without torchrun, or start a new output_dir")
    # Each rank says it before any model loads (torchrun may stop the other one before it prints).
    assert err and set(err) == {want}, r.stderr[-3000:]
    assert sorted((str(p.relative_to(out)), p.stat().st_mtime_ns) for p in out.rglob("*")) == before
