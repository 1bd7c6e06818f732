"""TRL's Python entry: ``from r1zero import GRPOConfig, GRPOTrainer`` in place of ``from trl import ...``.

Not a second trainer: ``GRPOConfig`` holds TRL 1.16's arguments (its field names and defaults where
r1zero has the concept), ``GRPOTrainer`` translates them, with the datasets, reward callables,
processing class and LoRA config it is given, into an r1zero ``TrainConfig`` (task ``custom``), in-memory
rows and callables, and drives r1zero.training.trainer.Trainer.

- Batch keys mean what they mean in TRL 1.16 (r1zero.config.batch); ``max_steps`` counts optimizer steps.
- A TRL argument r1zero cannot honour is refused in one line naming it; one that only picks an
  engine or a speed/memory knob is accepted with one logged line (r1zero.config.trl_keys); any
  r1zero key (``max_prompt_length``, ``reward_timeout``, ...) may be given too, with r1zero's default.
- Reward callables: a module-level function of an importable module (``trl.rewards``' own, your
  package's) runs in r1zero's time-limited worker process, as a ``module:function`` entry does; any
  other callable (defined in a script's ``__main__``, a lambda, a closure) in the training process
  under the same limit (r1zero.rewards.in_process). Sync or async, per batch (TRL's form) or per sample.
- Evaluation uses ``eval_dataset`` (nothing is held out of ``train_dataset``): every
  ``eval_steps`` with ``eval_strategy="steps"``, and on ``evaluate()``.
- ``state.log_history`` holds r1zero's metrics, which use TRL's names, plus TRL's
  ``rewards/<function>/mean`` for each reward function.
"""
from __future__ import annotations

import dataclasses
import importlib
import logging
import math
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Optional, Union

from r1zero.config import TrainConfig, field_types
from r1zero.config.checks import closest
from r1zero.config.trl_keys import take_trl_keys
from r1zero.errors import ConfigError
from r1zero.observe import metrics as metric_names

log = logging.getLogger("r1zero")


