"""Reading a configuration: YAML recipes (by path or packaged name) and ``key=value`` overrides, type
checked before the dataclass is built; writing one back; the reference of every key."""
from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import Any

import yaml

from r1zero import trl_defaults
from r1zero.errors import ConfigError


from r1zero.config.checks import check_types, coerce, type_hints, type_name
from r1zero.config.fields import DEFAULT_RECIPE, TrainConfig
from r1zero.config.trl_keys import take_trl_keys


def field_types() -> dict[str, Any]:
    return type_hints(TrainConfig)


def _check_types(raw: dict, where: str) -> dict:
    return check_types(raw, where, field_types())


# ---------------------------------------------------------------------------------------------
# Loading.

# The most values a config may hold once its YAML aliases are expanded: a real recipe holds a few
# hundred; an "alias bomb" (lists of aliases of lists of aliases...) holds billions in a few lines,
# which PyYAML builds as shared references but anything that walks the values (a chat template's
# kwargs, json) expands.
MAX_YAML_VALUES = 100_000


class _StrictLoader(yaml.SafeLoader):
    """SafeLoader that refuses a key written twice in one mapping (YAML keeps the last one silently,
    so a second ``learning_rate:`` further down would quietly win). Keys a merge (``<<: *base``)
    brings in may be overridden, as YAML means them to be."""

    def construct_mapping(self, node, deep=False):
        seen: dict[Any, int] = {}
        for key_node, _ in node.value:
            if isinstance(key_node, yaml.ScalarNode) and key_node.tag != "tag:yaml.org,2002:merge":
                key = self.construct_object(key_node)
                if not isinstance(key, (str, int, float, bool)) and key is not None:
                    continue  # SafeLoader's own check refuses what cannot be a key
                if key in seen:
                    raise ConfigError(f"key '{key}' is given twice (lines {seen[key]} and "
                                      f"{key_node.start_mark.line + 1}); keep one of them")
                seen[key] = key_node.start_mark.line + 1
        return super().construct_mapping(node, deep=deep)


def _expanded_size(node, sizes: dict) -> int:
    """How many values ``node`` holds with every alias expanded (an alias is its anchor's node again:
    counted once per use, computed once per node)."""
    if id(node) not in sizes:
        sizes[id(node)] = 0  # YAML cannot alias a node inside itself, but a cycle must not recurse forever
        if isinstance(node, yaml.SequenceNode):
            total = 1 + sum(_expanded_size(n, sizes) for n in node.value)
        elif isinstance(node, yaml.MappingNode):
            total = 1 + sum(_expanded_size(k, sizes) + _expanded_size(v, sizes) for k, v in node.value)
        else:
            total = 1
        sizes[id(node)] = min(total, MAX_YAML_VALUES + 1)
    return sizes[id(node)]


def load_yaml(text: str, where: str) -> Any:
    """``text`` read as YAML, safely: no key twice in a mapping, and no more than MAX_YAML_VALUES values
    once aliases are expanded (checked on the composed nodes, before any value is built). A refusal is
    one ConfigError line starting with ``where``; invalid YAML raises yaml.YAMLError."""
    loader = _StrictLoader(text)
    try:
        node = loader.get_single_node()
        if node is None:
            return None
        if _expanded_size(node, {}) > MAX_YAML_VALUES:
            raise ConfigError(f"{where}: its YAML aliases (*name) expand to over {MAX_YAML_VALUES} values; write the "
                              "values out instead of nesting aliases")
        return loader.construct_document(node)
    except ConfigError as e:
        raise ConfigError(str(e) if str(e).startswith(where) else f"{where}: {e}") from None
    finally:
        loader.dispose()

def parse_override(text: str) -> tuple[str, Any]:
    """``key=value`` with the value read as YAML (``beta=0.001``, ``report_to=[wandb]``, ``x=null``)."""
    if "=" not in text:
        raise ConfigError(f"override '{text}': write it as key=value, e.g. learning_rate=1e-6")
    key, _, value = text.partition("=")
    key = key.strip()
    try:
        parsed = load_yaml(value, f"override '{key}'") if value.strip() else ""
    except yaml.YAMLError:
        parsed = value
    # YAML reads 1e-6 as a string (no dot); numbers are what the user meant.
    if isinstance(parsed, str):
        try:
            parsed = float(parsed) if any(ch in parsed.lower() for ch in ".e") and parsed.strip() not in ("", ".") else parsed
        except ValueError:
            pass
    return key, parsed


