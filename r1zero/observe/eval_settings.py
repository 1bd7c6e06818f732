"""How a run evaluated, for evaluating its checkpoints (or its starting model) afterwards: the
settings ``r1zero eval`` and ``r1zero compare`` use, layered as ``train`` layers a recipe and its
overrides, with the run's own config.yaml underneath."""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import r1zero.algorithms  # noqa: F401  (registers the algorithms' config checks before TrainConfig is built)
from r1zero.config import ConfigError, TrainConfig, parse_overrides, read_config_file, recipe_path
from r1zero.models import EMBEDDED_MODEL
from r1zero.config.run_folder import is_checkpoint_name, latest_checkpoint, list_checkpoints


# The TrainConfig keys that decide what an evaluation asks and how it scores and generates
# (r1zero.observe.evaluate.build_evaluation and the loading of the model it evaluates read these and
# no others; the reward keys score a run without a reward scheme).
EVAL_KEYS = ("model_name_or_path", "task", "template", "reward", "task_args", "reference_quirks", "dataset_name",
             "dataset_config", "dataset_train_split", "dataset_test_split", "data_shuffle_seed", "data_max_rows", "train_size",
             "test_size", "eval_limit", "max_prompt_length", "max_completion_length", "eval_max_completion_length",
             "eval_no_think", "sampling_batch_size", "temperature", "top_p", "bf16", "device", "trust_remote_code",
             "prompt_template", "system_prompt", "chat_template_kwargs", "reward_funcs", "reward_weights",
             "reward_timeout", "reward_memory_limit", "correct_reward", "correct_threshold", "format_reward")
# What a run's config.yaml still says when a later layer names another task: nothing about the task.
_TASK_FREE_KEYS = ("sampling_batch_size", "bf16", "device", "trust_remote_code")
DEFAULTS = "defaults"


def run_config_path(model: str) -> Path | None:
    """config.yaml of the run a checkpoint (``RUN_DIR/checkpoint-N``) or a run folder belongs to; None
    for a hub id or any other model folder (a config.yaml beside it is not a run's)."""
    p = Path(model)
    if not p.is_dir():
        return None
    if (p / "config.yaml").is_file() and not (p / "config.json").is_file():
        return p / "config.yaml"
    if is_checkpoint_name(p.name) and (p.parent / "config.yaml").is_file():
        return p.parent / "config.yaml"
    return None


def resolve_checkpoint(model: str) -> str:
    """A run folder (config.yaml, no model of its own) means its last checkpoint; anything else is as given."""
    p = Path(model)
    if not p.exists() and is_checkpoint_name(p.name) and (p.parent / "config.yaml").is_file():
        have = ", ".join(c.name for _, c in list_checkpoints(p.parent)) or "none yet"  # e.g. a step the run never saved
        raise ConfigError(f"--model: no folder {model}; the run {p.parent} has checkpoints: {have}")
    run_file = run_config_path(model)
    if run_file is not None and run_file.parent == p:
        last = latest_checkpoint(p)
        if last is None:
            raise ConfigError(f"--model: the run folder {model} has no checkpoint-N yet; "
                              "give a checkpoint folder or let the run save one")
        return str(last)
    return model


@dataclass
class EvalSettings:
    config: Any  # r1zero.config.TrainConfig: the run's, with the layers above it applied
    model: str  # what is evaluated: a run folder is resolved to its last checkpoint
    tokenizer: str
    sources: dict[str, str]  # EVAL_KEYS -> the layer its value came from
    layers: list[str]  # layer names, lowest first

    def line(self) -> str:
        """One line: each setting that decides the evaluation, grouped by where it came from."""
        groups: dict[str, list[str]] = {}
        for k in EVAL_KEYS:
            v = getattr(self.config, k)
            text = json.dumps(v, separators=(",", ":")) if isinstance(v, (dict, list)) else str(v)
            groups.setdefault(self.sources.get(k, DEFAULTS), []).append(f"{k}={text}")
        order = [n for n in self.layers + [DEFAULTS] if n in groups]
        return "settings: " + "; ".join(f"from {n}: {', '.join(groups[n])}" for n in order)


def eval_settings(model: str | None = None, recipe: str | None = None, overrides: list[str] | tuple[str, ...] = (),
                  flags: dict[str, Any] | None = None) -> EvalSettings:
    """The settings to evaluate ``model`` with. Layers, each later one winning key by key:
    TrainConfig's defaults; the config.yaml of the run ``model`` is a checkpoint of (or the run
    folder itself, meaning its last checkpoint); the ``recipe`` (as ``r1zero train --config``);
    ``key=value`` overrides (as ``train``); ``flags`` (TrainConfig keys the command line gave).
    ``model`` None: the model_name_or_path of the recipe/overrides, else the embedded model.
    Refused with a ConfigError (naming the key) before anything is loaded."""
    flags = dict(flags or {})
    upper: list[tuple[str, dict]] = []
    if recipe:
        path = recipe_path(recipe)
        upper.append((f"recipe {path}", read_config_file(path)))
    if overrides:
        upper.append(("overrides", parse_overrides(overrides)))
    if model:
        flags["model_name_or_path"] = model
    if flags:
        upper.append(("flags", flags))
    named = [layer["model_name_or_path"] for _, layer in upper if layer.get("model_name_or_path")]
    chosen = resolve_checkpoint(named[-1] if named else EMBEDDED_MODEL)
    layers: list[tuple[str, dict]] = []
    run_file = run_config_path(chosen)
    if run_file is not None:
        run = read_config_file(run_file)
        # The run's starting model and tokenizer are not what is evaluated: a checkpoint holds both.
        for k in ("model_name_or_path", "tokenizer_name_or_path", "resume_from_checkpoint"):
            run.pop(k, None)
        run_task = run.get("task", TrainConfig.task)
        tasks = [layer["task"] for _, layer in upper if "task" in layer]
        if tasks and tasks[-1] != run_task:  # another task: the run's template, reward, data do not apply
            run = {k: v for k, v in run.items() if k in _TASK_FREE_KEYS}
        layers.append((f"run config {run_file}", run))
    layers += upper
    raw: dict[str, Any] = {}
    sources: dict[str, str] = {}
    for name, layer in layers:
        raw.update(layer)
        sources.update(dict.fromkeys(layer, name))
    raw["model_name_or_path"] = chosen
    cfg = TrainConfig(**raw)
    tokenizer = cfg.tokenizer_name_or_path or chosen  # a checkpoint's own (the run's was dropped above)
    return EvalSettings(cfg, chosen, tokenizer, sources, [n for n, _ in layers])
