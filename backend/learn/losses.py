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


def click_cross_entropy(
    logits: torch.Tensor, index: torch.Tensor, classes: torch.Tensor, balance: float = 0.0
) -> torch.Tensor:
    """Each clicked pixel weighs (its class's clicked pixels) ** -``balance``: 0 is DIAL's plain
    mean, 1 weighs every clicked class the same however many pixels it has."""
    clicked = gather_clicked(logits, index).float()
    if not balance:
        return F.cross_entropy(clicked, classes)
    per_click = F.cross_entropy(clicked, classes, reduction="none")
    counts = torch.bincount(classes, minlength=logits.shape[1]).float()
    weights = counts[classes] ** -float(balance)
    return (per_click * weights).sum() / weights.sum()


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


def confident_consistency(
    logits: torch.Tensor, teacher: torch.Tensor, unlabelled: torch.Tensor, threshold: float
) -> torch.Tensor:
    """Cross-entropy to a teacher's confident classes (FixMatch's unlabelled term): over the
    ``unlabelled`` pixels (B × H × W) where the teacher's probabilities (B × C × H × W) reach
    ``threshold``, averaged over all unlabelled pixels, so an unsure teacher asks for little."""
    confidence, pseudo = teacher.max(dim=1)
    use = unlabelled & (confidence >= threshold)
    per_pixel = F.cross_entropy(logits, pseudo, reduction="none")
    return (per_pixel * use).sum() / unlabelled.sum().clamp(min=1)


def colour_affinity(
    logits: torch.Tensor, colours: torch.Tensor, valid: torch.Tensor, dilation: int, max_distance: float
) -> torch.Tensor:
    """BoxInst's pairwise term: neighbouring pixels (``dilation`` apart, all 8 directions) whose
    colours (B × bands × H × W, in [0, 1]) lie within ``max_distance`` of each other should share a
    class: −log P(same class), averaged over those pairs. It carries labels along homogeneous
    ground, up to the edges a superpixel may have cut across."""
    log_p = F.log_softmax(logits, dim=1)
    height, width = logits.shape[-2:]
    d = dilation
    total, count = logits.new_zeros(()), logits.new_zeros(())
    for dy, dx in ((0, d), (d, 0), (d, d), (d, -d)):  # the other four directions are the same pairs
        rows_a, rows_b = slice(0, height - dy), slice(dy, height)
        cols_a = slice(max(0, -dx), width - max(0, dx))
        cols_b = slice(max(0, dx), width - max(0, -dx))
        a, b = (..., rows_a, cols_a), (..., rows_b, cols_b)
        close = (colours[a] - colours[b]).norm(dim=1) <= max_distance
        pairs = close & valid[a] & valid[b]
        same = torch.logsumexp(log_p[a] + log_p[b], dim=1)
        total = total - (same * pairs).sum()
        count = count + pairs.sum()
    return total / count.clamp(min=1)
