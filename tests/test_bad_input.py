"""Bad configs and data files, through the `r1zero train` command (cli.main, in-process): each is
refused with exit status 2 and one line on stderr naming the problem and the fix, before any model
is loaded, and nothing is written to output_dir."""
import json
import os

import pytest
import yaml
from conftest import REPO

import r1zero.model_setup
from r1zero import cli

TOY = f"{REPO / 'tests' / 'toy_rewards.py'}"


def base_recipe(model_dir, data, out) -> dict:
    return dict(model_name_or_path=str(model_dir), task="countdown", template="base", reward="tinyzero",
                dataset_name=str(data), test_size=2, prompts_per_step=2, num_generations=4,
                max_prompt_length=256, max_completion_length=8, max_steps=1, output_dir=str(out),
                report_to=["none"], disable_tqdm=True)


def rows(n=8):
    return [{"nums": [44, 19, 35], "target": 98} for _ in range(n)]


def write_jsonl(path, items):
    path.write_text("".join(json.dumps(r) + "\n" for r in items))
    return path


# name: (recipe changes, overrides, setup(tmp) -> extra recipe changes, words the message must hold)
# Each message must name the key/field and say what to do; the words check both.
CASES = {
    "unknown_key": ({"learning_rat": 1e-6}, [], None, ["'learning_rat'", "did you mean 'learning_rate'"]),
    "wrong_type": ({"max_steps": "ten"}, [], None, ["'max_steps'", "must be int"]),
    "negative_learning_rate": ({}, ["learning_rate=-1e-6"], None, ["'learning_rate'", "positive number"]),
    "one_generation_with_group_scaling": ({"num_generations": 1}, [], None,
                                          ["'num_generations'", "scale_rewards=none"]),
    "zero_max_steps": ({"max_steps": 0}, [], None, ["'max_steps'", ">= 1"]),
    "top_p_above_one": ({}, ["top_p=1.5"], None, ["'top_p'", "(0, 1]"]),
    "temperature_zero": ({"temperature": 0}, [], None, ["'temperature'", "> 0"]),
    "mini_batch_not_dividing": ({"mini_batch_prompts": 3}, [], None, ["'mini_batch_prompts'", "must divide"]),
    "save_total_limit_zero": ({"save_total_limit": 0}, [], None, ["'save_total_limit'", ">= 1 or null"]),
    "negative_reward_timeout": ({"reward_timeout": -1}, [], None, ["'reward_timeout'", ">= 0"]),
    "unknown_tracker": ({"report_to": ["mlflow"]}, [], None, ["'report_to'", "not one of"]),
    "override_without_equals": ({}, ["max_steps"], None, ["max_steps", "key=value"]),
    "missing_resume_folder": ({"resume_from_checkpoint": "/nonexistent/checkpoint-3"}, [], None,
                              ["'resume_from_checkpoint'", "give a checkpoint-N folder"]),
    "unknown_task": ({"task": "chess"}, [], None, ["chess", "countdown"]),
    "unknown_reward_scheme": ({"reward": "exact"}, [], None, ["exact", "tinyzero"]),
    "unknown_template": ({"template": "llama"}, [], None, ["llama", "base"]),
    "unknown_task_option": ({"task_args": {"max_nums": 4}}, [], None, ["task_args", "max_nums", "remove"]),
    "reward_file_missing": ({"reward_funcs": ["/nonexistent/rewards.py:fn"]}, [], None,
                            ["reward_funcs", "/nonexistent/rewards.py", "check the path"]),
    "reward_function_missing": ({"reward_funcs": [f"{TOY}:no_such_fn"]}, [], None,
                                ["reward_funcs", "no function 'no_such_fn'"]),
    "reward_weights_mismatch": ({"reward_funcs": [f"{TOY}:vowel_share"], "reward_weights": [1.0, 2.0]}, [], None,
                                ["'reward_weights'", "one weight per reward_funcs"]),
    "missing_dataset": ({"dataset_name": "/nonexistent/data.jsonl"}, [], None,
                        ["/nonexistent/data.jsonl", "check the path"]),
    "unsupported_dataset_type": ({}, [], lambda t: {"dataset_name": str(write_jsonl(t / "d.txt", rows()))},
                                 ["d.txt", "use .jsonl, .json, .parquet or .csv"]),
    "empty_dataset": ({}, [], lambda t: {"dataset_name": str(write_jsonl(t / "empty.jsonl", []))},
                      ["dataset_name", "empty.jsonl", "no rows"]),
    "invalid_json_line": ({}, [], lambda t: _text(t / "bad.jsonl", '{"nums": [1, 2], "target": 3}\n{"nums": [1,\n'),
                          ["bad.jsonl:2", "not valid JSON", "fix or remove that line"]),
    "non_utf8_jsonl_line": ({}, [], lambda t: _bytes(t / "latin1.jsonl", b"".join(
        json.dumps(r).encode() + b"\n" for r in rows(2)) + b'{"nums": [1, 2], "target": 3, "who": "Jos\xe9"}\n'),
                            ["latin1.jsonl:3:", "byte 0xe9 is not UTF-8", "save the file as UTF-8"]),
    "non_utf8_json_file": ({}, [], lambda t: _bytes(t / "latin1.json", b'[{"nums": [1, 2], "target": 3},\n'
                                                     b' {"nums": [1, 2], "target": 3, "who": "\xff"}]'),
                           ["latin1.json:2:", "byte 0xff is not UTF-8", "save the file as UTF-8"]),
    "row_missing_field": ({}, [], lambda t: {"dataset_name": str(write_jsonl(t / "d.jsonl", rows() + [{"nums": [1, 2]}]))},
                          ["row 9", "missing field 'target'"]),
    "non_integer_target": ({}, [], lambda t: {"dataset_name": str(write_jsonl(
        t / "d.jsonl", rows() + [{"nums": [1, 2], "target": "abc"}]))}, ["row 9", "'target' must be an integer"]),
    "fractional_numbers": ({}, [], lambda t: {"dataset_name": str(write_jsonl(
        t / "d.jsonl", rows() + [{"nums": [1.5, 2], "target": 3}]))}, ["row 9", "'nums' must be a non-empty list of integers"]),
    "too_few_rows_for_test_split": ({"test_size": 8}, [], None, ["dataset_name", "lower test_size"]),
    "missing_model_path": ({"model_name_or_path": "/nonexistent/model"}, [], None,
                           ["model_name_or_path", "/nonexistent/model", "check the path"]),
    "model_folder_without_config": ({}, [], lambda t: {"model_name_or_path": str(_mkdir(t / "empty-model"))},
                                    ["model_name_or_path", "no config.json"]),
    "output_dir_is_a_file": ({}, [], lambda t: {"output_dir": str(_text(t / "out.txt", "x")["p"])},
                             ["output_dir", "is a file", "choose another output_dir"]),
    "output_dir_under_a_file": ({}, [], lambda t: {"output_dir": str(_text(t / "f.txt", "x")["p"] / "run")},
                                ["output_dir", "is a file", "choose another output_dir"]),
    "prompt_longer_than_max_prompt_length": ({"max_prompt_length": 16}, [], None,
                                             ["max_prompt_length", "raise max_prompt_length"]),
    "fresh_start_over_checkpoints": ({"resume_from_checkpoint": None}, [], "existing_checkpoint",
                                     ["output_dir", "already holds checkpoints", "resume_from_checkpoint=auto"]),
}


