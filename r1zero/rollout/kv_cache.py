"""The rollout's KV cache: transformers' DynamicCache with every full-attention layer's storage
reserved up front, so a decode step writes its key and value in place instead of copying the cache.

transformers' DynamicLayer grows by ``torch.cat`` at every step: each of a model's layers copies
its whole K and V once per generated token, a cost that grows with the square of the length.
``ReservedLayer`` keeps one buffer of ``capacity`` positions (the prompt plus the completion
length) and hands attention views of its filled part: the same values, so the same outputs.
Measured on the embedded 135M model in bf16 (benchmarks/RESULTS.md): within the noise at 64 rows
with completions of 20-60 tokens, 1.06-1.13x at 16 rows and 384 tokens.

Rows leave the batch (``batch_select_indices``, finished completions) and the prompt's cache is
repeated to its G samples (``batch_repeat_interleave``) as in DynamicLayer; both copy only the
filled positions. Sliding-window and other special layers are left as transformers made them.
"""
from __future__ import annotations

import torch
from transformers import DynamicCache
from transformers.cache_utils import DynamicLayer


class ReservedLayer(DynamicLayer):
    """A DynamicLayer whose K and V live in buffers of ``capacity`` positions, filled in place (it
    grows, doubling, if a caller writes past them)."""

    def __init__(self, capacity: int):
        super().__init__()
        self.capacity = capacity
        self.length = 0
        self._k = self._v = None

    def lazy_initialization(self, key_states: torch.Tensor, value_states: torch.Tensor) -> None:
        self.dtype, self.device = key_states.dtype, key_states.device
        self._k = self._empty(key_states, key_states.shape[0])
        self._v = self._empty(value_states, value_states.shape[0])
        self.length = 0
        self.is_initialized = True

    def _empty(self, like: torch.Tensor, rows: int) -> torch.Tensor:
        return like.new_empty((rows, like.shape[1], self.capacity, like.shape[-1]))

    def _views(self) -> None:
        self.keys, self.values = self._k[:, :, :self.length], self._v[:, :, :self.length]

    def _refill(self, k: torch.Tensor, v: torch.Tensor) -> None:
        """New buffers holding ``k`` and ``v`` (the filled positions only) at their start."""
        self._k, self._v = self._empty(k, k.shape[0]), self._empty(v, v.shape[0])
        self._k[:, :, :self.length] = k
        self._v[:, :, :self.length] = v
        self._views()

    def update(self, key_states: torch.Tensor, value_states: torch.Tensor, *args, **kwargs):
        if not self.is_initialized:
            self.lazy_initialization(key_states, value_states)
        start, end = self.length, self.length + key_states.shape[-2]
        if end > self.capacity:  # past the reservation: grow (a copy), as DynamicLayer would every step
            self.capacity = max(end, 2 * self.capacity)
            self._refill(self.keys, self.values)
        self._k[:, :, start:end] = key_states
        self._v[:, :, start:end] = value_states
        self.length = end
        self._views()
        return self.keys, self.values

    def get_seq_length(self) -> int:
        return self.length if self.is_initialized else 0

    def reset(self) -> None:
        self._k = self._v = None
        self.length = 0
        super().reset()

    def crop(self, tokens_to_remove: int) -> None:
        if tokens_to_remove < 0 and self.is_initialized:
            self.length = max(0, self.length + tokens_to_remove)
            self._views()
        elif tokens_to_remove > 0:
            super().crop(tokens_to_remove)  # transformers' own refusal of the legacy form

    def batch_repeat_interleave(self, repeats: int) -> None:
        if self.length:
            self._refill(self.keys.repeat_interleave(repeats, dim=0), self.values.repeat_interleave(repeats, dim=0))

    def batch_select_indices(self, indices: torch.Tensor) -> None:
        if self.length:
            self._refill(self.keys[indices], self.values[indices])

    def reorder_cache(self, beam_idx: torch.LongTensor) -> None:
        self.batch_select_indices(beam_idx.to(self.device))


def reserved_cache(config, capacity: int) -> DynamicCache:
    """A DynamicCache for ``config`` whose plain full-attention layers reserve ``capacity`` positions."""
    cache = DynamicCache(config=config)
    cache.layers = [ReservedLayer(capacity) if type(layer) is DynamicLayer else layer for layer in cache.layers]
    return cache
