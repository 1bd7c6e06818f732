"""``r1zero eval`` evaluates a run's checkpoint (and its starting model) the way the run evaluated it.

One 2-step run of the default recipe (configs/countdown-smollm2-cpu.yaml) on a tiny random model;
then ``r1zero eval`` with no other flags must print and write the figures of the run's own final
evaluation, and answer the same prompts with the same completions; the starting model evaluated
with the run's recipe must give the run's step-0 ("before") evaluation.
"""
import argparse
import json
import os
import subprocess
import sys

import pytest
from conftest import REPO

from r1zero.cli import build_parser, main

RECIPE = REPO / "configs" / "countdown-smollm2-cpu.yaml"
FIGURES = ("n", "accuracy", "format_rate", "mean_reward", "mean_length", "truncated_rate")


def read_jsonl(path):
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def overrides(model, out):
    # The default recipe, small: a tiny model, 2 steps, 6 eval rows, 12 tokens. The toy reward gives
    # the random model's groups a spread, so the 2 updates change it (all-zero rewards would not):
    # the "before" and "after" evaluations differ, and each test below tells them apart.
    return [f"model_name_or_path={model}", "max_steps=2", "eval_limit=6", "max_completion_length=12",
            "learning_rate=1e-3", f"output_dir={out}", "report_to=[]", "disable_tqdm=true", "reward_timeout=0",
            f"reward_funcs=[{REPO / 'tests' / 'toy_rewards.py'}:vowel_share]"]


@pytest.fixture(scope="module")
def run(tiny_qwen2, tmp_path_factory):
    out = tmp_path_factory.mktemp("eval-cli") / "run"
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    r = subprocess.run([sys.executable, "-m", "r1zero", "train", "--config", str(RECIPE), *overrides(tiny_qwen2, out)],
                       capture_output=True, text=True, timeout=600, env=env)
    assert r.returncode == 0, r.stderr[-3000:]
    evals = read_jsonl(out / "eval_results.jsonl")
    assert [e["step"] for e in evals] == [0, 2]
    before, after = read_jsonl(out / "eval" / "step-0.jsonl"), read_jsonl(out / "eval" / "step-2.jsonl")
    assert [r["completion"] for r in before] != [r["completion"] for r in after]  # training changed the answers
    return out, tiny_qwen2


def printed_figures(stdout):
    lines = dict(line.split(": ", 1) for line in stdout.splitlines() if ": " in line)
    return {k: lines[k] for k in FIGURES}


def formatted(summary):
    return {k: f"{summary[k]:.4f}" if isinstance(summary[k], float) else str(summary[k]) for k in FIGURES}


def test_eval_of_the_final_checkpoint_equals_the_runs_final_eval(run, tmp_path):
    out, _ = run
    last = read_jsonl(out / "eval_results.jsonl")[-1]
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    r = subprocess.run([sys.executable, "-m", "r1zero", "eval", "--model", str(out / "checkpoint-2")],
                       capture_output=True, text=True, timeout=600, env=env, cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-3000:]
    assert printed_figures(r.stdout) == formatted(last)
    # Written where eval always wrote: eval-TASK-SPLIT.json in the working folder.
    assert "written: eval-countdown-test.json" in r.stdout
    written = json.loads((tmp_path / "eval-countdown-test.json").read_text(encoding="utf-8"))
    assert {k: written["summary"][k] for k in FIGURES} == {k: last[k] for k in FIGURES}
    # The same prompts (template, generator settings), completions (length) and scores (reward scheme).
    assert written["records"] == read_jsonl(out / "eval" / "step-2.jsonl")
    settings = next(line for line in r.stdout.splitlines() if line.startswith("settings: "))
    assert f"from run config {out / 'config.yaml'}: task=countdown, template=chat-answer, reward=shaped, " in settings
    assert f"from flags: model_name_or_path={out / 'checkpoint-2'}" in settings

    # The run folder means its last checkpoint.
    assert main(["eval", "--model", str(out), "--out", str(tmp_path / "run.json")]) == 0
    again = json.loads((tmp_path / "run.json").read_text(encoding="utf-8"))
    assert again["summary"]["model"] == str(out / "checkpoint-2") and again["records"] == written["records"]


