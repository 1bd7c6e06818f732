"""Users' reward functions that fail or hang, non-finite updates, and the disk bound of a run folder.

Everything runs in-process on the tiny random Qwen2 model; the user rewards are real files
(tests/hostile_rewards.py) run the way a user's would, in their worker processes.
"""
import json
import math
import os
import time

import pytest
import torch
from conftest import REPO
from safetensors.torch import load_file

from r1zero import cli
from r1zero.config import TrainConfig
from r1zero.training.guards import RunHealth, RunStopped
from r1zero.rewards.scoring import RewardScorer
from r1zero.sandbox.worker import RewardWorker, worker_pid
from r1zero.training.trainer import Trainer

HOSTILE = REPO / "tests" / "hostile_rewards.py"
TOY = REPO / "tests" / "toy_rewards.py"


def config(model_dir, out, **extra) -> TrainConfig:
    c = dict(model_name_or_path=str(model_dir), task="countdown", template="base", reward="tinyzero",
             task_args={"train_size": 16, "test_size": 4}, prompts_per_step=2, num_generations=4,
             micro_batch_size=8, max_prompt_length=256, max_completion_length=8,
             learning_rate=1e-2, max_steps=3, save_steps=0, eval_on_end=False, output_dir=str(out),
             report_to=["none"], log_completions_rate=0.0, disable_tqdm=True, seed=5,
             reward_funcs=[f"{TOY}:vowel_share"], reward_timeout=0.0)
    c.update(extra)
    return TrainConfig(**c)


def metrics(out):
    return [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]


# ---- user reward functions ------------------------------------------------------------------------

def test_every_kind_of_failure_scores_zero_and_is_counted():
    kinds = ["raise", "none", "nan", "inf", "list", "text", "die", "ok"]
    completions = [f"{k} answer" for k in kinds]
    for timeout in (0.0, 5.0):  # in-process, and in a worker process
        if timeout == 0.0:
            completions_here = [c for c in completions if not c.startswith("die")]  # would end pytest
        else:
            completions_here = completions
        rm = RewardScorer(None, [f"{HOSTILE}:misbehave", f"{HOSTILE}:good"], [1.0, 2.0], timeout=timeout)
        try:
            s = rm(completions_here, [{"target": 1}] * len(completions_here))
        finally:
            rm.close()
        n = len(completions_here)
        assert s.parts["misbehave"] == [0.0] * (n - 1) + [0.5]
        assert s.errors == {"misbehave": n - 1}
        # The other reward is unaffected, also after the worker of the first one died mid-batch.
        assert s.parts["good"] == [len(c) / 100 for c in completions_here]
        assert s.rewards == [p + 2 * g for p, g in zip(s.parts["misbehave"], s.parts["good"])]
        assert s.error_reasons["misbehave"] == "ZeroDivisionError: boom"


def test_example_fields_and_prompt_reach_the_worker():
    rm = RewardScorer(None, [f"{HOSTILE}:echo_target"], timeout=5.0)
    try:
        s = rm(["a", "b"], [{"target": 3}, {"target": 4}], ["P", "Q"])
    finally:
        rm.close()
    assert s.rewards == [3.5, 4.0] and not s.errors


def test_a_reward_stuck_in_c_code_is_killed_at_the_time_limit():
    w = RewardWorker(f"{HOSTILE}:hang_in_c", timeout=0.5)
    try:
        w(["warm"], [{}], [None])
        first = worker_pid(w)
        t0 = time.perf_counter()
        out = w(["a", "hang", "b", "hang", "c"], [{}] * 5, [None] * 5)
        elapsed = time.perf_counter() - t0
        assert [v for v, _ in out] == [1.0, None, 1.0, None, 1.0]
        assert out[1][1] == "timed out after 0.5 s"
        # two limits plus two worker restarts (each a fresh interpreter, ~0.3 s), not the minutes
        # that 2 ** (10 ** 10) takes
        assert 1.0 <= elapsed < 6.0, elapsed
        assert w.restarts == 2 and worker_pid(w) != first
        with pytest.raises(ProcessLookupError):
            os.kill(first, 0)  # the stuck worker is gone
    finally:
        w.close()
    w = RewardWorker(f"{HOSTILE}:hang_in_python", timeout=0.3)
    try:
        assert [v for v, _ in w(["hang", "x"], [{}] * 2, [None] * 2)] == [None, 1.0]
    finally:
        w.close()


