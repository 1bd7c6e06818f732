"""LoRA through peft (``use_peft`` and the ``lora_*`` keys, TRL's ModelConfig names).

peft injects the adapter into the loaded model in place: every targeted linear layer W becomes
``W x + s B A x`` (s = lora_alpha / lora_r, or / sqrt(lora_r) with use_rslora; B starts at 0, so
training starts from the base model exactly), and ``lora_modules_to_save`` get a trainable copy.
The trainer keeps working with that same Hugging Face model object; only the adapter and those
copies require gradients, so the optimizer, gradient clipping, DDP and FSDP2 see only them. What
LoRA changes elsewhere:

* reference: the KL term's log-probs come from the policy itself inside peft's
  ``disable_adapter()``: the frozen base weights, exactly the model the run started from, with no
  second copy of the model (``reference``).
* sampling: rollouts and evaluations run a plain model (no adapter layers) whose adapted weights
  are the merged ``W + s B A`` (``LoraPolicy.sampler``): in the sampling dtype (bf16 when bf16 is
  on: the copy r1zero.rollout.weights makes for a full model) or, in fp32, a model that shares
  every frozen weight with the policy and holds only the merged layers. It is refreshed after
  each update by one small matmul per adapted layer. On the 2-core CPU of benchmarks/RESULTS.md
  decoding with the merged weights was faster than running the unmerged adapter at every step
  (the table "LoRA sampling: merged vs unmerged"). Under FSDP the rollout runs the gathered,
  unmerged model (a merged copy would need the whole model on one rank).
* checkpoints: the adapter in peft's format in ``checkpoint-N/adapter/`` (adapter_config.json +
  adapter_model.safetensors, loadable with ``peft.PeftModel.from_pretrained`` onto the base) next
  to the trainer state; the last one also the merged model in the checkpoint folder itself
  (loadable with ``AutoModelForCausalLM.from_pretrained``, no peft needed, as a full run's). A resume loads the base from ``model_name_or_path`` and the adapter from the checkpoint.
"""
from __future__ import annotations

import json
import logging
from pathlib import Path

import torch

from r1zero.errors import ConfigError, need
from r1zero.rollout.weights import cast_param, copy_module
from r1zero.training import distributed as dist

log = logging.getLogger("r1zero")

ADAPTER = "default"  # peft's name of the one adapter
# The adapter's sub-folder of a checkpoint. Not the checkpoint folder itself: transformers'
# from_pretrained loads an adapter_config.json it finds next to config.json on top of those weights,
# which would apply the adapter twice to the merged model of the last checkpoint.
ADAPTER_DIR = "adapter"
ADAPTER_CONFIG = "adapter_config.json"
ADAPTER_WEIGHTS = "adapter_model.safetensors"
ALL_LINEAR = "all-linear"
_PEFT_PREFIX = "base_model.model."  # PeftModel's state-dict keys, around the Hugging Face model's
_LORA_KEYS = ("r", "lora_alpha", "use_rslora")  # compared with a resumed checkpoint's adapter_config.json
_CFG_KEY = {"r": "lora_r", "lora_alpha": "lora_alpha", "use_rslora": "use_rslora",
            "target_modules": "lora_target_modules", "modules_to_save": "lora_modules_to_save"}


# ---- before the weights load ----------------------------------------------------------------------

def check(cfg, resume_from: Path | None) -> None:
    """Refuse what can be refused before the weights load: a checkpoint of the other kind (LoRA or
    full), and LoRA modules that the model (built from its config on the meta device) lacks."""
    if resume_from is not None:
        saved = (Path(resume_from) / ADAPTER_DIR / ADAPTER_CONFIG).is_file()
        need(saved or not cfg.use_peft, "use_peft", f"is on but {resume_from} holds no LoRA adapter "
             f"({ADAPTER_DIR}/{ADAPTER_CONFIG}); resume it with use_peft=false, or start a new output_dir")
        need(cfg.use_peft or not saved, "use_peft", f"is off but {resume_from} holds a LoRA adapter; "
             "resume it with use_peft=true and the same lora_* keys")
    if not cfg.use_peft:
        if any(getattr(cfg, k) is not None for k in ("lora_target_modules", "lora_modules_to_save")):
            log.warning("lora_target_modules / lora_modules_to_save are ignored: use_peft is false")
        return
    from transformers import AutoConfig, AutoModelForCausalLM

    from r1zero.models import resolve_model_path

    path = resolve_model_path(cfg.model_name_or_path)
    config = AutoConfig.from_pretrained(path, trust_remote_code=cfg.trust_remote_code)
    with torch.device("meta"):  # module names and types, no weights
        model = AutoModelForCausalLM.from_config(config, trust_remote_code=cfg.trust_remote_code)
    check_modules(model, cfg)