@dataclass(init=False)
class GRPOConfig:
    """TRL 1.16's ``GRPOConfig`` for what r1zero trains, with TRL's defaults. Any r1zero key may be given
    besides (kept in ``r1zero_options``); TRL's engine keys are accepted and logged, unsupported
    ones refused, and unknown names reported all at once."""

    output_dir: Optional[str] = None  # TRL's default folder: trainer_output
    # batch (r1zero.config.batch)
    per_device_train_batch_size: int = 8
    gradient_accumulation_steps: int = 1
    steps_per_generation: Optional[int] = None
    generation_batch_size: Optional[int] = None
    num_iterations: int = 1
    num_generations: int = 8
    # sampling
    max_completion_length: int = 512
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = 0
    chat_template_kwargs: Optional[dict] = None
    # objective
    beta: float = 0.0
    epsilon: float = 0.2
    epsilon_high: Optional[float] = None
    importance_sampling_level: str = "token"
    loss_type: str = "dapo"
    scale_rewards: Union[str, bool] = "group"
    mask_truncated_completions: bool = False
    reward_weights: Optional[list] = None
    entropy_coef: float = 0.0
    use_bias_correction_kl: bool = True
    # optimisation
    learning_rate: float = 1e-6
    weight_decay: float = 0.0
    adam_beta1: float = 0.9
    adam_beta2: float = 0.999
    adam_epsilon: float = 1e-8
    max_grad_norm: float = 1.0
    lr_scheduler_type: str = "linear"
    warmup_steps: float = 0
    num_train_epochs: float = 3.0
    max_steps: int = -1
    seed: int = 42
    bf16: Optional[bool] = None  # None: r1zero's auto (on for a GPU that supports it), not TRL's `not fp16`
    gradient_checkpointing: bool = True
    trust_remote_code: bool = False
    # logging, saving, evaluation
    logging_steps: float = 10
    logging_strategy: str = "steps"
    save_strategy: str = "steps"
    save_steps: float = 500
    save_total_limit: Optional[int] = None
    eval_strategy: str = "no"
    eval_steps: Optional[float] = None
    eval_on_start: bool = False
    report_to: Union[str, list, None] = "none"
    run_name: Optional[str] = None
    disable_tqdm: Optional[bool] = None
    resume_from_checkpoint: Optional[str] = None  # as in TRL: read by scripts, not by the trainer

    def __init__(self, output_dir: Optional[str] = None, **kwargs: Any):
        fields = {f.name: f for f in dataclasses.fields(GRPOConfig)}
        others = {k: kwargs.pop(k) for k in list(kwargs) if k not in fields}
        ours = set(field_types())
        rest = take_trl_keys(others, "GRPOConfig")  # TRL's engine keys logged, unsupported ones refused
        unknown = [k for k in rest if k not in ours]
        if unknown:  # every one at once
            said = [f"'{k}'" + (f" (did you mean '{c}'?)" if (c := closest(k, [*fields, *ours])) else "") for k in unknown]
            raise ConfigError(f"GRPOConfig: unknown argument{'s' if len(unknown) > 1 else ''} {', '.join(said)}; "
                              "give TRL's GRPOConfig names or r1zero's keys (r1zero train --help-config)")
        self.r1zero_options = rest
        self.output_dir = output_dir
        for name, f in fields.items():
            if name != "output_dir":
                setattr(self, name, kwargs[name] if name in kwargs else f.default)
        # Refused now, as TRL's __post_init__ refuses, not when training starts (the reward functions
        # come with the trainer: a stand-in name here).
        self.train_config(reward_funcs=["GRPOConfig:reward"], correct_reward=None, format_reward=None)

    # ---- TRL -> r1zero -----------------------------------------------------------------------------
    def train_config(self, **extra: Any) -> TrainConfig:
        """The r1zero TrainConfig these arguments (and ``extra`` r1zero keys) make."""
        for key in ("logging_steps", "save_steps", "eval_steps"):
            value = getattr(self, key)
            if value is not None and not float(value).is_integer():
                raise ConfigError(f"GRPOConfig: '{key}' ({value}) is a share of the run in TRL; give a whole number "
                                  "of steps")
        same = ("per_device_train_batch_size", "gradient_accumulation_steps", "steps_per_generation",
                "generation_batch_size", "num_iterations", "num_generations", "max_completion_length", "temperature",
                "top_p", "top_k", "chat_template_kwargs", "beta", "epsilon", "epsilon_high",
                "importance_sampling_level", "loss_type", "scale_rewards", "mask_truncated_completions",
                "reward_weights", "learning_rate", "weight_decay", "adam_beta1", "adam_beta2", "adam_epsilon",
                "max_grad_norm", "lr_scheduler_type", "num_train_epochs", "max_steps", "seed", "bf16",
                "gradient_checkpointing", "trust_remote_code", "save_total_limit", "eval_on_start", "run_name")
        c: dict[str, Any] = {k: getattr(self, k) for k in same}
        c.update(task="custom", output_dir=self.output_dir or "trainer_output", entropy_coeff=self.entropy_coef,
                 logging_steps=int(self.logging_steps), disable_tqdm=bool(self.disable_tqdm),
                 report_to=[self.report_to] if isinstance(self.report_to, str) else list(self.report_to or ["none"]),
                 save_steps=int(self.save_steps) if self.save_strategy == "steps" else 0,
                 eval_steps=int(self.eval_steps or self.logging_steps) if self.eval_strategy == "steps" else 0,
                 # TRL evaluates eval_dataset only when asked and starts fresh unless train() is told to resume.
                 eval_on_end=False, eval_limit=None, resume_from_checkpoint=None)
        if self.warmup_steps:
            if not 0 < self.warmup_steps < 1:
                raise ConfigError(f"GRPOConfig: 'warmup_steps' ({self.warmup_steps}) as a step count is not supported; "
                                  "give a share of the steps below 1 (warmup_steps or warmup_ratio)")
            c["warmup_ratio"] = float(self.warmup_steps)
        c["use_bias_correction_kl"] = self.use_bias_correction_kl
        for key, value in (("save_strategy", "steps"), ("logging_strategy", "steps"), ("eval_strategy", ("no", "steps"))):
            if getattr(self, key) not in (value if isinstance(value, tuple) else (value,)):
                log.info("GRPOConfig: '%s' %r is TRL's: r1zero saves every save_steps (0: at the end only), logs every "
                         "logging_steps and evaluates every eval_steps", key, getattr(self, key))
        mixed = [k for k in ("prompts_per_step", "mini_batch_prompts", "micro_batch_size")
                 if k in {**self.r1zero_options, **extra}]
        if mixed:
            raise ConfigError(f"GRPOConfig: {', '.join(repr(k) for k in mixed)} (r1zero's batch keys) cannot be mixed "
                              "with TRL's per_device_train_batch_size / gradient_accumulation_steps; keep TRL's")
        import r1zero.algorithms  # noqa: F401  (registers the algorithms' config checks)

        return TrainConfig(**{**c, **self.r1zero_options, **extra})


