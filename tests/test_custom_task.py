"""``task: custom`` (your data, your prompts, your reward_funcs), reward functions in TRL's form, and
tasks from the user's own code (``module:Class``, ``file.py:Class``).

The integration tests train 2 steps on a tiny random Qwen2 (conftest's eos_rich_model, whose completions
end at any length) with text and with conversational prompts,
a TRL-form reward (tests/trl_rewards.py:record, which writes down what it was given) and a per-sample
one, then resume from step 1 and must match the uninterrupted run exactly."""
import json
import os
import shutil
import sys
import time
from types import SimpleNamespace

import pytest
import torch
from conftest import REPO, launch_train
from safetensors.torch import load_file

from r1zero import cli
from r1zero.config import ConfigError, TrainConfig
from r1zero.data.files import DataError, load_rows, read_file
from r1zero.sandbox.calls import TrainerState
from r1zero.rewards.scoring import RewardScorer, Verdicts, correct_function, training_scorer
from r1zero.tasks import TaskError, build_task, get_task
from r1zero.tasks.custom import template_columns
from r1zero.training.guards import RunHealth

TRL_REWARDS = REPO / "tests" / "trl_rewards.py"
TOY = REPO / "tests" / "toy_rewards.py"
TIMING = ("time/", "tokens_per_second")


@pytest.fixture(scope="module")
def tokenizer(tiny_qwen2):
    """The tokenizer the tiny model's runs use (conftest's own `tokenizer` fixture cannot load: its
    folder has no config.json)."""
    from r1zero.models import load_tokenizer

    return load_tokenizer(str(tiny_qwen2))


def write_jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def read_jsonl(path):
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def chat(tokenizer, messages):
    return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)


# ---- prompts ---------------------------------------------------------------------------------------

def test_prompt_template_is_formatted_from_the_rows_columns(tokenizer):
    ex = {"question": "2+2?", "nums": [7, 8], "answer": 4}
    t = get_task("custom", prompt_template="Solve: {question} (start with {nums[0]})")
    assert t.prompt(ex) == "Solve: 2+2? (start with 7)"
    # auto: text goes to the model as it is (as TRL does), tokenized with the usual special tokens
    assert t.messages(ex) is None and not t.prompt_is_chat
    assert t.render_prompt(ex, tokenizer) == "Solve: 2+2? (start with 7)"
    assert template_columns("{a} {b[0]} {c.real} {a} {{literal}}") == ["a", "b", "c"]
    # chat: the text is the user turn of a chat, the assistant turn opened
    c = get_task("custom", template="chat", prompt_template="Solve: {question}")
    assert c.messages(ex) == [{"role": "user", "content": "Solve: 2+2?"}] and c.prompt_is_chat
    text = c.render_prompt(ex, tokenizer)
    assert text == chat(tokenizer, [{"role": "user", "content": "Solve: 2+2?"}])
    assert text.endswith("<|im_start|>user\nSolve: 2+2?<|im_end|>\n<|im_start|>assistant\n")


def test_system_prompt_puts_a_system_turn_first_unless_the_conversation_has_one(tokenizer):
    t = get_task("custom", system_prompt="Think first.")
    system = {"role": "system", "content": "Think first."}
    user = {"role": "user", "content": "Hi"}
    assert t.messages({"prompt": "Hi"}) == [system, user]  # text becomes a chat (auto)
    assert t.messages({"prompt": [user]}) == [system, user]
    own = [{"role": "system", "content": "Mine."}, user]
    row = {"prompt": own}
    assert t.messages(row) == own and row == {"prompt": own}  # the row is left as it was
    assert t.render_prompt({"prompt": [user]}, tokenizer) == chat(tokenizer, [system, user])
    assert "<|im_start|>system\nThink first.<|im_end|>" in t.render_prompt({"prompt": [user]}, tokenizer)
    assert t.prompt_is_chat


def test_a_conversation_goes_through_the_chat_template_with_chat_template_kwargs(tokenizer):
    user = [{"role": "user", "content": "Hi"}]
    assert get_task("custom").render_prompt({"prompt": user}, tokenizer) == chat(tokenizer, user)

    class Recorder:
        def apply_chat_template(self, messages, **kwargs):
            return json.dumps([messages, kwargs])

    t = get_task("custom", chat_template_kwargs={"enable_thinking": False})
    assert json.loads(t.render_prompt({"prompt": user}, Recorder())) == [
        user, {"tokenize": False, "add_generation_prompt": True, "enable_thinking": False}]


