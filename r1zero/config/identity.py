"""The resolved config is a run's identity: a resume compares it with the run's ``config.yaml``.

A key that changes what the run computes (model, task, data, algorithm, batch shape, loss, learning
rate and schedule, seed, ...) cannot change silently in the middle of a run: the resume is refused,
listing each such key's old and new value, unless ``allow_config_change`` names it (the change is then
recorded). Keys in ``FREE`` change only how the run is watched, saved, evaluated in time or fits in
memory; a change of those is accepted and logged. Every key not in ``FREE`` changes the result, so a
key added later is protected until someone decides otherwise.
"""
from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import yaml

from r1zero.errors import ConfigError

log = logging.getLogger("r1zero")

CONFIG = "config.yaml"
CHANGES = "config_changes.jsonl"

FREE = frozenset({
    "output_dir", "resume_from_checkpoint", "allow_config_change", "run_name", "disable_tqdm",
    # what is logged and reported
    "logging_steps", "report_to", "log_completions_rate", "report_steps", "reflection_words",
    "reflection_threshold", "collapse_steps",
    # when it saves and evaluates (evaluation is greedy and keyed: it draws no training randomness)
    "save_steps", "save_total_limit", "save_optimizer_state", "eval_steps", "eval_on_start", "eval_on_end",
    # an evaluation's second pass without the thinking: beside the first, which it leaves as it was
    "eval_no_think",
    # memory: the samples are keyed per prompt and sample, the sums are the same
    "sampling_batch_size", "micro_batch_size", "logprob_chunk_size", "gradient_checkpointing",
    "ref_model_offload", "fsdp_cpu_offload",
    # TRL's batch keys are resolved into r1zero's above (null in a resolved config); an old run's
    # config.yaml may hold them in their earlier meaning (micro-batch and generate-call sizes)
    "per_device_train_batch_size", "generation_batch_size",
    # when a run gives up, not what it computes until then (a reward within its time limit scores
    # the same in the trainer's process or a worker's)
    "max_failed_reward_steps", "max_skipped_updates", "reward_timeout",
})


def _free(key: str, cfg) -> bool:
    # bnpo normalises the loss per micro-batch, so there the micro-batch size changes the update.
    return key in FREE and not (key == "micro_batch_size" and cfg.loss_type == "bnpo")


def _plain(d: dict) -> dict:
    """Values as config.yaml holds them (tuples as lists, and so on), so equal settings compare equal."""
    return yaml.safe_load(yaml.safe_dump(d))


def run_config_path(output_dir: Path, resume_from: Path) -> Path | None:
    """The config.yaml of the run a checkpoint belongs to: output_dir's, else the checkpoint's run folder's."""
    for p in (Path(output_dir) / CONFIG, Path(resume_from).parent / CONFIG):
        if p.is_file():
            return p
    return None


def check_resume(cfg, output_dir: Path, resume_from: Path, step: int) -> dict[str, tuple[Any, Any]]:
    """The changes of this resume against the run's config.yaml ({key: (old, new)}); refuses, in one
    line, changes of result keys that ``allow_config_change`` does not name."""
    path = run_config_path(output_dir, resume_from)
    if path is None:  # a checkpoint without its run's config: nothing to compare with
        return {}
    try:
        old = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except (OSError, yaml.YAMLError) as e:
        raise ConfigError(f"resume: {path} does not read ({str(e).splitlines()[0]}); restore it or start a new output_dir") from None
    new = _plain(cfg.to_dict())
    changes = {k: (old[k], v) for k, v in new.items() if k in old and old[k] != v}
    refused = {k: ov for k, ov in changes.items() if not _free(k, cfg) and k not in cfg.allow_config_change}
    if refused:
        listed = ", ".join(f"{k} {o!r} -> {n!r}" for k, (o, n) in refused.items())
        raise ConfigError(f"resume: these keys differ from the run's {path} and change the result: {listed}; "
                          f"start a new output_dir, or continue this run with them from step {step} by adding "
                          f"allow_config_change=[{','.join(refused)}] (recorded in {CHANGES})")
    for k, (o, n) in changes.items():
        log.info("resume: %s %r -> %r from step %d%s", k, o, n, step, "" if _free(k, cfg) else " (allow_config_change)")
    return changes


def record_changes(output_dir: Path, step: int, changes: dict[str, tuple[Any, Any]], cfg) -> None:
    """Append this resume's changes to config_changes.jsonl (config.yaml then holds the new values)."""
    if not changes:
        return
    row = {"step": step, "changes": {k: {"old": o, "new": n} for k, (o, n) in changes.items()},
           "allowed": [k for k in changes if not _free(k, cfg)]}
    with open(Path(output_dir) / CHANGES, "a", encoding="utf-8") as f:
        f.write(json.dumps(row, ensure_ascii=False) + "\n")
