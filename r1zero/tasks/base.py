"""The Task interface: a task knows its data, how to render a prompt, and how to score a completion.

A task is the only place that knows what an example looks like. The trainer and the evaluator see
three calls:

- ``task.load_split(split, ...)`` -> list of example dicts (the dataset's fields),
- ``task.render_prompt(example, tokenizer)`` -> the exact text fed to the model,
- ``task.score(completion, example)`` -> :class:`Score` (the trainer calls ``task.score_batch`` with a
  step's completions, which is ``score`` on each unless the task batches its work),

and reward functions in TRL's form see ``task.messages(example)``, the prompt as a conversation.
A task is a registered name (``get_task("countdown")``) or the user's own Task subclass, named
``module:Class`` or ``path/to/file.py:Class`` (``get_task("mytasks.py:MyTask")``).

``completion`` is the model's output text only (decoded without special tokens); a scorer must never
raise, hang or run code whatever that text is: a malformed completion scores 0.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, Sequence

from r1zero.user_code import load_object


@dataclass
class Score:
    """The verdict on one completion.

    ``reward`` is the sum of ``parts`` (one entry per reward function of the scheme, named as in
    docs/REFERENCES.md), ``correct`` says the final answer is right, ``formatted`` says the answer could be
    found where the prompt asked for it.
    """

    reward: float
    correct: bool
    formatted: bool
    parts: dict[str, float] = field(default_factory=dict)


class TaskError(ValueError):
    """A bad task option or data file; the message is one line naming the problem and the fix."""


class Task:
    """Base class. Subclasses set ``name``, ``templates``, ``reward_schemes``, ``required_fields``
    and the defaults, and implement the hooks below.

    ``reference_quirks`` (config key of the same name): score as the reference scorers do, bit for
    bit, where r1zero departs from them on purpose (countdown: decimal glue); a task without such
    departures ignores it."""

    name: str = ""
    templates: tuple[str, ...] = ()
    reward_schemes: tuple[str, ...] = ()
    default_template: str = ""
    default_reward: str = ""
    required_fields: tuple[str, ...] = ()
    # Top-level config keys (marked ``task_option`` in r1zero.config.fields) this task takes as
    # options; build_task refuses them, when set, for a task that does not list them.
    config_options: tuple[str, ...] = ()

    def __init__(self, reward: str | None = None, template: str | None = None, *,
                 reference_quirks: bool = False, **options: Any):
        if not isinstance(reference_quirks, bool):
            raise TaskError(f"reference_quirks: must be true or false, got {reference_quirks!r}")
        self.reference_quirks = reference_quirks
        self.reward_scheme = reward or self.default_reward
        self.template = template or self.default_template
        if self.reward_scheme not in self.reward_schemes:
            raise TaskError(
                f"reward: '{self.reward_scheme}' is not a reward scheme of task '{self.name}'; "
                f"use one of {', '.join(self.reward_schemes)}"
            )
        if self.template not in self.templates:
            raise TaskError(
                f"template: '{self.template}' is not a template of task '{self.name}'; "
                f"use one of {', '.join(self.templates)}"
            )
        if options:
            raise TaskError(
                f"task_args: unknown option(s) {sorted(options)} for task '{self.name}'; remove them"
            )

    # ---- data -------------------------------------------------------------------------------
    def load_split(self, split: str, source: str | None = None, config: str | None = None) -> list[dict]:
        raise NotImplementedError

    def check_example(self, example: Mapping[str, Any], where: str = "") -> None:
        """Raise TaskError naming the first missing field, so bad data is refused before training."""
        for key in self.required_fields:
            if key not in example:
                raise TaskError(
                    f"{where or 'dataset'}: row is missing field '{key}'; task '{self.name}' needs "
                    f"fields {', '.join(self.required_fields)}"
                )

    def check_rows(self, rows: list[dict], where: str) -> list[dict]:
        """``rows`` (given in memory: r1zero.trl's datasets), each checked as a loaded split's are."""
        for i, row in enumerate(rows):
            self.check_example(row, where=f"{where} row {i}")
        return rows

    # ---- prompt -----------------------------------------------------------------------------
    @property
    def prompt_is_chat(self) -> bool:
        """True when render_prompt applies the tokenizer's chat template (the text then already
        holds every special token, so it is tokenized without adding any)."""
        return False

    def render_prompt(self, example: Mapping[str, Any], tokenizer: Any = None) -> str:
        raise NotImplementedError

    def messages(self, example: Mapping[str, Any]) -> list[dict] | None:
        """The prompt as a conversation (TRL's conversational format: a list of {role, content}
        messages) when render_prompt is the chat template applied to exactly these messages, else
        None (the prompt is text). TRL-form reward functions get it as their ``prompts``."""
        return None

    # ---- the think part (R1-Zero's "<think> ... </think> <answer> ... </answer>") ------------------
    # A template whose completions reason before they answer says so with ``think_style``; the
    # evaluation then also asks with the thinking taken away (``no_think_prefill``), and the trainer
    # logs the think part's length (``think_text``). Other templates: None, and nothing changes.
    THINK_OPEN, THINK_CLOSE, ANSWER_OPEN = "<think>", "</think>", "<answer>"

    def think_style(self) -> str | None:
        """None: this template's completions have no think part. "prefilled": the rendered prompt
        ends with ``THINK_OPEN`` (the completion starts inside the think part). "written": the
        model writes ``THINK_OPEN`` itself."""
        return None

    def no_think_prefill(self) -> str | None:
        """The text appended to a rendered prompt so that the model answers without thinking: the
        think part closed empty and the answer opened. The scorer sees it as the completion's start
        (the model wrote none of it, but the verdict is on the whole assistant turn). None for a
        template without a think part."""
        style = self.think_style()
        if style is None:
            return None
        opener = "" if style == "prefilled" else self.THINK_OPEN
        return f"{opener}\n{self.THINK_CLOSE}\n{self.ANSWER_OPEN}"

    def think_text(self, completion: str) -> str | None:
        """The think part of ``completion``: from the opener (the prompt's, when prefilled) to the
        first ``THINK_CLOSE``, or to the end when the model never closed it (truncated, or gave up
        the format); "" when a "written" opener never came. None for a template without one."""
        style = self.think_style()
        if style is None:
            return None
        start = 0
        if style == "written":
            at = completion.find(self.THINK_OPEN)
            if at < 0:
                return ""
            start = at + len(self.THINK_OPEN)
        end = completion.find(self.THINK_CLOSE, start)
        return completion[start:] if end < 0 else completion[start:end]

    # ---- reward -----------------------------------------------------------------------------
    def score(self, completion: str, example: Mapping[str, Any]) -> Score:
        raise NotImplementedError

    def score_batch(self, completions: Sequence[str], examples: Sequence[Mapping[str, Any]]) -> list[Score | None]:
        """Scores of many completions in one call (the trainer's per step). None for a completion
        the scorer could not judge (it timed out, its worker died): that sample scores 0 and is
        counted in ``reward_errors/<task>``. A task with a cost per call (a round trip to a worker
        process) overrides this; the default is ``score`` on each."""
        return [self.score(c, e) for c, e in zip(completions, examples)]


def render_chat(tokenizer: Any, messages: list[dict], who: str, **kwargs: Any) -> str:
    """``messages`` through the tokenizer's chat template, the assistant turn opened; a tokenizer
    without a template is refused in one line naming ``who`` (the task)."""
    if tokenizer is None:
        raise TaskError(f"{who}: the prompt renders with the model's chat template; pass the tokenizer")
    try:
        return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True, **kwargs)
    except ValueError as e:  # transformers: "Cannot use chat template functions ... no template"
        first = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise TaskError(f"{who}: the tokenizer cannot render a chat ({first}); use an instruct model or set "
                        "tokenizer.chat_template") from None


_REGISTRY: dict[str, Callable[..., Task]] = {}


def register_task(name: str):
    """Class decorator: make a Task available to ``get_task(name)`` and to configs."""

    def wrap(cls):
        cls.name = name
        _REGISTRY[name] = cls
        return cls

    return wrap


def task_names() -> list[str]:
    return sorted(_REGISTRY)


def task_class(name: str) -> type[Task]:
    """The Task class ``name`` means: a registered task, or the user's ``module:Class`` / ``file.py:Class``."""
    if name in _REGISTRY:
        return _REGISTRY[name]
    if ":" not in name:
        raise TaskError(f"task: unknown task '{name}'; use one of {', '.join(task_names())}, or your own Task "
                        "subclass as 'module:Class' or 'path/to/file.py:Class'")
    cls = load_object(name, "task", "class", TaskError)
    if not (isinstance(cls, type) and issubclass(cls, Task)):
        what = f"the class {cls.__name__}" if isinstance(cls, type) else f"a {type(cls).__name__}"
        raise TaskError(f"task: '{name}' is {what}, not a subclass of r1zero.tasks.Task; name a Task subclass")
    if not cls.name:  # named after the class, for messages and reward_errors/<name>
        cls.name = cls.__name__
    return cls


def get_task(name: str, reward: str | None = None, template: str | None = None, **options: Any) -> Task:
    """Build a task by name: ``get_task("countdown", reward="tinyzero", template="base")``, or
    ``get_task("path/to/file.py:MyTask", **options)``."""
    return _make(task_class(name), name, reward, template, options)


def _make(cls: type[Task], name: str, reward: str | None, template: str | None, options: dict[str, Any]) -> Task:
    try:
        return cls(reward=reward, template=template, **options)
    except Exception as e:
        if isinstance(e, TaskError) or name in _REGISTRY:
            raise
        # The user's constructor: said in one line, like every other refusal.
        raise TaskError(f"task: '{name}' could not be built ({type(e).__name__}: {e}); its __init__ takes "
                        "reward, template and the task_args as keywords (as r1zero.tasks.Task's does)") from None


def config_options(cfg, cls: type[Task]) -> dict[str, Any]:
    """The config's task options (fields marked ``task_option``, all None by default) that are set:
    for a task that takes them, its options; for any other task, a refusal naming the key."""
    out = {}
    for f in dataclasses.fields(cfg):
        value = getattr(cfg, f.name)
        if not f.metadata.get("task_option") or value is None:
            continue
        if f.name not in cls.config_options:
            raise TaskError(f"{f.name}: task '{cfg.task}' renders its own prompts and does not use it; remove it, "
                            "or use task: custom")
        out[f.name] = value
    return out


def build_task(cfg) -> Task:
    """The task a config names (``task``, ``reward``, ``template``, ``task_args``, ``reference_quirks``
    and the task options such as ``prompt_template``), as train, eval and compare build it."""
    cls = task_class(cfg.task)
    options = {**cfg.task_args, **config_options(cfg, cls)}
    if cfg.reference_quirks:  # passed only when set, so a task class of one's own need not know it
        options["reference_quirks"] = True
    return _make(cls, cfg.task, None if cfg.reward == "none" else cfg.reward, cfg.template, options)
