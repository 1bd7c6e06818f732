"""The models of a run and of an evaluation, set up one way for ``train``, ``eval`` and ``compare``:
the policy a run trains, its reference model and where that one's weights live between uses, and
the frozen model that answers an evaluation's prompts with its tokenizer, EOS ids and precision.

What only training adds on top (the LoRA adapter, DDP / FSDP2 wrapping, the reference's log-prob
pass) is the training stage's: r1zero.training.trainer and r1zero.training.logprobs.Reference.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import torch

from r1zero.models import autocast_dtype, choose_device, eos_token_ids, load_model, load_tokenizer


@dataclass
class Generator:
    """A model ready to answer prompts: what ``r1zero eval`` and ``compare`` load, set up as training does."""

    model: Any
    tokenizer: Any
    eos_ids: list[int]
    device: torch.device
    autocast_dtype: torch.dtype | None


def load_generator(name_or_path: str, device: str | torch.device = "auto", *, bf16: bool | None = None,
                   tokenizer: str | None = None, trust_remote_code: bool = False,
                   check: Callable[[Any], object] | None = None) -> Generator:
    """Tokenizer, frozen model, every EOS id and the precision of ``name_or_path``. ``check`` is called
    with the tokenizer before the weights load, so what it refuses (an evaluation's prompt that does
    not fit: r1zero.observe.evaluate.Evaluation.check_prompts) is refused without loading them."""
    dev = choose_device(device) if isinstance(device, str) else device
    tok = load_tokenizer(name_or_path, trust_remote_code, tokenizer=tokenizer)
    if check is not None:
        check(tok)
    model = load_model(name_or_path, dev, trust_remote_code=trust_remote_code, trainable=False)
    return Generator(model, tok, eos_token_ids(tok, model), dev, autocast_dtype(bf16, dev))


def load_policy(cfg, device: torch.device, resume_from: Path | None):
    """The model a run trains (r1zero.config.TrainConfig ``cfg``), loaded after seeding torch with
    ``seed`` (so what the loading and the adapter draw is the same every time): the checkpoint's
    weights on a resume, except with LoRA, which starts from the base weights (the checkpoint holds
    the adapter, r1zero.training.lora)."""
    torch.manual_seed(cfg.seed)
    source = cfg.model_name_or_path if cfg.use_peft else resume_from or cfg.model_name_or_path
    return load_model(str(source), device, trust_remote_code=cfg.trust_remote_code)


@dataclass(frozen=True)
class ReferencePlacement:
    """Where the reference model's weights live. With ``ref_model_offload`` they stay in CPU memory
    between its log-prob passes: in one process (or under DDP) r1zero moves the model to the run's
    device for each pass and back (``moved``); sharded (FSDP2), FSDP's CPU offload keeps the shards
    there and moves them itself (asked on a GPU by ``ref_model_offload`` or ``fsdp_cpu_offload``)."""

    device: torch.device     # where the weights are loaded
    moved: bool              # moved to the run's device for each pass (r1zero.training.logprobs.on_device)
    fsdp_cpu_offload: bool   # FSDP2's CPU offload of the shards (only read when sharded)

    @classmethod
    def of(cls, cfg, device: torch.device, sharded: bool) -> ReferencePlacement:
        moved = cfg.ref_model_offload and not sharded  # sharded: FSDP offloads by itself
        return cls(torch.device("cpu") if moved else device, moved,
                   device.type == "cuda" and (cfg.fsdp_cpu_offload or cfg.ref_model_offload))


def load_reference(cfg, placement: ReferencePlacement):
    """The frozen reference model: always the starting model (``model_name_or_path``), also after a resume."""
    return load_model(cfg.model_name_or_path, placement.device, trust_remote_code=cfg.trust_remote_code,
                      trainable=False)
