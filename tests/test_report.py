"""The run report (r1zero.observe.report), reflection tracking (r1zero.observe.reflection) and ``r1zero compare``.

The recorded run in tests/data/report-run is the text files of a real 4-step run of the embedded
default (``r1zero train max_steps=4 eval_limit=8 log_completions_rate=0.25``, see its config.yaml);
checkpoints are not kept, so the report is rebuilt from exactly what a user's run folder holds.
"""
import base64
import html
import io
import json
import logging
import shutil
from pathlib import Path

import pytest
import torch
import yaml
from conftest import REPO
from markupsafe import escape

from r1zero.cli import main
from r1zero.observe.reflection import DEFAULT_WORDS, first_step_over, reflection_by_step, uses_reflection
from r1zero.observe import report
from r1zero.observe.report import build_report, pick_sample_steps, split_completion
from r1zero.observe.tracking import read_jsonl

RECORDED = REPO / "tests" / "data" / "report-run"
RUN_FILES = ("config.yaml", "metrics.jsonl", "samples.jsonl", "eval_results.jsonl", "run_info.json")
PLOTS = {"rewards", "length", "outcomes", "training", "other", "reflection"}


def copy_run(src: Path, dst: Path) -> Path:
    dst.mkdir(parents=True)
    for name in RUN_FILES:
        shutil.copy(src / name, dst / name)
    return dst


def table_values(page: str, key: str) -> dict[int, float]:
    """{step: value} of one column of the page's per-step table (read from its data attributes)."""
    import re

    out = {}
    for row in re.finditer(r'<tr data-step="(\d+)">(.*?)</tr>', page, re.S):
        m = re.search(rf'data-key="{re.escape(key)}" data-value="([^"]*)"', row.group(2))
        if m and m.group(1):
            out[int(row.group(1))] = float(m.group(1))
    return out


def test_report_from_recorded_run(tmp_path):
    import matplotlib.image

    run = copy_run(RECORDED, tmp_path / "run")
    rep = build_report(run)
    page = rep.html.read_text(encoding="utf-8")
    metrics = [r for r in read_jsonl(run / "metrics.jsonl") if "reward" in r]
    samples = read_jsonl(run / "samples.jsonl")
    assert [m["step"] for m in metrics] == [1, 2, 3, 4]

    # Every plot: a PNG file next to the page, the same bytes embedded in the page, a real picture.
    assert set(rep.plots) == PLOTS
    for name in PLOTS:
        png = (run / "report" / f"{name}.png").read_bytes()
        assert png == rep.plots[name].png
        assert f'data-plot="{name}"' in page
        assert "data:image/png;base64," + base64.b64encode(png).decode() in page
        img = matplotlib.image.imread(io.BytesIO(png))
        assert img.shape[0] > 200 and img.shape[1] > 400, name
        assert img[..., :3].std() > 0.05, name  # not a blank canvas
    # Self-contained: nothing is fetched (no http(s) URL in any src/href, no script at all).
    assert "src=\"http" not in page and "href=\"http" not in page and "<script" not in page
    assert "http-equiv=\"refresh\"" not in page  # a finished run's page does not reload itself

    # The outcome breakdown sums to 1 at every step, in the report's data and on the page.
    assert [r["step"] for r in rep.outcomes] == [1, 2, 3, 4]
    for r, m in zip(rep.outcomes, metrics):
        assert r["outcome/bad_format"] + r["outcome/wrong"] + r["outcome/correct"] == pytest.approx(1.0, abs=1e-9)
        assert r["outcome/correct"] == m["accuracy"]
    cols = [table_values(page, k) for k in ("outcome/bad_format", "outcome/wrong", "outcome/correct")]
    for step in range(1, 5):
        assert sum(c[step] for c in cols) == pytest.approx(1.0, abs=1e-9)
    assert table_values(page, "reward") == {m["step"]: pytest.approx(m["reward"]) for m in metrics}

    # Reflection: recomputed by hand from samples.jsonl with the default list.
    for step, share in rep.reflection.items():
        texts = [s["completion"] for s in samples if s["step"] == step]
        assert rep.reflection_counts[step] == len(texts) == 8  # 0.25 of 8 prompts x 4 samples
        assert share == sum(uses_reflection(t) for t in texts) / len(texts)

    # Samples of the first, middle and last step, with the answer set apart.
    assert pick_sample_steps(samples) == [1, 3, 4]
    for step in (1, 3, 4):
        assert f"<h3>Step {step}</h3>" in page
    assert "<h3>Step 2</h3>" not in page
    last = next(s for s in samples if s["step"] == 4)
    for kind, text in split_completion(last["completion"]):
        assert f'<div class="seg {kind}">' in page and str(escape(text)) in page
    for name, value in last["parts"].items():
        assert f'<span class="part">{name} {value:.4g}</span>' in page

    # Config, hardware and timing, and both evaluations.
    assert "model_name_or_path: embedded:SmolLM2-135M-Instruct" in page
    info = json.loads((run / "run_info.json").read_text())
    assert f"<th>torch</th><td>{info['torch']}</td>" in page and "<th>device</th><td>cpu</td>" in page
    step_times = [m["time/step"] for m in metrics]
    assert f"{sum(step_times) / 4:.2f} s mean, {sum(step_times):.1f} s total" in page
    evals = read_jsonl(run / "eval_results.jsonl")
    assert [e["step"] for e in evals] == [0, 4]
    for e in evals:
        assert f"<tr><td>{e['step']}</td><td>{e['accuracy']:.4g}</td>" in page