def _linear_types() -> tuple[type, ...]:
    from transformers.pytorch_utils import Conv1D  # GPT-2's linear layers

    return torch.nn.Linear, Conv1D


def check_modules(model, cfg) -> None:
    """``lora_target_modules`` must name linear layers of ``model`` and ``lora_modules_to_save`` modules
    of it (peft's matching rules); one line naming the key, what is missing and what there is."""
    from peft.utils.constants import TRANSFORMERS_MODELS_TO_LORA_TARGET_MODULES_MAPPING as DEFAULTS

    linear = _linear_types()
    names = {n: m for n, m in model.named_modules() if n}
    kinds = sorted({n.rsplit(".", 1)[-1] for n, m in names.items() if isinstance(m, linear)})
    arch = type(model).__name__
    # A trained copy of, or an adapter on, an embedding the model ties to its head would untie them.
    tied = {n for n, m in names.items() if getattr(model.config, "tie_word_embeddings", False)
            and m in (model.get_input_embeddings(), model.get_output_embeddings())}
    tie_note = f"is tied to the {arch}'s other embedding (tie_word_embeddings): training it alone would untie them"
    targets = target_modules(cfg)
    if targets is None:
        need(model.config.model_type in DEFAULTS, "lora_target_modules",
             f"null takes peft's default, and peft has none for model type '{model.config.model_type}' ({arch}); "
             f"name them, e.g. [all-linear] or some of: {', '.join(kinds)}")
    elif targets != ALL_LINEAR:
        for t in targets:
            hit = [n for n in names if n == t or n.endswith("." + t)]
            need(bool(hit) and all(isinstance(names[n], linear) for n in hit), "lora_target_modules",
                 f"{t!r} {'is not a linear layer' if hit else 'names no module'} of {arch}; its linear layers: "
                 f"{', '.join(kinds)}")
            need(not set(hit) & tied, "lora_target_modules", f"{t!r} {tie_note}; remove it")
    for t in cfg.lora_modules_to_save or []:
        hit = [n for n in names if n.endswith(t)]
        need(bool(hit), "lora_modules_to_save", f"{t!r} names no module of {arch}; e.g. lm_head, model.norm")
        need(not set(hit) & tied, "lora_modules_to_save", f"{t!r} {tie_note}; remove it")


def target_modules(cfg):
    """The config's targets as peft takes them: None (peft's default), 'all-linear', or a list."""
    t = cfg.lora_target_modules
    return ALL_LINEAR if t == [ALL_LINEAR] else t


def lora_config(cfg):
    from peft import LoraConfig

    return LoraConfig(task_type=cfg.lora_task_type, r=cfg.lora_r, lora_alpha=cfg.lora_alpha,
                      lora_dropout=cfg.lora_dropout, target_modules=target_modules(cfg), bias="none",
                      use_rslora=cfg.use_rslora, modules_to_save=cfg.lora_modules_to_save)


# ---- the adapter on the policy ------------------------------------------------------------------

def attach(model, cfg, resume_from: Path | None = None) -> "LoraPolicy":
    """Inject the adapter into ``model`` (in place; the base weights frozen) and, on a resume, load
    the checkpoint's adapter weights into it."""
    from peft import get_peft_model

    check_modules(model, cfg)  # a model built otherwise than from the config `check` read
    peft_model = get_peft_model(model, lora_config(cfg))
    policy = LoraPolicy(peft_model)
    if resume_from is not None:
        policy.load(Path(resume_from))
    n_train = sum(p.numel() for p in model.parameters() if p.requires_grad)
    log.info("LoRA: %d trainable parameters of %d (%s)", n_train, sum(p.numel() for p in model.parameters()),
             ", ".join(sorted(policy.peft_config.target_modules)))
    return policy


