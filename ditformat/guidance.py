"""Sampling-time guides, part of the format (every runtime plans them the same way; numpy only): every guide
is a linear combination of eps over a few label branches.

eps_g = sum_j a_j(s_i) eps(x, y_j), with a_j = base_j + slope_j * s_i and s_i the guidance
scale at step i (its schedule). The branches run as one batch (K copies x J branches x N
images), so the same plan drives torch (dit_model/guidance.py combine), the `guide_combine` kernel on the GPU
and web/schedule.js (makePlan, scaleAt: the twin).
  CFG (Ho & Salimans):  branches [null, c]     eps_u + s (eps_c - eps_u)
  negative class n:     branches [n, c]        eps_n + s (eps_c - eps_n)
  composition (Liu+22): branches [null, c_1..] eps_u + s sum_k w_k (eps_ck - eps_u), w_k may be < 0
  schedules:            constant s; linear s_start -> s_end over the steps; interval: s only
                        for t in [t_lo, t_hi], else 1 (plain conditional)
  batch estimate:       K copies x + tau sqrt(1 - abar_t) z_k, the mean of their guided eps
The variance half of the output (learned sigma) comes from the first conditional branch.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

SCHEDULES = ("constant", "linear", "interval")


def parse_interval(text: str) -> tuple[int, int]:
    """'LO:HI' -> (LO, HI), the original-t range an interval schedule guides; ValueError names what is wrong."""
    try:
        lo, hi = (int(v) for v in text.split(":"))
    except ValueError:
        raise ValueError("want LO:HI, e.g. 0:700") from None
    if not 0 <= lo <= hi <= 999:
        raise ValueError("need 0 <= LO <= HI <= 999")
    return lo, hi


@dataclass(frozen=True)
class Guide:
    scale: float = 4.0
    negative_class: int | tuple | None = None         # a class id, or a label (one id per level)
    compose: tuple[tuple[int | tuple, float], ...] = ()   # ((class id or label, weight), ...)
    schedule: str = "constant"
    scale_end: float | None = None                    # linear schedule: scale at the last step
    interval: tuple[int, int] = (0, 999)              # interval schedule: original t range
    batch_k: int = 1                                  # batch-estimated guidance: copies
    batch_tau: float = 0.0                            # ... and their noise scale

    def validate(self, num_classes: int) -> "Guide":
        if self.schedule not in SCHEDULES:
            raise ValueError(f"unknown guidance schedule {self.schedule!r}; choose one of {', '.join(SCHEDULES)}")
        if self.schedule == "linear" and self.scale_end is None:
            raise ValueError("the linear guidance schedule needs an end scale")
        lo, hi = self.interval
        if not 0 <= lo <= hi <= 999:
            raise ValueError(f"guidance interval must satisfy 0 <= t_lo <= t_hi <= 999, got {lo}..{hi}")
        if self.batch_k < 1 or self.batch_tau < 0:
            raise ValueError("batch estimate needs K >= 1 and tau >= 0")
        for c in [self.negative_class] + [c for c, _ in self.compose]:
            if isinstance(c, tuple):                  # a label of several levels: its vocabulary checked it
                continue
            if c is not None and not 0 <= c < num_classes:
                raise ValueError(f"class id {c} is out of range [0, {num_classes})")
        if self.negative_class is not None and self.compose:
            raise ValueError("use either a negative class or a composition, not both")
        return self

    def scale_at(self, step: int, steps: int, t: int) -> float:
        """s_i for sampler step `step` (0 = the first, noisiest) calling the model at original t."""
        if self.schedule == "linear":
            frac = step / max(steps - 1, 1)
            return self.scale + (self.scale_end - self.scale) * frac
        if self.schedule == "interval":
            lo, hi = self.interval
            return self.scale if lo <= t <= hi else 1.0
        return self.scale

    @classmethod
    def within(cls, scale: float, interval: tuple[int, int] | None) -> "Guide":
        """Plain guidance at `scale`, or (an interval) guidance only while the model's t is in [lo, hi]."""
        return cls(scale=scale, schedule="interval", interval=tuple(interval)) if interval else cls(scale=scale)

    @property
    def copies(self) -> int:
        """K is only meaningful with a perturbation: K = 1 or tau = 0 is plain guidance."""
        return self.batch_k if self.batch_tau > 0 else 1


@dataclass(frozen=True)
class Plan:
    labels: list            # J lists of N class ids (null = num_classes)
    base: np.ndarray        # (J,) a_j = base_j + slope_j * s
    slope: np.ndarray
    var_branch: int         # the branch whose variance half is used

    def coefficients(self, s: float) -> np.ndarray:
        return self.base + self.slope * s


def make_plan(guide: Guide, class_ids: list, null_label) -> Plan:
    """The branches of a guide; null_label is the unconditional label (num_classes, or a tuple of the
    level sizes for a model with label levels)."""
    n = len(class_ids)
    null = [null_label] * n
    if guide.compose:
        w = np.array([wt for _, wt in guide.compose], np.float64)
        labels = [null] + [[c] * n for c, _ in guide.compose]
        return Plan(labels, np.r_[1.0, np.zeros(len(w))], np.r_[-w.sum(), w], 1)
    if guide.negative_class is not None:
        return Plan([[guide.negative_class] * n, list(class_ids)], np.array([1.0, 0.0]), np.array([-1.0, 1.0]), 1)
    if guide.schedule == "constant" and guide.scale == 1.0:
        return Plan([list(class_ids)], np.array([1.0]), np.array([0.0]), 0)   # plain conditional: one pass
    return Plan([null, list(class_ids)], np.array([1.0, 0.0]), np.array([-1.0, 1.0]), 1)
