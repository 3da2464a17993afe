"""ConfidNet: a small network that learns where the segmentation model is wrong.

DIAL found it the best guide to errors. It reads the segmentation model's last decoder features
and predicts the model's confidence: the softmax probability of the true class ("TCP",
Corbière et al. 2019). Layers: a transposed convolution to 32 channels, then 3 × 3 convolutions
of 120, 64, 32 and 1 channels, and a sigmoid. It is trained with the segmentation model frozen,
on that model's own outputs over the training rasters, and stored next to the weights in the
bundle (``confidnet.safetensors``). As an acquisition function: uncertainty = 1 − confidence.
"""

from __future__ import annotations

import time
from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F  # noqa: N812

from ..errors import UserError
from ..model.bundle import ModelBundle
from ..model.network import ConfidNet, decoder_channels, features_and_logits
from ..predict.evaluation import LABEL_NODATA
from ..progress import Monitor
from ..system.runtime import resolve_device


def train_confidnet(
    bundle: ModelBundle,
    pairs: Sequence[tuple[str, str]],
    class_map: dict[int, int] | None = None,
    steps: int = 600,
    crop: int = 128,
    batch: int = 8,
    learning_rate: float = 1e-4,
    device: str = "auto",
    seed: int = 0,
    monitor: Monitor | None = None,
) -> dict[str, float]:
    """Train ``bundle.confidnet`` (created if absent) on random crops of ``pairs``; the
    segmentation network stays frozen. Returns the loss at the start and at the end."""
    from .crops import LabelledImage
    from .training_config import TrainingConfig

    monitor = monitor or Monitor()
    target_device = resolve_device(device)
    if not pairs:
        raise UserError("ConfidNet needs training rasters with labels")
    network = bundle.network.to(target_device).eval()
    for parameter in network.parameters():
        parameter.requires_grad_(False)
    head = bundle.confidnet or ConfidNet(decoder_channels(network))
    head = head.to(target_device).train()
    card = bundle.card
    names = [c.name for c in card.classes]
    config = TrainingConfig(
        name=card.name,
        classes=[(n, "#000000") for n in names],
        train=list(pairs),
        crop=crop,
        batch_size=batch,
        click_probability=0.0,
        colour_jitter=0.0,
        seed=seed,
        mean=list(card.input.normalization.mean),
        std=list(card.input.normalization.std),
        bands=list(card.input.bands),
    )
    from .crops import CropSampler

    images = [LabelledImage.load(i, lbl, card.input.bands, class_map) for i, lbl in pairs]
    sampler = CropSampler(images, config, np.random.default_rng(seed))
    optimizer = torch.optim.Adam(head.parameters(), lr=learning_rate)
    losses = []
    started = time.perf_counter()
    for step in range(steps):
        monitor.check()
        x, y = sampler.batch(card.n_classes if card.clicks.enabled else 0)
        if not card.clicks.enabled:
            x = x[:, : card.n_bands]
        x, y = x.to(target_device), y.to(target_device)
        with torch.no_grad():
            features, logits = features_and_logits(network, x)
            probabilities = logits.float().softmax(dim=1)
            valid = y != LABEL_NODATA
            true_class = probabilities.gather(1, y.clamp(max=card.n_classes - 1)[:, None])[:, 0]
        confidence = head(features)[:, 0]
        loss = F.mse_loss(confidence[valid], true_class[valid])
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
        monitor.report(
            (step + 1) / steps, f"ConfidNet step {step + 1}/{steps}, loss {np.mean(losses[-20:]):.4f}"
        )
    head.eval()
    bundle.confidnet = head.cpu()
    return {
        "first_loss": float(np.mean(losses[:20])),
        "last_loss": float(np.mean(losses[-20:])),
        "steps": steps,
        "seconds": time.perf_counter() - started,
    }
