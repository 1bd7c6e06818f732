"""Reward functions in TRL's form (a parameter named ``completions``, called once per batch with lists),
for tests/test_custom_task.py. ``reward_len`` and ``format_reward_func`` are written exactly as TRL's
documentation shows them (docs "GRPO Trainer", "Using a custom reward function"), unchanged."""
import json
import os
import re
import time


def reward_len(completions, **kwargs):
    return [-abs(20 - len(completion)) for completion in completions]


def format_reward_func(completions, **kwargs):
    """Reward function that checks if the completion has a specific format."""
    pattern = r"^<think>.*?</think><answer>.*?</answer>$"
    completion_contents = [completion[0]["content"] for completion in completions]
    matches = [re.match(pattern, content) for content in completion_contents]
    return [1.0 if match else 0.0 for match in matches]


def record(prompts, completions, completion_ids, answer, **kwargs):
    """Writes what it was given (one JSON line per call) to the file $R1ZERO_TEST_RECORD, and returns
    a value of the completion's text only: (length mod 3) / 2, so 0, 0.5 or 1."""
    texts = [c[0]["content"] if isinstance(c, list) else c for c in completions]
    values = [len(t) % 3 / 2 for t in texts]
    state = kwargs["trainer_state"]
    line = {"prompts": prompts, "completions": completions, "completion_ids": completion_ids, "answer": answer,
            "kwargs": sorted(kwargs), "topic": kwargs.get("topic"),
            "trainer_state": None if state is None else [state.global_step, state.max_steps], "values": values}
    with open(os.environ["R1ZERO_TEST_RECORD"], "a", encoding="utf-8") as f:
        f.write(json.dumps(line) + "\n")
    return values


CAPTURED = []


def capture(completions, **kwargs):
    """Keeps every call's arguments in CAPTURED (in-process use only)."""
    CAPTURED.append({"completions": completions, **kwargs})
    return [0.0] * len(completions)


def answer_in_text(completions, answer, **kwargs):
    """1.0 when the answer is in the completion, None when the row has no answer (not applicable)."""
    return [None if a is None else float(str(a) in c) for c, a in zip(completions, answer)]


def by_first_word(completions, **kwargs):
    """Misbehaves as the first completion's first word says (a batch call fails as a whole)."""
    kind = completions[0].split(" ", 1)[0]
    n = len(completions)
    if kind == "raise":
        raise ZeroDivisionError("boom")
    if kind == "short":
        return [1.0] * (n - 1)
    if kind == "long":
        return [1.0] * (n + 1)
    if kind == "scalar":
        return 1.0
    if kind == "text":
        return ["1.0"] * n
    if kind == "nan":
        return [1.0] * (n - 1) + [float("nan")]
    if kind == "hang":
        while True:
            time.sleep(0.01)
    if kind == "sleep":  # 0.7 s in all: longer than reward_timeout 0.5, within 0.5 x 3 completions
        time.sleep(0.7)
    return [0.25] * n