def test_worker_overhead_per_call_is_small():
    """A step's completions go to the worker in one message; measured per completion."""
    n = 2000
    comps = ["x" * 300] * n
    examples = [{"nums": [44, 19, 35], "target": 98}] * n
    rm_in = RewardScorer(None, [f"{HOSTILE}:good"], timeout=0.0)
    rm_w = RewardScorer(None, [f"{HOSTILE}:good"], timeout=10.0)
    try:
        rm_w(comps[:1], examples[:1])  # start the worker
        t0 = time.perf_counter()
        a = rm_in(comps, examples)
        t1 = time.perf_counter()
        b = rm_w(comps, examples)
        t2 = time.perf_counter()
    finally:
        rm_w.close()
    assert a.rewards == b.rewards
    overhead_us = ((t2 - t1) - (t1 - t0)) / n * 1e6
    print(f"reward worker overhead: {overhead_us:.1f} us per completion")
    assert overhead_us < 1000


def test_run_goes_on_through_partial_failures_and_stops_on_a_reward_that_always_fails(tiny_qwen2, tmp_path, capsys):
    # Partial failures: counted, the run finishes.
    tr = Trainer(config(tiny_qwen2, tmp_path / "partial", reward_funcs=[f"{HOSTILE}:fails_on_odd_length",
                        f"{TOY}:vowel_share"], reward_timeout=5.0, max_steps=2, max_failed_reward_steps=1))
    rows = []
    for _ in range(2):
        rows.append(tr.train_step()[0])
        tr.health.raise_if_stopped()  # what the loop does after each step: it must not stop here
    tr.rewarder.close()
    errors = [m.get("reward_errors/fails_on_odd_length", 0) for m in rows]
    assert 0 < sum(errors) and max(errors) < 8, errors  # some samples failed, never all of a step
    assert all(m["reward/vowel_share"] > 0 for m in rows)  # the other reward kept scoring

    # A reward that fails on every sample: stops after max_failed_reward_steps steps, via the CLI.
    out = tmp_path / "broken"
    path = tmp_path / "r.yaml"
    import yaml

    cfg = config(tiny_qwen2, out, reward_funcs=[f"{HOSTILE}:always_raises"], reward_timeout=5.0,
                 max_failed_reward_steps=2, max_steps=5).to_dict()
    path.write_text(yaml.safe_dump(cfg))
    capsys.readouterr()
    assert cli.main(["train", "--config", str(path)]) == 1
    err = [line for line in capsys.readouterr().err.splitlines() if line.startswith("r1zero: error:")]
    assert err == ["r1zero: error: stopped at step 2: reward 'always_raises' failed on every sample for 2 "
                   "consecutive steps (e.g. KeyError: 'answer'); fix it or remove it from reward_funcs, or raise "
                   "max_failed_reward_steps (2)"]
    rows = [m for m in metrics(out) if "reward" in m]
    assert [(m["step"], m["reward_errors/always_raises"]) for m in rows] == [(1, 8), (2, 8)]
    assert not list(out.glob("checkpoint-*"))  # save_steps=0: nothing saved on the way


# ---- reward files: imported in the worker, their output, children and memory ---------------------

@pytest.mark.parametrize("body, words", [
    ("while True:\n    pass\n", ["took over 6 s in its worker", "a loop at import?", "raise reward_timeout"]),
    ("import os\nos._exit(0)\n", ["ended its worker (exit code 0)", "remove the exit"]),
    ("import sys\nsys.exit(0)\n", ["raised SystemExit: 0", "fix its import"]),
    ("raise ImportError('no module named grader')\n", ["cannot import", "ImportError: no module named grader"]),
])
def test_a_reward_file_that_hangs_exits_or_fails_at_import_is_one_line(body, words, tiny_qwen2, tmp_path, capsys,
                                                                       monkeypatch):
    """The file is imported in the worker, never in the trainer (where a loop hung the run silently and
    os._exit(0) ended `r1zero train` with status 0, having trained nothing): one line naming the file,
    exit status 2, within the time limit (reward_timeout, here 6 s), before any model loads."""
    import yaml

    import r1zero.model_setup

    bad = tmp_path / "grader.py"
    bad.write_text(body + "def score(completion, **fields):\n    return 1.0\n")
    out = tmp_path / "out"
    path = tmp_path / "r.yaml"
    path.write_text(yaml.safe_dump(config(tiny_qwen2, out, reward_funcs=[f"{bad}:score"], reward_timeout=6.0).to_dict()))
    loaded = []
    monkeypatch.setattr(r1zero.model_setup, "load_model", lambda *a, **k: loaded.append(a))
    capsys.readouterr()
    t0 = time.perf_counter()
    rc = cli.main(["train", "--config", str(path)])
    elapsed = time.perf_counter() - t0
    err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert rc == 2 and len(err) == 1, err
    assert err[0].startswith("r1zero: error: reward_funcs: ") and str(bad) in err[0], err
    for w in words:
        assert w in err[0], (w, err[0])
    assert elapsed < 6.0 + 4.0, elapsed  # the limit, plus starting the trainer's checks
    assert not loaded and not out.exists()


