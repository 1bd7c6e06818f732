"""TRL's entry: ``from r1zero import GRPOConfig, GRPOTrainer`` in a TRL script, TRL's batch keys with TRL
1.16's meaning (compared with TRL's own GRPOTrainer), the refusals, and TRL's mini-R1 YAML."""
from __future__ import annotations

import json
import logging
import re
import subprocess
import sys
import os
import inspect

import pytest
import yaml

from r1zero import GRPOConfig, GRPOTrainer
from r1zero.config import ConfigError, TrainConfig, load_config
from r1zero.config.batch import trl_batch
from r1zero.config.trl_keys import ACCEPTED, REFUSED

pytestmark = pytest.mark.filterwarnings("ignore::FutureWarning", "ignore::UserWarning")

PROMPTS = ["What is 2 + 3?", "Name a colour.", "Count to three.", "Say hi."]


def conversations(n: int = 4) -> list[dict]:
    return [{"prompt": [{"role": "user", "content": PROMPTS[i % len(PROMPTS)]}], "kind": i % 2} for i in range(n)]


def reward_len(completions, **kwargs):
    """A plain TRL-form reward (module level: it runs in r1zero's reward worker)."""
    return [min(len(c[0]["content"]), 20) / 20 for c in completions]


def reward_variety(completions, **kwargs):
    """Distinct characters: a spread of rewards within a group of a random model's completions."""
    return [len(set(c[0]["content"])) / 50 for c in completions]


def trl_metric_names() -> set[str]:
    """Every metric name TRL 1.16's GRPOTrainer logs (read from its source), plus transformers' own."""
    import trl.trainer.grpo_trainer as g

    src = inspect.getsource(g)
    names = set(re.findall(r'_metrics\[mode\]\["([^"]+)"\]', src))
    return names | {"loss", "grad_norm", "learning_rate", "epoch", "step"}


# ---- 1. TRL's quickstart with the import changed ---------------------------------------------------

def test_quickstart_trains_two_steps_with_trl_metric_names(tiny_qwen2, tmp_path):
    from datasets import Dataset
    from trl.rewards import think_format_reward

    args = GRPOConfig(output_dir=str(tmp_path / "run"), per_device_train_batch_size=4, num_generations=4,
                      max_completion_length=8, max_steps=2, logging_steps=1, learning_rate=1e-3, seed=0)
    trainer = GRPOTrainer(model=str(tiny_qwen2), reward_funcs=[think_format_reward, reward_len], args=args,
                          train_dataset=Dataset.from_list(conversations()))
    out = trainer.train()
    assert out.global_step == 2 and trainer.state.global_step == 2
    rows = [r for r in trainer.state.log_history if "loss" in r]
    assert [r["step"] for r in rows] == [1, 2]
    want = {"loss", "grad_norm", "learning_rate", "reward", "reward_std", "frac_reward_zero_std", "entropy",
            "completions/mean_length", "completions/min_length", "completions/max_length", "completions/clipped_ratio",
            "clip_ratio/low_mean", "clip_ratio/region_mean", "epoch", "step"}
    assert want <= trl_metric_names()  # each is a name TRL logs
    per_function = {"rewards/think_format_reward/mean", "rewards/reward_len/mean"}
    for r in rows:
        assert want | per_function <= set(r), sorted(want | per_function - set(r))
        # reward_len saw TRL's conversational completions: a value in [0, 1] per completion
        assert 0 <= r["rewards/reward_len/mean"] <= 1
    # One step = one generation of 4 completions = 1 prompt x 4 (TRL: 4 x 1 x 1 process / 4 generations).
    assert trainer.config.prompts_per_step == 1 and trainer.config.mini_batch_prompts is None
    trainer.save_model(str(tmp_path / "saved"))
    assert (tmp_path / "saved" / "config.json").is_file() and (tmp_path / "saved" / "model.safetensors").is_file()


# ---- 2. batch arithmetic against TRL 1.16's own GRPOTrainer -----------------------------------------

