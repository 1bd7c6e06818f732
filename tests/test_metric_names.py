"""Metric names are written in one place: r1zero/observe/metrics.py (its NAMES). Every other module
of the package says metric_names.LOSS, never "loss", so a name cannot drift between the code that logs a metric
and the report, the tests or a user's dashboard that read it (issue 28, done-when 2)."""
from __future__ import annotations

import ast
from pathlib import Path

from r1zero.observe import metrics as metric_names

PACKAGE = Path(__file__).resolve().parent.parent / "r1zero"
VOCABULARY = "observe/metrics.py"

# The same word naming another thing, where it is that other thing: (module, enclosing function or
# class.method, "<module>" at the top level, word) -> what it names there. Each is the word of a
# file format or a key someone types, which must not change when a metric is renamed.
OTHER_VOCABULARIES = {
    ("config/checks.py", "_validate_values", metric_names.LEARNING_RATE): "the config key",
    ("config/files.py", "<module>", metric_names.REWARD): "the config key (the task's reward scheme)",
    ("observe/eval_settings.py", "<module>", metric_names.REWARD): "the config key (the task's reward scheme)",
    ("cli.py", "_eval_flags", metric_names.REWARD): "the config key --reward sets",
    ("trl.py", "GRPOConfig.train_config", metric_names.LEARNING_RATE): "TRL's GRPOConfig key",
    ("config/trl_keys.py", "<module>", metric_names.ENTROPY_COEF): "TRL's GRPOConfig key",
    ("algorithms/reward_kl.py", "RewardKLAlgorithm.check_config", metric_names.KL_COEF): "the config key",
    ("algorithms/reward_kl.py", "RewardKLAlgorithm.state", metric_names.KL_COEF): "its trainer_state.json key",
    ("algorithms/reward_kl.py", "RewardKLAlgorithm.restore", metric_names.KL_COEF): "its trainer_state.json key",
    ("algorithms/entropy.py", "EntropyCoefficient.state", metric_names.ENTROPY_COEF): "its trainer_state.json key",
    ("algorithms/entropy.py", "EntropyCoefficient.restore", metric_names.ENTROPY_COEF): "its trainer_state.json key",
    ("training/samples.py", "sample_rows", metric_names.REWARD): "a samples.jsonl field (one completion's reward)",
    ("observe/report.py", "_sample_views", metric_names.REWARD): "a samples.jsonl field (one completion's reward)",
    ("observe/evaluate.py", "evaluate", metric_names.REWARD): "an eval record field (one completion's reward)",
    ("observe/compare.py", "_score_line", metric_names.REWARD): "an eval record field (one completion's reward)",
    ("observe/compare.py", "compare", metric_names.REWARD): "compare's result field (the task's reward scheme)",
    ("observe/compare.py", "format_terminal", metric_names.REWARD): "compare's result field (the task's reward scheme)",
    ("tasks/math.py", "<module>", metric_names.ACCURACY): "a reward part's name (logged as reward/accuracy)",
    ("tasks/math.py", "MathTask._score", metric_names.ACCURACY): "a reward part's name (logged as reward/accuracy)",
    ("rewards/scoring.py", "correct_function", metric_names.ACCURACY): "a reward function's name (TRL's accuracy_reward)",
}


def name_literals(source: str) -> list[tuple[str, str, int]]:
    """(enclosing scope, name, line) of every string constant (f-string parts included) equal to a
    registered metric name."""
    found = []

    def walk(node: ast.AST, scope: str) -> None:
        for child in ast.iter_child_nodes(node):
            inner = scope
            if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                inner = child.name if scope == "<module>" else f"{scope}.{child.name}"
            if isinstance(child, ast.Constant) and isinstance(child.value, str) and child.value in metric_names.NAMES:
                found.append((scope, child.value, child.lineno))
            walk(child, inner)

    walk(ast.parse(source), "<module>")
    return found


def stray_names(module: str, source: str, used: set | None = None) -> list[str]:
    stray = []
    for scope, name, line in name_literals(source):
        if (module, scope, name) in OTHER_VOCABULARIES:
            if used is not None:
                used.add((module, scope, name))
        else:
            stray.append(f"r1zero/{module}:{line} ({scope}): {name!r}")
    return stray


def test_the_vocabulary_is_enumerable():
    assert {metric_names.LOSS, metric_names.KL, metric_names.ENTROPY, metric_names.GRAD_NORM, metric_names.CLIP_LOW, metric_names.SAMPLER_RATIO_MEAN, metric_names.CRITIC_VALUE_LOSS,
            metric_names.SKIPPED_UPDATES, metric_names.EVAL_ROWS, metric_names.REWARD_PART, metric_names.EVAL_PREFIX} <= metric_names.NAMES
    assert all(isinstance(n, str) and n for n in metric_names.NAMES)
    # Every LossStats statistic has a name.
    from r1zero.algorithms.stats import LossStats
    assert [f for f, _ in metric_names._LOSS_NAMES] == list(LossStats.__dataclass_fields__)


def test_no_metric_name_literal_outside_the_vocabulary():
    modules = sorted(p for p in PACKAGE.rglob("*.py"))
    assert len(modules) > 50
    used: set = set()
    stray = [s for p in modules if (module := p.relative_to(PACKAGE).as_posix()) != VOCABULARY
             for s in stray_names(module, p.read_text(encoding="utf-8"), used)]
    assert not stray, "metric names written outside r1zero/observe/metrics.py (use its constants):\n" + "\n".join(stray)
    assert used == set(OTHER_VOCABULARIES), f"allowances no longer needed: {set(OTHER_VOCABULARIES) - used}"


def test_positive_control():
    """A literal name is caught: plain, as a dict key, inside an f-string, and an allowed word in
    another function of its module."""
    snippet = '''
def update(acc, loss, v):
    acc.add("loss", loss)
    out = {"clip_ratio/low_mean": v, "not a metric": 1}
    tag = f"sampling/importance_sampling_ratio/mean"
    return out, tag, "metric_names.LOSS", "losses"
'''
    assert [(s, n) for s, n, _ in name_literals(snippet)] == [
        ("update", "loss"), ("update", "clip_ratio/low_mean"), ("update", "sampling/importance_sampling_ratio/mean")]
    assert len(stray_names("training/update.py", snippet)) == 3
    allowed_elsewhere = 'def sample_rows():\n    return {"reward": 1}\n\ndef other():\n    return {"reward": 2}\n'
    assert stray_names("training/samples.py", allowed_elsewhere) == ["r1zero/training/samples.py:5 (other): 'reward'"]