def test_csv_files_and_folders_load_with_inferred_types(tmp_path):
    path = tmp_path / "train.csv"
    path.write_text('prompt,answer\n"What is 2+2, really?",4\nName a colour.,red\n', encoding="utf-8")
    assert read_file(path) == [{"prompt": "What is 2+2, really?", "answer": "4"},
                               {"prompt": "Name a colour.", "answer": "red"}]
    (tmp_path / "n.csv").write_text("prompt,answer\nq,4\n", encoding="utf-8")
    assert read_file(tmp_path / "n.csv") == [{"prompt": "q", "answer": 4}]  # a numeric column is numbers
    assert load_rows(str(tmp_path), "train") == read_file(path)  # a folder: the split's file
    (tmp_path / "bad.csv").write_text("prompt,answer\nq,1,2\n", encoding="utf-8")
    with pytest.raises(DataError) as e:
        read_file(tmp_path / "bad.csv")
    assert str(e.value) == (f"{tmp_path / 'bad.csv'}: not a valid CSV file (CSV parse error: Expected 2 columns, got 3: "
                            "q,1,2); write a header line and one row per line")


# ---- refusals --------------------------------------------------------------------------------------

def _load(tmp_path, rows, **options):
    path = write_jsonl(tmp_path / "d.jsonl", rows)
    get_task("custom", **options).load_split("train", source=str(path))


USER = [{"role": "user", "content": "Hi"}]
REFUSALS = {  # name: (rows, task options, the message with {p} for the data file)
    "no_prompt_column": ([{"question": "q", "answer": 1}], {},
                         "dataset_name: {p} (train) row 1 has no 'prompt' column (its columns: question, answer); add "
                         "one (text or a list of {{role, content}} messages) or set prompt_template, e.g. 'Solve: "
                         "{{question}}'"),
    "template_column_missing": ([{"question": "q", "answer": 1}], {"prompt_template": "Solve: {problem}"},
                                "prompt_template: column 'problem' is not in {p} (train) row 1 (its columns: "
                                "question, answer); use one of those or add the column"),
    "template_column_missing_later": ([{"q": "a"}, {"x": "b"}], {"prompt_template": "{q}"},
                                      "prompt_template: column 'q' is not in {p} (train) row 2 (its columns: x); use "
                                      "one of those or add the column"),
    "template_cannot_format": ([{"n": "seven"}], {"prompt_template": "{n:d}"},
                               "prompt_template: cannot format '{{n:d}}' with this row (ValueError: Unknown format "
                               "code 'd' for object of type 'str'); check the template against the columns"),
    "prompt_not_text": ([{"prompt": 5}], {},
                        "dataset_name: {p} (train) row 1: 'prompt' must be text or a list of {{role, content}} "
                        "messages (text each), not int; fix that row"),
    "mixed_kinds": ([{"prompt": "Hi"}, {"prompt": USER}], {},
                    "dataset_name: {p} (train) row 2: the prompt is a conversation but the rows before hold text; "
                    "make every prompt of one kind"),
    "plain_with_a_conversation": ([{"prompt": USER}], {"template": "plain"},
                                  "template: 'plain' feeds text as it is, but {p} (train) row 1 holds a conversation; "
                                  "use template auto or chat"),
}


@pytest.mark.parametrize("name", sorted(REFUSALS))
def test_bad_data_is_refused_with_one_line(name, tmp_path):
    rows, options, message = REFUSALS[name]
    with pytest.raises(TaskError) as e:
        _load(tmp_path, rows, **options)
    assert str(e.value) == message.format(p=tmp_path / "d.jsonl")


def test_bad_options_are_refused_with_one_line():
    cases = [
        (dict(prompt_template="Solve: {question"), "prompt_template: not a valid template (expected '}' before end "
         "of string); write a column as {name} and a literal brace as {{ or }}"),
        (dict(prompt_template="Solve: {}"), "prompt_template: {} names no column; write the column's name, e.g. "
         "{question}"),
        (dict(template="plain", system_prompt="S"), "system_prompt: template 'plain' feeds text as it is, with no "
         "system turn; remove system_prompt or use template auto or chat"),
        (dict(reward="tinyzero"), "reward: 'tinyzero' is not a reward scheme of task 'custom'; use one of none"),
        (dict(template="xml"), "template: 'xml' is not a template of task 'custom'; use one of auto, chat, plain"),
    ]
    for options, message in cases:
        with pytest.raises(TaskError) as e:
            get_task("custom", **options)
        assert str(e.value) == message
    with pytest.raises(TaskError) as e:
        get_task("custom").load_split("train")
    assert str(e.value) == ("dataset_name: task 'custom' trains on your data; give a hub id or a local .jsonl, .json, "
                            ".parquet or .csv file or folder")