def _fix_yaml_numbers(raw: dict) -> dict:
    """PyYAML reads ``1e-6`` (no dot) as a string; turn such strings into floats where a number is expected."""
    hints = field_types()
    for key, value in list(raw.items()):
        if isinstance(value, str) and key in hints:
            ok, _ = coerce(1.0, hints[key])
            if ok and not coerce(value, hints[key])[0]:
                try:
                    raw[key] = float(value)
                except ValueError:
                    pass
    return raw


def recipe_path(name_or_path: str) -> Path:
    """A recipe file: a path, or the bare name of a packaged recipe (``countdown-tinyzero-grpo``)."""
    p = Path(os.path.expanduser(name_or_path))
    if p.is_file():
        return p
    stem = name_or_path[:-5] if name_or_path.endswith(".yaml") else name_or_path
    packaged = _recipes_dir() / f"{Path(stem).name}.yaml"
    if packaged.is_file():
        return Path(str(packaged))
    raise ConfigError(f"--config: no file {name_or_path}; give a YAML path or one of: {', '.join(recipe_names())}")


def _recipes_dir():
    """The packaged recipes. Run from a source checkout (PYTHONPATH, or an editable install), the
    checkout's own ``configs/``: ``r1zero.configs`` may be missing there, or map to another checkout
    that an editable install points at."""
    from importlib import resources

    checkout = Path(__file__).resolve().parents[2]
    if (checkout / "pyproject.toml").is_file() and (checkout / "configs").is_dir():
        return checkout / "configs"
    return resources.files("r1zero.configs")


def recipe_names() -> list[str]:
    return sorted(p.name[:-5] for p in _recipes_dir().iterdir() if p.name.endswith(".yaml"))


def read_config_file(src: str | os.PathLike) -> dict:
    """The type-checked keys of one YAML config file (a recipe, or a run's config.yaml)."""
    src = Path(src)
    try:
        raw = load_yaml(src.read_text(encoding="utf-8"), str(src)) or {}
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark else ""
        raise ConfigError(f"{src}: not valid YAML{where}; fix the syntax") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"{src}: the recipe must be a mapping of key: value")
    return _check_types(_fix_yaml_numbers(take_trl_keys(raw, str(src))), str(src))


def parse_overrides(overrides: list[str] | tuple[str, ...]) -> dict:
    """The type-checked keys of ``key=value`` command-line overrides."""
    return _check_types(_fix_yaml_numbers(take_trl_keys(dict(parse_override(o) for o in overrides), "override")),
                        "override")


def load_config(path: str | None = None, overrides: list[str] | tuple[str, ...] = ()) -> TrainConfig:
    """Recipe YAML (or the embedded default when ``path`` is None) with ``key=value`` overrides applied.

    An override naming another task than the recipe's (``r1zero train task=gsm8k``) also drops the
    recipe's keys that belong to its task (TASK_KEYS) unless they are overridden too: countdown's
    task_args mean nothing to gsm8k."""
    raw = read_config_file(recipe_path(path or DEFAULT_RECIPE))
    extra = parse_overrides(overrides)
    if "task" in extra and extra["task"] != raw.get("task", TrainConfig.task):
        for key in TASK_KEYS:
            if key not in extra:
                raw.pop(key, None)
    raw.update(extra)
    return TrainConfig(**raw)


# The keys whose meaning depends on the task.
TASK_KEYS = ("task_args", "template", "reward", "dataset_name", "dataset_config", "dataset_train_split",
             "dataset_test_split")


def save_config(c: TrainConfig, path: str | os.PathLike) -> None:
    Path(path).write_text(yaml.safe_dump(c.to_dict(), sort_keys=False, allow_unicode=True), encoding="utf-8")


def config_reference() -> str:
    """Markdown reference of every key (docs/CONFIG.md is this text)."""
    lines = ["# Configuration reference", "",
             "Every key of `r1zero train` (YAML recipe or `key=value` override). Generated by "
             "`r1zero train --help-config`; TRL's GRPOConfig names are used where the concept is the same.", "",
             "| key | type | default | meaning |", "| --- | --- | --- | --- |"]
    hints = field_types()
    for f in dataclasses.fields(TrainConfig):
        default = f.default if f.default is not dataclasses.MISSING else f.default_factory()  # type: ignore[misc]
        lines.append(f"| `{f.name}` | {type_name(hints[f.name])} | `{default!r}` | {f.metadata['help']} |")
    lines += trl_defaults.section(defaults())
    return "\n".join(lines) + "\n"


def defaults() -> dict[str, Any]:
    """Every key's default."""
    return {f.name: f.default if f.default is not dataclasses.MISSING else f.default_factory()  # type: ignore[misc]
            for f in dataclasses.fields(TrainConfig)}
