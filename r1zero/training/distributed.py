"""Several processes: torchrun, DDP or FSDP2, distributed checkpoint, and the few collectives the
trainer needs.

``r1zero train`` alone is one process and everything here is a no-op. Under ``torchrun``
(``WORLD_SIZE`` > 1):

* every rank draws the same global batch of prompts and keeps its share (``prompt_share``): each
  mini-batch of ``mini_batch_prompts`` prompts is cut into equal contiguous pieces, one per rank,
  so a prompt's group of completions stays on one rank and every rank's k-th mini-batch is a piece
  of the single-process run's k-th mini-batch;
* samples are keyed by the prompt's index in the global batch (r1zero.rollout.engine), so they do
  not depend on the number of processes;
* rewards and per-sample facts are gathered, so advantages (batch scaling included) and metrics
  see the whole step on every rank;
* the weights are replicated (``distributed: ddp``) or sharded (``distributed: fsdp``, PyTorch's
  ``fully_shard`` per decoder layer plus the root). The gradient reduction averages over ranks, so
  each rank back-propagates ``world_size`` x its share of the global loss (r1zero.training.trainer);
* optimizer state is saved with ``torch.distributed.checkpoint`` (each rank writes its own shards)
  and the model as one Hugging Face folder written by rank 0.

NCCL is used on GPUs, gloo on CPUs.
"""
from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist

from r1zero.config.batch import env_world_size
from r1zero.errors import ConfigError

MODES = ("ddp", "fsdp")


