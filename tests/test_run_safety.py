"""What a checkpoint, a second run, a changed config, a damaged file, Ctrl-C or a full disk can do to a
run: never run code, mix two runs or end in a traceback (docs/RELIABILITY.md, "Run folder safety").

Every run is `r1zero train` on the tiny random Qwen2 model: in this process through cli.main, and
for Ctrl-C a real `python tests/fault_points.py train` process (`r1zero train` that pauses where
asked). One uninterrupted 3-step run with a checkpoint per step (``base``) is trained once; each
test works on a copy of its folder.
"""
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time

import pytest
import torch
import yaml
from conftest import REPO
from fault_points import FullDiskAt
from safetensors.torch import load_file

from r1zero import cli
from r1zero.errors import ConfigError, DiskFull
from r1zero.observe.tracking import append_jsonl
from r1zero.training import checkpoint as ckpt
from r1zero.training.run_lock import LOCK

STEPS = 3


def recipe(model_dir, out, **extra) -> dict:
    c = dict(model_name_or_path=str(model_dir), task="countdown", template="base", reward="tinyzero",
             task_args={"train_size": 16, "test_size": 4}, prompts_per_step=2, num_generations=4,
             micro_batch_size=8, max_prompt_length=256, max_completion_length=8, learning_rate=1e-2,
             max_steps=STEPS, save_steps=1, save_total_limit=None, eval_on_end=False, output_dir=str(out),
             report_to=["none"], log_completions_rate=0.25, disable_tqdm=True, seed=3, report_steps=0,
             reward_funcs=[f"{REPO / 'tests' / 'toy_rewards.py'}:vowel_share"], reward_timeout=0.0)
    c.update(extra)
    return c


