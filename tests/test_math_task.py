"""task: math: the final \\boxed{} answer checked by math-verify in a killable worker process. Exact
verdicts on hand-written cases, gold answers from every row shape, prompts, hostile answers each
bounded in time (refused before math-verify, or stopped by the worker's time limit, from any
thread), and a training step through the real trainer on a local jsonl file and on GSM8K."""
import gzip
import json
import sys
import threading
import time

import pytest
from conftest import GSM8K_DIR, REPO
from hypothesis import given, settings
from hypothesis import strategies as st

from r1zero.config import TrainConfig
from r1zero.rewards.scoring import RewardScorer
from r1zero.sandbox.worker import worker_pid
from r1zero.tasks import Score, TaskError, get_task
from r1zero.tasks import math as math_task
from r1zero.tasks.math_answers import MAX_TAIL_CHARS, gold_answer, last_boxed, refusal

SAMPLE = REPO / "tests" / "data" / "math_sample.jsonl"


@pytest.fixture(scope="module")
def task():
    t = get_task("math")
    yield t
    t.close()


def ex(gold):
    return {"problem": "p", "answer": gold}


def B(s):
    return "The answer is \\boxed{" + s + "}."


# (name, completion, gold, accuracy); each has a final box (formatted)
CASES = [
    # equivalent forms
    ("frac", B("\\frac{1}{2}"), "\\frac{1}{2}", 1),
    ("decimal", B("0.5"), "\\frac{1}{2}", 1),
    ("slash", B("1/2"), "\\frac{1}{2}", 1),
    ("dfrac", B("\\dfrac{1}{2}"), "0.5", 1),
    ("frac12", B("\\frac12"), "1/2", 1),
    ("unreduced", B("\\frac{2}{4}"), "\\frac{1}{2}", 1),
    ("commuted", B("1+2x"), "2x+1", 1),
    ("expanded", B("(x+1)^2"), "x^2+2x+1", 1),
    ("set", B("\\{2,1\\}"), "\\{1,2\\}", 1),
    ("list", B("2, 1"), "1, 2", 1),
    ("interval", B("[1,2)"), "[1,2)", 1),
    ("open interval", B("(1,2)"), "(1,2)", 1),
    ("unit text", B("10\\text{ cm}"), "10", 1),
    ("unit mathrm", B("10 \\mathrm{cm}"), "10", 1),
    ("dollar sign", B("\\$18"), "18", 1),
    ("dollars word", B("18 \\text{ dollars}"), "18", 1),
    ("thousands comma", B("1,080"), "1080", 1),
    ("trailing zero", B("3.0"), "3", 1),
    ("equation", B("x = 3"), "3", 1),
    ("sqrt frac", B("\\frac{\\sqrt{2}}{2}"), "\\sqrt{2}/2", 1),
    ("sqrt", B("\\sqrt{16}"), "4", 1),
    ("degrees", B("72^\\circ"), "72", 1),
    ("choice", B("\\text{(C)}"), "C", 1),
    ("matrix", B("\\begin{pmatrix}1\\\\2\\end{pmatrix}"), "\\begin{pmatrix}1\\\\2\\end{pmatrix}", 1),
    ("infinity", B("\\infty"), "\\infty", 1),
    ("negative", B("-3"), "-3", 1),
    ("unicode minus", B("\u22123"), "-3", 1),
    ("six decimals", B("0.3333333"), "\\frac{1}{3}", 1),
    ("text answer", B("\\text{Monday}"), "\\text{Monday}", 1),
    ("bold", B("\\textbf{10}"), "10", 1),
    ("percent", B("50\\%"), "50", 1),  # math-verify reads a percentage either way
    ("inline math", "The final answer is $\\boxed{7}$.", "7", 1),
    # wrong answers
    ("wrong number", B("6"), "5", 0),
    ("wrong interval end", B("(1,2]"), "[1,2)", 0),
    ("pi vs decimal", B("3.14159"), "\\pi", 0),
    ("three decimals", B("0.333"), "\\frac{1}{3}", 0),
    ("inequality vs interval", B("x \\le 3"), "(-\\infty, 3]", 0),
    ("python power", B("2**10"), "1024", 0),  # not LaTeX: compared as text
    ("text around", B("\\text{the answer is } 1"), "1", 0),
    # several boxes: the last one counts
    ("last box right", "\\boxed{3} no, wait: \\boxed{4}", "4", 1),
    ("last box wrong", "\\boxed{4} no, wait: \\boxed{3}", "4", 0),
    ("box in box", "\\boxed{\\boxed{5}}", "5", 1),
    # nested braces
    ("nested frac", B("\\frac{\\sqrt{3}}{2}"), "\\frac{\\sqrt3}{2}", 1),
    ("bare group", B("{5}"), "5", 1),
    ("escaped braces", B("\\{1, 2, 3\\}"), "\\{3, 2, 1\\}", 1),
]
# (name, completion, gold): no final box, so 0 and not formatted
MISSING = [
    ("no box", "The answer is 1/2.", "1/2"),
    ("empty box", "\\boxed{}", "1/2"),
    ("blank box", "\\boxed{  }", "1/2"),
    ("unclosed last box", "\\boxed{1/2} or maybe \\boxed{1/2", "1/2"),
    ("box without braces", "\\boxed 7", "7"),
    ("fbox", "\\fbox{7}", "7"),
    ("not text", None, "7"),
]