@dataclass(frozen=True)
class DistEnv:
    """Where this process stands: its rank among ``world_size`` processes."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0




def init(device: str = "auto") -> DistEnv:
    """Join the process group torchrun describes in the environment; a no-op for one process.

    ``device`` is the config's device: 'cpu' (or no GPU at all) selects gloo, else NCCL with one GPU
    per local rank, plus gloo for tensors on the CPU (process_group_backend).
    """
    world = env_world_size()
    if world <= 1:
        return DistEnv()
    rank, local = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    use_cuda = device != "cpu" and torch.cuda.is_available()
    if not dist.is_initialized():
        if use_cuda:
            torch.cuda.set_device(local)
        dist.init_process_group(process_group_backend(use_cuda))
    return DistEnv(rank=rank, world_size=world, local_rank=local)


def process_group_backend(use_cuda: bool) -> str:
    """gloo on CPU; on GPUs NCCL for CUDA tensors and gloo for CPU ones: with fsdp_cpu_offload the
    shards, their gradients (clip_grad_norm_) and the full-state export are CPU tensors, which NCCL
    alone cannot reduce (torchtune's choice too)."""
    return "cpu:gloo,cuda:nccl" if use_cuda else "gloo"


def current() -> DistEnv:
    """The DistEnv of an initialised process group (one process when there is none)."""
    if not (dist.is_available() and dist.is_initialized()):
        return DistEnv()
    return DistEnv(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", "0")))


def cleanup(env: DistEnv) -> None:
    if env.enabled and dist.is_initialized():
        dist.destroy_process_group()


def device_for(env: DistEnv, device: torch.device) -> torch.device:
    """One GPU per local rank; CPU stays CPU."""
    if env.enabled and device.type == "cuda":
        return torch.device("cuda", env.local_rank)
    return device


def check_config(cfg, env: DistEnv) -> None:
    """What torchrun needs of a config, refused before any model loads."""
    if not env.enabled:
        return
    mini = cfg.mini_batch_prompts or cfg.prompts_per_step
    key = "mini_batch_prompts" if cfg.mini_batch_prompts else "prompts_per_step"
    if mini % env.world_size:
        raise ConfigError(f"config: '{key}' ({mini}) must be divisible by the {env.world_size} processes; "
                          f"use a multiple of {env.world_size}")


# ---- who does what ---------------------------------------------------------------------------

def prompt_share(n_prompts: int, mini_prompts: int, env: DistEnv) -> list[int]:
    """Indices (in the global batch) of the prompts this rank generates, scores and trains on.

    Each mini-batch of ``mini_prompts`` prompts is split into ``world_size`` equal contiguous
    pieces and rank r takes the r-th piece of every mini-batch (divisibility is checked with the
    config, ``check_config``). A last, shorter mini-batch (dynamic sampling's shortfall: a multiple
    of world_size prompts) is split the same way.
    """
    out = []
    for m in range(0, n_prompts, mini_prompts):
        k = min(mini_prompts, n_prompts - m) // env.world_size
        out += [m + env.rank * k + j for j in range(k)]
    return out


def row_share(n: int, env: DistEnv) -> slice:
    """This rank's contiguous share of ``n`` items (the last ranks get one fewer when uneven)."""
    per, extra = divmod(n, env.world_size)
    start = env.rank * per + min(env.rank, extra)
    return slice(start, start + per + (env.rank < extra))


# ---- collectives -----------------------------------------------------------------------------

def _comm_device() -> torch.device:
    if "nccl" in dist.get_backend():  # "cpu:gloo,cuda:nccl": the collectives here run on the GPU
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def all_sum(values: list[float], env: DistEnv) -> list[float]:
    """Element-wise sum over ranks of a list of numbers (float64, so token counts stay exact)."""
    if not env.enabled:
        return [float(v) for v in values]
    t = torch.tensor([float(v) for v in values], dtype=torch.float64, device=_comm_device())
    dist.all_reduce(t)
    return t.cpu().tolist()


def gather(obj: Any, env: DistEnv) -> list[Any]:
    """Every rank's ``obj`` (picklable), in rank order, on every rank."""
    if not env.enabled:
        return [obj]
    out: list[Any] = [None] * env.world_size
    dist.all_gather_object(out, obj)
    return out


def broadcast(obj: Any, env: DistEnv) -> Any:
    """Rank 0's ``obj`` on every rank."""
    if not env.enabled:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def barrier(env: DistEnv) -> None:
    if env.enabled:
        dist.barrier()


# ---- wrapping ----------------------------------------------------------------------------------

def wrap(module: torch.nn.Module, mode: str, env: DistEnv, *, cpu_offload: bool = False,
         trainable: bool = True, param_dtype: torch.dtype | None = None) -> torch.nn.Module:
    """DDP or FSDP2 around ``module`` (returned unchanged for one process).

    ``module`` is r1zero.training.logprobs.CompletionLogprobs around a Hugging Face model. FSDP2 shards every
    decoder layer and then the root, the layout PyTorch recommends for transformers;
    ``cpu_offload`` keeps the shards (and their optimizer state) in CPU memory. A frozen model
    (``trainable=False``, the reference model) is left unwrapped under DDP: it has no gradients to
    average. ``param_dtype`` (bf16 runs): FSDP2's mixed precision, the gathered weights in that dtype
    (half the all-gather traffic, and rollouts run them as they are), gradients reduced in float32
    into the float32 shards the optimizer updates.
    """
    if not env.enabled:
        return module
    if mode == "ddp":
        if not trainable:
            return module
        from torch.nn.parallel import DistributedDataParallel as DDP

        dev = next(module.parameters()).device
        return DDP(module, device_ids=[dev.index] if dev.type == "cuda" else None)
    if mode == "fsdp":
        from torch.distributed.fsdp import CPUOffloadPolicy, MixedPrecisionPolicy, fully_shard

        kw: dict[str, Any] = {"offload_policy": CPUOffloadPolicy()} if cpu_offload else {}
        if param_dtype is not None:
            kw["mp_policy"] = MixedPrecisionPolicy(param_dtype=param_dtype, reduce_dtype=torch.float32)
        # Layers free their gathered weights after forward; the root (embeddings, norm, head) keeps
        # them, since the backward pass needs them again at once.
        for layer in decoder_layers(module):
            fully_shard(layer, reshard_after_forward=True, **kw)
        fully_shard(module, reshard_after_forward=False, **kw)
        # FSDP2 makes the first module to run forward the root. Generation calls the Hugging Face
        # model inside, so make this wrapper the root now (FSDP's own lazy init, done by hand).
        module._get_fsdp_state()._lazy_init()
        return module
    raise ValueError(f"distributed must be one of {MODES}, got {mode!r}")


def decoder_layers(module: torch.nn.Module) -> list[torch.nn.Module]:
    """The repeated blocks of a Hugging Face causal LM (``model.layers`` for Llama/Qwen/Mistral,
    ``transformer.h`` for GPT-2 style models), found under ``module``."""
    for name, sub in module.named_modules():
        if isinstance(sub, torch.nn.ModuleList) and name.endswith(("model.layers", "transformer.h")):
            return list(sub)
    return []


def fsdp_modules(module: torch.nn.Module) -> list[torch.nn.Module]:
    from torch.distributed.fsdp import FSDPModule

    return [m for m in module.modules() if isinstance(m, FSDPModule)]


@contextlib.contextmanager
def full_weights(module: torch.nn.Module):
    """Inside, an FSDP-sharded ``module`` holds its full weights and runs any number of forwards
    without communication: generation takes a different number of decode steps on each rank, so
    it must not all-gather per step. A no-op for DDP and one process."""
    sharded = fsdp_modules(module)
    if not sharded:
        yield
        return
    for m in sharded:
        m.unshard()
        m.set_reshard_after_forward(False, recurse=False)
    try:
        yield
    finally:
        for m in sharded:
            m.set_reshard_after_forward(m is not module, recurse=False)  # as wrap() set it
            m.reshard()


@contextlib.contextmanager
def grad_sync(module: torch.nn.Module, enabled: bool):
    """Skip the gradient all-reduce (DDP) or reduce-scatter (FSDP2) of this backward when
    ``enabled`` is False: micro-batches before a mini-batch's last only accumulate locally."""
    if enabled:
        yield
        return
    if hasattr(module, "no_sync"):  # DDP
        with module.no_sync():
            yield
        return
    sharded = fsdp_modules(module)
    for m in sharded:
        m.set_requires_gradient_sync(False, recurse=False)
    try:
        yield
    finally:
        for m in sharded:
            m.set_requires_gradient_sync(True, recurse=False)


# ---- checkpoints ---------------------------------------------------------------------------------

def full_state_dict(model: torch.nn.Module) -> dict[str, torch.Tensor] | None:
    """The whole Hugging Face model's weights on CPU when it is FSDP-sharded (every rank must call
    this: each sharded tensor is all-gathered), None otherwise (its own state_dict is whole)."""
    from torch.distributed.tensor import DTensor

    sd = model.state_dict()
    if not any(isinstance(v, DTensor) for v in sd.values()):
        return None
    return {k: (v.full_tensor() if isinstance(v, DTensor) else v).detach().cpu() for k, v in sd.items()}


def save_optimizer(module: torch.nn.Module, optimizer, path: Path) -> None:
    """Every rank writes its part of the optimizer state (torch.distributed.checkpoint) to ``path``."""
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.state_dict import get_optimizer_state_dict

    dcp.save({"optimizer": get_optimizer_state_dict(module, optimizer)}, checkpoint_id=str(path))


def load_optimizer(module: torch.nn.Module, optimizer, path: Path) -> None:
    """Read the optimizer state ``save_optimizer`` wrote (same world size) back into ``optimizer``."""
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.state_dict import get_optimizer_state_dict, set_optimizer_state_dict

    state = {"optimizer": get_optimizer_state_dict(module, optimizer)}
    dcp.load(state, checkpoint_id=str(path))
    set_optimizer_state_dict(module, optimizer, state["optimizer"])
