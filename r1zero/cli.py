"""The ``r1zero`` command: ``train``, ``eval``, ``report``, ``compare`` and ``data``.

Every refusal (bad config, bad data, missing model) is one line on stderr and exit status 2, before
any model is loaded or any file written. A run that cannot go on (a full disk, a stopped run) is one
line and status 1; Ctrl-C is one line saying where a rerun resumes, and status 130.
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from pathlib import Path

from r1zero.config import config_reference, load_config, recipe_names
from r1zero.errors import ConfigError, DiskFull, free_bytes, is_disk_full, size_text
from r1zero.observe import metrics as metric_names
from r1zero.training.guards import RunStopped

log = logging.getLogger("r1zero")


def _user_errors():
    from r1zero.data.files import DataError
    from r1zero.models import ModelError
    from r1zero.sandbox.functions import RewardError
    from r1zero.rollout.sampling import PromptTooLong
    from r1zero.tasks import TaskError
    from r1zero.observe.report import ReportError
    from r1zero.observe.tracking import TrackerError

    return (ConfigError, DataError, ModelError, RewardError, PromptTooLong, TaskError, TrackerError, ReportError)


def cmd_train(args) -> int:
    if args.help_config:
        print(config_reference())
        return 0
    import r1zero.algorithms  # noqa: F401  (registers the algorithms' config checks before the config is built)

    cfg = load_config(args.config, args.overrides)
    from r1zero.training import distributed
    from r1zero.training.trainer import Trainer

    env = distributed.init(cfg.device)  # under torchrun: join the process group; else one process
    trainer = None
    try:
        if not env.is_main:  # rank 0 speaks for the run
            logging.getLogger("r1zero").setLevel(logging.WARNING)
        trainer = Trainer(cfg, env, callbacks=args.callbacks)
        if not trainer.finished:
            log.info("training %s on %s (%s%s) for %d steps; output: %s", cfg.model_name_or_path, cfg.task,
                     trainer.device, f", {env.world_size} processes, {cfg.distributed}" if env.enabled else "",
                     trainer.max_steps, cfg.output_dir)
        result = trainer.train()
        # Every rank leaves together: a rank that destroys its process group while another is still
        # finishing (rank 0 writes the report) once left that rank hanging in gloo at exit.
        distributed.barrier(env)
    except KeyboardInterrupt:
        raise Interrupted(_where_to_resume(cfg, trainer)) from None
    finally:
        distributed.cleanup(env)
    if not env.is_main:
        return 0
    if "finished" in result:
        print(f"{cfg.output_dir} finished at step {result['finished']} already; nothing trained or evaluated again "
              f"(model: {result['checkpoint']}; to train on, raise max_steps with allow_config_change=[max_steps], "
              "or start a new output_dir)")
        return 0
    start, end = result.get("eval_start"), result.get("eval_end")
    if start and end:
        print(f"eval accuracy {start[metric_names.ACCURACY]:.3f} -> {end[metric_names.ACCURACY]:.3f}, "
              f"format rate {start[metric_names.FORMAT_RATE]:.3f} -> {end[metric_names.FORMAT_RATE]:.3f}, "
              f"mean reward {start[metric_names.EVAL_MEAN_REWARD]:.3f} -> {end[metric_names.EVAL_MEAN_REWARD]:.3f}")
        if metric_names.ACCURACY_NO_THINK in start and metric_names.ACCURACY_NO_THINK in end:  # eval_no_think
            print(f"accuracy without thinking {start[metric_names.ACCURACY_NO_THINK]:.3f} -> "
                  f"{end[metric_names.ACCURACY_NO_THINK]:.3f}, format rate without thinking "
                  f"{start[metric_names.FORMAT_RATE_NO_THINK]:.3f} -> {end[metric_names.FORMAT_RATE_NO_THINK]:.3f}")
    print(f"model: {result['checkpoint']}")
    print(f"metrics: {Path(cfg.output_dir) / 'metrics.jsonl'}")
    print(f"report: {result['report']}" if result.get("report") else "report: not written (see the warning above)")
    return 0


class Interrupted(Exception):
    """Ctrl-C: the message says the step reached and the checkpoint a rerun resumes from."""


def _where_to_resume(cfg, trainer) -> str:
    from r1zero.training.checkpoint import latest_checkpoint

    latest = latest_checkpoint(cfg.output_dir)
    done = f"after {trainer.step} of {trainer.max_steps} steps" if trainer is not None and not trainer.finished \
        else "before training started"
    how = "rerun the same command" if cfg.resume_from_checkpoint == "auto" else "rerun with resume_from_checkpoint=auto"
    if latest is None:
        return f"interrupted {done}; no checkpoint yet: {how} to start again from step 0"
    return f"interrupted {done}; {how} to resume from {latest}"


def cmd_report(args) -> int:
    from r1zero.observe.report import build_report

    rep = build_report(args.run_dir, words=args.words, threshold=args.threshold)
    for p in rep.plots.values():
        print(f"plot: {p.path}")
    if rep.first_reflection_step is not None:
        print(f"reflection first reaches {rep.threshold:g} at step {rep.first_reflection_step}")
    print(f"report: {rep.html}")
    return 0


def cmd_compare(args) -> int:
    from r1zero.observe.compare import compare, format_terminal, write_html

    result = compare(args.before, args.after, args.limit, flags=_eval_flags(args))
    print(result["settings"])
    print(format_terminal(result))
    print(f"written: {write_html(result, args.out)}")
    return 0


def _eval_flags(args) -> dict:
    """The TrainConfig keys given as eval/compare flags (a flag not given is left to the run/recipe)."""
    pairs = {"task": args.task, "dataset_test_split": args.split, "dataset_name": args.dataset, "reward": args.reward,
             "template": args.template, "eval_max_completion_length": args.max_new_tokens,
             "sampling_batch_size": args.batch_size, "device": args.device,
             "temperature": getattr(args, "temperature", None), "eval_no_think": getattr(args, "no_think", None)}
    return {k: v for k, v in pairs.items() if v is not None}


def cmd_eval(args) -> int:
    import torch

    from r1zero.model_setup import load_generator
    from r1zero.observe.eval_settings import DEFAULTS, EVAL_KEYS, eval_settings
    from r1zero.observe.evaluate import build_evaluation

    # The rows, prompts, scoring and generation of the run's own evaluation (Trainer.run_eval).
    flags = _eval_flags(args)
    if args.limit is not None:
        flags["eval_limit"] = args.limit or None  # 0: every test row
    s = eval_settings(args.model, args.config, args.overrides, flags)
    cfg = s.config
    print(s.line())
    evaluation = build_evaluation(cfg)
    torch.manual_seed(args.seed)
    try:
        # A prompt too long is refused before the model loads.
        gen = load_generator(s.model, cfg.device, bf16=cfg.bf16, tokenizer=s.tokenizer,
                             trust_remote_code=cfg.trust_remote_code, check=evaluation.check_prompts)
        summary, records = evaluation.run(gen, samples=args.samples, temperature=cfg.temperature, top_p=cfg.top_p,
                                          seed=args.seed)
    finally:
        evaluation.close()
    split = cfg.dataset_test_split
    summary = {"model": s.model, "task": cfg.task, "split": split, **summary}
    for k, v in summary.items():
        print(f"{k}: {v:.4f}" if isinstance(v, float) else f"{k}: {v}")
    out = Path(args.out or f"eval-{cfg.task}-{split}.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    written = {"summary": summary, "settings": {k: getattr(cfg, k) for k in EVAL_KEYS},
               "sources": {k: s.sources.get(k, DEFAULTS) for k in EVAL_KEYS}, "records": records}
    out.write_text(json.dumps(written, indent=2, ensure_ascii=False), encoding="utf-8")
    print(f"written: {out}")
    return 0


def cmd_data(args) -> int:
    from r1zero.tasks.countdown import write_generated

    opts = {k: v for k, v in (("min_numbers", args.min_numbers), ("max_numbers", args.max_numbers),
                              ("max_number", args.max_number), ("operators", args.operators)) if v is not None}
    write_generated(args.n, args.seed, args.out, **opts)
    print(f"wrote {args.n} countdown tasks to {args.out}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="r1zero", description="R1-Zero style RL (GRPO) for small language models.")
    sub = p.add_subparsers(dest="command", required=True, help="what to do (r1zero COMMAND --help for its options)")

    _add_train_command(sub)
    _add_eval_command(sub)
    _add_report_command(sub)
    _add_compare_command(sub)
    _add_data_command(sub)
    return p


def _add_train_command(sub) -> None:
    t = sub.add_parser("train", help="train with GRPO (no arguments: the embedded CPU default)",
                       description=f"Packaged recipes: {', '.join(recipe_names())}")
    t.add_argument("--config", help="recipe YAML path or packaged recipe name")
    t.add_argument("--help-config", action="store_true", help="print every config key with its meaning")
    t.add_argument("overrides", nargs="*", help="key=value overrides, e.g. learning_rate=1e-6 max_steps=10")
    t.set_defaults(func=cmd_train)


# The eval and compare commands read a run's settings the same way; both say so in --help.
_RUN_NOTE = ("Settings not given come from the run's config.yaml when --model (or --after) is a checkpoint "
             "of a run or a run folder, then from --config, then key=value overrides; a flag wins over all. "
             "One line printed first says which setting came from where.")


def _add_eval_command(sub) -> None:
    e = sub.add_parser("eval", help="accuracy, format rate and length of a model on a task, as a run evaluated it",
                       description="Greedy accuracy, format rate, mean reward and length (mean@K/pass@K with "
                                   f"--samples). {_RUN_NOTE}")
    e.add_argument("--model", default=None,
                   help="checkpoint folder (RUN_DIR/checkpoint-N), run folder (= its last checkpoint), hub id, local "
                        "folder or 'embedded' (default: model_name_or_path of --config/overrides, else the embedded model)")
    e.add_argument("--config", default=None, help="recipe YAML path or packaged recipe name, read as `train --config` does")
    e.add_argument("overrides", nargs="*", help="key=value config overrides as in train, e.g. max_completion_length=64 eval_limit=16")
    e.add_argument("--task", default=None, help="task: countdown, gsm8k, custom or module:Class (config key: task; default: the run's, else countdown)")
    e.add_argument("--split", default=None, help="split to evaluate on (config key: dataset_test_split; default: the run's, else test)")
    e.add_argument("--dataset", default=None, help="hub id or local file/folder (config key: dataset_name; default: the run's, else the task's own)")
    e.add_argument("--reward", default=None, help="reward scheme of the task (config key: reward; default: the run's, else the task's own)")
    e.add_argument("--template", default=None, help="prompt template of the task (config key: template; default: the run's, else the task's own)")
    e.add_argument("--limit", type=int, default=None,
                   help="first N test rows, 0 = all (config key: eval_limit; default: the run's, else 256)")
    e.add_argument("--samples", type=int, default=1, help="K sampled answers per problem for mean@K / pass@K (default 1: greedy only)")
    e.add_argument("--temperature", type=float, default=None, help="sampling temperature for --samples (config key: temperature; default: the run's, else 1.0)")
    e.add_argument("--max-new-tokens", type=int, default=None,
                   help="generation length (config key: eval_max_completion_length; default: the run's, else its max_completion_length, else 256)")
    e.add_argument("--batch-size", type=int, default=None,
                   help="sequences per generate call (config key: sampling_batch_size; default: the run's, else 64)")
    e.add_argument("--device", default=None, help="auto, cpu, cuda or cuda:N (config key: device; default: the run's, else auto)")
    # Two flags of one key (argparse's BooleanOptionalAction would read "--no-think" as "think: false").
    e.add_argument("--no-think", dest="no_think", action="store_const", const=True, default=None,
                   help="also answer with the thinking taken away (the think part closed empty in the prompt): "
                        "accuracy_no_think beside accuracy (config key: eval_no_think; default: the run's, else when "
                        "the template has a think part)")
    e.add_argument("--no-no-think", dest="no_think", action="store_const", const=False,
                   help="do not (config key: eval_no_think: false)")
    e.add_argument("--seed", type=int, default=0, help="seed of the sampled answers (--samples > 1)")
    e.add_argument("--out", default=None, help="JSON file for the results (default: eval-TASK-SPLIT.json)")
    e.set_defaults(func=cmd_eval)


def _add_report_command(sub) -> None:
    r = sub.add_parser("report", help="write RUN_DIR/report.html: plots, samples, reflection tracking")
    r.add_argument("run_dir", help="a training run's output_dir")
    r.add_argument("--words", nargs="+", default=None,
                   help="reflection phrases (default: the run's reflection_words, else the built-in English/Chinese list)")
    r.add_argument("--threshold", type=float, default=None, help="reflection share marked on the plot (default: the run's, else 0.1)")
    r.set_defaults(func=cmd_report)


def _add_compare_command(sub) -> None:
    m = sub.add_parser("compare", help="the same prompts answered by two models, side by side, with scores",
                       description=f"Both models answer greedily. {_RUN_NOTE}")
    m.add_argument("--before", default="embedded", help="model before training (default: the embedded model)")
    m.add_argument("--after", required=True, help="checkpoint or run folder (= its last checkpoint), or any model, after training")
    m.add_argument("--task", default=None, help="task name (default: the run's, when --after is a checkpoint of a run)")
    m.add_argument("--limit", type=int, default=8, help="number of test prompts shown (default 8)")
    m.add_argument("--split", default=None, help="split the prompts come from (default: the run's dataset_test_split, else test)")
    m.add_argument("--dataset", default=None, help="hub id or local file/folder (default: the run's dataset_name, else the task's own)")
    m.add_argument("--reward", default=None, help="reward scheme (default: the run's, else the task's own)")
    m.add_argument("--template", default=None, help="prompt template (default: the run's, else the task's own)")
    m.add_argument("--max-new-tokens", type=int, default=None, help="default: the run's generation length, else 256")
    m.add_argument("--batch-size", type=int, default=None, help="sequences per generate call (default: the run's sampling_batch_size, else 64)")
    m.add_argument("--device", default=None, help="auto, cpu, cuda or cuda:N (default: the run's device, else auto)")
    m.add_argument("--out", default="compare.html", help="HTML page with both answers (default: compare.html)")
    m.set_defaults(func=cmd_compare)


def _add_data_command(sub) -> None:
    d = sub.add_parser("data", help="generate task data")
    dsub = d.add_subparsers(dest="dataset", required=True, help="which task's data")
    c = dsub.add_parser("countdown", help="seeded Countdown tasks, each proven solvable")
    c.add_argument("--n", type=int, required=True, help="number of tasks")
    c.add_argument("--seed", type=int, default=0, help="generator seed (default 0): the same seed writes the same file")
    c.add_argument("--out", required=True, help="JSONL file to write")
    c.add_argument("--min-numbers", type=int, help="fewest numbers per task (default 3)")
    c.add_argument("--max-numbers", type=int, help="most numbers per task (default 4)")
    c.add_argument("--max-number", type=int, help="largest number (default 99)")
    c.add_argument("--operators", help="operators allowed, e.g. '+-' (default '+-*/')")
    c.set_defaults(func=cmd_data)


def main(argv: list[str] | None = None, callbacks: list | None = None) -> int:
    """The command on ``argv`` (default: sys.argv); ``callbacks`` (r1zero.training.callbacks.Callback
    objects) are called by a ``train`` run at the loop's named points."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s", datefmt="%H:%M:%S")
    for noisy in ("transformers", "httpx", "urllib3", "datasets"):
        logging.getLogger(noisy).setLevel(logging.ERROR)
    try:  # transformers' per-file loading bars drown the training bar
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()
    except Exception:
        pass
    args = build_parser().parse_args(argv)
    args.callbacks = callbacks  # read by cmd_train
    try:
        return args.func(args)
    except _user_errors() as e:
        _say_once(f"r1zero: error: {e}")
        return 2
    except (RunStopped, DiskFull) as e:  # a run that started but cannot usefully go on (r1zero.training.guards)
        _say_once(f"r1zero: error: {e}")
        return 1
    except Interrupted as e:
        _say_once(f"r1zero: {e}")
        return 130
    except KeyboardInterrupt:  # another command, or before the config was read
        _say_once("r1zero: interrupted")
        return 130
    except OSError as e:
        if not is_disk_full(e):
            raise
        where = e.filename or "a file"
        _say_once(f"r1zero: error: the disk is full ({size_text(free_bytes(where if e.filename else '.'))} free) "
                  f"while writing {where}; free space, then rerun the same command")
        return 1


def _say_once(message: str) -> None:
    """Print to stderr; under torchrun every rank hits the same error, and rank 0 says it."""
    if os.environ.get("RANK", "0") == "0":
        print(message, file=sys.stderr)


if __name__ == "__main__":
    sys.exit(main())