def test_what_a_reward_prints_stays_out_of_the_trainers_output(capfd, caplog):
    """50 MB a call on stdout and stderr: the trainer's own stdout/stderr get none of it; the first
    OUTPUT_LINES lines are in the log, the rest counted; the values still arrive."""
    import logging

    from r1zero.sandbox.worker import OUTPUT_LINES

    caplog.set_level(logging.INFO, logger="r1zero")
    rm = RewardScorer(None, [f"{HOSTILE}:prints_a_lot"], timeout=30.0)
    try:
        s = rm(["a", "b"], [{}, {}])
    finally:
        rm.close()
    assert s.rewards == [1.0, 1.0] and not s.errors
    out, err = capfd.readouterr()
    assert len(out) + len(err) < 10_000, (len(out), len(err))
    said = [r.getMessage() for r in caplog.records if "prints_a_lot" in r.getMessage()]
    assert said[:OUTPUT_LINES] == [f"reward_funcs prints_a_lot printed: line {i} of a" for i in range(20)]
    # the rest: 25 MB lines of x and y from call a, then 20 lines, x and y from call b
    assert said[OUTPUT_LINES:] == [f"reward_funcs prints_a_lot printed 24 more lines (not shown; the first "
                                   f"{OUTPUT_LINES} are above)"]