def reference(policy: "LoraPolicy | None"):
    """The context in which the policy computes the reference log-probs: the adapter disabled
    (peft's ``disable_adapter``), the base weights alone; a no-op without LoRA."""
    import contextlib

    return policy.peft.disable_adapter() if policy is not None else contextlib.nullcontext()


def merged_weight(state: dict, name: str, scaling: float, fan_in_fan_out: bool) -> torch.Tensor:
    """``W + s B A`` of adapted layer ``name`` from a state dict of the adapted model, in the order
    of operations of peft's own merge (``get_delta_weight``), so it equals ``merge_and_unload``'s."""
    delta = state[f"{name}.lora_B.{ADAPTER}.weight"] @ state[f"{name}.lora_A.{ADAPTER}.weight"]
    delta = (delta.T if fan_in_fan_out else delta) * scaling
    return state[f"{name}.base_layer.weight"] + delta


class LoraPolicy:
    """The adapter on the policy: ``peft`` is the PeftModel, ``model`` the Hugging Face model it
    adapts in place (what the trainer trains, samples with and wraps for DDP / FSDP)."""

    def __init__(self, peft_model):
        from peft.tuners.lora import LoraLayer
        from peft.utils.other import ModulesToSaveWrapper

        self.peft = peft_model
        self.model = peft_model.get_base_model()
        self.peft_config = peft_model.peft_config[ADAPTER]
        mods = dict(self.model.named_modules())
        # name -> (scaling, fan_in_fan_out) of every adapted layer; the modules_to_save wrappers.
        self.layers = {n: (m.scaling[ADAPTER], m.fan_in_fan_out) for n, m in mods.items() if isinstance(m, LoraLayer)}
        self.saved = [n for n, m in mods.items() if isinstance(m, ModulesToSaveWrapper)]
        self._sampler: dict | None = None

    # ---- weights ----------------------------------------------------------------------------------
    def merged_state_dict(self, state: dict | None = None) -> dict[str, torch.Tensor]:
        """The plain model's weights (no adapter keys): each adapted layer merged, each module to save
        its trained copy. ``state``: the adapted model's state dict (gathered under FSDP), else its own."""
        state = self.model.state_dict() if state is None else state
        out = {}
        for k, v in state.items():
            if ".lora_" in k or ".original_module." in k:
                continue  # the adapter itself; the frozen original of a module to save
            out[k.replace(".base_layer.", ".").replace(f".modules_to_save.{ADAPTER}.", ".")] = v
        for name, (scaling, fifo) in self.layers.items():
            out[f"{name}.weight"] = merged_weight(state, name, scaling, fifo)
        return out

    def sampler(self, dtype: torch.dtype | None):
        """The model rollouts and evaluations sample with: a plain copy with the adapter merged,
        refreshed when the adapter changed since the last call (module docstring). Under FSDP the
        policy itself (its weights gathered for the rollout, the adapter unmerged)."""
        if dist.fsdp_modules(self.model):
            return self.model
        trained = [p for p in self.model.parameters() if p.requires_grad]
        sig = tuple((p._version, p.data_ptr()) for p in trained)
        s = self._sampler
        if s is None or s["dtype"] != dtype:
            s = self._sampler = self._build_sampler(dtype)
        if s["signature"] != sig:
            with torch.no_grad():
                state = self.model.state_dict()
                for name, (scaling, fifo) in self.layers.items():
                    s["merged"][name].copy_(merged_weight(state, name, scaling, fifo))
                for src, dst in s["copied"]:
                    dst.copy_(src)
            s["signature"] = sig
        return s["model"]

    def _build_sampler(self, dtype: torch.dtype | None) -> dict:
        """A deepcopy in which every adapter layer is replaced by its base layer (its weight a fresh
        tensor for the merged one) and every module to save by its trained copy. Parameters are cast
        to ``dtype``, or, without one, shared with the policy: frozen weights never change, and the
        trained copies of modules to save are the policy's own tensors."""
        merged_ids = {id(self.model.get_submodule(n).get_base_layer().weight) for n in self.layers}

        def param_for(p):
            if dtype is not None and p.is_floating_point() and p.dtype != dtype:
                return cast_param(p, dtype)
            return torch.nn.Parameter(p.detach().clone(), requires_grad=False) if id(p) in merged_ids else p

        twin = copy_module(self.model, param_for)
        merged = {}
        for name in self.layers:
            base = twin.get_submodule(name).get_base_layer()
            _replace(twin, name, base)
            merged[name] = base.weight
        copied = []
        for name in self.saved:
            trained, own = self.model.get_submodule(name).modules_to_save[ADAPTER], twin.get_submodule(name)
            copy = own.modules_to_save[ADAPTER]
            _replace(twin, name, copy)
            copied += [(a, b) for a, b in zip(trained.parameters(), copy.parameters()) if a is not b]
        twin.__dict__.pop("peft_config", None)
        return {"dtype": dtype, "model": twin, "merged": merged, "copied": copied, "signature": None}

    # ---- checkpoints --------------------------------------------------------------------------------
    def writer(self, merged: bool) -> "AdapterWriter":
        """What r1zero.training.checkpoint saves as the model: the adapter, and with ``merged`` the merged model."""
        return AdapterWriter(self, merged)

    def save(self, folder: Path, state: dict | None = None, merged: bool = False) -> None:
        """The adapter in peft's format into ``folder``/adapter (and with ``merged`` the merged Hugging
        Face model into ``folder``); ``state``: the adapted model's gathered state dict under FSDP."""
        self.save_adapter(folder / ADAPTER_DIR, state)
        if merged:
            self.model.save_pretrained(folder, safe_serialization=True, state_dict=self.merged_state_dict(state))

    def save_adapter(self, folder: Path, state: dict | None = None) -> None:
        """The adapter alone in peft's format (adapter_config.json + adapter_model.safetensors) into ``folder``."""
        self.peft.save_pretrained(str(folder), safe_serialization=True, save_embedding_layers=False,
                                  state_dict=None if state is None else {_PEFT_PREFIX + k: v for k, v in state.items()})

    def load(self, folder: Path) -> None:
        """The adapter weights of checkpoint ``folder`` (trained with the same lora_* settings: refused otherwise)."""
        from peft import set_peft_model_state_dict
        from safetensors.torch import load_file

        folder = folder / ADAPTER_DIR
        saved = json.loads((folder / ADAPTER_CONFIG).read_text(encoding="utf-8"))
        now = self.peft_config.to_dict()
        for key in (*_LORA_KEYS, "target_modules", "modules_to_save"):
            a, b = saved.get(key), now.get(key)
            if key in ("target_modules", "modules_to_save"):
                a, b = sorted(a or []), sorted(b or [])
            if a != b:
                raise ConfigError(f"config: '{_CFG_KEY[key]}' gives {b} but {folder} was trained with {a}; resume "
                                  "with the same LoRA settings or start a new output_dir")
        result = set_peft_model_state_dict(self.peft, load_file(str(folder / ADAPTER_WEIGHTS)), adapter_name=ADAPTER)
        missing = [k for k in result.missing_keys if ".lora_" in k or ".modules_to_save." in k]
        if missing or result.unexpected_keys:
            raise ConfigError(f"config: 'resume_from_checkpoint' {folder / ADAPTER_WEIGHTS} does not fit the "
                              f"adapter ({len(missing)} missing, {len(result.unexpected_keys)} unexpected weights)")


class AdapterWriter:
    """``save_pretrained`` as r1zero.training.checkpoint.save_checkpoint calls it on a model."""

    def __init__(self, policy: LoraPolicy, merged: bool):
        self.policy, self.merged = policy, merged

    def save_pretrained(self, folder, safe_serialization: bool = True, state_dict: dict | None = None) -> None:
        self.policy.save(Path(folder), state_dict, merged=self.merged)


def _replace(root: torch.nn.Module, name: str, module: torch.nn.Module) -> None:
    parent, _, child = name.rpartition(".")
    setattr(root.get_submodule(parent) if parent else root, child, module)