def cfg(**kw) -> TrainConfig:
    base = dict(task="custom", dataset_name="d.jsonl", reward_funcs=[f"{TOY}:vowel_share"], output_dir="unused")
    return TrainConfig(**{**base, **kw})


def test_config_refusals_of_the_new_keys():
    for kw, message in [
        (dict(reward_funcs=[]), "config: 'reward_funcs' is needed by task custom, which has no reward of its own: "
                                "give your functions, e.g. [rewards.py:accuracy]"),
        (dict(correct_reward="accuracy"), "config: 'correct_reward' must be the name of a reward_funcs function "
                                          "(vowel_share)"),
        (dict(format_reward="fmt"), "config: 'format_reward' must be the name of a reward_funcs function (vowel_share)"),
        (dict(correct_threshold=float("nan")), "config: 'correct_threshold' must be a finite number, e.g. 1.0"),
    ]:
        with pytest.raises(ConfigError) as e:
            cfg(**kw)
        assert str(e.value) == message
    # A task with a scheme judges with it: a verdict key is refused, not ignored.
    c = cfg(task="countdown", dataset_name=None, correct_reward="vowel_share")
    with pytest.raises(ConfigError) as e:
        training_scorer(c, build_task(c))
    assert str(e.value) == ("config: 'correct_reward' is for a run without a reward scheme; task 'countdown' judges "
                            "with its scheme 'tinyzero': remove correct_reward, or set reward: none")
    # The custom task's keys are refused for a task that renders its own prompts.
    for key, value in (("prompt_template", "{q}"), ("system_prompt", "S"), ("chat_template_kwargs", {"a": 1})):
        with pytest.raises(TaskError) as e:
            build_task(cfg(task="gsm8k", dataset_name=None, **{key: value}))
        assert str(e.value) == (f"{key}: task 'gsm8k' renders its own prompts and does not use it; remove it, "
                                "or use task: custom")


# ---- the user's own Task ---------------------------------------------------------------------------

TASK_SOURCE = '''
from r1zero.tasks import Score, Task


class EchoTask(Task):
    templates = ("colon",)
    reward_schemes = ("length",)
    default_template = "colon"
    default_reward = "length"

    def __init__(self, reward=None, template=None, scale=1.0, **options):
        super().__init__(reward=reward, template=template, **options)
        self.scale = scale

    def load_split(self, split, source=None, config=None):
        return [{"text": f"{split} {i}"} for i in range(6)]

    def render_prompt(self, example, tokenizer=None):
        return example["text"] + ":"

    def score(self, completion, example):
        value = self.scale * len(completion)
        return Score(value, correct=len(completion) > 3, formatted=True, parts={"length": value})


class NotATask:
    pass


def a_function():
    pass


class Fussy(EchoTask):
    def __init__(self, needed, **kw):
        super().__init__(**kw)
'''


@pytest.fixture
def task_file(tmp_path):
    path = tmp_path / "my_tasks.py"
    path.write_text(TASK_SOURCE, encoding="utf-8")
    return path


def test_a_task_class_from_a_file_or_a_module_is_built_with_the_task_args(task_file, monkeypatch):
    t = build_task(cfg(task=f"{task_file}:EchoTask", reward_funcs=[], task_args={"scale": 2.0}))
    assert type(t).__name__ == "EchoTask" and t.name == "EchoTask" and t.scale == 2.0
    assert t.render_prompt({"text": "a"}) == "a:" and t.score("abcd", {}).reward == 8.0
    monkeypatch.syspath_prepend(str(task_file.parent))
    m = get_task("my_tasks:EchoTask", template="colon")
    assert type(m).__name__ == "EchoTask" and m.scale == 1.0 and m.template == "colon"
    with pytest.raises(TaskError) as e:
        get_task(f"{task_file}:EchoTask", size=3)
    assert str(e.value) == "task_args: unknown option(s) ['size'] for task 'EchoTask'; remove them"


def test_a_user_task_trains(task_file, tiny_qwen2, tmp_path):
    c = TrainConfig(model_name_or_path=str(tiny_qwen2), task=f"{task_file}:EchoTask", task_args={"scale": 0.5},
                    test_size=2, prompts_per_step=2, num_generations=2, max_completion_length=6, max_steps=1,
                    output_dir=str(tmp_path / "run"), report_to=["none"], log_completions_rate=1.0, disable_tqdm=True,
                    eval_on_end=False)
    from r1zero.training.trainer import Trainer

    tr = Trainer(c)
    try:
        m, samples = tr.train_step()
    finally:
        tr.rewarder.close()
    assert [s["reward"] for s in samples] == [0.5 * len(s["completion"]) for s in samples]
    assert [s["correct"] for s in samples] == [len(s["completion"]) > 3 for s in samples]
    assert m["reward/length"] == sum(s["reward"] for s in samples) / 4