def _running(pid: int) -> bool:
    """Whether ``pid`` is a live process (a zombie that no one reaped yet is not)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def _gone_soon(pid: int) -> bool:
    deadline = time.monotonic() + 5
    while _running(pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    return not _running(pid)


def test_processes_a_reward_starts_end_with_its_worker(tmp_path):
    """The worker leads a process group: a worker stopped at the time limit, and one closed at the end
    of a run, take the `sleep 300`s their reward started with them."""
    pid_file = tmp_path / "pid"
    w = RewardWorker(f"{HOSTILE}:starts_a_child", timeout=2.0)
    try:
        assert w(["ok"], [{"pid_file": str(pid_file)}], [None]) == [(1.0, None)]
        first = int(pid_file.read_text())
        assert _running(first)  # a reward's child may live while its worker does
        out = w(["hang"], [{"pid_file": str(pid_file)}], [None])  # this worker is stopped at the limit
        assert out == [(None, "timed out after 2 s")]
        hung = int(pid_file.read_text())
        assert hung != first and _gone_soon(hung) and _gone_soon(first)
        assert w(["ok"], [{"pid_file": str(pid_file)}], [None]) == [(1.0, None)]  # a fresh worker
        last = int(pid_file.read_text())
        assert _running(last)
    finally:
        w.close()
    assert _gone_soon(last)


def test_a_reward_over_its_memory_limit_is_a_counted_failure():
    """reward_memory_limit caps each worker's data memory: the 1 GiB allocation fails (MemoryError, that
    sample scores 0 and is counted) while the small one and the next call score; without the limit
    the same allocation succeeds."""
    cfg = TrainConfig(reward_funcs=[f"{HOSTILE}:allocates"], reward_memory_limit=0.25, output_dir="unused")
    from r1zero.rewards.scoring import training_scorer
    from r1zero.tasks import build_task

    rm = training_scorer(cfg, build_task(cfg))
    try:
        s = rm(["small", "big", "small"], [{"nums": [1, 2], "target": 3}] * 3)
    finally:
        rm.close()
    assert s.parts["allocates"] == [0.5, 0.0, 0.5]
    assert s.errors == {"allocates": 1} and s.error_reasons["allocates"].startswith("MemoryError")
    rm = RewardScorer(None, [f"{HOSTILE}:allocates"], timeout=10.0, memory_limit=None)
    try:
        s = rm(["big"], [{}])
    finally:
        rm.close()
    assert s.rewards == [1.0] and not s.errors


# ---- non-finite updates ---------------------------------------------------------------------------

def snapshot(trainer):
    weights = {k: v.detach().clone() for k, v in trainer.model.state_dict().items()}
    opt = trainer.optimizer.state_dict()
    state = {i: {k: (v.clone() if torch.is_tensor(v) else v) for k, v in s.items()} for i, s in opt["state"].items()}
    return weights, state


def same(a, b):
    wa, sa = a
    wb, sb = b
    return (wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa)
            and sa.keys() == sb.keys()
            and all(torch.equal(torch.as_tensor(sa[i][k]), torch.as_tensor(sb[i][k])) for i in sa for k in sa[i]))


@pytest.mark.parametrize("algorithm", ["grpo", "ppo"])
def test_non_finite_gradient_or_loss_skips_the_update(tiny_qwen2, tmp_path, algorithm):
    tr = Trainer(config(tiny_qwen2, tmp_path / "out", max_steps=4, algorithm=algorithm))
    poison = {}  # step -> "grad" (inf gradient, finite loss) or "loss" (NaN hidden states in the update)

    def nan_hidden(module, args, output):
        if torch.is_grad_enabled() and poison.get(tr.step + 1) == "loss":
            return output * float("nan")
        return output

    tr.model.model.norm.register_forward_hook(nan_hidden)
    tr.model.lm_head.weight.register_hook(lambda g: g * float("inf") if poison.get(tr.step + 1) == "grad" else g)

    m1, _ = tr.train_step()
    before = snapshot(tr)
    poison[2] = "grad"
    m2, _ = tr.train_step()
    assert m2["skipped_updates"] == 1 and math.isfinite(m2["loss"]) and not math.isfinite(m2["grad_norm"])
    assert same(snapshot(tr), before)  # weights and AdamW state untouched
    poison[3] = "loss"
    m3, _ = tr.train_step()
    assert m3["skipped_updates"] == 1 and not math.isfinite(m3["loss"])
    assert same(snapshot(tr), before)
    assert tr.step == 3 and tr.health.consecutive_skips == 2
    m4, _ = tr.train_step()  # healthy again: it trains
    assert m1["skipped_updates"] == m4["skipped_updates"] == 0 and tr.health.consecutive_skips == 0
    assert not same(snapshot(tr), before)


def test_consecutive_non_finite_updates_stop_the_run(tiny_qwen2, tmp_path):
    out = tmp_path / "out"
    tr = Trainer(config(tiny_qwen2, out, max_steps=6, max_skipped_updates=2, save_steps=1, save_total_limit=None))
    tr.model.model.norm.register_forward_hook(
        lambda m, a, o: o * float("nan") if torch.is_grad_enabled() and tr.step >= 1 else o)
    with pytest.raises(RunStopped) as e:
        tr.train()
    assert str(e.value) == (
        "stopped at step 3: 2 consecutive updates had a non-finite loss or gradient norm and were skipped; "
        "lower learning_rate, set max_grad_norm, check bf16 and the rewards, or raise max_skipped_updates (2)")
    assert [m["skipped_updates"] for m in metrics(out) if "reward" in m] == [0, 1, 1]
    # The checkpoint of the skipped step holds the step-1 weights: nothing was applied after it.
    a = load_file(out / "checkpoint-1" / "model.safetensors")
    b = load_file(out / "checkpoint-2" / "model.safetensors")
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not (out / "checkpoint-3").exists()  # the run stopped before saving the third


def test_run_health_counts_only_consecutive_failures():
    h = RunHealth(max_skipped_updates=2, max_failed_reward_steps=2)

    class S:
        def __init__(self, errors):
            self.errors, self.error_reasons = errors, {}

    assert h.update_ok(torch.tensor(1.0), 1)
    h.note_loss(torch.tensor(float("nan")))
    assert not h.update_ok(torch.tensor(1.0), 2)
    assert h.update_ok(torch.tensor(2.0), 3)  # a healthy update resets the count
    assert not h.update_ok(float("inf"), 4)
    assert h.stop_message is None
    assert h.end_step(1, 4, S({"f": 4})) == {"skipped_updates": 2.0}  # two skips since the last step
    h.end_step(2, 4, S({"f": 3}))  # one sample scored: not an all-failing step
    h.end_step(3, 4, S({"f": 4}))
    assert h.stop_message is None
    h.end_step(4, 4, S({"f": 4}))
    assert "reward 'f' failed on every sample for 2 consecutive steps" in h.stop_message


def test_losses_are_checked_once_per_update_not_per_micro_batch(monkeypatch):
    """A micro-batch's loss stays on the device (reading it would make the host wait for the GPU
    before the next micro-batch is queued); the update's check reads them all at once."""
    from r1zero.training.update import MetricSums

    reads = []
    real = torch.Tensor.__bool__
    monkeypatch.setattr(torch.Tensor, "__bool__", lambda t: reads.append(1) or real(t))
    monkeypatch.setattr(torch.Tensor, "__float__", lambda t: (_ for _ in ()).throw(AssertionError("read a tensor")))
    h, acc = RunHealth(max_skipped_updates=2, max_failed_reward_steps=2), MetricSums()
    for loss in (0.5, float("nan"), 0.25):
        h.note_loss(torch.tensor(loss))
    for value in (0.5, 1.0, 0.25):
        acc.add("loss", torch.tensor(value))
        acc.add_ratio("entropy", torch.tensor(value * 3), 2.0)
    assert reads == []
    monkeypatch.undo()
    assert not h.update_ok(1.0, 1)  # the nan of the second micro-batch is found, once
    assert h.update_ok(1.0, 2)
    acc.add("loss", 0.5)  # plain floats still work beside tensors
    acc.finish(type("Env", (), {"enabled": False})())
    assert acc.total("loss") == 2.25
    assert acc.means() == {"entropy": 0.875}  # (1.5 + 3 + 0.75) / 6