BATCHES = {
    # Datawhale-R1: per_device_train_batch_size 1 x gradient_accumulation_steps 8, 8 generations
    "datawhale": dict(per_device_train_batch_size=1, gradient_accumulation_steps=8, num_generations=8),
    # the GSM8K course: 4 prompts of 16 generations per optimizer step, one micro-step of 16 per accumulation
    "gsm8k": dict(per_device_train_batch_size=16, gradient_accumulation_steps=4, num_generations=16),
    # generation every 4 micro-steps, an optimizer step every 2: two updates per generation, twice over
    "steps_per_generation": dict(per_device_train_batch_size=4, gradient_accumulation_steps=2, steps_per_generation=4,
                                 num_generations=4, num_iterations=2),
}


def trl_counts(tiny_qwen2, tmp_path, keys: dict) -> tuple[int, int, int]:
    """(prompts per generation, completions per optimizer step, optimizer steps per generation) as TRL's
    own trainer computes them: its sampler's batch, its accelerator's accumulation, its generate_every."""
    import trl
    from datasets import Dataset

    args = trl.GRPOConfig(output_dir=str(tmp_path / "trl"), use_cpu=True, bf16=False, report_to="none",
                          max_completion_length=4, **keys)
    t = trl.GRPOTrainer(model=str(tiny_qwen2), reward_funcs=reward_len, args=args,
                        train_dataset=Dataset.from_list(conversations(64)))
    sampler = t._get_train_sampler()
    assert sampler.mini_repeat_count == t.args.num_generations
    per_update = t.get_total_train_batch_size(t.args)  # micro-batch x accumulation x processes
    generate_every = t.args.steps_per_generation * t.num_iterations  # micro-steps between generations
    accumulation = t.args.gradient_accumulation_steps
    assert generate_every % accumulation == 0
    return sampler.batch_size, per_update, generate_every // accumulation


@pytest.mark.parametrize("name", list(BATCHES))
def test_batch_keys_match_trls_own_trainer(name, tiny_qwen2, tmp_path):
    keys = BATCHES[name]
    prompts, per_update, updates = trl_counts(tiny_qwen2, tmp_path, keys)
    cfg = GRPOConfig(output_dir=str(tmp_path / "r1zero"), **keys).train_config(reward_funcs=["m:f"])
    G = cfg.num_generations
    mini = cfg.mini_batch_prompts or cfg.prompts_per_step
    # r1zero's step: prompts_per_step prompts, mini-batches of `mini` prompts, num_iterations passes.
    assert cfg.prompts_per_step == prompts
    assert mini * G == per_update
    assert cfg.prompts_per_step // mini * cfg.num_iterations == updates
    # The same from a YAML recipe with TRL's keys.
    recipe = tmp_path / "trl.yaml"
    recipe.write_text(yaml.safe_dump({"model_name_or_path": str(tiny_qwen2), **keys}))
    y = load_config(str(recipe))
    assert (y.prompts_per_step, y.mini_batch_prompts, y.micro_batch_size, y.num_iterations) == \
        (cfg.prompts_per_step, cfg.mini_batch_prompts, cfg.micro_batch_size, cfg.num_iterations)


def test_batch_keys_count_processes_as_trl(monkeypatch):
    # TRL 1.16 with 2 processes (GRPOConfig.__post_init__): generation_batch_size = 1 x 2 x 8 = 16
    # completions = 2 prompts; an optimizer step 1 x 8 x 2 = 16 completions.
    b = trl_batch(8, 1, 2, per_device_train_batch_size=1, gradient_accumulation_steps=8)
    assert (b.prompts_per_generation, b.completions_per_update, b.updates_per_generation) == (2, 16, 1)
    monkeypatch.setenv("WORLD_SIZE", "2")  # what torchrun sets
    c = TrainConfig(per_device_train_batch_size=1, gradient_accumulation_steps=8, num_generations=8)
    assert (c.prompts_per_step, c.mini_batch_prompts, c.micro_batch_size) == (2, None, 1)


def test_max_steps_counts_optimizer_steps_as_trl():
    c = TrainConfig(per_device_train_batch_size=4, gradient_accumulation_steps=2, steps_per_generation=4,
                    num_generations=4, max_steps=10)
    # 2 optimizer steps per generation: 10 of TRL's steps are 5 generations
    assert (c.prompts_per_step, c.mini_batch_prompts, c.max_steps) == (4, 2, 5)