def test_a_task_that_is_not_a_task_class_is_refused(task_file):
    f = str(task_file)
    for name, message in [
        (f"{f}:NotATask", f"task: '{f}:NotATask' is the class NotATask, not a subclass of r1zero.tasks.Task; name a "
                          "Task subclass"),
        (f"{f}:a_function", f"task: '{f}:a_function' is a function, not a subclass of r1zero.tasks.Task; name a Task "
                            "subclass"),
        (f"{f}:Missing", f"task: '{f}' has no class 'Missing'; check '{f}:Missing'"),
        ("/nonexistent/tasks.py:MyTask", "task: no file /nonexistent/tasks.py; check the path in "
                                         "'/nonexistent/tasks.py:MyTask'"),
        ("no_such_module_r1z:MyTask", "task: cannot import 'no_such_module_r1z' (ModuleNotFoundError: No module named "
                                      "'no_such_module_r1z'); check 'no_such_module_r1z:MyTask'"),
        (f"{f}:Fussy", f"task: '{f}:Fussy' could not be built (TypeError: Fussy.__init__() missing 1 required "
                       "positional argument: 'needed'); its __init__ takes reward, template and the task_args as "
                       "keywords (as r1zero.tasks.Task's does)"),
        ("chess", "task: unknown task 'chess'; use one of countdown, custom, gsm8k, math, sums, or your own Task subclass as "
                  "'module:Class' or 'path/to/file.py:Class'"),
    ]:
        with pytest.raises(TaskError) as e:
            get_task(name)
        assert str(e.value) == message


REFUSED_BEFORE_LOADING = {  # name: (recipe changes, rows, the message with {p} for the data file, {d} for tests/)
    "no_prompt_column": ({}, [{"question": "q"}] * 8,
                         "dataset_name: {p} (train) row 1 has no 'prompt' column (its columns: question); add one "
                         "(text or a list of {{role, content}} messages) or set prompt_template, e.g. 'Solve: "
                         "{{question}}'"),
    "template_column_missing": ({"prompt_template": "Q: {problem}"}, [{"question": "q"}] * 8,
                                "prompt_template: column 'problem' is not in {p} (train) row 1 (its columns: "
                                "question); use one of those or add the column"),
    "reward_file_missing": ({"reward_funcs": ["/nonexistent/rewards.py:fn"]}, [{"prompt": "q"}] * 8,
                            "reward_funcs: no file /nonexistent/rewards.py; check the path in "
                            "'/nonexistent/rewards.py:fn'"),
    "reward_function_missing": ({"reward_funcs": ["{d}/trl_rewards.py:nope"]}, [{"prompt": "q"}] * 8,
                                "reward_funcs: '{d}/trl_rewards.py' has no function 'nope'; check "
                                "'{d}/trl_rewards.py:nope'"),
    "not_a_task": ({"task": "{d}/trl_rewards.py:reward_len"}, [{"prompt": "q"}] * 8,
                   "task: '{d}/trl_rewards.py:reward_len' is a function, not a subclass of r1zero.tasks.Task; name a "
                   "Task subclass"),
}


@pytest.mark.parametrize("name", sorted(REFUSED_BEFORE_LOADING))
def test_refused_before_any_model_loads(name, tmp_path, capsys):
    """The model path does not exist: a refusal that came after loading would be about the model."""
    changes, rows, message = REFUSED_BEFORE_LOADING[name]
    data = write_jsonl(tmp_path / "d.jsonl", rows)
    d = REPO / "tests"
    recipe = {"model_name_or_path": "/nonexistent/model", "task": "custom", "dataset_name": str(data), "test_size": 2,
              "reward_funcs": [f"{TRL_REWARDS}:reward_len"], "output_dir": str(tmp_path / "out"),
              "report_to": ["none"], **json.loads(json.dumps(changes).replace("{d}", str(d)))}
    path = tmp_path / "recipe.yaml"
    path.write_text(json.dumps(recipe))  # JSON is YAML
    capsys.readouterr()
    assert cli.main(["train", "--config", str(path)]) == 2
    lines = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert lines == ["r1zero: error: " + message.format(p=data, d=d)]  # not about the missing model
    assert not (tmp_path / "out").exists()