# ---- the arguments GRPOTrainer takes besides GRPOConfig --------------------------------------------

_REFUSED_ARGS = {
    "reward_processing_classes": "reward models are not supported, so neither are their tokenizers",
    "callbacks": "transformers callbacks are not run (r1zero's loop is not transformers' Trainer); read "
                 "state.log_history or output_dir/metrics.jsonl",
    "optimizers": "r1zero builds its own AdamW and schedule from the GRPOConfig keys",
    "quantization_config": "quantized bases are not supported; use peft_config for memory",
    "tools": "tool calling is not supported",
    "rollout_func": "a custom rollout function is not supported",
    "environment_factory": "environments are not supported",
}


def importable_spec(fn: Callable[..., Any]) -> str | None:
    """``module:function`` when a fresh process can import ``fn`` by that name (what a reward worker
    needs, and what pickle needs), else None."""
    module, name = getattr(fn, "__module__", None), getattr(fn, "__name__", None)
    if not module or not name or module == "__main__" or module.startswith("r1zero_user_"):
        return None
    if getattr(fn, "__qualname__", name) != name:  # a nested function, a lambda, a method
        return None
    try:
        found = getattr(importlib.import_module(module), name, None)
    except Exception:
        return None
    return f"{module}:{name}" if found is fn else None


def reward_specs(reward_funcs: Any) -> tuple[list[str], dict[str, Callable[..., Any]]]:
    """(reward_funcs entries, the entries given as objects a worker cannot import -> the object)."""
    funcs = reward_funcs if isinstance(reward_funcs, (list, tuple)) else [reward_funcs]
    if not funcs or reward_funcs is None:
        raise ConfigError("GRPOTrainer: 'reward_funcs' is needed: give one or a list of reward functions")
    specs, local = [], {}
    for i, fn in enumerate(funcs):
        if isinstance(fn, str):
            raise ConfigError(f"GRPOTrainer: reward_funcs[{i}] {fn!r} is a reward-model id; reward models are not "
                              "supported: give a function (e.g. from trl.rewards)")
        if not callable(fn) or hasattr(fn, "config"):
            raise ConfigError(f"GRPOTrainer: reward_funcs[{i}] is a {type(fn).__name__}; reward models are not "
                              "supported: give a function")
        spec = importable_spec(fn)
        if spec is None:
            name = getattr(fn, "__name__", type(fn).__name__)
            spec = f"{getattr(fn, '__module__', None) or 'local'}:{name}"
            while spec in local or spec in specs:  # two lambdas: two reward parts
                spec += "_"
            local[spec] = fn
        specs.append(spec)
    return specs, local


def dataset_rows(data: Any, key: str) -> list[dict] | None:
    """A datasets.Dataset, a DatasetDict / dict of one split, or a list of dicts, as a list of rows."""
    if data is None:
        return None
    if isinstance(data, dict):  # a DatasetDict, or a dict of datasets
        if len(data) != 1:
            raise ConfigError(f"GRPOTrainer: '{key}' holds splits {', '.join(map(str, data))}; give one, "
                              f"e.g. {key}=dataset['train']")
        data = next(iter(data.values()))
    if type(data).__name__ == "IterableDataset":
        raise ConfigError(f"GRPOTrainer: '{key}' is an IterableDataset; r1zero draws rows by index: give a "
                          "datasets.Dataset (e.g. Dataset.from_generator) or a list of dicts")
    rows = [dict(r) for r in data]
    if not all(isinstance(r, dict) for r in rows):
        raise ConfigError(f"GRPOTrainer: '{key}' must be a datasets.Dataset or a list of dicts")
    return rows