# ---- disk -----------------------------------------------------------------------------------------

def folder_bytes(path):
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def test_ten_saves_with_limit_two_keep_the_last_two(tiny_qwen2, tmp_path):
    out = tmp_path / "out"
    # Two saves from the training loop (save_steps=1), then eight more of the same Trainer.save.
    tr = Trainer(config(tiny_qwen2, out, max_steps=2, save_steps=1, save_total_limit=2, save_optimizer_state=False,
                        eval_on_end=False))
    tr.train()
    for step in range(3, 11):
        tr.step = step
        tr.save()
    assert sorted(p.name for p in out.iterdir() if "checkpoint" in p.name) == ["checkpoint-10", "checkpoint-9"]
    ck = out / "checkpoint-10"
    assert not (ck / "trainer_state.pt").exists()
    assert json.loads((ck / "trainer_state.json").read_text())["step"] == 10
    weights = (ck / "model.safetensors").stat().st_size
    # The folder is bounded: two checkpoints and the logs, no optimizer state. A checkpoint holds what
    # the model folder the run started from holds (the same weights, tokenizer and config) plus its
    # small state file; a third checkpoint, optimizer moments or a leftover folder would not fit.
    one = folder_bytes(tiny_qwen2)
    for kept in (ck, out / "checkpoint-9"):
        assert one < folder_bytes(kept) < one + 10_000, (kept, folder_bytes(kept), one)
    assert 2 * one < folder_bytes(out) < 2 * one + 2_000_000, folder_bytes(out)  # + metrics, samples, config, report
    assert not [p.name for p in out.iterdir() if p.name.startswith(".")]

    # A checkpoint without optimizer state still resumes (the optimizer restarts, the schedule goes on).
    tr = Trainer(config(tiny_qwen2, out, max_steps=11, save_steps=1, save_total_limit=2, save_optimizer_state=False,
                        allow_config_change=["max_steps"]))  # the run was told 2 steps
    assert tr.step == 10 and tr.scheduler.last_epoch == 10
    tr.train_step()
    tr.save()
    assert sorted(p.name for p in out.iterdir() if "checkpoint" in p.name) == ["checkpoint-10", "checkpoint-11"]

    # With optimizer state each checkpoint also holds AdamW's two moments (about 2 x the weights).
    tr.cfg.save_optimizer_state = True
    tr.step = 12
    tr.save()
    assert sorted(p.name for p in out.iterdir() if "checkpoint" in p.name) == ["checkpoint-11", "checkpoint-12"]
    assert (out / "checkpoint-12" / "trainer_state.pt").stat().st_size > 2 * weights * 0.99
