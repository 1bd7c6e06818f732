"""The run report: ``RUN_DIR/report.html``, one self-contained page built from the run folder alone.

Everything comes from the files the trainer writes (metrics.jsonl, samples.jsonl,
eval_results.jsonl, config.yaml, run_info.json), so ``r1zero report RUN_DIR`` works on a finished
run, on a run still going, and on a copy of the folder on another machine. Plots are drawn with
matplotlib (r1zero.observe.figures), written as PNG files under ``RUN_DIR/report/`` and embedded in
the page as base64 data URIs, so the page needs no network and no sibling files. The page is a
jinja2 template (``r1zero/templates/report.html.j2``) with autoescaping: completions are shown as
text, never as markup.

Any numeric metric is plotted: the known ones in their own panels, every other key (new losses,
PPO metrics, reward errors) in "other metrics", so new keys never break the report.
"""
from __future__ import annotations

import base64
import datetime as _dt
import json
import logging
import os
import platform
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import yaml

from r1zero.observe.reflection import DEFAULT_THRESHOLD, DEFAULT_WORDS, first_step_over, reflection_by_step, reflection_pattern
from r1zero.observe import figures
from r1zero.observe import metrics as metric_names
from r1zero.observe.metrics import LENGTH_KEYS, OUTCOMES, collapses
from r1zero.observe.tracking import EVALS, METRICS, SAMPLES, read_jsonl

REPORT_HTML = "report.html"
PLOT_DIR = "report"
RUN_INFO = "run_info.json"

# The optimisation panel, in this order; clip_ratio* and kl* keys are matched by prefix.
TRAINING_KEYS = (metric_names.LOSS, metric_names.KL, metric_names.ENTROPY, metric_names.CLIP_RATIO, metric_names.GRAD_NORM, metric_names.LEARNING_RATE, metric_names.ZERO_STD, metric_names.TOKENS_PER_SECOND)
SAMPLES_PER_STEP = 4


class ReportError(ValueError):
    """A run folder the report cannot be built from; one line naming it and the fix."""


# ---------------------------------------------------------------------------------------------
# Reading the run folder.


@dataclass
class Run:
    dir: Path
    config: dict
    config_text: str
    train: list[dict]        # metrics.jsonl rows of training steps
    evals: list[dict]        # eval_results.jsonl rows
    samples: list[dict]
    info: dict

    def series(self, key: str) -> tuple[list[int], list[float]]:
        steps, vals = [], []
        for row in self.train:
            v = figures.number(row.get(key))
            if v is not None:
                steps.append(int(row["step"]))
                vals.append(v)
        return steps, vals

    def numeric_keys(self) -> list[str]:
        keys: dict[str, None] = {}
        for row in self.train:
            for k, v in row.items():
                if k != "step" and figures.number(v) is not None:
                    keys[k] = None
        return list(keys)


def load_run(run_dir: str | os.PathLike) -> Run:
    d = Path(run_dir)
    if not (d / METRICS).is_file():
        raise ReportError(f"{d}: no {METRICS} here; give the output_dir of a training run")
    config_text = (d / "config.yaml").read_text(encoding="utf-8") if (d / "config.yaml").is_file() else ""
    config = (yaml.safe_load(config_text) or {}) if config_text else {}
    # metrics.jsonl also holds the eval/* lines of evaluations: a training row has a non-eval key.
    train = [r for r in read_jsonl(d / METRICS) if any(k != "step" and not k.startswith(metric_names.EVAL_PREFIX) for k in r)]
    info = json.loads((d / RUN_INFO).read_text(encoding="utf-8")) if (d / RUN_INFO).is_file() else {}
    return Run(d, config, config_text, train, read_jsonl(d / EVALS), read_jsonl(d / SAMPLES), info)


