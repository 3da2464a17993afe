"""The anchor keeps the initial map's places, not a class share the clicks have taken away.

DISCA's anchor holds the network to p₀, the initial map. On imagery the model has never seen,
that map can be wrong over most of the raster (LoveDA crop 0: water on 69 % of a crop that is
83 % vegetation). Clicks of vegetation and land push the water off; the anchor pulls it back, and
once one click of water says the class exists, nothing holds it: after 20 clicks water covered
28–30 % of the crop on two seeds of five.

Before each round the anchor's class shares are shifted toward the map the rounds have reached:
a class whose share on the clicks' crops fell from p₀'s is scaled down in p₀ by that ratio and
p₀ renormalised (Bayes' rule for a new class prior, as :mod:`.prior_shift` does for sparse
training). A class the rounds grew is left as it was: the anchor never pushes a class anywhere
p₀ did not put it. Before the first round the shares are p₀'s own, and the anchor is DIAL's.
"""

from __future__ import annotations

import torch

SMOOTHING = 0.01
"""Added to both shares, so a class on next to nothing in p₀ is not scaled by chance."""


def share_ratios(current: torch.Tensor, initial: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """Per class, min(1, the current map's share / p₀'s share) over the valid pixels of the same
    crops; ``current`` and ``initial`` are probabilities (N × C × h × w), ``valid`` N × h × w."""
    n_classes = initial.shape[1]
    if not valid.any():
        return initial.new_ones(n_classes)
    mask = valid[:, None].expand_as(initial)
    now = _shares(current.float(), mask, n_classes)
    before = _shares(initial.float(), mask, n_classes)
    return ((now + SMOOTHING) / (before + SMOOTHING)).clamp(max=1.0)


def shifted(initial: torch.Tensor, ratios: torch.Tensor) -> torch.Tensor:
    """p₀ (N × C × h × w) with each class scaled by its ratio, renormalised per pixel."""
    scaled = initial * ratios.to(initial.dtype)[None, :, None, None]
    return scaled / scaled.sum(dim=1, keepdim=True).clamp(min=1e-8)


def _shares(probabilities: torch.Tensor, mask: torch.Tensor, n_classes: int) -> torch.Tensor:
    """Mean probability of each class over the masked pixels."""
    per_class = probabilities.transpose(0, 1)[mask.transpose(0, 1)].view(n_classes, -1)
    return per_class.mean(dim=1)
