"""The think part's length per step (r1zero.observe.metrics.think_metrics): tokens of Task.think_text
with the run's tokenizer, over every completion of the step; nothing for a template without a think part."""
import pytest

from r1zero.observe import metrics as metric_names
from r1zero.observe.metrics import think_metrics
from r1zero.tasks import get_task
from r1zero.tasks.base import Task

# chat-think prefills "<think>": a completion starts inside the think part. The SmolLM2 tokenizer
# splits digits one by one; the token counts are of the think part alone (no special tokens):
COMPLETIONS = [
    "3 + 5 is 8.</think>\n<answer>3 + 5</answer>",  # '3' ' +' ' ' '5' ' is' ' ' '8' '.': 8
    "Let me try 7 * 2 = 14, wait, no",               # never closed: the whole text, 16
    "</think>\n<answer>8</answer>",                  # closed at once: 0
    "a</think> b c d</think>",                       # up to the first close: 'a', 1
]


@pytest.fixture(scope="module")
def tokenizer(tokenizer_dir):
    """The SmolLM2 tokenizer the tiny test models are saved with (conftest's tokenizer_dir)."""
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(tokenizer_dir)


def test_think_length_in_tokens(tokenizer):
    task = get_task("countdown", template="chat-think", train_size=4, test_size=2)
    assert task.think_style() == "prefilled"
    m = think_metrics(task, tokenizer, COMPLETIONS)
    assert set(m) == {metric_names.THINK_MEAN_LENGTH, metric_names.THINK_P90_LENGTH}
    assert m[metric_names.THINK_MEAN_LENGTH] == pytest.approx((8 + 16 + 0 + 1) / 4)
    # p90 as the other length metrics take it (torch.quantile, linear): sorted 0 1 8 16, position 2.7.
    assert m[metric_names.THINK_P90_LENGTH] == pytest.approx(8 + 0.7 * (16 - 8))


class WrittenThink(Task):
    """A template whose model writes "<think>" itself."""

    def think_style(self):
        return "written"


def test_written_opener_and_no_think_part(tokenizer):
    written = object.__new__(WrittenThink)  # think_text needs no options
    m = think_metrics(written, tokenizer, ["<think>3 + 5 is 8.</think><answer>8</answer>", "no opener: 8"])
    assert m[metric_names.THINK_MEAN_LENGTH] == pytest.approx(4.0)  # 8 tokens and 0 (the opener never came)
    # A template without a think part (the embedded default's chat-answer): no think keys at all.
    plain = get_task("countdown", template="chat-answer", train_size=4, test_size=2)
    assert plain.think_style() is None
    assert think_metrics(plain, tokenizer, COMPLETIONS) == {}