def run_info(device: Any) -> dict:
    """The machine a run trains on (written by the trainer as run_info.json when it starts)."""
    import torch
    import transformers

    info = {"started_at": _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC"),
            "device": str(device), "python": platform.python_version(), "platform": platform.platform(),
            "cpu_count": os.cpu_count(), "torch": torch.__version__, "transformers": transformers.__version__,
            "cpu_threads": torch.get_num_threads()}
    if str(device).startswith("cuda") and torch.cuda.is_available():
        idx = torch.device(device).index or 0
        props = torch.cuda.get_device_properties(idx)
        info["gpu"] = props.name
        info["gpu_memory_gib"] = round(props.total_memory / 2**30, 1)
        info["gpu_count"] = torch.cuda.device_count()
    return info


def write_run_info(run_dir: str | os.PathLike, device: Any) -> None:
    Path(run_dir, RUN_INFO).write_text(json.dumps(run_info(device), indent=2), encoding="utf-8")


# ---------------------------------------------------------------------------------------------
# Plots (drawn by r1zero.observe.figures).

@dataclass
class Plot:
    name: str
    title: str
    png: bytes
    path: Path
    note: str = ""

    @property
    def data_uri(self) -> str:
        return "data:image/png;base64," + base64.b64encode(self.png).decode("ascii")


def _length_plot(run: Run):
    note = "" if run.series(metric_names.P90_LENGTH)[0] else (
        "This run did not log completions/p90_length (older trainer): mean and max only.")
    return figures.lengths_plot(run, LENGTH_KEYS, "completion length"), note


def outcome_table(run: Run) -> list[dict]:
    """Per training step: share of bad-format / wrong / correct completions (sums to 1)."""
    rows = []
    for r in run.train:
        vals = [figures.number(r.get(k)) for k, _, _ in OUTCOMES]
        if all(v is not None for v in vals):
            rows.append({"step": int(r["step"]), **{k: v for (k, _, _), v in zip(OUTCOMES, vals)}})
    return rows


# ---------------------------------------------------------------------------------------------
# The reasoning panel, for runs whose completions reason in a think part before they answer.

REASONING_PLOTS = ("think_length", "reflection", "think_accuracy")  # the panel's plots, in its order
REASONING_SAMPLES = 2  # per picked step: the page's sample section has them all


def has_think_part(run: Run) -> bool:
    """Whether the run's completions have a think part, from what only such runs log: the trainer's
    think length (r1zero.tasks.Task.think_style) or an evaluation asked without thinking. Not from the
    samples: any completion may contain a stray "<think>"."""
    return (any(metric_names.THINK_MEAN_LENGTH in r for r in run.train)
            or any(metric_names.ACCURACY_NO_THINK in e for e in run.evals))


def think_eval_rows(run: Run) -> list[dict]:
    """Per evaluation with an accuracy: its step, the accuracy with thinking and without (None: not
    asked without) and their difference (what the thinking is worth)."""
    rows = []
    for e in run.evals:
        acc, bare = figures.number(e.get(metric_names.ACCURACY)), figures.number(e.get(metric_names.ACCURACY_NO_THINK))
        if acc is not None:
            rows.append({"step": int(e["step"]), metric_names.ACCURACY: acc, metric_names.ACCURACY_NO_THINK: bare,
                         "difference": None if bare is None else acc - bare})
    return rows


def _reasoning_panel(run: Run, add: Callable[..., None], sample_steps: list[dict]) -> dict:
    """Plot the think part's length and accuracy with and without it through ``add`` (the reflection plot
    is added already), and the panel's data: eval rows and the picked steps' samples with a think part."""
    notes = []
    if run.series(metric_names.THINK_MEAN_LENGTH)[0]:
        add("think_length", "Think length", figures.lengths_plot(run, metric_names.THINK_KEYS, "think part length"),
            "Tokens between the think part's opening and its first close (to the end when never closed), "
            "over every completion of the step.")
    else:
        notes.append("This run did not log think/mean_length (older trainer): no think length plot.")
    rows = think_eval_rows(run)
    if rows:
        add("think_accuracy", "Accuracy with and without thinking", figures.think_accuracy_plot(rows),
            "Greedy evaluation accuracy as trained, and asked again with the think part closed empty and the "
            "answer opened: the gap is what the thinking is worth.")
    else:
        notes.append("No evaluation yet: accuracy with and without thinking appears after the first one.")
    samples = [{"step": g["step"], "samples": [s for s in g["samples"] if any(k == "think" for k, _ in s["segments"])][:REASONING_SAMPLES]}
               for g in sample_steps]
    return {"notes": notes, "evals": rows, "samples": [g for g in samples if g["samples"]],
            "eval_cols": [metric_names.ACCURACY, metric_names.ACCURACY_NO_THINK, "difference"]}