def lora_keys(peft_config: Any) -> dict[str, Any]:
    """r1zero's LoRA keys (TRL's ModelConfig names) for a peft.LoraConfig."""
    from peft import LoraConfig

    if not isinstance(peft_config, LoraConfig):
        raise ConfigError(f"GRPOTrainer: 'peft_config' is a {type(peft_config).__name__}; give a peft.LoraConfig")
    default = LoraConfig()
    others = [k for k in ("use_dora", "bias", "init_lora_weights", "layers_to_transform", "rank_pattern",
                          "alpha_pattern", "target_parameters", "fan_in_fan_out", "use_qalora")
              if getattr(peft_config, k, None) != getattr(default, k, None)]
    if others:
        raise ConfigError(f"GRPOTrainer: peft_config's {', '.join(others)} {'is' if len(others) == 1 else 'are'} not "
                          "supported; r1zero trains plain LoRA (r, lora_alpha, lora_dropout, target_modules, "
                          "modules_to_save, use_rslora)")
    targets = peft_config.target_modules
    targets = [targets] if isinstance(targets, str) else sorted(targets) if targets is not None else None
    return dict(use_peft=True, lora_r=peft_config.r, lora_alpha=peft_config.lora_alpha,
                lora_dropout=peft_config.lora_dropout, lora_target_modules=targets,
                lora_modules_to_save=list(peft_config.modules_to_save) if peft_config.modules_to_save else None,
                use_rslora=bool(peft_config.use_rslora))


