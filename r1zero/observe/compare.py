"""``r1zero compare``: the same prompts answered greedily by two models, side by side, with scores.

Typical use: the starting model against a checkpoint of a run. When ``--after`` is a checkpoint
inside a run folder (or a run folder), the run's config.yaml supplies what the user did not give:
task, reward scheme, template, task options and generation length, so both models are asked
exactly what training asked. Scoring is r1zero.observe.evaluate's (the same as ``r1zero eval``).
"""
from __future__ import annotations

import datetime as _dt
import shutil
import textwrap
from pathlib import Path
from typing import Any

from r1zero.config import ConfigError
from r1zero.observe import metrics as metric_names


def _example_text(ex: dict, limit: int = 300) -> str:
    """The fields that define a problem (not the answer key), short: 'nums=[3, 5] target=8'."""
    hidden = {"answer", "solution", "label"}
    parts = [f"{k}={v}" for k, v in ex.items() if k not in hidden and isinstance(v, (int, float, str, list))]
    text = " ".join(parts)
    return text if len(text) <= limit else text[:limit - 3] + "..."


def _verdict(rec: dict) -> str:
    return "correct" if rec["correct"] else ("formatted, wrong" if rec["formatted"] else "bad format")


def _score_line(rec: dict) -> str:
    parts = ", ".join(f"{k} {v:g}" for k, v in rec["parts"].items())
    return f"reward {rec['reward']:.3g} ({parts}) {_verdict(rec)}" if parts else f"reward {rec['reward']:.3g} {_verdict(rec)}"


def answer_models(models: list[str], evaluation, *, device: str = "auto",
                  bf16: bool | None = None) -> list[tuple[dict, list[dict]]]:
    """(summary, records) of ``evaluation`` (r1zero.observe.evaluate.Evaluation) for each model in turn
    (one model in memory at a time)."""
    from r1zero.model_setup import load_generator
    from r1zero.models import choose_device

    dev = choose_device(device)
    out = []
    for name in models:
        gen = load_generator(name, dev, bf16=bf16, check=evaluation.check_prompts)
        out.append(evaluation.run(gen))
        del gen
    return out


def compare(before: str, after: str, limit: int | None = 8, *, flags: dict[str, Any] | None = None) -> dict[str, Any]:
    """Both models' greedy answers and scores on the first ``limit`` test rows. The settings are
    r1zero.observe.eval_settings.eval_settings' for the run ``after`` (else ``before``) belongs to, with ``flags``
    (TrainConfig keys: task, template, reward, dataset_name, eval_max_completion_length, ...) on top."""
    from r1zero.observe.eval_settings import eval_settings, resolve_checkpoint, run_config_path
    from r1zero.observe.evaluate import build_evaluation

    before, after = resolve_checkpoint(before), resolve_checkpoint(after)
    flags = dict(flags or {})
    of_run = after if run_config_path(after) or not run_config_path(before) else before
    if run_config_path(of_run) is None and "task" not in flags:
        raise ConfigError("--task: not given and --after is not inside a run folder with a config.yaml; add --task countdown (or gsm8k)")
    s = eval_settings(of_run, flags=flags)
    cfg = s.config
    # The run's held-out rows, as its evaluation cut them and scores them; the first `limit` (0: all).
    evaluation = build_evaluation(cfg, limit=limit or 0)
    try:
        (s_before, r_before), (s_after, r_after) = answer_models([before, after], evaluation, device=cfg.device,
                                                                 bf16=cfg.bf16)
    finally:
        evaluation.close()
    task, rows = evaluation.task, evaluation.rows
    return {"before": {"model": before, "summary": s_before}, "after": {"model": after, "summary": s_after},
            "task": cfg.task, "template": task.template, "reward": task.reward_scheme, "split": cfg.dataset_test_split,
            "max_new_tokens": evaluation.max_new_tokens, "settings": s.line(),
            "rows": [{"example": _example_text(ex), "prompt": b["prompt"], "before": b, "after": a}
                     for ex, b, a in zip(rows, r_before, r_after)]}


def format_terminal(result: dict, width: int | None = None) -> str:
    """Both answers in two columns per prompt, then both summaries."""
    width = width or shutil.get_terminal_size((120, 24)).columns
    col = max(30, (width - 3) // 2)
    lines = [f"{result['task']} ({result['split']}, template {result['template']}, reward {result['reward']}), "
             f"{len(result['rows'])} prompts, greedy, up to {result['max_new_tokens']} new tokens"]

    def cell(rec: dict) -> list[str]:
        body = []
        for para in (rec["completion"] or "(empty)").splitlines() or [""]:
            body.extend(textwrap.wrap(para, col, replace_whitespace=False, drop_whitespace=True) or [""])
        return textwrap.wrap(_score_line(rec), col) + ["-" * min(col, 20)] + body

    head = [f"BEFORE {result['before']['model']}", f"AFTER {result['after']['model']}"]
    for i, row in enumerate(result["rows"], 1):
        lines.append("")
        lines.append(f"[{i}] {row['example']}")
        left, right = [head[0][:col]] + cell(row["before"]), [head[1][:col]] + cell(row["after"])
        for k in range(max(len(left), len(right))):
            a = left[k] if k < len(left) else ""
            b = right[k] if k < len(right) else ""
            lines.append(f"{a:<{col}} | {b}")
    lines.append("")
    for side in ("before", "after"):
        s = result[side]["summary"]
        no_think = (f"  without thinking {s[metric_names.ACCURACY_NO_THINK]:.3f}"
                    if metric_names.ACCURACY_NO_THINK in s else "")  # eval_no_think
        lines.append(f"{side:<6} accuracy {s[metric_names.ACCURACY]:.3f}{no_think}  format rate {s[metric_names.FORMAT_RATE]:.3f}  "
                     f"mean reward {s[metric_names.EVAL_MEAN_REWARD]:.3f}  mean length {s[metric_names.EVAL_MEAN_LENGTH]:.1f}  ({result[side]['model']})")
    return "\n".join(lines)


def write_html(result: dict, path: str | Path) -> Path:
    from r1zero.observe.report import get_template, split_completion, write_atomic

    def segs(rec):
        return [(k, [(t, False)]) for k, t in split_completion(rec["completion"])]

    page = get_template("compare.html.j2").render(
        r=result, segs=segs, verdict=_verdict,
        generated=_dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC"))
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(path, page.encode("utf-8"))
    return path