# ---------------------------------------------------------------------------------------------
# Samples: the <think> part and the answer set apart.

_TAG = re.compile(r"</?(think|answer)>")


def split_completion(text: str) -> list[tuple[str, str]]:
    """[(kind, text)] with kind 'think', 'answer' or 'text'. A closing tag with no opening one means
    the prompt opened it (templates prefill "<think>" or "<answer>"), so the text before it is inside."""
    parts: list[tuple[str, str]] = []
    inside, pos = "text", 0
    for m in _TAG.finditer(text):
        closing, kind = m.group(0).startswith("</"), m.group(1)
        if closing and (inside == kind or (inside == "text" and not parts)):
            parts.append((kind, text[pos:m.start()]))
            inside, pos = "text", m.end()
        elif not closing and inside == "text":
            parts.append(("text", text[pos:m.start()]))
            inside, pos = kind, m.end()
    parts.append((inside, text[pos:]))
    return [(k, t) for k, t in parts if t.strip()]


def _highlight(text: str, pattern: re.Pattern) -> list[tuple[str, bool]]:
    out, pos = [], 0
    for m in pattern.finditer(text):
        out.append((text[pos:m.start()], False))
        out.append((m.group(0), True))
        pos = m.end()
    out.append((text[pos:], False))
    return [(t, hit) for t, hit in out if t]