def test_eval_of_the_starting_model_with_the_recipe_equals_the_runs_before_eval(run, tmp_path):
    out, model = run
    first = read_jsonl(out / "eval_results.jsonl")[0]
    # The train command line, as eval: model_name_or_path from the overrides, the rest from the recipe.
    dest = tmp_path / "before.json"
    assert main(["eval", "--config", str(RECIPE), *overrides(model, out), "--out", str(dest)]) == 0
    written = json.loads(dest.read_text(encoding="utf-8"))
    assert {k: written["summary"][k] for k in FIGURES} == {k: first[k] for k in FIGURES}
    assert written["records"] == read_jsonl(out / "eval" / "step-0.jsonl")
    assert written["sources"]["template"] == f"recipe {RECIPE}" and written["sources"]["eval_limit"] == "overrides"


def test_config_and_overrides_reach_the_evaluation(run, tmp_path, capsys):
    import torch

    from r1zero.config import load_config
    from r1zero.observe.evaluate import evaluate
    from r1zero.models import eos_token_ids, load_model, load_tokenizer
    from r1zero.data.split import load_data
    from r1zero.tasks import build_task

    out, _ = run
    ck = str(out / "checkpoint-2")
    dest = tmp_path / "short.json"
    # The recipe over the run's config (eval_limit 32, not the run's 6), an override over both
    # (5 tokens, not 12), a flag over the override (--limit 4, not eval_limit=5).
    assert main(["eval", "--model", ck, "--config", str(RECIPE), "max_completion_length=5", "eval_limit=5",
                 "--limit", "4", "--out", str(dest)]) == 0
    printed = capsys.readouterr().out
    assert "from overrides: max_completion_length=5" in printed and "from flags: model_name_or_path=" in printed
    assert "eval_limit=4" in printed.split("from flags: ")[1]
    written = json.loads(dest.read_text(encoding="utf-8"))

    # Reference: r1zero.observe.evaluate on the recipe's first 4 test rows, at most 5 new tokens.
    cfg = load_config(str(RECIPE))
    task = build_task(cfg)
    rows = load_data(task, cfg)[1][:4]
    tok = load_tokenizer(ck)
    model = load_model(ck, torch.device("cpu"), trainable=False)
    summary, records = evaluate(model, tok, task, rows, eos_ids=eos_token_ids(tok, model), max_new_tokens=5,
                                max_prompt_length=cfg.max_prompt_length)
    assert written["records"] == records and {k: written["summary"][k] for k in FIGURES} == {k: summary[k] for k in FIGURES}
    assert written["summary"]["n"] == 4 and written["summary"]["mean_length"] <= 5
    assert written["summary"]["mean_length"] != read_jsonl(out / "eval_results.jsonl")[-1]["mean_length"]