def _text(path, text):
    path.write_text(text)
    return {"dataset_name": str(path), "p": path}


def _bytes(path, data: bytes):
    path.write_bytes(data)
    return {"dataset_name": str(path), "p": path}


def _mkdir(path):
    path.mkdir()
    return path


def _readonly(path):
    path.mkdir()
    path.chmod(0o500)
    return path


def snapshot(out):
    if not out.exists():  # output_dir_under_a_file: that file must be left as it was too
        above = next(p for p in out.parents if p.exists())
        return None if above.is_dir() else ("under", snapshot(above))
    if out.is_file():  # output_dir_is_a_file: the file itself must be left as it was
        return out.read_bytes(), out.stat().st_mtime_ns
    return sorted((str(p.relative_to(out)), p.stat().st_size, p.stat().st_mtime_ns) for p in out.rglob("*"))


@pytest.mark.parametrize("name", sorted(CASES))
def test_refused_before_loading_with_one_line_and_nothing_written(name, tiny_qwen2, tmp_path, capsys, monkeypatch):
    changes, overrides, setup, words = CASES[name]
    data = write_jsonl(tmp_path / "data.jsonl", rows())
    out = tmp_path / "out"
    recipe = base_recipe(tiny_qwen2, data, out)
    recipe.update(changes)
    if setup == "existing_checkpoint":
        ck = out / "checkpoint-1"
        ck.mkdir(parents=True)
        (ck / "trainer_state.json").write_text('{"step": 1}')
    elif setup is not None:
        extra = setup(tmp_path)
        extra.pop("p", None)
        recipe.update(extra)
    out = type(out)(recipe["output_dir"])
    before = snapshot(out)

    loaded = []
    real_load = r1zero.model_setup.load_model

    def spy(*args, **kwargs):  # records, then loads for real: a case that gets here fails below
        loaded.append(args)
        return real_load(*args, **kwargs)

    monkeypatch.setattr(r1zero.model_setup, "load_model", spy)
    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump(recipe))
    capsys.readouterr()
    rc = cli.main(["train", "--config", str(path), *overrides])
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.strip()]
    assert rc == 2, err
    assert len(lines) == 1, err
    assert lines[0].startswith("r1zero: error: "), lines[0]
    for w in words:
        assert w in lines[0], (w, lines[0])
    assert not loaded, "a model was loaded before the refusal"
    assert snapshot(out) == before  # not created when it did not exist, untouched when it did