def pick_sample_steps(samples: Sequence[Mapping]) -> list[int]:
    """The first, middle and last steps that have logged samples (fewer if the run is shorter)."""
    steps = sorted({int(s["step"]) for s in samples})
    if not steps:
        return []
    return sorted({steps[0], steps[len(steps) // 2], steps[-1]})


def _sample_views(samples: Sequence[Mapping], pattern: re.Pattern) -> list[dict]:
    views = []
    for step in pick_sample_steps(samples):
        rows = [s for s in samples if int(s["step"]) == step][:SAMPLES_PER_STEP]
        views.append({"step": step, "samples": [{
            "prompt": s.get("prompt", ""), "reward": figures.number(s.get("reward")), "advantage": figures.number(s.get("advantage")),
            "correct": s.get("correct"), "formatted": s.get("formatted"), "truncated": s.get("truncated"),
            "length": s.get("length"), "parts": s.get("parts") or {}, "reflects": bool(pattern.search(s.get("completion", ""))),
            "segments": [(kind, _highlight(t, pattern)) for kind, t in split_completion(s.get("completion", ""))],
        } for s in rows]})
    return views


# ---------------------------------------------------------------------------------------------
# Summaries and the page.

def timing_summary(run: Run) -> list[tuple[str, str]]:
    out = []
    steps = [int(r["step"]) for r in run.train]
    if steps:
        max_steps = run.config.get("max_steps")
        out.append(("steps logged", f"{len(steps)} (last step {max(steps)}"
                    + (f" of {max_steps})" if isinstance(max_steps, int) and max_steps > 0 else ")")))
    for key, label in ((metric_names.TIME_STEP, "time per step"), (metric_names.TIME_GENERATE, "generation per step"),
                       (metric_names.TIME_UPDATE, "update per step")):
        _, v = run.series(key)
        if v:
            out.append((label, f"{sum(v) / len(v):.2f} s mean, {sum(v):.1f} s total over logged steps"))
    _, v = run.series(metric_names.TOKENS_PER_SECOND)
    if v:
        out.append(("generation speed", f"{sum(v) / len(v):.1f} tokens/s mean"))
    return out


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.4g}"
    return "" if v is None else str(v)


def get_template(name: str):
    import jinja2

    env = jinja2.Environment(loader=jinja2.FileSystemLoader(Path(__file__).parent / "templates"),
                             autoescape=True, trim_blocks=True, lstrip_blocks=True,
                             undefined=jinja2.StrictUndefined)
    env.filters["fmt"] = _fmt
    return env.get_template(name)


def write_atomic(path: Path, data: bytes) -> None:
    # A browser reloading the page mid-write must see the old file or the new one, never half.
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)


@dataclass
class Report:
    html: Path
    plots: dict[str, Plot]
    outcomes: list[dict]
    reflection: dict[int, float]
    reflection_counts: dict[int, int]
    first_reflection_step: int | None
    threshold: float
    notes: list[str] = field(default_factory=list)
    reasoning: dict | None = None  # the reasoning panel's data (None: the run's completions have no think part)


def _metric_plots(run: Run, add: Callable[..., None]) -> list[dict]:
    """Plot metrics.jsonl through ``add``: reward and accuracy, length, the outcome breakdown, the
    optimisation keys, then every numeric key not shown yet. Returns the outcome table."""
    shown: set[str] = {metric_names.EPOCH, *metric_names.THINK_KEYS}  # the think keys: the reasoning panel
    if run.train:
        fig, keys = figures.rewards_plot(run)
        shown.update(keys)
        add("rewards", "Reward and accuracy", fig)
        fig, note = _length_plot(run)
        shown.update(LENGTH_KEYS)
        add("length", "Completion length", fig, note)
    outcomes = outcome_table(run)
    if outcomes:
        add("outcomes", "Outcome breakdown", figures.outcome_plot(outcomes),
            "Share of each step's completions: badly formatted, formatted but wrong, correct.")
        shown.update(k for k, _, _ in OUTCOMES)
    numeric = run.numeric_keys()
    train_keys = [k for k in numeric if k in TRAINING_KEYS or k.startswith((metric_names.CLIP_RATIO, metric_names.KL))]
    train_keys.sort(key=lambda k: next(i for i, p in enumerate(TRAINING_KEYS) if k.startswith(p))
                    if any(k.startswith(p) for p in TRAINING_KEYS) else len(TRAINING_KEYS))
    if train_keys:
        add("training", "Optimisation", figures.small_multiples(run, train_keys, "optimisation"))
        shown.update(train_keys)
    other = [k for k in numeric if k not in shown]
    if other:
        add("other", "Other metrics", figures.small_multiples(run, other, "other metrics"),
            "Every other numeric key of metrics.jsonl.")
    return outcomes


def _step_rows(run: Run, shares: dict[int, float]) -> tuple[list[str], list[dict]]:
    """The per-step table: the columns the run logged and one row per training step."""
    step_rows = []
    cols = [metric_names.REWARD, metric_names.ACCURACY, metric_names.FORMAT_RATE, *(k for k, _, _ in OUTCOMES), metric_names.MEAN_LENGTH]
    cols = [c for c in cols if any(c in r for r in run.train)]
    for r in run.train:
        step = int(r["step"])
        step_rows.append({"step": step, "values": [(c, figures.number(r.get(c))) for c in cols],
                          "reflection": shares.get(step)})
    return cols, step_rows


def _add_reflection(run: Run, words: list[str], threshold: float, add: Callable[..., None]):
    """Plot the reflection share per step through ``add`` (when samples were logged); returns
    reflection_by_step's {step: (share, completions)} and the first step reaching ``threshold``."""
    by_step = reflection_by_step(run.samples, words)
    shares = {s: v[0] for s, v in by_step.items()}
    first = first_step_over(shares, threshold)
    if shares:
        n = sum(c for _, c in by_step.values()) / len(by_step)
        add("reflection", "Reflection tracking", figures.reflection_plot(shares, threshold, first),
            f"Share of the logged completions of each step (about {n:.0f} per step, log_completions_rate) "
            f"containing one of: {', '.join(words)}. "
            + (f"It first reaches {threshold:g} at step {first}." if first is not None
               else f"It never reaches {threshold:g}."))
    return by_step, first


def _eval_cols(run: Run) -> list[str]:
    """The evaluation table's columns: the summary keys any evaluation logged, then mean@k / pass@k."""
    keys = (metric_names.ACCURACY, metric_names.ACCURACY_NO_THINK, metric_names.FORMAT_RATE, metric_names.FORMAT_RATE_NO_THINK,
            metric_names.EVAL_MEAN_REWARD, metric_names.EVAL_MEAN_LENGTH, metric_names.EVAL_TRUNCATED, metric_names.EVAL_ROWS)
    return [k for k in keys if any(k in e for e in run.evals)] + sorted({k for e in run.evals for k in e if "@" in k})


def build_report(run_dir: str | os.PathLike, *, words: Sequence[str] | None = None, threshold: float | None = None,
                 live: bool = False) -> Report:
    """Write RUN_DIR/report.html and RUN_DIR/report/*.png. ``words``/``threshold`` default to the run's
    config (reflection_words / reflection_threshold), then to the built-in list and 0.1. ``live`` adds
    a reload every 30 s (the trainer sets it while the run is going)."""
    run = load_run(run_dir)
    words = list(words or run.config.get("reflection_words") or DEFAULT_WORDS)
    if threshold is None:
        threshold = run.config.get("reflection_threshold")
    threshold = DEFAULT_THRESHOLD if threshold is None else float(threshold)
    pattern = reflection_pattern(words)
    plot_dir = run.dir / PLOT_DIR
    plot_dir.mkdir(parents=True, exist_ok=True)
    plots: dict[str, Plot] = {}
    notes: list[str] = collapses(run.train, int(run.config.get("collapse_steps", 3) or 0))

    def add(name: str, title: str, fig, note: str = "") -> None:
        png = figures.png(fig)
        path = plot_dir / f"{name}.png"
        write_atomic(path, png)
        plots[name] = Plot(name, title, png, path, note)

    outcomes = _metric_plots(run, add)
    by_step, first = _add_reflection(run, words, threshold, add)
    shares = {s: v[0] for s, v in by_step.items()}
    if not shares:
        notes.append("No samples.jsonl rows (log_completions_rate=0): no reflection tracking or sample completions.")
    sample_steps = _sample_views(run.samples, pattern)
    # A run without a think part gets no panel: its page is what it was before the panel existed.
    reasoning = _reasoning_panel(run, add, sample_steps) if has_think_part(run) else None
    in_panel = [n for n in REASONING_PLOTS if n in plots] if reasoning else []
    cols, step_rows = _step_rows(run, shares)

    page = get_template("report.html.j2").render(
        title=run.config.get("run_name") or run.dir.resolve().name, run_dir=str(run.dir.resolve()),
        generated=_dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC"), live=live,
        config=run.config, config_text=run.config_text, info=run.info, timing=timing_summary(run),
        plots=[p for n, p in plots.items() if n not in in_panel], notes=notes, sample_steps=sample_steps,
        reasoning=reasoning and {**reasoning, "plots": [plots[n] for n in in_panel]},
        step_cols=cols, step_rows=step_rows, evals=run.evals, eval_cols=_eval_cols(run),
        first_reflection=first, threshold=threshold)
    html = run.dir / REPORT_HTML
    write_atomic(html, page.encode("utf-8"))
    return Report(html, plots, outcomes, shares, {s: v[1] for s, v in by_step.items()}, first, threshold, notes,
                  reasoning)


__all__ = ["build_report", "load_run", "Report", "ReportError", "split_completion", "outcome_table",
           "pick_sample_steps", "has_think_part", "think_eval_rows", "write_run_info", "run_info", "DEFAULT_WORDS"]


def refresh(run_dir: str | os.PathLike, *, device: Any = None, live: bool = False) -> str | None:
    """What the trainer calls: write run_info.json (``device`` given) or rebuild report.html; a failure
    only warns, since a plot must never cost a training run. Returns the report's path."""
    try:
        if device is not None:
            write_run_info(run_dir, device)
            return None
        return str(build_report(run_dir, live=live).html)
    except Exception as e:  # noqa: BLE001
        logging.getLogger("r1zero").warning("report not written: %s: %s", type(e).__name__, e)
        return None