KNOWN = {  # step -> completions; the comment is the hand count of completions with a phrase
    1: ["Wait, let me check: 3+5=8", "The answer is 8", "I must verify this.", "it awaits nothing"],  # 2/4
    2: ["等等,我再检查一下", "答案是 8", "Let   me\ncheck again", "However, 9 is odd"],                  # 3/4
    3: ["re-evaluate: 8", "reevaluate", "Rechecking gives 8", "try another way"],                    # 3/4
    4: ["<think>8</think>", "no", "no", "no"],                                                       # 0/4
}


def known_run(tmp_path: Path) -> Path:
    run = tmp_path / "known"
    run.mkdir()
    with open(run / "metrics.jsonl", "w") as f:
        for step in KNOWN:
            # An old trainer's row (no p90 length) with keys the report has never heard of.
            f.write(json.dumps({"step": step, "reward": 0.1 * step, "accuracy": 0.0, "format_rate": 0.5,
                                "outcome/bad_format": 0.5, "outcome/wrong": 0.5, "outcome/correct": 0.0,
                                "completions/mean_length": 10.0 + step, "completions/max_length": 20.0,
                                "ppo/value_loss": 1.0 / step, "note": "text is ignored", "flag": True}) + "\n")
    with open(run / "samples.jsonl", "w") as f:
        for step, texts in KNOWN.items():
            for t in texts:
                f.write(json.dumps({"step": step, "completion": t, "reward": 0.0, "parts": {}}, ensure_ascii=False) + "\n")
    return run


def test_reflection_share_on_known_samples(tmp_path, capsys):
    samples = [{"step": s, "completion": t} for s, texts in KNOWN.items() for t in texts]
    by_step = reflection_by_step(samples)
    assert by_step == {1: (0.5, 4), 2: (0.75, 4), 3: (0.75, 4), 4: (0.0, 4)}
    shares = {s: v for s, (v, _) in by_step.items()}
    assert first_step_over(shares, 0.5) == 1
    assert first_step_over(shares, 0.6) == 2
    assert first_step_over(shares, 0.8) is None
    # A custom list: only these phrases count.
    assert reflection_by_step(samples, ["double-check", "答案"]) == {1: (0.0, 4), 2: (0.25, 4), 3: (0.0, 4), 4: (0.0, 4)}
    assert "再试" in DEFAULT_WORDS and "let me check" in DEFAULT_WORDS

    # Through the report: the default list; live (as the trainer writes it mid-run) the page reloads itself.
    run = known_run(tmp_path)
    rep = build_report(run, threshold=0.6, live=True)
    assert rep.reflection == {1: 0.5, 2: 0.75, 3: 0.75, 4: 0.0} and rep.first_reflection_step == 2
    page = rep.html.read_text(encoding="utf-8")
    assert table_values(page, "reflection") == {1: 0.5, 2: 0.75, 3: 0.75, 4: 0.0}
    assert "It first reaches 0.6 at step 2." in page
    # Samples of steps 1, 3 and 4 (first, middle, last) with the phrases highlighted.
    assert "<mark>Wait</mark>, <mark>let me check</mark>" in page and "<mark>Recheck</mark>ing gives 8" in page
    # Unknown numeric keys get plotted, text and booleans are skipped, a missing p90 is explained.
    assert "other" in rep.plots and "did not log completions/p90_length" in page
    assert 'http-equiv="refresh"' in page

    # `r1zero report` with its own list and threshold.
    assert main(["report", str(run), "--words", "答案", "no", "--threshold", "0.7"]) == 0
    out = capsys.readouterr().out.strip().splitlines()
    assert out[-2:] == ["reflection first reaches 0.7 at step 4", f"report: {run / 'report.html'}"]
    assert sorted(line for line in out if line.startswith("plot: ")) == sorted(
        f"plot: {run / 'report' / name}.png" for name in ("rewards", "length", "outcomes", "other", "reflection"))
    page = (run / "report.html").read_text(encoding="utf-8")
    # "no" also counts "nothing" at step 1 (a phrase matches from the start of a word).
    assert table_values(page, "reflection") == {1: 0.25, 2: 0.25, 3: 0.0, 4: 0.75}
    assert 'http-equiv="refresh"' not in page


