"""Config loading: YAML + key=value overrides, refusal of unknown keys and bad types in one line."""
import subprocess
import sys

import pytest
import yaml
from conftest import REPO

from r1zero.config import ConfigError, TrainConfig, config_reference, load_config, parse_override, recipe_names


def write(tmp_path, text):
    p = tmp_path / "r.yaml"
    p.write_text(text)
    return str(p)


def test_defaults_and_overrides(tmp_path):
    path = write(tmp_path, "learning_rate: 1e-6\nbeta: 0.001\nreport_to: [tensorboard]\n")
    c = load_config(path, ["num_generations=4", "epsilon_high=0.28", "report_to=wandb", "eval_limit=null",
                           "scale_rewards=false", "task_args={min_numbers: 2}"])
    assert c.learning_rate == 1e-6 and isinstance(c.learning_rate, float)  # YAML's "1e-6" string fixed
    assert c.beta == 0.001
    assert c.num_generations == 4
    assert c.epsilon_high == 0.28
    assert c.report_to == ["wandb"]
    assert c.eval_limit is None
    assert c.scale == "none"
    assert c.task_args == {"min_numbers": 2}


def test_int_for_float_is_accepted():
    assert TrainConfig(learning_rate=1).learning_rate == 1.0


@pytest.mark.parametrize("text, needle", [
    ("learning_rat: 1e-6\n", "unknown key 'learning_rat'; did you mean 'learning_rate'?"),
    ("num_generations: four\n", "'num_generations' must be int, got 'four'"),
    ("num_generations: 2.5\n", "'num_generations' must be int"),
    ("bf16: yes-please\n", "'bf16' must be bool or 'auto' or null"),
    ("loss_type: ppo\n", "'loss_type' must be 'grpo' | 'bnpo' | 'dr_grpo' | 'dapo'"),
    ("learning_rate: -1.0\n", "'learning_rate' must be a positive number"),
    ("num_generations: 1\n", "'num_generations' must be >= 2 when scale_rewards is 'group'"),
    ("mini_batch_prompts: 3\nprompts_per_step: 8\n", "'mini_batch_prompts' must divide prompts_per_step (8)"),
    ("report_to: [mlflow]\n", "'report_to' entry 'mlflow'"),
    ("temperature: 0\n", "'temperature' must be > 0"),
    ("- a\n- b\n", "must be a mapping"),
    ("a: [\n", "not valid YAML"),
])
def test_bad_recipes_are_refused_with_one_line(tmp_path, text, needle):
    with pytest.raises(ConfigError) as e:
        load_config(write(tmp_path, text))
    msg = str(e.value)
    assert needle in msg
    assert "\n" not in msg


def test_bad_override():
    with pytest.raises(ConfigError, match="unknown key 'nope'"):
        load_config(None, ["nope=1"])
    with pytest.raises(ConfigError, match="key=value"):
        load_config(None, ["learning_rate"])
    assert parse_override("x=1e-6") == ("x", 1e-6)
    assert parse_override("x=[a, b]") == ("x", ["a", "b"])


def test_every_packaged_recipe_loads():
    names = recipe_names()
    for required in ("countdown-tinyzero-grpo", "countdown-datawhale", "gsm8k-qwen0.5b-instruct", "countdown-smollm2-cpu"):
        assert required in names
    for name in names:
        c = load_config(name)
        assert isinstance(c, TrainConfig)


def test_reference_mentions_every_key():
    ref = config_reference()
    for key in TrainConfig.__dataclass_fields__:
        assert f"`{key}`" in ref
    for f in TrainConfig.__dataclass_fields__.values():
        assert f.metadata["help"], f.name


def test_docs_config_reference_is_current():
    # docs/CONFIG.md is generated: `r1zero train --help-config > docs/CONFIG.md` after changing a key.
    doc = (REPO / "docs" / "CONFIG.md").read_text(encoding="utf-8")
    assert doc.rstrip("\n") == config_reference().rstrip("\n")


def test_cli_refuses_before_any_work(tmp_path):
    out = tmp_path / "run"
    r = subprocess.run([sys.executable, "-m", "r1zero", "train", f"output_dir={out}", "learning_rat=1"],
                       capture_output=True, text=True)
    assert r.returncode == 2
    lines = [line for line in r.stderr.splitlines() if line.strip()]
    assert lines == ["r1zero: error: override: unknown key 'learning_rat'; did you mean 'learning_rate'?"]
    assert not out.exists()


def test_a_refused_config_does_not_import_the_compiler(tmp_path):
    # torch._dynamo costs about 1 s of start-up; a refusal is a user's fastest feedback and a
    # training process imports it only if it compiles (r1zero.rollout.engine looks it up lazily).
    out = tmp_path / "run"
    r = subprocess.run([sys.executable, "-X", "importtime", "-m", "r1zero", "train", f"output_dir={out}",
                        "num_generations=0"], capture_output=True, text=True)
    assert r.returncode == 2
    assert "r1zero: error: config: 'num_generations' must be at least 1" in r.stderr.splitlines()
    imported = {line.split("|")[-1].strip() for line in r.stderr.splitlines() if line.startswith("import time:")}
    assert {"torch", "r1zero.rollout.engine"} <= imported
    assert "torch._dynamo" not in imported


def test_saved_config_round_trips(tmp_path):
    from r1zero.config import save_config

    c = load_config(None, ["beta=0.01"])
    save_config(c, tmp_path / "config.yaml")
    raw = yaml.safe_load((tmp_path / "config.yaml").read_text())
    assert TrainConfig(**raw) == c


def test_packaged_recipes_resolve_from_a_source_checkout_on_pythonpath(tmp_path):
    # A checkout run with PYTHONPATH (benchmarks/default_seeds.py in a second worktree, or no install
    # at all) has no r1zero.configs package: the checkout's own configs/ folder serves the recipes.
    import shutil
    import subprocess
    import sys
    from pathlib import Path

    repo = Path(__file__).resolve().parent.parent
    shutil.copytree(repo / "r1zero", tmp_path / "r1zero", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copytree(repo / "configs", tmp_path / "configs")
    shutil.copy(repo / "pyproject.toml", tmp_path)
    out = subprocess.run(
        [sys.executable, "-c", "import r1zero.config as c; print(c.recipe_path('countdown-smollm2-cpu')); "
                               "print(len(c.recipe_names()))"],
        cwd=tmp_path, env={"PYTHONPATH": str(tmp_path), "PATH": "/usr/bin:/bin"}, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    path, count = out.stdout.split()
    assert Path(path) == tmp_path / "configs" / "countdown-smollm2-cpu.yaml"
    assert int(count) == len(list((repo / "configs").glob("*.yaml")))


def test_overriding_the_task_drops_the_recipes_task_keys():
    # The default recipe's countdown task_args/template/reward would be refused by gsm8k.
    cfg = load_config(None, ["task=gsm8k"])
    assert (cfg.task, cfg.task_args, cfg.template, cfg.reward) == ("gsm8k", {}, None, None)
    assert cfg.model_name_or_path == load_config(None).model_name_or_path  # the rest of the recipe stays
    cfg = load_config(None, ["task=gsm8k", "reward=numeric"])
    assert cfg.reward == "numeric"
    same = load_config(None, ["task=countdown"])  # the recipe's own task: nothing dropped
    assert same.task_args == load_config(None).task_args and same.template == "chat-answer"