class GRPOTrainer:
    """TRL 1.16's ``GRPOTrainer`` signature, trained by r1zero (module docstring)."""

    def __init__(self, model: Any, reward_funcs: Any = None, args: GRPOConfig | None = None, train_dataset: Any = None,
                 eval_dataset: Any = None, processing_class: Any = None, reward_processing_classes: Any = None,
                 callbacks: Any = None, optimizers: tuple = (None, None), quantization_config: Any = None,
                 peft_config: Any = None, tools: Any = None, rollout_func: Any = None, environment_factory: Any = None):
        given = dict(reward_processing_classes=reward_processing_classes, callbacks=callbacks,
                     optimizers=None if tuple(optimizers or ()) in ((None, None), ()) else optimizers,
                     quantization_config=quantization_config, tools=tools, rollout_func=rollout_func,
                     environment_factory=environment_factory)
        refused = [f"'{k}' ({why})" for k, why in _REFUSED_ARGS.items() if given[k] not in (None, [])]
        if refused:
            raise ConfigError(f"GRPOTrainer: not supported: {'; '.join(refused)}")
        self._tmp = tempfile.TemporaryDirectory(prefix="r1zero-trl-")  # a model or tokenizer given as an object
        name = model if isinstance(model, str) else getattr(getattr(model, "config", None), "_name_or_path", "model")
        self.args = args if args is not None else GRPOConfig(output_dir=f"{str(name).rstrip('/').split('/')[-1]}-GRPO")
        extra: dict[str, Any] = {"model_name_or_path": self._model_path(model)}
        if processing_class is not None:
            extra["tokenizer_name_or_path"] = self._tokenizer_path(processing_class, extra["model_name_or_path"])
        if peft_config is not None:
            extra.update(lora_keys(peft_config))
        self.reward_funcs, self._callables = reward_specs(reward_funcs)
        extra["reward_funcs"] = self.reward_funcs
        train_rows = dataset_rows(train_dataset, "train_dataset")
        if train_rows is None:
            raise ConfigError("GRPOTrainer: 'train_dataset' is needed: a datasets.Dataset or a list of dicts")
        self._data = (train_rows, dataset_rows(eval_dataset, "eval_dataset") or [])
        self.config = self.args.train_config(**extra)
        from transformers import TrainerState

        self.state = TrainerState()
        self._trainer = None

    def _saved(self, obj: Any, what: str) -> str:
        """A model or tokenizer given as an object, written where r1zero loads it from (so what it
        holds, trained weights or a changed chat template, is what trains)."""
        folder = Path(self._tmp.name) / what
        obj.save_pretrained(folder)
        return str(folder)

    def _tokenizer_path(self, tokenizer: Any, model_path: str) -> str:
        if not hasattr(tokenizer, "save_pretrained") or not hasattr(tokenizer, "apply_chat_template"):
            raise ConfigError(f"GRPOTrainer: 'processing_class' is a {type(tokenizer).__name__}; give a tokenizer")
        from transformers import AutoConfig

        from r1zero.models import resolve_model_path

        folder = self._saved(tokenizer, "tokenizer")
        # r1zero loads a tokenizer from a model folder: the model's config beside it
        AutoConfig.from_pretrained(resolve_model_path(model_path),
                                   trust_remote_code=self.args.trust_remote_code).save_pretrained(folder)
        return folder

    def _model_path(self, model: Any) -> str:
        if isinstance(model, (str, Path)):
            return str(model)
        if hasattr(model, "peft_config"):
            raise ConfigError("GRPOTrainer: 'model' is a PeftModel; give the base model and the LoRA settings as "
                              "peft_config=LoraConfig(...)")
        if not hasattr(model, "save_pretrained"):
            raise ConfigError(f"GRPOTrainer: 'model' is a {type(model).__name__}; give a hub id, a local folder or a "
                              "transformers PreTrainedModel")
        return self._saved(model, "model")

    # ---- driving r1zero's Trainer ------------------------------------------------------------------
    def _build(self, resume: str | None = None):
        from r1zero.training import distributed
        from r1zero.training.trainer import Trainer

        if self._trainer is None or resume is not None:
            cfg = dataclasses.replace(self.config, resume_from_checkpoint=resume) if resume else self.config
            env = distributed.init(cfg.device)  # under torchrun: join the process group, as `r1zero train` does
            self._trainer = Trainer(cfg, env, data=self._data, reward_callables=self._callables)
        return self._trainer

    def train(self, resume_from_checkpoint: str | bool | None = None, **_: Any):
        """Train; ``resume_from_checkpoint`` True resumes from output_dir's last checkpoint, a path from
        that one (as in TRL). Returns transformers' TrainOutput."""
        from transformers.trainer_utils import TrainOutput

        resume = "auto" if resume_from_checkpoint is True else (str(resume_from_checkpoint)
                                                                 if resume_from_checkpoint else None)
        trainer = self._build(resume)
        result = trainer.train()
        self.state.log_history = self._history()
        self.state.global_step, self.state.max_steps = trainer.step, trainer.max_steps
        losses = [r[metric_names.LOSS] for r in self.state.log_history if metric_names.LOSS in r]
        metrics = dict(result.get("last_metrics") or {})
        return TrainOutput(trainer.step, sum(losses) / len(losses) if losses else math.nan, metrics)

    def _history(self) -> list[dict]:
        """metrics.jsonl's rows, with TRL's ``rewards/<function>/mean`` beside r1zero's ``reward/<function>``."""
        from r1zero.observe import metrics as metric_names
        from r1zero.observe.tracking import METRICS, read_jsonl

        path = Path(self.config.output_dir) / METRICS
        rows = read_jsonl(path, skip_broken=True) if path.is_file() else []
        out = []
        for row in rows:
            row = dict(row)
            for k, v in list(row.items()):
                if k.startswith(metric_names.REWARD_PART):
                    row[f"rewards/{k[len(metric_names.REWARD_PART):]}/mean"] = v
            out.append(row)
        return out

    def evaluate(self, eval_dataset: Any = None, **_: Any) -> dict[str, float]:
        """Evaluate on ``eval_dataset`` (default: the one given to the trainer); TRL's ``eval_`` names."""
        trainer = self._build()
        if eval_dataset is not None:
            trainer.evaluation.test_rows = trainer.task.check_rows(dataset_rows(eval_dataset, "eval_dataset"), "eval_dataset")
        if not trainer.evaluation.test_rows:
            raise ConfigError("GRPOTrainer.evaluate: no eval_dataset; give one to GRPOTrainer or to evaluate()")
        summary = trainer.run_eval()
        out = {f"eval_{k}": v for k, v in summary.items()}
        self.state.log_history.append({**out, "step": trainer.step})
        return out

    def save_model(self, output_dir: str | None = None) -> None:
        """The trained model (with peft_config: the adapter, in peft's format) and tokenizer into
        ``output_dir`` (default: args.output_dir), as TRL's save_model writes them."""
        from r1zero.training import distributed

        trainer = self._build()
        weights = distributed.full_state_dict(trainer.model)  # FSDP: every rank gathers; else None
        if not trainer.env.is_main:
            return
        out = Path(output_dir or self.config.output_dir)
        out.mkdir(parents=True, exist_ok=True)
        if trainer.adapter is not None:
            trainer.adapter.save_adapter(out, weights)
        else:
            trainer.model.save_pretrained(out, safe_serialization=True, state_dict=weights)
        trainer.tokenizer.save_pretrained(out)


__all__ = ["GRPOConfig", "GRPOTrainer"]
