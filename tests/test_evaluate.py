"""evaluate()'s figures equal a count made by hand from the completions it scored.

A random tiny model never solves Countdown, so every figure would be 0 and prove nothing; the test
registers a task a random model solves sometimes (the completion contains the example's letter)
and runs the real evaluate() on it. The completions are recorded as they are sampled
(conftest.RolloutRecorder: the real generate runs), then scored again with ``task.score`` and
counted here: accuracy, format rate and mean reward over the greedy answers, mean length and
truncated rate from the token ids, and mean@K / pass@K over the K sampled answers per problem.
"""
import pytest
import torch
from conftest import RolloutRecorder

from r1zero.observe.evaluate import evaluate
from r1zero.models import eos_token_ids, load_model, load_tokenizer
from r1zero.rollout.sampling import encode_prompts
from r1zero.tasks import Score, Task, get_task, register_task, task_names


class LetterProbe(Task):
    """Correct when the completion holds the example's letter; formatted when it holds a space."""

    templates = ("plain",)
    reward_schemes = ("hit",)
    default_template, default_reward = "plain", "hit"
    required_fields = ("letter", "word")

    def load_split(self, split, source=None, config=None):
        words = ["river", "Monday", "seven", "quartz", "jungle", "pixel", "violin", "kettle", "zebra", "amber",
                 "orbit", "lemon"]
        return [{"letter": c, "word": w} for c, w in zip("eaiqzxjvkeou", words)]

    def render_prompt(self, example, tokenizer=None):
        return f"{example['word']}? {example['letter']}"

    def score(self, completion, example):
        correct = example["letter"] in completion.lower()
        formatted = " " in completion
        parts = {"hit": 1.0 if correct else 0.0, "space": 0.25 if formatted else 0.0}
        return Score(sum(parts.values()), correct, formatted, parts)


@pytest.fixture(scope="module")
def task():
    if "letter_probe" not in task_names():
        register_task("letter_probe")(LetterProbe)
    return get_task("letter_probe")


K = 3
MAX_NEW = 6


def test_evaluate_figures_equal_a_hand_count(task, eos_rich_model, monkeypatch):
    tok = load_tokenizer(str(eos_rich_model))
    model = load_model(str(eos_rich_model), torch.device("cpu"), trainable=False)
    eos = eos_token_ids(tok, model)
    rows = task.load_split("test")
    n = len(rows)
    rec = RolloutRecorder(monkeypatch)
    summary, records = evaluate(model, tok, task, rows, eos_ids=eos, max_new_tokens=MAX_NEW, samples=K,
                                temperature=1.0, batch_size=4, seed=5)
    greedy, sampled = rec.rollouts
    assert greedy.completion_ids.shape[0] == n and sampled.completion_ids.shape[0] == n * K

    # Greedy: the answers are the argmax continuation (transformers' own greedy search agrees).
    _, prompt_ids = encode_prompts(task, tok, rows)
    for i in range(n):
        ids = torch.tensor([prompt_ids[i]])
        hf = model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), do_sample=False,
                            max_new_tokens=MAX_NEW, eos_token_id=eos, pad_token_id=tok.pad_token_id)
        want = hf[0, ids.shape[1]:].tolist()
        length = int(greedy.completion_mask[i].sum())
        assert greedy.completion_ids[i, :length].tolist() == want[:length], i
    assert [r["completion"] for r in records] == greedy.completions

    # The records' verdicts are task.score's, and the summary is their count.
    verdicts = [task.score(c, ex) for c, ex in zip(greedy.completions, rows)]
    for r, v in zip(records, verdicts):
        assert (r["correct"], r["formatted"], r["reward"], r["parts"]) == (v.correct, v.formatted, v.reward, v.parts)
    correct = sum(v.correct for v in verdicts)
    formatted = sum(v.formatted for v in verdicts)
    assert 0 < correct < n and 0 < formatted < n, (correct, formatted)  # the counts can be wrong both ways
    assert summary["n"] == n
    assert summary["accuracy"] == correct / n
    assert summary["format_rate"] == formatted / n
    assert summary["mean_reward"] == pytest.approx(sum(v.reward for v in verdicts) / n, abs=1e-12)

    # Lengths by hand from the token ids: up to and including the first EOS id, else all MAX_NEW.
    lengths, truncated = [], []
    for i in range(n):
        row = greedy.completion_ids[i].tolist()
        stop = next((t for t, x in enumerate(row) if x in eos), None)
        lengths.append(stop + 1 if stop is not None else MAX_NEW)
        truncated.append(stop is None)
    assert 0 < sum(truncated) < n, truncated
    assert summary["mean_length"] == pytest.approx(sum(lengths) / n, abs=1e-6)
    assert summary["truncated_rate"] == pytest.approx(sum(truncated) / n, abs=1e-6)

    # K samples per problem, grouped by problem (row i*K + k is problem i's k-th sample).
    hits = [[task.score(sampled.completions[i * K + k], rows[i]).correct for k in range(K)] for i in range(n)]
    mean_k = sum(map(sum, hits)) / (n * K)
    pass_k = sum(any(h) for h in hits) / n
    assert 0 < mean_k < pass_k < 1, (mean_k, pass_k)  # mean@K and pass@K differ, so a swap is seen
    assert summary[f"mean@{K}"] == pytest.approx(mean_k, abs=1e-12)
    assert summary[f"pass@{K}"] == pytest.approx(pass_k, abs=1e-12)
    # Sampled, not greedy: the K answers of a problem differ.
    assert any(len(set(sampled.completions[i * K:(i + 1) * K])) > 1 for i in range(n))


# ---- the evaluation with the thinking taken away (eval_no_think) ---------------------------------

