"""Crash safety: training is killed with SIGKILL at random moments (during generation, during the
update, just after an optimizer step, halfway through a metrics line, in the middle of a checkpoint
write, between the two renames of a re-save, with the reward workers live, and after a random
delay), 11 times, and resumed with resume_from_checkpoint=auto each time. No checkpoint is ever
half-written, every resume starts from the newest complete checkpoint, no reward worker outlives
its trainer, no hidden folder is left at the end, and the final weights, metrics and samples equal
those of an uninterrupted run.

The runs are `r1zero train` (cli.main) in processes forked from tests/train_launcher.py, which has
the heavy imports done once; the pause points come from tests/fault_points.py (R1ZERO_PAUSE_AT).
"""
import json
import os
import random
import select
import signal
import subprocess
import sys
import time

import pytest
import torch
import yaml
from conftest import REPO
from safetensors.torch import load_file

from r1zero.training.checkpoint import list_checkpoints

MAX_STEPS = 4
TIMING = ("time/", "tokens_per_second")


class Launcher:
    def __init__(self):
        env = {**os.environ, "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}
        self.proc = subprocess.Popen([sys.executable, str(REPO / "tests" / "train_launcher.py")], cwd=REPO, env=env,
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        assert json.loads(self.proc.stdout.readline()) == {"ready": True}

    def start(self, argv, log, env=None) -> int:
        self.proc.stdin.write(json.dumps({"argv": argv, "log": str(log), "env": env or {}}) + "\n")
        self.proc.stdin.flush()
        return json.loads(self.proc.stdout.readline())["pid"]

    def wait(self) -> int:
        return json.loads(self.proc.stdout.readline())["exit"]

    def finished(self) -> bool:
        """Whether the running child has already ended (its exit line is waiting to be read)."""
        return bool(select.select([self.proc.stdout], [], [], 0)[0])

    def close(self):
        self.proc.stdin.close()
        self.proc.wait(timeout=60)


def recipe(model_dir, out) -> dict:
    return dict(
        model_name_or_path=str(model_dir), task="countdown", template="base", reward="tinyzero",
        task_args={"train_size": 16, "test_size": 4}, prompts_per_step=2, num_generations=4,
        micro_batch_size=3, max_prompt_length=256, max_completion_length=10, learning_rate=1e-2,
        max_steps=MAX_STEPS, save_steps=1, save_total_limit=2, eval_on_end=False, output_dir=str(out),
        report_to=["none"], log_completions_rate=0.25, disable_tqdm=True, seed=11,
        reward_funcs=[f"{REPO / 'tests' / 'toy_rewards.py'}:vowel_share"],
        reward_timeout=0.0)  # in-process: a worker's start would double each short run's cost


def assert_all_checkpoints_complete(out):
    """Every checkpoint-N folder is whole: its state says N, weights and optimizer state load."""
    for p in out.glob("checkpoint-*"):
        assert p.is_dir()
        state = json.loads((p / "trainer_state.json").read_text())
        assert p.name == f"checkpoint-{state['step']}"
        assert load_file(p / "model.safetensors")
        assert torch.load(p / "trainer_state.pt", weights_only=False)["optimizer"]["state"]
    assert [p for _, p in list_checkpoints(out)] == sorted(out.glob("checkpoint-*"),
                                                          key=lambda p: int(p.name.split("-")[1]))


def metrics(out):
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    return [{k: v for k, v in r.items() if not k.startswith(TIMING)} for r in rows]


def hidden(out):
    """The hidden folders of a run (checkpoints in flight or left by a kill), without touching them
    (list_checkpoints would put a recoverable one back)."""
    return sorted(p.name for p in out.iterdir() if p.name.startswith("."))


def reward_workers(pid):
    """Live reward-worker processes whose parent is ``pid`` (or, once it is dead, that were)."""
    found = []
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            stat = open(f"/proc/{d}/stat").read().rsplit(")", 1)[1].split()
            cmd = open(f"/proc/{d}/cmdline", "rb").read()
        except OSError:
            continue
        if int(stat[1]) == pid and b"r1zero.sandbox.worker" in cmd:
            found.append(int(d))
    return found


def alive(pid):
    """Whether ``pid`` runs (a zombie, dead but not yet reaped by its new parent, does not)."""
    try:
        return open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


# What each kill lands on (tests/fault_points.py); "workers" is an update with the reward workers live
# (reward_timeout > 0), "random" a kill after a random delay.
PHASES = ["generate", "update", "checkpoint", "random", "optimizer", "metrics", "workers", "random", "checkpoint",
          "generate"]


def test_sigkill_at_random_moments_then_resume_equals_an_uninterrupted_run(tiny_qwen2, tmp_path):
    launcher = Launcher()
    try:
        full, crash = tmp_path / "full", tmp_path / "crash"
        for name, out in (("full", full), ("crash", crash)):
            path = tmp_path / f"{name}.yaml"
            path.write_text(yaml.safe_dump(recipe(tiny_qwen2, out)))
        launcher.start(["train", "--config", str(tmp_path / "full.yaml")], tmp_path / "full.log")
        assert launcher.wait() == 0, (tmp_path / "full.log").read_text()[-3000:]

        rng = random.Random(2024)
        argv = ["train", "--config", str(tmp_path / "crash.yaml")]
        kills, paused = [], []
        for attempt, phase in enumerate(PHASES):
            found = list_checkpoints(crash)
            latest = found[-1][1] if found else None
            done = found[-1][0] if found else 0
            step = min(MAX_STEPS, done + 1 + (rng.random() < 0.3))
            pause_file = tmp_path / f"paused-{attempt}"
            log = tmp_path / f"run-{attempt}.log"
            if phase == "random":
                # A kill after a random delay; if the run gets that far first, it waits at its last
                # checkpoint write, so it never finishes before the kill.
                spec = f"checkpoint@{MAX_STEPS}#1"
            else:
                count = {"generate": rng.randint(1, 6), "update": rng.randint(1, 3)}.get(phase, 1)
                spec = f"{'update' if phase == 'workers' else phase}@{step}#{count}"
            run_argv = argv + ["reward_timeout=5"] if phase == "workers" else argv
            pid = launcher.start(run_argv, log, {"R1ZERO_PAUSE_AT": spec, "R1ZERO_PAUSE_FILE": str(pause_file)})
            deadline = time.time() + (rng.uniform(0.5, 4.0) if phase == "random" else 120)
            while time.time() < deadline and not pause_file.exists() and not launcher.finished():
                time.sleep(0.02)
            if phase != "random":
                assert pause_file.exists(), log.read_text()[-3000:]
                paused.append(pause_file.read_text().split()[0])
            workers = reward_workers(pid)
            os.kill(pid, signal.SIGKILL)
            assert launcher.wait() == -signal.SIGKILL
            kills.append((phase, spec if pause_file.exists() else "random delay"))
            if phase == "workers":  # the workers were live, and the kernel kills them with the trainer
                assert workers, "no reward worker ran with reward_timeout > 0"
                until = time.time() + 10
                while any(alive(w) for w in workers) and time.time() < until:
                    time.sleep(0.05)
                assert not [w for w in workers if alive(w)], f"reward workers {workers} outlived the trainer"
            text = log.read_text()
            if latest is not None and phase != "random":  # it resumed from the last complete checkpoint
                assert f"resumed from {latest} at step {done}" in text, text[-3000:]
            assert "Traceback" not in text, text[-3000:]
            if phase == "metrics":  # killed mid-line: the last line of metrics.jsonl is cut short
                last = (crash / "metrics.jsonl").read_text().splitlines()[-1]
                with pytest.raises(json.JSONDecodeError):
                    json.loads(last)
            assert_all_checkpoints_complete(crash)
            if phase == "checkpoint":  # killed mid-write: the half-written folder is hidden and ignored
                assert list(crash.glob(f".tmp-checkpoint-{step}-*"))
                assert not (crash / f"checkpoint-{step}").exists() or step <= done

        # Every pause point was reached by the process that was killed there (its own note says so).
        assert sorted({spec.split("@")[0] for spec in paused}) == ["checkpoint", "generate", "metrics", "optimizer",
                                                                   "update"]
        assert len(kills) == len(PHASES) and sum(k[0] == "random" for k in kills) == 2
        found = list_checkpoints(crash)
        launcher.start(argv, tmp_path / "finish.log")  # runs to the end
        assert launcher.wait() == 0, (tmp_path / "finish.log").read_text()[-3000:]
        if found:
            assert f"resumed from {found[-1][1]} at step {found[-1][0]}" in (tmp_path / "finish.log").read_text()
        assert_all_checkpoints_complete(crash)
        assert hidden(crash) == []  # leftovers of killed writes are cleaned up
        final = crash / f"checkpoint-{MAX_STEPS}"

        # The re-save window: a run resumed from the checkpoint before the last saves the last step again,
        # replacing its folder in two renames. Killed between them, the checkpoint is only in hidden folders...
        pause_file = tmp_path / "paused-resave"
        before_last = f"resume_from_checkpoint={crash / f'checkpoint-{MAX_STEPS - 1}'}"
        pid = launcher.start(argv + [before_last], tmp_path / "resave.log",
                             {"R1ZERO_PAUSE_AT": f"resave@{MAX_STEPS}#1", "R1ZERO_PAUSE_FILE": str(pause_file)})
        while not pause_file.exists() and not launcher.finished():
            time.sleep(0.02)
        assert pause_file.exists(), (tmp_path / "resave.log").read_text()[-3000:]
        os.kill(pid, signal.SIGKILL)
        assert launcher.wait() == -signal.SIGKILL
        assert not final.exists()
        left = hidden(crash)
        assert [n.split("-checkpoint")[0] for n in left] == [".old", ".tmp"], left
        # ...and the next run finds it all the same (the run is finished: nothing is trained again), then
        # leaves no hidden folder behind.
        launcher.start(argv, tmp_path / "final.log")
        assert launcher.wait() == 0, (tmp_path / "final.log").read_text()[-3000:]
        assert f"{crash} finished at step {MAX_STEPS} already" in (tmp_path / "final.log").read_text()
        assert_all_checkpoints_complete(crash)
        assert hidden(crash) == []

        a = load_file(full / f"checkpoint-{MAX_STEPS}" / "model.safetensors")
        b = load_file(final / "model.safetensors")
        assert a.keys() == b.keys()
        for k in a:
            assert torch.equal(a[k], b[k]), k
        start = load_file(tiny_qwen2 / "model.safetensors")
        assert any(not torch.equal(a[k], start[k]) for k in a)  # training did move the weights
        assert metrics(crash) == metrics(full)
        assert (crash / "samples.jsonl").read_text() == (full / "samples.jsonl").read_text()
        print("kills:", kills)
    finally:
        launcher.close()