def test_split_completion():
    assert split_completion("<think>a + b</think>\n<answer>8</answer>") == [("think", "a + b"), ("answer", "8")]
    # Templates prefill the opening tag: a leading closing tag closes a part the prompt opened.
    assert split_completion("3 + 5</answer>") == [("answer", "3 + 5")]
    assert split_completion(" I add.</think> <answer>8</answer> bye") == [("think", " I add."), ("answer", "8"), ("text", " bye")]
    assert split_completion("no tags < here") == [("text", "no tags < here")]
    assert split_completion("<answer>unclosed") == [("answer", "unclosed")]
    assert split_completion("") == []


def test_report_cli_refuses_a_folder_without_metrics(tmp_path, capsys):
    assert main(["report", str(tmp_path / "missing")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "no metrics.jsonl here" in err


def test_trainer_writes_report_and_p90(tiny_qwen2, tmp_path, caplog):
    from r1zero.config import TrainConfig
    from r1zero.training.trainer import Trainer

    def cfg(out, **kw):
        return TrainConfig(**{**dict(
            model_name_or_path=str(tiny_qwen2), task="countdown", template="base", reward="tinyzero",
            task_args={"train_size": 16, "test_size": 2}, prompts_per_step=2, num_generations=4,
            max_completion_length=6, max_steps=2, report_steps=1, output_dir=str(out), report_to=["none"],
            eval_on_end=False, disable_tqdm=True, log_completions_rate=1.0, seed=0,
            reflection_words=["the", "a"]), **kw})

    trainer = Trainer(cfg(tmp_path / "run"))
    result = trainer.train()
    run = tmp_path / "run"
    assert result["report"] == str(run / "report.html")
    page = (run / "report.html").read_text(encoding="utf-8")
    assert 'http-equiv="refresh"' not in page and (run / "report" / "rewards.png").is_file()
    assert json.loads((run / "run_info.json").read_text())["device"] == "cpu"
    # p90 of each step's completion lengths (every completion is in samples.jsonl at rate 1).
    samples = read_jsonl(run / "samples.jsonl")
    # The run's own reflection_words (from its config.yaml), counted over all 8 completions per step.
    want = {step: sum(uses_reflection(s["completion"], ["the", "a"]) for s in samples if s["step"] == step) / 8
            for step in (1, 2)}
    assert table_values(page, "reflection") == want
    for m in read_jsonl(run / "metrics.jsonl"):
        lengths = torch.tensor([float(s["length"]) for s in samples if s["step"] == m["step"]])
        assert len(lengths) == 8
        ranked = sorted(lengths.tolist())
        pos = 0.9 * 7  # linear interpolation between order statistics 6 and 7
        assert m["completions/p90_length"] == pytest.approx(ranked[6] + (pos - 6) * (ranked[7] - ranked[6]))

    # A report that cannot be written only warns (the trainer's hook never raises): here report/ is
    # a file, so no PNG can go there.
    shutil.rmtree(run / "report")
    (run / "report").write_text("in the way")
    with caplog.at_level(logging.WARNING, logger="r1zero"):
        assert report.refresh(run) is None
    assert "report not written: FileExistsError" in caplog.text


def test_compare_two_tiny_models(tiny_qwen2, tiny_llama, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", "200")  # two 98-character columns: score lines are not wrapped
    from r1zero.observe.evaluate import evaluate
    from r1zero.models import eos_token_ids, load_model, load_tokenizer
    from r1zero.tasks import get_task

    # --after is a checkpoint inside a run folder: task, template and length come from its config.
    run = tmp_path / "run"
    shutil.copytree(tiny_llama, run / "checkpoint-1")
    task_args = {"train_size": 8, "test_size": 3}
    (run / "config.yaml").write_text(yaml.safe_dump({"task": "countdown", "template": "base", "reward": "tinyzero",
                                                     "task_args": task_args, "max_completion_length": 5}))
    out_html = tmp_path / "cmp" / "compare.html"
    assert main(["compare", "--before", str(tiny_qwen2), "--after", str(run / "checkpoint-1"), "--limit", "3",
                 "--out", str(out_html)]) == 0
    out = capsys.readouterr().out
    page = out_html.read_text(encoding="utf-8")

    task = get_task("countdown", reward="tinyzero", template="base", **task_args)
    rows = task.load_split("test")[:3]
    assert "countdown (test, template base, reward tinyzero), 3 prompts, greedy, up to 5 new tokens" in out
    for side, path in (("before", tiny_qwen2), ("after", run / "checkpoint-1")):
        tok = load_tokenizer(str(path))
        model = load_model(str(path), torch.device("cpu"), trainable=False)
        # The base template has a think part, so compare (as the run's evaluation) also asks without it.
        summary, records = evaluate(model, tok, task, rows, eos_ids=eos_token_ids(tok, model), max_new_tokens=5,
                                    no_think=True)
        assert f"{side:<6} accuracy {summary['accuracy']:.3f}  without thinking {summary['accuracy_no_think']:.3f}  " \
               f"format rate {summary['format_rate']:.3f}  mean reward {summary['mean_reward']:.3f}" in out
        for i, (ex, rec) in enumerate(zip(rows, records), 1):
            assert f"[{i}] nums={ex['nums']} target={ex['target']}" in out
            parts = ", ".join(f"{k} {v:g}" for k, v in rec["parts"].items())
            assert f"reward {rec['reward']:.3g} ({parts}) bad format" in out
            for kind, text in split_completion(rec["completion"]):
                assert str(escape(text)) in page
    assert page.count('<div class="sample') == 6 and html.escape(str(tiny_qwen2)) in page


def test_compare_needs_a_task(tiny_qwen2, capsys):
    assert main(["compare", "--before", str(tiny_qwen2), "--after", str(tiny_qwen2), "--limit", "1"]) == 2
    assert "--task: not given" in capsys.readouterr().err


@pytest.mark.parametrize("bad, key", [({"report_steps": -1}, "report_steps"), ({"reflection_threshold": 0.0}, "reflection_threshold"),
                                      ({"reflection_words": []}, "reflection_words"), ({"reflection_words": ["wait", " "]}, "reflection_words")])
def test_report_config_refused(bad, key):
    from r1zero.config import ConfigError, TrainConfig

    with pytest.raises(ConfigError, match=f"'{key}'"):
        TrainConfig(**bad)


# A run whose completions reason in a think part (countdown's chat-think prefills "<think>", so a
# completion starts inside it): think lengths per step, evaluations with and without thinking.
THINK_EVALS = [(0, 0.125, 0.125), (3, 0.375, 0.25), (6, 0.625, 0.3125)]  # step, accuracy, accuracy_no_think
THINK_SAMPLE = "I try 44 - 19 = 25, then 25 * 3 = 75. Let me check: 75 is the target.</think>\n<answer>(44 - 19) * 3</answer>"


def think_run(run: Path, steps: int = 6) -> Path:
    """A hand-made run folder of a think template (what the trainer and the evaluation write)."""
    run.mkdir(parents=True)
    (run / "config.yaml").write_text(yaml.safe_dump({"task": "countdown", "template": "chat-think", "reward": "think",
                                                     "max_steps": steps, "run_name": "think-demo"}))
    with open(run / "metrics.jsonl", "w") as f:
        for step in range(1, steps + 1):
            acc = 0.1 * step
            f.write(json.dumps({"step": step, "reward": 0.25 + acc, "accuracy": acc, "format_rate": 0.9,
                                "outcome/bad_format": 0.1, "outcome/wrong": 0.9 - acc, "outcome/correct": acc,
                                "completions/mean_length": 40.0 + 10 * step, "completions/p90_length": 60.0 + 12 * step,
                                "completions/max_length": 128.0, "think/mean_length": 20.0 + 8 * step,
                                "think/p90_length": 35.0 + 10 * step}) + "\n")
        for step, acc, bare in THINK_EVALS:
            f.write(json.dumps({"step": step, "eval/accuracy": acc, "eval/accuracy_no_think": bare}) + "\n")
    with open(run / "eval_results.jsonl", "w") as f:
        for step, acc, bare in THINK_EVALS:
            f.write(json.dumps({"step": step, "n": 16, "accuracy": acc, "accuracy_no_think": bare, "format_rate": 1.0,
                                "format_rate_no_think": 0.875, "mean_reward": 0.25 + acc}) + "\n")
    with open(run / "samples.jsonl", "w") as f:
        for step in range(1, steps + 1):
            texts = [THINK_SAMPLE if step == steps else f"step {step}: 3 + 5 = 8, wait, that is not it</think>\n<answer>3 + 5</answer>",
                     "answering straight away</think>\n<answer>44</answer>", "still thinking when the tokens ran out"]
            for t in texts:
                f.write(json.dumps({"step": step, "prompt": "Using [44, 19, 3], make 75.", "completion": t, "reward": 0.25,
                                    "correct": t == THINK_SAMPLE, "formatted": "</answer>" in t, "parts": {"think": 0.25}}) + "\n")
    return run


def test_reasoning_panel(tmp_path):
    rep = build_report(think_run(tmp_path / "think"))
    page = rep.html.read_text(encoding="utf-8")
    panel = page[page.index('<section id="reasoning"'):page.index('<section id="samples">')]
    assert "<h2>Reasoning</h2>" in panel and '<a href="#reasoning">Reasoning</a>' in page
    # Its plots (think length, the reflection share, accuracy with and without thinking) are in the panel
    # alone, and the think keys are not plotted again among "other metrics".
    for name in ("think_length", "reflection", "think_accuracy"):
        assert f'data-plot="{name}"' in panel and page.count(f'data-plot="{name}"') == 1
        assert "data:image/png;base64," + base64.b64encode(rep.plots[name].png).decode() in panel
    assert "other" not in rep.plots
    # Accuracy with and without thinking, side by side, per evaluation.
    table = panel[panel.index('<table id="think-accuracy">'):]
    assert table_values(table, "accuracy") == {s: a for s, a, _ in THINK_EVALS}
    assert table_values(table, "accuracy_no_think") == {s: b for s, _, b in THINK_EVALS}
    assert table_values(table, "difference") == {s: pytest.approx(a - b) for s, a, b in THINK_EVALS}
    assert "<th>accuracy_no_think</th>" in page[page.index('<section id="evals">'):]  # the evaluation table too
    # The first, middle and last steps' samples, the think part set apart from the answer.
    assert [g["step"] for g in rep.reasoning["samples"]] == [1, 4, 6]
    for step in (1, 4, 6):
        assert f"<h4>Step {step}</h4>" in panel
    answer = str(escape(split_completion(THINK_SAMPLE)[1][1]))
    assert '<div class="seg think"><span class="label">think</span><pre>I try 44 - 19 = 25, then 25 * 3 = 75. <mark>Let me check</mark>: ' in panel
    assert f'<div class="seg answer"><span class="label">answer</span><pre>{answer}</pre>' in panel

    # A run without a think part has no panel.
    plain = build_report(copy_run(RECORDED, tmp_path / "plain"))
    assert plain.reasoning is None and 'id="reasoning"' not in plain.html.read_text(encoding="utf-8")
