"""Losses for learning from clicks.

- ``click_cross_entropy``: DIAL's sparse term, cross-entropy at the clicked pixels, averaged over
  the clicks.
- ``error_weighted_dice``: SIAL's Error-Weighted Dice Loss (EWDL), a soft Dice over the clicked
  pixels where pixels the model currently gets wrong weigh ``error_weight`` (λ = 5) and the
  others 1, so the gradient goes to the mistakes.
- ``anchor_l1``: DIAL's regulariser, the mean absolute difference between the network's softmax
  and the initial prediction's softmax (both probabilities, every pixel and class of the crops).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F  # noqa: N812


def gather_clicked(logits: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """Logits at clicked pixels: ``index`` rows are (sample, row, col); returns K × C."""
    return logits[index[:, 0], :, index[:, 1], index[:, 2]]


def click_cross_entropy(logits: torch.Tensor, index: torch.Tensor, classes: torch.Tensor) -> torch.Tensor:
    return F.cross_entropy(gather_clicked(logits, index).float(), classes)


def error_weighted_dice(
    logits: torch.Tensor,
    index: torch.Tensor,
    classes: torch.Tensor,
    error_weight: float = 5.0,
    eps: float = 1.0,
) -> torch.Tensor:
    clicked = gather_clicked(logits, index).float()
    probabilities = clicked.softmax(dim=1)
    target = F.one_hot(classes, probabilities.shape[1]).float()
    with torch.no_grad():
        wrong = probabilities.argmax(dim=1) != classes
        weights = torch.where(wrong, error_weight, 1.0)[:, None]
    intersection = (weights * probabilities * target).sum(dim=0)
    total = (weights * (probabilities + target)).sum(dim=0)
    present = target.sum(dim=0) > 0  # classes that were clicked
    dice = (2 * intersection + eps) / (total + eps)
    return 1.0 - dice[present].mean()


def anchor_l1(probabilities: torch.Tensor, initial: torch.Tensor) -> torch.Tensor:
    return (probabilities - initial).abs().mean()