def test_a_bad_override_or_checkpoint_is_refused_before_loading(run, capsys):
    out, _ = run
    assert main(["eval", "--model", str(out / "checkpoint-2"), "max_completion_lenght=5"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["r1zero: error: override: unknown key 'max_completion_lenght'; did you mean 'max_completion_length'?"]
    # A checkpoint the run never wrote (the README once named checkpoint-12 of a 14-step run).
    assert main(["eval", "--model", str(out / "checkpoint-12")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"r1zero: error: --model: no folder {out / 'checkpoint-12'}; the run {out} has checkpoints: checkpoint-2"]


def test_a_run_folder_without_checkpoints_is_refused(tmp_path, capsys):
    (tmp_path / "config.yaml").write_text("task: countdown\n")
    assert main(["eval", "--model", str(tmp_path)]) == 2
    assert "--model: the run folder" in capsys.readouterr().err


def _subparsers(parser):
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield name, sub
                for inner, subsub in _subparsers(sub):
                    yield f"{name} {inner}", subsub


def test_every_option_of_every_subcommand_has_help(capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", "1000")  # help on one line each: no words cut at hyphens
    subs = dict(_subparsers(build_parser()))
    assert {"train", "eval", "report", "compare", "data", "data countdown"} <= set(subs)
    for name, sub in subs.items():
        for action in sub._actions:
            assert action.help and action.help != argparse.SUPPRESS, f"r1zero {name}: {action.dest} has no help"

    with pytest.raises(SystemExit) as e:
        main(["eval", "--help"])
    assert e.value.code == 0
    shown = " ".join(capsys.readouterr().out.split())
    for action in subs["eval"]._actions:
        assert " ".join(action.help.split()) in shown, action.dest
        for opt in action.option_strings:
            assert opt in shown


def test_compare_takes_the_same_settings(run):
    from r1zero.observe.compare import compare

    out, model = run
    # --after a run folder: its last checkpoint, asked and scored as the run's own evaluations.
    result = compare(str(model), str(out), 3)
    assert result["settings"].startswith(f"settings: from run config {out / 'config.yaml'}: task=countdown, template=chat-answer")
    assert result["after"]["model"] == str(out / "checkpoint-2") and result["max_new_tokens"] == 12
    assert [r["after"] for r in result["rows"]] == read_jsonl(out / "eval" / "step-2.jsonl")[:3]
    assert [r["before"] for r in result["rows"]] == read_jsonl(out / "eval" / "step-0.jsonl")[:3]


# ---- the evaluation with the thinking taken away (eval_no_think) ---------------------------------

THINK = ["template=chat-think", "reward=think", "max_completion_length=4", "eval_limit=2", "report_to=[]",
         "disable_tqdm=true", "reward_timeout=0"]


def test_train_and_eval_report_the_accuracy_without_thinking(tiny_qwen2, tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["train", "--config", str(RECIPE), f"model_name_or_path={tiny_qwen2}", "max_steps=1",
                 "dynamic_sampling=false", f"output_dir={out}", *THINK]) == 0
    printed = capsys.readouterr().out
    evals = read_jsonl(out / "eval_results.jsonl")
    assert [e["step"] for e in evals] == [0, 1]
    start, end = evals
    # Every evaluation of a chat-think run (eval_no_think: None, auto) asked again without the thinking.
    assert (f"accuracy without thinking {start['accuracy_no_think']:.3f} -> {end['accuracy_no_think']:.3f}, "
            f"format rate without thinking {start['format_rate_no_think']:.3f} -> {end['format_rate_no_think']:.3f}"
            in printed.splitlines())
    records = read_jsonl(out / "eval" / "step-1.jsonl")
    assert end["accuracy_no_think"] == sum(r["correct_no_think"] for r in records) / len(records)
    assert all(isinstance(r["completion_no_think"], str) for r in records)

    # r1zero eval of the checkpoint prints both accuracies, from the run's settings, as the run's last evaluation.
    dest = tmp_path / "eval.json"
    assert main(["eval", "--model", str(out / "checkpoint-1"), "--out", str(dest)]) == 0
    lines = capsys.readouterr().out.splitlines()
    for key in ("accuracy", "accuracy_no_think", "format_rate_no_think"):
        assert f"{key}: {end[key]:.4f}" in lines, key
    assert json.loads(dest.read_text(encoding="utf-8"))["records"] == records
    # --no-no-think (config key eval_no_think: false): one pass, no no-think figures.
    assert main(["eval", "--model", str(out / "checkpoint-1"), "--no-no-think", "--out", str(dest)]) == 0
    assert "accuracy_no_think" not in capsys.readouterr().out
    assert "completion_no_think" not in json.loads(dest.read_text(encoding="utf-8"))["records"][0]


def test_eval_no_think_without_a_think_part_is_refused_before_loading(tiny_qwen2, tmp_path, capsys, monkeypatch):
    import r1zero.model_setup

    def no_loading(*a, **k):
        raise AssertionError("a model was loaded")

    monkeypatch.setattr(r1zero.model_setup, "load_generator", no_loading)
    want = ("r1zero: error: config: 'eval_no_think' is true, but template 'chat-answer' of task 'countdown' has no "
            "think part to take away; remove it, or use a template whose completions think in <think> </think> "
            "(countdown: chat-think)")
    assert main(["eval", "--model", str(tiny_qwen2), "--config", str(RECIPE), "--no-think"]) == 2
    assert capsys.readouterr().err.strip().splitlines() == [want]
    out = tmp_path / "run"
    assert main(["train", "--config", str(RECIPE), f"model_name_or_path={tiny_qwen2}", f"output_dir={out}",
                 "eval_no_think=true", "report_to=[]"]) == 2
    assert capsys.readouterr().err.strip().splitlines() == [want]
    assert not out.exists()
