"""Task ``custom``: your own data and prompts, scored by your ``reward_funcs`` (README, "Your own data
and rewards").

Data: any dataset ``dataset_name`` names (hub id, or a local .jsonl/.json/.parquet/.csv file or
folder). A row's prompt is, as TRL's GRPOTrainer takes it, its ``prompt`` column, either text or a
conversation (a list of ``{role, content}`` messages); or ``prompt_template`` formatted with the
row's columns (``str.format``: ``"Solve: {question}"``). ``system_prompt`` puts a system turn first,
which makes the prompt a conversation.

Rendering (``template``):

- ``auto`` (the default): a conversation goes through the tokenizer's chat template with the
  assistant turn opened, and text goes to the model as it is: what TRL does;
- ``chat``: text too becomes the user turn of a chat;
- ``plain``: text as it is; a conversation or a system_prompt is refused.

All prompts of a run are of one kind (text or conversations), as TRL also assumes (it looks at the
first): a mix is refused when the data is loaded.

The task has no reward scheme of its own (``reward: none``): reward_funcs score, and
``correct_reward`` / ``format_reward`` say which of them give the verdicts (r1zero.rewards.scoring).
"""
from __future__ import annotations

import string
from typing import Any, Mapping

from r1zero.data.files import load_rows
from r1zero.tasks.base import Score, Task, TaskError, register_task, render_chat


def template_columns(template: str) -> list[str]:
    """The columns a prompt_template names, in order (``{a[0]}`` and ``{a.b}`` name ``a``)."""
    try:
        fields = [f for _, f, _, _ in string.Formatter().parse(template) if f is not None]
    except ValueError as e:
        raise TaskError(f"prompt_template: not a valid template ({e}); write a column as {{name}} and a literal "
                        "brace as {{ or }}") from None
    names = []
    for f in fields:
        name = f.split(".", 1)[0].split("[", 1)[0]
        if not name or name.isdigit():
            raise TaskError(f"prompt_template: {{{f}}} names no column; write the column's name, e.g. {{question}}")
        if name not in names:
            names.append(name)
    return names


def is_conversation(value: Any) -> bool:
    """TRL's conversational prompt: a non-empty list of messages, each with a text ``role`` and ``content``."""
    return isinstance(value, list) and bool(value) and all(
        isinstance(m, dict) and isinstance(m.get("role"), str) and isinstance(m.get("content"), str) for m in value)


def _columns(row: Mapping[str, Any]) -> str:
    return ", ".join(map(str, row)) or "none"


@register_task("custom")
class CustomTask(Task):
    templates = ("auto", "chat", "plain")
    reward_schemes = ("none",)
    default_template = "auto"
    default_reward = "none"
    config_options = ("prompt_template", "system_prompt", "chat_template_kwargs")

    def __init__(self, reward: str | None = None, template: str | None = None, prompt_template: str | None = None,
                 system_prompt: str | None = None, chat_template_kwargs: dict | None = None, **options: Any):
        super().__init__(reward=reward, template=template, **options)
        self.prompt_template = prompt_template
        self.system_prompt = system_prompt
        self.chat_template_kwargs = dict(chat_template_kwargs or {})
        self.columns = template_columns(prompt_template) if prompt_template is not None else ["prompt"]
        self.required_fields = tuple(self.columns)
        if self.template == "plain" and system_prompt is not None:
            raise TaskError("system_prompt: template 'plain' feeds text as it is, with no system turn; remove "
                            "system_prompt or use template auto or chat")
        # Text prompts become a chat's user turn (conversations always go through the chat template).
        self.text_as_chat = self.template == "chat" or (self.template == "auto" and system_prompt is not None)
        # Whether the data's prompts are conversations: known from the first rows seen.
        self.conversational: bool | None = None

    # ---- data -------------------------------------------------------------------------------
    def load_split(self, split: str, source: str | None = None, config: str | None = None) -> list[dict]:
        if source is None:
            raise TaskError("dataset_name: task 'custom' trains on your data; give a hub id or a local "
                            ".jsonl, .json, .parquet or .csv file or folder")
        return self.check_rows(load_rows(source, split, config), f"{source} ({split})")

    def check_rows(self, rows: list[dict], where: str) -> list[dict]:
        for i, row in enumerate(rows, 1):  # counted from 1, as file lines are
            self.check_example(row, where=f"{where} row {i}")
            self._kind(self.prompt(row), f"{where} row {i}")
        return rows

    def check_example(self, example: Mapping[str, Any], where: str = "") -> None:
        for name in self.columns:
            if name in example:
                continue
            if self.prompt_template is not None:
                raise TaskError(f"prompt_template: column '{name}' is not in {where or 'the data'} (its columns: "
                                f"{_columns(example)}); use one of those or add the column")
            raise TaskError(f"dataset_name: {where or 'a row'} has no 'prompt' column (its columns: "
                            f"{_columns(example)}); add one (text or a list of {{role, content}} messages) or set "
                            "prompt_template, e.g. 'Solve: {question}'")

    def _kind(self, prompt: Any, where: str) -> None:
        """Refuse a prompt that is neither text nor a conversation, or not of the data's kind."""
        conversation = is_conversation(prompt)
        if not conversation and not isinstance(prompt, str):
            raise TaskError(f"dataset_name: {where}: 'prompt' must be text or a list of {{role, content}} messages "
                            f"(text each), not {type(prompt).__name__}; fix that row")
        if conversation and self.template == "plain":
            raise TaskError(f"template: 'plain' feeds text as it is, but {where} holds a conversation; use "
                            "template auto or chat")
        if self.conversational is None:
            self.conversational = conversation
        elif conversation != self.conversational:
            kinds = ("text", "a conversation")
            raise TaskError(f"dataset_name: {where}: the prompt is {kinds[conversation]} but the rows before "
                            f"hold {kinds[not conversation]}; make every prompt of one kind")

    # ---- prompt -----------------------------------------------------------------------------
    def prompt(self, example: Mapping[str, Any]) -> Any:
        """The row's prompt before rendering: text or a conversation, as TRL would see it."""
        if self.prompt_template is None:
            return example["prompt"]
        try:
            return self.prompt_template.format_map(example)
        except (KeyError, IndexError, AttributeError, ValueError, TypeError) as e:
            raise TaskError(f"prompt_template: cannot format {self.prompt_template!r} with this row "
                            f"({type(e).__name__}: {e}); check the template against the columns") from None

    @property
    def prompt_is_chat(self) -> bool:
        return self.text_as_chat or bool(self.conversational)

    def messages(self, example: Mapping[str, Any]) -> list[dict] | None:
        prompt = self.prompt(example)
        if isinstance(prompt, str):
            if not self.text_as_chat:
                return None
            prompt = [{"role": "user", "content": prompt}]
        if self.system_prompt is not None and prompt[0]["role"] != "system":
            prompt = [{"role": "system", "content": self.system_prompt}, *prompt]
        return [dict(m) for m in prompt]

    def render_prompt(self, example: Mapping[str, Any], tokenizer: Any = None) -> str:
        prompt = self.prompt(example)
        self._kind(prompt, "a row")  # also when rows come from elsewhere than load_split
        messages = self.messages(example)
        if messages is None:
            return prompt
        return render_chat(tokenizer, messages, "task custom", **self.chat_template_kwargs)

    # ---- reward -----------------------------------------------------------------------------
    def score(self, completion: str, example: Mapping[str, Any]) -> Score:
        """No scheme of its own: reward_funcs score (r1zero.rewards.scoring never calls this)."""
        return Score(0.0, False, False, {})