# ---- reward functions in TRL's form ----------------------------------------------------------------

def test_unchanged_trl_reward_functions_work():
    # Text prompts: TRL's quickstart function, on plain completions.
    rm = RewardScorer(get_task("custom"), [f"{TRL_REWARDS}:reward_len"])
    s = rm(["a" * 5, "b" * 20, "c" * 30], [{"prompt": "p"}] * 3, ["p"] * 3)
    assert s.parts["reward_len"] == [-15.0, 0.0, -10.0] and s.rewards == [-15.0, 0.0, -10.0] and not s.errors
    # Conversational prompts: TRL's documented format reward and TRL's own think_format_reward read
    # completion[0]["content"].
    rm = RewardScorer(get_task("custom"), [f"{TRL_REWARDS}:format_reward_func", "trl.rewards:think_format_reward"])
    comps = ["<think>x</think><answer>y</answer>", "<think>\nx\n</think>\nso 4", "no tags"]
    s = rm(comps, [{"prompt": USER}] * 3, ["rendered"] * 3)
    assert s.parts == {"format_reward_func": [1.0, 0.0, 0.0], "think_format_reward": [1.0, 1.0, 0.0]}
    assert s.rewards == [2.0, 1.0, 0.0] and not s.errors
    # gsm8k's prompt is a conversation too (system + question, as the GSM8K course's TRL script has it).
    from r1zero.tasks.gsm8k import SYSTEM_PROMPT

    gsm8k = get_task("gsm8k")
    ex = {"question": "2+2?", "answer": "#### 4"}
    assert gsm8k.messages(ex) == [{"role": "system", "content": SYSTEM_PROMPT}, {"role": "user", "content": "2+2?"}]
    rm = RewardScorer(gsm8k, [f"{TRL_REWARDS}:format_reward_func"], scheme=False)
    assert rm(comps, [ex] * 3, ["rendered"] * 3).parts == {"format_reward_func": [1.0, 0.0, 0.0]}


def test_the_arguments_are_the_ones_trl_gives(tokenizer):
    """TRL 1.16's own GRPOTrainer._calculate_rewards (on a stand-in trainer) and r1zero's RewardScorer
    call the same function with the same batch: the same keyword arguments, value for value."""
    from trl import GRPOTrainer

    rows = [{"prompt": [{"role": "user", "content": "2+2?"}], "answer": 4, "topic": "sums"},
            {"prompt": [{"role": "user", "content": "3+3?"}], "answer": 6, "topic": None}]
    inputs = [r for r in rows for _ in range(2)]  # TRL repeats each row per generation, as r1zero does
    texts, ids = ["4", "four", "6", "six!"], [[19, 2], [2345, 2], [21, 2], [5, 6, 7]]
    rm = RewardScorer(get_task("custom"), [f"{TRL_REWARDS}:capture"])
    capture = rm.funcs[0][1]
    captured = capture.__globals__["CAPTURED"]
    rm(texts, inputs, [chat(tokenizer, r["prompt"]) for r in inputs], completion_ids=ids,
       trainer_state=TrainerState(3, 10))
    ours = captured.pop()
    stub = SimpleNamespace(accelerator=SimpleNamespace(device="cpu", is_main_process=True), reward_funcs=[capture],
                           reward_processing_classes=[None], reward_func_names=["capture"],
                           state=SimpleNamespace(global_step=3, max_steps=10), _log_completion_extra=None,
                           _log_metric=None, environments=None, args=SimpleNamespace(report_to=[]), async_loop=None)
    GRPOTrainer._calculate_rewards(stub, inputs, [x["prompt"] for x in inputs],
                                   [[{"role": "assistant", "content": t}] for t in texts], ids)
    trl = captured.pop()
    assert sorted(trl) == ["answer", "completion_ids", "completions", "log_extra", "log_metric", "prompts", "topic",
                           "trainer_state"]
    assert sorted(ours) == ["answer", "completion_ids", "completions", "prompts", "topic", "trainer_state"]
    # The same values; trainer_state has TRL's field names; r1zero passes no logging hooks.
    assert {k: v for k, v in trl.items() if k not in ("log_extra", "log_metric", "trainer_state")} == \
        {k: v for k, v in ours.items() if k != "trainer_state"}
    assert ours["trainer_state"] == TrainerState(3, 10)
    assert (trl["trainer_state"].global_step, trl["trainer_state"].max_steps) == (3, 10)
    # Text prompts: prompts and completions are the text.
    rm(["4", "5"], [{"prompt": "2+2?", "answer": 4}] * 2, ["2+2?"] * 2)
    assert captured.pop() == {"prompts": ["2+2?"] * 2, "completions": ["4", "5"], "completion_ids": None,
                              "answer": [4, 4], "trainer_state": None}


