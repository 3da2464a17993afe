"""The round guard: is the map after a DISCA round one the analyst's clicks still agree with?

The analyst's clicks are the only truth there is. The guard predicts crops around the newest
clicks and crops far from every click, before and after the round. A round that leaves more of
the clicks wrong than the map before it did has learned something the analyst did not say, and is
rolled back. How much of the far-away map changed class, and which class lost most of its area
there (the signature of a round that pushed one class everywhere), becomes a warning.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from scipy import ndimage

from ..io.clicks import Click
from ..io.outputs import CLASS_NODATA

FAR = 128
"""Pixels this far from every click (px) count as "far": what a round changes there, it changed
without a click saying so."""
LARGEST_LOSS = 0.5
"""A class that loses more than this share of its far-away area in one round is worth a look."""
SMALLEST_CLASS = 0.01
"""Classes covering less than this share of the far-away map are too small to judge."""
SURE = 0.2
"""A pixel whose normalised entropy is below this was one the map was sure of."""
CHECK_CROPS = 8
"""Crops the guard predicts before and after a round: this many around the newest clicks and up
to this many far from every click (drawn at random, a new draw each round)."""


@dataclass(frozen=True)
class RoundCheck:
    clicks: int
    wrong_before: int  # clicks whose pixel the map before the round gets wrong
    wrong_after: int
    changed_far: float  # share of the far-away valid pixels whose class changed
    worst_class: int | None  # the far-away class that lost the largest share of its area
    worst_loss: float  # that share (0 … 1)
    confident_changed: float = 0.0  # share of the far-away pixels the map was sure of that changed

    @classmethod
    def of(
        cls,
        before: np.ndarray,
        after: np.ndarray,
        clicks: Sequence[Click],
        uncertainty: np.ndarray | None = None,
    ) -> RoundCheck:
        rows = np.array([c.row for c in clicks], dtype=np.int64)
        cols = np.array([c.col for c in clicks], dtype=np.int64)
        wanted = np.array([c.class_id for c in clicks], dtype=np.int64)
        far = _far_from(clicks, before.shape) & (before != CLASS_NODATA) & (after != CLASS_NODATA)
        changed = float((before[far] != after[far]).mean()) if far.any() else 0.0
        worst, loss = _worst_loss(before[far], after[far])
        sure = far & (uncertainty < SURE) if uncertainty is not None else far[:0]
        return cls(
            clicks=len(clicks),
            wrong_before=int((before[rows, cols] != wanted).sum()),
            wrong_after=int((after[rows, cols] != wanted).sum()),
            changed_far=changed,
            worst_class=worst,
            worst_loss=loss,
            confident_changed=float((before[sure] != after[sure]).mean()) if sure.any() else 0.0,
        )

    @classmethod
    def of_samples(
        cls,
        before: torch.Tensor,
        after: torch.Tensor,
        index: torch.Tensor,
        classes: torch.Tensor,
        far_valid: torch.Tensor,
    ) -> RoundCheck:
        """From crops' classes (N × h × w) before and after: the first N − len(far_valid) hold
        the clicks at ``index`` (crop, row, col) with ``classes``, the rest lie far from them."""
        near = before.shape[0] - far_valid.shape[0]
        at_before = before[index[:, 0], index[:, 1], index[:, 2]]
        at_after = after[index[:, 0], index[:, 1], index[:, 2]]
        far_before, far_after = before[near:][far_valid].cpu().numpy(), after[near:][far_valid].cpu().numpy()
        changed = float((far_before != far_after).mean()) if far_before.size else 0.0
        worst, loss = _worst_loss(far_before, far_after)
        return cls(
            clicks=int(classes.numel()),
            wrong_before=int((at_before != classes).sum()),
            wrong_after=int((at_after != classes).sum()),
            changed_far=changed,
            worst_class=worst,
            worst_loss=loss,
        )

    def as_json(self) -> dict[str, float | int | None]:
        return {
            "clicks": self.clicks,
            "wrong_before": self.wrong_before,
            "wrong_after": self.wrong_after,
            "changed_far": round(self.changed_far, 4),
            "worst_class": self.worst_class,
            "worst_loss": round(self.worst_loss, 4),
            "confident_changed": round(self.confident_changed, 4),
        }


@dataclass(frozen=True)
class Verdict:
    kept: bool
    reason: str
    warning: str | None = None  # for a kept round: what the analyst should look at


def judge_round(check: RoundCheck, names: Sequence[str] | None = None) -> Verdict:
    """Keep the round unless it gets more of the analyst's clicks wrong than the map before it.

    A class that loses more than :data:`LARGEST_LOSS` of its area far from every click is only
    a warning: on new imagery that is often what the clicks asked for (LoveDA crop 1: water over
    74 % of the far-away map was wrong, and the round that removed it raised mIoU 14.5 → 22.2),
    and nothing but the truth tells it from a round that wore a right class away."""
    if check.wrong_after > check.wrong_before:
        return Verdict(
            False,
            f"the retrained map gets {check.wrong_after} of your {check.clicks} clicks wrong, the map "
            f"before it {check.wrong_before}: the round was not kept. Add clicks of the classes it "
            "got wrong, or lower the learning rate or raise the anchor weight (λ)",
        )
    warning = None
    if check.worst_class is not None and check.worst_loss > LARGEST_LOSS:
        name = names[check.worst_class] if names else f"class {check.worst_class}"
        warning = (
            f"the round took {check.worst_loss:.0%} of '{name}' away far from every click: look "
            "over the map, and Undo the round if that was right, then add clicks where it was"
        )
    return Verdict(True, f"{check.clicks - check.wrong_after} of {check.clicks} clicks right", warning)


def _far_from(clicks: Sequence[Click], shape: tuple[int, int]) -> np.ndarray:
    """Pixels more than :data:`FAR` from every click (a distance transform on a coarse grid)."""
    step = 16
    coarse = np.ones(((shape[0] + step - 1) // step, (shape[1] + step - 1) // step), dtype=bool)
    for click in clicks:
        coarse[click.row // step, click.col // step] = False
    distance = ndimage.distance_transform_edt(coarse) * step
    far = np.repeat(np.repeat(distance > FAR, step, axis=0), step, axis=1)
    return far[: shape[0], : shape[1]]


def _worst_loss(before: np.ndarray, after: np.ndarray) -> tuple[int | None, float]:
    if before.size == 0:
        return None, 0.0
    n = int(max(before.max(), after.max())) + 1
    had = np.bincount(before, minlength=n).astype(np.float64)
    has = np.bincount(after, minlength=n).astype(np.float64)
    judged = had >= SMALLEST_CLASS * before.size
    if not judged.any():
        return None, 0.0
    loss = np.where(judged, 1 - has / np.maximum(had, 1), -np.inf)
    worst = int(loss.argmax())
    return worst, float(max(loss[worst], 0.0))


def far_origins(
    clicks: Sequence[Click], height: int, width: int, size: int, generator: torch.Generator
) -> list[tuple[int, int]]:
    """Up to :data:`CHECK_CROPS` crop origins whose crops lie :data:`FAR` px clear of every click
    (rejection sampling, seeded by ``generator``); none on a raster too small for that."""
    rows = np.array([c.row for c in clicks])
    cols = np.array([c.col for c in clicks])
    origins: list[tuple[int, int]] = []
    for _ in range(16 * CHECK_CROPS):
        if len(origins) == CHECK_CROPS:
            break
        row = int(torch.randint(0, max(height - size, 0) + 1, (1,), generator=generator))
        col = int(torch.randint(0, max(width - size, 0) + 1, (1,), generator=generator))
        clear_rows = (rows < row - FAR) | (rows >= row + size + FAR)
        clear_cols = (cols < col - FAR) | (cols >= col + size + FAR)
        if (clear_rows | clear_cols).all():
            origins.append((row, col))
    return origins
