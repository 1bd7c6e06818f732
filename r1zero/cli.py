"""The ``r1zero`` command: ``train``, ``eval``, ``report``, ``compare`` and ``data``.

Every refusal (bad config, bad data, missing model) is one line on stderr and exit status 2, before
any model is loaded or any file written.
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from pathlib import Path

from r1zero.config import config_reference, load_config, recipe_names
from r1zero.errors import ConfigError
from r1zero.training.guards import RunStopped

log = logging.getLogger("r1zero")


def _user_errors():
    from r1zero.data.files import DataError
    from r1zero.models import ModelError
    from r1zero.rewards.functions import RewardError
    from r1zero.rollout.sampling import PromptTooLong
    from r1zero.tasks import TaskError
    from r1zero.observe.report import ReportError
    from r1zero.observe.tracking import TrackerError

    return (ConfigError, DataError, ModelError, RewardError, PromptTooLong, TaskError, TrackerError, ReportError)


def cmd_train(args) -> int:
    if args.help_config:
        print(config_reference())
        return 0
    cfg = load_config(args.config, args.overrides)
    from r1zero.training import distributed
    from r1zero.training.trainer import Trainer

    env = distributed.init(cfg.device)  # under torchrun: join the process group; else one process
    try:
        if not env.is_main:  # rank 0 speaks for the run
            logging.getLogger("r1zero").setLevel(logging.WARNING)
        trainer = Trainer(cfg, env)
        log.info("training %s on %s (%s%s) for %d steps; output: %s", cfg.model_name_or_path, cfg.task,
                 trainer.device, f", {env.world_size} processes, {cfg.distributed}" if env.enabled else "",
                 trainer.max_steps, cfg.output_dir)
        result = trainer.train()
    finally:
        distributed.cleanup(env)
    if not env.is_main:
        return 0
    start, end = result.get("eval_start"), result.get("eval_end")
    if start and end:
        print(f"eval accuracy {start['accuracy']:.3f} -> {end['accuracy']:.3f}, "
              f"format rate {start['format_rate']:.3f} -> {end['format_rate']:.3f}, "
              f"mean reward {start['mean_reward']:.3f} -> {end['mean_reward']:.3f}")
    print(f"model: {result['checkpoint']}")
    print(f"metrics: {Path(cfg.output_dir) / 'metrics.jsonl'}")
    print(f"report: {result['report']}" if result.get("report") else "report: not written (see the warning above)")
    return 0


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

    result = compare(args.before, args.after, args.task, args.limit, split=args.split, dataset=args.dataset,
                     reward=args.reward, template=args.template, max_new_tokens=args.max_new_tokens,
                     device=args.device, batch_size=args.batch_size)
    print(format_terminal(result))
    print(f"written: {write_html(result, args.out)}")
    return 0


def cmd_eval(args) -> int:
    import torch

    from r1zero.models import load_generator
    from r1zero.observe.evaluate import evaluate
    from r1zero.tasks import get_task

    task = get_task(args.task, reward=args.reward, template=args.template)
    rows = task.load_split(args.split, source=args.dataset)
    if args.limit:
        rows = rows[:args.limit]
    torch.manual_seed(args.seed)
    gen = load_generator(args.model, args.device)
    summary, records = evaluate(gen.model, gen.tokenizer, task, rows, eos_ids=gen.eos_ids,
                                max_new_tokens=args.max_new_tokens, samples=args.samples,
                                temperature=args.temperature, batch_size=args.batch_size, seed=args.seed,
                                autocast_dtype=gen.autocast_dtype)
    summary = {"model": args.model, "task": args.task, "split": args.split, **summary}
    for k, v in summary.items():
        print(f"{k}: {v:.4f}" if isinstance(v, float) else f"{k}: {v}")
    out = Path(args.out or f"eval-{args.task}-{args.split}.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"summary": summary, "records": records}, indent=2, ensure_ascii=False), encoding="utf-8")
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
    sub = p.add_subparsers(dest="command", required=True)

    t = sub.add_parser("train", help="train with GRPO (no arguments: the embedded CPU default)",
                       description=f"Packaged recipes: {', '.join(recipe_names())}")
    t.add_argument("--config", help="recipe YAML path or packaged recipe name")
    t.add_argument("--help-config", action="store_true", help="print every config key with its meaning")
    t.add_argument("overrides", nargs="*", help="key=value overrides, e.g. learning_rate=1e-6 max_steps=10")
    t.set_defaults(func=cmd_train)

    e = sub.add_parser("eval", help="accuracy, format rate and length of a model on a task")
    e.add_argument("--model", default="embedded", help="hub id, local folder or checkpoint (default: the embedded model)")
    e.add_argument("--task", required=True)
    e.add_argument("--split", default="test")
    e.add_argument("--dataset", default=None, help="hub id or local file/folder (default: the task's own)")
    e.add_argument("--reward", default=None)
    e.add_argument("--template", default=None)
    e.add_argument("--limit", type=int, default=None)
    e.add_argument("--samples", type=int, default=1, help="K sampled answers per problem for mean@K / pass@K")
    e.add_argument("--temperature", type=float, default=1.0)
    e.add_argument("--max-new-tokens", type=int, default=256)
    e.add_argument("--batch-size", type=int, default=64)
    e.add_argument("--device", default="auto")
    e.add_argument("--seed", type=int, default=0)
    e.add_argument("--out", default=None, help="JSON file for the results (default: eval-TASK-SPLIT.json)")
    e.set_defaults(func=cmd_eval)

    r = sub.add_parser("report", help="write RUN_DIR/report.html: plots, samples, reflection tracking")
    r.add_argument("run_dir", help="a training run's output_dir")
    r.add_argument("--words", nargs="+", default=None,
                   help="reflection phrases (default: the run's reflection_words, else the built-in English/Chinese list)")
    r.add_argument("--threshold", type=float, default=None, help="reflection share marked on the plot (default: the run's, else 0.1)")
    r.set_defaults(func=cmd_report)

    m = sub.add_parser("compare", help="the same prompts answered by two models, side by side, with scores")
    m.add_argument("--before", default="embedded", help="model before training (default: the embedded model)")
    m.add_argument("--after", required=True, help="checkpoint (or any model) after training")
    m.add_argument("--task", default=None, help="task name (default: the run's, when --after is a checkpoint of a run)")
    m.add_argument("--limit", type=int, default=8)
    m.add_argument("--split", default="test")
    m.add_argument("--dataset", default=None)
    m.add_argument("--reward", default=None)
    m.add_argument("--template", default=None)
    m.add_argument("--max-new-tokens", type=int, default=None, help="default: the run's generation length, else 256")
    m.add_argument("--batch-size", type=int, default=64)
    m.add_argument("--device", default="auto")
    m.add_argument("--out", default="compare.html")
    m.set_defaults(func=cmd_compare)

    d = sub.add_parser("data", help="generate task data")
    dsub = d.add_subparsers(dest="dataset", required=True)
    c = dsub.add_parser("countdown", help="seeded Countdown tasks, each proven solvable")
    c.add_argument("--n", type=int, required=True)
    c.add_argument("--seed", type=int, default=0)
    c.add_argument("--out", required=True)
    c.add_argument("--min-numbers", type=int)
    c.add_argument("--max-numbers", type=int)
    c.add_argument("--max-number", type=int)
    c.add_argument("--operators")
    c.set_defaults(func=cmd_data)
    return p


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s", datefmt="%H:%M:%S")
    for noisy in ("transformers", "httpx", "urllib3", "datasets"):
        logging.getLogger(noisy).setLevel(logging.ERROR)
    try:  # transformers' per-file loading bars drown the training bar
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()
    except Exception:
        pass
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except _user_errors() as e:
        _say_once(f"r1zero: error: {e}")
        return 2
    except RunStopped as e:  # a run that started but cannot usefully go on (r1zero.training.guards)
        _say_once(f"r1zero: error: {e}")
        return 1


def _say_once(message: str) -> None:
    """Print to stderr; under torchrun every rank hits the same error, and rank 0 says it."""
    if os.environ.get("RANK", "0") == "0":
        print(message, file=sys.stderr)


if __name__ == "__main__":
    sys.exit(main())