def test_none_is_not_applicable_not_a_failure():
    rm = RewardScorer(get_task("custom"), [f"{TRL_REWARDS}:answer_in_text", f"{TOY}:constant"],
                     scheme=False, verdicts=Verdicts("answer_in_text"))
    s = rm(["it is 4", "no", "x"], [{"prompt": "p", "answer": 4}, {"prompt": "p", "answer": 5},
                                    {"prompt": "p", "answer": None}], ["p"] * 3)
    assert s.parts["answer_in_text"] == [1.0, 0.0, 0.0] and s.rewards == [2.0, 1.0, 1.0]
    assert s.errors == {} and s.error_reasons == {}
    assert s.correct == [True, False, False] and s.formatted == [True, True, True]


def test_verdicts_from_correct_reward_and_format_reward():
    rm = RewardScorer(get_task("custom"), [f"{TRL_REWARDS}:reward_len", f"{TOY}:vowel_share"], [0.0, 1.0],
                     scheme=False, verdicts=Verdicts("reward_len", -5.0, "vowel_share"))
    comps = ["a" * 16, "b" * 12, "xyz" * 5 + "ae"]  # reward_len -4, -8, -3; vowel share 1, 0, 2/17
    s = rm(comps, [{"prompt": "p"}] * 3, ["p"] * 3)
    assert s.correct == [True, False, True] and s.formatted == [True, False, True]
    assert s.rewards == [1.0, 0.0, 2 / 17]  # weight 0: reward_len only judges
    c = cfg(reward_funcs=[f"{TOY}:vowel_share", f"{TRL_REWARDS}:answer_in_text", "m:accuracy_reward"])
    assert correct_function(c) == "accuracy_reward"
    assert correct_function(cfg(reward_funcs=["m:accuracy", "m:correctness_reward_func"])) is None  # two: ambiguous
    assert correct_function(cfg(reward_funcs=["m:accuracy", "m:b"], correct_reward="b")) == "b"


@pytest.mark.parametrize("timeout", [0.0, 5.0])  # in-process and in a worker process
def test_a_batch_call_that_fails_fails_every_sample_and_is_counted(timeout):
    from toy_rewards import vowel_share

    reasons = {"raise": "ZeroDivisionError: boom", "short": "returned 2 values for 3 completions",
               "long": "returned 4 values for 3 completions", "scalar": "returned float, not a list of 3 numbers",
               "text": "value 0 of 3: returned a str, not one number", "nan": "value 2 of 3: returned nan"}
    rm = RewardScorer(None, [f"{TRL_REWARDS}:by_first_word", f"{TOY}:vowel_share"], timeout=timeout)
    try:
        for kind, why in reasons.items():
            comps = [f"{kind} a", "b", "c"]
            s = rm(comps, [{}] * 3)
            assert s.parts["by_first_word"] == [0.0] * 3 and s.errors == {"by_first_word": 3}, kind
            assert s.error_reasons == {"by_first_word": why}
            assert s.parts["vowel_share"] == [vowel_share(c) for c in comps]  # the other function is unaffected
        s = rm(["fine", "b", "c"], [{}] * 3)
        assert s.parts["by_first_word"] == [0.25] * 3 and not s.errors
    finally:
        rm.close()
    # A stop follows when it fails on every sample for max_failed_reward_steps steps.
    health = RunHealth(5, 1)
    health.end_step(1, 3, SimpleNamespace(errors={"by_first_word": 3}, error_reasons={"by_first_word": "x"}))
    assert health.stop_message.startswith("stopped at step 1: reward 'by_first_word' failed on every sample")


def test_a_hanging_batch_call_is_killed_at_timeout_times_the_batch_size():
    rm = RewardScorer(None, [f"{TRL_REWARDS}:by_first_word"], timeout=0.5)
    try:
        rm(["warm"], [{}])  # the worker started
        t0 = time.perf_counter()
        s = rm(["hang", "b", "c"], [{}] * 3)
        elapsed = time.perf_counter() - t0
        assert s.parts["by_first_word"] == [0.0] * 3 and s.errors == {"by_first_word": 3}
        assert s.error_reasons == {"by_first_word": "timed out after 1.5 s (3 completions x 0.5 s)"}
        assert 1.5 <= elapsed < 10.0, elapsed
        # 0.7 s for the whole call is longer than one completion's 0.5 s but within 3 x 0.5 s: it counts.
        s = rm(["sleep", "b", "c"], [{}] * 3)
        assert s.parts["by_first_word"] == [0.25] * 3 and not s.errors
        assert rm.workers[0].restarts == 1  # the hanging worker was killed and a fresh one took over
    finally:
        rm.close()


