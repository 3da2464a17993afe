"""Acquisition functions: how uncertain the model is, per pixel, in [0, 1].

Entropy and margin are functions of the blended class probabilities, so they are computed after
tiles are blended (no seams of fake uncertainty). MC dropout and ODIN need extra network passes
per tile; they produce a per-tile uncertainty map that is blended with the same weights.

- entropy: −Σ p log p / log C
- margin: 1 − (p₁ − p₂), the gap between the two most likely classes
- mcdropout: 4 × the largest per-class variance over N dropout passes (a [0, 1] variable has
  variance ≤ ¼), element-wise dropout at rate r between every encoder stage and the decoder
  (DIAL); the encoder runs once, only the decoder once per pass
- odin: 1 − max softmax(f(x̃)/T), rescaled so that a uniform prediction gives 1, where x̃ moves
  the image by ε (in 0..1 pixel units) along the gradient sign that raises the predicted class's
  temperature-scaled score (DIAL: T = 100, ε = 1/255)
- confidnet: 1 − the confidence a ConfidNet head predicts from the last decoder features (the
  bundle must carry one: ``python -m backend confidnet``)
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F  # noqa: N812
from torch import nn

from ..model.network import (
    DropoutMasks,
    autocast,
    decode,
    dropout_features,
    encode,
    features_and_logits,
    softmax_probabilities,
)

ACQUISITIONS = ("entropy", "margin", "mcdropout", "odin", "confidnet")


def normalized_entropy(probabilities: torch.Tensor, dim: int = 0) -> torch.Tensor:
    n = probabilities.shape[dim]
    if n < 2:
        return torch.zeros_like(probabilities.select(dim, 0))
    return (-torch.special.xlogy(probabilities, probabilities).sum(dim) / math.log(n)).clamp_(0.0, 1.0)


def margin_uncertainty(probabilities: torch.Tensor, dim: int = 0) -> torch.Tensor:
    if probabilities.shape[dim] < 2:
        return torch.zeros_like(probabilities.select(dim, 0))
    top2 = probabilities.topk(2, dim=dim).values
    return (1.0 - (top2.select(dim, 0) - top2.select(dim, 1))).clamp_(0.0, 1.0)


@dataclass(frozen=True)
class Acquisition:
    """How to run the network on a batch and what uncertainty to produce."""

    name: str = "entropy"
    mc_passes: int = 5
    mc_rate: float = 0.1
    odin_temperature: float = 100.0
    odin_epsilon: float = 1.0 / 255.0
    seed: int = 0

    @property
    def per_tile(self) -> bool:
        """Whether the uncertainty comes from the network per tile (blended as its own channel)."""
        return self.name in ("mcdropout", "odin", "confidnet")

    def from_probabilities(self, probabilities: torch.Tensor) -> torch.Tensor:
        """Per-pixel uncertainty from blended probabilities (classes on axis 0)."""
        if self.name == "margin":
            return margin_uncertainty(probabilities)
        return normalized_entropy(probabilities)


def run_network(
    network: nn.Module,
    x: torch.Tensor,
    acquisition: Acquisition,
    tile_ids: list[int],
    n_image_channels: int,
    image_step: torch.Tensor | None = None,
    dtype: torch.dtype | None = None,
    confidnet: nn.Module | None = None,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Class probabilities (B × C × H × W, float32) and, for per-tile acquisitions, uncertainty
    (B × 1 × H × W).

    ``tile_ids`` seed MC dropout per tile; ``image_step`` is ODIN's ε per image channel in
    normalised units (ε / std); ``dtype`` the reduced precision to compute in (None: float32).
    """
    device_type = x.device.type
    with autocast(device_type, dtype):
        if acquisition.name == "odin":
            return _odin(network, x, acquisition, n_image_channels, image_step)
        with torch.inference_mode():
            if acquisition.name == "mcdropout":
                return _mc_dropout(network, x, acquisition, tile_ids)
            if acquisition.name == "confidnet":
                features, logits = features_and_logits(network, x)
                return softmax_probabilities(logits), 1.0 - confidnet(features).float()
            return softmax_probabilities(network(x)), None


def _mc_dropout(
    network: nn.Module, x: torch.Tensor, acquisition: Acquisition, tile_ids: list[int]
) -> tuple[torch.Tensor, torch.Tensor]:
    """The encoder runs once; the decoder once plainly (the class map) and once per pass.

    Passes run one at a time on CPU (faster there than one big batch) and together on a GPU.
    """
    features = encode(network, x)
    probabilities = softmax_probabilities(decode(network, features))
    uncertainty = []
    for i, tile_id in enumerate(tile_ids):
        masks = DropoutMasks(acquisition.mc_rate, acquisition.seed, tile_id, x.device)
        sample = [f[i : i + 1] for f in features]
        stochastic = [dropout_features(sample, masks) for _ in range(acquisition.mc_passes)]
        if x.device.type == "cpu":
            passes = torch.cat([softmax_probabilities(decode(network, f)) for f in stochastic])
        else:
            stacked = [torch.cat(level) for level in zip(*stochastic, strict=True)]
            passes = softmax_probabilities(decode(network, stacked))
        variance = passes.var(dim=0, unbiased=False).amax(dim=0, keepdim=True)
        uncertainty.append((4.0 * variance).clamp_(0.0, 1.0))
    return probabilities, torch.stack(uncertainty)


def _odin(
    network: nn.Module,
    x: torch.Tensor,
    acquisition: Acquisition,
    n_image_channels: int,
    image_step: torch.Tensor | None,
) -> tuple[torch.Tensor, torch.Tensor]:
    temperature = acquisition.odin_temperature
    image = x[:, :n_image_channels].detach().clone().requires_grad_(True)
    rest = x[:, n_image_channels:]
    with torch.enable_grad():
        logits = network(torch.cat([image, rest], dim=1))
        predicted = logits.argmax(dim=1)
        loss = F.cross_entropy(logits.float() / temperature, predicted)
        (gradient,) = torch.autograd.grad(loss, image)
    probabilities = softmax_probabilities(logits.detach())
    step = image_step.view(1, -1, 1, 1) if image_step is not None else acquisition.odin_epsilon
    with torch.inference_mode():
        perturbed = image.detach() - step * gradient.sign()
        scores = softmax_probabilities(network(torch.cat([perturbed, rest], dim=1)), temperature)
        n = scores.shape[1]
        confidence = scores.amax(dim=1, keepdim=True)
        uncertainty = ((1.0 - confidence) / (1.0 - 1.0 / n)).clamp_(0.0, 1.0)
    return probabilities, uncertainty