def test_both_kinds_of_batch_keys_are_refused_in_one_line(tmp_path):
    with pytest.raises(ConfigError) as e:
        TrainConfig(prompts_per_step=8, per_device_train_batch_size=1, gradient_accumulation_steps=8)
    msg = str(e.value)
    assert "\n" not in msg and "'prompts_per_step'" in msg and "'per_device_train_batch_size'" in msg
    with pytest.raises(ConfigError, match="must be a multiple of gradient_accumulation_steps"):
        TrainConfig(per_device_train_batch_size=2, gradient_accumulation_steps=4, steps_per_generation=2,
                    num_generations=2)
    with pytest.raises(ConfigError, match="divisible by num_generations"):
        TrainConfig(per_device_train_batch_size=4, num_generations=16)


# ---- 5. every refused TRL argument: one line naming it --------------------------------------------

def _refused_value(key):
    default, _ = REFUSED[key]
    if isinstance(default, bool):
        return not default
    if isinstance(default, (int, float)) and key != "warmup_steps":
        return default + 1
    return 3 if key == "warmup_steps" else "x"


@pytest.mark.parametrize("key", sorted(REFUSED))
def test_each_refused_trl_key_is_one_line_naming_it(key, tmp_path):
    value = _refused_value(key)
    with pytest.raises(ConfigError) as e:
        GRPOConfig(output_dir=str(tmp_path), **{key: value})
    assert "\n" not in str(e.value) and f"'{key}'" in str(e.value)
    recipe = tmp_path / "r.yaml"  # and in a YAML recipe
    recipe.write_text(yaml.safe_dump({key: value}))
    with pytest.raises(ConfigError) as e:
        load_config(str(recipe))
    assert "\n" not in str(e.value) and f"'{key}'" in str(e.value)


REFUSED_TRAINER_ARGS = {"callbacks": [object()], "optimizers": (object(), None), "tools": [print],
                        "rollout_func": print, "environment_factory": dict, "quantization_config": object(),
                        "reward_processing_classes": [object()]}


@pytest.mark.parametrize("arg", sorted(REFUSED_TRAINER_ARGS))
def test_each_refused_trainer_argument_is_one_line_naming_it(arg, tiny_qwen2, tmp_path):
    with pytest.raises(ConfigError) as e:
        GRPOTrainer(model=str(tiny_qwen2), reward_funcs=reward_len, args=GRPOConfig(output_dir=str(tmp_path)),
                    train_dataset=conversations(), **{arg: REFUSED_TRAINER_ARGS[arg]})
    assert "\n" not in str(e.value) and f"'{arg}'" in str(e.value)


def test_reward_model_ids_are_refused(tiny_qwen2, tmp_path):
    with pytest.raises(ConfigError, match="reward-model id"):
        GRPOTrainer(model=str(tiny_qwen2), reward_funcs=["org/reward-model"], args=GRPOConfig(output_dir=str(tmp_path)),
                    train_dataset=conversations())


def test_engine_keys_are_accepted_with_one_logged_line_each(tmp_path, caplog):
    keys = {"use_vllm": True, "vllm_gpu_memory_utilization": 0.5, "attn_implementation": "flash_attention_2",
            "torch_dtype": "bfloat16", "gradient_checkpointing_kwargs": {"use_reentrant": False},
            "dataloader_num_workers": 4, "model_revision": "main"}
    assert set(keys) - {"vllm_gpu_memory_utilization", "dataloader_num_workers"} <= set(ACCEPTED)
    with caplog.at_level(logging.INFO, logger="r1zero"):
        GRPOConfig(output_dir=str(tmp_path), **keys)
    for key in keys:
        assert len([r for r in caplog.records if f"'{key}'" in r.getMessage()]) == 1, key
    # transformers' use_cpu is r1zero's device
    assert GRPOConfig(output_dir=str(tmp_path), use_cpu=True).train_config(reward_funcs=["m:f"]).device == "cpu"