# ---- training: 2 steps, then a resume ------------------------------------------------------------

def data_rows(kind: str) -> list[dict]:
    topics = ["colours", "animals", "food", "music"]
    rows = []
    for i in range(16):
        question = f"Name {i % 5 + 2} {topics[i % 4]}."
        prompt = question if kind == "text" else [{"role": "user", "content": question}]
        rows.append({"prompt": prompt, "answer": str(i % 5 + 2), "topic": topics[i % 4]})
    return rows


def recipe(model_dir, data, out) -> dict:
    return dict(model_name_or_path=str(model_dir), task="custom", dataset_name=str(data), test_size=4,
                prompts_per_step=2, num_generations=4, micro_batch_size=4, max_prompt_length=128,
                max_completion_length=10, learning_rate=1e-3, max_steps=2, save_steps=1, save_total_limit=None,
                eval_limit=4, eval_on_start=True, eval_on_end=True, output_dir=str(out), report_to=["none"],
                log_completions_rate=1.0, disable_tqdm=True, seed=3,
                reward_funcs=[f"{TRL_REWARDS}:record", f"{TOY}:vowel_share"], correct_reward="record",
                correct_threshold=0.5)


def metric_rows(out):
    return [{k: v for k, v in r.items() if not k.startswith(TIMING)} for r in read_jsonl(out / "metrics.jsonl")]