@pytest.mark.parametrize("name,completion,gold,accuracy", CASES, ids=[c[0] for c in CASES])
def test_verdict(task, name, completion, gold, accuracy):
    s = task.score(completion, ex(gold))
    assert s == Score(float(accuracy), bool(accuracy), True, {"accuracy": float(accuracy)})


@pytest.mark.parametrize("name,completion,gold", MISSING, ids=[c[0] for c in MISSING])
def test_no_final_box_scores_zero(task, name, completion, gold):
    assert task.score(completion, ex(gold)) == Score(0.0, False, False, {"accuracy": 0.0})


def test_shaped_adds_a_format_part():
    t = get_task("math", reward="shaped")
    try:
        got = [t.score(c, ex("4")) for c in ("\\boxed{4}", "\\boxed{5}", "4")]
    finally:
        t.close()
    assert got == [Score(1.1, True, True, {"accuracy": 1.0, "format": 0.1}),
                   Score(0.1, False, True, {"accuracy": 0.0, "format": 0.1}),
                   Score(0.0, False, False, {"accuracy": 0.0, "format": 0.0})]


class CountingWorker:
    def __init__(self, worker):
        self.worker, self.calls = worker, []

    def __call__(self, completions, examples, prompts):
        self.calls.append(list(completions))
        return self.worker(completions, examples, prompts)


def test_a_batch_is_one_round_trip_of_distinct_answers(task, monkeypatch):
    completions = [c for _, c, _, _ in CASES] * 2 + [c for _, c, _ in MISSING]
    examples = [ex(g) for _, _, g, _ in CASES] * 2 + [ex(g) for _, _, g in MISSING]
    one_by_one = [task.score(c, e) for c, e in zip(completions, examples)]
    counting = CountingWorker(task.worker)
    monkeypatch.setattr(task, "worker", counting)
    assert task.score_batch(completions, examples) == one_by_one
    assert len(counting.calls) == 1 and len(counting.calls[0]) == len(CASES)  # each pair once, no missing box


# ---- gold answers and data --------------------------------------------------------------------

def test_gold_answer_of_each_row_shape():
    assert gold_answer({"answer": " \\frac{3}{4} "}) == "\\frac{3}{4}"
    assert gold_answer({"answer": 5}) == "5" and gold_answer({"answer": 2.5}) == "2.5"
    assert gold_answer({"answer": "3 * 6 = <<3*6=18>>18\n#### 1,080"}) == "1,080"  # GSM8K
    assert gold_answer({"solution": "So $\\boxed{1}$, no: $\\boxed{\\frac{1}{2}}$."}) == "\\frac{1}{2}"
    assert gold_answer({"answer": "7", "solution": "\\boxed{8}"}) == "7"  # answer wins
    for row in ({}, {"answer": ""}, {"answer": "#### "}, {"answer": True}, {"solution": "no box"}, "text"):
        assert gold_answer(row) is None


def test_load_split_of_a_jsonl_file(task):
    rows = task.load_split("train", str(SAMPLE))
    assert [(r["problem"][:12], r["answer"]) for r in rows] == [
        ("What is $\\fr", "\\frac{3}{4}"), ("Compute $2 +", "5"), ("Solve $x + 1", "2"), ("Find the set", "\\{1, 2\\}"),
        ("What is $\\sq", "4"), ("What is 10% ", "5"), ("Simplify $\\f", "\\frac{3}{4}"), ("How many sid", "6")]
    assert rows[2]["solution"].endswith("$\\boxed{2}$.")
    assert task.score("\\boxed{0.75}", rows[0]).correct and task.score("\\boxed{2}", rows[2]).correct