class ThinkProbe(LetterProbe):
    """LetterProbe with a think part opened in the prompt: correct when the completion holds the
    example's letter, formatted (and paid 0.25) when it closes the think part. So a no-think answer
    scored without its prefill ("\\n</think>\\n<answer>", which also holds some of the letters)
    would score differently."""

    templates = ("think",)
    default_template = "think"

    def think_style(self):
        return "prefilled"

    def render_prompt(self, example, tokenizer=None):
        return f"{example['word']}? {example['letter']}\n{self.THINK_OPEN}"

    def score(self, completion, example):
        correct = example["letter"] in completion.lower()
        formatted = self.THINK_CLOSE in completion
        parts = {"hit": 1.0 if correct else 0.0, "closed": 0.25 if formatted else 0.0}
        return Score(sum(parts.values()), correct, formatted, parts)


@pytest.fixture(scope="module")
def think_task():
    if "think_probe" not in task_names():
        register_task("think_probe")(ThinkProbe)
    return get_task("think_probe")


def prompts_fed(model, calls: list):
    """Record each prompt batch the model is fed (the forward that gets more than one token per row:
    the prefill), as (input_ids, attention_mask); returns the hook's handle."""
    def hook(module, args, kwargs):
        ids = kwargs.get("input_ids", args[0] if args else None)
        if ids is not None and ids.shape[1] > 1:
            calls.append((ids.clone(), kwargs["attention_mask"].clone()))

    return model.register_forward_pre_hook(hook, with_kwargs=True)


def test_no_think_feeds_the_prefill_and_scores_it_with_the_answer(think_task, eos_rich_model, monkeypatch):
    tok = load_tokenizer(str(eos_rich_model))
    model = load_model(str(eos_rich_model), torch.device("cpu"), trainable=False)
    eos = eos_token_ids(tok, model)
    rows = think_task.load_split("test")
    n, prefill = len(rows), think_task.no_think_prefill()
    assert prefill == "\n</think>\n<answer>"
    rec, calls = RolloutRecorder(monkeypatch), []
    handle = prompts_fed(model, calls)
    try:
        summary, records = evaluate(model, tok, think_task, rows, eos_ids=eos, max_new_tokens=MAX_NEW,
                                    batch_size=n, no_think=True, max_prompt_length=64)
    finally:
        handle.remove()

    # Two greedy passes, one prefill forward each: the second fed every prompt with the prefill appended.
    greedy, no_think = rec.rollouts
    assert len(calls) == 2
    for (ids, mask), suffix in zip(calls, ("", prefill)):
        fed = [tok.decode(row[m.bool()].tolist(), skip_special_tokens=True) for row, m in zip(ids, mask)]
        assert fed == [think_task.render_prompt(ex) + suffix for ex in rows]
    assert all(f.endswith(prefill) for f in fed)
    # The records hold what the model wrote (without the prefill) and the prompt as rendered.
    assert [r["completion"] for r in records] == greedy.completions
    assert [r["completion_no_think"] for r in records] == no_think.completions
    assert [r["prompt"] for r in records] == [think_task.render_prompt(ex) for ex in rows]

    # Both accuracies from the records, and again from task.score of prefill + the recorded answer.
    verdicts = [think_task.score(prefill + r["completion_no_think"], ex) for r, ex in zip(records, rows)]
    for r, v in zip(records, verdicts):
        assert (r["correct_no_think"], r["formatted_no_think"], r["reward_no_think"]) == (v.correct, v.formatted, v.reward)
    hits = sum(v.correct for v in verdicts)
    assert 0 < hits < n, hits  # a count that can be wrong both ways
    assert summary["accuracy_no_think"] == sum(r["correct_no_think"] for r in records) / n == hits / n
    assert summary["format_rate_no_think"] == sum(v.formatted for v in verdicts) / n == 1.0
    assert summary["accuracy"] == sum(r["correct"] for r in records) / n
    assert summary["accuracy"] == sum(think_task.score(r["completion"], ex).correct for r, ex in zip(records, rows)) / n
    assert summary["accuracy"] != summary["accuracy_no_think"]  # the two passes are told apart
    assert summary["format_rate"] == 0.0  # a random model never closes the think part itself


def test_no_think_without_a_think_part_adds_nothing(task, eos_rich_model, monkeypatch):
    tok = load_tokenizer(str(eos_rich_model))
    model = load_model(str(eos_rich_model), torch.device("cpu"), trainable=False)
    rows = task.load_split("test")[:4]
    assert task.no_think_prefill() is None
    rec = RolloutRecorder(monkeypatch)
    summary, records = evaluate(model, tok, task, rows, eos_ids=eos_token_ids(tok, model), max_new_tokens=MAX_NEW,
                                no_think=True)
    assert len(rec.rollouts) == 1  # no second generation
    assert not any("no_think" in k for k in summary)
    assert not any("no_think" in k for r in records for k in r)


def test_eval_no_think_is_resolved_and_refused_from_the_config(think_task, task):
    from r1zero.config import ConfigError, TrainConfig
    from r1zero.observe.evaluate import no_think_setting

    # None (auto): on exactly when the template has a think part; false turns it off.
    assert no_think_setting(TrainConfig(), think_task) is True
    assert no_think_setting(TrainConfig(), task) is False
    assert no_think_setting(TrainConfig(eval_no_think=False), think_task) is False
    assert no_think_setting(TrainConfig(eval_no_think=True), think_task) is True
    with pytest.raises(ConfigError) as e:
        no_think_setting(TrainConfig(eval_no_think=True), task)
    assert str(e.value) == ("config: 'eval_no_think' is true, but template 'plain' of task 'letter_probe' has no think "
                            "part to take away; remove it, or use a template whose completions think in <think> "
                            "</think> (countdown: chat-think)")