def test_unknown_keys_are_reported_all_at_once(tmp_path):
    with pytest.raises(ConfigError) as e:
        GRPOConfig(output_dir=str(tmp_path), lerning_rate=1.0, num_generation=4, banana=1)
    msg = str(e.value)
    assert "\n" not in msg and all(f"'{k}'" in msg for k in ("lerning_rate", "num_generation", "banana"))
    assert "did you mean 'learning_rate'" in msg
    recipe = tmp_path / "r.yaml"
    recipe.write_text("lerning_rate: 1.0\nbanana: 1\n")
    with pytest.raises(ConfigError) as e:
        load_config(str(recipe))
    assert "'lerning_rate'" in str(e.value) and "'banana'" in str(e.value)


# ---- 3. LoRA from a peft.LoraConfig object ----------------------------------------------------------

def test_peft_config_object_trains_and_saves_an_adapter(tiny_qwen2, tmp_path):
    from peft import LoraConfig
    from safetensors.torch import load_file

    args = GRPOConfig(output_dir=str(tmp_path / "run"), per_device_train_batch_size=4, num_generations=4,
                      max_completion_length=6, max_steps=1, learning_rate=1e-2, gradient_checkpointing=False,
                      save_strategy="no", seed=0)
    trainer = GRPOTrainer(model=str(tiny_qwen2), reward_funcs=reward_variety, args=args, train_dataset=conversations(),
                          peft_config=LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"]))
    assert (trainer.config.use_peft, trainer.config.lora_r, trainer.config.lora_alpha) == (True, 4, 8)
    trainer.train()
    trainer.save_model(str(tmp_path / "adapter"))
    saved = json.loads((tmp_path / "adapter" / "adapter_config.json").read_text())
    assert saved["r"] == 4 and saved["lora_alpha"] == 8 and sorted(saved["target_modules"]) == ["q_proj", "v_proj"]
    weights = load_file(str(tmp_path / "adapter" / "adapter_model.safetensors"))
    assert weights and all(".lora_A." in k or ".lora_B." in k for k in weights)
    # lora_B starts at zero: one step moved it
    assert any(float(v.abs().sum()) > 0 for k, v in weights.items() if ".lora_B." in k)


# ---- in-process rewards, eval_dataset, evaluate() ---------------------------------------------------

def test_local_callables_run_in_process_with_eval_dataset(tiny_qwen2, tmp_path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    calls = []

    async def accuracy_reward(completions, kind, **kwargs):  # async, a closure: no worker can import it
        calls.append(list(kind))
        return [1.0 if k else 0.0 for k in kind]

    args = GRPOConfig(output_dir=str(tmp_path / "run"), per_device_train_batch_size=4, num_generations=2,
                      max_completion_length=4, max_steps=1, gradient_checkpointing=False, seed=0)
    evals = [{"prompt": "Say yes.", "kind": 1}, {"prompt": "Say no.", "kind": 0}]
    # model and processing_class as loaded objects; the tokenizer's pad token changed in memory
    tok = AutoTokenizer.from_pretrained(tiny_qwen2)
    assert tok.pad_token == "<|im_end|>"
    tok.pad_token = "<|endoftext|>"
    trainer = GRPOTrainer(model=AutoModelForCausalLM.from_pretrained(tiny_qwen2), processing_class=tok,
                          reward_funcs=[accuracy_reward, lambda completions, **kw: [0.5] * len(completions)],
                          args=args, train_dataset=[{"prompt": p, "kind": i % 2} for i, p in enumerate(PROMPTS)],
                          eval_dataset=evals)
    trainer.train()
    assert trainer._trainer.tokenizer.pad_token == "<|endoftext|>"  # what trained is the object given
    assert calls and all(len(c) == 4 for c in calls)  # 2 prompts x 2 completions per call
    row = next(r for r in trainer.state.log_history if "loss" in r)
    assert row["rewards/<lambda>/mean"] == 0.5
    assert row["rewards/accuracy_reward/mean"] == pytest.approx(sum(map(sum, calls[:1])) / 4)
    # Nothing held out of train_dataset; evaluation is the eval_dataset's two rows.
    assert len(trainer._trainer.train_rows) == 4 and len(trainer._trainer.evaluation.test_rows) == 2
    ev = trainer.evaluate()
    assert ev["eval_n"] == 2 and ev["eval_accuracy"] == 0.5  # accuracy_reward judges: the row with kind 1


# ---- 6. TRL's mini-R1 Countdown recipe with `r1zero train --config` -----------------------------------

MINI_R1 = """\
# Model arguments
model_name_or_path: {model}
model_revision: main
torch_dtype: bfloat16
attn_implementation: flash_attention_2
bf16: true
tf32: true
output_dir: {out}

# Dataset arguments
dataset_id_or_path: {data}

# Training arguments
max_steps: 450
per_device_train_batch_size: 1
gradient_accumulation_steps: 8
gradient_checkpointing: true
gradient_checkpointing_kwargs:
  use_reentrant: false
learning_rate: 5.0e-7
lr_scheduler_type: cosine
warmup_ratio: 0.03
# GRPO specific parameters
beta: 0.001
max_prompt_length: 256
max_completion_length: 1024
num_generations: 8
use_vllm: true
vllm_device: "cuda:3"
vllm_gpu_memory_utilization: 0.5

# Logging arguments
logging_strategy: steps
logging_steps: 2
report_to:
- tensorboard
save_strategy: "steps"
save_steps: 25
seed: 42

# Hugging Face Hub
push_to_hub: true
hub_strategy: every_save
"""


def test_mini_r1_recipe_trains_one_step_with_r1zero_train(tiny_qwen2, tmp_path):
    data = tmp_path / "countdown.jsonl"
    data.write_text("".join(json.dumps({"target": 10 + i, "nums": [i + 1, 9, 1]}) + "\n" for i in range(40)))
    recipe = tmp_path / "grpo-qwen-2.5-3b-deepseek-r1-countdown.yaml"
    recipe.write_text(MINI_R1.format(model=tiny_qwen2, out=tmp_path / "run", data=data))
    # max_steps / max_completion_length for a test's time; the 8 test rows from the file's end.
    r = subprocess.run([sys.executable, "-m", "r1zero", "train", "--config", str(recipe), "max_steps=1",
                        "max_completion_length=8", "test_size=8"],
                       capture_output=True, text=True, timeout=600, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert r.returncode == 0, r.stderr[-3000:]
    for key in ("model_revision", "torch_dtype", "attn_implementation", "tf32", "gradient_checkpointing_kwargs",
                "use_vllm", "vllm_device", "vllm_gpu_memory_utilization", "logging_strategy", "save_strategy",
                "push_to_hub", "hub_strategy"):
        assert len([line for line in r.stderr.splitlines() if f"'{key}'" in line]) == 1, key
    saved = yaml.safe_load((tmp_path / "run" / "config.yaml").read_text())
    # TRL's 1 x 8 x 1 process: 8 completions per generation = 1 prompt of 8, one optimizer step
    assert (saved["prompts_per_step"], saved["micro_batch_size"], saved["mini_batch_prompts"]) == (1, 1, None)
    assert saved["dataset_name"] == str(data) and saved["per_device_train_batch_size"] is None
    rows = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [row["step"] for row in rows if "loss" in row] == [1]
    assert (tmp_path / "run" / "checkpoint-1").is_dir()


# ---- r1zero's recipes keep their batch -------------------------------------------------------------

@pytest.mark.parametrize("recipe, batch", [
    # (prompts_per_step, mini_batch_prompts, micro_batch_size, num_iterations), as before TRL's keys took their TRL meaning
    ("countdown-smollm2-cpu", (4, None, 32, 1)),
    ("countdown-datawhale", (8, None, 4, 1)),
    ("countdown-tinyzero-grpo", (128, 64, 16, 1)),
    ("countdown-tinyzero-ppo", (256, 128, 8, 1)),
    ("gsm8k-qwen0.5b-instruct", (4, None, 16, 1)),
])
def test_recipes_keep_their_batch(recipe, batch):
    c = load_config(recipe)
    assert (c.prompts_per_step, c.mini_batch_prompts, c.micro_batch_size, c.num_iterations) == batch
    assert c.per_device_train_batch_size is None and c.sampling_batch_size is None
