"""Math: problems with one final answer, written in ``\\boxed{...}`` and checked by math-verify.

Data (``dataset_name`` is required: a jsonl/json/parquet file, a folder or a hub id): rows with
``problem`` and ``answer`` (MATH-style), or ``problem`` and a ``solution`` whose last ``\\boxed{...}``
is the answer, or GSM8K's ``question`` and ``answer`` (the text after ``####``). Rows are returned
with ``problem`` and ``answer`` (the final answer alone) filled in; a GSM8K row keeps its worked
answer as ``solution``.

Templates: ``chat`` (default) renders the user turn "PROBLEM\\nPlease reason step by step, and put
your final answer within \\boxed{}." with the tokenizer's chat template (Qwen2.5-Math's and
SimpleRL-Zoo's instruction); ``base`` is raw text for base models, the R1-Zero conversation with the
same instruction, ending in "Assistant:".

Reward schemes, on the completion's last ``\\boxed{...}`` (r1zero.tasks.math_answers):

- ``boxed`` (default): part ``accuracy``, 1.0 when math-verify finds the answer equivalent to the
  gold (``\\frac{1}{2}`` = ``0.5`` = ``1/2``, ``\\{1,2\\}`` = ``\\{2,1\\}``, ``10\\text{ cm}`` = ``10``,
  ``x = 3`` = ``3``, ``2x+1`` = ``1+2x``), else 0. No box, an empty or unclosed last box: 0.
- ``shaped``: ``accuracy`` as above plus ``format`` 0.1 for a final box (so 0, 0.1 or 1.1), for weak
  models that first have to learn to box an answer (TinyZero's 0.1 format score, ours here).

``Score.correct`` is the accuracy, ``Score.formatted`` says a final box was found.

Cost and bounds: math-verify (sympy) takes 0.1-100 ms per answer and can run for hours on hostile
ones (``9^{9^{9}}``); its own timeouts work only in the main thread. So it runs in a persistent
worker process (the reward-worker machinery of ``reward_funcs``, r1zero.sandbox.worker), one round
trip per ``score_batch`` with the distinct (answer, gold) pairs of the batch; each answer gets at
most ``verify_timeout`` seconds (task option, default 5), after which the worker is killed, the
sample scores 0 and is counted in ``reward_errors/math``, and a fresh worker (about 0.5 s to start)
takes the rest. The cheap refusals of math_answers.py keep the known hostile shapes from getting
there. Scoring works the same from any thread (calls are serialised by a lock).
"""
from __future__ import annotations

import importlib.util
import logging
import math
import threading
from typing import Any, Mapping, Sequence

from r1zero.data.files import load_rows
from r1zero.sandbox.functions import RewardError
from r1zero.sandbox.worker import RewardWorker
from r1zero.tasks.base import Score, Task, TaskError, register_task
from r1zero.tasks.countdown import CONVERSATION
from r1zero.tasks.math_answers import gold_answer, last_boxed, problem_text, refusal

log = logging.getLogger("r1zero")

INSTRUCTION = "Please reason step by step, and put your final answer within \\boxed{}."
BASE_PREFIX = CONVERSATION + "User: "
EQUIVALENCE = "r1zero.tasks.math_equivalence:equivalent"  # what the worker runs
FORMAT_SCORE = 0.1
_PART_NAMES = {"boxed": ("accuracy",), "shaped": ("accuracy", "format")}


