"""The weights the sampler runs: a bf16 copy of the fp32 policy, refreshed when the policy changes.

Under bf16 autocast an fp32 model gives fp32 keys and bf16 values (the rotary embedding is applied
in fp32), so one cache holds two dtypes: transformers 5.17's StaticCache allocates both buffers in
the key dtype and stops at the first prompt, later versions keep an fp32 K cache (twice the
memory). Autocast also re-casts every weight on every decode step. Sampling with bf16 weights,
without autocast, gives one dtype for compute, keys and values and casts nothing per step; the
fp32 master weights stay what the optimizer updates (the precision policy of issue 13).

The copy lives on the master model (not as a submodule, so ``state_dict`` is unchanged) and is
refreshed lazily: every in-place change of a parameter (optimizer step, ``load_state_dict``) bumps
its version counter, and a rollout whose master versions differ from the copy's copies the
weights in place first (one pass over the weights per update, same addresses for CUDA graphs).
"""
from __future__ import annotations

import copy

import torch

_COPY_ATTR = "_r1zero_rollout_copy"
# Per-model state kept in the module's __dict__ that a copy must not inherit.
_PRIVATE_ATTRS = ("_r1zero_rollout_copy", "_r1zero_compiled_decode", "_r1zero_static_caches",
                  "_r1zero_lean_decoder")


def _is_sharded(model) -> bool:
    from torch.distributed.fsdp import FSDPModule

    return any(isinstance(m, FSDPModule) for m in model.modules())


def _signature(model) -> tuple:
    return tuple((p._version, p.data_ptr(), p.device) for p in model.parameters())


def copy_module(model, param_for):
    """A deepcopy of ``model`` in eval mode whose parameter ``p`` is ``param_for(p)`` (a cast, a clone or
    ``p`` itself: no other copy of the weights is made; tied weights stay tied). Buffers (the rotary
    inv_freq) keep their dtype, as a model loaded in bf16 keeps them; the per-model state kept on
    ``model`` (its rollout copy, compiled decode step, static caches) is not copied."""
    memo = {}
    for p in model.parameters():
        if id(p) not in memo:
            memo[id(p)] = param_for(p)
    saved = {k: model.__dict__.pop(k) for k in _PRIVATE_ATTRS if k in model.__dict__}
    try:
        twin = copy.deepcopy(model, memo)
    finally:
        model.__dict__.update(saved)
    twin.eval()
    return twin


def cast_param(p: torch.nn.Parameter, dtype: torch.dtype) -> torch.nn.Parameter:
    """A frozen copy of ``p``, in ``dtype`` when it is floating point."""
    data = p.detach().to(dtype) if p.is_floating_point() else p.detach().clone()
    return torch.nn.Parameter(data, requires_grad=False)


def _make_copy(model, dtype: torch.dtype):
    # Every parameter pre-mapped to its cast: no second fp32 copy is made.
    return copy_module(model, lambda p: cast_param(p, dtype))


def rollout_model(model, dtype: torch.dtype | None):
    """(module to sample with, autocast dtype to sample under).

    ``dtype`` None, or weights already all in ``dtype``: the model itself, no autocast. An
    FSDP-sharded model (its weights gathered for the rollout) keeps autocast: a copy would need
    the whole model on one rank. Otherwise the cached ``dtype`` copy, refreshed if the model
    changed since the last rollout.
    """
    if dtype is None:
        return model, None
    floats = [p for p in model.parameters() if p.is_floating_point()]
    if all(p.dtype == dtype for p in floats):
        return model, None
    if _is_sharded(model):
        return model, dtype
    state = model.__dict__.get(_COPY_ATTR)
    sig = _signature(model)
    if state is None or state["dtype"] != dtype or any(
            a[2] != b[2] for a, b in zip(state["signature"], sig)):  # a device move: build anew
        twin = _make_copy(model, dtype)
        state = {"dtype": dtype, "twin": twin, "signature": sig,
                 "pairs": list(zip(model.parameters(), twin.parameters()))}
        object.__setattr__(model, _COPY_ATTR, state)
    elif state["signature"] != sig:
        with torch.no_grad():
            for master, low in state["pairs"]:
                low.copy_(master)
        state["signature"] = sig
    return state["twin"], None
