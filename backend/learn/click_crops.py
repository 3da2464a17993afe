"""Where a DISCA round's training crops lie, and which clicked pixels each SGD step sees."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from ..io.clicks import Click


def crop_origins(
    clicks: Sequence[Click], height: int, width: int, size: int, limit: int
) -> list[tuple[int, int]]:
    """Crops centred on clicks, newest first, shifted inside the raster; a click already well
    inside a crop (a quarter of the crop from its edges, raster borders excepted) gets none."""
    origins: list[tuple[int, int]] = []
    margin = size // 4

    def covers(row: int, col: int, click: Click) -> bool:
        top = 0 if row == 0 else margin
        left = 0 if col == 0 else margin
        bottom = 0 if row + size >= height else margin
        right = 0 if col + size >= width else margin
        return row + top <= click.row < row + size - bottom and col + left <= click.col < col + size - right

    for click in reversed(clicks):
        if len(origins) >= limit:
            break
        if not any(covers(r, c, click) for r, c in origins):
            row = min(max(click.row - size // 2, 0), max(height - size, 0))
            col = min(max(click.col - size // 2, 0), max(width - size, 0))
            origins.append((row, col))
    return origins


def clicks_in(
    chosen: torch.Tensor, index: torch.Tensor, classes: torch.Tensor, n_crops: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """The clicked pixels of the chosen crops, renumbered to their place in the step's batch."""
    place = torch.full((n_crops,), -1, dtype=torch.long, device=index.device)
    place[chosen] = torch.arange(len(chosen), device=index.device)
    keep = place[index[:, 0]] >= 0
    picked = index[keep].clone()
    picked[:, 0] = place[picked[:, 0]]
    return picked, classes[keep]