def test_output_dir_file_snapshot_sees_the_bytes(tmp_path):
    """The check above compares the file's bytes: a changed byte is seen (rglob on a file sees nothing)."""
    f = tmp_path / "out.txt"
    f.write_text("x")
    before = snapshot(f)
    f.write_text("y")
    assert snapshot(f) != before


def _drop_root_file_powers():
    """In the child, before exec: root without CAP_DAC_OVERRIDE / CAP_DAC_READ_SEARCH (dropped from
    the bounding set, so the exec'd python never gets them) obeys file modes like any owner, so a
    folder of mode 0500 is not writable for it; everything else root owns stays readable."""
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    for cap in (1, 2):  # CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH
        if libc.prctl(24, cap, 0, 0, 0) != 0:  # PR_CAPBSET_DROP (needs CAP_SETPCAP, which root has)
            raise OSError(ctypes.get_errno(), "PR_CAPBSET_DROP failed")


def test_output_dir_not_writable(tiny_qwen2, tmp_path):
    """A folder the run cannot write into, for real also when the tests run as root (as CI does): the
    command runs in a child that, as root, has given up the file-permission override."""
    import subprocess
    import sys

    ro = _readonly(tmp_path / "ro")
    recipe = base_recipe(tiny_qwen2, write_jsonl(tmp_path / "data.jsonl", rows()), ro / "run")
    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump(recipe))
    r = subprocess.run([sys.executable, "-m", "r1zero", "train", "--config", str(path)], capture_output=True,
                       text=True, timeout=300, cwd=REPO,
                       preexec_fn=_drop_root_file_powers if os.geteuid() == 0 else None)
    lines = [line for line in r.stderr.splitlines() if line.strip()]
    assert r.returncode == 2, r.stderr[-3000:]
    assert lines == [f"r1zero: error: output_dir: {ro} is not writable; choose a writable output_dir or fix its "
                     "permissions"], lines
    assert list(ro.iterdir()) == []


def test_the_table_is_big_enough():
    assert len(CASES) >= 20


ALIAS_BOMB = "".join(f"{a}: &{a} [{', '.join([f'*{p}'] * 10)}]\n" for p, a in zip("abcdefgh", "bcdefghi"))


def test_yaml_syntax_and_shape_errors(tmp_path, capsys):
    for text, words in (("max_steps: [1\n", ["not valid YAML", "line", "fix the syntax"]),
                        ("- a\n- b\n", ["must be a mapping"]),
                        # YAML keeps the last of two equal keys; a second learning_rate must not win silently
                        ("learning_rate: 1.0e-6\nbeta: 0\nlearning_rate: 1.0e-3\n",
                         ["r.yaml: key 'learning_rate' is given twice (lines 1 and 3); keep one of them"]),
                        ("chat_template_kwargs:\n  enable_thinking: false\n  enable_thinking: true\n",
                         ["key 'enable_thinking' is given twice (lines 2 and 3)"]),
                        # a billion values from nine lines: refused before anything builds or walks them
                        ("chat_template_kwargs:\n  a: &a [x, x, x, x, x, x, x, x, x, x]\n"
                         + "".join("  " + line + "\n" for line in ALIAS_BOMB.splitlines()),
                         ["r.yaml: its YAML aliases (*name) expand to over 100000 values"])):
        path = tmp_path / "r.yaml"
        path.write_text(text)
        capsys.readouterr()
        # (no model there: a file that got past the check fails on it at once instead of training)
        assert cli.main(["train", "--config", str(path), f"output_dir={tmp_path / 'out'}",
                         f"model_name_or_path={tmp_path / 'no-model'}"]) == 2
        lines = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
        assert len(lines) == 1 and all(w in lines[0] for w in words), lines
        assert not (tmp_path / "out").exists()
    # The same rules for a value given on the command line.
    for override, words in (("chat_template_kwargs={a: 1, a: 2}", ["override 'chat_template_kwargs': key 'a' is "
                                                                   "given twice"]),
                            ("chat_template_kwargs={a: &a [x, x, x, x, x, x, x, x, x, x], "
                             + ", ".join(f"{a}: &{a} [{', '.join([f'*{p}'] * 10)}]"
                                         for p, a in zip("abcdefgh", "bcdefghi")) + "}",
                             ["override 'chat_template_kwargs': its YAML aliases (*name) expand to over"])):
        capsys.readouterr()
        assert cli.main(["train", override, f"output_dir={tmp_path / 'out'}", f"model_name_or_path={tmp_path}"]) == 2
        lines = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
        assert len(lines) == 1 and all(w in lines[0] for w in words), lines
    # Aliases and merges that stay small are YAML as usual.
    path.write_text("max_steps: &n 3\nsave_steps: *n\nchat_template_kwargs:\n  <<: {enable_thinking: true}\n"
                    "  enable_thinking: false\n")
    from r1zero.config import load_config

    cfg = load_config(str(path))
    assert (cfg.max_steps, cfg.save_steps, cfg.chat_template_kwargs) == (3, 3, {"enable_thinking": False})
