"""The entropy bonus's coefficient: fixed (``entropy_coeff``), or adapted to an entropy target.

Skywork-OR1's adaptive entropy control, with TRL 1.16's keys and rules (``use_adaptive_entropy``,
``entropy_target``, ``entropy_coef_delta``, ``entropy_coef_min``, ``entropy_coef_max``; the starting
coefficient is ``entropy_coeff``, TRL's ``entropy_coef``): after every optimizer update the
coefficient moves by ``entropy_coef_delta`` up (to at most ``entropy_coef_max``) when the update's
mean token entropy (every completion token of its micro-batches, over every process) was at or
below ``entropy_target``, down (to at least ``entropy_coef_min``) otherwise; the bonus applies the coefficient only while the entropy last measured is at or below the
target (none before the first measurement), so it engages when the policy is collapsing and stays
off while it explores.
"""
from __future__ import annotations

import math
from typing import Callable


class EntropyCoefficient:
    """The coefficient the entropy bonus applies, and its update after each optimizer step."""

    def __init__(self, cfg):
        self.adaptive = cfg.use_adaptive_entropy
        self.target = cfg.entropy_target
        self.delta = cfg.entropy_coef_delta
        self.low, self.high = cfg.entropy_coef_min, cfg.entropy_coef_max
        self.coef = cfg.entropy_coeff
        self.last_entropy = math.inf  # no bonus until a measurement says the entropy is low
        self._window: list = []  # (entropy sum, token count) of this update's micro-batches, on the device

    @property
    def enabled(self) -> bool:
        """Whether the loss carries the bonus term at all (adaptive: always, even at coefficient 0)."""
        return self.adaptive or self.coef > 0

    def applied(self) -> float:
        """The coefficient for this update's micro-batches."""
        if not self.adaptive:
            return self.coef
        return self.coef if self.last_entropy <= self.target else 0.0

    def observe(self, entropy_sum, tokens) -> None:
        """A micro-batch's summed token entropy and token count (read at ``step``, not here)."""
        self._window.append((entropy_sum, tokens))

    def step(self, all_sum: Callable[[list], list]) -> None:
        """After an optimizer update: the update's mean entropy over every process moves the coefficient."""
        if not self.adaptive or not self._window:
            return
        total, count = all_sum([sum(float(e) for e, _ in self._window), sum(float(n) for _, n in self._window)])
        self._window = []
        entropy = total / max(count, 1.0)
        if entropy <= self.target:
            self.coef = min(self.coef + self.delta, self.high)
        else:
            self.coef = max(self.coef - self.delta, self.low)
        self.last_entropy = entropy

    def state(self) -> dict:
        return {"entropy_coef": self.coef, "last_entropy": self.last_entropy} if self.adaptive else {}

    def restore(self, state: dict) -> None:
        if self.adaptive and "entropy_coef" in state:
            self.coef = float(state["entropy_coef"])
            self.last_entropy = float(state["last_entropy"])