@register_task("math")
class MathTask(Task):
    """Math with math-verify. Option (config ``task_args``): ``verify_timeout``, the seconds
    math-verify may take per answer (default 5)."""

    templates = ("chat", "base")
    reward_schemes = ("boxed", "shaped")
    default_template = "chat"
    default_reward = "boxed"

    def __init__(self, reward: str | None = None, template: str | None = None, *, verify_timeout: float = 5.0,
                 **options: Any):
        super().__init__(reward=reward, template=template, **options)
        if isinstance(verify_timeout, bool) or not isinstance(verify_timeout, (int, float)) \
                or not 0 < verify_timeout < math.inf:
            raise TaskError(f"task_args: verify_timeout must be a number of seconds > 0, e.g. 5; got {verify_timeout!r}")
        if importlib.util.find_spec("math_verify") is None:
            raise TaskError("task: 'math' checks answers with math-verify; install it: pip install 'math-verify>=0.8'")
        self.verify_timeout = float(verify_timeout)
        self.worker = RewardWorker(EQUIVALENCE, self.verify_timeout)  # started at the first answer to check
        self._lock = threading.Lock()

    def close(self) -> None:
        """Stop the worker process (it also stops when the task is collected or the trainer exits)."""
        with self._lock:
            self.worker.close()

    # ---- data -----------------------------------------------------------------------------------
    def load_split(self, split: str, source: str | None = None, config: str | None = None) -> list[dict]:
        """Rows of ``split`` of ``source`` (a file is all its rows, whatever the split), each checked and
        given ``problem`` and ``answer``; a row without either raises TaskError naming it."""
        if source is None:
            raise TaskError(
                "dataset_name: task 'math' has no default dataset; give a .jsonl/.json/.parquet file, a folder "
                "or a hub id with fields problem + answer (or solution with \\boxed{}, or GSM8K's question + answer)"
            )
        rows = load_rows(source, split, config)
        where = f"{source} ({split})"
        out = []
        for i, row in enumerate(rows, 1):  # counted from 1, as file lines are
            self.check_example(row, where=f"{where} row {i}")
            row = dict(row)
            answer = row.get("answer")
            if isinstance(answer, str) and "####" in answer:  # GSM8K: keep the worked answer
                row.setdefault("solution", answer)
            row["problem"], row["answer"] = problem_text(row), gold_answer(row)
            out.append(row)
        return out

    def check_example(self, example: Mapping[str, Any], where: str = "") -> None:
        where = where or "dataset"
        if not isinstance(example, Mapping) or problem_text(example) is None:
            raise TaskError(f"{where}: row has no text in field 'problem' (or 'question'); task 'math' needs it")
        if gold_answer(example) is None:
            raise TaskError(
                f"{where}: row has no final answer: give field 'answer' (GSM8K: '... #### N') or a 'solution' "
                "ending in \\boxed{...}; fix or remove that row"
            )

    # ---- prompt ---------------------------------------------------------------------------------
    @property
    def prompt_is_chat(self) -> bool:
        return self.template == "chat"

    def render_prompt(self, example: Mapping[str, Any], tokenizer: Any = None) -> str:
        problem = problem_text(example) or ""
        if self.template == "base":
            return BASE_PREFIX + problem + "\n" + INSTRUCTION + "\nAssistant:"
        if tokenizer is None or not getattr(tokenizer, "chat_template", None):
            raise TaskError("template: 'chat' needs a tokenizer with a chat template; use template 'base' for base models")
        return tokenizer.apply_chat_template([{"role": "user", "content": problem + "\n" + INSTRUCTION}],
                                             tokenize=False, add_generation_prompt=True)

    # ---- reward ---------------------------------------------------------------------------------
    def _score(self, formatted: bool, correct: bool) -> Score:
        parts = {"accuracy": 1.0 if correct else 0.0}
        if self.reward_scheme == "shaped":
            parts["format"] = FORMAT_SCORE if formatted else 0.0
        return Score(sum(parts.values()), correct, formatted, parts)

    def score(self, completion: str, example: Mapping[str, Any]) -> Score:
        """One completion's score (a sample math-verify could not judge in time scores 0)."""
        s = self.score_batch([completion], [example])[0]
        return s if s is not None else Score(0.0, False, True, dict.fromkeys(_PART_NAMES[self.reward_scheme], 0.0))

    def score_batch(self, completions: Sequence[str], examples: Sequence[Mapping[str, Any]]) -> list[Score | None]:
        """Scores of many completions with one worker round trip; None where math-verify overran its
        time limit or its worker died (that sample scores 0, counted as a failure of this task)."""
        out: list[Score | None] = []
        pending: dict[tuple[str, str], list[int]] = {}  # (answer, gold) -> the samples that wait for it
        for i, (completion, example) in enumerate(zip(completions, examples)):
            answer = last_boxed(completion)
            gold = gold_answer(example)
            out.append(self._score(answer is not None, False))
            if answer is not None and gold is not None and refusal(answer) is None:
                pending.setdefault((answer, gold), []).append(i)
        if not pending:
            return out
        pairs = list(pending)
        with self._lock:
            try:
                verdicts = self.worker([a for a, _ in pairs], [{"gold": g} for _, g in pairs], [None] * len(pairs))
            except (RuntimeError, RewardError) as e:  # the worker did not start: nothing could be judged
                log.error("task math: the math-verify worker did not start (%s); these samples score 0", e)
                verdicts = [(None, str(e))] * len(pairs)
        for pair, (value, why) in zip(pairs, verdicts):
            if value is None:
                log.warning("task math: math-verify failed on the answer %.60r (%s); it scores 0", pair[0], why)
            for i in pending[pair]:
                out[i] = None if value is None else self._score(True, value == 1.0)
        return out