@pytest.mark.parametrize("kind", ["text", "conversation"])
def test_custom_task_trains_two_steps_and_resumes_exactly(kind, eos_rich_model, tokenizer, tmp_path, monkeypatch):
    from toy_rewards import vowel_share

    rows = data_rows(kind)
    data = write_jsonl(tmp_path / "data.jsonl", rows)
    full = tmp_path / "full"
    monkeypatch.setenv("R1ZERO_TEST_RECORD", str(tmp_path / "full-calls.jsonl"))
    launch_train(recipe(eos_rich_model, data, full))  # its completions end anywhere: with EOS, or cut
    calls = read_jsonl(tmp_path / "full-calls.jsonl")
    # Calls: eval before training, step 1, step 2, eval after training (TRL's form: one call each).
    assert [c["trainer_state"] for c in calls] == [None, [0, 2], [1, 2], None]
    assert [len(c["completions"]) for c in calls] == [4, 8, 8, 4]
    samples = read_jsonl(full / "samples.jsonl")  # log_completions_rate 1: every completion, in order
    assert {s["truncated"] for s in samples} == {True, False}
    eos = set(json.loads((eos_rich_model / "generation_config.json").read_text())["eos_token_id"])
    answer_of = {json.dumps(r["prompt"]): r["answer"] for r in rows}
    for step, call in ((1, calls[1]), (2, calls[2])):
        mine = [s for s in samples if s["step"] == step]
        texts = [s["completion"] for s in mine]
        if kind == "text":
            assert call["completions"] == texts  # text, as the prompts are
            assert call["prompts"] == [s["prompt"] for s in mine]  # the text itself is what the model saw
        else:
            assert call["completions"] == [[{"role": "assistant", "content": t}] for t in texts]
            assert call["prompts"] == [s["example"]["prompt"] for s in mine]  # the message lists
            assert [chat(tokenizer, p) for p in call["prompts"]] == [s["prompt"] for s in mine]
        assert all(p == call["prompts"][i - i % 4] for i, p in enumerate(call["prompts"]))  # groups of 4
        # An extra column as a list, no 'prompt' among the keyword arguments, TRL's trainer_state.
        assert call["answer"] == [answer_of[json.dumps(p)] for p in call["prompts"]]
        assert call["topic"] == [s["example"]["topic"] for s in mine]
        assert call["kwargs"] == ["topic", "trainer_state"]
        # completion_ids: the sampled tokens, EOS included (TRL's): without it they decode to the text.
        ids = call["completion_ids"]
        assert [len(x) for x in ids] == [s["length"] for s in mine]
        assert [x[-1] in eos for x in ids] == [not s["truncated"] for s in mine]
        assert [tokenizer.decode(x if s["truncated"] else x[:-1], skip_special_tokens=True)
                for x, s in zip(ids, mine)] == texts
        # Both functions' values are the parts; correct_reward decides correct, accuracy counts it.
        assert [s["parts"]["record"] for s in mine] == call["values"]
        assert [s["parts"]["vowel_share"] for s in mine] == [vowel_share(t) for t in texts]
        assert [s["correct"] for s in mine] == [v >= 0.5 for v in call["values"]]
    train = [m for m in metric_rows(full) if "reward" in m]
    assert [m["accuracy"] for m in train] == [sum(v >= 0.5 for v in c["values"]) / 8 for c in calls[1:3]]
    assert [m["outcome/correct"] for m in train] == [m["accuracy"] for m in train]
    assert [m["format_rate"] for m in train] == [1.0, 1.0]  # no format_reward: every answer counts as formatted
    assert "reward/record" in train[0] and not any(k.startswith("reward_errors/") for m in train for k in m)
    # The evaluations score with the reward functions too: the final one is the last call's values.
    evals = read_jsonl(full / "eval_results.jsonl")
    final = read_jsonl(full / "eval" / "step-2.jsonl")
    assert [r["parts"]["record"] for r in final] == calls[3]["values"]
    assert evals[-1]["accuracy"] == sum(v >= 0.5 for v in calls[3]["values"]) / 4

    # Resume from checkpoint-1 in a new process: the same weights, metrics, samples and step-2 call.
    resumed = tmp_path / "resumed"
    resumed.mkdir()
    shutil.copytree(full / "checkpoint-1", resumed / "checkpoint-1")
    for name in ("metrics.jsonl", "samples.jsonl", "eval_results.jsonl"):
        shutil.copy(full / name, resumed / name)
    monkeypatch.setenv("R1ZERO_TEST_RECORD", str(tmp_path / "resumed-calls.jsonl"))
    launch_train(recipe(eos_rich_model, data, resumed))
    assert read_jsonl(tmp_path / "resumed-calls.jsonl") == calls[2:]
    a = load_file(full / "checkpoint-2" / "model.safetensors")
    b = load_file(resumed / "checkpoint-2" / "model.safetensors")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    start = load_file(full / "checkpoint-1" / "model.safetensors")
    assert any(not torch.equal(a[k], start[k]) for k in a)  # step 2 did change the weights
    assert metric_rows(resumed) == metric_rows(full)
    assert (resumed / "samples.jsonl").read_text() == (full / "samples.jsonl").read_text()

    if kind == "conversation":  # `r1zero eval` of the checkpoint scores as the run's own final evaluation
        import subprocess

        monkeypatch.setenv("R1ZERO_TEST_RECORD", str(tmp_path / "eval-calls.jsonl"))
        r = subprocess.run([sys.executable, "-m", "r1zero", "eval", "--model", str(full / "checkpoint-2"),
                            "--out", str(tmp_path / "eval.json")], capture_output=True, text=True, timeout=600,
                           env={**os.environ, "OMP_NUM_THREADS": "1"})
        assert r.returncode == 0, r.stderr[-3000:]
        written = json.loads((tmp_path / "eval.json").read_text())
        assert [x["parts"] for x in written["records"]] == [x["parts"] for x in final]
        assert written["summary"]["accuracy"] == evals[-1]["accuracy"]


def test_the_readme_example_runs_as_written(tmp_path):
    """The YAML and reward functions of README's "Your own data and rewards", as a user would copy them."""
    import yaml

    readme = (REPO / "README.md").read_text(encoding="utf-8")
    section = readme[readme.index("## Your own data and rewards"):]
    config = yaml.safe_load(section.split("```yaml\n", 1)[1].split("```", 1)[0])
    (tmp_path / "rewards.py").write_text(section.split("```python\n", 1)[1].split("```", 1)[0], encoding="utf-8")
    c = TrainConfig(**{**config, "reward_funcs": [f"{tmp_path / 'rewards.py'}:{f.split(':')[1]}"
                                                  for f in config["reward_funcs"]]})
    task = build_task(c)
    assert task.messages({"question": "2+3?"}) == [{"role": "system", "content": config["system_prompt"]},
                                                   {"role": "user", "content": "Solve: 2+3?"}]
    rm = training_scorer(c, task)  # each function in its worker process (reward_timeout 10 s)
    try:
        s = rm(["It is 2+3 = 5", "6"], [{"question": "2+3?", "answer": 5}] * 2, ["rendered"] * 2)
    finally:
        rm.close()
    assert s.parts == {"accuracy": [1.0, 0.0], "brevity": [-0.013, -0.001]}
    assert s.rewards == [1.0 + 0.1 * -0.013, 0.1 * -0.001] and s.correct == [True, False]