def test_load_split_maps_gsm8k(task):
    rows = task.load_split("test", str(GSM8K_DIR))
    assert len(rows) == 1319
    first = json.loads(gzip.open(GSM8K_DIR / "test.jsonl.gz", "rt").readline())
    assert rows[0]["problem"] == first["question"] and rows[0]["answer"] == "18"
    assert rows[0]["solution"] == first["answer"] and rows[0]["question"] == first["question"]
    assert task.score("She makes \\boxed{\\$18}.", rows[0]).correct


def test_data_errors_name_the_key_or_row(task, tmp_path):
    with pytest.raises(TaskError, match=r"^dataset_name: task 'math' has no default dataset; give"):
        task.load_split("train", None)
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"problem": "a", "answer": "1"}\n{"problem": "b", "solution": "no box"}\n')
    with pytest.raises(TaskError, match=r"bad.jsonl \(train\) row 2: row has no final answer"):
        task.load_split("train", str(bad))
    bad.write_text('{"question": "", "answer": "1"}\n')
    with pytest.raises(TaskError, match=r"row 1: row has no text in field 'problem' \(or 'question'\)"):
        task.load_split("train", str(bad))


def test_options_are_checked(monkeypatch):
    for value in (0, -1, "5", True, float("inf")):
        with pytest.raises(TaskError, match="verify_timeout must be a number of seconds > 0"):
            get_task("math", verify_timeout=value)
    with pytest.raises(TaskError, match="not a reward scheme of task 'math'; use one of boxed, shaped"):
        get_task("math", reward="xml")
    monkeypatch.setattr(math_task.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(TaskError, match=r"pip install 'math-verify>=0.8'"):
        get_task("math")


def test_config_without_dataset_is_one_line(tmp_path, capsys):
    from r1zero import cli

    recipe = tmp_path / "math.yaml"
    recipe.write_text(f"task: math\noutput_dir: {tmp_path / 'run'}\nreport_to: [none]\n")
    code = cli.main(["train", "--config", str(recipe)])
    err = [line for line in capsys.readouterr().err.splitlines() if line.startswith("r1zero: error:")]
    assert code == 2 and len(err) == 1 and err[0].startswith("r1zero: error: dataset_name: task 'math'"), err


# ---- prompts -------------------------------------------------------------------------------------

def test_base_prompt_is_exact(task):
    t = get_task("math", template="base")
    assert not t.prompt_is_chat
    assert t.render_prompt({"problem": "What is {x} if x = 1?"}) == (
        "A conversation between User and Assistant. The user asks a question, and the Assistant solves it. "
        "The assistant first thinks about the reasoning process in the mind and then provides the user with the "
        "answer.\nUser: What is {x} if x = 1?\nPlease reason step by step, and put your final answer within "
        "\\boxed{}.\nAssistant:")
    assert t.render_prompt({"question": "Q?", "answer": "#### 3"}).startswith(math_task.BASE_PREFIX + "Q?\nPlease")


def test_chat_prompt(task, tokenizer_dir):
    from transformers import AutoTokenizer

    text = task.render_prompt({"problem": "What is 2+2?"}, AutoTokenizer.from_pretrained(tokenizer_dir))
    assert task.prompt_is_chat
    assert text.endswith("<|im_start|>user\nWhat is 2+2?\nPlease reason step by step, and put your final answer "
                         "within \\boxed{}.<|im_end|>\n<|im_start|>assistant\n")
    with pytest.raises(TaskError, match="template: 'chat' needs a tokenizer with a chat template"):
        task.render_prompt({"problem": "x"}, None)


# ---- hostile answers: each bounded in time ---------------------------------------------------------

def best_time(fn, repeat=3):
    best, result = float("inf"), None
    for _ in range(repeat):
        t0 = time.perf_counter()
        result = fn()
        best = min(best, time.perf_counter() - t0)
    return best, result


MEGABYTE = 1_000_000
# (name, completion, formatted): refused or not an answer before math-verify sees anything
REFUSED = [
    ("unclosed brace wall", "\\boxed{" + "{" * 100_000, False),
    ("exponent tower", "\\boxed{9^{9^{9^{9}}}}", True),
    ("two-level tower", "\\boxed{9^{9^{9}}}", True),
    ("tower without braces", "\\boxed{9^9^9}", True),
    ("python tower", "\\boxed{x</think> 44**19**35}", True),  # math-verify reads ** in plain text
    ("python tower in parentheses", "\\boxed{-(-9)**(9**9)}", True),
    ("huge exponent", "\\boxed{9^{999999999}}", True),
    ("hundred-digit power", "\\boxed{" + "9" * 100 + "^{" + "9" * 100 + "}}", True),
    ("digit wall base", "\\boxed{" + "9" * 100_000 + "^{9}}", False),  # longer than any answer
    ("megabyte of boxes", "\\boxed{" * (MEGABYTE // 7), False),
    ("megabyte of braces", "{" * MEGABYTE, False),
    ("megabyte of text", "x" * MEGABYTE, False),
    ("box before a megabyte", "\\boxed{4}" + " " * MEGABYTE, False),  # only the tail is read
    ("deep frac", "\\boxed{" + "\\frac{" * 20 + "1" + "}{2}" * 20 + "}", True),
    ("deeper frac", "\\boxed{" + "\\frac{" * 1000 + "1" + "}{2}" * 1000 + "}", False),
    ("bare braces", "\\boxed{" + "{" * 12 + "6" + "}" * 12 + "}", True),
    ("parentheses", "\\boxed{" + "(" * 30 + "6" + ")" * 30 + "}", True),
    ("big factorial", "\\boxed{9999999!}", True),
    ("factorial chain", "\\boxed{9!!!!!!}", True),
    ("factorial of factorial", "\\boxed{(9!)!}", True),
    ("big binomial", "\\boxed{\\binom{100000000}{50000000}}", True),
]


@pytest.mark.parametrize("name,completion,formatted", REFUSED, ids=[c[0] for c in REFUSED])
def test_hostile_answer_is_refused_in_bounded_time(name, completion, formatted):
    t = get_task("math")
    elapsed, s = best_time(lambda: t.score(completion, ex("4")))
    assert s == Score(0.0, False, formatted, {"accuracy": 0.0})
    assert elapsed < 0.05, f"{elapsed * 1e3:.1f} ms"
    assert worker_pid(t.worker) is None  # math-verify never started


FRAGMENTS = ["\\boxed{", "{", "}", "\\{", "\\}", "\\", "^", "**", "!", "(", ")", "[", "]", "9", "99999", "x",
             "\\frac", "\\binom", "\\text{a}", " ", "\n", "$"]


@settings(max_examples=400, deadline=None)
@given(st.lists(st.sampled_from(FRAGMENTS), max_size=40).map("".join))
def test_extraction_and_refusals_take_any_text(text):
    answer = last_boxed(text)
    assert answer is None or (answer.strip() and "\\boxed{" + answer + "}" in text)
    if answer is not None:
        assert refusal(answer) is None or isinstance(refusal(answer), str)
        # what the worker is sent, \boxed{answer}, holds the same answer
        assert last_boxed("\\boxed{" + answer + "}") == answer or "\\boxed{" in answer


def test_refusals_keep_honest_shapes():
    for answer in ("2^{10}", "e^{x^2}", "e^{-x^{2}}", "2^{2^{n}}", "99999^{99999}", "9999!", "\\binom{10}{5}",
                   "\\frac{\\sqrt{\\frac{1}{2}}}{2}", "\\left(\\frac{1}{2}\\right)^{2}", "2^{\\pi^{2}}"):
        assert refusal(answer) is None, answer
    assert MAX_TAIL_CHARS == 50_000 and last_boxed("\\boxed{4}" + " " * (MAX_TAIL_CHARS - 9)) == "4"


def test_the_adversarial_corpus_in_boxes():
    """Every case of the scorers' adversarial corpus (tests/adversarial_corpus.py), bare and as a box's
    content (1,136 distinct answers, about 5 s): a verdict for each, none timed out, in bounded time. (Some are
    right: a box holding ``44 + 19 + 35`` is 98.) The slowest answer, ``(9**9)**9``, took 1.5 s on a quiet
    machine: its own time limit is 30 s here so a loaded machine cannot turn it into a timeout."""
    import adversarial_corpus as corpus

    task = get_task("math", verify_timeout=30)
    texts = [c.completion for c in corpus.adversarial_corpus()]
    completions = texts + ["\\boxed{" + t + "}" for t in texts]
    restarts = task.worker.restarts
    t0 = time.perf_counter()
    scores = task.score_batch(completions, [ex("98")] * len(completions))
    elapsed = time.perf_counter() - t0
    assert all(isinstance(s, Score) for s in scores) and task.worker.restarts == restarts
    assert not any(s.correct for s in scores[:len(texts)])  # no box, no answer
    # About 10-20 s on a quiet 2-core machine, 65 s measured at nice 19 beside two training runs.
    assert elapsed < 180, f"{elapsed:.1f} s for {len(completions)} completions"
    task.close()


def test_megabyte_completion_with_an_answer(task):
    task.score("\\boxed{1}", ex("1"))  # the worker is up
    elapsed, s = best_time(lambda: task.score("x" * MEGABYTE + "\\boxed{1/2}", ex("0.5")))
    assert s.correct and s.reward == 1.0
    assert elapsed < 0.5, f"{elapsed:.2f} s"


SLOW = "\\boxed{(10^{7})!}"  # no refusal catches it: sympy computes 10,000,000! for hours


def test_an_overrun_kills_the_worker_and_the_next_answer_is_judged():
    t = get_task("math", verify_timeout=1)
    try:
        t.score("\\boxed{1}", ex("1"))
        pid = worker_pid(t.worker)
        t0 = time.perf_counter()
        got = t.score_batch([SLOW, "\\boxed{0.5}", SLOW], [ex("1"), ex("1/2"), ex("1")])
        elapsed = time.perf_counter() - t0
        assert got == [None, Score(1.0, True, True, {"accuracy": 1.0}), None]  # the pair is asked once
        assert elapsed < 1 + 10, f"{elapsed:.1f} s"  # the limit, then a fresh worker for the rest
        assert worker_pid(t.worker) not in (None, pid) and t.worker.restarts == 1
        assert t.score(SLOW, ex("1")) == Score(0.0, False, True, {"accuracy": 0.0})
    finally:
        t.close()


def test_reward_model_counts_an_overrun_as_a_failure_of_the_task():
    t = get_task("math", verify_timeout=1)
    try:
        scores = RewardScorer(t)([SLOW, "\\boxed{0.5}", "no box"], [ex("1"), ex("1/2"), ex("1")])
    finally:
        t.close()
    assert scores.rewards == [0.0, 1.0, 0.0] and scores.correct == [False, True, False]
    assert scores.formatted == [False, True, False] and scores.errors == {"math": 1}


def in_thread(fn):
    out = []
    th = threading.Thread(target=lambda: out.append(fn()))
    th.start()
    th.join(timeout=60)
    assert not th.is_alive() and out
    return out[0]


def test_math_verify_own_timeouts_fail_outside_the_main_thread():
    """The premise: math-verify's signal-based limits refuse to run in a thread."""
    from math_verify import parse

    def call():
        try:
            return parse("$1$")
        except ValueError as e:
            return str(e)

    assert "doesn't support threaded environment" in in_thread(call)


def test_scoring_from_another_thread_is_bounded_too():
    t = get_task("math", verify_timeout=1)
    try:
        t0 = time.perf_counter()
        got = in_thread(lambda: t.score_batch([SLOW, "\\boxed{\\frac{2}{4}}", "\\boxed{9^{9^{9}}}"],
                                              [ex("1"), ex("0.5"), ex("1")]))
        elapsed = time.perf_counter() - t0
    finally:
        t.close()
    assert got == [None, Score(1.0, True, True, {"accuracy": 1.0}), Score(0.0, False, True, {"accuracy": 0.0})]
    assert elapsed < 1 + 10 + 5, f"{elapsed:.1f} s"  # a worker start, the limit, a restart


def test_a_worker_started_by_a_thread_outlives_it():
    """The kernel kills a worker when the *thread* that started it ends (PR_SET_PDEATHSIG), so
    r1zero.sandbox.worker starts every worker from one long-lived thread."""
    t = get_task("math")
    try:
        assert in_thread(lambda: t.score("\\boxed{0.5}", ex("1/2")).reward) == 1.0
        pid = worker_pid(t.worker)
        time.sleep(0.5)  # the starting thread has ended; its worker must still be there
        assert t.score("\\boxed{2/4}", ex("1/2")).reward == 1.0
        assert worker_pid(t.worker) == pid and t.worker.restarts == 0
    finally:
        t.close()


def test_two_threads_share_one_task():
    t = get_task("math")
    try:
        results = {}

        def score(k):
            results[k] = [t.score(f"\\boxed{{{k}/{2 * k}}}", ex("1/2")).reward for _ in range(5)]

        threads = [threading.Thread(target=score, args=(k,)) for k in (1, 2, 3, 4)]
        for th in threads:
            th.start()
        for th in threads:
            th.join(timeout=60)
    finally:
        t.close()
    assert results == {k: [1.0] * 5 for k in (1, 2, 3, 4)}


# ---- training through the real trainer -------------------------------------------------------------

def box_the_gold_of_even_samples(real):
    """The real score_batch, on completions of which every other one ends in the gold answer boxed: a
    random tiny model never boxes anything, and this makes the step's accuracy exactly 1/2."""
    def score_batch(self, completions, examples):
        edited = [c + f" \\boxed{{{e['answer']}}}" if i % 2 == 0 else c
                  for i, (c, e) in enumerate(zip(completions, examples))]
        return real(self, edited, examples)
    return score_batch


def train_one_step(tiny_qwen2, out, monkeypatch, **extra):
    from r1zero.training.trainer import Trainer

    cfg = TrainConfig(model_name_or_path=str(tiny_qwen2), task="math", template="chat", prompts_per_step=2,
                      num_generations=2, micro_batch_size=4, max_prompt_length=512,
                      max_completion_length=8, learning_rate=1e-2, max_steps=1, save_steps=0, output_dir=str(out),
                      report_to=["none"], log_completions_rate=1.0, disable_tqdm=True, seed=3, reward_timeout=0.0,
                      **{"eval_on_end": False, **extra})
    monkeypatch.setattr(math_task.MathTask, "score_batch", box_the_gold_of_even_samples(math_task.MathTask.score_batch))
    trainer = Trainer(cfg)
    try:
        trainer.train()
    finally:
        trainer.task.close()
    metrics = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    samples = [json.loads(line) for line in (out / "samples.jsonl").read_text().splitlines()]
    return [m for m in metrics if "reward" in m], samples


def test_one_training_step_on_a_local_jsonl(tiny_qwen2, tmp_path, monkeypatch):
    steps, samples = train_one_step(tiny_qwen2, tmp_path / "run", monkeypatch, dataset_name=str(SAMPLE),
                                    test_size=2, eval_on_end=True, eval_limit=2)
    assert [m["step"] for m in steps] == [1]
    assert steps[0]["reward"] == 0.5 and steps[0]["accuracy"] == 0.5 and steps[0]["reward/accuracy"] == 0.5
    assert "reward_errors/math" not in steps[0]
    assert len(samples) == 4 and [s["parts"] for s in samples] == [{"accuracy": a} for a in (1.0, 0.0, 1.0, 0.0)]
    assert {s["example"]["problem"] for s in samples} <= {json.loads(r)["problem"] for r in SAMPLE.read_text().splitlines()}
    evals = [json.loads(line) for line in (tmp_path / "run" / "eval_results.jsonl").read_text().splitlines()]
    assert [(e["step"], e["n"], e["accuracy"]) for e in evals] == [(1, 2, 0.5)]  # one of 2 boxed


def test_one_training_step_on_gsm8k(tiny_qwen2, tmp_path, monkeypatch):
    steps, samples = train_one_step(tiny_qwen2, tmp_path / "run", monkeypatch, dataset_name="openai/gsm8k",
                                    train_size=4, test_size=2)
    assert steps[0]["reward"] == 0.5 and steps[0]["accuracy"] == 0.5
    gsm8k = {json.loads(r)["question"] for r in gzip.open(GSM8K_DIR / "train.jsonl.gz", "rt").read().splitlines()[:4]}
    for s in samples:
        assert s["example"]["problem"] in gsm8k and "####" not in s["example"]["answer"]
        assert s["example"]["solution"].endswith("#### " + s["example"]["answer"])


if __name__ == "__main__":  # pragma: no cover
    sys.exit(pytest.main([__file__, "-q"]))