@pytest.fixture
def one_thread():
    """The runs in this process compute as the `python -m r1zero train` processes do (one thread), so
    weights can be compared bit for bit."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def train(config_path, *overrides, capsys=None, callbacks=None) -> tuple[int, list[str]]:
    """`r1zero train --config PATH overrides...` in this process: (exit status, stderr lines)."""
    if capsys is not None:
        capsys.readouterr()
    rc = cli.main(["train", "--config", str(config_path), *overrides], callbacks=callbacks)
    return rc, (capsys.readouterr().err.splitlines() if capsys is not None else [])


@pytest.fixture(scope="module")
def base(tiny_qwen2, tmp_path_factory):
    """(run folder, its config file) of an uninterrupted run; tests copy it, never change it."""
    root = tmp_path_factory.mktemp("base")
    out = root / "run"
    path = root / "run.yaml"
    path.write_text(yaml.safe_dump(recipe(tiny_qwen2, out)))
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        assert cli.main(["train", "--config", str(path)]) == 0
    finally:
        torch.set_num_threads(n)
    return out, path


def copy_run(base, tmp_path, drop=()) -> tuple:
    """A copy of the base run in tmp_path/run, without the checkpoints of the steps in ``drop``, and its
    config file (output_dir pointing at the copy)."""
    out = tmp_path / "run"
    shutil.copytree(base[0], out)
    for step in drop:
        shutil.rmtree(out / f"checkpoint-{step}")
    cfg = yaml.safe_load(base[1].read_text())
    cfg["output_dir"] = str(out)
    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return out, path


def weights(checkpoint):
    return load_file(checkpoint / "model.safetensors")


def same_weights(a, b) -> bool:
    wa, wb = weights(a), weights(b)
    return wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa)


def errors(lines):
    """The r1zero lines of stderr, and that there is no traceback."""
    assert not any("Traceback" in line for line in lines), "\n".join(lines)
    return [line for line in lines if line.startswith("r1zero:")]


# ---- checkpoints hold no code ---------------------------------------------------------------------

class Payload:
    """Unpickled, it calls open(path, 'w'): the file exists only if the checkpoint ran code."""

    def __init__(self, path):
        self.path = str(path)

    def __reduce__(self):
        return (open, (self.path, "w"))


def test_a_trainer_state_carrying_a_payload_is_refused_without_running_it(base, tmp_path, capsys):
    out, path = copy_run(base, tmp_path, drop=[3])
    state_pt = out / "checkpoint-2" / "trainer_state.pt"
    heavy = torch.load(state_pt, weights_only=True)  # what r1zero wrote loads safely
    assert set(heavy) >= {"optimizer", "scheduler", "python_rng", "torch_rng"}
    marker = tmp_path / "pwned"
    torch.save({**heavy, "extra": Payload(marker)}, state_pt)

    rc, err = train(path, capsys=capsys)
    assert rc == 2
    assert errors(err) == [
        f"r1zero: error: resume_from_checkpoint: {state_pt} holds Python objects beyond tensors and plain values "
        "(io.open), which could run code when loaded; r1zero refuses it: resume from a checkpoint this r1zero "
        "version wrote, or start a new output_dir"]
    assert not marker.exists()
    # Named explicitly, the same.
    rc, err = train(path, f"resume_from_checkpoint={out / 'checkpoint-2'}", capsys=capsys)
    assert rc == 2 and "(io.open)" in errors(err)[0] and not marker.exists()


# ---- the resolved config is the run's identity -----------------------------------------------------

def test_a_changed_result_key_is_refused_and_config_yaml_is_unchanged(base, tmp_path, capsys):
    out, path = copy_run(base, tmp_path, drop=[3])
    before = (out / "config.yaml").read_bytes()
    rc, err = train(path, "learning_rate=5e-3", "num_generations=2", "logging_steps=2", capsys=capsys)
    assert rc == 2
    assert errors(err) == [
        f"r1zero: error: resume: these keys differ from the run's {out / 'config.yaml'} and change the result: "
        "learning_rate 0.01 -> 0.005, num_generations 4 -> 2; start a new output_dir, or continue this run with them "
        "from step 2 by adding allow_config_change=[learning_rate,num_generations] (recorded in config_changes.jsonl)"]
    assert (out / "config.yaml").read_bytes() == before
    assert not (out / "checkpoint-3").exists() and not (out / "config_changes.jsonl").exists()

    # Named in allow_config_change: accepted, trained with, written to config.yaml and recorded.
    rc, _ = train(path, "learning_rate=5e-3", "allow_config_change=[learning_rate]", capsys=capsys)
    assert rc == 0
    assert yaml.safe_load((out / "config.yaml").read_text())["learning_rate"] == 5e-3
    assert [json.loads(x) for x in (out / "config_changes.jsonl").read_text().splitlines()] == [
        {"step": 2, "changes": {"learning_rate": {"old": 0.01, "new": 0.005},
                                "allow_config_change": {"old": [], "new": ["learning_rate"]},
                                "output_dir": {"old": str(base[0]), "new": str(out)}},
         "allowed": ["learning_rate"]}]
    rates = [json.loads(x)["learning_rate"] for x in (out / "metrics.jsonl").read_text().splitlines()]
    assert rates == [0.01, 0.01, 0.005]  # step 3 used the new rate...
    assert not same_weights(out / "checkpoint-3", base[0] / "checkpoint-3")  # ...and its update differs


def test_a_changed_logging_key_is_accepted_logged_and_the_run_is_exact(base, tmp_path, capsys, caplog, one_thread):
    out, path = copy_run(base, tmp_path, drop=[3])
    caplog.set_level("INFO", logger="r1zero")
    rc, err = train(path, "logging_steps=2", "report_to=[jsonl]", "sampling_batch_size=4", capsys=capsys)
    assert rc == 0 and errors(err) == []
    said = [r.getMessage() for r in caplog.records if r.getMessage().startswith("resume: ")]
    assert said == ["resume: logging_steps 1 -> 2 from step 2",
                    f"resume: output_dir {str(base[0])!r} -> {str(out)!r} from step 2",  # the copy
                    "resume: report_to ['none'] -> ['jsonl'] from step 2",
                    "resume: sampling_batch_size None -> 4 from step 2"]
    saved = yaml.safe_load((out / "config.yaml").read_text())
    assert (saved["logging_steps"], saved["report_to"], saved["sampling_batch_size"]) == (2, ["jsonl"], 4)
    assert json.loads((out / "config_changes.jsonl").read_text())["allowed"] == []
    assert same_weights(out / "checkpoint-3", base[0] / "checkpoint-3")  # the result did not change


# ---- one run per output_dir ------------------------------------------------------------------------

def test_a_locked_output_dir_refuses_a_second_run_and_a_stale_lock_is_taken_over(base, tmp_path, capsys):
    out, path = copy_run(base, tmp_path, drop=[3])
    holder = subprocess.Popen(["sleep", "60"])  # a live process of this host holds the lock
    try:
        (out / LOCK).write_text(json.dumps({"pid": holder.pid, "host": socket.gethostname(), "since": "09:00"}))
        rc, err = train(path, capsys=capsys)
        assert rc == 2
        assert errors(err) == [
            f"r1zero: error: output_dir: {out} is in use by another run (pid {holder.pid} on {socket.gethostname()} "
            f"since 09:00); wait for it to end or choose another output_dir (if that run is gone, delete {out / LOCK})"]
        assert not (out / "checkpoint-3").exists()
    finally:
        holder.kill()
        holder.wait()
    # Its process is gone: the lock is stale, taken over, and removed when the run ends.
    rc, err = train(path, capsys=capsys)
    assert rc == 0 and errors(err) == []
    assert (out / "checkpoint-3").is_dir() and not (out / LOCK).exists()
    # Another host's lock is never taken over (its pid cannot be checked from here).
    (out / LOCK).write_text(json.dumps({"pid": 1, "host": "elsewhere", "since": "09:00"}))
    rc, err = train(path, capsys=capsys)
    assert rc == 2 and "in use by another run (pid 1 on elsewhere since 09:00)" in errors(err)[0]


# ---- damaged checkpoints -------------------------------------------------------------------------------

def test_a_truncated_newest_model_resumes_from_the_one_before(base, tmp_path, capsys, caplog, one_thread):
    out, path = copy_run(base, tmp_path)
    bad = out / "checkpoint-3" / "model.safetensors"
    data = bad.read_bytes()
    bad.write_bytes(data[:len(data) // 2])
    caplog.set_level("INFO", logger="r1zero")
    rc, err = train(path, capsys=capsys)
    assert rc == 0 and errors(err) == []
    said = [r.getMessage() for r in caplog.records if "resum" in r.getMessage()]
    assert said[0] == (f"resume: checkpoint-3/model.safetensors is damaged or cut short (Error while deserializing "
                       f"header: incomplete metadata, file not fully covered); resuming from {out / 'checkpoint-2'} "
                       "instead (nothing is deleted: a damaged checkpoint is replaced only when the run saves its step "
                       "again)")
    assert f"resumed from {out / 'checkpoint-2'} at step 2" in said
    assert (out / "checkpoint-1").is_dir() and (out / "checkpoint-2").is_dir()
    assert same_weights(out / "checkpoint-3", base[0] / "checkpoint-3")  # step 3 again, exactly


def test_every_damaged_file_is_named_and_skipped(base, tmp_path, caplog):
    out, _ = copy_run(base, tmp_path)
    caplog.set_level("WARNING", logger="r1zero")
    (out / "checkpoint-3" / "trainer_state.json").write_text("{garbage")
    pt = out / "checkpoint-2" / "trainer_state.pt"
    pt.write_bytes(pt.read_bytes()[:1000])
    assert ckpt.find_resume("auto", out) == out / "checkpoint-1"
    [line] = [r.getMessage() for r in caplog.records]
    assert line.startswith("resume: checkpoint-3/trainer_state.json does not read (Expecting property name enclosed "
                           "in double quotes: line 1 column 2 (char 1)); checkpoint-2/trainer_state.pt is damaged or "
                           "cut short (")
    assert line.endswith(f"); resuming from {out / 'checkpoint-1'} instead (nothing is deleted: a damaged checkpoint "
                         "is replaced only when the run saves its step again)")
    assert sorted(p.name for p in out.glob("checkpoint-*")) == ["checkpoint-1", "checkpoint-2", "checkpoint-3"]
    with pytest.raises(ConfigError, match=r"^resume_from_checkpoint: checkpoint-2/trainer_state.pt is damaged"):
        ckpt.find_resume(str(out / "checkpoint-2"), out)
    (out / "checkpoint-1" / "model.safetensors").write_bytes(b"")
    with pytest.raises(ConfigError, match=r"^resume_from_checkpoint: no checkpoint in .* reads \(checkpoint-3/"):
        ckpt.find_resume("auto", out)


# ---- Ctrl-C ---------------------------------------------------------------------------------------------

def test_ctrl_c_during_a_step_is_one_line_rc_130_and_the_rerun_is_exact(base, tmp_path, capsys, one_thread):
    out, path = copy_run(base, tmp_path)
    for p in out.iterdir():  # a fresh run into this folder, with the base run's config
        shutil.rmtree(p) if p.is_dir() else p.unlink()
    pause = tmp_path / "paused"
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false",
           "R1ZERO_PAUSE_AT": "update@2#1", "R1ZERO_PAUSE_FILE": str(pause)}
    # Its own session: SIGINT to the group, as a terminal sends Ctrl-C to every process of the command.
    # With reward workers (reward_timeout > 0): they get the SIGINT too, and must not print a traceback.
    proc = subprocess.Popen([sys.executable, str(REPO / "tests" / "fault_points.py"), "train", "--config", str(path),
                             "reward_timeout=5"],
                            cwd=REPO, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        deadline = time.time() + 300
        while not pause.exists() and proc.poll() is None and time.time() < deadline:
            time.sleep(0.05)
        assert pause.exists(), proc.communicate()[1][-3000:]
        # While it trains, a second run on its output_dir is refused.
        rc, err = train(path, "reward_timeout=5", capsys=capsys)
        assert rc == 2 and errors(err)[0].startswith(f"r1zero: error: output_dir: {out} is in use by another run "
                                                     f"(pid {proc.pid} on {socket.gethostname()} since ")
        os.killpg(proc.pid, signal.SIGINT)
        # It exits in seconds. It did not in CI once (2026-12-02) and in two suites here started as background
        # jobs (`pytest ... &` ignores SIGINT and the run inherited that; tests/fault_points.py restores it).
        # If it hangs again, its threads' stacks say where.
        try:
            stdout, stderr = proc.communicate(timeout=300)
        except subprocess.TimeoutExpired:
            os.kill(proc.pid, signal.SIGUSR1)  # faulthandler (tests/fault_points.py): every thread's stack
            time.sleep(2)
            proc.kill()
            pytest.fail("the interrupted run had not exited 300 s after its SIGINT; its stderr ends:\n"
                        + proc.communicate()[1][-8000:])
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130, stderr[-3000:]
    assert errors(stderr.splitlines()) == [
        f"r1zero: interrupted after 1 of 3 steps; rerun the same command to resume from {out / 'checkpoint-1'}"]
    assert not (out / LOCK).exists()
    rc, err = train(path, "reward_timeout=5", capsys=capsys)  # the rerun
    assert rc == 0 and errors(err) == []
    assert same_weights(out / "checkpoint-3", base[0] / "checkpoint-3")
    assert (out / "metrics.jsonl").read_text().count("\n") == STEPS
    assert (out / "samples.jsonl").read_text() == (base[0] / "samples.jsonl").read_text()


# ---- a full disk -------------------------------------------------------------------------------------------

def test_a_full_disk_during_a_save_is_one_line_and_the_previous_checkpoint_is_intact(base, tmp_path, capsys,
                                                                                      one_thread):
    out, path = copy_run(base, tmp_path, drop=[3])
    before = {p.name: p.read_bytes() for p in (out / "checkpoint-2").iterdir() if p.is_file()}
    rc, err = train(path, capsys=capsys, callbacks=[FullDiskAt(3)])  # the disk is full from the save of step 3 on
    assert rc == 1
    [line] = errors(err)
    assert line.startswith(f"r1zero: error: output_dir: the disk of {out} is full (")
    assert line.endswith(f" free) while writing checkpoint-3; the previous checkpoint {out / 'checkpoint-2'} is intact; "
                         "free space, then rerun the same command to resume from it")
    assert {p.name: p.read_bytes() for p in (out / "checkpoint-2").iterdir() if p.is_file()} == before
    assert sorted(p.name for p in out.iterdir() if "checkpoint" in p.name) == ["checkpoint-1", "checkpoint-2"]
    for line in (out / "metrics.jsonl").read_text().splitlines():
        json.loads(line)
    rc, err = train(path, capsys=capsys)  # room again: the rerun resumes and ends as the uninterrupted run
    assert rc == 0 and errors(err) == []
    assert same_weights(out / "checkpoint-3", base[0] / "checkpoint-3")


def mount_tmpfs(path, size) -> bool:
    path.mkdir()
    if os.geteuid() != 0:
        return False
    return subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)],
                          capture_output=True).returncode == 0


def test_a_real_full_disk(base, tmp_path):
    """On a small tmpfs (needs root to mount; the injected test above runs everywhere): the check before a
    save, the failure of a write, and a metrics line that does not fit."""
    disk = tmp_path / "disk"
    if not mount_tmpfs(disk, "24m"):
        pytest.skip("mounting a tmpfs needs root")
    try:
        from transformers import AutoModelForCausalLM

        model = AutoModelForCausalLM.from_pretrained(base[0] / "checkpoint-3")
        size = ckpt.folder_bytes(base[0] / "checkpoint-3")
        out = disk / "run"
        first = ckpt.save_checkpoint(out, 1, model, None, {"step": 1, "data_position": {}})
        # The next one would not fit beside it: refused before anything is written.
        with pytest.raises(DiskFull, match=r"^output_dir: the disk of .* is full \(.* MB free\) while writing "
                                           r"checkpoint-2; the previous checkpoint .*checkpoint-1 is intact; it needs "
                                           r"about 12.1 MB \(the size of checkpoint-1\)"):
            ckpt.save_checkpoint(out, 2, model, None, {"step": 2, "data_position": {}},
                                 tensor_state={"big": torch.zeros(size // 4)})
        assert sorted(p.name for p in out.iterdir()) == ["checkpoint-1"]
        # The first save of another run has no size to check against: torch.save fails on the full disk.
        with pytest.raises(DiskFull, match=r"while writing checkpoint-1; the previous checkpoint \(none yet\) is intact"):
            ckpt.save_checkpoint(disk / "other", 1, model, None, {"step": 1, "data_position": {}},
                                 tensor_state={"big": torch.zeros(3 * size // 4)})
        assert list((disk / "other").iterdir()) == []  # its half-written folder is gone
        assert ckpt.damage(first) is None  # the first run's checkpoint reads
        # A metrics line that does not fit is not written at all.
        metrics = out / "metrics.jsonl"
        append_jsonl(metrics, {"step": 1, "x": "a"})
        free = shutil.disk_usage(disk).free
        (disk / "filler").write_bytes(b"\0" * (free - 1024))
        with pytest.raises(DiskFull, match=r"while writing metrics.jsonl"):
            append_jsonl(metrics, {"step": 2, "x": "b" * 100_000})
        assert metrics.read_text() == '{"step": 1, "x": "a"}\n'
    finally:
        subprocess.run(["umount", str(disk)], check=False)


# ---- a finished run ------------------------------------------------------------------------------------------

def test_rerunning_a_finished_run_does_nothing_and_never_evaluates_twice(base, tmp_path, capsys):
    out, path = copy_run(base, tmp_path)
    files = {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()}
    capsys.readouterr()
    assert cli.main(["train", "--config", str(path)]) == 0
    said = capsys.readouterr()
    assert said.out.splitlines() == [
        f"{out} finished at step 3 already; nothing trained or evaluated again (model: {out / 'checkpoint-3'}; to "
        "train on, raise max_steps with allow_config_change=[max_steps], or start a new output_dir)"]
    assert {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()} == files
    # The final evaluation asked for (it was off): run once, on the last checkpoint, not trained again...
    assert cli.main(["train", "--config", str(path), "eval_on_end=true"]) == 0
    evals = (out / "eval_results.jsonl").read_text().splitlines()
    assert [json.loads(x)["step"] for x in evals] == [3]
    assert (out / "checkpoint-3" / "model.safetensors").read_bytes() == files_of(base[0] / "checkpoint-3")
    # ...and not again.
    capsys.readouterr()
    assert cli.main(["train", "--config", str(path), "eval_on_end=true"]) == 0
    assert "finished at step 3 already" in capsys.readouterr().out
    assert (out / "eval_results.jsonl").read_text().splitlines() == evals


def files_of(checkpoint):
    return (checkpoint / "model.safetensors").read_bytes()


# ---- models that would run code ------------------------------------------------------------------------

def test_a_pickled_model_with_a_payload_and_a_model_needing_its_own_code_are_one_line_each(tiny_qwen2, tmp_path,
                                                                                           capsys):
    pickled = tmp_path / "pickled"
    shutil.copytree(tiny_qwen2, pickled)
    state = load_file(pickled / "model.safetensors")
    (pickled / "model.safetensors").unlink()
    marker = tmp_path / "pwned"
    torch.save({**state, "extra": Payload(marker)}, pickled / "pytorch_model.bin")
    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump(recipe(pickled, tmp_path / "out", tokenizer_name_or_path=str(tiny_qwen2))))
    rc, err = train(path, capsys=capsys)
    assert rc == 2 and not marker.exists()
    assert errors(err) == [
        f"r1zero: error: model_name_or_path: {pickled} has pickled weights holding Python objects beyond tensors "
        "(pytorch_model.bin: io.open), which could run code when loaded; r1zero refuses them: give the model in "
        "safetensors format"]

    remote = tmp_path / "remote"
    remote.mkdir()
    (remote / "config.json").write_text(json.dumps({"model_type": "made-up", "auto_map": {
        "AutoConfig": "configuration_x.XConfig", "AutoModelForCausalLM": "modeling_x.XModel"}}))
    for name in ("configuration_x.py", "modeling_x.py"):
        (remote / name).write_text(f"open({str(marker)!r}, 'w')\n")
    path.write_text(yaml.safe_dump(recipe(remote, tmp_path / "out2", tokenizer_name_or_path=str(tiny_qwen2))))
    rc, err = train(path, capsys=capsys)
    assert rc == 2 and not marker.exists()
    assert errors(err) == [
        f"r1zero: error: model_name_or_path: {remote} needs Python code from its own repository to load; set "
        "trust_remote_code=true only if you trust that code, or choose another model"]


def test_a_tokenizer_that_cannot_load_is_one_line_naming_its_key(tiny_qwen2, tmp_path, capsys):
    """tokenizer_name_or_path, when set, is the key a refusal names: a folder that is not there, and
    one with a config but no tokenizer files (transformers 5 builds a tokenizer without a vocabulary
    from it, and the first forward pass crashed on the empty prompts)."""
    config_only = tmp_path / "config-only"
    config_only.mkdir()
    shutil.copy(tiny_qwen2 / "config.json", config_only / "config.json")
    path = tmp_path / "run.yaml"
    for tok, expected in ((tmp_path / "absent", f"no such folder {tmp_path / 'absent'}; check the path"),
                          (config_only, f"{config_only} has no tokenizer files (tokenizer.json, or a vocabulary and "
                                        "merges); give a model folder or hub id that has them")):
        path.write_text(yaml.safe_dump(recipe(tiny_qwen2, tmp_path / "out", tokenizer_name_or_path=str(tok))))
        rc, err = train(path, capsys=capsys)
        assert rc == 2
        [line] = errors(err)
        assert line.startswith(f"r1zero: error: tokenizer_name_or_path: {expected}"), line
        assert not (tmp_path / "out").exists()
