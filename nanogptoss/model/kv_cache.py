"""The KV cache: keys and values of past tokens, kept so decoding never recomputes them.

A dense layer keeps every position; a banded layer never looks further back than
its window, so it keeps only the last `window` keys and values in a ring buffer:
position p lives in slot p % window. Memory for banded layers is then constant in
the sequence length.
"""

from __future__ import annotations

import torch

from ..config import SLIDING


class LayerKVCache:
    """One layer's cache, allocated on first use with the dtype and device of the keys."""

    def __init__(self, capacity: int, ring: bool):
        self.capacity, self.ring = capacity, ring
        self.k = self.v = self.pos = None
        self.length = 0  # tokens written so far

    def _allocate(self, k: torch.Tensor) -> None:
        B, G, _, h = k.shape
        self.k = k.new_zeros(B, G, self.capacity, h)
        self.v = k.new_zeros(B, G, self.capacity, h)
        self.pos = torch.full((self.capacity,), -1, dtype=torch.long, device=k.device)  # -1: empty

    def update(self, k: torch.Tensor, v: torch.Tensor, positions: torch.Tensor):
        """Store new keys/values (B, G, T, h); return the keys, values and positions to attend to."""
        if self.k is None:
            self._allocate(k)
        T = k.shape[2]
        if not self.ring:
            end = self.length + T
            if end > self.capacity:
                raise ValueError(f"KV cache full: {end} positions needed, room for {self.capacity}; "
                                 "make the cache with a larger max_len")
            self.k[:, :, self.length:end] = k
            self.v[:, :, self.length:end] = v
            self.pos[self.length:end] = positions
            self.length = end
            return self.k[:, :, :end], self.v[:, :, :end], self.pos[:end]
        if T == 1:
            # One new token (decoding) overwrites the slot of the position `window` back,
            # the first one it may no longer see: write first, then attend to the ring
            # itself, with no copy of it.
            slot = positions % self.capacity
            self.k.index_copy_(2, slot, k)
            self.v.index_copy_(2, slot, v)
            self.pos.index_copy_(0, slot, positions)
            self.length += 1
            return self.k, self.v, self.pos
        # Ring buffer: attend to what it held plus the new tokens (a prefill longer than
        # the window needs keys the ring is about to overwrite), then keep the last ones.
        k_all, v_all = torch.cat([self.k, k], dim=2), torch.cat([self.v, v], dim=2)
        pos_all = torch.cat([self.pos, positions])
        keep = min(T, self.capacity)
        slots = positions[-keep:] % self.capacity
        self.k[:, :, slots] = k[:, :, -keep:]
        self.v[:, :, slots] = v[:, :, -keep:]
        self.pos[slots] = positions[-keep:]
        self.length += T
        return k_all, v_all, pos_all


class KVCache:
    """The whole model's cache: one `LayerKVCache` per layer and the next position."""

    def __init__(self, config, max_len: int | None = None):
        context = config.max_position_embeddings
        max_len = context if max_len is None else max_len
        if max_len > context:
            raise ValueError(f"max_len {max_len} exceeds the model's context (max_position_embeddings {context})")
        self.max_len = max_len
        self.layers = []
        for layer_type in config.layer_types:
            banded = layer_type == SLIDING and config.sliding_window < max_len
            capacity = config.sliding_window if banded else max_len
            self.layers.append(LayerKVCache(capacity, ring=banded))
        self.pos = 0

    def memory_bytes(self) -> int:
        return sum(c.k.numel() * c.k.element_size() * 2 for c in self.layers if c.k is not None)
