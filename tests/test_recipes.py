"""Each packaged recipe loads and runs one full step with its model swapped for a tiny random model
of the same family (Qwen2.5 recipes -> tiny Qwen2, SmolLM2 -> tiny Llama), on local data."""
import json

import pytest

from r1zero.config import load_config, recipe_names
from r1zero.tasks.countdown import write_generated
from r1zero.training.trainer import Trainer

FAMILY = {
    "countdown-tinyzero-grpo": "qwen2",
    "countdown-tinyzero-ppo": "qwen2",
    "countdown-datawhale": "qwen2",
    "gsm8k-qwen0.5b-instruct": "qwen2",
    "countdown-smollm2-cpu": "llama",
    "sums-smollm2-think": "llama",
}


def test_every_recipe_is_covered():
    assert sorted(FAMILY) == recipe_names()


@pytest.mark.parametrize("name", sorted(FAMILY))
def test_recipe_runs_one_step(name, request, tmp_path):
    model = request.getfixturevalue(f"tiny_{FAMILY[name]}")
    cfg = load_config(name)
    overrides = [f"model_name_or_path={model}", f"output_dir={tmp_path / 'run'}", "max_steps=1",
                 "prompts_per_step=2", "num_generations=2", "mini_batch_prompts=1", "max_completion_length=8",
                 "eval_limit=2", "eval_steps=0", "save_steps=0", "disable_tqdm=true", "report_to=[none]"]
    if cfg.dataset_name is not None and cfg.task != "gsm8k":  # gsm8k: the copy shipped with r1zero  # the hub Countdown set, replaced by a local generated file
        data = tmp_path / "countdown.jsonl"
        write_generated(64, 0, data)
        overrides += [f"dataset_name={data}", "train_size=48", "test_size=16", "data_max_rows=null"]
    cfg = load_config(name, overrides)
    result = Trainer(cfg).train()
    rows = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    train_rows = [r for r in rows if "reward" in r]
    assert [r["step"] for r in train_rows] == [1]
    assert train_rows[0]["completions/max_length"] <= 8
    assert (tmp_path / "run" / "checkpoint-1" / "model.safetensors").is_file()
    assert "accuracy" in result["eval_end"]
    # The thinking recipes log the think part's length and evaluate without the thinking too.
    thinks = cfg.template in ("chat-think", "chat-think-example", "base", "qwen-instruct", "datawhale")
    assert ("think/mean_length" in train_rows[0]) == thinks
    assert ("accuracy_no_think" in result["eval_end"]) == thinks
